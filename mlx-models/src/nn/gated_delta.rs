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
//! - [`gated_delta_update`]: the whole rule from the layer's projections (`a`, `b`) as the
//!   layers call it;
//! - [`GatedRmsNorm`]: qwen3_next's gated RMSNorm (the norm, then `silu(gate) * x` in float32).
//!
//! A prompt runs the recurrence position by position, as the reference does. A chunked
//! (WY / UT-transform) formulation would do a prompt in a few matrix products, but it sums in
//! another order; the reference's half-precision logits are those of the sequential
//! recurrence, and matching them is what the parity checks ask, so it is not used here.
//!
//! The state is float32 whatever the inputs' type (the reference's zeros are float32, and
//! every product with it promotes), and each step's output is cast back to the queries' type.

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{Ellipsis, IndexOp, NewAxis};
use mlx_rs::ops::{exp, logaddexp, ones_dtype, repeat_axis, select, sigmoid, stack, zeros_dtype};
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
    let (b, t, hk, dk) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let (hv, dv) = (v.dim(2), v.dim(3));
    if hk < 1 || hv % hk != 0 {
        return Err(Exception::custom(format!(
            "gated delta rule: {hv} value heads cannot share {hk} key heads evenly"
        )));
    }
    let mut state = match state {
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
/// [`gated_delta_ops`]. `q` and `k` come normalised by [`normalize_qk`]; `a` and `b` are
/// `[B, T, Hv]`.
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
    gated_delta_ops(q, k, v, &g, &beta, state, mask)
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
