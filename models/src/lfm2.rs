//! `lfm2` (Liquid's LFM2), after mlx-lm's `models/lfm2.py`: a hybrid of gated short
//! convolutions and attention. Most layers run a `ShortConv` (`in_proj` to `B`, `C` and `x`,
//! the causal depthwise convolution of `B * x` with its cached state, times `C`, `out_proj`);
//! the layers that `full_attn_idxs` (or `layer_types`) names run attention with per-head
//! q/k RMS norms and RoPE. Every layer has a SwiGLU feed-forward (`w1`, `w3`, `w2`); the head
//! is the embedding matrix after the final `embedding_norm`.
//!
//! Checkpoint names are mapped onto the shared attention and MLP (`out_proj`, `q_layernorm`,
//! `k_layernorm`, `w1` / `w3` / `w2`). Beyond the reference: a config without attention
//! layers runs (the reference indexes an empty list), and attention indices past the last
//! layer are refused instead of crashing later.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_attention_mask, create_ssm_mask, ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::Rope;
use mlx_models::nn::ssm::{depthwise_weights_to_mlx, layer_arrays, DepthwiseConv1d};
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, Attention, AttentionConfig, Mlp,
};
use mlx_models::weights::Weights;

/// config.json of an lfm2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Lfm2Args {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Query heads of the attention layers.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Key and value heads (`num_attention_heads` when null).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Context length of the checkpoint (sizes nothing).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Epsilon of every RMS norm.
    #[arg(positive)]
    pub norm_eps: f32,
    /// Biases on the short convolutions and their projections.
    pub conv_bias: bool,
    /// Taps of the short convolutions.
    #[arg(positive, rename = "conv_L_cache")]
    pub conv_l_cache: usize,
    /// Width of the feed-forward's input (the residual stream's).
    #[arg(positive)]
    pub block_dim: usize,
    /// The feed-forward's width is rounded up to a multiple of this.
    #[arg(positive)]
    pub block_multiple_of: usize,
    /// Factor on the feed-forward's width when it is auto-adjusted.
    pub block_ffn_dim_multiplier: Option<f64>,
    /// Whether the feed-forward's width is `2/3` of `block_ff_dim`, times the multiplier,
    /// rounded up.
    pub block_auto_adjust_ff_dim: bool,
    /// Width of the feed-forward (before any adjustment).
    #[arg(positive)]
    pub block_ff_dim: Option<usize>,
    /// Read when `block_ff_dim` is absent.
    #[arg(positive)]
    pub intermediate_size: Option<usize>,
    /// Base of the rotary embedding (`rope_parameters.rope_theta` wins).
    #[arg(default = 1000000.0, positive)]
    pub rope_theta: f32,
    /// transformers v5 spelling; only its `rope_theta` is read, as in the reference.
    pub rope_parameters: Option<Value>,
    /// Indices of the attention layers.
    pub full_attn_idxs: Option<Vec<usize>>,
    /// `full_attention` or `conv` per layer, when `full_attn_idxs` is absent.
    pub layer_types: Option<Vec<String>>,
}

impl Lfm2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        if self.block_dim != self.hidden_size {
            let msg = format!(
                "`block_dim` ({}) must equal `hidden_size` ({}): the feed-forward reads the residual stream",
                self.block_dim, self.hidden_size
            );
            return Err(ArgsError::invalid(&["block_dim", "hidden_size"], msg));
        }
        if self.block_ff_dim.is_none() {
            self.block_ff_dim = self.intermediate_size;
        }
        let ff = self.ff_dim().ok_or_else(|| {
            ArgsError::invalid(
                &["block_ff_dim", "intermediate_size"],
                "config.json must give `block_ff_dim` or `intermediate_size`",
            )
        })?;
        check_width(&["block_ff_dim"], "the feed-forward", ff)?;
        if let Some(theta) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
        {
            match theta.as_f64().filter(|t| t.is_finite() && *t > 0.0) {
                Some(t) => self.rope_theta = t as f32,
                None => {
                    return Err(ArgsError::invalid(
                        &["rope_parameters"],
                        format!(
                            "`rope_parameters.rope_theta` must be a positive number, found {theta}"
                        ),
                    ))
                }
            }
        }
        if self.full_attn_idxs.is_none() {
            let types = self.layer_types.as_ref().ok_or_else(|| {
                ArgsError::invalid(
                    &["full_attn_idxs", "layer_types"],
                    "config.json must give `full_attn_idxs` or `layer_types`",
                )
            })?;
            if types.len() != layers {
                let msg = format!(
                    "`layer_types` has {} entries for {layers} layers",
                    types.len()
                );
                return Err(ArgsError::invalid(&["layer_types"], msg));
            }
            if let Some(bad) = types
                .iter()
                .find(|t| !matches!(t.as_str(), "full_attention" | "conv"))
            {
                let msg = format!("`layer_types`: unknown layer type {bad:?} (expected \"full_attention\" or \"conv\")");
                return Err(ArgsError::invalid(&["layer_types"], msg));
            }
            let idxs = types.iter().enumerate();
            let idxs = idxs.filter(|(_, t)| *t == "full_attention").map(|(i, _)| i);
            self.full_attn_idxs = Some(idxs.collect());
        }
        if let Some(&i) = self.attention_layers().iter().find(|&&i| i >= layers) {
            let msg = format!("`full_attn_idxs` names layer {i}, but there are {layers} layers");
            return Err(ArgsError::invalid(&["full_attn_idxs"], msg));
        }
        Ok(())
    }

    /// The indices of the attention layers.
    pub fn attention_layers(&self) -> &[usize] {
        self.full_attn_idxs.as_deref().unwrap_or_default()
    }

    /// The feed-forward's width after the auto-adjustment (`None` when no width is given or
    /// it overflows).
    pub fn ff_dim(&self) -> Option<Option<usize>> {
        let ff = self.block_ff_dim?;
        if !self.block_auto_adjust_ff_dim {
            return Some(Some(ff));
        }
        let mut ff = (2 * ff as u128 / 3) as f64;
        if let Some(m) = self.block_ffn_dim_multiplier {
            ff = (m * ff).trunc();
        }
        if !(ff.is_finite() && ff >= 0.0 && ff < 1e15) {
            return Some(None);
        }
        let m = self.block_multiple_of;
        Some((ff as usize).div_ceil(m).checked_mul(m))
    }
}

/// The gated short convolution: `out_proj(C * conv(B * x))`.
#[derive(Debug, ModuleParameters)]
struct ShortConv {
    #[param]
    in_proj: Linear,
    #[param]
    conv: DepthwiseConv1d,
    #[param]
    out_proj: Linear,
}

impl ShortConv {
    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let parts = self.in_proj.forward(x)?.split_equal(3, -1)?;
        let (b, c, x) = (&parts[0], &parts[1], &parts[2]);
        let conv = self
            .conv
            .forward(&b.multiply(x)?, mask, cache.as_deref_mut(), 0)?;
        if let Some(cache) = cache {
            cache.advance(x.dim(1))?;
        }
        self.out_proj.forward(&c.multiply(&conv)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct Layer {
    #[param]
    self_attn: Option<Attention>,
    #[param]
    conv: Option<ShortConv>,
    #[param]
    feed_forward: Mlp,
    #[param]
    operator_norm: RmsNorm,
    #[param]
    ffn_norm: RmsNorm,
}

#[derive(Debug, ModuleParameters)]
struct Lfm2Model {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<Layer>,
    #[param]
    embedding_norm: RmsNorm,
}

/// The lfm2 model: embeddings, short-conv and attention layers, final norm, tied head.
#[mlx_model(
    model_type = "lfm2",
    args = Lfm2Args,
    rename("model.layers.{n}.self_attn.out_proj" => "model.layers.{n}.self_attn.o_proj"),
    rename("model.layers.{n}.self_attn.q_layernorm" => "model.layers.{n}.self_attn.q_norm"),
    rename("model.layers.{n}.self_attn.k_layernorm" => "model.layers.{n}.self_attn.k_norm"),
    rename("model.layers.{n}.feed_forward.w1" => "model.layers.{n}.feed_forward.gate_proj"),
    rename("model.layers.{n}.feed_forward.w3" => "model.layers.{n}.feed_forward.up_proj"),
    rename("model.layers.{n}.feed_forward.w2" => "model.layers.{n}.feed_forward.down_proj"),
    sanitize = Self::sanitize_conv
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Lfm2Model,
}

impl Model {
    fn sanitize_conv(&self, weights: &mut Weights) -> Result<()> {
        depthwise_weights_to_mlx(weights, "conv.conv.weight")
    }
}

impl Architecture for Model {
    fn new(args: &Lfm2Args) -> Result<Self> {
        let dim = args.hidden_size;
        let heads = args.num_attention_heads;
        let kv_heads = args.num_key_value_heads.unwrap_or(heads);
        let head_dim = dim / heads;
        let attention = AttentionConfig::new(dim, heads, kv_heads, head_dim).qk_norm(args.norm_eps);
        let rope = Rope::plain(head_dim as i32, args.rope_theta, false, 1.0);
        let ff = args.ff_dim().flatten().unwrap_or_default();
        let (d, eps) = (dim as i32, args.norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let is_attention = args.attention_layers().contains(&i);
                let conv = || -> Result<ShortConv> {
                    let kernel = args.conv_l_cache as i32;
                    Ok(ShortConv {
                        in_proj: Linear::new(d, 3 * d, args.conv_bias)?,
                        conv: DepthwiseConv1d::new(d, kernel, args.conv_bias)?,
                        out_proj: Linear::new(d, d, args.conv_bias)?,
                    })
                };
                Ok(Layer {
                    self_attn: is_attention
                        .then(|| Attention::new(&attention, Some(rope.clone())))
                        .transpose()?,
                    conv: (!is_attention).then(conv).transpose()?,
                    feed_forward: Mlp::new(dim, ff, false)?,
                    operator_norm: RmsNorm::new(d, eps)?,
                    ffn_norm: RmsNorm::new(d, eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Lfm2Model {
                embed_tokens: Embedding::new(args.vocab_size as i32, d)?,
                layers,
                embedding_norm: RmsNorm::new(d, eps)?,
            },
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let m = &self.model;
        let mut h = m.embed_tokens.forward(inputs)?;
        let n = inputs.dim(1);
        let first = |attention: bool| {
            m.layers
                .iter()
                .position(|l| l.self_attn.is_some() == attention)
        };
        let attn_mask = match first(true) {
            Some(i) => create_attention_mask(n, cache.get(i), None, false)?,
            None => AttentionMask::None,
        };
        let conv_mask = match first(false) {
            Some(i) => create_ssm_mask(n, cache.get(i))?,
            None => None,
        };
        for (i, layer) in m.layers.iter().enumerate() {
            let x = layer.operator_norm.forward(&h)?;
            let r = match (&layer.self_attn, &layer.conv) {
                (Some(attn), _) => attn.forward(&x, &attn_mask, cache.get_mut(i))?,
                (None, Some(conv)) => {
                    conv.forward(&x, conv_mask.as_ref(), layer_arrays(cache, i)?)?
                }
                (None, None) => return Err(Exception::custom(format!("layer {i} has no mixer"))),
            };
            let h2 = h.add(&r)?;
            h = h2.add(layer.feed_forward.forward(&layer.ffn_norm.forward(&h2)?)?)?;
        }
        let h = m.embedding_norm.forward(&h)?;
        m.embed_tokens.as_linear(&h)
    }

    fn make_cache(&self) -> Vec<Cache> {
        let kind = |l: &Layer| match l.self_attn {
            Some(_) => Cache::kv(),
            None => Cache::arrays(1),
        };
        self.model.layers.iter().map(kind).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
