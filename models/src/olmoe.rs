//! `olmoe`, after mlx-lm's `models/olmoe.py`: RMS norms over the whole query and key
//! projections (as olmo2), any RoPE scaling, and a mixture of experts in every layer: a softmax
//! over all experts, the top `num_experts_per_tok`, renormalised with `norm_topk_prob`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, lm_head, Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, RopeArgs,
};

/// config.json of an olmoe checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct OlmoeArgs {
    /// Type and sizes (`intermediate_size`: the width of one expert).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Experts per layer.
    #[arg(positive)]
    pub num_experts: usize,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Renormalise the chosen experts' probabilities to sum to one.
    #[arg(default = false)]
    pub norm_topk_prob: bool,
    /// Width of one attention head; absent: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Context length of the checkpoint (for RoPE scalings that need it).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Number of key and value heads (`null`: as many as the query heads).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Whether the attention projections have biases.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Whether the experts' projections have biases.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Rotate interleaved pairs instead of halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it.
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl OlmoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.kv_heads());
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        let keys = ["num_experts", "num_experts_per_tok"];
        check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
        self.rope().map(drop)
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &OlmoeArgs) -> Result<Layer, Exception> {
    let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
    let bias = args.attention_bias;
    let config = AttentionConfig::new(dim, args.num_attention_heads, args.kv_heads(), head_dim)
        .bias(bias, bias)
        .full_qk_norm(eps);
    let rope = args.rope()?.build(head_dim)?;
    let attention = Attention::new(&config, Some(rope))?;
    let routing = Routing::SoftmaxTopK {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Negated,
        renormalize: args.norm_topk_prob,
    };
    let (hidden, experts) = (args.intermediate_size, args.num_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?.expert_bias(args.mlp_bias)?;
    DecoderLayer::new(attention, moe, dim, eps)
}

/// The olmoe model: embeddings, sparse decoder layers, final norm, head (or tied
/// embeddings). Hugging Face checkpoints' per-expert tensors are stacked into the switch
/// layers.
#[mlx_model(
    model_type = "olmoe",
    args = OlmoeArgs,
    tied_head = "lm_head",
    drop = "*.self_attn.rotary_emb.inv_freq",
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
    fn new(args: &OlmoeArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
