//! Attention pieces for architectures whose attention is not [`transformer::Attention`]
//! (fused projections, norms over the whole projection, per-head LayerNorms): moving heads
//! between `[B, L, heads * head_dim]` and `[B, heads, L, head_dim]`, and the RoPE-then-attend
//! tail that every such attention ends with.
//!
//! [`transformer::Attention`]: crate::nn::transformer::Attention

use mlx_rs::error::Result;
use mlx_rs::ops::{arange, maximum};
use mlx_rs::{Array, Dtype};

use crate::cache::Cache;
use crate::nn::attention::attend;
use crate::nn::mask::AttentionMask;
use crate::nn::rope::Rope;

/// Rotates `x` (`[B, heads, L, head_dim]`) for the positions that follow what `cache` holds:
/// one offset, or one per sequence for a batch cache (mlx-lm passes `cache.offset`, an array
/// for its `BatchKVCache`).
pub fn rope_after(rope: &Rope, x: &Array, cache: Option<&Cache>) -> Result<Array> {
    match cache {
        None => rope.forward(x, 0),
        Some(c) => match c.offsets() {
            Some(offsets) => rope.forward_with_offsets(x, offsets),
            None => rope.forward(x, c.offset()),
        },
    }
}

/// The positions new tokens are rotated for, taken from a cache before it is extended: one
/// offset, or one per sequence for a batch cache. What [`rope_after`] reads, kept so that
/// layers without a cache of their own (gemma's KV-shared layers) rotate for the same
/// positions as the layer whose cache it was.
#[derive(Debug, Clone)]
pub enum RopeOffset {
    /// The same offset for every sequence.
    Fixed(i32),
    /// `[B]`: one offset per sequence.
    PerSequence(Array),
}

impl RopeOffset {
    /// The positions after what `cache` holds (0 without a cache).
    pub fn of(cache: Option<&Cache>) -> Self {
        match cache {
            None => RopeOffset::Fixed(0),
            Some(c) => match c.offsets() {
                Some(offsets) => RopeOffset::PerSequence(offsets.clone()),
                None => RopeOffset::Fixed(c.offset()),
            },
        }
    }

    /// Rotates `x` (`[B, heads, L, head_dim]`) for these positions.
    pub fn rotate(&self, rope: &Rope, x: &Array) -> Result<Array> {
        match self {
            RopeOffset::Fixed(offset) => rope.forward(x, *offset),
            RopeOffset::PerSequence(offsets) => rope.forward_with_offsets(x, offsets),
        }
    }
}

/// The positions of `n` new tokens after what `cache` holds: `[n]` from the cache's offset, or
/// `[B, n]` from each sequence's offset in a batch cache (whose left padding starts below
/// zero: those positions are clamped to 0, their outputs masked anyway).
pub fn positions(n: i32, cache: Option<&Cache>) -> Result<Array> {
    let offset = cache.map_or(0, Cache::offset);
    let steps = arange::<_, i32>(0, n, None)?;
    match cache.and_then(Cache::offsets) {
        Some(offsets) => {
            let rows = offsets.as_dtype(Dtype::Int32)?.reshape(&[-1, 1])?;
            maximum(rows.add(&steps)?, Array::from_int(0))
        }
        None => steps.add(Array::from_int(offset)),
    }
}

/// `[B, L, heads * head_dim]` (or `[B, L, heads, head_dim]`) to `[B, heads, L, head_dim]`.
pub fn split_heads(x: &Array, heads: i32) -> Result<Array> {
    let (b, l) = (x.dim(0), x.dim(1));
    x.reshape(&[b, l, heads, -1])?.transpose_axes(&[0, 2, 1, 3])
}

/// `[B, heads, L, head_dim]` to `[B, L, heads * head_dim]`.
pub fn merge_heads(x: &Array) -> Result<Array> {
    let (b, l) = (x.dim(0), x.dim(2));
    x.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])
}

/// Rotates `queries` and `keys` (`[B, heads, L, head_dim]`) for the positions after what
/// `cache` holds (per sequence for a batch cache), attends through [`attend`] (which stores
/// the keys and values in the cache), and merges the heads of the output:
/// `[B, L, heads * head_dim]`, ready for the output projection.
pub fn rope_and_attend(
    queries: &Array,
    keys: &Array,
    values: &Array,
    rope: &Rope,
    cache: Option<&mut Cache>,
    scale: f32,
    mask: &AttentionMask,
) -> Result<Array> {
    let queries = rope_after(rope, queries, cache.as_deref())?;
    let keys = rope_after(rope, keys, cache.as_deref())?;
    merge_heads(&attend(&queries, &keys, values, cache, scale, mask, None)?)
}
