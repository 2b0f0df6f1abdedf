//! Attention masks: causal (with an offset into the cache), sliding-window, chunked (llama4's
//! local attention), and left/right padding for batches. Follows `create_causal_mask` /
//! `create_attention_mask` in mlx-lm's `models/base.py`, the caches' `make_mask` in
//! `models/cache.py`, and the chunk mask of `models/llama4.py`.

use mlx_rs::error::Result;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::ops::indexing::{NewAxis, TryIndexOp};
use mlx_rs::ops::{arange, expand_dims_axes, floor_divide, logical_and, maximum, subtract};
use mlx_rs::Array;

/// What the attention of one layer masks.
#[derive(Debug, Clone, Default)]
pub enum AttentionMask {
    /// Every query sees every key (a single decode step).
    #[default]
    None,
    /// The fused causal mask of the attention kernel: query `i` of `L` sees the keys up to
    /// `i + (K - L)` (the queries are the last `L` positions of the `K` keys).
    Causal,
    /// An explicit mask: boolean (true = attend) or additive, broadcastable to
    /// `[B, heads, L, K]`.
    Array(Array),
}

impl AttentionMask {
    /// The mask in the form `mlx_rs::fast::scaled_dot_product_attention` takes.
    pub fn as_sdpa(&self) -> Option<ScaledDotProductAttentionMask<'_>> {
        match self {
            AttentionMask::None => None,
            AttentionMask::Causal => Some(ScaledDotProductAttentionMask::Causal),
            AttentionMask::Array(a) => Some(ScaledDotProductAttentionMask::Array(a)),
        }
    }

    /// The explicit array, if this mask is one.
    pub fn array(&self) -> Option<&Array> {
        match self {
            AttentionMask::Array(a) => Some(a),
            _ => None,
        }
    }

    /// True when nothing is masked.
    pub fn is_none(&self) -> bool {
        matches!(self, AttentionMask::None)
    }
}

/// A boolean causal mask of shape `[n, offset + n]` (query `i` sits at position `offset + i`).
///
/// - `window_size`: a query also ignores keys `window_size` or more positions behind it, so it
///   sees exactly `window_size` keys including itself.
/// - `left_padding` / `right_padding`: `[B]` counts of padded positions per sequence; the
///   mask then gets shape `[B, 1, n, offset + n]`.
pub fn create_causal_mask(
    n: i32,
    offset: i32,
    window_size: Option<i32>,
    left_padding: Option<&Array>,
    right_padding: Option<&Array>,
) -> Result<Array> {
    let rinds = arange::<_, i32>(0, offset + n, None)?;
    let linds = if offset != 0 {
        arange::<_, i32>(offset, offset + n, None)?
    } else {
        rinds.clone()
    };
    let linds = linds.try_index((.., NewAxis))?;
    let rinds = rinds.try_index(NewAxis)?;
    let mut mask = linds.ge(&rinds)?;
    if let Some(w) = window_size {
        let upper = rinds.add(Array::from_int(w))?;
        mask = logical_and(&mask, linds.lt(&upper)?)?;
    }
    if let Some(rp) = right_padding {
        let limit = subtract(Array::from_int(offset + n), rp)?;
        let limit = expand_dims_axes(&limit, &[1, 2, 3])?;
        mask = logical_and(&mask, rinds.lt(&limit)?)?;
    }
    if let Some(lp) = left_padding {
        let lp = expand_dims_axes(lp, &[1, 2, 3])?;
        mask = logical_and(&mask, lp.le(&rinds)?)?;
    }
    Ok(mask)
}

/// A boolean chunked-attention mask (llama4's local layers): query `i` of `n` sits at
/// position `offset + i` and sees the keys at positions `start..offset + n` that are at or
/// before it and in the same chunk of `chunk_size` positions (position `p` is in chunk
/// `p / chunk_size`). Shape `[n, offset + n - start]`.
///
/// With `left_padding` (`[B]`, a batch cache's padded positions; `start` is then 0), a
/// sequence's positions count from its first real token, its padding is hidden, and the mask
/// has shape `[B, 1, n, offset + n]`.
pub fn create_chunked_mask(
    n: i32,
    start: i32,
    offset: i32,
    chunk_size: i32,
    left_padding: Option<&Array>,
) -> Result<Array> {
    let end = offset + n;
    let linds = arange::<_, i32>(start, end, None)?;
    let rinds = arange::<_, i32>(offset, end, None)?.try_index((.., NewAxis))?;
    let causal = linds.le(&rinds)?;
    let chunk = Array::from_int(chunk_size);
    let (lpos, rpos) = match left_padding {
        // Positions within each sequence; the padding's (negative) ones are clamped to 0 and
        // hidden below.
        Some(lp) => {
            let lp = expand_dims_axes(lp, &[1, 2, 3])?;
            let zero = Array::from_int(0);
            (
                maximum(linds.subtract(&lp)?, &zero)?,
                maximum(rinds.subtract(&lp)?, &zero)?,
            )
        }
        None => (linds.clone(), rinds.clone()),
    };
    let same_chunk = floor_divide(&lpos, &chunk)?.eq(floor_divide(&rpos, &chunk)?)?;
    let mut mask = logical_and(&same_chunk, &causal)?;
    if let Some(lp) = left_padding {
        let lp = expand_dims_axes(lp, &[1, 2, 3])?;
        mask = logical_and(&mask, lp.le(&linds)?)?;
    }
    Ok(mask)
}

/// The mask without a cache that knows better (mlx-lm's fallback path).
pub(crate) fn default_mask(
    n: i32,
    window_size: Option<i32>,
    return_array: bool,
) -> Result<AttentionMask> {
    if n == 1 {
        return Ok(AttentionMask::None);
    }
    if return_array || window_size.is_some_and(|w| n > w) {
        return Ok(AttentionMask::Array(create_causal_mask(
            n,
            0,
            window_size,
            None,
            None,
        )?));
    }
    Ok(AttentionMask::Causal)
}
