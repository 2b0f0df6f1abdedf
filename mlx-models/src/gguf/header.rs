//! A scan of a GGUF header: the metadata keys and the tensor table (name, shape, type), without
//! reading any tensor data. MLX's loader reads the values and the tensors; this scan only
//! answers what MLX's API does not (which keys exist, each tensor's GGML type), so that an
//! unsupported tensor type is reported by name before MLX touches the data.
//!
//! Layout (GGUF versions 2 and 3, little-endian): `"GGUF"`, `u32` version, `u64` tensor count,
//! `u64` key count, the key/value pairs, then one info record per tensor.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::GgufError;

/// A tensor type of GGML, as stored in a GGUF tensor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// 32-bit floats.
    pub const F32: GgmlType = GgmlType(0);
    /// 16-bit floats.
    pub const F16: GgmlType = GgmlType(1);
    /// 4-bit blocks of 32 with a scale.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// 4-bit blocks of 32 with a scale and a minimum.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// 8-bit blocks of 32 with a scale.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// 2-bit k-quants (super-blocks of 256).
    pub const Q2_K: GgmlType = GgmlType(10);
    /// 4-bit k-quants (super-blocks of 256).
    pub const Q4_K: GgmlType = GgmlType(12);
    /// 6-bit k-quants (super-blocks of 256).
    pub const Q6_K: GgmlType = GgmlType(14);
    /// bfloat16.
    pub const BF16: GgmlType = GgmlType(30);

    /// GGML's name for the type (`Q4_K`, `BF16`, ...), or `type <n>` for an unknown number.
    pub fn name(self) -> String {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        match NAMES.get(self.0 as usize) {
            Some(name) => (*name).to_string(),
            None => format!("type {}", self.0),
        }
    }

    /// `(elements, bytes)` of one storage block, as ggml lays the type out; `None` for a type
    /// this crate does not know the layout of (which it also refuses to load).
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self.0 {
            0 => (1, 4),      // F32
            1 => (1, 2),      // F16
            2 => (32, 18),    // Q4_0
            3 => (32, 20),    // Q4_1
            6 => (32, 22),    // Q5_0
            7 => (32, 24),    // Q5_1
            8 => (32, 34),    // Q8_0
            9 => (32, 36),    // Q8_1
            10 => (256, 84),  // Q2_K
            11 => (256, 110), // Q3_K
            12 => (256, 144), // Q4_K
            13 => (256, 176), // Q5_K
            14 => (256, 210), // Q6_K
            15 => (256, 292), // Q8_K
            24 => (1, 1),     // I8
            25 => (1, 2),     // I16
            26 => (1, 4),     // I32
            27 => (1, 8),     // I64
            28 => (1, 8),     // F64
            30 => (1, 2),     // BF16
            _ => return None,
        })
    }

    /// For the types MLX turns into affine-quantized triplets: `(bits, group_size)`.
    pub fn affine_quantization(self) -> Option<(i32, i32)> {
        match self {
            GgmlType::Q4_0 | GgmlType::Q4_1 => Some((4, 32)),
            GgmlType::Q8_0 => Some((8, 32)),
            _ => None,
        }
    }

    /// Whether this loader supports the type: F32 and F16 as stored, Q4_0 / Q4_1 / Q8_0 as
    /// quantized triplets, Q2_K and Q6_K dequantized to float16 by MLX's loader.
    ///
    /// MLX's loader also turns Q4_K and BF16 into float16, but its Q4_K values disagree with
    /// llama.cpp's decoding and BF16 does not always fit float16, so both are refused; so are
    /// the types it cannot read at all (Q5_0, Q5_1, Q3_K, Q5_K, the IQ types, ...).
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q2_K | GgmlType::Q6_K
        ) || self.affine_quantization().is_some()
    }
}

/// One tensor record of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The shape in MLX order (GGUF stores the dimensions innermost first).
    pub shape: Vec<u64>,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// Where its data starts, from the start of the data section.
    pub offset: u64,
    /// Bytes of its data (`None` when the type's layout is unknown).
    pub bytes: Option<u64>,
}

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version (2 or 3).
    pub version: u32,
    /// Every metadata key, in file order.
    pub keys: Vec<String>,
    /// Every tensor record, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts in the file (the header's end, aligned).
    pub data_start: u64,
    /// The alignment of the data (`general.alignment`, default 32).
    pub alignment: u64,
}

struct Reader<R> {
    inner: R,
    /// Bytes left in the file: no length read from the header may exceed it.
    left: u64,
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;
const FLOAT64: u32 = 12;

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if n > self.left {
            return Err(format!(
                "{what} claims {n} bytes but the file has {} left",
                self.left
            ));
        }
        let mut buf = vec![0; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what}: {e}"))?;
        self.left -= n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.left {
            return Err(format!(
                "{what} claims {n} bytes but the file has {} left",
                self.left
            ));
        }
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("reading {what}: {e}"))?;
        if copied != n {
            return Err(format!("{what}: the file ends early"));
        }
        self.left -= n;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.bytes(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u64(what)?;
        let b = self.bytes(len, what)?;
        String::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// Skips one metadata value of type `ty`, refusing what MLX's GGUF reader (which does no
    /// checks of its own) would misread: 64-bit floats (it advances by 4 bytes, not 8, and then
    /// reads every later value from the wrong place), nested arrays, and strings or arrays whose
    /// length does not fit its 32-bit `int`.
    fn skip_value(&mut self, ty: u32, key: &str, depth: usize) -> Result<(), String> {
        match ty {
            STRING => {
                let len = self.u64(key)?;
                check_mlx_len(len, "bytes", key)?;
                self.skip(len, key)
            }
            ARRAY => {
                if depth > 0 {
                    return Err(format!("metadata `{key}` nests arrays"));
                }
                let item = self.u32(key)?;
                let len = self.u64(key)?;
                match item {
                    ARRAY => return Err(format!("metadata `{key}` nests arrays")),
                    FLOAT64 => return Err(float64_refused(key)),
                    _ => {}
                }
                check_mlx_len(len, "items", key)?;
                match scalar_size(item) {
                    Some(size) => {
                        let total = len
                            .checked_mul(size)
                            .ok_or_else(|| format!("metadata `{key}` is too long"))?;
                        self.skip(total, key)
                    }
                    None if item == STRING => {
                        (0..len).try_for_each(|_| self.skip_value(item, key, depth + 1))
                    }
                    None => Err(format!(
                        "metadata `{key}` is an array of unknown value type {item}"
                    )),
                }
            }
            FLOAT64 => Err(float64_refused(key)),
            _ => match scalar_size(ty) {
                Some(size) => self.skip(size, key),
                None => Err(format!("metadata `{key}` has unknown value type {ty}")),
            },
        }
    }
}

fn float64_refused(key: &str) -> String {
    format!(
        "metadata `{key}` holds 64-bit floats, which MLX's GGUF reader misreads (it would read \
         every value after it from the wrong place)"
    )
}

/// MLX's GGUF reader casts string and array lengths to a 32-bit `int`.
fn check_mlx_len(len: u64, what: &str, key: &str) -> Result<(), String> {
    if len > i32::MAX as u64 {
        return Err(format!(
            "metadata `{key}` claims {len} {what}, more than MLX's GGUF reader takes ({})",
            i32::MAX
        ));
    }
    Ok(())
}

/// Bytes of one fixed-size metadata value.
fn scalar_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Scans the header of the GGUF file at `path`.
pub fn scan(path: &Path) -> Result<Header, GgufError> {
    let io = |source: std::io::Error| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    scan_reader(path, BufReader::new(file), len)
}

/// Scans the header of a GGUF file held in memory (`bytes` is the whole file, data section
/// included); `path` only names the file in errors.
pub fn scan_bytes(path: &Path, bytes: &[u8]) -> Result<Header, GgufError> {
    scan_reader(path, bytes, bytes.len() as u64)
}

/// Scans a GGUF header from `reader`, a file of `len` bytes: no length read from the header
/// may exceed what is left of `len`, so nothing larger than the file is ever allocated. `path`
/// only names the file in errors.
pub fn scan_reader<R: Read>(path: &Path, reader: R, len: u64) -> Result<Header, GgufError> {
    let malformed = |reason: String| GgufError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let left = len;
    let mut r = Reader {
        inner: reader,
        left,
    };

    let magic = r.bytes(4, "the magic number").map_err(malformed)?;
    if magic != b"GGUF" {
        return Err(malformed("it does not start with `GGUF`".into()));
    }
    let version = r.u32("the version").map_err(malformed)?;
    if !(2..=3).contains(&version) {
        return Err(malformed(format!(
            "GGUF version {version} is not supported (2 or 3)"
        )));
    }
    let n_tensors = r.u64("the tensor count").map_err(malformed)?;
    let n_keys = r.u64("the key count").map_err(malformed)?;

    let mut keys = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..n_keys {
        let key = r.string("a metadata key").map_err(malformed)?;
        let ty = r.u32(&key).map_err(malformed)?;
        if key == "general.alignment" && ty == 4 {
            alignment = u64::from(r.u32(&key).map_err(malformed)?);
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(malformed(format!(
                    "`general.alignment` is {alignment}, not a power of two"
                )));
            }
        } else {
            r.skip_value(ty, &key, 0).map_err(malformed)?;
        }
        keys.push(key);
    }

    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string("a tensor name").map_err(malformed)?;
        let n_dims = r.u32(&name).map_err(malformed)?;
        if n_dims > 4 {
            return Err(malformed(format!(
                "tensor `{name}` has {n_dims} dimensions (at most 4)"
            )));
        }
        let mut shape = (0..n_dims)
            .map(|_| r.u64(&name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        shape.reverse();
        let ggml_type = GgmlType(r.u32(&name).map_err(malformed)?);
        let offset = r.u64(&name).map_err(malformed)?;
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                malformed(format!(
                    "tensor `{name}` has more elements than fit 64 bits"
                ))
            })?;
        // MLX's shapes are 32-bit: a larger dimension would be cut short.
        if let Some(d) = shape.iter().find(|&&d| d > i32::MAX as u64) {
            return Err(malformed(format!(
                "tensor `{name}` has a dimension of {d}, past MLX's limit of {}",
                i32::MAX
            )));
        }
        let bytes = match ggml_type.block_layout() {
            Some((block, size)) => {
                if elements % block != 0 {
                    return Err(malformed(format!(
                        "tensor `{name}` has {elements} elements, not a whole number of {} blocks of {block}",
                        ggml_type.name()
                    )));
                }
                let bytes = (elements / block).checked_mul(size).ok_or_else(|| {
                    malformed(format!(
                        "tensor `{name}` has {elements} elements of {}: more bytes than fit 64 bits",
                        ggml_type.name()
                    ))
                })?;
                Some(bytes)
            }
            None => None,
        };
        tensors.push(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
            bytes,
        });
    }
    // Every tensor's data must lie inside the file, at an aligned offset, before any reader
    // (MLX's own GGUF loader is not hardened) touches it.
    let header_end = left - r.left;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let data_bytes = left.saturating_sub(data_start);
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(malformed(format!(
                "tensor `{}` starts at offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        if let Some(bytes) = t.bytes {
            let end = t.offset.checked_add(bytes);
            if end.is_none_or(|end| end > data_bytes) {
                return Err(malformed(format!(
                    "tensor `{}` claims bytes {}..{} of the data section, but the file holds {data_bytes} bytes of data",
                    t.name,
                    t.offset,
                    end.map_or("overflow".to_string(), |e| e.to_string())
                )));
            }
        }
    }
    Ok(Header {
        version,
        keys,
        tensors,
        data_start,
        alignment,
    })
}
