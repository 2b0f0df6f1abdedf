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
//! Every kind can be trimmed where the reference allows it, and a list of caches can be saved
//! to and loaded from a safetensors file laid out like mlx-lm's `save_prompt_cache` (the same
//! keys, class names and metadata), so files move between the two.

use std::collections::HashMap;
use std::path::Path;

use mlx_rs::error::{Exception, IoError, Result};
use mlx_rs::ops::indexing::{Ellipsis, NewAxis, TryIndexMutOp, TryIndexOp};
use mlx_rs::ops::{arange, concatenate, quantize, zeros_dtype};
use mlx_rs::{Array, Dtype};

use crate::nn::mask::{create_causal_mask, default_mask, AttentionMask};

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
    /// the reference); `None` when it leaves the choice to [`create_attention_mask`].
    ///
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
            Cache::Chunked(_) | Cache::Arrays(_) | Cache::List(_) => Ok(None),
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

/// The keys and values of full attention, in a buffer that grows by [`STEP`] positions.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// `[B, kv_heads, capacity, head_dim]`; positions past `offset` are unused.
    pub keys: Option<Array>,
    /// `[B, kv_heads, capacity, v_head_dim]`.
    pub values: Option<Array>,
    /// Positions seen so far.
    pub offset: i32,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the new positions after the current ones; returns all positions so far.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let prev = self.offset;
        let n = keys.dim(2);
        if self.keys.as_ref().is_none_or(|k| prev + n > k.dim(2)) {
            grow(&mut self.keys, keys, prev)?;
            grow(&mut self.values, values, prev)?;
        }
        self.offset += n;
        let (k, v) = self.buffers_mut()?;
        k.try_index_mut((Ellipsis, prev..prev + n, ..), keys)?;
        v.try_index_mut((Ellipsis, prev..prev + n, ..), values)?;
        self.keys_and_values()
    }

    fn buffers_mut(&mut self) -> Result<(&mut Array, &mut Array)> {
        match (&mut self.keys, &mut self.values) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(Exception::custom("the cache is empty")),
        }
    }

    /// The positions written so far.
    pub fn keys_and_values(&self) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        if self.offset < k.dim(2) {
            Ok((seq(k, 0, self.offset)?, seq(v, 0, self.offset)?))
        } else {
            Ok((k.clone(), v.clone()))
        }
    }

    /// Drops the last `n` positions (at most all of them); returns how many.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.offset).max(0);
        self.offset -= n;
        n
    }

    /// The same positions, quantized (`KVCache.to_quantized`).
    pub fn to_quantized(&self, group_size: i32, bits: i32) -> Result<QuantizedKvCache> {
        let q = |a: &Option<Array>| {
            a.as_ref()
                .map(|a| QuantizedArray::quantize(a, group_size, bits))
                .transpose()
        };
        Ok(QuantizedKvCache {
            keys: q(&self.keys)?,
            values: q(&self.values)?,
            offset: self.offset,
            group_size,
            bits,
        })
    }
}

/// A sliding window over keys and values: at most `max_size` positions (the first `keep` of
/// them pinned), written in place as a ring during decoding. A prompt longer than the window
/// is kept whole for its own step (so every token of it sees a full window), then cut.
#[derive(Debug, Clone)]
pub struct RotatingKvCache {
    /// The ring (or, after a multi-token step, the positions in temporal order).
    pub keys: Option<Array>,
    /// As `keys`.
    pub values: Option<Array>,
    /// Positions seen so far.
    pub offset: i32,
    /// Positions at the start that never rotate out.
    pub keep: i32,
    /// The window.
    pub max_size: i32,
    /// Where the next position is written (mlx-lm's `_idx`).
    pub idx: i32,
}

impl RotatingKvCache {
    /// An empty window of `max_size` positions keeping the first `keep`.
    pub fn new(max_size: i32, keep: i32) -> Self {
        Self {
            keys: None,
            values: None,
            offset: 0,
            keep,
            max_size,
            idx: 0,
        }
    }

    /// Positions held (at most `max_size`).
    pub fn size(&self) -> i32 {
        self.offset.min(self.max_size)
    }

    fn trim_front(&self, trim_size: i32, v: &Array, append: Option<&Array>) -> Result<Array> {
        let mut parts = if trim_size > 0 {
            vec![seq(v, 0, self.keep)?, seq_from(v, trim_size + self.keep)?]
        } else {
            vec![v.clone()]
        };
        if let Some(a) = append {
            parts.push(a.clone());
        }
        concatenate(&parts, 2)
    }

    fn temporal_order(&self, v: &Array) -> Result<Array> {
        if self.idx == v.dim(2) {
            Ok(v.clone())
        } else if self.idx < self.offset {
            concatenate(
                &[
                    seq(v, 0, self.keep)?,
                    seq_from(v, self.idx)?,
                    seq(v, self.keep, self.idx)?,
                ],
                2,
            )
        } else {
            seq(v, 0, self.idx)
        }
    }

    fn update_concat(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) => {
                let k = self.temporal_order(&k)?;
                let v = self.temporal_order(&v)?;
                self.idx = k.dim(2);
                // At most max_size + L - 1 positions: every new token sees a full window.
                let trim_size = self.idx - self.max_size + 1;
                self.keys = Some(self.trim_front(trim_size, &k, Some(keys))?);
                self.values = Some(self.trim_front(trim_size, &v, Some(values))?);
            }
            _ => {
                self.keys = Some(keys.clone());
                self.values = Some(values.clone());
            }
        }
        self.offset += keys.dim(2);
        let (k, v) = (self.keys.clone(), self.values.clone());
        let (Some(k), Some(v)) = (k, v) else {
            unreachable!("set above")
        };
        self.idx = k.dim(2);
        Ok((k, v))
    }

    fn update_in_place(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let s = keys.dim(2);
        let prev = self.offset;
        let grow_now = match &self.keys {
            None => true,
            Some(k) => prev >= k.dim(2) && k.dim(2) < self.max_size,
        };
        if grow_now {
            let new_size = STEP.min(self.max_size - prev);
            let block = |like: &Array| {
                let mut shape = like.shape().to_vec();
                shape[2] = new_size;
                zeros_dtype(&shape, like.dtype())
            };
            let (nk, nv) = (block(keys)?, block(values)?);
            match (self.keys.take(), self.values.take()) {
                (Some(k), Some(v)) => {
                    self.keys = Some(concatenate(&[k, nk], 2)?);
                    self.values = Some(concatenate(&[v, nv], 2)?);
                }
                _ => {
                    self.keys = Some(nk);
                    self.values = Some(nv);
                }
            }
            self.idx = prev;
        }
        let (Some(mut k), Some(mut v)) = (self.keys.take(), self.values.take()) else {
            unreachable!("made above")
        };
        let trim_size = k.dim(2) - self.max_size;
        if trim_size > 0 {
            k = self.trim_front(trim_size, &k, None)?;
            v = self.trim_front(trim_size, &v, None)?;
            self.idx = self.max_size;
        }
        if self.idx == self.max_size {
            self.idx = self.keep;
        }
        k.try_index_mut((Ellipsis, self.idx..self.idx + s, ..), keys)?;
        v.try_index_mut((Ellipsis, self.idx..self.idx + s, ..), values)?;
        self.keys = Some(k);
        self.values = Some(v);
        self.offset += s;
        self.idx += s;
        self.keys_and_values()
    }

    /// Adds the new positions: one token is written into the ring, several are appended in
    /// temporal order. Returns the keys and values to attend to.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        if keys.dim(2) == 1 {
            self.update_in_place(keys, values)
        } else {
            self.update_concat(keys, values)
        }
    }

    /// The held positions (in ring order once it has wrapped).
    pub fn keys_and_values(&self) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        if self.offset < k.dim(2) {
            Ok((seq(k, 0, self.offset)?, seq(v, 0, self.offset)?))
        } else {
            Ok((k.clone(), v.clone()))
        }
    }

    /// Drops the last `n` positions (only meaningful before the ring wraps).
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.offset).max(0);
        self.offset -= n;
        self.idx -= n;
        n
    }

    /// The mask for `n` new tokens attending to this window (`RotatingKVCache.make_mask`).
    pub fn make_mask(
        &self,
        n: i32,
        window_size: Option<i32>,
        return_array: bool,
    ) -> Result<AttentionMask> {
        if n > 1 {
            let window = window_size.unwrap_or(self.max_size);
            let offset = (self.max_size - 1).min(self.offset);
            if offset + n > window || return_array {
                return Ok(AttentionMask::Array(create_causal_mask(
                    n,
                    offset,
                    Some(window),
                    None,
                    None,
                )?));
            }
            return Ok(AttentionMask::Causal);
        }
        let Some(window) = window_size else {
            return Ok(AttentionMask::None);
        };
        if self.offset >= window && self.max_size > window {
            let idx = if self.idx >= self.max_size {
                0
            } else {
                self.idx
            };
            let mask_size = if self.offset < self.max_size {
                self.offset + 1
            } else {
                self.max_size
            };
            let mask =
                arange::<_, i32>(0, mask_size, None)?.ge(Array::from_int(mask_size - window))?;
            // roll right by idx + 1
            let shift = (idx + 1).rem_euclid(mask_size);
            let rolled = if shift == 0 {
                mask
            } else {
                concatenate(
                    &[
                        mask.try_index(mask_size - shift..)?,
                        mask.try_index(..mask_size - shift)?,
                    ],
                    0,
                )?
            };
            return Ok(AttentionMask::Array(rolled));
        }
        Ok(AttentionMask::None)
    }
}

/// A quantized tensor as `mx.quantize` returns it: packed `w`, `scales`, `biases`.
#[derive(Debug, Clone)]
pub struct QuantizedArray {
    /// Packed values (uint32).
    pub w: Array,
    /// One scale per group.
    pub scales: Array,
    /// One bias per group.
    pub biases: Array,
}

impl QuantizedArray {
    /// Quantizes `x` along its last axis (affine mode).
    pub fn quantize(x: &Array, group_size: i32, bits: i32) -> Result<Self> {
        let (w, scales, biases) = quantize(x, group_size, bits)?;
        Ok(Self { w, scales, biases })
    }

    /// The three arrays in order.
    pub fn parts(&self) -> [&Array; 3] {
        [&self.w, &self.scales, &self.biases]
    }

    fn map(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<Self> {
        Ok(Self {
            w: f(&self.w)?,
            scales: f(&self.scales)?,
            biases: f(&self.biases)?,
        })
    }

    fn nbytes(&self) -> usize {
        self.parts().iter().map(|a| a.nbytes()).sum()
    }
}

/// Keys and values stored quantized (affine, `bits` per value, groups of `group_size`).
#[derive(Debug, Clone)]
pub struct QuantizedKvCache {
    /// Quantized keys, `[B, kv_heads, capacity, ...]` each.
    pub keys: Option<QuantizedArray>,
    /// Quantized values.
    pub values: Option<QuantizedArray>,
    /// Positions seen so far.
    pub offset: i32,
    /// Quantization group size.
    pub group_size: i32,
    /// Bits per value.
    pub bits: i32,
}

impl QuantizedKvCache {
    /// An empty cache.
    pub fn new(group_size: i32, bits: i32) -> Self {
        Self {
            keys: None,
            values: None,
            offset: 0,
            group_size,
            bits,
        }
    }

    /// Quantizes and appends the new positions; returns all positions so far, quantized.
    pub fn update_and_fetch(
        &mut self,
        keys: &Array,
        values: &Array,
    ) -> Result<(QuantizedArray, QuantizedArray)> {
        let shape = keys.shape();
        let (b, heads, n, k_dim) = (shape[0], shape[1], shape[2], shape[3]);
        let v_dim = values.dim(3);
        let prev = self.offset;
        let capacity = self.keys.as_ref().map(|k| k.w.dim(2));
        if capacity.is_none_or(|c| prev + n > c) {
            let el_per_int = 32 / self.bits;
            let new_steps = (STEP + n - 1) / STEP * STEP;
            match (self.keys.take(), self.values.take()) {
                (Some(k), Some(v)) => {
                    let expand = |x: &Array| -> Result<Array> {
                        let x = if prev % STEP != 0 {
                            seq(x, 0, prev)?
                        } else {
                            x.clone()
                        };
                        let block = zeros_dtype(&[b, heads, new_steps, x.dim(-1)], x.dtype())?;
                        concatenate(&[x, block], -2)
                    };
                    self.keys = Some(k.map(expand)?);
                    self.values = Some(v.map(expand)?);
                }
                _ => {
                    let init = |dim: i32| -> Result<QuantizedArray> {
                        Ok(QuantizedArray {
                            w: zeros_dtype(
                                &[b, heads, new_steps, dim / el_per_int],
                                Dtype::Uint32,
                            )?,
                            scales: zeros_dtype(
                                &[b, heads, new_steps, dim / self.group_size],
                                keys.dtype(),
                            )?,
                            biases: zeros_dtype(
                                &[b, heads, new_steps, dim / self.group_size],
                                keys.dtype(),
                            )?,
                        })
                    };
                    self.keys = Some(init(k_dim)?);
                    self.values = Some(init(v_dim)?);
                }
            }
        }
        self.offset += n;
        let qk = QuantizedArray::quantize(keys, self.group_size, self.bits)?;
        let qv = QuantizedArray::quantize(values, self.group_size, self.bits)?;
        let (end, (Some(k), Some(v))) = (self.offset, (&mut self.keys, &mut self.values)) else {
            unreachable!("made above")
        };
        for (dst, src) in [
            (&mut k.w, &qk.w),
            (&mut k.scales, &qk.scales),
            (&mut k.biases, &qk.biases),
            (&mut v.w, &qv.w),
            (&mut v.scales, &qv.scales),
            (&mut v.biases, &qv.biases),
        ] {
            dst.try_index_mut((Ellipsis, prev..end, ..), src)?;
        }
        self.keys_and_values()
    }

    /// The positions written so far.
    pub fn keys_and_values(&self) -> Result<(QuantizedArray, QuantizedArray)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        if self.offset == k.w.dim(2) {
            Ok((k.clone(), v.clone()))
        } else {
            let cut = |x: &Array| seq(x, 0, self.offset);
            Ok((k.map(cut)?, v.map(cut)?))
        }
    }

    /// Drops the last `n` positions; returns how many.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.offset).max(0);
        self.offset -= n;
        n
    }
}

/// Keys and values of a batch of left-padded sequences (mlx-lm's `BatchKVCache`): one
/// buffer growing in steps of [`STEP`], each sequence's padding and offset kept as arrays.
///
/// The prompts `[1, 3, 5]`, `[7]`, `[2, 6, 8, 9]` go in as `[0, 1, 3, 5]`, `[0, 0, 0, 7]`,
/// `[2, 6, 8, 9]` with `left_padding = [1, 3, 0]`; the masks then hide the padding.
#[derive(Debug, Clone)]
pub struct BatchKvCache {
    /// `[B, kv_heads, capacity, head_dim]`.
    pub keys: Option<Array>,
    /// As `keys`.
    pub values: Option<Array>,
    /// `[B]` int32: each sequence's position (negative while inside its padding).
    pub offset: Array,
    /// `[B]` int32: padded positions at the start of each sequence.
    pub left_padding: Array,
    /// Positions written to the buffer (mlx-lm's `_idx`).
    pub idx: i32,
}

impl BatchKvCache {
    /// An empty cache for a batch padded on the left by `left_padding`.
    pub fn new(left_padding: &[i32]) -> Self {
        let n = left_padding.len() as i32;
        let neg: Vec<i32> = left_padding.iter().map(|l| -l).collect();
        Self {
            keys: None,
            values: None,
            offset: Array::from_slice(&neg, &[n]),
            left_padding: Array::from_slice(left_padding, &[n]),
            idx: 0,
        }
    }

    /// Writes the new positions of every sequence; returns all positions so far.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let prev = self.idx;
        let n = keys.dim(2);
        if self.keys.as_ref().is_none_or(|k| prev + n > k.dim(2)) {
            grow(&mut self.keys, keys, prev)?;
            grow(&mut self.values, values, prev)?;
        }
        self.offset = self.offset.add(Array::from_int(n))?;
        self.idx += n;
        if let (Some(k), Some(v)) = (&mut self.keys, &mut self.values) {
            k.try_index_mut((Ellipsis, prev..self.idx, ..), keys)?;
            v.try_index_mut((Ellipsis, prev..self.idx, ..), values)?;
        }
        self.keys_and_values()
    }

    /// The positions written so far.
    pub fn keys_and_values(&self) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        Ok((seq(k, 0, self.idx)?, seq(v, 0, self.idx)?))
    }

    /// Drops the last `n` positions of every sequence; returns how many.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.idx).max(0);
        self.idx -= n;
        if let Ok(o) = self.offset.subtract(Array::from_int(n)) {
            self.offset = o;
        }
        n
    }

    /// `[B, 1, n, idx + n]`: causal (with an optional window) and hiding each sequence's
    /// padding.
    pub fn make_mask(&self, n: i32, window_size: Option<i32>) -> Result<Array> {
        create_causal_mask(n, self.idx, window_size, Some(&self.left_padding), None)
    }

    /// Keeps the sequences `batch_indices` (`[k]` int32) and drops the padding columns all of
    /// them share (`filter`).
    pub fn filter(&mut self, batch_indices: &Array) -> Result<()> {
        if let (Some(k), Some(v)) = (&self.keys, &self.values) {
            let (k, v) = (
                k.take_axis(batch_indices, 0)?,
                v.take_axis(batch_indices, 0)?,
            );
            self.keys = Some(k);
            self.values = Some(v);
        }
        self.offset = self.offset.take_axis(batch_indices, 0)?;
        self.left_padding = self.left_padding.take_axis(batch_indices, 0)?;
        let min_pad = self.left_padding.min(None)?.item_cast::<i32>();
        if min_pad > 0 {
            if let (Some(k), Some(v)) = (&self.keys, &self.values) {
                let (k, v) = (seq_from(k, min_pad)?, seq_from(v, min_pad)?);
                self.keys = Some(k);
                self.values = Some(v);
            }
            self.idx -= min_pad;
            self.left_padding = self.left_padding.subtract(Array::from_int(min_pad))?;
        }
        Ok(())
    }

    /// Sequence `i` alone, without its padding, as a [`KvCache`] (`extract`).
    pub fn extract(&self, i: i32) -> Result<KvCache> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        let pad = self.left_padding.try_index(i)?.item_cast::<i32>();
        let cut = |x: &Array| -> Result<Array> {
            x.try_index((i..i + 1, .., pad..self.idx))?.contiguous()
        };
        let (k, v) = (cut(k)?, cut(v)?);
        let offset = k.dim(2);
        Ok(KvCache {
            keys: Some(k),
            values: Some(v),
            offset,
        })
    }

    /// One batch from single-sequence caches, right-aligned with left padding (`merge`).
    pub fn merge(caches: &[KvCache]) -> Result<Self> {
        let lengths: Vec<i32> = caches.iter().map(|c| c.offset).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        let padding: Vec<i32> = lengths.iter().map(|l| max_len - l).collect();
        let mut out = Self::new(&padding);
        if max_len == 0 {
            return Ok(out);
        }
        let first = caches
            .iter()
            .find_map(|c| c.keys.as_ref().zip(c.values.as_ref()))
            .ok_or_else(|| Exception::custom("no cache has keys"))?;
        let b = caches.len() as i32;
        let (h, dk, dv) = (first.0.dim(1), first.0.dim(3), first.1.dim(3));
        let mut keys = zeros_dtype(&[b, h, max_len, dk], first.0.dtype())?;
        let mut values = zeros_dtype(&[b, h, max_len, dv], first.1.dtype())?;
        for (i, (c, p)) in caches.iter().zip(&padding).enumerate() {
            let (Some(k), Some(v)) = (&c.keys, &c.values) else {
                continue;
            };
            let i = i as i32;
            keys.try_index_mut((i..i + 1, .., *p..p + c.offset), seq(k, 0, c.offset)?)?;
            values.try_index_mut((i..i + 1, .., *p..p + c.offset), seq(v, 0, c.offset)?)?;
        }
        out.keys = Some(keys);
        out.values = Some(values);
        out.offset = out.offset.add(Array::from_int(max_len))?;
        out.idx = max_len;
        Ok(out)
    }
}

/// Keys and values of at most `chunk_size` positions (llama4's chunked local attention): the
/// model calls [`maybe_trim_front`](Self::maybe_trim_front) at chunk boundaries.
#[derive(Debug, Clone)]
pub struct ChunkedKvCache {
    /// `[B, kv_heads, capacity, head_dim]`, starting at `start_position`.
    pub keys: Option<Array>,
    /// As `keys`.
    pub values: Option<Array>,
    /// Positions seen so far.
    pub offset: i32,
    /// The most positions kept.
    pub chunk_size: i32,
    /// The absolute position of the first held one.
    pub start_position: i32,
}

impl ChunkedKvCache {
    /// An empty cache.
    pub fn new(chunk_size: i32) -> Self {
        Self {
            keys: None,
            values: None,
            offset: 0,
            chunk_size,
            start_position: 0,
        }
    }

    /// Drops the oldest positions beyond `chunk_size`.
    pub fn maybe_trim_front(&mut self) -> Result<()> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok(());
        };
        let valid = self.offset - self.start_position;
        if valid > self.chunk_size {
            let trim = valid - self.chunk_size;
            self.start_position += trim;
            let (k, v) = (seq(k, trim, valid)?, seq(v, trim, valid)?);
            self.keys = Some(k);
            self.values = Some(v);
        }
        Ok(())
    }

    /// Appends the new positions; returns the held ones.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let prev = self.offset - self.start_position;
        let n = keys.dim(2);
        if self.keys.as_ref().is_none_or(|k| prev + n > k.dim(2)) {
            grow(&mut self.keys, keys, prev)?;
            grow(&mut self.values, values, prev)?;
        }
        self.offset += n;
        let end = self.offset - self.start_position;
        if let (Some(k), Some(v)) = (&mut self.keys, &mut self.values) {
            k.try_index_mut((Ellipsis, prev..end, ..), keys)?;
            v.try_index_mut((Ellipsis, prev..end, ..), values)?;
        }
        self.keys_and_values()
    }

    /// The held positions.
    pub fn keys_and_values(&self) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Exception::custom("the cache is empty"));
        };
        let end = self.offset - self.start_position;
        Ok((seq(k, 0, end)?, seq(v, 0, end)?))
    }

    /// Drops the last `n` held positions; returns how many.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.offset - self.start_position).max(0);
        self.offset -= n;
        n
    }
}

/// Fixed state slots of a recurrent layer (for example `[conv_state, ssm_state]`), with the
/// batch's left padding and lengths while a padded prompt is processed.
#[derive(Debug, Clone, Default)]
pub struct ArraysCache {
    /// The slots; `None` until the layer first writes one.
    pub cache: Vec<Option<Array>>,
    /// `[B]` padded positions at the start of each sequence.
    pub left_padding: Option<Array>,
    /// `[B]` valid lengths of each sequence.
    pub lengths: Option<Array>,
}

impl ArraysCache {
    /// `size` empty slots.
    pub fn new(size: usize) -> Self {
        Self {
            cache: vec![None; size],
            left_padding: None,
            lengths: None,
        }
    }

    /// Empty slots for a left-padded batch.
    pub fn with_left_padding(size: usize, left_padding: &[i32]) -> Self {
        let lp = (!left_padding.is_empty())
            .then(|| Array::from_slice(left_padding, &[left_padding.len() as i32]));
        Self {
            cache: vec![None; size],
            left_padding: lp,
            lengths: None,
        }
    }

    /// Slot `i`.
    pub fn get(&self, i: usize) -> Option<&Array> {
        self.cache.get(i).and_then(Option::as_ref)
    }

    /// Sets slot `i` (growing the slots if needed).
    pub fn set(&mut self, i: usize, value: Array) {
        if i >= self.cache.len() {
            self.cache.resize(i + 1, None);
        }
        self.cache[i] = Some(value);
    }

    /// Marks `n` positions processed (the padding and lengths move by `n`).
    pub fn advance(&mut self, n: i32) -> Result<()> {
        for a in [&mut self.lengths, &mut self.left_padding]
            .into_iter()
            .flatten()
        {
            *a = a.subtract(Array::from_int(n))?;
        }
        Ok(())
    }

    /// `[B, n]` true where a position is real (after the padding, within the length).
    pub fn make_mask(&self, n: i32) -> Result<Option<Array>> {
        let pos = arange::<_, i32>(0, n, None)?;
        let mut mask: Option<Array> = None;
        if let Some(lp) = &self.left_padding {
            mask = Some(pos.ge(lp.try_index((.., NewAxis))?)?);
        }
        if let Some(len) = &self.lengths {
            let inside = pos.lt(len.try_index((.., NewAxis))?)?;
            mask = Some(match mask {
                Some(m) => m.logical_and(&inside)?,
                None => inside,
            });
        }
        Ok(mask)
    }
}

/// A node of a cache's state: what the reference's `state` properties hold.
#[derive(Debug, Clone)]
pub enum StateValue {
    /// An array.
    Array(Array),
    /// An integer (offsets, sizes).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (class names inside a `CacheList`).
    Str(String),
    /// An absent array.
    None,
    /// A tuple or list.
    List(Vec<StateValue>),
}

impl StateValue {
    fn into_list(self) -> Option<Vec<StateValue>> {
        match self {
            StateValue::List(l) => Some(l),
            _ => None,
        }
    }

    fn into_array(self) -> std::result::Result<Array, CacheError> {
        match self {
            StateValue::Array(a) => Ok(a),
            other => Err(fmt_err(format!("expected an array, found {other:?}"))),
        }
    }

    fn into_array_opt(self) -> std::result::Result<Option<Array>, CacheError> {
        match self {
            StateValue::None => Ok(None),
            other => other.into_array().map(Some),
        }
    }

    fn into_i32(self) -> std::result::Result<i32, CacheError> {
        match self {
            StateValue::Int(i) => {
                i32::try_from(i).map_err(|_| fmt_err(format!("{i} does not fit i32")))
            }
            other => Err(fmt_err(format!("expected an integer, found {other:?}"))),
        }
    }

    /// Flattens to `("0.1.2", leaf)` pairs like mlx's `tree_flatten`.
    fn flatten(&self, prefix: &str, out: &mut Vec<(String, StateValue)>) {
        match self {
            StateValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let key = if prefix.is_empty() {
                        i.to_string()
                    } else {
                        format!("{prefix}.{i}")
                    };
                    item.flatten(&key, out);
                }
            }
            leaf => out.push((prefix.to_string(), leaf.clone())),
        }
    }
}

/// Rebuilds nested lists from dotted integer paths (mlx's `tree_unflatten` for lists).
fn unflatten(leaves: Vec<(Vec<usize>, StateValue)>) -> std::result::Result<StateValue, CacheError> {
    enum Node {
        Leaf(StateValue),
        Branch(std::collections::BTreeMap<usize, Node>),
    }
    fn insert(
        node: &mut Node,
        path: &[usize],
        v: StateValue,
    ) -> std::result::Result<(), CacheError> {
        let Node::Branch(map) = node else {
            return Err(fmt_err("a key is both a leaf and a branch"));
        };
        match path {
            [] => Err(fmt_err("empty key")),
            [last] => {
                map.insert(*last, Node::Leaf(v));
                Ok(())
            }
            [first, rest @ ..] => insert(
                map.entry(*first)
                    .or_insert_with(|| Node::Branch(Default::default())),
                rest,
                v,
            ),
        }
    }
    fn build(node: Node) -> std::result::Result<StateValue, CacheError> {
        match node {
            Node::Leaf(v) => Ok(v),
            Node::Branch(map) => {
                let mut items = Vec::with_capacity(map.len());
                for (i, (k, child)) in map.into_iter().enumerate() {
                    if k != i {
                        return Err(fmt_err(format!("missing list entry {i}")));
                    }
                    items.push(build(child)?);
                }
                Ok(StateValue::List(items))
            }
        }
    }
    let mut root = Node::Branch(Default::default());
    for (path, v) in leaves {
        insert(&mut root, &path, v)?;
    }
    build(root)
}

fn parse_path(key: &str) -> std::result::Result<Vec<usize>, CacheError> {
    key.split('.')
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| fmt_err(format!("bad key `{key}`")))
        })
        .collect()
}

/// Saves the caches of a model (and string metadata) to a `.safetensors` file in the layout
/// of mlx-lm's `save_prompt_cache`, so mlx-lm's `load_prompt_cache` reads it too.
pub fn save_prompt_cache(
    path: impl AsRef<Path>,
    caches: &[Cache],
    metadata: &HashMap<String, String>,
) -> std::result::Result<(), CacheError> {
    let mut leaves = Vec::new();
    StateValue::List(caches.iter().map(Cache::state).collect()).flatten("", &mut leaves);
    let mut arrays: Vec<(String, Array)> = Vec::with_capacity(leaves.len());
    let mut meta: HashMap<String, String> = HashMap::new();
    // Entry "2.0" is the empty string that keeps the scalar list from vanishing.
    meta.insert("2.0".into(), String::new());
    let mut n_scalars = 0;
    for (key, leaf) in leaves {
        let (array, kind) = match leaf {
            StateValue::Array(a) => (a, None),
            StateValue::Int(i) => {
                let i = i32::try_from(i).map_err(|_| fmt_err(format!("{i} does not fit int32")))?;
                (Array::from_int(i), Some("scalar"))
            }
            StateValue::Float(f) => (Array::from_f32(f as f32), Some("scalar")),
            StateValue::Str(s) => {
                let codes: Vec<i32> = s.chars().map(|c| c as i32).collect();
                (
                    Array::from_slice(&codes, &[codes.len() as i32]),
                    Some("string"),
                )
            }
            StateValue::None => (Array::from_slice::<f32>(&[], &[0]), Some("none")),
            StateValue::List(_) => unreachable!("flatten yields leaves"),
        };
        if let Some(kind) = kind {
            n_scalars += 1;
            meta.insert(format!("2.{n_scalars}.0"), key.clone());
            meta.insert(format!("2.{n_scalars}.1"), kind.to_string());
        }
        arrays.push((key, array));
    }
    for (i, c) in caches.iter().enumerate() {
        meta.insert(format!("1.{i}"), c.class_name().to_string());
    }
    for (k, v) in metadata {
        meta.insert(format!("0.{k}"), v.clone());
    }
    Array::save_safetensors(arrays.iter().map(|(k, a)| (k.as_str(), a)), &meta, path)?;
    Ok(())
}

/// Loads caches saved by [`save_prompt_cache`] or by mlx-lm's `save_prompt_cache`; returns
/// them with the user metadata.
pub fn load_prompt_cache(
    path: impl AsRef<Path>,
) -> std::result::Result<(Vec<Cache>, HashMap<String, String>), CacheError> {
    let (arrays, meta) = Array::load_safetensors_with_metadata(path)?;
    let mut user = HashMap::new();
    let mut classes: Vec<(usize, String)> = Vec::new();
    let mut scalars: HashMap<usize, (Option<String>, Option<String>)> = HashMap::new();
    for (k, v) in meta {
        let (head, rest) = k
            .split_once('.')
            .ok_or_else(|| fmt_err(format!("bad metadata key `{k}`")))?;
        match head {
            "0" => {
                user.insert(rest.to_string(), v);
            }
            "1" => classes.push((
                rest.parse()
                    .map_err(|_| fmt_err(format!("bad key `{k}`")))?,
                v,
            )),
            "2" => {
                let Some((i, field)) = rest.split_once('.') else {
                    continue;
                };
                let i: usize = i.parse().map_err(|_| fmt_err(format!("bad key `{k}`")))?;
                let slot = scalars.entry(i).or_default();
                match field {
                    "0" => slot.0 = Some(v),
                    "1" => slot.1 = Some(v),
                    _ => return Err(fmt_err(format!("bad key `{k}`"))),
                }
            }
            _ => return Err(fmt_err(format!("bad metadata key `{k}`"))),
        }
    }
    classes.sort();
    let kinds: HashMap<String, String> = scalars
        .into_values()
        .filter_map(|(k, t)| Some((k?, t?)))
        .collect();
    let mut leaves = Vec::with_capacity(arrays.len());
    for (key, array) in arrays {
        let value = match kinds.get(&key).map(String::as_str) {
            None => StateValue::Array(array),
            Some("none") => StateValue::None,
            Some("scalar") => {
                if array.dtype().is_float() {
                    StateValue::Float(
                        array
                            .try_item_cast::<f32>()
                            .map_err(|e| fmt_err(e.to_string()))? as f64,
                    )
                } else {
                    StateValue::Int(
                        array
                            .try_item_cast::<i64>()
                            .map_err(|e| fmt_err(e.to_string()))?,
                    )
                }
            }
            Some("string") => {
                let codes: Vec<i32> = array
                    .as_dtype(Dtype::Int32)?
                    .to_vec_exact::<i32>()
                    .map_err(|e| fmt_err(e.to_string()))?;
                StateValue::Str(
                    codes
                        .into_iter()
                        .filter_map(|c| char::from_u32(c as u32))
                        .collect(),
                )
            }
            Some(other) => return Err(fmt_err(format!("unknown scalar type `{other}`"))),
        };
        leaves.push((parse_path(&key)?, value));
    }
    let states = if leaves.is_empty() {
        Vec::new()
    } else {
        unflatten(leaves)?
            .into_list()
            .ok_or_else(|| fmt_err("the state is not a list"))?
    };
    let mut states: Vec<Option<StateValue>> = states.into_iter().map(Some).collect();
    let mut caches = Vec::with_capacity(classes.len());
    for (i, class) in classes {
        let state = states
            .get_mut(i)
            .and_then(Option::take)
            .unwrap_or(StateValue::List(Vec::new()));
        caches.push(Cache::from_state(&class, state)?);
    }
    Ok((caches, user))
}
