//! `llama4_text`, after mlx-lm's `models/llama4_text.py`. In mlx-lm 0.32.2 this module is a
//! dense decoder (the mixture-of-experts Llama 4 text model lives inside its multimodal
//! `llama4` module): per-layer RoPE (traditional) switched on by `no_rope_layers[i]`, optional
//! weightless RMS norms on queries and keys (`use_qk_norm`), a SwiGLU MLP of
//! `intermediate_size_mlp` (`feed_forward`), and a head named `output` unless tied.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, rope_after};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, Decoder, DecoderArgs, Layer, Mlp, SelfAttention};

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

/// Grouped-query attention with RoPE in some layers and weightless q/k norms.
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    q_proj: Linear,
    #[param]
    k_proj: Linear,
    #[param]
    v_proj: Linear,
    #[param]
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Option<Rope>,
    qk_norm_eps: Option<f32>,
}

impl Attention {
    fn new(args: &Llama4TextArgs, rotates: bool) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let (n_heads, n_kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads as i32,
        );
        let head_dim = args.head_dim as i32;
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, false)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, false)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, false)?,
            o_proj: Linear::new(n_heads * head_dim, dim, false)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: rotates.then(|| Rope::plain(head_dim, args.rope_theta, true, 1.0)),
            qk_norm_eps: args.use_qk_norm.then_some(args.rms_norm_eps),
        })
    }

    /// `[B, L, n * head_dim]` to `[B, n, L, head_dim]`, normed per head when `norm`.
    fn heads(&self, t: Array, n: i32, norm: bool) -> Result<Array> {
        let (b, l) = (t.dim(0), t.dim(1));
        let t = t.reshape(&[b, l, n, -1])?;
        let t = match self.qk_norm_eps.filter(|_| norm) {
            Some(eps) => mlx_rs::fast::rms_norm(&t, None, eps)?,
            None => t,
        };
        t.transpose_axes(&[0, 2, 1, 3])
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = self.heads(self.q_proj.forward(x)?, self.n_heads, true)?;
        let keys = self.heads(self.k_proj.forward(x)?, self.n_kv_heads, true)?;
        let values = self.heads(self.v_proj.forward(x)?, self.n_kv_heads, false)?;
        let (queries, keys) = match &self.rope {
            Some(rope) => (
                rope_after(rope, &queries, cache.as_deref())?,
                rope_after(rope, &keys, cache.as_deref())?,
            ),
            None => (queries, keys),
        };
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

/// The pre-norm layer, its MLP named `feed_forward`.
#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    self_attn: Attention,
    #[param]
    feed_forward: Mlp,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    post_attention_layernorm: RmsNorm,
}

impl Layer for TransformerBlock {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(r)?;
        let r = self
            .feed_forward
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        h.add(r)
    }
}

/// The llama4_text model: embeddings, decoder layers, final norm, head `output` (or the
/// embeddings, tied).
#[mlx_model(model_type = "llama4_text", args = Llama4TextArgs, tied_head = "output")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`.
    #[param]
    output: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Llama4TextArgs) -> std::result::Result<Self, Exception> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                Ok(TransformerBlock {
                    self_attn: Attention::new(args, args.no_rope_layers[i] != 0)?,
                    feed_forward: Mlp::new(dim, args.intermediate_size_mlp, false)?,
                    input_layernorm: RmsNorm::new(dim as i32, eps)?,
                    post_attention_layernorm: RmsNorm::new(dim as i32, eps)?,
                })
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
