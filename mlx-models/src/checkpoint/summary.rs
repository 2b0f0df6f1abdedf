//! What a folder's safetensors headers say, without reading tensor data (for `inspect`).

#[allow(unused_imports)]
use super::*;

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
