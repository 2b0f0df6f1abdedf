//! `mamba2`, after mlx-lm's `models/mamba2.py`: a stack of Mamba2 mixers, no attention. Each
//! mixer projects the input into a gate, the convolution's input (the SSM's `x`, `B` and `C`)
//! and a time step per head; a causal depthwise convolution with its cached state, the SSD
//! scan (state `[heads, head_dim, state]` per layer), then the gated RMSNorm and the output
//! projection. The cache of every layer is an arrays cache of two slots: conv state and SSM
//! state.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::{log, split_at_indices};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_ssm_mask, ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::ssm::{
    conv1d_weights_to_mlx, layer_arrays, ssd, DepthwiseConv1d, RmsNormGated, SsdParams,
    TimeStepLimit,
};
use mlx_models::nn::transformer::{check_layers, check_width, lm_head};
use mlx_models::weights::Weights;

/// config.json of a mamba2 checkpoint. `intermediate_size`, `time_step_rank` and
/// `max_position_embeddings` are read as the reference reads them, and size nothing: the
/// mixer's width is `num_heads * head_dim`.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Mamba2Args {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of SSM heads.
    #[arg(positive)]
    pub num_heads: usize,
    /// Width of one head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Required by the reference, unused by it.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Width of the SSM state (`ssm_state_size` wins when present).
    #[arg(positive)]
    pub state_size: usize,
    /// Width of the SSM state.
    #[arg(positive)]
    pub ssm_state_size: Option<usize>,
    /// Number of layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Epsilon of every RMS norm.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Taps of the causal convolution.
    #[arg(positive)]
    pub conv_kernel: usize,
    /// Groups of heads that share `B` and `C`.
    #[arg(positive)]
    pub n_groups: usize,
    /// Biases on the input and output projections.
    pub use_bias: bool,
    /// A bias on the convolution.
    pub use_conv_bias: bool,
    /// Whether the head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bounds of the time step after its softplus.
    pub time_step_limit: TimeStepLimit,
    /// An integer or `"auto"`; unused (the time step comes from `in_proj` per head).
    pub time_step_rank: Value,
    /// Context length of the checkpoint (unused).
    #[arg(default = 2056)]
    pub max_position_embeddings: usize,
}

impl Mamba2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        if !self.num_heads.is_multiple_of(self.n_groups) {
            let msg = format!(
                "`num_heads` ({}) is not a multiple of `n_groups` ({})",
                self.num_heads, self.n_groups
            );
            return Err(ArgsError::invalid(&["num_heads", "n_groups"], msg));
        }
        check_width(
            &["num_heads", "head_dim", "n_groups", "state_size"],
            "the mixer's input projection",
            self.projection_size(),
        )
    }

    /// `ssm_state_size`, or `state_size` without it.
    pub fn state(&self) -> usize {
        self.ssm_state_size.unwrap_or(self.state_size)
    }

    /// `num_heads * head_dim + 2 * n_groups * state`: the convolution's channels.
    pub fn conv_dim(&self) -> Option<usize> {
        let inner = self.num_heads.checked_mul(self.head_dim)?;
        inner.checked_add(self.n_groups.checked_mul(self.state())?.checked_mul(2)?)
    }

    fn projection_size(&self) -> Option<usize> {
        let inner = self.num_heads.checked_mul(self.head_dim)?;
        self.conv_dim()?
            .checked_add(inner)?
            .checked_add(self.num_heads)
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
    dt_bias: Param<Array>,
    #[param]
    A_log: Param<Array>,
    #[param]
    D: Param<Array>,
    #[param]
    norm: RmsNormGated,
    #[param]
    out_proj: Linear,
    heads: i32,
    head_dim: i32,
    groups: i32,
    state: i32,
    limit: TimeStepLimit,
}

impl Mixer {
    fn new(args: &Mamba2Args) -> Result<Self> {
        let (dim, heads) = (args.hidden_size as i32, args.num_heads as i32);
        let inner = heads * args.head_dim as i32;
        let conv_dim = args.conv_dim().unwrap_or_default() as i32;
        let eps = args.layer_norm_epsilon;
        Ok(Mixer {
            in_proj: Linear::new(dim, inner + conv_dim + heads, args.use_bias)?,
            conv1d: DepthwiseConv1d::new(conv_dim, args.conv_kernel as i32, args.use_conv_bias)?,
            dt_bias: Param::new(Array::ones::<f32>(&[heads])?),
            A_log: Param::new(log(
                Array::from_iter(1..=heads, &[heads]).as_dtype(Dtype::Float32)?
            )?),
            D: Param::new(Array::ones::<f32>(&[heads])?),
            norm: RmsNormGated::new(inner, eps, None)?,
            out_proj: Linear::new(inner, dim, args.use_bias)?,
            heads,
            head_dim: args.head_dim as i32,
            groups: args.n_groups as i32,
            state: args.state() as i32,
            limit: args.time_step_limit,
        })
    }

    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let inner = self.heads * self.head_dim;
        let conv_dim = self.conv1d.weight.dim(0);
        let parts = split_at_indices(self.in_proj.forward(x)?, &[inner, inner + conv_dim], -1)?;
        let (gate, conv_input, dt) = (&parts[0], &parts[1], &parts[2]);
        let conv = mlx_models::nn::activations::silu(&self.conv1d.forward(
            conv_input,
            mask,
            cache.as_deref_mut(),
            0,
        )?)?;
        let bc = self.groups * self.state;
        let parts = split_at_indices(&conv, &[inner, inner + bc], -1)?;
        let xs = parts[0].reshape(&[b, l, self.heads, self.head_dim])?;
        let bs = parts[1].reshape(&[b, l, self.groups, self.state])?;
        let cs = parts[2].reshape(&[b, l, self.groups, self.state])?;
        let params = SsdParams {
            a_log: &self.A_log,
            d: &self.D,
            dt_bias: &self.dt_bias,
            time_step_limit: self.limit,
        };
        let state = cache.as_ref().and_then(|c| c.get(1));
        let lengths = cache.as_ref().and_then(|c| c.lengths.as_ref());
        let (y, state) = ssd(&xs, &bs, &cs, dt, &params, state, mask, lengths)?;
        if let Some(c) = cache {
            c.set(1, state);
            c.advance(l)?;
        }
        let y = self.norm.forward(&y.reshape(&[b, l, inner])?, Some(gate))?;
        self.out_proj.forward(&y)
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

/// The mamba2 model: embeddings, Mamba2 blocks, final norm, head (or tied embeddings).
#[mlx_model(model_type = "mamba2", args = Mamba2Args, tied_head = "lm_head", sanitize = Self::sanitize_conv)]
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
    fn new(args: &Mamba2Args) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                Ok(ResidualBlock {
                    mixer: Mixer::new(args)?,
                    // The reference's `nn.RMSNorm(hidden_size)`: the default epsilon.
                    norm: RmsNorm::new(dim, 1e-5)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            backbone: Backbone {
                embeddings: Embedding::new(args.vocab_size as i32, dim)?,
                layers,
                norm_f: RmsNorm::new(dim, args.layer_norm_epsilon)?,
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
