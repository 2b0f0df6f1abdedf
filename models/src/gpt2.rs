//! `gpt2`, after mlx-lm's `models/gpt2.py`: learned absolute positions (`wpe`), pre-norm
//! LayerNorm layers with a fused `c_attn`, a `4 * n_embd` tanh-gelu MLP, biases everywhere, and
//! the token embeddings as the head.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::Activation;
use mlx_models::nn::gpt::{Attention, Block, Mlp};
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::transformer::{check_layers, check_width, Decoder};
use mlx_models::weights::{self, Rule, Weights};

/// config.json of a gpt2 checkpoint, the keys the reference requires. As in the reference,
/// `n_inner`, `activation_function` and `num_key_value_heads` are not read: the MLP is
/// `4 * n_embd` wide with the tanh gelu, and every head has its own keys and values.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Gpt2Args {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Context length; the reference requires it and sizes nothing by it (`n_positions` does).
    #[arg(positive)]
    pub n_ctx: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub n_embd: usize,
    /// Number of attention heads.
    #[arg(positive)]
    pub n_head: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub n_layer: usize,
    /// Number of learned positions (the longest sequence).
    #[arg(positive)]
    pub n_positions: usize,
    /// Epsilon of the layer norms.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
}

impl Gpt2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("n_layer", self.n_layer)?;
        let (dim, heads) = (self.n_embd, self.n_head);
        if !dim.is_multiple_of(heads) {
            let msg = format!("`n_embd` ({dim}) is not divisible by `n_head` ({heads})");
            return Err(ArgsError::invalid(&["n_embd", "n_head"], msg));
        }
        check_width(&["n_embd"], "the MLP (`4 * n_embd`)", dim.checked_mul(4))
    }
}

/// The reference's names of the stack, after the `model.` prefix, as the shared decoder's.
const STACK_NAMES: &[Rule] = &[
    Rule::AddPrefix("model."),
    Rule::Rename {
        from: "model.wte",
        to: "model.embed_tokens",
    },
    Rule::Rename {
        from: "model.wpe",
        to: "model.embed_positions",
    },
    Rule::Rename {
        from: "model.h",
        to: "model.layers",
    },
    Rule::Rename {
        from: "model.ln_f",
        to: "model.norm",
    },
];

/// The gpt2 model: token and position embeddings, decoder layers, final LayerNorm, and the
/// token embeddings as the head.
#[mlx_model(model_type = "gpt2", args = Gpt2Args, sanitize = Self::convert)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Block, LayerNorm>,
}

impl Model {
    /// The reference's sanitize, then the names of the shared stack. A Hugging Face checkpoint
    /// (keys without the `model.` prefix) stores its projections as `Conv1D`s, `[in, out]`:
    /// those of the layers `h.{i}` are transposed and the causal-mask buffers `h.{i}.attn.bias`
    /// dropped; keys with the prefix (converted checkpoints) are only renamed, so converting
    /// twice changes nothing.
    fn convert(&self, weights: &mut Weights) -> Result<()> {
        for i in 0..self.model.num_layers() {
            weights.remove(&format!("h.{i}.attn.bias"));
            for name in ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
                let key = format!("h.{i}.{name}.weight");
                if let Some(w) = weights.remove(&key) {
                    weights.insert(key, w.transpose_axes(&[1, 0])?);
                }
            }
        }
        let raw = std::mem::take(weights);
        *weights = weights::apply(STACK_NAMES, raw, Some(self))
            .map_err(|e| Exception::custom(e.to_string()))?;
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &Gpt2Args) -> Result<Self> {
        let (dim, heads, eps) = (args.n_embd, args.n_head, args.layer_norm_epsilon);
        let layer = || {
            let attn = Attention::new(dim, heads, heads, true)?;
            let mlp = Mlp::new(dim, 4 * dim, true, Activation::GeluApprox)?;
            Block::new(attn, mlp, dim, eps)
        };
        let layers = (0..args.n_layer).map(|_| layer()).collect::<Result<_>>()?;
        let norm = LayerNorm::new(dim as i32, eps, true)?;
        let model = Decoder::with_norm(args.vocab_size, dim, layers, norm)?;
        Ok(Model {
            model: model.with_positions(args.n_positions, dim)?,
        })
    }

    mlx_models::decoder_methods!(model);
}
