//! `apertus` (Swiss AI's Apertus), after mlx-lm's `models/apertus.py`: llama's attention with
//! per-head RMS norms on queries and keys (always, whatever `qk_norm` says) and no biases
//! (whatever `attention_bias` says), any RoPE scaling, an ungated MLP
//! `down_proj(xielu(up_proj(x)))` with the learned xIELU activation (`mlp.act_fn.alpha_p`,
//! `alpha_n`, `beta`, `eps`), and the norms named `attention_layernorm` and
//! `feedforward_layernorm` (renamed onto the shared layer's). As the reference's sanitize,
//! Hugging Face's one-element `alpha_p` / `alpha_n` become scalars.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::XieLu;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, Attention, AttentionConfig, Block, Decoder, DecoderArgs,
    DecoderLayer, RopeArgs,
};
use mlx_models::weights::Weights;

/// config.json of an apertus checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct ApertusArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Biases on the MLP's two projections.
    pub mlp_bias: bool,
    /// Read and unused: the reference's attention has no biases.
    pub attention_bias: bool,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint (dynamic NTK and longrope scaling need it).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Read and unused (the reference's layers are pre-norm).
    pub post_norm: bool,
    /// Read and unused: the reference always norms queries and keys.
    pub qk_norm: bool,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    pub tie_word_embeddings: bool,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
}

impl ApertusArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        self.rope().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// `down_proj(xielu(up_proj(x)))`.
#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    up_proj: Linear,
    #[param]
    down_proj: Linear,
    #[param]
    act_fn: XieLu,
}

impl Block for Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let h = self.act_fn.forward(&self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

type Layer = DecoderLayer<Attention, Mlp>;

/// The apertus model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "apertus",
    args = ApertusArgs,
    rename("model.layers.{n}.attention_layernorm" => "model.layers.{n}.input_layernorm"),
    rename("model.layers.{n}.feedforward_layernorm" => "model.layers.{n}.post_attention_layernorm"),
    tied_head = "lm_head",
    sanitize = Self::scalar_alphas,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// `alpha_p` and `alpha_n` as scalars (Hugging Face stores them as `[1]`). Idempotent.
    fn scalar_alphas(&self, weights: &mut Weights) -> Result<()> {
        for (key, value) in weights.iter_mut() {
            if (key.ends_with("alpha_p") || key.ends_with("alpha_n")) && value.ndim() > 0 {
                *value = value.squeeze()?;
            }
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &ApertusArgs) -> std::result::Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).qk_norm(eps);
        let rope = args.rope()?.build(head_dim)?;
        let (d, hidden) = (dim as i32, args.intermediate_size as i32);
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let mlp = Mlp {
                    up_proj: Linear::new(d, hidden, args.mlp_bias)?,
                    down_proj: Linear::new(hidden, d, args.mlp_bias)?,
                    act_fn: XieLu::new()?,
                };
                let self_attn = Attention::new(&attention, Some(rope.clone()))?;
                DecoderLayer::new(self_attn, mlp, dim, eps)
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
