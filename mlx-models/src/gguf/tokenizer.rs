//! The tokenizer of a GGUF file, from its `tokenizer.ggml.*` metadata: a byte-level BPE
//! `tokenizers` tokenizer (vocabulary, merges, control tokens as special added tokens, BOS/EOS
//! handling), the pre-tokenizer that `tokenizer.ggml.pre` names, and the chat template of
//! `tokenizer.chat_template`.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers below.
//! Anything else is refused by name rather than guessed, since a wrong split gives other ids.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde_json::{json, Map, Value};

use super::{GgufCheckpoint, GgufError};
use crate::tokenizer::{Tokenizer, TokenizerError, MAX_ADDED_TOKEN};

/// GGUF token types (`tokenizer.ggml.token_type`).
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// llama.cpp's pre-tokenizer names and their `tokenizers` equivalent.
fn pre_tokenizer(pre: &str) -> Option<Value> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        // GPT-2's own split, which the byte-level pre-tokenizer applies.
        "gpt-2" | "gpt2" => Some(byte_level),
        // llama.cpp splits every digit apart, then GPT-2's split (the `tokenizer.json` of
        // these models: `Digits(individual_digits)` then `ByteLevel`).
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva" => {
            Some(json!({
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level],
            }))
        }
        _ => None,
    }
}

/// Names of the pre-tokenizers [`from_metadata`] supports.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "gpt-2",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
    "command-r",
    "exaone",
    "minerva",
];

/// Builds the tokenizer described by the metadata of `gguf`.
pub fn from_metadata(gguf: &GgufCheckpoint) -> Result<Tokenizer, GgufError> {
    let model = gguf
        .string("tokenizer.ggml.model")?
        .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.model".into()))?;
    if model != "gpt2" {
        return Err(GgufError::UnsupportedTokenizer(format!(
            "tokenizer model `{model}` is not supported yet (supported: gpt2, byte-level BPE)"
        )));
    }
    let pre_name = gguf
        .string("tokenizer.ggml.pre")?
        .unwrap_or_else(|| "gpt2".into());
    let pre = pre_tokenizer(&pre_name).ok_or_else(|| {
        GgufError::UnsupportedTokenizer(format!(
            "pre-tokenizer `{pre_name}` is not supported yet (supported: {})",
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        ))
    })?;

    let tokens = gguf
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.tokens".into()))?;
    let merges = gguf
        .strings("tokenizer.ggml.merges")?
        .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.merges".into()))?;
    let types: Vec<i32> = match gguf.array("tokenizer.ggml.token_type")? {
        Some(a) => {
            let a = a.as_dtype(mlx_rs::Dtype::Int32)?;
            a.try_as_slice::<i32>()
                .map_err(|e| super::bad_value("tokenizer.ggml.token_type", e))?
                .to_vec()
        }
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(GgufError::BadValue {
            key: "tokenizer.ggml.token_type".into(),
            reason: format!("{} types for {} tokens", types.len(), tokens.len()),
        });
    }

    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        // A repeated token keeps its first id, as llama.cpp's lookup does.
        vocab.entry(token.clone()).or_insert(Value::from(id));
    }
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| GgufError::BadValue {
                    key: "tokenizer.ggml.merges".into(),
                    reason: format!("merge {m:?} is not two tokens separated by a space"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Control and user-defined tokens become added tokens, which `tokenizers` matches with an
    // automaton that a very long one makes slow to build.
    let long = types
        .iter()
        .zip(&tokens)
        .position(|(ty, t)| (*ty == CONTROL || *ty == USER_DEFINED) && t.len() > MAX_ADDED_TOKEN);
    if let Some(id) = long {
        return Err(GgufError::BadValue {
            key: "tokenizer.ggml.tokens".into(),
            reason: format!(
                "control token {id} is {} bytes long (at most {MAX_ADDED_TOKEN})",
                tokens[id].len()
            ),
        });
    }
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == CONTROL || **t == USER_DEFINED)
        .map(|(id, t)| {
            json!({
                "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *t == CONTROL,
            })
        })
        .collect();

    let token_of = |key: &str| -> Result<Option<(u32, String)>, GgufError> {
        match gguf.integer(key)? {
            None => Ok(None),
            Some(id) => match tokens.get(id as usize) {
                Some(t) => Ok(Some((id as u32, t.clone()))),
                None => Err(GgufError::BadValue {
                    key: key.into(),
                    reason: format!(
                        "token id {id} is outside the vocabulary ({} tokens)",
                        tokens.len()
                    ),
                }),
            },
        }
    };
    let bos = token_of("tokenizer.ggml.bos_token_id")?;
    let eos = token_of("tokenizer.ggml.eos_token_id")?;
    let flag = |key: &str, default: bool| -> Result<bool, GgufError> {
        Ok(gguf
            .scalar(key)?
            .and_then(|v| v.as_bool())
            .unwrap_or(default))
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token", false)?;
    let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
    let post_processor = post_processor(
        add_bos.then_some(bos.as_ref()).flatten(),
        add_eos.then_some(eos.as_ref()).flatten(),
    );

    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let inner = tokenizers::Tokenizer::from_str(&spec.to_string()).map_err(|e| {
        GgufError::Tokenizer(TokenizerError::Load {
            path: gguf.path().to_path_buf(),
            message: e.to_string(),
        })
    })?;

    let mut special_tokens = BTreeMap::new();
    for (role, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some((_, text)) = token_of(key)? {
            special_tokens.insert(role.to_string(), text);
        }
    }
    let eos_ids: BTreeSet<u32> = gguf.eos_token_ids()?.into_iter().collect();
    let template = gguf.string("tokenizer.chat_template")?;
    Ok(Tokenizer::from_parts(
        inner,
        template.as_deref(),
        special_tokens,
        eos_ids,
    )?)
}

/// A `TemplateProcessing` that adds BOS before and EOS after the text, as the flags ask.
fn post_processor(bos: Option<&(u32, String)>, eos: Option<&(u32, String)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let special = |t: &(u32, String)| json!({"SpecialToken": {"id": t.1, "type_id": 0}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Map::new();
    if let Some(b) = bos {
        single.push(special(b));
        pair.push(special(b));
        specials.insert(
            b.1.clone(),
            json!({"id": b.1, "ids": [b.0], "tokens": [b.1]}),
        );
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    if let Some(e) = eos {
        single.push(special(e));
        pair.push(special(e));
        specials.insert(
            e.1.clone(),
            json!({"id": e.1, "ids": [e.0], "tokens": [e.1]}),
        );
    }
    if let Some(b) = bos {
        pair.push(special(b));
    }
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = eos {
        pair.push(special(e));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}
