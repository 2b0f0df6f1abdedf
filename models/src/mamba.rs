//! `mamba` (alias `falcon_mamba`), after mlx-lm's `models/mamba.py`: a stack of Mamba
//! mixers, no attention. Each mixer projects the input into the scan's input and a gate, runs
//! a causal depthwise convolution with its cached state, projects the result into a time step
//! (through a low-rank `dt_proj`), `B` and `C`, and runs the selective scan (state
//! `[intermediate, state]` per layer) one position at a time. falcon_mamba normalises the time
//! step, `B` and `C` (RMS, no weight) before use.
//!
//! The mixer is the shared `nn::mamba::MambaMixer`.
//!
//! Beyond the reference, which has no padding mask here: a left-padded batch masks its padding
//! out of the convolution and the scan, so each row gives what it gives alone.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mamba::{time_step_rank, MambaMixer, MambaMixerConfig, TimeStepNorm};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::ssm::{conv1d_weights_to_mlx, Backbone};
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
        time_step_rank(
            "time_step_rank",
            Some(&self.time_step_rank),
            self.hidden_size,
        )
    }
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
    backbone: Backbone<MambaMixer>,
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
        let mixer = MambaMixerConfig {
            hidden_size: dim,
            intermediate_size: args.intermediate_size as i32,
            state_size: args.state_size as i32,
            conv_kernel: args.conv_kernel as i32,
            time_step_rank: rank as i32,
            proj_bias: args.use_bias,
            conv_bias: args.use_conv_bias,
            norm: match args.use_bcdt_rms {
                true => TimeStepNorm::Weightless(args.mixer_rms_eps),
                false => TimeStepNorm::None,
            },
        };
        let mixers = (0..args.num_hidden_layers)
            .map(|_| MambaMixer::new(&mixer))
            .collect::<Result<_>>()?;
        Ok(Model {
            // The blocks' norms are the reference's `nn.RMSNorm(hidden_size)`: the default
            // epsilon.
            backbone: Backbone::new(args.vocab_size, args.hidden_size, mixers, 1e-5, 1e-5)?,
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
