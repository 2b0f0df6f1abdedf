//! `mixtral`, after mlx-lm's `models/mixtral.py`: llama's attention (plain RoPE, optionally
//! traditional) with a mixture of experts in every layer: the top `num_experts_per_tok` gate
//! logits, then a softmax over them. As in the reference, `rope_scaling` is read and not
//! applied.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Attention, AttentionConfig, Decoder, DecoderLayer,
};

/// config.json of a mixtral checkpoint; the defaults are the reference's (Mixtral-8x7B).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MixtralArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(default = 32000, positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub hidden_size: usize,
    /// Hidden width of one expert.
    #[arg(default = 14336, positive)]
    pub intermediate_size: usize,
    /// Number of decoder layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Number of query heads.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Experts each token goes through.
    #[arg(default = 2, positive)]
    pub num_experts_per_tok: usize,
    /// Number of key and value heads.
    #[arg(default = 8, positive)]
    pub num_key_value_heads: usize,
    /// Experts per layer.
    #[arg(default = 8, positive)]
    pub num_local_experts: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-5, positive)]
    pub rms_norm_eps: f32,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 1_000_000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Rotate interleaved pairs instead of halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// Read, and not applied (the reference's RoPE is plain).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl MixtralArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_heads(
            self.hidden_size,
            self.num_attention_heads,
            self.kv_heads(),
            None,
        )?;
        let keys = ["num_local_experts", "num_experts_per_tok"];
        check_experts(self.num_local_experts, self.num_experts_per_tok, keys)
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &MixtralArgs) -> Result<Layer, Exception> {
    let (dim, heads) = (args.hidden_size, args.num_attention_heads);
    let head_dim = dim / heads;
    let config = AttentionConfig::new(dim, heads, args.kv_heads(), head_dim);
    let rope = Rope::plain(head_dim as i32, args.rope_theta, args.rope_traditional, 1.0);
    let attention = Attention::new(&config, Some(rope))?;
    let routing = Routing::TopKSoftmax {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Negated,
        float32_weights: false,
    };
    let (hidden, experts) = (args.intermediate_size, args.num_local_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?;
    DecoderLayer::new(attention, moe, dim, args.rms_norm_eps)
}

/// The mixtral model: embeddings, sparse decoder layers, final norm, head (or tied
/// embeddings). The reference's `block_sparse_moe` is this crate's `mlp`; Hugging Face
/// checkpoints' per-expert `w1` / `w2` / `w3` are stacked into the switch layers.
#[mlx_model(
    model_type = "mixtral",
    args = MixtralArgs,
    tied_head = "lm_head",
    rename("model.layers.{n}.block_sparse_moe" => "model.layers.{n}.mlp"),
    rename("model.layers.{n}.mlp.experts.{e}.w1" => "model.layers.{n}.mlp.experts.{e}.gate_proj"),
    rename("model.layers.{n}.mlp.experts.{e}.w2" => "model.layers.{n}.mlp.experts.{e}.down_proj"),
    rename("model.layers.{n}.mlp.experts.{e}.w3" => "model.layers.{n}.mlp.experts.{e}.up_proj"),
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &MixtralArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
