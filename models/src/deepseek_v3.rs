//! `deepseek_v3` (aliases `kimi_k2`, `joyai_llm_flash`), after mlx-lm's
//! `models/deepseek_v3.py`: multi-head latent attention ([`MultiLatentAttention`]: low-rank
//! queries, one compressed key/value latent per position, a shared rotated key, traditional
//! RoPE with yarn's `mscale_all_dim` folded into the softmax scale), dense layers before
//! `first_k_dense_replace` (and off the `moe_layer_freq` grid), then mixtures of experts
//! routed by sigmoid scores with a correction bias and group-limited top-k (`noaux_tc`),
//! renormalised with `norm_topk_prob` and scaled by `routed_scaling_factor`, plus
//! `n_shared_experts` shared experts in one MLP.
//!
//! Loading follows the reference's sanitize: per-expert tensors are stacked, each layer's
//! fused `kv_b_proj` is split into `embed_q` and `unembed_out` (a quantized one dequantized
//! and quantized again), and the multi-token-prediction layer is dropped. The reference drops
//! `model.layers.61` (DeepSeek-V3's and Kimi K2's, whose `num_hidden_layers` is 61); this file
//! drops every layer from `num_hidden_layers` on, which is the same for those checkpoints.
//! The official FP8 releases (E4M3 weights with 128 x 128 `weight_scale_inv` blocks) are
//! dequantized to bfloat16 as the reference does, by the loader's common first step
//! ([`mlx_models::weights::dequantize_fp8_blocks`]); compressed-tensors int4 ones (Kimi K2
//! Thinking's `weight_packed` / `weight_scale`) become affine 4-bit layers the same way
//! ([`mlx_models::weights::compressed_tensors_int4`]).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mla::{
    check_mla_heads, mla_scale, split_kv_b_proj_layers, MlaConfig, MultiLatentAttention,
};
use mlx_models::nn::moe::{check_noaux_tc, check_routed_experts, FeedForward, Routing, SparseMoe};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{Decoder, DecoderArgs, DecoderLayer, Mlp, RopeArgs};
use mlx_models::weights::{drop_layers_from, Weights};

/// config.json of a deepseek_v3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct DeepseekV3Args {
    /// Type and sizes (`intermediate_size`: the dense layers' MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Hidden width of one routed expert (and of each shared one).
    #[arg(positive, default = 1407)]
    pub moe_intermediate_size: usize,
    /// Read and unused (every head has its own query; keys and values come from the latent).
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
    /// Must be `noaux_tc` (the reference asserts it).
    #[arg(default = "noaux_tc".to_owned())]
    pub topk_method: String,
    /// Must be `sigmoid` (the only scores the reference computes).
    #[arg(default = "sigmoid".to_owned())]
    pub scoring_func: String,
    /// Renormalise the chosen experts' weights to sum to one.
    #[arg(default = true)]
    pub norm_topk_prob: bool,
    /// Groups the routed experts are split into.
    #[arg(positive, default = 1)]
    pub n_group: usize,
    /// Groups each token may pick its experts from.
    #[arg(positive, default = 1)]
    pub topk_group: usize,
    /// Experts each token goes through.
    #[arg(positive, default = 1)]
    pub num_experts_per_tok: usize,
    /// Only every `moe_layer_freq`-th layer (from index 0) is sparse.
    #[arg(positive, default = 1)]
    pub moe_layer_freq: usize,
    /// Layers before this one are dense.
    #[arg(default = 0)]
    pub first_k_dense_replace: usize,
    /// Context length of the checkpoint (yarn's reference length when its config has none).
    #[arg(positive, default = 2048)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// The RoPE scaling (yarn for DeepSeek-V3 and Kimi K2).
    pub rope_scaling: Option<Value>,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    #[arg(default = false)]
    pub attention_bias: bool,
}

impl DeepseekV3Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_noaux_tc(&self.topk_method, &self.scoring_func)?;
        if let Some(experts) = self.n_routed_experts {
            check_routed_experts(experts, self.num_experts_per_tok, &self.routing())?;
        }
        let heads = self.num_attention_heads;
        check_mla_heads(heads, self.qk_nope_head_dim, self.qk_rope_head_dim)?;
        self.rope().map(drop)
    }

    /// The RoPE settings: traditional (consecutive pairs), over `qk_rope_head_dim` features.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(true)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }

    /// The attention's shape and scale.
    pub fn attention(&self) -> MlaConfig {
        MlaConfig {
            hidden_size: self.hidden_size as i32,
            n_heads: self.num_attention_heads as i32,
            q_lora_rank: self.q_lora_rank.map(|r| r as i32),
            kv_lora_rank: self.kv_lora_rank as i32,
            qk_nope_head_dim: self.qk_nope_head_dim as i32,
            qk_rope_head_dim: self.qk_rope_head_dim as i32,
            v_head_dim: self.v_head_dim as i32,
            bias: self.attention_bias,
            norm_eps: 1e-6,
            scale: mla_scale(
                self.qk_nope_head_dim + self.qk_rope_head_dim,
                self.rope_scaling.as_ref(),
            ),
        }
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

    /// Whether layer `i` is sparse.
    pub fn is_sparse(&self, i: usize) -> bool {
        self.n_routed_experts.is_some()
            && i >= self.first_k_dense_replace
            && i.is_multiple_of(self.moe_layer_freq)
    }
}

type Layer = DecoderLayer<MultiLatentAttention, FeedForward>;

fn layer(args: &DeepseekV3Args, i: usize) -> Result<Layer, Exception> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let rope = args.rope()?.build(args.qk_rope_head_dim)?;
    let attention = MultiLatentAttention::new(args.attention(), rope)?;
    let mlp = match args.n_routed_experts {
        Some(experts) if args.is_sparse(i) => {
            let hidden = args.moe_intermediate_size;
            let moe = SparseMoe::new(dim, hidden, experts, args.routing())?.cast_back();
            FeedForward::Sparse(moe.shared_experts(args.n_shared_experts)?)
        }
        _ => FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?),
    };
    DecoderLayer::new(attention, mlp, dim, eps)
}

/// The deepseek_v3 model: embeddings, dense then sparse decoder layers over latent attention,
/// final norm, head. The reference's `shared_experts` is this crate's `shared_expert`, its
/// `gate.e_score_correction_bias` the block's `e_score_correction_bias`; Hugging Face
/// checkpoints' per-expert tensors are stacked into the switch layers and their `kv_b_proj`
/// split per head.
#[mlx_model(
    model_type = "deepseek_v3",
    aliases = ["kimi_k2", "joyai_llm_flash"],
    args = DeepseekV3Args,
    drop = "*.rotary_emb.inv_freq",
    rename("model.layers.{n}.mlp.gate.e_score_correction_bias" => "model.layers.{n}.mlp.e_score_correction_bias"),
    rename("model.layers.{n}.mlp.shared_experts" => "model.layers.{n}.mlp.shared_expert"),
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
    sanitize = Self::split_latent_projections,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    #[param]
    lm_head: Option<Linear>,
    /// The attention's shape, for splitting a checkpoint's `kv_b_proj`.
    attention: MlaConfig,
}

impl Model {
    /// Drops the multi-token-prediction layers (indices from `num_hidden_layers` on) and splits
    /// each layer's `kv_b_proj` into `embed_q` and `unembed_out`.
    fn split_latent_projections(&self, weights: &mut Weights) -> Result<(), Exception> {
        let n = self.model.num_layers();
        drop_layers_from(weights, n);
        split_kv_b_proj_layers(weights, n, &self.attention)
    }
}

impl Architecture for Model {
    fn new(args: &DeepseekV3Args) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
            attention: args.attention(),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
