//! `nemotron-nas`, after mlx-lm's `models/nemotron-nas.py`: NVIDIA's neural-architecture-search
//! llama (Llama-Nemotron Super / Ultra), whose layers differ one from another as `block_configs`
//! says. Each layer's attention is llama's grouped-query attention with its own
//! `num_attention_heads / n_heads_in_group` key/value heads, or one `hidden -> hidden` linear
//! layer (`replace_with_linear`), or nothing (`no_op`, its norm gone too); each layer's
//! feed-forward likewise is a gated MLP of its own width (`ffn_mult`: `2 * ffn_mult * hidden /
//! 3`, rounded up to a multiple of 256) with `hidden_act` on the gate, a linear layer, or
//! nothing. RoPE with `rope_scaling` (which must name `rope_type` and `factor`); biases with
//! `attention_bias` and `mlp_bias`.
//!
//! The reference takes the attention mask from the cache of the first layer that has an
//! attention or its linear stand-in; here it comes from the first layer that attends (a linear
//! stand-in never fills its cache), which gives the same masks for a prompt and its decode.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs, MAX_SIZE};
use mlx_models::cache::{create_attention_mask, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::either::Either;
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_per_layer, Attention, AttentionConfig, Block, Decoder, Layer,
    Mlp, RopeArgs,
};

/// The attention of one layer in `block_configs`.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
pub struct AttentionBlockConfig {
    /// No attention (and no norm before it).
    #[arg(default = false)]
    pub no_op: bool,
    /// A `hidden -> hidden` linear layer instead of the attention.
    #[arg(default = false)]
    pub replace_with_linear: bool,
    /// Query heads per key/value head; required for an attention.
    #[arg(positive)]
    pub n_heads_in_group: Option<usize>,
}

/// The feed-forward of one layer in `block_configs`.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
pub struct FfnBlockConfig {
    /// No feed-forward (and no norm before it).
    #[arg(default = false)]
    pub no_op: bool,
    /// A `hidden -> hidden` linear layer instead of the MLP.
    #[arg(default = false)]
    pub replace_with_linear: bool,
    /// The MLP's width as a multiple of `2 * hidden_size / 3`; required for an MLP.
    pub ffn_mult: Option<f64>,
}

/// One layer of `block_configs`.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
pub struct BlockConfig {
    /// Its attention.
    pub attention: AttentionBlockConfig,
    /// Its feed-forward.
    pub ffn: FfnBlockConfig,
}

/// config.json of a nemotron-nas checkpoint (every key has the reference's default).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct NemotronNasArgs {
    /// `model_type` of config.json.
    #[arg(default = "nemotron-nas".to_owned())]
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive, default = 8192)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(positive, default = 80)]
    pub num_hidden_layers: usize,
    /// Number of query heads of every attention.
    #[arg(positive, default = 64)]
    pub num_attention_heads: usize,
    /// Epsilon of the RMS norms.
    #[arg(positive, default = 1e-5)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive, default = 128256)]
    pub vocab_size: usize,
    /// One entry per layer.
    #[arg(default)]
    pub block_configs: Vec<BlockConfig>,
    /// The gate's activation: `silu`, `relu`, `gelu`, `gelu_new` or `gelu_fast` (the last two
    /// the tanh approximation).
    #[arg(default = "silu".to_owned())]
    pub hidden_act: String,
    /// Biases on the attentions' projections and their linear stand-ins.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Biases on the MLPs' projections and their linear stand-ins.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, default = 500000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling; when not empty it must have `rope_type` and `factor`.
    pub rope_scaling: Option<Value>,
    /// Context length of the checkpoint (scaled RoPE types read it).
    #[arg(positive, default = 131072)]
    pub max_position_embeddings: usize,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl NemotronNasArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        check_per_layer("block_configs", self.block_configs.len(), layers)?;
        self.activation()?;
        let heads = self.num_attention_heads;
        for (i, block) in self.block_configs.iter().enumerate() {
            let attention = &block.attention;
            if !attention.no_op && !attention.replace_with_linear {
                let Some(group) = attention.n_heads_in_group else {
                    return Err(ArgsError::invalid(
                        &["block_configs"],
                        format!("layer {i}: an attention needs `n_heads_in_group`"),
                    ));
                };
                if !heads.is_multiple_of(group) {
                    return Err(ArgsError::invalid(
                        &["num_attention_heads", "block_configs"],
                        format!(
                            "layer {i}: `num_attention_heads` ({heads}) is not a multiple of \
                             `n_heads_in_group` ({group})"
                        ),
                    ));
                }
                check_heads(self.hidden_size, heads, heads / group, None)?;
            }
            if !block.ffn.no_op && !block.ffn.replace_with_linear {
                self.intermediate_size(i)?;
            }
        }
        self.rope().map(drop)
    }

    /// The gated activation `hidden_act` names.
    pub fn activation(&self) -> std::result::Result<GatedActivation, ArgsError> {
        Ok(match self.hidden_act.as_str() {
            "silu" => GatedActivation::SwiGlu,
            "relu" => GatedActivation::ReGlu,
            "gelu" => GatedActivation::GeGluExact,
            "gelu_new" | "gelu_fast" => GatedActivation::GeGlu,
            other => {
                return Err(ArgsError::invalid(
                    &["hidden_act"],
                    format!(
                        "unknown activation {other:?}; expected silu, relu, gelu, gelu_new or \
                         gelu_fast"
                    ),
                ))
            }
        })
    }

    /// The MLP width of layer `i`: `int(2 * ffn_mult * hidden_size / 3)` (`ffn_mult` rounded to
    /// six decimals), rounded up to a multiple of 256.
    pub fn intermediate_size(&self, i: usize) -> std::result::Result<usize, ArgsError> {
        let bad = |why: String| ArgsError::invalid(&["block_configs"], format!("layer {i}: {why}"));
        let mult = self
            .block_configs
            .get(i)
            .and_then(|b| b.ffn.ffn_mult)
            .ok_or_else(|| bad("an MLP needs `ffn_mult`".into()))?;
        let mult: f64 = format!("{mult:.6}").parse().unwrap_or(mult);
        let width = (2.0 * mult * self.hidden_size as f64 / 3.0).trunc();
        if !(width >= 1.0 && width <= MAX_SIZE as f64 - 256.0) {
            return Err(bad(format!(
                "`ffn_mult` {mult} gives an MLP of {width} features"
            )));
        }
        Ok((width as usize).div_ceil(256) * 256)
    }

    /// The RoPE of the attentions.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let scaling = self.rope_scaling.as_ref().filter(|s| match s {
            Value::Object(o) => !o.is_empty(),
            other => !other.is_null(),
        });
        if let Some(s) = scaling {
            if s.get("factor").is_none() || s.get("rope_type").is_none() {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling` must contain `factor` and `rope_type`",
                ));
            }
        }
        let rope = RopeArgs::from_config(Some(self.rope_theta), scaling, None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// A `hidden -> hidden` linear layer standing in for an attention or a feed-forward
/// (`LinearSubblockReplacement`).
#[derive(Debug, ModuleParameters)]
pub struct LinearSubblock {
    /// `[hidden, hidden]`.
    #[param]
    pub linear: Linear,
}

impl LinearSubblock {
    fn new(dim: usize, bias: bool) -> Result<Self> {
        Ok(LinearSubblock {
            linear: Linear::new(dim as i32, dim as i32, bias)?,
        })
    }
}

/// A layer with each half optional: `h = x + attn(norm(x))` where it has an attention (or its
/// linear stand-in), then `h + mlp(norm(h))` where it has a feed-forward.
#[derive(Debug, ModuleParameters)]
pub struct TransformerBlock {
    /// Norm before the attention (absent with it).
    #[param]
    pub input_layernorm: Option<RmsNorm>,
    /// The attention or its linear stand-in.
    #[param]
    pub self_attn: Option<Either<Attention, LinearSubblock>>,
    /// Norm before the feed-forward (absent with it).
    #[param]
    pub post_attention_layernorm: Option<RmsNorm>,
    /// The MLP or its linear stand-in.
    #[param]
    pub mlp: Option<Either<Mlp, LinearSubblock>>,
}

impl TransformerBlock {
    fn new(args: &NemotronNasArgs, i: usize, rope: &RopeArgs) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let block = &args.block_configs[i];
        let norm = || RmsNorm::new(dim as i32, eps);
        let (attention, ffn) = (&block.attention, &block.ffn);
        let self_attn = match (attention.no_op, attention.replace_with_linear) {
            (true, _) => None,
            (false, true) => Some(Either::Right(LinearSubblock::new(
                dim,
                args.attention_bias,
            )?)),
            (false, false) => {
                let heads = args.num_attention_heads;
                let group = attention.n_heads_in_group.unwrap_or(1);
                let bias = args.attention_bias;
                let head_dim = dim / heads;
                let config =
                    AttentionConfig::new(dim, heads, heads / group, head_dim).bias(bias, bias);
                let rope = rope.build(head_dim)?;
                Some(Either::Left(Attention::new(&config, Some(rope))?))
            }
        };
        let mlp = match (ffn.no_op, ffn.replace_with_linear) {
            (true, _) => None,
            (false, true) => Some(Either::Right(LinearSubblock::new(dim, args.mlp_bias)?)),
            (false, false) => {
                let hidden = args.intermediate_size(i)?;
                let mlp = Mlp::new(dim, hidden, args.mlp_bias)?;
                Some(Either::Left(mlp.with_activation(args.activation()?)))
            }
        };
        Ok(TransformerBlock {
            input_layernorm: self_attn.as_ref().map(|_| norm()).transpose()?,
            self_attn,
            post_attention_layernorm: mlp.as_ref().map(|_| norm()).transpose()?,
            mlp,
        })
    }

    /// Whether the layer has an attention proper (which fills its cache).
    fn attends(&self) -> bool {
        matches!(self.self_attn, Some(Either::Left(_)))
    }
}

impl Layer for TransformerBlock {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let mut h = x.clone();
        if let (Some(norm), Some(attention)) = (&self.input_layernorm, &self.self_attn) {
            let normed = norm.forward(&h)?;
            let r = match attention {
                Either::Left(a) => a.forward(&normed, mask, cache)?,
                Either::Right(l) => l.linear.forward(&normed)?,
            };
            h = h.add(r)?;
        }
        if let (Some(norm), Some(mlp)) = (&self.post_attention_layernorm, &self.mlp) {
            let normed = norm.forward(&h)?;
            let r = match mlp {
                Either::Left(m) => Block::forward(m, &normed)?,
                Either::Right(l) => l.linear.forward(&normed)?,
            };
            h = h.add(r)?;
        }
        Ok(h)
    }
}

/// The nemotron-nas model: embeddings, the heterogeneous layers, final norm, head (or tied
/// embeddings).
#[mlx_model(model_type = "nemotron-nas", args = NemotronNasArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &NemotronNasArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?;
        let layers = (0..args.num_hidden_layers)
            .map(|i| TransformerBlock::new(args, i, &rope))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: mlx_models::nn::transformer::lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let model = &self.model;
        let mut h = model.embed_tokens.forward(inputs)?;
        let mask = match model.layers.iter().position(TransformerBlock::attends) {
            Some(i) => create_attention_mask(inputs.dim(1), cache.get(i), None, false)?,
            None => AttentionMask::None,
        };
        let mut caches = cache.iter_mut();
        for layer in &model.layers {
            h = layer.forward(&h, &mask, caches.next())?;
        }
        let h = model.norm.forward(&h)?;
        model.logits(&h, self.lm_head.as_ref())
    }

    mlx_models::decoder_methods!(cache: model);
}
