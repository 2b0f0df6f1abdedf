//! `olmo2`, after mlx-lm's `models/olmo2.py`: RMSNorms on the whole query and key projections
//! (before splitting heads), norms after attention and after the MLP instead of before, SwiGLU.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Decoder, DecoderArgs, Layer, Mlp, RopeArgs,
};

/// config.json of an olmo2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Olmo2Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Width of one attention head; absent: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Whether the attention projections have biases.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// Any RoPE scaling of the shared RoPE, or transformers v5's `rope_parameters` (which the
    /// reference does not read).
    #[arg(alias = "rope_parameters")]
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Olmo2Args {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
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
    /// Over all query heads at once (`[heads * head_dim]`).
    #[param]
    q_norm: RmsNorm,
    /// Over all key heads at once (`[kv_heads * head_dim]`).
    #[param]
    k_norm: RmsNorm,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &Olmo2Args, rope: Rope) -> Result<Self> {
        let (dim, bias, eps) = (
            args.hidden_size as i32,
            args.attention_bias,
            args.rms_norm_eps,
        );
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, bias)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, bias)?,
            o_proj: Linear::new(n_heads * head_dim, dim, bias)?,
            q_norm: RmsNorm::new(n_heads * head_dim, eps)?,
            k_norm: RmsNorm::new(n_kv_heads * head_dim, eps)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = self.q_norm.forward(&self.q_proj.forward(x)?)?;
        let keys = self.k_norm.forward(&self.k_proj.forward(x)?)?;
        let queries = split_heads(&queries, self.n_heads)?;
        let keys = split_heads(&keys, self.n_kv_heads)?;
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
    post_attention_layernorm: RmsNorm,
    #[param]
    post_feedforward_layernorm: RmsNorm,
}

impl TransformerBlock {
    fn new(args: &Olmo2Args, rope: Rope) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        Ok(TransformerBlock {
            self_attn: Attention::new(args, rope)?,
            mlp: Mlp::new(dim, args.intermediate_size, args.mlp_bias)?,
            post_attention_layernorm: RmsNorm::new(dim as i32, eps)?,
            post_feedforward_layernorm: RmsNorm::new(dim as i32, eps)?,
        })
    }
}

/// Norms after the attention and after the MLP, inside the residual branches.
impl Layer for TransformerBlock {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let r = self
            .post_attention_layernorm
            .forward(&self.self_attn.forward(x, mask, cache)?)?;
        let h = x.add(r)?;
        let r = self
            .post_feedforward_layernorm
            .forward(&self.mlp.forward(&h)?)?;
        h.add(r)
    }
}

/// The olmo2 model: embeddings, decoder layers, final norm, head (or tied embeddings).
/// Checkpoints from transformers may carry rotary buffers, which are dropped.
#[mlx_model(
    model_type = "olmo2",
    args = Olmo2Args,
    drop = "*.self_attn.rotary_emb.inv_freq"
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Olmo2Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?;
        let rope = rope.build(args.head_dim())?;
        let layers = (0..args.num_hidden_layers).map(|_| TransformerBlock::new(args, rope.clone()));
        let layers = layers.collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
