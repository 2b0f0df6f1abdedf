//! The OpenAI request bodies we accept, checked field by field: a wrong type, a value out of
//! range or an unsupported setting is a 400 in OpenAI's error shape naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use mlx_models::engine::MAX_TOP_LOGPROBS;
use mlx_models::sampling::{LogitsConfig, SamplerConfig};

/// An error response: status and OpenAI's `{"error": {...}}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

/// `prompt`: a string or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
    /// The number of top log-probabilities per token (the legacy API's `logprobs`).
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
}

/// Settings of one generation, checked.
#[derive(Debug)]
pub struct Settings {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub logits: LogitsConfig,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

fn finite(
    value: Option<f64>,
    name: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && range.contains(&v) => Ok(Some(v as f32)),
        Some(v) => Err(ApiError::bad_request(
            format!(
                "`{name}` must be between {} and {}, got {v}",
                range.start(),
                range.end()
            ),
            Some(name),
        )),
    }
}

impl Sampling {
    /// The checked settings, `default_max_tokens` where the request gives none; `eos` are the
    /// tokens XTC never removes.
    pub fn settings(&self, default_max_tokens: usize, eos: &[u32]) -> Result<Settings, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad_request(
                    format!("`n` must be 1 (one choice per request), got {n}"),
                    Some("n"),
                ));
            }
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => (m, "max_completion_tokens"),
            (None, Some(m)) => (m, "max_tokens"),
            (None, None) => (default_max_tokens as u64, "max_tokens"),
        };
        if max_tokens.0 == 0 || max_tokens.0 > 1 << 24 {
            return Err(ApiError::bad_request(
                format!(
                    "`{}` must be between 1 and {}, got {}",
                    max_tokens.1,
                    1 << 24,
                    max_tokens.0
                ),
                Some(max_tokens.1),
            ));
        }
        let temperature = finite(self.temperature, "temperature", 0.0..=100.0)?.unwrap_or(0.0);
        let top_p = finite(self.top_p, "top_p", 0.0..=1.0)?.unwrap_or(1.0);
        let min_p = finite(self.min_p, "min_p", 0.0..=1.0)?.unwrap_or(0.0);
        let top_k = match self.top_k {
            None => 0,
            Some(k) if (0..=1 << 20).contains(&k) => k as usize,
            // OpenAI-style clients send -1 for "off".
            Some(-1) => 0,
            Some(k) => {
                return Err(ApiError::bad_request(
                    format!("`top_k` must be 0 (off) or positive, got {k}"),
                    Some("top_k"),
                ))
            }
        };
        let presence = finite(self.presence_penalty, "presence_penalty", -2.0..=2.0)?;
        let frequency = finite(self.frequency_penalty, "frequency_penalty", -2.0..=2.0)?;
        let repetition = finite(self.repetition_penalty, "repetition_penalty", 0.0..=10.0)?;
        let mut logit_bias = BTreeMap::new();
        for (token, bias) in self.logit_bias.iter().flatten() {
            let id: u32 = token.parse().map_err(|_| {
                ApiError::bad_request(
                    format!("`logit_bias` keys are token ids, got {token:?}"),
                    Some("logit_bias"),
                )
            })?;
            let bias = finite(Some(*bias), "logit_bias", -100.0..=100.0)?.unwrap_or(0.0);
            logit_bias.insert(id, bias);
        }
        let stops = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stops.len() > 16 || stops.iter().any(|s| s.is_empty() || s.len() > 1024) {
            return Err(ApiError::bad_request(
                "`stop` must be at most 16 non-empty strings of at most 1024 bytes",
                Some("stop"),
            ));
        }
        Ok(Settings {
            max_tokens: max_tokens.0 as usize,
            sampler: SamplerConfig {
                temperature,
                top_p: if top_p >= 1.0 { 0.0 } else { top_p },
                min_p,
                top_k,
                xtc_special_tokens: eos.to_vec(),
                seed: self.seed,
                ..Default::default()
            },
            logits: LogitsConfig {
                logit_bias,
                repetition_penalty: repetition,
                presence_penalty: presence,
                frequency_penalty: frequency,
                ..Default::default()
            },
            stops,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }
}

/// `top_logprobs` of a chat request, checked: `Some(n)` when `logprobs` is on.
pub fn chat_logprobs(request: &ChatRequest) -> Result<Option<usize>, ApiError> {
    match (request.logprobs, request.top_logprobs) {
        (false, Some(_)) => Err(ApiError::bad_request(
            "`top_logprobs` needs `logprobs: true`",
            Some("top_logprobs"),
        )),
        (false, None) => Ok(None),
        (true, n) => {
            let n = n.unwrap_or(0);
            if n > MAX_TOP_LOGPROBS as u64 {
                return Err(ApiError::bad_request(
                    format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}, got {n}"),
                    Some("top_logprobs"),
                ));
            }
            Ok(Some(n as usize))
        }
    }
}

/// The messages as the chat template wants them: roles checked, content given as text parts
/// joined into one string.
pub fn template_messages(messages: &[Value]) -> Result<Value, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` is empty",
            Some("messages"),
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Some(obj) = m.as_object() else {
            return Err(ApiError::bad_request(
                format!("`{param}` must be an object"),
                Some(&param),
            ));
        };
        let role = obj.get("role").and_then(Value::as_str).unwrap_or_default();
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return Err(ApiError::bad_request(
                format!(
                    "`{param}.role` must be system, developer, user, assistant or tool, got {:?}",
                    obj.get("role")
                ),
                Some(&param),
            ));
        }
        let mut message = obj.clone();
        // transformers' templates know `system`, not OpenAI's newer `developer`.
        if role == "developer" {
            message.insert("role".into(), json!("system"));
        }
        match obj.get("content") {
            // As the reference's server does: templates concatenate the content.
            None | Some(Value::Null) => {
                message.insert("content".into(), Value::String(String::new()));
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(ApiError::bad_request(
                                format!("`{param}.content`: only text parts are supported"),
                                Some(&param),
                            ))
                        }
                    }
                }
                message.insert("content".into(), Value::String(text));
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    format!("`{param}.content` must be a string or a list of text parts"),
                    Some(&param),
                ))
            }
        }
        // Templates iterate over tool-call arguments as objects; OpenAI sends JSON strings.
        if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
            for call in calls {
                if let Some(args) = call.pointer_mut("/function/arguments") {
                    if let Value::String(s) = args {
                        if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                            *args = parsed;
                        }
                    }
                }
            }
        }
        out.push(Value::Object(message));
    }
    Ok(Value::Array(out))
}
