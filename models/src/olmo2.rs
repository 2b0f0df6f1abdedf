//! `olmo2`, after mlx-lm's `models/olmo2.py`: RMSNorms on the whole query and key projections
//! (before splitting heads), norms after attention and after the MLP instead of before, SwiGLU.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{ops, Array};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::swiglu;
use mlx_models::nn::blocks::{check_heads, rope_and_attend, split_heads};
use mlx_models::nn::mask::{create_attention_mask, AttentionMask};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::{Rope, RopeConfigError, RopeScaling};

/// config.json of an olmo2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Olmo2Args {
    pub model_type: String,
    #[arg(positive)]
    pub hidden_size: usize,
    #[arg(positive)]
    pub num_hidden_layers: usize,
    #[arg(positive)]
    pub intermediate_size: usize,
    #[arg(positive)]
    pub num_attention_heads: usize,
    #[arg(positive)]
    pub rms_norm_eps: f32,
    #[arg(positive)]
    pub vocab_size: usize,
    #[arg(positive)]
    pub head_dim: Option<usize>,
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    #[arg(default = false)]
    pub attention_bias: bool,
    #[arg(default = false)]
    pub mlp_bias: bool,
    #[arg(default = 10000.0)]
    pub rope_theta: f32,
    #[arg(default = false)]
    pub rope_traditional: bool,
    pub rope_scaling: Option<Value>,
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Olmo2Args {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let explicit_head_dim = self.head_dim.is_some();
        check_heads(self.hidden_size, self.num_attention_heads, &mut self.num_key_value_heads, explicit_head_dim)?;
        self.rope_scaling().map_err(|e| ArgsError::invalid(&["rope_scaling"], e.to_string()))?;
        Ok(())
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE scaling of `rope_scaling` (any type the shared RoPE knows).
    pub fn rope_scaling(&self) -> Result<RopeScaling, RopeConfigError> {
        RopeScaling::from_json(self.rope_scaling.as_ref().unwrap_or(&Value::Null))
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
    #[param]
    q_norm: RmsNorm,
    #[param]
    k_norm: RmsNorm,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &Olmo2Args) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        let bias = args.attention_bias;
        let scaling = args.rope_scaling().map_err(|e| Exception::custom(e.to_string()))?;
        let max_positions = args.max_position_embeddings.map(|m| m as i32);
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, bias)?,
            q_norm: RmsNorm::new(n_heads * head_dim, args.rms_norm_eps)?,
            k_norm: RmsNorm::new(n_kv_heads * head_dim, args.rms_norm_eps)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::new(head_dim, args.rope_theta, args.rope_traditional, &scaling, max_positions)?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let queries = split_heads(&self.q_norm.forward(&self.q_proj.forward(x)?)?, self.n_heads)?;
        let keys = split_heads(&self.k_norm.forward(&self.k_proj.forward(x)?)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let output = rope_and_attend(&queries, &keys, &values, &self.rope, cache, self.scale, mask)?;
        self.o_proj.forward(&output)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    gate_proj: Linear,
    #[param]
    down_proj: Linear,
    #[param]
    up_proj: Linear,
}

impl Mlp {
    fn new(args: &Olmo2Args) -> Result<Self, Exception> {
        let (dim, hidden, bias) = (args.hidden_size as i32, args.intermediate_size as i32, args.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::new(dim, hidden, bias)?,
            down_proj: Linear::new(hidden, dim, bias)?,
            up_proj: Linear::new(dim, hidden, bias)?,
        })
    }

    fn forward(&self, x: &Array) -> Result<Array, Exception> {
        self.down_proj.forward(&swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    post_attention_layernorm: RmsNorm,
    #[param]
    post_feedforward_layernorm: RmsNorm,
}

impl TransformerBlock {
    fn new(args: &Olmo2Args) -> Result<Self, Exception> {
        Ok(TransformerBlock {
            self_attn: Attention::new(args)?,
            mlp: Mlp::new(args)?,
            post_attention_layernorm: RmsNorm::new(args.hidden_size as i32, args.rms_norm_eps)?,
            post_feedforward_layernorm: RmsNorm::new(args.hidden_size as i32, args.rms_norm_eps)?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let r = self.post_attention_layernorm.forward(&self.self_attn.forward(x, mask, cache)?)?;
        let h = ops::add(x, &r)?;
        let r = self.post_feedforward_layernorm.forward(&self.mlp.forward(&h)?)?;
        ops::add(&h, &r)
    }
}

#[derive(Debug, ModuleParameters)]
struct Olmo2Model {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<TransformerBlock>,
    #[param]
    norm: RmsNorm,
}

/// The olmo2 model: embeddings, decoder layers, final norm, head (or tied embeddings).
/// Checkpoints from transformers may carry rotary buffers, which are dropped.
#[mlx_model(model_type = "olmo2", args = Olmo2Args, drop = "*.self_attn.rotary_emb.inv_freq")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Olmo2Model,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Olmo2Args) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size as i32, args.vocab_size as i32);
        let model = Olmo2Model {
            embed_tokens: Embedding::new(vocab, dim)?,
            layers: (0..args.num_hidden_layers).map(|_| TransformerBlock::new(args)).collect::<Result<_, _>>()?,
            norm: RmsNorm::new(dim, args.rms_norm_eps)?,
        };
        let lm_head = if args.tie_word_embeddings { None } else { Some(Linear::new(dim, vocab, false)?) };
        Ok(Model { model, lm_head })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let m = &self.model;
        let mut h = m.embed_tokens.forward(inputs)?;
        let mask = create_attention_mask(inputs.shape()[1], cache.first(), None, false)?;
        let mut caches = cache.iter_mut();
        for layer in &m.layers {
            h = layer.forward(&h, &mask, caches.next())?;
        }
        let h = m.norm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => m.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.layers.iter().map(|_| Cache::kv()).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
