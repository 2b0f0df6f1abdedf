//! Chat templates: the Jinja template of a checkpoint (`chat_template` in tokenizer_config.json,
//! as a string or a list of named templates, or a `chat_template.jinja` file), rendered with
//! `minijinja` the way transformers renders it: trimmed and left-stripped blocks, loop controls,
//! Python string and dict methods (`minijinja-contrib`'s pycompat), `raise_exception`,
//! `strftime_now`, and a `tojson` filter that writes JSON as Python's `json.dumps` does
//! (`", "` and `": "` separators, non-ASCII kept, optional `indent`).
//!
//! A template comes with the checkpoint, so it is held to limits: a number of instructions
//! ([`FUEL`]), the size of the output ([`MAX_OUTPUT`], `tojson` included), the padding that
//! `indent` and the format filters may add ([`MAX_WIDTH`]), the size of a `replace`; and a panic of
//! the template engine on some template is reported as [`TemplateError::Panicked`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, Value};
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
    /// Rendering wrote more than [`MAX_OUTPUT`] bytes.
    #[error("the chat template failed: its output is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The template engine panicked on this template (a bug of the engine, reported rather
    /// than let through).
    #[error("the chat template failed: the template engine crashed on it ({0})")]
    Panicked(String),
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
pub const FUEL: u64 = 50_000_000;

/// The most bytes a render may write, `tojson` output included: about four million tokens of
/// text, far beyond any context window (a guard against templates that print without end).
pub const MAX_OUTPUT: usize = 16 << 20;

/// The most bytes a render may format anywhere, output captured by macros and `set` blocks
/// included (each nesting level formats its inner output again): the output limit's work
/// bound. Without it a macro writing a 100 MB string and calling itself ran for 23 s before
/// minijinja's recursion limit, the output it would give never reaching the writer.
pub const MAX_FORMATTED: usize = 4 * MAX_OUTPUT;

thread_local! {
    /// What the render on this thread has formatted so far, and whether it went past
    /// [`MAX_FORMATTED`].
    static FORMATTED: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

/// minijinja's formatter, counting what it formats (strings by their bytes, other values by
/// their items) against [`MAX_FORMATTED`].
fn counting_formatter(
    out: &mut minijinja::Output,
    state: &State,
    value: &Value,
) -> Result<(), JinjaError> {
    let n = match value.as_str() {
        Some(s) => s.len(),
        None => value.len().unwrap_or(1),
    };
    let (done, _) = FORMATTED.with(|c| c.get());
    let total = done.saturating_add(n);
    if total > MAX_FORMATTED {
        FORMATTED.with(|c| c.set((total, true)));
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "the chat template formats too much",
        ));
    }
    FORMATTED.with(|c| c.set((total, false)));
    minijinja::escape_formatter(out, state, value)
}

/// The widest padding that `indent`, `format` and `str.format` may produce (real templates
/// indent by a few spaces).
pub const MAX_WIDTH: usize = 4096;

impl ChatTemplate {
    /// Parses a template.
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_formatter(counting_formatter);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("indent", indent);
        env.add_filter("format", format);
        env.add_filter("replace", replace);
        env.add_filter("join", join);
        let source = source.to_string();
        match catch_unwind(AssertUnwindSafe(|| env.add_template_owned("chat", source))) {
            Ok(Ok(())) => Ok(ChatTemplate { env }),
            Ok(Err(e)) => Err(TemplateError::Syntax(e)),
            Err(panic) => Err(TemplateError::Panicked(panic_message(panic.as_ref()))),
        }
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
    ///
    /// Output past [`MAX_OUTPUT`] bytes stops the render ([`TemplateError::TooLarge`]).
    pub fn render(&self, context: &serde_json::Value) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(TemplateError::Render)?;
        let mut out = Bounded {
            buf: Vec::new(),
            over: false,
        };
        let ctx = Value::from_serialize(context);
        FORMATTED.with(|c| c.set((0, false)));
        let result = catch_unwind(AssertUnwindSafe(|| {
            tmpl.render_captured_to(ctx, &mut out).map(drop)
        }));
        let (_, formatted_too_much) = FORMATTED.with(|c| c.get());
        match result {
            Err(panic) => Err(TemplateError::Panicked(panic_message(panic.as_ref()))),
            Ok(Err(_)) if out.over => Err(TemplateError::TooLarge { limit: MAX_OUTPUT }),
            Ok(Err(_)) if formatted_too_much => Err(TemplateError::TooLarge { limit: MAX_OUTPUT }),
            Ok(Err(e)) => Err(TemplateError::Render(e)),
            // minijinja writes whole `str`s, so the bytes are UTF-8.
            Ok(Ok(())) => Ok(String::from_utf8(out.buf)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
        }
    }
}

/// The render's output, refused past [`MAX_OUTPUT`] bytes.
struct Bounded {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.over = true;
            return Err(std::io::Error::other(
                "the chat template's output is too large",
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

fn too_wide(what: &str, width: usize) -> JinjaError {
    JinjaError::new(
        ErrorKind::InvalidOperation,
        format!("{what}: a width of {width} is more than the {MAX_WIDTH} allowed"),
    )
}

/// minijinja's `join` (items as text, the joiner between them), stopped once the result
/// passes [`MAX_OUTPUT`] bytes: a sequence repeated without limit (`['a' * 1000] * 10**8`)
/// would otherwise be joined into gigabytes before anything is printed.
fn join(value: &Value, joiner: Option<String>) -> Result<String, JinjaError> {
    use std::fmt::Write as _;
    let joiner = joiner.unwrap_or_default();
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&joiner);
        }
        match item.as_str() {
            Some(s) => out.push_str(s),
            None => {
                let _ = write!(out, "{item}");
            }
        }
        if out.len() > MAX_OUTPUT {
            FORMATTED.with(|c| c.set((c.get().0, true)));
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "join: the result is too large",
            ));
        }
    }
    Ok(out)
}

/// minijinja's `indent`, with the width limited to [`MAX_WIDTH`].
fn indent(
    value: minijinja::value::StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, JinjaError> {
    let width = match width {
        Some(w) => Some(w),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    if let Some(w) = width.filter(|&w| w > MAX_WIDTH) {
        return Err(too_wide("indent", w));
    }
    minijinja::filters::indent(value, width, first, blank, kwargs)
}

/// The widths and precisions of a printf-style (`%-10s`) or `str.format` (`{:>10}`) format
/// string, checked against [`MAX_WIDTH`].
fn check_format_widths(what: &str, format: &str) -> Result<(), JinjaError> {
    let mut in_spec = false;
    let mut in_braces = false;
    let mut number: Option<usize> = None;
    for c in format.chars() {
        match c {
            '0'..='9' if in_spec => {
                let d = c as usize - '0' as usize;
                let n = number.unwrap_or(0).saturating_mul(10).saturating_add(d);
                if n > MAX_WIDTH {
                    return Err(too_wide(what, n));
                }
                number = Some(n);
                continue;
            }
            '%' if !in_braces => in_spec = !in_spec,
            '{' => in_braces = true,
            '}' => {
                in_braces = false;
                in_spec = false;
            }
            ':' if in_braces => in_spec = true,
            '-' | '+' | ' ' | '#' | '.' | ',' | '_' | '<' | '>' | '^' | '=' | '*' if in_spec => {}
            _ if in_spec && !in_braces => in_spec = false,
            _ => {}
        }
        number = None;
    }
    Ok(())
}

/// minijinja's `format` filter, with its widths limited to [`MAX_WIDTH`].
fn format(state: &State, format: &Value, args: Rest<Value>) -> Result<Value, JinjaError> {
    if let Some(f) = format.as_str() {
        check_format_widths("format", f)?;
    }
    minijinja::filters::format(state, format, args)
}

/// The size of `s.replace(from, to)` at most, checked against [`MAX_OUTPUT`].
fn check_replace(s: &str, from: &str, to: &str) -> Result<(), JinjaError> {
    if to.len() <= from.len() {
        return Ok(());
    }
    let count = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from).count()
    };
    let size = count
        .checked_mul(to.len() - from.len())
        .and_then(|n| n.checked_add(s.len()));
    match size {
        Some(n) if n <= MAX_OUTPUT => Ok(()),
        _ => Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("replace: the result would be larger than {MAX_OUTPUT} bytes"),
        )),
    }
}

/// minijinja's `replace` filter, with the result limited to [`MAX_OUTPUT`] bytes.
fn replace(state: &State, value: &Value, from: &Value, to: &Value) -> Result<Value, JinjaError> {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    check_replace(&text(value), &text(from), &text(to))?;
    let input = |v| minijinja::value::StringInput::new(state, v);
    minijinja::filters::replace(state, input(value)?, input(from)?, input(to)?)
}

/// Python's string, dict and list methods (minijinja-contrib's pycompat), with `str.format`
/// and `str.replace` held to the same limits as the filters.
fn python_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    if let Some(s) = value.as_str() {
        match (method, args) {
            ("format", _) => check_format_widths("str.format", s)?,
            ("replace", [from, to, ..]) => {
                if let (Some(from), Some(to)) = (from.as_str(), to.as_str()) {
                    check_replace(s, from, to)?;
                }
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
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
                if s.len() > MAX_WIDTH {
                    return Err(too_wide("tojson", s.len()));
                }
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
    if out.len() > MAX_OUTPUT {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("tojson: the output is larger than {MAX_OUTPUT} bytes"),
        ));
    }
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
