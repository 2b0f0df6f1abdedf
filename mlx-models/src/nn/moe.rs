//! Mixture-of-experts feed-forwards: the routers of the reference's families ([`Routing`]),
//! the sparse block that runs the routed experts and an optional shared expert
//! ([`SparseMoe`]), and [`FeedForward`], a layer's feed-forward that is dense in some layers and
//! sparse in others.
//!
//! A router maps the gate's logits `[..., experts]` to the experts each token goes to
//! (`[..., k]`, int) and their weights (`[..., k]`). The routers follow mlx-lm 0.32.2 op for
//! op, including which of two equal scores `argpartition` keeps, because a different choice at
//! a tie sends a token through another expert.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{
    argmax_axis, put_along_axis, take_along_axis, topk_axis, Ellipsis, TryIndexOp,
};
use mlx_rs::ops::{
    abs, argpartition_axis, concatenate, expand_dims, maximum, select, sigmoid, softmax_axis,
    unflatten, zeros_dtype,
};
use mlx_rs::{Array, Dtype};

use crate::nn::activations::GatedActivation;
use crate::nn::quantized::Linear;
use crate::nn::switch::SwitchGlu;
use crate::nn::transformer::{Block, Mlp};

/// Which `k` entries of the last axis `argpartition` is asked for: the reference spells top-k
/// two ways, which keep different entries when scores tie at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopK {
    /// `argpartition(-x, kth=k-1)[..., :k]` (mixtral, qwen2_moe, olmoe, glm4_moe).
    Negated,
    /// `argpartition(x, kth=-k)[..., -k:]` (qwen3_moe, granitemoe, gpt_oss).
    Last,
}

impl TopK {
    /// The indices of the `k` largest entries of the last axis of `x`.
    pub fn indices(self, x: &Array, k: i32) -> Result<Array> {
        let n = x.dim(-1);
        if k < 1 || k > n {
            return Err(Exception::custom(format!(
                "top-{k} routing over {n} experts: k must be between 1 and the expert count"
            )));
        }
        let inds = match self {
            TopK::Negated => {
                let part = argpartition_axis(x.negative()?, k - 1, -1)?;
                part.try_index((Ellipsis, ..k))?
            }
            TopK::Last => {
                let part = argpartition_axis(x, -k, -1)?;
                part.try_index((Ellipsis, (n - k)..))?
            }
        };
        mlx_rs::stop_gradient(&inds)
    }
}

/// How a router turns gate logits into experts and weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// Softmax over all experts (in float32), the top `k` probabilities, renormalised to sum to
    /// one with `renormalize` (qwen2_moe, qwen3_moe's `norm_topk_prob`, olmoe).
    SoftmaxTopK {
        /// Experts per token.
        k: i32,
        /// How the top `k` are picked.
        pick: TopK,
        /// Divide the `k` probabilities by their sum.
        renormalize: bool,
    },
    /// The top `k` logits, then a softmax over those `k` (mixtral, granitemoe, gpt_oss).
    TopKSoftmax {
        /// Experts per token.
        k: i32,
        /// How the top `k` are picked.
        pick: TopK,
        /// The weights in float32 whatever the logits' type (granitemoe), rather than
        /// a softmax computed in float32 and returned in the logits' type.
        float32_weights: bool,
    },
    /// phimoe's `sparsemixer` (the inference path of Hugging Face's): `k` rounds, each taking
    /// the largest remaining logit and weighting it by a softmax over the logits within a band
    /// of `2 * jitter_eps` (relative) below it.
    SparseMixer {
        /// Experts per token.
        k: i32,
        /// `router_jitter_noise`.
        jitter_eps: f32,
    },
    /// Sigmoid scores plus a per-expert correction bias for the choice, the experts limited to
    /// the `topk_group` best of `n_group` groups (a group's score: its two best), the weights
    /// the uncorrected scores, renormalised with `renormalize`, times `scaling`
    /// (`noaux_tc`: glm4_moe, deepseek_v3, glm4_moe_lite).
    GroupLimited {
        /// Experts per token.
        k: i32,
        /// Groups of experts.
        n_group: i32,
        /// Groups kept per token.
        topk_group: i32,
        /// `routed_scaling_factor`.
        scaling: f32,
        /// `norm_topk_prob` (applied when `k > 1`).
        renormalize: bool,
        /// Added to the sum the weights are divided by when renormalised (glm4_moe_lite's
        /// `1e-20`; 0: none).
        epsilon: f32,
    },
    /// A softmax over all experts in the logits' type, optionally limited to the `topk_group`
    /// best of `n_group` groups (a group's score: its best probability; `n_group` 1: no
    /// limit), the top `k` probabilities times `scaling`, not renormalised (deepseek_v2's
    /// `greedy` and `group_limited_greedy`).
    SoftmaxGroupLimited {
        /// Experts per token.
        k: i32,
        /// Groups of experts (1: plain greedy).
        n_group: i32,
        /// Groups kept per token.
        topk_group: i32,
        /// `routed_scaling_factor`.
        scaling: f32,
    },
}

impl Routing {
    /// Experts per token.
    pub fn k(&self) -> i32 {
        match *self {
            Routing::SoftmaxTopK { k, .. }
            | Routing::TopKSoftmax { k, .. }
            | Routing::SparseMixer { k, .. }
            | Routing::GroupLimited { k, .. }
            | Routing::SoftmaxGroupLimited { k, .. } => k,
        }
    }

    /// Checks the routing against the number of experts (the args' hooks name the keys).
    pub fn check(&self, experts: i32) -> std::result::Result<(), String> {
        let k = self.k();
        if k < 1 || k > experts {
            return Err(format!(
                "{k} experts per token out of {experts}: must be between 1 and the expert count"
            ));
        }
        if let Routing::GroupLimited {
            n_group,
            topk_group,
            ..
        }
        | Routing::SoftmaxGroupLimited {
            n_group,
            topk_group,
            ..
        } = *self
        {
            if n_group < 1 || experts % n_group != 0 {
                return Err(format!(
                    "{experts} experts do not split into {n_group} groups"
                ));
            }
            let sigmoid = matches!(self, Routing::GroupLimited { .. });
            if sigmoid && n_group > 1 && experts / n_group < 2 {
                return Err(format!(
                    "{n_group} groups of {experts} experts: a group needs at least two"
                ));
            }
            if topk_group < 1 || topk_group > n_group {
                return Err(format!(
                    "topk_group {topk_group} must be between 1 and n_group {n_group}"
                ));
            }
        }
        Ok(())
    }

    /// The experts (`[..., k]`, int) and their weights (`[..., k]`) for gate logits `gates`
    /// (`[..., experts]`); `bias` is the score correction of [`Routing::GroupLimited`].
    pub fn route(&self, gates: &Array, bias: Option<&Array>) -> Result<(Array, Array)> {
        match *self {
            Routing::SoftmaxTopK {
                k,
                pick,
                renormalize,
            } => {
                let probs = softmax_axis(gates, -1, true)?;
                let inds = pick.indices(&probs, k)?;
                let mut scores = take_along_axis(&probs, &inds, -1)?;
                if renormalize {
                    scores = scores.divide(scores.sum_axis(-1, true)?)?;
                }
                Ok((inds, scores))
            }
            Routing::TopKSoftmax {
                k,
                pick,
                float32_weights,
            } => {
                let inds = pick.indices(gates, k)?;
                let top = take_along_axis(gates, &inds, -1)?;
                let scores = if float32_weights {
                    softmax_axis(top.as_dtype(Dtype::Float32)?, -1, false)?
                } else {
                    softmax_axis(&top, -1, true)?
                };
                Ok((inds, scores))
            }
            Routing::SparseMixer { k, jitter_eps } => sparse_mixer(gates, k, jitter_eps),
            Routing::GroupLimited {
                k,
                n_group,
                topk_group,
                scaling,
                renormalize,
                epsilon,
            } => {
                let bias = bias.ok_or_else(|| {
                    Exception::custom("group-limited routing needs its score correction bias")
                })?;
                let renormalize = renormalize.then_some(epsilon);
                group_limited(gates, bias, k, n_group, topk_group, scaling, renormalize)
            }
            Routing::SoftmaxGroupLimited {
                k,
                n_group,
                topk_group,
                scaling,
            } => softmax_group_limited(gates, k, n_group, topk_group, scaling),
        }
    }
}

fn sparse_mixer(gates: &Array, k: i32, jitter_eps: f32) -> Result<(Array, Array)> {
    let neg_inf = Array::from_f32(f32::NEG_INFINITY).as_dtype(gates.dtype())?;
    let band_edge = Array::from_f32(2.0 * jitter_eps);
    let mut masked = gates.clone();
    let (mut inds, mut scores) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let top = masked.max_axis(-1, true)?;
        let ind = mlx_rs::stop_gradient(&argmax_axis(&masked, -1, true)?)?;
        let factor = maximum(abs(gates)?, &top)?;
        let outside = top.subtract(gates)?.divide(&factor)?.gt(&band_edge)?;
        let band = select(&outside, &neg_inf, &masked)?;
        let band = softmax_axis(&band, -1, true)?;
        scores.push(take_along_axis(&band, &ind, -1)?);
        masked = put_along_axis(&masked, &ind, &neg_inf, -1)?;
        inds.push(ind);
    }
    Ok((concatenate(&inds, -1)?, concatenate(&scores, -1)?))
}

fn group_limited(
    gates: &Array,
    bias: &Array,
    k: i32,
    n_group: i32,
    topk_group: i32,
    scaling: f32,
    renormalize: Option<f32>,
) -> Result<(Array, Array)> {
    let orig = sigmoid(gates.as_dtype(Dtype::Float32)?)?;
    let mut scores = orig.add(bias)?;
    if n_group > 1 {
        let grouped = unflatten(&scores, -1, &[n_group, -1])?;
        let group_scores = topk_axis(&grouped, 2, -1)?.sum_axis(-1, true)?;
        let drop = n_group - topk_group;
        let grouped = if drop > 0 {
            let part = argpartition_axis(&group_scores, drop - 1, -2)?;
            let worst = mlx_rs::stop_gradient(&part.try_index((Ellipsis, ..drop, ..))?)?;
            put_along_axis(&grouped, &worst, Array::from_f32(0.0), -2)?
        } else {
            grouped
        };
        scores = grouped.flatten(-2, -1)?;
    }
    let inds = TopK::Negated.indices(&scores, k)?;
    let mut weights = take_along_axis(&orig, &inds, -1)?;
    if let Some(epsilon) = renormalize.filter(|_| k > 1) {
        let mut sum = weights.sum_axis(-1, true)?;
        if epsilon != 0.0 {
            sum = sum.add(Array::from_f32(epsilon))?;
        }
        weights = weights.divide(&sum)?;
    }
    Ok((inds, weights.multiply(Array::from_f32(scaling))?))
}

fn softmax_group_limited(
    gates: &Array,
    k: i32,
    n_group: i32,
    topk_group: i32,
    scaling: f32,
) -> Result<(Array, Array)> {
    let mut scores = softmax_axis(gates, -1, true)?;
    if n_group > 1 {
        let grouped = unflatten(&scores, -1, &[n_group, -1])?;
        let group_scores = grouped.max_axis(-1, true)?;
        let drop = n_group - topk_group;
        let grouped = if drop > 0 {
            let part = argpartition_axis(&group_scores, drop - 1, -2)?;
            let worst = mlx_rs::stop_gradient(&part.try_index((Ellipsis, ..drop, ..))?)?;
            let zero = Array::from_f32(0.0).as_dtype(scores.dtype())?;
            put_along_axis(&grouped, &worst, zero, -2)?
        } else {
            grouped
        };
        scores = grouped.flatten(-2, -1)?;
    }
    let inds = TopK::Negated.indices(&scores, k)?;
    let weights = take_along_axis(&scores, &inds, -1)?;
    let scaling = Array::from_f32(scaling).as_dtype(weights.dtype())?;
    Ok((inds, weights.multiply(scaling)?))
}

/// A sparse mixture-of-experts feed-forward: the gate's logits routed ([`Routing`]), the
/// chosen experts of a [`SwitchGlu`] weighted and summed, plus a shared expert when the model
/// has one. Parameters as the reference names them: `gate` (the router, a linear layer that a
/// quantized checkpoint may quantize), `e_score_correction_bias` (group-limited routing),
/// `switch_mlp`, `shared_expert` and `shared_expert_gate`.
#[derive(Debug, ModuleParameters)]
pub struct SparseMoe {
    /// `[experts, dim]`: the router's logits.
    #[param]
    pub gate: Linear,
    /// `[experts]`: the score correction of group-limited routing.
    #[param]
    pub e_score_correction_bias: Param<Option<Array>>,
    /// The routed experts, stacked.
    #[param]
    pub switch_mlp: SwitchGlu,
    /// The expert every token goes through, if any.
    #[param]
    pub shared_expert: Option<Mlp>,
    /// Its sigmoid gate, if any.
    #[param]
    pub shared_expert_gate: Option<Linear>,
    /// How the logits are routed.
    pub routing: Routing,
    /// Whether the weighted sum goes back to the experts' type (the reference's
    /// `.astype(y.dtype)` where the weights are float32).
    pub cast_back: bool,
}

impl SparseMoe {
    /// `experts` SwiGLU experts of `dim` to `hidden` and back, no biases, routed by `routing`.
    pub fn new(dim: usize, hidden: usize, experts: usize, routing: Routing) -> Result<Self> {
        let (d, h, e) = (dim as i32, hidden as i32, experts as i32);
        routing.check(e).map_err(Exception::custom)?;
        let bias = match routing {
            Routing::GroupLimited { .. } => Some(zeros_dtype(&[e], Dtype::Float32)?),
            _ => None,
        };
        Ok(SparseMoe {
            gate: Linear::new(d, e, false)?,
            e_score_correction_bias: Param::new(bias),
            switch_mlp: SwitchGlu::new(d, h, e, GatedActivation::SwiGlu, false)?,
            shared_expert: None,
            shared_expert_gate: None,
            routing,
            cast_back: false,
        })
    }

    /// The experts with biases on all three projections (olmoe's `mlp_bias`).
    pub fn expert_bias(mut self, bias: bool) -> Result<Self> {
        if bias {
            let d = self.switch_mlp.gate_proj.weight.dim(-1);
            let h = self.switch_mlp.gate_proj.weight.dim(-2);
            let e = self.switch_mlp.gate_proj.weight.dim(0);
            let activation = self.switch_mlp.activation;
            self.switch_mlp = SwitchGlu::new(d, h, e, activation, true)?;
        }
        Ok(self)
    }

    /// The router with a bias (gpt_oss).
    pub fn gate_bias(mut self) -> Result<Self> {
        let w = &self.gate.weight;
        self.gate = Linear::new(w.dim(-1), w.dim(0), true)?;
        Ok(self)
    }

    /// A shared expert of width `hidden`, gated by a sigmoid with `gated` (qwen2_moe) or
    /// added as it is (glm4_moe).
    pub fn shared_expert(mut self, hidden: usize, gated: bool) -> Result<Self> {
        let dim = self.switch_mlp.gate_proj.weight.dim(-1);
        self.shared_expert = Some(Mlp::new(dim as usize, hidden, false)?);
        self.shared_expert_gate = if gated {
            Some(Linear::new(dim, 1, false)?)
        } else {
            None
        };
        Ok(self)
    }

    /// `n` shared experts of the routed experts' width, summed in one ungated MLP of `n` times
    /// that width (DeepSeek's `n_shared_experts`); `None`: none.
    pub fn shared_experts(self, n: Option<usize>) -> Result<Self> {
        match n {
            Some(n) => {
                let hidden = self.switch_mlp.gate_proj.weight.dim(-2) as usize;
                self.shared_expert(hidden * n, false)
            }
            None => Ok(self),
        }
    }

    /// Another activation for the experts (gpt_oss's clamped SwiGLU).
    pub fn activation(mut self, activation: GatedActivation) -> Self {
        self.switch_mlp.activation = activation;
        self
    }

    /// The weighted sum cast back to the experts' type (see [`SparseMoe::cast_back`]).
    pub fn cast_back(mut self) -> Self {
        self.cast_back = true;
        self
    }

    /// The experts and weights the router picks for `x` (`[..., dim]`).
    pub fn route(&self, x: &Array) -> Result<(Array, Array)> {
        let gates = self.gate.forward(x)?;
        self.routing
            .route(&gates, self.e_score_correction_bias.value.as_ref())
    }

    /// `[..., dim]` to `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (inds, scores) = self.route(x)?;
        let y = self.switch_mlp.forward(x, &inds)?;
        let mut out = y.multiply(expand_dims(&scores, -1)?)?.sum_axis(-2, None)?;
        if self.cast_back {
            out = out.as_dtype(y.dtype())?;
        }
        if let Some(shared) = &self.shared_expert {
            let mut s = shared.forward(x)?;
            if let Some(gate) = &self.shared_expert_gate {
                s = sigmoid(gate.forward(x)?)?.multiply(&s)?;
            }
            out = out.add(&s)?;
        }
        Ok(out)
    }
}

impl Block for SparseMoe {
    fn forward(&self, x: &Array) -> Result<Array> {
        SparseMoe::forward(self, x)
    }
}

/// A layer's feed-forward where some layers are dense and others sparse (qwen3_moe's
/// `mlp_only_layers` and `decoder_sparse_step`, glm4_moe's `first_k_dense_replace`). Its
/// parameters are those of the variant it holds, under the same name.
#[derive(Debug)]
pub enum FeedForward<D: Block = Mlp, S: Block = SparseMoe> {
    /// A dense feed-forward.
    Dense(D),
    /// A mixture of experts.
    Sparse(S),
}

variant_parameters!(impl<D: Block, S: Block> for FeedForward<D, S> { FeedForward::Dense, FeedForward::Sparse });

impl<D: Block, S: Block> Block for FeedForward<D, S> {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            FeedForward::Dense(d) => d.forward(x),
            FeedForward::Sparse(s) => s.forward(x),
        }
    }
}

/// Whether layer `i` is sparse under qwen's rule: not in `mlp_only_layers`, experts present,
/// and `i + 1` a multiple of `decoder_sparse_step`.
pub fn qwen_sparse_layer(
    i: usize,
    num_experts: usize,
    decoder_sparse_step: usize,
    mlp_only_layers: &[usize],
) -> bool {
    !mlp_only_layers.contains(&i)
        && num_experts > 0
        && decoder_sparse_step > 0
        && (i + 1).is_multiple_of(decoder_sparse_step)
}

/// Checks an expert count and the experts per token, for the args' post-parse hooks; errors
/// name the keys (`keys`: the expert count's, then the per-token count's, as the config
/// spells them).
pub fn check_experts(
    experts: usize,
    per_token: usize,
    keys: [&str; 2],
) -> std::result::Result<(), crate::args::ArgsError> {
    let [experts_key, per_token_key] = keys;
    if per_token == 0 || per_token > experts {
        return Err(crate::args::ArgsError::invalid(
            &keys,
            format!(
                "`{per_token_key}` ({per_token}) must be between 1 and `{experts_key}` ({experts})"
            ),
        ));
    }
    Ok(())
}

/// Checks routed experts as DeepSeek-style configs spell them, for the args' hooks: the
/// experts per token against `n_routed_experts`, and `routing` (its groups) against them.
pub fn check_routed_experts(
    n_routed_experts: usize,
    num_experts_per_tok: usize,
    routing: &Routing,
) -> std::result::Result<(), crate::args::ArgsError> {
    let keys = ["n_routed_experts", "num_experts_per_tok"];
    check_experts(n_routed_experts, num_experts_per_tok, keys)?;
    let keys = ["n_routed_experts", "n_group", "topk_group"];
    routing
        .check(n_routed_experts as i32)
        .map_err(|e| crate::args::ArgsError::invalid(&keys, e))
}

/// Refuses a routing other than `noaux_tc` with `sigmoid` scores (the only one the
/// reference's glm4_moe, deepseek_v3 and glm4_moe_lite compute).
pub fn check_noaux_tc(
    topk_method: &str,
    scoring_func: &str,
) -> std::result::Result<(), crate::args::ArgsError> {
    if topk_method != "noaux_tc" || scoring_func != "sigmoid" {
        return Err(crate::args::ArgsError::invalid(
            &["topk_method", "scoring_func"],
            format!(
                "routing `{topk_method}` with `{scoring_func}` scores is not supported (the \
                 reference has `noaux_tc` with `sigmoid` only)"
            ),
        ));
    }
    Ok(())
}
