//! `mamba` (alias `falcon_mamba`), after mlx-lm's `models/mamba.py`: a stack of Mamba
//! mixers, no attention. Each mixer projects the input into the scan's input and a gate, runs
//! a causal depthwise convolution with its cached state, projects the result into a time step
//! (through a low-rank `dt_proj`), `B` and `C`, and runs the selective scan (state
//! `[intermediate, state]` per layer) one position at a time. falcon_mamba normalises the time
//! step, `B` and `C` (RMS, no weight) before use.
//!
//! Beyond the reference, which has no padding mask here: a left-padded batch masks its padding
//! out of the convolution and the scan, so each row gives what it gives alone.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::{exp, log, split_at_indices};
use mlx_rs::{fast, Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_ssm_mask, ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::{silu, swiglu};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::ssm::{
    conv1d_weights_to_mlx, layer_arrays, selective_scan, softplus, DepthwiseConv1d,
};
use mlx_models::nn::transformer::{check_layers, check_width, lm_head};
use mlx_models::weights::Weights;

/// config.json of a mamba or falcon_mamba checkpoint (the original `d_model`, `d_inner`,
/// `d_state`, `n_layer`, `d_conv`, `bias`, `conv_bias` spellings are read too).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MambaArgs {
    /// `mamba` or `falcon_mamba`.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive, alias = "d_model")]
    pub hidden_size: usize,
    /// Width of the mixer.
    #[arg(positive, alias = "d_inner")]
    pub intermediate_size: usize,
    /// Width of the state of each channel.
    #[arg(positive, alias = "d_state")]
    pub state_size: usize,
    /// Number of layers.
    #[arg(positive, alias = "n_layer", alias = "n_layers")]
    pub num_hidden_layers: usize,
    /// Taps of the causal convolution.
    #[arg(positive, alias = "d_conv")]
    pub conv_kernel: usize,
    /// Biases on the input and output projections.
    #[arg(alias = "bias")]
    pub use_bias: bool,
    /// A bias on the convolution.
    #[arg(alias = "conv_bias")]
    pub use_conv_bias: bool,
    /// Rank of the time-step projection: an integer, or `"auto"` for
    /// `ceil(hidden_size / 16)`.
    pub time_step_rank: Value,
    /// Whether the head is the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Whether the time step, `B` and `C` are RMS-normalised (always for falcon_mamba).
    #[arg(default = false)]
    pub use_bcdt_rms: bool,
    /// Epsilon of those norms.
    #[arg(default = 1e-6, positive)]
    pub mixer_rms_eps: f32,
}

impl MambaArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        if self.model_type == "falcon_mamba" {
            self.use_bcdt_rms = true;
        }
        let rank = self.dt_rank()?;
        let inner = self.intermediate_size;
        check_width(
            &["intermediate_size"],
            "the input projection (`2 * intermediate_size`)",
            inner.checked_mul(2),
        )?;
        check_width(
            &["time_step_rank", "state_size"],
            "the x projection (`time_step_rank + 2 * state_size`)",
            self.state_size
                .checked_mul(2)
                .and_then(|s| s.checked_add(rank)),
        )?;
        check_width(
            &["intermediate_size", "state_size"],
            "the state (`intermediate_size * state_size`)",
            inner.checked_mul(self.state_size),
        )
    }

    /// The time-step rank, `ceil(hidden_size / 16)` for `"auto"`.
    pub fn dt_rank(&self) -> std::result::Result<usize, ArgsError> {
        match &self.time_step_rank {
            Value::String(s) if s == "auto" => Ok(self.hidden_size.div_ceil(16)),
            Value::Number(n) => match n.as_u64() {
                Some(r) if r > 0 && r <= mlx_models::args::MAX_SIZE as u64 => Ok(r as usize),
                _ => Err(ArgsError::invalid(
                    &["time_step_rank"],
                    format!("`time_step_rank` must be a positive integer or \"auto\", found {n}"),
                )),
            },
            other => Err(ArgsError::invalid(
                &["time_step_rank"],
                format!("`time_step_rank` must be a positive integer or \"auto\", found {other}"),
            )),
        }
    }
}

#[allow(non_snake_case)]
#[derive(Debug, ModuleParameters)]
struct Mixer {
    #[param]
    in_proj: Linear,
    #[param]
    conv1d: DepthwiseConv1d,
    #[param]
    x_proj: Linear,
    #[param]
    dt_proj: Linear,
    #[param]
    A_log: Param<Array>,
    #[param]
    D: Param<Array>,
    #[param]
    out_proj: Linear,
    rank: i32,
    state: i32,
    bcdt_eps: Option<f32>,
}

impl Mixer {
    fn new(args: &MambaArgs, rank: usize) -> Result<Self> {
        let (dim, inner, n) = (
            args.hidden_size as i32,
            args.intermediate_size as i32,
            args.state_size as i32,
        );
        let rank = rank as i32;
        let a = Array::from_iter(1..=n, &[1, n]).as_dtype(Dtype::Float32)?;
        let a = mlx_rs::ops::broadcast_to(&a, &[inner, n])?;
        Ok(Mixer {
            in_proj: Linear::new(dim, 2 * inner, args.use_bias)?,
            conv1d: DepthwiseConv1d::new(inner, args.conv_kernel as i32, args.use_conv_bias)?,
            x_proj: Linear::new(inner, rank + 2 * n, false)?,
            dt_proj: Linear::new(rank, inner, true)?,
            A_log: Param::new(log(&a)?),
            D: Param::new(Array::ones::<f32>(&[inner])?),
            out_proj: Linear::new(inner, dim, args.use_bias)?,
            rank,
            state: n,
            bcdt_eps: args.use_bcdt_rms.then_some(args.mixer_rms_eps),
        })
    }

    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let xz = self.in_proj.forward(x)?;
        let parts = xz.split_equal(2, -1)?;
        let (x, z) = (&parts[0], &parts[1]);
        let conv = self.conv1d.forward(x, mask, cache.as_deref_mut(), 0)?;
        let x = silu(&conv)?;
        let parts = split_at_indices(
            &self.x_proj.forward(&x)?,
            &[self.rank, self.rank + self.state],
            -1,
        )?;
        let norm = |t: &Array| match self.bcdt_eps {
            Some(eps) => fast::rms_norm(t, None::<&Array>, eps),
            None => Ok(t.clone()),
        };
        let (delta, b, c) = (norm(&parts[0])?, norm(&parts[1])?, norm(&parts[2])?);
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

#[derive(Debug, ModuleParameters)]
struct ResidualBlock {
    #[param]
    mixer: Mixer,
    #[param]
    norm: RmsNorm,
}

#[derive(Debug, ModuleParameters)]
struct Backbone {
    #[param]
    embeddings: Embedding,
    #[param]
    layers: Vec<ResidualBlock>,
    #[param]
    norm_f: RmsNorm,
}

/// The mamba model: embeddings, Mamba blocks, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "mamba",
    aliases = ["falcon_mamba"],
    args = MambaArgs,
    tied_head = "lm_head",
    sanitize = Self::sanitize_conv
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    backbone: Backbone,
    /// `None` with `tie_word_embeddings`.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    fn sanitize_conv(&self, weights: &mut Weights) -> Result<()> {
        conv1d_weights_to_mlx(weights)
    }
}

impl Architecture for Model {
    fn new(args: &MambaArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let rank = args
            .dt_rank()
            .map_err(|e| mlx_rs::error::Exception::custom(e.to_string()))?;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                Ok(ResidualBlock {
                    mixer: Mixer::new(args, rank)?,
                    // The reference's `nn.RMSNorm(hidden_size)`: the default epsilon.
                    norm: RmsNorm::new(dim, 1e-5)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            backbone: Backbone {
                embeddings: Embedding::new(args.vocab_size as i32, dim)?,
                layers,
                norm_f: RmsNorm::new(dim, 1e-5)?,
            },
            lm_head: lm_head(args.tie_word_embeddings, args.hidden_size, args.vocab_size)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let mut h = self.backbone.embeddings.forward(inputs)?;
        let mask = create_ssm_mask(inputs.dim(1), cache.first())?;
        for (i, layer) in self.backbone.layers.iter().enumerate() {
            let c = layer_arrays(cache, i)?;
            let r = layer
                .mixer
                .forward(&layer.norm.forward(&h)?, mask.as_ref(), c)?;
            h = r.add(&h)?;
        }
        let h = self.backbone.norm_f.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => self.backbone.embeddings.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        (0..self.backbone.layers.len())
            .map(|_| Cache::arrays(2))
            .collect()
    }

    fn num_layers(&self) -> usize {
        self.backbone.layers.len()
    }
}
