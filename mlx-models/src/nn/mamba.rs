//! The Mamba (v1) mixer of mamba, falcon_mamba and jamba: the input projected into the scan's
//! input and a gate, the causal depthwise convolution with its cached state, a projection
//! into a low-rank time step, `B` and `C` (optionally RMS-normalised: without weights as
//! falcon_mamba does, with weights as jamba's `dt_layernorm`, `b_layernorm`, `c_layernorm`),
//! the time step's own projection and softplus, [`selective_scan`], and the gated output
//! projection.
//!
//! Its state lives in an [`ArraysCache`] of two slots: the conv state in slot 0, the scan's
//! state in slot 1. A padding mask (`[B, L]`, false on a left-padded position) keeps padding
//! out of both, so a left-padded row ends in the state it would have alone (the reference's
//! mixers take no mask).

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::{broadcast_to, exp, log, split_at_indices};
use mlx_rs::{fast, Array, Dtype};

use crate::cache::ArraysCache;
use crate::nn::activations::{silu, swiglu};
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::Linear;
use crate::nn::ssm::{selective_scan, softplus, DepthwiseConv1d};

/// How a [`MambaMixer`] normalises the time step, `B` and `C` before use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeStepNorm {
    /// Not at all (mamba).
    None,
    /// An RMS norm without weights of this epsilon (falcon_mamba's `mixer_rms_eps`).
    Weightless(f32),
    /// RMS norms with weights (`dt_layernorm`, `b_layernorm`, `c_layernorm`) of this epsilon
    /// (jamba).
    Weighted(f32),
}

/// The sizes and options of a [`MambaMixer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MambaMixerConfig {
    /// Width of the residual stream (the mixer's input and output).
    pub hidden_size: i32,
    /// Width of the mixer (channels of the conv and the scan).
    pub intermediate_size: i32,
    /// Width of the state of each channel.
    pub state_size: i32,
    /// Taps of the causal convolution.
    pub conv_kernel: i32,
    /// Rank of the time-step projection.
    pub time_step_rank: i32,
    /// Biases on the input and output projections.
    pub proj_bias: bool,
    /// A bias on the convolution.
    pub conv_bias: bool,
    /// The norms of the time step, `B` and `C`.
    pub norm: TimeStepNorm,
}

/// A Mamba mixer (mlx-lm's `MambaBlock`, `JambaMambaMixer`). Parameter names are the
/// checkpoints'.
#[allow(non_snake_case)]
#[derive(Debug, ModuleParameters)]
pub struct MambaMixer {
    /// `[2 * intermediate, hidden]`: the scan's input and the gate.
    #[param]
    pub in_proj: Linear,
    /// The causal depthwise convolution over the scan's input.
    #[param]
    pub conv1d: DepthwiseConv1d,
    /// `[rank + 2 * state, intermediate]`: the low-rank time step, `B` and `C`.
    #[param]
    pub x_proj: Linear,
    /// `[intermediate, rank]`, with a bias: the time step.
    #[param]
    pub dt_proj: Linear,
    /// `[intermediate, state]`: the decay is `-exp(A_log)` per unit of time.
    #[param]
    pub A_log: Param<Array>,
    /// `[intermediate]`: the skip connection.
    #[param]
    pub D: Param<Array>,
    /// `[hidden, intermediate]`.
    #[param]
    pub out_proj: Linear,
    /// `[rank]`, with [`TimeStepNorm::Weighted`].
    #[param]
    pub dt_layernorm: Option<RmsNorm>,
    /// `[state]`, with [`TimeStepNorm::Weighted`].
    #[param]
    pub b_layernorm: Option<RmsNorm>,
    /// `[state]`, with [`TimeStepNorm::Weighted`].
    #[param]
    pub c_layernorm: Option<RmsNorm>,
    rank: i32,
    state: i32,
    weightless_eps: Option<f32>,
}

impl MambaMixer {
    /// The mixer `config` describes, initialised as the reference initialises it (`A_log` =
    /// `log(1..=state)` for every channel, `D` ones).
    pub fn new(config: &MambaMixerConfig) -> Result<Self> {
        let c = config;
        let (dim, inner, n, rank) = (
            c.hidden_size,
            c.intermediate_size,
            c.state_size,
            c.time_step_rank,
        );
        let x_width = n
            .checked_mul(2)
            .and_then(|w| w.checked_add(rank))
            .ok_or_else(|| Exception::custom("the Mamba mixer's x projection is too wide"))?;
        let a = Array::from_iter(1..=n, &[1, n]).as_dtype(Dtype::Float32)?;
        let a = broadcast_to(&a, &[inner, n])?;
        let norm = |dims: i32| match c.norm {
            TimeStepNorm::Weighted(eps) => RmsNorm::new(dims, eps).map(Some),
            _ => Ok(None),
        };
        Ok(MambaMixer {
            in_proj: Linear::new(dim, 2 * inner, c.proj_bias)?,
            conv1d: DepthwiseConv1d::new(inner, c.conv_kernel, c.conv_bias)?,
            x_proj: Linear::new(inner, x_width, false)?,
            dt_proj: Linear::new(rank, inner, true)?,
            A_log: Param::new(log(&a)?),
            D: Param::new(Array::ones::<f32>(&[inner])?),
            out_proj: Linear::new(inner, dim, c.proj_bias)?,
            dt_layernorm: norm(rank)?,
            b_layernorm: norm(n)?,
            c_layernorm: norm(n)?,
            rank,
            state: n,
            weightless_eps: match c.norm {
                TimeStepNorm::Weightless(eps) => Some(eps),
                _ => None,
            },
        })
    }

    fn norm(&self, x: &Array, weighted: Option<&RmsNorm>) -> Result<Array> {
        match (weighted, self.weightless_eps) {
            (Some(norm), _) => norm.forward(x),
            (None, Some(eps)) => fast::rms_norm(x, None::<&Array>, eps),
            (None, None) => Ok(x.clone()),
        }
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`. `mask` (`[B, L]`) keeps left padding out of
    /// the state; `cache` holds the conv state (slot 0) and the scan's (slot 1), and advances
    /// by `L`.
    pub fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let parts = self.in_proj.forward(x)?.split_equal(2, -1)?;
        let (x, z) = (&parts[0], &parts[1]);
        let conv = self.conv1d.forward(x, mask, cache.as_deref_mut(), 0)?;
        let x = silu(&conv)?;
        let parts = split_at_indices(
            &self.x_proj.forward(&x)?,
            &[self.rank, self.rank + self.state],
            -1,
        )?;
        let delta = self.norm(&parts[0], self.dt_layernorm.as_ref())?;
        let b = self.norm(&parts[1], self.b_layernorm.as_ref())?;
        let c = self.norm(&parts[2], self.c_layernorm.as_ref())?;
        let delta = softplus(&self.dt_proj.forward(&delta)?)?;
        let a = exp(&*self.A_log)?.negative()?;
        let state = cache.as_ref().and_then(|c| c.get(1));
        let (y, state) = selective_scan(&x, &delta, &a, &b, &c, &self.D, state, mask)?;
        if let (Some(c), Some(state)) = (cache, state) {
            c.set(1, state);
            c.advance(x.dim(1))?;
        }
        self.out_proj.forward(&swiglu(z, &y)?)
    }
}

/// The rank of the time-step projection as Mamba configs give it (`time_step_rank`,
/// `mamba_dt_rank`, named by `key`): a positive integer, or `"auto"` (also when absent) for
/// `ceil(hidden_size / 16)`. For the args' hooks; the error names the key.
pub fn time_step_rank(
    key: &str,
    value: Option<&serde_json::Value>,
    hidden_size: usize,
) -> std::result::Result<usize, crate::args::ArgsError> {
    use serde_json::Value;
    let bad = |v: &Value| {
        crate::args::ArgsError::invalid(
            &[key],
            format!("`{key}` must be a positive integer or \"auto\", found {v}"),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(hidden_size.div_ceil(16)),
        Some(Value::String(s)) if s == "auto" => Ok(hidden_size.div_ceil(16)),
        Some(v @ Value::Number(n)) => match n.as_u64() {
            Some(r) if r > 0 && r <= crate::args::MAX_SIZE as u64 => Ok(r as usize),
            _ => Err(bad(v)),
        },
        Some(other) => Err(bad(other)),
    }
}

impl crate::nn::ssm::StateMixer for MambaMixer {
    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        MambaMixer::forward(self, x, mask, cache)
    }
}
