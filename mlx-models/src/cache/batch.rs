//! A left-padded batch of sequences at different positions: [`BatchKvCache`].

#[allow(unused_imports)]
use super::*;

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
