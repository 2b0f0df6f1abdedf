//! `llama` (aliases `mistral`, `iquestcoder`, `xverse`), after mlx-lm's `models/llama.py`:
//! grouped-query attention with any RoPE scaling, SwiGLU MLP, optional sliding-window layers.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::{RopeConfigError, RopeScaling};
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, layer_windows, lm_head, AttentionConfig, Decoder, DecoderArgs,
    DecoderLayer, RopeArgs,
};

/// config.json of a llama-family checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct LlamaArgs {
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
    #[arg(alias = "n_kv_heads", positive)]
    pub num_key_value_heads: Option<usize>,
    /// Whether the attention projections have biases.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 10000.0)]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// transformers v5 spelling: the scaling and `rope_theta` in one object.
    pub rope_parameters: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Per layer, `"full_attention"` or `"sliding_attention"`.
    pub layer_types: Option<Vec<String>>,
    /// Tokens a sliding-window layer attends to.
    #[arg(positive)]
    pub sliding_window: Option<usize>,
}

impl LlamaArgs {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let (heads, layers) = (self.num_attention_heads, self.num_hidden_layers);
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        check_layer_types(&mut self.layer_types, layers, self.sliding_window)?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(
            Some(self.rope_theta),
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
        )?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }

    /// The RoPE scaling, from `rope_scaling` or `rope_parameters`.
    pub fn rope_scaling(&self) -> Result<RopeScaling, RopeConfigError> {
        let config = serde_json::json!({
            "rope_scaling": self.rope_scaling,
            "rope_parameters": self.rope_parameters,
        });
        RopeScaling::from_config(&config)
    }

    /// `rope_theta`, which `rope_parameters` may carry instead.
    pub fn rope_base(&self) -> f32 {
        self.rope().map_or(self.rope_theta, |r| r.base)
    }
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
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// Llama's model, with RoPE only in the layers `rotates` keeps (all of them for llama;
    /// smollm3 switches it off in some).
    pub(crate) fn with_rope_in(
        args: &LlamaArgs,
        rotates: impl Fn(usize) -> bool,
    ) -> Result<Self, Exception> {
        let (dim, head_dim) = (args.hidden_size, args.head_dim());
        let kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads);
        let attention = AttentionConfig::new(dim, args.num_attention_heads, kv_heads, head_dim)
            .bias(args.attention_bias, args.attention_bias);
        let rope = args.rope()?.build(head_dim)?;
        let types = args.layer_types.as_deref().unwrap_or_default();
        let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
        let layers = layer_windows(types, args.sliding_window)
            .enumerate()
            .map(|(i, window)| {
                let rope = rotates(i).then(|| rope.clone());
                let layer = DecoderLayer::llama(&attention, rope, hidden, args.mlp_bias, eps)?;
                Ok(layer.sliding_window(window))
            })
            .collect::<Result<_, Exception>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    /// The decoder and the head (`None` when tied), for a model that is llama's under
    /// another name.
    pub(crate) fn into_parts(self) -> (Decoder, Option<Linear>) {
        (self.model, self.lm_head)
    }
}

impl Architecture for Model {
    fn new(args: &LlamaArgs) -> Result<Self, Exception> {
        Self::with_rope_in(args, |_| true)
    }

    mlx_models::decoder_methods!(model, lm_head);
}
