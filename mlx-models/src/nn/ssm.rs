//! What the state-space families share (mamba, mamba2, nemotron_h, granitemoehybrid,
//! falcon_h1, plamo2, and the short convolutions of lfm2 and qwen3_next):
//!
//! - [`DepthwiseConv1d`]: the causal depthwise convolution over the sequence whose last
//!   `kernel - 1` inputs are the layer's conv state, kept in an [`ArraysCache`] slot;
//! - [`conv1d_weights_to_mlx`]: Hugging Face's `[C, 1, K]` conv weights turned into MLX's
//!   `[C, K, 1]`, as the reference's sanitize does (idempotently);
//! - [`RmsNormGated`]: Mamba2's gated RMSNorm (`swiglu(gate, x)` then the norm, whole or in
//!   groups, or the norm then the gate);
//! - [`Mamba2Mixer`] ([`Mamba2Config`]): the whole Mamba2 mixer as the Mamba2 families name
//!   it (`in_proj`, `conv1d`, `dt_bias`, `A_log`, `D`, `norm`, `out_proj`);
//! - [`ssd`]: the Mamba2 state-space dual (SSD) scan after mlx-lm's `ssm.py`, in chunks of 256
//!   positions for a prompt and as one recurrence step for a decoded token;
//! - [`selective_scan`]: Mamba's selective scan, one recurrence step per position, as mlx-lm's
//!   `mamba.py` steps it.
//!
//! The reference's Metal kernels do not exist on the CPU; its ops paths are what it runs there,
//! and what these follow. Both scans carry a padding mask (`[B, L]`, false on a left-padded
//! position): a masked position leaves the state unchanged and its inputs are zeroed before
//! the convolution, so a left-padded row ends in the state it would have alone.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{take_along_axis, IndexOp, NewAxis, TryIndexOp};
use mlx_rs::ops::{
    arange, clip, concatenate, conv1d, cumsum, exp, expand_dims, expand_dims_axes, logaddexp,
    matmul, maximum, minimum, ones_dtype, pad, repeat_axis, select, split_at_indices, stack,
    swap_axes, tril, unflatten, zeros_dtype, PadMode,
};
use mlx_rs::{fast, Array, Dtype};

use crate::args::{ArgsError, ConfigValue, Cx};
use crate::cache::{ArraysCache, Cache};
use crate::nn::activations::swiglu;
use crate::nn::quantized::Linear;
use crate::weights::Weights;

/// The positions of one chunk of the SSD scan (the reference's `step`).
pub const SSD_CHUNK: i32 = 256;

fn scalar(v: f32, like: &Array) -> Result<Array> {
    Array::from_f32(v).as_dtype(like.dtype())
}

/// `log(1 + exp(x))`, in `x`'s type (`mlx.nn.softplus`).
pub fn softplus(x: &Array) -> Result<Array> {
    logaddexp(x, scalar(0.0, x)?)
}

/// The causal depthwise convolution of the recurrent families (`conv1d` in their
/// checkpoints): one filter of `kernel` taps per channel, `weight` `[channels, kernel, 1]` as
/// MLX stores it, an optional `bias` `[channels]`.
#[derive(Debug, Clone, ModuleParameters)]
pub struct DepthwiseConv1d {
    /// `[channels, kernel, 1]`.
    #[param]
    pub weight: Param<Array>,
    /// `[channels]`, when the checkpoint has one.
    #[param]
    pub bias: Param<Option<Array>>,
    channels: i32,
    kernel: i32,
}

impl DepthwiseConv1d {
    /// Zero filters of `kernel` taps over `channels` channels.
    pub fn new(channels: i32, kernel: i32, bias: bool) -> Result<Self> {
        if channels < 1 || kernel < 1 {
            return Err(Exception::custom(format!(
                "a depthwise convolution needs channels and a kernel of at least 1 (got {channels} channels, kernel {kernel})"
            )));
        }
        Ok(Self {
            weight: Param::new(zeros_dtype(&[channels, kernel, 1], Dtype::Float32)?),
            bias: Param::new(
                bias.then(|| zeros_dtype(&[channels], Dtype::Float32))
                    .transpose()?,
            ),
            channels,
            kernel,
        })
    }

    /// The taps of each filter.
    pub fn kernel(&self) -> i32 {
        self.kernel
    }

    /// `x` `[B, L, C]` to the convolution's output `[B, L, C]` (no activation), each position
    /// seeing itself and the `kernel - 1` before it. `mask` (`[B, L]`) zeroes padded inputs.
    /// Without `cache` the sequence starts from zeros; with it, slot `slot` holds the previous
    /// `kernel - 1` inputs (zeros at first) and receives the last `kernel - 1` of this call (of
    /// each row's valid part when the cache has `lengths`).
    pub fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        cache: Option<&mut ArraysCache>,
        slot: usize,
    ) -> Result<Array> {
        let x = match mask {
            Some(m) => select(m.index((.., .., NewAxis)), x, scalar(0.0, x)?)?,
            None => x.clone(),
        };
        let keep = self.kernel - 1;
        let padded = match cache {
            Some(cache) => {
                let b = x.shape()[0];
                let state = match cache.get(slot) {
                    Some(s) => s.clone(),
                    None => zeros_dtype(&[b, keep, self.channels], x.dtype())?,
                };
                let padded = concatenate(&[state, x], 1)?;
                let t = padded.shape()[1];
                let next = match &cache.lengths {
                    Some(lengths) => {
                        let ends = clip(lengths, (0, t - keep))?;
                        let pos = ends
                            .index((.., NewAxis))
                            .add(arange::<_, i32>(0, keep, None)?)?;
                        take_along_axis(&padded, pos.index((.., .., NewAxis)), 1)?
                    }
                    None => padded.try_index((.., (t - keep).., ..))?,
                };
                cache.set(slot, next);
                padded
            }
            None => pad(
                &x,
                &[(0, 0), (keep, 0), (0, 0)][..],
                None::<Array>,
                None::<PadMode>,
            )?,
        };
        let y = conv1d(&padded, &*self.weight, 1, 0, 1, self.channels)?;
        match self.bias.as_ref() {
            Some(bias) => y.add(bias),
            None => Ok(y),
        }
    }
}

/// The arrays cache of layer `i` of a model's caches: `None` without caches (a forward
/// without a cache), an error when that layer's cache is of another kind.
pub fn layer_arrays(cache: &mut [Cache], i: usize) -> Result<Option<&mut ArraysCache>> {
    let n = cache.len();
    if n == 0 {
        return Ok(None);
    }
    match cache.get_mut(i) {
        Some(Cache::Arrays(c)) => Ok(Some(c)),
        Some(other) => Err(Exception::custom(format!(
            "layer {i} keeps recurrent state and needs an ArraysCache, not a {}",
            other.class_name()
        ))),
        None => Err(Exception::custom(format!(
            "no cache for layer {i} ({n} caches given)"
        ))),
    }
}

/// Hugging Face stores the depthwise filters as `[C, 1, K]` (PyTorch's layout); MLX's are
/// `[C, K, 1]`. Every `*conv1d.weight` whose last axis is not 1 is turned, as the reference's
/// sanitize does, so converted weights pass unchanged.
pub fn conv1d_weights_to_mlx(weights: &mut Weights) -> Result<()> {
    depthwise_weights_to_mlx(weights, "conv1d.weight")
}

/// [`conv1d_weights_to_mlx`] for the depthwise filters whose keys end in `suffix` (lfm2's
/// `conv.conv.weight`).
pub fn depthwise_weights_to_mlx(weights: &mut Weights, suffix: &str) -> Result<()> {
    for (key, value) in weights.iter_mut() {
        if key.ends_with(suffix)
            && value.ndim() == 3
            && value.shape().last().is_some_and(|&k| k != 1)
        {
            *value = swap_axes(&*value, 1, 2)?;
        }
    }
    Ok(())
}

/// Mamba2's gated RMSNorm (`MambaRMSNormGated`): `swiglu(gate, x)`, then the RMS norm over
/// the whole width with `weight` inside the fused norm, or, with `group_size`, over each
/// group of that many features without a weight and times `weight` after (nemotron_h's
/// form). With [`norm_before_gate`](Self::norm_before_gate) the norm comes first and the
/// gate after (falcon_h1's `mamba_norm_before_gate`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct RmsNormGated {
    /// `[dims]`.
    #[param]
    pub weight: Param<Array>,
    eps: f32,
    group_size: Option<i32>,
    norm_before_gate: bool,
}

impl RmsNormGated {
    /// Weights of one over `dims` features, normalised as one group or in groups of
    /// `group_size` (which must divide `dims`).
    pub fn new(dims: i32, eps: f32, group_size: Option<i32>) -> Result<Self> {
        if let Some(g) = group_size {
            if g < 1 || dims % g != 0 {
                return Err(Exception::custom(format!(
                    "the gated norm's group size {g} does not divide its {dims} features"
                )));
            }
        }
        Ok(Self {
            weight: Param::new(ones_dtype(&[dims], Dtype::Float32)?),
            eps,
            group_size,
            norm_before_gate: false,
        })
    }

    /// The same norm applied before the gate: `swiglu(gate, norm(x))`.
    pub fn norm_before_gate(mut self, before: bool) -> Self {
        self.norm_before_gate = before;
        self
    }

    /// Normalises `x`, gated by `gate` when given.
    pub fn forward(&self, x: &Array, gate: Option<&Array>) -> Result<Array> {
        match gate {
            Some(g) if self.norm_before_gate => swiglu(g, &self.norm(x)?),
            Some(g) => self.norm(&swiglu(g, x)?),
            None => self.norm(x),
        }
    }

    fn norm(&self, x: &Array) -> Result<Array> {
        match self.group_size {
            None => fast::rms_norm(x, Some(&*self.weight), self.eps),
            Some(g) => {
                let grouped = unflatten(x, -1, &[-1, g])?;
                let normed = fast::rms_norm(&grouped, None::<&Array>, self.eps)?;
                let n = normed.ndim() as i32;
                self.weight.multiply(normed.flatten(n - 2, n - 1)?)
            }
        }
    }
}

/// `time_step_limit` of a Mamba2 config: `[min, max]` bounds of the time step after its
/// softplus. The maximum may be infinite (transformers writes `{"__float__": "Infinity"}`, its
/// default); NaN, a negative minimum or a minimum above the maximum are refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeStepLimit(pub f32, pub f32);

impl Default for TimeStepLimit {
    /// transformers' default, `(0.0, inf)`.
    fn default() -> Self {
        TimeStepLimit(0.0, f32::INFINITY)
    }
}

impl ConfigValue for TimeStepLimit {
    fn expected() -> String {
        "a [min, max] pair of numbers with 0 <= min <= max".to_owned()
    }
    fn from_config_value(
        value: &serde_json::Value,
        _cx: &mut Cx,
        path: &str,
    ) -> std::result::Result<Self, ArgsError> {
        let pair = value.as_array().filter(|a| a.len() == 2).and_then(|a| {
            let lo = crate::args::value::read_f64(&a[0])?;
            let hi = crate::args::value::read_f64(&a[1])?;
            (lo.is_finite() && lo >= 0.0 && !hi.is_nan() && lo <= hi)
                .then_some(TimeStepLimit(lo as f32, hi as f32))
        });
        pair.ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
    }
    fn to_config_value(&self) -> serde_json::Value {
        serde_json::Value::Array(vec![
            crate::args::value::write_f64(f64::from(self.0)),
            crate::args::value::write_f64(f64::from(self.1)),
        ])
    }
}

/// The parameters of a Mamba2 mixer that the scan reads.
#[derive(Debug, Clone, Copy)]
pub struct SsdParams<'a> {
    /// `[H]`: the state decay is `-exp(a_log)` per unit of time.
    pub a_log: &'a Array,
    /// `[H]`: the skip connection `y += x * d`.
    pub d: &'a Array,
    /// `[H]`: added to the time step before the softplus.
    pub dt_bias: &'a Array,
    /// The time step is clipped to `[min, max]` after the softplus.
    pub time_step_limit: TimeStepLimit,
}

/// `softplus(dt + dt_bias)` in float32, clipped to the limits (`compute_dt`).
fn time_step(dt: &Array, p: &SsdParams) -> Result<Array> {
    let dt = softplus(&dt.as_dtype(Dtype::Float32)?.add(p.dt_bias)?)?;
    let TimeStepLimit(lo, hi) = p.time_step_limit;
    clip(&dt, (lo, hi))
}

/// `segsum` of the reference: `[..., L]` to `[..., L, L]` whose `[i, j]` is the sum of
/// `x[j+1..=i]` below the diagonal (and 0 on it); with a mask `[B, L]`, masked terms count as
/// zero and masked rows or columns are `-inf`.
fn segsum(x: &Array, mask: Option<&Array>) -> Result<Array> {
    let l = *x.shape().last().unwrap_or(&1);
    let x = match mask {
        Some(m) => x.multiply(expand_dims(m, 1)?)?,
        None => x.clone(),
    };
    let x = repeat_axis::<f32>(x.index((.., .., .., NewAxis)), l, -1)?;
    let sums = cumsum(tril(&x, -1)?, -2, None, None)?;
    match mask {
        Some(m) => {
            let m = expand_dims(m, 1)?;
            let both =
                m.index((.., .., NewAxis, ..))
                    .logical_and(m.index((.., .., .., NewAxis)))?;
            select(&both, &sums, Array::from_f32(f32::NEG_INFINITY))
        }
        None => Ok(sums),
    }
}

/// The Mamba2 state-space scan (the reference's `ssm_update` on the CPU).
///
/// `x` `[B, L, H, Dh]`, `b` and `c` `[B, L, G, N]` (G groups of heads), `dt` `[B, L, H]`,
/// `state` `[B, H, Dh, N]` (float32; `None`: zeros), `mask` `[B, L]`, `lengths` `[B]` (each
/// row's valid positions, as a batch cache prepares them). Returns `y` `[B, L, H, Dh]` in
/// `x`'s type and the state after the last (valid) position.
///
/// A prompt runs the reference's chunked SSD form, [`SSD_CHUNK`] positions at a time, in its
/// order of operations; one position with a state runs the recurrence directly
/// (`state = exp(dt A) state + dt x B`, `y = state C + D x`), which is what the reference's
/// GPU kernel computes.
#[allow(clippy::too_many_arguments)]
pub fn ssd(
    x: &Array,
    b: &Array,
    c: &Array,
    dt: &Array,
    p: &SsdParams,
    state: Option<&Array>,
    mask: Option<&Array>,
    lengths: Option<&Array>,
) -> Result<(Array, Array)> {
    let (l, h) = (x.shape()[1], x.shape()[2]);
    let g = b.shape()[2];
    if g < 1 || h % g != 0 {
        return Err(Exception::custom(format!(
            "the SSD scan's {h} heads do not split into {g} groups"
        )));
    }
    let dt = time_step(dt, p)?;
    // `-exp(A_log)`, the exponential in the parameter's own type as the reference takes it.
    let a = exp(p.a_log)?.as_dtype(dt.dtype())?.negative()?;
    if l == 1 && lengths.is_none() {
        if let Some(state) = state {
            return ssd_step(x, b, c, &dt, &a, p.d, state, mask);
        }
    }
    let mut dt_a = dt.multiply(a.reshape(&[1, 1, -1])?)?;
    if let Some(m) = mask {
        dt_a = dt_a.multiply(m.index((.., .., NewAxis)))?;
    }
    let dtx = dt.index((.., .., .., NewAxis)).multiply(x)?;

    let mut ys = Vec::new();
    let mut state = state.cloned();
    let mut lengths = lengths.cloned();
    let mut start = 0;
    while start < l {
        let end = (start + SSD_CHUNK).min(l);
        let seq = |t: &Array| t.try_index((.., start..end));
        let chunk_mask = mask.map(|m| m.try_index((.., start..end))).transpose()?;
        let (y, next) = ssd_chunk(
            &seq(&dtx)?,
            &seq(&dt_a)?,
            &seq(b)?,
            &seq(c)?,
            state.as_ref(),
            chunk_mask.as_ref(),
            lengths.as_ref(),
            x.dtype(),
        )?;
        ys.push(y);
        state = Some(next);
        if let Some(len) = &mut lengths {
            *len = len.subtract(Array::from_int(SSD_CHUNK))?;
        }
        start = end;
    }
    let y = concatenate(&ys, 1)?.add(x.multiply(p.d.reshape(&[1, 1, h, 1])?)?)?;
    let state = state.ok_or_else(|| Exception::custom("the SSD scan got no positions"))?;
    Ok((y, state))
}

/// One chunk of the SSD scan (`_step` of the reference's `ssm_attn`).
#[allow(clippy::too_many_arguments)]
fn ssd_chunk(
    dtx: &Array,
    dt_a: &Array,
    b: &Array,
    c: &Array,
    state: Option<&Array>,
    mask: Option<&Array>,
    lengths: Option<&Array>,
    out_dtype: Dtype,
) -> Result<(Array, Array)> {
    let (batch, s, h, dh) = (
        dtx.shape()[0],
        dtx.shape()[1],
        dtx.shape()[2],
        dtx.shape()[3],
    );
    let (g, n) = (b.shape()[2], b.shape()[3]);
    let repeats = h / g;
    // [B, G, N, S]
    let bt = b.transpose_axes(&[0, 2, 3, 1])?;
    let cb = matmul(swap_axes(c, 1, 2)?, &bt)?;
    let cb = repeat_axis::<f32>(cb, repeats, 1)?;
    let decay = exp(segsum(&swap_axes(dt_a, 1, 2)?, mask)?)?;
    let attention = tril(cb.multiply(&decay)?, 0)?;
    let mut y = swap_axes(matmul(&attention, swap_axes(dtx, 1, 2)?)?, 1, 2)?;

    // The decay from each position to the chunk's end (to each row's last valid position).
    let last = match lengths {
        Some(len) => {
            let pos = maximum(
                minimum(len, Array::from_int(SSD_CHUNK))?.subtract(Array::from_int(1))?,
                Array::from_int(0),
            )?;
            take_along_axis(&decay, expand_dims_axes(&pos, &[1, 2, 3])?, 2)?
        }
        None => decay.try_index((.., .., (s - 1).., ..))?,
    };
    let last = last.transpose_axes(&[0, 3, 1, 2])?;
    let b_heads = swap_axes(repeat_axis::<f32>(bt, repeats, 1)?, 2, 3)?;
    let weighted = swap_axes(swap_axes(dtx.multiply(&last)?, 1, 2)?, 2, 3)?;
    let mut next = matmul(&weighted, &b_heads)?;

    if let Some(state) = state {
        let growth = exp(cumsum(dt_a, -2, None, None)?)?;
        let to_end = growth.try_index((.., -1, .., NewAxis, NewAxis))?;
        next = next.add(to_end.multiply(state)?)?;
        // What the carried state contributes at each position, `state C`: one product per
        // group, [S, N] x [N, heads of the group x Dh] (the reference broadcasts the state over
        // the positions instead, a copy of S states).
        let c_groups = c.transpose_axes(&[0, 2, 1, 3])?;
        let states = swap_axes(state.reshape(&[batch, g, repeats * dh, n])?, 2, 3)?;
        let y_prev = matmul(&c_groups, &states)?
            .reshape(&[batch, g, s, repeats, dh])?
            .transpose_axes(&[0, 2, 1, 3, 4])?
            .reshape(&[batch, s, h, dh])?;
        y = y.add(growth.index((.., .., .., NewAxis)).multiply(&y_prev)?)?;
        if let Some(len) = lengths {
            let done = expand_dims_axes(len.lt(Array::from_int(0))?, &[1, 2, 3])?;
            next = select(&done, state, &next)?;
        }
    }
    Ok((y.as_dtype(out_dtype)?, next))
}

/// One position of the SSD scan with a state: the recurrence itself, `y = (C.B) dt x +
/// exp(dt A) (state C)` and `state = exp(dt A) state + dt x B`, each term rounded as the
/// reference's chunked form rounds it for one position (`C.B` in the input's type, the rest in
/// float32), so that half-precision decoding picks the reference's tokens.
#[allow(clippy::too_many_arguments)]
fn ssd_step(
    x: &Array,
    b: &Array,
    c: &Array,
    dt: &Array,
    a: &Array,
    d: &Array,
    state: &Array,
    mask: Option<&Array>,
) -> Result<(Array, Array)> {
    let (batch, h, dh) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let g = b.shape()[2];
    let repeats = h / g;
    // [B, H]
    let mut dt = dt.try_index((.., 0))?;
    if let Some(m) = mask {
        dt = dt.multiply(m.try_index((.., 0..1))?)?;
    }
    let decay = exp(dt.multiply(a)?)?;
    let dtx = dt
        .index((.., .., NewAxis))
        .multiply(x.try_index((.., 0))?)?; // [B, H, Dh]
    let (b1, c1) = (b.try_index((.., 0))?, c.try_index((.., 0))?); // [B, G, N]
    let cb = matmul(
        c1.index((.., .., NewAxis, ..)),
        b1.index((.., .., .., NewAxis)),
    )?;
    let cb = repeat_axis::<f32>(cb.reshape(&[batch, g, 1])?, repeats, 1)?; // [B, H, 1]
    let b_heads = repeat_axis::<f32>(b1, repeats, 1)?; // [B, H, N]
    let c_heads = repeat_axis::<f32>(c1, repeats, 1)?;
    let y_prev = matmul(state, c_heads.index((.., .., .., NewAxis)))?.reshape(&[batch, h, dh])?;
    let y = cb
        .multiply(&dtx)?
        .add(decay.index((.., .., NewAxis)).multiply(&y_prev)?)?;
    let next = dtx
        .index((.., .., .., NewAxis))
        .multiply(b_heads.index((.., .., NewAxis, ..)))?
        .add(decay.index((.., .., NewAxis, NewAxis)).multiply(state)?)?;
    let y = y.reshape(&[batch, 1, h, dh])?.as_dtype(x.dtype())?;
    Ok((y.add(x.multiply(d.reshape(&[1, 1, h, 1])?)?)?, next))
}

/// The shape and options of a [`Mamba2Mixer`]. [`Mamba2Config::new`] gives mamba2's: no
/// projection biases, a conv bias, the gated norm over the whole width, the time step
/// unbounded; the other methods change one option each.
#[derive(Debug, Clone, PartialEq)]
pub struct Mamba2Config {
    /// Width of the residual stream (input of `in_proj`, output of `out_proj`).
    pub hidden_size: i32,
    /// SSM heads.
    pub num_heads: i32,
    /// Width of one head.
    pub head_dim: i32,
    /// Groups of heads that share `B` and `C` (divides `num_heads`).
    pub n_groups: i32,
    /// Width of the SSM state.
    pub state_size: i32,
    /// Taps of the causal convolution.
    pub conv_kernel: i32,
    /// A bias on the convolution.
    pub conv_bias: bool,
    /// A bias on `in_proj`.
    pub in_proj_bias: bool,
    /// A bias on `out_proj`.
    pub out_proj_bias: bool,
    /// The gated norm before `out_proj` (its epsilon, its group size, whether it comes before
    /// the gate); `None`: no norm, the output only gated (`swiglu(gate, y)`).
    pub norm: Option<(f32, Option<i32>, bool)>,
    /// Bounds of the time step after its softplus.
    pub time_step_limit: TimeStepLimit,
}

impl Mamba2Config {
    /// `num_heads` heads of `head_dim` over a residual stream of `hidden_size`, `n_groups`
    /// groups of `B` and `C` of width `state_size`, a convolution of `conv_kernel` taps; the
    /// gated norm over the whole width with epsilon `eps`.
    pub fn new(
        hidden_size: usize,
        num_heads: usize,
        head_dim: usize,
        n_groups: usize,
        state_size: usize,
        conv_kernel: usize,
        eps: f32,
    ) -> Self {
        Mamba2Config {
            hidden_size: hidden_size as i32,
            num_heads: num_heads as i32,
            head_dim: head_dim as i32,
            n_groups: n_groups as i32,
            state_size: state_size as i32,
            conv_kernel: conv_kernel as i32,
            conv_bias: true,
            in_proj_bias: false,
            out_proj_bias: false,
            norm: Some((eps, None, false)),
            time_step_limit: TimeStepLimit::default(),
        }
    }

    /// Biases on `in_proj` and `out_proj`.
    pub fn proj_bias(mut self, in_proj: bool, out_proj: bool) -> Self {
        self.in_proj_bias = in_proj;
        self.out_proj_bias = out_proj;
        self
    }

    /// A bias on the convolution, or none.
    pub fn conv_bias(mut self, bias: bool) -> Self {
        self.conv_bias = bias;
        self
    }

    /// The gated norm in groups of `group_size` features (nemotron_h's `intermediate /
    /// n_groups`).
    pub fn norm_groups(mut self, group_size: i32) -> Self {
        if let Some(norm) = &mut self.norm {
            norm.1 = Some(group_size);
        }
        self
    }

    /// The gated norm with epsilon `eps`, applied before the gate when `before_gate`
    /// (falcon_h1's `mamba_rms_norm` and `mamba_norm_before_gate`), or no norm at all.
    pub fn norm(mut self, norm: Option<(f32, bool)>) -> Self {
        self.norm = norm.map(|(eps, before_gate)| (eps, None, before_gate));
        self
    }

    /// Bounds of the time step.
    pub fn time_step_limit(mut self, limit: TimeStepLimit) -> Self {
        self.time_step_limit = limit;
        self
    }

    /// `num_heads * head_dim`: the width of the SSM's `x`, of the gate and of `out_proj`'s
    /// input.
    pub fn inner(&self) -> i32 {
        self.num_heads * self.head_dim
    }

    /// `inner + 2 * n_groups * state_size`: the convolution's channels (`x`, `B`, `C`).
    pub fn conv_dim(&self) -> i32 {
        self.inner() + 2 * self.n_groups * self.state_size
    }
}

/// Checks a Mamba2 mixer's sizes as a config gives them, for the args' hooks: `heads` a
/// multiple of `groups`, and the input projection (`2 * heads * head_dim + 2 * groups * state
/// + heads` wide) within MLX's size limit. `keys` are the config's names of the four, in that
/// order.
pub fn check_mamba2(
    keys: [&str; 4],
    heads: usize,
    head_dim: usize,
    groups: usize,
    state: usize,
) -> std::result::Result<(), ArgsError> {
    if groups == 0 || !heads.is_multiple_of(groups) {
        let msg = format!(
            "`{}` ({heads}) is not a multiple of `{}` ({groups})",
            keys[0], keys[2]
        );
        return Err(ArgsError::invalid(&[keys[0], keys[2]], msg));
    }
    let width = heads.checked_mul(head_dim).and_then(|inner| {
        let bc = groups.checked_mul(state)?.checked_mul(2)?;
        inner.checked_mul(2)?.checked_add(bc)?.checked_add(heads)
    });
    crate::nn::transformer::check_width(&keys, "the Mamba2 mixer's input projection", width)
}

/// The Mamba2 mixer of mamba2, nemotron_h, granitemoehybrid and falcon_h1, in their
/// checkpoints' names: `in_proj` gives the gate, the convolution's input and a time step per
/// head; the causal [`DepthwiseConv1d`] (its state in slot 0 of the layer's
/// [`ArraysCache`]) and a SiLU give the SSM's `x`, `B` and `C`; the [`ssd`] scan (its state in
/// slot 1); then the gated norm (or the gate alone) and `out_proj`.
#[allow(non_snake_case)]
#[derive(Debug, Clone, ModuleParameters)]
pub struct Mamba2Mixer {
    /// `[inner + conv_dim + heads, hidden]`.
    #[param]
    pub in_proj: Linear,
    /// The causal convolution over `x`, `B` and `C`.
    #[param]
    pub conv1d: DepthwiseConv1d,
    /// `[heads]`: added to the time step before its softplus.
    #[param]
    pub dt_bias: Param<Array>,
    /// `[heads]`: the state decays by `exp(-exp(A_log) dt)` per step.
    #[param]
    pub A_log: Param<Array>,
    /// `[heads]`: the skip connection.
    #[param]
    pub D: Param<Array>,
    /// The gated norm, when the mixer has one.
    #[param]
    pub norm: Option<RmsNormGated>,
    /// `[hidden, inner]`.
    #[param]
    pub out_proj: Linear,
    config: Mamba2Config,
}

impl Mamba2Mixer {
    /// The mixer `config` describes, with the reference's initial values (`A_log` =
    /// `log(1..=heads)`, `dt_bias` and `D` ones).
    pub fn new(config: &Mamba2Config) -> Result<Self> {
        let c = config;
        if c.n_groups < 1 || c.num_heads % c.n_groups != 0 {
            return Err(Exception::custom(format!(
                "a Mamba2 mixer's {} heads do not split into {} groups",
                c.num_heads, c.n_groups
            )));
        }
        let (heads, inner, conv_dim) = (c.num_heads, c.inner(), c.conv_dim());
        let norm = c
            .norm
            .map(|(eps, groups, before)| {
                RmsNormGated::new(inner, eps, groups).map(|n| n.norm_before_gate(before))
            })
            .transpose()?;
        let steps = Array::from_iter(1..=heads, &[heads]).as_dtype(Dtype::Float32)?;
        Ok(Mamba2Mixer {
            in_proj: Linear::new(c.hidden_size, inner + conv_dim + heads, c.in_proj_bias)?,
            conv1d: DepthwiseConv1d::new(conv_dim, c.conv_kernel, c.conv_bias)?,
            dt_bias: Param::new(ones_dtype(&[heads], Dtype::Float32)?),
            A_log: Param::new(mlx_rs::ops::log(&steps)?),
            D: Param::new(ones_dtype(&[heads], Dtype::Float32)?),
            norm,
            out_proj: Linear::new(inner, c.hidden_size, c.out_proj_bias)?,
            config: c.clone(),
        })
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`. `mask` (`[B, L]`, the layer's SSM mask) keeps
    /// padded positions out of the state; with `cache`, the conv and SSM states continue from
    /// and are written back to its two slots, and the cache advances by `L`.
    pub fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let c = &self.config;
        let (b, l) = (x.dim(0), x.dim(1));
        let (inner, conv_dim) = (c.inner(), c.conv_dim());
        let parts = split_at_indices(self.in_proj.forward(x)?, &[inner, inner + conv_dim], -1)?;
        let (gate, conv_input, dt) = (&parts[0], &parts[1], &parts[2]);
        let conv = self
            .conv1d
            .forward(conv_input, mask, cache.as_deref_mut(), 0)?;
        let conv = crate::nn::activations::silu(&conv)?;
        let bc = c.n_groups * c.state_size;
        let parts = split_at_indices(&conv, &[inner, inner + bc], -1)?;
        let xs = parts[0].reshape(&[b, l, c.num_heads, c.head_dim])?;
        let bs = parts[1].reshape(&[b, l, c.n_groups, c.state_size])?;
        let cs = parts[2].reshape(&[b, l, c.n_groups, c.state_size])?;
        let params = SsdParams {
            a_log: &self.A_log,
            d: &self.D,
            dt_bias: &self.dt_bias,
            time_step_limit: c.time_step_limit,
        };
        let state = cache.as_ref().and_then(|c| c.get(1));
        let lengths = cache.as_ref().and_then(|c| c.lengths.as_ref());
        let (y, state) = ssd(&xs, &bs, &cs, dt, &params, state, mask, lengths)?;
        if let Some(cache) = cache {
            cache.set(1, state);
            cache.advance(l)?;
        }
        let y = y.reshape(&[b, l, inner])?;
        let y = match &self.norm {
            Some(norm) => norm.forward(&y, Some(gate))?,
            None => swiglu(gate, &y)?,
        };
        self.out_proj.forward(&y)
    }
}

/// Mamba's selective scan (the recurrence of mlx-lm's `MambaBlock.ssm_step`), one step per
/// position: `state = exp(delta A) state + (delta x) B`, `y = state C + D x`.
///
/// `x` and `delta` `[B, L, Di]` (delta after its softplus), `a` `[Di, N]` (already
/// `-exp(A_log)`), `b` and `c` `[B, L, N]`, `d` `[Di]`, `state` `[B, Di, N]`, `mask` `[B, L]`
/// (a masked position keeps the state). Returns `y` `[B, L, Di]` and the last state.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    x: &Array,
    delta: &Array,
    a: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    state: Option<&Array>,
    mask: Option<&Array>,
) -> Result<(Array, Option<Array>)> {
    let l = x.shape()[1];
    let delta = match mask {
        Some(m) => select(m.index((.., .., NewAxis)), delta, scalar(0.0, delta)?)?,
        None => delta.clone(),
    };
    let mut state = state.cloned();
    let mut ys = Vec::with_capacity(l as usize);
    for t in 0..l {
        let at = |v: &Array| v.try_index((.., t));
        let (x_t, delta_t) = (at(x)?, at(&delta)?);
        let (b_t, c_t) = (at(b)?, at(c)?);
        let mut next = delta_t
            .multiply(&x_t)?
            .index((.., .., NewAxis))
            .multiply(b_t.index((.., NewAxis, ..)))?;
        if let Some(s) = &state {
            let decay = exp(delta_t.index((.., .., NewAxis)).multiply(a)?)?;
            next = next.add(s.multiply(&decay)?)?;
        }
        let y = matmul(&next, c_t.index((.., .., NewAxis)))?.squeeze_axes(&[2])?;
        ys.push(y.add(d.multiply(&x_t)?)?);
        state = Some(next);
    }
    Ok((stack(&ys, 1)?, state))
}

/// A mixer of an attention-free state-space stack: `[B, L, dim]` to `[B, L, dim]`, under the
/// stack's SSM mask, reading and writing its layer's arrays cache.
pub trait StateMixer: mlx_rs::module::ModuleParameters {
    /// Applies the mixer.
    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        cache: Option<&mut ArraysCache>,
    ) -> Result<Array>;
}

impl StateMixer for Mamba2Mixer {
    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        Mamba2Mixer::forward(self, x, mask, cache)
    }
}

/// One layer of mamba's and mamba2's stacks: `x + mixer(norm(x))`.
#[derive(Debug, ModuleParameters)]
pub struct ResidualBlock<M: StateMixer> {
    /// The mixer.
    #[param]
    pub mixer: M,
    /// The norm before it.
    #[param]
    pub norm: crate::nn::norm::RmsNorm,
}

/// The `backbone` of mamba and mamba2 checkpoints (their names): embeddings, residual
/// blocks of state-space mixers, a final RMS norm. Every layer's cache is an arrays cache of
/// two slots (conv state, SSM state).
#[derive(Debug, ModuleParameters)]
pub struct Backbone<M: StateMixer> {
    /// `[vocab, dim]`; also the head of a tied model.
    #[param]
    pub embeddings: crate::nn::quantized::Embedding,
    /// The layers.
    #[param]
    pub layers: Vec<ResidualBlock<M>>,
    /// The final norm.
    #[param]
    pub norm_f: crate::nn::norm::RmsNorm,
}

impl<M: StateMixer> Backbone<M> {
    /// Embeddings of `vocab` tokens of width `dim`, a block around each mixer (its norm's
    /// epsilon `block_eps`), and the final norm (`final_eps`).
    pub fn new(
        vocab: usize,
        dim: usize,
        mixers: Vec<M>,
        block_eps: f32,
        final_eps: f32,
    ) -> Result<Self> {
        let dim = dim as i32;
        let layers = mixers
            .into_iter()
            .map(|mixer| {
                Ok(ResidualBlock {
                    mixer,
                    norm: crate::nn::norm::RmsNorm::new(dim, block_eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Backbone {
            embeddings: crate::nn::quantized::Embedding::new(vocab as i32, dim)?,
            layers,
            norm_f: crate::nn::norm::RmsNorm::new(dim, final_eps)?,
        })
    }

    /// Token ids `[B, L]` to the final norm's output `[B, L, dim]`, reading and extending
    /// `cache` (one arrays cache per layer, or none).
    pub fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let mut h = self.embeddings.forward(inputs)?;
        let mask = crate::cache::create_ssm_mask(inputs.dim(1), cache.first())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = layer_arrays(cache, i)?;
            let r = layer
                .mixer
                .forward(&layer.norm.forward(&h)?, mask.as_ref(), c)?;
            h = r.add(&h)?;
        }
        self.norm_f.forward(&h)
    }

    /// Logits through `lm_head`, or the embeddings when the head is tied.
    pub fn logits(
        &self,
        h: &Array,
        lm_head: Option<&crate::nn::quantized::Linear>,
    ) -> Result<Array> {
        match lm_head {
            Some(head) => head.forward(h),
            None => self.embeddings.as_linear(h),
        }
    }

    /// An arrays cache of two slots per layer.
    pub fn make_cache(&self) -> Vec<Cache> {
        self.layers.iter().map(|_| Cache::arrays(2)).collect()
    }

    /// The number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
