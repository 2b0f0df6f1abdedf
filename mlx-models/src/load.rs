//! From a checkpoint folder (or a Hugging Face repo id) to a model with every parameter set.
//!
//! The flow of the reference loader, made strict: read `config.json`, pick the architecture in
//! the registry, parse its args, build it, read every `model*.safetensors`, run `sanitize`, then
//! load so that every parameter is set, every checkpoint tensor is used, and every shape
//! matches; otherwise one error lists every problem.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::args::{Typo, UnknownKey};
use crate::checkpoint::{self, CheckpointError};
use crate::hub::{self, HubError, HubOptions};
use crate::model::{BuildError, LanguageModel};
use crate::registry;
use crate::weights::SanitizeError;

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cast floating-point parameters to this type; `None` keeps the checkpoint's.
    pub dtype: Option<Dtype>,
    /// How a repo id is resolved (revision, offline).
    pub hub: HubOptions,
}

/// A loaded model and what came with it.
pub struct LoadedModel {
    /// The model, every parameter set.
    pub model: Box<dyn LanguageModel>,
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// config.json as read.
    pub config: Value,
    /// End-of-sequence ids (generation_config.json wins over config.json).
    pub eos_token_ids: Vec<u32>,
    /// Keys of config.json that no field of the args read.
    pub unknown_keys: Vec<UnknownKey>,
    /// Unknown keys that look like misspelt fields.
    pub typos: Vec<Typo>,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model_type", &self.model.model_type())
            .field("dir", &self.dir)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish_non_exhaustive()
    }
}

/// Why a checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The source is neither a folder nor a repo in reach.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A file of the checkpoint is missing or malformed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The config names no registered architecture, or does not parse into its args.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// No architecture is registered under the config's `model_type`.
    #[error("{source} (supported: {})", supported.join(", "))]
    UnknownModelType {
        /// What the registry said (with the closest name, if any).
        source: registry::RegistryError,
        /// Every registered name.
        supported: Vec<&'static str>,
    },
    /// Sanitize failed on the checkpoint's tensors.
    #[error(transparent)]
    Sanitize(#[from] SanitizeError),
    /// The checkpoint's tensors do not fit the model.
    #[error(transparent)]
    Mismatch(#[from] WeightMismatch),
    /// The checkpoint is quantized; loading quantized layers is not supported yet.
    #[error("{dir}: quantized checkpoints are not supported yet ({layers} quantized layers, e.g. `{example}`)")]
    QuantizedUnsupported {
        /// The checkpoint folder.
        dir: PathBuf,
        /// How many layers carry `scales`.
        layers: usize,
        /// One of them.
        example: String,
    },
    /// MLX failed while casting or evaluating the parameters.
    #[error("loading the parameters failed: {0}")]
    Mlx(#[from] Exception),
    /// A GGUF file could not be read or mapped.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
}

/// Every way the checkpoint's tensors and the model's parameters disagree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WeightMismatch {
    /// Parameters the checkpoint does not set.
    pub missing: Vec<String>,
    /// Checkpoint tensors no parameter takes, each with the closest parameter name.
    pub unexpected: Vec<(String, Option<String>)>,
    /// `(name, parameter shape, checkpoint shape)`.
    pub shapes: Vec<(String, Vec<i32>, Vec<i32>)>,
}

impl WeightMismatch {
    /// True when nothing disagrees.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }
}

impl fmt::Display for WeightMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.missing.len() + self.unexpected.len() + self.shapes.len();
        write!(f, "the checkpoint does not fit the model ({count} problems):")?;
        for name in &self.missing {
            write!(f, "\n  missing: `{name}`")?;
        }
        for (name, hint) in &self.unexpected {
            match hint {
                Some(h) => write!(f, "\n  unexpected: `{name}` (did you mean `{h}`?)")?,
                None => write!(f, "\n  unexpected: `{name}`")?,
            }
        }
        for (name, want, got) in &self.shapes {
            write!(f, "\n  shape: `{name}` is {want:?} in the model but {got:?} in the checkpoint")?;
        }
        Ok(())
    }
}

impl std::error::Error for WeightMismatch {}

/// Compares checkpoint tensors with the expected parameter shapes.
pub fn check_weights(expected: &BTreeMap<String, Vec<i32>>, weights: &HashMap<String, Array>) -> WeightMismatch {
    let mut mismatch = WeightMismatch::default();
    for (name, shape) in expected {
        match weights.get(name) {
            None => mismatch.missing.push(name.clone()),
            Some(w) if w.shape() != shape.as_slice() => {
                mismatch.shapes.push((name.clone(), shape.clone(), w.shape().to_vec()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<&String> = weights.keys().filter(|k| !expected.contains_key(*k)).collect();
    unexpected.sort();
    for name in unexpected {
        let hint = expected
            .keys()
            .map(|k| (strsim::levenshtein(k, name), k))
            .filter(|(d, _)| *d <= name.len().max(4) / 2)
            .min()
            .map(|(_, k)| k.clone());
        mismatch.unexpected.push((name.clone(), hint));
    }
    mismatch
}

/// The model's parameters by flattened name, with their shapes.
pub fn parameter_shapes(model: &dyn LanguageModel) -> BTreeMap<String, Vec<i32>> {
    model
        .parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.shape().to_vec()))
        .collect()
}

/// Loads a checkpoint from a folder or a Hugging Face repo id with default options.
pub fn load(source: &str) -> Result<LoadedModel, LoadError> {
    load_with(source, &LoadOptions::default())
}

/// Loads a checkpoint from a folder, a `.gguf` file or a Hugging Face repo id.
pub fn load_with(source: &str, options: &LoadOptions) -> Result<LoadedModel, LoadError> {
    if crate::gguf::is_gguf_path(Path::new(source)) && Path::new(source).is_file() {
        return crate::gguf::load(Path::new(source), options);
    }
    let dir = if Path::new(source).is_dir() { PathBuf::from(source) } else { hub::resolve(source, &options.hub)? };
    load_dir(&dir, options)
}

/// Loads the checkpoint in `dir`.
pub fn load_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel, LoadError> {
    let config = Value::Object(checkpoint::read_config(dir)?);
    let weights = checkpoint::load_weights(dir)?;
    let eos_token_ids = checkpoint::eos_token_ids(dir)?;
    load_parts(config, weights, eos_token_ids, dir, options)
}

/// Builds the model `config` describes and loads `weights` (checkpoint names, before sanitize)
/// into it strictly: the common end of every checkpoint format. `dir` is where the checkpoint
/// came from (kept in [`LoadedModel::dir`] for the tokenizer).
pub fn load_parts(
    config: Value,
    weights: HashMap<String, Array>,
    eos_token_ids: Vec<u32>,
    dir: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, LoadError> {
    let built = registry::build(&config).map_err(|e| match e {
        BuildError::Registry(source @ registry::RegistryError::Unknown { .. }) => {
            let mut supported: Vec<&'static str> = registry::entries().iter().flat_map(|e| e.names()).collect();
            supported.sort_unstable();
            LoadError::UnknownModelType { source, supported }
        }
        other => LoadError::Build(other),
    })?;
    let mut model = built.model;

    let weights = model.sanitize(weights)?;

    let quantized: Vec<&String> = weights.keys().filter(|k| k.ends_with(".scales")).collect();
    if let Some(example) = quantized.iter().min() {
        let example = example.trim_end_matches(".scales").to_string();
        return Err(LoadError::QuantizedUnsupported { dir: dir.to_path_buf(), layers: quantized.len(), example });
    }

    let mismatch = check_weights(&parameter_shapes(model.as_ref()), &weights);
    if !mismatch.is_empty() {
        return Err(mismatch.into());
    }
    let mut flat: HashMap<Rc<str>, Array> = HashMap::with_capacity(weights.len());
    for (name, w) in weights {
        let w = match options.dtype {
            Some(dtype) if is_floating(w.dtype()) && w.dtype() != dtype => w.as_dtype(dtype)?,
            _ => w,
        };
        flat.insert(Rc::from(name.as_str()), w);
    }
    model.update_flattened(flat);
    let params: Vec<Array> = model.parameters().flatten().into_values().cloned().collect();
    mlx_rs::transforms::eval(params.iter())?;

    Ok(LoadedModel {
        model,
        dir: dir.to_path_buf(),
        config,
        eos_token_ids,
        unknown_keys: built.unknown_keys,
        typos: built.typos,
    })
}

fn is_floating(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 | Dtype::Float64)
}
