//! The GPT-2 family's layer, in its checkpoint names (`ln_1`, `attn.c_attn`, `attn.c_proj`,
//! `ln_2`, `mlp.c_fc`, `mlp.c_proj`): a pre-norm layer of LayerNorms around an attention with
//! one fused query/key/value projection and a two-matrix feed-forward. gpt2 and gpt_bigcode
//! build it (multi-query in gpt_bigcode); the stack around it is the shared
//! [`Decoder`](crate::nn::transformer::Decoder) with learned positions
//! ([`Decoder::with_positions`](crate::nn::transformer::Decoder::with_positions)).

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use crate::cache::Cache;
use crate::nn::activations::Activation;
use crate::nn::attention::attend;
use crate::nn::blocks::{merge_heads, split_heads};
use crate::nn::mask::AttentionMask;
use crate::nn::norm::LayerNorm;
use crate::nn::quantized::Linear;
use crate::nn::transformer::Layer;

/// The feed-forward `c_proj(act(c_fc(x)))`.
#[derive(Debug, ModuleParameters)]
pub struct Mlp {
    /// `[hidden, dim]`.
    #[param]
    pub c_fc: Linear,
    /// `[dim, hidden]`.
    #[param]
    pub c_proj: Linear,
    /// Between the two.
    pub activation: Activation,
}

impl Mlp {
    /// `dim` to `hidden` and back, both with or without biases.
    pub fn new(dim: usize, hidden: usize, bias: bool, activation: Activation) -> Result<Self> {
        let (dim, hidden) = (dim as i32, hidden as i32);
        Ok(Mlp {
            c_fc: Linear::new(dim, hidden, bias)?,
            c_proj: Linear::new(hidden, dim, bias)?,
            activation,
        })
    }

    /// `[..., dim]` to `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        self.c_proj
            .forward(&self.activation.apply(&self.c_fc.forward(x)?)?)
    }
}

/// Attention with the queries, keys and values from one projection `c_attn` (the queries'
/// `dim` features, then the keys', then the values'), no positional rotation, and the output
/// projection `c_proj`.
#[derive(Debug, ModuleParameters)]
pub struct Attention {
    /// `[dim + 2 * kv_heads * head_dim, dim]`.
    #[param]
    pub c_attn: Linear,
    /// `[dim, dim]`.
    #[param]
    pub c_proj: Linear,
    /// Query heads.
    pub n_heads: i32,
    /// Key and value heads (1: multi-query).
    pub n_kv_heads: i32,
    /// Features per head.
    pub head_dim: i32,
    /// `head_dim^-0.5`.
    pub scale: f32,
}

impl Attention {
    /// `n_heads` query heads and `n_kv_heads` key/value heads over width `dim` (which the
    /// query heads divide), with or without biases.
    pub fn new(dim: usize, n_heads: usize, n_kv_heads: usize, bias: bool) -> Result<Self> {
        let head_dim = (dim / n_heads) as i32;
        let (dim, n_heads, n_kv_heads) = (dim as i32, n_heads as i32, n_kv_heads as i32);
        Ok(Attention {
            c_attn: Linear::new(dim, dim + 2 * n_kv_heads * head_dim, bias)?,
            c_proj: Linear::new(dim, dim, bias)?,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    /// `[B, L, dim]` to `[B, L, dim]`, attending to what `cache` holds and the new positions.
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let q_dim = self.n_heads * self.head_dim;
        let kv_dim = self.n_kv_heads * self.head_dim;
        let qkv = self.c_attn.forward(x)?;
        let qkv = qkv.split_at_indices(&[q_dim, q_dim + kv_dim], -1)?;
        let queries = split_heads(&qkv[0], self.n_heads)?;
        let keys = split_heads(&qkv[1], self.n_kv_heads)?;
        let values = split_heads(&qkv[2], self.n_kv_heads)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.c_proj.forward(&merge_heads(&output)?)
    }
}

/// The pre-norm layer: `h = x + attn(ln_1(x))`, `out = h + mlp(ln_2(h))`.
#[derive(Debug, ModuleParameters)]
pub struct Block {
    /// Norm before the attention.
    #[param]
    pub ln_1: LayerNorm,
    /// The attention.
    #[param]
    pub attn: Attention,
    /// Norm before the feed-forward.
    #[param]
    pub ln_2: LayerNorm,
    /// The feed-forward.
    #[param]
    pub mlp: Mlp,
}

impl Block {
    /// The layer of `attn` and `mlp` with LayerNorms (weight and bias) of width `dim`.
    pub fn new(attn: Attention, mlp: Mlp, dim: usize, eps: f32) -> Result<Self> {
        let norm = || LayerNorm::new(dim as i32, eps, true);
        Ok(Block {
            ln_1: norm()?,
            attn,
            ln_2: norm()?,
            mlp,
        })
    }
}

impl Layer for Block {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = x.add(self.attn.forward(&self.ln_1.forward(x)?, mask, cache)?)?;
        h.add(self.mlp.forward(&self.ln_2.forward(&h)?)?)
    }
}
