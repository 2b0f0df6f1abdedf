//! Multi-head latent attention (MLA), after the attention of mlx-lm's `models/deepseek_v3.py`
//! and its `models/mla.py`: queries through a low-rank pair (`q_a_proj`, `q_a_layernorm`,
//! `q_b_proj`) or one `q_proj`; keys and values from one compressed latent per position
//! (`kv_a_proj_with_mqa`, then `kv_a_layernorm`) beside a single shared RoPE key; every head
//! split into a part without position (`qk_nope_head_dim`) and a rotated part
//! (`qk_rope_head_dim`).
//!
//! The cache holds what the reference's holds: the normed latent (`[B, 1, L, kv_lora_rank]`) as
//! the keys and the rotated shared key (`[B, 1, L, qk_rope_head_dim]`) as the values. The
//! per-head up-projections are two [`MultiLinear`]s, `embed_q` (`[heads, kv_lora_rank,
//! qk_nope_head_dim]`) and `unembed_out` (`[heads, v_head_dim, kv_lora_rank]`), which the
//! checkpoint's fused `kv_b_proj` splits into ([`split_kv_b_proj`]). Over several new positions
//! the latent is expanded into per-head keys and values; for one position (decoding) the query
//! is absorbed into the latent space instead and the output projected out of it, as the
//! reference does. The rotated part enters as an additive mask of scores
//! `(q_pe · scale) k_peᵀ`, the padding or causal mask applied to it with the dtype's lowest
//! value. The softmax scale is `(qk_nope_head_dim + qk_rope_head_dim)^-0.5`, times the square
//! of yarn's `0.1 · mscale_all_dim · ln(factor) + 1` when `rope_scaling` has a non-zero
//! `mscale_all_dim` and a `factor` above one ([`mla_scale`]).
//!
//! With an [`Indexer`] ([`MultiLatentAttention::with_indexer`], DeepSeek V3.2's sparse
//! attention, see [`crate::nn::dsa`]) each query attends only to the keys the indexer picks, and
//! the layer's cache is a list of two: the latents and rotated keys, then the indexer's keys.
//!
//! A quantized key/value cache is refused: the reference's path cannot use one here either.
//!
//! [`ExpandedLatentAttention`] is the plain form of the same attention (mlx-lm's
//! `deepseek_v2.py` and `minicpm3.py`): the normed latent goes through the fused `kv_b_proj`
//! into per-head keys and values, the shared rotated key is repeated over the heads, and the
//! cache holds full keys and values, so it is an ordinary attention from there on.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{
    concatenate, expand_dims, matmul, repeat_axis, select, split_at_indices, zeros_dtype,
};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::cache::Cache;
use crate::nn::attention::{attend, finfo_min, scaled_dot_product_attention};
use crate::nn::blocks::{merge_heads, rope_after};
use crate::nn::dsa::Indexer;
use crate::nn::mask::{create_causal_mask, AttentionMask};
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::{
    dequantize, infer_quantization, packed_quantization, quantize, quantize_in_place,
    quantized_matmul, Linear, Quantization, Slot,
};
use crate::nn::rope::Rope;
use crate::nn::transformer::SelfAttention;
use crate::weights::Weights;

/// One linear map per head (`mla.py`'s `MultiLinear` and `QuantizedMultiLinear`): `weight`
/// `[heads, out, in]` (packed along `in` when quantized), applied to `[..., heads, L, in]` as
/// `x @ weightᵀ`, or as `x @ weight` (`[..., L, out]` to `[..., heads, L, in]`) with
/// `transpose = false`. The quantization is read back from the shapes, as for
/// [`Linear`].
#[derive(Debug, Clone, ModuleParameters)]
pub struct MultiLinear {
    /// `[heads, out, in]`.
    #[param]
    pub weight: Param<Array>,
    /// Quantization scales (empty when dense).
    #[param]
    pub scales: Slot,
    /// Quantization biases (affine; empty otherwise).
    #[param]
    pub biases: Slot,
    input_dims: i32,
}

impl MultiLinear {
    /// Zero weights (the loader fills them).
    pub fn new(input_dims: i32, output_dims: i32, num_heads: i32) -> Result<Self> {
        let weight = zeros_dtype(&[num_heads, output_dims, input_dims], Dtype::Float32)?;
        Ok(MultiLinear {
            weight: Param::new(weight),
            scales: Slot::empty(),
            biases: Slot::empty(),
            input_dims,
        })
    }

    /// Quantizes the weight in place (`to_quantized`).
    pub fn quantize(&mut self, q: Quantization) -> Result<()> {
        let what = "the per-head linear layer";
        quantize_in_place(
            &mut self.weight,
            &mut self.scales,
            &mut self.biases,
            q,
            what,
        )
    }

    /// How the weight is quantized (`None`: dense).
    pub fn quantization(&self) -> Result<Option<Quantization>> {
        let what = "per-head linear layer";
        packed_quantization(self.input_dims, &self.weight, &self.scales, what)
    }

    /// `x @ weightᵀ` (`transpose`) or `x @ weight`.
    pub fn forward(&self, x: &Array, transpose: bool) -> Result<Array> {
        match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => {
                quantized_matmul(x, &self.weight, scales, self.biases.get(), transpose, &q)
            }
            _ if transpose => matmul(x, self.weight.swap_axes(-1, -2)?),
            _ => matmul(x, &*self.weight),
        }
    }
}

/// The softmax scale of MLA: `q_head_dim^-0.5`, times `s²` with
/// `s = 0.1 · mscale_all_dim · ln(factor) + 1` when `rope_scaling` has a non-zero
/// `mscale_all_dim` and a `factor` above one (whatever its type, as the reference reads it).
pub fn mla_scale(q_head_dim: usize, rope_scaling: Option<&Value>) -> f32 {
    let mut scale = (q_head_dim as f64).powf(-0.5);
    if let Some(scaling) = rope_scaling.filter(|v| v.is_object()) {
        let num = |k: &str| scaling.get(k).and_then(Value::as_f64);
        let mscale_all_dim = num("mscale_all_dim").unwrap_or(0.0);
        if mscale_all_dim != 0.0 {
            let factor = num("factor").unwrap_or(1.0);
            if factor > 1.0 {
                let s = 0.1 * mscale_all_dim * factor.ln() + 1.0;
                scale *= s * s;
            }
        }
    }
    scale as f32
}

/// The shape of a [`MultiLatentAttention`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MlaConfig {
    /// Model width.
    pub hidden_size: i32,
    /// Attention heads.
    pub n_heads: i32,
    /// Rank of the query's low-rank pair; `None`: one `q_proj`.
    pub q_lora_rank: Option<i32>,
    /// Width of the compressed key/value latent.
    pub kv_lora_rank: i32,
    /// Features of each query/key head without position.
    pub qk_nope_head_dim: i32,
    /// Rotated features of each query head and of the shared key.
    pub qk_rope_head_dim: i32,
    /// Features of each value head.
    pub v_head_dim: i32,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    pub bias: bool,
    /// The epsilon of `q_a_layernorm` and `kv_a_layernorm`.
    pub norm_eps: f32,
    /// The factor on the scores ([`mla_scale`]).
    pub scale: f32,
}

/// The query projections of `c`: one `q_proj`, or `q_a_proj`, `q_a_layernorm` and `q_b_proj`
/// with a query rank.
type QueryProjections = (
    Option<Linear>,
    Option<Linear>,
    Option<RmsNorm>,
    Option<Linear>,
);

fn query_projections(c: &MlaConfig) -> Result<QueryProjections> {
    let q_width = c
        .n_heads
        .checked_mul(c.qk_nope_head_dim + c.qk_rope_head_dim)
        .ok_or_else(|| Exception::custom("attention: the query heads exceed MLX's size limit"))?;
    Ok(match c.q_lora_rank {
        None => (
            Some(Linear::new(c.hidden_size, q_width, false)?),
            None,
            None,
            None,
        ),
        Some(rank) => (
            None,
            Some(Linear::new(c.hidden_size, rank, c.bias)?),
            Some(RmsNorm::new(rank, c.norm_eps)?),
            Some(Linear::new(rank, q_width, false)?),
        ),
    })
}

/// `x` `[B, L, hidden]` through the query projections, split into heads: the parts without
/// and with position, `[B, heads, L, qk_nope_head_dim]` and `[B, heads, L, qk_rope_head_dim]`,
/// and with a query rank the normed query latent `[B, L, q_lora_rank]`.
fn project_queries(
    (q_proj, q_a_proj, q_a_layernorm, q_b_proj): (
        &Option<Linear>,
        &Option<Linear>,
        &Option<RmsNorm>,
        &Option<Linear>,
    ),
    c: &MlaConfig,
    x: &Array,
) -> Result<(Array, Array, Option<Array>)> {
    let (b, l) = (x.dim(0), x.dim(1));
    let (q, qr) = match (q_proj, q_a_proj, q_a_layernorm, q_b_proj) {
        (Some(q_proj), ..) => (q_proj.forward(x)?, None),
        (None, Some(a), Some(norm), Some(b_proj)) => {
            let qr = norm.forward(&a.forward(x)?)?;
            (b_proj.forward(&qr)?, Some(qr))
        }
        _ => return Err(Exception::custom("attention: no query projection")),
    };
    let q = q
        .reshape(&[b, l, c.n_heads, c.qk_nope_head_dim + c.qk_rope_head_dim])?
        .transpose_axes(&[0, 2, 1, 3])?;
    let mut parts = split_at_indices(&q, &[c.qk_nope_head_dim], -1)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(nope), Some(pe)) => Ok((nope, pe, qr)),
        _ => Err(Exception::custom("attention: the query split lost a part")),
    }
}

/// Multi-head latent attention (see the module's documentation). Field names are the
/// checkpoint's (`self_attn.q_a_proj`, `self_attn.embed_q`, ...).
#[derive(Debug, ModuleParameters)]
pub struct MultiLatentAttention {
    /// `[heads * q_head_dim, hidden]`, without a query rank.
    #[param]
    pub q_proj: Option<Linear>,
    /// `[q_lora_rank, hidden]`.
    #[param]
    pub q_a_proj: Option<Linear>,
    /// `[q_lora_rank]`.
    #[param]
    pub q_a_layernorm: Option<RmsNorm>,
    /// `[heads * q_head_dim, q_lora_rank]`.
    #[param]
    pub q_b_proj: Option<Linear>,
    /// `[kv_lora_rank + qk_rope_head_dim, hidden]`.
    #[param]
    pub kv_a_proj_with_mqa: Linear,
    /// `[kv_lora_rank]`.
    #[param]
    pub kv_a_layernorm: RmsNorm,
    /// `[heads, kv_lora_rank, qk_nope_head_dim]`: latent to keys (and queries into the latent).
    #[param]
    pub embed_q: MultiLinear,
    /// `[heads, v_head_dim, kv_lora_rank]`: latent to values.
    #[param]
    pub unembed_out: MultiLinear,
    /// `[hidden, heads * v_head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// The sparse-attention indexer (`None`: every query sees every key).
    #[param]
    pub indexer: Option<Indexer>,
    /// The shape.
    pub config: MlaConfig,
    /// The rotation of the rotated parts.
    pub rope: Rope,
}

impl MultiLatentAttention {
    /// The layer `config` describes, rotating with `rope` (over `qk_rope_head_dim` features).
    pub fn new(config: MlaConfig, rope: Rope) -> Result<Self> {
        let c = &config;
        let (q_proj, q_a_proj, q_a_layernorm, q_b_proj) = query_projections(c)?;
        Ok(MultiLatentAttention {
            q_proj,
            q_a_proj,
            q_a_layernorm,
            q_b_proj,
            kv_a_proj_with_mqa: Linear::new(
                c.hidden_size,
                c.kv_lora_rank + c.qk_rope_head_dim,
                c.bias,
            )?,
            kv_a_layernorm: RmsNorm::new(c.kv_lora_rank, c.norm_eps)?,
            embed_q: MultiLinear::new(c.qk_nope_head_dim, c.kv_lora_rank, c.n_heads)?,
            unembed_out: MultiLinear::new(c.kv_lora_rank, c.v_head_dim, c.n_heads)?,
            o_proj: Linear::new(c.n_heads * c.v_head_dim, c.hidden_size, c.bias)?,
            indexer: None,
            config,
            rope,
        })
    }

    /// The same layer made sparse: `indexer` picks the keys each query attends to, from the
    /// normed query latent (so the layer needs a `q_lora_rank`). Its cache is then a list of
    /// two (see [`Cache::parts_mut`]): the latents and rotated keys, and the indexer's keys.
    pub fn with_indexer(mut self, indexer: Indexer) -> Result<Self> {
        if self.config.q_lora_rank.is_none() {
            return Err(Exception::custom(
                "the sparse-attention indexer reads the query latent; the attention needs a \
                 `q_lora_rank`",
            ));
        }
        self.indexer = Some(indexer);
        Ok(self)
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, attending to what `cache` holds and the `L`
    /// new positions (whose latents and rotated keys it appends to `cache`).
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let c = &self.config;
        let (b, l) = (x.dim(0), x.dim(1));
        let (cache, indexer_cache) = match (&self.indexer, cache) {
            (Some(_), Some(cache)) => match cache.parts_mut(2)? {
                [latents, keys] => (Some(latents), Some(keys)),
                _ => return Err(Exception::custom("attention: a cache list of two expected")),
            },
            (_, cache) => (cache, None),
        };
        let queries = (
            &self.q_proj,
            &self.q_a_proj,
            &self.q_a_layernorm,
            &self.q_b_proj,
        );
        // `qr`, the normed query latent, is the indexer's input too.
        let (q_nope, q_pe, qr) = project_queries(queries, c, x)?;
        let (q_nope, q_pe) = (&q_nope, &q_pe);
        let compressed = self.kv_a_proj_with_mqa.forward(x)?;
        let parts = split_at_indices(&compressed, &[c.kv_lora_rank], -1)?;
        let k_pe = parts[1]
            .reshape(&[b, l, 1, c.qk_rope_head_dim])?
            .transpose_axes(&[0, 2, 1, 3])?;
        let kv_latent = self.kv_a_layernorm.forward(&parts[0])?;

        let q_pe = rope_after(&self.rope, q_pe, cache.as_deref())?;
        let k_pe = rope_after(&self.rope, &k_pe, cache.as_deref())?;
        let kv_latent = expand_dims(&kv_latent, 1)?;

        let (kv_latent, k_pe) = match cache {
            None => (kv_latent, k_pe),
            Some(Cache::Quantized(_)) => {
                return Err(Exception::custom(
                    "multi-head latent attention has no quantized-cache path; use an \
                     unquantized cache",
                ))
            }
            Some(cache) => cache.update_and_fetch(&kv_latent, &k_pe)?,
        };

        let mask = match mask {
            AttentionMask::None => None,
            AttentionMask::Causal => {
                let kl = kv_latent.dim(2);
                Some(create_causal_mask(l, kl - l, None, None, None)?)
            }
            AttentionMask::Array(m) => Some(m.clone()),
        };
        let (kv_latent, k_pe, mask) = match (&self.indexer, &qr) {
            (Some(indexer), Some(qr)) => {
                indexer.select(x, qr, (kv_latent, k_pe, mask), indexer_cache)?
            }
            _ => (kv_latent, k_pe, mask),
        };

        let scale = Array::from_f32(self.scale()).as_dtype(q_pe.dtype())?;
        let mut pe_scores = matmul(q_pe.multiply(&scale)?, k_pe.swap_axes(-1, -2)?)?;
        if let Some(m) = &mask {
            pe_scores = if m.dtype() == Dtype::Bool {
                select(m, &pe_scores, finfo_min(pe_scores.dtype()))?
            } else {
                pe_scores.add(m)?
            };
        }
        let scores_mask = AttentionMask::Array(pe_scores);

        let output = if l == 1 {
            let q_latent = self.embed_q.forward(q_nope, true)?;
            let out = scaled_dot_product_attention(
                &q_latent,
                &kv_latent,
                &kv_latent,
                self.scale(),
                &scores_mask,
                None,
            )?;
            self.unembed_out.forward(&out, true)?
        } else {
            let k = self.embed_q.forward(&kv_latent, false)?;
            let v = self.unembed_out.forward(&kv_latent, true)?;
            scaled_dot_product_attention(q_nope, &k, &v, self.scale(), &scores_mask, None)?
        };
        self.o_proj.forward(&merge_heads(&output)?)
    }

    fn scale(&self) -> f32 {
        self.config.scale
    }
}

impl SelfAttention for MultiLatentAttention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        MultiLatentAttention::forward(self, x, mask, cache)
    }

    /// The rotated scores are masked by hand.
    fn mask_as_array(&self) -> bool {
        true
    }
}

/// Latent attention in its plain form (mlx-lm's `deepseek_v2.py` and `minicpm3.py`): the
/// normed latent expanded by the fused `kv_b_proj` into per-head keys (`qk_nope_head_dim`) and
/// values (`v_head_dim`), the shared rotated key repeated over the heads, and a plain cache of
/// full keys and values. Field names are the checkpoint's.
#[derive(Debug, ModuleParameters)]
pub struct ExpandedLatentAttention {
    /// `[heads * q_head_dim, hidden]`, without a query rank.
    #[param]
    pub q_proj: Option<Linear>,
    /// `[q_lora_rank, hidden]`.
    #[param]
    pub q_a_proj: Option<Linear>,
    /// `[q_lora_rank]`.
    #[param]
    pub q_a_layernorm: Option<RmsNorm>,
    /// `[heads * q_head_dim, q_lora_rank]`.
    #[param]
    pub q_b_proj: Option<Linear>,
    /// `[kv_lora_rank + qk_rope_head_dim, hidden]`.
    #[param]
    pub kv_a_proj_with_mqa: Linear,
    /// `[kv_lora_rank]`.
    #[param]
    pub kv_a_layernorm: RmsNorm,
    /// `[heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]`.
    #[param]
    pub kv_b_proj: Linear,
    /// `[hidden, heads * v_head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// The shape.
    pub config: MlaConfig,
    /// The rotation of the rotated parts.
    pub rope: Rope,
}

impl ExpandedLatentAttention {
    /// The layer `config` describes, rotating with `rope` (over `qk_rope_head_dim` features).
    pub fn new(config: MlaConfig, rope: Rope) -> Result<Self> {
        let c = &config;
        let (q_proj, q_a_proj, q_a_layernorm, q_b_proj) = query_projections(c)?;
        let too_wide =
            || Exception::custom("attention: the key/value heads exceed MLX's size limit");
        let kv_width = c
            .n_heads
            .checked_mul(c.qk_nope_head_dim + c.v_head_dim)
            .ok_or_else(too_wide)?;
        let o_width = c.n_heads.checked_mul(c.v_head_dim).ok_or_else(too_wide)?;
        let latent_width = c
            .kv_lora_rank
            .checked_add(c.qk_rope_head_dim)
            .ok_or_else(too_wide)?;
        Ok(ExpandedLatentAttention {
            q_proj,
            q_a_proj,
            q_a_layernorm,
            q_b_proj,
            kv_a_proj_with_mqa: Linear::new(c.hidden_size, latent_width, c.bias)?,
            kv_a_layernorm: RmsNorm::new(c.kv_lora_rank, c.norm_eps)?,
            kv_b_proj: Linear::new(c.kv_lora_rank, kv_width, false)?,
            o_proj: Linear::new(o_width, c.hidden_size, c.bias)?,
            config,
            rope,
        })
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, attending to what `cache` holds and the `L`
    /// new positions (whose full keys and values it appends to `cache`).
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        let c = &self.config;
        let (b, l) = (x.dim(0), x.dim(1));
        let queries = (
            &self.q_proj,
            &self.q_a_proj,
            &self.q_a_layernorm,
            &self.q_b_proj,
        );
        let (q_nope, q_pe, _) = project_queries(queries, c, x)?;
        let compressed = self.kv_a_proj_with_mqa.forward(x)?;
        let parts = split_at_indices(&compressed, &[c.kv_lora_rank], -1)?;
        let k_pe = parts[1]
            .reshape(&[b, l, 1, c.qk_rope_head_dim])?
            .transpose_axes(&[0, 2, 1, 3])?;
        let kv = self
            .kv_b_proj
            .forward(&self.kv_a_layernorm.forward(&parts[0])?)?;
        let kv = kv
            .reshape(&[b, l, c.n_heads, c.qk_nope_head_dim + c.v_head_dim])?
            .transpose_axes(&[0, 2, 1, 3])?;
        let kv = split_at_indices(&kv, &[c.qk_nope_head_dim], -1)?;
        let (k_nope, values) = (&kv[0], &kv[1]);

        let q_pe = rope_after(&self.rope, &q_pe, cache.as_deref())?;
        let k_pe = rope_after(&self.rope, &k_pe, cache.as_deref())?;
        let k_pe = repeat_axis::<f32>(k_pe, c.n_heads, 1)?;
        let queries = concatenate(&[q_nope, q_pe], -1)?;
        let keys = concatenate(&[k_nope.clone(), k_pe], -1)?;
        let output = attend(&queries, &keys, values, cache, c.scale, mask, None)?;
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

impl SelfAttention for ExpandedLatentAttention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        ExpandedLatentAttention::forward(self, x, mask, cache)
    }
}

/// [`split_kv_b_proj`] for the attention of each of the `layers` decoder layers
/// (`model.layers.{l}.self_attn`), all of the shape `config` gives.
pub fn split_kv_b_proj_layers(
    weights: &mut Weights,
    layers: usize,
    config: &MlaConfig,
) -> Result<()> {
    let (heads, rank, nope) = (config.n_heads, config.kv_lora_rank, config.qk_nope_head_dim);
    for l in 0..layers {
        let prefix = format!("model.layers.{l}.self_attn");
        split_kv_b_proj(weights, &prefix, heads, rank, nope)?;
    }
    Ok(())
}

/// Splits a checkpoint's fused `{prefix}.kv_b_proj` (`[heads * (qk_nope_head_dim +
/// v_head_dim), kv_lora_rank]`, dense or quantized) into `{prefix}.embed_q` (the key part,
/// transposed per head: `[heads, kv_lora_rank, qk_nope_head_dim]`) and `{prefix}.unembed_out`
/// (`[heads, v_head_dim, kv_lora_rank]`), as the reference's sanitize does: a quantized one is
/// dequantized, split and quantized again with the same bits and group size. Without a
/// `kv_b_proj` it does nothing, so running it twice changes nothing.
pub fn split_kv_b_proj(
    weights: &mut Weights,
    prefix: &str,
    n_heads: i32,
    kv_lora_rank: i32,
    qk_nope_head_dim: i32,
) -> Result<()> {
    let key = |leaf: &str| format!("{prefix}.kv_b_proj.{leaf}");
    let Some(mut w) = weights.remove(&key("weight")) else {
        return Ok(());
    };
    let quantization = match weights.remove(&key("scales")) {
        None => None,
        Some(scales) => {
            let biases = weights.remove(&key("biases"));
            let q = infer_quantization(kv_lora_rank, &w, &scales)
                .map_err(|e| Exception::custom(format!("{prefix}.kv_b_proj: {e}")))?;
            w = dequantize(&w, &scales, biases.as_ref(), &q)?;
            Some(q)
        }
    };
    let w = w.reshape(&[n_heads, -1, kv_lora_rank])?;
    let nope = qk_nope_head_dim;
    let wk = w.try_index((.., ..nope, ..))?.swap_axes(-1, -2)?;
    let wv = w.try_index((.., nope.., ..))?;
    for (name, t) in [("embed_q", wk), ("unembed_out", wv)] {
        let t = t.contiguous()?;
        match quantization {
            None => {
                weights.insert(format!("{prefix}.{name}.weight"), t);
            }
            Some(q) => {
                let (qw, scales, biases) = quantize(&t, &q)?;
                weights.insert(format!("{prefix}.{name}.weight"), qw);
                weights.insert(format!("{prefix}.{name}.scales"), scales);
                if let Some(biases) = biases {
                    weights.insert(format!("{prefix}.{name}.biases"), biases);
                }
            }
        }
    }
    Ok(())
}

/// Checks a latent attention's head sizes, for the args' hooks: the query heads
/// (`num_attention_heads * (qk_nope_head_dim + qk_rope_head_dim)`) fit MLX's sizes, and the
/// rotated part has whole pairs. Errors name the keys.
pub fn check_mla_heads(
    num_attention_heads: usize,
    qk_nope_head_dim: usize,
    qk_rope_head_dim: usize,
) -> std::result::Result<(), crate::args::ArgsError> {
    use crate::args::ArgsError;
    let width = qk_nope_head_dim
        .checked_add(qk_rope_head_dim)
        .and_then(|d| d.checked_mul(num_attention_heads))
        .filter(|w| *w <= crate::args::MAX_SIZE);
    if width.is_none() {
        return Err(ArgsError::invalid(
            &[
                "num_attention_heads",
                "qk_nope_head_dim",
                "qk_rope_head_dim",
            ],
            "the query heads exceed MLX's size limit",
        ));
    }
    if !qk_rope_head_dim.is_multiple_of(2) {
        return Err(ArgsError::invalid(
            &["qk_rope_head_dim"],
            format!("`qk_rope_head_dim` {qk_rope_head_dim} must be even"),
        ));
    }
    Ok(())
}
