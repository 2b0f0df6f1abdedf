//! `jamba`, after mlx-lm's `models/jamba.py`: a hybrid of Mamba mixers and attention. Layer
//! `i` attends when `i % attn_layer_period == attn_layer_offset` (or as `layers_block_type`
//! says), with grouped-query heads and no positional encoding; the other layers run the
//! shared Mamba mixer with RMS norms (with weights) on its time step, `B` and `C`. With more
//! than one expert, layer `i` has a mixture of experts (router, the top `num_experts_per_tok`
//! logits, a softmax over them) when `(i + expert_layer_offset) % expert_layer_period == 0`,
//! the reference's rule, and a dense SwiGLU MLP otherwise.
//!
//! The router is the checkpoints' `router`, renamed onto the shared block's `gate`; Hugging
//! Face checkpoints' per-expert tensors are stacked and their `[C, 1, K]` conv filters
//! turned. Beyond the reference: a left-padded batch masks its padding out of the Mamba
//! layers' conv and scan (the reference's mixer takes no mask), and a stack without
//! attention or without Mamba layers runs (the reference looks up the first of each).

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::hybrid::{self, HybridMasks, LayerKind};
use mlx_models::nn::mamba::{time_step_rank, MambaMixer, MambaMixerConfig, TimeStepNorm};
use mlx_models::nn::moe::{check_experts, FeedForward, Routing, SparseMoe, TopK};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::ssm::{conv1d_weights_to_mlx, layer_arrays};
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, lm_head, Attention, AttentionConfig, Block, Mlp,
};
use mlx_models::weights::Weights;

/// config.json of a jamba checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct JambaArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Hidden width of the MLP and of each expert.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Query heads of the attention layers.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Layer `i` attends when `i % attn_layer_period == attn_layer_offset`.
    #[arg(positive)]
    pub attn_layer_period: usize,
    /// See `attn_layer_period`.
    pub attn_layer_offset: usize,
    /// Layer `i` has experts when `(i + expert_layer_offset) % expert_layer_period == 0`.
    #[arg(positive)]
    pub expert_layer_period: usize,
    /// See `expert_layer_period`.
    pub expert_layer_offset: usize,
    /// Taps of the Mamba convolution.
    #[arg(positive)]
    pub mamba_d_conv: usize,
    /// Width of the state of each Mamba channel.
    #[arg(positive)]
    pub mamba_d_state: usize,
    /// The Mamba mixer is `mamba_expand * hidden_size` wide.
    #[arg(positive)]
    pub mamba_expand: usize,
    /// Rank of the time-step projection: an integer, or `"auto"` (the default) for
    /// `ceil(hidden_size / 16)`.
    pub mamba_dt_rank: Option<Value>,
    /// Biases on the mixer's input and output projections.
    #[arg(default = false)]
    pub mamba_proj_bias: bool,
    /// A bias on the mixer's convolution.
    #[arg(default = true)]
    pub mamba_conv_bias: bool,
    /// Experts per MoE layer (1: every layer dense).
    #[arg(positive)]
    pub num_experts: usize,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Epsilon of every RMS norm.
    #[arg(positive)]
    pub rms_norm_eps: f32,
    /// Context length of the checkpoint (sizes nothing).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// `attention` or `mamba` per layer; derived from the attention period when absent.
    pub layers_block_type: Option<Vec<String>>,
    /// Whether the head is the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl JambaArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        let patterns = [
            (
                "attn_layer_period",
                self.attn_layer_period,
                "attn_layer_offset",
                self.attn_layer_offset,
            ),
            (
                "expert_layer_period",
                self.expert_layer_period,
                "expert_layer_offset",
                self.expert_layer_offset,
            ),
        ];
        for (period_key, period, offset_key, offset) in patterns {
            if offset >= period {
                let msg =
                    format!("`{offset_key}` ({offset}) must be below `{period_key}` ({period})");
                return Err(ArgsError::invalid(&[period_key, offset_key], msg));
            }
        }
        let heads = self.num_attention_heads;
        check_heads(self.hidden_size, heads, self.num_key_value_heads, None)?;
        if self.num_experts > 1 {
            let keys = ["num_experts", "num_experts_per_tok"];
            check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
        }
        let rank = self.dt_rank()?;
        let inner = self.mamba_expand.checked_mul(self.hidden_size);
        let keys = ["mamba_expand", "hidden_size"];
        check_width(
            &keys,
            "the Mamba mixer's input projection (`2 * mamba_expand * hidden_size`)",
            inner.and_then(|i| i.checked_mul(2)),
        )?;
        check_width(
            &["mamba_expand", "hidden_size", "mamba_d_state"],
            "the Mamba state (`mamba_expand * hidden_size * mamba_d_state`)",
            inner.and_then(|i| i.checked_mul(self.mamba_d_state)),
        )?;
        check_width(
            &["mamba_dt_rank", "mamba_d_state"],
            "the Mamba x projection (`mamba_dt_rank + 2 * mamba_d_state`)",
            self.mamba_d_state
                .checked_mul(2)
                .and_then(|s| s.checked_add(rank)),
        )?;
        match &self.layers_block_type {
            Some(types) => {
                if types.len() != layers {
                    let msg = format!(
                        "`layers_block_type` has {} entries for {layers} layers",
                        types.len()
                    );
                    return Err(ArgsError::invalid(&["layers_block_type"], msg));
                }
                if let Some(bad) = types
                    .iter()
                    .find(|t| !matches!(t.as_str(), "attention" | "mamba"))
                {
                    let msg = format!("`layers_block_type`: unknown layer type {bad:?} (expected \"attention\" or \"mamba\")");
                    return Err(ArgsError::invalid(&["layers_block_type"], msg));
                }
            }
            None => {
                let (p, o) = (self.attn_layer_period, self.attn_layer_offset);
                let kind = |i: usize| if i % p == o { "attention" } else { "mamba" };
                self.layers_block_type = Some((0..layers).map(|i| kind(i).to_owned()).collect());
            }
        }
        Ok(())
    }

    /// The time-step rank, `ceil(hidden_size / 16)` for `"auto"`.
    pub fn dt_rank(&self) -> std::result::Result<usize, ArgsError> {
        time_step_rank(
            "mamba_dt_rank",
            self.mamba_dt_rank.as_ref(),
            self.hidden_size,
        )
    }

    /// Whether layer `i` attends (else it runs a Mamba mixer).
    pub fn is_attention(&self, i: usize) -> bool {
        match &self.layers_block_type {
            Some(types) => types.get(i).is_some_and(|t| t == "attention"),
            None => i % self.attn_layer_period == self.attn_layer_offset,
        }
    }

    /// Whether layer `i` has a mixture of experts (the reference's rule).
    pub fn is_sparse(&self, i: usize) -> bool {
        self.num_experts > 1 && (i + self.expert_layer_offset) % self.expert_layer_period == 0
    }
}

#[derive(Debug, ModuleParameters)]
struct Layer {
    #[param]
    self_attn: Option<Attention>,
    #[param]
    mamba: Option<MambaMixer>,
    #[param]
    feed_forward: FeedForward<Mlp, SparseMoe>,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    pre_ff_layernorm: RmsNorm,
}

#[derive(Debug, ModuleParameters)]
struct JambaModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<Layer>,
    #[param]
    final_layernorm: RmsNorm,
}

/// The jamba model: embeddings, Mamba and attention layers with dense or sparse
/// feed-forwards, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "jamba",
    args = JambaArgs,
    tied_head = "lm_head",
    rename("model.layers.{n}.feed_forward.router" => "model.layers.{n}.feed_forward.gate"),
    stack_experts("model.layers.{n}.feed_forward.experts.{e}" => "model.layers.{n}.feed_forward.switch_mlp"),
    sanitize = Self::sanitize_conv
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: JambaModel,
    /// `None` with `tie_word_embeddings`.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    fn kinds(&self) -> Vec<LayerKind> {
        let kind = |l: &Layer| match l.self_attn {
            Some(_) => LayerKind::Attention,
            None => LayerKind::Ssm,
        };
        self.model.layers.iter().map(kind).collect()
    }

    fn sanitize_conv(&self, weights: &mut Weights) -> Result<()> {
        conv1d_weights_to_mlx(weights)
    }
}

impl Architecture for Model {
    fn new(args: &JambaArgs) -> Result<Self> {
        let dim = args.hidden_size;
        let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads, kv_heads, dim / heads);
        let rank = args
            .dt_rank()
            .map_err(|e| Exception::custom(e.to_string()))?;
        let mixer = MambaMixerConfig {
            hidden_size: dim as i32,
            intermediate_size: (args.mamba_expand * dim) as i32,
            state_size: args.mamba_d_state as i32,
            conv_kernel: args.mamba_d_conv as i32,
            time_step_rank: rank as i32,
            proj_bias: args.mamba_proj_bias,
            conv_bias: args.mamba_conv_bias,
            norm: TimeStepNorm::Weighted(args.rms_norm_eps),
        };
        let routing = Routing::TopKSoftmax {
            k: args.num_experts_per_tok as i32,
            pick: TopK::Negated,
            float32_weights: false,
        };
        let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let is_attention = args.is_attention(i);
                let feed_forward = match args.is_sparse(i) {
                    true => {
                        FeedForward::Sparse(SparseMoe::new(dim, hidden, args.num_experts, routing)?)
                    }
                    false => FeedForward::Dense(Mlp::new(dim, hidden, false)?),
                };
                Ok(Layer {
                    self_attn: is_attention
                        .then(|| Attention::new(&attention, None))
                        .transpose()?,
                    mamba: (!is_attention)
                        .then(|| MambaMixer::new(&mixer))
                        .transpose()?,
                    feed_forward,
                    input_layernorm: RmsNorm::new(dim as i32, eps)?,
                    pre_ff_layernorm: RmsNorm::new(dim as i32, eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: JambaModel {
                embed_tokens: Embedding::new(args.vocab_size as i32, dim as i32)?,
                layers,
                final_layernorm: RmsNorm::new(dim as i32, eps)?,
            },
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let masks = HybridMasks::for_stack(inputs.dim(1), &self.kinds(), cache)?;
        let m = &self.model;
        let mut h = m.embed_tokens.forward(inputs)?;
        for (i, layer) in m.layers.iter().enumerate() {
            let x = layer.input_layernorm.forward(&h)?;
            let r = match (&layer.self_attn, &layer.mamba) {
                (Some(attn), _) => attn.forward(&x, &masks.attention, cache.get_mut(i))?,
                (None, Some(mamba)) => {
                    mamba.forward(&x, masks.ssm.as_ref(), layer_arrays(cache, i)?)?
                }
                (None, None) => return Err(Exception::custom(format!("layer {i} has no mixer"))),
            };
            let r = h.add(&r)?;
            h = r.add(
                layer
                    .feed_forward
                    .forward(&layer.pre_ff_layernorm.forward(&r)?)?,
            )?;
        }
        let h = m.final_layernorm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => m.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        hybrid::make_cache(self.kinds())
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
