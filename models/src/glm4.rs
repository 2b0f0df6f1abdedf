//! `glm4` (GLM-4-0414), after mlx-lm's `models/glm4.py`: four RMS norms per layer (before and
//! after the attention, before and after the MLP: `input_layernorm`,
//! `post_self_attn_layernorm`, `post_attention_layernorm`, `post_mlp_layernorm`), RoPE on
//! `partial_rotary_factor` of each head (interleaved unless `rope_traditional` is false),
//! optional biases on the q/k/v projections, the gate and up projections fused in one
//! `gate_up_proj` (as Hugging Face checkpoints store them), and an untied head.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, rotary_dims, Attention, AttentionConfig, Decoder,
    DecoderArgs, FusedMlp, Layer,
};

/// config.json of a glm4 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Glm4Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Biases on the q/k/v projections.
    pub attention_bias: bool,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// The share of each head that RoPE rotates.
    pub partial_rotary_factor: f64,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features (the default) instead of halves.
    #[arg(default = true)]
    pub rope_traditional: bool,
    /// Context length of the checkpoint (read; the RoPE is plain).
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
}

impl Glm4Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        let fused = self.intermediate_size.checked_mul(2);
        check_width(
            &["intermediate_size"],
            "the fused gate_up_proj (2 * intermediate_size)",
            fused,
        )?;
        self.rope_dims().map(drop)
    }

    /// The rotated features of each head: `int(head_dim * partial_rotary_factor)`.
    pub fn rope_dims(&self) -> std::result::Result<i32, ArgsError> {
        rotary_dims(
            "partial_rotary_factor",
            self.head_dim,
            self.partial_rotary_factor,
        )
    }
}

/// A layer with a norm on each side of the attention and of the MLP:
/// `h = x + post_self_attn_layernorm(attn(input_layernorm(x)))`,
/// `out = h + post_mlp_layernorm(mlp(post_attention_layernorm(h)))`.
#[derive(Debug, ModuleParameters)]
struct Glm4DecoderLayer {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: FusedMlp,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    post_self_attn_layernorm: RmsNorm,
    /// The norm before the MLP (so named in the checkpoints).
    #[param]
    post_attention_layernorm: RmsNorm,
    #[param]
    post_mlp_layernorm: RmsNorm,
}

impl Glm4DecoderLayer {
    fn new(args: &Glm4Args, rope: Rope) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let config = AttentionConfig::new(dim, heads.0, heads.1, args.head_dim)
            .bias(args.attention_bias, false);
        let norm = || RmsNorm::new(dim as i32, eps);
        Ok(Glm4DecoderLayer {
            self_attn: Attention::new(&config, Some(rope))?,
            mlp: FusedMlp::new(dim, args.intermediate_size)?,
            input_layernorm: norm()?,
            post_self_attn_layernorm: norm()?,
            post_attention_layernorm: norm()?,
            post_mlp_layernorm: norm()?,
        })
    }
}

impl Layer for Glm4DecoderLayer {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(self.post_self_attn_layernorm.forward(&r)?)?;
        let r = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        self.post_mlp_layernorm.forward(&r)?.add(&h)
    }
}

/// The glm4 model: embeddings, four-norm decoder layers, final norm, head (always untied, as
/// in the reference).
#[mlx_model(model_type = "glm4", args = Glm4Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Glm4DecoderLayer>,
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Glm4Args) -> std::result::Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = Rope::plain(
            args.rope_dims()?,
            args.rope_theta,
            args.rope_traditional,
            1.0,
        );
        let layers = (0..args.num_hidden_layers)
            .map(|_| Glm4DecoderLayer::new(args, rope.clone()))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
