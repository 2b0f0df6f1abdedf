//! `cohere` (Command-R), after mlx-lm's `models/cohere.py`: attention and MLP in parallel from
//! one input LayerNorm, traditional RoPE, optional per-head LayerNorms on queries and keys,
//! logits from the tied embeddings times `logit_scale`.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::{HeadNorm, LayerNorm};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, Decoder, Layer, Mlp};

/// config.json of a cohere checkpoint (every key has the reference's default).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct CohereArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 8192, positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(default = 40, positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(default = 22528, positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(default = 64, positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(default = 64, positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 8000000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Number of tokens in the vocabulary.
    #[arg(default = 256000, positive)]
    pub vocab_size: usize,
    /// Epsilon of the layer norms.
    #[arg(default = 1e-5, positive)]
    pub layer_norm_eps: f32,
    /// Factor applied to the logits.
    #[arg(default = 0.0625)]
    pub logit_scale: f32,
    /// Whether the attention projections have biases.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Whether the layer norms have biases.
    #[arg(default = false)]
    pub layer_norm_bias: bool,
    /// Whether queries and keys get per-head layer norms.
    #[arg(default = false)]
    pub use_qk_norm: bool,
}

impl CohereArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)
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
    /// Present with `use_qk_norm`.
    #[param]
    q_norm: Option<HeadNorm>,
    #[param]
    k_norm: Option<HeadNorm>,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &CohereArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads as i32;
        let head_dim = dim / n_heads;
        let (bias, eps) = (args.attention_bias, args.layer_norm_eps);
        let norm = |n| {
            args.use_qk_norm
                .then(|| HeadNorm::new(n, head_dim, eps))
                .transpose()
        };
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, bias)?,
            q_norm: norm(n_heads)?,
            k_norm: norm(n_kv_heads)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::plain(head_dim, args.rope_theta, true, 1.0),
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
        let queries = per_head(self.q_proj.forward(x)?, self.n_heads, &self.q_norm)?;
        let keys = per_head(self.k_proj.forward(x)?, self.n_kv_heads, &self.k_norm)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.o_proj.forward(&output)
    }
}

#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    input_layernorm: LayerNorm,
}

impl TransformerBlock {
    fn new(args: &CohereArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        Ok(TransformerBlock {
            self_attn: Attention::new(args)?,
            mlp: Mlp::new(args.hidden_size, args.intermediate_size, false)?,
            input_layernorm: LayerNorm::new(dim, args.layer_norm_eps, args.layer_norm_bias)?,
        })
    }
}

impl Layer for TransformerBlock {
    /// Attention and MLP both read the one normed input; their sum joins the residual.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = self.input_layernorm.forward(x)?;
        let attn_h = self.self_attn.forward(&h, mask, cache)?;
        let ff_h = self.mlp.forward(&h)?;
        attn_h.add(&ff_h)?.add(x)
    }
}

/// The cohere model: embeddings, parallel decoder layers, final LayerNorm, and the embeddings
/// as the head (always tied), scaled by `logit_scale`.
#[mlx_model(model_type = "cohere", args = CohereArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock, LayerNorm>,
    logit_scale: f32,
}

impl Architecture for Model {
    fn new(args: &CohereArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers).map(|_| TransformerBlock::new(args));
        let norm = LayerNorm::new(dim as i32, args.layer_norm_eps, args.layer_norm_bias)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            logit_scale: args.logit_scale,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let logits = self
            .model
            .logits(&self.model.forward(inputs, cache)?, None)?;
        logits.multiply(Array::from_f32(self.logit_scale).as_dtype(logits.dtype())?)
    }

    mlx_models::decoder_methods!(cache: model);
}
