//! `nanochat` (Karpathy's nanochat), after mlx-lm's `models/nanochat.py`: a pre-norm decoder
//! whose norms have no weights (RMS norms of epsilon 1e-5: after the embeddings, before the
//! attention and the MLP, and at the end), grouped-query attention that rotates queries and
//! keys the other way round (RoPE with negated frequencies) and then RMS-norms them per head,
//! a ReLU² MLP, and an untied head whose logits are soft-capped at 15. Its checkpoint names
//! (`transformer.wte`, `transformer.h.N.attn.c_q` / `c_k` / `c_v` / `c_proj`,
//! `transformer.h.N.mlp.c_fc` / `c_proj`, `lm_head`) are the fields' own.

use mlx_rs::error::Result;
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::{arange, exp, negative};
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_attention_mask, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::relu2;
use mlx_models::nn::attention::{attend, soft_cap};
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, check_layers};

/// The cap of the logits: `15 tanh(logits / 15)`.
const LOGIT_CAP: f32 = 15.0;

/// config.json of a nanochat checkpoint; every key has the reference's default.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct NanochatArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 1280, positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(default = 20, positive)]
    pub num_hidden_layers: usize,
    /// Number of query heads.
    #[arg(default = 10, positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads.
    #[arg(default = 10, positive)]
    pub num_key_value_heads: usize,
    /// Number of tokens in the vocabulary.
    #[arg(default = 65536, positive)]
    pub vocab_size: usize,
    /// Context length of the checkpoint (read; the RoPE does not depend on it).
    #[arg(default = 2048, positive)]
    pub max_position_embeddings: usize,
    /// Hidden width of the MLP.
    #[arg(default = 5120, positive)]
    pub intermediate_size: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f64,
}

impl NanochatArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        if !self.head_dim().is_multiple_of(2) {
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                format!(
                    "the heads are {} wide; RoPE rotates pairs of features, so an even width is needed",
                    self.head_dim()
                ),
            ));
        }
        Ok(())
    }

    /// The width of one head, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The RoPE: frequencies `-theta^(i / (head_dim / 2))`, computed as the reference does
    /// (`-exp(i * ln(theta) / half)` in float32), the negative sign turning the rotation round.
    pub fn rope(&self) -> Result<Rope> {
        let half = self.head_dim() / 2;
        let step = (self.rope_theta.ln() / half as f64) as f32;
        let exponents = arange::<_, f32>(0.0, half as f32, 1.0)?.multiply(Array::from_f32(step))?;
        let freqs = negative(exp(&exponents)?)?;
        Rope::with_freqs(self.head_dim() as i32, false, freqs)
    }
}

/// The weightless RMS norm used throughout.
fn rms_norm(x: &Array) -> Result<Array> {
    fast::rms_norm(x, None, 1e-5)
}

/// Grouped-query attention; the rotated queries and keys are RMS-normed per head.
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    c_q: Linear,
    #[param]
    c_k: Linear,
    #[param]
    c_v: Linear,
    #[param]
    c_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &NanochatArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let (n_heads, n_kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads as i32,
        );
        let head_dim = args.head_dim() as i32;
        Ok(Attention {
            c_q: Linear::new(dim, n_heads * head_dim, false)?,
            c_k: Linear::new(dim, n_kv_heads * head_dim, false)?,
            c_v: Linear::new(dim, n_kv_heads * head_dim, false)?,
            c_proj: Linear::new(dim, dim, false)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: args.rope()?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.c_q.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.c_k.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.c_v.forward(x)?, self.n_kv_heads)?;
        let queries = rms_norm(&rope_after(&self.rope, &queries, cache.as_deref())?)?;
        let keys = rms_norm(&rope_after(&self.rope, &keys, cache.as_deref())?)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.c_proj.forward(&merge_heads(&output)?)
    }
}

/// `c_proj(relu(c_fc(x))²)`.
#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    c_fc: Linear,
    #[param]
    c_proj: Linear,
}

impl Mlp {
    fn new(dim: i32, hidden: i32) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::new(dim, hidden, false)?,
            c_proj: Linear::new(hidden, dim, false)?,
        })
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        self.c_proj.forward(&relu2(&self.c_fc.forward(x)?)?)
    }
}

/// `h = x + attn(norm(x))`, `h + mlp(norm(h))`.
#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    attn: Attention,
    #[param]
    mlp: Mlp,
}

impl TransformerBlock {
    fn new(args: &NanochatArgs) -> Result<Self> {
        let (dim, hidden) = (args.hidden_size as i32, args.intermediate_size as i32);
        Ok(TransformerBlock {
            attn: Attention::new(args)?,
            mlp: Mlp::new(dim, hidden)?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = x.add(self.attn.forward(&rms_norm(x)?, mask, cache)?)?;
        h.add(self.mlp.forward(&rms_norm(&h)?)?)
    }
}

/// The stack: embeddings (normed), the blocks, the final norm.
#[derive(Debug, ModuleParameters)]
struct NanochatModel {
    #[param]
    wte: Embedding,
    #[param]
    h: Vec<TransformerBlock>,
}

impl NanochatModel {
    fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let mut h = rms_norm(&self.wte.forward(inputs)?)?;
        let mask = create_attention_mask(inputs.dim(1), cache.first(), None, false)?;
        let mut caches = cache.iter_mut();
        for block in &self.h {
            h = block.forward(&h, &mask, caches.next())?;
        }
        rms_norm(&h)
    }
}

/// The nanochat model: normed embeddings, blocks, final norm, untied head, soft-capped logits.
#[mlx_model(model_type = "nanochat", args = NanochatArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    transformer: NanochatModel,
    #[param]
    lm_head: Linear,
}

impl Architecture for Model {
    fn new(args: &NanochatArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size as i32, args.vocab_size as i32);
        let h = (0..args.num_hidden_layers)
            .map(|_| TransformerBlock::new(args))
            .collect::<Result<_>>()?;
        Ok(Model {
            transformer: NanochatModel {
                wte: Embedding::new(vocab, dim)?,
                h,
            },
            lm_head: Linear::new(dim, vocab, false)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.transformer.forward(inputs, cache)?;
        soft_cap(&self.lm_head.forward(&h)?, LOGIT_CAP)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.transformer.h.iter().map(|_| Cache::kv()).collect()
    }

    fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }
}
