//! Token generation that does not depend on any model type: a stream of tokens driven by a
//! closure that maps input tokens to logits, with the reference's (mlx-lm `generate_step` and
//! `stream_generate`) behaviour:
//!
//! - the prompt is prefilled in chunks of `prefill_step_size` tokens, all but the last token,
//!   whose logits give the first generated token;
//! - the logits processors see every token so far (prompt and generated), the sampler gets
//!   `logits - logsumexp(logits)`;
//! - the stream ends after `max_tokens` tokens (finish reason [`FinishReason::Length`]) or on a
//!   token in `eos_token_ids` (yielded last, with [`FinishReason::Stop`]);
//! - the next step is queued before the current token is read back (when no logits processor
//!   needs the token's value on the host), as the reference does with `async_eval`; as there,
//!   the model also sees the EOS token (one step past it) unless `max_tokens` is reached;
//! - no work the stream queued outlives its end: when it ends (at the end token, at the limit,
//!   or on an error) it waits for the step it had queued ahead before yielding the last item.
//!   A stream dropped midway waits for it too. A process that exits while MLX's stream thread
//!   is inside a BLAS call can hang in OpenBLAS's exit-time thread shutdown (mlx-sys's exit
//!   drain guards every binary against that as well).
//!
//! The closure receives a `[1, n]` `uint32` array of tokens and returns logits `[1, n, vocab]`
//! (only the last position is used) or `[1, vocab]`; it keeps its own cache between calls.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::sampling::{self, LogitsConfig, Sampler, SamplerConfig, SamplingError};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The prompt has no token.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A setting is out of range.
    #[error("invalid generation setting: {0}")]
    InvalidConfig(String),
    /// The model returned logits of an unexpected shape.
    #[error("the model returned logits of shape {0:?}; expected [1, n, vocab] or [1, vocab]")]
    LogitsShape(Vec<i32>),
    /// Sampling failed.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The model (the closure) failed.
    #[error("model: {}", model_message(.0.as_ref()))]
    Model(Box<dyn std::error::Error + Send + Sync>),
    /// An MLX operation failed.
    #[error("MLX: {}", .0.what())]
    Mlx(#[from] mlx_rs::error::Exception),
    /// Reading a value back from MLX failed.
    #[error("MLX: {0}")]
    Conversion(#[from] mlx_rs::error::ConversionError),
}

type Result<T> = std::result::Result<T, GenerateError>;

/// What a model error says: MLX's message alone for an MLX exception (without the source
/// location its `Display` appends), else the error's own text.
fn model_message(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match e.downcast_ref::<mlx_rs::error::Exception>() {
        Some(x) => x.what().to_string(),
        None => e.to_string(),
    }
}

/// The default number of prompt tokens processed per model call.
pub const DEFAULT_PREFILL_STEP_SIZE: usize = 2048;

/// Settings of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// The most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// How tokens are picked.
    pub sampler: SamplerConfig,
    /// How logits are adjusted first.
    pub logits: LogitsConfig,
    /// Generation stops after any of these tokens.
    pub eos_token_ids: Vec<u32>,
    /// Prompt tokens per model call during prefill (at least 1).
    pub prefill_step_size: usize,
    /// Quantize the key/value caches from some length on ([`model_stream`] applies it after
    /// every model call, as the reference's `generate_step`); `None`: never.
    pub kv_quantization: Option<crate::cache::KvQuantization>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            logits: LogitsConfig::default(),
            eos_token_ids: Vec::new(),
            prefill_step_size: DEFAULT_PREFILL_STEP_SIZE,
            kv_quantization: None,
        }
    }
}

impl GenerationConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(GenerateError::InvalidConfig(
                "max_tokens must be at least 1".into(),
            ));
        }
        if self.prefill_step_size == 0 {
            return Err(GenerateError::InvalidConfig(
                "prefill_step_size must be at least 1".into(),
            ));
        }
        if let Some(q) = &self.kv_quantization {
            q.validate().map_err(GenerateError::InvalidConfig)?;
        }
        self.sampler.validate()?;
        self.logits.validate()?;
        Ok(())
    }
}

/// Why the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS token was generated.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
}

/// Timing and memory of a generation so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct GenerationStats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Seconds from the start to the first generated token (prefill).
    pub prompt_seconds: f64,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Tokens generated so far (an EOS token counts).
    pub generation_tokens: usize,
    /// Seconds since the first generated token.
    pub generation_seconds: f64,
    /// Generated tokens per second (counted from the first generated token, as the reference).
    pub generation_tps: f64,
    /// MLX's peak memory in bytes.
    pub peak_memory_bytes: usize,
}

impl GenerationStats {
    /// The peak memory in GB (10^9 bytes, as the reference prints it).
    pub fn peak_memory_gb(&self) -> f64 {
        self.peak_memory_bytes as f64 / 1e9
    }
}

/// The three lines mlx-lm's `generate` prints (`Prompt: N tokens, X tokens-per-sec`,
/// `Generation: ...`, `Peak memory: X GB`), without a final newline.
impl std::fmt::Display for GenerationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Prompt: {} tokens, {:.3} tokens-per-sec",
            self.prompt_tokens, self.prompt_tps
        )?;
        writeln!(
            f,
            "Generation: {} tokens, {:.3} tokens-per-sec",
            self.generation_tokens, self.generation_tps
        )?;
        write!(f, "Peak memory: {:.3} GB", self.peak_memory_gb())
    }
}

/// One generated token.
#[derive(Debug, Clone)]
pub struct GeneratedToken {
    /// The token id.
    pub token: u32,
    /// Its log-probability (after the logits processors, before the sampler's filters).
    pub logprob: f32,
    /// The log-probabilities of the whole vocabulary at this step (`[vocab]`).
    pub logprobs: Array,
    /// Set on the last token of the stream.
    pub finish_reason: Option<FinishReason>,
    /// Statistics so far.
    pub stats: GenerationStats,
}

/// Called after each prefill chunk with the chunk's tokens, the prompt tokens processed so far
/// and the prompt's length. It is the place to evaluate the model's cache (as the reference
/// evaluates every cache's state after each chunk) and to report progress: with a hook, the
/// chunk's logits are not evaluated; without one, they are (which also fills the cache, at the
/// cost of computing `[1, chunk, vocab]` logits).
pub type PrefillHook<'a> = Box<dyn FnMut(&[u32], usize, usize) -> Result<()> + 'a>;

/// The peak memory MLX has used, in bytes.
pub fn peak_memory() -> Result<usize> {
    Ok(mlx_rs::memory::peak_memory()?)
}

/// A stream of generated tokens; see the module documentation.
pub struct TokenStream<'a, F> {
    forward: F,
    config: GenerationConfig,
    eos: HashSet<u32>,
    sampler: Sampler,
    prefill_hook: Option<PrefillHook<'a>>,
    prefill_progress: Option<Box<dyn FnMut(usize, usize) + 'a>>,
    prompt: Vec<u32>,
    history: Vec<u32>,
    started: Option<Instant>,
    first_token_at: Option<Instant>,
    prompt_seconds: f64,
    /// The step queued for the next token: (token, logprobs, chosen logprob).
    pending: Option<(Array, Array, Array)>,
    generated: usize,
    done: bool,
}

impl<'a, F, E> TokenStream<'a, F>
where
    F: FnMut(&Array) -> std::result::Result<Array, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    /// A stream over `prompt` (at least one token) with `forward` as the model.
    pub fn new(prompt: &[u32], config: GenerationConfig, forward: F) -> Result<Self> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        config.validate()?;
        let sampler = Sampler::new(config.sampler.clone())?;
        let eos = config.eos_token_ids.iter().copied().collect();
        Ok(TokenStream {
            forward,
            eos,
            sampler,
            config,
            prefill_hook: None,
            prefill_progress: None,
            prompt: prompt.to_vec(),
            history: Vec::new(),
            started: None,
            first_token_at: None,
            prompt_seconds: 0.0,
            pending: None,
            generated: 0,
            done: false,
        })
    }

    /// Sets the hook called after each prefill chunk.
    pub fn with_prefill_hook(
        mut self,
        hook: impl FnMut(&[u32], usize, usize) -> Result<()> + 'a,
    ) -> Self {
        self.prefill_hook = Some(Box::new(hook));
        self
    }

    /// Sets a function called after each prefill chunk with the prompt tokens processed so far
    /// and the prompt's length (all but the last token are prefilled in chunks; the last one
    /// gives the first generated token), after the prefill hook: the place for a progress bar.
    pub fn with_prefill_progress(mut self, progress: impl FnMut(usize, usize) + 'a) -> Self {
        self.prefill_progress = Some(Box::new(progress));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &GenerationConfig {
        &self.config
    }

    fn call(&mut self, tokens: &Array) -> Result<Array> {
        (self.forward)(tokens).map_err(|e| GenerateError::Model(Box::new(e)))
    }

    /// Runs the model on `input` and queues sampling of the next token.
    fn step(&mut self, input: &Array) -> Result<(Array, Array, Array)> {
        let logits = self.call(input)?;
        let logits = match logits.ndim() {
            3 if logits.dim(0) == 1 => logits.try_index((.., -1, ..))?,
            2 if logits.dim(0) == 1 => logits,
            _ => return Err(GenerateError::LogitsShape(logits.shape().to_vec())),
        };
        let logits = if self.config.logits.is_active() {
            self.config.logits.apply(&self.history, &logits)?
        } else {
            logits
        };
        let logprobs = sampling::log_softmax(&logits)?;
        let token = self.sampler.sample(&logprobs)?;
        let chosen = sampling::chosen_logprobs(&logprobs, &token)?;
        let logprobs = logprobs.squeeze_axes(&[0])?;
        Ok((token, logprobs, chosen))
    }

    fn prefill(&mut self) -> Result<Array> {
        let total = self.prompt.len();
        let mut done = 0;
        while total - done > 1 {
            let n = self.config.prefill_step_size.min(total - done - 1);
            let chunk = self.prompt[done..done + n].to_vec();
            let out = self.call(&Array::from_slice(&chunk, &[1, n as i32]))?;
            done += n;
            self.history.extend_from_slice(&chunk);
            match self.prefill_hook.as_mut() {
                // The hook evaluates the model's cache; the chunk's logits (`[1, n, vocab]`, large)
                // are never computed, as in the reference.
                Some(hook) => hook(&chunk, done, total)?,
                None => out.eval()?,
            }
            drop(out);
            mlx_rs::memory::clear_cache()?;
            if let Some(progress) = self.prefill_progress.as_mut() {
                progress(done, total);
            }
        }
        let rest = self.prompt[done..].to_vec();
        self.history.extend_from_slice(&rest);
        Ok(Array::from_slice(&rest, &[1, rest.len() as i32]))
    }

    fn stats(&self, now: Instant) -> Result<GenerationStats> {
        let generation_seconds = self
            .first_token_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        let tps = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        Ok(GenerationStats {
            prompt_tokens: self.prompt.len(),
            prompt_seconds: self.prompt_seconds,
            prompt_tps: tps(self.prompt.len(), self.prompt_seconds),
            generation_tokens: self.generated,
            generation_seconds,
            generation_tps: tps(self.generated, generation_seconds),
            peak_memory_bytes: peak_memory()?,
        })
    }

    fn next_token(&mut self) -> Result<Option<GeneratedToken>> {
        if self.done {
            return Ok(None);
        }
        let (token, logprobs, chosen) = match self.pending.take() {
            Some(p) => p,
            None => {
                self.started = Some(Instant::now());
                let input = self.prefill()?;
                self.step(&input)?
            }
        };
        // Queue the next step before reading this token back, unless a processor needs the
        // token's value or this is the last token anyway.
        let last_allowed = self.generated + 1 >= self.config.max_tokens;
        let pipelined = !self.config.logits.is_active() && !last_allowed;
        if pipelined {
            let next = self.step(&token.reshape(&[1, 1])?)?;
            mlx_rs::transforms::async_eval([&next.0, &next.1, &next.2])?;
            self.pending = Some(next);
        }
        mlx_rs::transforms::eval([&token, &chosen])?;
        let id: u32 = token.try_item_exact::<u32>()?;
        let logprob: f32 = chosen.as_dtype(Dtype::Float32)?.try_item_exact::<f32>()?;
        let now = Instant::now();
        if self.first_token_at.is_none() {
            self.first_token_at = Some(now);
            self.prompt_seconds = self
                .started
                .map(|s| now.duration_since(s).as_secs_f64())
                .unwrap_or(0.0);
        }
        self.generated += 1;
        self.history.push(id);
        let finish_reason = if self.eos.contains(&id) {
            Some(FinishReason::Stop)
        } else if self.generated >= self.config.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        if finish_reason.is_some() {
            self.done = true;
            self.settle();
        } else if !pipelined {
            // The logits processors need this token's value: the next step starts now.
            let next = self.step(&token.reshape(&[1, 1])?)?;
            mlx_rs::transforms::async_eval([&next.0, &next.1, &next.2])?;
            self.pending = Some(next);
        }
        Ok(Some(GeneratedToken {
            token: id,
            logprob,
            logprobs,
            finish_reason,
            stats: self.stats(now)?,
        }))
    }

    /// Runs the stream to its end and returns every token.
    pub fn collect_all(self) -> Result<Vec<GeneratedToken>> {
        self.collect()
    }

    /// The time since the stream started (zero before the first token is asked for).
    pub fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }
}

impl<F> TokenStream<'_, F> {
    /// Waits for the step queued ahead (if any), so that no work of this stream is in flight.
    fn settle(&mut self) {
        if let Some((token, logprobs, chosen)) = self.pending.take() {
            // Its values are not needed: only that MLX is done computing them. An error here
            // belongs to a step nobody reads, so it is dropped with it.
            let _ = mlx_rs::transforms::eval([&token, &logprobs, &chosen]);
        }
    }
}

impl<F> Drop for TokenStream<'_, F> {
    fn drop(&mut self) {
        self.settle();
    }
}

impl<F, E> Iterator for TokenStream<'_, F>
where
    F: FnMut(&Array) -> std::result::Result<Array, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = Result<GeneratedToken>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_token() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                self.settle();
                Some(Err(e))
            }
        }
    }
}

/// A token stream over a model and its caches, which keep the conversation after the stream
/// ends. Each prefill chunk evaluates only the caches, so the chunk's logits (`[1, n, vocab]`)
/// are never computed, as in the reference's `generate_step`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mlx_models::cache::Cache;
/// use mlx_models::generate::{model_stream, GenerationConfig};
///
/// let mut loaded = mlx_models::load::load("path/to/checkpoint")?;
/// let mut cache = loaded.model.make_cache();
/// let config = GenerationConfig { max_tokens: 32, ..Default::default() };
/// for step in model_stream(loaded.model.as_mut(), &mut cache, &[1, 2, 3], config)? {
///     print!("{} ", step?.token);
/// }
/// # Ok(())
/// # }
/// ```
pub fn model_stream<'a>(
    model: &'a mut dyn crate::model::LanguageModel,
    cache: &'a mut Vec<crate::cache::Cache>,
    prompt: &[u32],
    config: GenerationConfig,
) -> Result<
    TokenStream<
        'a,
        impl FnMut(&Array) -> std::result::Result<Array, mlx_rs::error::Exception> + 'a,
    >,
> {
    let cache = std::rc::Rc::new(std::cell::RefCell::new(cache));
    let for_hook = std::rc::Rc::clone(&cache);
    let kv_quantization = config.kv_quantization;
    let forward = move |tokens: &Array| {
        let mut cache = cache.borrow_mut();
        let logits = model.forward(tokens, &mut cache[..])?;
        if let Some(q) = &kv_quantization {
            crate::cache::Cache::maybe_quantize(&mut cache[..], q)?;
        }
        Ok(logits)
    };
    let stream = TokenStream::new(prompt, config, forward)?;
    Ok(stream
        .with_prefill_hook(move |_, _, _| Ok(crate::cache::Cache::eval_all(&for_hook.borrow())?)))
}

/// Starts a token stream: `generate_tokens(&prompt, config, |tokens| model.forward(tokens))`.
///
/// The closure is the model; here a stand-in whose logits always favour token 3, with token 3
/// as EOS:
///
/// ```
/// use mlx_models::generate::{generate_tokens, FinishReason, GenerationConfig};
/// use mlx_rs::{error::Exception, Array};
///
/// let logits = Array::from_slice(&[0.0f32, 1.0, 0.0, 4.0], &[1, 1, 4]);
/// let config = GenerationConfig {
///     max_tokens: 8,
///     eos_token_ids: vec![3],
///     ..Default::default() // greedy
/// };
/// let stream = generate_tokens(&[1, 2], config, |_tokens: &Array| {
///     Ok::<_, Exception>(logits.clone())
/// })?;
/// let tokens = stream.collect_all()?;
/// assert_eq!(tokens.len(), 1);
/// assert_eq!(tokens[0].token, 3);
/// assert_eq!(tokens[0].finish_reason, Some(FinishReason::Stop));
/// # Ok::<(), mlx_models::generate::GenerateError>(())
/// ```
pub fn generate_tokens<'a, F, E>(
    prompt: &[u32],
    config: GenerationConfig,
    forward: F,
) -> Result<TokenStream<'a, F>>
where
    F: FnMut(&Array) -> std::result::Result<Array, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    TokenStream::new(prompt, config, forward)
}
