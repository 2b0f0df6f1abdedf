//! `qwen3_5` (alias `qwen3_5_moe`), after mlx-lm's `models/qwen3_5.py` and
//! `models/qwen3_5_moe.py`: the text model of Qwen3.5's multimodal checkpoints, qwen3_next's
//! hybrid stack (gated delta net layers with separate `in_proj_qkv`, `in_proj_z`, `in_proj_b`,
//! `in_proj_a`; every `full_attention_interval`-th layer gated attention) with a dense MLP in
//! every layer, or with `num_experts` a mixture of experts with a sigmoid-gated shared expert
//! in every layer. The config is read from `text_config` (or the top level when there is
//! none); RoPE from `rope_parameters` (its `rope_theta`, `partial_rotary_factor` and type;
//! multimodal RoPE is plain RoPE on text). The shared pieces are in
//! `mlx_models::nn::qwen3_next`.
//!
//! Sanitize: the vision tower (`vision_tower*`, `model.visual*`) and the multi-token-prediction
//! weights (`mtp.*`) are dropped, `model.language_model.*` becomes `language_model.model.*`
//! and other keys go under `language_model.`; qwen3_5_moe's fused experts
//! (`experts.gate_up_proj` `[E, 2 * hidden, dim]`, `experts.down_proj`) are split into the switch
//! layers; a checkpoint with conv weights in Hugging Face's `[C, 1, K]` has them turned and its
//! zero-centred norms shifted by one (once: the turned weights no longer say so).
//!
//! As the framework reads `text_config`, keys missing there are taken from the top level
//! (the reference uses the text config's defaults instead).

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::{json, Value};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, FeedForward, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::qwen3_next::{
    check_linear_attention, shift_norms, GatedAttention, GatedDeltaConfig, GatedDeltaNet,
    HybridLayer, HybridModel,
};
use mlx_models::nn::ssm::conv1d_weights_to_mlx;
use mlx_models::nn::transformer::{check_heads, check_layers, lm_head, rotary_dims, Mlp, RopeArgs};
use mlx_models::weights::Weights;

fn default_rope_parameters() -> Value {
    json!({"type": "default", "mrope_section": [11, 11, 10], "rope_theta": 100000,
           "partial_rotary_factor": 0.25})
}

/// The text config of a Qwen3.5 checkpoint, with the reference's defaults.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(text_config, validate = Self::check)]
pub struct Qwen35Args {
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub hidden_size: usize,
    /// Hidden width of the dense MLP.
    #[arg(default = 14336, positive)]
    pub intermediate_size: usize,
    /// Number of layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Query heads of the attention layers.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// Tokens in the vocabulary.
    #[arg(default = 151936, positive)]
    pub vocab_size: usize,
    /// Key and value heads of the attention layers.
    #[arg(default = 8, positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint.
    #[arg(default = 131072, positive)]
    pub max_position_embeddings: usize,
    /// Value heads of the linear layers.
    #[arg(default = 64, positive)]
    pub linear_num_value_heads: usize,
    /// Key (and query) heads of the linear layers.
    #[arg(default = 16, positive)]
    pub linear_num_key_heads: usize,
    /// Width of one key head of the linear layers.
    #[arg(default = 192, positive)]
    pub linear_key_head_dim: usize,
    /// Width of one value head of the linear layers.
    #[arg(default = 128, positive)]
    pub linear_value_head_dim: usize,
    /// Taps of the linear layers' convolution.
    #[arg(default = 4, positive)]
    pub linear_conv_kernel_dim: usize,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
    /// Biases on the four attention projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Width of one attention head (`hidden_size / num_attention_heads` when absent).
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Every this many layers is full attention (counting from 1), the others linear.
    #[arg(default = 4, positive)]
    pub full_attention_interval: usize,
    /// Routed experts of every layer (0: dense).
    #[arg(default = 0)]
    pub num_experts: usize,
    /// Experts each token goes through.
    #[arg(default = 0)]
    pub num_experts_per_tok: usize,
    /// Hidden width of the shared expert.
    #[arg(default = 0)]
    pub shared_expert_intermediate_size: usize,
    /// Hidden width of one routed expert.
    #[arg(default = 0)]
    pub moe_intermediate_size: usize,
    /// Renormalise the chosen experts' probabilities to sum to one.
    #[arg(default = true)]
    pub norm_topk_prob: bool,
    /// RoPE type, `rope_theta` and `partial_rotary_factor` (the reference's default when
    /// absent or null; an empty object: the three keys below, as the reference reads them
    /// when the key is empty or null).
    #[arg(default = default_rope_parameters())]
    pub rope_parameters: Value,
    /// Read where `rope_parameters` is empty.
    #[arg(default = 0.25)]
    pub partial_rotary_factor: f64,
    /// Read where `rope_parameters` is empty.
    #[arg(default = 100000.0, positive)]
    pub rope_theta: f32,
    /// Read where `rope_parameters` is empty.
    pub rope_scaling: Option<Value>,
}

impl Qwen35Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        check_linear_attention(&self.linear())?;
        let (_, factor, _) = self.rope_settings()?;
        rotary_dims("partial_rotary_factor", self.head_dim(), factor)?;
        self.rope().map(drop)?;
        if self.num_experts > 0 {
            let keys = ["num_experts", "num_experts_per_tok"];
            check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
            let widths = [
                ("moe_intermediate_size", self.moe_intermediate_size),
                (
                    "shared_expert_intermediate_size",
                    self.shared_expert_intermediate_size,
                ),
            ];
            if let Some((key, _)) = widths.iter().find(|(_, v)| *v == 0) {
                let msg = format!("`{key}` must be positive in a model with experts");
                return Err(ArgsError::invalid(&[key], msg));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The linear layers' sizes.
    pub fn linear(&self) -> GatedDeltaConfig {
        GatedDeltaConfig {
            hidden_size: self.hidden_size,
            num_k_heads: self.linear_num_key_heads,
            num_v_heads: self.linear_num_value_heads,
            head_k_dim: self.linear_key_head_dim,
            head_v_dim: self.linear_value_head_dim,
            conv_kernel: self.linear_conv_kernel_dim,
            eps: self.rms_norm_eps,
        }
    }

    /// The base, the rotated fraction and the scaling, as the reference derives them: from a
    /// non-empty `rope_parameters` (defaults 100000 and 0.25), else the top-level keys.
    fn rope_settings(&self) -> Result<(f32, f64, Option<&Value>), ArgsError> {
        let params = &self.rope_parameters;
        if params.as_object().is_none_or(|o| o.is_empty()) {
            return Ok((
                self.rope_theta,
                self.partial_rotary_factor,
                self.rope_scaling.as_ref(),
            ));
        }
        let number = |key: &str, default: f64| match params.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| {
                    let msg = format!("`rope_parameters.{key}` must be a positive number");
                    ArgsError::invalid(&["rope_parameters"], msg)
                }),
        };
        let theta = number("rope_theta", 100000.0)?;
        Ok((
            theta as f32,
            number("partial_rotary_factor", 0.25)?,
            Some(params),
        ))
    }

    /// The RoPE settings of the attention layers.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let (theta, _, scaling) = self.rope_settings()?;
        let rope = RopeArgs::from_config(Some(theta), scaling, None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }

    /// Whether layer `i` is a gated delta net layer (else full attention).
    pub fn is_linear(&self, i: usize) -> bool {
        !(i + 1).is_multiple_of(self.full_attention_interval)
    }
}

fn layer(args: &Qwen35Args, i: usize) -> Result<HybridLayer, Exception> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let mlp = if args.num_experts > 0 {
        let routing = Routing::SoftmaxTopK {
            k: args.num_experts_per_tok as i32,
            pick: TopK::Last,
            renormalize: args.norm_topk_prob,
        };
        let (hidden, experts) = (args.moe_intermediate_size, args.num_experts);
        let moe = SparseMoe::new(dim, hidden, experts, routing)?;
        FeedForward::Sparse(moe.shared_expert(args.shared_expert_intermediate_size, true)?)
    } else {
        FeedForward::Dense(Mlp::new(dim, args.intermediate_size, false)?)
    };
    if args.is_linear(i) {
        return HybridLayer::linear(GatedDeltaNet::split(&args.linear())?, mlp, dim, eps);
    }
    let (_, factor, _) = args.rope_settings()?;
    let rope_dims = rotary_dims("partial_rotary_factor", args.head_dim(), factor)?;
    let rope = args.rope()?.build(rope_dims as usize)?;
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let attn = GatedAttention::new(dim, heads, args.head_dim(), args.attention_bias, eps, rope)?;
    HybridLayer::attention(attn, mlp, dim, eps)
}

/// The text model under `language_model`: the hybrid stack and the head.
#[derive(Debug, ModuleParameters)]
struct TextModel {
    #[param]
    model: HybridModel,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

/// The qwen3_5 model: the text model of a multimodal checkpoint.
#[mlx_model(
    model_type = "qwen3_5",
    aliases = ["qwen3_5_moe"],
    args = Qwen35Args,
    drop = ["vision_tower*", "model.visual*", "*mtp.*"],
    rename("model.language_model" => "language_model.model"),
    add_prefix = "language_model.",
    tied_head = "language_model.lm_head",
    sanitize = Self::convert_hugging_face,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: TextModel,
}

impl Model {
    /// qwen3_5_moe's fused experts split into the switch layers, then Hugging Face's conv
    /// weights turned and, in a checkpoint that had them, its norms shifted.
    fn convert_hugging_face(&self, weights: &mut Weights) -> Result<(), Exception> {
        let fused: Vec<String> = weights
            .keys()
            .filter(|k| {
                k.ends_with(".mlp.experts.gate_up_proj") || k.ends_with(".mlp.experts.down_proj")
            })
            .cloned()
            .collect();
        for key in fused {
            let Some(value) = weights.remove(&key) else {
                continue;
            };
            let prefix = key
                .rsplit_once(".experts.")
                .map_or("", |(p, _)| p)
                .to_string();
            let name = |proj: &str| format!("{prefix}.switch_mlp.{proj}.weight");
            if key.ends_with("down_proj") {
                weights.insert(name("down_proj"), value);
                continue;
            }
            let rows = if value.ndim() == 3 { value.dim(-2) } else { 0 };
            if rows == 0 || rows % 2 != 0 {
                return Err(Exception::custom(format!(
                    "cannot split `{key}` of shape {:?} into gate and up projections",
                    value.shape()
                )));
            }
            let halves = value.split_equal(2, -2)?;
            weights.insert(name("gate_proj"), halves[0].clone());
            weights.insert(name("up_proj"), halves[1].clone());
        }
        let hugging_face = weights
            .iter()
            .any(|(k, v)| k.contains("conv1d.weight") && v.ndim() == 3 && v.dim(-1) != 1);
        conv1d_weights_to_mlx(weights)?;
        if hugging_face {
            shift_norms(weights)?;
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &Qwen35Args) -> Result<Self, Exception> {
        let dim = args.hidden_size;
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_, _>>()?;
        let language_model = TextModel {
            model: HybridModel::new(args.vocab_size, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        };
        Ok(Model { language_model })
    }

    fn forward(
        &mut self,
        inputs: &mlx_rs::Array,
        cache: &mut [mlx_models::cache::Cache],
    ) -> Result<mlx_rs::Array, Exception> {
        let text = &self.language_model;
        let h = text.model.forward(inputs, cache)?;
        text.model.logits(&h, text.lm_head.as_ref())
    }

    fn make_cache(&self) -> Vec<mlx_models::cache::Cache> {
        self.language_model.model.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.language_model.model.num_layers()
    }
}
