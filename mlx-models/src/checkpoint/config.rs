//! `config.json` and `generation_config.json`: the raw config, tagged non-finite floats,
//! the end-of-sequence ids.

#[allow(unused_imports)]
use super::*;

pub(super) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    match serde_json::from_slice(&text) {
        Ok(v) => Ok(v),
        Err(source) => {
            // Python's json module writes non-finite floats as bare `NaN` / `Infinity`; read
            // them as transformers' tagged floats (`{"__float__": "Infinity"}`), which the
            // config parser understands. Anything else is reported as it was.
            let retry = std::str::from_utf8(&text)
                .ok()
                .and_then(tag_bare_non_finite)
                .and_then(|t| serde_json::from_str(&t).ok());
            retry.ok_or_else(|| CheckpointError::MalformedJson {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// Replaces bare `NaN`, `Infinity` and `-Infinity` outside strings by tagged floats; `None`
/// when there is none.
pub fn tag_bare_non_finite(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 32);
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let tagged = [
                ("-Infinity", "-Infinity"),
                ("Infinity", "Infinity"),
                ("NaN", "NaN"),
            ]
            .into_iter()
            .find(|(bare, _)| rest.starts_with(bare));
            if let Some((bare, tag)) = tagged {
                out.push_str(&format!("{{\"__float__\": \"{tag}\"}}"));
                rest = &rest[bare.len()..];
                changed = true;
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

/// Keys of config.json that the loader reads itself, not an architecture's args: the
/// quantization (`quantization`, or `quantization_config` naming an MLX mode) and the end
/// tokens. They are not unknown keys.
pub const LOADER_KEYS: &[&str] = &["quantization", "quantization_config", "eos_token_id"];

/// Reads `config.json` of a checkpoint folder, as the raw JSON object.
///
/// When `generation_config.json` exists and has a truthy `eos_token_id`, it replaces the
/// config's `eos_token_id`, as in the reference (a malformed `generation_config.json` is
/// ignored there too).
pub fn read_config(dir: &Path) -> Result<serde_json::Map<String, Value>> {
    let path = dir.join("config.json");
    if !path.is_file() {
        if !dir.is_dir() {
            return Err(CheckpointError::NotAFolder(dir.to_path_buf()));
        }
        return Err(CheckpointError::ConfigMissing(dir.to_path_buf()));
    }
    let Value::Object(mut config) = read_json(&path)? else {
        return Err(CheckpointError::ConfigNotObject(path));
    };
    if let Some(eos) = generation_config_eos(dir)? {
        config.insert("eos_token_id".into(), eos);
    }
    Ok(config)
}

/// The raw `eos_token_id` of `generation_config.json`, when the file exists, is valid JSON and
/// the value is truthy (not null, 0, false or an empty list), exactly the cases in which the
/// reference lets it win over `config.json`.
pub fn generation_config_eos(dir: &Path) -> Result<Option<Value>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let Ok(Value::Object(gen)) = read_json(&path) else {
        return Ok(None);
    };
    let Some(eos) = gen.get("eos_token_id") else {
        return Ok(None);
    };
    let truthy = match eos {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    };
    if !truthy {
        return Ok(None);
    }
    // Validate now, so that a bad value is reported against the file it came from.
    parse_eos_ids(eos, &path)?;
    Ok(Some(eos.clone()))
}

/// Parses an `eos_token_id` value (a token id or a list of them). `origin` names the file for
/// the error.
pub fn parse_eos_ids(value: &Value, origin: &Path) -> Result<Vec<u32>> {
    let bad = || CheckpointError::InvalidEosTokenId {
        path: origin.to_path_buf(),
        value: value.to_string(),
    };
    let one = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Number(_) => Ok(vec![one(value).ok_or_else(bad)?]),
        Value::Array(items) => items.iter().map(|v| one(v).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

/// The EOS token ids of a checkpoint: `generation_config.json`'s `eos_token_id` when present
/// (and truthy), else `config.json`'s, else none.
pub fn eos_token_ids(dir: &Path) -> Result<Vec<u32>> {
    let config = read_config(dir)?;
    match config.get("eos_token_id") {
        None => Ok(Vec::new()),
        Some(v) => parse_eos_ids(v, &dir.join("config.json")),
    }
}
