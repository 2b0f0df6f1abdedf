//! `granitemoehybrid`, after mlx-lm's `models/granitemoehybrid.py`: granite's multipliers
//! (embeddings, attention scale, residual branches, logits) around layers that are a Mamba2
//! mixer (gated norm over the whole width) or attention (RoPE, or none when
//! `position_embedding_type` is `"nope"`), as `layer_types` says, each followed by a mixture
//! of experts (top-k logits, then a softmax over them) plus a shared SwiGLU MLP, or by a
//! dense SwiGLU MLP when the config has no experts. Hugging Face checkpoints fuse the
//! experts' gate and up projections (`input_linear`, halves) and, in the dense form, name the
//! MLP `shared_mlp`.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::swiglu;
use mlx_models::nn::hybrid::{ssm_cache, HybridLayer, HybridMasks, HybridStack, LayerKind};
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::ssm::{
    check_mamba2, conv1d_weights_to_mlx, Mamba2Config, Mamba2Mixer, TimeStepLimit,
};
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_per_layer, lm_head, Attention, AttentionConfig, DecoderArgs,
    Mlp,
};
use mlx_models::weights::{split_fused, Fused, Weights};

/// config.json of a granitemoehybrid checkpoint. The `mamba_*` keys are required when a
/// layer is `"mamba"`; `num_local_experts` absent or 0 makes every feed-forward dense.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GraniteMoeHybridArgs {
    /// Type and sizes (`intermediate_size`: the width of one expert, or of the dense MLP).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Biases on the attention projections.
    pub attention_bias: bool,
    /// Factor applied to the embeddings.
    pub embedding_multiplier: f32,
    /// Scale of the attention scores (instead of `head_dim^-0.5`).
    pub attention_multiplier: f32,
    /// Divisor of the logits.
    pub logits_scaling: f32,
    /// Factor on each branch before it joins the residual stream.
    pub residual_multiplier: f32,
    /// `"mamba"` or `"attention"`, one per layer.
    pub layer_types: Vec<String>,
    /// Experts per layer (absent or 0: dense MLPs).
    pub num_local_experts: Option<usize>,
    /// Experts each token goes through.
    pub num_experts_per_tok: Option<usize>,
    /// Hidden width of the shared MLP next to the experts.
    #[arg(positive)]
    pub shared_intermediate_size: Option<usize>,
    /// Heads of the Mamba2 mixers.
    #[arg(positive)]
    pub mamba_n_heads: Option<usize>,
    /// Width of one Mamba2 head.
    #[arg(positive)]
    pub mamba_d_head: Option<usize>,
    /// Biases on the mixers' input and output projections.
    pub mamba_proj_bias: Option<bool>,
    /// Width of the SSM state.
    #[arg(positive)]
    pub mamba_d_state: Option<usize>,
    /// Taps of the causal convolution.
    #[arg(positive)]
    pub mamba_d_conv: Option<usize>,
    /// Groups of heads sharing `B` and `C`.
    #[arg(positive)]
    pub mamba_n_groups: Option<usize>,
    /// A bias on the convolutions.
    pub mamba_conv_bias: Option<bool>,
    /// Biases on the dense MLP.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// `"rope"`, or `"nope"` for attention without positions.
    #[arg(default = "rope".to_string())]
    pub position_embedding_type: String,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Bounds of the time step after its softplus.
    #[arg(default = TimeStepLimit(0.001, 100.0))]
    pub time_step_limit: TimeStepLimit,
    /// Base frequency of the rotary position embedding.
    #[arg(positive, default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
}

impl GraniteMoeHybridArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        check_per_layer(
            "layer_types",
            self.layer_types.len(),
            self.num_hidden_layers,
        )?;
        if let Some(bad) = self
            .layer_types
            .iter()
            .find(|t| *t != "mamba" && *t != "attention")
        {
            let msg = format!("unknown layer type {bad:?} (expected \"mamba\" or \"attention\")");
            return Err(ArgsError::invalid(&["layer_types"], msg));
        }
        if self.layer_types.iter().any(|t| t == "attention") {
            let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
            check_heads(self.hidden_size, heads, kv_heads, None)?;
        }
        if self.layer_types.iter().any(|t| t == "mamba") {
            self.mamba()?;
        }
        if self.use_moe() {
            let experts = self.num_local_experts.unwrap_or_default();
            let keys = ["num_local_experts", "num_experts_per_tok"];
            check_experts(experts, self.num_experts_per_tok.unwrap_or_default(), keys)?;
            if self.shared_intermediate_size.is_none() {
                let msg = "experts need `shared_intermediate_size` (the shared MLP)";
                return Err(ArgsError::invalid(&["shared_intermediate_size"], msg));
            }
        }
        if !matches!(self.position_embedding_type.as_str(), "rope" | "nope") {
            let msg = format!(
                "unknown `position_embedding_type` {:?}",
                self.position_embedding_type
            );
            return Err(ArgsError::invalid(&["position_embedding_type"], msg));
        }
        if self.logits_scaling == 0.0 {
            return Err(ArgsError::invalid(
                &["logits_scaling"],
                "`logits_scaling` is 0",
            ));
        }
        Ok(())
    }

    /// Whether the feed-forwards are mixtures of experts.
    pub fn use_moe(&self) -> bool {
        self.num_local_experts.is_some_and(|e| e > 0)
    }

    /// The Mamba2 mixers' shape, from the `mamba_*` keys (required for mamba layers).
    pub fn mamba(&self) -> std::result::Result<Mamba2Config, ArgsError> {
        let need = |key: &str, v: Option<usize>| {
            v.ok_or_else(|| ArgsError::invalid(&[key], format!("mamba layers need `{key}`")))
        };
        let heads = need("mamba_n_heads", self.mamba_n_heads)?;
        let head_dim = need("mamba_d_head", self.mamba_d_head)?;
        let groups = need("mamba_n_groups", self.mamba_n_groups)?;
        let state = need("mamba_d_state", self.mamba_d_state)?;
        let kernel = need("mamba_d_conv", self.mamba_d_conv)?;
        let keys = [
            "mamba_n_heads",
            "mamba_d_head",
            "mamba_n_groups",
            "mamba_d_state",
        ];
        check_mamba2(keys, heads, head_dim, groups, state)?;
        let proj_bias = self.mamba_proj_bias.unwrap_or(false);
        let config = Mamba2Config::new(
            self.hidden_size,
            heads,
            head_dim,
            groups,
            state,
            kernel,
            self.rms_norm_eps,
        )
        .proj_bias(proj_bias, proj_bias)
        .conv_bias(self.mamba_conv_bias.unwrap_or(false))
        .time_step_limit(self.time_step_limit);
        Ok(config)
    }
}

/// The shared expert: `output_linear(swiglu(gate, up))` with gate and up the halves of
/// `input_linear`.
#[derive(Debug, ModuleParameters)]
struct SharedMlp {
    #[param]
    input_linear: Linear,
    #[param]
    output_linear: Linear,
}

impl SharedMlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let gate_up = self.input_linear.forward(x)?.split_equal(2, -1)?;
        self.output_linear
            .forward(&swiglu(&gate_up[0], &gate_up[1])?)
    }
}

#[derive(Debug, ModuleParameters)]
struct GraniteLayer {
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    mamba: Option<Mamba2Mixer>,
    #[param]
    self_attn: Option<Attention>,
    #[param]
    block_sparse_moe: Option<SparseMoe>,
    #[param]
    shared_mlp: Option<SharedMlp>,
    #[param]
    mlp: Option<Mlp>,
    #[param]
    post_attention_layernorm: RmsNorm,
    residual_multiplier: f32,
}

fn scaled(x: &Array, factor: f32) -> Result<Array> {
    x.multiply(Array::from_f32(factor).as_dtype(x.dtype())?)
}

impl GraniteLayer {
    fn new(args: &GraniteMoeHybridArgs, layer_type: &str) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let (mut mamba, mut self_attn) = (None, None);
        if layer_type == "mamba" {
            mamba = Some(Mamba2Mixer::new(&args.mamba()?)?);
        } else {
            let heads = args.num_attention_heads;
            let head_dim = dim / heads;
            let bias = args.attention_bias;
            let config = AttentionConfig::new(dim, heads, args.num_key_value_heads, head_dim)
                .bias(bias, bias)
                .scale(args.attention_multiplier);
            let rope = (args.position_embedding_type != "nope")
                .then(|| Rope::plain(head_dim as i32, args.rope_theta, false, 1.0));
            self_attn = Some(Attention::new(&config, rope)?);
        }
        let (mut block_sparse_moe, mut shared_mlp, mut mlp) = (None, None, None);
        if args.use_moe() {
            let routing = Routing::TopKSoftmax {
                k: args.num_experts_per_tok.unwrap_or_default() as i32,
                pick: TopK::Last,
                float32_weights: false,
            };
            let experts = args.num_local_experts.unwrap_or_default();
            block_sparse_moe = Some(SparseMoe::new(
                dim,
                args.intermediate_size,
                experts,
                routing,
            )?);
            let shared = args.shared_intermediate_size.unwrap_or_default() as i32;
            shared_mlp = Some(SharedMlp {
                input_linear: Linear::new(dim as i32, 2 * shared, false)?,
                output_linear: Linear::new(shared, dim as i32, false)?,
            });
        } else {
            mlp = Some(Mlp::new(dim, args.intermediate_size, args.mlp_bias)?);
        }
        Ok(GraniteLayer {
            input_layernorm: RmsNorm::new(dim as i32, eps)?,
            mamba,
            self_attn,
            block_sparse_moe,
            shared_mlp,
            mlp,
            post_attention_layernorm: RmsNorm::new(dim as i32, eps)?,
            residual_multiplier: args.residual_multiplier,
        })
    }
}

impl HybridLayer for GraniteLayer {
    fn kind(&self) -> LayerKind {
        match self.mamba {
            Some(_) => LayerKind::Ssm,
            None => LayerKind::Attention,
        }
    }

    fn forward(&self, x: &Array, masks: &HybridMasks, cache: Option<&mut Cache>) -> Result<Array> {
        let normed = self.input_layernorm.forward(x)?;
        let r = match (&self.mamba, &self.self_attn) {
            (Some(mamba), _) => mamba.forward(&normed, masks.ssm.as_ref(), ssm_cache(cache)?)?,
            (None, Some(attn)) => attn.forward(&normed, &masks.attention, cache)?,
            (None, None) => return Err(Exception::custom("a layer without a mixer")),
        };
        let h = x.add(scaled(&r, self.residual_multiplier)?)?;
        let normed = self.post_attention_layernorm.forward(&h)?;
        let out = match (&self.block_sparse_moe, &self.shared_mlp, &self.mlp) {
            (Some(moe), Some(shared), _) => moe.forward(&normed)?.add(shared.forward(&normed)?)?,
            (_, _, Some(mlp)) => mlp.forward(&normed)?,
            _ => return Err(Exception::custom("a layer without a feed-forward")),
        };
        h.add(scaled(&out, self.residual_multiplier)?)
    }
}

/// The granitemoehybrid model: scaled embeddings, Mamba2 and attention layers with their
/// feed-forwards and scaled residuals, final norm, head (or tied embeddings), logits divided
/// by `logits_scaling`. The reference's `router.layer` is the sparse block's `gate`.
#[mlx_model(
    model_type = "granitemoehybrid",
    args = GraniteMoeHybridArgs,
    tied_head = "lm_head",
    rename("model.layers.{n}.block_sparse_moe.router.layer" => "model.layers.{n}.block_sparse_moe.gate"),
    rename("model.layers.{n}.block_sparse_moe.output_linear" => "model.layers.{n}.block_sparse_moe.switch_mlp.down_proj"),
    sanitize = Self::fix_weights,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: HybridStack<GraniteLayer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    logits_scaling: f32,
    dense: bool,
}

impl Model {
    /// Hugging Face's conv layout; its fused expert projections (`input_linear`
    /// `[experts, 2 * hidden, dim]`, gate then up); in the dense form its `shared_mlp`, which
    /// is the layer's `mlp`.
    fn fix_weights(&self, weights: &mut Weights) -> Result<()> {
        conv1d_weights_to_mlx(weights)?;
        let err = |e: mlx_models::weights::SanitizeError| Exception::custom(e.to_string());
        if !self.dense {
            let parts = [
                "block_sparse_moe.switch_mlp.gate_proj",
                "block_sparse_moe.switch_mlp.up_proj",
            ];
            return split_fused(
                weights,
                "block_sparse_moe.input_linear",
                parts,
                1,
                Fused::Halves,
            )
            .map_err(err);
        }
        split_fused(
            weights,
            "shared_mlp.input_linear",
            ["mlp.gate_proj", "mlp.up_proj"],
            0,
            Fused::Halves,
        )
        .map_err(err)?;
        let down: Vec<String> = weights
            .keys()
            .filter(|k| k.contains(".shared_mlp.output_linear."))
            .cloned()
            .collect();
        for key in down {
            if let Some(w) = weights.remove(&key) {
                weights.insert(
                    key.replace(".shared_mlp.output_linear.", ".mlp.down_proj."),
                    w,
                );
            }
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &GraniteMoeHybridArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = args
            .layer_types
            .iter()
            .map(|t| GraniteLayer::new(args, t))
            .collect::<Result<_>>()?;
        let model = HybridStack::new(vocab, dim, args.rms_norm_eps, layers)?;
        Ok(Model {
            model: model.embedding_multiplier(args.embedding_multiplier),
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
            logits_scaling: args.logits_scaling,
            dense: !args.use_moe(),
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        let logits = self.model.logits(&h, self.lm_head.as_ref())?;
        logits.divide(Array::from_f32(self.logits_scaling).as_dtype(logits.dtype())?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
