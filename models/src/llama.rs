//! `llama` (aliases `mistral`, `iquestcoder`, `xverse`), after mlx-lm's `models/llama.py`:
//! grouped-query attention with any RoPE scaling, SwiGLU MLP, optional sliding-window layers.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{ops, Array};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::swiglu;
use mlx_models::nn::attention::attend;
use mlx_models::nn::mask::{create_attention_mask, AttentionMask};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::{Rope, RopeScaling};

/// config.json of a llama-family checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct LlamaArgs {
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
    #[arg(alias = "n_kv_heads", positive)]
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
    /// transformers v5 spelling: the scaling and `rope_theta` in one object.
    pub rope_parameters: Option<Value>,
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    pub layer_types: Option<Vec<String>>,
    #[arg(positive)]
    pub sliding_window: Option<usize>,
}

impl LlamaArgs {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        if heads % kv_heads != 0 {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "num_key_value_heads"],
                format!("`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"),
            ));
        }
        if self.head_dim.is_none() && self.hidden_size % heads != 0 {
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                format!("`hidden_size` ({}) is not divisible by `num_attention_heads` ({heads})", self.hidden_size),
            ));
        }
        let layers = self.num_hidden_layers;
        let types = self.layer_types.get_or_insert_with(|| vec!["full_attention".into(); layers]);
        if types.len() != layers {
            return Err(ArgsError::invalid(
                &["layer_types", "num_hidden_layers"],
                format!("`layer_types` has {} entries for {layers} layers", types.len()),
            ));
        }
        if let Some(bad) = types.iter().find(|t| *t != "full_attention" && *t != "sliding_attention") {
            return Err(ArgsError::invalid(&["layer_types"], format!("unknown layer type {bad:?}")));
        }
        if !types.iter().any(|t| t == "full_attention") {
            return Err(ArgsError::invalid(&["layer_types"], "no `full_attention` layer".to_string()));
        }
        if types.iter().any(|t| t == "sliding_attention") && self.sliding_window.is_none() {
            return Err(ArgsError::invalid(
                &["layer_types", "sliding_window"],
                "`sliding_attention` layers need `sliding_window`".to_string(),
            ));
        }
        self.rope_scaling()
            .map_err(|e| ArgsError::invalid(&["rope_scaling"], e.to_string()))?;
        Ok(())
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    fn rope_config(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("rope_theta".into(), Value::from(self.rope_theta));
        if let Some(v) = &self.rope_scaling {
            map.insert("rope_scaling".into(), v.clone());
        }
        if let Some(v) = &self.rope_parameters {
            map.insert("rope_parameters".into(), v.clone());
        }
        Value::Object(map)
    }

    /// The RoPE scaling, from `rope_scaling` or `rope_parameters`.
    pub fn rope_scaling(&self) -> Result<RopeScaling, mlx_models::nn::rope::RopeConfigError> {
        RopeScaling::from_config(&self.rope_config())
    }

    /// `rope_theta`, which `rope_parameters` may carry instead.
    pub fn rope_base(&self) -> f32 {
        RopeScaling::theta_from_config(&self.rope_config()).unwrap_or(self.rope_theta)
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
    fn new(args: &LlamaArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        let bias = args.attention_bias;
        let scaling = args.rope_scaling().map_err(|e| Exception::custom(e.to_string()))?;
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, bias)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::new(
                head_dim,
                args.rope_base(),
                args.rope_traditional,
                &scaling,
                args.max_position_embeddings.map(|m| m as i32),
            )?,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let heads = |t: Array, n: i32| t.reshape(&[b, l, n, -1])?.transpose_axes(&[0, 2, 1, 3]);
        let queries = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let keys = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = heads(self.v_proj.forward(x)?, self.n_kv_heads)?;

        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let queries = self.rope.forward(&queries, offset)?;
        let keys = self.rope.forward(&keys, offset)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj.forward(&output.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?)
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
    fn new(args: &LlamaArgs) -> Result<Self, Exception> {
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
    input_layernorm: RmsNorm,
    #[param]
    post_attention_layernorm: RmsNorm,
    use_sliding: bool,
}

impl TransformerBlock {
    fn new(args: &LlamaArgs, use_sliding: bool) -> Result<Self, Exception> {
        Ok(TransformerBlock {
            self_attn: Attention::new(args)?,
            mlp: Mlp::new(args)?,
            input_layernorm: RmsNorm::new(args.hidden_size as i32, args.rms_norm_eps)?,
            post_attention_layernorm: RmsNorm::new(args.hidden_size as i32, args.rms_norm_eps)?,
            use_sliding,
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
struct LlamaModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<TransformerBlock>,
    #[param]
    norm: RmsNorm,
    sliding_window: Option<i32>,
}

/// The llama model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "llama",
    aliases = ["mistral", "iquestcoder", "xverse"],
    args = LlamaArgs,
    drop = "*.self_attn.rotary_emb.inv_freq",
    tied_head = "lm_head",
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: LlamaModel,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &LlamaArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size as i32, args.vocab_size as i32);
        let types = args.layer_types.clone().unwrap_or_default();
        let model = LlamaModel {
            embed_tokens: Embedding::new(vocab, dim)?,
            layers: types
                .iter()
                .map(|t| TransformerBlock::new(args, t == "sliding_attention"))
                .collect::<Result<_, _>>()?,
            norm: RmsNorm::new(dim, args.rms_norm_eps)?,
            sliding_window: args.sliding_window.map(|w| w as i32),
        };
        let lm_head = if args.tie_word_embeddings { None } else { Some(Linear::new(dim, vocab, false)?) };
        Ok(Model { model, lm_head })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let m = &self.model;
        let mut h = m.embed_tokens.forward(inputs)?;
        let n = inputs.shape()[1];
        let layer_cache = |i: usize| cache.get(i);
        // As the reference: one mask from the first full-attention layer's cache, one from the
        // first sliding layer's (with the window).
        let fa_idx = m.layers.iter().position(|l| !l.use_sliding).unwrap_or(0);
        let fa_mask = create_attention_mask(n, layer_cache(fa_idx), None, false)?;
        let swa_mask = match m.layers.iter().position(|l| l.use_sliding) {
            Some(i) => create_attention_mask(n, layer_cache(i), m.sliding_window, false)?,
            None => AttentionMask::None,
        };
        let mut caches = cache.iter_mut();
        for layer in &m.layers {
            let mask = if layer.use_sliding { &swa_mask } else { &fa_mask };
            h = layer.forward(&h, mask, caches.next())?;
        }
        let h = m.norm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => m.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        let window = self.model.sliding_window.unwrap_or(0);
        self.model
            .layers
            .iter()
            .map(|l| if l.use_sliding { Cache::rotating(window, 0) } else { Cache::kv() })
            .collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
