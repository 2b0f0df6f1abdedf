//! Validating a safetensors file before any tensor is made: header length, JSON header,
//! dtypes, shapes, offsets.

#[allow(unused_imports)]
use super::*;

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

/// The dtype a safetensors dtype loads as: as MLX's own loader does (`F8_E4M3` and `F8_E8M0`
/// kept as their raw bytes in `uint8`), and `F8_E5M2`, which MLX's loader refuses, decoded to
/// float16 (exactly: an E5M2 value is the top byte of the float16 of the same value). The
/// sub-byte types of the format (`F4`, `F6_E2M3`, `F6_E3M2`) are refused by name.
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
        "F8_E5M2" => Dtype::Float16,
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
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
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
