//! Where a checkpoint comes from. A safetensors folder ([`Folder`]) and a GGUF file
//! ([`crate::gguf::GgufCheckpoint`]) both give what building a model needs: the config, the
//! tensors under their checkpoint names, the end-of-sequence ids, and the place on disk (for
//! the tokenizer). [`crate::load::load_source`] builds a model from any of them the same
//! way, so the loader depends on the formats and no format depends on the loader.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{self, CheckpointError};
use crate::weights::Weights;

/// A checkpoint the loader can build a model from.
pub trait CheckpointSource {
    /// What reading it can fail with.
    type Error;
    /// The folder or file it was read from.
    fn place(&self) -> &Path;
    /// The config (config.json's object, or one made from GGUF metadata).
    fn config(&self) -> Result<Value, Self::Error>;
    /// Every tensor, under its checkpoint name (before sanitize).
    fn weights(&self) -> Result<Weights, Self::Error>;
    /// The end-of-sequence ids the checkpoint declares.
    fn eos_token_ids(&self) -> Result<Vec<u32>, Self::Error>;
}

/// A Hugging Face / MLX checkpoint folder: config.json, safetensors shards (with or without
/// an index), generation_config.json.
#[derive(Debug, Clone)]
pub struct Folder {
    dir: PathBuf,
}

impl Folder {
    /// The folder `dir` (nothing is read yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Folder { dir: dir.into() }
    }
}

impl CheckpointSource for Folder {
    type Error = CheckpointError;

    fn place(&self) -> &Path {
        &self.dir
    }

    fn config(&self) -> Result<Value, CheckpointError> {
        Ok(Value::Object(checkpoint::read_config(&self.dir)?))
    }

    fn weights(&self) -> Result<Weights, CheckpointError> {
        checkpoint::load_weights(&self.dir)
    }

    fn eos_token_ids(&self) -> Result<Vec<u32>, CheckpointError> {
        checkpoint::eos_token_ids(&self.dir)
    }
}
