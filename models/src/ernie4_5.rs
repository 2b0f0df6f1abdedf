//! `ernie4_5` (ERNIE 4.5 dense), after mlx-lm's `models/ernie4_5.py`: llama with traditional
//! (interleaved) RoPE, an optional explicit `head_dim`, and `use_bias` putting biases on every
//! attention and MLP projection.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
};

/// config.json of an ernie4_5 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Ernie45Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Context length of the checkpoint (read; the RoPE is plain).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head; absent or `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Biases on the q/k/v/o projections and on the MLP's three.
    pub use_bias: bool,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    pub tie_word_embeddings: bool,
}

impl Ernie45Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

/// The ernie4_5 model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "ernie4_5",
    args = Ernie45Args,
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
    fn new(args: &Ernie45Args) -> Result<Self, Exception> {
        let (dim, head_dim, bias) = (args.hidden_size, args.head_dim(), args.use_bias);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
        let rope = Rope::plain(head_dim as i32, args.rope_theta, true, 1.0);
        let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, bias, eps))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
