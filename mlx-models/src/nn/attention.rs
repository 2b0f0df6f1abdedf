//! Scaled dot-product attention: one entry, [`attend`], that writes the new keys and values
//! into the layer's cache and attends through the fused kernel (grouped-query heads, sinks,
//! every [`AttentionMask`] kind), or through `quantized_matmul` when the cache is quantized.
//! Follows `scaled_dot_product_attention` and `quantized_scaled_dot_product_attention` in
//! mlx-lm's `models/base.py`.

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::ops::indexing::{NewAxis, TryIndexOp};
use mlx_rs::ops::{arange, expand_dims, matmul, select, softmax_axis, tanh};
use mlx_rs::{Array, Dtype};

use crate::cache::{Cache, QuantizedArray};
use crate::nn::mask::{create_causal_mask, AttentionMask};
use crate::nn::quantized::{quantized_matmul, QuantMode, Quantization};

/// The fused attention: `softmax(q kᵀ · scale + mask) v`, with `keys`/`values` of fewer
/// heads than `queries` (grouped-query) and optional per-head `sinks` (`[heads]`).
pub fn scaled_dot_product_attention(
    queries: &Array,
    keys: &Array,
    values: &Array,
    scale: f32,
    mask: &AttentionMask,
    sinks: Option<&Array>,
) -> Result<Array> {
    fast::scaled_dot_product_attention(queries, keys, values, scale, mask.as_sdpa(), sinks)
}

/// The lowest finite value of a float dtype (`mx.finfo(dtype).min`).
pub(crate) fn finfo_min(dtype: Dtype) -> Array {
    let v = match dtype {
        Dtype::Float16 => -65504.0,
        Dtype::Bfloat16 => -3.389_531_4e38,
        _ => f32::MIN,
    };
    Array::from_f32(v)
        .as_dtype(dtype)
        .unwrap_or_else(|_| Array::from_f32(v))
}

/// Attention over quantized keys and values (`quantized_scaled_dot_product_attention`):
/// scores and outputs through `quantized_matmul`, grouped-query heads by reshaping.
pub fn quantized_scaled_dot_product_attention(
    queries: &Array,
    keys: &QuantizedArray,
    values: &QuantizedArray,
    scale: f32,
    mask: &AttentionMask,
    group_size: i32,
    bits: i32,
) -> Result<Array> {
    let shape = queries.shape();
    let (b, n_q_heads, l, d) = (shape[0], shape[1], shape[2], shape[3]);
    let n_kv_heads = keys.w.dim(-3);
    let n_repeats = n_q_heads / n_kv_heads;
    let q = Quantization {
        group_size,
        bits,
        mode: QuantMode::Affine,
    };

    let mut queries = queries.multiply(Array::from_f32(scale).as_dtype(queries.dtype())?)?;
    let (keys, values) = if n_repeats > 1 {
        queries = queries.reshape(&[b, n_kv_heads, n_repeats, l, d])?;
        let e = |x: &Array| expand_dims(x, -3);
        (
            QuantizedArray {
                w: e(&keys.w)?,
                scales: e(&keys.scales)?,
                biases: e(&keys.biases)?,
            },
            QuantizedArray {
                w: e(&values.w)?,
                scales: e(&values.scales)?,
                biases: e(&values.biases)?,
            },
        )
    } else {
        (keys.clone(), values.clone())
    };
    let mut scores = quantized_matmul(
        &queries,
        &keys.w,
        &keys.scales,
        Some(&keys.biases),
        true,
        &q,
    )?;
    let explicit;
    let mask = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => {
            let (ql, kl) = (scores.dim(-2), scores.dim(-1));
            let q_idx = arange::<_, i32>(kl - ql, kl, None)?;
            let k_idx = arange::<_, i32>(0, kl, None)?;
            explicit = q_idx
                .try_index((.., NewAxis))?
                .ge(k_idx.try_index(NewAxis)?)?;
            Some(&explicit)
        }
        AttentionMask::Array(m) => Some(m),
    };
    if let Some(m) = mask {
        let m = if n_repeats > 1 && m.ndim() > 3 {
            expand_dims(m, -3)?
        } else {
            m.clone()
        };
        scores = if m.dtype() == Dtype::Bool {
            select(&m, &scores, finfo_min(scores.dtype()))?
        } else {
            scores.add(&m)?
        };
    }
    let scores = softmax_axis(&scores, -1, true)?;
    let out = quantized_matmul(
        &scores,
        &values.w,
        &values.scales,
        Some(&values.biases),
        false,
        &q,
    )?;
    if n_repeats > 1 {
        out.reshape(&[b, n_q_heads, l, d])
    } else {
        Ok(out)
    }
}

/// The attention of one layer (`[B, heads, L, head_dim]` queries, `[B, kv_heads, L, head_dim]`
/// new keys and values, RoPE already applied): stores the keys and values in `cache` (when
/// given) and attends to everything the cache holds. A quantized cache goes through
/// [`quantized_scaled_dot_product_attention`] (which has no sinks).
pub fn attend(
    queries: &Array,
    keys: &Array,
    values: &Array,
    cache: Option<&mut Cache>,
    scale: f32,
    mask: &AttentionMask,
    sinks: Option<&Array>,
) -> Result<Array> {
    match cache {
        None => scaled_dot_product_attention(queries, keys, values, scale, mask, sinks),
        Some(Cache::Quantized(c)) => {
            if sinks.is_some() {
                return Err(Exception::custom(
                    "Quantized SDPA does not support attention sinks.",
                ));
            }
            let (k, v) = c.update_and_fetch(keys, values)?;
            quantized_scaled_dot_product_attention(
                queries,
                &k,
                &v,
                scale,
                mask,
                c.group_size,
                c.bits,
            )
        }
        Some(c) => {
            let (k, v) = c.update_and_fetch(keys, values)?;
            scaled_dot_product_attention(queries, &k, &v, scale, mask, sinks)
        }
    }
}

/// `v` as a scalar of `like`'s dtype (a Python float in an mlx expression).
fn scalar(v: f64, like: &Array) -> Result<Array> {
    Array::from_f32(v as f32).as_dtype(like.dtype())
}

/// Soft-capping: `tanh(x / cap) * cap`, in `x`'s dtype.
pub fn soft_cap(x: &Array, cap: f32) -> Result<Array> {
    let cap = scalar(cap as f64, x)?;
    tanh(x.divide(&cap)?)?.multiply(&cap)
}

/// gemma2's attention, written out because the fused kernel cannot soft-cap: scores
/// `tanh(q kᵀ · scale / cap) · cap`, masked, softmax in float32, times the values. Queries are
/// `[B, heads, L, D]`, the new keys and values `[B, kv_heads, L, D]` (RoPE applied); they are
/// stored in `cache` when given. A quantized cache is refused, as the reference cannot use one
/// here either.
pub fn softcapped_attention(
    queries: &Array,
    keys: &Array,
    values: &Array,
    cache: Option<&mut Cache>,
    scale: f32,
    softcap: f32,
    mask: &AttentionMask,
) -> Result<Array> {
    let (keys, values) = match cache {
        None => (keys.clone(), values.clone()),
        Some(Cache::Quantized(_)) => {
            return Err(Exception::custom(
                "soft-capped attention has no quantized-cache path; use an unquantized cache",
            ))
        }
        Some(c) => c.update_and_fetch(keys, values)?,
    };
    let shape = queries.shape();
    let (b, n_heads, l, d) = (shape[0], shape[1], shape[2], shape[3]);
    let n_kv_heads = keys.dim(1);
    let repeats = n_heads / n_kv_heads;

    let mut queries = queries.multiply(scalar(scale as f64, queries)?)?;
    let (keys, values) = if repeats > 1 {
        queries = queries.reshape(&[b, n_kv_heads, repeats, l, d])?;
        (expand_dims(&keys, 2)?, expand_dims(&values, 2)?)
    } else {
        (keys, values)
    };
    let scores = soft_cap(&matmul(&queries, keys.swap_axes(-1, -2)?)?, softcap)?;

    let causal;
    let mask = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => {
            // The new queries sit at the last positions of the keys.
            let (ql, kl) = (scores.dim(-2), scores.dim(-1));
            causal = create_causal_mask(ql, kl - ql, None, None, None)?;
            Some(&causal)
        }
        AttentionMask::Array(m) => Some(m),
    };
    let scores = match mask {
        None => scores,
        Some(m) => {
            // A per-sequence mask `[B, 1, L, K]` gets an axis for the grouped query heads.
            let m = if repeats > 1 && m.ndim() == 4 {
                expand_dims(m, 2)?
            } else {
                m.clone()
            };
            if m.dtype() == Dtype::Bool {
                select(&m, &scores, finfo_min(scores.dtype()))?
            } else {
                scores.add(&m)?
            }
        }
    };
    let output = matmul(softmax_axis(&scores, -1, true)?, &values)?;
    if repeats > 1 {
        output.reshape(&[b, n_heads, l, d])
    } else {
        Ok(output)
    }
}
