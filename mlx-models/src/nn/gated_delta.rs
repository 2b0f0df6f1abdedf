//! The gated delta rule of qwen3_next's and qwen3_5's linear-attention layers, after mlx-lm's
//! `models/gated_delta.py` as it runs on the CPU (its ops path; the Metal kernels do not exist
//! there):
//!
//! - [`compute_g`]: the per-head decay `exp(-exp(A_log) * softplus(a + dt_bias))`, in float32;
//! - [`normalize_qk`]: queries and keys L2-normalised, the `Dk^-0.5` readout scale folded
//!   into the queries;
//! - [`gated_delta_step`]: one step of the recurrence on a state `[B, Hv, Dv, Dk]`;
//! - [`gated_delta_ops`]: the recurrence over a sequence, one step per position, the grouped
//!   key heads repeated to the value heads, padded positions leaving the state unchanged;
//! - [`gated_delta_chunked`]: the same over chunks of [`CHUNK`] positions;
//! - [`gated_delta_update`]: the whole rule from the layer's projections (`a`, `b`) as the
//!   layers call it;
//! - [`GatedRmsNorm`]: qwen3_next's gated RMSNorm (the norm, then `silu(gate) * x` in float32).
//!
//! A prompt of at least [`CHUNK`] positions with one decay per head (the layers' case) runs in
//! chunks ([`gated_delta_chunked`]): the same recurrence solved for a chunk at a time with
//! matrix products (the WY form of the delta rule), in float32. It sums in another order than
//! the reference's steps: measured against them, float32 outputs and states within 3e-7, half
//! outputs within one unit in the last place (`tests/tests/blocks_gated_delta.rs`); shorter
//! prompts and per-feature decays run the reference's steps ([`gated_delta_ops`]), to the bit.
//!
//! The state is float32 whatever the inputs' type (the reference's zeros are float32, and
//! every product with it promotes), and each step's output is cast back to the queries' type.

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{Ellipsis, IndexOp, NewAxis, TryIndexOp};
use mlx_rs::ops::{
    concatenate, cumsum, exp, log, logaddexp, matmul, ones_dtype, repeat_axis, select, sigmoid,
    stack, tril, zeros_dtype,
};
use mlx_rs::{Array, Dtype};

use crate::nn::activations::silu;

/// `v` as an array of `like`'s type (how a Python float meets an array in mlx).
fn scalar(v: f32, like: &Array) -> Result<Array> {
    Array::from_f32(v).as_dtype(like.dtype())
}

/// The decay of each head at each position, `exp(-exp(A_log) * softplus(a + dt_bias))`:
/// `a` `[B, T, Hv]` (the layer's `in_proj_a` output), `a_log` and `dt_bias` `[Hv]`. Float32
/// (`A_log` is read in float32 whatever its type), as the reference's `compute_g`.
pub fn compute_g(a_log: &Array, a: &Array, dt_bias: &Array) -> Result<Array> {
    let a = a.add(dt_bias)?;
    let softplus = logaddexp(&a, scalar(0.0, &a)?)?;
    let rate = exp(a_log.as_dtype(Dtype::Float32)?)?.negative()?;
    exp(rate.multiply(&softplus)?)
}

/// Queries and keys (`[..., Dk]`) L2-normalised with `eps` added to the sum of squares, the
/// queries also times `inv_scale²` and the keys times `inv_scale` (the reference's
/// `normalize_qk`, which folds the readout scale `Dk^-0.5` into the queries; `inv_scale` is
/// `Dk^-0.5`). Over the fused RMS norm, whose `eps` is added to the mean of squares.
pub fn normalize_qk(q: &Array, k: &Array, inv_scale: f32, eps: f32) -> Result<(Array, Array)> {
    let rms_eps = eps * inv_scale * inv_scale;
    let q = fast::rms_norm(q, None, rms_eps)?;
    let q = q.multiply(scalar(inv_scale * inv_scale, &q)?)?;
    let k = fast::rms_norm(k, None, rms_eps)?;
    let k = k.multiply(scalar(inv_scale, &k)?)?;
    Ok((q, k))
}

/// One step of the gated delta rule (the reference's `_gated_delta_step_ops`): `q`, `k`
/// `[B, H, Dk]`, `v` `[B, H, Dv]`, the decay `g` `[B, H]` (one per head) or `[B, H, Dk]` (one
/// per key feature), `beta` `[B, H]`, `state` `[B, H, Dv, Dk]`, and `mask` `[B]` (false: the
/// state is left as it was). Returns the output `[B, H, Dv]` in `q`'s type and the new state.
///
/// `S ← g ⊙ S`, `δ = β (v − S k)`, `S ← S + δ kᵀ`, `y = S q`.
pub fn gated_delta_step(
    q: &Array,
    k: &Array,
    v: &Array,
    g: &Array,
    beta: &Array,
    state: &Array,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    let decay = match g.ndim() {
        2 => g.index((Ellipsis, NewAxis, NewAxis)),
        3 => g.index((Ellipsis, NewAxis, ..)),
        _ => {
            return Err(Exception::custom(format!(
                "gated delta rule: the decay has shape {:?}; expected [B, H] or [B, H, Dk]",
                g.shape()
            )))
        }
    };
    let k_row = k.index((Ellipsis, NewAxis, ..));
    let decayed = state.multiply(&decay)?;
    let kv_mem = decayed.multiply(&k_row)?.sum_axis(-1, None)?;
    let delta = v
        .subtract(&kv_mem)?
        .multiply(beta.index((Ellipsis, NewAxis)))?;
    let new_state = decayed.add(k_row.multiply(delta.index((Ellipsis, NewAxis)))?)?;
    let y = new_state
        .multiply(q.index((Ellipsis, NewAxis, ..)))?
        .sum_axis(-1, None)?;
    let new_state = match mask {
        Some(m) => select(m.index((.., NewAxis, NewAxis, NewAxis)), &new_state, state)?,
        None => new_state,
    };
    Ok((y.as_dtype(q.dtype())?, new_state))
}

/// The gated delta rule over a sequence (the reference's `gated_delta_ops`): `q`, `k`
/// `[B, T, Hk, Dk]`, `v` `[B, T, Hv, Dv]` (`Hk` divides `Hv`: key head `h` serves value heads
/// `h * Hv / Hk ..`), `g` `[B, T, Hv]` or `[B, T, Hv, Dk]`, `beta` `[B, T, Hv]`, `state`
/// `[B, Hv, Dv, Dk]` (zeros, float32, when `None`) and `mask` `[B, T]`. Returns the outputs
/// `[B, T, Hv, Dv]` and the final state. One [`gated_delta_step`] per position.
pub fn gated_delta_ops(
    q: &Array,
    k: &Array,
    v: &Array,
    g: &Array,
    beta: &Array,
    state: Option<&Array>,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    let (q, k, mut state) = grouped(q, k, v, state)?;
    let t = q.dim(1);
    let mut ys = Vec::with_capacity(t as usize);
    for i in 0..t {
        let at = |x: &Array| x.index((.., i));
        let step_mask = mask.map(at);
        let (y, s) = gated_delta_step(
            &at(&q),
            &at(&k),
            &at(v),
            &at(g),
            &at(beta),
            &state,
            step_mask.as_ref(),
        )?;
        ys.push(y);
        state = s;
    }
    Ok((stack(&ys, 1)?, state))
}

/// The gated delta rule from a layer's projections (the reference's `gated_delta_update` on
/// the CPU): `beta = sigmoid(b)`, the decay [`compute_g`]`(a_log, a, dt_bias)`, then
/// [`gated_delta_chunked`] for a prompt of at least [`CHUNK`] positions, [`gated_delta_ops`]
/// otherwise. `q` and `k` come normalised by [`normalize_qk`]; `a` and `b` are `[B, T, Hv]`.
#[allow(clippy::too_many_arguments)]
pub fn gated_delta_update(
    q: &Array,
    k: &Array,
    v: &Array,
    a: &Array,
    b: &Array,
    a_log: &Array,
    dt_bias: &Array,
    state: Option<&Array>,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    let beta = sigmoid(b)?;
    let g = compute_g(a_log, a, dt_bias)?;
    if q.dim(1) >= CHUNK {
        return gated_delta_chunked(q, k, v, &g, &beta, state, mask);
    }
    gated_delta_ops(q, k, v, &g, &beta, state, mask)
}

/// The queries and keys repeated to the value heads (`[B, T, Hv, Dk]`) and the initial state
/// (zeros, float32, when `None`).
fn grouped(
    q: &Array,
    k: &Array,
    v: &Array,
    state: Option<&Array>,
) -> Result<(Array, Array, Array)> {
    let (b, hk, dk) = (q.dim(0), q.dim(2), q.dim(3));
    let (hv, dv) = (v.dim(2), v.dim(3));
    if hk < 1 || hv % hk != 0 {
        return Err(Exception::custom(format!(
            "gated delta rule: {hv} value heads cannot share {hk} key heads evenly"
        )));
    }
    let state = match state {
        Some(s) => s.clone(),
        None => zeros_dtype(&[b, hv, dv, dk], Dtype::Float32)?,
    };
    let (q, k) = match hv / hk {
        1 => (q.clone(), k.clone()),
        r => (
            repeat_axis::<f32>(q.clone(), r, -2)?,
            repeat_axis::<f32>(k.clone(), r, -2)?,
        ),
    };
    Ok((q, k, state))
}

/// Positions per chunk of [`gated_delta_chunked`], and the prompt length from which
/// [`gated_delta_update`] uses it.
pub const CHUNK: i32 = 64;

/// `out[..., i, j]` = the sum of `x[..., j + 1 ..= i]` for `j <= i`, `-inf` above the diagonal
/// (`x` `[..., n]`, out `[..., n, n]`): the log of the decay from position `j` to `i`, summed
/// within the window so that no large cumulative sums cancel.
fn segment_sums(x: &Array) -> Result<Array> {
    let n = x.dim(-1);
    let rows = repeat_axis::<f32>(x.index((Ellipsis, NewAxis)), n, -1)?;
    let ones = ones_dtype(&[n, n], Dtype::Bool)?;
    let rows = select(tril(&ones, -1)?, &rows, scalar(0.0, &rows)?)?;
    let sums = cumsum(&rows, -2, None, None)?;
    select(tril(&ones, 0)?, &sums, scalar(f32::NEG_INFINITY, &sums)?)
}

/// The gated delta rule over a sequence in chunks of [`CHUNK`] positions, for a decay per
/// head (`g` `[B, T, Hv]`; shapes otherwise as [`gated_delta_ops`]), in float32, the outputs
/// in `q`'s type. Within a chunk of `n` positions from state `S₀`, with `L[i, j]` the decay
/// from `j` to `i` and `γᵢ` the decay from the chunk's start through `i`, the updates
/// `wᵢ = βᵢ (vᵢ − Sᵢ₋₁ kᵢ)` solve the unit lower-triangular system
/// `wᵢ + βᵢ Σⱼ₍ⱼ<ᵢ₎ L[i, j] (kᵢ·kⱼ) wⱼ = βᵢ (vᵢ − γᵢ S₀ kᵢ)` (by the product
/// `Π (I + N^(2^m))` of its nilpotent part, a few matrix products); then
/// `yᵢ = γᵢ S₀ qᵢ + Σⱼ₍ⱼ≤ᵢ₎ L[i, j] (qᵢ·kⱼ) wⱼ` and `Sₙ = γₙ S₀ + Σⱼ L[n, j] wⱼ kⱼᵀ`.
/// A padded position (`mask` false) gets `β = 0` and no decay, so it leaves the state as it
/// was; its output (which nothing reads) is not the reference's.
pub fn gated_delta_chunked(
    q: &Array,
    k: &Array,
    v: &Array,
    g: &Array,
    beta: &Array,
    state: Option<&Array>,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    if g.ndim() != 3 {
        return Err(Exception::custom(
            "the chunked gated delta rule takes one decay per head ([B, T, H])",
        ));
    }
    let out_type = q.dtype();
    let (q, k, mut state) = grouped(q, k, v, state)?;
    let heads_first = |x: &Array| x.as_dtype(Dtype::Float32)?.transpose_axes(&[0, 2, 1, 3]);
    let (q, k, v) = (heads_first(&q)?, heads_first(&k)?, heads_first(v)?);
    let (mut beta, mut log_g) = (beta.as_dtype(Dtype::Float32)?, log(g)?);
    if let Some(m) = mask {
        let m = m.index((.., .., NewAxis));
        beta = select(&m, &beta, scalar(0.0, &beta)?)?;
        log_g = select(&m, &log_g, scalar(0.0, &log_g)?)?;
    }
    let (beta, log_g) = (
        beta.transpose_axes(&[0, 2, 1])?,
        log_g.transpose_axes(&[0, 2, 1])?,
    );
    let t = q.dim(2);
    let mut ys = Vec::new();
    for start in (0..t).step_by(CHUNK as usize) {
        let end = (start + CHUNK).min(t);
        let n = end - start;
        let chunk = |x: &Array| x.try_index((.., .., start..end));
        let (qc, kc, vc) = (chunk(&q)?, chunk(&k)?, chunk(&v)?);
        let (bc, lg) = (chunk(&beta)?, chunk(&log_g)?);
        let decay = exp(segment_sums(&lg)?)?;
        let gamma = exp(cumsum(&lg, -1, None, None)?)?;
        let kt = kc.swap_axes(-1, -2)?;
        let st = state.swap_axes(-1, -2)?;
        let kk = tril(matmul(&kc, &kt)?.multiply(&decay)?, -1)?;
        let nilpotent = kk.multiply(bc.index((Ellipsis, NewAxis)))?.negative()?;
        let rhs = vc.subtract(
            gamma
                .index((Ellipsis, NewAxis))
                .multiply(matmul(&kc, &st)?)?,
        )?;
        let mut w = rhs.multiply(bc.index((Ellipsis, NewAxis)))?;
        let mut power = nilpotent;
        let steps = 32 - (n - 1).max(1).leading_zeros();
        for step in 0..steps {
            w = w.add(matmul(&power, &w)?)?;
            if step + 1 < steps {
                power = matmul(&power, &power)?;
            }
        }
        let qk = tril(matmul(&qc, &kt)?.multiply(&decay)?, 0)?;
        let y = gamma
            .index((Ellipsis, NewAxis))
            .multiply(matmul(&qc, &st)?)?;
        ys.push(y.add(matmul(&qk, &w)?)?);
        let last = decay.index((Ellipsis, n - 1, ..));
        let carried = exp(lg.sum_axis(-1, None)?)?.index((Ellipsis, NewAxis, NewAxis));
        let written = w
            .multiply(last.index((Ellipsis, NewAxis)))?
            .swap_axes(-1, -2)?;
        state = carried.multiply(&state)?.add(matmul(&written, &kc)?)?;
    }
    let y = concatenate(&ys, 2)?.transpose_axes(&[0, 2, 1, 3])?;
    Ok((y.as_dtype(out_type)?, state))
}

/// qwen3_next's gated RMSNorm (`Qwen3NextRMSNormGated`): the RMS norm of `x` with `weight`,
/// then, with a gate, `silu(gate) * normed` computed in float32 and returned in `x`'s type.
/// (Mamba2's gated norm, `nn::ssm`'s, gates before normalising.)
#[derive(Debug, Clone, ModuleParameters)]
pub struct GatedRmsNorm {
    /// `[dims]`.
    #[param]
    pub weight: Param<Array>,
    /// Added to the mean square.
    pub eps: f32,
}

impl GatedRmsNorm {
    /// Weights of one over `dims` features.
    pub fn new(dims: i32, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: Param::new(ones_dtype(&[dims], Dtype::Float32)?),
            eps,
        })
    }

    /// Normalises `x` (`[..., dims]`), gated by `gate` (same shape) when given.
    pub fn forward(&self, x: &Array, gate: Option<&Array>) -> Result<Array> {
        let normed = fast::rms_norm(x, Some(&*self.weight), self.eps)?;
        match gate {
            Some(gate) => {
                let gate = silu(&gate.as_dtype(Dtype::Float32)?)?;
                gate.multiply(normed.as_dtype(Dtype::Float32)?)?
                    .as_dtype(x.dtype())
            }
            None => normed.as_dtype(x.dtype()),
        }
    }
}
