//! The decoder, in pieces an architecture file assembles: a grouped-query [`Attention`]
//! (biases, per-head q/k RMS norm, RoPE or none, any scale, soft-capped scores, learned
//! attention sinks), a gated [`Mlp`], a pre-norm
//! [`DecoderLayer`] (optionally a sliding-window layer, optionally scaling its residual
//! branches), and the [`Decoder`] stack (embeddings, layers, final norm) that builds the masks
//! and the caches. Field names are the checkpoint's (`self_attn.q_proj`, `mlp.gate_proj`,
//! `input_layernorm`, `model.embed_tokens`, ...), as mlx-rs names parameters after fields.
//!
//! The math follows mlx-lm's `models/llama.py`; its variants (`qwen2`, `qwen3`, `granite`,
//! `smollm3`, ...) differ only in the options chosen here. A variant's file builds one
//! [`AttentionConfig`], its [`Rope`], and the layers (qwen2's, for instance):
//!
//! ```ignore
//! let attention = AttentionConfig::new(dim, heads, kv_heads, head_dim).bias(true, false);
//! let rope = RopeArgs::from_config(Some(theta), scaling, None)?.build(head_dim)?;
//! let layers = (0..n)
//!     .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps))
//!     .collect::<Result<_, _>>()?;
//! let model = Decoder::new(vocab, dim, eps, layers)?;
//! // forward: model.logits(&model.forward(inputs, cache)?, lm_head.as_ref())
//! ```
//!
//! The stack is generic over the layer: any [`Layer`] (an olmo2 post-norm layer, cohere's
//! parallel one, gemma's four-norm one) gets the same embeddings, masks, caches and head, and
//! any [`Block`] serves as the final norm (LayerNorm for starcoder2 and cohere). The pre-norm
//! [`DecoderLayer`] is itself generic over its [`SelfAttention`], its feed-forward and its
//! norms ([`DecoderLayer::new`], [`DecoderLayer::with_norms`]): phi3's fused projections,
//! starcoder2's gelu MLP and LayerNorms, gemma's `1 + weight` norms. The stack adds learned
//! absolute positions for GPT-2-style models ([`Decoder::with_positions`]); a checkpoint that
//! names the stack otherwise (gpt2's `wte`, `h`, `ln_f`, gpt_neox's `embed_in`) is mapped onto
//! these names by its model's `rename` rules.
//!
//! [`lm_head`] builds the head (absent when embeddings are tied). The config helpers
//! ([`check_heads`], [`check_layer_types`], [`check_per_layer`], [`layer_windows`],
//! [`RopeArgs`]) hold the checks and derived values these configs share, for the args'
//! post-parse hooks.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::zeros_dtype;
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::args::{ArgsError, ModelArgs};
use crate::cache::Cache;
use crate::nn::activations::GatedActivation;
use crate::nn::attention::attend;
use crate::nn::blocks::{merge_heads, positions, split_heads};
// RoPE after a cache's positions is a shared block; its old home keeps the name.
use crate::cache::create_attention_mask;
use crate::nn::attention::softcapped_attention;
pub use crate::nn::blocks::rope_after;

mod config;
mod methods;

use crate::nn::mask::AttentionMask;
use crate::nn::norm::{LayerNorm, RmsNorm};
use crate::nn::quantized::{Embedding, Linear};
use crate::nn::rope::{Rope, RopeScaling};
pub use config::{
    check_heads, check_layer_types, check_layers, check_per_layer, check_width, layer_windows,
    lm_head, rotary_dims, DecoderArgs, RopeArgs, MAX_LAYERS,
};

/// `x * factor`, the factor in `x`'s dtype (as a Python float multiplies an array in mlx).
fn scaled(x: &Array, factor: f32) -> Result<Array> {
    x.multiply(Array::from_f32(factor).as_dtype(x.dtype())?)
}

/// The shape and options of a grouped-query [`Attention`] layer. [`AttentionConfig::new`]
/// gives llama's (no biases, no q/k norm, scale `head_dim^-0.5`, no soft-cap); the other
/// methods change one option each.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// Model width (input of q/k/v, output of o).
    pub hidden_size: i32,
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: i32,
    /// Features per head.
    pub head_dim: i32,
    /// Whether `q_proj`, `k_proj` and `v_proj` have biases.
    pub qkv_bias: bool,
    /// Whether `o_proj` has a bias.
    pub o_bias: bool,
    /// The epsilon of per-head RMS norms `q_norm` / `k_norm` on queries and keys (before
    /// RoPE), when the layer has them.
    pub qk_norm_eps: Option<f32>,
    /// Whether those norms store zero-centred weights (`1 + weight`, gemma3).
    pub qk_norm_zero_centered: bool,
    /// Whether those norms run over all heads at once (weights `[n_heads * head_dim]` and
    /// `[n_kv_heads * head_dim]`, before the heads are split: olmo2, olmoe) rather than per head.
    pub qk_norm_full: bool,
    /// The factor on `q kᵀ` before the softmax.
    pub scale: f32,
    /// The soft-cap of the scores (gemma2's `attn_logit_softcapping`), if any.
    pub softcap: Option<f32>,
    /// Whether each query head has a learned attention sink (`sinks`, `[n_heads]`: a logit
    /// that joins every query's softmax and takes its share of the weight without adding to
    /// the output; gpt_oss).
    pub sinks: bool,
    /// Whether the per-head q/k norms run after RoPE rather than before (hunyuan_v1_dense).
    pub qk_norm_after_rope: bool,
}

impl AttentionConfig {
    /// Llama's attention: no biases, no q/k norm, scale `head_dim^-0.5`.
    pub fn new(hidden_size: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        AttentionConfig {
            hidden_size: hidden_size as i32,
            n_heads: n_heads as i32,
            n_kv_heads: n_kv_heads as i32,
            head_dim: head_dim as i32,
            qkv_bias: false,
            o_bias: false,
            qk_norm_eps: None,
            qk_norm_zero_centered: false,
            qk_norm_full: false,
            scale: (head_dim as f32).powf(-0.5),
            softcap: None,
            sinks: false,
            qk_norm_after_rope: false,
        }
    }

    /// Biases on the q/k/v projections and on the output projection.
    pub fn bias(mut self, qkv: bool, o: bool) -> Self {
        self.qkv_bias = qkv;
        self.o_bias = o;
        self
    }

    /// Per-head RMS norms `q_norm` and `k_norm` (weights `[head_dim]`) before RoPE.
    pub fn qk_norm(mut self, eps: f32) -> Self {
        self.qk_norm_eps = Some(eps);
        self
    }

    /// RMS norms `q_norm` and `k_norm` over the whole query and key projections, before the
    /// heads are split (olmo2, olmoe).
    pub fn full_qk_norm(mut self, eps: f32) -> Self {
        self.qk_norm_eps = Some(eps);
        self.qk_norm_full = true;
        self
    }

    /// The same norms with zero-centred weights, `1 + weight` (gemma3).
    pub fn zero_centered_qk_norm(mut self, eps: f32) -> Self {
        self.qk_norm_eps = Some(eps);
        self.qk_norm_zero_centered = true;
        self
    }

    /// Another attention scale (granite's `attention_multiplier`).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }

    /// Soft-caps the scores at `cap` ([`softcapped_attention`]; gemma2).
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }

    /// Per-head RMS norms `q_norm` and `k_norm` applied to the rotated queries and keys,
    /// after RoPE (hunyuan_v1_dense).
    pub fn qk_norm_after_rope(mut self, eps: f32) -> Self {
        self.qk_norm_eps = Some(eps);
        self.qk_norm_after_rope = true;
        self
    }

    /// A learned attention sink per query head, passed to the fused attention (gpt_oss).
    pub fn sinks(mut self) -> Self {
        self.sinks = true;
        self
    }
}

/// Grouped-query self-attention: projections, optional per-head q/k norm, RoPE (or none, for
/// no-position layers), the cache, the fused attention (with or without sinks; or the
/// soft-capped one), the output projection.
#[derive(Debug, ModuleParameters)]
pub struct Attention {
    /// `[n_heads * head_dim, hidden]`.
    #[param]
    pub q_proj: Linear,
    /// `[n_kv_heads * head_dim, hidden]`.
    #[param]
    pub k_proj: Linear,
    /// `[n_kv_heads * head_dim, hidden]`.
    #[param]
    pub v_proj: Linear,
    /// `[hidden, n_heads * head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// Norm of the queries (per head, or over all heads), when configured.
    #[param]
    pub q_norm: Option<RmsNorm>,
    /// Norm of the keys (per head, or over all heads), when configured.
    #[param]
    pub k_norm: Option<RmsNorm>,
    /// `[n_heads]`: the learned attention sinks, when configured.
    #[param]
    pub sinks: Param<Option<Array>>,
    /// Whether `q_norm` and `k_norm` run over all heads at once.
    pub qk_norm_full: bool,
    /// Whether `q_norm` and `k_norm` run after RoPE.
    pub qk_norm_after_rope: bool,
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads.
    pub n_kv_heads: i32,
    /// Factor on the scores.
    pub scale: f32,
    /// Soft-cap of the scores, if any.
    pub softcap: Option<f32>,
    /// The positions' rotation; `None` for a layer without positional encoding.
    pub rope: Option<Rope>,
}

impl Attention {
    /// The layer `config` describes, rotating with `rope` (`None`: no RoPE).
    pub fn new(config: &AttentionConfig, rope: Option<Rope>) -> Result<Self> {
        let c = config;
        let width = |heads: i32| {
            heads.checked_mul(c.head_dim).ok_or_else(|| {
                Exception::custom(format!(
                    "attention: {heads} heads of {} exceed MLX's size limit {}",
                    c.head_dim,
                    i32::MAX
                ))
            })
        };
        let (q_dim, kv_dim) = (width(c.n_heads)?, width(c.n_kv_heads)?);
        if c.qk_norm_after_rope && c.qk_norm_full {
            return Err(Exception::custom(
                "attention: q/k norms over all heads cannot follow RoPE",
            ));
        }
        if c.sinks && c.softcap.is_some() {
            return Err(Exception::custom(
                "attention: the soft-capped attention has no sinks",
            ));
        }
        let sinks = match c.sinks {
            true => Some(zeros_dtype(&[c.n_heads], Dtype::Float32)?),
            false => None,
        };
        let norm = |full_width: i32| {
            let width = if c.qk_norm_full {
                full_width
            } else {
                c.head_dim
            };
            c.qk_norm_eps
                .map(|eps| match c.qk_norm_zero_centered {
                    true => RmsNorm::zero_centered(width, eps),
                    false => RmsNorm::new(width, eps),
                })
                .transpose()
        };
        Ok(Attention {
            q_proj: Linear::new(c.hidden_size, q_dim, c.qkv_bias)?,
            k_proj: Linear::new(c.hidden_size, kv_dim, c.qkv_bias)?,
            v_proj: Linear::new(c.hidden_size, kv_dim, c.qkv_bias)?,
            o_proj: Linear::new(q_dim, c.hidden_size, c.o_bias)?,
            q_norm: norm(q_dim)?,
            k_norm: norm(kv_dim)?,
            sinks: Param::new(sinks),
            qk_norm_full: c.qk_norm_full,
            qk_norm_after_rope: c.qk_norm_after_rope,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            scale: c.scale,
            softcap: c.softcap,
            rope,
        })
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, attending to what `cache` holds and the `L`
    /// new positions (which it appends to `cache`).
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        // [B, L, n * head_dim] -> [B, n, L, head_dim], normed per head on the way.
        let full = self.qk_norm_full;
        // Norms after RoPE are applied below, to the rotated heads.
        let (q_norm, k_norm) = match self.qk_norm_after_rope {
            true => (None, None),
            false => (self.q_norm.as_ref(), self.k_norm.as_ref()),
        };
        let heads = |t: Array, n: i32, norm: Option<&RmsNorm>| -> Result<Array> {
            let t = match norm {
                Some(norm) if full => norm.forward(&t)?.reshape(&[b, l, n, -1])?,
                Some(norm) => norm.forward(&t.reshape(&[b, l, n, -1])?)?,
                None => t.reshape(&[b, l, n, -1])?,
            };
            split_heads(&t, n)
        };
        let queries = heads(self.q_proj.forward(x)?, self.n_heads, q_norm)?;
        let keys = heads(self.k_proj.forward(x)?, self.n_kv_heads, k_norm)?;
        let values = heads(self.v_proj.forward(x)?, self.n_kv_heads, None)?;

        let (queries, keys) = match &self.rope {
            Some(rope) => (
                rope_after(rope, &queries, cache.as_deref())?,
                rope_after(rope, &keys, cache.as_deref())?,
            ),
            None => (queries, keys),
        };
        let (queries, keys) = match (self.qk_norm_after_rope, &self.q_norm, &self.k_norm) {
            (true, Some(q_norm), Some(k_norm)) => {
                (q_norm.forward(&queries)?, k_norm.forward(&keys)?)
            }
            _ => (queries, keys),
        };
        let output = match self.softcap {
            Some(cap) => {
                softcapped_attention(&queries, &keys, &values, cache, self.scale, cap, mask)?
            }
            None => {
                let sinks = self.sinks.value.as_ref();
                attend(&queries, &keys, &values, cache, self.scale, mask, sinks)?
            }
        };
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

/// The gated feed-forward: `down_proj(act(gate_proj(x), up_proj(x)))`, SwiGLU unless told.
#[derive(Debug, ModuleParameters)]
pub struct Mlp {
    /// `[hidden, dim]`.
    #[param]
    pub gate_proj: Linear,
    /// `[dim, hidden]`.
    #[param]
    pub down_proj: Linear,
    /// `[hidden, dim]`.
    #[param]
    pub up_proj: Linear,
    /// How the gate and the up projection combine.
    pub activation: GatedActivation,
}

impl Mlp {
    /// A SwiGLU feed-forward of `dim` to `hidden` and back, all three projections with or
    /// without biases.
    pub fn new(dim: usize, hidden: usize, bias: bool) -> Result<Self> {
        let (dim, hidden) = (dim as i32, hidden as i32);
        Ok(Mlp {
            gate_proj: Linear::new(dim, hidden, bias)?,
            down_proj: Linear::new(hidden, dim, bias)?,
            up_proj: Linear::new(dim, hidden, bias)?,
            activation: GatedActivation::SwiGlu,
        })
    }

    /// The same with another gated activation (GeGLU, ...).
    pub fn with_activation(mut self, activation: GatedActivation) -> Self {
        self.activation = activation;
        self
    }

    /// `[..., dim]` to `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&self.activation.apply(&up, &gate)?)
    }
}

/// The SwiGLU feed-forward with the gate and up projections fused in one `gate_up_proj`
/// (`[2 * hidden, dim]`, the gate's half first), as phi3's, glm's and glm4's checkpoints store
/// it: `down_proj(silu(gate) * up)`.
#[derive(Debug, ModuleParameters)]
pub struct FusedMlp {
    /// `[2 * hidden, dim]`: the gate's rows, then the up projection's.
    #[param]
    pub gate_up_proj: Linear,
    /// `[dim, hidden]`.
    #[param]
    pub down_proj: Linear,
}

impl FusedMlp {
    /// `dim` to `hidden` (twice, fused) and back, bias-free. The args check that `2 * hidden`
    /// fits MLX's size limit.
    pub fn new(dim: usize, hidden: usize) -> Result<Self> {
        let (dim, hidden) = (dim as i32, hidden as i32);
        Ok(FusedMlp {
            gate_up_proj: Linear::new(dim, 2 * hidden, false)?,
            down_proj: Linear::new(hidden, dim, false)?,
        })
    }

    /// `[..., dim]` to `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gate_up = self.gate_up_proj.forward(x)?.split_equal(2, -1)?;
        self.down_proj
            .forward(&crate::nn::activations::swiglu(&gate_up[0], &gate_up[1])?)
    }
}

impl Block for FusedMlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        FusedMlp::forward(self, x)
    }
}

/// A decoder layer the [`Decoder`] stacks: `[B, L, dim]` to `[B, L, dim]`, attending under
/// `mask` to what `cache` holds and the `L` new positions (which it appends to `cache`).
pub trait Layer: mlx_rs::module::ModuleParameters {
    /// Applies the layer.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array>;

    /// The attention window of a sliding-window layer; `None` (the default): full attention.
    fn window(&self) -> Option<i32> {
        None
    }

    /// Whether its attention masks the scores by hand and so needs the mask as an array even
    /// where the fused kernel's causal flag would do (mlx-lm's `return_array`); default `false`.
    fn mask_as_array(&self) -> bool {
        false
    }
}

/// The self-attention of a [`DecoderLayer`]: `[B, L, dim]` to `[B, L, dim]`, as
/// [`Layer::forward`].
pub trait SelfAttention: mlx_rs::module::ModuleParameters {
    /// Applies the attention.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array>;

    /// As [`Layer::mask_as_array`]; default `false`.
    fn mask_as_array(&self) -> bool {
        false
    }
}

/// A position-wise block of a [`DecoderLayer`] or a [`Decoder`]: a norm or a feed-forward,
/// `[..., dim]` to `[..., dim]`.
pub trait Block: mlx_rs::module::ModuleParameters {
    /// Applies the block.
    fn forward(&self, x: &Array) -> Result<Array>;
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        Attention::forward(self, x, mask, cache)
    }

    /// The soft-capped scores are masked by hand.
    fn mask_as_array(&self) -> bool {
        self.softcap.is_some()
    }
}

impl Block for Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        Mlp::forward(self, x)
    }
}

impl Block for RmsNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        RmsNorm::forward(self, x)
    }
}

impl Block for LayerNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        LayerNorm::forward(self, x)
    }
}

/// A pre-norm decoder layer: `h = x + m * attn(norm(x))`, `out = h + m * mlp(norm(h))`, with
/// `m` the residual multiplier (granite) or 1. Llama's by default (its [`Attention`], its
/// [`Mlp`], RMS norms); other architectures put in their own attention, feed-forward or norms.
#[derive(Debug, ModuleParameters)]
pub struct DecoderLayer<A: SelfAttention = Attention, M: Block = Mlp, N: Block = RmsNorm> {
    /// The attention.
    #[param]
    pub self_attn: A,
    /// The feed-forward.
    #[param]
    pub mlp: M,
    /// Norm before the attention.
    #[param]
    pub input_layernorm: N,
    /// Norm before the feed-forward.
    #[param]
    pub post_attention_layernorm: N,
    /// Factor on both residual branches (`None`: 1, skipping the multiplication).
    pub residual_multiplier: Option<f32>,
    /// The attention window of a sliding-window layer (`None`: full attention).
    pub sliding_window: Option<i32>,
}

impl<A: SelfAttention, M: Block> DecoderLayer<A, M, RmsNorm> {
    /// A full-attention layer with RMS norms of width `dim`.
    pub fn new(self_attn: A, mlp: M, dim: usize, eps: f32) -> Result<Self> {
        let norm = || RmsNorm::new(dim as i32, eps);
        Ok(Self::with_norms(self_attn, mlp, norm()?, norm()?))
    }
}

impl DecoderLayer {
    /// Llama's layer: the attention `attention` describes, rotating with `rope` (`None`: no
    /// RoPE), a SwiGLU [`Mlp`] of width `intermediate_size` (biases when `mlp_bias`), and RMS
    /// norms with `eps`.
    pub fn llama(
        attention: &AttentionConfig,
        rope: Option<Rope>,
        intermediate_size: usize,
        mlp_bias: bool,
        eps: f32,
    ) -> Result<Self> {
        let dim = attention.hidden_size as usize;
        let self_attn = Attention::new(attention, rope)?;
        let mlp = Mlp::new(dim, intermediate_size, mlp_bias)?;
        Self::new(self_attn, mlp, dim, eps)
    }
}

impl<A: SelfAttention, M: Block, N: Block> DecoderLayer<A, M, N> {
    /// A full-attention layer with the norms given (LayerNorms, zero-centred RMS norms, ...).
    pub fn with_norms(
        self_attn: A,
        mlp: M,
        input_layernorm: N,
        post_attention_layernorm: N,
    ) -> Self {
        DecoderLayer {
            self_attn,
            mlp,
            input_layernorm,
            post_attention_layernorm,
            residual_multiplier: None,
            sliding_window: None,
        }
    }

    /// Scales both residual branches by `m` (granite's `residual_multiplier`).
    pub fn residual_multiplier(mut self, m: f32) -> Self {
        self.residual_multiplier = Some(m);
        self
    }

    /// Makes it a sliding-window layer: each query sees the last `window` positions, itself
    /// included, and the layer's cache keeps only those.
    pub fn sliding_window(mut self, window: Option<usize>) -> Self {
        self.sliding_window = window.map(|w| w as i32);
        self
    }
}

impl<A: SelfAttention, M: Block, N: Block> Layer for DecoderLayer<A, M, N> {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let branch = |r: Array| match self.residual_multiplier {
            Some(m) => scaled(&r, m),
            None => Ok(r),
        };
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(branch(r)?)?;
        let r = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        h.add(branch(r)?)
    }

    fn window(&self) -> Option<i32> {
        self.sliding_window
    }

    fn mask_as_array(&self) -> bool {
        self.self_attn.mask_as_array()
    }
}

/// A layer whose norms come after the attention and after the feed-forward, inside the
/// residual branches (olmo3's, exaone4's): `h = x + norm(attn(x))`, then
/// `h + norm(mlp(h))`; a sliding-window layer when `window` is set.
#[derive(Debug, ModuleParameters)]
pub struct PostNormLayer<A: SelfAttention = Attention> {
    /// The attention.
    #[param]
    pub self_attn: A,
    /// The feed-forward.
    #[param]
    pub mlp: Mlp,
    /// Norm of the attention's output.
    #[param]
    pub post_attention_layernorm: RmsNorm,
    /// Norm of the feed-forward's output.
    #[param]
    pub post_feedforward_layernorm: RmsNorm,
    /// The attention window of a sliding-window layer (`None`: full attention).
    pub window: Option<i32>,
}

impl<A: SelfAttention> PostNormLayer<A> {
    /// The layer around `self_attn` and `mlp`, with RMS norms of width `dim`.
    pub fn new(self_attn: A, mlp: Mlp, dim: usize, eps: f32, window: Option<i32>) -> Result<Self> {
        Ok(PostNormLayer {
            self_attn,
            mlp,
            post_attention_layernorm: RmsNorm::new(dim as i32, eps)?,
            post_feedforward_layernorm: RmsNorm::new(dim as i32, eps)?,
            window,
        })
    }
}

impl<A: SelfAttention> Layer for PostNormLayer<A> {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let r = self.self_attn.forward(x, mask, cache)?;
        let h = x.add(self.post_attention_layernorm.forward(&r)?)?;
        let r = Block::forward(&self.mlp, &h)?;
        h.add(self.post_feedforward_layernorm.forward(&r)?)
    }

    fn window(&self) -> Option<i32> {
        self.window
    }

    fn mask_as_array(&self) -> bool {
        self.self_attn.mask_as_array()
    }
}

/// The decoder stack (`model.*` in checkpoints): token embeddings, the layers, the final norm.
/// It builds the masks and the caches from what each [`Layer`] says of its window, and turns
/// hidden states into logits through a head or the tied embeddings.
#[derive(Debug, ModuleParameters)]
pub struct Decoder<L: Layer = DecoderLayer, N: Block = RmsNorm> {
    /// `[vocab, dim]`; also the head of a model with tied embeddings.
    #[param]
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[param]
    pub layers: Vec<L>,
    /// The final norm.
    #[param]
    pub norm: N,
    /// Learned absolute positions (GPT-2's `wpe`), added to the token embeddings; `None` (the
    /// default) for models that rotate instead.
    #[param]
    pub embed_positions: Option<Embedding>,
    /// Factor on the embeddings (granite's `embedding_multiplier`, gemma's
    /// `sqrt(hidden_size)`; `None`: 1).
    pub embedding_multiplier: Option<f32>,
}

impl<L: Layer> Decoder<L, RmsNorm> {
    /// Embeddings of `vocab` tokens of width `dim`, `layers`, and a final RMS norm.
    pub fn new(vocab: usize, dim: usize, eps: f32, layers: Vec<L>) -> Result<Self> {
        Self::with_norm(vocab, dim, layers, RmsNorm::new(dim as i32, eps)?)
    }
}

impl<L: Layer, N: Block> Decoder<L, N> {
    /// Embeddings of `vocab` tokens of width `dim`, `layers`, and the final `norm`.
    pub fn with_norm(vocab: usize, dim: usize, layers: Vec<L>, norm: N) -> Result<Self> {
        Ok(Decoder {
            embed_tokens: Embedding::new(vocab as i32, dim as i32)?,
            layers,
            norm,
            embed_positions: None,
            embedding_multiplier: None,
        })
    }

    /// Adds learned absolute positions: an embedding of `n_positions` positions of width `dim`,
    /// looked up at each token's position (after what the cache holds, per sequence for a
    /// batch cache) and added to the token embeddings (GPT-2's `wpe`).
    pub fn with_positions(mut self, n_positions: usize, dim: usize) -> Result<Self> {
        self.embed_positions = Some(Embedding::new(n_positions as i32, dim as i32)?);
        Ok(self)
    }

    /// Scales the embeddings by `m`, in their dtype.
    pub fn embedding_multiplier(mut self, m: f32) -> Self {
        self.embedding_multiplier = Some(m);
        self
    }

    /// Token ids `[B, L]` to the normed hidden states `[B, L, dim]`, reading and extending
    /// `cache` (one entry per layer, or empty for no cache).
    ///
    /// As mlx-lm: one mask per distinct window (full attention being one), each made from the
    /// cache of the first layer with that window.
    pub fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let mut h = self.embed_tokens.forward(inputs)?;
        if let Some(m) = self.embedding_multiplier {
            h = scaled(&h, m)?;
        }
        if let Some(wpe) = &self.embed_positions {
            h = h.add(wpe.forward(&positions(inputs.dim(1), cache.first())?)?)?;
        }
        let masks = self.masks(inputs.dim(1), cache)?;
        let mask_of = |window: Option<i32>| {
            masks
                .iter()
                .find(|(w, _)| *w == window)
                .map(|(_, m)| m)
                .ok_or_else(|| Exception::custom("no mask for a layer's attention window"))
        };
        let mut caches = cache.iter_mut();
        for layer in &self.layers {
            h = layer.forward(&h, mask_of(layer.window())?, caches.next())?;
        }
        self.norm.forward(&h)
    }

    /// One mask for each distinct window of the layers.
    fn masks(&self, n: i32, cache: &[Cache]) -> Result<Vec<(Option<i32>, AttentionMask)>> {
        let mut masks: Vec<(Option<i32>, AttentionMask)> = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let window = layer.window();
            if masks.iter().all(|(w, _)| *w != window) {
                let as_array = layer.mask_as_array();
                let mask = create_attention_mask(n, cache.get(i), window, as_array)?;
                masks.push((window, mask));
            }
        }
        Ok(masks)
    }

    /// The logits of hidden states `h`: through `lm_head`, or through the embeddings when
    /// the model ties them (`lm_head` is `None`).
    pub fn logits(&self, h: &Array, lm_head: Option<&Linear>) -> Result<Array> {
        match lm_head {
            Some(head) => head.forward(h),
            None => self.embed_tokens.as_linear(h),
        }
    }

    /// A fresh cache per layer: rotating over its window for a sliding-window layer, growing
    /// for a full-attention one.
    pub fn make_cache(&self) -> Vec<Cache> {
        self.layers
            .iter()
            .map(|l| match l.window() {
                Some(window) => Cache::rotating(window, 0),
                None => Cache::kv(),
            })
            .collect()
    }

    /// The number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
