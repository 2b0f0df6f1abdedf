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

mod config;
mod files;
mod read;
mod summary;
mod validate;

use config::read_json;
pub use config::{
    eos_token_ids, generation_config_eos, parse_eos_ids, read_config, tag_bare_non_finite,
    LOADER_KEYS,
};
pub use files::{read_index, weight_files, ShardIndex};
use read::map_file;
pub use read::{load_safetensors, load_weights, load_weights_with, LoadOptions};
pub use summary::{summarize, CheckpointSummary};
pub use validate::{
    dtype_width, parse_safetensors, read_safetensors_header, LoadStrategy, SafetensorsHeader,
    TensorMeta,
};

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
