//! `granite`, after mlx-lm's `models/granite.py`: llama with four multipliers: on the
//! embeddings (`embedding_multiplier`), as the attention scale (`attention_multiplier`), on
//! both residual branches (`residual_multiplier`), and dividing the logits (`logits_scaling`).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, RopeArgs,
};

/// config.json of a granite checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GraniteArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Divisor of the logits.
    pub logits_scaling: f32,
    /// Scale of the attention scores (instead of `head_dim^-0.5`).
    pub attention_multiplier: f32,
    /// Factor applied to the embeddings.
    pub embedding_multiplier: f32,
    /// Factor applied to each block's output before it is added to the residual stream.
    pub residual_multiplier: f32,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Whether the attention projections have biases.
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters), or
    /// transformers v5's `rope_parameters`.
    #[arg(alias = "rope_parameters")]
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl GraniteArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_heads(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            None,
        )?;
        if self.logits_scaling == 0.0 {
            return Err(ArgsError::invalid(
                &["logits_scaling"],
                "`logits_scaling` is 0",
            ));
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
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// The granite model: scaled embeddings, decoder layers with scaled residuals, final norm,
/// head (or tied embeddings), logits divided by `logits_scaling`.
#[mlx_model(model_type = "granite", args = GraniteArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    logits_scaling: f32,
}

impl Architecture for Model {
    fn new(args: &GraniteArgs) -> Result<Self, Exception> {
        let (dim, head_dim) = (args.hidden_size, args.head_dim());
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim)
            .bias(args.attention_bias, args.attention_bias)
            .scale(args.attention_multiplier);
        let rope = args.rope()?;
        let rope = rope.build(head_dim)?;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
                let layer =
                    DecoderLayer::llama(&attention, Some(rope.clone()), hidden, args.mlp_bias, eps);
                Ok(layer?.residual_multiplier(args.residual_multiplier))
            })
            .collect::<Result<_, Exception>>()?;
        let model = Decoder::new(args.vocab_size, dim, args.rms_norm_eps, layers)?;
        Ok(Model {
            model: model.embedding_multiplier(args.embedding_multiplier),
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
            logits_scaling: args.logits_scaling,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let h = self.model.forward(inputs, cache)?;
        let logits = self.model.logits(&h, self.lm_head.as_ref())?;
        logits.divide(Array::from_f32(self.logits_scaling).as_dtype(logits.dtype())?)
    }

    mlx_models::decoder_methods!(cache: model);
}
