//! `nemotron` (Nemotron-4, Minitron), after mlx-lm's `models/nemotron.py`: LayerNorms with
//! zero-centred weights (`1 + weight`, with a bias: `NemotronLayerNorm1P`), RoPE on
//! `partial_rotary_factor` of each head (scaled linearly at most), optional biases on the
//! attention and on the MLP, and an ungated MLP `down_proj(relu(up_proj(x))²)` (the
//! reference applies relu² whatever `hidden_act` says).

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::zeros_dtype;
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::relu2;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, rotary_dims, Attention, AttentionConfig, Block, Decoder,
    DecoderLayer,
};

/// config.json of a nemotron checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct NemotronArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Read and unused: the reference's MLP is always relu².
    pub hidden_act: String,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Epsilon of the layer norms.
    #[arg(positive)]
    pub norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head; absent or `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Context length of the checkpoint (read; the RoPE is plain or linear).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Biases on the four attention projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Biases on the MLP's two projections.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// The share of each head that RoPE rotates.
    #[arg(default = 0.5)]
    pub partial_rotary_factor: f64,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Read and unused: the reference always rotates the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// `{"type": "linear", "factor": f}` (or `rope_type`), or absent.
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl NemotronArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        self.rope_dims()?;
        self.rope_scale().map(drop)
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rotated features of each head: `int(partial_rotary_factor * head_dim)`.
    pub fn rope_dims(&self) -> std::result::Result<i32, ArgsError> {
        rotary_dims(
            "partial_rotary_factor",
            self.head_dim(),
            self.partial_rotary_factor,
        )
    }

    /// RoPE's position scale: `1 / factor` for linear scaling, else 1. The reference accepts
    /// only a linear `rope_scaling` with a `factor`.
    pub fn rope_scale(&self) -> std::result::Result<f32, ArgsError> {
        let bad =
            |why: &str| ArgsError::invalid(&["rope_scaling"], format!("`rope_scaling` {why}"));
        let scaling = match &self.rope_scaling {
            None | Some(Value::Null) => return Ok(1.0),
            Some(Value::Object(m)) if m.is_empty() => return Ok(1.0),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(bad("must be an object")),
        };
        let kind = scaling
            .get("type")
            .or_else(|| scaling.get("rope_type"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("must contain `type` or `rope_type`"))?;
        if kind != "linear" {
            return Err(bad(&format!(
                "type {kind:?} is not supported; only \"linear\""
            )));
        }
        let factor = scaling
            .get("factor")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("must contain a numeric `factor`"))?;
        let scale = (1.0 / factor) as f32;
        if !(factor > 0.0 && scale.is_finite() && scale > 0.0) {
            return Err(bad(&format!("`factor` {factor} must be a positive number")));
        }
        Ok(scale)
    }
}

/// LayerNorm with zero-centred weights and a bias: `layer_norm(x, 1 + weight, bias)`.
#[derive(Debug, ModuleParameters)]
struct LayerNorm1P {
    #[param]
    weight: Param<Array>,
    #[param]
    bias: Param<Array>,
    eps: f32,
}

impl LayerNorm1P {
    fn new(dims: i32, eps: f32) -> Result<Self> {
        Ok(LayerNorm1P {
            weight: Param::new(zeros_dtype(&[dims], Dtype::Float32)?),
            bias: Param::new(zeros_dtype(&[dims], Dtype::Float32)?),
            eps,
        })
    }
}

impl Block for LayerNorm1P {
    fn forward(&self, x: &Array) -> Result<Array> {
        let one = Array::from_f32(1.0).as_dtype(self.weight.dtype())?;
        let weight = one.add(&*self.weight)?;
        fast::layer_norm(x, Some(&weight), Some(&*self.bias), self.eps)
    }
}

/// `down_proj(relu(up_proj(x))²)`.
#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    up_proj: Linear,
    #[param]
    down_proj: Linear,
}

impl Block for Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.down_proj.forward(&relu2(&self.up_proj.forward(x)?)?)
    }
}

type Layer = DecoderLayer<Attention, Mlp, LayerNorm1P>;

fn layer(args: &NemotronArgs, rope: Rope) -> Result<Layer> {
    let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.norm_eps);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let bias = args.attention_bias;
    let config = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
    let (d, hidden) = (dim as i32, args.intermediate_size as i32);
    let mlp = Mlp {
        up_proj: Linear::new(d, hidden, args.mlp_bias)?,
        down_proj: Linear::new(hidden, d, args.mlp_bias)?,
    };
    let attention = Attention::new(&config, Some(rope))?;
    let norm = || LayerNorm1P::new(d, eps);
    Ok(DecoderLayer::with_norms(attention, mlp, norm()?, norm()?))
}

/// The nemotron model: embeddings, decoder layers, final `1 + weight` LayerNorm, head (or tied
/// embeddings).
#[mlx_model(model_type = "nemotron", args = NemotronArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer, LayerNorm1P>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &NemotronArgs) -> std::result::Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = Rope::plain(
            args.rope_dims()?,
            args.rope_theta,
            false,
            args.rope_scale()?,
        );
        let layers = (0..args.num_hidden_layers)
            .map(|_| layer(args, rope.clone()))
            .collect::<Result<_>>()?;
        let norm = LayerNorm1P::new(dim as i32, args.norm_eps)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers, norm)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
