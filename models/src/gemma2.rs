//! `gemma2`, after mlx-lm's `models/gemma2.py`: gemma with soft-capped attention scores and
//! final logits, queries scaled by `query_pre_attn_scalar`, and norms before and after both
//! the attention and the MLP.
//!
//! As the reference, every layer attends globally: it reads neither `sliding_window` nor
//! `sliding_window_size` (which change nothing within the window, 4096 tokens in the released
//! checkpoints).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::gemma::{check_kv_heads, soft_cap, EmbedScale, SandwichLayer};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{Attention, AttentionConfig, Decoder, DecoderArgs, Mlp};

/// config.json of a gemma2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Gemma2Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// Soft cap of the attention scores: `cap * tanh(scores / cap)`.
    #[arg(default = 50.0, positive)]
    pub attn_logit_softcapping: f32,
    /// Soft cap of the logits: `cap * tanh(logits / cap)`.
    #[arg(default = 30.0, positive)]
    pub final_logit_softcapping: f32,
    /// The attention scale is `query_pre_attn_scalar^-0.5`.
    #[arg(default = 144.0, positive)]
    pub query_pre_attn_scalar: f32,
}

impl Gemma2Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)
    }
}

/// Attention scaled by `query_pre_attn_scalar`, scores soft-capped.
fn attention(args: &Gemma2Args) -> Result<Attention, Exception> {
    let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(args.hidden_size, heads, kv_heads, args.head_dim)
        .scale((1.0 / (args.query_pre_attn_scalar as f64).sqrt()) as f32)
        .softcap(args.attn_logit_softcapping);
    let head_dim = args.head_dim as i32;
    let rope = Rope::plain(head_dim, args.rope_theta, args.rope_traditional, 1.0);
    Attention::new(&config, Some(rope))
}

fn layer(args: &Gemma2Args) -> Result<SandwichLayer, Exception> {
    let mlp = Mlp::new(args.hidden_size, args.intermediate_size, false)?;
    let mlp = mlp.with_activation(GatedActivation::GeGlu);
    let dim = args.hidden_size as i32;
    SandwichLayer::new(attention(args)?, mlp, dim, args.rms_norm_eps, false)
}

/// The gemma2 model: scaled embeddings, decoder layers, final norm, the embeddings as head,
/// soft-capped logits. The soft-capped attention takes its mask as an array
/// ([`Layer::mask_as_array`](mlx_models::nn::transformer::Layer::mask_as_array)), as the
/// reference's `return_array`.
#[mlx_model(model_type = "gemma2", args = Gemma2Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<SandwichLayer>,
    final_logit_softcapping: f32,
}

impl Architecture for Model {
    fn new(args: &Gemma2Args) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        let norm = RmsNorm::zero_centered(dim as i32, args.rms_norm_eps)?;
        let model = Decoder::with_norm(args.vocab_size, dim, layers, norm)?;
        let scale = EmbedScale::Exact.factor(dim)?;
        Ok(Model {
            model: model.embedding_multiplier(scale),
            final_logit_softcapping: args.final_logit_softcapping,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let h = self.model.forward(inputs, cache)?;
        soft_cap(&self.model.logits(&h, None)?, self.final_logit_softcapping)
    }

    mlx_models::decoder_methods!(cache: model);
}
