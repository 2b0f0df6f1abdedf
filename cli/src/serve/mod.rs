//! `mlx-models serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/health`) on axum.
//!
//! The model lives on one thread that runs the continuous-batching engine
//! ([`mlx_models::engine`]); each HTTP request becomes an engine request whose events come back
//! over a channel. Text is assembled per request (streaming detokenizer, stop strings held back
//! across tokens, reasoning and tool calls split out by [`output`]) and sent as one JSON
//! response or as server-sent events.

mod api;
mod output;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use mlx_models::engine::{Engine, EngineConfig, Event, Request};
use mlx_models::generate::FinishReason;
use mlx_models::stop::StopStrings;
use mlx_models::tokenizer::{ChatOptions, Tokenizer};

use crate::{CliResult, SourceArgs};
use api::{ApiError, Settings};
use output::{Delta, OutputParser, ToolCall};

/// `mlx-models serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address to listen on (only this machine by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every request but `/health`.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Requests generated at once; more wait in line.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_concurrency: u32,
    /// Requests that may wait beyond those running; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub max_queue: u32,
    /// Bytes of finished requests' caches kept for reuse by prompts sharing their prefix.
    #[arg(long, default_value_t = 2 << 30)]
    pub prompt_cache_bytes: usize,
    /// Prompt tokens prefilled per step (a long prompt is interleaved with the others'
    /// decoding in chunks of this size).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub prefill_step_size: u32,
    /// `max_tokens` of requests that give none.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// The model name served in `/v1/models` and accepted in requests (default: `--model`).
    #[arg(long)]
    pub served_model_name: Option<String>,
}

struct AppState {
    tokenizer: Tokenizer,
    model_id: String,
    /// Other names a request may use for the model (the `--model` source).
    aliases: Vec<String>,
    api_key: Option<String>,
    requests: std::sync::Mutex<std::sync::mpsc::Sender<Request>>,
    in_flight: AtomicUsize,
    capacity: usize,
    default_max_tokens: usize,
    context: Option<usize>,
    eos: Vec<u32>,
    created: u64,
    next_id: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The context length of the checkpoint's config, where it says one.
fn context_length(config: &Value) -> Option<usize> {
    let text = config.get("text_config").unwrap_or(config);
    [
        "max_position_embeddings",
        "n_positions",
        "max_sequence_length",
        "seq_length",
    ]
    .iter()
    .find_map(|k| text.get(*k).or_else(|| config.get(*k)))
    .and_then(Value::as_u64)
    .and_then(|n| usize::try_from(n).ok())
    .filter(|&n| n > 0)
}

struct Ready {
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    context: Option<usize>,
    batched: bool,
}

/// Runs the server until interrupted.
pub fn serve(args: ServeArgs) -> CliResult<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (args.host.as_str(), args.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|()| {
            format!(
                "--host {:?} is not an address this machine can listen on",
                args.host
            )
        })?;
    // Bind before loading, so that a port in use is reported at once.
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let (requests, inbox) = std::sync::mpsc::channel::<Request>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<CliResult<Ready>>();
    let engine_config = EngineConfig {
        max_concurrency: args.max_concurrency as usize,
        prefill_step_size: args.prefill_step_size as usize,
        prompt_cache_bytes: args.prompt_cache_bytes,
        eos_token_ids: Vec::new(),
    };
    let source_args = args.source.clone();
    std::thread::Builder::new()
        .name("model".into())
        .spawn(move || {
            let loaded = match crate::load(&source_args) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let tokenizer = match crate::tokenizer_for(&loaded.dir) {
                Ok(t) => t,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("serving needs the tokenizer: {e}")));
                    return;
                }
            };
            let mut eos = loaded.eos_token_ids.clone();
            eos.extend(tokenizer.eos_token_ids().iter().copied());
            eos.sort_unstable();
            eos.dedup();
            let context = context_length(&loaded.config);
            let config = EngineConfig {
                eos_token_ids: eos.clone(),
                ..engine_config
            };
            let engine = match Engine::new(loaded.model, config) {
                Ok(e) => e,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let batched = engine.is_batched();
            let _ = ready_tx.send(Ok(Ready {
                tokenizer,
                eos,
                context,
                batched,
            }));
            engine.run(inbox);
        })
        .map_err(|e| format!("cannot start the model thread: {e}"))?;
    let ready = ready_rx
        .recv()
        .map_err(|_| "the model thread stopped while loading".to_string())??;

    let model_id = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.source.model.clone());
    let state = Arc::new(AppState {
        tokenizer: ready.tokenizer,
        aliases: vec![args.source.model.clone()],
        model_id: model_id.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        requests: std::sync::Mutex::new(requests),
        in_flight: AtomicUsize::new(0),
        capacity: (args.max_concurrency + args.max_queue) as usize,
        default_max_tokens: args.max_tokens as usize,
        context: ready.context,
        eos: ready.eos,
        created: now(),
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(|| async {
            error_response(ApiError::status(404, "not_found_error", "no such endpoint"))
        })
        .method_not_allowed_fallback(|| async {
            error_response(ApiError::status(
                405,
                "invalid_request_error",
                "this endpoint does not take that method",
            ))
        })
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .with_state(state);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot listen on {local}: {e}"))?;
        eprintln!(
            "serving {model_id} on http://{local} ({} requests at once, {})",
            args.max_concurrency,
            if ready.batched {
                "batched"
            } else {
                "decoded one by one"
            }
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| format!("the server failed: {e}"))
    })
}

fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(e.body())).into_response();
    if e.status == 503 {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

/// Checks the bearer key in constant time.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    use subtle::ConstantTimeEq;
    if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::status(
            401,
            "authentication_error",
            "missing or wrong API key (Authorization: Bearer ...)",
        ))
    }
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return error_response(e);
    }
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "mlx-models",
        }],
    }))
    .into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object",
            None,
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}"), None))
}

fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        None => Ok(()),
        Some(m) if m == state.model_id || state.aliases.iter().any(|a| a == m) => Ok(()),
        Some(m) => Err(ApiError {
            status: 404,
            message: format!(
                "the model `{m}` does not exist; this server serves `{}`",
                state.model_id
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }),
    }
}

/// One request's generation as it reaches a handler.
struct Job {
    id: String,
    prompt_tokens: usize,
    events: mpsc::UnboundedReceiver<Event>,
    settings: Settings,
    top_logprobs: Option<usize>,
    parser: OutputParser,
    state: Arc<AppState>,
    /// The request's place in line, given back when the job is dropped.
    _slot: Slot,
}

struct Slot(Arc<AppState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Queues the prompt on the engine.
fn start(
    state: &Arc<AppState>,
    prefix: &str,
    prompt: Vec<u32>,
    settings: Settings,
    top_logprobs: Option<usize>,
    parser: OutputParser,
) -> Result<Job, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty", Some("prompt")));
    }
    if let Some(context) = state.context {
        if prompt.len() >= context {
            return Err(ApiError::bad_request(
                format!(
                    "the prompt has {} tokens, the model's context is {context}",
                    prompt.len()
                ),
                Some("messages"),
            )
            .with_code("context_length_exceeded"));
        }
    }
    if state.in_flight.fetch_add(1, Ordering::SeqCst) >= state.capacity {
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::status(
            503,
            "server_overloaded",
            "too many requests in line; retry shortly",
        ));
    }
    let slot = Slot(Arc::clone(state));
    let (tx, rx) = mpsc::unbounded_channel();
    let request = Request {
        prompt: prompt.clone(),
        max_tokens: settings.max_tokens,
        sampler: settings.sampler.clone(),
        logits: settings.logits.clone(),
        top_logprobs,
        sink: Box::new(move |e| tx.send(e).is_ok()),
    };
    state
        .requests
        .lock()
        .map_err(|_| ApiError::status(500, "server_error", "the model thread is gone"))?
        .send(request)
        .map_err(|_| ApiError::status(500, "server_error", "the model thread is gone"))?;
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    Ok(Job {
        id: format!("{prefix}-{n}"),
        prompt_tokens: prompt.len(),
        events: rx,
        settings,
        top_logprobs,
        parser,
        state: Arc::clone(state),
        _slot: slot,
    })
}

/// A generated token with its text, for log-probabilities.
struct TokenInfo {
    text: String,
    logprob: f32,
    top: Vec<(String, f32)>,
}

/// What a job produced by the time it is done, or one step of it while streaming.
#[derive(Default)]
struct Progress {
    delta: Delta,
    tokens: Vec<TokenInfo>,
    finish: Option<&'static str>,
    tool_calls: Vec<ToolCall>,
    completion_tokens: usize,
    cached_tokens: usize,
}

/// Turns engine events into text: detokenizes, holds back possible stop strings, splits
/// reasoning and tool calls.
struct Assembler {
    detok: mlx_models::detokenizer::StreamingDetokenizer,
    stops: StopStrings,
    generated: usize,
    cached: usize,
    done: bool,
}

impl Assembler {
    fn new(job: &Job) -> Result<Self, ApiError> {
        Ok(Assembler {
            detok: job.state.tokenizer.detokenizer(),
            stops: StopStrings::new(job.settings.stops.clone())
                .map_err(|_| ApiError::bad_request("a stop string is empty", Some("stop")))?,
            generated: 0,
            cached: 0,
            done: false,
        })
    }

    fn token_text(job: &Job, id: u32) -> String {
        job.state.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    /// Feeds one event; returns what it adds.
    fn feed(&mut self, job: &mut Job, event: Event) -> Result<Progress, ApiError> {
        let mut p = Progress::default();
        match event {
            Event::Started { cached_tokens, .. } => self.cached = cached_tokens,
            Event::Token {
                token,
                logprob,
                top_logprobs,
            } => {
                self.generated += 1;
                if job.top_logprobs.is_some() {
                    p.tokens.push(TokenInfo {
                        text: Self::token_text(job, token),
                        logprob,
                        top: top_logprobs
                            .iter()
                            .map(|(t, l)| (Self::token_text(job, *t), *l))
                            .collect(),
                    });
                }
                let piece = self
                    .detok
                    .add_token(token)
                    .map_err(|e| ApiError::status(500, "server_error", e.to_string()))?;
                let (text, stopped) = self.stops.push(&piece);
                p.delta = job.parser.push(&text);
                if stopped {
                    self.finish(job, &mut p, "stop");
                }
            }
            Event::Finished { reason, .. } => {
                let tail = self
                    .detok
                    .finalize()
                    .map_err(|e| ApiError::status(500, "server_error", e.to_string()))?;
                let (text, stopped) = self.stops.push(&tail);
                let mut delta = job.parser.push(&text);
                if !stopped {
                    let held = self.stops.finish();
                    let more = job.parser.push(&held);
                    delta.reasoning.push_str(&more.reasoning);
                    delta.content.push_str(&more.content);
                }
                p.delta = delta;
                let reason = match (reason, stopped) {
                    (_, true) | (FinishReason::Stop, _) => "stop",
                    (FinishReason::Length, false) => "length",
                };
                self.finish(job, &mut p, reason);
            }
            Event::Failed { message } => {
                return Err(ApiError::status(500, "server_error", message));
            }
        }
        p.completion_tokens = self.generated;
        p.cached_tokens = self.cached;
        Ok(p)
    }

    fn finish(&mut self, job: &mut Job, p: &mut Progress, reason: &'static str) {
        let (rest, calls) = job.parser.finish();
        p.delta.reasoning.push_str(&rest.reasoning);
        p.delta.content.push_str(&rest.content);
        p.finish = Some(if calls.is_empty() {
            reason
        } else {
            "tool_calls"
        });
        p.tool_calls = calls;
        self.done = true;
    }
}

fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn chat_logprobs(tokens: &[TokenInfo]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": t.text,
                "logprob": t.logprob,
                "bytes": t.text.as_bytes(),
                "top_logprobs": t.top.iter().map(|(s, l)| json!({
                    "token": s, "logprob": l, "bytes": s.as_bytes(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

fn completion_logprobs(tokens: &[TokenInfo], offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    let mut at = offset;
    for t in tokens {
        text_offset.push(at);
        at += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|(s, l)| (s.clone(), json!(l))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// The tool calls as OpenAI lists them: with their `index` in a stream's delta only.
fn tool_calls_json(job_id: &str, calls: &[ToolCall], streamed: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = c.to_json(i, &format!("call_{}_{i}", job_id.replace('-', "_")));
            if !streamed {
                if let Some(o) = v.as_object_mut() {
                    o.remove("index");
                }
            }
            v
        })
        .collect()
}

/// The whole answer of a job, for a non-streaming response.
async fn collect(mut job: Job) -> Result<(Job, Progress), ApiError> {
    let mut asm = Assembler::new(&job)?;
    let mut all = Progress::default();
    while !asm.done {
        let Some(event) = job.events.recv().await else {
            return Err(ApiError::status(
                500,
                "server_error",
                "the model thread is gone",
            ));
        };
        let p = asm.feed(&mut job, event)?;
        all.delta.reasoning.push_str(&p.delta.reasoning);
        all.delta.content.push_str(&p.delta.content);
        all.tokens.extend(p.tokens);
        all.finish = p.finish.or(all.finish);
        all.tool_calls.extend(p.tool_calls);
        all.completion_tokens = p.completion_tokens;
        all.cached_tokens = p.cached_tokens;
    }
    Ok((job, all))
}

/// Server-sent events of a job: one chunk per step with something to say, then usage (when
/// asked) and `[DONE]`. Dropping the stream (the client went away) drops the job, which
/// frees its slot at the engine's next step.
fn stream(
    mut job: Job,
    chunk: impl Fn(&Job, &Progress) -> Option<Value> + Send + 'static,
    first: Option<Value>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let send = |v: &Value| SseEvent::default().data(v.to_string());
        if let Some(first) = first {
            if tx.send(Ok(send(&first))).await.is_err() {
                return;
            }
        }
        let mut asm = match Assembler::new(&job) {
            Ok(a) => a,
            Err(e) => {
                let _ = tx.send(Ok(send(&e.body()))).await;
                return;
            }
        };
        let mut last = Progress::default();
        while !asm.done {
            let event = tokio::select! {
                e = job.events.recv() => e,
                () = tx.closed() => return,
            };
            let Some(event) = event else {
                let e = ApiError::status(500, "server_error", "the model thread is gone");
                let _ = tx.send(Ok(send(&e.body()))).await;
                return;
            };
            let p = match asm.feed(&mut job, event) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Ok(send(&e.body()))).await;
                    return;
                }
            };
            if let Some(v) = chunk(&job, &p) {
                if tx.send(Ok(send(&v))).await.is_err() {
                    return;
                }
            }
            last = p;
        }
        if job.settings.include_usage {
            let v = json!({
                "id": job.id,
                "object": if job.id.starts_with("chatcmpl") { "chat.completion.chunk" } else { "text_completion" },
                "created": now(),
                "model": job.state.model_id,
                "choices": [],
                "usage": usage(job.prompt_tokens, last.completion_tokens, last.cached_tokens),
            });
            if tx.send(Ok(send(&v))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The body, or the extractor's refusal (too large, unreadable) as an OpenAI error.
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status().as_u16();
        let message = if status == 413 {
            "the request body is too large".to_owned()
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        ApiError::status(status, "invalid_request_error", message)
    })
}

async fn chat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_of(body) {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    match chat_inner(state, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn chat_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let request: api::ChatRequest = parse(&body)?;
    check_model(&state, request.sampling.model.as_deref())?;
    let settings = request
        .sampling
        .settings(state.default_max_tokens, &state.eos)?;
    let top_logprobs = api::chat_logprobs(&request)?;
    let messages = api::template_messages(&request.messages)?;
    let use_tools = request.tools.as_ref().is_some_and(|t| !t.is_empty())
        && request.tool_choice.as_ref().and_then(Value::as_str) != Some("none");
    let options = ChatOptions {
        add_generation_prompt: true,
        tools: use_tools.then(|| Value::Array(request.tools.clone().unwrap_or_default())),
        extra: request.chat_template_kwargs.clone().unwrap_or_default(),
        ..Default::default()
    };
    let rendered = if state.tokenizer.has_chat_template() {
        state
            .tokenizer
            .apply_chat_template_json(&messages, &options)
            .map_err(|e| {
                ApiError::bad_request(format!("the chat template failed: {e}"), Some("messages"))
            })?
    } else {
        // No template: the messages' text, one per line.
        messages
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("content").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let prompt = state
        .tokenizer
        .encode_prompt(&rendered)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
    let in_reasoning = rendered.trim_end().ends_with("<think>");
    let parser = OutputParser::new(in_reasoning, use_tools);
    let stream_it = settings.stream;
    let job = start(&state, "chatcmpl", prompt, settings, top_logprobs, parser)?;
    if stream_it {
        let first = json!({
            "id": job.id, "object": "chat.completion.chunk", "created": now(),
            "model": state.model_id,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                         "logprobs": null, "finish_reason": null}],
        });
        return Ok(stream(job, chat_chunk, Some(first)));
    }
    let (job, p) = collect(job).await?;
    let mut message = json!({"role": "assistant", "content": p.delta.content});
    if !p.delta.reasoning.is_empty() {
        message["reasoning_content"] = json!(p.delta.reasoning);
    }
    if !p.tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls_json(&job.id, &p.tool_calls, false));
        if p.delta.content.trim().is_empty() {
            message["content"] = Value::Null;
        }
    }
    Ok(Json(json!({
        "id": job.id,
        "object": "chat.completion",
        "created": now(),
        "model": state.model_id,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": if job.top_logprobs.is_some() { chat_logprobs(&p.tokens) } else { Value::Null },
            "finish_reason": p.finish.unwrap_or("stop"),
        }],
        "usage": usage(job.prompt_tokens, p.completion_tokens, p.cached_tokens),
    }))
    .into_response())
}

fn chat_chunk(job: &Job, p: &Progress) -> Option<Value> {
    let mut delta = serde_json::Map::new();
    if !p.delta.reasoning.is_empty() {
        delta.insert("reasoning_content".into(), json!(p.delta.reasoning));
    }
    if !p.delta.content.is_empty() {
        delta.insert("content".into(), json!(p.delta.content));
    }
    if !p.tool_calls.is_empty() {
        delta.insert(
            "tool_calls".into(),
            json!(tool_calls_json(&job.id, &p.tool_calls, true)),
        );
    }
    if delta.is_empty() && p.finish.is_none() && p.tokens.is_empty() {
        return None;
    }
    Some(json!({
        "id": job.id,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": job.state.model_id,
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": if job.top_logprobs.is_some() && !p.tokens.is_empty() { chat_logprobs(&p.tokens) } else { Value::Null },
            "finish_reason": p.finish,
        }],
    }))
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match completions_inner(state, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn completions_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let request: api::CompletionRequest = parse(&body)?;
    check_model(&state, request.sampling.model.as_deref())?;
    let settings = request
        .sampling
        .settings(state.default_max_tokens, &state.eos)?;
    if request.echo {
        return Err(ApiError::bad_request(
            "`echo` is not supported",
            Some("echo"),
        ));
    }
    let top_logprobs = match request.logprobs {
        None => None,
        Some(n) if n <= 5 => Some(n as usize),
        Some(n) => {
            return Err(ApiError::bad_request(
                format!("`logprobs` must be at most 5, got {n}"),
                Some("logprobs"),
            ))
        }
    };
    let prompt =
        match &request.prompt {
            api::Prompt::Text(text) => state
                .tokenizer
                .encode_prompt(text)
                .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?,
            api::Prompt::Texts(texts) if texts.len() == 1 => state
                .tokenizer
                .encode_prompt(&texts[0])
                .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?,
            api::Prompt::Texts(_) => {
                return Err(ApiError::bad_request(
                    "`prompt` must be one string (one choice per request)",
                    Some("prompt"),
                ))
            }
            api::Prompt::Tokens(ids) => {
                let vocab = state.tokenizer.vocab_size();
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(ApiError::bad_request(
                        format!("token {bad} is not in the vocabulary ({vocab} tokens)"),
                        Some("prompt"),
                    ));
                }
                ids.clone()
            }
        };
    let parser = OutputParser::new(false, false);
    let stream_it = settings.stream;
    let job = start(&state, "cmpl", prompt, settings, top_logprobs, parser)?;
    if stream_it {
        return Ok(stream(job, completion_chunk, None));
    }
    let (job, p) = collect(job).await?;
    Ok(Json(json!({
        "id": job.id,
        "object": "text_completion",
        "created": now(),
        "model": state.model_id,
        "choices": [{
            "index": 0,
            "text": p.delta.content,
            "logprobs": if job.top_logprobs.is_some() { completion_logprobs(&p.tokens, 0) } else { Value::Null },
            "finish_reason": p.finish.unwrap_or("stop"),
        }],
        "usage": usage(job.prompt_tokens, p.completion_tokens, p.cached_tokens),
    }))
    .into_response())
}

fn completion_chunk(job: &Job, p: &Progress) -> Option<Value> {
    if p.delta.content.is_empty() && p.finish.is_none() {
        return None;
    }
    Some(json!({
        "id": job.id,
        "object": "text_completion",
        "created": now(),
        "model": job.state.model_id,
        "choices": [{
            "index": 0,
            "text": p.delta.content,
            "logprobs": if job.top_logprobs.is_some() { completion_logprobs(&p.tokens, 0) } else { Value::Null },
            "finish_reason": p.finish,
        }],
    }))
}
