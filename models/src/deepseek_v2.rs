//! `deepseek_v2`, after mlx-lm's `models/deepseek_v2.py`: DeepSeek-V2's multi-head latent
//! attention in its plain form (no absorption: the normed latent goes through the fused
//! `kv_b_proj` into per-head keys and values, the shared rotated key is repeated over the
//! heads, and the cache holds full keys and values), low-rank or plain queries, yarn RoPE on
//! the rotated parts (always yarn, from `rope_scaling`, which the reference requires) with
//! `mscale_all_dim` folded into the softmax scale, dense layers before
//! `first_k_dense_replace` (and off the `moe_layer_freq` grid), then mixtures of experts
//! routed by a softmax in the logits' type, greedy or limited to the `topk_group` best of
//! `n_group` groups (`group_limited_greedy`), the chosen probabilities times
//! `routed_scaling_factor` (not renormalised: the reference reads no `norm_topk_prob`), plus
//! `n_shared_experts` shared experts in one MLP. Hugging Face per-expert tensors are stacked.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mla::{check_mla_heads, mla_scale, ExpandedLatentAttention, MlaConfig};
use mlx_models::nn::moe::{check_routed_experts, FeedForward, Routing, SparseMoe};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::{Rope, RopeScaling};
use mlx_models::nn::transformer::{Decoder, DecoderArgs, DecoderLayer, Mlp};

/// config.json of a deepseek_v2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct DeepseekV2Args {
    /// Type and sizes (`intermediate_size`: the dense layers' MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Hidden width of one routed expert (and of each shared one).
    #[arg(positive, default = 1407)]
    pub moe_intermediate_size: usize,
    /// Read and unused (every head has its own keys and values, from the latent).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Shared experts (one MLP of `n_shared_experts * moe_intermediate_size`); `null`: none.
    #[arg(positive)]
    pub n_shared_experts: Option<usize>,
    /// Routed experts per sparse layer; `null`: every layer dense.
    #[arg(positive)]
    pub n_routed_experts: Option<usize>,
    /// Factor on the routed experts' weights.
    #[arg(default = 1.0)]
    pub routed_scaling_factor: f32,
    /// Width of the compressed key/value latent.
    #[arg(positive, default = 512)]
    pub kv_lora_rank: usize,
    /// Rank of the queries' low-rank pair; `null` (or absent): one `q_proj`. (The reference
    /// defaults an absent key to 1536; checkpoints write it.)
    #[arg(positive)]
    pub q_lora_rank: Option<usize>,
    /// Rotated features of each query head and of the shared key.
    #[arg(positive, default = 64)]
    pub qk_rope_head_dim: usize,
    /// Features of each value head.
    #[arg(positive, default = 128)]
    pub v_head_dim: usize,
    /// Features of each query/key head without position.
    #[arg(positive, default = 128)]
    pub qk_nope_head_dim: usize,
    /// `greedy` (also the reference's default spelling `gready`) or `group_limited_greedy`.
    #[arg(default = "gready".to_owned())]
    pub topk_method: String,
    /// Groups the routed experts are split into (`group_limited_greedy`).
    #[arg(positive)]
    pub n_group: Option<usize>,
    /// Groups each token may pick its experts from (`group_limited_greedy`).
    #[arg(positive)]
    pub topk_group: Option<usize>,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: Option<usize>,
    /// Only every `moe_layer_freq`-th layer (from index 0) is sparse.
    #[arg(positive, default = 1)]
    pub moe_layer_freq: usize,
    /// Layers before this one are dense.
    #[arg(default = 0)]
    pub first_k_dense_replace: usize,
    /// Context length of the checkpoint.
    #[arg(positive, default = 2048)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// The yarn settings (`factor`, and optionally `original_max_position_embeddings`,
    /// `beta_fast`, `beta_slow`, `mscale`, `mscale_all_dim`); required, as in the reference.
    pub rope_scaling: Option<Value>,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    #[arg(default = false)]
    pub attention_bias: bool,
}

impl DeepseekV2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        if self.n_routed_experts.is_some() {
            let Some(k) = self.num_experts_per_tok else {
                return Err(ArgsError::invalid(
                    &["num_experts_per_tok"],
                    "`num_experts_per_tok` is required with `n_routed_experts`",
                ));
            };
            let experts = self.n_routed_experts.unwrap_or(0);
            check_routed_experts(experts, k, &self.routing()?)?;
        }
        let heads = self.num_attention_heads;
        check_mla_heads(heads, self.qk_nope_head_dim, self.qk_rope_head_dim)?;
        self.yarn().map(drop)
    }

    /// The yarn scaling the reference builds from `rope_scaling` whatever its type.
    pub fn yarn(&self) -> std::result::Result<RopeScaling, ArgsError> {
        let bad = |why: String| ArgsError::invalid(&["rope_scaling"], why);
        let mut scaling = match &self.rope_scaling {
            Some(Value::Object(m)) if m.get("factor").is_some_and(Value::is_number) => m.clone(),
            _ => {
                return Err(bad(
                    "deepseek_v2 needs `rope_scaling` with a numeric `factor` (its RoPE is yarn)"
                        .into(),
                ))
            }
        };
        scaling.remove("rope_type");
        scaling.insert("type".into(), Value::from("yarn"));
        RopeScaling::from_json(&Value::Object(scaling)).map_err(|e| bad(format!("{e}")))
    }

    fn routing(&self) -> std::result::Result<Routing, ArgsError> {
        let k = self.num_experts_per_tok.unwrap_or(1) as i32;
        let scaling = self.routed_scaling_factor;
        match self.topk_method.as_str() {
            "greedy" | "gready" => Ok(Routing::SoftmaxGroupLimited {
                k,
                n_group: 1,
                topk_group: 1,
                scaling,
            }),
            "group_limited_greedy" => match (self.n_group, self.topk_group) {
                (Some(n_group), Some(topk_group)) => Ok(Routing::SoftmaxGroupLimited {
                    k,
                    n_group: n_group as i32,
                    topk_group: topk_group as i32,
                    scaling,
                }),
                _ => Err(ArgsError::invalid(
                    &["n_group", "topk_group"],
                    "`group_limited_greedy` needs `n_group` and `topk_group`",
                )),
            },
            other => Err(ArgsError::invalid(
                &["topk_method"],
                format!(
                    "routing `{other}` is not supported (the reference has `greedy` and \
                     `group_limited_greedy`)"
                ),
            )),
        }
    }

    /// Whether layer `i` is sparse.
    pub fn is_sparse(&self, i: usize) -> bool {
        self.n_routed_experts.is_some()
            && i >= self.first_k_dense_replace
            && i.is_multiple_of(self.moe_layer_freq)
    }
}

/// DeepSeek-V2's attention, in its plain form: the latent expanded through `kv_b_proj`, the
/// scale with yarn's `mscale_all_dim` ([`mla_scale`]), RMS norms of epsilon 1e-6.
fn attention(args: &DeepseekV2Args) -> Result<ExpandedLatentAttention> {
    let config = MlaConfig {
        hidden_size: args.hidden_size as i32,
        n_heads: args.num_attention_heads as i32,
        q_lora_rank: args.q_lora_rank.map(|r| r as i32),
        kv_lora_rank: args.kv_lora_rank as i32,
        qk_nope_head_dim: args.qk_nope_head_dim as i32,
        qk_rope_head_dim: args.qk_rope_head_dim as i32,
        v_head_dim: args.v_head_dim as i32,
        bias: args.attention_bias,
        norm_eps: 1e-6,
        scale: mla_scale(
            args.qk_nope_head_dim + args.qk_rope_head_dim,
            args.rope_scaling.as_ref(),
        ),
    };
    let rope = Rope::new(
        args.qk_rope_head_dim as i32,
        args.rope_theta,
        true,
        &args.yarn()?,
        Some(args.max_position_embeddings as i32),
    )?;
    ExpandedLatentAttention::new(config, rope)
}

type Layer = DecoderLayer<ExpandedLatentAttention, FeedForward>;

fn layer(args: &DeepseekV2Args, i: usize) -> Result<Layer> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let attention = attention(args)?;
    let mlp = match args.n_routed_experts {
        Some(experts) if args.is_sparse(i) => {
            let hidden = args.moe_intermediate_size;
            let moe = SparseMoe::new(dim, hidden, experts, args.routing()?)?;
            FeedForward::Sparse(moe.shared_experts(args.n_shared_experts)?)
        }
        _ => FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?),
    };
    DecoderLayer::new(attention, mlp, dim, eps)
}

/// The deepseek_v2 model: embeddings, dense then sparse decoder layers, final norm, head. The
/// reference's `shared_experts` is this crate's `shared_expert`; Hugging Face checkpoints'
/// per-expert tensors are stacked into the switch layers.
#[mlx_model(
    model_type = "deepseek_v2",
    args = DeepseekV2Args,
    rename("model.layers.{n}.mlp.shared_experts" => "model.layers.{n}.mlp.shared_expert"),
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
    fn new(args: &DeepseekV2Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
