//! Many prompts generated together as one left-padded batch ([`batch_generate`]), as the
//! reference's `batch_generate`: each prompt's tokens are what it would get alone (greedy),
//! in one model call per step for the whole batch.
//!
//! The prompts are padded on the left to the longest one; every full-attention cache becomes a
//! [`Cache::batch`] that masks each row's padding and gives each row its own positions. A
//! row that has finished (its end-of-sequence token or its `max_tokens`) is carried along
//! until the whole batch is done, its further tokens discarded. Architectures whose caches
//! have no batched form here (sliding windows, recurrent state) are refused with an error.

use std::collections::HashSet;
use std::time::Instant;

use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::generate::{FinishReason, GenerateError, GenerationConfig};
use crate::model::LanguageModel;
use crate::sampling::{self, Sampler};

/// One prompt of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPrompt {
    /// Its tokens (at least one).
    pub tokens: Vec<u32>,
    /// Its own limit, else the config's `max_tokens`.
    pub max_tokens: Option<usize>,
}

/// What one prompt of a batch generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutput {
    /// The generated tokens (an end-of-sequence token included, as a stream yields it).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// Timing of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BatchStats {
    /// Prompt tokens of every row (without the padding).
    pub prompt_tokens: usize,
    /// Seconds until the first tokens of every row.
    pub prompt_seconds: f64,
    /// Tokens generated in all rows.
    pub generation_tokens: usize,
    /// Seconds after the first tokens.
    pub generation_seconds: f64,
}

impl BatchStats {
    /// Generated tokens per second, over all rows.
    pub fn generation_tps(&self) -> f64 {
        rate(self.generation_tokens, self.generation_seconds)
    }

    /// Prompt tokens per second, over all rows.
    pub fn prompt_tps(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_seconds)
    }
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::InvalidConfig(msg.into())
}

/// The model's caches in their batched form for rows left-padded by `padding`.
fn batch_caches(model: &dyn LanguageModel, padding: &[i32]) -> Result<Vec<Cache>, GenerateError> {
    model
        .make_cache()
        .into_iter()
        .map(|c| {
            c.batched(padding).ok_or_else(|| {
                invalid(format!(
                    "batch generation has no batched form of a {} layer (`{}`)",
                    c.class_name(),
                    model.model_type()
                ))
            })
        })
        .collect()
}

/// Generates every prompt of `prompts` in one left-padded batch with `config` (its sampler,
/// logits processors applied per row with that row's history, end-of-sequence tokens, prefill
/// chunk size and `max_tokens` for prompts without their own). Outputs are in the prompts'
/// order. Greedy outputs equal each prompt generated alone (up to the float rounding of the
/// padded batch).
pub fn batch_generate(
    model: &mut dyn LanguageModel,
    prompts: &[BatchPrompt],
    config: &GenerationConfig,
) -> Result<(Vec<BatchOutput>, BatchStats), GenerateError> {
    config.validate()?;
    if config.kv_quantization.is_some() {
        return Err(invalid("batch generation does not quantize its cache"));
    }
    if prompts.is_empty() {
        return Ok((Vec::new(), BatchStats::default()));
    }
    if let Some(i) = prompts.iter().position(|p| p.tokens.is_empty()) {
        return Err(invalid(format!("prompt {i} is empty")));
    }
    if let Some(i) = prompts.iter().position(|p| p.max_tokens == Some(0)) {
        return Err(invalid(format!(
            "prompt {i}: max_tokens must be at least 1"
        )));
    }
    let rows = prompts.len();
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(1);
    let i32_of = |n: usize| i32::try_from(n).map_err(|_| invalid("the batch is too large"));
    let padding: Vec<i32> = prompts
        .iter()
        .map(|p| i32_of(longest - p.tokens.len()))
        .collect::<Result<_, _>>()?;
    let mut cache = batch_caches(model, &padding)?;
    let limits: Vec<usize> = prompts
        .iter()
        .map(|p| p.max_tokens.unwrap_or(config.max_tokens))
        .collect();
    let eos: HashSet<u32> = config.eos_token_ids.iter().copied().collect();
    let mut sampler = Sampler::new(config.sampler.clone())?;
    let mut histories: Vec<Vec<u32>> = prompts.iter().map(|p| p.tokens.clone()).collect();

    // The padded prompts, row-major, padding with token 0 (masked).
    let mut grid = vec![0u32; rows * longest];
    for (r, p) in prompts.iter().enumerate() {
        grid[r * longest + (longest - p.tokens.len())..(r + 1) * longest]
            .copy_from_slice(&p.tokens);
    }
    let columns = |from: usize, to: usize| -> Result<Array, GenerateError> {
        let mut out = Vec::with_capacity(rows * (to - from));
        for r in 0..rows {
            out.extend_from_slice(&grid[r * longest + from..r * longest + to]);
        }
        Ok(Array::from_slice(
            &out,
            &[i32_of(rows)?, i32_of(to - from)?],
        ))
    };

    let started = Instant::now();
    let mut done = 0;
    while longest - done > 1 {
        let n = config.prefill_step_size.min(longest - done - 1);
        drop(model.forward(&columns(done, done + n)?, &mut cache)?);
        Cache::eval_all(&cache)?;
        done += n;
    }
    let input = columns(done, longest)?;

    let mut outputs: Vec<BatchOutput> = (0..rows)
        .map(|_| BatchOutput {
            tokens: Vec::new(),
            finish_reason: FinishReason::Length,
        })
        .collect();
    let mut finished = vec![false; rows];
    let mut first_at = None;
    // One decode step: the next token of every row, left on the device (lazy).
    let mut step = |input: &Array, histories: &[Vec<u32>]| -> Result<Array, GenerateError> {
        let logits = model.forward(input, &mut cache)?;
        let logits = logits.try_index((.., -1, ..))?;
        let logits = if config.logits.is_active() {
            let per_row = (0..rows)
                .map(|r| {
                    let row = logits.try_index((r as i32..r as i32 + 1, ..))?;
                    Ok(config.logits.apply(&histories[r], &row)?)
                })
                .collect::<Result<Vec<Array>, GenerateError>>()?;
            mlx_rs::ops::concatenate(&per_row, 0)?
        } else {
            logits
        };
        let logprobs = sampling::log_softmax(&logits)?;
        Ok(sampler.sample(&logprobs)?)
    };
    let mut pending = step(&input, &histories)?;
    mlx_rs::transforms::async_eval([&pending])?;
    while finished.iter().any(|f| !f) {
        // Queue the next step before reading this one back (as the single stream does), unless
        // every row still running ends at this token by its limit, or the logits processors
        // need this token's value first.
        let last = (0..rows).all(|r| finished[r] || outputs[r].tokens.len() + 1 >= limits[r]);
        let pipelined = !last && !config.logits.is_active();
        let next = if pipelined {
            let next = step(&pending.reshape(&[i32_of(rows)?, 1])?, &histories)?;
            mlx_rs::transforms::async_eval([&next])?;
            Some(next)
        } else {
            None
        };
        mlx_rs::transforms::eval([&pending])?;
        let ids: Vec<u32> = pending.as_slice::<u32>().to_vec();
        if first_at.is_none() {
            first_at = Some(Instant::now());
        }
        for (r, &id) in ids.iter().enumerate() {
            if finished[r] {
                continue;
            }
            outputs[r].tokens.push(id);
            histories[r].push(id);
            if eos.contains(&id) {
                outputs[r].finish_reason = FinishReason::Stop;
                finished[r] = true;
            } else if outputs[r].tokens.len() >= limits[r] {
                finished[r] = true;
            }
        }
        if finished.iter().all(|f| *f) {
            if let Some(next) = next {
                // Its values are not needed, only that MLX is done with it.
                let _ = mlx_rs::transforms::eval([&next]);
            }
            break;
        }
        pending = match next {
            Some(next) => next,
            None => {
                let next = step(&pending.reshape(&[i32_of(rows)?, 1])?, &histories)?;
                mlx_rs::transforms::async_eval([&next])?;
                next
            }
        };
    }
    let first = first_at.unwrap_or_else(Instant::now);
    let stats = BatchStats {
        prompt_tokens: prompts.iter().map(|p| p.tokens.len()).sum(),
        prompt_seconds: first.duration_since(started).as_secs_f64(),
        generation_tokens: outputs.iter().map(|o| o.tokens.len()).sum(),
        generation_seconds: first.elapsed().as_secs_f64(),
    };
    Ok((outputs, stats))
}
