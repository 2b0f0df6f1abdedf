//! `minicpm`, after mlx-lm's `models/minicpm.py`: llama with the embeddings times `scale_emb`,
//! both residual branches times `scale_depth / sqrt(num_hidden_layers)`, and an untied head fed
//! the hidden states divided by `hidden_size / dim_model_base`. A checkpoint without
//! `lm_head` (MiniCPM's releases tie it) gets the embeddings copied there, as the reference's
//! sanitize does (with their quantization scales when they have them). As in the reference, a
//! tied head (`tie_word_embeddings`) gets the hidden states undivided; the reference itself
//! cannot load such a checkpoint (its sanitize adds an `lm_head` the model lacks), so here its
//! `lm_head` is dropped instead.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
    RopeArgs,
};
use mlx_models::weights::Weights;

/// config.json of a minicpm checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MiniCpmArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// The width the head's input is scaled to: it is divided by `hidden_size / dim_model_base`.
    #[arg(positive)]
    pub dim_model_base: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Numerator of the residual branches' factor `scale_depth / sqrt(num_hidden_layers)`.
    pub scale_depth: f64,
    /// Factor on the embeddings.
    pub scale_emb: f32,
    /// Context length of the checkpoint (dynamic NTK and longrope scaling need it).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 1000000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head is the embedding matrix (then fed undivided hidden states).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl MiniCpmArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        self.rope().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The divisor of the untied head's input: `hidden_size / dim_model_base`.
    pub fn head_divisor(&self) -> f32 {
        (self.hidden_size as f64 / self.dim_model_base as f64) as f32
    }

    /// The factor on both residual branches: `scale_depth / sqrt(num_hidden_layers)`.
    pub fn residual_multiplier(&self) -> f32 {
        (self.scale_depth / (self.num_hidden_layers as f64).sqrt()) as f32
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }
}

/// The minicpm model: scaled embeddings, decoder layers with scaled residuals, final norm, and
/// the head (its input divided by `hidden_size / dim_model_base`) or the tied embeddings.
#[mlx_model(
    model_type = "minicpm",
    args = MiniCpmArgs,
    tied_head = "lm_head",
    sanitize = Self::head_from_embeddings,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    head_divisor: f32,
}

impl Model {
    /// An untied model whose checkpoint has no `lm_head` gets the embeddings (and their
    /// quantization scales and biases) there. Idempotent: a second pass finds the head.
    fn head_from_embeddings(&self, weights: &mut Weights) -> Result<()> {
        if self.lm_head.is_none() || weights.contains_key("lm_head.weight") {
            return Ok(());
        }
        for leaf in ["weight", "scales", "biases"] {
            if let Some(v) = weights.get(&format!("model.embed_tokens.{leaf}")) {
                let v = v.clone();
                weights.insert(format!("lm_head.{leaf}"), v);
            }
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &MiniCpmArgs) -> std::result::Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim);
        let rope = args.rope()?.build(head_dim)?;
        let (hidden, m) = (args.intermediate_size, args.residual_multiplier());
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let layer = DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps);
                Ok(layer?.residual_multiplier(m))
            })
            .collect::<Result<_>>()?;
        let model = Decoder::new(args.vocab_size, dim, eps, layers)?;
        Ok(Model {
            model: model.embedding_multiplier(args.scale_emb),
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
            head_divisor: args.head_divisor(),
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        match &self.lm_head {
            Some(head) => {
                let divisor = Array::from_f32(self.head_divisor).as_dtype(h.dtype())?;
                head.forward(&h.divide(&divisor)?)
            }
            None => self.model.embed_tokens.as_linear(&h),
        }
    }

    mlx_models::decoder_methods!(cache: model);
}
