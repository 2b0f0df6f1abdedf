//! From a checkpoint folder (or a Hugging Face repo id) to a model with every parameter set.
//!
//! The flow of the reference loader, made strict: read `config.json`, pick the architecture in
//! the registry, parse its args, build it, read every `model*.safetensors`, run `sanitize`, then
//! load so that every parameter is set, every checkpoint tensor is used, and every shape
//! matches; otherwise one error lists every problem.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::args::{Typo, UnknownKey};
use crate::checkpoint::CheckpointError;
use crate::hub::{self, HubError, HubOptions};
use crate::model::{BuildError, LanguageModel};
use crate::nn::quantized::{infer_quantization, QuantMode, Quantization};
use crate::registry;
use crate::source::{CheckpointSource, Folder};
use crate::weights::SanitizeError;

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cast floating-point parameters to this type; `None` keeps the checkpoint's.
    pub dtype: Option<Dtype>,
    /// How a repo id is resolved (revision, offline).
    pub hub: HubOptions,
    /// Show a progress bar on stderr while the parameters are read, for checkpoints over
    /// [`PROGRESS_BYTES`] (nothing is drawn when stderr is not a terminal).
    pub progress: bool,
    /// With `dtype` unset, on the CPU, compute a quantized checkpoint in float32 (its dense
    /// parameters, scales and biases cast): the CPU kernels of quantized products serve float32
    /// results (in float16 / bfloat16 MLX's own kernel runs, 10-30x slower and accumulating in
    /// the half type), and float32 matmuls go through BLAS. The command line turns it on.
    pub float32_quantized_on_cpu: bool,
}

/// The checkpoint size from which loading shows a progress bar when asked to.
pub const PROGRESS_BYTES: usize = 1 << 30;

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
    /// MLX failed while casting or evaluating the parameters.
    #[error("loading the parameters failed: {0}")]
    Mlx(#[from] Exception),
    /// A GGUF file could not be read or mapped.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The config declares more layers than the checkpoint holds (checked before anything is
    /// built, so that an absurd count costs nothing).
    #[error(
        "config.json: `{key}` is {declared}, but the checkpoint holds {present} layers \
         (indices 0 to {last}); a model that large cannot be filled from it"
    )]
    LayerCount {
        /// The config key (`num_hidden_layers`, or the same inside `text_config`).
        key: String,
        /// What the config says.
        declared: u64,
        /// Layers the checkpoint has tensors for (highest index plus one).
        present: u64,
        /// The highest layer index in the checkpoint.
        last: u64,
    },
    /// An entry of the config's `quantization` is not a quantization MLX has (reported before
    /// any tensor is compared, since every quantized tensor would then look wrong).
    #[error("config.json: `{key}`: {message}")]
    Quantization {
        /// `quantization`, or `quantization.<layer>`.
        key: String,
        /// What is wrong, with what is supported.
        message: String,
    },
}

/// The layer count a config declares: `num_hidden_layers` (or `n_layer` / `num_layers`),
/// `text_config`'s winning over the top level as the args parser reads it.
fn declared_layers(config: &Value) -> Option<(String, u64)> {
    let keys = ["num_hidden_layers", "n_layer", "num_layers"];
    let find = |obj: &Value, prefix: &str| {
        keys.iter().find_map(|k| {
            obj.get(*k)
                .and_then(Value::as_u64)
                .map(|n| (format!("{prefix}{k}"), n))
        })
    };
    config
        .get("text_config")
        .and_then(|t| find(t, "text_config."))
        .or_else(|| find(config, ""))
}

/// The highest index after a `layers` segment in the checkpoint's tensor names
/// (`model.layers.7.mlp...` gives 7), if any name has one.
fn highest_layer_index<'a>(names: impl Iterator<Item = &'a String>) -> Option<u64> {
    names
        .filter_map(|name| {
            let mut parts = name.split('.');
            while let Some(part) = parts.next() {
                if part == "layers" {
                    return parts.next().and_then(|i| i.parse::<u64>().ok());
                }
            }
            None
        })
        .max()
}

/// Refuses a config that declares more layers than the checkpoint's tensor `names` hold,
/// before the model is built (building a billion layers would take minutes and all memory only
/// to fail later).
pub fn check_layer_count<'a>(
    config: &Value,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), LoadError> {
    let (Some((key, declared)), Some(last)) = (
        declared_layers(config),
        highest_layer_index(names.into_iter()),
    ) else {
        return Ok(());
    };
    if declared > last + 1 {
        return Err(LoadError::LayerCount {
            key,
            declared,
            present: last + 1,
            last,
        });
    }
    Ok(())
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
    /// `(layer, problem)`: quantized layers whose packing does not fit the config or the layer.
    pub quantization: Vec<(String, String)>,
    /// `(name, checkpoint type)`: tensors of a type that cannot be the floating-point
    /// parameter they would set (the raw bytes of FP8 weights without their scales, integers).
    pub types: Vec<(String, Dtype)>,
}

impl WeightMismatch {
    /// True when nothing disagrees.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shapes.is_empty()
            && self.quantization.is_empty()
            && self.types.is_empty()
    }
}

impl fmt::Display for WeightMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.missing.len()
            + self.unexpected.len()
            + self.shapes.len()
            + self.quantization.len()
            + self.types.len();
        write!(
            f,
            "the checkpoint does not fit the model ({count} problems):"
        )?;
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
            write!(
                f,
                "\n  shape: `{name}` is {want:?} in the model but {got:?} in the checkpoint"
            )?;
        }
        for (layer, problem) in &self.quantization {
            write!(f, "\n  quantization: `{layer}`: {problem}")?;
        }
        for (name, dtype) in &self.types {
            write!(
                f,
                "\n  type: `{name}` is {dtype:?} in the checkpoint, not floating point{}",
                if *dtype == Dtype::Uint8 {
                    " (FP8 bytes need their `weight_scale_inv`)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for WeightMismatch {}

/// Compares checkpoint tensors with the expected parameter shapes.
pub fn check_weights(
    expected: &BTreeMap<String, Vec<i32>>,
    weights: &HashMap<String, Array>,
) -> WeightMismatch {
    let mut mismatch = WeightMismatch::default();
    for (name, shape) in expected {
        match weights.get(name) {
            None => mismatch.missing.push(name.clone()),
            Some(w) if w.shape() != shape.as_slice() => {
                mismatch
                    .shapes
                    .push((name.clone(), shape.clone(), w.shape().to_vec()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<&String> = weights
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
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
///
/// The architecture comes from the [`registry`] by config.json's `model_type`, so the crate that
/// defines it must be linked (`mlx_models_zoo::link()` for the zoo's).
///
/// ```no_run
/// let mut loaded = mlx_models::load::load("path/to/checkpoint")?;
/// println!("{} with {} layers", loaded.model.model_type(), loaded.model.num_layers());
/// let tokens = mlx_rs::Array::from_slice(&[1u32, 2, 3], &[1, 3]);
/// let mut cache = loaded.model.make_cache();
/// let logits = loaded.model.forward(&tokens, &mut cache)?; // [1, 3, vocab]
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load(source: &str) -> Result<LoadedModel, LoadError> {
    load_with(source, &LoadOptions::default())
}

/// Loads a checkpoint from a folder, a `.gguf` file or a Hugging Face repo id.
pub fn load_with(source: &str, options: &LoadOptions) -> Result<LoadedModel, LoadError> {
    if crate::gguf::is_gguf_path(Path::new(source)) && Path::new(source).is_file() {
        let gguf = crate::gguf::GgufCheckpoint::open(Path::new(source))?;
        return load_source(&gguf, options);
    }
    let dir = if Path::new(source).is_dir() {
        PathBuf::from(source)
    } else {
        hub::resolve(source, &options.hub)?
    };
    load_dir(&dir, options)
}

/// Loads the checkpoint in `dir`.
pub fn load_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel, LoadError> {
    load_source(&Folder::new(dir), options)
}

/// Builds the model a checkpoint source describes and loads its tensors strictly: a folder
/// ([`Folder`]), a GGUF file ([`crate::gguf::GgufCheckpoint`]), or a source of your own.
pub fn load_source<S: CheckpointSource>(
    source: &S,
    options: &LoadOptions,
) -> Result<LoadedModel, LoadError>
where
    LoadError: From<S::Error>,
{
    let config = source.config()?;
    let weights = source.weights()?;
    let eos_token_ids = source.eos_token_ids()?;
    load_parts(config, weights, eos_token_ids, source.place(), options)
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
    check_layer_count(&config, weights.keys())?;
    let built = registry::build(&config).map_err(|e| match e {
        BuildError::Registry(source @ registry::RegistryError::Unknown { .. }) => {
            let mut supported: Vec<&'static str> =
                registry::entries().iter().flat_map(|e| e.names()).collect();
            supported.sort_unstable();
            LoadError::UnknownModelType { source, supported }
        }
        other => LoadError::Build(other),
    })?;
    let mut model = built.model;

    let weights = model.sanitize(weights)?;

    let dense = parameter_shapes(model.as_ref());
    let writable: BTreeSet<String> = model
        .parameters_mut()
        .flatten()
        .into_keys()
        .map(|k| k.to_string())
        .collect();
    let plan = quantization_plan(&config, &dense, &writable, &weights);
    if let Some((key, message)) = plan.config_error {
        return Err(LoadError::Quantization { key, message });
    }
    let mut mismatch = check_weights(&plan.expected, &weights);
    mismatch.quantization = plan.problems;
    mismatch.types = non_floating_parameters(model.as_ref(), &plan.expected, &dense, &weights);
    if !mismatch.is_empty() {
        return Err(mismatch.into());
    }
    let dtype = options.dtype.or_else(|| {
        (options.float32_quantized_on_cpu
            && crate::nn::quantized::on_cpu()
            && config_quantization(&config).is_some())
        .then_some(Dtype::Float32)
    });
    let mut flat: HashMap<Rc<str>, Array> = HashMap::with_capacity(weights.len());
    for (name, w) in weights {
        let w = match dtype {
            Some(dtype) if is_floating(w.dtype()) && w.dtype() != dtype => w.as_dtype(dtype)?,
            _ => w,
        };
        flat.insert(Rc::from(name.as_str()), w);
    }
    model.update_flattened(flat);
    let params: Vec<Array> = model
        .parameters()
        .flatten()
        .into_values()
        .cloned()
        .collect();
    let total: usize = params.iter().map(|p| p.nbytes()).sum();
    if options.progress && total > PROGRESS_BYTES {
        // In groups of about 64 MB, so that the bar moves as the bytes are read.
        let bar = indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "loading {bar:30} {binary_bytes}/{binary_total_bytes} ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut group: Vec<&Array> = Vec::new();
        let mut bytes = 0usize;
        for p in &params {
            group.push(p);
            bytes += p.nbytes();
            if bytes >= 64 << 20 {
                mlx_rs::transforms::eval(group.drain(..))?;
                bar.inc(bytes as u64);
                bytes = 0;
            }
        }
        mlx_rs::transforms::eval(group)?;
        bar.finish_and_clear();
    } else {
        mlx_rs::transforms::eval(params.iter())?;
    }
    // MLX is in use now: the process's exit waits for MLX's CPU work before MLX's statics
    // (created by now) are torn down; see mlx-sys.
    mlx_sys::set_exit_drain(true);

    Ok(LoadedModel {
        model,
        dir: dir.to_path_buf(),
        config,
        eos_token_ids,
        unknown_keys: built.unknown_keys,
        typos: built.typos,
    })
}

/// Checkpoint tensors that would set a floating-point parameter of a dense layer (one the
/// checkpoint does not quantize: its expected shape is the parameter's own) with integers.
fn non_floating_parameters(
    model: &dyn LanguageModel,
    expected: &BTreeMap<String, Vec<i32>>,
    dense: &BTreeMap<String, Vec<i32>>,
    weights: &HashMap<String, Array>,
) -> Vec<(String, Dtype)> {
    let floating: BTreeSet<String> = model
        .parameters()
        .flatten()
        .into_iter()
        .filter(|(_, p)| is_floating(p.dtype()))
        .map(|(k, _)| k.to_string())
        .collect();
    let mut found: Vec<(String, Dtype)> = weights
        .iter()
        .filter(|(name, w)| {
            !is_floating(w.dtype())
                && floating.contains(name.as_str())
                && expected.get(name.as_str()) == dense.get(name.as_str())
                && expected.get(name.as_str()).map(Vec::as_slice) == Some(w.shape())
        })
        .map(|(name, w)| (name.clone(), w.dtype()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn is_floating(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 | Dtype::Float64
    )
}

/// Which layers a checkpoint has quantized, and the tensor shapes that follows.
struct QuantizationPlan {
    /// The model's parameter shapes with each quantized layer's `weight` packed and its
    /// `scales` / `biases` added.
    expected: BTreeMap<String, Vec<i32>>,
    /// Layers whose packing cannot be worked out or does not fit.
    problems: Vec<(String, String)>,
    /// The first entry of the config's `quantization` that is not a quantization MLX has
    /// (its key, what is wrong): reported alone, before any tensor is compared.
    config_error: Option<(String, String)>,
}

/// The config's quantization, as the reference reads it: `quantization` (a default plus
/// per-layer entries keyed by module path, an entry `false` keeping that layer dense), else a
/// `quantization_config` whose `quant_method` names an MLX mode.
fn config_quantization(config: &Value) -> Option<(Quantization, serde_json::Map<String, Value>)> {
    if let Some(Value::Object(q)) = config.get("quantization") {
        let default = Quantization::from_json(&Value::Object(q.clone()))
            .unwrap_or(Quantization::affine(64, 4));
        return Some((default, q.clone()));
    }
    let qc = config.get("quantization_config")?;
    let method = qc.get("quant_method")?.as_str()?;
    // compressed-tensors' packed int4 (Kimi K2 Thinking), as the reference reads it: affine
    // 4-bit in groups of 32 (the weights are renamed by `weights::compressed_tensors_int4`).
    if method == "compressed-tensors"
        && qc.get("format").and_then(Value::as_str) == Some("pack-quantized")
    {
        return Some((Quantization::affine(32, 4), serde_json::Map::new()));
    }
    let mode = QuantMode::parse(method)?;
    Some((
        Quantization::with_defaults(mode, None, None),
        serde_json::Map::new(),
    ))
}

/// Mirrors the reference loader's `class_predicate`: a quantizable layer (one with a writable
/// `scales` slot) is quantized when the config names it, or when the checkpoint has its
/// `scales`; its bits and group size come from the config entry, else from the packed shapes
/// (`infer_quant_config`).
fn quantization_plan(
    config: &Value,
    dense: &BTreeMap<String, Vec<i32>>,
    writable: &BTreeSet<String>,
    weights: &HashMap<String, Array>,
) -> QuantizationPlan {
    let mut expected = dense.clone();
    let mut problems = Vec::new();
    let plain = |expected, problems| QuantizationPlan {
        expected,
        problems,
        config_error: None,
    };
    let Some((default, per_layer)) = config_quantization(config) else {
        return plain(expected, problems);
    };
    // The config's own default, when it spells one out, and every per-layer entry must be a
    // quantization MLX has.
    if let Some(Value::Object(q)) = config.get("quantization") {
        let spelt = ["bits", "group_size", "mode"]
            .iter()
            .any(|k| q.contains_key(*k));
        let defaults: serde_json::Map<String, Value> = q
            .iter()
            .filter(|(k, _)| ["bits", "group_size", "mode"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut entries = vec![];
        if spelt {
            entries.push(("quantization".to_string(), Value::Object(defaults)));
        }
        for (k, v) in q.iter().filter(|(_, v)| v.is_object()) {
            entries.push((format!("quantization.{k}"), v.clone()));
        }
        for (key, entry) in entries {
            if let Err(e) = Quantization::from_config_entry(&entry) {
                return QuantizationPlan {
                    expected,
                    problems,
                    config_error: Some((key, e)),
                };
            }
        }
    }
    let layers = writable
        .iter()
        .filter_map(|k| k.strip_suffix(".scales"))
        .filter(|p| dense.contains_key(&format!("{p}.weight")));
    for layer in layers {
        let weight_key = format!("{layer}.weight");
        let q = match per_layer.get(layer) {
            Some(Value::Bool(false)) => continue,
            Some(entry @ Value::Object(_)) => match Quantization::from_json(entry) {
                Some(q) => q,
                None => {
                    problems.push((
                        layer.to_string(),
                        format!("the config's entry {entry} is not a quantization"),
                    ));
                    continue;
                }
            },
            Some(other) if !other.is_boolean() => {
                let e = format!("{other} is not a quantization (an object, or false)");
                return QuantizationPlan {
                    expected,
                    problems,
                    config_error: Some((format!("quantization.{layer}"), e)),
                };
            }
            _ => {
                let Some(scales) = weights.get(&format!("{layer}.scales")) else {
                    continue;
                };
                let Some(weight) = weights.get(&weight_key) else {
                    continue;
                };
                let in_dims = dense[&weight_key].last().copied().unwrap_or(0);
                match infer_quantization(in_dims, weight, scales) {
                    Ok(q) => q,
                    Err(e) => {
                        problems.push((layer.to_string(), e));
                        default
                    }
                }
            }
        };
        if let Err(e) = q.check() {
            problems.push((layer.to_string(), e));
            continue;
        }
        let shape = &dense[&weight_key];

        let in_dims = shape.last().copied().unwrap_or(0);
        if q.group_size <= 0 || in_dims % q.group_size != 0 || (in_dims * q.bits) % 32 != 0 {
            problems.push((
                layer.to_string(),
                format!(
                    "{in_dims} input columns cannot be packed at {} bits in groups of {}",
                    q.bits, q.group_size
                ),
            ));
            continue;
        }
        let with_last = |last: i32| {
            let mut s = shape.clone();
            if let Some(l) = s.last_mut() {
                *l = last;
            }
            s
        };
        expected.insert(weight_key, with_last(in_dims * q.bits / 32));
        expected.insert(format!("{layer}.scales"), with_last(in_dims / q.group_size));
        if q.mode.has_biases() {
            expected.insert(format!("{layer}.biases"), with_last(in_dims / q.group_size));
        }
        if let Some(scales) = weights.get(&format!("{layer}.scales")) {
            let float_scales = is_floating(scales.dtype());
            if float_scales != (q.mode == QuantMode::Affine) {
                problems.push((
                    layer.to_string(),
                    format!(
                        "{} quantization with {:?} scales",
                        q.mode.as_str(),
                        scales.dtype()
                    ),
                ));
            }
        }
    }
    plain(expected, problems)
}
