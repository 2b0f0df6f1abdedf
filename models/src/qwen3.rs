//! `qwen3`, after mlx-lm's `models/qwen3.py`: llama with an explicit `head_dim` and per-head
//! RMS norms on queries and keys (`q_norm`, `k_norm`) before RoPE.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, RopeArgs,
};

/// config.json of a qwen3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Qwen3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    pub tie_word_embeddings: bool,
    /// Absent in transformers v5 configs, which put it in `rope_parameters`.
    pub rope_theta: Option<f32>,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// transformers v5 spelling: the scaling and `rope_theta` in one object.
    pub rope_parameters: Option<Value>,
}

impl Qwen3Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        self.rope().map(drop)
    }

    /// The RoPE settings (`rope_theta` or `rope_parameters.rope_theta` must be there).
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
        )?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// The qwen3 model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(model_type = "qwen3", args = Qwen3Args, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Qwen3Args) -> Result<Self, Exception> {
        let (dim, head_dim) = (args.hidden_size, args.head_dim);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention =
            AttentionConfig::new(dim, heads.0, heads.1, head_dim).qk_norm(args.rms_norm_eps);
        let rope = args.rope()?;
        let rope = rope.build(head_dim)?;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
                DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps)
            })
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
