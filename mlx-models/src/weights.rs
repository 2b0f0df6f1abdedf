//! Declarative weight rules: the data `#[mlx_model(...)]` emits, and the engine that applies
//! it to a checkpoint's tensors (`sanitize`).
//!
//! Patterns are checkpoint keys with captures: `{n}` matches one or more characters other than
//! `.`, and (in `drop` patterns only) `*` matches anything. Rename and stack patterns match a
//! key or a prefix of it that ends at a `.`; the rest of the key is carried over, so
//! `"transformer.h.{n}.attn.c_proj" => "model.layers.{n}.self_attn.o_proj"` renames
//! `transformer.h.3.attn.c_proj.weight` to `model.layers.3.self_attn.o_proj.weight`.
//!
//! Every rule leaves already converted weights unchanged, so sanitize is idempotent as long as
//! no converted key matches a rule's source (the macro checks each rename's target against its
//! source).

use std::collections::{BTreeMap, HashMap};

use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};

/// A checkpoint's tensors by key.
pub type Weights = HashMap<String, Array>;

/// One weight rule. Rules run in the order written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Renames keys matching `from` (a prefix pattern) to `to`, filling the captures.
    Rename {
        /// Source pattern.
        from: &'static str,
        /// Target pattern, with the same captures.
        to: &'static str,
    },
    /// Removes a prefix from the keys that start with it.
    StripPrefix(&'static str),
    /// Adds a prefix to the keys that do not start with it.
    AddPrefix(&'static str),
    /// Drops keys matching a whole-key pattern (`*.rotary_emb.inv_freq`, `vision_tower.*`).
    Drop(&'static str),
    /// Drops the keys under this module path (`lm_head`) when the model has no parameter
    /// there, which is how a model with `tie_word_embeddings` is built.
    TiedHead(&'static str),
    /// Stacks the per-expert tensors of `from` (a prefix pattern with `{e}`, the expert index)
    /// into one tensor `[E, ...]` at `to`, for every suffix (`gate_proj.weight`,
    /// `gate_proj.scales`, `gate_proj.biases`, ...).
    StackExperts {
        /// Source pattern, with `{e}`.
        from: &'static str,
        /// Target pattern, without `{e}`.
        to: &'static str,
    },
}

/// Why sanitize failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SanitizeError {
    /// A rule would write a key that is already there.
    #[error("weight rule {rule} maps `{from}` to `{to}`, which the checkpoint already has")]
    Collision {
        /// The rule, as written.
        rule: String,
        /// The source key.
        from: String,
        /// The target key.
        to: String,
    },
    /// The experts of one stacked tensor are not `0..E`.
    #[error("cannot stack experts into `{key}`: {reason}")]
    Stack {
        /// The stacked key.
        key: String,
        /// What is wrong with the experts found.
        reason: String,
    },
    /// A tensor is not in the layout a conversion expects.
    #[error("cannot convert `{key}`: {reason}")]
    Layout {
        /// The key.
        key: String,
        /// What is wrong with its shape or type.
        reason: String,
    },
    /// An MLX operation (stacking, a hook's tensor work) failed.
    #[error(transparent)]
    Mlx(#[from] Exception),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Rename { from, to } => write!(f, "rename({from:?} => {to:?})"),
            Rule::StripPrefix(p) => write!(f, "strip_prefix = {p:?}"),
            Rule::AddPrefix(p) => write!(f, "add_prefix = {p:?}"),
            Rule::Drop(p) => write!(f, "drop = {p:?}"),
            Rule::TiedHead(p) => write!(f, "tied_head = {p:?}"),
            Rule::StackExperts { from, to } => write!(f, "stack_experts({from:?} => {to:?})"),
        }
    }
}

/// Applies `rules` in order. `model` answers whether a module path has parameters (for
/// [`Rule::TiedHead`]); pass `None` to treat every module as present.
pub fn apply(
    rules: &[Rule],
    mut weights: Weights,
    model: Option<&dyn ModuleParameters>,
) -> Result<Weights, SanitizeError> {
    for rule in rules {
        weights = apply_one(rule, weights, model)?;
    }
    Ok(weights)
}

fn apply_one(
    rule: &Rule,
    mut weights: Weights,
    model: Option<&dyn ModuleParameters>,
) -> Result<Weights, SanitizeError> {
    match *rule {
        Rule::Rename { from, to } => {
            let from_p = Pattern::new(from);
            let to_p = Pattern::new(to);
            rekey(rule, weights, |key| {
                from_p
                    .match_prefix(key)
                    .map(|(caps, rest)| format!("{}{rest}", to_p.fill(&caps)))
            })
        }
        Rule::StripPrefix(p) => rekey(rule, weights, |key| {
            key.strip_prefix(p)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
        }),
        Rule::AddPrefix(p) => rekey(rule, weights, |key| {
            (!key.starts_with(p)).then(|| format!("{p}{key}"))
        }),
        Rule::Drop(p) => {
            let pat = Pattern::new(p);
            weights.retain(|k, _| !pat.matches_whole(k));
            Ok(weights)
        }
        Rule::TiedHead(prefix) => {
            let has_head =
                model.is_none_or(|m| m.parameters().flatten().keys().any(|k| under(k, prefix)));
            if !has_head {
                weights.retain(|k, _| !under(k, prefix));
            }
            Ok(weights)
        }
        Rule::StackExperts { from, to } => stack(rule, weights, from, to),
    }
}

/// Whether `key` is `prefix` or inside it.
fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Moves every key for which `f` gives a new name.
fn rekey(
    rule: &Rule,
    weights: Weights,
    f: impl Fn(&str) -> Option<String>,
) -> Result<Weights, SanitizeError> {
    let renames: Vec<(String, String)> = weights
        .keys()
        .filter_map(|k| f(k).map(|n| (k.clone(), n)))
        .collect();
    if renames.is_empty() {
        return Ok(weights);
    }
    let mut weights = weights;
    let mut moved = Vec::with_capacity(renames.len());
    for (old, new) in &renames {
        if let Some(v) = weights.remove(old) {
            moved.push((old, new, v));
        }
    }
    for (old, new, v) in moved {
        if weights.contains_key(new) {
            return Err(SanitizeError::Collision {
                rule: rule.to_string(),
                from: old.clone(),
                to: new.clone(),
            });
        }
        weights.insert(new.clone(), v);
    }
    Ok(weights)
}

fn stack(
    rule: &Rule,
    mut weights: Weights,
    from: &str,
    to: &str,
) -> Result<Weights, SanitizeError> {
    let from_p = Pattern::new(from);
    let to_p = Pattern::new(to);
    // target key -> expert index -> source key
    let mut groups: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    for key in weights.keys() {
        let Some((caps, rest)) = from_p.match_prefix(key) else {
            continue;
        };
        let Some(e) = caps
            .iter()
            .find(|(n, _)| *n == "e")
            .and_then(|(_, v)| v.parse::<usize>().ok())
        else {
            continue;
        };
        let target = format!("{}{rest}", to_p.fill(&caps));
        groups.entry(target).or_default().insert(e, key.clone());
    }
    for (target, experts) in groups {
        if let Some((i, _)) = experts.keys().enumerate().find(|(i, e)| i != *e) {
            return Err(SanitizeError::Stack {
                key: target,
                reason: format!("expert {i} is missing ({} found)", experts.len()),
            });
        }
        if weights.contains_key(&target) {
            let from = experts.values().next().cloned().unwrap_or_default();
            return Err(SanitizeError::Collision {
                rule: rule.to_string(),
                from,
                to: target,
            });
        }
        let parts: Vec<Array> = experts.values().filter_map(|k| weights.remove(k)).collect();
        let stacked = mlx_rs::ops::stack(&parts, 0)?;
        weights.insert(target, stacked);
    }
    Ok(weights)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'p> {
    Lit(&'p str),
    Capture(&'p str),
    Star,
}

/// A parsed weight pattern. The macro has checked the pattern at compile time; a malformed
/// one read here (from a hand-built [`Rule`]) matches literally.
#[derive(Debug, Clone)]
struct Pattern<'p> {
    tokens: Vec<Token<'p>>,
}

type Captures<'p, 'k> = Vec<(&'p str, &'k str)>;

impl<'p> Pattern<'p> {
    fn new(text: &'p str) -> Self {
        let mut tokens = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                if let Some(end) = after.find('}') {
                    tokens.push(Token::Capture(&after[..end]));
                    rest = &after[end + 1..];
                    continue;
                }
                tokens.push(Token::Lit(rest));
                break;
            }
            if let Some(after) = rest.strip_prefix('*') {
                tokens.push(Token::Star);
                rest = after;
                continue;
            }
            let end = rest.find(['{', '*']).unwrap_or(rest.len());
            tokens.push(Token::Lit(&rest[..end]));
            rest = &rest[end..];
        }
        Pattern { tokens }
    }

    /// Matches a prefix of `key` ending at a `.` or at the end; gives the captures and the
    /// rest of the key (empty, or starting with `.`).
    fn match_prefix<'k>(&self, key: &'k str) -> Option<(Captures<'p, 'k>, &'k str)> {
        let mut caps = Vec::new();
        let end = self.walk(0, key, 0, &mut caps, false)?;
        Some((caps, &key[end..]))
    }

    fn matches_whole(&self, key: &str) -> bool {
        let mut caps = Vec::new();
        self.walk(0, key, 0, &mut caps, true).is_some()
    }

    fn walk<'k>(
        &self,
        t: usize,
        key: &'k str,
        pos: usize,
        caps: &mut Captures<'p, 'k>,
        whole: bool,
    ) -> Option<usize> {
        let Some(token) = self.tokens.get(t) else {
            let rest = &key[pos..];
            return (rest.is_empty() || (!whole && rest.starts_with('.'))).then_some(pos);
        };
        match token {
            Token::Lit(lit) => {
                if key[pos..].starts_with(lit) {
                    self.walk(t + 1, key, pos + lit.len(), caps, whole)
                } else {
                    None
                }
            }
            Token::Capture(name) => {
                let seg_end = key[pos..].find('.').map_or(key.len(), |i| pos + i);
                // Longest first, so that `{n}` takes the whole segment when it can.
                for end in (pos + 1..=seg_end).rev() {
                    if !key.is_char_boundary(end) {
                        continue;
                    }
                    caps.push((name, &key[pos..end]));
                    if let Some(done) = self.walk(t + 1, key, end, caps, whole) {
                        return Some(done);
                    }
                    caps.pop();
                }
                None
            }
            Token::Star => {
                for end in (pos..=key.len()).rev() {
                    if !key.is_char_boundary(end) {
                        continue;
                    }
                    if let Some(done) = self.walk(t + 1, key, end, caps, whole) {
                        return Some(done);
                    }
                }
                None
            }
        }
    }

    fn fill(&self, caps: &Captures<'_, '_>) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Lit(l) => out.push_str(l),
                Token::Capture(name) => {
                    if let Some((_, v)) = caps.iter().find(|(n, _)| n == name) {
                        out.push_str(v);
                    }
                }
                Token::Star => out.push('*'),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn prefix_match_stops_at_a_dot() {
        let p = Pattern::new("model.norm");
        assert_eq!(
            p.match_prefix("model.norm.weight").map(|(_, r)| r),
            Some(".weight")
        );
        assert!(p.match_prefix("model.norm_f.weight").is_none());
    }

    #[test]
    fn captures_fill_the_target() {
        let p = Pattern::new("transformer.h.{n}.attn");
        let (caps, rest) = p
            .match_prefix("transformer.h.12.attn.c_proj.weight")
            .expect("matches");
        assert_eq!(caps, vec![("n", "12")]);
        assert_eq!(rest, ".c_proj.weight");
        assert_eq!(
            Pattern::new("model.layers.{n}.self_attn").fill(&caps),
            "model.layers.12.self_attn"
        );
    }

    #[test]
    fn star_spans_dots_in_whole_matches() {
        let p = Pattern::new("*.rotary_emb.inv_freq");
        assert!(p.matches_whole("model.layers.0.self_attn.rotary_emb.inv_freq"));
        assert!(!p.matches_whole("model.layers.0.self_attn.rotary_emb.inv_freq2"));
        assert!(Pattern::new("vision_tower.*").matches_whole("vision_tower.a.b"));
    }
}

/// How [`split_fused`] divides a fused tensor in two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    /// The first half, then the second (granitemoe's `input_linear`).
    Halves,
    /// Even entries, then odd ones (gpt_oss's `gate_up_proj`).
    Interleaved,
}

/// Splits every tensor `<prefix>.<fused>.<leaf>` in two along `axis` (see [`Fused`]), into
/// `<prefix>.<first>.<leaf>` and `<prefix>.<second>.<leaf>`. Weights already split have no
/// `fused` key and pass unchanged, so a hook using it stays idempotent.
pub fn split_fused(
    weights: &mut Weights,
    fused: &str,
    [first, second]: [&str; 2],
    axis: i32,
    how: Fused,
) -> Result<(), SanitizeError> {
    let infix = format!(".{fused}.");
    let keys: Vec<String> = weights
        .keys()
        .filter(|k| k.contains(&infix))
        .cloned()
        .collect();
    for key in keys {
        let Some(value) = weights.remove(&key) else {
            continue;
        };
        let at = key.find(&infix).unwrap_or_default();
        let (head, leaf) = (&key[..at], &key[at + infix.len()..]);
        let ax = if axis < 0 {
            value.ndim() as i32 + axis
        } else {
            axis
        };
        let n = if ax >= 0 && (ax as usize) < value.ndim() {
            value.dim(ax)
        } else {
            0
        };
        if n == 0 || n % 2 != 0 {
            return Err(SanitizeError::Stack {
                key: key.clone(),
                reason: format!(
                    "cannot split axis {axis} of shape {:?} in two",
                    value.shape()
                ),
            });
        }
        let pick = |start: i32, step: i32| -> Result<Array, Exception> {
            let idx: Vec<i32> = (0..n / 2).map(|i| start + i * step).collect();
            value.take_axis(Array::from_slice(&idx, &[n / 2]), ax)
        };
        let (a, b) = match how {
            Fused::Halves => (pick(0, 1)?, pick(n / 2, 1)?),
            Fused::Interleaved => (pick(0, 2)?, pick(1, 2)?),
        };
        for (part, v) in [(first, a), (second, b)] {
            let target = format!("{head}.{part}.{leaf}");
            if weights.contains_key(&target) {
                return Err(SanitizeError::Collision {
                    rule: format!("split {fused:?}"),
                    from: key.clone(),
                    to: target,
                });
            }
            weights.insert(target, v);
        }
    }
    Ok(())
}

/// OpenAI's mxfp4 layout (gpt_oss's original checkpoints) as MLX's: every
/// `<prefix>.<name>_blocks` tensor, uint8 `[..., groups, 16]` (sixteen bytes for each group of
/// 32 four-bit values), becomes `<prefix>.<name>.weight`, the same bytes read as MLX's packed
/// uint32 words `[..., groups * 4]`; every `<prefix>.<name>_scales` becomes
/// `<prefix>.<name>.scales`, unchanged (uint8 exponents, MLX's mxfp4 scales). For each `name`
/// in `names`; weights already converted have neither suffix and pass unchanged.
pub fn mxfp4_blocks(weights: &mut Weights, names: &[&str]) -> Result<(), SanitizeError> {
    let suffixes: Vec<(String, String)> = names
        .iter()
        .flat_map(|n| {
            [
                (format!(".{n}_blocks"), format!(".{n}.weight")),
                (format!(".{n}_scales"), format!(".{n}.scales")),
            ]
        })
        .collect();
    let keys: Vec<String> = weights.keys().cloned().collect();
    for key in keys {
        let Some((suffix, leaf)) = suffixes.iter().find(|(s, _)| key.ends_with(s.as_str())) else {
            continue;
        };
        let Some(value) = weights.remove(&key) else {
            continue;
        };
        let value = if suffix.ends_with("_blocks") {
            let shape = value.shape();
            if value.dtype() != Dtype::Uint8 || value.ndim() < 2 || shape[shape.len() - 1] != 16 {
                return Err(SanitizeError::Layout {
                    key,
                    reason: format!(
                        "mxfp4 blocks are uint8 [..., groups, 16], not {:?} {shape:?}",
                        value.dtype()
                    ),
                });
            }
            value.view_dtype(Dtype::Uint32)?.flatten(-2, -1)?
        } else {
            value
        };
        let target = format!("{}{leaf}", &key[..key.len() - suffix.len()]);
        if weights.contains_key(&target) {
            return Err(SanitizeError::Collision {
                rule: "mxfp4 blocks".to_string(),
                from: key,
                to: target,
            });
        }
        weights.insert(target, value);
    }
    Ok(())
}

/// Drops the tensors of the decoder layers from index `n` on (`model.layers.{i}.*` with
/// `i >= n`): the multi-token-prediction layers that DeepSeek-style checkpoints carry after
/// their `num_hidden_layers`, which the reference's sanitize drops. Idempotent.
pub fn drop_layers_from(weights: &mut Weights, n: usize) {
    weights.retain(|k, _| {
        let index = k
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        index.is_none_or(|i| i < n)
    });
}

/// The block of FP8 checkpoints' scales (`weight_block_size` `[128, 128]`): DeepSeek V3 and
/// R1, Kimi K2, Qwen3's FP8 releases.
pub const FP8_BLOCK: i32 = 128;

/// FP8 checkpoints as the reference's sanitize reads them: every `<prefix>.weight` with a
/// `<prefix>.weight_scale_inv` beside it, FP8 values `[m, n]` (`F8_E4M3` bytes, or an
/// `F8_E5M2` tensor the reader decoded to float16) with one float scale per block of
/// [`FP8_BLOCK`] x [`FP8_BLOCK`] (`[ceil(m / 128), ceil(n / 128)]`), becomes the bfloat16
/// weight `value * scale`, computed as the reference computes it (so the same bits), and the
/// scales are dropped. A 0-d scale is one for the whole tensor (Ministral 3's releases):
/// the weight times it (`per_tensor_fp8`). Checkpoints without `weight_scale_inv` pass
/// unchanged, so this is
/// idempotent. A scale without its weight, a weight that is neither FP8 bytes nor floating
/// point, and a scale shape that does not tile the weight are errors that name the tensor.
pub fn dequantize_fp8_blocks(weights: &mut Weights) -> Result<(), SanitizeError> {
    const SUFFIX: &str = "_scale_inv";
    let mut keys: Vec<String> = weights
        .keys()
        .filter(|k| k.ends_with(".weight_scale_inv"))
        .cloned()
        .collect();
    keys.sort();
    for key in keys {
        let target = key[..key.len() - SUFFIX.len()].to_string();
        let layout = |reason: String| SanitizeError::Layout {
            key: key.clone(),
            reason,
        };
        let Some(weight) = weights.get(&target) else {
            return Err(layout(format!(
                "an FP8 scale without its weight `{target}`"
            )));
        };
        let scale = &weights[&key];
        if scale.ndim() == 0 {
            let dense = per_tensor_fp8(weight, scale).map_err(|e| layout(e.to_string()))?;
            weights.remove(&key);
            weights.insert(target, dense);
            continue;
        }
        let (shape, scale_shape) = (weight.shape().to_vec(), scale.shape().to_vec());
        let &[m, n] = shape.as_slice() else {
            return Err(layout(format!(
                "FP8 block scales are for matrices, and `{target}` is {shape:?}"
            )));
        };
        let blocks = |d: i32| (d + FP8_BLOCK - 1) / FP8_BLOCK;
        if scale_shape != [blocks(m), blocks(n)] {
            return Err(layout(format!(
                "scales {scale_shape:?} do not tile `{target}` {shape:?} in blocks of \
                 {FP8_BLOCK} x {FP8_BLOCK} (expected [{}, {}])",
                blocks(m),
                blocks(n)
            )));
        }
        if !matches!(
            scale.dtype(),
            Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16
        ) {
            return Err(layout(format!(
                "FP8 scales must be floating point, not {:?}",
                scale.dtype()
            )));
        }
        let values = match weight.dtype() {
            Dtype::Uint8 => crate::nn::quantized::from_fp8(weight, Dtype::Bfloat16)?,
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 => {
                weight.as_dtype(Dtype::Bfloat16)?
            }
            other => {
                return Err(layout(format!(
                    "`{target}` holds {other:?}, not FP8 values"
                )))
            }
        };
        let (pm, pn) = (blocks(m) * FP8_BLOCK, blocks(n) * FP8_BLOCK);
        let padded = mlx_rs::ops::pad(&values, &[(0, pm - m), (0, pn - n)], None, None)?;
        let tiled = padded.reshape(&[pm / FP8_BLOCK, FP8_BLOCK, pn / FP8_BLOCK, FP8_BLOCK])?;
        let scale = scale.reshape(&[pm / FP8_BLOCK, 1, pn / FP8_BLOCK, 1])?;
        let scaled = tiled.multiply(&scale)?.reshape(&[pm, pn])?;
        use mlx_rs::ops::indexing::IndexOp;
        let dense = scaled.index((..m, ..n)).as_dtype(Dtype::Bfloat16)?;
        weights.remove(&key);
        weights.insert(target, dense);
    }
    Ok(())
}

/// A weight with one scale for the whole tensor (a 0-d `weight_scale_inv`, Ministral 3's FP8
/// releases): `weight * scale`, as mlx-lm's ministral3 sanitize computes it for a floating-point
/// weight (the product in the promoted type); FP8 bytes are decoded to bfloat16 first (where
/// the reference would multiply the raw bytes).
fn per_tensor_fp8(weight: &Array, scale: &Array) -> Result<Array, String> {
    if !matches!(
        scale.dtype(),
        Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16
    ) {
        return Err(format!(
            "FP8 scales must be floating point, not {:?}",
            scale.dtype()
        ));
    }
    let values = match weight.dtype() {
        Dtype::Uint8 => {
            crate::nn::quantized::from_fp8(weight, Dtype::Bfloat16).map_err(|e| e.to_string())?
        }
        Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 => weight.clone(),
        other => return Err(format!("the weight holds {other:?}, not FP8 values")),
    };
    values.multiply(scale).map_err(|e| e.to_string())
}

/// compressed-tensors' packed int4 layout (`quant_method` `compressed-tensors`, `format`
/// `pack-quantized`: Kimi K2 Thinking) as MLX's affine 4-bit, as the reference's sanitize reads
/// it: every `<prefix>.weight_packed` (eight 4-bit values per int32) becomes
/// `<prefix>.weight` (the same words as uint32), `<prefix>.weight_scale` becomes
/// `<prefix>.scales`, the biases are `-8 * scales` (the values are stored offset by 8), and
/// `<prefix>.weight_shape` is checked against the packing and dropped. Idempotent: converted
/// weights have none of these names.
pub fn compressed_tensors_int4(weights: &mut Weights) -> Result<(), SanitizeError> {
    let mut prefixes: Vec<String> = weights
        .keys()
        .filter_map(|k| k.strip_suffix(".weight_packed").map(str::to_owned))
        .collect();
    prefixes.sort();
    for prefix in prefixes {
        let key = format!("{prefix}.weight_packed");
        let layout = |reason: String| SanitizeError::Layout {
            key: key.clone(),
            reason,
        };
        let Some(scale) = weights.remove(&format!("{prefix}.weight_scale")) else {
            return Err(layout(format!("no `{prefix}.weight_scale` beside it")));
        };
        let packed = weights
            .remove(&key)
            .ok_or_else(|| layout("vanished".into()))?;
        if !matches!(packed.dtype(), Dtype::Int32 | Dtype::Uint32) || packed.ndim() < 2 {
            return Err(layout(format!(
                "packed int4 weights are int32 [..., out, in / 8], not {:?} {:?}",
                packed.dtype(),
                packed.shape()
            )));
        }
        if let Some(shape) = weights.remove(&format!("{prefix}.weight_shape")) {
            let shape = shape.as_dtype(Dtype::Int64)?;
            mlx_rs::transforms::eval([&shape])?;
            let dims: Vec<i64> = shape.as_slice::<i64>().to_vec();
            let p = packed.shape();
            let want = [i64::from(p[p.len() - 2]), i64::from(p[p.len() - 1]) * 8];
            if dims.len() != 2 || dims != want {
                return Err(layout(format!(
                    "weight_shape {dims:?} does not match the packing {p:?} (8 values a word)"
                )));
            }
        }
        let biases = scale.multiply(Array::from_f32(-8.0).as_dtype(scale.dtype())?)?;
        let target = format!("{prefix}.weight");
        if weights.contains_key(&target) {
            return Err(SanitizeError::Collision {
                rule: "compressed-tensors int4".to_string(),
                from: key,
                to: target,
            });
        }
        weights.insert(target, packed.view_dtype(Dtype::Uint32)?);
        weights.insert(format!("{prefix}.scales"), scale);
        weights.insert(format!("{prefix}.biases"), biases);
    }
    Ok(())
}
