//! `telechat3` (China Telecom's TeleChat3), after mlx-lm's `models/telechat3.py`: llama's
//! layer with grouped-query attention whose four projections share one `attention_bias`,
//! biases on the MLP apart (`mlp_bias`), an optional explicit `head_dim`, and any RoPE
//! scaling (its own `telechat3-yarn` is yarn). Untied by default; the reference has no
//! sanitize, so the checkpoint's names are the shared stack's.

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

/// config.json of a telechat3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Telechat3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint (dynamic NTK, llama3, yarn and longrope need it).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Biases on the MLP's three projections.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Biases on the q/k/v projections and on o_proj.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Width of one attention head; absent: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then has no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl Telechat3Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn attention_head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// The telechat3 model: embeddings, llama decoder layers, final norm, head (or tied
/// embeddings).
#[mlx_model(model_type = "telechat3", args = Telechat3Args, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Telechat3Args) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (
            args.hidden_size,
            args.attention_head_dim(),
            args.rms_norm_eps,
        );
        let (heads, bias) = (
            (args.num_attention_heads, args.num_key_value_heads),
            args.attention_bias,
        );
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
        let rope = args.rope()?.build(head_dim)?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
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
