//! Activations as mlx (`mlx.nn.layers.activations`) and mlx-lm (`models/activations.py`)
//! define them: silu, the gelu variants, relu², the gated forms (SwiGLU, GeGLU, GPT-OSS's
//! clamped SwiGLU), and Apertus's learned xIELU ([`XieLu`]). Scalars take the input's dtype,
//! as Python scalars do in mlx.

use mlx_rs::error::Result;
use mlx_rs::ops::{clip, erf, maximum, minimum, sigmoid, square, tanh};
use mlx_rs::Array;

fn sc(v: f32, like: &Array) -> Result<Array> {
    Array::from_f32(v).as_dtype(like.dtype())
}

/// `x * sigmoid(x)`.
pub fn silu(x: &Array) -> Result<Array> {
    x.multiply(sigmoid(x)?)
}

/// The exact gelu: `x * (1 + erf(x / sqrt(2))) / 2`.
pub fn gelu(x: &Array) -> Result<Array> {
    let inner = erf(x.divide(sc(std::f32::consts::SQRT_2, x)?)?)?;
    x.multiply(sc(1.0, x)?.add(inner)?)?.divide(sc(2.0, x)?)
}

/// The tanh approximation (`gelu_approx`, "gelu_pytorch_tanh"):
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))`.
pub fn gelu_approx(x: &Array) -> Result<Array> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt() as f32;
    let cube = x.power(sc(3.0, x)?)?;
    let inner = x.add(sc(0.044715, x)?.multiply(cube)?)?;
    let t = tanh(sc(c, x)?.multiply(inner)?)?;
    sc(0.5, x)?.multiply(x)?.multiply(sc(1.0, x)?.add(t)?)
}

/// The sigmoid approximation (`gelu_fast_approx`): `x * sigmoid(1.702 x)`.
pub fn gelu_fast_approx(x: &Array) -> Result<Array> {
    x.multiply(sigmoid(sc(1.702, x)?.multiply(x)?)?)
}

/// `max(x, 0)`.
pub fn relu(x: &Array) -> Result<Array> {
    maximum(x, sc(0.0, x)?)
}

/// `max(x, 0)²`.
pub fn relu2(x: &Array) -> Result<Array> {
    square(relu(x)?)
}

/// SwiGLU: `silu(gate) * x`.
pub fn swiglu(gate: &Array, x: &Array) -> Result<Array> {
    silu(gate)?.multiply(x)
}

/// GeGLU (gemma): `gelu_approx(gate) * x`.
pub fn geglu(gate: &Array, x: &Array) -> Result<Array> {
    gelu_approx(gate)?.multiply(x)
}

/// GPT-OSS's clamped SwiGLU (`swiglu_oai`): the gate clipped from above at `limit`, the
/// linear part to `[-limit, limit]` plus one: `(x + 1) * gate * sigmoid(alpha * gate)`.
pub fn clamped_swiglu(gate: &Array, x: &Array, alpha: f32, limit: f32) -> Result<Array> {
    let gate = minimum(gate, sc(limit, gate)?)?;
    let x = clip(x, (sc(-limit, x)?, sc(limit, x)?))?;
    let glu = gate.multiply(sigmoid(sc(alpha, &gate)?.multiply(&gate)?)?)?;
    x.add(sc(1.0, &x)?)?.multiply(glu)
}

/// Phi-3-small's GeGELU over interleaved halves of `x` (`[..., 2 * n]`): the even features
/// `g` clipped from above at `limit`, the odd ones `y` to `[-limit, limit]` (infinities of
/// either kept as they are), then `g * sigmoid(1.702 * g) * (y + 1)`: `[..., n]`.
pub fn gegelu(x: &Array, limit: f32) -> Result<Array> {
    use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
    let pairs = x.reshape(&[&x.shape()[..x.ndim() - 1], &[-1, 2]].concat())?;
    let gate = pairs.try_index((Ellipsis, 0))?;
    let linear = pairs.try_index((Ellipsis, 1))?;
    let keep_inf = |v: &Array, clipped: Array| -> Result<Array> {
        mlx_rs::ops::select(&mlx_rs::ops::is_inf(v)?, v, &clipped)
    };
    let gate = keep_inf(&gate, minimum(&gate, sc(limit, &gate)?)?)?;
    let linear = keep_inf(
        &linear,
        clip(&linear, (sc(-limit, &linear)?, sc(limit, &linear)?))?,
    )?;
    let glu = gate.multiply(sigmoid(sc(1.702, &gate)?.multiply(&gate)?)?)?;
    glu.multiply(linear.add(sc(1.0, &linear)?)?)
}

/// A one-input activation chosen by name (`hidden_act` in configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// silu / swish.
    Silu,
    /// Exact gelu.
    Gelu,
    /// tanh-approximated gelu.
    GeluApprox,
    /// sigmoid-approximated gelu.
    GeluFastApprox,
    /// relu.
    Relu,
    /// relu squared.
    Relu2,
}

impl Activation {
    /// The activation a `hidden_act` / `hidden_activation` name means.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" | "gelu_new_exact" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_approx" | "gelu_tanh" => {
                Activation::GeluApprox
            }
            "gelu_fast" | "gelu_fast_approx" | "quick_gelu" => Activation::GeluFastApprox,
            "relu" => Activation::Relu,
            "relu2" | "relu_squared" => Activation::Relu2,
            _ => return None,
        })
    }

    /// Applies it.
    pub fn apply(self, x: &Array) -> Result<Array> {
        match self {
            Activation::Silu => silu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluApprox => gelu_approx(x),
            Activation::GeluFastApprox => gelu_fast_approx(x),
            Activation::Relu => relu(x),
            Activation::Relu2 => relu2(x),
        }
    }
}

/// A gated activation `f(x, gate)` of a GLU feed-forward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GatedActivation {
    /// `silu(gate) * x`.
    SwiGlu,
    /// `gelu_approx(gate) * x`.
    GeGlu,
    /// `gelu(gate) * x` (exact gelu).
    GeGluExact,
    /// `relu(gate) * x`.
    ReGlu,
    /// GPT-OSS's clamped SwiGLU.
    ClampedSwiGlu {
        /// Sigmoid slope (1.702).
        alpha: f32,
        /// Clamp (7.0).
        limit: f32,
    },
}

impl GatedActivation {
    /// Applies it to the up projection `x` and the gate projection `gate`.
    pub fn apply(self, x: &Array, gate: &Array) -> Result<Array> {
        match self {
            GatedActivation::SwiGlu => swiglu(gate, x),
            GatedActivation::GeGlu => geglu(gate, x),
            GatedActivation::GeGluExact => gelu(gate)?.multiply(x),
            GatedActivation::ReGlu => relu(gate)?.multiply(x),
            GatedActivation::ClampedSwiGlu { alpha, limit } => {
                clamped_swiglu(gate, x, alpha, limit)
            }
        }
    }
}

/// xIELU (Apertus), a learned activation with four scalar parameters as mlx-lm's `XieLU`
/// holds them (`alpha_p`, `alpha_n`, `beta`, `eps`, each `[]`): with `a_p = softplus(alpha_p)`
/// and `a_n = beta + softplus(alpha_n)`, `a_p x² + beta x` where `x > 0`, else
/// `(expm1(min(x, eps)) - x) a_n + beta x`.
#[derive(Debug, Clone, mlx_rs::macros::ModuleParameters)]
pub struct XieLu {
    /// Before the softplus: the positive side's quadratic factor.
    #[param]
    pub alpha_p: mlx_rs::module::Param<Array>,
    /// Before the softplus: the negative side's factor, less `beta`.
    #[param]
    pub alpha_n: mlx_rs::module::Param<Array>,
    /// The linear factor on both sides.
    #[param]
    pub beta: mlx_rs::module::Param<Array>,
    /// The negative side's clamp (a small negative number).
    #[param]
    pub eps: mlx_rs::module::Param<Array>,
}

impl XieLu {
    /// The reference's initial values (`alpha_p_init = alpha_n_init = 0.8`, `beta = 0.5`,
    /// `eps = -1e-6`); a checkpoint sets them all.
    pub fn new() -> Result<Self> {
        let inv_softplus = |v: f64| Array::from_f32((v.exp() - 1.0).ln() as f32);
        Ok(XieLu {
            alpha_p: mlx_rs::module::Param::new(inv_softplus(0.8)),
            alpha_n: mlx_rs::module::Param::new(inv_softplus(0.8 - 0.5)),
            beta: mlx_rs::module::Param::new(Array::from_f32(0.5)),
            eps: mlx_rs::module::Param::new(Array::from_f32(-1e-6)),
        })
    }

    /// Applies it elementwise.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        use mlx_rs::ops::{expm1, logaddexp, select};
        let softplus = |a: &Array| logaddexp(a, sc(0.0, a)?);
        let beta = &*self.beta;
        let alpha_p = softplus(&self.alpha_p)?;
        let alpha_n = beta.add(softplus(&self.alpha_n)?)?;
        let linear = beta.multiply(x)?;
        let positive = alpha_p.multiply(square(x)?)?.add(&linear)?;
        let negative = expm1(minimum(x, &*self.eps)?)?
            .subtract(x)?
            .multiply(&alpha_n)?
            .add(&linear)?;
        select(&x.gt(sc(0.0, x)?)?, &positive, &negative)
    }
}
