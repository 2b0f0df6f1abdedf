//! The registry of architectures, filled at link time by `#[mlx_model(...)]` (through
//! `inventory`): no central list, a new architecture file is the whole change.
//!
//! A config picks its entry by `model_type` (or an alias); where several entries share a
//! name, by the pair (`model_type`, `architectures[i]`). [`check`] rejects two entries that
//! claim the same name for the same architectures.
//!
//! Entries live in the crates that define the architectures, and a binary sees those that its
//! linker keeps. Keep a reference into the architecture crate from the binary (call one of
//! its functions) rather than relying on a bare dependency, which the linker may drop.

use serde_json::Value;

use crate::args::{ArgsError, Config, ModelArgs, Typo, UnknownKey};
use crate::model::{Architecture, BuildError, LanguageModel};

/// One registered architecture. Made by `#[mlx_model]`; build one by hand only in tests.
#[derive(Debug)]
pub struct Entry {
    /// The `model_type` of config.json.
    pub model_type: &'static str,
    /// Other `model_type`s served by the same code.
    pub aliases: &'static [&'static str],
    /// `architectures` entries that select this one (empty: any).
    pub architectures: &'static [&'static str],
    /// The Rust type, for messages (`my_crate::llama::Model`).
    pub rust_type: &'static str,
    #[doc(hidden)]
    pub build: fn(&Value) -> Result<Built, BuildError>,
    /// Reads config.json with this architecture's args, building nothing (for tools that
    /// check configs, and the fuzzer).
    #[doc(hidden)]
    pub parse: fn(&Value) -> Result<ParsedArgs, ArgsError>,
}

/// What one architecture's args make of a config.json, without building the model.
#[derive(Debug, Clone)]
pub struct ParsedArgs {
    /// The args as config.json spells them (`ModelArgs::to_config`).
    pub args: Value,
    /// The whole config written back (`Config::to_json`): the args and every key no field read.
    pub written: Value,
    /// Keys that no field read.
    pub unknown_keys: Vec<UnknownKey>,
    /// Unknown keys that look like misspelt fields.
    pub typos: Vec<Typo>,
}

/// [`Entry::parse`] for `T`.
#[doc(hidden)]
pub fn parse_entry<T: Architecture>(config: &Value) -> Result<ParsedArgs, ArgsError> {
    let config = Config::<T::Args>::parse(config)?;
    Ok(ParsedArgs {
        args: config.args.to_config(),
        written: config.to_json(),
        unknown_keys: config.unknown_keys().cloned().collect(),
        typos: config.typos().to_vec(),
    })
}

inventory::collect!(Entry);

/// A model built from a config, with what the config had that no field read.
pub struct Built {
    /// The model, parameters not yet loaded.
    pub model: Box<dyn LanguageModel>,
    /// Keys of config.json that no field read.
    pub unknown_keys: Vec<UnknownKey>,
    /// Unknown keys that look like misspelt fields.
    pub typos: Vec<Typo>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("model_type", &self.model.model_type())
            .field("unknown_keys", &self.unknown_keys)
            .field("typos", &self.typos)
            .finish()
    }
}

impl Entry {
    /// Every name the entry answers to: the model type, then the aliases.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.model_type).chain(self.aliases.iter().copied())
    }

    /// Parses `config` and builds the model.
    pub fn build(&self, config: &Value) -> Result<Built, BuildError> {
        (self.build)(config)
    }
}

/// Builds an `Architecture` from a config: what a registry entry calls.
#[doc(hidden)]
pub fn build_entry<T: Architecture>(config: &Value) -> Result<Built, BuildError> {
    // Before any architecture makes something per layer (a list, a model): an absurd layer
    // count is refused here, for every architecture.
    let max = crate::nn::transformer::MAX_LAYERS as u64;
    for (key, layers) in [
        ("num_hidden_layers", config.get("num_hidden_layers")),
        (
            "text_config.num_hidden_layers",
            config
                .get("text_config")
                .and_then(|t| t.get("num_hidden_layers")),
        ),
    ] {
        if let Some(n) = layers.and_then(Value::as_u64).filter(|&n| n > max) {
            return Err(BuildError::Args(crate::args::ArgsError::invalid(
                &[key],
                format!("`{key}` {n} is absurd (at most {max})"),
            )));
        }
    }
    let config = Config::<T::Args>::parse(config)?;
    let model = T::new(&config.args).map_err(|source| BuildError::Model {
        model_type: T::MODEL_TYPE,
        source,
    })?;
    Ok(Built {
        model: Box::new(model),
        unknown_keys: config.unknown_keys().cloned().collect(),
        typos: config.typos().to_vec(),
    })
}

/// Why no entry, or no single entry, fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No entry has this name.
    #[error("model type `{model_type}` not supported{}", did_you_mean(suggestion))]
    Unknown {
        /// The name asked for.
        model_type: String,
        /// A registered name within edit distance 2.
        suggestion: Option<String>,
    },
    /// Entries have the name, but each for other `architectures`.
    #[error("model type `{model_type}` is registered only for the architectures {known:?}, not {asked:?}")]
    NoArchitecture {
        /// The name asked for.
        model_type: String,
        /// The config's `architectures`.
        asked: Vec<String>,
        /// The architectures registered for it.
        known: Vec<&'static str>,
    },
    /// The config has no string `model_type`.
    #[error("config.json: missing key `model_type`")]
    NoModelType,
    /// Two entries claim the same name for the same architectures.
    #[error("model type `{name}` is registered twice: by `{first}` and by `{second}`")]
    Duplicate {
        /// The name claimed twice.
        name: &'static str,
        /// The Rust type of one entry.
        first: &'static str,
        /// The Rust type of the other.
        second: &'static str,
    },
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Every registered entry, sorted by model type.
pub fn entries() -> Vec<&'static Entry> {
    let mut all: Vec<&'static Entry> = inventory::iter::<Entry>.into_iter().collect();
    all.sort_by_key(|e| (e.model_type, e.architectures));
    all
}

/// The entry for `model_type` (or an alias) and the config's `architectures`.
///
/// ```
/// use mlx_models::registry::{self, RegistryError};
///
/// // Only the architecture crates linked into this binary are registered (none here;
/// // `mlx_models_zoo::link()` adds the zoo's).
/// match registry::find("llama", &["LlamaForCausalLM"]) {
///     Ok(entry) => println!("{} serves {:?}", entry.rust_type, entry.names().collect::<Vec<_>>()),
///     Err(RegistryError::Unknown { model_type, suggestion }) => {
///         println!("`{model_type}` is not linked (closest: {suggestion:?})")
///     }
///     Err(other) => return Err(other),
/// }
/// # Ok::<(), RegistryError>(())
/// ```
pub fn find(model_type: &str, architectures: &[&str]) -> Result<&'static Entry, RegistryError> {
    find_in(entries(), model_type, architectures)
}

/// The entry for a config.json value: its `model_type` and `architectures`.
pub fn for_config(config: &Value) -> Result<&'static Entry, RegistryError> {
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or(RegistryError::NoModelType)?;
    let architectures: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    find(model_type, &architectures)
}

/// Finds the entry for a config and builds its model.
pub fn build(config: &Value) -> Result<Built, BuildError> {
    for_config(config)?.build(config)
}

/// [`find`] over a given list of entries.
pub fn find_in<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    model_type: &str,
    architectures: &[&str],
) -> Result<&'a Entry, RegistryError> {
    let all: Vec<&'a Entry> = entries.into_iter().collect();
    let named: Vec<&'a Entry> = all
        .iter()
        .copied()
        .filter(|e| e.names().any(|n| n == model_type))
        .collect();
    if named.is_empty() {
        let suggestion = all
            .iter()
            .flat_map(|e| e.names())
            .map(|n| (strsim::levenshtein(n, model_type), n))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n.to_owned());
        return Err(RegistryError::Unknown {
            model_type: model_type.to_owned(),
            suggestion,
        });
    }
    if let Some(e) = named
        .iter()
        .find(|e| e.architectures.iter().any(|a| architectures.contains(a)))
    {
        return Ok(e);
    }
    if let Some(e) = named.iter().find(|e| e.architectures.is_empty()) {
        return Ok(e);
    }
    Err(RegistryError::NoArchitecture {
        model_type: model_type.to_owned(),
        asked: architectures.iter().map(|a| (*a).to_owned()).collect(),
        known: named
            .iter()
            .flat_map(|e| e.architectures.iter().copied())
            .collect(),
    })
}

/// Checks the registry: no name claimed twice for overlapping architectures.
pub fn check() -> Result<(), RegistryError> {
    check_entries(entries())
}

/// [`check`] over a given list of entries.
pub fn check_entries<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<(), RegistryError> {
    let all: Vec<&'a Entry> = entries.into_iter().collect();
    for (i, a) in all.iter().enumerate() {
        // An alias repeating the entry's own model type, or an alias listed twice.
        let names: Vec<&'static str> = a.names().collect();
        for (j, n) in names.iter().enumerate() {
            if names[..j].contains(n) {
                return Err(RegistryError::Duplicate {
                    name: n,
                    first: a.rust_type,
                    second: a.rust_type,
                });
            }
        }
        for b in &all[i + 1..] {
            let overlap = a.architectures.is_empty() && b.architectures.is_empty()
                || a.architectures.iter().any(|x| b.architectures.contains(x));
            if !overlap {
                continue;
            }
            if let Some(name) = a.names().find(|n| b.names().any(|m| m == *n)) {
                return Err(RegistryError::Duplicate {
                    name,
                    first: a.rust_type,
                    second: b.rust_type,
                });
            }
        }
    }
    Ok(())
}

/// Registers an entry for `T`; what `#[mlx_model]` expands to (through `inventory`).
#[doc(hidden)]
pub const fn entry<T: Architecture>(rust_type: &'static str) -> Entry {
    Entry {
        model_type: T::MODEL_TYPE,
        aliases: T::ALIASES,
        architectures: T::ARCHITECTURES,
        rust_type,
        build: build_entry::<T>,
        parse: parse_entry::<T>,
    }
}
