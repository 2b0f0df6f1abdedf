//! `mimo` (Xiaomi MiMo), after mlx-lm's `models/mimo.py`: llama with biases on the q/k/v
//! projections (not on o_proj), a bias-free MLP and any RoPE scaling. Checkpoints carry
//! multi-token-prediction layers (`model.mtp_layers.*`), which the model does not run and
//! drops, as it drops rotary buffers and a tied checkpoint's `lm_head`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
    RopeArgs,
};

/// config.json of a mimo checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MimoArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint (dynamic NTK and longrope scaling need it).
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
    /// Multi-token-prediction layers of the checkpoint (read; they are dropped, not run).
    #[arg(default = 2)]
    pub num_nextn_predict_layers: usize,
}

impl MimoArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
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
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// The mimo model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "mimo",
    args = MimoArgs,
    drop = ["*.self_attn.rotary_emb.inv_freq", "model.mtp_layers.*"],
    tied_head = "lm_head",
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &MimoArgs) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(true, false);
        let rope = args.rope()?.build(head_dim)?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
