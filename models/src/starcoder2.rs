//! `starcoder2`, after mlx-lm's `models/starcoder2.py`: LayerNorms with bias, biased attention
//! projections, a `c_fc` / `c_proj` MLP with exact gelu, plain RoPE, tied or untied head.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{ops, Array};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu;
use mlx_models::nn::blocks::{check_heads, rope_and_attend, split_heads};
use mlx_models::nn::mask::{create_attention_mask, AttentionMask};
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::Rope;

/// config.json of a starcoder2 checkpoint. As in the reference, `use_bias`, `hidden_act` and
/// `sliding_window` are not read: every projection has a bias, the MLP uses exact gelu, and
/// attention is global.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Starcoder2Args {
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
    pub num_key_value_heads: usize,
    #[arg(default = 1e-5, positive)]
    pub norm_epsilon: f32,
    #[arg(default = 49152, positive)]
    pub vocab_size: usize,
    #[arg(default = 100000.0)]
    pub rope_theta: f32,
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Starcoder2Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_heads(self.hidden_size, self.num_attention_heads, &mut Some(self.num_key_value_heads), false)
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
    rope: Rope,
}

impl Attention {
    fn new(args: &Starcoder2Args) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let (n_heads, n_kv_heads) = (args.num_attention_heads as i32, args.num_key_value_heads as i32);
        let head_dim = dim / n_heads;
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, true)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, true)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, true)?,
            o_proj: Linear::new(n_heads * head_dim, dim, true)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::plain(head_dim, args.rope_theta, false, 1.0),
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let output = rope_and_attend(&queries, &keys, &values, &self.rope, cache, self.scale, mask)?;
        self.o_proj.forward(&output)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    c_fc: Linear,
    #[param]
    c_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array, Exception> {
        self.c_proj.forward(&gelu(&self.c_fc.forward(x)?)?)
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
    #[param]
    post_attention_layernorm: LayerNorm,
}

impl TransformerBlock {
    fn new(args: &Starcoder2Args) -> Result<Self, Exception> {
        let (dim, hidden) = (args.hidden_size as i32, args.intermediate_size as i32);
        Ok(TransformerBlock {
            self_attn: Attention::new(args)?,
            mlp: Mlp { c_fc: Linear::new(dim, hidden, true)?, c_proj: Linear::new(hidden, dim, true)? },
            input_layernorm: LayerNorm::new(dim, args.norm_epsilon, true)?,
            post_attention_layernorm: LayerNorm::new(dim, args.norm_epsilon, true)?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let r = self.self_attn.forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = ops::add(x, &r)?;
        let r = self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?;
        ops::add(&h, &r)
    }
}

#[derive(Debug, ModuleParameters)]
struct Starcoder2Model {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<TransformerBlock>,
    #[param]
    norm: LayerNorm,
}

/// The starcoder2 model: embeddings, decoder layers, final LayerNorm, head (or tied embeddings).
#[mlx_model(model_type = "starcoder2", args = Starcoder2Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Starcoder2Model,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Starcoder2Args) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size as i32, args.vocab_size as i32);
        let model = Starcoder2Model {
            embed_tokens: Embedding::new(vocab, dim)?,
            layers: (0..args.num_hidden_layers).map(|_| TransformerBlock::new(args)).collect::<Result<_, _>>()?,
            norm: LayerNorm::new(dim, args.norm_epsilon, true)?,
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
