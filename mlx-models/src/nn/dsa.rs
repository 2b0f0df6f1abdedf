//! DeepSeek sparse attention, after the `Indexer` of mlx-lm's `models/deepseek_v32.py`: a
//! light scorer that picks, for each query, the `index_topk` keys a
//! [`MultiLatentAttention`](crate::nn::mla::MultiLatentAttention) then attends to
//! ([`MultiLatentAttention::with_indexer`](crate::nn::mla::MultiLatentAttention::with_indexer)).
//!
//! The [`Indexer`] has its own query heads from the attention's normed query latent (`wq_b`),
//! one shared key per position from the hidden state (`wk`, then the LayerNorm `k_norm`), both
//! rotated over their first `qk_rope_head_dim` features by its own RoPE, and a weight per head
//! and position (`weights_proj`, times `(n_heads · head_dim)^-0.5`). The score of key `j` for
//! query `i` is `Σ_h w_h(i) · relu(q_h(i) · k(j))`, masked like the attention; the top
//! `index_topk` keys (`argpartition`, as the reference) are kept. While the context is no longer
//! than `index_topk`, nothing is selected and the attention stays dense.
//!
//! For several new positions the selection becomes a boolean mask ANDed with the causal one;
//! for one (decoding), the latents and rotated keys of the chosen positions are gathered (and
//! the mask with them), as the reference does.
//!
//! The indexer's keys have their own cache: the layer's cache is a [`Cache::List`] of two, the
//! attention's latents first. The reference stores zeros as that second cache's values; here
//! the values are zero features wide (`[B, 1, L, 0]`), so only the keys take memory and every
//! cache kind (growing, batch, rotating, trim, save) works unchanged.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::indexing::{Ellipsis, NewAxis, TryIndexOp};
use mlx_rs::ops::zeros_dtype;
use mlx_rs::ops::{argpartition_axis, broadcast_to, logical_and, matmul, maximum, select};
use mlx_rs::{Array, Dtype};

use crate::cache::Cache;
use crate::nn::blocks::rope_after;
use crate::nn::norm::LayerNorm;
use crate::nn::quantized::{ensure_error_handler, Linear};
use crate::nn::rope::Rope;

/// The shape of an [`Indexer`].
#[derive(Debug, Clone, PartialEq)]
pub struct IndexerConfig {
    /// Model width (input of `wk` and `weights_proj`).
    pub hidden_size: i32,
    /// Width of the attention's query latent (input of `wq_b`).
    pub q_lora_rank: i32,
    /// Indexer heads (`index_n_heads`).
    pub n_heads: i32,
    /// Features of each indexer head and of the shared key (`index_head_dim`).
    pub head_dim: i32,
    /// Keys kept per query (`index_topk`).
    pub topk: i32,
}

/// The sparse-attention indexer (see the module's documentation). Field names are the
/// checkpoint's (`self_attn.indexer.wq_b`, ...).
#[derive(Debug, ModuleParameters)]
pub struct Indexer {
    /// `[n_heads * head_dim, q_lora_rank]`.
    #[param]
    pub wq_b: Linear,
    /// `[head_dim, hidden]`.
    #[param]
    pub wk: Linear,
    /// LayerNorm (weight and bias, eps 1e-5) of the keys.
    #[param]
    pub k_norm: LayerNorm,
    /// `[n_heads, hidden]`.
    #[param]
    pub weights_proj: Linear,
    /// The shape.
    pub config: IndexerConfig,
    /// The rotation of the first `qk_rope_head_dim` features of queries and keys.
    pub rope: Rope,
}

/// What an attention attends over once the indexer has chosen: the latents and rotated keys
/// (`[B, 1, K, _]`) and the mask (`None`: every key).
pub type Selected = (Array, Array, Option<Array>);

impl Indexer {
    /// The indexer `config` describes, rotating with `rope`.
    pub fn new(config: IndexerConfig, rope: Rope) -> Result<Self> {
        let c = &config;
        let q_width = c
            .n_heads
            .checked_mul(c.head_dim)
            .ok_or_else(|| Exception::custom("indexer: the query heads exceed MLX's size limit"))?;
        if rope.dims() > c.head_dim {
            return Err(Exception::custom(format!(
                "indexer: {} rotated features do not fit heads of {}",
                rope.dims(),
                c.head_dim
            )));
        }
        if c.topk <= 0 {
            return Err(Exception::custom("indexer: index_topk must be positive"));
        }
        Ok(Indexer {
            wq_b: Linear::new(c.q_lora_rank, q_width, false)?,
            wk: Linear::new(c.hidden_size, c.head_dim, false)?,
            k_norm: LayerNorm::new(c.head_dim, 1e-5, true)?,
            weights_proj: Linear::new(c.hidden_size, c.n_heads, false)?,
            config,
            rope,
        })
    }

    /// The top-k key positions (`[B, 1, L, topk]`, uint32, unordered) for the `L` new
    /// positions of `x` (`[B, L, hidden]`, with their query latent `qr` `[B, L, q_lora_rank]`),
    /// over what `cache` holds and the new keys (which it appends to `cache`); `None` when
    /// those are no more than `topk`. Also the indexer's keys so far (`[B, 1, K, head_dim]`).
    /// `mask` (boolean, broadcastable to `[B, 1, L, K]`) hides keys from the scores.
    pub fn forward(
        &self,
        x: &Array,
        qr: &Array,
        mask: Option<&Array>,
        cache: Option<&mut Cache>,
    ) -> Result<(Option<Array>, Array)> {
        let c = &self.config;
        let (b, s) = (x.dim(0), x.dim(1));
        let q = self
            .wq_b
            .forward(qr)?
            .reshape(&[b, s, c.n_heads, c.head_dim])?
            .swap_axes(1, 2)?;
        let k = self
            .k_norm
            .forward(&self.wk.forward(x)?)?
            .reshape(&[b, 1, s, c.head_dim])?;
        let q = rope_after(&self.rope, &q, cache.as_deref())?;
        let k = rope_after(&self.rope, &k, cache.as_deref())?;
        let k = match cache {
            None => k,
            // Values zero features wide: the cache keeps the keys only.
            Some(cache) => {
                cache
                    .update_and_fetch(&k, &k.try_index((Ellipsis, ..0))?)?
                    .0
            }
        };
        let n_keys = k.dim(2);
        if n_keys <= c.topk {
            return Ok((None, k));
        }
        let scores = matmul(&q, k.swap_axes(-1, -2)?)?;
        let scores = maximum(&scores, scalar(0.0, scores.dtype())?)?;
        let scale = (c.n_heads as f64).powf(-0.5) * (c.head_dim as f64).powf(-0.5);
        let weights = self.weights_proj.forward(x)?;
        let weights = weights.multiply(scalar(scale as f32, weights.dtype())?)?;
        let weights = weights.swap_axes(-1, -2)?.try_index((Ellipsis, NewAxis))?;
        let scores = scores.multiply(&weights)?;
        // The reference adds the heads one by one over a prompt (a workaround for an MLX
        // reduction) and reduces them when decoding; the same order gives the same sums, so the
        // same keys where scores come close.
        let scores = if s > 1 {
            let head = |h: i32| scores.try_index((.., h..h + 1));
            (1..c.n_heads).try_fold(head(0)?, |acc, h| acc.add(head(h)?))?
        } else {
            scores.sum_axis(1, true)?
        };
        let scores = match mask {
            Some(m) => select(
                boolean(m)?,
                &scores,
                scalar(f32::NEG_INFINITY, scores.dtype())?,
            )?,
            None => scores,
        };
        let kth = n_keys - c.topk;
        let top = argpartition_axis(&scores, kth, -1)?.try_index((Ellipsis, kth..))?;
        Ok((Some(top), k))
    }

    /// Restricts an attention to the keys the indexer picks: given the new positions `x` and
    /// their query latent `qr`, the latents `kv_latent` and rotated keys `k_pe` of every
    /// position attended (`[B, 1, K, _]`, what the attention's cache returned) and its `mask`,
    /// the latents, rotated keys and mask to attend with (see the module's documentation).
    pub fn select(
        &self,
        x: &Array,
        qr: &Array,
        (kv_latent, k_pe, mask): Selected,
        cache: Option<&mut Cache>,
    ) -> Result<Selected> {
        let cached = cache.is_some();
        let (top, keys) = self.forward(x, qr, mask.as_ref(), cache)?;
        let Some(top) = top else {
            // Unused while the attention is dense, the cached keys are still to be computed
            // with the step (the reference's `mx.depends`), not left to pile up as a graph.
            let kv_latent = if cached {
                depends(&kv_latent, &[&keys])?
            } else {
                kv_latent
            };
            return Ok((kv_latent, k_pe, mask));
        };
        let n_keys = kv_latent.dim(2);
        if x.dim(1) == 1 {
            // `[B, 1, topk, 1]`, broadcast over each gathered row's features.
            let idx = top.try_index((.., .., 0, .., NewAxis))?;
            let gather = |a: &Array| -> Result<Array> {
                let mut shape = idx.shape().to_vec();
                shape[3] = a.dim(-1);
                a.take_along_axis(broadcast_to(&idx, &shape)?, 2)
            };
            let mask = match &mask {
                Some(m) => {
                    let mut shape = top.shape().to_vec();
                    shape[3] = n_keys;
                    Some(broadcast_to(m, &shape)?.take_along_axis(&top, -1)?)
                }
                None => None,
            };
            Ok((gather(&kv_latent)?, gather(&k_pe)?, mask))
        } else {
            let mut shape = top.shape().to_vec();
            shape[3] = n_keys;
            let sparse = zeros_dtype(&shape, Dtype::Bool)?.put_along_axis(
                &top,
                Array::from_bool(true),
                -1,
            )?;
            let mask = match &mask {
                Some(m) => logical_and(&sparse, m)?,
                None => sparse,
            };
            Ok((kv_latent, k_pe, Some(mask)))
        }
    }
}

/// `v` as a scalar of `dtype` (as a Python float meets an array in mlx).
fn scalar(v: f32, dtype: Dtype) -> Result<Array> {
    Array::from_f32(v).as_dtype(dtype)
}

fn boolean(mask: &Array) -> Result<&Array> {
    if mask.dtype() == Dtype::Bool {
        Ok(mask)
    } else {
        Err(Exception::custom(
            "the sparse-attention indexer takes a boolean mask (true: attend)",
        ))
    }
}

/// `mx.depends(x, deps)`: `x`, computed only with `deps` (which joins them to its graph).
pub fn depends(x: &Array, deps: &[&Array]) -> Result<Array> {
    ensure_error_handler();
    let inputs = [x.as_ptr()];
    let deps: Vec<mlx_sys::mlx_array> = deps.iter().map(|d| d.as_ptr()).collect();
    // SAFETY: the vectors borrow arrays that outlive the call and are freed before returning;
    // the result's one array is retained by `mlx_vector_array_get` before its vector goes.
    unsafe {
        let inputs = mlx_sys::mlx_vector_array_new_data(inputs.as_ptr(), inputs.len());
        let deps = mlx_sys::mlx_vector_array_new_data(deps.as_ptr(), deps.len());
        let mut res = mlx_sys::mlx_vector_array_new();
        let status = mlx_sys::mlx_depends(&mut res, inputs, deps);
        mlx_sys::mlx_vector_array_free(inputs);
        mlx_sys::mlx_vector_array_free(deps);
        let mut out = mlx_sys::mlx_array_new();
        let ok = status == 0
            && mlx_sys::mlx_vector_array_size(res) == 1
            && mlx_sys::mlx_vector_array_get(&mut out, res, 0) == 0;
        mlx_sys::mlx_vector_array_free(res);
        if !ok {
            mlx_sys::mlx_array_free(out);
            return Err(Exception::custom("depends failed"));
        }
        Ok(Array::from_ptr(out))
    }
}
