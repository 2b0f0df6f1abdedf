//! What the qwen3_next family shares (`qwen3_next`, `qwen3_5`, `qwen3_5_moe`), after mlx-lm's
//! `models/qwen3_next.py` and `models/qwen3_5.py`:
//!
//! - [`GatedDeltaNet`]: the linear-attention layer (`linear_attn`): projections (qwen3_next's
//!   fused `in_proj_qkvz` / `in_proj_ba` grouped per key head, or qwen3_5's separate
//!   `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`), the causal depthwise convolution
//!   with its state in slot 0 of an [`ArraysCache`], the gated delta rule
//!   ([`crate::nn::gated_delta`]) with its state in slot 1, the gated norm, `out_proj`;
//! - [`GatedAttention`]: full attention (`self_attn`) whose `q_proj` also yields a per-head
//!   output gate (`o_proj(out * sigmoid(gate))`), per-head q/k RMS norms, RoPE on part of
//!   each head;
//! - [`HybridLayer`] and [`HybridModel`]: the pre-norm layer holding one of the two, and the
//!   stack (embeddings, layers, final norm) with one attention mask and one padding mask;
//! - [`check_linear_attention`], [`shift_norms`]: the config check and the sanitize step
//!   (Hugging Face's zero-centred norms) both architectures use; the conv weights' conversion is
//!   `nn::ssm::conv1d_weights_to_mlx`.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::{concatenate, ones_dtype, sigmoid, zeros_dtype};
use mlx_rs::{Array, Dtype};

use crate::args::ArgsError;
use crate::cache::{create_attention_mask, create_ssm_mask, ArraysCache, Cache};
use crate::nn::activations::silu;
use crate::nn::attention::attend;
use crate::nn::blocks::{merge_heads, rope_after, split_heads};
use crate::nn::gated_delta::{gated_delta_update, normalize_qk, GatedRmsNorm};
use crate::nn::mask::AttentionMask;
use crate::nn::moe::FeedForward;
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::{Embedding, Linear};
use crate::nn::rope::Rope;
use crate::nn::ssm::DepthwiseConv1d;
use crate::nn::transformer::Block;
use crate::weights::Weights;

/// The sizes of a [`GatedDeltaNet`], as config.json names them (`linear_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatedDeltaConfig {
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `linear_num_key_heads`.
    pub num_k_heads: usize,
    /// `linear_num_value_heads` (a multiple of the key heads).
    pub num_v_heads: usize,
    /// `linear_key_head_dim`.
    pub head_k_dim: usize,
    /// `linear_value_head_dim`.
    pub head_v_dim: usize,
    /// `linear_conv_kernel_dim`.
    pub conv_kernel: usize,
    /// `rms_norm_eps` (the gated norm's).
    pub eps: f32,
}

impl GatedDeltaConfig {
    fn key_dim(&self) -> i32 {
        (self.num_k_heads * self.head_k_dim) as i32
    }

    fn value_dim(&self) -> i32 {
        (self.num_v_heads * self.head_v_dim) as i32
    }
}

/// Checks the linear-attention sizes for the args' hooks: value heads a multiple of key heads,
/// and every projection within MLX's size limit (the fused `in_proj_qkvz` is the widest).
/// The sizes are positive already (`#[arg(positive)]`).
pub fn check_linear_attention(c: &GatedDeltaConfig) -> std::result::Result<(), ArgsError> {
    let (nk, nv) = (c.num_k_heads, c.num_v_heads);
    if nv % nk != 0 {
        return Err(ArgsError::invalid(
            &["linear_num_value_heads", "linear_num_key_heads"],
            format!(
                "`linear_num_value_heads` ({nv}) is not divisible by `linear_num_key_heads` ({nk})"
            ),
        ));
    }
    let widest = (nk.checked_mul(c.head_k_dim))
        .zip(nv.checked_mul(c.head_v_dim))
        .and_then(|(k, v)| k.checked_add(v)?.checked_mul(2));
    if widest.is_none_or(|w| w > i32::MAX as usize) {
        return Err(ArgsError::invalid(
            &[
                "linear_num_key_heads",
                "linear_key_head_dim",
                "linear_num_value_heads",
                "linear_value_head_dim",
            ],
            "the linear attention's projections exceed MLX's size limit (2147483647)",
        ));
    }
    Ok(())
}

/// The gated delta net layer (`linear_attn`). Its input projections are in one of two
/// layouts: qwen3_next's fused ones or qwen3_5's separate ones (the others are `None`).
#[derive(Debug, ModuleParameters)]
#[allow(non_snake_case)]
pub struct GatedDeltaNet {
    /// qwen3_next: `[q, k, v, z]` of each key head in turn.
    #[param]
    pub in_proj_qkvz: Option<Linear>,
    /// qwen3_next: `[b, a]` of each key head in turn.
    #[param]
    pub in_proj_ba: Option<Linear>,
    /// qwen3_5: all queries, keys, values.
    #[param]
    pub in_proj_qkv: Option<Linear>,
    /// qwen3_5: the gate of the output norm.
    #[param]
    pub in_proj_z: Option<Linear>,
    /// qwen3_5: the update strength, before its sigmoid.
    #[param]
    pub in_proj_b: Option<Linear>,
    /// qwen3_5: the decay's input.
    #[param]
    pub in_proj_a: Option<Linear>,
    /// Over the queries, keys and values (`[conv_dim, kernel, 1]`, no bias).
    #[param]
    pub conv1d: DepthwiseConv1d,
    /// `[Hv]`: added to `a` before the softplus.
    #[param]
    pub dt_bias: Param<Array>,
    /// `[Hv]`: log of the decay rate.
    #[param]
    pub A_log: Param<Array>,
    /// Gated RMS norm of each value head's output.
    #[param]
    pub norm: GatedRmsNorm,
    /// `[hidden, value_dim]`.
    #[param]
    pub out_proj: Linear,
    /// The sizes.
    pub config: GatedDeltaConfig,
}

impl GatedDeltaNet {
    fn with_projections(c: &GatedDeltaConfig, fused: bool) -> Result<Self> {
        let (dim, key_dim, value_dim) = (c.hidden_size as i32, c.key_dim(), c.value_dim());
        let nv = c.num_v_heads as i32;
        let linear = |out: i32| Linear::new(dim, out, false).map(Some);
        let none = || None;
        let conv_dim = key_dim * 2 + value_dim;
        Ok(GatedDeltaNet {
            in_proj_qkvz: if fused {
                linear(key_dim * 2 + value_dim * 2)?
            } else {
                none()
            },
            in_proj_ba: if fused { linear(nv * 2)? } else { none() },
            in_proj_qkv: if fused { none() } else { linear(conv_dim)? },
            in_proj_z: if fused { none() } else { linear(value_dim)? },
            in_proj_b: if fused { none() } else { linear(nv)? },
            in_proj_a: if fused { none() } else { linear(nv)? },
            conv1d: DepthwiseConv1d::new(conv_dim, c.conv_kernel as i32, false)?,
            dt_bias: Param::new(ones_dtype(&[nv], Dtype::Float32)?),
            A_log: Param::new(zeros_dtype(&[nv], Dtype::Float32)?),
            norm: GatedRmsNorm::new(c.head_v_dim as i32, c.eps)?,
            out_proj: Linear::new(value_dim, dim, false)?,
            config: *c,
        })
    }

    /// qwen3_next's layer: fused `in_proj_qkvz` and `in_proj_ba`.
    pub fn fused(c: &GatedDeltaConfig) -> Result<Self> {
        Self::with_projections(c, true)
    }

    /// qwen3_5's layer: `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`.
    pub fn split(c: &GatedDeltaConfig) -> Result<Self> {
        Self::with_projections(c, false)
    }

    /// The projections of `x` `[B, S, hidden]`: the convolution's input `[B, S, conv_dim]`
    /// (queries, keys, values), `z` `[B, S, Hv, Dv]`, `b` and `a` `[B, S, Hv]`.
    fn project(&self, x: &Array) -> Result<[Array; 4]> {
        let c = &self.config;
        let (b, s) = (x.dim(0), x.dim(1));
        let (nk, nv) = (c.num_k_heads as i32, c.num_v_heads as i32);
        let (dk, dv) = (c.head_k_dim as i32, c.head_v_dim as i32);
        let missing = || Exception::custom("gated delta net without its input projections");
        if let (Some(qkvz), Some(ba)) = (&self.in_proj_qkvz, &self.in_proj_ba) {
            // Grouped per key head: [q (dk), k (dk), v (r * dv), z (r * dv)] and [b (r), a (r)].
            let qkvz = qkvz.forward(x)?.reshape(&[b, s, nk, -1])?;
            let r = nv / nk;
            let parts = qkvz.split_at_indices(&[dk, 2 * dk, 2 * dk + r * dv], -1)?;
            let ba = ba
                .forward(x)?
                .reshape(&[b, s, nk, -1])?
                .split_at_indices(&[r], -1)?;
            let flat = |t: &Array| t.reshape(&[b, s, -1]);
            let mixed = concatenate(&[flat(&parts[0])?, flat(&parts[1])?, flat(&parts[2])?], -1)?;
            let z = parts[3].reshape(&[b, s, nv, dv])?;
            return Ok([
                mixed,
                z,
                ba[0].reshape(&[b, s, nv])?,
                ba[1].reshape(&[b, s, nv])?,
            ]);
        }
        let project = |l: &Option<Linear>| l.as_ref().ok_or_else(missing)?.forward(x);
        let z = project(&self.in_proj_z)?.reshape(&[b, s, nv, dv])?;
        Ok([
            project(&self.in_proj_qkv)?,
            z,
            project(&self.in_proj_b)?,
            project(&self.in_proj_a)?,
        ])
    }

    /// `x` `[B, S, hidden]` to `[B, S, hidden]`. `mask` `[B, S]` (false on padding) keeps
    /// padded positions out of both states; `cache` holds the convolution's last inputs (slot
    /// 0) and the recurrent state (slot 1), and both are written back.
    pub fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let c = &self.config;
        let (b, s) = (x.dim(0), x.dim(1));
        let [mixed, z, beta_in, a] = self.project(x)?;
        let conv = self.conv1d.forward(&mixed, mask, cache.as_deref_mut(), 0)?;
        let conv = silu(&conv)?;
        let key_dim = c.key_dim();
        let parts = conv.split_at_indices(&[key_dim, 2 * key_dim], -1)?;
        let (nk, nv) = (c.num_k_heads as i32, c.num_v_heads as i32);
        let q = parts[0].reshape(&[b, s, nk, c.head_k_dim as i32])?;
        let k = parts[1].reshape(&[b, s, nk, c.head_k_dim as i32])?;
        let v = parts[2].reshape(&[b, s, nv, c.head_v_dim as i32])?;
        let (q, k) = normalize_qk(&q, &k, (c.head_k_dim as f32).powf(-0.5), 1e-6)?;
        let state = cache.as_ref().and_then(|c| c.get(1)).cloned();
        let (out, state) = gated_delta_update(
            &q,
            &k,
            &v,
            &a,
            &beta_in,
            &self.A_log,
            &self.dt_bias,
            state.as_ref(),
            mask,
        )?;
        if let Some(cache) = cache {
            cache.set(1, state);
            cache.advance(s)?;
        }
        let out = self.norm.forward(&out, Some(&z))?;
        self.out_proj.forward(&out.reshape(&[b, s, -1])?)
    }
}

/// Full attention with an output gate (qwen3_next's `Qwen3NextAttention`): `q_proj` gives each
/// head its queries and a gate (`[B, L, heads, 2 * head_dim]`, split in halves), queries and
/// keys are RMS-normed per head then rotated (RoPE on the first `rope.dims()` features), and
/// the attention's output times `sigmoid(gate)` goes through `o_proj`.
#[derive(Debug, ModuleParameters)]
pub struct GatedAttention {
    /// `[2 * heads * head_dim, hidden]`.
    #[param]
    pub q_proj: Linear,
    /// `[kv_heads * head_dim, hidden]`.
    #[param]
    pub k_proj: Linear,
    /// `[kv_heads * head_dim, hidden]`.
    #[param]
    pub v_proj: Linear,
    /// `[hidden, heads * head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// Per-head norm of the queries.
    #[param]
    pub q_norm: RmsNorm,
    /// Per-head norm of the keys.
    #[param]
    pub k_norm: RmsNorm,
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads.
    pub n_kv_heads: i32,
    /// `head_dim^-0.5`.
    pub scale: f32,
    /// The rotation of the first features of each head.
    pub rope: Rope,
}

impl GatedAttention {
    /// `heads` query heads and `kv_heads` key/value heads of `head_dim` over `hidden`
    /// features, biases on all four projections with `bias`, norms with `eps`.
    pub fn new(
        hidden: usize,
        (heads, kv_heads): (usize, usize),
        head_dim: usize,
        bias: bool,
        eps: f32,
        rope: Rope,
    ) -> Result<Self> {
        let (dim, hd) = (hidden as i32, head_dim as i32);
        let (heads, kv_heads) = (heads as i32, kv_heads as i32);
        Ok(GatedAttention {
            q_proj: Linear::new(dim, heads * hd * 2, bias)?,
            k_proj: Linear::new(dim, kv_heads * hd, bias)?,
            v_proj: Linear::new(dim, kv_heads * hd, bias)?,
            o_proj: Linear::new(heads * hd, dim, bias)?,
            q_norm: RmsNorm::new(hd, eps)?,
            k_norm: RmsNorm::new(hd, eps)?,
            n_heads: heads,
            n_kv_heads: kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope,
        })
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, attending under `mask` to what `cache` holds
    /// and the `L` new positions (which it appends to `cache`).
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let q = self.q_proj.forward(x)?.reshape(&[b, l, self.n_heads, -1])?;
        let halves = q.split_equal(2, -1)?;
        let gate = halves[1].reshape(&[b, l, -1])?;
        let queries = split_heads(&self.q_norm.forward(&halves[0])?, self.n_heads)?;
        let keys = self
            .k_proj
            .forward(x)?
            .reshape(&[b, l, self.n_kv_heads, -1])?;
        let keys = split_heads(&self.k_norm.forward(&keys)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let queries = rope_after(&self.rope, &queries, cache.as_deref())?;
        let keys = rope_after(&self.rope, &keys, cache.as_deref())?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj
            .forward(&merge_heads(&output)?.multiply(sigmoid(&gate)?)?)
    }
}

/// A pre-norm layer of the family: a [`GatedDeltaNet`] (`linear_attn`) or a
/// [`GatedAttention`] (`self_attn`), then a dense or sparse feed-forward.
#[derive(Debug, ModuleParameters)]
pub struct HybridLayer {
    /// The linear attention of a linear layer.
    #[param]
    pub linear_attn: Option<GatedDeltaNet>,
    /// The attention of a full-attention layer.
    #[param]
    pub self_attn: Option<GatedAttention>,
    /// The feed-forward.
    #[param]
    pub mlp: FeedForward,
    /// Norm before the attention.
    #[param]
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward.
    #[param]
    pub post_attention_layernorm: RmsNorm,
}

impl HybridLayer {
    /// A linear-attention layer.
    pub fn linear(attn: GatedDeltaNet, mlp: FeedForward, dim: usize, eps: f32) -> Result<Self> {
        Self::new(Some(attn), None, mlp, dim, eps)
    }

    /// A full-attention layer.
    pub fn attention(attn: GatedAttention, mlp: FeedForward, dim: usize, eps: f32) -> Result<Self> {
        Self::new(None, Some(attn), mlp, dim, eps)
    }

    fn new(
        linear_attn: Option<GatedDeltaNet>,
        self_attn: Option<GatedAttention>,
        mlp: FeedForward,
        dim: usize,
        eps: f32,
    ) -> Result<Self> {
        let norm = || RmsNorm::new(dim as i32, eps);
        Ok(HybridLayer {
            linear_attn,
            self_attn,
            mlp,
            input_layernorm: norm()?,
            post_attention_layernorm: norm()?,
        })
    }

    /// Whether it is a linear-attention layer (its cache an [`ArraysCache`] of two slots).
    pub fn is_linear(&self) -> bool {
        self.linear_attn.is_some()
    }

    /// `x` `[B, L, dim]` to `[B, L, dim]`: `attn_mask` for a full-attention layer, `ssm_mask`
    /// (`[B, L]`, false on padding) for a linear one.
    pub fn forward(
        &self,
        x: &Array,
        attn_mask: &AttentionMask,
        ssm_mask: Option<&Array>,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let normed = self.input_layernorm.forward(x)?;
        let r = match (&self.linear_attn, &self.self_attn) {
            (Some(linear), _) => {
                let cache = match cache {
                    None => None,
                    Some(Cache::Arrays(c)) => Some(c),
                    Some(other) => {
                        return Err(Exception::custom(format!(
                            "a gated delta layer keeps its state in an ArraysCache, got a {}",
                            other.class_name()
                        )))
                    }
                };
                linear.forward(&normed, ssm_mask, cache)?
            }
            (None, Some(attn)) => attn.forward(&normed, attn_mask, cache)?,
            (None, None) => return Err(Exception::custom("a layer without attention")),
        };
        let h = x.add(&r)?;
        h.add(
            self.mlp
                .forward(&self.post_attention_layernorm.forward(&h)?)?,
        )
    }
}

/// The stack (`model.*`): token embeddings, [`HybridLayer`]s, the final norm. As the
/// reference, one attention mask from the first full-attention layer's cache and one padding
/// mask from the first linear layer's.
#[derive(Debug, ModuleParameters)]
pub struct HybridModel {
    /// `[vocab, dim]`; also the head of a model with tied embeddings.
    #[param]
    pub embed_tokens: Embedding,
    /// The layers.
    #[param]
    pub layers: Vec<HybridLayer>,
    /// The final norm.
    #[param]
    pub norm: RmsNorm,
}

impl HybridModel {
    /// Embeddings of `vocab` tokens of width `dim`, `layers`, a final RMS norm with `eps`.
    pub fn new(vocab: usize, dim: usize, eps: f32, layers: Vec<HybridLayer>) -> Result<Self> {
        Ok(HybridModel {
            embed_tokens: Embedding::new(vocab as i32, dim as i32)?,
            layers,
            norm: RmsNorm::new(dim as i32, eps)?,
        })
    }

    /// Token ids `[B, L]` to the normed hidden states `[B, L, dim]`, reading and updating
    /// `cache` (one per layer, from [`HybridModel::make_cache`], or empty for none).
    pub fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let mut h = self.embed_tokens.forward(inputs)?;
        let n = inputs.dim(1);
        let first = |linear: bool| {
            let i = self.layers.iter().position(|l| l.is_linear() == linear);
            i.and_then(|i| cache.get(i))
        };
        let attn_mask = create_attention_mask(n, first(false), None, false)?;
        let ssm_mask = create_ssm_mask(n, first(true))?;
        let mut caches = cache.iter_mut();
        for layer in &self.layers {
            h = layer.forward(&h, &attn_mask, ssm_mask.as_ref(), caches.next())?;
        }
        self.norm.forward(&h)
    }

    /// The logits of hidden states `h`: through `lm_head`, or the tied embeddings.
    pub fn logits(&self, h: &Array, lm_head: Option<&Linear>) -> Result<Array> {
        match lm_head {
            Some(head) => head.forward(h),
            None => self.embed_tokens.as_linear(h),
        }
    }

    /// Two state slots for each linear layer, a growing key/value cache for each attention one.
    pub fn make_cache(&self) -> Vec<Cache> {
        let cache = |l: &HybridLayer| {
            if l.is_linear() {
                Cache::arrays(2)
            } else {
                Cache::kv()
            }
        };
        self.layers.iter().map(cache).collect()
    }

    /// The number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// The norms Hugging Face stores centred on zero (`input_layernorm`, `post_attention_layernorm`,
/// the final `norm`, `q_norm`, `k_norm`; not the gated norm of the linear layers) get 1 added,
/// as the reference's sanitize does. Call it only where the checkpoint is in that layout (the
/// callers tell by a sign of it, which the conversion removes, so that sanitize stays
/// idempotent).
pub fn shift_norms(weights: &mut Weights) -> Result<()> {
    const NORMS: [&str; 5] = [
        ".input_layernorm.weight",
        ".post_attention_layernorm.weight",
        "model.norm.weight",
        ".q_norm.weight",
        ".k_norm.weight",
    ];
    for (key, value) in weights.iter_mut() {
        if value.ndim() == 1 && NORMS.iter().any(|s| key.ends_with(s)) {
            *value = value.add(Array::from_f32(1.0).as_dtype(value.dtype())?)?;
        }
    }
    Ok(())
}
