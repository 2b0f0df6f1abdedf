//! Continuous batching: many requests generated at once by one model, each joining the running
//! batch when its prompt is prefilled and leaving it when done ([`Engine`]), with the caches of
//! finished requests kept for reuse by later prompts that share their prefix
//! ([`PromptCache`]).
//!
//! The engine runs on the thread that owns the model (MLX arrays are not `Send`); requests come
//! in over a channel ([`Engine::run`]) and their tokens go out through each request's
//! [`Request::sink`]. Each call of [`Engine::step`]:
//!
//! 1. admits a waiting request when fewer than `max_concurrency` are running, looking its
//!    prompt up in the prompt cache;
//! 2. prefills one chunk (`prefill_step_size` tokens) of the request being admitted, so that a
//!    long prompt never stalls the others' streams for more than one chunk;
//! 3. decodes one token for every running request: as one batch where every cache of the
//!    model has a batched form that rows can join and leave (full attention), else row by row;
//! 4. retires the requests that are done (end of sequence, `max_tokens`, or a sink that no
//!    longer listens), their caches going to the prompt cache.
//!
//! Each request samples with its own sampler and logits processors, so its tokens are what it
//! would get alone (greedy: equal up to the rounding of the padded batch).

mod prompt_cache;

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::Receiver;

use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::Array;

use crate::cache::{BatchKvCache, Cache};
use crate::generate::{FinishReason, GenerateError};
use crate::model::LanguageModel;
use crate::sampling::{self, LogitsConfig, Sampler, SamplerConfig};

pub use prompt_cache::PromptCache;

/// How an [`Engine`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Requests decoded at once; more wait in line.
    pub max_concurrency: usize,
    /// Prompt tokens prefilled per step.
    pub prefill_step_size: usize,
    /// Bytes of finished requests' caches kept for reuse (0: none).
    pub prompt_cache_bytes: usize,
    /// Tokens that end a request.
    pub eos_token_ids: Vec<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrency: 8,
            prefill_step_size: 512,
            prompt_cache_bytes: 1 << 30,
            eos_token_ids: Vec::new(),
        }
    }
}

/// Where a request's events go; returns `false` once nobody listens (the request is then
/// dropped at the next step).
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// One generation request.
pub struct Request {
    /// The prompt's tokens (at least one).
    pub prompt: Vec<u32>,
    /// The most tokens to generate (at least one).
    pub max_tokens: usize,
    /// How tokens are picked.
    pub sampler: SamplerConfig,
    /// Adjustments of the logits before sampling.
    pub logits: LogitsConfig,
    /// With `Some(n)`, each token comes with its log-probability and the `n` most likely
    /// tokens' (at most 20).
    pub top_logprobs: Option<usize>,
    /// Where its events go.
    pub sink: Sink,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("prompt", &self.prompt.len())
            .field("max_tokens", &self.max_tokens)
            .field("sampler", &self.sampler)
            .field("top_logprobs", &self.top_logprobs)
            .finish_non_exhaustive()
    }
}

/// What happens to a request, in order: `Started`, then `Token`s, then `Finished` (or
/// `Failed` at any point).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt is in the cache: how many tokens it had, and how many of them came from
    /// the prompt cache.
    Started {
        /// Tokens of the prompt.
        prompt_tokens: usize,
        /// Of which reused from an earlier request's cache.
        cached_tokens: usize,
    },
    /// A generated token (end-of-sequence tokens are not sent: they end the request).
    Token {
        /// Its id.
        token: u32,
        /// Its log-probability (with `top_logprobs` asked for; else 0).
        logprob: f32,
        /// The most likely tokens and their log-probabilities, most likely first.
        top_logprobs: Vec<(u32, f32)>,
    },
    /// The request is done.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Tokens generated (an end-of-sequence token not counted).
        generated: usize,
    },
    /// The request failed; nothing more comes.
    Failed {
        /// What went wrong.
        message: String,
    },
}

/// The most log-probabilities a request may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

struct Row {
    request: Request,
    sampler: Sampler,
    /// The prompt, then the generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens whose keys and values are in the caches.
    forwarded: usize,
    generated: usize,
    /// The row's own caches (empty while the row is in the batch's caches).
    caches: Vec<Cache>,
    /// Whether the row is in the batch's caches.
    in_batch: bool,
    /// The token to feed next: sampled (as a lazy `[1]` array, with its log-probabilities
    /// when asked for), and whether it was already taken (sent to the sink).
    next: Option<Next>,
    done: bool,
}

/// A row's sampled token, still on the device.
struct Next {
    token: Array,
    logprobs: Option<Array>,
    accepted: bool,
}

impl Row {
    fn send(&mut self, event: Event) {
        if !(self.request.sink)(event) {
            self.done = true;
        }
    }

    fn fail(&mut self, message: String) {
        let _ = (self.request.sink)(Event::Failed { message });
        self.done = true;
    }
}

/// Generates many requests at once with one model (see the module docs).
pub struct Engine {
    model: Box<dyn LanguageModel>,
    config: EngineConfig,
    eos: HashSet<u32>,
    /// Whether every cache of the model can be merged into a batch that rows join and leave.
    batchable: bool,
    waiting: VecDeque<Request>,
    prefilling: Option<Row>,
    decoding: Vec<Row>,
    /// The batch's caches (one per layer), holding the rows of `decoding` that are `in_batch`
    /// in their order.
    batch: Vec<Cache>,
    prompt_cache: PromptCache,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_type", &self.model.model_type())
            .field("config", &self.config)
            .field("batchable", &self.batchable)
            .field("waiting", &self.waiting.len())
            .field("decoding", &self.decoding.len())
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::InvalidConfig(msg.into())
}

impl Engine {
    /// An engine for `model`.
    pub fn new(model: Box<dyn LanguageModel>, config: EngineConfig) -> Result<Self, GenerateError> {
        if config.max_concurrency == 0 {
            return Err(invalid("max_concurrency must be at least 1"));
        }
        if config.prefill_step_size == 0 {
            return Err(invalid("prefill_step_size must be at least 1"));
        }
        let batchable = model.make_cache().iter().all(|c| matches!(c, Cache::Kv(_)));
        Ok(Engine {
            eos: config.eos_token_ids.iter().copied().collect(),
            prompt_cache: PromptCache::new(config.prompt_cache_bytes),
            model,
            config,
            batchable,
            waiting: VecDeque::new(),
            prefilling: None,
            decoding: Vec::new(),
            batch: Vec::new(),
        })
    }

    /// Whether running requests are decoded as one batch (every cache of the model is full
    /// attention) rather than one by one.
    pub fn is_batched(&self) -> bool {
        self.batchable
    }

    /// The prompt cache.
    pub fn prompt_cache(&self) -> &PromptCache {
        &self.prompt_cache
    }

    /// Requests waiting, being prefilled or decoded.
    pub fn in_flight(&self) -> usize {
        self.waiting.len() + usize::from(self.prefilling.is_some()) + self.decoding.len()
    }

    /// Whether nothing is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.in_flight() == 0
    }

    /// Queues a request; a malformed one fails at once.
    pub fn submit(&mut self, mut request: Request) {
        let problem = if request.prompt.is_empty() {
            Some("the prompt is empty".to_owned())
        } else if request.max_tokens == 0 {
            Some("max_tokens must be at least 1".to_owned())
        } else if request.top_logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            Some(format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"))
        } else {
            request
                .sampler
                .validate()
                .and_then(|()| request.logits.validate())
                .err()
                .map(|e| e.to_string())
        };
        match problem {
            Some(message) => {
                let _ = (request.sink)(Event::Failed { message });
            }
            None => self.waiting.push_back(request),
        }
    }

    /// Serves requests from `requests` until the channel closes and everything is done.
    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            if self.is_idle() {
                match requests.recv() {
                    Ok(r) => self.submit(r),
                    Err(_) => return,
                }
            }
            while let Ok(r) = requests.try_recv() {
                self.submit(r);
            }
            self.step();
        }
    }

    /// One step: admit, prefill a chunk, decode a token for every running request, retire.
    pub fn step(&mut self) {
        self.admit();
        if let Some(mut row) = self.prefilling.take() {
            match self.prefill_chunk(&mut row) {
                Ok(()) => {}
                Err(e) => row.fail(e.to_string()),
            }
            if row.done {
                self.retire(row);
            } else if row.next.is_some() {
                self.decoding.push(row);
            } else {
                self.prefilling = Some(row);
            }
        }
        if !self.decoding.is_empty() {
            // A lone request decodes on its own caches: no padding masks to build per layer.
            let result = if self.batchable && self.decoding.len() > 1 {
                self.decode_batch()
            } else {
                self.leave_batch().and_then(|()| self.decode_rows())
            };
            if let Err(e) = result {
                // The batch's state is unknown now: every running request fails.
                let message = e.to_string();
                for row in &mut self.decoding {
                    row.fail(message.clone());
                }
                self.batch.clear();
                for row in &mut self.decoding {
                    row.in_batch = false;
                }
            }
        }
        self.retire_done();
    }

    fn admit(&mut self) {
        while self.prefilling.is_none() && self.decoding.len() < self.config.max_concurrency {
            let Some(request) = self.waiting.pop_front() else {
                return;
            };
            let sampler = match Sampler::new(request.sampler.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let mut request = request;
                    let _ = (request.sink)(Event::Failed {
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let (caches, cached) = self
                .prompt_cache
                .fetch(&request.prompt)
                .unwrap_or_else(|| (self.model.make_cache(), 0));
            let mut row = Row {
                tokens: request.prompt.clone(),
                prompt_len: request.prompt.len(),
                forwarded: cached,
                generated: 0,
                caches,
                in_batch: false,
                next: None,
                done: false,
                sampler,
                request,
            };
            row.send(Event::Started {
                prompt_tokens: row.prompt_len,
                cached_tokens: cached,
            });
            if row.done {
                continue;
            }
            self.prefilling = Some(row);
        }
    }

    /// Forwards the next chunk of the row's prompt; at its end, samples the first token.
    fn prefill_chunk(&mut self, row: &mut Row) -> Result<(), GenerateError> {
        let remaining = row.prompt_len - row.forwarded;
        let n = remaining.min(self.config.prefill_step_size);
        let chunk = &row.tokens[row.forwarded..row.forwarded + n];
        let input = Array::from_slice(chunk, &[1, i32_of(n)?]);
        let logits = self.model.forward(&input, &mut row.caches)?;
        row.forwarded += n;
        if row.forwarded < row.prompt_len {
            // The chunk's logits are never computed, only the caches; MLX's buffer cache is
            // emptied after each chunk, as a single generation does.
            drop(logits);
            Cache::eval_all(&row.caches)?;
            mlx_rs::memory::clear_cache()?;
            return Ok(());
        }
        let last = logits.try_index((.., -1, ..))?;
        let (token, logprobs) = self.sample(row, &last)?;
        let mut pending = vec![&token];
        if let Some(l) = &logprobs {
            pending.push(l);
        }
        mlx_rs::transforms::eval(pending)?;
        self.accept(row, &token, logprobs.as_ref(), 0)?;
        row.next = Some(Next {
            token,
            logprobs: None,
            accepted: true,
        });
        Ok(())
    }

    /// Samples one token for `row` from its logits `[1, vocab]`: the token `[1]` and, when the
    /// row wants log-probabilities, the log-probabilities `[1, vocab]` (lazy).
    fn sample(
        &self,
        row: &mut Row,
        logits: &Array,
    ) -> Result<(Array, Option<Array>), GenerateError> {
        let logits = if row.request.logits.is_active() {
            row.request.logits.apply(&row.tokens, logits)?
        } else {
            logits.clone()
        };
        let logprobs = sampling::log_softmax(&logits)?;
        let token = row.sampler.sample(&logprobs)?;
        let logprobs = match row.request.top_logprobs {
            Some(_) => Some(logprobs.as_dtype(mlx_rs::Dtype::Float32)?),
            None => None,
        };
        Ok((token, logprobs))
    }

    /// Takes the evaluated token of `row` (row `i` of `tokens`), sends it and decides whether
    /// the row is done.
    fn accept(
        &self,
        row: &mut Row,
        tokens: &Array,
        logprobs: Option<&Array>,
        i: usize,
    ) -> Result<(), GenerateError> {
        let id =
            tokens.as_slice::<u32>().get(i).copied().ok_or_else(|| {
                GenerateError::InvalidConfig("the sampler returned no token".into())
            })?;
        if self.eos.contains(&id) {
            let generated = row.generated;
            row.send(Event::Finished {
                reason: FinishReason::Stop,
                generated,
            });
            row.done = true;
            return Ok(());
        }
        let (logprob, top) = match (logprobs, row.request.top_logprobs) {
            (Some(l), Some(n)) => top_logprobs(l, id, n)?,
            _ => (0.0, Vec::new()),
        };
        row.tokens.push(id);
        row.generated += 1;
        row.send(Event::Token {
            token: id,
            logprob,
            top_logprobs: top,
        });
        if !row.done && row.generated >= row.request.max_tokens {
            let generated = row.generated;
            row.send(Event::Finished {
                reason: FinishReason::Length,
                generated,
            });
            row.done = true;
        }
        Ok(())
    }

    /// Puts the rows that are not in the batch's caches into them: every row's caches are
    /// taken out of the batch, then all are merged again.
    fn join_batch(&mut self) -> Result<(), GenerateError> {
        if self.decoding.iter().all(|r| r.in_batch) {
            return Ok(());
        }
        self.leave_batch()?;
        let layers = self.decoding.first().map_or(0, |r| r.caches.len());
        let mut merged = Vec::with_capacity(layers);
        for layer in 0..layers {
            let singles = self
                .decoding
                .iter()
                .map(|row| match row.caches.get(layer) {
                    Some(Cache::Kv(c)) => Ok(c.clone()),
                    _ => Err(invalid("a row lost a layer's cache")),
                })
                .collect::<Result<Vec<_>, GenerateError>>()?;
            merged.push(Cache::Batch(BatchKvCache::merge(&singles)?));
        }
        self.batch = merged;
        for row in &mut self.decoding {
            row.in_batch = true;
            row.caches.clear();
        }
        Cache::eval_all(&self.batch)?;
        Ok(())
    }

    /// Row `i` of the batch's caches, as its own caches.
    fn batch_row_caches(&self, i: i32) -> Result<Vec<Cache>, GenerateError> {
        self.batch
            .iter()
            .map(|c| match c {
                Cache::Batch(b) => Ok(Cache::Kv(b.extract(i)?)),
                _ => Err(invalid("the batch lost a layer's cache")),
            })
            .collect()
    }

    /// Gives the rows in the batch's caches their own caches back (a lone request decodes
    /// faster without the batch's padding masks).
    fn leave_batch(&mut self) -> Result<(), GenerateError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut at = 0i32;
        for i in 0..self.decoding.len() {
            if !self.decoding[i].in_batch {
                continue;
            }
            let caches = self.batch_row_caches(at)?;
            let row = &mut self.decoding[i];
            row.caches = caches;
            row.in_batch = false;
            at += 1;
        }
        self.batch.clear();
        Ok(())
    }

    /// One token for every decoding row, as one batch: the rows' next tokens go in, and
    /// the step after is queued (`async_eval`) before this one's tokens are read back and
    /// sent, so that building the next graph overlaps computing this one (as the reference's
    /// generation loop does). A row that ends at the token read back has had one more
    /// position computed, which its cache drops when it retires.
    fn decode_batch(&mut self) -> Result<(), GenerateError> {
        self.join_batch()?;
        let inputs: Vec<Array> = self
            .decoding
            .iter()
            .map(|r| match &r.next {
                Some(n) => n.token.reshape(&[1]),
                None => Err(mlx_rs::error::Exception::custom(
                    "a decoding row has no token",
                )),
            })
            .collect::<Result<_, _>>()?;
        let rows = i32_of(inputs.len())?;
        let input = mlx_rs::ops::concatenate(&inputs, 0)?.reshape(&[rows, 1])?;
        let logits = self.model.forward(&input, &mut self.batch)?;
        let logits = logits.try_index((.., -1, ..))?;
        let mut decoding = std::mem::take(&mut self.decoding);
        let result = (|| {
            let mut sampled = Vec::with_capacity(decoding.len());
            for (r, row) in decoding.iter_mut().enumerate() {
                let r = r as i32;
                let row_logits = logits.try_index((r..r + 1, ..))?;
                sampled.push(self.sample(row, &row_logits)?);
            }
            self.advance(&mut decoding, sampled)
        })();
        self.decoding = decoding;
        result
    }

    /// One token for every decoding row, row by row (models whose caches have no batched
    /// form that rows join and leave), queued and read back as [`Engine::decode_batch`] does.
    fn decode_rows(&mut self) -> Result<(), GenerateError> {
        let mut decoding = std::mem::take(&mut self.decoding);
        let result = (|| {
            let mut sampled = Vec::with_capacity(decoding.len());
            for row in decoding.iter_mut() {
                let input = match &row.next {
                    Some(n) => n.token.reshape(&[1, 1])?,
                    None => return Err(invalid("a decoding row has no token")),
                };
                let logits = self.model.forward(&input, &mut row.caches)?;
                let logits = logits.try_index((.., -1, ..))?;
                sampled.push(self.sample(row, &logits)?);
            }
            self.advance(&mut decoding, sampled)
        })();
        self.decoding = decoding;
        result
    }

    /// Queues the rows' newly sampled tokens, reads back and sends the ones sampled at the
    /// step before, and makes the new ones the rows' next tokens.
    fn advance(
        &self,
        decoding: &mut [Row],
        sampled: Vec<(Array, Option<Array>)>,
    ) -> Result<(), GenerateError> {
        let mut queued: Vec<&Array> = Vec::new();
        for (t, l) in &sampled {
            queued.push(t);
            if let Some(l) = l {
                queued.push(l);
            }
        }
        mlx_rs::transforms::async_eval(queued)?;
        let mut previous: Vec<&Array> = Vec::new();
        for row in decoding.iter() {
            if let Some(n) = row.next.as_ref().filter(|n| !n.accepted) {
                previous.push(&n.token);
                if let Some(l) = &n.logprobs {
                    previous.push(l);
                }
            }
        }
        if !previous.is_empty() {
            mlx_rs::transforms::eval(previous)?;
        }
        for (row, (token, logprobs)) in decoding.iter_mut().zip(sampled) {
            row.forwarded += 1;
            if let Some(n) = row.next.take().filter(|n| !n.accepted) {
                self.accept(row, &n.token, n.logprobs.as_ref(), 0)?;
            }
            row.next = Some(Next {
                token,
                logprobs,
                accepted: false,
            });
        }
        Ok(())
    }

    /// Removes the rows that are done from the batch, their caches going to the prompt cache.
    fn retire_done(&mut self) {
        if self.decoding.iter().all(|r| !r.done) {
            return;
        }
        let mut keep = Vec::new();
        let mut batch_row = 0i32;
        let mut kept_rows = Vec::new();
        let mut done_rows = Vec::new();
        for mut row in std::mem::take(&mut self.decoding) {
            let at = row.in_batch.then(|| {
                batch_row += 1;
                batch_row - 1
            });
            if row.done {
                if let Some(i) = at {
                    // A cache that cannot be taken out is not kept (the row is done anyway).
                    row.caches = self.batch_row_caches(i).unwrap_or_default();
                    row.in_batch = false;
                }
                done_rows.push(row);
            } else {
                if let Some(i) = at {
                    keep.push(i);
                }
                kept_rows.push(row);
            }
        }
        self.decoding = kept_rows;
        if self.decoding.iter().any(|r| r.in_batch) {
            let indices = Array::from_slice(&keep, &[keep.len() as i32]);
            let filtered: Result<(), GenerateError> = self.batch.iter_mut().try_for_each(|c| {
                if let Cache::Batch(b) = c {
                    b.filter(&indices)?;
                }
                Ok(())
            });
            if let Err(e) = filtered {
                let message = e.to_string();
                for row in &mut self.decoding {
                    row.fail(message.clone());
                }
                done_rows.append(&mut self.decoding);
                self.batch.clear();
            }
        } else {
            self.batch.clear();
        }
        for row in done_rows {
            self.retire(row);
        }
        // The freed rows' buffers go back to the system rather than to MLX's buffer cache,
        // so a server's memory follows what it holds.
        let _ = mlx_rs::memory::clear_cache();
    }

    /// A finished row's caches go to the prompt cache, keyed by the tokens they hold: the
    /// positions computed past its last sent token (an end-of-sequence token, a step queued
    /// before the row ended) are trimmed off first.
    fn retire(&mut self, mut row: Row) {
        if row.caches.is_empty() || row.forwarded == 0 || row.in_batch {
            return;
        }
        let keep = row.forwarded.min(row.tokens.len());
        let extra = row.forwarded - keep;
        if extra > 0 {
            let Ok(extra) = i32::try_from(extra) else {
                return;
            };
            for c in &mut row.caches {
                if !c.is_trimmable() || c.trim(extra) != extra {
                    // A cache that cannot go back (recurrent state) holds other tokens than
                    // the key would say: not kept.
                    return;
                }
            }
        }
        let tokens = row.tokens[..keep].to_vec();
        self.prompt_cache.insert(tokens, row.caches);
    }
}

/// The log-probability of `token` and the `n` most likely tokens' (most likely first), from
/// evaluated log-probabilities `[1, vocab]`.
fn top_logprobs(
    logprobs: &Array,
    token: u32,
    n: usize,
) -> Result<(f32, Vec<(u32, f32)>), GenerateError> {
    let values: &[f32] = logprobs.as_slice::<f32>();
    let chosen = values
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    let n = n.min(values.len());
    if n > 0 {
        order.select_nth_unstable_by(n - 1, |a, b| {
            values[*b as usize].total_cmp(&values[*a as usize])
        });
    }
    let mut top: Vec<(u32, f32)> = order[..n]
        .iter()
        .map(|&t| (t, values[t as usize]))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok((chosen, top))
}

fn i32_of(n: usize) -> Result<i32, GenerateError> {
    i32::try_from(n).map_err(|_| invalid("too many tokens"))
}
