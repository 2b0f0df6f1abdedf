//! `starcoder2`, after mlx-lm's `models/starcoder2.py`: LayerNorms with bias, biased attention
//! projections, a `c_fc` / `c_proj` MLP with exact gelu, plain RoPE, tied or untied head.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Attention, AttentionConfig, Block, Decoder, DecoderLayer,
};

/// config.json of a starcoder2 checkpoint. As in the reference, `use_bias`, `hidden_act` and
/// `sliding_window` are not read: every projection has a bias, the MLP uses exact gelu, and
/// attention is global.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Starcoder2Args {
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
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Epsilon of the layer norms.
    #[arg(default = 1e-5, positive)]
    pub norm_epsilon: f32,
    /// Number of tokens in the vocabulary.
    #[arg(default = 49152, positive)]
    pub vocab_size: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 100000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Starcoder2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    c_fc: Linear,
    #[param]
    c_proj: Linear,
}

impl Block for Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.c_proj.forward(&gelu(&self.c_fc.forward(x)?)?)
    }
}

/// llama's pre-norm layer with biased projections, the gelu MLP and LayerNorms.
type TransformerBlock = DecoderLayer<Attention, Mlp, LayerNorm>;

fn layer(args: &Starcoder2Args) -> Result<TransformerBlock> {
    let (dim, hidden, eps) = (args.hidden_size, args.intermediate_size, args.norm_epsilon);
    let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
    let head_dim = dim / heads;
    let attention = AttentionConfig::new(dim, heads, kv_heads, head_dim).bias(true, true);
    let rope = Rope::plain(head_dim as i32, args.rope_theta, false, 1.0);
    let (dim, hidden) = (dim as i32, hidden as i32);
    let mlp = Mlp {
        c_fc: Linear::new(dim, hidden, true)?,
        c_proj: Linear::new(hidden, dim, true)?,
    };
    let norm = || LayerNorm::new(dim, eps, true);
    let self_attn = Attention::new(&attention, Some(rope))?;
    Ok(DecoderLayer::with_norms(self_attn, mlp, norm()?, norm()?))
}

/// The starcoder2 model: embeddings, decoder layers, final LayerNorm, head (or tied
/// embeddings).
#[mlx_model(model_type = "starcoder2", args = Starcoder2Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock, LayerNorm>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Starcoder2Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers).map(|_| layer(args));
        let norm = LayerNorm::new(dim as i32, args.norm_epsilon, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
