//! Per-layer caches, following mlx-lm's `models/cache.py` (0.32.2) step for step.
//!
//! [`Cache`] is what an architecture's `make_cache` returns, one per layer:
//! - [`KvCache`]: keys and values, grown in steps of 256 positions;
//! - [`RotatingKvCache`]: a sliding window of `max_size` positions whose first `keep` stay;
//! - [`QuantizedKvCache`]: keys and values stored quantized (attention then runs through
//!   `quantized_matmul`, see [`crate::nn::attention`]);
//! - [`ChunkedKvCache`]: keeps at most `chunk_size` positions (llama4's chunked attention);
//! - [`BatchKvCache`]: a left-padded batch of sequences at different positions;
//! - [`ArraysCache`]: fixed slots of state (SSM state, conv state) of recurrent layers;
//! - [`Cache::List`]: several caches for one composite layer.
//!
//! A [`Snapshot`] remembers where a model's caches were, so they can come back there: trimmed
//! where they grow position by position, restored by value where they hold recurrent state.
//!
//! Every kind can be trimmed where the reference allows it, and a list of caches can be saved
//! to and loaded from a safetensors file laid out like mlx-lm's `save_prompt_cache` (the same
//! keys, class names and metadata), so files move between the two.

use std::collections::HashMap;
use std::path::Path;

use mlx_rs::error::{Exception, IoError, Result};
use mlx_rs::ops::indexing::{Ellipsis, NewAxis, TryIndexMutOp, TryIndexOp};
use mlx_rs::ops::{arange, concatenate, quantize, zeros_dtype};
use mlx_rs::{Array, Dtype};

use crate::nn::mask::{create_causal_mask, create_chunked_mask, default_mask, AttentionMask};

mod arrays;
mod batch;
mod file;
mod kv;
mod quantized;
mod snapshot;

pub use arrays::ArraysCache;
pub use batch::BatchKvCache;
pub use file::{load_prompt_cache, save_prompt_cache, StateValue};
pub use kv::{ChunkedKvCache, KvCache, RotatingKvCache};
pub use quantized::{QuantizedArray, QuantizedKvCache};
pub use snapshot::Snapshot;

/// How many positions a growing cache adds at a time (mlx-lm's `step`).
pub const STEP: i32 = 256;

/// Errors of saving and loading cache state.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An MLX operation failed.
    #[error(transparent)]
    Mlx(#[from] Exception),
    /// Reading or writing the safetensors file failed.
    #[error("cache file: {0}")]
    Io(#[from] IoError),
    /// The file or state does not describe caches we know.
    #[error("cache state: {0}")]
    Format(String),
}

fn fmt_err(msg: impl Into<String>) -> CacheError {
    CacheError::Format(msg.into())
}

/// `x[..., start:end, :]`
fn seq(x: &Array, start: i32, end: i32) -> Result<Array> {
    x.try_index((Ellipsis, start..end, ..))
}

/// `x[..., start:, :]`
fn seq_from(x: &Array, start: i32) -> Result<Array> {
    x.try_index((Ellipsis, start.., ..))
}

/// The cache of one layer. A model makes one per layer (`make_cache`); its `forward` appends the
/// new keys and values and attends over everything held so far.
///
/// ```
/// use mlx_models::cache::Cache;
/// use mlx_rs::Array;
///
/// // Keys and values are `[batch, kv_heads, tokens, head_dim]`.
/// let prompt = Array::ones::<f32>(&[1, 2, 5, 8])?;
/// let mut cache = Cache::kv();
/// let (keys, _values) = cache.update_and_fetch(&prompt, &prompt)?;
/// assert_eq!((keys.shape(), cache.offset()), (&[1, 2, 5, 8][..], 5));
///
/// // A sliding window of 4 positions keeps only the latest ones.
/// let mut window = Cache::rotating(4, 0);
/// window.update_and_fetch(&prompt, &prompt)?;
/// let step = Array::ones::<f32>(&[1, 2, 1, 8])?;
/// let (keys, _values) = window.update_and_fetch(&step, &step)?;
/// assert_eq!((keys.shape()[2], window.offset()), (4, 6));
/// # Ok::<(), mlx_rs::error::Exception>(())
/// ```
#[derive(Debug, Clone)]
pub enum Cache {
    /// Keys and values of full attention.
    Kv(KvCache),
    /// A sliding window of keys and values.
    Rotating(RotatingKvCache),
    /// Quantized keys and values.
    Quantized(QuantizedKvCache),
    /// Keys and values of chunked attention.
    Chunked(ChunkedKvCache),
    /// Keys and values of a left-padded batch of sequences at different positions.
    Batch(BatchKvCache),
    /// State slots of a recurrent layer.
    Arrays(ArraysCache),
    /// The caches of a composite layer.
    List(Vec<Cache>),
}

/// Quantized key/value caches during generation (the reference's `kv_bits`, `kv_group_size`,
/// `quantized_kv_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvQuantization {
    /// Bits per value: 2, 3, 4, 5, 6 or 8.
    pub bits: i32,
    /// Values per group: 32, 64 or 128 (dividing each head's features).
    pub group_size: i32,
    /// Quantize a cache once it holds this many positions (the reference's default: 5000).
    pub start: usize,
}

impl KvQuantization {
    /// The reference's `DEFAULT_QUANTIZED_KV_START`.
    pub const DEFAULT_START: usize = 5000;

    /// Checks the bits and the group size against what MLX's affine quantization has.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
            return Err(format!(
                "kv bits must be 2, 3, 4, 5, 6 or 8, not {}",
                self.bits
            ));
        }
        if ![32, 64, 128].contains(&self.group_size) {
            return Err(format!(
                "kv group size must be 32, 64 or 128, not {}",
                self.group_size
            ));
        }
        Ok(())
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::Kv(KvCache::new())
    }
}

impl Cache {
    /// A [`KvCache`].
    pub fn kv() -> Self {
        Cache::Kv(KvCache::new())
    }

    /// A [`RotatingKvCache`] of `max_size` positions keeping the first `keep`.
    pub fn rotating(max_size: i32, keep: i32) -> Self {
        Cache::Rotating(RotatingKvCache::new(max_size, keep))
    }

    /// The cache for a new prompt: the model's own caches, with every full-attention cache
    /// bounded to `max_kv_size` positions (a [`RotatingKvCache`] keeping the first 4, as the
    /// reference's `make_prompt_cache` builds for `max_kv_size`) when it is given. Caches that
    /// are already bounded (sliding windows) or not key/value caches stay as the model made
    /// them.
    pub fn for_prompt(model_caches: Vec<Cache>, max_kv_size: Option<usize>) -> Vec<Cache> {
        let Some(max) = max_kv_size else {
            return model_caches;
        };
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let bound = |c: Cache| match c {
            Cache::Kv(_) => Cache::rotating(max, 4),
            other => other,
        };
        model_caches
            .into_iter()
            .map(|c| match c {
                Cache::List(inner) => Cache::List(inner.into_iter().map(bound).collect()),
                other => bound(other),
            })
            .collect()
    }

    /// Evaluates every array the caches hold (what a prefill step must compute), without
    /// computing anything else of the graph, such as the chunk's logits.
    pub fn eval_all(caches: &[Cache]) -> Result<()> {
        fn collect(state: StateValue, out: &mut Vec<Array>) {
            match state {
                StateValue::Array(a) => out.push(a),
                StateValue::List(items) => items.into_iter().for_each(|s| collect(s, out)),
                _ => {}
            }
        }
        let mut arrays = Vec::new();
        for cache in caches {
            collect(cache.state(), &mut arrays);
        }
        mlx_rs::transforms::eval(arrays.iter())
    }

    /// This cache with its keys and values quantized, as the reference's
    /// `KVCache.to_quantized`: the whole buffer is quantized along its last axis and the offset
    /// kept. `None` for caches that have no quantized form (windows, batches, states, lists:
    /// the reference's rotating cache raises there; ours keeps them in full precision).
    pub fn to_quantized(&self, group_size: i32, bits: i32) -> Result<Option<Cache>> {
        let Cache::Kv(c) = self else {
            return Ok(None);
        };
        let mut q = QuantizedKvCache::new(group_size, bits);
        q.offset = c.offset;
        if let (Some(k), Some(v)) = (&c.keys, &c.values) {
            for (what, dim) in [("keys", k.dim(-1)), ("values", v.dim(-1))] {
                if dim % group_size != 0 {
                    return Err(Exception::custom(format!(
                        "the cache's {what} have {dim} features per head, which groups of \
                         {group_size} do not divide (choose a smaller kv group size)"
                    )));
                }
            }
            q.keys = Some(QuantizedArray::quantize(k, group_size, bits)?);
            q.values = Some(QuantizedArray::quantize(v, group_size, bits)?);
        }
        Ok(Some(Cache::Quantized(q)))
    }

    /// The reference's `maybe_quantize_kv_cache`: every key/value cache that holds at least
    /// `settings.start` positions becomes a [`QuantizedKvCache`]. Run after each model call.
    pub fn maybe_quantize(caches: &mut [Cache], settings: &KvQuantization) -> Result<()> {
        for cache in caches.iter_mut() {
            if usize::try_from(cache.offset()).is_ok_and(|o| o >= settings.start) {
                if let Some(q) = cache.to_quantized(settings.group_size, settings.bits)? {
                    *cache = q;
                }
            }
        }
        Ok(())
    }

    /// A [`QuantizedKvCache`].
    pub fn quantized(group_size: i32, bits: i32) -> Self {
        Cache::Quantized(QuantizedKvCache::new(group_size, bits))
    }

    /// A [`BatchKvCache`] for a batch left-padded by these amounts.
    pub fn batch(left_padding: &[i32]) -> Self {
        Cache::Batch(BatchKvCache::new(left_padding))
    }

    /// A [`ChunkedKvCache`].
    pub fn chunked(chunk_size: i32) -> Self {
        Cache::Chunked(ChunkedKvCache::new(chunk_size))
    }

    /// An [`ArraysCache`] of `size` empty slots.
    pub fn arrays(size: usize) -> Self {
        Cache::Arrays(ArraysCache::new(size))
    }

    /// The number of positions seen so far (the RoPE offset of the next token). For a list,
    /// the first cache's; for an [`ArraysCache`], 0; for a [`BatchKvCache`], the positions in
    /// its buffer (each sequence's own offset is in [`offsets`](Self::offsets)).
    pub fn offset(&self) -> i32 {
        match self {
            Cache::Kv(c) => c.offset,
            Cache::Rotating(c) => c.offset,
            Cache::Quantized(c) => c.offset,
            Cache::Chunked(c) => c.offset,
            Cache::Batch(c) => c.idx,
            Cache::Arrays(_) => 0,
            Cache::List(l) => l.first().map_or(0, Cache::offset),
        }
    }

    /// Per-sequence offsets (`[B]` int32) of a batch cache, for
    /// [`Rope::forward_with_offsets`](crate::nn::rope::Rope::forward_with_offsets).
    pub fn offsets(&self) -> Option<&Array> {
        match self {
            Cache::Batch(c) => Some(&c.offset),
            Cache::List(l) => l.first().and_then(Cache::offsets),
            _ => None,
        }
    }

    /// How many positions the cache holds (mlx-lm's `size()`).
    pub fn size(&self) -> i32 {
        match self {
            Cache::Kv(c) => c.offset,
            Cache::Rotating(c) => c.size(),
            Cache::Batch(c) => c.idx,
            Cache::Quantized(_) | Cache::Chunked(_) | Cache::Arrays(_) => 0,
            Cache::List(l) => l.iter().map(Cache::size).max().unwrap_or(0),
        }
    }

    /// True before the first update.
    pub fn is_empty(&self) -> bool {
        match self {
            Cache::Kv(c) => c.keys.is_none(),
            Cache::Rotating(c) => c.keys.is_none(),
            Cache::Quantized(c) => c.keys.is_none(),
            Cache::Chunked(c) => c.keys.is_none(),
            Cache::Batch(c) => c.keys.is_none(),
            Cache::Arrays(c) => c.cache.first().is_none_or(Option::is_none),
            Cache::List(l) => l.first().is_none_or(Cache::is_empty),
        }
    }

    /// Bytes held by the cache's arrays.
    pub fn nbytes(&self) -> usize {
        fn kv(k: &Option<Array>, v: &Option<Array>) -> usize {
            k.as_ref().map_or(0, Array::nbytes) + v.as_ref().map_or(0, Array::nbytes)
        }
        match self {
            Cache::Kv(c) => kv(&c.keys, &c.values),
            Cache::Rotating(c) => kv(&c.keys, &c.values),
            Cache::Chunked(c) => kv(&c.keys, &c.values),
            Cache::Batch(c) => kv(&c.keys, &c.values),
            Cache::Quantized(c) => {
                c.keys.as_ref().map_or(0, QuantizedArray::nbytes)
                    + c.values.as_ref().map_or(0, QuantizedArray::nbytes)
            }
            Cache::Arrays(c) => c.cache.iter().flatten().map(Array::nbytes).sum(),
            Cache::List(l) => l.iter().map(Cache::nbytes).sum(),
        }
    }

    /// Whether [`trim`](Self::trim) can drop positions (a rotating cache only before it wraps;
    /// state caches never).
    pub fn is_trimmable(&self) -> bool {
        match self {
            Cache::Kv(_) | Cache::Quantized(_) | Cache::Chunked(_) | Cache::Batch(_) => true,
            Cache::Rotating(c) => c.offset < c.max_size,
            Cache::Arrays(_) => false,
            Cache::List(l) => l.iter().all(Cache::is_trimmable),
        }
    }

    /// Drops the last `n` positions; returns how many were dropped (0 for a cache that cannot
    /// be trimmed).
    pub fn trim(&mut self, n: i32) -> i32 {
        match self {
            Cache::Kv(c) => c.trim(n),
            Cache::Rotating(c) => c.trim(n),
            Cache::Quantized(c) => c.trim(n),
            Cache::Chunked(c) => c.trim(n),
            Cache::Batch(c) => c.trim(n),
            Cache::Arrays(_) => 0,
            Cache::List(l) => l.iter_mut().fold(0, |_, c| c.trim(n)),
        }
    }

    /// Appends `keys` and `values` (`[B, kv_heads, L, head_dim]`) and returns the keys and
    /// values to attend to. A quantized cache answers through
    /// [`QuantizedKvCache::update_and_fetch`] instead; state caches have no keys.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        match self {
            Cache::Kv(c) => c.update_and_fetch(keys, values),
            Cache::Rotating(c) => c.update_and_fetch(keys, values),
            Cache::Chunked(c) => c.update_and_fetch(keys, values),
            Cache::Batch(c) => c.update_and_fetch(keys, values),
            Cache::Quantized(_) => Err(Exception::custom(
                "a quantized cache returns quantized keys; use QuantizedKvCache::update_and_fetch",
            )),
            Cache::Arrays(_) | Cache::List(_) => Err(Exception::custom(
                "this cache holds no keys and values (an ArraysCache or a list of caches)",
            )),
        }
    }

    /// The mask for `n` new tokens when the cache decides it (the caches with a `make_mask` in
    /// the reference); `None` when it leaves the choice to [`create_attention_mask`]. A list
    /// answers with its first cache, whose positions it also reports (the reference's
    /// deepseek_v32 makes its mask from its lists' first caches).
    pub fn make_mask(
        &self,
        n: i32,
        window_size: Option<i32>,
        return_array: bool,
    ) -> Result<Option<AttentionMask>> {
        match self {
            Cache::Kv(KvCache { offset, .. })
            | Cache::Quantized(QuantizedKvCache { offset, .. }) => {
                offset_mask(n, *offset, window_size, return_array).map(Some)
            }
            Cache::Rotating(c) => c.make_mask(n, window_size, return_array).map(Some),
            Cache::Batch(c) => c
                .make_mask(n, window_size)
                .map(|m| Some(AttentionMask::Array(m))),
            Cache::List(l) => match l.first() {
                Some(first) => first.make_mask(n, window_size, return_array),
                None => Ok(None),
            },
            Cache::Chunked(_) | Cache::Arrays(_) => Ok(None),
        }
    }

    /// The `n` caches of a composite layer: a list's own, or, for one empty cache of another
    /// kind (a batch cache made per layer, for instance), `n` empty copies of it, which this
    /// cache becomes. A list of another length, or a cache that already holds positions and
    /// is not a list, is an error.
    pub fn parts_mut(&mut self, n: usize) -> Result<&mut [Cache]> {
        if !matches!(self, Cache::List(_)) {
            if !self.is_empty() {
                return Err(Exception::custom(format!(
                    "this layer needs a list of {n} caches (the model's make_cache), got a \
                     filled {}",
                    self.class_name()
                )));
            }
            *self = Cache::List(vec![self.clone(); n]);
        }
        match self {
            Cache::List(l) if l.len() != n => Err(Exception::custom(format!(
                "this layer needs a list of {n} caches, got {}",
                l.len()
            ))),
            Cache::List(l) => Ok(l.as_mut_slice()),
            _ => Err(Exception::custom("a cache list expected")),
        }
    }

    /// An empty cache of this kind for a batch whose rows are left-padded by `left_padding`
    /// (the reference's `BatchGenerator` caches): a full-attention cache becomes a
    /// [`BatchKvCache`], an [`ArraysCache`] the same slots with the padding (its layers mask
    /// the padded positions out of their state), a list each of its caches. `None` for the
    /// kinds that have no batched form yet (windows, chunks, quantized keys).
    pub fn batched(&self, left_padding: &[i32]) -> Option<Cache> {
        match self {
            Cache::Kv(_) | Cache::Batch(_) => Some(Cache::batch(left_padding)),
            Cache::Arrays(c) => Some(Cache::Arrays(ArraysCache::with_left_padding(
                c.cache.len(),
                left_padding,
            ))),
            Cache::List(l) => l
                .iter()
                .map(|c| c.batched(left_padding))
                .collect::<Option<Vec<_>>>()
                .map(Cache::List),
            Cache::Rotating(_) | Cache::Quantized(_) | Cache::Chunked(_) => None,
        }
    }

    /// The reference's class name of this cache (used in saved files).
    pub fn class_name(&self) -> &'static str {
        match self {
            Cache::Kv(_) => "KVCache",
            Cache::Rotating(_) => "RotatingKVCache",
            Cache::Quantized(_) => "QuantizedKVCache",
            Cache::Chunked(_) => "ChunkedKVCache",
            Cache::Batch(_) => "BatchKVCache",
            Cache::Arrays(_) => "ArraysCache",
            Cache::List(_) => "CacheList",
        }
    }

    /// The cache as a tree of arrays and scalars, shaped like the reference's `state`.
    pub fn state(&self) -> StateValue {
        use StateValue as S;
        let arr = |a: &Option<Array>| a.clone().map_or(S::None, S::Array);
        match self {
            Cache::Kv(c) => S::List(vec![arr(&c.keys), arr(&c.values), S::Int(c.offset.into())]),
            Cache::Rotating(c) => S::List(vec![
                arr(&c.keys),
                arr(&c.values),
                S::Int(c.offset.into()),
                S::Int(c.keep.into()),
                S::Int(c.max_size.into()),
                S::Int(c.idx.into()),
            ]),
            Cache::Quantized(c) => {
                let q = |a: &Option<QuantizedArray>| {
                    a.as_ref().map_or(S::None, |q| {
                        S::List(q.parts().into_iter().map(|a| S::Array(a.clone())).collect())
                    })
                };
                S::List(vec![
                    q(&c.keys),
                    q(&c.values),
                    S::Int(c.offset.into()),
                    S::Int(c.group_size.into()),
                    S::Int(c.bits.into()),
                ])
            }
            Cache::Batch(c) => S::List(vec![
                arr(&c.keys),
                arr(&c.values),
                S::Array(c.offset.clone()),
                S::Array(c.left_padding.clone()),
                S::Int(c.idx.into()),
            ]),
            Cache::Chunked(c) => S::List(vec![
                arr(&c.keys),
                arr(&c.values),
                S::Int(c.offset.into()),
                S::Int(c.chunk_size.into()),
                S::Int(c.start_position.into()),
            ]),
            Cache::Arrays(c) => S::List(vec![
                S::List(c.cache.iter().map(arr).collect()),
                arr(&c.left_padding),
                arr(&c.lengths),
            ]),
            Cache::List(l) => S::List(
                l.iter()
                    .map(|c| S::List(vec![c.state(), S::Str(c.class_name().to_string())]))
                    .collect(),
            ),
        }
    }

    /// Rebuilds a cache from the reference's class name and [`state`](Self::state).
    pub fn from_state(
        class_name: &str,
        state: StateValue,
    ) -> std::result::Result<Cache, CacheError> {
        let mut items = state
            .into_list()
            .ok_or_else(|| fmt_err(format!("{class_name} state is not a list")))?;
        let want = |n: usize, items: &Vec<StateValue>| {
            if items.len() == n {
                Ok(())
            } else {
                Err(fmt_err(format!(
                    "{class_name} state has {} entries, expected {n}",
                    items.len()
                )))
            }
        };
        Ok(match class_name {
            "KVCache" => {
                want(3, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                Cache::Kv(KvCache {
                    keys: take(0).into_array_opt()?,
                    values: take(1).into_array_opt()?,
                    offset: take(2).into_i32()?,
                })
            }
            "RotatingKVCache" => {
                want(6, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                Cache::Rotating(RotatingKvCache {
                    keys: take(0).into_array_opt()?,
                    values: take(1).into_array_opt()?,
                    offset: take(2).into_i32()?,
                    keep: take(3).into_i32()?,
                    max_size: take(4).into_i32()?,
                    idx: take(5).into_i32()?,
                })
            }
            "QuantizedKVCache" => {
                want(5, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                let q = |v: StateValue| -> std::result::Result<Option<QuantizedArray>, CacheError> {
                    match v {
                        StateValue::None => Ok(None),
                        v => {
                            let parts = v
                                .into_list()
                                .ok_or_else(|| fmt_err("quantized keys are not a list"))?;
                            let mut it = parts.into_iter();
                            let mut next = || {
                                it.next()
                                    .ok_or_else(|| fmt_err("quantized keys need 3 arrays"))
                                    .and_then(StateValue::into_array)
                            };
                            Ok(Some(QuantizedArray {
                                w: next()?,
                                scales: next()?,
                                biases: next()?,
                            }))
                        }
                    }
                };
                Cache::Quantized(QuantizedKvCache {
                    keys: q(take(0))?,
                    values: q(take(1))?,
                    offset: take(2).into_i32()?,
                    group_size: take(3).into_i32()?,
                    bits: take(4).into_i32()?,
                })
            }
            "BatchKVCache" => {
                want(5, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                Cache::Batch(BatchKvCache {
                    keys: take(0).into_array_opt()?,
                    values: take(1).into_array_opt()?,
                    offset: take(2).into_array()?,
                    left_padding: take(3).into_array()?,
                    idx: take(4).into_i32()?,
                })
            }
            "ChunkedKVCache" => {
                want(5, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                Cache::Chunked(ChunkedKvCache {
                    keys: take(0).into_array_opt()?,
                    values: take(1).into_array_opt()?,
                    offset: take(2).into_i32()?,
                    chunk_size: take(3).into_i32()?,
                    start_position: take(4).into_i32()?,
                })
            }
            "ArraysCache" => {
                want(3, &items)?;
                let mut take = |i: usize| std::mem::replace(&mut items[i], StateValue::None);
                let slots = take(0)
                    .into_list()
                    .ok_or_else(|| fmt_err("ArraysCache slots are not a list"))?;
                Cache::Arrays(ArraysCache {
                    cache: slots
                        .into_iter()
                        .map(StateValue::into_array_opt)
                        .collect::<std::result::Result<_, _>>()?,
                    left_padding: take(1).into_array_opt()?,
                    lengths: take(2).into_array_opt()?,
                })
            }
            "CacheList" => {
                let inner = items
                    .into_iter()
                    .map(|pair| {
                        let mut pair = pair
                            .into_list()
                            .filter(|p| p.len() == 2)
                            .ok_or_else(|| fmt_err("CacheList entries are (state, class) pairs"))?;
                        let name = match pair.pop() {
                            Some(StateValue::Str(s)) => s,
                            _ => return Err(fmt_err("CacheList entry without a class name")),
                        };
                        let state = pair.pop().unwrap_or(StateValue::None);
                        Cache::from_state(&name, state)
                    })
                    .collect::<std::result::Result<_, _>>()?;
                Cache::List(inner)
            }
            other => return Err(fmt_err(format!("unknown cache class `{other}`"))),
        })
    }
}

// The masks that depend on a layer's cache live with the caches (`nn::mask` knows nothing of
// them), so that the two modules depend one way.

/// The mask for `n` new tokens given the layer's cache (as mlx-lm's `create_attention_mask`):
/// the cache decides when it has one; otherwise none for one token, the fused causal mask, or
/// an explicit one when `return_array` or a window shorter than `n` asks for it.
pub fn create_attention_mask(
    n: i32,
    cache: Option<&Cache>,
    window_size: Option<i32>,
    return_array: bool,
) -> Result<AttentionMask> {
    if let Some(cache) = cache {
        if let Some(mask) = cache.make_mask(n, window_size, return_array)? {
            return Ok(mask);
        }
    }
    default_mask(n, window_size, return_array)
}

/// The mask of a chunked-attention layer (llama4's local layers, chunks of `chunk_size`)
/// for `n` new tokens after what `cache` holds: always an array, as the reference builds it
/// ([`create_chunked_mask`]). A [`ChunkedKvCache`] holds the positions from its
/// `start_position`; a full-attention cache all of them; a [`BatchKvCache`] all of them for
/// each sequence, its padding hidden. Other caches are an error.
pub fn create_chunked_attention_mask(
    n: i32,
    cache: Option<&Cache>,
    chunk_size: i32,
) -> Result<AttentionMask> {
    let mask = match cache {
        None => create_chunked_mask(n, 0, 0, chunk_size, None)?,
        Some(Cache::Chunked(c)) => {
            create_chunked_mask(n, c.start_position, c.offset, chunk_size, None)?
        }
        Some(Cache::Kv(KvCache { offset, .. }))
        | Some(Cache::Quantized(QuantizedKvCache { offset, .. })) => {
            create_chunked_mask(n, 0, *offset, chunk_size, None)?
        }
        Some(Cache::Batch(c)) => {
            create_chunked_mask(n, 0, c.idx, chunk_size, Some(&c.left_padding))?
        }
        Some(other) => {
            return Err(Exception::custom(format!(
                "chunked attention cannot read a {}",
                other.class_name()
            )))
        }
    };
    Ok(AttentionMask::Array(mask))
}

/// The mask of a state-space layer (`create_ssm_mask`): only an [`ArraysCache`] with left
/// padding or lengths has one.
///
pub fn create_ssm_mask(n: i32, cache: Option<&Cache>) -> Result<Option<Array>> {
    match cache {
        Some(Cache::Arrays(c)) => c.make_mask(n),
        _ => Ok(None),
    }
}

/// KVCache / QuantizedKVCache `make_mask` (`create_attention_mask` in cache.py).
fn offset_mask(
    n: i32,
    offset: i32,
    window_size: Option<i32>,
    return_array: bool,
) -> Result<AttentionMask> {
    if window_size.is_some() || (n > 1 && return_array) {
        return Ok(AttentionMask::Array(create_causal_mask(
            n,
            offset,
            window_size,
            None,
            None,
        )?));
    }
    Ok(if n == 1 {
        AttentionMask::None
    } else {
        AttentionMask::Causal
    })
}

/// Grows `buf` (or makes it) so that `prev + n` positions fit, as `KVCache.update_and_fetch`:
/// a new block of whole steps, after cutting a partly used buffer back to `prev`.
fn grow(buf: &mut Option<Array>, like: &Array, prev: i32) -> Result<()> {
    let shape = like.shape();
    let (n, rank) = (shape[shape.len() - 2], shape.len());
    let need = match buf {
        None => true,
        Some(b) => prev + n > b.shape()[rank - 2],
    };
    if !need {
        return Ok(());
    }
    let n_steps = (STEP + n - 1) / STEP;
    let mut new_shape = shape.to_vec();
    new_shape[rank - 2] = n_steps * STEP;
    let block = zeros_dtype(&new_shape, like.dtype())?;
    *buf = Some(match buf.take() {
        Some(b) => {
            let b = if prev % STEP != 0 {
                seq(&b, 0, prev)?
            } else {
                b
            };
            concatenate(&[b, block], -2)?
        }
        None => block,
    });
    Ok(())
}
