//! `helium` (Kyutai's Helium), after mlx-lm's `models/helium.py`: llama with traditional
//! (interleaved) RoPE without scaling, biases on the q/k/v projections (`attention_bias`, never
//! on o_proj) and optionally on the MLP (`mlp_bias`). The head width is always
//! `hidden_size / num_attention_heads`: config.json's `head_dim` is required but, as in the
//! reference, not read. The reference keeps an `lm_head` even when the embeddings are tied
//! (its checkpoints then carry an unused one); here a tied model has none and drops it.

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

/// config.json of a helium checkpoint; the reference requires every key.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct HeliumArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Read but not used: the heads are `hidden_size / num_attention_heads` wide.
    #[arg(positive)]
    pub head_dim: usize,
    /// Context length of the checkpoint (read; the RoPE does not depend on it).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Biases on the q/k/v projections.
    pub attention_bias: bool,
    /// Biases on the MLP's three projections.
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the head reuses the embedding matrix (a checkpoint's `lm_head` is then dropped).
    pub tie_word_embeddings: bool,
}

impl HeliumArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)
    }

    /// The width of one head, `hidden_size / num_attention_heads`.
    pub fn attention_head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The helium model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(model_type = "helium", args = HeliumArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &HeliumArgs) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (
            args.hidden_size,
            args.attention_head_dim(),
            args.rms_norm_eps,
        );
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention =
            AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(args.attention_bias, false);
        let rope = Rope::plain(head_dim as i32, args.rope_theta, true, 1.0);
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                DecoderLayer::llama(&attention, Some(rope.clone()), hidden, args.mlp_bias, eps)
            })
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
