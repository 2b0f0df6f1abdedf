//! `gpt_bigcode` (StarCoder, SantaCoder), after mlx-lm's `models/gpt_bigcode.py`: gpt2's
//! layer with multi-query attention (one key/value head unless `multi_query` is false), an
//! exact-gelu MLP of `n_inner`, optional biases, and a tied or untied head.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::Activation;
use mlx_models::nn::gpt::{Attention, Block, Mlp};
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{check_layers, check_width, lm_head, Decoder};

/// config.json of a gpt_bigcode checkpoint. As in the reference, `num_key_value_heads` is
/// not read (`multi_query` alone decides the key/value heads) nor `activation_function`: the
/// MLP uses exact gelu, where released configs (SantaCoder's, for one) name the tanh
/// approximation; the reference's choice, kept here.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GptBigCodeArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub n_embd: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub n_layer: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub n_inner: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub n_head: usize,
    /// Number of learned positions (the longest sequence).
    #[arg(positive)]
    pub n_positions: usize,
    /// Epsilon of the layer norms.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Whether all query heads share one key/value head.
    #[arg(default = true)]
    pub multi_query: bool,
    /// Whether the attention projections have biases.
    #[arg(default = true)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[arg(default = true)]
    pub mlp_bias: bool,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl GptBigCodeArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("n_layer", self.n_layer)?;
        let (dim, heads) = (self.n_embd, self.n_head);
        if !dim.is_multiple_of(heads) {
            let msg = format!("`n_embd` ({dim}) is not divisible by `n_head` ({heads})");
            return Err(ArgsError::invalid(&["n_embd", "n_head"], msg));
        }
        let fused = dim.checked_add(2 * self.n_kv_heads() * (dim / heads));
        check_width(&["n_embd", "multi_query"], "the fused `c_attn`", fused)
    }

    /// 1 with `multi_query`, else `n_head`.
    pub fn n_kv_heads(&self) -> usize {
        if self.multi_query {
            1
        } else {
            self.n_head
        }
    }
}

/// The gpt_bigcode model: token and position embeddings, decoder layers, final LayerNorm,
/// head (or tied embeddings). The stack's names are the shared decoder's.
#[mlx_model(
    model_type = "gpt_bigcode",
    args = GptBigCodeArgs,
    rename("transformer.wte" => "transformer.embed_tokens"),
    rename("transformer.wpe" => "transformer.embed_positions"),
    rename("transformer.h" => "transformer.layers"),
    rename("transformer.ln_f" => "transformer.norm"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    transformer: Decoder<Block, LayerNorm>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &GptBigCodeArgs) -> Result<Self> {
        let (dim, eps, vocab) = (args.n_embd, args.layer_norm_epsilon, args.vocab_size);
        let layer = || {
            let attn = Attention::new(dim, args.n_head, args.n_kv_heads(), args.attention_bias)?;
            let mlp = Mlp::new(dim, args.n_inner, args.mlp_bias, Activation::Gelu)?;
            Block::new(attn, mlp, dim, eps)
        };
        let layers = (0..args.n_layer).map(|_| layer()).collect::<Result<_>>()?;
        let norm = LayerNorm::new(dim as i32, eps, true)?;
        let transformer = Decoder::with_norm(vocab, dim, layers, norm)?;
        Ok(Model {
            transformer: transformer.with_positions(args.n_positions, dim)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(transformer, lm_head);
}
