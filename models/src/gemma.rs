//! `gemma`, after mlx-lm's `models/gemma.py`: multi-query or grouped-query attention with an
//! explicit `head_dim`, a GeGLU MLP (the exact gelu, as the reference), RMS norms with
//! `1 + weight`, embeddings scaled by `sqrt(hidden_size)` and doubling as the head.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::gemma::{
    check_kv_heads, scale_embeddings, EmbedScale, GemmaAttention, GemmaMlp,
};
use mlx_models::nn::mask::{create_attention_mask, AttentionMask};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Embedding;
use mlx_models::nn::rope::Rope;

/// config.json of a gemma checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GemmaArgs {
    pub model_type: String,
    #[arg(positive)]
    pub hidden_size: usize,
    #[arg(positive)]
    pub num_hidden_layers: usize,
    #[arg(positive)]
    pub intermediate_size: usize,
    #[arg(positive)]
    pub num_attention_heads: usize,
    #[arg(positive)]
    pub head_dim: usize,
    #[arg(positive)]
    pub rms_norm_eps: f32,
    #[arg(positive)]
    pub vocab_size: usize,
    #[arg(positive)]
    pub num_key_value_heads: usize,
    #[arg(default = 10000.0)]
    pub rope_theta: f32,
    #[arg(default = false)]
    pub rope_traditional: bool,
}

impl GemmaArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)
    }
}

fn attention(args: &GemmaArgs) -> Result<GemmaAttention, Exception> {
    let head_dim = args.head_dim as i32;
    GemmaAttention::new(
        args.hidden_size as i32,
        args.num_attention_heads as i32,
        args.num_key_value_heads as i32,
        head_dim,
        (args.head_dim as f64).powf(-0.5) as f32,
        Rope::plain(head_dim, args.rope_theta, args.rope_traditional, 1.0),
    )
}

#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    self_attn: GemmaAttention,
    #[param]
    mlp: GemmaMlp,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    post_attention_layernorm: RmsNorm,
}

impl TransformerBlock {
    fn new(args: &GemmaArgs) -> Result<Self, Exception> {
        let (dim, eps) = (args.hidden_size as i32, args.rms_norm_eps);
        Ok(TransformerBlock {
            self_attn: attention(args)?,
            mlp: GemmaMlp::new(
                dim,
                args.intermediate_size as i32,
                GatedActivation::GeGluExact,
            )?,
            input_layernorm: RmsNorm::zero_centered(dim, eps)?,
            post_attention_layernorm: RmsNorm::zero_centered(dim, eps)?,
        })
    }

    fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array, Exception> {
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(&r)?;
        let r = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        h.add(&r)
    }
}

#[derive(Debug, ModuleParameters)]
struct GemmaModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<TransformerBlock>,
    #[param]
    norm: RmsNorm,
    hidden_size: usize,
}

/// The gemma model: scaled embeddings, decoder layers, final norm, the embeddings as head.
#[mlx_model(model_type = "gemma", args = GemmaArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: GemmaModel,
}

impl Architecture for Model {
    fn new(args: &GemmaArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let model = GemmaModel {
            embed_tokens: Embedding::new(args.vocab_size as i32, dim)?,
            layers: (0..args.num_hidden_layers)
                .map(|_| TransformerBlock::new(args))
                .collect::<Result<_, _>>()?,
            norm: RmsNorm::zero_centered(dim, args.rms_norm_eps)?,
            hidden_size: args.hidden_size,
        };
        Ok(Model { model })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let m = &self.model;
        let mut h = scale_embeddings(
            &m.embed_tokens.forward(inputs)?,
            m.hidden_size,
            EmbedScale::Exact,
        )?;
        let mask = create_attention_mask(inputs.shape()[1], cache.first(), None, false)?;
        let mut caches = cache.iter_mut();
        for layer in &m.layers {
            h = layer.forward(&h, &mask, caches.next())?;
        }
        m.embed_tokens.as_linear(&m.norm.forward(&h)?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.layers.iter().map(|_| Cache::kv()).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
