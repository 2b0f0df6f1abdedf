//! `phi` (Phi-1, Phi-1.5, Phi-2), after mlx-lm's `models/phi.py`: attention and MLP in
//! parallel from one LayerNorm, RoPE on `partial_rotary_factor` of each head, biases on every
//! projection, a tanh-gelu `fc1` / `fc2` MLP, scores computed from float32 queries, and an
//! untied head with a bias.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::{Array, Dtype};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu_approx;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, check_layers, rotary_dims, Decoder, Layer};

/// config.json of a phi checkpoint (every key has the reference's default).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct PhiArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    #[arg(default = "phi".to_owned())]
    pub model_type: String,
    /// Context length; sizes nothing (RoPE has no scaling).
    #[arg(default = 2048, positive)]
    pub max_position_embeddings: usize,
    /// Number of tokens in the vocabulary.
    #[arg(default = 51200, positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(default = 2560, positive)]
    pub hidden_size: usize,
    /// Number of query heads.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Number of decoder layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Number of key and value heads; absent or `null`: `num_attention_heads`. (The
    /// reference's default for an absent key is 32, which only loads where there are 32
    /// heads, and then agrees.)
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Fraction of each head's features that RoPE rotates.
    #[arg(default = 0.4)]
    pub partial_rotary_factor: f64,
    /// Hidden width of the MLP.
    #[arg(default = 10240, positive)]
    pub intermediate_size: usize,
    /// Epsilon of the layer norms.
    #[arg(default = 1e-5, positive)]
    pub layer_norm_eps: f32,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
}

impl PhiArgs {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
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
struct PhiAttention {
    #[param]
    q_proj: Linear,
    #[param]
    k_proj: Linear,
    #[param]
    v_proj: Linear,
    #[param]
    dense: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl PhiAttention {
    fn new(args: &PhiArgs, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        Ok(PhiAttention {
            q_proj: Linear::new(dim, n_heads * head_dim, true)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, true)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, true)?,
            dense: Linear::new(n_heads * head_dim, dim, true)?,
            n_heads,
            n_kv_heads,
            // `math.sqrt(1 / head_dim)`, in double precision as the reference computes it.
            scale: (1.0 / head_dim as f64).sqrt() as f32,
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let queries = rope_after(&self.rope, &queries, cache.as_deref())?;
        let keys = rope_after(&self.rope, &keys, cache.as_deref())?;
        // As the reference: the queries in float32 (keys and values as they are), the output
        // back in the values' type.
        let queries = queries.as_dtype(Dtype::Float32)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.dense
            .forward(&merge_heads(&output.as_dtype(values.dtype())?)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct PhiMlp {
    #[param]
    fc1: Linear,
    #[param]
    fc2: Linear,
}

#[derive(Debug, ModuleParameters)]
struct PhiDecoderLayer {
    #[param]
    self_attn: PhiAttention,
    #[param]
    input_layernorm: LayerNorm,
    #[param]
    mlp: PhiMlp,
}

impl PhiDecoderLayer {
    fn new(args: &PhiArgs, rope: Rope) -> Result<Self> {
        let (dim, hidden) = (args.hidden_size as i32, args.intermediate_size as i32);
        Ok(PhiDecoderLayer {
            self_attn: PhiAttention::new(args, rope)?,
            input_layernorm: LayerNorm::new(dim, args.layer_norm_eps, true)?,
            mlp: PhiMlp {
                fc1: Linear::new(dim, hidden, true)?,
                fc2: Linear::new(hidden, dim, true)?,
            },
        })
    }
}

impl Layer for PhiDecoderLayer {
    /// `attn(h) + mlp(h) + x` with `h = input_layernorm(x)`.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = self.input_layernorm.forward(x)?;
        let attn_h = self.self_attn.forward(&h, mask, cache)?;
        let ff_h = self
            .mlp
            .fc2
            .forward(&gelu_approx(&self.mlp.fc1.forward(&h)?)?)?;
        attn_h.add(&ff_h)?.add(x)
    }
}

/// The phi model: embeddings, parallel decoder layers, final LayerNorm (the reference's
/// `final_layernorm`, the shared stack's `norm`), head with a bias.
#[mlx_model(
    model_type = "phi",
    args = PhiArgs,
    rename("model.final_layernorm" => "model.norm"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<PhiDecoderLayer, LayerNorm>,
    #[param]
    lm_head: Linear,
}

impl Architecture for Model {
    fn new(args: &PhiArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = Rope::plain(args.rope_dims()?, args.rope_theta, false, 1.0);
        let layers = (0..args.num_hidden_layers).map(|_| PhiDecoderLayer::new(args, rope.clone()));
        let norm = LayerNorm::new(dim as i32, args.layer_norm_eps, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            lm_head: Linear::new(dim as i32, vocab as i32, true)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, Some(&self.lm_head))
    }

    mlx_models::decoder_methods!(cache: model);
}
