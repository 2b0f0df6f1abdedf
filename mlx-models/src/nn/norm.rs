//! RMSNorm (plain, or with zero-centred weights as gemma stores them) and LayerNorm, over
//! `mx.fast.rms_norm` / `mx.fast.layer_norm` like `mlx.nn.RMSNorm` / `mlx.nn.LayerNorm`, and
//! a LayerNorm of each attention head with its own weights ([`HeadNorm`]).

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::ops::{ones_dtype, zeros_dtype};
use mlx_rs::{Array, Dtype};

/// Root-mean-square normalisation over the last axis, times `weight` (or `1 + weight` when
/// the checkpoint stores weights centred on zero, as gemma's do).
#[derive(Debug, Clone, ModuleParameters)]
pub struct RmsNorm {
    /// `[dims]`.
    #[param]
    pub weight: Param<Array>,
    /// Added to the mean square.
    pub eps: f32,
    /// Whether the effective weight is `1 + weight`.
    pub zero_centered: bool,
}

impl RmsNorm {
    /// Weights of one.
    pub fn new(dims: i32, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: Param::new(ones_dtype(&[dims], Dtype::Float32)?),
            eps,
            zero_centered: false,
        })
    }

    /// Zero-centred weights (effective weight `1 + weight`), initialised to zero.
    pub fn zero_centered(dims: i32, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: Param::new(zeros_dtype(&[dims], Dtype::Float32)?),
            eps,
            zero_centered: true,
        })
    }

    /// Normalises `x`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        if self.zero_centered {
            let one = Array::from_f32(1.0).as_dtype(self.weight.dtype())?;
            fast::rms_norm(x, Some(&one.add(&*self.weight)?), self.eps)
        } else {
            fast::rms_norm(x, Some(&*self.weight), self.eps)
        }
    }
}

impl Module<&Array> for RmsNorm {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, x: &Array) -> Result<Array> {
        RmsNorm::forward(self, x)
    }

    fn training_mode(&mut self, _mode: bool) {}
}

/// Layer normalisation over the last axis with optional `weight` and `bias`.
#[derive(Debug, Clone, ModuleParameters)]
pub struct LayerNorm {
    /// `[dims]` (absent for a non-affine norm).
    #[param]
    pub weight: Param<Option<Array>>,
    /// `[dims]`.
    #[param]
    pub bias: Param<Option<Array>>,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// An affine norm (weight one, bias zero when `bias`).
    pub fn new(dims: i32, eps: f32, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: Param::new(Some(ones_dtype(&[dims], Dtype::Float32)?)),
            bias: Param::new(if bias {
                Some(zeros_dtype(&[dims], Dtype::Float32)?)
            } else {
                None
            }),
            eps,
        })
    }

    /// Normalises `x`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        fast::layer_norm(
            x,
            self.weight.value.as_ref(),
            self.bias.value.as_ref(),
            self.eps,
        )
    }
}

impl Module<&Array> for LayerNorm {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, x: &Array) -> Result<Array> {
        LayerNorm::forward(self, x)
    }

    fn training_mode(&mut self, _mode: bool) {}
}

/// LayerNorm over each head's features, without bias, with a weight per head and feature
/// (`[heads, head_dim]`): cohere's `LayerNorm2D`, stablelm's `LayerNormPerHead` (whose
/// per-head `norms.{h}.weight` a checkpoint stacks into this one).
#[derive(Debug, Clone, ModuleParameters)]
pub struct HeadNorm {
    /// `[heads, head_dim]`.
    #[param]
    pub weight: Param<Array>,
    /// Added to the variance.
    pub eps: f32,
}

impl HeadNorm {
    /// Weights of one.
    pub fn new(heads: i32, head_dim: i32, eps: f32) -> Result<Self> {
        Ok(HeadNorm {
            weight: Param::new(ones_dtype(&[heads, head_dim], Dtype::Float32)?),
            eps,
        })
    }

    /// Normalises `x`, `[B, L, heads, head_dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        self.weight
            .multiply(fast::layer_norm(x, None, None, self.eps)?)
    }
}
