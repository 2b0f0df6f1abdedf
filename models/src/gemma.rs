//! `gemma`, after mlx-lm's `models/gemma.py`: multi-query or grouped-query attention with an
//! explicit `head_dim`, a GeGLU MLP (the exact gelu, as the reference), RMS norms with
//! `1 + weight`, embeddings scaled by `sqrt(hidden_size)` and doubling as the head.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::gemma::{check_kv_heads, EmbedScale};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, Mlp,
};

/// config.json of a gemma checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GemmaArgs {
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
}

impl GemmaArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)
    }
}

fn attention(args: &GemmaArgs) -> Result<Attention, Exception> {
    let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(args.hidden_size, heads, kv_heads, args.head_dim)
        .scale((args.head_dim as f64).powf(-0.5) as f32);
    let head_dim = args.head_dim as i32;
    let rope = Rope::plain(head_dim, args.rope_theta, args.rope_traditional, 1.0);
    Attention::new(&config, Some(rope))
}

/// llama's pre-norm layer, with a GeGLU and `1 + weight` norms.
fn layer(args: &GemmaArgs) -> Result<DecoderLayer, Exception> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let mlp = Mlp::new(dim, args.intermediate_size, false)?;
    let norm = || RmsNorm::zero_centered(dim as i32, eps);
    let mlp = mlp.with_activation(GatedActivation::GeGluExact);
    Ok(DecoderLayer::with_norms(
        attention(args)?,
        mlp,
        norm()?,
        norm()?,
    ))
}

/// The gemma model: scaled embeddings, decoder layers, final norm, the embeddings as head.
#[mlx_model(model_type = "gemma", args = GemmaArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
}

impl Architecture for Model {
    fn new(args: &GemmaArgs) -> Result<Self, Exception> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        let norm = RmsNorm::zero_centered(dim as i32, eps)?;
        let model = Decoder::with_norm(args.vocab_size, dim, layers, norm)?;
        let scale = EmbedScale::Exact.factor(dim)?;
        Ok(Model {
            model: model.embedding_multiplier(scale),
        })
    }

    mlx_models::decoder_methods!(model);
}
