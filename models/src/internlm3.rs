//! `internlm3` (InternLM3), after mlx-lm's `models/internlm3.py`: llama whose `qkv_bias` puts
//! biases on all four attention projections (o_proj included) and whose `bias` puts them on
//! the MLP. RoPE scaling, when given, must name `factor` and a `rope_type` of `linear` or
//! `dynamic`, as the reference requires. The head width is `hidden_size /
//! num_attention_heads` (a `head_dim` key is not read). Rotary buffers
//! (`*attention.rope.inv_freq`) are dropped.

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

/// config.json of an internlm3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct InternLm3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Biases on the MLP's three projections.
    #[arg(default = false)]
    pub bias: bool,
    /// Biases on the q/k/v and o projections.
    #[arg(default = false)]
    pub qkv_bias: bool,
    /// Context length of the checkpoint (dynamic NTK scaling needs it).
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
    /// Number of key and value heads; absent: `num_attention_heads`.
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// `{"rope_type": "linear" | "dynamic", "factor": ...}`, or absent.
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl InternLm3Args {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        // The reference checks a non-empty scaling object for these keys and types.
        let scaling = self.rope_scaling.as_ref().and_then(Value::as_object);
        if let Some(scaling) = scaling.filter(|s| !s.is_empty()) {
            if !(scaling.contains_key("factor") && scaling.contains_key("rope_type")) {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling` must have the keys `factor` and `rope_type`",
                ));
            }
            let rope_type = scaling.get("rope_type").and_then(Value::as_str);
            if !matches!(rope_type, Some("linear" | "dynamic")) {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling.rope_type` must be \"linear\" or \"dynamic\"",
                ));
            }
        }
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

/// The internlm3 model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "internlm3",
    args = InternLm3Args,
    drop = "*attention.rope.inv_freq",
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
    fn new(args: &InternLm3Args) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads);
        let attention = AttentionConfig::new(dim, args.num_attention_heads, kv_heads, head_dim)
            .bias(args.qkv_bias, args.qkv_bias);
        let rope = args.rope()?.build(head_dim)?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, args.bias, eps))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
