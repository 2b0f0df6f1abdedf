//! What the gemma family shares, after mlx-lm's `models/gemma.py`, `gemma2.py` and
//! `gemma3_text.py`: the embedding scale, gemma2's soft-capped attention, the gemma2 / gemma3
//! decoder layer with its four norms and gemma3's float16 residual clipping, the local/global
//! layer pattern, gemma3's head, tied exactly when the checkpoint has none, and the per-layer
//! inputs of gemma3n and gemma4 (after `models/gemma3n.py` and `models/gemma4_text.py`). The
//! attention is [`transformer::Attention`] (zero-centred q/k norms for gemma3, soft-capped
//! scores for gemma2), the feed-forward [`transformer::Mlp`] with a GeGLU, the stack
//! [`transformer::Decoder`].
//!
//! The norms are [`RmsNorm::zero_centered`](crate::nn::norm::RmsNorm::zero_centered)
//! (`1 + weight`).
//!
//! [`transformer::Attention`]: crate::nn::transformer::Attention
//! [`transformer::Mlp`]: crate::nn::transformer::Mlp
//! [`transformer::Decoder`]: crate::nn::transformer::Decoder

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::clip;
use mlx_rs::{Array, Dtype};

use crate::args::ArgsError;
use crate::cache::Cache;
use crate::nn::activations::gelu_approx;
use crate::nn::mask::AttentionMask;
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::{Embedding, Linear};
use crate::nn::transformer::{Attention, Layer, Mlp, SelfAttention};
use crate::weights::Weights;

// Soft-capped attention is a shared block; its old home keeps the names.
pub use crate::nn::attention::{soft_cap, softcapped_attention};

/// How the embeddings are scaled by `sqrt(hidden_size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedScale {
    /// In the embeddings' dtype (gemma, gemma2: `h * hidden_size**0.5`).
    Exact,
    /// Rounded to bfloat16 first, as the original checkpoints computed it (gemma3:
    /// `h * mx.array(hidden_size**0.5, mx.bfloat16).astype(h.dtype)`).
    Bfloat16,
}

impl EmbedScale {
    /// The factor `sqrt(hidden_size)`, as a float32 that casts to the embeddings' dtype
    /// exactly as the reference's scalar does (for [`Decoder::embedding_multiplier`]).
    ///
    /// [`Decoder::embedding_multiplier`]: crate::nn::transformer::Decoder::embedding_multiplier
    pub fn factor(self, hidden_size: usize) -> Result<f32> {
        let s = (hidden_size as f64).sqrt() as f32;
        match self {
            EmbedScale::Exact => Ok(s),
            // bfloat16 values are float32 values, so the later cast rounds as the reference's.
            EmbedScale::Bfloat16 => Ok(Array::from_f32(s)
                .as_dtype(Dtype::Bfloat16)?
                .as_dtype(Dtype::Float32)?
                .item_cast::<f32>()),
        }
    }
}

/// `x + y`; in float16 the sum is taken in float32 and clipped to float16's range, so the
/// residual stream saturates instead of overflowing (gemma3's `clip_residual`).
pub fn clip_residual(x: &Array, y: &Array) -> Result<Array> {
    if x.dtype() != Dtype::Float16 {
        return x.add(y);
    }
    let bound = 65504.0f32;
    let sum = x
        .as_dtype(Dtype::Float32)?
        .add(y.as_dtype(Dtype::Float32)?)?;
    clip(&sum, (-bound, bound))?.as_dtype(Dtype::Float16)
}

/// The gemma2 / gemma3 decoder layer: norms before and after both the attention and the MLP,
/// `h = x + post_attention_norm(attn(input_norm(x)))`,
/// `out = h + post_feedforward_norm(mlp(pre_feedforward_norm(h)))`.
#[derive(Debug, ModuleParameters)]
pub struct SandwichLayer {
    /// The attention.
    #[param]
    pub self_attn: Attention,
    /// The feed-forward (a GeGLU).
    #[param]
    pub mlp: Mlp,
    /// Before the attention.
    #[param]
    pub input_layernorm: RmsNorm,
    /// After the attention.
    #[param]
    pub post_attention_layernorm: RmsNorm,
    /// Before the MLP.
    #[param]
    pub pre_feedforward_layernorm: RmsNorm,
    /// After the MLP.
    #[param]
    pub post_feedforward_layernorm: RmsNorm,
    /// Whether the residual sums go through [`clip_residual`] (gemma3) or are plain (gemma2).
    pub clip_residuals: bool,
    /// The attention window of a sliding-window (local) layer; `None`: global.
    pub sliding_window: Option<i32>,
}

impl SandwichLayer {
    /// A global layer around `self_attn` and `mlp`, with zero-centred norms over `dim`.
    pub fn new(
        self_attn: Attention,
        mlp: Mlp,
        dim: i32,
        eps: f32,
        clip_residuals: bool,
    ) -> Result<Self> {
        Ok(SandwichLayer {
            self_attn,
            mlp,
            input_layernorm: RmsNorm::zero_centered(dim, eps)?,
            post_attention_layernorm: RmsNorm::zero_centered(dim, eps)?,
            pre_feedforward_layernorm: RmsNorm::zero_centered(dim, eps)?,
            post_feedforward_layernorm: RmsNorm::zero_centered(dim, eps)?,
            clip_residuals,
            sliding_window: None,
        })
    }

    /// Makes it a local layer attending to the last `window` positions (gemma3).
    pub fn sliding_window(mut self, window: Option<usize>) -> Self {
        self.sliding_window = window.map(|w| w as i32);
        self
    }
}

impl Layer for SandwichLayer {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let residual = |a: &Array, b: &Array| {
            if self.clip_residuals {
                clip_residual(a, b)
            } else {
                a.add(b)
            }
        };
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = residual(x, &self.post_attention_layernorm.forward(&r)?)?;
        let r = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        residual(&h, &self.post_feedforward_layernorm.forward(&r)?)
    }

    fn window(&self) -> Option<i32> {
        self.sliding_window
    }

    fn mask_as_array(&self) -> bool {
        SelfAttention::mask_as_array(&self.self_attn)
    }
}

/// `x * factor`, the factor in `x`'s dtype (a Python float in an mlx expression).
fn scaled(x: &Array, factor: f64) -> Result<Array> {
    x.multiply(Array::from_f32(factor as f32).as_dtype(x.dtype())?)
}

/// The per-layer inputs of gemma3n and gemma4 (`[B, L, layers, width]`, one slice per layer):
/// each token's row of `embed_tokens_per_layer` times `sqrt(width)`, plus
/// `per_layer_projection_norm` of `per_layer_model_projection(h) / sqrt(hidden)`, the sum
/// times `2^-0.5`. `ids` are the tokens `[B, L]`, `h` their scaled embeddings `[B, L, hidden]`;
/// ids from `vocab` on (the rows of `embed_tokens_per_layer`) read row 0, as gemma3n's
/// reference does (gemma4's reads past the table, which real checkpoints never reach).
#[allow(clippy::too_many_arguments)]
pub fn per_layer_inputs(
    embed_tokens_per_layer: &Embedding,
    per_layer_model_projection: &Linear,
    per_layer_projection_norm: &RmsNorm,
    ids: &Array,
    h: &Array,
    vocab: usize,
    layers: usize,
    width: usize,
) -> Result<Array> {
    let (b, l) = (ids.dim(0), ids.dim(1));
    let shape = [b, l, layers as i32, width as i32];
    let in_vocab = ids.lt(Array::from_int(vocab as i32))?;
    let ids = mlx_rs::ops::select(&in_vocab, ids, Array::from_int(0).as_dtype(ids.dtype())?)?;
    let embedded = embed_tokens_per_layer.forward(&ids)?;
    let embedded = scaled(&embedded, (width as f64).sqrt())?.reshape(&shape)?;
    let projected = per_layer_model_projection.forward(h)?;
    let projected = scaled(&projected, (h.dim(-1) as f64).powf(-0.5))?.reshape(&shape)?;
    let projected = per_layer_projection_norm.forward(&projected)?;
    scaled(&projected.add(&embedded)?, 0.5f64.sqrt())
}

/// A gemma3n / gemma4 layer's use of its per-layer input `[B, L, width]`:
/// `post_per_layer_input_norm(per_layer_projection(gelu_approx(per_layer_input_gate(x)) *
/// input))`, `[B, L, hidden]`, which the layer adds to its output.
pub fn per_layer_gate(
    per_layer_input_gate: &Linear,
    per_layer_projection: &Linear,
    post_per_layer_input_norm: &RmsNorm,
    x: &Array,
    input: &Array,
) -> Result<Array> {
    let gate = gelu_approx(&per_layer_input_gate.forward(x)?)?;
    let gate = per_layer_projection.forward(&gate.multiply(input)?)?;
    post_per_layer_input_norm.forward(&gate)
}

/// Which layers are global (full attention) when every `pattern`-th one is: layer `i` is
/// global when `i % pattern == pattern - 1` (gemma3's `sliding_window_pattern`; a pattern of
/// one makes every layer global).
pub fn is_global_layer(layer: usize, pattern: usize) -> bool {
    pattern <= 1 || layer % pattern == pattern - 1
}

/// gemma3's head rule: the reference ties the head exactly when the checkpoint has no
/// `lm_head.weight`, whatever config.json says. `has_head` is whether the model was built with
/// a head (from `tie_word_embeddings`):
///
/// - built with a head, checkpoint without one: the head becomes a copy of the embeddings
///   (every tensor of `embed`: weight, and scales and biases when quantized);
/// - built tied, checkpoint with a head: the head is dropped when it equals the embeddings,
///   and refused otherwise (the config says tied but the checkpoint's head differs).
///
/// Idempotent: converted weights come back unchanged.
pub fn resolve_tied_head(
    weights: &mut Weights,
    has_head: bool,
    head: &str,
    embed: &str,
) -> Result<()> {
    let head_prefix = format!("{head}.");
    let embed_prefix = format!("{embed}.");
    let head_keys: Vec<String> = weights
        .keys()
        .filter(|k| k.starts_with(&head_prefix))
        .cloned()
        .collect();
    if has_head {
        if weights.contains_key(&format!("{head}.weight")) {
            return Ok(());
        }
        let copies: Vec<(String, Array)> = weights
            .iter()
            .filter_map(|(k, v)| {
                let suffix = k.strip_prefix(&embed_prefix)?;
                Some((format!("{head_prefix}{suffix}"), v.clone()))
            })
            .collect();
        weights.extend(copies);
        return Ok(());
    }
    for key in &head_keys {
        let suffix = &key[head_prefix.len()..];
        let same = match (
            weights.get(key),
            weights.get(&format!("{embed_prefix}{suffix}")),
        ) {
            (Some(h), Some(e)) => h.shape() == e.shape() && h.eq_values(e)?,
            _ => false,
        };
        if !same {
            return Err(Exception::custom(format!(
                "`{key}` differs from the embeddings but config.json has `tie_word_embeddings`; \
                 set `\"tie_word_embeddings\": false` to use the checkpoint's head"
            )));
        }
    }
    for key in head_keys {
        weights.remove(&key);
    }
    Ok(())
}

/// Checks that `num_key_value_heads` divides `num_attention_heads` (grouped-query heads);
/// the error names both keys.
pub fn check_kv_heads(heads: usize, kv_heads: usize) -> std::result::Result<(), ArgsError> {
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(ArgsError::invalid(
            &["num_attention_heads", "num_key_value_heads"],
            format!(
                "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::attention::scaled_dot_product_attention;
    use crate::nn::mask::create_causal_mask;
    use mlx_rs::random;

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max(None))
            .map(|m| m.item_cast::<f32>())
            .expect("difference")
    }

    #[test]
    fn global_layers_follow_the_pattern() {
        let global: Vec<bool> = (0..7).map(|i| is_global_layer(i, 3)).collect();
        assert_eq!(global, [false, false, true, false, false, true, false]);
        assert!((0..4).all(|i| is_global_layer(i, 1)));
    }

    #[test]
    fn soft_cap_bounds_the_values_and_keeps_small_ones() {
        let x = Array::from_slice(&[-1000.0f32, -0.01, 0.0, 0.01, 1000.0], &[5]);
        let y = soft_cap(&x, 5.0).expect("soft-cap");
        let got: Vec<f32> = y.as_slice::<f32>().to_vec();
        assert!(
            (got[0] + 5.0).abs() < 1e-5 && (got[4] - 5.0).abs() < 1e-5,
            "{got:?}"
        );
        assert!((got[1] + 0.01).abs() < 1e-6 && got[2] == 0.0, "{got:?}");
    }

    #[test]
    fn clip_residual_saturates_float16_and_adds_plainly_otherwise() {
        let x = Array::from_slice(&[60000.0f32, -60000.0, 1.0], &[3]);
        let y = Array::from_slice(&[10000.0f32, -10000.0, 2.0], &[3]);
        let half = |a: &Array| a.as_dtype(Dtype::Float16).expect("cast");
        let sum = clip_residual(&half(&x), &half(&y)).expect("clip");
        assert_eq!(sum.dtype(), Dtype::Float16);
        let sum: Vec<f32> = sum
            .as_dtype(Dtype::Float32)
            .unwrap()
            .as_slice::<f32>()
            .to_vec();
        assert_eq!(sum, [65504.0, -65504.0, 3.0]);
        let plain = clip_residual(&x, &y).expect("add");
        assert_eq!(plain.as_slice::<f32>(), [70000.0, -70000.0, 3.0]);
    }

    #[test]
    fn softcapped_attention_with_a_loose_cap_equals_the_fused_kernel() {
        random::seed(3).expect("seed");
        let (b, heads, kv_heads, l, d) = (2, 4, 2, 6, 8);
        let q = random::normal::<f32>(&[b, heads, l, d], None, None, None).expect("q");
        let k = random::normal::<f32>(&[b, kv_heads, l, d], None, None, None).expect("k");
        let v = random::normal::<f32>(&[b, kv_heads, l, d], None, None, None).expect("v");
        // Per-sequence masks [B, 1, L, K] (left padding of 0 and 2) and the plain causal ones.
        let padding = Array::from_slice(&[0i32, 2], &[2]);
        let batch = create_causal_mask(l, 0, None, Some(&padding), None).expect("mask");
        let window = create_causal_mask(l, 0, Some(3), None, None).expect("mask");
        for mask in [
            AttentionMask::Causal,
            AttentionMask::Array(batch),
            AttentionMask::Array(window),
        ] {
            let fused = scaled_dot_product_attention(&q, &k, &v, 0.3, &mask, None).expect("fused");
            let capped =
                softcapped_attention(&q, &k, &v, None, 0.3, 1e6, &mask).expect("soft-capped");
            let d = max_diff(&capped, &fused);
            assert!(d < 1e-5, "{mask:?}: {d}");
        }
    }

    fn weights(pairs: &[(&str, &[f32])]) -> Weights {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Array::from_slice(v, &[v.len() as i32])))
            .collect()
    }

    #[test]
    fn a_missing_head_becomes_the_embeddings_once() {
        let mut w = weights(&[("model.embed_tokens.weight", &[1.0, 2.0])]);
        resolve_tied_head(&mut w, true, "lm_head", "model.embed_tokens").expect("resolve");
        assert_eq!(w["lm_head.weight"].as_slice::<f32>(), [1.0, 2.0]);
        let once: Vec<String> = w.keys().cloned().collect();
        resolve_tied_head(&mut w, true, "lm_head", "model.embed_tokens").expect("again");
        assert_eq!(w.len(), once.len());
    }

    #[test]
    fn a_redundant_head_is_dropped_and_a_different_one_refused() {
        let embed: &[f32] = &[1.0, 2.0];
        let mut same = weights(&[
            ("model.embed_tokens.weight", embed),
            ("lm_head.weight", embed),
        ]);
        resolve_tied_head(&mut same, false, "lm_head", "model.embed_tokens").expect("drops");
        assert!(!same.contains_key("lm_head.weight"));
        resolve_tied_head(&mut same, false, "lm_head", "model.embed_tokens").expect("again");
        assert_eq!(same.len(), 1);

        let mut other = weights(&[
            ("model.embed_tokens.weight", embed),
            ("lm_head.weight", &[1.0, 3.0]),
        ]);
        let err =
            resolve_tied_head(&mut other, false, "lm_head", "model.embed_tokens").unwrap_err();
        assert!(err.to_string().contains("tie_word_embeddings"), "{err}");
    }
}
