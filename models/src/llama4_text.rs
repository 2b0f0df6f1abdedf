//! `llama4_text`, after mlx-lm's `models/llama4_text.py`. In mlx-lm 0.32.2 this module is a
//! dense decoder (the mixture-of-experts Llama 4 text model lives inside its multimodal
//! `llama4` module): per-layer RoPE (traditional) switched on by `no_rope_layers[i]`, optional
//! weightless RMS norms on queries and keys (`use_qk_norm`), a SwiGLU MLP of
//! `intermediate_size_mlp` (`feed_forward`), and a head named `output` unless tied.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::llama4::{Llama4Attention, Llama4Layer, QkNorm};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, Decoder, DecoderArgs, Mlp};

/// config.json of a llama4_text checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Llama4TextArgs {
    /// Type and sizes (`intermediate_size` is read and unused, as in the reference).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size_mlp: usize,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Whether the head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Per layer, whether it rotates (1) or not (0): despite its name, a true entry means RoPE.
    pub no_rope_layers: Vec<i64>,
    /// Weightless RMS norms on queries and keys.
    pub use_qk_norm: bool,
}

impl Llama4TextArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        if self.no_rope_layers.len() < self.num_hidden_layers {
            return Err(ArgsError::invalid(
                &["no_rope_layers", "num_hidden_layers"],
                format!(
                    "`no_rope_layers` has {} entries for {} layers",
                    self.no_rope_layers.len(),
                    self.num_hidden_layers
                ),
            ));
        }
        Ok(())
    }
}

/// The llama4_text model: embeddings, decoder layers, final norm, head `output` (or the
/// embeddings, tied).
#[mlx_model(model_type = "llama4_text", args = Llama4TextArgs, tied_head = "output")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Llama4Layer<Mlp>>,
    /// `None` with `tie_word_embeddings`.
    #[param]
    output: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Llama4TextArgs) -> std::result::Result<Self, Exception> {
        let (dim, eps, head_dim) = (args.hidden_size, args.rms_norm_eps, args.head_dim);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let rotates = args.no_rope_layers[i] != 0;
                let rope =
                    rotates.then(|| Rope::plain(head_dim as i32, args.rope_theta, true, 1.0));
                let heads = (args.num_attention_heads, args.num_key_value_heads);
                let self_attn = Llama4Attention::new(dim, heads.0, heads.1, head_dim, false, rope)?
                    .qk_norm(args.use_qk_norm.then_some(QkNorm::BeforeRope(eps)));
                let feed_forward = Mlp::new(dim, args.intermediate_size_mlp, false)?;
                Llama4Layer::new(self_attn, feed_forward, dim, eps)
            })
            .collect::<Result<_>>()?;
        let output = match args.tie_word_embeddings {
            true => None,
            false => Some(Linear::new(dim as i32, args.vocab_size as i32, false)?),
        };
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            output,
        })
    }

    mlx_models::decoder_methods!(model, output);
}
