//! Making the tensors of validated files ([`LoadStrategy`]) and reading a whole folder.

#[allow(unused_imports)]
use super::*;

pub(super) fn map_file(path: &Path) -> Result<memmap2::MmapMut> {
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

/// The float16 bits of each FP8 E5M2 byte: the byte is the float16's top half, so the
/// conversion is exact (infinities and NaNs included).
fn e5m2_to_f16_bits(bytes: &[u8]) -> Vec<u16> {
    bytes.iter().map(|&b| u16::from(b) << 8).collect()
}

fn tensor_from_map(map: &Arc<SharedMap>, start: usize, meta: &TensorMeta, copy: bool) -> Array {
    let bytes = &map.0[start + meta.data_offsets.0..start + meta.data_offsets.1];
    if meta.file_dtype == "F8_E5M2" {
        let bits = e5m2_to_f16_bits(bytes);
        // SAFETY: `bits` holds one float16 per element of the validated shape; MLX copies it.
        return unsafe {
            Array::from_raw_data(bits.as_ptr() as *const c_void, &meta.shape, Dtype::Float16)
        };
    }
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
    // MLX's loader refuses `F8_E5M2`, so a file that has any is read from the map.
    let mlx_reads_it = header.tensors.values().all(|t| t.file_dtype != "F8_E5M2");
    if strategy == LoadStrategy::Mlx && mlx_reads_it {
        drop(map);
        let arrays = Array::load_safetensors(path).map_err(|e| CheckpointError::Mlx {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        return Ok(arrays);
    }
    let start = 8 + header.header_len;
    let map = Arc::new(SharedMap(map));
    let copy = strategy != LoadStrategy::Mmap;
    Ok(header
        .tensors
        .iter()
        .map(|(name, meta)| (name.clone(), tensor_from_map(&map, start, meta, copy)))
        .collect())
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
