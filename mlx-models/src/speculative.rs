//! Speculative decoding ([`speculative_generate`]), as the reference's
//! `speculative_generate_step`: a small draft model proposes `num_draft` tokens, the target
//! model scores them all in one call, and the longest prefix on which the target's own choice
//! agrees is accepted, plus the target's token after it. With greedy sampling the output is
//! the target's own greedy output, whatever the draft proposes; only the speed changes.
//!
//! Both models' caches are rewound after each round to the accepted tokens. Caches that grow
//! position by position are trimmed; where a model keeps recurrent state or a rotating window
//! (which cannot be trimmed, so the reference refuses them), the round starts from a
//! [`Snapshot`] and a rejection restores it and feeds the kept tokens again: one more forward
//! over at most `num_draft + 1` tokens, and the same output as a model that trims.

use std::collections::HashSet;
use std::time::Instant;

use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Snapshot};
use crate::generate::{FinishReason, GenerateError, GenerationConfig};
use crate::model::LanguageModel;
use crate::sampling::{self, Sampler};

/// One token of a speculative generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeculativeToken {
    /// The token id.
    pub token: u32,
    /// Its log-probability under the target model.
    pub logprob: f32,
    /// True when the draft proposed it and the target accepted it.
    pub from_draft: bool,
    /// Set on the last token.
    pub finish_reason: Option<FinishReason>,
}

/// Counts and timing of a speculative generation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SpeculativeStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seconds until the first token.
    pub prompt_seconds: f64,
    /// Tokens generated.
    pub generation_tokens: usize,
    /// Seconds after the first token.
    pub generation_seconds: f64,
    /// Tokens the draft proposed.
    pub drafted: usize,
    /// Proposed tokens the target accepted (each is also one of the generated tokens).
    pub accepted: usize,
}

impl SpeculativeStats {
    /// Accepted over proposed (0 when nothing was proposed).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Generated tokens per second.
    pub fn generation_tps(&self) -> f64 {
        if self.generation_seconds > 0.0 {
            self.generation_tokens as f64 / self.generation_seconds
        } else {
            0.0
        }
    }

    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        if self.prompt_seconds > 0.0 {
            self.prompt_tokens as f64 / self.prompt_seconds
        } else {
            0.0
        }
    }
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::InvalidConfig(msg.into())
}

/// Rewinds `cache`, to which `fed` tokens were fed since `snapshot`, so that it holds only the
/// first `keep` of them: trimmed when every layer can be, else restored and fed the kept
/// tokens again.
fn rewind(
    which: &str,
    model: &mut dyn LanguageModel,
    cache: &mut [Cache],
    snapshot: &Snapshot,
    fed: &[u32],
    keep: usize,
) -> Result<(), GenerateError> {
    let n = fed.len().saturating_sub(keep);
    if n == 0 {
        return Ok(());
    }
    if snapshot.is_offsets_only() {
        for c in cache.iter_mut() {
            if c.trim(n as i32) != n as i32 {
                return Err(invalid(format!(
                    "speculative decoding could not rewind the {which} model's {} by {n} positions",
                    c.class_name()
                )));
            }
        }
        return Ok(());
    }
    snapshot
        .restore(cache)
        .map_err(|e| invalid(format!("speculative decoding: the {which} model: {e}")))?;
    if keep > 0 {
        let x = Array::from_slice(&fed[..keep], &[1, keep as i32]);
        drop(model.forward(&x, cache)?);
    }
    Ok(())
}

/// Feeds all but the last token of `tokens` in chunks; returns the last one.
fn prefill(
    model: &mut dyn LanguageModel,
    cache: &mut [Cache],
    tokens: &[u32],
    step: usize,
) -> Result<u32, GenerateError> {
    let (body, last) = tokens.split_at(tokens.len() - 1);
    for chunk in body.chunks(step) {
        let x = Array::from_slice(chunk, &[1, chunk.len() as i32]);
        drop(model.forward(&x, cache)?);
        Cache::eval_all(cache)?;
    }
    Ok(last[0])
}

/// The logits of the last `n` positions after feeding `x` (`[1, L]` tokens), as
/// log-probabilities `[n, V]`.
fn score(
    model: &mut dyn LanguageModel,
    cache: &mut [Cache],
    x: &Array,
    n: usize,
) -> Result<Array, GenerateError> {
    let logits = model.forward(x, cache)?;
    let len = logits.dim(1);
    let logits = logits.try_index((0, len - n as i32.., ..))?;
    Ok(sampling::log_softmax(&logits)?)
}

/// Generates from `prompt` with `target`, drafting `num_draft` tokens a round with `draft`.
/// Each token goes to `on_token` as it is decided (return `false` to stop early). The caches
/// are the models' own (fresh or holding a conversation), of any kind. Logits
/// processors (penalties, logit bias) are refused: the draft would need the target's history.
#[allow(clippy::too_many_arguments)]
pub fn speculative_generate(
    target: &mut dyn LanguageModel,
    target_cache: &mut [Cache],
    draft: &mut dyn LanguageModel,
    draft_cache: &mut [Cache],
    prompt: &[u32],
    config: &GenerationConfig,
    num_draft: usize,
    mut on_token: impl FnMut(&SpeculativeToken) -> bool,
) -> Result<SpeculativeStats, GenerateError> {
    config.validate()?;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if num_draft == 0 {
        return Err(invalid("the number of draft tokens must be at least 1"));
    }
    if config.logits.is_active() {
        return Err(invalid(
            "speculative decoding does not apply logits processors (penalties, logit bias)",
        ));
    }
    let eos: HashSet<u32> = config.eos_token_ids.iter().copied().collect();
    let mut sampler = Sampler::new(config.sampler.clone())?;
    let kv = config.kv_quantization;
    let quantize = |cache: &mut [Cache]| -> Result<(), GenerateError> {
        if let Some(q) = &kv {
            Cache::maybe_quantize(cache, q)?;
        }
        Ok(())
    };

    let started = Instant::now();
    let step = config.prefill_step_size;
    let last = prefill(draft, draft_cache, prompt, step)?;
    prefill(target, target_cache, prompt, step)?;
    let mut stats = SpeculativeStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let mut first_at = None;
    let mut y = vec![last];
    let mut draft_y = vec![last];
    let max = config.max_tokens;
    'rounds: loop {
        let k = num_draft.min(max - stats.generation_tokens);
        let target_start = Snapshot::take(target_cache);
        let draft_start = Snapshot::take(draft_cache);
        // The draft's tokens stay on the device: each feeds the next draft step and then the
        // target's check without a round trip to the host (they are read back once, below).
        let mut drafted_arrays: Vec<Array> = Vec::with_capacity(k);
        let mut input = Array::from_slice(&draft_y, &[1, draft_y.len() as i32]);
        for _ in 0..k {
            let logprobs = score(draft, draft_cache, &input, 1)?;
            quantize(draft_cache)?;
            let token = sampler.sample(&logprobs)?;
            mlx_rs::transforms::async_eval([&token])?;
            input = token.reshape(&[1, 1])?;
            drafted_arrays.push(token);
        }
        let drafted_all = mlx_rs::ops::concatenate(&drafted_arrays, 0)?;
        let verify = mlx_rs::ops::concatenate(
            &[
                Array::from_slice(&y, &[1, y.len() as i32]),
                drafted_all.reshape(&[1, k as i32])?,
            ],
            1,
        )?;
        let logprobs = score(target, target_cache, &verify, k + 1)?;
        quantize(target_cache)?;
        let tokens = sampler.sample(&logprobs)?;
        let chosen = sampling::chosen_logprobs(&logprobs, &tokens)?.as_dtype(Dtype::Float32)?;
        mlx_rs::transforms::eval([&tokens, &chosen, &drafted_all])?;
        let drafted: Vec<u32> = drafted_all.as_slice::<u32>().to_vec();
        let tokens: Vec<u32> = tokens.as_slice::<u32>().to_vec();
        let chosen: Vec<f32> = chosen.as_slice::<f32>().to_vec();
        stats.drafted += k;

        // Accept the draft's tokens while the target chose the same, then take the target's
        // own token; stop early at an end token, the limit, or when the caller says so.
        let mut accepted = 0;
        let mut finish = None;
        let mut ended_on_draft = false;
        for n in 0..=k {
            let from_draft = n < k && tokens[n] == drafted[n];
            let id = tokens[n];
            stats.generation_tokens += 1;
            if from_draft {
                stats.accepted += 1;
                accepted += 1;
            }
            if first_at.is_none() {
                first_at = Some(Instant::now());
            }
            finish = if eos.contains(&id) {
                Some(FinishReason::Stop)
            } else if stats.generation_tokens >= max {
                Some(FinishReason::Length)
            } else {
                None
            };
            let event = SpeculativeToken {
                token: id,
                logprob: chosen[n],
                from_draft,
                finish_reason: finish,
            };
            if !on_token(&event) && finish.is_none() {
                finish = Some(FinishReason::Stop);
            }
            if finish.is_some() || !from_draft {
                ended_on_draft = from_draft;
                break;
            }
        }
        // Rewind both caches to the accepted tokens, without the last emitted one (it is the
        // next input): the target fed y and every draft token, the draft all but the last.
        let target_fed: Vec<u32> = y.iter().chain(&drafted).copied().collect();
        let draft_fed: Vec<u32> = draft_y.iter().chain(&drafted[..k - 1]).copied().collect();
        let (target_keep, draft_keep) = if ended_on_draft {
            (
                target_fed.len() - (k - accepted + 1),
                draft_fed.len() - (k - accepted),
            )
        } else {
            let drop = k.saturating_sub(accepted + 1);
            (target_fed.len() - (k - accepted), draft_fed.len() - drop)
        };
        rewind(
            "target",
            target,
            target_cache,
            &target_start,
            &target_fed,
            target_keep,
        )?;
        rewind(
            "draft",
            draft,
            draft_cache,
            &draft_start,
            &draft_fed,
            draft_keep,
        )?;
        quantize(target_cache)?;
        quantize(draft_cache)?;
        if finish.is_some() {
            break 'rounds;
        }
        let next = tokens[accepted];
        y = vec![next];
        draft_y = if accepted == k && k > 0 {
            vec![drafted[k - 1], next]
        } else {
            vec![next]
        };
    }
    let first = first_at.unwrap_or_else(Instant::now);
    stats.prompt_seconds = first.duration_since(started).as_secs_f64();
    stats.generation_seconds = first.elapsed().as_secs_f64();
    Ok(stats)
}
