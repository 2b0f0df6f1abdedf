//! `qwen2_moe`, after mlx-lm's `models/qwen2_moe.py`: qwen2's attention (biased q/k/v, plain
//! RoPE) with a mixture of experts in every layer: a softmax over all experts, the top
//! `num_experts_per_tok` probabilities (not renormalised), plus a shared expert scaled by a
//! per-token sigmoid gate. As in the reference, every layer is sparse, the head is always its
//! own matrix, and `rope_scaling` must be linear when given and is then not applied.

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
    check_heads, Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
};

/// config.json of a qwen2_moe checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Qwen2MoeArgs {
    /// Type and sizes (`intermediate_size` is read and unused, as in the reference).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Routed experts per layer.
    #[arg(positive)]
    pub num_experts: usize,
    /// Hidden width of one routed expert.
    #[arg(positive)]
    pub moe_intermediate_size: usize,
    /// Hidden width of the shared expert.
    #[arg(positive)]
    pub shared_expert_intermediate_size: usize,
    /// Number of key and value heads (`null`: as many as the query heads).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 1_000_000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Rotate interleaved pairs instead of halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// Must be `{"type": "linear", "factor": ..}` when given; not applied (the reference's).
    pub rope_scaling: Option<Value>,
    /// Read and unused: the head is always its own matrix in the reference.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl Qwen2MoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_heads(
            self.hidden_size,
            self.num_attention_heads,
            self.kv_heads(),
            None,
        )?;
        let keys = ["num_experts", "num_experts_per_tok"];
        check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            let linear = scaling.get("type").and_then(Value::as_str) == Some("linear");
            if scaling.get("factor").is_none() || !linear {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling` must have `factor` and `type` \"linear\" (as the reference \
                     requires)",
                ));
            }
        }
        Ok(())
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &Qwen2MoeArgs) -> Result<Layer, Exception> {
    let (dim, heads) = (args.hidden_size, args.num_attention_heads);
    let head_dim = dim / heads;
    let config = AttentionConfig::new(dim, heads, args.kv_heads(), head_dim).bias(true, false);
    let rope = Rope::plain(head_dim as i32, args.rope_theta, args.rope_traditional, 1.0);
    let attention = Attention::new(&config, Some(rope))?;
    let routing = Routing::SoftmaxTopK {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Negated,
        renormalize: false,
    };
    let (hidden, experts) = (args.moe_intermediate_size, args.num_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?
        .shared_expert(args.shared_expert_intermediate_size, true)?;
    DecoderLayer::new(attention, moe, dim, args.rms_norm_eps)
}

/// The qwen2_moe model: embeddings, sparse decoder layers, final norm, head. Hugging Face
/// checkpoints' per-expert tensors are stacked into the switch layers.
#[mlx_model(
    model_type = "qwen2_moe",
    args = Qwen2MoeArgs,
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Qwen2MoeArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
