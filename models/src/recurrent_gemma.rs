//! `recurrent_gemma` (Griffin), after mlx-lm's `models/recurrent_gemma.py`: residual blocks
//! whose temporal block is, by the cyclic `block_types`, either a recurrent block (a GeLU
//! branch times the RG-LRU of the causal conv of the input, both with their cached state) or
//! local attention over the last `attention_window_size` positions (one key/value head, RoPE
//! on the first half of each head, a rotating cache); then a GeGLU MLP with biases. Norms are
//! gemma's zero-centred RMS norms; embeddings are scaled by `sqrt(hidden_size)`; logits are
//! soft-capped at `logits_soft_cap` (0: not).
//!
//! As in the reference, `rope_theta`, `attention_bias` and `num_key_value_heads` are read and
//! not applied (RoPE base 10000, no q/k/v biases, one key/value head), and the blocks' own
//! norms take epsilon 1e-5 (`rms_norm_eps` is the final norm's). The head is the checkpoint's
//! `lm_head` or, when it has none, the embeddings (decided by `tie_word_embeddings`, the
//! checkpoint reconciled in sanitize). Beyond the reference: `conv1d_width` sizes the
//! convolution (the reference's is 4 taps whatever the config says, as every published
//! checkpoint has), a left-padded batch masks its padding out of the recurrent blocks, and a
//! stack without attention blocks runs.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_attention_mask, create_ssm_mask, ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::{gelu_approx, GatedActivation};
use mlx_models::nn::either::Either;
use mlx_models::nn::gemma::{resolve_tied_head, soft_cap, EmbedScale};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rglru::Rglru;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::ssm::{depthwise_weights_to_mlx, layer_arrays, DepthwiseConv1d};
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, Attention, AttentionConfig, Mlp,
};
use mlx_models::weights::Weights;

/// config.json of a recurrent_gemma checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct RecurrentGemmaArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream, the RG-LRU and the attention.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Twice the MLP's hidden width.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of residual blocks.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Heads of the attention and blocks of the RG-LRU's gates.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Read, not applied: the attention has one key/value head, as in the reference.
    pub num_key_value_heads: Option<usize>,
    /// Read, not applied: no q/k/v biases, as in the reference.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Taps of the recurrent blocks' convolution.
    #[arg(positive)]
    pub conv1d_width: usize,
    /// The logits are `tanh(logits / cap) * cap`; 0 or null: not capped.
    pub logits_soft_cap: Option<f32>,
    /// Epsilon of the final norm.
    #[arg(positive)]
    pub rms_norm_eps: f32,
    /// Read, not applied: the RoPE base is 10000, as in the reference.
    pub rope_theta: Option<f32>,
    /// Positions each attention block sees (its own and the ones before).
    #[arg(positive)]
    pub attention_window_size: usize,
    /// Whether the embeddings are scaled by `sqrt(hidden_size)`.
    #[arg(default = true)]
    pub embeddings_scale_by_sqrt_dim: bool,
    /// `recurrent` or `attention`, repeated over the blocks (2B checkpoints spell it
    /// `_block_types`).
    #[arg(alias = "_block_types")]
    pub block_types: Vec<String>,
    /// Whether the model is built without a head; a checkpoint that disagrees is reconciled
    /// in sanitize, as the reference decides by the checkpoint.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl RecurrentGemmaArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (dim, heads) = (self.hidden_size, self.num_attention_heads);
        check_heads(dim, heads, 1, None)?;
        if (dim / heads) % 4 != 0 {
            let msg = format!(
                "`hidden_size` / `num_attention_heads` ({}) must be a multiple of 4: RoPE turns half of each head",
                dim / heads
            );
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                msg,
            ));
        }
        if self.intermediate_size < 2 {
            let msg = "`intermediate_size` must be at least 2 (the MLP is half as wide)";
            return Err(ArgsError::invalid(&["intermediate_size"], msg));
        }
        if self.block_types.is_empty() {
            return Err(ArgsError::invalid(
                &["block_types"],
                "`block_types` is empty",
            ));
        }
        let types = self.block_types.iter();
        if let Some(bad) = types
            .into_iter()
            .find(|t| !matches!(t.as_str(), "recurrent" | "attention"))
        {
            let msg = format!("`block_types`: unknown block type {bad:?} (expected \"recurrent\" or \"attention\")");
            return Err(ArgsError::invalid(&["block_types"], msg));
        }
        Ok(())
    }

    /// Whether block `i` attends (else it is recurrent).
    pub fn is_attention(&self, i: usize) -> bool {
        let types = &self.block_types;
        !types.is_empty() && types[i % types.len()] == "attention"
    }
}

/// The recurrent temporal block: `linear_out(rg_lru(conv(linear_x(x))) * gelu(linear_y(x)))`.
#[derive(Debug, ModuleParameters)]
struct RecurrentBlock {
    #[param]
    linear_y: Linear,
    #[param]
    linear_x: Linear,
    #[param]
    linear_out: Linear,
    #[param]
    conv_1d: DepthwiseConv1d,
    #[param]
    rg_lru: Rglru,
}

impl RecurrentBlock {
    fn new(width: i32, heads: i32, kernel: i32) -> Result<Self> {
        Ok(RecurrentBlock {
            linear_y: Linear::new(width, width, true)?,
            linear_x: Linear::new(width, width, true)?,
            linear_out: Linear::new(width, width, true)?,
            conv_1d: DepthwiseConv1d::new(width, kernel, true)?,
            rg_lru: Rglru::new(width, heads)?,
        })
    }

    /// The conv state is slot 0 of `cache`, the RG-LRU's slot 1.
    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let y = gelu_approx(&self.linear_y.forward(x)?)?;
        let x = self.linear_x.forward(x)?;
        let x = self.conv_1d.forward(&x, mask, cache.as_deref_mut(), 0)?;
        let state = cache.as_ref().and_then(|c| c.get(1));
        let (x, last) = self.rg_lru.forward(&x, state, mask)?;
        if let Some(c) = cache {
            c.set(1, last);
            c.advance(x.dim(1))?;
        }
        self.linear_out.forward(&x.multiply(&y)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct ResidualBlock {
    #[param]
    temporal_pre_norm: RmsNorm,
    #[param]
    temporal_block: Either<RecurrentBlock, Attention>,
    #[param]
    channel_pre_norm: RmsNorm,
    #[param]
    mlp_block: Mlp,
}

#[derive(Debug, ModuleParameters)]
struct Griffin {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<ResidualBlock>,
    #[param]
    final_norm: RmsNorm,
}

/// The recurrent_gemma model: scaled embeddings, recurrent and local-attention residual
/// blocks, final norm, head (or the embeddings), soft-capped logits.
#[mlx_model(
    model_type = "recurrent_gemma",
    args = RecurrentGemmaArgs,
    sanitize = Self::sanitize_weights
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Griffin,
    /// `None` when tied: the embeddings double as the head.
    #[param]
    lm_head: Option<Linear>,
    embed_scale: Option<f32>,
    soft_cap: Option<f32>,
    window: i32,
}

impl Model {
    fn sanitize_weights(&self, weights: &mut Weights) -> Result<()> {
        depthwise_weights_to_mlx(weights, "conv_1d.weight")?;
        let has_head = self.lm_head.is_some();
        resolve_tied_head(weights, has_head, "lm_head", "model.embed_tokens")
    }
}

impl Architecture for Model {
    fn new(args: &RecurrentGemmaArgs) -> Result<Self> {
        let (dim, heads) = (args.hidden_size, args.num_attention_heads);
        let head_dim = dim / heads;
        let attention = AttentionConfig::new(dim, heads, 1, head_dim).bias(false, true);
        let rope = Rope::plain((head_dim / 2) as i32, 10000.0, false, 1.0);
        let (d, kernel) = (dim as i32, args.conv1d_width as i32);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let temporal_block = match args.is_attention(i) {
                    true => Either::Right(Attention::new(&attention, Some(rope.clone()))?),
                    false => Either::Left(RecurrentBlock::new(d, heads as i32, kernel)?),
                };
                let mlp = Mlp::new(dim, args.intermediate_size / 2, true)?;
                Ok(ResidualBlock {
                    // The reference's `RMSNorm(width)`: the default epsilon.
                    temporal_pre_norm: RmsNorm::zero_centered(d, 1e-5)?,
                    temporal_block,
                    channel_pre_norm: RmsNorm::zero_centered(d, 1e-5)?,
                    mlp_block: mlp.with_activation(GatedActivation::GeGlu),
                })
            })
            .collect::<Result<_>>()?;
        let scale = EmbedScale::Exact.factor(dim)?;
        Ok(Model {
            model: Griffin {
                embed_tokens: Embedding::new(args.vocab_size as i32, d)?,
                layers,
                final_norm: RmsNorm::zero_centered(d, args.rms_norm_eps)?,
            },
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
            embed_scale: args.embeddings_scale_by_sqrt_dim.then_some(scale),
            soft_cap: args.logits_soft_cap.filter(|&c| c != 0.0),
            window: args.attention_window_size as i32,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let m = &self.model;
        let mut h = m.embed_tokens.forward(inputs)?;
        if let Some(s) = self.embed_scale {
            h = h.multiply(Array::from_f32(s).as_dtype(h.dtype())?)?;
        }
        let n = inputs.dim(1);
        let first = |attention: bool| {
            let is_attention = |l: &ResidualBlock| l.temporal_block.right().is_some();
            m.layers.iter().position(|l| is_attention(l) == attention)
        };
        let attn_mask = match first(true) {
            Some(i) => create_attention_mask(n, cache.get(i), Some(self.window), false)?,
            None => AttentionMask::None,
        };
        let ssm_mask = match first(false) {
            Some(i) => create_ssm_mask(n, cache.get(i))?,
            None => None,
        };
        for (i, layer) in m.layers.iter().enumerate() {
            let x = layer.temporal_pre_norm.forward(&h)?;
            let x = match &layer.temporal_block {
                Either::Left(rec) => rec.forward(&x, ssm_mask.as_ref(), layer_arrays(cache, i)?)?,
                Either::Right(attn) => attn.forward(&x, &attn_mask, cache.get_mut(i))?,
            };
            let residual = x.add(&h)?;
            let x = layer
                .mlp_block
                .forward(&layer.channel_pre_norm.forward(&residual)?)?;
            h = x.add(&residual)?;
        }
        let h = m.final_norm.forward(&h)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => m.embed_tokens.as_linear(&h)?,
        };
        match self.soft_cap {
            Some(cap) => soft_cap(&logits, cap),
            None => Ok(logits),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        let kind = |l: &ResidualBlock| match l.temporal_block {
            Either::Left(_) => Cache::arrays(2),
            Either::Right(_) => Cache::rotating(self.window, 0),
        };
        self.model.layers.iter().map(kind).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
