//! Full-attention and windowed key/value caches: [`KvCache`], [`RotatingKvCache`],
//! [`ChunkedKvCache`].

#[allow(unused_imports)]
use super::*;

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
