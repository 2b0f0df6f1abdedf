//! `smollm3`, after mlx-lm's `models/smollm3.py`: llama whose layers listed as 0 in
//! `no_rope_layers` (by default every `no_rope_layer_interval`-th) attend without RoPE.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, check_per_layer, layer_windows, lm_head, AttentionConfig,
    Decoder, DecoderLayer, RopeArgs,
};

/// config.json of a smollm3 checkpoint: llama's keys and the no-RoPE layers.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct SmolLm3Args {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Epsilon of the RMS norms.
    #[arg(positive)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
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
    /// Every this-many-th layer attends without RoPE (unless `no_rope_layers` says otherwise).
    #[arg(default = 4, positive)]
    pub no_rope_layer_interval: usize,
    /// Per layer: nonzero where the layer uses RoPE. Default: 0 for every
    /// `no_rope_layer_interval`-th layer, 1 elsewhere.
    pub no_rope_layers: Option<Vec<i64>>,
}

impl SmolLm3Args {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let (heads, layers) = (self.num_attention_heads, self.num_hidden_layers);
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        check_layer_types(&mut self.layer_types, layers, self.sliding_window)?;
        let interval = self.no_rope_layer_interval;
        let rotates = |i: usize| i64::from(!(i + 1).is_multiple_of(interval));
        let no_rope = self
            .no_rope_layers
            .get_or_insert_with(|| (0..layers).map(rotates).collect());
        check_per_layer("no_rope_layers", no_rope.len(), layers)?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE settings of the layers that rotate.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let (theta, scaling) = (Some(self.rope_theta), self.rope_scaling.as_ref());
        let rope = RopeArgs::from_config(theta, scaling, self.rope_parameters.as_ref())?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }
}

/// The smollm3 model: llama's, with RoPE switched off in the no-RoPE layers.
#[mlx_model(
    model_type = "smollm3",
    args = SmolLm3Args,
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

impl Architecture for Model {
    fn new(args: &SmolLm3Args) -> Result<Self, Exception> {
        let (dim, head_dim) = (args.hidden_size, args.head_dim());
        let kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads);
        let attention = AttentionConfig::new(dim, args.num_attention_heads, kv_heads, head_dim)
            .bias(args.attention_bias, args.attention_bias);
        let rope = args.rope()?;
        let rope = rope.build(head_dim)?;
        let types = args.layer_types.as_deref().unwrap_or_default();
        let use_rope = args.no_rope_layers.as_deref().unwrap_or_default();
        let layers = layer_windows(types, args.sliding_window)
            .zip(use_rope)
            .map(|(window, &use_rope)| {
                let rope = (use_rope != 0).then(|| rope.clone());
                let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
                let layer = DecoderLayer::llama(&attention, rope, hidden, args.mlp_bias, eps);
                Ok(layer?.sliding_window(window))
            })
            .collect::<Result<_, Exception>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, self.lm_head.as_ref())
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }
}
