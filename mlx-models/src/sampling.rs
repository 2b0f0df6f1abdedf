//! Sampling over MLX arrays, with the semantics of mlx-lm's `sample_utils` (the reference):
//! logits processors (logit bias, repetition / presence / frequency penalties over a context
//! window) and a sampler chain (top-p, min-p, XTC, top-k, in that order, then categorical
//! sampling at a temperature; temperature 0 is greedy argmax).
//!
//! Randomness comes from an explicit key: a seeded [`Sampler`] splits its key before every
//! random draw exactly as MLX's global generator does after `mx.random.seed(seed)`, so a seeded
//! run draws the same tokens as the reference seeded with the same number.
//!
//! Shapes: processors and filters take logits / log-probabilities of shape `[batch, vocab]`
//! (or `[vocab]` for the filters); the sampler returns one `uint32` token per row.

use std::collections::BTreeMap;

use mlx_rs::ops;
use mlx_rs::ops::indexing::{argmax_axis, Ellipsis, TryIndexOp};
use mlx_rs::{random, Array, Dtype};
use serde::{Deserialize, Serialize};

/// Why sampling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A parameter is out of its range.
    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
    /// A token id (logit bias, penalty context, XTC special token) is not in the vocabulary.
    #[error("token id {token} is out of the vocabulary (size {vocab})")]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        vocab: i32,
    },
    /// An MLX operation failed.
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
}

type Result<T> = std::result::Result<T, SamplingError>;

fn invalid(msg: String) -> SamplingError {
    SamplingError::InvalidParameter(msg)
}

/// How the next token is picked from log-probabilities (the reference's `make_sampler`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`;
    /// active when `0 < top_p < 1`.
    pub top_p: f32,
    /// Keep tokens whose probability is at least `min_p` times the top token's; active when
    /// not 0.
    pub min_p: f32,
    /// The least number of tokens min-p keeps.
    pub min_tokens_to_keep: usize,
    /// Keep the `top_k` most likely tokens; active when greater than 0.
    pub top_k: usize,
    /// Probability of applying XTC ("exclude top choices") at each step; active when > 0.
    pub xtc_probability: f32,
    /// XTC removes every token above this probability but the least likely of them.
    pub xtc_threshold: f32,
    /// Tokens XTC never removes (typically EOS and newline).
    pub xtc_special_tokens: Vec<u32>,
    /// Seed of the sampler's random key; without one, a key from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_p: 0.0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            top_k: 0,
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            xtc_special_tokens: Vec::new(),
            seed: None,
        }
    }
}

impl SamplerConfig {
    /// Checks every parameter's range (what the reference checks, plus a finite temperature).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(invalid(format!(
                "top_p must be in [0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid(format!(
                "min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if self.min_tokens_to_keep < 1 {
            return Err(invalid("min_tokens_to_keep must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.xtc_probability) {
            return Err(invalid(format!(
                "xtc_probability must be in [0, 1], got {}",
                self.xtc_probability
            )));
        }
        if self.xtc_probability > 0.0 && !(0.0..=0.5).contains(&self.xtc_threshold) {
            return Err(invalid(format!(
                "xtc_threshold must be in [0, 0.5], got {}",
                self.xtc_threshold
            )));
        }
        Ok(())
    }

    /// Whether this configuration is greedy (no randomness at all).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A random key that is split before each draw, like MLX's global generator.
#[derive(Debug)]
pub struct KeySequence {
    key: Array,
}

impl KeySequence {
    /// The sequence of `mx.random.seed(seed)`.
    pub fn new(seed: u64) -> Result<Self> {
        Ok(KeySequence {
            key: random::key(seed)?,
        })
    }

    /// The next key: the key is split in two, the first half kept for later, the second used.
    pub fn next_key(&mut self) -> Result<Array> {
        let (keep, use_now) = random::split(&self.key, 2)?;
        self.key = keep;
        Ok(use_now)
    }
}

fn seed_from_clock() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Picks tokens from log-probabilities.
#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    keys: KeySequence,
}

impl Sampler {
    /// A sampler for `config` (validated).
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        let keys = KeySequence::new(config.seed.unwrap_or_else(seed_from_clock))?;
        Ok(Sampler { config, keys })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Applies the filters of the chain (top-p, min-p, XTC, top-k; those that are active) to
    /// log-probabilities: filtered tokens get `-inf`. XTC draws from the key sequence.
    pub fn filter(&mut self, logprobs: &Array) -> Result<Array> {
        let c = &self.config;
        let mut x = logprobs.clone();
        if c.top_p > 0.0 && c.top_p < 1.0 {
            x = apply_top_p(&x, c.top_p)?;
        }
        if c.min_p != 0.0 {
            x = apply_min_p(&x, c.min_p, c.min_tokens_to_keep)?;
        }
        if c.xtc_probability > 0.0 {
            let key = self.keys.next_key()?;
            let draw = random::uniform::<f32, f32>(0.0, 1.0, &[] as &[i32], &key)?;
            x = apply_xtc(
                &x,
                &draw,
                c.xtc_probability,
                c.xtc_threshold,
                &c.xtc_special_tokens,
            )?;
        }
        if c.top_k > 0 {
            x = apply_top_k(&x, c.top_k)?;
        }
        Ok(x)
    }

    /// Samples one token per row of `logprobs` (`[batch, vocab]` or `[vocab]`): greedy at
    /// temperature 0, else the filter chain then categorical sampling of `logprobs / temp`.
    pub fn sample(&mut self, logprobs: &Array) -> Result<Array> {
        if self.config.is_greedy() {
            return greedy(logprobs);
        }
        let filtered = self.filter(logprobs)?;
        let key = self.keys.next_key()?;
        let scaled = ops::multiply(
            &filtered,
            scalar(1.0 / self.config.temperature, filtered.dtype())?,
        )?;
        Ok(random::categorical(&scaled, -1, None, &key)?.as_dtype(Dtype::Uint32)?)
    }
}

/// The most likely token of each row.
pub fn greedy(logprobs: &Array) -> Result<Array> {
    Ok(argmax_axis(logprobs, -1, None)?.as_dtype(Dtype::Uint32)?)
}

/// Log-probabilities of logits along the last axis (`logits - logsumexp(logits)`).
pub fn log_softmax(logits: &Array) -> Result<Array> {
    let lse = logits.logsumexp_axis(-1, true)?;
    Ok(ops::subtract(logits, &lse)?)
}

fn vocab_of(x: &Array) -> Result<i32> {
    match x.shape().last() {
        Some(&v) if v > 0 => Ok(v),
        _ => Err(invalid(format!(
            "expected [.., vocab] scores, got shape {:?}",
            x.shape()
        ))),
    }
}

/// A scalar in `dtype`: like a Python number in MLX, it does not promote the other operand.
fn scalar(x: f32, dtype: Dtype) -> Result<Array> {
    Ok(Array::from_f32(x).as_dtype(dtype)?)
}

fn neg_inf(dtype: Dtype) -> Result<Array> {
    scalar(f32::NEG_INFINITY, dtype)
}

/// Keeps the `top_k` most likely tokens (`0 < top_k < vocab`).
pub fn apply_top_k(logprobs: &Array, top_k: usize) -> Result<Array> {
    let vocab = vocab_of(logprobs)?;
    if top_k == 0 || top_k >= vocab as usize {
        return Err(invalid(format!(
            "top_k has to be an integer in the (0, {vocab}) interval, but is {top_k}"
        )));
    }
    let k = top_k as i32;
    let shape = logprobs.shape().to_vec();
    let flat = logprobs.reshape(&[-1, vocab])?;
    let order = ops::argpartition_axis(&ops::negative(&flat)?, k - 1, -1)?;
    let drop = order.try_index((.., k..))?;
    let masked = flat.put_along_axis(&drop, neg_inf(flat.dtype())?, -1)?;
    Ok(masked.reshape(&shape)?)
}

/// Keeps tokens whose probability is at least `min_p` times the top one's, and at least
/// `min_tokens_to_keep` tokens.
pub fn apply_min_p(logprobs: &Array, min_p: f32, min_tokens_to_keep: usize) -> Result<Array> {
    if !(0.0..=1.0).contains(&min_p) {
        return Err(invalid(format!("min_p must be in [0, 1], got {min_p}")));
    }
    if min_tokens_to_keep < 1 {
        return Err(invalid("min_tokens_to_keep must be at least 1".into()));
    }
    let vocab = vocab_of(logprobs)?;
    let top = logprobs.max_axis(-1, true)?;
    // `math.log(min_p)` in the reference is a Python double; it is added to the float32 max.
    let scaled_min_p = ops::add(&top, scalar((min_p as f64).ln() as f32, top.dtype())?)?;
    let mut remove = logprobs.lt(&scaled_min_p)?;
    if min_tokens_to_keep > 1 {
        let keep = (min_tokens_to_keep as i32).min(vocab);
        let shape = remove.shape().to_vec();
        let flat_lp = logprobs.reshape(&[-1, vocab])?;
        let flat_rm = remove.reshape(&[-1, vocab])?;
        let top_idx = ops::argpartition_axis(&flat_lp, -keep, -1)?;
        let top_idx = top_idx.try_index((.., (vocab - keep)..))?;
        remove = flat_rm
            .put_along_axis(&top_idx, Array::from_bool(false), -1)?
            .reshape(&shape)?;
    }
    Ok(ops::select(&remove, neg_inf(logprobs.dtype())?, logprobs)?)
}

/// Nucleus filtering: drops the least likely tokens whose total probability stays below
/// `1 - top_p` (computed in float32, as the reference does).
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    let sorted = ops::sort_axis(logprobs, -1)?;
    let sorted_probs = ops::exp(&sorted.as_dtype(Dtype::Float32)?)?;
    let mass_above = ops::cumsum(&sorted_probs, -1, true, false)?;
    let first_mass = mass_above.try_index((Ellipsis, ..1))?;
    let first_prob = sorted_probs.try_index((Ellipsis, ..1))?;
    let total = ops::add(&first_mass, &first_prob)?;
    let bar = ops::multiply(&total, Array::from_f32(top_p))?;
    let num_dropped = mass_above
        .ge(&bar)?
        .sum_axis(-1, true)?
        .as_dtype(Dtype::Int32)?;
    let threshold = sorted.take_along_axis(&num_dropped, -1)?;
    let below = logprobs.lt(&threshold)?;
    Ok(ops::select(&below, neg_inf(logprobs.dtype())?, logprobs)?)
}

/// XTC: with probability `xtc_probability` (decided by `draw`, a uniform number in [0, 1)),
/// removes every token whose probability exceeds `threshold` except the least likely of them;
/// `special_tokens` are never removed.
pub fn apply_xtc(
    logits: &Array,
    draw: &Array,
    xtc_probability: f32,
    threshold: f32,
    special_tokens: &[u32],
) -> Result<Array> {
    if !(0.0..=0.5).contains(&threshold) {
        return Err(invalid(format!(
            "xtc_threshold must be in [0, 0.5], got {threshold}"
        )));
    }
    if !(0.0..=1.0).contains(&xtc_probability) {
        return Err(invalid(format!(
            "xtc_probability must be in [0, 1], got {xtc_probability}"
        )));
    }
    let vocab = vocab_of(logits)?;
    let probs = ops::softmax_axis(logits, -1, None)?;
    let above = probs.gt(scalar(threshold, probs.dtype())?)?;
    let inf = scalar(f32::INFINITY, probs.dtype())?;
    let least_above = ops::select(&above, &probs, &inf)?.min_axis(-1, true)?;
    let mut mask = probs.gt(&least_above)?;
    if !special_tokens.is_empty() {
        for &t in special_tokens {
            if t as i64 >= vocab as i64 {
                return Err(SamplingError::TokenOutOfRange { token: t, vocab });
            }
        }
        let shape = mask.shape().to_vec();
        let flat = mask.reshape(&[-1, vocab])?;
        let rows = flat.dim(0);
        let idx: Vec<u32> = special_tokens.to_vec();
        let idx = Array::from_slice(&idx, &[1, idx.len() as i32]);
        let idx = ops::broadcast_to(&idx, &[rows, special_tokens.len() as i32])?;
        mask = flat
            .put_along_axis(&idx, Array::from_bool(false), -1)?
            .reshape(&shape)?;
    }
    let removed = ops::select(&mask, neg_inf(logits.dtype())?, logits)?;
    let skip = draw.gt(Array::from_f32(xtc_probability))?;
    Ok(ops::select(&skip, logits, &removed)?)
}

/// Adjusts the logits before sampling (the reference's `make_logits_processors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogitsConfig {
    /// Added to the logits of the given tokens.
    pub logit_bias: BTreeMap<u32, f32>,
    /// Sign-aware multiplicative penalty of the tokens of the recent context (>= 0; 0 or
    /// `None` is off).
    pub repetition_penalty: Option<f32>,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_context_size: usize,
    /// Subtracted once from the logit of every token present in the recent context.
    pub presence_penalty: Option<f32>,
    /// How many recent tokens the presence penalty looks at.
    pub presence_context_size: usize,
    /// Subtracted from a token's logit once per occurrence in the recent context.
    pub frequency_penalty: Option<f32>,
    /// How many recent tokens the frequency penalty looks at.
    pub frequency_context_size: usize,
}

impl Default for LogitsConfig {
    fn default() -> Self {
        LogitsConfig {
            logit_bias: BTreeMap::new(),
            repetition_penalty: None,
            repetition_context_size: 20,
            presence_penalty: None,
            presence_context_size: 20,
            frequency_penalty: None,
            frequency_context_size: 20,
        }
    }
}

impl LogitsConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = self.repetition_penalty {
            if !(p.is_finite() && p >= 0.0) {
                return Err(invalid(format!(
                    "repetition_penalty must be a non-negative number, got {p}"
                )));
            }
        }
        for (name, p) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(p) = p {
                if !p.is_finite() {
                    return Err(invalid(format!("{name} must be finite, got {p}")));
                }
            }
        }
        if let Some((t, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(invalid(format!(
                "logit bias of token {t} must be finite, got {b}"
            )));
        }
        Ok(())
    }

    /// Whether any processor is active.
    pub fn is_active(&self) -> bool {
        !self.logit_bias.is_empty()
            || self.repetition_penalty.is_some_and(|p| p != 0.0)
            || self.presence_penalty.is_some_and(|p| p != 0.0)
            || self.frequency_penalty.is_some_and(|p| p != 0.0)
    }

    /// Applies the active processors in the reference's order (logit bias, repetition,
    /// presence, frequency) to `logits` (`[batch, vocab]`), given the tokens so far (prompt and
    /// generated; the penalties look at the last `*_context_size` of them).
    pub fn apply(&self, tokens: &[u32], logits: &Array) -> Result<Array> {
        let mut x = logits.clone();
        if !self.logit_bias.is_empty() {
            x = apply_logit_bias(&x, &self.logit_bias)?;
        }
        if let Some(p) = self.repetition_penalty.filter(|&p| p != 0.0) {
            x = apply_repetition_penalty(&x, window(tokens, self.repetition_context_size), p)?;
        }
        if let Some(p) = self.presence_penalty.filter(|&p| p != 0.0) {
            x = apply_presence_penalty(&x, window(tokens, self.presence_context_size), p)?;
        }
        if let Some(p) = self.frequency_penalty.filter(|&p| p != 0.0) {
            x = apply_frequency_penalty(&x, window(tokens, self.frequency_context_size), p)?;
        }
        Ok(x)
    }
}

/// The last `size` tokens (Python's `tokens[-size:]`, where a size of 0 means all of them).
fn window(tokens: &[u32], size: usize) -> &[u32] {
    if size == 0 || size >= tokens.len() {
        tokens
    } else {
        &tokens[tokens.len() - size..]
    }
}

/// `[rows, n]` indices of `tokens`, checked against the vocabulary.
fn token_index(x: &Array, tokens: &[u32]) -> Result<Array> {
    let vocab = vocab_of(x)?;
    if let Some(&t) = tokens.iter().find(|&&t| t as i64 >= vocab as i64) {
        return Err(SamplingError::TokenOutOfRange { token: t, vocab });
    }
    let rows = x.shape()[..x.ndim() - 1].iter().product::<i32>().max(1);
    let idx = Array::from_slice(tokens, &[1, tokens.len() as i32]);
    Ok(ops::broadcast_to(&idx, &[rows, tokens.len() as i32])?)
}

/// Replaces the logits of `tokens` (each row) with `f` of them.
fn update_at(x: &Array, tokens: &[u32], f: impl FnOnce(&Array) -> Result<Array>) -> Result<Array> {
    let vocab = vocab_of(x)?;
    let shape = x.shape().to_vec();
    let flat = x.reshape(&[-1, vocab])?;
    let idx = token_index(&flat, tokens)?;
    let selected = flat.take_along_axis(&idx, -1)?;
    let updated = f(&selected)?;
    Ok(flat.put_along_axis(&idx, &updated, -1)?.reshape(&shape)?)
}

/// Adds `bias[token]` to each token's logit.
pub fn apply_logit_bias(logits: &Array, bias: &BTreeMap<u32, f32>) -> Result<Array> {
    let tokens: Vec<u32> = bias.keys().copied().collect();
    let values: Vec<f32> = bias.values().copied().collect();
    let n = values.len() as i32;
    update_at(logits, &tokens, |sel| {
        let v = Array::from_slice(&values, &[1, n]).as_dtype(sel.dtype())?;
        Ok(ops::add(sel, &v)?)
    })
}

/// Multiplies negative logits of the context's tokens by `penalty` and divides the others.
pub fn apply_repetition_penalty(logits: &Array, context: &[u32], penalty: f32) -> Result<Array> {
    if !(penalty.is_finite() && penalty >= 0.0) {
        return Err(invalid(format!(
            "repetition_penalty must be a non-negative number, got {penalty}"
        )));
    }
    if context.is_empty() {
        return Ok(logits.clone());
    }
    update_at(logits, context, |sel| {
        let p = scalar(penalty, sel.dtype())?;
        let neg = sel.lt(scalar(0.0, sel.dtype())?)?;
        Ok(ops::select(
            &neg,
            &ops::multiply(sel, &p)?,
            &ops::divide(sel, &p)?,
        )?)
    })
}

/// Subtracts `penalty` once from the logit of every token present in the context.
pub fn apply_presence_penalty(logits: &Array, context: &[u32], penalty: f32) -> Result<Array> {
    if context.is_empty() {
        return Ok(logits.clone());
    }
    update_at(logits, context, |sel| {
        Ok(ops::subtract(sel, scalar(penalty, sel.dtype())?)?)
    })
}

/// Subtracts `penalty` from a token's logit once per occurrence in the context.
pub fn apply_frequency_penalty(logits: &Array, context: &[u32], penalty: f32) -> Result<Array> {
    if context.is_empty() {
        return Ok(logits.clone());
    }
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for &t in context {
        *counts.entry(t).or_default() += 1;
    }
    let tokens: Vec<u32> = counts.keys().copied().collect();
    let amounts: Vec<f32> = counts.values().map(|&c| c as f32 * penalty).collect();
    let n = amounts.len() as i32;
    update_at(logits, &tokens, |sel| {
        let a = Array::from_slice(&amounts, &[1, n]).as_dtype(sel.dtype())?;
        Ok(ops::subtract(sel, &a)?)
    })
}

/// The log-probability of the chosen `token` in each row of `logprobs` (`[batch, vocab]` and
/// `[batch]` tokens, or `[vocab]` and a scalar).
pub fn chosen_logprobs(logprobs: &Array, tokens: &Array) -> Result<Array> {
    let idx = tokens.as_dtype(Dtype::Int32)?.expand_dims(-1)?;
    let picked = logprobs.take_along_axis(&idx, -1)?;
    Ok(picked.squeeze_axes(&[-1])?)
}
