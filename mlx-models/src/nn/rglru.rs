//! The Real-Gated Linear Recurrent Unit (RG-LRU) of Griffin (recurrent_gemma), after mlx-lm's
//! `models/recurrent_gemma.py` on the CPU.
//!
//! Per channel, with `r_t = sigmoid(W_a x_t + b_a)` and `i_t = sigmoid(W_x x_t + b_x)` (block
//! diagonal: one `head_dim x head_dim` matrix per head), `log a_t = -8 r_t softplus(Λ)` and
//!
//! ```text
//! h_t = a_t h_{t-1} + sqrt(1 - a_t²) (i_t x_t)
//! ```
//!
//! where the first position of a sequence (no state yet) takes `i_t x_t` whole. The
//! recurrence itself ([`linear_scan`]) runs one position at a time, as the reference's does.
//!
//! Beyond the reference, which takes no padding mask here: with a mask (`[B, L]`, false on a
//! left-padded position) a padded position leaves the state as it is, and a row's first valid
//! position counts as its first, so a left-padded row ends in the state it would have alone.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{IndexOp, NewAxis, TryIndexOp};
use mlx_rs::ops::{cumsum, exp, matmul, select, sigmoid, sqrt, stack, swap_axes, zeros_dtype};
use mlx_rs::{Array, Dtype};

use crate::nn::ssm::softplus;

fn scalar(v: f32, like: &Array) -> Result<Array> {
    Array::from_f32(v).as_dtype(like.dtype())
}

/// The linear recurrence `h_t = a_t h_{t-1} + x_t` over the positions of `x` and `a` (both
/// `[B, L, D]`, of one type), from `h0` (`[B, D]`; `None`: zeros). A masked position (`mask`
/// `[B, L]` false) keeps `h`. Returns every `h_t` (`[B, L, D]`) and the last.
pub fn linear_scan(
    x: &Array,
    a: &Array,
    h0: Option<&Array>,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    let (b, l, d) = (x.dim(0), x.dim(1), x.dim(2));
    if l < 1 {
        return Err(Exception::custom("the linear scan got no positions"));
    }
    let (x, a) = match mask {
        Some(m) => {
            let m = m.index((.., .., NewAxis));
            (
                select(&m, x, scalar(0.0, x)?)?,
                select(&m, a, scalar(1.0, a)?)?,
            )
        }
        None => (x.clone(), a.clone()),
    };
    // Without a state and a mask, the first step is `x_0` itself, which `a_0 * 0 + x_0` is too.
    let mut h = match (h0, mask) {
        (Some(h0), _) => Some(h0.clone()),
        (None, Some(_)) => Some(zeros_dtype(&[b, d], x.dtype())?),
        (None, None) => None,
    };
    let mut ys = Vec::with_capacity(l as usize);
    for t in 0..l {
        let x_t = x.try_index((.., t))?;
        let next = match &h {
            Some(h) => a.try_index((.., t))?.multiply(h)?.add(&x_t)?,
            None => x_t,
        };
        ys.push(next.clone());
        h = Some(next);
    }
    let last = h.ok_or_else(|| Exception::custom("the linear scan got no positions"))?;
    Ok((stack(&ys, 1)?, last))
}

/// The RG-LRU layer (`rg_lru` in checkpoints): its decay parameter and the two block-diagonal
/// gates.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Rglru {
    /// `[width]`: `Λ`, the decay is `exp(-8 r softplus(Λ))`.
    #[param]
    pub recurrent_param: Param<Array>,
    /// `[heads, head_dim, head_dim]`: the input gate.
    #[param]
    pub input_gate_weight: Param<Array>,
    /// `[heads, head_dim]`.
    #[param]
    pub input_gate_bias: Param<Array>,
    /// `[heads, head_dim, head_dim]`: the recurrence gate.
    #[param]
    pub recurrent_gate_weight: Param<Array>,
    /// `[heads, head_dim]`.
    #[param]
    pub recurrent_gate_bias: Param<Array>,
    heads: i32,
    head_dim: i32,
}

impl Rglru {
    /// Zero parameters for `width` channels in `heads` blocks (`heads` must divide `width`).
    pub fn new(width: i32, heads: i32) -> Result<Self> {
        if width < 1 || heads < 1 || width % heads != 0 {
            return Err(Exception::custom(format!(
                "the RG-LRU's {width} channels do not split into {heads} heads"
            )));
        }
        let hd = width / heads;
        let zeros = |shape: &[i32]| zeros_dtype(shape, Dtype::Float32).map(Param::new);
        Ok(Self {
            recurrent_param: zeros(&[width])?,
            input_gate_weight: zeros(&[heads, hd, hd])?,
            input_gate_bias: zeros(&[heads, hd])?,
            recurrent_gate_weight: zeros(&[heads, hd, hd])?,
            recurrent_gate_bias: zeros(&[heads, hd])?,
            heads,
            head_dim: hd,
        })
    }

    /// `sigmoid` of the block-diagonal linear map of `x` (`[B, L, width]`).
    fn gate(&self, x: &Array, w: &Array, b: &Array) -> Result<Array> {
        let (batch, l) = (x.dim(0), x.dim(1));
        let h = x.reshape(&[batch, l, self.heads, self.head_dim])?;
        let h = swap_axes(&matmul(&swap_axes(&h, 1, 2)?, w)?, 1, 2)?.add(b)?;
        sigmoid(&h.flatten(2, 3)?)
    }

    /// `x` `[B, L, width]` to the hidden states `[B, L, width]` and the last (`[B, width]`),
    /// from `state` (`None`: the sequence starts here). `mask` as in [`linear_scan`].
    pub fn forward(
        &self,
        x: &Array,
        state: Option<&Array>,
        mask: Option<&Array>,
    ) -> Result<(Array, Array)> {
        let gate_x = self.gate(x, &self.input_gate_weight, &self.input_gate_bias)?;
        let gate_a = self.gate(x, &self.recurrent_gate_weight, &self.recurrent_gate_bias)?;

        let log_a = scalar(-8.0, &gate_a)?
            .multiply(&gate_a)?
            .multiply(softplus(&self.recurrent_param)?)?;
        let a = exp(&log_a)?;
        let a_square = exp(scalar(2.0, &log_a)?.multiply(&log_a)?)?;
        let gated_x = x.multiply(&gate_x)?;

        let mut multiplier = sqrt(&scalar(1.0, &a_square)?.subtract(&a_square)?)?;
        if state.is_none() {
            // The first position of each row (its first valid one, with a mask) is taken whole.
            let first = match mask {
                Some(m) => {
                    let seen = cumsum(&m.as_dtype(Dtype::Int32)?, 1, None, None)?;
                    m.logical_and(&seen.eq(Array::from_int(1))?)?
                }
                None => {
                    let l = x.dim(1);
                    let pos = mlx_rs::ops::arange::<_, i32>(0, l, None)?;
                    pos.eq(Array::from_int(0))?.index(NewAxis)
                }
            };
            let one = scalar(1.0, &multiplier)?;
            multiplier = select(&first.index((.., .., NewAxis)), &one, &multiplier)?;
        }
        let normalized_x = gated_x.multiply(multiplier.as_dtype(x.dtype())?)?;
        linear_scan(&normalized_x, &a, state, mask)
    }
}
