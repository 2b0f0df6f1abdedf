//! `glm4_moe`, after mlx-lm's `models/glm4_moe.py`: attention with optional per-head q/k norms
//! and RoPE on a `partial_rotary_factor` of each head, dense layers before
//! `first_k_dense_replace`, then mixtures of experts routed by sigmoid scores with a score
//! correction bias and group-limited top-k (`noaux_tc`), renormalised with `norm_topk_prob`
//! and scaled by `routed_scaling_factor`, plus `n_shared_experts` shared experts in one MLP.
//! The multi-token-prediction layer some checkpoints carry (index `num_hidden_layers`) is
//! dropped, as the reference does.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_noaux_tc, check_routed_experts, FeedForward, Routing, SparseMoe};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, Attention, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, Mlp,
};
use mlx_models::weights::{drop_layers_from, Weights};

/// config.json of a glm4_moe checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Glm4MoeArgs {
    /// Type and sizes (`intermediate_size`: the dense layers' MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Context length of the checkpoint (read; the RoPE is plain).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Hidden width of one routed expert (and of each shared one).
    #[arg(positive)]
    pub moe_intermediate_size: usize,
    /// Renormalise the chosen experts' weights to sum to one.
    pub norm_topk_prob: bool,
    /// Groups the routed experts are split into.
    #[arg(positive)]
    pub n_group: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Groups each token may pick its experts from.
    #[arg(positive)]
    pub topk_group: usize,
    /// Shared experts (one MLP of `n_shared_experts * moe_intermediate_size`); `null`: none.
    #[arg(positive)]
    pub n_shared_experts: Option<usize>,
    /// Routed experts per sparse layer; `null`: every layer dense.
    #[arg(positive)]
    pub n_routed_experts: Option<usize>,
    /// Factor on the routed experts' weights.
    pub routed_scaling_factor: f32,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Layers before this one are dense.
    pub first_k_dense_replace: usize,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Read, and not applied (the reference's RoPE is plain).
    pub rope_scaling: Option<Value>,
    /// Per-head RMS norms on queries and keys.
    pub use_qk_norm: bool,
    /// Read and unused: the head is always its own matrix in the reference.
    pub tie_word_embeddings: bool,
    /// Biases on the query, key and value projections.
    pub attention_bias: bool,
    /// The share of each head that RoPE rotates.
    pub partial_rotary_factor: f32,
    /// Must be `sigmoid`.
    #[arg(default = "sigmoid".to_owned())]
    pub scoring_func: String,
    /// Must be `noaux_tc`.
    #[arg(default = "noaux_tc".to_owned())]
    pub topk_method: String,
}

impl Glm4MoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        check_noaux_tc(&self.topk_method, &self.scoring_func)?;
        if let Some(experts) = self.n_routed_experts {
            check_routed_experts(experts, self.num_experts_per_tok, &self.routing())?;
        }
        let prf = self.partial_rotary_factor;
        let dims = self.rope_dims();
        if !(prf > 0.0 && prf <= 1.0) || dims < 2 || !dims.is_multiple_of(2) {
            return Err(ArgsError::invalid(
                &["partial_rotary_factor"],
                format!(
                    "`partial_rotary_factor` {prf} of `head_dim` {} must give an even number of \
                     rotated features",
                    self.head_dim
                ),
            ));
        }
        Ok(())
    }

    /// The features of each head that RoPE rotates, `int(head_dim * partial_rotary_factor)`.
    pub fn rope_dims(&self) -> usize {
        (self.head_dim as f64 * f64::from(self.partial_rotary_factor)) as usize
    }

    fn routing(&self) -> Routing {
        Routing::GroupLimited {
            k: self.num_experts_per_tok as i32,
            n_group: self.n_group as i32,
            topk_group: self.topk_group as i32,
            scaling: self.routed_scaling_factor,
            renormalize: self.norm_topk_prob,
            epsilon: 0.0,
        }
    }
}

type Layer = DecoderLayer<Attention, FeedForward>;

fn layer(args: &Glm4MoeArgs, i: usize) -> Result<Layer, Exception> {
    let (dim, head_dim, eps) = (args.hidden_size, args.head_dim, args.rms_norm_eps);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let mut config =
        AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(args.attention_bias, false);
    if args.use_qk_norm {
        config = config.qk_norm(eps);
    }
    let rope = Rope::plain(args.rope_dims() as i32, args.rope_theta, false, 1.0);
    let attention = Attention::new(&config, Some(rope))?;
    let mlp = match args.n_routed_experts {
        Some(experts) if i >= args.first_k_dense_replace => {
            let hidden = args.moe_intermediate_size;
            let moe = SparseMoe::new(dim, hidden, experts, args.routing())?.cast_back();
            FeedForward::Sparse(moe.shared_experts(args.n_shared_experts)?)
        }
        _ => FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?),
    };
    DecoderLayer::new(attention, mlp, dim, eps)
}

/// The glm4_moe model: embeddings, dense then sparse decoder layers, final norm, head. The
/// reference's `shared_experts` is this crate's `shared_expert`, its `gate.
/// e_score_correction_bias` the block's `e_score_correction_bias`; Hugging Face checkpoints'
/// per-expert tensors are stacked into the switch layers.
#[mlx_model(
    model_type = "glm4_moe",
    args = Glm4MoeArgs,
    rename("model.layers.{n}.mlp.gate.e_score_correction_bias" => "model.layers.{n}.mlp.e_score_correction_bias"),
    rename("model.layers.{n}.mlp.shared_experts" => "model.layers.{n}.mlp.shared_expert"),
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
    sanitize = Self::drop_next_token_layers,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// Drops the multi-token-prediction layers (indices from `num_hidden_layers` on).
    fn drop_next_token_layers(&self, weights: &mut Weights) -> Result<(), Exception> {
        let n = self.model.num_layers();
        drop_layers_from(weights, n);
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &Glm4MoeArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
