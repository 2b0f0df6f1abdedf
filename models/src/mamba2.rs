//! `mamba2`, after mlx-lm's `models/mamba2.py`: a stack of Mamba2 mixers, no attention. Each
//! mixer projects the input into a gate, the convolution's input (the SSM's `x`, `B` and `C`)
//! and a time step per head; a causal depthwise convolution with its cached state, the SSD
//! scan (state `[heads, head_dim, state]` per layer), then the gated RMSNorm and the output
//! projection. The cache of every layer is an arrays cache of two slots: conv state and SSM
//! state.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::ssm::{
    conv1d_weights_to_mlx, Backbone, Mamba2Config, Mamba2Mixer, TimeStepLimit,
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

/// The mamba2 model: embeddings, Mamba2 blocks, final norm, head (or tied embeddings).
#[mlx_model(model_type = "mamba2", args = Mamba2Args, tied_head = "lm_head", sanitize = Self::sanitize_conv)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    backbone: Backbone<Mamba2Mixer>,
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
        let config = Mamba2Config::new(
            args.hidden_size,
            args.num_heads,
            args.head_dim,
            args.n_groups,
            args.state(),
            args.conv_kernel,
            args.layer_norm_epsilon,
        )
        .proj_bias(args.use_bias, args.use_bias)
        .conv_bias(args.use_conv_bias)
        .time_step_limit(args.time_step_limit);
        let mixers = (0..args.num_hidden_layers)
            .map(|_| Mamba2Mixer::new(&config))
            .collect::<Result<_>>()?;
        Ok(Model {
            // The blocks' norms are the reference's `nn.RMSNorm(hidden_size)`: the default
            // epsilon.
            backbone: Backbone::new(
                args.vocab_size,
                args.hidden_size,
                mixers,
                1e-5,
                args.layer_norm_epsilon,
            )?,
            lm_head: lm_head(args.tie_word_embeddings, args.hidden_size, args.vocab_size)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.backbone.forward(inputs, cache)?;
        self.backbone.logits(&h, self.lm_head.as_ref())
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.backbone.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.backbone.num_layers()
    }
}
