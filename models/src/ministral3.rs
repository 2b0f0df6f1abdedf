//! `ministral3`, after mlx-lm's `models/ministral3.py`: llama's layer with sliding-window
//! layers listed in `layer_types` (each attending to the last `sliding_window` positions
//! through a rotating cache) and Llama 4's position-dependent query scaling: after RoPE, the
//! queries at position `p` are multiplied by `1 + beta * ln(1 + floor(p / original))`
//! (`llama_4_scaling_beta` and `original_max_position_embeddings` of `rope_parameters`).
//! Everything about RoPE is read from transformers v5's `rope_parameters` (its `rope_theta`
//! and scaling). Tied head by default.
//!
//! Loading follows the reference's sanitize: rotary buffers and `activation_scale` tensors are
//! dropped, and a weight with a per-tensor `weight_scale_inv` is multiplied by it (by the
//! loader's common FP8 step, [`mlx_models::weights::dequantize_fp8_blocks`]). The reference
//! takes the scaling's positions from the first layer's cache offset; here each row of a
//! batch uses its own positions, its left padding counted as position 0.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::{floor, log};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, positions, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, layer_windows, lm_head, Decoder, DecoderArgs, DecoderLayer,
    Mlp, RopeArgs, SelfAttention,
};

/// config.json of a ministral3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Ministral3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Width of one attention head; absent, `null` or 0: `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Context length of the checkpoint (scaled RoPE types may read it).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Number of key and value heads; absent: `num_attention_heads`.
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// `rope_theta`, the RoPE scaling (`rope_type` or `type`, and its parameters),
    /// `llama_4_scaling_beta` and `original_max_position_embeddings`; required.
    pub rope_parameters: Option<Value>,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Per layer, `"full_attention"` or `"sliding_attention"`; absent: every layer full.
    pub layer_types: Option<Vec<String>>,
    /// Positions a sliding-window layer attends to, itself included.
    #[arg(positive)]
    pub sliding_window: Option<usize>,
}

impl Ministral3Args {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        self.head_dim = self.head_dim.filter(|d| *d > 0);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        let layers = self.num_hidden_layers;
        check_layer_types(&mut self.layer_types, layers, self.sliding_window)?;
        self.query_scaling()?;
        self.rope().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE `rope_parameters` describes.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(None, None, Some(self.parameters()?))?;
        Ok(rope.max_position_embeddings(self.max_position_embeddings))
    }

    /// `llama_4_scaling_beta` and `original_max_position_embeddings` of `rope_parameters`.
    pub fn query_scaling(&self) -> std::result::Result<QueryScaling, ArgsError> {
        let params = self.parameters()?;
        let number = |key: &str| {
            params.get(key).and_then(Value::as_f64).ok_or_else(|| {
                ArgsError::invalid(
                    &["rope_parameters"],
                    format!("`rope_parameters` needs a numeric `{key}`"),
                )
            })
        };
        let beta = number("llama_4_scaling_beta")?;
        let original = number("original_max_position_embeddings")?;
        if !beta.is_finite() || !original.is_finite() || original <= 0.0 {
            return Err(ArgsError::invalid(
                &["rope_parameters"],
                format!(
                    "`llama_4_scaling_beta` {beta} must be finite and \
                     `original_max_position_embeddings` {original} positive"
                ),
            ));
        }
        Ok(QueryScaling {
            beta: beta as f32,
            original: original as f32,
        })
    }

    fn parameters(&self) -> std::result::Result<&Value, ArgsError> {
        self.rope_parameters
            .as_ref()
            .filter(|p| p.is_object())
            .ok_or_else(|| {
                ArgsError::invalid(&["rope_parameters"], "ministral3 needs `rope_parameters`")
            })
    }
}

/// Llama 4's query scaling by position: `1 + beta * ln(1 + floor(p / original))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScaling {
    /// `llama_4_scaling_beta`.
    pub beta: f32,
    /// `original_max_position_embeddings`.
    pub original: f32,
}

impl QueryScaling {
    /// The factors for `n` new positions after what `cache` holds, to multiply `[B, heads, n,
    /// head_dim]` queries by: `[n, 1]`, or `[B, 1, n, 1]` for a batch cache; in `dtype`.
    pub fn factors(&self, n: i32, cache: Option<&Cache>, dtype: Dtype) -> Result<Array> {
        let p = positions(n, cache)?.as_dtype(Dtype::Float32)?;
        let steps = floor(p.divide(Array::from_f32(self.original))?)?;
        let scaling = log(steps.add(Array::from_f32(1.0))?)?
            .multiply(Array::from_f32(self.beta))?
            .add(Array::from_f32(1.0))?;
        let scaling = match scaling.ndim() {
            2 => scaling.reshape(&[scaling.dim(0), 1, n, 1])?,
            _ => scaling.reshape(&[n, 1])?,
        };
        scaling.as_dtype(dtype)
    }
}

/// Llama's attention with the queries scaled by position after RoPE.
#[derive(Debug, ModuleParameters)]
pub struct Attention {
    /// `[n_heads * head_dim, hidden]`.
    #[param]
    pub q_proj: Linear,
    /// `[n_kv_heads * head_dim, hidden]`.
    #[param]
    pub k_proj: Linear,
    /// `[n_kv_heads * head_dim, hidden]`.
    #[param]
    pub v_proj: Linear,
    /// `[hidden, n_heads * head_dim]`.
    #[param]
    pub o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
    scaling: QueryScaling,
}

impl Attention {
    fn new(args: &Ministral3Args, rope: Rope, scaling: QueryScaling) -> Result<Self> {
        let (dim, head_dim) = (args.hidden_size as i32, args.head_dim() as i32);
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let width = |heads: i32| {
            heads
                .checked_mul(head_dim)
                .ok_or_else(|| Exception::custom("attention: the heads exceed MLX's size limit"))
        };
        let (q_dim, kv_dim) = (width(n_heads)?, width(n_kv_heads)?);
        Ok(Attention {
            q_proj: Linear::new(dim, q_dim, false)?,
            k_proj: Linear::new(dim, kv_dim, false)?,
            v_proj: Linear::new(dim, kv_dim, false)?,
            o_proj: Linear::new(q_dim, dim, false)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope,
            scaling,
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let queries = rope_after(&self.rope, &queries, cache.as_deref())?;
        let keys = rope_after(&self.rope, &keys, cache.as_deref())?;
        let factors = self
            .scaling
            .factors(x.dim(1), cache.as_deref(), x.dtype())?;
        let queries = queries.multiply(&factors)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

type Layer = DecoderLayer<Attention, Mlp>;

/// The ministral3 model: embeddings, full and sliding-window layers, final norm, head (or tied
/// embeddings).
#[mlx_model(
    model_type = "ministral3",
    args = Ministral3Args,
    drop = ["*.self_attn.rotary_emb.inv_freq", "*activation_scale"],
    tied_head = "lm_head",
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
    fn new(args: &Ministral3Args) -> Result<Self> {
        let (dim, vocab, eps) = (args.hidden_size, args.vocab_size, args.rms_norm_eps);
        let rope = args.rope()?.build(args.head_dim())?;
        let scaling = args.query_scaling()?;
        let types = args.layer_types.as_deref().unwrap_or_default();
        let layers = layer_windows(types, args.sliding_window)
            .map(|window| {
                let attention = Attention::new(args, rope.clone(), scaling)?;
                let mlp = Mlp::new(dim, args.intermediate_size, false)?;
                Ok(DecoderLayer::new(attention, mlp, dim, eps)?.sliding_window(window))
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
