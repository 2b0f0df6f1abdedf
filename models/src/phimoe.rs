//! `phimoe`, after mlx-lm's `models/phimoe.py`: LayerNorms, biased attention projections and
//! head, RoPE plain or su-scaled (LongRoPE with `long_mscale`), and a mixture of experts in
//! every layer routed by `sparsemixer` (the inference path of Hugging Face's).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe};
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, Attention, AttentionConfig, Decoder, DecoderLayer};

/// config.json of a phimoe checkpoint; the defaults are the reference's (Phi-3.5-MoE).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct PhiMoeArgs {
    /// `model_type` of config.json.
    #[arg(default = "phimoe".to_owned())]
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(default = 32064, positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub hidden_size: usize,
    /// Hidden width of one expert.
    #[arg(default = 6400, positive)]
    pub intermediate_size: usize,
    /// Number of decoder layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Number of query heads.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads.
    #[arg(default = 8, positive)]
    pub num_key_value_heads: usize,
    /// Context length the su-scaled RoPE extends to.
    #[arg(default = 131072, positive)]
    pub max_position_embeddings: usize,
    /// Context length of pre-training.
    #[arg(default = 4096, positive)]
    pub original_max_position_embeddings: usize,
    /// Epsilon of the layer norms.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// `null`: plain RoPE; else `short_factor`, `long_factor`, `short_mscale`, `long_mscale`
    /// (the reference rotates with the long ones).
    pub rope_scaling: Option<Value>,
    /// Experts per layer.
    #[arg(default = 16, positive)]
    pub num_local_experts: usize,
    /// Experts each token goes through.
    #[arg(default = 2, positive)]
    pub num_experts_per_tok: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// The band of `sparsemixer` (relative to the top logit).
    #[arg(default = 0.01)]
    pub router_jitter_noise: f32,
}

impl PhiMoeArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        let keys = ["num_local_experts", "num_experts_per_tok"];
        check_experts(self.num_local_experts, self.num_experts_per_tok, keys)?;
        if self.router_jitter_noise.is_nan() || self.router_jitter_noise < 0.0 {
            let msg = format!(
                "`router_jitter_noise` must be >= 0, got {}",
                self.router_jitter_noise
            );
            return Err(ArgsError::invalid(&["router_jitter_noise"], msg));
        }
        self.rope().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Plain RoPE, or the su-scaled one `rope_scaling` describes (its four keys required, as
    /// the reference reads them).
    pub fn rope(&self) -> Result<Rope, ArgsError> {
        let head_dim = self.head_dim() as i32;
        let Some(scaling) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) else {
            return Ok(Rope::plain(head_dim, self.rope_theta, false, 1.0));
        };
        let invalid = |msg: String| ArgsError::invalid(&["rope_scaling"], msg);
        for key in ["short_factor", "long_factor", "short_mscale", "long_mscale"] {
            if scaling.get(key).is_none() {
                return Err(invalid(format!("`rope_scaling` has no `{key}`")));
            }
        }
        let long_factor: Vec<f32> = match &scaling["long_factor"] {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f > 0.0)
                        .map(|f| f as f32)
                })
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    invalid("`rope_scaling.long_factor` must hold positive numbers".into())
                })?,
            Value::Number(n) => vec![n.as_f64().unwrap_or(1.0) as f32; head_dim as usize / 2],
            _ => return Err(invalid("`rope_scaling.long_factor` must be a list".into())),
        };
        let long_mscale = match &scaling["long_mscale"] {
            Value::Null => None,
            v => Some(
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| invalid("`rope_scaling.long_mscale` must be a number".into()))?
                    as f32,
            ),
        };
        let (max, original) = (
            self.max_position_embeddings,
            self.original_max_position_embeddings,
        );
        Rope::su_scaled(
            head_dim,
            self.rope_theta,
            max as f64,
            original as f64,
            &long_factor,
            long_mscale,
        )
        .map_err(|e| invalid(e.to_string()))
    }
}

type Layer = DecoderLayer<Attention, SparseMoe, LayerNorm>;

fn layer(args: &PhiMoeArgs) -> Result<Layer, Exception> {
    let (dim, heads) = (args.hidden_size, args.num_attention_heads);
    let config = AttentionConfig::new(dim, heads, args.num_key_value_heads, args.head_dim())
        .bias(true, true);
    let attention = Attention::new(&config, Some(args.rope()?))?;
    let routing = Routing::SparseMixer {
        k: args.num_experts_per_tok as i32,
        jitter_eps: args.router_jitter_noise,
    };
    let (hidden, experts) = (args.intermediate_size, args.num_local_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?;
    let norm = || LayerNorm::new(dim as i32, args.rms_norm_eps, true);
    Ok(DecoderLayer::with_norms(attention, moe, norm()?, norm()?))
}

/// The phimoe model: embeddings, sparse decoder layers, final LayerNorm, biased head. The
/// reference's `block_sparse_moe` is this crate's `mlp`; Hugging Face checkpoints' per-expert
/// `w1` / `w2` / `w3` are stacked into the switch layers.
#[mlx_model(
    model_type = "phimoe",
    args = PhiMoeArgs,
    rename("model.layers.{n}.block_sparse_moe" => "model.layers.{n}.mlp"),
    rename("model.layers.{n}.mlp.experts.{e}.w1" => "model.layers.{n}.mlp.experts.{e}.gate_proj"),
    rename("model.layers.{n}.mlp.experts.{e}.w2" => "model.layers.{n}.mlp.experts.{e}.down_proj"),
    rename("model.layers.{n}.mlp.experts.{e}.w3" => "model.layers.{n}.mlp.experts.{e}.up_proj"),
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer, LayerNorm>,
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &PhiMoeArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args))
            .collect::<Result<_, _>>()?;
        let norm = LayerNorm::new(dim as i32, args.rms_norm_eps, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers, norm)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, true)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
