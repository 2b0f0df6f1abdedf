//! Block-sparse attention (Phi-3-small's, after mlx-lm's `models/phi3small.py`): positions are
//! grouped in blocks of `block_size`, and a query in block `qb` sees a key in block `kb <= qb`
//! only when `kb` is one of the `num_local_blocks` blocks ending at `qb`, or when
//! `(kb + h + 1) % vert_stride == 0` for its head `h` (every head keeps a different stride of
//! "vertical" blocks); within that, causally. The scores are computed densely and masked.
//!
//! Blocks are taken from absolute positions, as the reference's cached decode takes them (one
//! query at a time, the last of its keys). The reference's multi-token forward differs: its
//! boolean causal mask is added to the scores (as 0 and 1) instead of masking them, so a query
//! also sees the later positions of its own block, and with a prompt that is not a whole
//! number of blocks its rows are shifted against the blocks. Here a prompt gives what the
//! reference's decode gives, position by position.

use mlx_rs::error::{Exception, Result};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{arange, expand_dims, select, softmax_axis};
use mlx_rs::{Array, Dtype};

use crate::nn::attention::finfo_min;
use crate::nn::mask::AttentionMask;

/// The block pattern of a block-sparse layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSparse {
    /// Positions per block (`blocksparse_block_size`).
    pub block_size: i32,
    /// Blocks each query sees up to its own, its own included (`blocksparse_num_local_blocks`).
    pub num_local_blocks: i32,
    /// The stride of the vertical blocks (`blocksparse_vert_stride`).
    pub vert_stride: i32,
}

impl BlockSparse {
    /// Whether each query may see each key: `[Bq, heads, L, K]` (`Bq` 1, or the batch when
    /// the positions are per sequence), for queries at `q_pos` (`[L]` or `[B, L]`) and `K`
    /// keys that end at the last query.
    pub fn allowed(&self, q_pos: &Array, heads: i32, k: i32) -> Result<Array> {
        let l = q_pos.dim(-1);
        let rows = if q_pos.ndim() == 2 { q_pos.dim(0) } else { 1 };
        let q_pos = q_pos.as_dtype(Dtype::Int32)?.reshape(&[rows, 1, l, 1])?;
        // Keys end at the last query: key j sits at `last - (K - 1 - j)`.
        let last = q_pos.reshape(&[rows, l])?.try_index((.., (l - 1)..l))?;
        let steps = arange::<_, i32>(0, k, None)?.subtract(Array::from_int(k - 1))?;
        let k_pos = last.add(&steps)?.reshape(&[rows, 1, 1, k])?;
        let size = Array::from_int(self.block_size);
        let (qb, kb) = (q_pos.floor_divide(&size)?, k_pos.floor_divide(&size)?);
        let distance = qb.subtract(&kb)?;
        let local = distance.lt(Array::from_int(self.num_local_blocks))?;
        let head = arange::<_, i32>(1, heads + 1, None)?.reshape(&[1, heads, 1, 1])?;
        let vertical = kb
            .add(&head)?
            .remainder(Array::from_int(self.vert_stride))?
            .eq(Array::from_int(0))?;
        let causal = k_pos.le(&q_pos)?;
        distance
            .ge(Array::from_int(0))?
            .logical_and(&local.logical_or(&vertical)?)?
            .logical_and(&causal)
    }

    /// The attention of `queries` `[B, heads, L, D]` (rotated, at positions `q_pos`) over
    /// `keys` and `values` `[B, kv_heads, K, D]` (the cache's and the new ones), under the
    /// block pattern and `mask` (a padding mask, boolean or additive; `None` or causal add
    /// nothing the pattern does not already say): `[B, heads, L, D]`.
    pub fn attend(
        &self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        scale: f32,
        q_pos: &Array,
        mask: &AttentionMask,
    ) -> Result<Array> {
        let (b, heads, l, d) = (
            queries.dim(0),
            queries.dim(1),
            queries.dim(2),
            queries.dim(3),
        );
        let (kv_heads, k) = (keys.dim(1), keys.dim(2));
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Exception::custom(format!(
                "block-sparse attention: {heads} query heads over {kv_heads} key heads"
            )));
        }
        let per_kv = heads / kv_heads;
        let scale = Array::from_f32(scale).as_dtype(queries.dtype())?;
        let queries = scale
            .multiply(queries)?
            .reshape(&[b, kv_heads, per_kv, l, d])?;
        let keys = expand_dims(keys, 2)?;
        let values = expand_dims(values, 2)?;
        let mut scores = queries.matmul(keys.swap_axes(-1, -2)?)?;
        let mut allowed = self.allowed(q_pos, heads, k)?;
        match mask.array() {
            Some(m) if m.dtype() == Dtype::Bool => allowed = allowed.logical_and(m)?,
            Some(m) => scores = scores.add(grouped(m, per_kv)?)?,
            None => {}
        }
        let allowed = grouped(&allowed, per_kv)?;
        let scores = select(&allowed, &scores, finfo_min(scores.dtype()))?;
        let probs = softmax_axis(&scores, -1, true)?;
        probs.matmul(&values)?.reshape(&[b, heads, l, d])
    }
}

/// A mask broadcastable to `[B, heads, L, K]` made broadcastable to the grouped scores
/// `[B, kv_heads, per_kv, L, K]`.
fn grouped(mask: &Array, per_kv: i32) -> Result<Array> {
    let shape = mask.shape();
    match shape.len() {
        4 if shape[1] > 1 => {
            let (rows, heads, l, k) = (shape[0], shape[1], shape[2], shape[3]);
            mask.reshape(&[rows, heads / per_kv, per_kv, l, k])
        }
        4 => expand_dims(mask, 2),
        _ => Ok(mask.clone()),
    }
}
