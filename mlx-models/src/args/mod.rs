//! Typed model args from config.json: what `#[derive(ModelArgs)]` generates code for.
//!
//! ```
//! use mlx_models::args::{Config, ModelArgs};
//!
//! #[derive(Debug, PartialEq, ModelArgs)]
//! struct TinyArgs {
//!     model_type: String,
//!     #[arg(positive)]
//!     hidden_size: usize,
//!     #[arg(alias = "n_kv_heads")]
//!     num_key_value_heads: Option<usize>,
//!     #[arg(default = 1e-5)]
//!     rms_norm_eps: f32,
//! }
//!
//! let json = serde_json::json!({
//!     "model_type": "tiny", "hidden_size": 64, "n_kv_heads": 2, "hiden_act": "silu",
//! });
//! let config = Config::<TinyArgs>::parse(&json)?;
//! assert_eq!(config.args.num_key_value_heads, Some(2));
//! assert_eq!(config.args.rms_norm_eps, 1e-5);
//! assert_eq!(config.unknown_keys().map(|u| u.key.as_str()).collect::<Vec<_>>(), ["hiden_act"]);
//!
//! let err = TinyArgs::from_config(&serde_json::json!({"model_type": "tiny"})).unwrap_err();
//! assert_eq!(err.to_string(), "config.json: missing key `hidden_size` (required by tiny)");
//! # Ok::<(), mlx_models::args::ArgsError>(())
//! ```

mod error;
mod parser;
pub(crate) mod value;

use std::path::Path;

use serde_json::{Map, Value};

pub use error::{ArgsError, ArgsErrorKind};
/// The derive, beside the trait of the same name (like `serde::Serialize`).
pub use mlx_models_derive::ModelArgs;
#[doc(hidden)]
pub use parser::{nested, text_config_map, write_field, Cx, Object};
pub use parser::{Typo, UnknownKey};
pub use value::{ConfigValue, Positive, MAX_SIZE};

/// Typed args of a model, read from config.json. Derive it: `#[derive(ModelArgs)]`.
///
/// Field names are the JSON keys. Field attributes (`#[arg(...)]`):
/// - `default = EXPR` (or bare `default` for `Default::default()`): used when the key is absent;
/// - `alias = "n_kv_heads"` (several allowed; `"rope_parameters.rope_theta"` reads a nested key);
/// - `rename = "json-key"`: the JSON key when it is not a Rust identifier;
/// - `positive`: the number must be above zero;
/// - `skip`: not read nor written; takes its `default` (or `Default::default()`), usually set
///   by the hook;
/// - `flatten`: the field's `ModelArgs` struct reads its keys from this same object (its own
///   defaults, aliases and hook apply), as an architecture that extends another's config does:
///   `#[arg(flatten)] llama: LlamaArgs`. A struct with exactly one flattened field derefs to it
///   (`Deref`, `DerefMut`), as a subclass has its base's fields: `args.hidden_size`.
///
/// `Option<T>` fields may be absent or `null`. A field whose type derives `ModelArgs` reads a
/// nested object. Container attributes: `#[arg(text_config)]` (read `text_config` first, its
/// values win), `#[arg(validate = path)]` (a post-parse hook `fn(&mut Self) -> Result<(),
/// ArgsError>` for derived defaults and checks). On an enum, `#[arg(tag = "type", tag =
/// "rope_type")]` names the keys that choose the variant; a variant reads as the snake_case of
/// its name unless `#[arg(rename = "...")]`, and takes `#[arg(alias = "...")]` too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not derive `ModelArgs`",
    label = "not model args",
    note = "add `#[derive(ModelArgs)]` to `{Self}`"
)]
pub trait ModelArgs: Sized {
    /// Reads the fields from one JSON object (generated).
    #[doc(hidden)]
    fn parse_object(obj: &mut Object<'_, '_>) -> Result<Self, ArgsError>;

    /// Writes the fields into one JSON object (generated).
    #[doc(hidden)]
    fn write_object(&self, out: &mut Map<String, Value>);

    /// Parses a config (the whole of config.json); unknown keys are ignored.
    fn from_config(config: &Value) -> Result<Self, ArgsError> {
        Config::parse(config).map(|c| c.args)
    }

    /// Parses config.json's text.
    fn from_json(text: &str) -> Result<Self, ArgsError> {
        Config::from_json(text).map(|c| c.args)
    }

    /// The args as config.json holds them (absent `Option`s left out).
    fn to_config(&self) -> Value {
        let mut out = Map::new();
        self.write_object(&mut out);
        Value::Object(out)
    }
}

/// Parsed args together with what the config had besides: its unknown keys (kept, so that
/// the config writes back whole) and the unknown keys that look like typos of a field.
#[derive(Debug, Clone, PartialEq)]
pub struct Config<A> {
    /// The typed args.
    pub args: A,
    extra: Vec<UnknownKey>,
    typos: Vec<Typo>,
}

impl<A: ModelArgs> Config<A> {
    /// Parses a config value.
    pub fn parse(config: &Value) -> Result<Self, ArgsError> {
        let map = config
            .as_object()
            .ok_or_else(|| ArgsError::json("the top level is not a JSON object"))?;
        let model = match map.get("model_type").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => {
                let name = std::any::type_name::<A>();
                format!("`{}`", name.rsplit("::").next().unwrap_or(name))
            }
        };
        let mut cx = Cx::new(model);
        let mut obj = Object::new(&mut cx, map, Vec::new());
        let args = A::parse_object(&mut obj)?;
        obj.finish();
        cx.settle();
        Ok(Config {
            args,
            extra: cx.extra,
            typos: cx.typos,
        })
    }

    /// Parses config.json's text.
    pub fn from_json(text: &str) -> Result<Self, ArgsError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ArgsError::json(format!("not valid JSON: {e}")))?;
        Self::parse(&value)
    }

    /// Reads and parses a file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ArgsError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ArgsError::new(ArgsErrorKind::Io(e.to_string())).in_file(name.clone()))?;
        Self::from_json(&text).map_err(|e| e.in_file(name))
    }

    /// Keys no field read, in the order of the file's layers (`text_config` first).
    pub fn unknown_keys(&self) -> impl Iterator<Item = &UnknownKey> {
        self.extra.iter().filter(|e| !e.shadowed)
    }

    /// Unknown keys within edit distance 2 of a field key that the config lacks.
    pub fn typos(&self) -> &[Typo] {
        &self.typos
    }

    /// The config as JSON: the args, plus every unknown key where it was. Parsing the result
    /// gives the same args and the same unknown keys.
    pub fn to_json(&self) -> Value {
        let mut out = self.args.to_config();
        for e in &self.extra {
            insert_absent(&mut out, &e.segments, &e.value);
        }
        out
    }
}

/// Puts `value` at `segments` unless something is there already.
fn insert_absent(root: &mut Value, segments: &[String], value: &Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut cur = root;
    for seg in parents {
        let Value::Object(map) = cur else { return };
        cur = map
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = cur {
        map.entry(last.clone()).or_insert_with(|| value.clone());
    }
}
