//! Rotary position embeddings, every variant of mlx-lm's `rope_utils.initialize_rope`
//! (0.32.2): default, linear, dynamic NTK, llama3, yarn (and `deepseek_yarn`,
//! `telechat3-yarn`), longrope / su, proportional (partial rotary), mrope (plain RoPE on
//! text); traditional and non-traditional layouts.
//!
//! The config is [`RopeScaling`], read from a config's `rope_scaling` or transformers v5's
//! `rope_parameters` with [`RopeScaling::from_config`] or from one object with
//! [`RopeScaling::from_json`]. [`Rope::new`] builds the layer; frequencies are computed with
//! the same MLX operations, in the same float32 order, as the reference.

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
use mlx_rs::ops::{arange, clip, concatenate, full, select};
use mlx_rs::Array;
use serde_json::Value;

/// Errors reading a RoPE config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RopeConfigError {
    /// The `type` / `rope_type` is not one the reference knows.
    #[error("unsupported RoPE type `{0}`")]
    UnknownType(String),
    /// A key the variant needs is missing.
    #[error("RoPE type `{rope_type}` needs `{key}` in its config")]
    Missing {
        /// The variant.
        rope_type: String,
        /// The missing key.
        key: &'static str,
    },
    /// A value has the wrong JSON type.
    #[error("RoPE config key `{key}` must be {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A value out of range.
    #[error("RoPE config: {0}")]
    Invalid(String),
}

/// The scaling of a RoPE layer: the parsed `rope_scaling` / `rope_parameters` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain RoPE (also `rope_scaling` absent or null).
    #[default]
    Default,
    /// Positions scaled by `1 / factor`.
    Linear {
        /// `factor`.
        factor: f32,
    },
    /// Dynamic NTK: the base grows with the sequence past `max_position_embeddings`.
    Dynamic {
        /// `factor`.
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// `factor`.
        factor: f32,
        /// `low_freq_factor` (default 1).
        low_freq_factor: f32,
        /// `high_freq_factor` (default 4).
        high_freq_factor: f32,
        /// `original_max_position_embeddings` (default 8192).
        original_max_position_embeddings: f32,
    },
    /// YaRN.
    Yarn {
        /// `factor`.
        factor: f32,
        /// `original_max_position_embeddings` (default 4096).
        original_max_position_embeddings: f64,
        /// `beta_fast` (default 32).
        beta_fast: f64,
        /// `beta_slow` (default 1).
        beta_slow: f64,
        /// `mscale` (default 1).
        mscale: f64,
        /// `mscale_all_dim` (default 0).
        mscale_all_dim: f64,
    },
    /// LongRoPE / su (phi3): per-frequency factors and a magnitude scale.
    LongRope {
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
        /// `short_factor` (kept for completeness: the reference rotates with `long_factor`).
        short_factor: Vec<f32>,
        /// `long_factor`.
        long_factor: Vec<f32>,
    },
    /// Rotates only `partial_rotary_factor` of the dimensions (the rest get infinite
    /// wavelength), frequencies scaled by `factor`.
    Proportional {
        /// `partial_rotary_factor` (default 1).
        partial_rotary_factor: f64,
        /// `factor` (default 1).
        factor: f32,
    },
    /// Multimodal RoPE; on text it is plain RoPE.
    Mrope {
        /// `mrope_section` (three entries).
        mrope_section: Vec<i64>,
    },
}

fn get_f64(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<Option<f64>, RopeConfigError> {
    let v = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Object(o)) if o.contains_key("__float__") => None,
        Some(_) => None,
    };
    // NaN and the infinities (transformers' `{"__float__": ...}`) mean nothing here: refused.
    match v {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(RopeConfigError::WrongType {
            key: key.into(),
            expected: "a finite number",
        }),
    }
}

fn get_factors(
    obj: &serde_json::Map<String, Value>,
    key: &'static str,
    rope_type: &str,
) -> std::result::Result<Vec<f32>, RopeConfigError> {
    match obj.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or(RopeConfigError::WrongType {
                        key: key.into(),
                        expected: "a list of positive finite numbers",
                    })
            })
            .collect(),
        Some(Value::Number(n)) => match n.as_f64().map(|f| f as f32) {
            Some(f) if f.is_finite() && f > 0.0 => Ok(vec![f]),
            _ => Err(RopeConfigError::WrongType {
                key: key.into(),
                expected: "a list of positive finite numbers",
            }),
        },
        None | Some(Value::Null) => Err(RopeConfigError::Missing {
            rope_type: rope_type.into(),
            key,
        }),
        Some(_) => Err(RopeConfigError::WrongType {
            key: key.into(),
            expected: "a list of numbers",
        }),
    }
}

impl RopeScaling {
    /// Reads one `rope_scaling` / `rope_parameters` object (`null` is [`RopeScaling::Default`]).
    /// The variant comes from `type`, else `rope_type`, else default, as in the reference.
    pub fn from_json(value: &Value) -> std::result::Result<Self, RopeConfigError> {
        let obj = match value {
            Value::Null => return Ok(RopeScaling::Default),
            Value::Object(o) => o,
            _ => {
                return Err(RopeConfigError::WrongType {
                    key: "rope_scaling".into(),
                    expected: "an object",
                })
            }
        };
        let rope_type = match (obj.get("type"), obj.get("rope_type")) {
            (Some(Value::String(t)), _) if !t.is_empty() => t.as_str(),
            (_, Some(Value::String(t))) => t.as_str(),
            _ => "default",
        };
        let num = |key: &str| get_f64(obj, key);
        let need = |key: &'static str| -> std::result::Result<f64, RopeConfigError> {
            num(key)?.ok_or(RopeConfigError::Missing {
                rope_type: rope_type.into(),
                key,
            })
        };
        let scaling = match rope_type {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need("factor")? as f32,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need("factor")? as f32,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")? as f32,
                low_freq_factor: num("low_freq_factor")?.unwrap_or(1.0) as f32,
                high_freq_factor: num("high_freq_factor")?.unwrap_or(4.0) as f32,
                original_max_position_embeddings: num("original_max_position_embeddings")?
                    .unwrap_or(8192.0) as f32,
            },
            "yarn" | "deepseek_yarn" | "telechat3-yarn" => RopeScaling::Yarn {
                factor: need("factor")? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings")?
                    .unwrap_or(4096.0),
                beta_fast: num("beta_fast")?.unwrap_or(32.0),
                beta_slow: num("beta_slow")?.unwrap_or(1.0),
                mscale: num("mscale")?.unwrap_or(1.0),
                mscale_all_dim: num("mscale_all_dim")?.unwrap_or(0.0),
            },
            "longrope" | "su" => RopeScaling::LongRope {
                original_max_position_embeddings: need("original_max_position_embeddings")?,
                short_factor: get_factors(obj, "short_factor", rope_type)?,
                long_factor: get_factors(obj, "long_factor", rope_type)?,
            },
            "proportional" => RopeScaling::Proportional {
                partial_rotary_factor: num("partial_rotary_factor")?.unwrap_or(1.0),
                factor: num("factor")?.unwrap_or(1.0) as f32,
            },
            "mrope" => {
                let section: Vec<i64> = match obj.get("mrope_section") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
                    _ => Vec::new(),
                };
                if section.len() != 3 {
                    return Err(RopeConfigError::Invalid(format!(
                        "MRoPE currently only supports 3 sections, got {}",
                        section.len()
                    )));
                }
                RopeScaling::Mrope {
                    mrope_section: section,
                }
            }
            other => return Err(RopeConfigError::UnknownType(other.to_string())),
        };
        scaling.validate()?;
        Ok(scaling)
    }

    /// Checks the values the reference would compute nonsense from: every factor and length
    /// positive (and finite, which reading already ensured), `partial_rotary_factor` in (0, 1].
    pub fn validate(&self) -> std::result::Result<(), RopeConfigError> {
        let positive = |key: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(RopeConfigError::Invalid(format!(
                    "`{key}` must be a positive number, got {v}"
                )))
            }
        };
        match self {
            RopeScaling::Default | RopeScaling::Mrope { .. } => Ok(()),
            RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor } => {
                positive("factor", f64::from(*factor))
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("factor", f64::from(*factor))?;
                positive("low_freq_factor", f64::from(*low_freq_factor))?;
                positive("high_freq_factor", f64::from(*high_freq_factor))?;
                positive(
                    "original_max_position_embeddings",
                    f64::from(*original_max_position_embeddings),
                )?;
                if low_freq_factor == high_freq_factor {
                    return Err(RopeConfigError::Invalid(format!(
                        "`low_freq_factor` and `high_freq_factor` must differ, both are {low_freq_factor}"
                    )));
                }
                Ok(())
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                ..
            } => {
                positive("factor", f64::from(*factor))?;
                positive(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                positive("beta_fast", *beta_fast)?;
                positive("beta_slow", *beta_slow)
            }
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } => positive(
                "original_max_position_embeddings",
                *original_max_position_embeddings,
            ),
            RopeScaling::Proportional {
                partial_rotary_factor,
                factor,
            } => {
                positive("factor", f64::from(*factor))?;
                if *partial_rotary_factor > 0.0 && *partial_rotary_factor <= 1.0 {
                    Ok(())
                } else {
                    Err(RopeConfigError::Invalid(format!(
                        "`partial_rotary_factor` must be in (0, 1], got {partial_rotary_factor}"
                    )))
                }
            }
        }
    }

    /// Reads the scaling of a whole config: `rope_scaling` when present and not null, else
    /// `rope_parameters` (transformers v5), else default.
    pub fn from_config(config: &Value) -> std::result::Result<Self, RopeConfigError> {
        match (config.get("rope_scaling"), config.get("rope_parameters")) {
            (Some(v), _) if !v.is_null() => Self::from_json(v),
            (_, Some(v)) if !v.is_null() => Self::from_json(v),
            _ => Ok(RopeScaling::Default),
        }
    }

    /// The `rope_theta` inside a transformers v5 `rope_parameters` object, if any.
    pub fn theta_from_config(config: &Value) -> Option<f32> {
        config
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| config.get("rope_theta").and_then(Value::as_f64))
            .map(|t| t as f32)
    }
}

/// `scale` times the yarn attention correction (`apply_yarn_mscale`): `mscale_all_dim`'s
/// factor squared, for yarn configs with `factor > 1`.
pub fn apply_yarn_mscale(scale: f32, scaling: &RopeScaling) -> f32 {
    match scaling {
        RopeScaling::Yarn {
            factor,
            mscale_all_dim,
            ..
        } if *mscale_all_dim != 0.0 && *factor > 1.0 => {
            let s = 0.1 * mscale_all_dim * (*factor as f64).ln() + 1.0;
            (scale as f64 * s * s) as f32
        }
        _ => scale,
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// `fast::rope` with a base and scale.
    Base { base: f32, scale: f32 },
    /// Dynamic NTK: base chosen per call.
    Dynamic {
        base: f64,
        factor: f64,
        max_position_embeddings: f64,
    },
    /// `fast::rope` with explicit frequencies, inputs scaled by `input_scale` first.
    Freqs {
        freqs: Array,
        input_scale: Option<f32>,
    },
}

/// A RoPE layer (no parameters).
#[derive(Debug, Clone)]
pub struct Rope {
    dims: i32,
    traditional: bool,
    kind: Kind,
}

fn even_exponents(rotated: i32, dims: i32) -> Result<Array> {
    // mx.arange(0, rotated, 2, dtype=float32) / dims
    arange::<_, f32>(0.0, rotated as f32, 2.0)?.divide(Array::from_f32(dims as f32))
}

fn base_pow(base: f32, exps: &Array) -> Result<Array> {
    Array::from_f32(base).power(exps)
}

impl Rope {
    /// The layer `initialize_rope(dims, base, traditional, scaling, max_position_embeddings)`
    /// builds. `max_position_embeddings` is needed by dynamic NTK and longrope.
    pub fn new(
        dims: i32,
        base: f32,
        traditional: bool,
        scaling: &RopeScaling,
        max_position_embeddings: Option<i32>,
    ) -> Result<Self> {
        if !(base.is_finite() && base > 0.0) {
            return Err(Exception::custom(format!(
                "RoPE: `rope_theta` must be a positive number, got {base}"
            )));
        }
        if dims <= 0 {
            return Err(Exception::custom(format!(
                "RoPE: the rotated dimensions must be positive, got {dims}"
            )));
        }
        let kind = match scaling {
            RopeScaling::Default | RopeScaling::Mrope { .. } => Kind::Base { base, scale: 1.0 },
            RopeScaling::Linear { factor } => Kind::Base {
                base,
                scale: 1.0 / factor,
            },
            RopeScaling::Dynamic { factor } => {
                let mpe = max_position_embeddings.ok_or_else(|| {
                    Exception::custom("dynamic NTK RoPE needs max_position_embeddings")
                })?;
                Kind::Dynamic {
                    base: base as f64,
                    factor: *factor as f64,
                    max_position_embeddings: mpe as f64,
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                // base ** (mx.arange(0, dims, 2) / dims): int arange, float32 division
                let exps = arange::<_, i32>(0, dims, 2)?.divide(Array::from_int(dims))?;
                let freqs = base_pow(base, &exps)?;
                let wavelens = Array::from_f32(2.0 * std::f32::consts::PI).multiply(&freqs)?;
                let freqs = select(
                    wavelens.gt(Array::from_f32(low_wavelen))?,
                    freqs.multiply(Array::from_f32(*factor))?,
                    &freqs,
                )?;
                let is_medium = wavelens
                    .gt(Array::from_f32(high_wavelen))?
                    .logical_and(wavelens.lt(Array::from_f32(low_wavelen))?)?;
                let smooth = Array::from_f32(old)
                    .divide(&wavelens)?
                    .subtract(Array::from_f32(*low_freq_factor))?
                    .divide(Array::from_f32(high_freq_factor - low_freq_factor))?;
                let denom = Array::from_f32(1.0)
                    .subtract(&smooth)?
                    .divide(Array::from_f32(*factor))?
                    .add(&smooth)?;
                let smooth_freqs = freqs.divide(&denom)?;
                Kind::Freqs {
                    freqs: select(is_medium, smooth_freqs, freqs)?,
                    input_scale: None,
                }
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            } => {
                let (d, b, f) = (dims as f64, base as f64, *factor as f64);
                let correction_dim = |rot: f64| {
                    d * (original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * b.ln())
                };
                let low = (correction_dim(*beta_fast).floor() as i64).max(0);
                let high = (correction_dim(*beta_slow).ceil() as i64).min(dims as i64 - 1);
                let get_mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let m = get_mscale(f, *mscale) / get_mscale(f, *mscale_all_dim);
                let freq_extra = base_pow(base, &even_exponents(dims, dims)?)?;
                let freq_inter = Array::from_f32(*factor).multiply(&freq_extra)?;
                let (lo, mut hi) = (low as f64, high as f64);
                if lo == hi {
                    hi += 0.001;
                }
                // 1 - clip((arange(dims // 2) - low) / (high - low), 0, 1)
                let ramp = arange::<_, f32>(0.0, (dims / 2) as f32, 1.0)?
                    .subtract(Array::from_f32(lo as f32))?
                    .divide(Array::from_f32((hi - lo) as f32))?;
                let ramp = clip(&ramp, (0.0f32, 1.0f32))?;
                let freq_mask = Array::from_f32(1.0).subtract(&ramp)?;
                let num = freq_inter.multiply(&freq_extra)?;
                let den = freq_inter
                    .multiply(&freq_mask)?
                    .add(freq_extra.multiply(Array::from_f32(1.0).subtract(&freq_mask)?)?)?;
                let freqs = num.divide(&den)?;
                Kind::Freqs {
                    freqs,
                    input_scale: (m != 1.0).then_some(m as f32),
                }
            }
            // The reference rotates with `long_factor` at every length and never passes
            // `long_mscale` on, so neither do we.
            RopeScaling::LongRope {
                original_max_position_embeddings,
                long_factor,
                ..
            } => {
                let mpe = max_position_embeddings
                    .ok_or_else(|| Exception::custom("longrope needs max_position_embeddings"))?;
                let original = *original_max_position_embeddings;
                return Rope::su_scaled(dims, base, mpe as f64, original, long_factor, None);
            }
            RopeScaling::Proportional {
                partial_rotary_factor,
                factor,
            } => {
                let rotated = (dims as f64 * partial_rotary_factor) as i32;
                if rotated > dims {
                    return Err(Exception::custom(
                        "rotated_dims should be smaller than dims",
                    ));
                }
                let head = Array::from_f32(*factor)
                    .multiply(base_pow(base, &even_exponents(rotated, dims)?)?)?;
                let tail = full::<f32>(&[(dims - rotated) / 2], Array::from_f32(f32::INFINITY))?;
                Kind::Freqs {
                    freqs: concatenate(&[head, tail], 0)?,
                    input_scale: None,
                }
            }
        };
        Ok(Rope {
            dims,
            traditional,
            kind,
        })
    }

    /// mlx-lm's `SuScaledRoPE` (LongRoPE, phi3 / phimoe): frequencies times `long_factor`
    /// (one per rotated pair) and the rotated features scaled by `long_mscale`, or when that
    /// is absent or 0 by `sqrt(1 + ln(factor) / ln(original))` with `factor = max_positions /
    /// original` (1 when the context is not extended).
    pub fn su_scaled(
        dims: i32,
        base: f32,
        max_positions: f64,
        original: f64,
        long_factor: &[f32],
        long_mscale: Option<f32>,
    ) -> Result<Rope> {
        if long_factor.len() as i32 * 2 != dims {
            return Err(Exception::custom(format!(
                "longrope: {} factors for {dims} rotated features (one per pair expected)",
                long_factor.len()
            )));
        }
        let freqs = base_pow(base, &even_exponents(dims, dims)?)?;
        let lf = Array::from_slice(long_factor, &[long_factor.len() as i32]);
        let freqs = lf.multiply(&freqs)?;
        let factor = max_positions / original;
        let default = if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / original.ln()).sqrt() as f32
        };
        let scale = long_mscale.filter(|m| *m != 0.0).unwrap_or(default);
        Ok(Rope {
            dims,
            traditional: false,
            kind: Kind::Freqs {
                freqs,
                input_scale: Some(scale),
            },
        })
    }

    /// RoPE with explicit frequencies (`mx.fast.rope(..., base=None, freqs=freqs)`): `freqs`
    /// holds one per rotated pair, `[dims / 2]`.
    pub fn with_freqs(dims: i32, traditional: bool, freqs: Array) -> Result<Rope> {
        if dims <= 0 || freqs.shape() != [dims / 2] {
            return Err(Exception::custom(format!(
                "RoPE: {:?} frequencies for {dims} rotated features (one per pair expected)",
                freqs.shape()
            )));
        }
        Ok(Rope {
            dims,
            traditional,
            kind: Kind::Freqs {
                freqs,
                input_scale: None,
            },
        })
    }

    /// Plain RoPE (`nn.RoPE(dims, traditional, base, scale)`).
    pub fn plain(dims: i32, base: f32, traditional: bool, scale: f32) -> Self {
        Rope {
            dims,
            traditional,
            kind: Kind::Base { base, scale },
        }
    }

    /// The rotated feature dimensions.
    pub fn dims(&self) -> i32 {
        self.dims
    }

    /// The explicit frequencies, for the variants that have them.
    pub fn freqs(&self) -> Option<&Array> {
        match &self.kind {
            Kind::Freqs { freqs, .. } => Some(freqs),
            _ => None,
        }
    }

    fn scale_input(&self, x: &Array, s: f32) -> Result<Array> {
        // x.at[..., :dims].multiply(s), in x's dtype
        let s = Array::from_f32(s).as_dtype(x.dtype())?;
        if x.dim(-1) == self.dims {
            return x.multiply(&s);
        }
        let head = x.try_index((Ellipsis, ..self.dims))?.multiply(&s)?;
        let tail = x.try_index((Ellipsis, self.dims..))?;
        concatenate(&[head, tail], -1)
    }

    /// Rotates `x` (`[..., L, head_dim]`) for positions `offset .. offset + L`.
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        match &self.kind {
            Kind::Base { base, scale } => {
                fast::rope(x, self.dims, self.traditional, *base, *scale, offset, None)
            }
            Kind::Dynamic {
                base,
                factor,
                max_position_embeddings,
            } => {
                let seq_len = ((x.dim(-2) + offset) as f64).max(*max_position_embeddings);
                let d = self.dims as f64;
                let b = base
                    * ((factor * seq_len / max_position_embeddings) - (factor - 1.0))
                        .powf(d / (d - 2.0));
                fast::rope(x, self.dims, self.traditional, b as f32, 1.0, offset, None)
            }
            Kind::Freqs { freqs, input_scale } => {
                let x = match input_scale {
                    Some(s) => self.scale_input(x, *s)?,
                    None => x.clone(),
                };
                fast::rope(&x, self.dims, self.traditional, None, 1.0, offset, freqs)
            }
        }
    }

    /// As [`forward`](Self::forward) with one offset per sequence (`[B]` int32), for batches
    /// whose sequences sit at different positions. Dynamic NTK (whose base depends on the
    /// one offset) refuses, as the reference does.
    pub fn forward_with_offsets(&self, x: &Array, offsets: &Array) -> Result<Array> {
        match &self.kind {
            Kind::Base { base, scale } => {
                fast::rope_dynamic(x, self.dims, self.traditional, *base, *scale, offsets, None)
            }
            Kind::Dynamic { .. } => Err(Exception::custom(
                "dynamic NTK RoPE takes one integer offset",
            )),
            Kind::Freqs { freqs, input_scale } => {
                let x = match input_scale {
                    Some(s) => self.scale_input(x, *s)?,
                    None => x.clone(),
                };
                fast::rope_dynamic(&x, self.dims, self.traditional, None, 1.0, offsets, freqs)
            }
        }
    }
}

/// A RoPE config error met while building a model, so that `?` carries its message.
impl From<RopeConfigError> for mlx_rs::error::Exception {
    fn from(e: RopeConfigError) -> Self {
        mlx_rs::error::Exception::custom(e.to_string())
    }
}
