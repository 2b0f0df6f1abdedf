//! `granitemoe`, after mlx-lm's `models/granitemoe.py`: granite's four multipliers
//! (embeddings, attention scale, residual branches, logits) with a mixture of experts in every
//! layer: the top `num_experts_per_tok` router logits, then a softmax over them in float32.
//! Hugging Face checkpoints fuse each layer's gate and up projections (`input_linear`, halves)
//! and name the router `router.layer`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, RopeArgs,
};
use mlx_models::weights::{split_fused, Fused, Weights};

/// config.json of a granitemoe checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GraniteMoeArgs {
    /// Type and sizes (`intermediate_size`: the width of one expert).
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
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Whether the attention projections have biases.
    pub attention_bias: bool,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Experts per layer.
    #[arg(positive)]
    pub num_local_experts: usize,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// RoPE scaling as config.json writes it.
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl GraniteMoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        let keys = ["num_local_experts", "num_experts_per_tok"];
        check_experts(self.num_local_experts, self.num_experts_per_tok, keys)?;
        if self.logits_scaling == 0.0 {
            return Err(ArgsError::invalid(
                &["logits_scaling"],
                "`logits_scaling` is 0",
            ));
        }
        self.rope().map(drop)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &GraniteMoeArgs) -> Result<Layer, Exception> {
    let (dim, heads) = (args.hidden_size, args.num_attention_heads);
    let head_dim = dim / heads;
    let bias = args.attention_bias;
    let config = AttentionConfig::new(dim, heads, args.num_key_value_heads, head_dim)
        .bias(bias, bias)
        .scale(args.attention_multiplier);
    let attention = Attention::new(&config, Some(args.rope()?.build(head_dim)?))?;
    let routing = Routing::TopKSoftmax {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Last,
        float32_weights: true,
    };
    let (hidden, experts) = (args.intermediate_size, args.num_local_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?.cast_back();
    let layer = DecoderLayer::new(attention, moe, dim, args.rms_norm_eps)?;
    Ok(layer.residual_multiplier(args.residual_multiplier))
}

/// The granitemoe model: scaled embeddings, sparse decoder layers with scaled residuals, final
/// norm, head (or tied embeddings), logits divided by `logits_scaling`. The reference's
/// `block_sparse_moe` is this crate's `mlp`, its `router.layer` the `gate`.
#[mlx_model(
    model_type = "granitemoe",
    args = GraniteMoeArgs,
    tied_head = "lm_head",
    rename("model.layers.{n}.block_sparse_moe.router.layer" => "model.layers.{n}.mlp.gate"),
    rename("model.layers.{n}.block_sparse_moe.output_linear" => "model.layers.{n}.mlp.switch_mlp.down_proj"),
    rename("model.layers.{n}.block_sparse_moe" => "model.layers.{n}.mlp"),
    sanitize = Self::split_input_linear,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    logits_scaling: f32,
}

impl Model {
    /// `input_linear` `[experts, 2 * hidden, dim]`: the gate projections, then the up ones.
    fn split_input_linear(&self, weights: &mut Weights) -> Result<(), Exception> {
        let parts = ["mlp.switch_mlp.gate_proj", "mlp.switch_mlp.up_proj"];
        split_fused(weights, "mlp.input_linear", parts, 1, Fused::Halves)
            .map_err(|e| Exception::custom(e.to_string()))
    }
}

impl Architecture for Model {
    fn new(args: &GraniteMoeArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
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
