//! `qwen3_moe`, after mlx-lm's `models/qwen3_moe.py`: qwen3's attention (per-head q/k norms,
//! explicit `head_dim`) with a mixture of experts in every `decoder_sparse_step`-th layer not
//! listed in `mlp_only_layers`: softmax routing to `num_experts_per_tok` experts, renormalised
//! with `norm_topk_prob`. As in the reference, RoPE is plain: `rope_scaling` is read and not
//! applied.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{
    check_experts, qwen_sparse_layer, FeedForward, Routing, SparseMoe, TopK,
};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, Mlp,
};

/// config.json of a qwen3_moe checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Qwen3MoeArgs {
    /// Type and sizes (`intermediate_size`: the dense layers' MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Routed experts per sparse layer (0: every layer dense).
    pub num_experts: usize,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Every this many layers is sparse (counting from 1).
    #[arg(positive)]
    pub decoder_sparse_step: usize,
    /// Layers kept dense whatever the step says.
    pub mlp_only_layers: Vec<usize>,
    /// Hidden width of one expert.
    #[arg(positive)]
    pub moe_intermediate_size: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Renormalise the chosen experts' probabilities to sum to one.
    pub norm_topk_prob: bool,
    /// Read, and not applied (the reference's RoPE is plain).
    pub rope_scaling: Option<Value>,
}

impl Qwen3MoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        if (0..self.num_hidden_layers).any(|i| self.is_sparse(i)) {
            let keys = ["num_experts", "num_experts_per_tok"];
            check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
        }
        Ok(())
    }

    /// Whether layer `i` is a mixture of experts.
    pub fn is_sparse(&self, i: usize) -> bool {
        let (experts, step) = (self.num_experts, self.decoder_sparse_step);
        qwen_sparse_layer(i, experts, step, &self.mlp_only_layers)
    }
}

type Layer = DecoderLayer<Attention, FeedForward>;

fn layer(args: &Qwen3MoeArgs, i: usize) -> Result<Layer, Exception> {
    let (dim, head_dim, eps) = (args.hidden_size, args.head_dim, args.rms_norm_eps);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(dim, heads.0, heads.1, head_dim).qk_norm(eps);
    let rope = Rope::plain(head_dim as i32, args.rope_theta, false, 1.0);
    let attention = Attention::new(&config, Some(rope))?;
    let mlp = if args.is_sparse(i) {
        let routing = Routing::SoftmaxTopK {
            k: args.num_experts_per_tok as i32,
            pick: TopK::Last,
            renormalize: args.norm_topk_prob,
        };
        let (hidden, experts) = (args.moe_intermediate_size, args.num_experts);
        FeedForward::Sparse(SparseMoe::new(dim, hidden, experts, routing)?.cast_back())
    } else {
        FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?)
    };
    DecoderLayer::new(attention, mlp, dim, eps)
}

/// The qwen3_moe model: embeddings, decoder layers (dense or sparse), final norm, head (or
/// tied embeddings). Checkpoints in the Hugging Face layout (one tensor per expert) are
/// stacked into the switch layers.
#[mlx_model(
    model_type = "qwen3_moe",
    args = Qwen3MoeArgs,
    tied_head = "lm_head",
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
    fn new(args: &Qwen3MoeArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
