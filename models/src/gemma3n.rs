//! `gemma3n`, after mlx-lm's `models/gemma3n.py`: the text model of Gemma 3n's multimodal
//! checkpoints, its config read from `text_config`. The residual stream is `altup_num_inputs`
//! copies (AltUp: each layer predicts them all from a learned mix, runs on the active one and
//! corrects the others by its innovation); each layer adds a low-rank LAuReL branch beside its
//! attention, a per-layer input through a gate, and gemma's four norms (plain RMS norms here);
//! sliding-window and full-attention layers by `layer_types` (RoPE bases
//! `rope_local_base_freq` and `rope_theta`); q/k norms, scale-free value norms, unscaled
//! scores; the last `num_kv_shared_layers` layers attend with the keys and values of the last
//! earlier layer of their type; MLPs with a GeGLU whose gate keeps only its top activations
//! (`activation_sparsity_pattern`); tied, soft-capped logits. Sanitize drops the vision and
//! audio towers and their embedders.
//!
//! Where the reference differs from its cached decode: without a cache, its KV-shared layers
//! compute keys and values with their own projections (with one, they read their source's
//! cache, as the original model always does). Here they always take their source's, so a
//! full forward equals the cached decode; the parity fixtures record the reference's forward
//! with a fresh cache.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp};
use mlx_rs::ops::{
    clip, concatenate, erfinv, expand_dims, maximum, mean_axis, move_axis, stack, std_axis, tanh,
    zeros,
};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs, MAX_SIZE};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu_approx;
use mlx_models::nn::attention::soft_cap;
use mlx_models::nn::gemma::{check_kv_heads, per_layer_gate, per_layer_inputs, EmbedScale};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::Rope;
use mlx_models::nn::shared_kv::{
    forward_layers, owner_caches, KvProjections, KvSources, SharedKv, SharedKvAttention,
    SharedKvLayer,
};
use mlx_models::nn::transformer::{check_layer_types, check_per_layer, check_width};

/// The text config of a Gemma 3n checkpoint (`text_config`); the reference has no defaults.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(text_config, validate = Self::check)]
pub struct Gemma3nArgs {
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP: one for all layers, or a list with one per layer.
    pub intermediate_size: Value,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Epsilon of the RMS norms.
    #[arg(positive)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// The last this many layers attend with earlier layers' keys and values.
    pub num_kv_shared_layers: usize,
    /// Rows of `embed_tokens_per_layer` (ids past it read row 0).
    #[arg(positive)]
    pub vocab_size_per_layer_input: usize,
    /// Tokens a sliding-window layer attends to.
    #[arg(positive)]
    pub sliding_window: usize,
    /// Context length of the checkpoint.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// RoPE base of the sliding-window layers.
    #[arg(alias = "rope_parameters.sliding_attention.rope_theta")]
    pub rope_local_base_freq: f32,
    /// RoPE base of the full-attention layers (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(
        alias = "rope_parameters.rope_theta",
        alias = "rope_parameters.full_attention.rope_theta"
    )]
    pub rope_theta: f32,
    /// Soft-cap of the final logits; `null`: none.
    pub final_logit_softcapping: Option<f32>,
    /// Per layer, `"full_attention"` or `"sliding_attention"`; the layers that compute keys
    /// and values must include both.
    pub layer_types: Vec<String>,
    /// Per layer, the fraction of the MLP's gate activations cut off (0: a plain GeGLU);
    /// `null`: none.
    pub activation_sparsity_pattern: Option<Vec<f64>>,
    /// Width of each layer's per-layer input.
    #[arg(positive)]
    pub hidden_size_per_layer_input: usize,
    /// Copies of the residual stream AltUp keeps.
    #[arg(positive)]
    pub altup_num_inputs: usize,
    /// Bound on AltUp's prediction and correction coefficients; `null`: none.
    pub altup_coef_clip: Option<f32>,
    /// Whether the corrected active copy is scaled by `correct_output_scale` before it feeds
    /// the per-layer input gate.
    pub altup_correct_scale: bool,
    /// The copy the layers run on.
    pub altup_active_idx: usize,
    /// Rank of the LAuReL branch.
    #[arg(positive)]
    pub laurel_rank: usize,
    /// Read by the reference but not used (its RoPE is plain).
    pub rope_scaling: Option<Value>,
    /// Per layer, the MLP's hidden width (from `intermediate_size`).
    #[arg(skip)]
    pub intermediate_sizes: Vec<usize>,
}

impl Gemma3nArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let n = self.num_hidden_layers;
        let mut types = Some(std::mem::take(&mut self.layer_types));
        check_layer_types(&mut types, n, Some(self.sliding_window))?;
        self.layer_types = types.unwrap_or_default();
        let sources = self.kv_sources()?;
        let owners = &self.layer_types[..sources.owners()];
        for t in ["full_attention", "sliding_attention"] {
            if !owners.iter().any(|u| u == t) {
                return Err(ArgsError::invalid(
                    &["layer_types", "num_kv_shared_layers"],
                    format!("none of the layers that compute keys and values is {t:?}"),
                ));
            }
        }
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)?;
        check_width(
            &["num_attention_heads", "head_dim"],
            "the query projection (heads * head_dim)",
            self.num_attention_heads.checked_mul(self.head_dim),
        )?;
        check_width(
            &["num_hidden_layers", "hidden_size_per_layer_input"],
            "the per-layer inputs (layers * width)",
            n.checked_mul(self.hidden_size_per_layer_input),
        )?;
        check_width(
            &["altup_num_inputs"],
            "AltUp's prediction coefficients (altup_num_inputs squared)",
            self.altup_num_inputs.checked_mul(self.altup_num_inputs),
        )?;
        if self.altup_active_idx >= self.altup_num_inputs {
            return Err(ArgsError::invalid(
                &["altup_active_idx", "altup_num_inputs"],
                format!(
                    "`altup_active_idx` ({}) is not below `altup_num_inputs` ({})",
                    self.altup_active_idx, self.altup_num_inputs
                ),
            ));
        }
        self.intermediate_sizes = self.read_intermediate_sizes()?;
        if let Some(pattern) = &self.activation_sparsity_pattern {
            check_per_layer("activation_sparsity_pattern", pattern.len(), n)?;
            if let Some(p) = pattern.iter().find(|p| !(0.0..1.0).contains(*p)) {
                return Err(ArgsError::invalid(
                    &["activation_sparsity_pattern"],
                    format!("a sparsity of {p} is not in [0, 1)"),
                ));
            }
        }
        for (key, base) in [
            ("rope_theta", self.rope_theta),
            ("rope_local_base_freq", self.rope_local_base_freq),
        ] {
            if !(base.is_finite() && base > 0.0) {
                return Err(ArgsError::invalid(
                    &[key],
                    format!("`{key}` must be a positive number, got {base}"),
                ));
            }
        }
        Ok(())
    }

    fn read_intermediate_sizes(&self) -> std::result::Result<Vec<usize>, ArgsError> {
        let n = self.num_hidden_layers;
        let key = "intermediate_size";
        let size = |v: &Value| {
            v.as_u64()
                .filter(|&s| s > 0 && s as usize <= MAX_SIZE / 2)
                .map(|s| s as usize)
                .ok_or_else(|| {
                    ArgsError::invalid(
                        &[key],
                        format!("expected positive widths within MLX's size limit, found {v}"),
                    )
                })
        };
        match &self.intermediate_size {
            Value::Array(list) => {
                check_per_layer(key, list.len(), n)?;
                list.iter().map(size).collect()
            }
            v => Ok(vec![size(v)?; n]),
        }
    }

    /// Which layers compute keys and values and which borrow them.
    pub fn kv_sources(&self) -> std::result::Result<KvSources, ArgsError> {
        KvSources::new(&self.layer_types, self.num_kv_shared_layers)
    }
}

/// The low-rank branch beside the attention: `x + post_laurel_norm(linear_right(linear_left(x)))`.
#[derive(Debug, ModuleParameters)]
pub struct Laurel {
    #[param]
    linear_left: Linear,
    #[param]
    linear_right: Linear,
    #[param]
    post_laurel_norm: RmsNorm,
}

impl Laurel {
    fn forward(&self, x: &Array) -> Result<Array> {
        let r = self.linear_right.forward(&self.linear_left.forward(x)?)?;
        x.add(self.post_laurel_norm.forward(&r)?)
    }
}

/// AltUp over the copies of the residual stream (`[n, B, L, hidden]`): the prediction of
/// every copy from a learned mix of all, and the correction by the active copy's innovation,
/// both with coefficients routed by the active copy (in float32).
#[derive(Debug, ModuleParameters)]
pub struct AltUp {
    /// `[hidden]`.
    #[param]
    correct_output_scale: Param<Array>,
    /// `[n, n]`.
    #[param]
    correction_coefs: Linear,
    /// `[n * n, n]`.
    #[param]
    prediction_coefs: Linear,
    /// `[n, hidden]`.
    #[param]
    modality_router: Linear,
    #[param]
    router_norm: RmsNorm,
    n: i32,
    active: i32,
    coef_clip: Option<f32>,
}

impl AltUp {
    fn new(args: &Gemma3nArgs) -> Result<Self> {
        let (d, n) = (args.hidden_size as i32, args.altup_num_inputs as i32);
        Ok(AltUp {
            correct_output_scale: Param::new(zeros::<f32>(&[d])?),
            correction_coefs: Linear::new(n, n, false)?,
            prediction_coefs: Linear::new(n, n * n, false)?,
            modality_router: Linear::new(d, n, false)?,
            router_norm: RmsNorm::new(d, args.rms_norm_eps)?,
            n,
            active: args.altup_active_idx as i32,
            coef_clip: args.altup_coef_clip,
        })
    }

    /// `tanh(modality_router(router_norm(x) / hidden))` in float32, `[B, L, n]`.
    fn modalities(&self, x: &Array) -> Result<Array> {
        let inv = Array::from_f32(1.0 / x.dim(-1) as f32).as_dtype(x.dtype())?;
        let routed = self
            .modality_router
            .forward(&self.router_norm.forward(x)?.multiply(inv)?)?;
        tanh(routed.as_dtype(Dtype::Float32)?)
    }

    /// `coefs(x)` with the coefficients in float32, clipped to `altup_coef_clip` (the
    /// reference casts and clips the layer's weight in place before each use).
    fn coefficients(&self, coefs: &Linear, x: &Array) -> Result<Array> {
        if coefs.is_quantized() {
            return Err(Exception::custom(
                "AltUp's coefficients cannot be quantized (nor can the reference use them so)",
            ));
        }
        let w = coefs.weight.as_dtype(Dtype::Float32)?;
        let w = match self.coef_clip {
            Some(c) => clip(&w, (-c, c))?,
            None => w,
        };
        x.matmul(w.t())
    }

    fn predict(&self, x: &Array) -> Result<Array> {
        let modalities = self.modalities(&x.index(self.active))?;
        let (b, l) = (modalities.dim(0), modalities.dim(1));
        let coefs = self
            .coefficients(&self.prediction_coefs, &modalities)?
            .reshape(&[b, l, self.n, self.n])?
            .transpose_axes(&[0, 1, 3, 2])?;
        let up = x.as_dtype(Dtype::Float32)?;
        let predictions = up
            .transpose_axes(&[1, 2, 3, 0])?
            .matmul(&coefs)?
            .transpose_axes(&[3, 0, 1, 2])?;
        predictions.add(&up)?.as_dtype(x.dtype())
    }

    fn correct(&self, predictions: &Array, activated: &Array) -> Result<Array> {
        let modalities = self.modalities(activated)?;
        let one = Array::from_f32(1.0);
        let coefs = self
            .coefficients(&self.correction_coefs, &modalities)?
            .add(one)?;
        let innovation = activated.subtract(predictions.index(self.active))?;
        let coefs = expand_dims(&move_axis(&coefs, 2, 0)?, -1)?;
        let corrected = expand_dims(&innovation, 0)?.multiply(&coefs)?;
        corrected.add(predictions)?.as_dtype(activated.dtype())
    }
}

/// The MLP: `down_proj(act(gate_proj(x)) * up_proj(x))`, `act` a tanh-approximated gelu, of
/// only what exceeds the gate's mean plus `std_multiplier` standard deviations when the layer
/// is sparse.
#[derive(Debug, ModuleParameters)]
pub struct Mlp {
    #[param]
    gate_proj: Linear,
    #[param]
    up_proj: Linear,
    #[param]
    down_proj: Linear,
    /// `sqrt(2) * erfinv(2 * sparsity - 1)` (float32) for a sparse layer.
    std_multiplier: Option<Array>,
}

impl Mlp {
    fn new(dim: usize, hidden: usize, sparsity: f64) -> Result<Self> {
        let (d, h) = (dim as i32, hidden as i32);
        let std_multiplier = match sparsity > 0.0 {
            true => {
                let q = erfinv(Array::from_f32((2.0 * sparsity - 1.0) as f32))?;
                Some(q.multiply(Array::from_f32(std::f64::consts::SQRT_2 as f32))?)
            }
            false => None,
        };
        Ok(Mlp {
            gate_proj: Linear::new(d, h, false)?,
            up_proj: Linear::new(d, h, false)?,
            down_proj: Linear::new(h, d, false)?,
            std_multiplier,
        })
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let gate = self.gate_proj.forward(x)?;
        let activations = match &self.std_multiplier {
            Some(m) => {
                let mean = mean_axis(&gate, -1, true)?;
                let std = std_axis(&gate, -1, true, None)?;
                let cutoff = mean.add(std.multiply(m.as_dtype(std.dtype())?)?)?;
                let zero = Array::from_f32(0.0).as_dtype(gate.dtype())?;
                gelu_approx(&maximum(&zero, gate.subtract(&cutoff)?)?)?
            }
            None => gelu_approx(&gate)?,
        };
        self.down_proj
            .forward(&activations.multiply(self.up_proj.forward(x)?)?)
    }
}

/// A gemma3n layer, on the AltUp copies `[n, B, L, hidden]`.
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
    #[param]
    altup: AltUp,
    #[param]
    laurel: Laurel,
    #[param]
    per_layer_input_gate: Linear,
    #[param]
    per_layer_projection: Linear,
    #[param]
    post_per_layer_input_norm: RmsNorm,
    active: i32,
    correct_scale: bool,
    window: Option<i32>,
}

impl DecoderLayer {
    fn new(args: &Gemma3nArgs, i: usize) -> Result<Self> {
        let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
        let sliding = args.layer_types[i] == "sliding_attention";
        let base = match sliding {
            true => args.rope_local_base_freq,
            false => args.rope_theta,
        };
        let rope = Rope::plain(args.head_dim as i32, base, false, 1.0);
        // KV-shared layers keep their key and value weights (the checkpoint has them), unused.
        let self_attn = SharedKvAttention::new(
            dim,
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
            eps,
            rope,
            KvProjections::KeysAndValues,
        )?;
        let hidden = args.intermediate_sizes.get(i).copied().ok_or_else(|| {
            Exception::custom("no MLP width for a layer (the args were not checked)")
        })?;
        let sparsity = match &args.activation_sparsity_pattern {
            Some(p) => p.get(i).copied().unwrap_or(0.0),
            None => 0.0,
        };
        let (d, rank, width) = (
            dim as i32,
            args.laurel_rank as i32,
            args.hidden_size_per_layer_input as i32,
        );
        let norm = || RmsNorm::new(d, eps);
        Ok(DecoderLayer {
            self_attn,
            mlp: Mlp::new(dim, hidden, sparsity)?,
            input_layernorm: norm()?,
            post_attention_layernorm: norm()?,
            pre_feedforward_layernorm: norm()?,
            post_feedforward_layernorm: norm()?,
            altup: AltUp::new(args)?,
            laurel: Laurel {
                linear_left: Linear::new(d, rank, false)?,
                linear_right: Linear::new(rank, d, false)?,
                post_laurel_norm: norm()?,
            },
            per_layer_input_gate: Linear::new(d, width, false)?,
            per_layer_projection: Linear::new(width, d, false)?,
            post_per_layer_input_norm: norm()?,
            active: args.altup_active_idx as i32,
            correct_scale: args.altup_correct_scale,
            window: sliding.then_some(args.sliding_window as i32),
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
        let input = per_layer_input
            .ok_or_else(|| Exception::custom("a gemma3n layer needs its per-layer input"))?;
        let predictions = self.altup.predict(x)?;
        let active = predictions.index(self.active);
        let normed = self.input_layernorm.forward(&active)?;
        let laurel = self.laurel.forward(&normed)?;
        let (attn, kv) = self.self_attn.forward(&normed, mask, cache, shared)?;
        let attn = active.add(self.post_attention_layernorm.forward(&attn)?)?;
        let half = Array::from_f32(0.5f64.sqrt() as f32).as_dtype(attn.dtype())?;
        let h = attn.add(&laurel)?.multiply(half)?;
        let ffw = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        let h = h.add(self.post_feedforward_layernorm.forward(&ffw)?)?;
        let corrected = self.altup.correct(&predictions, &h)?;
        let mut first = corrected.index(self.active);
        if self.correct_scale {
            first = first.multiply(&*self.altup.correct_output_scale)?;
        }
        let first = per_layer_gate(
            &self.per_layer_input_gate,
            &self.per_layer_projection,
            &self.post_per_layer_input_norm,
            &first,
            input,
        )?;
        let rest = corrected.try_index(1..)?.add(&first)?;
        let out = concatenate(&[corrected.try_index(..1)?, rest], 0)?;
        Ok((out, kv))
    }
}

/// `sqrt(mean(x^2))` over the last axis, as the reference writes it (`** 2`, `** 0.5`).
fn magnitude(x: &Array) -> Result<Array> {
    let two = Array::from_f32(2.0).as_dtype(x.dtype())?;
    let half = Array::from_f32(0.5).as_dtype(x.dtype())?;
    mean_axis(&x.power(&two)?, -1, true)?.power(&half)
}

/// The language model: scaled embeddings spread into the AltUp copies, the layers, the
/// copies merged back, the final norm.
#[derive(Debug, ModuleParameters)]
pub struct LanguageModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<DecoderLayer>,
    #[param]
    embed_tokens_per_layer: Embedding,
    #[param]
    per_layer_model_projection: Linear,
    #[param]
    per_layer_projection_norm: RmsNorm,
    #[param]
    altup_projections: Vec<Linear>,
    #[param]
    altup_unembed_projections: Vec<Linear>,
    #[param]
    norm: RmsNorm,
    sources: KvSources,
    vocab_per_layer: usize,
    per_layer_width: usize,
}

impl LanguageModel {
    /// The copies `[n, B, L, D]` rescaled to the first one's magnitude (which stays as is).
    fn match_magnitudes(first: &Array, rest: Vec<Array>) -> Result<Array> {
        let target = magnitude(first)?;
        let mut all = vec![first.clone()];
        for r in rest {
            all.push(r.multiply(target.divide(magnitude(&r)?)?)?);
        }
        stack(&all, 0)
    }

    fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.embed_tokens.forward(inputs)?;
        let scale = EmbedScale::Exact.factor(h.dim(-1) as usize)?;
        let h = h.multiply(Array::from_f32(scale).as_dtype(h.dtype())?)?;
        let per_layer = per_layer_inputs(
            &self.embed_tokens_per_layer,
            &self.per_layer_model_projection,
            &self.per_layer_projection_norm,
            inputs,
            &h,
            self.vocab_per_layer,
            self.layers.len(),
            self.per_layer_width,
        )?;
        let copies = self
            .altup_projections
            .iter()
            .map(|p| p.forward(&h))
            .collect::<Result<Vec<_>>>()?;
        let h = Self::match_magnitudes(&h, copies)?;
        let n = inputs.dim(1);
        let h = forward_layers(&self.layers, &self.sources, h, n, Some(&per_layer), cache)?;
        let first = h.index(0);
        let copies = self
            .altup_unembed_projections
            .iter()
            .enumerate()
            .map(|(i, p)| p.forward(&h.index(i as i32 + 1)))
            .collect::<Result<Vec<_>>>()?;
        let h = mean_axis(&Self::match_magnitudes(&first, copies)?, 0, None)?;
        self.norm.forward(&h)
    }
}

/// `model.language_model` in checkpoints.
#[derive(Debug, ModuleParameters)]
pub struct Gemma3n {
    #[param]
    language_model: LanguageModel,
}

/// The Gemma 3n text model.
#[mlx_model(
    model_type = "gemma3n",
    args = Gemma3nArgs,
    drop = [
        "model.vision_tower.*",
        "model.audio_tower.*",
        "model.embed_audio.*",
        "model.embed_vision.*",
    ],
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Gemma3n,
    softcap: Option<f32>,
}

impl Architecture for Model {
    fn new(args: &Gemma3nArgs) -> Result<Self> {
        let sources = args
            .kv_sources()
            .map_err(|e| Exception::custom(e.to_string()))?;
        let (d, vocab, eps) = (
            args.hidden_size as i32,
            args.vocab_size as i32,
            args.rms_norm_eps,
        );
        let width = args.hidden_size_per_layer_input;
        let all = (args.num_hidden_layers * width) as i32;
        let layers = (0..args.num_hidden_layers)
            .map(|i| DecoderLayer::new(args, i))
            .collect::<Result<_>>()?;
        let projections = || {
            (1..args.altup_num_inputs)
                .map(|_| Linear::new(d, d, false))
                .collect::<Result<Vec<_>>>()
        };
        let language_model = LanguageModel {
            embed_tokens: Embedding::new(vocab, d)?,
            layers,
            embed_tokens_per_layer: Embedding::new(args.vocab_size_per_layer_input as i32, all)?,
            per_layer_model_projection: Linear::new(d, all, false)?,
            per_layer_projection_norm: RmsNorm::new(width as i32, eps)?,
            altup_projections: projections()?,
            altup_unembed_projections: projections()?,
            norm: RmsNorm::new(d, eps)?,
            sources,
            vocab_per_layer: args.vocab_size_per_layer_input,
            per_layer_width: width,
        };
        Ok(Model {
            model: Gemma3n { language_model },
            softcap: args.final_logit_softcapping,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let lm = &self.model.language_model;
        let logits = lm.embed_tokens.as_linear(&lm.forward(inputs, cache)?)?;
        match self.softcap {
            Some(cap) => soft_cap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// A cache per layer that computes keys and values (the KV-shared ones have none).
    fn make_cache(&self) -> Vec<Cache> {
        let lm = &self.model.language_model;
        owner_caches(&lm.layers, &lm.sources)
    }

    fn num_layers(&self) -> usize {
        self.model.language_model.layers.len()
    }
}
