//! `llama4`, after mlx-lm's `models/llama4.py`: the text model of Llama 4's multimodal
//! checkpoints, read from `text_config`, its weights under `language_model.`. Every fourth
//! layer (`(i + 1) % 4 == 0`, whatever `no_rope_layers` says) attends to all positions
//! without RoPE, its queries scaled by attention temperature tuning
//! (`attn_temperature_tuning`, `floor_scale`, `attn_scale`); the others rotate (traditional
//! RoPE, any scaling), norm their queries and keys after RoPE with weightless RMS norms
//! (`use_qk_norm`, epsilon 1e-6) and attend within chunks of `attention_chunk_size`
//! positions, through a [`ChunkedKvCache`](mlx_models::cache::ChunkedKvCache). Every
//! `interleave_moe_layer_step`-th layer's feed-forward is a mixture of experts (a sigmoid
//! weight on the input of the one expert each token goes to, plus a shared expert); the
//! others are SwiGLU MLPs of `intermediate_size_mlp`. The head is never tied.
//!
//! As in the reference, a config must have at least four layers (it makes the full-attention
//! mask from the fourth layer's cache) and, where a layer has experts, one expert per token. Sanitize drops the vision
//! model and the projector (any key naming `vision_model` or `multi_modal_projector`) and
//! turns the Hugging Face experts (`experts.gate_up_proj` `[E, dim, 2 * hidden]`,
//! `experts.down_proj` `[E, hidden, dim]`) into the switch layers' `[E, out, in]` weights.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::indexing::take_along_axis;
use mlx_rs::ops::sigmoid;
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{create_attention_mask, create_chunked_attention_mask, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::multimodal::{TextConfig, TextConfigRules};
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::llama4::{Llama4Attention, Llama4Layer, QkNorm, TemperatureTuning};
use mlx_models::nn::moe::{check_experts, FeedForward, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::switch::SwitchGlu;
use mlx_models::nn::transformer::{
    check_heads, check_layers, Block, Decoder, DecoderArgs, Layer, Mlp, RopeArgs,
};
use mlx_models::weights::Weights;

/// `text_config` of a llama4 checkpoint (the reference's `TextArgs`).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Llama4TextConfig {
    /// Type and sizes (`intermediate_size`: the experts' and the shared expert's width).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Whether the attention projections have biases.
    pub attention_bias: bool,
    /// Positions per chunk of the local attention layers.
    #[arg(positive)]
    pub attention_chunk_size: usize,
    /// Width of one attention head; null or 0: `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Every this many layers (counting from 1) is a mixture of experts.
    #[arg(positive)]
    pub interleave_moe_layer_step: usize,
    /// Hidden width of the dense layers' MLP.
    #[arg(positive)]
    pub intermediate_size_mlp: usize,
    /// Context length of the checkpoint (for RoPE scaling).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Experts each token goes to (the reference supports 1 only).
    pub num_experts_per_tok: usize,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Routed experts per sparse layer.
    #[arg(positive)]
    pub num_local_experts: usize,
    /// RoPE scaling as config.json writes it (llama3's for the released models).
    pub rope_scaling: Option<Value>,
    /// transformers v5 spelling: the scaling and `rope_theta` in one object.
    pub rope_parameters: Option<Value>,
    /// Base frequency of the rotary position embedding.
    pub rope_theta: Option<f32>,
    /// Weightless RMS norms on the rotated queries and keys.
    pub use_qk_norm: bool,
    /// Temperature tuning in the layers without RoPE, when truthy (an integer in the
    /// reference, a boolean in transformers' configs).
    #[arg(default = Value::from(4))]
    pub attn_temperature_tuning: Value,
    /// Positions per step of the temperature's logarithm.
    #[arg(default = 8192.0, positive)]
    pub floor_scale: f32,
    /// Factor on the temperature's logarithm.
    #[arg(default = 0.1)]
    pub attn_scale: f32,
}

impl Llama4TextConfig {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        if layers < 4 {
            return Err(ArgsError::invalid(
                &["num_hidden_layers"],
                format!(
                    "llama4 needs at least 4 layers (the reference makes its full-attention \
                     mask from the fourth layer's cache), got {layers}"
                ),
            ));
        }
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim()))?;
        // As in the reference, the experts are checked only where a layer has them.
        if self.interleave_moe_layer_step <= layers {
            let keys = ["num_local_experts", "num_experts_per_tok"];
            check_experts(self.num_local_experts, self.num_experts_per_tok, keys)?;
            if self.num_experts_per_tok != 1 {
                return Err(ArgsError::invalid(
                    &["num_experts_per_tok"],
                    format!(
                        "llama4 routes each token to one expert (the reference's only case), \
                         not {}",
                        self.num_experts_per_tok
                    ),
                ));
            }
        }
        if !(self.attn_temperature_tuning.is_null()
            || self.attn_temperature_tuning.is_boolean()
            || self.attn_temperature_tuning.is_number())
        {
            return Err(ArgsError::invalid(
                &["attn_temperature_tuning"],
                format!(
                    "`attn_temperature_tuning` must be a number or a boolean, got {}",
                    self.attn_temperature_tuning
                ),
            ));
        }
        self.rope().map(drop)
    }

    /// Whether layer `i`'s feed-forward is a mixture of experts.
    pub fn is_sparse(&self, i: usize) -> bool {
        let step = self.interleave_moe_layer_step;
        i % step == step - 1
    }

    /// `head_dim`, or `hidden_size / num_attention_heads` where it is null or 0.
    pub fn head_dim(&self) -> usize {
        match self.head_dim {
            Some(d) if d > 0 => d,
            _ => self.hidden_size / self.num_attention_heads,
        }
    }

    /// The RoPE of the rotating layers.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
        )?;
        Ok(rope
            .traditional(true)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }

    /// The temperature tuning, where `attn_temperature_tuning` is truthy.
    pub fn temperature(&self) -> Option<TemperatureTuning> {
        let on = match &self.attn_temperature_tuning {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|v| v != 0.0),
            _ => false,
        };
        on.then_some(TemperatureTuning {
            floor_scale: self.floor_scale,
            attn_scale: self.attn_scale,
        })
    }
}

/// What llama4 puts into its text config: nothing (`text_config` is required).
#[derive(Debug)]
pub enum Llama4Rules {}

impl TextConfigRules for Llama4Rules {}

/// config.json of a llama4 checkpoint: the text model's config in `text_config`.
pub type Llama4Args = TextConfig<Llama4TextConfig, Llama4Rules>;

/// Whether layer `i` attends within chunks (and rotates); the others attend to everything.
fn is_chunked(i: usize) -> bool {
    !(i + 1).is_multiple_of(4)
}

/// The mixture of experts: the `router`'s best expert per token, its sigmoid weight applied to
/// the token before the expert, plus the `shared_expert`.
#[derive(Debug, ModuleParameters)]
struct Moe {
    #[param]
    router: Linear,
    #[param]
    experts: SwitchGlu,
    #[param]
    shared_expert: Mlp,
}

impl Block for Moe {
    fn forward(&self, x: &Array) -> Result<Array> {
        let logits = self.router.forward(x)?;
        let indices = TopK::Negated.indices(&logits, 1)?;
        let scores = take_along_axis(&logits, &indices, -1)?;
        let scores = sigmoid(scores.as_dtype(Dtype::Float32)?)?.as_dtype(x.dtype())?;
        let out = self
            .experts
            .forward(&x.multiply(&scores)?, &indices)?
            .squeeze_axes(&[2])?;
        out.add(self.shared_expert.forward(x)?)
    }
}

type TransformerBlock = Llama4Layer<FeedForward<Mlp, Moe>>;

fn layer(args: &Llama4TextConfig, rope: &RopeArgs, i: usize) -> Result<TransformerBlock> {
    let (dim, eps, head_dim) = (args.hidden_size, args.rms_norm_eps, args.head_dim());
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let chunked = is_chunked(i);
    let rope = chunked.then(|| rope.build(head_dim)).transpose()?;
    let attention =
        Llama4Attention::new(dim, heads.0, heads.1, head_dim, args.attention_bias, rope)?
            .qk_norm((args.use_qk_norm && chunked).then_some(QkNorm::AfterRope(1e-6)))
            .temperature(args.temperature().filter(|_| !chunked));
    let feed_forward = if args.is_sparse(i) {
        let (hidden, experts) = (args.intermediate_size as i32, args.num_local_experts as i32);
        FeedForward::Sparse(Moe {
            router: Linear::new(dim as i32, experts, false)?,
            experts: SwitchGlu::new(dim as i32, hidden, experts, GatedActivation::SwiGlu, false)?,
            shared_expert: Mlp::new(dim, args.intermediate_size, false)?,
        })
    } else {
        FeedForward::Dense(Mlp::new(dim, args.intermediate_size_mlp, false)?)
    };
    Llama4Layer::new(attention, feed_forward, dim, eps)
}

/// The text model: the decoder stack and its head.
#[derive(Debug, ModuleParameters)]
struct LanguageModel {
    #[param]
    model: Decoder<TransformerBlock>,
    #[param]
    lm_head: Linear,
    attention_chunk_size: i32,
}

/// The llama4 model: the text model under `language_model`.
#[mlx_model(
    model_type = "llama4",
    args = Llama4Args,
    drop = ["*vision_model*", "*multi_modal_projector*"],
    sanitize = Self::sanitize_experts,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: LanguageModel,
}

impl Model {
    /// The Hugging Face experts as switch layers: `gate_up_proj` split into the gate and up
    /// halves of its last axis, each and `down_proj` transposed to `[E, out, in]`.
    fn sanitize_experts(&self, weights: &mut Weights) -> Result<()> {
        for l in 0..self.num_layers() {
            let prefix = format!("language_model.model.layers.{l}.feed_forward.experts");
            if let Some(v) = weights.remove(&format!("{prefix}.gate_up_proj")) {
                let halves = v.split_equal(2, -1)?;
                let [gate, up] = halves.as_slice() else {
                    return Err(Exception::custom(format!(
                        "{prefix}.gate_up_proj does not split in two"
                    )));
                };
                weights.insert(format!("{prefix}.gate_proj.weight"), gate.swap_axes(1, 2)?);
                weights.insert(format!("{prefix}.up_proj.weight"), up.swap_axes(1, 2)?);
            }
            if let Some(v) = weights.remove(&format!("{prefix}.down_proj")) {
                weights.insert(format!("{prefix}.down_proj.weight"), v.swap_axes(1, 2)?);
            }
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &Llama4Args) -> std::result::Result<Self, Exception> {
        let text = &args.text;
        let rope = text.rope().map_err(|e| Exception::custom(e.to_string()))?;
        let layers = (0..text.num_hidden_layers)
            .map(|i| layer(text, &rope, i))
            .collect::<Result<_>>()?;
        let (dim, vocab) = (text.hidden_size, text.vocab_size);
        let language_model = LanguageModel {
            model: Decoder::new(vocab, dim, text.rms_norm_eps, layers)?,
            lm_head: Linear::new(dim as i32, vocab as i32, false)?,
            attention_chunk_size: text.attention_chunk_size as i32,
        };
        Ok(Model { language_model })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let lm = &self.language_model;
        let model = &lm.model;
        let mut h = model.embed_tokens.forward(inputs)?;
        for (i, c) in cache.iter_mut().enumerate() {
            if let (true, Cache::Chunked(c)) = (is_chunked(i), c) {
                c.maybe_trim_front()?;
            }
        }
        let n = inputs.dim(1);
        let chunk_mask = create_chunked_attention_mask(n, cache.first(), lm.attention_chunk_size)?;
        let global_mask = create_attention_mask(n, cache.get(3), None, false)?;
        let mut caches = cache.iter_mut();
        for (i, layer) in model.layers.iter().enumerate() {
            let mask = if is_chunked(i) {
                &chunk_mask
            } else {
                &global_mask
            };
            h = layer.forward(&h, mask, caches.next())?;
        }
        lm.lm_head.forward(&model.norm.forward(&h)?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        let chunk = self.language_model.attention_chunk_size;
        (0..self.num_layers())
            .map(|i| match is_chunked(i) {
                true => Cache::chunked(chunk),
                false => Cache::kv(),
            })
            .collect()
    }

    fn num_layers(&self) -> usize {
        self.language_model.model.num_layers()
    }
}
