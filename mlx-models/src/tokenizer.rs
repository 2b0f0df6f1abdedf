//! The tokenizer of a checkpoint: `tokenizer.json` through the `tokenizers` crate, the chat
//! template (see [`crate::chat_template`]), special tokens from `tokenizer_config.json`, a
//! streaming detokenizer, and the EOS ids (the checkpoint's `eos_token_id`, where
//! `generation_config.json` wins over `config.json`, plus the tokenizer's `eos_token`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use crate::checkpoint::{self, CheckpointError};
use crate::detokenizer::StreamingDetokenizer;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The folder has no `tokenizer.json`.
    #[error("no tokenizer.json in {0}")]
    Missing(PathBuf),
    /// `tokenizer.json` could not be loaded.
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The `tokenizers` error.
        message: String,
    },
    /// A JSON file (tokenizer_config.json, chat_template.json) is malformed.
    #[error("{path} is not valid JSON: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The checkpoint has no chat template.
    #[error("this tokenizer has no chat template")]
    NoChatTemplate,
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Encoding failed.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// Decoding failed.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// Reading the checkpoint's config (for EOS ids) failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// Options of [`Tokenizer::apply_chat_template`].
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Ends the prompt with the start of an assistant turn.
    pub add_generation_prompt: bool,
    /// Ends the prompt right after the last message's content, leaving that message open to be
    /// continued (as transformers' `continue_final_message`: what the template writes after
    /// the content, such as an end-of-turn token, is cut).
    pub continue_final_message: bool,
    /// Tool definitions (JSON schemas), passed as `tools`.
    pub tools: Option<Value>,
    /// Further template variables (for example `enable_thinking`); they override the defaults.
    pub extra: Map<String, Value>,
}

/// A checkpoint's tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    chat_template: Option<Arc<ChatTemplate>>,
    special_tokens: BTreeMap<String, String>,
    eos_token_ids: BTreeSet<u32>,
    has_thinking: bool,
}

fn read_json_file(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| TokenizerError::Config {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f`, turning a panic (of the `tokenizers` crate, on some input it does not check) into
/// its message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string())
    })
}

/// The longest piece a Unigram vocabulary may have. `tokenizers` keeps the pieces in a trie,
/// one level per byte, that it frees recursively: a piece of a few hundred thousand bytes
/// overflows the stack. SentencePiece's own limit is far below (16 by default, 512 at most).
pub const MAX_UNIGRAM_PIECE: usize = 4096;

/// The longest added token (special tokens and the like) a tokenizer may have: `tokenizers`
/// matches them with an automaton whose construction grows faster than linearly with one
/// token's length (a second for 4 KB, 14 s for 16 KB). Real added tokens are a few dozen bytes.
pub const MAX_ADDED_TOKEN: usize = 1024;

/// Refuses what `tokenizers` would load but choke on: an added token longer than
/// [`MAX_ADDED_TOKEN`] bytes, a Unigram piece longer than [`MAX_UNIGRAM_PIECE`] bytes. Reads only
/// `added_tokens[].content`, `model.type` and `model.vocab`, without building them; anything
/// malformed is left for `tokenizers` to report.
fn check_tokenizer_sizes(bytes: &[u8], path: &Path) -> Result<()> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::borrow::Cow;

    /// The byte length of the longest piece of a vocabulary: the first item of each entry of a
    /// list (Unigram's `[piece, score]`), or each key of a map (the other models).
    struct Longest(usize);
    impl<'de> Deserialize<'de> for Longest {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Vocab;
            impl<'de> Visitor<'de> for Vocab {
                type Value = Longest;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a vocabulary")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Longest, A::Error> {
                    let mut longest = 0;
                    while let Some(entry) = seq.next_element::<Entry>()? {
                        longest = longest.max(entry.0);
                    }
                    Ok(Longest(longest))
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Longest, A::Error> {
                    let mut longest = 0;
                    while let Some((k, _)) = map.next_entry::<Cow<'de, str>, IgnoredAny>()? {
                        longest = longest.max(k.len());
                    }
                    Ok(Longest(longest))
                }
            }
            d.deserialize_any(Vocab)
        }
    }
    /// The byte length of a `[piece, score]` entry's piece.
    struct Entry(usize);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Pair;
            impl<'de> Visitor<'de> for Pair {
                type Value = Entry;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("[piece, score]")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Entry, A::Error> {
                    let piece: Cow<'de, str> = seq.next_element()?.unwrap_or_default();
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Entry(piece.len()))
                }
            }
            d.deserialize_seq(Pair)
        }
    }
    #[derive(Deserialize)]
    struct Added<'a> {
        #[serde(borrow)]
        content: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Model {
        #[serde(rename = "type")]
        kind: Option<String>,
        vocab: Option<Longest>,
    }
    #[derive(Deserialize)]
    struct File<'a> {
        #[serde(borrow)]
        added_tokens: Option<Vec<Added<'a>>>,
        model: Option<Model>,
    }
    let Ok(file) = serde_json::from_slice::<File>(bytes) else {
        return Ok(());
    };
    let too_long = |message: String| TokenizerError::Load {
        path: path.to_path_buf(),
        message,
    };
    let added = file.added_tokens.iter().flatten();
    if let Some(t) = added.map(|t| t.content.len()).max() {
        if t > MAX_ADDED_TOKEN {
            return Err(too_long(format!(
                "an added token is {t} bytes long (at most {MAX_ADDED_TOKEN})"
            )));
        }
    }
    if let Some(Model {
        kind: Some(kind),
        vocab: Some(Longest(longest)),
    }) = file.model
    {
        if kind == "Unigram" && longest > MAX_UNIGRAM_PIECE {
            return Err(too_long(format!(
                "the Unigram vocabulary has a piece of {longest} bytes (at most {MAX_UNIGRAM_PIECE})"
            )));
        }
    }
    Ok(())
}

/// A special token as written in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a checkpoint folder: `tokenizer.json` (required),
    /// `tokenizer_config.json`, `chat_template.jinja` / `chat_template.json` and the EOS ids of
    /// `config.json` / `generation_config.json` when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::Missing(dir.to_path_buf()));
        }
        let bytes = std::fs::read(&path).map_err(|source| TokenizerError::Io {
            path: path.clone(),
            source,
        })?;
        check_tokenizer_sizes(&bytes, &path)?;
        // The `tokenizers` crate panics on some malformed files (a `Precompiled` normalizer
        // whose charsmap is not valid base64 of a charsmap, for one): that is a load error.
        let inner = match guarded(|| tokenizers::Tokenizer::from_bytes(&bytes)) {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return Err(TokenizerError::Load {
                    path: path.clone(),
                    message: e.to_string(),
                })
            }
            Err(what) => {
                return Err(TokenizerError::Load {
                    path: path.clone(),
                    message: format!("the tokenizers crate failed on it: {what}"),
                })
            }
        };
        // As transformers encodes a prompt: no truncation and no padding, whatever tokenizer.json
        // says (its settings are for batches of training text; `tokenizers` even panics at
        // encode time on a truncation whose stride is not below the length left after the
        // special tokens).
        let mut inner = inner;
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Load {
                path: path.clone(),
                message: e.to_string(),
            })?
            .with_padding(None);
        let config = read_json_file(&dir.join("tokenizer_config.json"))?.unwrap_or(json!({}));

        let mut special_tokens = BTreeMap::new();
        for name in [
            "bos_token",
            "eos_token",
            "unk_token",
            "pad_token",
            "sep_token",
            "cls_token",
            "mask_token",
        ] {
            if let Some(t) = config.get(name).and_then(token_text) {
                special_tokens.insert(name.to_string(), t);
            }
        }

        // chat_template.jinja wins over tokenizer_config.json's, which wins over
        // chat_template.json's (as transformers loads them).
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            Some(
                std::fs::read_to_string(&jinja).map_err(|source| TokenizerError::Io {
                    path: jinja.clone(),
                    source,
                })?,
            )
        } else if let Some(t) = config.get("chat_template").filter(|v| !v.is_null()) {
            Some(ChatTemplate::select(t, None)?)
        } else if let Some(t) = read_json_file(&dir.join("chat_template.json"))?
            .and_then(|v| v.get("chat_template").cloned())
        {
            Some(ChatTemplate::select(&t, None)?)
        } else {
            None
        };
        let chat_template = source
            .map(|s| ChatTemplate::new(&s))
            .transpose()?
            .map(Arc::new);

        let mut eos_token_ids = BTreeSet::new();
        if dir.join("config.json").is_file() {
            eos_token_ids.extend(checkpoint::eos_token_ids(dir)?);
        }
        if let Some(id) = special_tokens
            .get("eos_token")
            .and_then(|t| inner.token_to_id(t))
        {
            eos_token_ids.insert(id);
        }
        let has_thinking =
            inner.token_to_id("<think>").is_some() && inner.token_to_id("</think>").is_some();
        Ok(Tokenizer {
            inner: Arc::new(inner),
            chat_template,
            special_tokens,
            eos_token_ids,
            has_thinking,
        })
    }

    /// Assembles a tokenizer from its parts, for checkpoint formats that carry no
    /// `tokenizer.json` (GGUF): the `tokenizers` tokenizer, the chat template's source, the
    /// special tokens by role (`bos_token`, `eos_token`, ...) and the EOS ids.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        chat_template: Option<&str>,
        special_tokens: BTreeMap<String, String>,
        eos_token_ids: BTreeSet<u32>,
    ) -> Result<Self> {
        let chat_template = chat_template
            .map(ChatTemplate::new)
            .transpose()?
            .map(Arc::new);
        let has_thinking =
            inner.token_to_id("<think>").is_some() && inner.token_to_id("</think>").is_some();
        Ok(Tokenizer {
            inner: Arc::new(inner),
            chat_template,
            special_tokens,
            eos_token_ids,
            has_thinking,
        })
    }

    /// The `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The EOS token ids.
    pub fn eos_token_ids(&self) -> &BTreeSet<u32> {
        &self.eos_token_ids
    }

    /// Adds an EOS token, given as an id or as a token's text.
    pub fn add_eos_token(&mut self, token: &str) -> Result<u32> {
        let id = match token.parse::<u32>() {
            Ok(id) => id,
            Err(_) => self.inner.token_to_id(token).ok_or_else(|| {
                TokenizerError::Encode(format!("{token:?} is not a token of this tokenizer"))
            })?,
        };
        self.eos_token_ids.insert(id);
        Ok(id)
    }

    /// The special tokens of tokenizer_config.json (`bos_token`, `eos_token`, ...).
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// Whether the checkpoint has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text; `add_special_tokens` applies the tokenizer's post-processor (BOS, ...).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        // `tokenizers` panics on some tokenizer.json files that it loads (a template
        // post-processor naming a special token it does not define, for one).
        let enc = guarded(|| self.inner.encode(text, add_special_tokens))
            .map_err(|what| TokenizerError::Encode(format!("the tokenizers crate failed: {what}")))?
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a prompt as the reference does: special tokens are added unless the text already
    /// starts with the BOS token (as a rendered chat template usually does).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let add = match self.special_tokens.get("bos_token") {
            Some(bos) => !text.starts_with(bos.as_str()),
            None => true,
        };
        self.encode(text, add)
    }

    /// Decodes tokens (special tokens kept unless `skip_special_tokens`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        guarded(|| self.inner.decode(ids, skip_special_tokens))
            .map_err(|what| TokenizerError::Decode(format!("the tokenizers crate failed: {what}")))?
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// A fresh streaming detokenizer.
    pub fn detokenizer(&self) -> StreamingDetokenizer {
        StreamingDetokenizer::new(Arc::clone(&self.inner))
    }

    /// Renders the chat template over `messages`. The template sees `messages`,
    /// `add_generation_prompt`, the special tokens (`bos_token`, `eos_token`, ...), `tools` when
    /// given, `enable_thinking` (true when the vocabulary has `<think>` and `</think>`, as the
    /// reference sets it) and `options.extra`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        let final_content = messages.last().map(|m| m.content.clone());
        let messages =
            serde_json::to_value(messages).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let rendered = self.render_chat_template(template, messages, options)?;
        if !options.continue_final_message {
            return Ok(rendered);
        }
        let content = final_content.ok_or_else(|| {
            TokenizerError::Encode("continue_final_message needs a message".into())
        })?;
        continue_final(rendered, &content)
    }

    /// As [`Tokenizer::apply_chat_template`], with messages as arbitrary JSON (tool calls,
    /// multi-part content, ...).
    pub fn apply_chat_template_json(
        &self,
        messages: &Value,
        options: &ChatOptions,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        self.render_chat_template(template, messages.clone(), options)
    }

    fn render_chat_template(
        &self,
        template: &ChatTemplate,
        messages: Value,
        options: &ChatOptions,
    ) -> Result<String> {
        let mut ctx = Map::new();
        for (k, v) in &self.special_tokens {
            ctx.insert(k.clone(), Value::String(v.clone()));
        }
        ctx.insert("messages".into(), messages);
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(options.add_generation_prompt),
        );
        ctx.insert("enable_thinking".into(), Value::Bool(self.has_thinking));
        if let Some(tools) = &options.tools {
            ctx.insert("tools".into(), tools.clone());
        }
        for (k, v) in &options.extra {
            ctx.insert(k.clone(), v.clone());
        }
        Ok(template.render(&Value::Object(ctx))?)
    }
}

/// The rendering cut right after the final message's content, as transformers cuts it for
/// `continue_final_message`: at the content's last occurrence (stripped of surrounding
/// whitespace when the template trimmed it).
fn continue_final(rendered: String, content: &str) -> Result<String> {
    let stripped = content.trim();
    let at = rendered.rfind(stripped).ok_or_else(|| {
        TokenizerError::Encode(
            "continue_final_message: the final message's content is not in the rendered \
             template"
                .into(),
        )
    })?;
    let lead = content.trim_start();
    let end = if rendered[at..].starts_with(lead) {
        at + lead.len()
    } else {
        at + stripped.len()
    };
    Ok(rendered[..end].to_string())
}
