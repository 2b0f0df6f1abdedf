//! Linear and embedding layers that hold either dense or quantized weights, named as
//! mlx-community checkpoints store them (flat `weight`, `scales`, `biases`, `bias`), and the
//! quantization primitives in every mode mlx-c exposes: affine (2, 3, 4, 5, 6, 8 bits),
//! mxfp4, nvfp4, mxfp8. mlx-rs only passes `"affine"`, so these call the C API through
//! `mlx_sys` with the mode. Mirrors `mlx.nn.Linear`, `QuantizedLinear`, `Embedding` and
//! `QuantizedEmbedding` (including `as_linear` for tied embeddings).

use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;
use std::sync::Once;

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param, Parameter};
use mlx_rs::nested::NestedValue;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp};
use mlx_rs::ops::{addmm, matmul, zeros_dtype};
use mlx_rs::{Array, Dtype, Stream};

/// A quantization mode of `mx.quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// Scale and bias per group; 2, 3, 4, 5, 6 or 8 bits.
    Affine,
    /// OCP microscaling fp4 (groups of 32, no biases).
    Mxfp4,
    /// NVIDIA fp4 (groups of 16, no biases).
    Nvfp4,
    /// OCP microscaling fp8 (groups of 32, no biases).
    Mxfp8,
}

impl QuantMode {
    /// The name mlx uses.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Nvfp4 => "nvfp4",
            QuantMode::Mxfp8 => "mxfp8",
        }
    }

    fn as_cstr(self) -> &'static CStr {
        match self {
            QuantMode::Affine => c"affine",
            QuantMode::Mxfp4 => c"mxfp4",
            QuantMode::Nvfp4 => c"nvfp4",
            QuantMode::Mxfp8 => c"mxfp8",
        }
    }

    /// Reads a mode name (`quantization.mode` in config.json).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "affine" => QuantMode::Affine,
            "mxfp4" => QuantMode::Mxfp4,
            "nvfp4" => QuantMode::Nvfp4,
            "mxfp8" => QuantMode::Mxfp8,
            _ => return None,
        })
    }

    /// `(group_size, bits)` when the config leaves them out (`_defaults_for_mode`).
    pub fn defaults(self) -> (i32, i32) {
        match self {
            QuantMode::Affine => (64, 4),
            QuantMode::Mxfp4 => (32, 4),
            QuantMode::Nvfp4 => (16, 4),
            QuantMode::Mxfp8 => (32, 8),
        }
    }

    /// The bit widths and group sizes MLX has kernels for in this mode.
    fn supported(self) -> (&'static [i32], &'static [i32]) {
        match self {
            QuantMode::Affine => (&[2, 3, 4, 5, 6, 8], &[32, 64, 128]),
            QuantMode::Mxfp4 => (&[4], &[32]),
            QuantMode::Nvfp4 => (&[4], &[16]),
            QuantMode::Mxfp8 => (&[8], &[32]),
        }
    }

    /// "`key` value is not supported in mode m (supported: ...)" for `bits` or `group_size`.
    fn unsupported(self, key: &str, value: &str) -> String {
        let (bits, groups) = self.supported();
        let list = if key == "bits" { bits } else { groups };
        let list: Vec<String> = list.iter().map(i32::to_string).collect();
        format!(
            "`{key}` {value} is not supported in mode {} (supported: {})",
            self.as_str(),
            list.join(", ")
        )
    }

    /// Whether the mode stores `biases` next to `scales`.
    pub fn has_biases(self) -> bool {
        self == QuantMode::Affine
    }
}

/// How a layer is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantization {
    /// Values sharing one scale.
    pub group_size: i32,
    /// Bits per value.
    pub bits: i32,
    /// The mode.
    pub mode: QuantMode,
}

impl Quantization {
    /// Affine quantization.
    pub fn affine(group_size: i32, bits: i32) -> Self {
        Self {
            group_size,
            bits,
            mode: QuantMode::Affine,
        }
    }

    /// A mode with its default group size and bits where not given.
    pub fn with_defaults(mode: QuantMode, group_size: Option<i32>, bits: Option<i32>) -> Self {
        let (g, b) = mode.defaults();
        Self {
            group_size: group_size.unwrap_or(g),
            bits: bits.unwrap_or(b),
            mode,
        }
    }

    /// Reads `{"group_size": .., "bits": .., "mode": ..}` (a config's `quantization` entry);
    /// `None` when the value is not such an object or names an unknown mode.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let obj = value.as_object()?;
        let mode = match obj.get("mode") {
            Some(serde_json::Value::String(m)) => QuantMode::parse(m)?,
            _ => QuantMode::Affine,
        };
        // Out-of-range values become -1, which `check` refuses (no silent truncation).
        let int = |k: &str| {
            obj.get(k)
                .and_then(serde_json::Value::as_i64)
                .map(|v| i32::try_from(v).unwrap_or(-1))
        };
        Some(Self::with_defaults(mode, int("group_size"), int("bits")))
    }

    /// Whether MLX has kernels for this mode, width and group size (the reference's
    /// `nn.quantize` accepts no other): affine at 2, 3, 4, 5, 6 or 8 bits in groups of 32, 64
    /// or 128; mxfp4 at 4 bits in groups of 32; nvfp4 at 4 bits in groups of 16; mxfp8 at 8
    /// bits in groups of 32. The error says what is supported.
    pub fn check(&self) -> std::result::Result<(), String> {
        let (bits, groups) = self.mode.supported();
        if !bits.contains(&self.bits) {
            return Err(self.mode.unsupported("bits", &self.bits.to_string()));
        }
        if !groups.contains(&self.group_size) {
            return Err(self
                .mode
                .unsupported("group_size", &self.group_size.to_string()));
        }
        Ok(())
    }

    /// Reads and checks one entry of a config's `quantization` (the default or a layer's):
    /// an object with optional `mode`, `bits` and `group_size`, the last two defaulting to the
    /// mode's. The error names the key and the value as written.
    pub fn from_config_entry(value: &serde_json::Value) -> std::result::Result<Self, String> {
        use serde_json::Value;
        let obj = value.as_object().ok_or_else(|| {
            format!("{value} is not a quantization (an object with `bits`, `group_size`, `mode`)")
        })?;
        let mode = match obj.get("mode") {
            None | Some(Value::Null) => QuantMode::Affine,
            Some(Value::String(m)) => QuantMode::parse(m).ok_or_else(|| {
                format!("unknown `mode` `{m}` (supported: affine, mxfp4, nvfp4, mxfp8)")
            })?,
            Some(other) => return Err(format!("`mode` {other} is not a mode name")),
        };
        let (group_default, bits_default) = mode.defaults();
        let int = |key: &str, default: i32| match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .and_then(|x| i32::try_from(x).ok())
                .ok_or_else(|| mode.unsupported(key, &v.to_string())),
        };
        let q = Self {
            group_size: int("group_size", group_default)?,
            bits: int("bits", bits_default)?,
            mode,
        };
        q.check()?;
        Ok(q)
    }

    fn group(&self) -> mlx_sys::mlx_optional_int {
        mlx_sys::mlx_optional_int {
            value: self.group_size,
            has_value: true,
        }
    }

    fn bits_opt(&self) -> mlx_sys::mlx_optional_int {
        mlx_sys::mlx_optional_int {
            value: self.bits,
            has_value: true,
        }
    }

    fn describe(&self) -> String {
        format!(
            "mode {}, {} bits, group size {}",
            self.mode.as_str(),
            self.bits,
            self.group_size
        )
    }
}

static ERROR_HANDLER: Once = Once::new();

/// Makes sure mlx-rs has installed its error handler (mlx-c's default one exits the process)
/// before we call the C API ourselves: any fallible mlx-rs op installs it.
pub(crate) fn ensure_error_handler() {
    ERROR_HANDLER.call_once(|| {
        let _ = mlx_rs::ops::abs(Array::from_int(0));
    });
}

fn null_array() -> mlx_sys::mlx_array {
    unsafe { mlx_sys::mlx_array_new() }
}

fn opt_ptr(a: Option<&Array>) -> mlx_sys::mlx_array {
    a.map_or_else(null_array, Array::as_ptr)
}

/// Runs an mlx-c op that writes one array, on the default stream.
fn array_op(
    what: &str,
    f: impl FnOnce(*mut mlx_sys::mlx_array, mlx_sys::mlx_stream) -> i32,
) -> Result<Array> {
    array_op_on(what, &Stream::thread_local_or_default(), f)
}

/// Runs an mlx-c op that writes one array, on `stream`.
fn array_op_on(
    what: &str,
    stream: &Stream,
    f: impl FnOnce(*mut mlx_sys::mlx_array, mlx_sys::mlx_stream) -> i32,
) -> Result<Array> {
    ensure_error_handler();
    let mut res = null_array();
    let status = f(&mut res, stream.as_ptr());
    if status != 0 {
        unsafe { mlx_sys::mlx_array_free(res) };
        return Err(Exception::custom(format!("{what} failed")));
    }
    Ok(unsafe { Array::from_ptr(res) })
}

/// `mx.quantize(w, group_size, bits, mode)`: packed weights, scales and (affine only) biases.
pub fn quantize(w: &Array, q: &Quantization) -> Result<(Array, Array, Option<Array>)> {
    ensure_error_handler();
    let stream = Stream::thread_local_or_default();
    unsafe {
        let mut res = mlx_sys::mlx_vector_array_new();
        let gs = null_array();
        let status = mlx_sys::mlx_quantize(
            &mut res,
            w.as_ptr(),
            q.group(),
            q.bits_opt(),
            q.mode.as_cstr().as_ptr(),
            gs,
            stream.as_ptr(),
        );
        mlx_sys::mlx_array_free(gs);
        if status != 0 {
            mlx_sys::mlx_vector_array_free(res);
            return Err(Exception::custom(format!(
                "quantize ({}) of shape {:?} failed",
                q.describe(),
                w.shape()
            )));
        }
        let n = mlx_sys::mlx_vector_array_size(res);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut a = null_array();
            mlx_sys::mlx_vector_array_get(&mut a, res, i);
            out.push(Array::from_ptr(a));
        }
        mlx_sys::mlx_vector_array_free(res);
        let mut it = out.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(w), Some(s), b) => Ok((w, s, b)),
            _ => Err(Exception::custom("quantize returned fewer than 2 arrays")),
        }
    }
}

/// `mx.from_fp8(x, dtype)`: uint8 bytes read as FP8 E4M3 values (the form MLX loads a
/// safetensors `F8_E4M3` tensor in), converted to `dtype`. Exact for float16, bfloat16 and
/// float32 (every E4M3 value is one of theirs).
pub fn from_fp8(x: &Array, dtype: Dtype) -> Result<Array> {
    if x.dtype() != Dtype::Uint8 {
        return Err(Exception::custom(format!(
            "from_fp8 takes the uint8 bytes of FP8 values, not {:?}",
            x.dtype()
        )));
    }
    array_op("from_fp8", |res, s| unsafe {
        mlx_sys::mlx_from_fp8(res, x.as_ptr(), dtype.into(), s)
    })
}

/// `mx.dequantize` in any mode; like the Python binding, the result has the scales' type for
/// affine and is bfloat16 otherwise.
pub fn dequantize(
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    q: &Quantization,
) -> Result<Array> {
    array_op(&format!("dequantize ({})", q.describe()), |res, s| unsafe {
        let gs = null_array();
        let st = mlx_sys::mlx_dequantize(
            res,
            w.as_ptr(),
            scales.as_ptr(),
            opt_ptr(biases),
            q.group(),
            q.bits_opt(),
            q.mode.as_cstr().as_ptr(),
            gs,
            // As the Python binding: the scales' type for affine, else bfloat16.
            mlx_sys::mlx_optional_dtype {
                value: mlx_sys::mlx_dtype__MLX_BFLOAT16,
                has_value: q.mode != QuantMode::Affine,
            },
            s,
        );
        mlx_sys::mlx_array_free(gs);
        st
    })
}

/// `mx.quantized_matmul` in any mode (`transpose`: `x @ wᵀ`).
pub fn quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    q: &Quantization,
) -> Result<Array> {
    quantized_matmul_on(
        x,
        w,
        scales,
        biases,
        transpose,
        q,
        &Stream::thread_local_or_default(),
    )
}

/// Output rows each part of a split quantized product gets at least.
const MIN_ROWS_PER_PART: i32 = 256;

thread_local! {
    /// One CPU stream per core (each MLX stream runs on its own thread), made on first use.
    static CPU_STREAMS: Vec<Stream> = {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        (0..cores).map(|_| Stream::new_with_device(&mlx_rs::Device::cpu())).collect()
    };
}

/// Whether MLX's default device is the CPU.
pub(crate) fn on_cpu() -> bool {
    mlx_rs::Device::try_default()
        .and_then(|d| d.get_type())
        .is_ok_and(|t| matches!(t, mlx_rs::DeviceType::Cpu))
}

/// `x @ wᵀ` for a quantized `w` of shape `[out, packed]`, using every core on the CPU.
///
/// MLX's CPU kernels for quantized products run on one thread (its float32 products go through
/// a multi-threaded BLAS). On the CPU, with enough rows, the output rows are split into one
/// part per core, each part computed on its own stream (so on its own thread), and the parts
/// joined: each output element is computed exactly as in the single product, so the result is
/// identical, about `cores` times sooner. Elsewhere (GPU) or for small layers it is the single
/// product.
pub fn quantized_linear(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    q: &Quantization,
) -> Result<Array> {
    if cpu_kernels_apply(q, x, scales) {
        // The CPU kernels use every core themselves.
        return quantized_matmul(x, w, scales, biases, true, q);
    }
    let rows = if w.ndim() == 2 { w.dim(0) } else { 0 };
    split_rows(rows, |range, stream| {
        let rows_of = |a: &Array| a.index(range.clone());
        let bias_part = biases.map(rows_of);
        let (w, scales) = (rows_of(w), rows_of(scales));
        quantized_matmul_on(x, &w, &scales, bias_part.as_ref(), true, q, stream)
    })
}

/// Whether a transposed product of a 2-D weight quantized as `q` runs on mlx-sys's
/// multi-threaded CPU kernels (when the stream is a CPU one): affine, and a float32 result
/// (half-precision results stay MLX's, whose values the reference has).
fn cpu_kernels_apply(q: &Quantization, x: &Array, scales: &Array) -> bool {
    (x.dtype() == mlx_rs::Dtype::Float32 || scales.dtype() == mlx_rs::Dtype::Float32)
        && q.mode == QuantMode::Affine
        && matches!(q.bits, 2 | 3 | 4 | 5 | 6 | 8)
        && matches!(q.group_size, 32 | 64 | 128)
        && mlx_sys::cpu_kernels()
}

/// Runs a product whose output has `rows` rows (its last axis): as one product (`f` over all
/// rows) on the default stream, or on the CPU with enough rows as one part per core, each on
/// its own stream (`f` over a range of rows), the parts joined along the last axis.
fn split_rows(
    rows: i32,
    f: impl Fn(std::ops::Range<i32>, &Stream) -> Result<Array>,
) -> Result<Array> {
    let parts = CPU_STREAMS.with(|s| s.len()) as i32;
    if parts < 2 || rows < MIN_ROWS_PER_PART * 2 || !on_cpu() {
        return f(0..rows, &Stream::thread_local_or_default());
    }
    let parts = parts.min(rows / MIN_ROWS_PER_PART);
    let per_part = (rows + parts - 1) / parts;
    let outputs = CPU_STREAMS.with(|streams| {
        (0..parts)
            .map(|k| {
                f(
                    k * per_part..((k + 1) * per_part).min(rows),
                    &streams[k as usize],
                )
            })
            .collect::<Result<Vec<Array>>>()
    })?;
    mlx_rs::ops::concatenate(&outputs, -1)
}

/// [`quantized_matmul`] on a given stream.
fn quantized_matmul_on(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    q: &Quantization,
    stream: &Stream,
) -> Result<Array> {
    array_op_on(
        &format!("quantized_matmul ({})", q.describe()),
        stream,
        |res, s| unsafe {
            mlx_sys::mlx_models_quantized_matmul(
                res,
                x.as_ptr(),
                w.as_ptr(),
                scales.as_ptr(),
                opt_ptr(biases),
                transpose,
                q.group(),
                q.bits_opt(),
                q.mode.as_cstr().as_ptr(),
                s,
            )
        },
    )
}

/// `mx.gather_qmm` in any mode: `x` times the quantized matrices picked by `rhs_indices`.
///
/// On the CPU, as [`quantized_linear`] does for one matrix, a transposed product with enough
/// output rows (`w`: `[experts, out, packed]`) is split by rows into one part per core, each
/// on its own stream, and the parts joined: the same values, computed on every core.
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    q: &Quantization,
    sorted_indices: bool,
) -> Result<Array> {
    if !(transpose && w.ndim() == 3) {
        let stream = Stream::thread_local_or_default();
        let (lhs, rhs, sorted) = (lhs_indices, rhs_indices, sorted_indices);
        return gather_qmm_on(
            x, w, scales, biases, lhs, rhs, transpose, q, sorted, &stream,
        );
    }
    split_rows(w.dim(1), |range, stream| {
        let rows_of = |a: &Array| a.index((.., range.clone()));
        let bias_part = biases.map(rows_of);
        let (w, scales) = (rows_of(w), rows_of(scales));
        let (lhs, rhs, sorted) = (lhs_indices, rhs_indices, sorted_indices);
        gather_qmm_on(
            x,
            &w,
            &scales,
            bias_part.as_ref(),
            lhs,
            rhs,
            transpose,
            q,
            sorted,
            stream,
        )
    })
}

/// [`gather_qmm`] as one product on a given stream.
#[allow(clippy::too_many_arguments)]
fn gather_qmm_on(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    q: &Quantization,
    sorted_indices: bool,
    stream: &Stream,
) -> Result<Array> {
    array_op_on(
        &format!("gather_qmm ({})", q.describe()),
        stream,
        |res, s| unsafe {
            mlx_sys::mlx_gather_qmm(
                res,
                x.as_ptr(),
                w.as_ptr(),
                scales.as_ptr(),
                opt_ptr(biases),
                opt_ptr(lhs_indices),
                opt_ptr(rhs_indices),
                transpose,
                q.group(),
                q.bits_opt(),
                q.mode.as_cstr().as_ptr(),
                sorted_indices,
                s,
            )
        },
    )
}

/// A parameter slot that only exists once it holds an array: hidden from `parameters()` while
/// empty (so a dense layer does not list `scales`), yet always reachable through
/// `parameters_mut()`, so that the loader can fill it from a quantized checkpoint.
/// (mlx-rs hides a `Param<Option<Array>>` that is `None` from both views, so such a slot could
/// never be loaded.)
#[derive(Debug, Clone)]
pub struct Slot {
    value: Array,
    frozen: bool,
}

impl Slot {
    /// An empty slot.
    pub fn empty() -> Self {
        Self {
            value: Array::from_slice::<f32>(&[], &[0]),
            frozen: false,
        }
    }

    /// A slot holding `value` (`None`: empty).
    pub fn new(value: Option<Array>) -> Self {
        match value {
            Some(value) => Self {
                value,
                frozen: false,
            },
            None => Self::empty(),
        }
    }

    /// The array, unless the slot is empty.
    pub fn get(&self) -> Option<&Array> {
        (self.value.size() > 0).then_some(&self.value)
    }

    /// Fills (or, with `None`, empties) the slot.
    pub fn set(&mut self, value: Option<Array>) {
        *self = Self {
            frozen: self.frozen,
            ..Self::new(value)
        };
    }
}

impl Parameter for Slot {
    fn count(&self) -> usize {
        usize::from(self.get().is_some())
    }

    fn freeze(&mut self, _recursive: bool) {
        self.frozen = true;
    }

    fn unfreeze(&mut self, _recursive: bool) {
        self.frozen = false;
    }

    fn is_frozen(&self) -> Option<bool> {
        Some(self.frozen)
    }

    fn as_nested_value(&self) -> NestedValue<Rc<str>, &Array> {
        match self.get() {
            Some(a) => NestedValue::Value(a),
            None => NestedValue::Map(HashMap::new()),
        }
    }

    fn as_nested_value_mut(&mut self) -> NestedValue<Rc<str>, &mut Array> {
        NestedValue::Value(&mut self.value)
    }

    fn as_trainable_nested_value(&self) -> Option<NestedValue<Rc<str>, &Array>> {
        if self.frozen {
            return None;
        }
        self.get().map(NestedValue::Value)
    }
}

/// Recovers how a packed weight was quantized from the shapes (as the reference's
/// `infer_quant_config` does): `input_dims` unpacked columns, `weight` `[..., in * bits / 32]`,
/// `scales` `[..., in / group_size]`; affine scales keep a float type, the other modes store
/// uint8 scales and each allows one (bits, group size) pair.
pub fn infer_quantization(
    input_dims: i32,
    weight: &Array,
    scales: &Array,
) -> std::result::Result<Quantization, String> {
    let packed = weight.shape().last().copied().unwrap_or(0);
    let groups = scales.shape().last().copied().unwrap_or(0);
    if input_dims <= 0 || groups <= 0 || input_dims % groups != 0 || (packed * 32) % input_dims != 0
    {
        return Err(format!(
            "a packed weight of {packed} columns with {groups} scale groups does not fit {input_dims} input columns"
        ));
    }
    let (group_size, bits) = (input_dims / groups, packed * 32 / input_dims);
    if scales.dtype() != Dtype::Uint8 {
        if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) {
            return Err(format!("{bits}-bit affine quantization does not exist"));
        }
        return Ok(Quantization::affine(group_size, bits));
    }
    let mode = match (bits, group_size) {
        (4, 16) => QuantMode::Nvfp4,
        (4, 32) => QuantMode::Mxfp4,
        (8, 32) => QuantMode::Mxfp8,
        _ => {
            return Err(format!(
            "no quantization mode has {bits} bits with group size {group_size} and uint8 scales"
        ))
        }
    };
    Ok(Quantization {
        group_size,
        bits,
        mode,
    })
}

pub(crate) fn packed_quantization(
    input_dims: i32,
    weight: &Array,
    scales: &Slot,
    what: &str,
) -> Result<Option<Quantization>> {
    match scales.get() {
        None => Ok(None),
        Some(s) => infer_quantization(input_dims, weight, s)
            .map(Some)
            .map_err(|e| Exception::custom(format!("{what}: {e}"))),
    }
}

pub(crate) fn quantize_in_place(
    weight: &mut Param<Array>,
    scales: &mut Slot,
    biases: &mut Slot,
    q: Quantization,
    what: &str,
) -> Result<()> {
    if scales.get().is_some() {
        return Err(Exception::custom(format!("{what} is already quantized")));
    }
    let (w, s, b) = quantize(weight, &q)?;
    **weight = w;
    scales.set(Some(s));
    biases.set(b);
    Ok(())
}

/// A linear layer, dense or quantized. Parameters: `weight` (`[out, in]`, or packed uint32
/// `[out, in * bits / 32]` when quantized), `scales` and `biases` (quantized), `bias`. The
/// quantization is read back from the shapes, so a loader fills a dense layer with packed
/// tensors and it becomes quantized.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Linear {
    /// The weight.
    #[param]
    pub weight: Param<Array>,
    /// The additive bias.
    #[param]
    pub bias: Param<Option<Array>>,
    /// Quantization scales (empty when dense).
    #[param]
    pub scales: Slot,
    /// Quantization biases (affine mode; empty otherwise).
    #[param]
    pub biases: Slot,
    input_dims: i32,
}

impl Linear {
    /// A dense layer of zeros (the loader fills it).
    pub fn new(input_dims: i32, output_dims: i32, bias: bool) -> Result<Self> {
        let weight = zeros_dtype(&[output_dims, input_dims], Dtype::Float32)?;
        let bias = if bias {
            Some(zeros_dtype(&[output_dims], Dtype::Float32)?)
        } else {
            None
        };
        Ok(Self::from_weights(weight, bias))
    }

    /// A dense layer with these weights.
    pub fn from_weights(weight: Array, bias: Option<Array>) -> Self {
        let input_dims = weight.shape().last().copied().unwrap_or(0);
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Slot::empty(),
            biases: Slot::empty(),
            input_dims,
        }
    }

    /// A quantized layer with these (already packed) weights.
    pub fn from_quantized(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        bias: Option<Array>,
        q: Quantization,
    ) -> Self {
        let input_dims = weight.shape().last().copied().unwrap_or(0) * 32 / q.bits.max(1);
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Slot::new(Some(scales)),
            biases: Slot::new(biases),
            input_dims,
        }
    }

    /// Quantizes the current weight in place (`to_quantized`).
    pub fn quantize(&mut self, q: Quantization) -> Result<()> {
        quantize_in_place(
            &mut self.weight,
            &mut self.scales,
            &mut self.biases,
            q,
            "the linear layer",
        )
    }

    /// How the weight is quantized (`None`: dense).
    pub fn quantization(&self) -> Result<Option<Quantization>> {
        packed_quantization(self.input_dims, &self.weight, &self.scales, "linear layer")
    }

    /// Whether the weight is quantized.
    pub fn is_quantized(&self) -> bool {
        self.scales.get().is_some()
    }

    /// `x @ weightᵀ + bias`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => {
                let y = quantized_linear(x, &self.weight, scales, self.biases.get(), &q)?;
                match self.bias.value.as_ref() {
                    Some(b) => y.add(b),
                    None => Ok(y),
                }
            }
            _ => {
                let wt = self.weight.t();
                match self.bias.value.as_ref() {
                    Some(b) => addmm(b, x, &wt, None, None),
                    None => matmul(x, &wt),
                }
            }
        }
    }
}

impl Module<&Array> for Linear {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, x: &Array) -> Result<Array> {
        Linear::forward(self, x)
    }

    fn training_mode(&mut self, _mode: bool) {}
}

/// An embedding table, dense or quantized (`weight`, `scales`, `biases`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct Embedding {
    /// `[vocab, dims]`, or packed when quantized.
    #[param]
    pub weight: Param<Array>,
    /// Quantization scales (empty when dense).
    #[param]
    pub scales: Slot,
    /// Quantization biases (affine mode; empty otherwise).
    #[param]
    pub biases: Slot,
    dims: i32,
}

impl Embedding {
    /// A dense table of zeros.
    pub fn new(num_embeddings: i32, dims: i32) -> Result<Self> {
        Ok(Self::from_weights(zeros_dtype(
            &[num_embeddings, dims],
            Dtype::Float32,
        )?))
    }

    /// A dense table.
    pub fn from_weights(weight: Array) -> Self {
        let dims = weight.shape().last().copied().unwrap_or(0);
        Self {
            weight: Param::new(weight),
            scales: Slot::empty(),
            biases: Slot::empty(),
            dims,
        }
    }

    /// A quantized table.
    pub fn from_quantized(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        q: Quantization,
    ) -> Self {
        let dims = weight.shape().last().copied().unwrap_or(0) * 32 / q.bits.max(1);
        Self {
            weight: Param::new(weight),
            scales: Slot::new(Some(scales)),
            biases: Slot::new(biases),
            dims,
        }
    }

    /// Quantizes the table in place.
    pub fn quantize(&mut self, q: Quantization) -> Result<()> {
        quantize_in_place(
            &mut self.weight,
            &mut self.scales,
            &mut self.biases,
            q,
            "the embedding",
        )
    }

    /// How the table is quantized (`None`: dense).
    pub fn quantization(&self) -> Result<Option<Quantization>> {
        packed_quantization(self.dims, &self.weight, &self.scales, "embedding")
    }

    /// Whether the table is quantized.
    pub fn is_quantized(&self) -> bool {
        self.scales.get().is_some()
    }

    /// The rows of `ids` (any shape of integer ids).
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => {
                let biases = self.biases.get().map(|b| b.try_index(ids)).transpose()?;
                dequantize(
                    &self.weight.try_index(ids)?,
                    &scales.try_index(ids)?,
                    biases.as_ref(),
                    &q,
                )
            }
            _ => self.weight.try_index(ids),
        }
    }

    /// The table used as the output projection (`x @ weightᵀ`) of a model with tied
    /// embeddings.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match (self.quantization()?, self.scales.get()) {
            (Some(q), Some(scales)) => {
                quantized_linear(x, &self.weight, scales, self.biases.get(), &q)
            }
            _ => matmul(x, self.weight.t()),
        }
    }
}

impl Module<&Array> for Embedding {
    type Output = Array;
    type Error = Exception;

    fn forward(&mut self, ids: &Array) -> Result<Array> {
        Embedding::forward(self, ids)
    }

    fn training_mode(&mut self, _mode: bool) {}
}
