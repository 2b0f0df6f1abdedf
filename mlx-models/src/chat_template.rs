//! Chat templates: the Jinja template of a checkpoint (`chat_template` in tokenizer_config.json,
//! as a string or a list of named templates, or a `chat_template.jinja` file), rendered with
//! `minijinja` the way transformers renders it: trimmed and left-stripped blocks, loop controls,
//! Python string and dict methods (`minijinja-contrib`'s pycompat), `raise_exception`,
//! `strftime_now`, and a `tojson` filter that writes JSON as Python's `json.dumps` does
//! (`", "` and `": "` separators, non-ASCII kept, optional `indent`).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// Why a template could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template does not parse.
    #[error("the chat template does not parse: {0:#}")]
    Syntax(JinjaError),
    /// Rendering failed (including the template's own `raise_exception`).
    #[error("the chat template failed: {0:#}")]
    Render(JinjaError),
    /// A list of named templates has no template of the requested name.
    #[error("no chat template named {name:?} (available: {available})")]
    NoSuchTemplate {
        /// The requested name.
        name: String,
        /// The names present.
        available: String,
    },
    /// `chat_template` is neither a string nor a list of `{name, template}`.
    #[error("chat_template must be a string or a list of {{\"name\", \"template\"}} objects")]
    BadShape,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with a role and a text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat template, parsed once.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// The most instructions a render may run (a guard against runaway templates).
const FUEL: u64 = 50_000_000;

impl ChatTemplate {
    /// Parses a template.
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(TemplateError::Syntax)?;
        Ok(ChatTemplate { env })
    }

    /// Picks the template out of a `chat_template` value of tokenizer_config.json: a string,
    /// or a list of `{"name", "template"}` (then `name`, by default `"default"`).
    pub fn select(value: &serde_json::Value, name: Option<&str>) -> Result<String, TemplateError> {
        match value {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Array(items) => {
                let wanted = name.unwrap_or("default");
                let mut names = Vec::new();
                for item in items {
                    let n = item
                        .get("name")
                        .and_then(|v| v.as_str())
                        .ok_or(TemplateError::BadShape)?;
                    let t = item
                        .get("template")
                        .and_then(|v| v.as_str())
                        .ok_or(TemplateError::BadShape)?;
                    if n == wanted {
                        return Ok(t.to_string());
                    }
                    names.push(n.to_string());
                }
                Err(TemplateError::NoSuchTemplate {
                    name: wanted.to_string(),
                    available: names.join(", "),
                })
            }
            _ => Err(TemplateError::BadShape),
        }
    }

    /// Renders the template. `context` holds the variables (`messages`, `add_generation_prompt`,
    /// `bos_token`, `eos_token`, `tools`, ... ; see [`crate::tokenizer::Tokenizer::apply_chat_template`]).
    pub fn render(&self, context: &serde_json::Value) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(TemplateError::Render)?;
        tmpl.render(Value::from_serialize(context))
            .map_err(TemplateError::Render)
    }
}

fn raise_exception(message: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<String, JinjaError> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {format:?}"),
        )
    })?;
    Ok(out)
}

fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<Value> = kwargs.get("indent")?;
    // Accepted for compatibility; keys keep their order either way.
    let _: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else {
                let n = i64::try_from(v.clone()).map_err(|_| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be a number or a string",
                    )
                })?;
                Some(" ".repeat(n.clamp(0, 64) as usize))
            }
        }
    };
    let mut out = String::new();
    python_json(&value, indent.as_deref(), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        let s = format!("{f:e}");
        let plain = format!("{f}");
        // Python switches to exponent notation below 1e-4 and from 1e16.
        if f.abs() < 1e-4 || f.abs() >= 1e16 {
            let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let exp: i32 = exp.parse().unwrap_or(0);
            format!(
                "{mantissa}e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            )
        } else {
            plain
        }
    }
}

/// Writes `value` as Python's `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn python_json(
    value: &Value,
    indent: Option<&str>,
    level: usize,
    out: &mut String,
) -> Result<(), JinjaError> {
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                python_json(item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                match key.as_str() {
                    Some(s) => json_string(s, out),
                    None => json_string(&key.to_string(), out),
                }
                out.push_str(": ");
                let item = value.get_item(key)?;
                python_json(&item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => json_string(&value.to_string(), out),
    }
    Ok(())
}
