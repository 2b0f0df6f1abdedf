//! `nemotron_h`, after mlx-lm's `models/nemotron_h.py`: a stack of pre-norm residual blocks,
//! each with one mixer chosen by `hybrid_override_pattern` (`M` a Mamba2 mixer with a gated
//! norm in `n_groups` groups, `*` attention without positions, `-` a relu² MLP, `E` a
//! mixture of relu² experts routed by sigmoid scores with a correction bias, group-limited,
//! with optional shared experts and a latent projection around the experts). Only the Mamba2
//! and attention blocks keep a cache, as in the reference.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::{expand_dims, matmul, zeros_dtype};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::{relu2, Activation};
use mlx_models::nn::hybrid::{HybridLayer, HybridMasks, HybridMixer, HybridStack, LayerKind};
use mlx_models::nn::moe::{check_routed_experts, FeedForward, Routing};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::ssm::{
    check_mamba2, conv1d_weights_to_mlx, Mamba2Config, Mamba2Mixer, TimeStepLimit,
};
use mlx_models::nn::switch::SwitchMlp;
use mlx_models::nn::transformer::{check_heads, check_layers, Attention, AttentionConfig, Block};
use mlx_models::weights::Weights;

/// config.json of a nemotron_h checkpoint. The layer stack is `hybrid_override_pattern` (a
/// string or a list of one-letter strings), or transformers' `layers_block_type` /
/// `layer_types` names mapped onto its letters.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct NemotronHArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Hidden width of the `-` blocks' MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Context length of the checkpoint (unused: no positions).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Query heads of the attention blocks.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Key and value heads of the attention blocks.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Biases on the attention projections.
    pub attention_bias: bool,
    /// Heads of the Mamba2 mixers.
    #[arg(positive)]
    pub mamba_num_heads: usize,
    /// Width of one Mamba2 head.
    #[arg(positive)]
    pub mamba_head_dim: usize,
    /// Biases on the mixers' input and output projections.
    pub mamba_proj_bias: bool,
    /// Width of the SSM state.
    #[arg(positive)]
    pub ssm_state_size: usize,
    /// Taps of the causal convolution.
    #[arg(positive)]
    pub conv_kernel: usize,
    /// Groups of heads sharing `B` and `C` (and groups of the gated norm).
    #[arg(positive)]
    pub n_groups: usize,
    /// Biases on the MLPs.
    pub mlp_bias: bool,
    /// Epsilon of every RMS norm.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Required by the reference, unused by it.
    pub use_bias: bool,
    /// A bias on the convolutions.
    pub use_conv_bias: bool,
    /// The block kinds, one letter per layer (`M`, `*`, `-`, `E`).
    pub hybrid_override_pattern: Option<Value>,
    /// The block kinds by name (`mamba`, `attention`, `mlp`, `moe`, ...), when there is no
    /// pattern.
    pub layers_block_type: Option<Vec<String>>,
    /// transformers' alias of `layers_block_type`.
    pub layer_types: Option<Vec<String>>,
    /// Number of layers; the pattern's length when absent.
    #[arg(positive)]
    pub num_hidden_layers: Option<usize>,
    /// Width of one attention head (`hidden_size / num_attention_heads` when absent).
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Hidden width of one routed expert.
    #[arg(positive)]
    pub moe_intermediate_size: Option<usize>,
    /// Hidden width of the shared experts' MLP.
    #[arg(positive)]
    pub moe_shared_expert_intermediate_size: Option<usize>,
    /// Width the experts work in, projected to and from the residual stream, if any.
    #[arg(positive)]
    pub moe_latent_size: Option<usize>,
    /// Groups of experts for group-limited routing.
    #[arg(positive)]
    pub n_group: Option<usize>,
    /// Routed experts per `E` block.
    #[arg(positive)]
    pub n_routed_experts: Option<usize>,
    /// Present when the `E` blocks have shared experts.
    pub n_shared_experts: Option<usize>,
    /// Groups kept per token.
    #[arg(positive)]
    pub topk_group: Option<usize>,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: Option<usize>,
    /// Renormalise the chosen experts' weights.
    pub norm_topk_prob: Option<bool>,
    /// Factor on the routing weights.
    pub routed_scaling_factor: Option<f32>,
    /// Bounds of the time step after its softplus (`[0, inf]` when absent).
    pub time_step_limit: Option<TimeStepLimit>,
    /// The pattern's letters, read from the pattern or the names.
    #[arg(skip)]
    pub blocks: Vec<char>,
}

/// transformers' block names (`layers_block_type`) and the letters they stand for.
const BLOCK_NAMES: [(&str, char); 7] = [
    ("linear_attention", 'M'),
    ("mamba", 'M'),
    ("conv", 'M'),
    ("full_attention", '*'),
    ("attention", '*'),
    ("mlp", '-'),
    ("moe", 'E'),
];

impl NemotronHArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        self.blocks = self.read_blocks()?;
        let n = self.blocks.len();
        if let Some(layers) = self.num_hidden_layers.filter(|&l| l != n) {
            let msg = format!("the pattern has {n} blocks for `num_hidden_layers` {layers}");
            return Err(ArgsError::invalid(
                &["hybrid_override_pattern", "num_hidden_layers"],
                msg,
            ));
        }
        self.num_hidden_layers = Some(n);
        let has = |b: char| self.blocks.contains(&b);
        if has('M') {
            let keys = [
                "mamba_num_heads",
                "mamba_head_dim",
                "n_groups",
                "ssm_state_size",
            ];
            let (heads, head_dim) = (self.mamba_num_heads, self.mamba_head_dim);
            check_mamba2(keys, heads, head_dim, self.n_groups, self.ssm_state_size)?;
        }
        if has('*') {
            let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
            check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        }
        if has('E') {
            self.routing()?;
            if self.n_shared_experts.is_some() && self.moe_shared_expert_intermediate_size.is_none()
            {
                let msg = "shared experts need `moe_shared_expert_intermediate_size`";
                return Err(ArgsError::invalid(&["n_shared_experts"], msg));
            }
        }
        Ok(())
    }

    fn read_blocks(&self) -> std::result::Result<Vec<char>, ArgsError> {
        let key = "hybrid_override_pattern";
        let bad = |what: &str| ArgsError::invalid(&[key], format!("unknown block {what:?}"));
        let names = self
            .layers_block_type
            .as_ref()
            .or(self.layer_types.as_ref());
        let blocks: Vec<char> = match (&self.hybrid_override_pattern, names) {
            (Some(Value::String(s)), _) => {
                check_layers(key, s.chars().count())?;
                s.chars().collect()
            }
            (Some(Value::Array(items)), _) => {
                check_layers(key, items.len())?;
                let letter = |v: &Value| {
                    let mut chars = v.as_str().unwrap_or_default().chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Ok(c),
                        _ => Err(bad(&v.to_string())),
                    }
                };
                items
                    .iter()
                    .map(letter)
                    .collect::<std::result::Result<_, _>>()?
            }
            (Some(other), _) => return Err(bad(&other.to_string())),
            (None, Some(names)) => {
                check_layers("layers_block_type", names.len())?;
                let letter = |name: &String| {
                    let found = BLOCK_NAMES.iter().find(|(n, _)| n == name);
                    found.map(|&(_, c)| c).ok_or_else(|| bad(name))
                };
                names
                    .iter()
                    .map(letter)
                    .collect::<std::result::Result<_, _>>()?
            }
            (None, None) => {
                let msg = "missing key `hybrid_override_pattern` (or `layers_block_type`)";
                return Err(ArgsError::invalid(&[key], msg));
            }
        };
        match blocks.iter().find(|c| !"M*-E".contains(**c)) {
            Some(c) => Err(bad(&c.to_string())),
            None => Ok(blocks),
        }
    }

    /// The routing of the `E` blocks (required keys checked here).
    fn routing(&self) -> std::result::Result<Routing, ArgsError> {
        let need = |key: &str, v: Option<usize>| {
            v.ok_or_else(|| ArgsError::invalid(&[key], format!("MoE blocks (`E`) need `{key}`")))
        };
        let experts = need("n_routed_experts", self.n_routed_experts)?;
        let k = need("num_experts_per_tok", self.num_experts_per_tok)?;
        need("moe_intermediate_size", self.moe_intermediate_size)?;
        let n_group = need("n_group", self.n_group)?;
        let topk_group = match n_group {
            1 => self.topk_group.unwrap_or(1),
            _ => need("topk_group", self.topk_group)?,
        };
        let scaling = self.routed_scaling_factor.ok_or_else(|| {
            ArgsError::invalid(
                &["routed_scaling_factor"],
                "MoE blocks (`E`) need `routed_scaling_factor`",
            )
        })?;
        let routing = Routing::GroupLimited {
            k: k as i32,
            n_group: n_group as i32,
            topk_group: topk_group as i32,
            scaling,
            renormalize: self.norm_topk_prob.unwrap_or(false),
            epsilon: 1e-20,
        };
        check_routed_experts(experts, k, &routing)?;
        Ok(routing)
    }
}

/// `down_proj(relu(up_proj(x))²)`.
#[derive(Debug, ModuleParameters)]
struct ReluMlp {
    #[param]
    up_proj: Linear,
    #[param]
    down_proj: Linear,
}

impl ReluMlp {
    fn new(dim: usize, hidden: usize, bias: bool) -> Result<Self> {
        Ok(ReluMlp {
            up_proj: Linear::new(dim as i32, hidden as i32, bias)?,
            down_proj: Linear::new(hidden as i32, dim as i32, bias)?,
        })
    }
}

impl Block for ReluMlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.down_proj.forward(&relu2(&self.up_proj.forward(x)?)?)
    }
}

/// The router: `[experts, dim]` logits and the correction bias of its choice.
#[derive(Debug, ModuleParameters)]
struct MoeGate {
    #[param]
    weight: Param<Array>,
    #[param]
    e_score_correction_bias: Param<Array>,
}

#[derive(Debug, ModuleParameters)]
struct Moe {
    #[param]
    gate: MoeGate,
    #[param]
    switch_mlp: SwitchMlp,
    #[param]
    shared_experts: Option<ReluMlp>,
    #[param]
    fc1_latent_proj: Option<Linear>,
    #[param]
    fc2_latent_proj: Option<Linear>,
    routing: Routing,
}

impl Moe {
    fn new(args: &NemotronHArgs) -> std::result::Result<Self, Exception> {
        let routing = args.routing()?;
        let (dim, bias) = (args.hidden_size, args.mlp_bias);
        let experts = args.n_routed_experts.unwrap_or_default() as i32;
        let expert_dim = args.moe_latent_size.unwrap_or(dim);
        let hidden = args.moe_intermediate_size.unwrap_or_default() as i32;
        let latent = |i: usize, o: usize| {
            args.moe_latent_size
                .map(|_| Linear::new(i as i32, o as i32, bias))
                .transpose()
        };
        let shared = args.n_shared_experts.map(|_| {
            ReluMlp::new(
                dim,
                args.moe_shared_expert_intermediate_size.unwrap_or_default(),
                bias,
            )
        });
        Ok(Moe {
            gate: MoeGate {
                weight: Param::new(zeros_dtype(&[experts, dim as i32], Dtype::Float32)?),
                e_score_correction_bias: Param::new(zeros_dtype(&[experts], Dtype::Float32)?),
            },
            switch_mlp: SwitchMlp::new(
                expert_dim as i32,
                hidden,
                experts,
                Activation::Relu2,
                false,
            )?,
            shared_experts: shared.transpose()?,
            fc1_latent_proj: latent(dim, expert_dim)?,
            fc2_latent_proj: latent(expert_dim, dim)?,
            routing,
        })
    }
}

impl Block for Moe {
    fn forward(&self, x: &Array) -> Result<Array> {
        let gates = matmul(x, self.gate.weight.t())?;
        let (inds, scores) = self
            .routing
            .route(&gates, Some(&self.gate.e_score_correction_bias))?;
        let h = match &self.fc1_latent_proj {
            Some(proj) => proj.forward(x)?,
            None => x.clone(),
        };
        let y = self.switch_mlp.forward(&h, &inds)?;
        let y = y
            .multiply(expand_dims(&scores, -1)?)?
            .sum_axis(-2, None)?
            .as_dtype(y.dtype())?;
        let y = match &self.fc2_latent_proj {
            Some(proj) => proj.forward(&y)?,
            None => y,
        };
        match &self.shared_experts {
            Some(shared) => y.add(shared.forward(x)?),
            None => Ok(y),
        }
    }
}

type Mixer = HybridMixer<FeedForward<ReluMlp, Moe>>;

#[derive(Debug, ModuleParameters)]
struct NemotronHBlock {
    #[param]
    norm: RmsNorm,
    #[param]
    mixer: Mixer,
}

impl NemotronHBlock {
    fn new(args: &NemotronHArgs, block: char) -> Result<Self> {
        let dim = args.hidden_size;
        let mixer = match block {
            'M' => {
                let heads = args.mamba_num_heads;
                let config = Mamba2Config::new(
                    dim,
                    heads,
                    args.mamba_head_dim,
                    args.n_groups,
                    args.ssm_state_size,
                    args.conv_kernel,
                    args.layer_norm_epsilon,
                )
                .proj_bias(args.mamba_proj_bias, args.mamba_proj_bias)
                .conv_bias(args.use_conv_bias)
                .norm_groups((heads * args.mamba_head_dim / args.n_groups) as i32)
                .time_step_limit(args.time_step_limit.unwrap_or_default());
                HybridMixer::Mamba(Mamba2Mixer::new(&config)?)
            }
            '*' => {
                let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
                let head_dim = args.head_dim.unwrap_or(dim / heads);
                let bias = args.attention_bias;
                let config = AttentionConfig::new(dim, heads, kv_heads, head_dim).bias(bias, bias);
                HybridMixer::Attention(Attention::new(&config, None)?)
            }
            '-' => {
                let mlp = ReluMlp::new(dim, args.intermediate_size, args.mlp_bias)?;
                HybridMixer::FeedForward(FeedForward::Dense(mlp))
            }
            _ => HybridMixer::FeedForward(FeedForward::Sparse(Moe::new(args)?)),
        };
        Ok(NemotronHBlock {
            norm: RmsNorm::new(dim as i32, args.layer_norm_epsilon)?,
            mixer,
        })
    }
}

impl HybridLayer for NemotronHBlock {
    fn kind(&self) -> LayerKind {
        self.mixer.kind()
    }

    fn forward(&self, x: &Array, masks: &HybridMasks, cache: Option<&mut Cache>) -> Result<Array> {
        x.add(self.mixer.forward(&self.norm.forward(x)?, masks, cache)?)
    }
}

/// The nemotron_h model: embeddings, the blocks of the pattern, final norm, head (the
/// reference's `embeddings` and `norm_f` are the stack's `embed_tokens` and `norm`). Hugging
/// Face checkpoints' per-expert `up_proj` / `down_proj` are stacked into the switch layers'
/// `fc1` / `fc2`, their `[C, 1, K]` conv weights turned, their `mtp.*` tensors (multi-token
/// prediction) dropped.
#[mlx_model(
    model_type = "nemotron_h",
    args = NemotronHArgs,
    drop = "mtp.*",
    rename("backbone.embeddings" => "backbone.embed_tokens"),
    rename("backbone.norm_f" => "backbone.norm"),
    stack_experts("backbone.layers.{n}.mixer.experts.{e}" => "backbone.layers.{n}.mixer.switch_mlp"),
    rename("backbone.layers.{n}.mixer.switch_mlp.up_proj" => "backbone.layers.{n}.mixer.switch_mlp.fc1"),
    rename("backbone.layers.{n}.mixer.switch_mlp.down_proj" => "backbone.layers.{n}.mixer.switch_mlp.fc2"),
    sanitize = Self::sanitize_conv,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    backbone: HybridStack<NemotronHBlock>,
    #[param]
    lm_head: Linear,
}

impl Model {
    fn sanitize_conv(&self, weights: &mut Weights) -> Result<()> {
        conv1d_weights_to_mlx(weights)
    }
}

impl Architecture for Model {
    fn new(args: &NemotronHArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = args
            .blocks
            .iter()
            .map(|&block| NemotronHBlock::new(args, block))
            .collect::<Result<_>>()?;
        Ok(Model {
            backbone: HybridStack::new(vocab, dim, args.layer_norm_epsilon, layers)?,
            lm_head: Linear::new(dim as i32, vocab as i32, false)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        self.lm_head.forward(&self.backbone.forward(inputs, cache)?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.backbone.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.backbone.layers.len()
    }
}
