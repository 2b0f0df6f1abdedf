//! `gemma4_text`, after mlx-lm's `models/gemma4_text.py`: gemma's four-norm layer (plain RMS
//! norms here) with sliding-window and full-attention layers by `layer_types` (or every
//! `sliding_window_pattern`-th layer full), each type with its own RoPE from `rope_parameters`
//! (by default proportional, a quarter of each head rotated, on the full layers) and the full
//! layers with their own head width (`global_head_dim`); q/k norms, scale-free value norms and
//! unscaled scores; the last `num_kv_shared_layers` layers attend with the keys and values of
//! the last earlier layer of their type (and have twice the MLP with `use_double_wide_mlp`);
//! keys that double as values on full layers (`attention_k_eq_v`); per-layer inputs
//! (`hidden_size_per_layer_input`); a mixture of experts beside the MLP (`enable_moe_block`);
//! a learned scalar per layer; final logits soft-capped.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::take_along_axis;
use mlx_rs::ops::{expand_dims, ones, softmax_axis, split_equal};
use mlx_rs::{fast, Array};
use serde_json::{Map, Value};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::attention::soft_cap;
use mlx_models::nn::gemma::{
    check_kv_heads, is_global_layer, per_layer_gate, per_layer_inputs, EmbedScale,
};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::moe::TopK;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::{Rope, RopeScaling};
use mlx_models::nn::shared_kv::{
    forward_layers, owner_caches, KvProjections, KvSources, SharedKv, SharedKvAttention,
    SharedKvLayer,
};
use mlx_models::nn::switch::SwitchGlu;
use mlx_models::nn::transformer::{check_layer_types, check_layers, check_width, lm_head, Mlp};
use mlx_models::weights::Weights;

const FULL: &str = "full_attention";
const SLIDING: &str = "sliding_attention";

/// config.json of a gemma4 text model (defaults: the reference's).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Gemma4TextArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 1536, positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(default = 35, positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP (twice that in KV-shared layers with `use_double_wide_mlp`).
    #[arg(default = 6144, positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(default = 8, positive)]
    pub num_attention_heads: usize,
    /// Width of one attention head of a sliding-window layer.
    #[arg(default = 256, positive)]
    pub head_dim: usize,
    /// Width of one attention head of a full-attention layer; `0`: `head_dim`.
    #[arg(default = 512)]
    pub global_head_dim: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(default = 262144, positive)]
    pub vocab_size: usize,
    /// Rows of `embed_tokens_per_layer`.
    #[arg(default = 262144, positive)]
    pub vocab_size_per_layer_input: usize,
    /// Number of key and value heads.
    #[arg(default = 1, positive)]
    pub num_key_value_heads: usize,
    /// Key and value heads of the full layers whose keys are their values; absent:
    /// `num_key_value_heads`.
    #[arg(positive)]
    pub num_global_key_value_heads: Option<usize>,
    /// The last this many layers attend with earlier layers' keys and values.
    #[arg(default = 20)]
    pub num_kv_shared_layers: usize,
    /// Width of each layer's per-layer input; `0`: none.
    #[arg(default = 256)]
    pub hidden_size_per_layer_input: usize,
    /// The traditional (interleaved) RoPE layout.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// The RoPE of each layer type, keyed `"full_attention"` and `"sliding_attention"`
    /// (`rope_theta`, `rope_type`, ...); absent: proportional with a quarter of each head
    /// rotated and base 1e6 on full layers, plain with base 1e4 on sliding ones. A type absent
    /// from it gets plain RoPE of base 1e4.
    pub rope_parameters: Option<Value>,
    /// Tokens a sliding-window layer attends to.
    #[arg(default = 512, positive)]
    pub sliding_window: usize,
    /// Without `layer_types`, one layer in this many attends to the whole sequence.
    #[arg(default = 5, positive)]
    pub sliding_window_pattern: usize,
    /// Context length of the checkpoint.
    #[arg(default = 131072, positive)]
    pub max_position_embeddings: usize,
    /// Whether full-attention layers use their keys as values (no `v_proj`).
    #[arg(default = false)]
    pub attention_k_eq_v: bool,
    /// Soft-cap of the final logits.
    #[arg(default = 30.0, positive)]
    pub final_logit_softcapping: f32,
    /// Whether KV-shared layers have an MLP twice as wide.
    #[arg(default = true)]
    pub use_double_wide_mlp: bool,
    /// Whether each layer has a mixture of experts beside its MLP.
    #[arg(default = false)]
    pub enable_moe_block: bool,
    /// Routed experts (with `enable_moe_block`).
    #[arg(positive)]
    pub num_experts: Option<usize>,
    /// Experts per token (with `enable_moe_block`).
    #[arg(positive)]
    pub top_k_experts: Option<usize>,
    /// Hidden width of each expert (with `enable_moe_block`).
    #[arg(positive)]
    pub moe_intermediate_size: Option<usize>,
    /// Per layer, `"full_attention"` or `"sliding_attention"`; absent: by
    /// `sliding_window_pattern`.
    pub layer_types: Option<Vec<String>>,
    /// Whether the embeddings double as the head.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Gemma4TextArgs {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        let n = self.num_hidden_layers;
        let pattern = self.sliding_window_pattern;
        let by_pattern = |i| match is_global_layer(i, pattern) {
            true => FULL.to_string(),
            false => SLIDING.to_string(),
        };
        check_layers("num_hidden_layers", n)?;
        if self.layer_types.is_none() {
            self.layer_types = Some((0..n).map(by_pattern).collect());
        }
        check_layer_types(&mut self.layer_types, n, Some(self.sliding_window))?;
        self.kv_sources()?;
        let heads = self.num_attention_heads;
        check_kv_heads(heads, self.num_key_value_heads)?;
        let global = self.full_kv_heads();
        if !heads.is_multiple_of(global) {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "num_global_key_value_heads"],
                format!(
                    "`num_attention_heads` ({heads}) is not a multiple of \
                     `num_global_key_value_heads` ({global})"
                ),
            ));
        }
        for dim in [self.head_dim, self.full_head_dim()] {
            check_width(
                &["num_attention_heads", "head_dim", "global_head_dim"],
                "the query projection (heads * head width)",
                heads.checked_mul(dim),
            )?;
        }
        let per_layer = n.checked_mul(self.hidden_size_per_layer_input);
        check_width(
            &["num_hidden_layers", "hidden_size_per_layer_input"],
            "the per-layer inputs (layers * width)",
            per_layer,
        )?;
        let wide = self.intermediate_size.checked_mul(2);
        check_width(&["intermediate_size"], "the double-wide MLP", wide)?;
        if self.enable_moe_block {
            let (Some(experts), Some(k), Some(_)) = (
                self.num_experts,
                self.top_k_experts,
                self.moe_intermediate_size,
            ) else {
                return Err(ArgsError::invalid(
                    &["enable_moe_block", "num_experts", "top_k_experts", "moe_intermediate_size"],
                    "`enable_moe_block` needs `num_experts`, `top_k_experts` and `moe_intermediate_size`",
                ));
            };
            if k > experts {
                return Err(ArgsError::invalid(
                    &["top_k_experts", "num_experts"],
                    format!("`top_k_experts` ({k}) exceeds `num_experts` ({experts})"),
                ));
            }
        }
        for t in [FULL, SLIDING] {
            let (dims, base, scaling) = self.rope(t)?;
            Rope::new(
                dims as i32,
                base,
                false,
                &scaling,
                Some(self.max_position_embeddings as i32),
            )
            .map_err(|e| ArgsError::invalid(&["rope_parameters"], e.to_string()))?;
        }
        Ok(())
    }

    /// The layer types (filled by the post-parse hook).
    pub fn layer_types(&self) -> &[String] {
        self.layer_types.as_deref().unwrap_or_default()
    }

    /// Which layers compute keys and values and which borrow them.
    pub fn kv_sources(&self) -> std::result::Result<KvSources, ArgsError> {
        KvSources::new(self.layer_types(), self.num_kv_shared_layers)
    }

    /// The head width of full-attention layers.
    pub fn full_head_dim(&self) -> usize {
        match self.global_head_dim {
            0 => self.head_dim,
            d => d,
        }
    }

    /// The key/value heads of full-attention layers.
    pub fn full_kv_heads(&self) -> usize {
        match (self.attention_k_eq_v, self.num_global_key_value_heads) {
            (true, Some(kv)) => kv,
            _ => self.num_key_value_heads,
        }
    }

    /// The RoPE of layers of type `t`: its head width, base and scaling.
    pub fn rope(&self, t: &str) -> std::result::Result<(usize, f32, RopeScaling), ArgsError> {
        let default = match t {
            FULL => serde_json::json!({
                "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0, "rope_type": "proportional"
            }),
            _ => serde_json::json!({"rope_theta": 10_000.0, "rope_type": "default"}),
        };
        let params = match &self.rope_parameters {
            None | Some(Value::Null) => default,
            Some(Value::Object(all)) => match all.get(t) {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(p) => p.clone(),
            },
            Some(_) => {
                return Err(ArgsError::invalid(
                    &["rope_parameters"],
                    "`rope_parameters` is not an object",
                ))
            }
        };
        let key = format!("rope_parameters.{t}");
        let bad = |msg: String| ArgsError::invalid(&[key.as_str()], msg);
        let base = match params.get("rope_theta") {
            None => 10_000.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad("`rope_theta` is not a number".into()))?
                as f32,
        };
        let scaling = RopeScaling::from_json(&params).map_err(|e| bad(e.to_string()))?;
        let dims = if t == FULL {
            self.full_head_dim()
        } else {
            self.head_dim
        };
        Ok((dims, base, scaling))
    }
}

/// The router of the mixture of experts: `proj` of the input RMS-normed with `scale /
/// sqrt(hidden)`, the top `k` scores softmaxed, times each chosen expert's
/// `per_expert_scale`.
#[derive(Debug, ModuleParameters)]
pub struct Router {
    /// `[experts, hidden]`.
    #[param]
    pub proj: Linear,
    /// `[hidden]`.
    #[param]
    pub scale: Param<Array>,
    /// `[experts]`.
    #[param]
    pub per_expert_scale: Param<Array>,
    k: i32,
    eps: f32,
}

impl Router {
    fn new(args: &Gemma4TextArgs, experts: usize, k: usize) -> Result<Self> {
        let e = experts as i32;
        Ok(Router {
            proj: Linear::new(args.hidden_size as i32, e, false)?,
            scale: Param::new(ones::<f32>(&[args.hidden_size as i32])?),
            per_expert_scale: Param::new(ones::<f32>(&[e])?),
            k: k as i32,
            eps: args.rms_norm_eps,
        })
    }

    /// The experts `[..., k]` of each position and their weights.
    fn forward(&self, x: &Array) -> Result<(Array, Array)> {
        let root = Array::from_f32((x.dim(-1) as f32).powf(-0.5)).as_dtype(self.scale.dtype())?;
        let weight = self.scale.multiply(root)?;
        let scores = self
            .proj
            .forward(&fast::rms_norm(x, Some(&weight), self.eps)?)?;
        let indices = TopK::Last.indices(&scores, self.k)?;
        let weights = softmax_axis(take_along_axis(&scores, &indices, -1)?, -1, false)?;
        let weights = weights.multiply(self.per_expert_scale.take_axis(&indices, 0)?)?;
        Ok((indices, weights))
    }
}

/// The experts, stacked (`switch_glu`), GeGLU each.
#[derive(Debug, ModuleParameters)]
pub struct Experts {
    /// Gate, up and down projections of every expert.
    #[param]
    pub switch_glu: SwitchGlu,
}

/// A gemma4 layer.
#[derive(Debug, ModuleParameters)]
pub struct DecoderLayer {
    #[param]
    self_attn: SharedKvAttention,
    #[param]
    mlp: Mlp,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    post_attention_layernorm: RmsNorm,
    #[param]
    pre_feedforward_layernorm: RmsNorm,
    #[param]
    post_feedforward_layernorm: RmsNorm,
    /// The mixture of experts beside the MLP, with its three norms (`enable_moe_block`).
    #[param]
    router: Option<Router>,
    #[param]
    experts: Option<Experts>,
    #[param]
    post_feedforward_layernorm_1: Option<RmsNorm>,
    #[param]
    post_feedforward_layernorm_2: Option<RmsNorm>,
    #[param]
    pre_feedforward_layernorm_2: Option<RmsNorm>,
    #[param]
    per_layer_input_gate: Option<Linear>,
    #[param]
    per_layer_projection: Option<Linear>,
    #[param]
    post_per_layer_input_norm: Option<RmsNorm>,
    /// `[1]`: the factor on the layer's output.
    #[param]
    layer_scalar: Param<Array>,
    /// The attention window of a sliding layer.
    window: Option<i32>,
}

impl DecoderLayer {
    fn new(args: &Gemma4TextArgs, i: usize, sources: &KvSources) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let t = args.layer_types()[i].as_str();
        let full = t == FULL;
        let (head_dim, base, scaling) = args.rope(t)?;
        let max_positions = Some(args.max_position_embeddings as i32);
        let rope = Rope::new(
            head_dim as i32,
            base,
            args.rope_traditional,
            &scaling,
            max_positions,
        )?;
        let k_eq_v = args.attention_k_eq_v && full;
        let kv = match (sources.is_shared(i), k_eq_v) {
            (true, _) => KvProjections::Borrowed,
            (false, true) => KvProjections::KeysAsValues,
            (false, false) => KvProjections::KeysAndValues,
        };
        let kv_heads = match full {
            true => args.full_kv_heads(),
            false => args.num_key_value_heads,
        };
        let heads = args.num_attention_heads;
        let self_attn = SharedKvAttention::new(dim, heads, kv_heads, head_dim, eps, rope, kv)?;
        let double = args.use_double_wide_mlp && sources.is_shared(i);
        let hidden = args.intermediate_size * if double { 2 } else { 1 };
        let mlp = Mlp::new(dim, hidden, false)?.with_activation(GatedActivation::GeGlu);
        let norm = || RmsNorm::new(dim as i32, eps);
        let moe = match (
            args.enable_moe_block,
            args.num_experts,
            args.top_k_experts,
            args.moe_intermediate_size,
        ) {
            (true, Some(e), Some(k), Some(width)) => Some((e, k, width)),
            _ => None,
        };
        let (router, experts) = match moe {
            Some((e, k, width)) => {
                let glu = SwitchGlu::new(
                    dim as i32,
                    width as i32,
                    e as i32,
                    GatedActivation::GeGlu,
                    false,
                )?;
                (
                    Some(Router::new(args, e, k)?),
                    Some(Experts { switch_glu: glu }),
                )
            }
            None => (None, None),
        };
        let moe_norm = || moe.map(|_| norm()).transpose();
        let per_layer = args.hidden_size_per_layer_input as i32;
        let with_inputs = per_layer > 0;
        let linear = |i, o| with_inputs.then(|| Linear::new(i, o, false)).transpose();
        Ok(DecoderLayer {
            self_attn,
            mlp,
            input_layernorm: norm()?,
            post_attention_layernorm: norm()?,
            pre_feedforward_layernorm: norm()?,
            post_feedforward_layernorm: norm()?,
            router,
            experts,
            post_feedforward_layernorm_1: moe_norm()?,
            post_feedforward_layernorm_2: moe_norm()?,
            pre_feedforward_layernorm_2: moe_norm()?,
            per_layer_input_gate: linear(dim as i32, per_layer)?,
            per_layer_projection: linear(per_layer, dim as i32)?,
            post_per_layer_input_norm: with_inputs.then(norm).transpose()?,
            layer_scalar: Param::new(ones::<f32>(&[1])?),
            window: (!full).then_some(args.sliding_window as i32),
        })
    }
}

impl SharedKvLayer for DecoderLayer {
    fn window(&self) -> Option<i32> {
        self.window
    }

    fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
        per_layer_input: Option<&Array>,
        shared: Option<&SharedKv>,
    ) -> Result<(Array, SharedKv)> {
        let (r, kv) =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, mask, cache, shared)?;
        let h = x.add(self.post_attention_layernorm.forward(&r)?)?;
        let dense = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        let r = match (
            &self.router,
            &self.experts,
            &self.post_feedforward_layernorm_1,
            &self.post_feedforward_layernorm_2,
            &self.pre_feedforward_layernorm_2,
        ) {
            (Some(router), Some(experts), Some(post_1), Some(post_2), Some(pre_2)) => {
                let dense = post_1.forward(&dense)?;
                let (indices, weights) = router.forward(&h)?;
                let routed = experts.switch_glu.forward(&pre_2.forward(&h)?, &indices)?;
                let routed = routed
                    .multiply(expand_dims(&weights, -1)?)?
                    .sum_axis(-2, None)?;
                dense.add(post_2.forward(&routed)?)?
            }
            _ => dense,
        };
        let mut h = h.add(self.post_feedforward_layernorm.forward(&r)?)?;
        if let (Some(gate), Some(projection), Some(norm), Some(input)) = (
            &self.per_layer_input_gate,
            &self.per_layer_projection,
            &self.post_per_layer_input_norm,
            per_layer_input,
        ) {
            h = h.add(per_layer_gate(gate, projection, norm, &h, input)?)?;
        }
        Ok((h.multiply(&*self.layer_scalar)?, kv))
    }
}

/// The stack: scaled embeddings, per-layer inputs, the layers, the final norm.
#[derive(Debug, ModuleParameters)]
pub struct Gemma4TextModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<DecoderLayer>,
    #[param]
    norm: RmsNorm,
    #[param]
    embed_tokens_per_layer: Option<Embedding>,
    #[param]
    per_layer_model_projection: Option<Linear>,
    #[param]
    per_layer_projection_norm: Option<RmsNorm>,
    sources: KvSources,
    vocab_per_layer: usize,
    per_layer_width: usize,
}

impl Gemma4TextModel {
    fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.embed_tokens.forward(inputs)?;
        let scale = EmbedScale::Exact.factor(h.dim(-1) as usize)?;
        let h = h.multiply(Array::from_f32(scale).as_dtype(h.dtype())?)?;
        let per_layer = match (
            &self.embed_tokens_per_layer,
            &self.per_layer_model_projection,
            &self.per_layer_projection_norm,
        ) {
            (Some(embed), Some(projection), Some(norm)) => Some(per_layer_inputs(
                embed,
                projection,
                norm,
                inputs,
                &h,
                self.vocab_per_layer,
                self.layers.len(),
                self.per_layer_width,
            )?),
            _ => None,
        };
        let n = inputs.dim(1);
        let h = forward_layers(&self.layers, &self.sources, h, n, per_layer.as_ref(), cache)?;
        self.norm.forward(&h)
    }
}

/// The gemma4 text model.
#[mlx_model(
    model_type = "gemma4_text",
    args = Gemma4TextArgs,
    drop = [
        "*self_attn.rotary_emb*",
        "*input_max*",
        "*input_min*",
        "*output_max*",
        "*output_min*",
    ],
    tied_head = "lm_head",
    sanitize = Self::shared_and_experts,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Gemma4TextModel,
    /// `None` when tied: the embeddings double as the head.
    #[param]
    lm_head: Option<Linear>,
    softcap: f32,
}

impl Model {
    /// Drops the key and value weights of KV-shared layers, and splits transformers' fused
    /// experts (`experts.gate_up_proj` `[E, 2 * width, hidden]`, `experts.down_proj`) into
    /// `experts.switch_glu.*`.
    fn shared_and_experts(&self, weights: &mut Weights) -> Result<()> {
        let owners = self.model.sources.owners();
        let layer_of = |k: &str| -> Option<usize> {
            let rest = k.split("layers.").nth(1)?;
            rest.split('.').next()?.parse().ok()
        };
        let keys: Vec<String> = weights.keys().cloned().collect();
        for k in keys {
            let kv_weight = [
                ".self_attn.k_proj",
                ".self_attn.v_proj",
                ".self_attn.k_norm",
            ]
            .iter()
            .any(|s| k.contains(s));
            if kv_weight && layer_of(&k).is_some_and(|i| i >= owners) {
                weights.remove(&k);
            } else if let Some(base) = k.strip_suffix(".experts.gate_up_proj") {
                let Some(v) = weights.remove(&k) else {
                    continue;
                };
                let halves = split_equal(&v, 2, -2)?;
                let [gate, up] = halves.as_slice() else {
                    return Err(Exception::custom("gate_up_proj does not split in two"));
                };
                weights.insert(
                    format!("{base}.experts.switch_glu.gate_proj.weight"),
                    gate.clone(),
                );
                weights.insert(
                    format!("{base}.experts.switch_glu.up_proj.weight"),
                    up.clone(),
                );
            } else if let Some(base) = k.strip_suffix(".experts.down_proj") {
                let Some(v) = weights.remove(&k) else {
                    continue;
                };
                weights.insert(format!("{base}.experts.switch_glu.down_proj.weight"), v);
            }
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &Gemma4TextArgs) -> Result<Self> {
        let sources = args
            .kv_sources()
            .map_err(|e| Exception::custom(e.to_string()))?;
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| DecoderLayer::new(args, i, &sources))
            .collect::<Result<_>>()?;
        let width = args.hidden_size_per_layer_input;
        let with_inputs = width > 0;
        let all = (args.num_hidden_layers * width) as i32;
        let eps = args.rms_norm_eps;
        let model = Gemma4TextModel {
            embed_tokens: Embedding::new(vocab as i32, dim as i32)?,
            layers,
            norm: RmsNorm::new(dim as i32, eps)?,
            embed_tokens_per_layer: with_inputs
                .then(|| Embedding::new(args.vocab_size_per_layer_input as i32, all))
                .transpose()?,
            per_layer_model_projection: with_inputs
                .then(|| Linear::new(dim as i32, all, false))
                .transpose()?,
            per_layer_projection_norm: with_inputs
                .then(|| RmsNorm::new(width as i32, eps))
                .transpose()?,
            sources,
            vocab_per_layer: args.vocab_size_per_layer_input,
            per_layer_width: width,
        };
        Ok(Model {
            model,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
            softcap: args.final_logit_softcapping,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.embed_tokens.as_linear(&h)?,
        };
        soft_cap(&logits, self.softcap)
    }

    /// A cache per layer that computes keys and values (the KV-shared ones have none).
    fn make_cache(&self) -> Vec<Cache> {
        owner_caches(&self.model.layers, &self.model.sources)
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
