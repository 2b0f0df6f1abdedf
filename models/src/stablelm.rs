//! `stablelm` (StableLM 2, StableLM 3B 4E1T, StableCode), after mlx-lm's
//! `models/stablelm.py`: LayerNorms, RoPE on `partial_rotary_factor` of each head, optional
//! biases on the q/k/v projections and per-head LayerNorms on queries and keys, attention
//! scores in float32, a SwiGLU MLP, the residual sequential or parallel
//! (`use_parallel_residual`), an untied head.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{Array, Dtype};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::scaled_dot_product_attention;
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::{HeadNorm, LayerNorm};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, check_layers, rotary_dims, Decoder, Layer, Mlp};

/// config.json of a stablelm checkpoint, the keys the reference requires and its two
/// defaults.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct StableLmArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the q/k/v projections have biases (the output projection has none).
    pub use_qkv_bias: bool,
    /// Fraction of each head's features that RoPE rotates.
    pub partial_rotary_factor: f64,
    /// Epsilon of the layer norms.
    #[arg(positive)]
    pub layer_norm_eps: f32,
    /// Whether attention and MLP run side by side on the one normed input (no
    /// `post_attention_layernorm` then).
    #[arg(default = false)]
    pub use_parallel_residual: bool,
    /// Whether queries and keys get per-head LayerNorms.
    #[arg(default = false)]
    pub qk_layernorm: bool,
}

impl StableLmArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        self.rope_dims().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The rotated features of each head: `int(partial_rotary_factor * head_dim)`.
    pub fn rope_dims(&self) -> std::result::Result<i32, ArgsError> {
        rotary_dims(
            "partial_rotary_factor",
            self.head_dim(),
            self.partial_rotary_factor,
        )
    }
}

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
    /// Present with `qk_layernorm`.
    #[param]
    q_layernorm: Option<HeadNorm>,
    #[param]
    k_layernorm: Option<HeadNorm>,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &StableLmArgs, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads as i32;
        let head_dim = args.head_dim() as i32;
        let (bias, eps) = (args.use_qkv_bias, args.layer_norm_eps);
        let norm = |n| {
            args.qk_layernorm
                .then(|| HeadNorm::new(n, head_dim, eps))
                .transpose()
        };
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, false)?,
            q_layernorm: norm(n_heads)?,
            k_layernorm: norm(n_kv_heads)?,
            n_heads,
            n_kv_heads,
            // `math.sqrt(1 / head_dim)`, in double precision as the reference computes it.
            scale: (1.0 / head_dim as f64).sqrt() as f32,
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let per_head = |t: Array, n: i32, norm: &Option<HeadNorm>| -> Result<Array> {
            let t = t.reshape(&[b, l, n, -1])?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            split_heads(&t, n)
        };
        let queries = per_head(self.q_proj.forward(x)?, self.n_heads, &self.q_layernorm)?;
        let keys = per_head(self.k_proj.forward(x)?, self.n_kv_heads, &self.k_layernorm)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let queries = rope_after(&self.rope, &queries, cache.as_deref())?;
        let keys = rope_after(&self.rope, &keys, cache.as_deref())?;
        // As the reference: the cache keeps keys in the model's type; the scores are computed
        // from float32 queries and keys, and the output comes back in the values' type. (A
        // quantized cache, whose keys cannot be cast, is refused, as the reference fails there.)
        let (keys, values) = match cache {
            Some(c) => c.update_and_fetch(&keys, &values)?,
            None => (keys, values),
        };
        let (queries, keys) = (
            queries.as_dtype(Dtype::Float32)?,
            keys.as_dtype(Dtype::Float32)?,
        );
        let output =
            scaled_dot_product_attention(&queries, &keys, &values, self.scale, mask, None)?;
        self.o_proj
            .forward(&merge_heads(&output.as_dtype(values.dtype())?)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct DecoderLayer {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    input_layernorm: LayerNorm,
    /// Absent with `use_parallel_residual`.
    #[param]
    post_attention_layernorm: Option<LayerNorm>,
}

impl DecoderLayer {
    fn new(args: &StableLmArgs, rope: Rope) -> Result<Self> {
        let (dim, eps) = (args.hidden_size as i32, args.layer_norm_eps);
        let post = (!args.use_parallel_residual).then(|| LayerNorm::new(dim, eps, true));
        Ok(DecoderLayer {
            self_attn: Attention::new(args, rope)?,
            mlp: Mlp::new(args.hidden_size, args.intermediate_size, false)?,
            input_layernorm: LayerNorm::new(dim, eps, true)?,
            post_attention_layernorm: post.transpose()?,
        })
    }
}

impl Layer for DecoderLayer {
    /// Parallel: `x + attn(h) + mlp(h)` with `h = input_layernorm(x)`; sequential:
    /// `h = x + attn(input_layernorm(x))`, `h + mlp(post_attention_layernorm(h))`.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = self.input_layernorm.forward(x)?;
        let r = self.self_attn.forward(&h, mask, cache)?;
        match &self.post_attention_layernorm {
            None => x.add(&r)?.add(self.mlp.forward(&h)?),
            Some(norm) => {
                let h = x.add(&r)?;
                h.add(self.mlp.forward(&norm.forward(&h)?)?)
            }
        }
    }
}

/// The stablelm model: embeddings, decoder layers, final LayerNorm, untied head. The
/// reference's per-head LayerNorms (`q_layernorm.norms.{h}.weight`, `[head_dim]` each, as the
/// Hugging Face checkpoints store them too) are stacked into one `[heads, head_dim]` weight.
#[mlx_model(
    model_type = "stablelm",
    args = StableLmArgs,
    stack_experts(
        "model.layers.{n}.self_attn.q_layernorm.norms.{e}" => "model.layers.{n}.self_attn.q_layernorm",
        "model.layers.{n}.self_attn.k_layernorm.norms.{e}" => "model.layers.{n}.self_attn.k_layernorm",
    ),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<DecoderLayer, LayerNorm>,
    #[param]
    lm_head: Linear,
}

impl Architecture for Model {
    fn new(args: &StableLmArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = Rope::plain(args.rope_dims()?, args.rope_theta, false, 1.0);
        let layers = (0..args.num_hidden_layers).map(|_| DecoderLayer::new(args, rope.clone()));
        let norm = LayerNorm::new(dim as i32, args.layer_norm_eps, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            lm_head: Linear::new(dim as i32, vocab as i32, false)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, Some(&self.lm_head))
    }

    mlx_models::decoder_methods!(cache: model);
}
