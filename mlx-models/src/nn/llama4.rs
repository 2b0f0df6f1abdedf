//! What the Llama 4 text models share (mlx-lm's `llama4_text`, and the text model inside its
//! multimodal `llama4`): an attention whose layers rotate or not ([`Llama4Attention`]), with
//! weightless per-head RMS norms on queries and keys ([`QkNorm`]: before RoPE in
//! `llama4_text`, after it in `llama4`) and, in `llama4`'s layers without RoPE, attention
//! temperature tuning ([`TemperatureTuning`]: queries scaled up with their position); and
//! the pre-norm layer whose feed-forward is named `feed_forward` ([`Llama4Layer`]).

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::{floor, log};
use mlx_rs::{Array, Dtype};

use crate::cache::Cache;
use crate::nn::attention::attend;
use crate::nn::blocks::{merge_heads, positions, rope_after, split_heads};
use crate::nn::mask::AttentionMask;
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::Linear;
use crate::nn::rope::Rope;
use crate::nn::transformer::{Block, Layer};

/// Weightless RMS norms of each query and key head (`mx.fast.rms_norm` without a weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QkNorm {
    /// On the heads as projected, before RoPE (llama4_text, with `rms_norm_eps`).
    BeforeRope(f32),
    /// On the rotated heads (llama4, with its fixed `1e-6`).
    AfterRope(f32),
}

/// Attention temperature tuning (llama4's layers without RoPE): the query at position `p`
/// (counting from 0) is scaled by `1 + attn_scale * ln(1 + floor((p + 1) / floor_scale))`,
/// computed in float32, the product cast back to the queries' type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemperatureTuning {
    /// `floor_scale`: positions per step of the logarithm.
    pub floor_scale: f32,
    /// `attn_scale`: the factor on the logarithm.
    pub attn_scale: f32,
}

impl TemperatureTuning {
    /// Scales `queries` (`[B, heads, L, head_dim]`) for the positions after what `cache`
    /// holds (per sequence for a batch cache).
    pub fn scale_queries(&self, queries: &Array, cache: Option<&Cache>) -> Result<Array> {
        let l = queries.dim(2);
        let pos = positions(l, cache)?.add(Array::from_int(1))?;
        let steps = floor(
            pos.as_dtype(Dtype::Float32)?
                .divide(Array::from_f32(self.floor_scale))?,
        )?;
        let scales = log(steps.add(Array::from_f32(1.0))?)?
            .multiply(Array::from_f32(self.attn_scale))?
            .add(Array::from_f32(1.0))?;
        // [L] -> [L, 1]; [B, L] (a batch cache) -> [B, 1, L, 1].
        let scales = match scales.ndim() {
            1 => scales.reshape(&[l, 1])?,
            _ => scales.reshape(&[-1, 1, l, 1])?,
        };
        queries.multiply(&scales)?.as_dtype(queries.dtype())
    }
}

/// Grouped-query attention with RoPE or none, optional weightless q/k norms and optional
/// temperature tuning; projections named as the checkpoints name them.
#[derive(Debug, ModuleParameters)]
pub struct Llama4Attention {
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
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads.
    pub n_kv_heads: i32,
    /// Factor on the scores (`head_dim^-0.5`).
    pub scale: f32,
    /// The positions' rotation; `None` in a layer without RoPE.
    pub rope: Option<Rope>,
    /// The q/k norms, if any.
    pub qk_norm: Option<QkNorm>,
    /// Temperature tuning of the queries, if any.
    pub temperature: Option<TemperatureTuning>,
}

impl Llama4Attention {
    /// `n_heads` query and `n_kv_heads` key/value heads of `head_dim` over `hidden`, with
    /// biases on all four projections when `bias`, rotating with `rope`; no norms, no tuning.
    pub fn new(
        hidden: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        bias: bool,
        rope: Option<Rope>,
    ) -> Result<Self> {
        let (dim, h, kv, d) = (
            hidden as i32,
            n_heads as i32,
            n_kv_heads as i32,
            head_dim as i32,
        );
        Ok(Llama4Attention {
            q_proj: Linear::new(dim, h * d, bias)?,
            k_proj: Linear::new(dim, kv * d, bias)?,
            v_proj: Linear::new(dim, kv * d, bias)?,
            o_proj: Linear::new(h * d, dim, bias)?,
            n_heads: h,
            n_kv_heads: kv,
            scale: (head_dim as f32).powf(-0.5),
            rope,
            qk_norm: None,
            temperature: None,
        })
    }

    /// Sets the q/k norms.
    pub fn qk_norm(mut self, norm: Option<QkNorm>) -> Self {
        self.qk_norm = norm;
        self
    }

    /// Sets the temperature tuning.
    pub fn temperature(mut self, tuning: Option<TemperatureTuning>) -> Self {
        self.temperature = tuning;
        self
    }

    fn norm(t: Array, eps: f32) -> Result<Array> {
        mlx_rs::fast::rms_norm(&t, None, eps)
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, attending to what `cache` holds and the `L`
    /// new positions (which it appends to `cache`).
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let mut queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let mut keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        if let Some(QkNorm::BeforeRope(eps)) = self.qk_norm {
            (queries, keys) = (Self::norm(queries, eps)?, Self::norm(keys, eps)?);
        }
        if let Some(rope) = &self.rope {
            queries = rope_after(rope, &queries, cache.as_deref())?;
            keys = rope_after(rope, &keys, cache.as_deref())?;
        }
        if let Some(QkNorm::AfterRope(eps)) = self.qk_norm {
            (queries, keys) = (Self::norm(queries, eps)?, Self::norm(keys, eps)?);
        }
        if let Some(tuning) = &self.temperature {
            queries = tuning.scale_queries(&queries, cache.as_deref())?;
        }
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

/// The pre-norm layer of the Llama 4 text models: attention and a feed-forward `F` (dense or
/// a mixture of experts) named `feed_forward`, each after an RMS norm, each added back.
#[derive(Debug, ModuleParameters)]
pub struct Llama4Layer<F: Block> {
    /// The attention.
    #[param]
    pub self_attn: Llama4Attention,
    /// The feed-forward.
    #[param]
    pub feed_forward: F,
    /// Norm before the attention.
    #[param]
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward.
    #[param]
    pub post_attention_layernorm: RmsNorm,
}

impl<F: Block> Llama4Layer<F> {
    /// The layer of width `dim`, its norms' epsilon `eps`.
    pub fn new(self_attn: Llama4Attention, feed_forward: F, dim: usize, eps: f32) -> Result<Self> {
        Ok(Llama4Layer {
            self_attn,
            feed_forward,
            input_layernorm: RmsNorm::new(dim as i32, eps)?,
            post_attention_layernorm: RmsNorm::new(dim as i32, eps)?,
        })
    }
}

impl<F: Block> Layer for Llama4Layer<F> {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(r)?;
        let r = self
            .feed_forward
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        h.add(r)
    }
}
