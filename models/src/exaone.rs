//! `exaone` (LG EXAONE 3 / 3.5), after mlx-lm's `models/exaone.py`: llama under other names
//! (`transformer.wte`, `transformer.h.N` with `ln_1`, `attn.attention.{q,k,v,out}_proj`,
//! `ln_2`, `mlp.c_fc_0` / `c_fc_1` / `c_proj`, `transformer.ln_f`), which map onto the shared
//! stack's; `attention_bias` on all four attention projections, `mlp_bias` on the MLP, any
//! RoPE scaling. The reference reshapes the attention output to `hidden_size`, so it only runs
//! where `head_dim * num_attention_heads == hidden_size`; here an explicit `head_dim` sizes the
//! heads either way.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderLayer, RopeArgs,
};

/// config.json of an exaone checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct ExaoneArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_layers: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Epsilon of the RMS norms.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Width of one attention head; absent or `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Context length of the checkpoint (dynamic NTK, llama3, yarn and longrope need it).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v and output projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Biases on the MLP's three projections.
    #[arg(default = false)]
    pub mlp_bias: bool,
}

impl ExaoneArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_layers", self.num_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }
}

/// The exaone model: embeddings, decoder layers, final norm, head (or tied embeddings), its
/// checkpoint names mapped onto the shared stack's.
#[mlx_model(
    model_type = "exaone",
    args = ExaoneArgs,
    tied_head = "lm_head",
    rename("transformer.wte" => "model.embed_tokens"),
    rename("transformer.ln_f" => "model.norm"),
    rename("transformer.h.{n}.ln_1" => "model.layers.{n}.input_layernorm"),
    rename("transformer.h.{n}.ln_2" => "model.layers.{n}.post_attention_layernorm"),
    rename("transformer.h.{n}.attn.attention.out_proj" => "model.layers.{n}.self_attn.o_proj"),
    rename("transformer.h.{n}.attn.attention" => "model.layers.{n}.self_attn"),
    rename("transformer.h.{n}.mlp.c_fc_0" => "model.layers.{n}.mlp.gate_proj"),
    rename("transformer.h.{n}.mlp.c_fc_1" => "model.layers.{n}.mlp.up_proj"),
    rename("transformer.h.{n}.mlp.c_proj" => "model.layers.{n}.mlp.down_proj"),
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
    fn new(args: &ExaoneArgs) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.layer_norm_epsilon);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let bias = args.attention_bias;
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
        let rope = args.rope()?.build(head_dim)?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_layers)
            .map(|_| {
                DecoderLayer::llama(&attention, Some(rope.clone()), hidden, args.mlp_bias, eps)
            })
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
