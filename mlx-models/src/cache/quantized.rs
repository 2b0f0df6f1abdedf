//! Keys and values stored quantized: [`QuantizedKvCache`] and its [`QuantizedArray`]s.

#[allow(unused_imports)]
use super::*;

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

    pub(crate) fn nbytes(&self) -> usize {
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
