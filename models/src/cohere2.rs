//! `cohere2` (Command R7B, Command A), after mlx-lm's `models/cohere2.py`: cohere's parallel
//! block (attention and MLP from one LayerNorm), every `sliding_window_pattern`-th layer global
//! (no positional encoding, a growing cache), the others sliding-window layers with traditional
//! RoPE and a rotating cache of `sliding_window`; biases on all four attention projections
//! with `attention_bias`; in float16 the scores are computed from float32 queries; logits from
//! the tied embeddings times `logit_scale`.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{Array, Dtype};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, check_layers, Decoder, Layer, Mlp};

/// config.json of a cohere2 checkpoint (every key has the reference's default).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Cohere2Args {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub hidden_size: usize,
    /// Width of one attention head (`head_dim * num_attention_heads` must be `hidden_size`).
    #[arg(default = 128, positive)]
    pub head_dim: usize,
    /// Number of decoder layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(default = 14336, positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(default = 8, positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the sliding-window layers' RoPE (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 50000.0, positive, alias = "rope_parameters.rope_theta")]
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
    /// Whether the four attention projections have biases.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Whether the layer norms have biases.
    #[arg(default = false)]
    pub layer_norm_bias: bool,
    /// Tokens a sliding-window layer attends to.
    #[arg(default = 4096, positive)]
    pub sliding_window: usize,
    /// One layer in this many (the last of each group) attends to the whole sequence.
    #[arg(default = 4, positive)]
    pub sliding_window_pattern: usize,
}

impl Cohere2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        if heads.checked_mul(self.head_dim) != Some(self.hidden_size) {
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads", "head_dim"],
                format!(
                    "`num_attention_heads` {heads} heads of `head_dim` {} are not `hidden_size` {}",
                    self.head_dim, self.hidden_size
                ),
            ));
        }
        // The reference makes the global layers' mask from layer `sliding_window_pattern - 1`.
        if self.sliding_window_pattern > self.num_hidden_layers {
            return Err(ArgsError::invalid(
                &["sliding_window_pattern", "num_hidden_layers"],
                format!(
                    "`sliding_window_pattern` {} exceeds `num_hidden_layers` {}: no global layer",
                    self.sliding_window_pattern, self.num_hidden_layers
                ),
            ));
        }
        Ok(())
    }

    /// Whether layer `i` is global (full attention, no RoPE).
    pub fn is_global(&self, i: usize) -> bool {
        i % self.sliding_window_pattern == self.sliding_window_pattern - 1
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
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    /// `None` in the global layers.
    rope: Option<Rope>,
}

impl Attention {
    fn new(args: &Cohere2Args, rope: Option<Rope>) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let (n_heads, n_kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads as i32,
        );
        let (head_dim, bias) = (args.head_dim as i32, args.attention_bias);
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, bias)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let (queries, keys) = match &self.rope {
            Some(rope) => (
                rope_after(rope, &queries, cache.as_deref())?,
                rope_after(rope, &keys, cache.as_deref())?,
            ),
            None => (queries, keys),
        };
        // As the reference: float16 queries attend in float32, the output back in float16.
        let dtype = queries.dtype();
        let q = match dtype {
            Dtype::Float16 => queries.as_dtype(Dtype::Float32)?,
            _ => queries,
        };
        let output = attend(&q, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj.forward(&merge_heads(&output.as_dtype(dtype)?)?)
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
    /// `Some` in the sliding-window layers.
    window: Option<i32>,
}

impl TransformerBlock {
    fn new(args: &Cohere2Args, i: usize) -> Result<Self> {
        let global = args.is_global(i);
        let rope = (!global).then(|| Rope::plain(args.head_dim as i32, args.rope_theta, true, 1.0));
        let dim = args.hidden_size as i32;
        Ok(TransformerBlock {
            self_attn: Attention::new(args, rope)?,
            mlp: Mlp::new(args.hidden_size, args.intermediate_size, false)?,
            input_layernorm: LayerNorm::new(dim, args.layer_norm_eps, args.layer_norm_bias)?,
            window: (!global).then_some(args.sliding_window as i32),
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

    fn window(&self) -> Option<i32> {
        self.window
    }
}

/// The cohere2 model: embeddings, sliding-window and global parallel layers, final LayerNorm,
/// and the embeddings as the head (always tied), scaled by `logit_scale`.
#[mlx_model(model_type = "cohere2", args = Cohere2Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock, LayerNorm>,
    logit_scale: f32,
}

impl Architecture for Model {
    fn new(args: &Cohere2Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers).map(|i| TransformerBlock::new(args, i));
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
