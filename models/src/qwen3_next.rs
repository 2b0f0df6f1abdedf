//! `qwen3_next`, after mlx-lm's `models/qwen3_next.py`: a hybrid stack where every
//! `full_attention_interval`-th layer is full attention with a sigmoid output gate, per-head
//! q/k norms and RoPE on `partial_rotary_factor` of each head, and the others are gated delta
//! net layers (linear attention: a causal depthwise convolution and the gated delta rule, their
//! states in an arrays cache of two slots). Feed-forwards: a mixture of experts (softmax top-k,
//! `norm_topk_prob`) with a sigmoid-gated shared expert in every `decoder_sparse_step`-th
//! layer not in `mlp_only_layers`, a dense MLP elsewhere. The shared pieces are in
//! `mlx_models::nn::qwen3_next` and `mlx_models::nn::gated_delta`.
//!
//! Sanitize: multi-token-prediction weights (`mtp.*`) are dropped; a Hugging Face checkpoint
//! (told, as the reference tells it, by per-expert `experts.0.up_proj` tensors) has its experts
//! stacked and its zero-centred norms shifted by one, once; conv weights `[C, 1, K]` are turned
//! into MLX's `[C, K, 1]`. The reference turns those only in a checkpoint with per-expert
//! tensors (a dense one in that layout fails to load there); here whatever their layout.

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
use mlx_models::nn::qwen3_next::{
    check_linear_attention, shift_norms, GatedAttention, GatedDeltaConfig, GatedDeltaNet,
    HybridLayer, HybridModel,
};
use mlx_models::nn::ssm::conv1d_weights_to_mlx;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, rotary_dims, DecoderArgs, Mlp, RopeArgs,
};
use mlx_models::weights::{apply, Rule, Weights};

/// config.json of a qwen3_next checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Qwen3NextArgs {
    /// Type and sizes (`intermediate_size`: the dense layers' MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Key and value heads of the attention layers.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Value heads of the linear layers.
    #[arg(positive)]
    pub linear_num_value_heads: usize,
    /// Key (and query) heads of the linear layers.
    #[arg(positive)]
    pub linear_num_key_heads: usize,
    /// Width of one key head of the linear layers.
    #[arg(positive)]
    pub linear_key_head_dim: usize,
    /// Width of one value head of the linear layers.
    #[arg(positive)]
    pub linear_value_head_dim: usize,
    /// Taps of the linear layers' convolution.
    #[arg(positive)]
    pub linear_conv_kernel_dim: usize,
    /// Routed experts per sparse layer (0: every layer dense).
    pub num_experts: usize,
    /// Experts each token goes through.
    pub num_experts_per_tok: usize,
    /// Every this many layers is sparse (counting from 1).
    pub decoder_sparse_step: usize,
    /// Hidden width of the shared expert.
    pub shared_expert_intermediate_size: usize,
    /// Layers kept dense whatever the step says.
    pub mlp_only_layers: Vec<usize>,
    /// Hidden width of one routed expert.
    pub moe_intermediate_size: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// The fraction of each attention head that RoPE rotates (transformers v5 writes it
    /// inside `rope_parameters`).
    #[arg(alias = "rope_parameters.partial_rotary_factor")]
    pub partial_rotary_factor: f64,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Renormalise the chosen experts' probabilities to sum to one.
    #[arg(default = false)]
    pub norm_topk_prob: bool,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
    /// Biases on the four attention projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// RoPE scaling as config.json writes it.
    pub rope_scaling: Option<Value>,
    /// Every this many layers is full attention (counting from 1), the others linear.
    #[arg(default = 4, positive)]
    pub full_attention_interval: usize,
}

impl Qwen3NextArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        check_linear_attention(&self.linear())?;
        let factor = self.partial_rotary_factor;
        rotary_dims("partial_rotary_factor", self.head_dim, factor)?;
        self.rope().map(drop)?;
        if self.num_experts > 0 && self.decoder_sparse_step == 0 {
            let msg = "`decoder_sparse_step` must be positive when `num_experts` is";
            return Err(ArgsError::invalid(&["decoder_sparse_step"], msg));
        }
        if (0..self.num_hidden_layers).any(|i| self.is_sparse(i)) {
            let keys = ["num_experts", "num_experts_per_tok"];
            check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
            let widths = [
                ("moe_intermediate_size", self.moe_intermediate_size),
                (
                    "shared_expert_intermediate_size",
                    self.shared_expert_intermediate_size,
                ),
            ];
            if let Some((key, _)) = widths.iter().find(|(_, v)| *v == 0) {
                let msg = format!("`{key}` must be positive in a model with experts");
                return Err(ArgsError::invalid(&[key], msg));
            }
        }
        Ok(())
    }

    /// The linear layers' sizes.
    pub fn linear(&self) -> GatedDeltaConfig {
        GatedDeltaConfig {
            hidden_size: self.hidden_size,
            num_k_heads: self.linear_num_key_heads,
            num_v_heads: self.linear_num_value_heads,
            head_k_dim: self.linear_key_head_dim,
            head_v_dim: self.linear_value_head_dim,
            conv_kernel: self.linear_conv_kernel_dim,
            eps: self.rms_norm_eps,
        }
    }

    /// The RoPE settings of the attention layers.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }

    /// Whether layer `i` is a gated delta net layer (else full attention).
    pub fn is_linear(&self, i: usize) -> bool {
        !(i + 1).is_multiple_of(self.full_attention_interval)
    }

    /// Whether layer `i` is a mixture of experts.
    pub fn is_sparse(&self, i: usize) -> bool {
        let (experts, step) = (self.num_experts, self.decoder_sparse_step);
        qwen_sparse_layer(i, experts, step, &self.mlp_only_layers)
    }
}

fn layer(args: &Qwen3NextArgs, i: usize) -> Result<HybridLayer, Exception> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let mlp = if args.is_sparse(i) {
        let routing = Routing::SoftmaxTopK {
            k: args.num_experts_per_tok as i32,
            pick: TopK::Last,
            renormalize: args.norm_topk_prob,
        };
        let (hidden, experts) = (args.moe_intermediate_size, args.num_experts);
        let moe = SparseMoe::new(dim, hidden, experts, routing)?;
        FeedForward::Sparse(moe.shared_expert(args.shared_expert_intermediate_size, true)?)
    } else {
        FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?)
    };
    if args.is_linear(i) {
        return HybridLayer::linear(GatedDeltaNet::fused(&args.linear())?, mlp, dim, eps);
    }
    let rope_dims = rotary_dims(
        "partial_rotary_factor",
        args.head_dim,
        args.partial_rotary_factor,
    )?;
    let rope = args.rope()?.build(rope_dims as usize)?;
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let attn = GatedAttention::new(dim, heads, args.head_dim, args.attention_bias, eps, rope)?;
    HybridLayer::attention(attn, mlp, dim, eps)
}

/// The qwen3_next model: embeddings, hybrid layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "qwen3_next",
    args = Qwen3NextArgs,
    drop = "*mtp.*",
    tied_head = "lm_head",
    sanitize = Self::convert_hugging_face,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: HybridModel,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// Hugging Face's layout, as the reference converts it: per-expert tensors stacked and the
    /// zero-centred norms shifted (only where there were per-expert tensors: a converted
    /// checkpoint has none, so it is not shifted twice), conv weights turned.
    fn convert_hugging_face(&self, weights: &mut Weights) -> Result<(), Exception> {
        let per_expert = weights.keys().any(|k| {
            k.starts_with("model.layers.") && k.ends_with(".mlp.experts.0.up_proj.weight")
        });
        if per_expert {
            let stack = Rule::StackExperts {
                from: "model.layers.{n}.mlp.experts.{e}",
                to: "model.layers.{n}.mlp.switch_mlp",
            };
            let stacked = apply(&[stack], std::mem::take(weights), None)
                .map_err(|e| Exception::custom(e.to_string()))?;
            *weights = stacked;
            shift_norms(weights)?;
        }
        conv1d_weights_to_mlx(weights)
    }
}

impl Architecture for Model {
    fn new(args: &Qwen3NextArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: HybridModel::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
