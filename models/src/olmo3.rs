//! `olmo3`, after mlx-lm's `models/olmo3.py`: olmo2's layer (RMS norms on the whole query and
//! key projections, norms after the attention and after the MLP inside the residual branches)
//! with sliding-window layers: `layer_types` (by default every fourth layer full, the others
//! sliding) picks, per layer, a window of `sliding_window` with a rotating cache and plain RoPE,
//! or full attention with the RoPE scaling of `rope_scaling`. Biases on all four attention
//! projections with `attention_bias`. (The reference needs at least one layer of each type;
//! here a stack of full layers also runs.)

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, check_layers, layer_windows, lm_head, Attention,
    AttentionConfig, Decoder, DecoderArgs, Mlp, PostNormLayer, RopeArgs,
};

/// config.json of an olmo3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Olmo3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Positions a sliding-window layer attends to, itself included.
    #[arg(positive)]
    pub sliding_window: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Biases on the q/k/v and output projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Per layer, `"full_attention"` or `"sliding_attention"`; absent: every fourth layer full.
    pub layer_types: Option<Vec<String>>,
    /// Number of key and value heads; absent: `num_attention_heads`.
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one attention head; absent or `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// RoPE scaling of the full-attention layers (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl Olmo3Args {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        let every_fourth_full = |i: usize| match (i + 1).is_multiple_of(4) {
            true => "full_attention".to_string(),
            false => "sliding_attention".to_string(),
        };
        self.layer_types
            .get_or_insert_with(|| (0..layers).map(every_fourth_full).collect());
        check_layer_types(&mut self.layer_types, layers, Some(self.sliding_window))?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE of the full-attention layers (the sliding ones rotate with `rope_theta` alone).
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// A layer of this model: norms after the attention and after the MLP (the shared
/// post-norm layer).
type TransformerBlock = PostNormLayer;

fn block(args: &Olmo3Args, rope: Rope, window: Option<usize>) -> Result<TransformerBlock> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads);
    let bias = args.attention_bias;
    let attention = AttentionConfig::new(dim, args.num_attention_heads, kv_heads, args.head_dim())
        .bias(bias, bias)
        .full_qk_norm(eps);
    TransformerBlock::new(
        Attention::new(&attention, Some(rope))?,
        Mlp::new(dim, args.intermediate_size, false)?,
        dim,
        eps,
        window.map(|w| w as i32),
    )
}

/// The olmo3 model: embeddings, sliding-window and full-attention layers, final norm, head
/// (or tied embeddings).
#[mlx_model(model_type = "olmo3", args = Olmo3Args, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Olmo3Args) -> Result<Self> {
        let (dim, vocab, head_dim) = (args.hidden_size, args.vocab_size, args.head_dim());
        let full_rope = args.rope()?.build(head_dim)?;
        let sliding_rope = Rope::plain(head_dim as i32, args.rope_theta, false, 1.0);
        let types = args.layer_types.as_deref().unwrap_or_default();
        let layers = layer_windows(types, Some(args.sliding_window))
            .map(|window| {
                let rope = match window {
                    Some(_) => sliding_rope.clone(),
                    None => full_rope.clone(),
                };
                block(args, rope, window)
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
