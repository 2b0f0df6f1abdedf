//! `qwen` (the first Qwen), after mlx-lm's `models/qwen.py`: GPT-2 names (`transformer.wte`,
//! `transformer.h.N` with `ln_1`, `attn.c_attn` / `c_proj`, `ln_2`, `mlp.w1` / `w2` / `c_proj`,
//! `transformer.ln_f`), mapped onto the shared stack's, around a llama layer: RMS norms,
//! multi-head attention through one fused `c_attn` (queries, keys, values in thirds, always
//! with a bias), RoPE of base 10000 (the reference reads no base), and a SwiGLU MLP of width
//! `intermediate_size / 2` whose gate is `w2`. `no_bias` (on by default) takes the biases off
//! `c_proj`, the MLP and the head; the head is never tied. The reference runs only where
//! `kv_channels * num_attention_heads == hidden_size`, which is checked.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, Decoder, DecoderLayer, Mlp, SelfAttention,
};

/// config.json of a qwen checkpoint; every key has the reference's default.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct QwenArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 2048, positive)]
    pub hidden_size: usize,
    /// Number of attention heads (queries, keys and values alike).
    #[arg(default = 16, positive)]
    pub num_attention_heads: usize,
    /// Number of decoder layers.
    #[arg(default = 24, positive)]
    pub num_hidden_layers: usize,
    /// Width of one head; `kv_channels * num_attention_heads` must be `hidden_size`.
    #[arg(default = 128, positive)]
    pub kv_channels: usize,
    /// Context length of the checkpoint (read; the RoPE does not depend on it).
    #[arg(default = 8192, positive)]
    pub max_position_embeddings: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-6, positive)]
    pub layer_norm_epsilon: f32,
    /// Twice the hidden width of the MLP.
    #[arg(default = 11008, positive)]
    pub intermediate_size: usize,
    /// No biases on `c_proj`, the MLP and the head (`c_attn` always has one).
    #[arg(default = true)]
    pub no_bias: bool,
    /// Number of tokens in the vocabulary.
    #[arg(default = 151936, positive)]
    pub vocab_size: usize,
}

impl QwenArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (dim, heads) = (self.hidden_size, self.num_attention_heads);
        check_heads(dim, heads, heads, None)?;
        let width = self.kv_channels.checked_mul(heads);
        check_width(
            &["kv_channels", "num_attention_heads"],
            "the fused projection (3 * kv_channels * num_attention_heads)",
            width.and_then(|w| w.checked_mul(3)),
        )?;
        if width != Some(dim) {
            return Err(ArgsError::invalid(
                &["kv_channels", "num_attention_heads", "hidden_size"],
                format!(
                    "`kv_channels` ({}) times `num_attention_heads` ({heads}) is not `hidden_size` ({dim})",
                    self.kv_channels
                ),
            ));
        }
        if self.intermediate_size < 2 {
            return Err(ArgsError::invalid(
                &["intermediate_size"],
                "`intermediate_size` must be at least 2 (the MLP is half as wide)",
            ));
        }
        Ok(())
    }
}

/// Multi-head attention through one fused projection: queries, keys, values in thirds.
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    c_attn: Linear,
    #[param]
    c_proj: Linear,
    n_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &QwenArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let head_dim = dim / n_heads;
        Ok(Attention {
            c_attn: Linear::new(dim, 3 * dim, true)?,
            c_proj: Linear::new(dim, dim, !args.no_bias)?,
            n_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::plain(head_dim, 10000.0, false, 1.0),
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let qkv = self.c_attn.forward(x)?.split_equal(3, -1)?;
        let queries = split_heads(&qkv[0], self.n_heads)?;
        let keys = split_heads(&qkv[1], self.n_heads)?;
        let values = split_heads(&qkv[2], self.n_heads)?;
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.c_proj.forward(&output)
    }
}

/// llama's pre-norm layer around the fused attention.
type TransformerBlock = DecoderLayer<Attention, Mlp>;

/// The qwen model: embeddings, decoder layers, final norm, head, its checkpoint names mapped
/// onto the shared stack's.
#[mlx_model(
    model_type = "qwen",
    args = QwenArgs,
    rename("transformer.wte" => "model.embed_tokens"),
    rename("transformer.ln_f" => "model.norm"),
    rename("transformer.h.{n}.ln_1" => "model.layers.{n}.input_layernorm"),
    rename("transformer.h.{n}.ln_2" => "model.layers.{n}.post_attention_layernorm"),
    rename("transformer.h.{n}.attn" => "model.layers.{n}.self_attn"),
    rename("transformer.h.{n}.mlp.w2" => "model.layers.{n}.mlp.gate_proj"),
    rename("transformer.h.{n}.mlp.w1" => "model.layers.{n}.mlp.up_proj"),
    rename("transformer.h.{n}.mlp.c_proj" => "model.layers.{n}.mlp.down_proj"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &QwenArgs) -> Result<Self> {
        let (dim, vocab, eps) = (args.hidden_size, args.vocab_size, args.layer_norm_epsilon);
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let mlp = Mlp::new(dim, args.intermediate_size / 2, !args.no_bias)?;
                DecoderLayer::new(Attention::new(args)?, mlp, dim, eps)
            })
            .collect::<Result<_>>()?;
        let head = Linear::new(dim as i32, vocab as i32, !args.no_bias)?;
        Ok(Model {
            model: Decoder::new(vocab, dim, eps, layers)?,
            lm_head: Some(head),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
