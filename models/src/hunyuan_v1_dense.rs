//! `hunyuan_v1_dense` (Hunyuan dense), after mlx-lm's `models/hunyuan_v1_dense.py`: llama
//! with biases on all four attention projections (`attention_bias`), per-head RMS norms on
//! queries and keys applied after RoPE (`use_qk_norm`; the checkpoints' `query_layernorm` /
//! `key_layernorm`), and RoPE of frequencies `(base * alpha^(d / (d - 2)))^(2i / d)` with
//! `rope_scaling.alpha` (NTK-alpha; 1 without scaling).

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::arange;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
};

/// config.json of a hunyuan_v1_dense checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct HunyuanV1DenseArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Context length of the checkpoint (read; the RoPE does not depend on it).
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
    /// Biases on the four attention projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Per-head RMS norms on the rotated queries and keys.
    #[arg(default = true)]
    pub use_qk_norm: bool,
    /// With `alpha`, `factor` and `type` (the reference requires all three and reads `alpha`).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
    /// Width of one attention head; absent or `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
}

impl HunyuanV1DenseArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        let head_dim = self.head_dim();
        if head_dim <= 2 || !head_dim.is_multiple_of(2) {
            return Err(ArgsError::invalid(
                &["head_dim"],
                format!("the head width {head_dim} must be even and above 2 (RoPE's NTK-alpha base divides by head_dim - 2)"),
            ));
        }
        let base = self.rope_base()?;
        if !(base.is_finite() && base > 0.0 && base <= f64::from(f32::MAX)) {
            return Err(ArgsError::invalid(
                &["rope_theta", "rope_scaling"],
                format!("the scaled RoPE base {base} is not a positive float32"),
            ));
        }
        Ok(())
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// `rope_scaling.alpha`, 1 without it; a `rope_scaling` must have `alpha`, `factor` and
    /// `type`.
    pub fn scaling_alpha(&self) -> std::result::Result<f64, ArgsError> {
        let bad = |why: String| ArgsError::invalid(&["rope_scaling"], why);
        let scaling = match &self.rope_scaling {
            None | Some(Value::Null) => return Ok(1.0),
            Some(Value::Object(m)) if m.is_empty() => return Ok(1.0),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(bad("`rope_scaling` must be an object".into())),
        };
        if let Some(missing) = ["alpha", "factor", "type"]
            .into_iter()
            .find(|k| !scaling.contains_key(*k))
        {
            return Err(bad(format!(
                "`rope_scaling` must contain `alpha`, `factor` and `type`; `{missing}` is missing"
            )));
        }
        match scaling.get("alpha").and_then(Value::as_f64) {
            Some(alpha) if alpha.is_finite() && alpha > 0.0 => Ok(alpha),
            _ => Err(bad("`rope_scaling.alpha` must be a positive number".into())),
        }
    }

    /// The scaled base, `rope_theta * alpha^(head_dim / (head_dim - 2))`.
    pub fn rope_base(&self) -> std::result::Result<f64, ArgsError> {
        let d = self.head_dim() as f64;
        Ok(f64::from(self.rope_theta) * self.scaling_alpha()?.powf(d / (d - 2.0)))
    }

    /// The RoPE: frequencies `base ** (arange(0, d, 2) / d)` in float32, as the reference.
    pub fn rope(&self) -> std::result::Result<Rope, Exception> {
        let dims = self.head_dim() as i32;
        let base = self
            .rope_base()
            .map_err(|e| Exception::custom(e.to_string()))? as f32;
        let exps = arange::<_, i32>(0, dims, 2)?.divide(Array::from_int(dims))?;
        let freqs = Array::from_f32(base).power(&exps)?;
        Rope::with_freqs(dims, false, freqs)
    }
}

/// The hunyuan_v1_dense model: embeddings, decoder layers, final norm, head (or tied
/// embeddings).
#[mlx_model(
    model_type = "hunyuan_v1_dense",
    args = HunyuanV1DenseArgs,
    rename("model.layers.{n}.self_attn.query_layernorm" => "model.layers.{n}.self_attn.q_norm"),
    rename("model.layers.{n}.self_attn.key_layernorm" => "model.layers.{n}.self_attn.k_norm"),
    tied_head = "lm_head",
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &HunyuanV1DenseArgs) -> Result<Self> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let bias = args.attention_bias;
        let mut attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
        if args.use_qk_norm {
            attention = attention.qk_norm_after_rope(eps);
        }
        let rope = args.rope()?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
