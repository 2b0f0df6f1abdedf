//! What the model writes, split for the OpenAI API: reasoning (`<think>...</think>`) apart
//! from the answer, and tool calls in the formats our architectures' chat templates teach:
//! Hermes / Qwen (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), Mistral
//! (`[TOOL_CALLS][{"name": ..., "arguments": {...}}]`, or `[TOOL_CALLS]name[ARGS]{...}`) and
//! Llama 3 (a JSON object `{"name": ..., "parameters": {...}}`, after `<|python_tag|>` or
//! alone).
//!
//! Text comes in pieces as it is generated; [`OutputParser::push`] returns what can be
//! streamed now (a marker split across pieces is held back until it is whole), and
//! [`OutputParser::finish`] what remains and the tool calls.

use serde_json::{json, Value};

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const TOOL_MARKERS: [&str; 3] = ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];

/// Text that can be sent now: reasoning and answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    /// Inside `<think>`.
    pub reasoning: String,
    /// The answer.
    pub content: String,
}

/// One parsed tool call, as OpenAI returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

impl ToolCall {
    pub fn to_json(&self, index: usize, id: &str) -> Value {
        json!({
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Not yet known whether the answer starts with `<think>` (only leading whitespace seen).
    Start,
    Reasoning,
    Content,
    /// A tool call's start was seen: everything from there is held for [`OutputParser::finish`].
    Tools,
}

/// Splits generated text into reasoning, answer and tool calls.
#[derive(Debug)]
pub struct OutputParser {
    mode: Mode,
    /// Whether tool calls are parsed (the request gave tools).
    tools: bool,
    /// Text not yet sent: a possible marker's start, or (in `Tools`) the tool-call text.
    held: String,
}

/// The longest suffix of `text` that is a proper prefix of one of `markers`.
fn partial_marker(text: &str, markers: &[&str]) -> usize {
    let mut best = 0;
    for m in markers {
        for len in (1..m.len()).rev() {
            if len > text.len() || len <= best {
                continue;
            }
            if text.is_char_boundary(text.len() - len) && m.starts_with(&text[text.len() - len..]) {
                best = len;
                break;
            }
        }
    }
    best
}

impl OutputParser {
    /// A parser for one answer: `in_reasoning` when the prompt already opened `<think>` (the
    /// template of a reasoning model in thinking mode), `tools` when tool calls are parsed.
    pub fn new(in_reasoning: bool, tools: bool) -> Self {
        OutputParser {
            mode: if in_reasoning {
                Mode::Reasoning
            } else {
                Mode::Start
            },
            tools,
            held: String::new(),
        }
    }

    /// Adds a piece of generated text; returns what can be sent now.
    pub fn push(&mut self, piece: &str) -> Delta {
        self.held.push_str(piece);
        let mut out = Delta::default();
        loop {
            match self.mode {
                Mode::Tools => return out,
                Mode::Start => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        return out;
                    }
                    if trimmed.starts_with(THINK_OPEN) {
                        let at = self.held.len() - trimmed.len() + THINK_OPEN.len();
                        self.held.drain(..at);
                        self.mode = Mode::Reasoning;
                        continue;
                    }
                    if THINK_OPEN.starts_with(trimmed) {
                        return out;
                    }
                    // A bare JSON object may be a Llama 3 tool call: hold it to the end.
                    if self.tools && trimmed.starts_with('{') {
                        self.mode = Mode::Tools;
                        return out;
                    }
                    self.mode = Mode::Content;
                }
                Mode::Reasoning => {
                    if let Some(at) = self.held.find(THINK_CLOSE) {
                        out.reasoning.push_str(&self.held[..at]);
                        self.held.drain(..at + THINK_CLOSE.len());
                        // The answer after the reasoning starts afresh (whitespace trimmed).
                        let rest = self.held.trim_start().to_owned();
                        self.held = rest;
                        self.mode = Mode::Content;
                        if self.tools && self.held.starts_with('{') {
                            self.mode = Mode::Tools;
                            return out;
                        }
                        continue;
                    }
                    let keep = partial_marker(&self.held, &[THINK_CLOSE]);
                    let send = self.held.len() - keep;
                    out.reasoning.push_str(&self.held[..send]);
                    self.held.drain(..send);
                    return out;
                }
                Mode::Content => {
                    if self.tools {
                        if let Some(at) =
                            TOOL_MARKERS.iter().filter_map(|m| self.held.find(m)).min()
                        {
                            out.content.push_str(&self.held[..at]);
                            self.held.drain(..at);
                            self.mode = Mode::Tools;
                            return out;
                        }
                    }
                    let keep = if self.tools {
                        partial_marker(&self.held, &TOOL_MARKERS)
                    } else {
                        0
                    };
                    let send = self.held.len() - keep;
                    out.content.push_str(&self.held[..send]);
                    self.held.drain(..send);
                    return out;
                }
            }
        }
    }

    /// The end of the answer: what was held back, and the tool calls (where the held text
    /// parses as tool calls; otherwise it is sent as text).
    pub fn finish(&mut self) -> (Delta, Vec<ToolCall>) {
        let held = std::mem::take(&mut self.held);
        let mut out = Delta::default();
        match self.mode {
            Mode::Reasoning => out.reasoning = held,
            Mode::Start | Mode::Content => out.content = held,
            Mode::Tools => match parse_tool_calls(&held) {
                Some((before, calls)) if !calls.is_empty() => {
                    out.content = before;
                    return (out, calls);
                }
                _ => out.content = held,
            },
        }
        (out, Vec::new())
    }
}

/// The tool calls in `text` (from a tool marker or a bare JSON object on), with the text before
/// the first one. `None` when it does not parse.
pub fn parse_tool_calls(text: &str) -> Option<(String, Vec<ToolCall>)> {
    if let Some(at) = text.find("<tool_call>") {
        return hermes(&text[at..]).map(|calls| (text[..at].to_owned(), calls));
    }
    if let Some(at) = text.find("[TOOL_CALLS]") {
        return mistral(&text[at + "[TOOL_CALLS]".len()..]).map(|c| (text[..at].to_owned(), c));
    }
    let (before, rest) = match text.find("<|python_tag|>") {
        Some(at) => (&text[..at], &text[at + "<|python_tag|>".len()..]),
        None => ("", text),
    };
    llama_json(rest).map(|calls| (before.to_owned(), calls))
}

/// A call object: `name` and `arguments` (or `parameters`), the arguments as a JSON string.
fn call_of(value: &Value) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?.to_owned();
    let args = value
        .get("arguments")
        .or_else(|| value.get("parameters"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ToolCall { name, arguments })
}

/// `<tool_call>{...}</tool_call>` blocks (the last one may lack its closing tag).
fn hermes(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    for block in text.split("<tool_call>").skip(1) {
        let body = block.split("</tool_call>").next()?.trim();
        let value: Value = serde_json::from_str(body).ok()?;
        calls.push(call_of(&value)?);
    }
    Some(calls)
}

/// `[{"name": ..., "arguments": ...}, ...]`, or `name[ARGS]{...}` (repeated after further
/// `[TOOL_CALLS]` markers).
fn mistral(text: &str) -> Option<Vec<ToolCall>> {
    let text = text.trim();
    if text.starts_with('[') || text.starts_with('{') {
        let value: Value = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .next()?
            .ok()?;
        return match value {
            Value::Array(items) => items.iter().map(call_of).collect(),
            other => call_of(&other).map(|c| vec![c]),
        };
    }
    let mut calls = Vec::new();
    for part in text.split("[TOOL_CALLS]") {
        let (name, args) = part.split_once("[ARGS]")?;
        let args: Value = serde_json::Deserializer::from_str(args.trim())
            .into_iter::<Value>()
            .next()?
            .ok()?;
        calls.push(ToolCall {
            name: name.trim().to_owned(),
            arguments: args.to_string(),
        });
    }
    Some(calls)
}

/// One JSON object (or several separated by `;`) with `name` and `parameters`.
fn llama_json(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    for value in
        serde_json::Deserializer::from_str(text.trim().trim_end_matches(';')).into_iter::<Value>()
    {
        let value = value.ok()?;
        calls.push(call_of(&value)?);
    }
    Some(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(in_reasoning: bool, tools: bool, pieces: &[&str]) -> (Delta, Vec<ToolCall>) {
        let mut p = OutputParser::new(in_reasoning, tools);
        let mut all = Delta::default();
        for piece in pieces {
            let d = p.push(piece);
            all.reasoning.push_str(&d.reasoning);
            all.content.push_str(&d.content);
        }
        let (d, calls) = p.finish();
        all.reasoning.push_str(&d.reasoning);
        all.content.push_str(&d.content);
        (all, calls)
    }

    #[test]
    fn think_blocks_split_across_pieces_become_reasoning() {
        let (d, calls) = run(
            false,
            false,
            &["<th", "ink>plan", " it</th", "ink>\n\nAnswer."],
        );
        assert_eq!(d.reasoning, "plan it");
        assert_eq!(d.content, "Answer.");
        assert!(calls.is_empty());
        let (d, _) = run(true, false, &["already thinking", "</think>", "done"]);
        assert_eq!(
            (d.reasoning.as_str(), d.content.as_str()),
            ("already thinking", "done")
        );
        let (d, _) = run(false, false, &["no ", "thinking <think> here"]);
        assert_eq!(d.content, "no thinking <think> here");
    }

    #[test]
    fn hermes_tool_calls_are_parsed_and_the_text_before_kept() {
        let (d, calls) = run(
            false,
            true,
            &[
                "Let me look.\n<tool",
                "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>",
            ],
        );
        assert_eq!(d.content, "Let me look.\n");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].arguments, "{}");
    }

    #[test]
    fn mistral_and_llama_tool_calls_are_parsed() {
        let (_, calls) = run(
            false,
            true,
            &["[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}]"],
        );
        assert_eq!(
            calls,
            vec![ToolCall {
                name: "f".into(),
                arguments: r#"{"x":1}"#.into()
            }]
        );
        let (_, calls) = run(false, true, &["[TOOL_CALLS]f[ARGS]{\"x\": 2}"]);
        assert_eq!(calls[0].arguments, r#"{"x":2}"#);
        let (d, calls) = run(
            false,
            true,
            &["{\"name\": \"g\", \"parameters\": {\"y\": \"z\"}}"],
        );
        assert_eq!(calls[0].name, "g");
        assert!(d.content.is_empty());
    }

    #[test]
    fn text_that_is_not_a_tool_call_stays_text() {
        let (d, calls) = run(false, true, &["{not json at all"]);
        assert!(calls.is_empty());
        assert_eq!(d.content, "{not json at all");
        let (d, calls) = run(false, true, &["<tool_call>{broken</tool_call>"]);
        assert!(calls.is_empty());
        assert_eq!(d.content, "<tool_call>{broken</tool_call>");
        // Without tools, markers are plain text.
        let (d, calls) = run(false, false, &["<tool_call>{\"name\": \"f\"}</tool_call>"]);
        assert!(calls.is_empty());
        assert!(d.content.starts_with("<tool_call>"));
    }
}
