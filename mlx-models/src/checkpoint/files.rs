//! Finding the weight files of a folder: `model*.safetensors`, the shard index, pickle
//! files refused.

#[allow(unused_imports)]
use super::*;

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
