//! Mixture-of-experts layers over `gather_mm` / `gather_qmm`, experts stacked as
//! `[experts, out, in]`: [`SwitchLinear`] (dense or quantized), [`SwitchGlu`] and
//! [`SwitchMlp`]. With 64 or more (token, expert) pairs the tokens are sorted by expert first,
//! as mlx-lm's `switch_layers.py` does.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{
    argsort, expand_dims, expand_dims_axes, floor_divide, gather_mm, matmul, unflatten, zeros_dtype,
};
use mlx_rs::{Array, Dtype};

use crate::nn::activations::{Activation, GatedActivation};
use crate::nn::quantized::{
    dequantize, gather_qmm, packed_quantization, quantize_in_place, quantized_linear, Quantization,
    Slot,
};

/// From this many (token, expert) pairs on, tokens are sorted by expert.
pub const SORT_THRESHOLD: usize = 64;

/// One linear layer per expert; each token goes through the experts `indices` picks. Like
/// [`Linear`](crate::nn::quantized::Linear), the quantization is read back from the shapes.
#[derive(Debug, Clone, ModuleParameters)]
pub struct SwitchLinear {
    /// `[experts, out, in]` (packed when quantized).
    #[param]
    pub weight: Param<Array>,
    /// `[experts, out]`.
    #[param]
    pub bias: Param<Option<Array>>,
    /// Quantization scales (empty when dense).
    #[param]
    pub scales: Slot,
    /// Quantization biases (affine; empty otherwise).
    #[param]
    pub biases: Slot,
    input_dims: i32,
}

impl SwitchLinear {
    /// Zero weights (the loader fills them).
    pub fn new(input_dims: i32, output_dims: i32, num_experts: i32, bias: bool) -> Result<Self> {
        let weight = zeros_dtype(&[num_experts, output_dims, input_dims], Dtype::Float32)?;
        let bias = if bias {
            Some(zeros_dtype(&[num_experts, output_dims], Dtype::Float32)?)
        } else {
            None
        };
        Ok(Self::from_weights(weight, bias))
    }

    /// Dense experts with these weights.
    pub fn from_weights(weight: Array, bias: Option<Array>) -> Self {
        let input_dims = weight.shape().last().copied().unwrap_or(0);
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Slot::empty(),
            biases: Slot::empty(),
            input_dims,
        }
    }

    /// Quantized experts with these packed weights.
    pub fn from_quantized(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        bias: Option<Array>,
        q: Quantization,
    ) -> Self {
        let input_dims = weight.shape().last().copied().unwrap_or(0) * 32 / q.bits.max(1);
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Slot::new(Some(scales)),
            biases: Slot::new(biases),
            input_dims,
        }
    }

    /// Quantizes the experts in place (`to_quantized`).
    pub fn quantize(&mut self, q: Quantization) -> Result<()> {
        quantize_in_place(
            &mut self.weight,
            &mut self.scales,
            &mut self.biases,
            q,
            "the experts",
        )
    }

    /// How the experts are quantized (`None`: dense).
    pub fn quantization(&self) -> Result<Option<Quantization>> {
        packed_quantization(self.input_dims, &self.weight, &self.scales, "experts")
    }

    /// `x` (`[..., 1 or k, 1, in]`) through the experts `indices` (`[..., k]`).
    pub fn forward(&self, x: &Array, indices: &Array, sorted_indices: bool) -> Result<Array> {
        let y = match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => gather_qmm(
                x,
                &self.weight,
                scales,
                self.biases.get(),
                None,
                Some(indices),
                true,
                &q,
                sorted_indices,
            )?,
            _ => dense_gather_mm(x, &self.weight, indices, sorted_indices)?,
        };
        match self.bias.value.as_ref() {
            Some(b) => y.add(expand_dims(b.try_index(indices)?, -2)?),
            None => Ok(y),
        }
    }
}

impl SwitchLinear {
    /// Rows `x` (`[n, in]`, float32), all routed to expert `e`, through that expert: `[n, out]`
    /// in float32. Quantized experts are dequantized once for many rows (then one BLAS
    /// product), and multiplied packed for a few.
    fn expert_forward(&self, x: &Array, e: i32) -> Result<Array> {
        let w = self.weight.try_index(e)?;
        let y = match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => {
                let scales = scales.try_index(e)?;
                let biases = self.biases.get().map(|b| b.try_index(e)).transpose()?;
                if x.dim(0) >= DEQUANTIZE_ROWS {
                    let w =
                        dequantize(&w, &scales, biases.as_ref(), &q)?.as_dtype(Dtype::Float32)?;
                    matmul(x, w.t())?
                } else {
                    // Affine scales carry the layer's float type; microscaling ones are bytes.
                    let float_scales = matches!(
                        scales.dtype(),
                        Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32
                    );
                    let x = match float_scales {
                        true => x.as_dtype(scales.dtype())?,
                        false => x.clone(),
                    };
                    quantized_linear(&x, &w, &scales, biases.as_ref(), &q)?
                        .as_dtype(Dtype::Float32)?
                }
            }
            _ => matmul(x, w.as_dtype(Dtype::Float32)?.t())?,
        };
        match self.bias.value.as_ref() {
            Some(b) => y.add(b.try_index(e)?.as_dtype(Dtype::Float32)?),
            None => Ok(y),
        }
    }
}

/// From this many rows of one expert on, quantized experts are dequantized for the product.
const DEQUANTIZE_ROWS: i32 = 16;

/// Whether `indices` route enough (token, expert) pairs that, on the CPU, each expert's rows
/// go through one BLAS product ([`grouped`]): MLX's CPU `gather_mm` / `gather_qmm` compute
/// row by row, about ten times slower for a prompt (measured: 1024 rows over 16 experts of
/// 768 x 1024, 400 ms against 33 ms).
fn groups_on_cpu(indices: &Array) -> bool {
    indices.size() >= SORT_THRESHOLD && crate::nn::quantized::on_cpu()
}

/// `x` (`[..., dims]`) through its experts (`indices`, `[..., k]`) one expert at a time: the
/// (token, expert) pairs sorted by expert, each expert's rows through `f` (float32 in and
/// out), the results put back in order: `[..., k, out]` in `x`'s type.
fn grouped(x: &Array, indices: &Array, f: impl Fn(&Array, i32) -> Result<Array>) -> Result<Array> {
    let k = indices.dim(-1);
    let flat = indices.flatten(None, None)?;
    let order = argsort(&flat)?;
    let inv_order = argsort(&order)?;
    let rows = floor_divide(&order, Array::from_int(k).as_dtype(order.dtype())?)?;
    let xs = x
        .flatten(0, -2)?
        .take_axis(&rows, 0)?
        .as_dtype(Dtype::Float32)?;
    let experts = flat.take_axis(&order, 0)?.as_dtype(Dtype::Int32)?;
    experts.eval()?;
    let experts: &[i32] = experts
        .try_as_slice()
        .map_err(|e| Exception::custom(format!("routed experts: {e}")))?;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < experts.len() {
        let e = experts[start];
        let end = start + experts[start..].iter().take_while(|&&x| x == e).count();
        // Computed now, so that an expert's temporaries (its dequantized matrices) are freed
        // before the next one's: the transient memory is one expert's, not the layer's.
        let part = f(&xs.try_index(start as i32..end as i32)?, e)?;
        part.eval()?;
        parts.push(part);
        start = end;
    }
    let y = mlx_rs::ops::concatenate(&parts, 0)?.take_axis(&inv_order, 0)?;
    let mut shape = indices.shape().to_vec();
    shape.push(y.dim(-1));
    y.reshape(&shape)?.as_dtype(x.dtype())
}

/// `x @ w[indices]ᵀ` for dense experts `w` (`[experts, out, in]`): `gather_mm`.
///
/// MLX's CPU `gather_mm` has float32 kernels only, so on the CPU a float16 or bfloat16
/// product is computed in float32 and cast back: with fewer (token, expert) pairs than experts
/// (decoding) the chosen experts' matrices are taken first and only they are converted;
/// otherwise the whole stack is converted once. GPU kernels take half inputs as they are.
fn dense_gather_mm(x: &Array, w: &Array, indices: &Array, sorted: bool) -> Result<Array> {
    let dtype = w.dtype();
    let half = matches!(dtype, Dtype::Float16 | Dtype::Bfloat16);
    if !half || !crate::nn::quantized::on_cpu() {
        return gather_mm(x, w.swap_axes(-1, -2)?, None, indices, sorted);
    }
    let x32 = x.as_dtype(Dtype::Float32)?;
    let y = if (indices.size() as i32) < w.dim(0) {
        // [..., k, out, in]: the chosen experts only; x broadcasts over k.
        let chosen = w.take_axis(indices, 0)?.as_dtype(Dtype::Float32)?;
        mlx_rs::ops::matmul(&x32, chosen.swap_axes(-1, -2)?)?
    } else {
        let w32 = w.as_dtype(Dtype::Float32)?;
        gather_mm(&x32, w32.swap_axes(-1, -2)?, None, indices, sorted)?
    };
    y.as_dtype(x.dtype())
}

/// Sorts the (token, expert) pairs by expert: the tokens' rows in that order, the sorted
/// expert ids, and the permutation that undoes it (`_gather_sort`).
fn gather_sort(x: &Array, indices: &Array) -> Result<(Array, Array, Array)> {
    let m = indices.dim(-1);
    let flat = indices.flatten(None, None)?;
    let order = argsort(&flat)?;
    let inv_order = argsort(&order)?;
    let rows = floor_divide(&order, Array::from_int(m).as_dtype(order.dtype())?)?;
    let x = x.flatten(0, -3)?.take_axis(&rows, 0)?;
    Ok((x, flat.take_axis(&order, 0)?, inv_order))
}

/// Undoes [`gather_sort`] (`_scatter_unsort`).
fn scatter_unsort(x: &Array, inv_order: &Array, shape: &[i32]) -> Result<Array> {
    let x = x.take_axis(inv_order, 0)?;
    unflatten(&x, 0, shape)
}

/// Runs `f` over the pairs, sorting them by expert first when there are many.
fn routed(
    x: &Array,
    indices: &Array,
    f: impl FnOnce(&Array, &Array, bool) -> Result<Array>,
) -> Result<Array> {
    let x = expand_dims_axes(x, &[-2, -3])?;
    let indices = mlx_rs::stop_gradient(indices)?;
    let do_sort = indices.size() >= SORT_THRESHOLD;
    let y = if do_sort {
        let (xs, idx, inv) = gather_sort(&x, &indices)?;
        let y = f(&xs, &idx, true)?;
        scatter_unsort(&y, &inv, indices.shape())?
    } else {
        f(&x, &indices, false)?
    };
    y.squeeze_axes(&[-2])
}

/// A gated feed-forward per expert: `down(act(up(x), gate(x)))` (`SwitchGLU`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct SwitchGlu {
    /// Gate projections.
    #[param]
    pub gate_proj: SwitchLinear,
    /// Up projections.
    #[param]
    pub up_proj: SwitchLinear,
    /// Down projections.
    #[param]
    pub down_proj: SwitchLinear,
    /// The gated activation (SwiGLU unless a model says otherwise).
    pub activation: GatedActivation,
}

impl SwitchGlu {
    /// Zero weights.
    pub fn new(
        input_dims: i32,
        hidden_dims: i32,
        num_experts: i32,
        activation: GatedActivation,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            gate_proj: SwitchLinear::new(input_dims, hidden_dims, num_experts, bias)?,
            up_proj: SwitchLinear::new(input_dims, hidden_dims, num_experts, bias)?,
            down_proj: SwitchLinear::new(hidden_dims, input_dims, num_experts, bias)?,
            activation,
        })
    }

    /// `x` (`[..., dims]`) through its `k` experts (`indices`, `[..., k]`): `[..., k, dims]`.
    /// On the CPU, with many (token, expert) pairs, one expert at a time through BLAS
    /// (grouped by expert), rounding to `x`'s type where the gathered products would.
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        if groups_on_cpu(indices) {
            // The activation in `x`'s type, as after the gathered products.
            let dtype = x.dtype();
            return grouped(x, indices, |x, e| {
                let up = self.up_proj.expert_forward(x, e)?.as_dtype(dtype)?;
                let gate = self.gate_proj.expert_forward(x, e)?.as_dtype(dtype)?;
                let h = self
                    .activation
                    .apply(&up, &gate)?
                    .as_dtype(Dtype::Float32)?;
                self.down_proj.expert_forward(&h, e)
            });
        }
        routed(x, indices, |x, idx, sorted| {
            let up = self.up_proj.forward(x, idx, sorted)?;
            let gate = self.gate_proj.forward(x, idx, sorted)?;
            self.down_proj
                .forward(&self.activation.apply(&up, &gate)?, idx, sorted)
        })
    }
}

/// A two-layer feed-forward per expert: `fc2(act(fc1(x)))` (`SwitchMLP`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct SwitchMlp {
    /// First layer.
    #[param]
    pub fc1: SwitchLinear,
    /// Second layer.
    #[param]
    pub fc2: SwitchLinear,
    /// The activation (the reference defaults to `nn.GELU(approx="precise")`, which is
    /// [`Activation::GeluApprox`]).
    pub activation: Activation,
}

impl SwitchMlp {
    /// Zero weights.
    pub fn new(
        input_dims: i32,
        hidden_dims: i32,
        num_experts: i32,
        activation: Activation,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            fc1: SwitchLinear::new(input_dims, hidden_dims, num_experts, bias)?,
            fc2: SwitchLinear::new(hidden_dims, input_dims, num_experts, bias)?,
            activation,
        })
    }

    /// `x` (`[..., dims]`) through its `k` experts: `[..., k, dims]`.
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        routed(x, indices, |x, idx, sorted| {
            let h = self.activation.apply(&self.fc1.forward(x, idx, sorted)?)?;
            self.fc2.forward(&h, idx, sorted)
        })
    }
}
