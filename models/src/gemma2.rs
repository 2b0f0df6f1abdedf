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
use mlx_models::nn::gemma::{
    check_kv_heads, scale_embeddings, soft_cap, EmbedScale, GemmaAttention, GemmaMlp, SandwichLayer,
};
use mlx_models::nn::mask::create_attention_mask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Embedding;
use mlx_models::nn::rope::Rope;

/// config.json of a gemma2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Gemma2Args {
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
    #[arg(default = 50.0, positive)]
    pub attn_logit_softcapping: f32,
    #[arg(default = 30.0, positive)]
    pub final_logit_softcapping: f32,
    #[arg(default = 144.0, positive)]
    pub query_pre_attn_scalar: f32,
}

impl Gemma2Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)
    }
}

/// Attention scaled by `query_pre_attn_scalar`, scores soft-capped.
fn attention(args: &Gemma2Args) -> Result<GemmaAttention, Exception> {
    let head_dim = args.head_dim as i32;
    let attention = GemmaAttention::new(
        args.hidden_size as i32,
        args.num_attention_heads as i32,
        args.num_key_value_heads as i32,
        head_dim,
        (1.0 / (args.query_pre_attn_scalar as f64).sqrt()) as f32,
        Rope::plain(head_dim, args.rope_theta, args.rope_traditional, 1.0),
    )?;
    Ok(attention.with_softcap(args.attn_logit_softcapping))
}

fn layer(args: &Gemma2Args) -> Result<SandwichLayer, Exception> {
    let (dim, hidden) = (args.hidden_size as i32, args.intermediate_size as i32);
    let mlp = GemmaMlp::new(dim, hidden, GatedActivation::GeGlu)?;
    SandwichLayer::new(attention(args)?, mlp, dim, args.rms_norm_eps, false)
}

#[derive(Debug, ModuleParameters)]
struct Gemma2Model {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<SandwichLayer>,
    #[param]
    norm: RmsNorm,
    hidden_size: usize,
}

/// The gemma2 model: scaled embeddings, decoder layers, final norm, the embeddings as head,
/// soft-capped logits.
#[mlx_model(model_type = "gemma2", args = Gemma2Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Gemma2Model,
    final_logit_softcapping: f32,
}

impl Architecture for Model {
    fn new(args: &Gemma2Args) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let model = Gemma2Model {
            embed_tokens: Embedding::new(args.vocab_size as i32, dim)?,
            layers: (0..args.num_hidden_layers)
                .map(|_| layer(args))
                .collect::<Result<_, _>>()?,
            norm: RmsNorm::zero_centered(dim, args.rms_norm_eps)?,
            hidden_size: args.hidden_size,
        };
        Ok(Model {
            model,
            final_logit_softcapping: args.final_logit_softcapping,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let m = &self.model;
        let mut h = scale_embeddings(
            &m.embed_tokens.forward(inputs)?,
            m.hidden_size,
            EmbedScale::Exact,
        )?;
        // An explicit mask (`return_array`): the scores are masked by hand, after the soft-cap.
        let mask = create_attention_mask(inputs.shape()[1], cache.first(), None, true)?;
        let mut caches = cache.iter_mut();
        for layer in &m.layers {
            h = layer.forward(&h, &mask, caches.next())?;
        }
        let logits = m.embed_tokens.as_linear(&m.norm.forward(&h)?)?;
        soft_cap(&logits, self.final_logit_softcapping)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.layers.iter().map(|_| Cache::kv()).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
