//! Finding and reading a checkpoint folder: `config.json`, `generation_config.json` and the
//! weights (`model*.safetensors`, sharded through `model.safetensors.index.json`).
//!
//! Every safetensors file is validated before a single tensor is made: the header length is
//! checked against the file size (a header that claims gigabytes is refused before anything is
//! allocated), the JSON header is parsed, every dtype must be one MLX can hold, every shape must
//! fit MLX's 32-bit dimensions, and the offsets must tile the data section exactly (no overlap, no
//! gap, nothing past the end). Validation is done by the `safetensors` crate over a memory map;
//! its errors are mapped to the typed [`CheckpointError`] variants below.
//!
//! Tensors are then made by MLX's loader or from the memory map (see [`LoadStrategy`]). Pickle checkpoints
//! (`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`) are never opened: a folder that only has
//! those is refused with [`CheckpointError::PickleOnly`].

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlx_rs::{Array, Dtype};
use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensorError};
use serde_json::Value;

/// The largest header the loader accepts (the limit of the `safetensors` format itself).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The name of the index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint path is not a folder.
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    /// `config.json` is missing.
    #[error("no config.json in {0}")]
    ConfigMissing(PathBuf),
    /// A JSON file (config, generation config, index) is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    MalformedJson {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: serde_json::Error,
    },
    /// `config.json` holds JSON that is not an object.
    #[error("{0} must hold a JSON object")]
    ConfigNotObject(PathBuf),
    /// `eos_token_id` is neither a token id nor a list of token ids.
    #[error("{path}: eos_token_id must be a token id or a list of token ids, got {value}")]
    InvalidEosTokenId {
        /// The file it was read from.
        path: PathBuf,
        /// The value found.
        value: String,
    },
    /// The folder has no `model*.safetensors` file.
    #[error("no model*.safetensors file in {0}")]
    NoWeights(PathBuf),
    /// The folder only has pickle checkpoints, which are refused (never opened).
    #[error(
        "{dir} only has pickle checkpoints ({files}), which can run arbitrary code and are \
         refused; convert them to safetensors"
    )]
    PickleOnly {
        /// The folder.
        dir: PathBuf,
        /// The pickle files found, comma-separated.
        files: String,
    },
    /// The index names a shard that is not in the folder.
    #[error("{index} names shard {shard}, which is missing")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The missing shard's file name.
        shard: String,
    },
    /// The index names a shard by a path that leaves the folder.
    #[error("{index} names shard {shard:?}, which is not a file name in the checkpoint folder")]
    BadShardName {
        /// The index file.
        index: PathBuf,
        /// The shard name as written.
        shard: String,
    },
    /// The index is not of the form `{"weight_map": {tensor: shard}}`.
    #[error("{index}: {reason}")]
    BadIndex {
        /// The index file.
        index: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index says a tensor is in a shard that does not have it.
    #[error("{index} places tensor {tensor} in {shard}, which does not have it")]
    IndexedTensorMissing {
        /// The index file.
        index: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard it should be in.
        shard: String,
    },
    /// Two weight files have a tensor of the same name.
    #[error("tensor {tensor} is in both {first} and {second}")]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// One file.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// The file is shorter than the 8-byte header length.
    #[error("{0} is truncated: shorter than the 8-byte safetensors header length")]
    TooSmall(PathBuf),
    /// The header length is larger than the file or than the format allows.
    #[error("{path}: header length {header_len} does not fit (file is {file_len} bytes, format limit {MAX_HEADER_BYTES})")]
    HeaderLength {
        /// The file.
        path: PathBuf,
        /// The header length the file claims.
        header_len: u64,
        /// The file size.
        file_len: u64,
    },
    /// The header is not valid UTF-8 JSON of the safetensors form.
    #[error("{path}: bad safetensors header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor has a dtype MLX cannot hold (or one the format does not define).
    #[error("{path}: tensor {tensor} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype as written.
        dtype: String,
    },
    /// A tensor's shape is too large (overflow, or a dimension past MLX's 32-bit limit).
    #[error("{path}: tensor {tensor} has a shape that is too large: {shape:?}")]
    ShapeTooLarge {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape as written.
        shape: Vec<usize>,
    },
    /// Tensor offsets overlap, leave gaps or disagree with the tensor's size.
    #[error("{path}: tensor {tensor} has invalid data offsets (overlapping, out of order or not matching its shape and dtype)")]
    BadOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// The data section is shorter or longer than the header says: a truncated (or padded) file.
    #[error("{path}: data section is {actual} bytes but the header describes {expected}: the file is truncated or corrupt")]
    DataSize {
        /// The file.
        path: PathBuf,
        /// The size the header describes.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// MLX failed to read the file (only with [`LoadStrategy::Mlx`]).
    #[error("{path}: MLX could not load it: {reason}")]
    Mlx {
        /// The file.
        path: PathBuf,
        /// MLX's message.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// config.json and generation_config.json
// ---------------------------------------------------------------------------------------------

fn read_json(path: &Path) -> Result<Value> {
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

// ---------------------------------------------------------------------------------------------
// Finding the weight files
// ---------------------------------------------------------------------------------------------

fn is_pickle_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".bin")
        || lower.ends_with(".pt")
        || lower.ends_with(".pth")
        || lower.ends_with(".ckpt")
        || lower.ends_with(".pkl")
}

fn is_weight_name(name: &str) -> bool {
    name.starts_with("model") && name.ends_with(".safetensors")
}

/// The weight files of a checkpoint folder: every `model*.safetensors`, sorted by name.
///
/// With a `model.safetensors.index.json`, every shard that the index names must be present
/// ([`CheckpointError::MissingShard`] names the first missing one). A folder without any
/// safetensors file but with pickle checkpoints is refused ([`CheckpointError::PickleOnly`]);
/// those files are never opened.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(CheckpointError::NotAFolder(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    let mut pickles = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_weight_name(&name) && path.is_file() {
            files.push(path);
        } else if is_pickle_name(&name) {
            pickles.push(name);
        }
    }
    files.sort();
    pickles.sort();
    if let Some(index) = read_index(dir)? {
        for shard in index.shards() {
            if !dir.join(shard).is_file() {
                return Err(CheckpointError::MissingShard {
                    index: index.path.clone(),
                    shard: shard.to_string(),
                });
            }
        }
    }
    if files.is_empty() {
        if !pickles.is_empty() {
            return Err(CheckpointError::PickleOnly {
                dir: dir.to_path_buf(),
                files: pickles.join(", "),
            });
        }
        return Err(CheckpointError::NoWeights(dir.to_path_buf()));
    }
    Ok(files)
}

/// A parsed `model.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    /// Where it was read from.
    pub path: PathBuf,
    /// Tensor name to shard file name.
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The distinct shard file names, sorted.
    pub fn shards(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// Reads `model.safetensors.index.json` when the folder has one.
pub fn read_index(dir: &Path) -> Result<Option<ShardIndex>> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let json = read_json(&path)?;
    let bad = |reason: &str| CheckpointError::BadIndex {
        index: path.clone(),
        reason: reason.to_string(),
    };
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object"))?;
    let mut weight_map = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(&format!("the shard of {tensor} is not a string")))?;
        let p = Path::new(shard);
        let plain = p.components().count() == 1
            && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
        if !plain {
            return Err(CheckpointError::BadShardName {
                index: path.clone(),
                shard: shard.to_string(),
            });
        }
        weight_map.insert(tensor.clone(), shard.to_string());
    }
    Ok(Some(ShardIndex { path, weight_map }))
}

// ---------------------------------------------------------------------------------------------
// Reading safetensors
// ---------------------------------------------------------------------------------------------

/// How tensors are made from a validated safetensors file. Every strategy validates the whole
/// header (through a memory map) before any tensor is made.
///
/// Measured on a 256 MB float32 checkpoint (16 tensors, file in the page cache, Linux CPU
/// backend, a busy 2-core machine; `measure_load_strategies` in
/// `tests/tests/loader_checkpoint.rs`): load + evaluate + first use took 195-235 ms with
/// [`LoadStrategy::Mlx`], 213-260 ms with [`LoadStrategy::Mmap`] and 236-315 ms with
/// [`LoadStrategy::Copy`]. MLX's CPU allocator does not adopt outside memory, so `Mmap` copies
/// from the map there. MLX's own loader reads the file straight into its buffers and only when a
/// tensor is evaluated, so tensors that sanitize drops (vision towers, MTP layers) are never
/// read, and load time matches the reference's `mx.load` by construction. Hence the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadStrategy {
    /// Read the validated file with MLX's own loader (lazy: the data is read when a tensor is
    /// first evaluated, so tensors that are never used are never read).
    #[default]
    Mlx,
    /// Memory-map the file (private, copy-on-write) and hand MLX the mapped bytes of each tensor
    /// without a copy where MLX's allocator adopts outside memory (Metal, page-aligned data) and
    /// the data is aligned; otherwise MLX copies from the map. The map lives as long as any
    /// tensor made from it.
    Mmap,
    /// Read each tensor from the map into memory that MLX allocates (an eager copy).
    Copy,
}

/// What a safetensors header says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// The MLX dtype the tensor loads as.
    pub dtype: Dtype,
    /// The dtype as written in the file (`"BF16"`, `"F8_E4M3"`, ...).
    pub file_dtype: String,
    /// The shape.
    pub shape: Vec<i32>,
    /// Byte offsets of the data, relative to the start of the data section.
    pub data_offsets: (usize, usize),
}

/// A validated safetensors header.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// The file.
    pub path: PathBuf,
    /// The header's length in bytes (the data starts at `8 + header_len`).
    pub header_len: usize,
    /// The `__metadata__` entries.
    pub metadata: HashMap<String, String>,
    /// The tensors, by name.
    pub tensors: BTreeMap<String, TensorMeta>,
}

/// The dtype MLX loads a safetensors dtype as (as MLX's own loader does: `F8_E4M3` and
/// `F8_E8M0` are kept as their raw bytes in `uint8`).
fn mlx_dtype(dtype: &str) -> Option<Dtype> {
    Some(match dtype {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::Uint8,
        "I8" => Dtype::Int8,
        "U16" => Dtype::Uint16,
        "I16" => Dtype::Int16,
        "U32" => Dtype::Uint32,
        "I32" => Dtype::Int32,
        "U64" => Dtype::Uint64,
        "I64" => Dtype::Int64,
        "F16" => Dtype::Float16,
        "BF16" => Dtype::Bfloat16,
        "F32" => Dtype::Float32,
        "F64" => Dtype::Float64,
        "C64" => Dtype::Complex64,
        "F8_E4M3" | "F8_E8M0" => Dtype::Uint8,
        _ => return None,
    })
}

/// Bytes per element of an MLX dtype.
pub fn dtype_width(dtype: Dtype) -> usize {
    match dtype {
        Dtype::Bool | Dtype::Uint8 | Dtype::Int8 => 1,
        Dtype::Uint16 | Dtype::Int16 | Dtype::Float16 | Dtype::Bfloat16 => 2,
        Dtype::Uint32 | Dtype::Int32 | Dtype::Float32 => 4,
        Dtype::Uint64 | Dtype::Int64 | Dtype::Float64 | Dtype::Complex64 => 8,
    }
}

fn st_dtype_name(d: StDtype) -> String {
    // The Debug form of the crate's dtype is its name in the file (`F8_E4M3`, `BF16`, ...).
    format!("{d:?}")
}

/// Checks the file's 8-byte header length against the file size and the format limit, reads
/// the header JSON and checks every dtype, before the `safetensors` crate validates the rest.
fn precheck(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(CheckpointError::TooSmall(path.to_path_buf()));
    };
    let mut arr = [0u8; 8];
    arr.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(arr);
    if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
        return Err(CheckpointError::HeaderLength {
            path: path.to_path_buf(),
            header_len,
            file_len,
        });
    }
    let header = &bytes[8..8 + header_len as usize];
    let bad = |reason: String| CheckpointError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(header).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(entries) = json else {
        return Err(bad("the header is not a JSON object".into()));
    };
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tensor {name} has no dtype string")))?;
        if mlx_dtype(dtype).is_none() {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.clone(),
                dtype: dtype.to_string(),
            });
        }
        // Shapes are checked here so that an overflow is reported with the tensor's name.
        if let Some(shape) = info.get("shape").and_then(Value::as_array) {
            let dims: Option<Vec<u64>> = shape.iter().map(Value::as_u64).collect();
            if let Some(dims) = dims {
                let fits = dims.iter().all(|&d| d <= i32::MAX as u64)
                    && dims
                        .iter()
                        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                        .is_some_and(|n| n.checked_mul(16).is_some());
                if !fits {
                    return Err(CheckpointError::ShapeTooLarge {
                        path: path.to_path_buf(),
                        tensor: name.clone(),
                        shape: dims.iter().map(|&d| d as usize).collect(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Validates a whole safetensors file held in `bytes` and returns its header.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<SafetensorsHeader> {
    precheck(path, bytes)?;
    let (header_len, meta): (usize, Metadata) = match safetensors::SafeTensors::read_metadata(bytes)
    {
        Ok(v) => v,
        Err(e) => return Err(map_st_error(path, bytes, e)),
    };
    let mut tensors = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let file_dtype = st_dtype_name(info.dtype);
        let dtype = mlx_dtype(&file_dtype).ok_or_else(|| CheckpointError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: name.clone(),
            dtype: file_dtype.clone(),
        })?;
        let shape = info
            .shape
            .iter()
            .map(|&d| i32::try_from(d))
            .collect::<std::result::Result<Vec<i32>, _>>()
            .map_err(|_| CheckpointError::ShapeTooLarge {
                path: path.to_path_buf(),
                tensor: name.clone(),
                shape: info.shape.clone(),
            })?;
        tensors.insert(
            name,
            TensorMeta {
                dtype,
                file_dtype,
                shape,
                data_offsets: info.data_offsets,
            },
        );
    }
    Ok(SafetensorsHeader {
        path: path.to_path_buf(),
        header_len,
        metadata: meta.metadata().clone().unwrap_or_default(),
        tensors,
    })
}

fn map_st_error(path: &Path, bytes: &[u8], e: SafeTensorError) -> CheckpointError {
    let path_buf = path.to_path_buf();
    let bad = |reason: String| CheckpointError::BadHeader {
        path: path_buf.clone(),
        reason,
    };
    match e {
        SafeTensorError::HeaderTooSmall => CheckpointError::TooSmall(path_buf),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            let mut arr = [0u8; 8];
            arr.copy_from_slice(&bytes[..8]);
            CheckpointError::HeaderLength {
                path: path_buf,
                header_len: u64::from_le_bytes(arr),
                file_len: bytes.len() as u64,
            }
        }
        SafeTensorError::InvalidHeader(e) => bad(format!("not UTF-8: {e}")),
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            bad(format!("not a valid safetensors header: {e}"))
        }
        SafeTensorError::InvalidOffset(tensor) => CheckpointError::BadOffsets {
            path: path_buf,
            tensor,
        },
        SafeTensorError::TensorInvalidInfo | SafeTensorError::MisalignedSlice => {
            CheckpointError::BadOffsets {
                path: path_buf,
                tensor: first_bad_tensor(bytes).unwrap_or_else(|| "?".into()),
            }
        }
        SafeTensorError::ValidationOverflow => CheckpointError::ShapeTooLarge {
            path: path_buf,
            tensor: first_bad_tensor(bytes).unwrap_or_else(|| "?".into()),
            shape: Vec::new(),
        },
        SafeTensorError::MetadataIncompleteBuffer => {
            let (expected, actual) = data_sizes(bytes).unwrap_or((0, 0));
            CheckpointError::DataSize {
                path: path_buf,
                expected,
                actual,
            }
        }
        other => bad(other.to_string()),
    }
}

/// The data section's size as the header describes it (the largest end offset) and as found.
fn data_sizes(bytes: &[u8]) -> Option<(u64, u64)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let json: Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let end = json
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Some((end, (bytes.len() - 8 - n) as u64))
}

/// The first tensor (in data order) whose offsets disagree with its shape and dtype.
fn first_bad_tensor(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let json: Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let mut entries: Vec<(u64, String)> = Vec::new();
    for (name, info) in json.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let start = info.get("data_offsets")?.get(0)?.as_u64()?;
        let end = info.get("data_offsets")?.get(1)?.as_u64()?;
        let width: u64 = match info.get("dtype")?.as_str()? {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E8M0" => 1,
            "U16" | "I16" | "F16" | "BF16" => 2,
            "U32" | "I32" | "F32" => 4,
            _ => 8,
        };
        let count = info
            .get("shape")?
            .as_array()?
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(d.as_u64()?));
        let ok = count
            .and_then(|c| c.checked_mul(width))
            .is_some_and(|size| end >= start && end - start == size);
        if !ok {
            entries.push((start, name.clone()));
        }
    }
    entries.sort();
    entries.into_iter().next().map(|(_, n)| n)
}

/// Reads and validates only the header of a safetensors file (for inspection): the file is
/// memory-mapped, never read whole.
pub fn read_safetensors_header(path: &Path) -> Result<SafetensorsHeader> {
    let map = map_file(path)?;
    parse_safetensors(path, &map)
}

fn map_file(path: &Path) -> Result<memmap2::MmapMut> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len < 8 {
        return Err(CheckpointError::TooSmall(path.to_path_buf()));
    }
    // SAFETY: the map is private (copy-on-write), so writes through it never reach the file. As
    // with every memory map, a file truncated by another process while mapped can fault; a
    // checkpoint is not expected to change while it is loaded.
    unsafe { memmap2::MmapOptions::new().map_copy(&file) }.map_err(io_err(path))
}

/// A memory map shared by the tensors made from it without a copy.
struct SharedMap(memmap2::MmapMut);

unsafe extern "C" fn release_map(payload: *mut c_void) {
    if !payload.is_null() {
        // SAFETY: `payload` is the `Box<Arc<SharedMap>>` leaked in `tensor_from_map`, and MLX
        // calls this exactly once per array.
        drop(unsafe { Box::from_raw(payload as *mut Arc<SharedMap>) });
    }
}

fn tensor_from_map(map: &Arc<SharedMap>, start: usize, meta: &TensorMeta, copy: bool) -> Array {
    let bytes = &map.0[start + meta.data_offsets.0..start + meta.data_offsets.1];
    let ptr = bytes.as_ptr();
    // MLX views can start at any element, so its kernels only need element alignment.
    let width = dtype_width(meta.dtype);
    let aligned = (ptr as usize) & (width - 1) == 0; // widths are powers of two
    if copy || !aligned || bytes.is_empty() {
        // SAFETY: `bytes` holds exactly shape x dtype bytes (validated); MLX copies them.
        return unsafe { Array::from_raw_data(ptr as *const c_void, &meta.shape, meta.dtype) };
    }
    let payload = Box::into_raw(Box::new(Arc::clone(map))) as *mut c_void;
    // SAFETY: the data pointer stays valid while the payload (a clone of the map's Arc) lives,
    // and MLX calls `release_map` with the payload once it no longer needs the data (right away
    // when its allocator copies instead). The map is private and writable, so MLX may also
    // reuse the buffer in place.
    unsafe {
        let raw = mlx_sys::mlx_array_new_data_managed_payload(
            ptr as *mut c_void,
            meta.shape.as_ptr(),
            meta.shape.len() as i32,
            meta.dtype.into(),
            payload,
            Some(release_map),
        );
        Array::from_ptr(raw)
    }
}

/// Reads one safetensors file into arrays, after validating it.
pub fn load_safetensors(path: &Path, strategy: LoadStrategy) -> Result<HashMap<String, Array>> {
    let map = map_file(path)?;
    let header = parse_safetensors(path, &map)?;
    if strategy == LoadStrategy::Mlx {
        drop(map);
        let arrays = Array::load_safetensors(path).map_err(|e| CheckpointError::Mlx {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        return Ok(arrays);
    }
    let start = 8 + header.header_len;
    let map = Arc::new(SharedMap(map));
    let copy = strategy == LoadStrategy::Copy;
    Ok(header
        .tensors
        .iter()
        .map(|(name, meta)| (name.clone(), tensor_from_map(&map, start, meta, copy)))
        .collect())
}

/// What the headers of a checkpoint's weight files say, without reading any tensor data (for
/// `inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// The weight files.
    pub files: Vec<PathBuf>,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of stored elements, all tensors together (packed quantized weights count as
    /// their stored `uint32` elements).
    pub elements: u64,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Elements per dtype as written in the files (`"BF16"`, `"U32"`, ...).
    pub dtypes: BTreeMap<String, u64>,
    /// Paths of the layers stored quantized (those with a `<path>.scales` tensor), sorted.
    pub quantized_layers: Vec<String>,
    /// Every tensor name, sorted.
    pub names: Vec<String>,
}

/// Summarizes a checkpoint folder from its safetensors headers (each validated).
pub fn summarize(dir: &Path) -> Result<CheckpointSummary> {
    let files = weight_files(dir)?;
    let mut summary = CheckpointSummary {
        files: files.clone(),
        ..CheckpointSummary::default()
    };
    for file in &files {
        let header = read_safetensors_header(file)?;
        for (name, meta) in &header.tensors {
            let n: u64 = meta.shape.iter().map(|&d| d as u64).product();
            summary.tensors += 1;
            summary.elements += n;
            summary.bytes += (meta.data_offsets.1 - meta.data_offsets.0) as u64;
            *summary.dtypes.entry(meta.file_dtype.clone()).or_default() += n;
            if let Some(layer) = name.strip_suffix(".scales") {
                summary.quantized_layers.push(layer.to_string());
            }
            summary.names.push(name.clone());
        }
    }
    summary.quantized_layers.sort();
    summary.names.sort();
    Ok(summary)
}

/// Options of [`load_weights_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// How tensors are made.
    pub strategy: LoadStrategy,
}

/// Reads every weight of a checkpoint folder (see [`weight_files`]) with the default options.
pub fn load_weights(dir: &Path) -> Result<HashMap<String, Array>> {
    load_weights_with(dir, LoadOptions::default())
}

/// Reads every weight of a checkpoint folder: each file is validated, a tensor present in two
/// files is an error, and with an index every tensor it lists must be in the shard it names.
pub fn load_weights_with(dir: &Path, options: LoadOptions) -> Result<HashMap<String, Array>> {
    let files = weight_files(dir)?;
    let index = read_index(dir)?;
    let mut weights: HashMap<String, Array> = HashMap::new();
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for file in &files {
        let arrays = load_safetensors(file, options.strategy)?;
        for (name, array) in arrays {
            if let Some(first) = origin.get(&name) {
                return Err(CheckpointError::DuplicateTensor {
                    tensor: name,
                    first: first.clone(),
                    second: file.clone(),
                });
            }
            origin.insert(name.clone(), file.clone());
            weights.insert(name, array);
        }
    }
    if let Some(index) = index {
        for (tensor, shard) in &index.weight_map {
            let found = origin
                .get(tensor)
                .and_then(|p| p.file_name())
                .is_some_and(|n| n.to_string_lossy() == shard.as_str());
            if !found {
                return Err(CheckpointError::IndexedTensorMissing {
                    index: index.path.clone(),
                    tensor: tensor.clone(),
                    shard: shard.clone(),
                });
            }
        }
    }
    Ok(weights)
}
