//! GGUF checkpoints (llama.cpp's single-file format): tensors and metadata through MLX's own
//! GGUF loader, mapped onto the architectures of the registry.
//!
//! MLX returns Q4_0, Q4_1 and Q8_0 tensors as affine-quantized triplets (`<name>`,
//! `<name>.scales`, `<name>.biases`, group size 32), F32 / F16 tensors as they are stored, and
//! Q2_K / Q6_K tensors dequantized to float16. Every other GGML type is refused by name before
//! MLX reads the data ([`header::scan`], [`header::GgmlType::is_supported`]).
//!
//! The mapping is data: [`ArchSpec`] lists, per GGUF architecture, which `<arch>.*` metadata keys
//! become which config.json keys, and the weight [`Rule`]s that rename llama.cpp's tensor names
//! (`blk.{n}.attn_q`) to checkpoint names (`model.layers.{n}.self_attn.q_proj`), run by the same
//! engine as the `#[mlx_model]` rules. The result goes through `load::load_parts` like any
//! safetensors checkpoint, so loading stays strict.
//!
//! llama.cpp's converter permutes the rows of `attn_q` and `attn_k` of llama-family models so
//! that each head's rotary pairs are adjacent (`(i, i + d/2)` becomes `(2i, 2i + 1)`, the layout
//! of its "normal" RoPE). [`unpermute_rows`] undoes it, on all three arrays of a quantized
//! triplet (the permutation moves whole rows, and scales and biases are per row), so the model
//! gets exactly the Hugging Face weights and its usual RoPE.

pub mod header;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use mlx_rs::io::GgufFile;
use mlx_rs::{Array, Dtype};
use serde_json::{json, Map, Value};

use crate::source::CheckpointSource;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::{self, Rule, SanitizeError, Weights};

use header::Header;

/// Why a GGUF file could not be read or mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The header is not valid GGUF.
    #[error("{path} is not a valid GGUF file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is stored in a type this loader does not read yet.
    #[error(
        "{path}: tensor `{tensor}` is stored as {type_name}, which is not supported yet \
         ({count} tensors of unsupported types; supported: F32, F16, Q4_0, Q4_1, Q8_0, Q2_K, Q6_K)"
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The first tensor of an unsupported type.
        tensor: String,
        /// GGML's name of its type (`Q4_K`, `BF16`, ...).
        type_name: String,
        /// How many tensors have unsupported types.
        count: usize,
    },
    /// `general.architecture` names an architecture with no GGUF mapping.
    #[error("GGUF architecture `{0}` is not supported yet (supported: {list})", list = supported_architectures().join(", "))]
    UnsupportedArchitecture(String),
    /// A metadata key the mapping needs is absent.
    #[error("the GGUF metadata has no `{0}`")]
    MissingKey(String),
    /// A metadata value has the wrong kind or an unusable value.
    #[error("GGUF metadata `{key}`: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer metadata describes a tokenizer this crate cannot build yet.
    #[error("GGUF tokenizer: {0}")]
    UnsupportedTokenizer(String),
    /// Building the tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Renaming the tensors failed.
    #[error(transparent)]
    Sanitize(#[from] SanitizeError),
    /// MLX's GGUF loader or a tensor operation failed.
    #[error("MLX: {0}")]
    Mlx(String),
}

impl From<mlx_rs::io::GgufError> for GgufError {
    fn from(e: mlx_rs::io::GgufError) -> Self {
        GgufError::Mlx(e.to_string())
    }
}

impl From<mlx_rs::error::Exception> for GgufError {
    fn from(e: mlx_rs::error::Exception) -> Self {
        GgufError::Mlx(e.to_string())
    }
}

type Result<T> = std::result::Result<T, GgufError>;

/// How a config.json value is read from the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The key must be present.
    Required,
    /// Absent keys are left out of the config (the args' default applies).
    Optional,
}

/// The GGUF mapping of one architecture.
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    /// `general.architecture`.
    pub gguf_name: &'static str,
    /// The registry's `model_type`.
    pub model_type: &'static str,
    /// `(metadata key after "<arch>.", config.json key, need)`.
    pub keys: &'static [(&'static str, &'static str, Need)],
    /// `(GGUF tensor name, config.json key)`: boolean keys that are true when the tensor is
    /// in the file (biases, which the metadata does not state).
    pub present: &'static [(&'static str, &'static str)],
    /// Renames from llama.cpp's tensor names to checkpoint names.
    pub rules: &'static [Rule],
    /// Whether the converter permuted the rows of the query and key projections.
    pub permuted_qk: bool,
}

/// A [`Rule::Rename`], one line each in the tables below.
const fn rename(from: &'static str, to: &'static str) -> Rule {
    Rule::Rename { from, to }
}

/// llama.cpp's `llama` architecture (llama, mistral, SmolLM, ...).
#[rustfmt::skip]
pub const LLAMA: ArchSpec = ArchSpec {
    gguf_name: "llama",
    model_type: "llama",
    keys: &[
        ("embedding_length", "hidden_size", Need::Required),
        ("block_count", "num_hidden_layers", Need::Required),
        ("feed_forward_length", "intermediate_size", Need::Required),
        ("attention.head_count", "num_attention_heads", Need::Required),
        ("attention.head_count_kv", "num_key_value_heads", Need::Optional),
        ("attention.layer_norm_rms_epsilon", "rms_norm_eps", Need::Required),
        ("attention.key_length", "head_dim", Need::Optional),
        ("rope.freq_base", "rope_theta", Need::Optional),
        ("context_length", "max_position_embeddings", Need::Optional),
        ("vocab_size", "vocab_size", Need::Optional),
    ],
    present: &[("blk.0.attn_q.bias", "attention_bias"), ("blk.0.ffn_gate.bias", "mlp_bias")],
    rules: &[
        rename("token_embd", "model.embed_tokens"),
        rename("output_norm", "model.norm"),
        rename("output", "lm_head"),
        rename("blk.{n}.attn_norm", "model.layers.{n}.input_layernorm"),
        rename("blk.{n}.ffn_norm", "model.layers.{n}.post_attention_layernorm"),
        rename("blk.{n}.attn_q", "model.layers.{n}.self_attn.q_proj"),
        rename("blk.{n}.attn_k", "model.layers.{n}.self_attn.k_proj"),
        rename("blk.{n}.attn_v", "model.layers.{n}.self_attn.v_proj"),
        rename("blk.{n}.attn_output", "model.layers.{n}.self_attn.o_proj"),
        rename("blk.{n}.ffn_gate", "model.layers.{n}.mlp.gate_proj"),
        rename("blk.{n}.ffn_up", "model.layers.{n}.mlp.up_proj"),
        rename("blk.{n}.ffn_down", "model.layers.{n}.mlp.down_proj"),
    ],
    permuted_qk: true,
};

/// Every architecture with a GGUF mapping.
pub const ARCHITECTURES: &[ArchSpec] = &[LLAMA];

fn supported_architectures() -> Vec<&'static str> {
    ARCHITECTURES.iter().map(|a| a.gguf_name).collect()
}

/// An open GGUF file: the header scan, MLX's tensors and metadata.
pub struct GgufCheckpoint {
    path: PathBuf,
    header: Header,
    file: GgufFile,
}

impl std::fmt::Debug for GgufCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish_non_exhaustive()
    }
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl GgufCheckpoint {
    /// Opens `path`: scans the header (refusing unsupported tensor types by name), then reads
    /// tensors and metadata with MLX's loader.
    pub fn open(path: &Path) -> Result<Self> {
        let header = header::scan(path)?;
        let unsupported: Vec<_> = header
            .tensors
            .iter()
            .filter(|t| !t.ggml_type.is_supported())
            .collect();
        if let Some(first) = unsupported.first() {
            return Err(GgufError::UnsupportedType {
                path: path.to_path_buf(),
                tensor: first.name.clone(),
                type_name: first.ggml_type.name(),
                count: unsupported.len(),
            });
        }
        let file = GgufFile::load(path)?;
        Ok(GgufCheckpoint {
            path: path.to_path_buf(),
            header,
            file,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header scan: metadata keys and tensor records.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        if self.file.metadata_kind(key)?.is_none() {
            return Ok(None);
        }
        self.file
            .get_metadata_string(key)
            .map_err(|e| bad_value(key, e))
    }

    /// A string-list metadata value.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        if self.file.metadata_kind(key)?.is_none() {
            return Ok(None);
        }
        self.file
            .get_metadata_strings(key)
            .map_err(|e| bad_value(key, e))
    }

    /// A numeric or boolean metadata value (scalar or array), as MLX reads it.
    pub fn array(&self, key: &str) -> Result<Option<Array>> {
        if self.file.metadata_kind(key)?.is_none() {
            return Ok(None);
        }
        self.file
            .get_metadata_array(key)
            .map_err(|e| bad_value(key, e))
    }

    /// A scalar metadata value as JSON: integers stay integers, booleans booleans.
    pub fn scalar(&self, key: &str) -> Result<Option<Value>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        if a.size() != 1 || a.ndim() > 1 {
            return Err(GgufError::BadValue {
                key: key.into(),
                reason: format!("expected one value, got shape {:?}", a.shape()),
            });
        }
        let a = a.reshape(&[] as &[i32])?;
        let value = match a.dtype() {
            Dtype::Bool => Value::Bool(a.try_item_cast::<bool>().map_err(|e| bad_value(key, e))?),
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 | Dtype::Float64 => {
                let v = a.try_item_cast::<f32>().map_err(|e| bad_value(key, e))?;
                json!(v)
            }
            _ => Value::from(a.try_item_cast::<i64>().map_err(|e| bad_value(key, e))?),
        };
        Ok(Some(value))
    }

    /// A scalar metadata value that must be a non-negative integer.
    pub fn integer(&self, key: &str) -> Result<Option<u64>> {
        match self.scalar(key)? {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| GgufError::BadValue {
                key: key.into(),
                reason: format!("expected a non-negative integer, got {v}"),
            }),
        }
    }

    /// `general.architecture` and its mapping.
    pub fn architecture(&self) -> Result<&'static ArchSpec> {
        let name = self
            .string("general.architecture")?
            .ok_or_else(|| GgufError::MissingKey("general.architecture".into()))?;
        ARCHITECTURES
            .iter()
            .find(|a| a.gguf_name == name)
            .ok_or(GgufError::UnsupportedArchitecture(name))
    }

    /// The config.json equivalent of the metadata: the architecture's keys, the vocabulary
    /// size, `tie_word_embeddings` (no `output.weight`), RoPE scaling, and `quantization` for
    /// the quantized tensors (the most common format as the default, per-layer entries keyed
    /// by module path for the others).
    pub fn config(&self) -> Result<Value> {
        let arch = self.architecture()?;
        let mut config = Map::new();
        config.insert("model_type".into(), Value::from(arch.model_type));
        for (suffix, name, need) in arch.keys {
            let key = format!("{}.{suffix}", arch.gguf_name);
            match (self.scalar(&key)?, need) {
                (Some(v), _) => {
                    config.insert((*name).into(), v);
                }
                (None, Need::Required) => return Err(GgufError::MissingKey(key)),
                (None, Need::Optional) => {}
            }
        }
        if !config.contains_key("vocab_size") {
            let vocab = match self.strings("tokenizer.ggml.tokens")? {
                Some(tokens) => tokens.len() as u64,
                None => self
                    .tensor("token_embd.weight")
                    .and_then(|t| t.shape.first().copied())
                    .ok_or_else(|| {
                        GgufError::MissingKey(format!("{}.vocab_size", arch.gguf_name))
                    })?,
            };
            config.insert("vocab_size".into(), Value::from(vocab));
        }
        config.insert(
            "tie_word_embeddings".into(),
            Value::Bool(self.tensor("output.weight").is_none()),
        );
        for (tensor, key) in arch.present {
            config.insert((*key).into(), Value::Bool(self.tensor(tensor).is_some()));
        }
        if let Some(scaling) = self.rope_scaling(arch)? {
            config.insert("rope_scaling".into(), scaling);
        }
        if let Some(q) = self.quantization(arch)? {
            config.insert("quantization".into(), q);
        }
        Ok(Value::Object(config))
    }

    fn tensor(&self, name: &str) -> Option<&header::TensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    fn rope_scaling(&self, arch: &ArchSpec) -> Result<Option<Value>> {
        let key = format!("{}.rope.scaling.type", arch.gguf_name);
        match self.string(&key)?.as_deref() {
            None | Some("none") => Ok(None),
            Some("linear") => {
                let factor_key = format!("{}.rope.scaling.factor", arch.gguf_name);
                let factor = self
                    .scalar(&factor_key)?
                    .ok_or(GgufError::MissingKey(factor_key))?;
                Ok(Some(json!({"type": "linear", "factor": factor})))
            }
            Some(other) => Err(GgufError::BadValue {
                key,
                reason: format!("RoPE scaling `{other}` is not supported yet"),
            }),
        }
    }

    /// Checkpoint name of each GGUF tensor name, through the architecture's rules.
    fn checkpoint_names(&self, arch: &ArchSpec) -> Result<BTreeMap<String, String>> {
        // The rules rename keys of a weight map; empty arrays stand in for the tensors.
        let placeholder = Array::from_slice::<f32>(&[], &[0]);
        let mut names = BTreeMap::new();
        for t in &self.header.tensors {
            let one: Weights = HashMap::from([(t.name.clone(), placeholder.clone())]);
            let renamed = weights::apply(arch.rules, one, None)?;
            if let Some(new) = renamed.into_keys().next() {
                names.insert(t.name.clone(), new);
            }
        }
        Ok(names)
    }

    fn quantization(&self, arch: &ArchSpec) -> Result<Option<Value>> {
        let names = self.checkpoint_names(arch)?;
        let mut layers: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        for t in &self.header.tensors {
            if let Some(q) = t.ggml_type.affine_quantization() {
                let name = names.get(&t.name).unwrap_or(&t.name);
                let module = name.strip_suffix(".weight").unwrap_or(name);
                layers.insert(module.to_string(), q);
            }
        }
        let mut counts: BTreeMap<(i32, i32), usize> = BTreeMap::new();
        for q in layers.values() {
            *counts.entry(*q).or_default() += 1;
        }
        let Some((&(bits, group_size), _)) = counts
            .iter()
            .max_by_key(|(q, n)| (**n, std::cmp::Reverse(**q)))
        else {
            return Ok(None);
        };
        let mut q = Map::new();
        q.insert("group_size".into(), Value::from(group_size));
        q.insert("bits".into(), Value::from(bits));
        for (module, (b, g)) in layers {
            if (b, g) != (bits, group_size) {
                q.insert(module, json!({"group_size": g, "bits": b}));
            }
        }
        Ok(Some(Value::Object(q)))
    }

    /// The tensors under checkpoint names (quantized ones as `weight`, `scales`, `biases`),
    /// with the query and key rows back in the Hugging Face order.
    pub fn weights(&self) -> Result<Weights> {
        let arch = self.architecture()?;
        let weights = weights::apply(arch.rules, self.file.arrays()?, None)?;
        if !arch.permuted_qk {
            return Ok(weights);
        }
        let is_qk =
            |name: &str| name.contains(".self_attn.q_proj.") || name.contains(".self_attn.k_proj.");
        let heads = match weights.keys().any(|k| is_qk(k)) {
            true => self.qk_heads(arch)?,
            false => (0, 0),
        };
        weights
            .into_iter()
            .map(|(name, w)| {
                let n = if name.contains(".self_attn.q_proj.") {
                    Some(heads.0)
                } else if name.contains(".self_attn.k_proj.") {
                    Some(heads.1)
                } else {
                    None
                };
                let w = match n {
                    Some(n) => unpermute_rows(&w, n).map_err(|e| GgufError::BadValue {
                        key: name.clone(),
                        reason: format!("cannot undo the query/key row permutation: {e}"),
                    })?,
                    None => w,
                };
                Ok((name, w))
            })
            .collect()
    }

    /// `(query heads, key heads)`.
    fn qk_heads(&self, arch: &ArchSpec) -> Result<(i32, i32)> {
        let key = format!("{}.attention.head_count", arch.gguf_name);
        let heads = self.integer(&key)?.ok_or(GgufError::MissingKey(key))?;
        let kv = self
            .integer(&format!("{}.attention.head_count_kv", arch.gguf_name))?
            .unwrap_or(heads);
        Ok((heads as i32, kv as i32))
    }

    /// End-of-sequence ids: `tokenizer.ggml.eos_token_id`, `eot_token_id`, `eom_token_id`.
    pub fn eos_token_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = self.integer(key)? {
                let id = u32::try_from(id).map_err(|_| GgufError::BadValue {
                    key: key.into(),
                    reason: format!("{id} is not a token id"),
                })?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// The tokenizer and chat template of the metadata.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        tokenizer::from_metadata(self)
    }
}

fn bad_value(key: &str, e: impl std::fmt::Display) -> GgufError {
    GgufError::BadValue {
        key: key.into(),
        reason: e.to_string(),
    }
}

/// A GGUF file as a checkpoint for the loader (`mlx_models::load::load_source`).
impl CheckpointSource for GgufCheckpoint {
    type Error = GgufError;

    fn place(&self) -> &Path {
        &self.path
    }

    fn config(&self) -> Result<Value> {
        GgufCheckpoint::config(self)
    }

    fn weights(&self) -> Result<Weights> {
        GgufCheckpoint::weights(self)
    }

    fn eos_token_ids(&self) -> Result<Vec<u32>> {
        GgufCheckpoint::eos_token_ids(self)
    }
}

/// Undoes llama.cpp's row permutation of a query or key projection with `heads` heads: within
/// each head, GGUF row `2i + j` holds Hugging Face row `j * d/2 + i`. Works on any array whose
/// first axis is the output rows (weights, quantized weights, scales, biases, bias vectors).
pub fn unpermute_rows(
    w: &Array,
    heads: i32,
) -> std::result::Result<Array, mlx_rs::error::Exception> {
    let shape = w.shape().to_vec();
    let rows = shape.first().copied().unwrap_or(0);
    if heads <= 0 || rows % (2 * heads) != 0 {
        return Err(mlx_rs::error::Exception::custom(format!(
            "{rows} rows do not split into {heads} heads of pairs"
        )));
    }
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&shape[1..]);
    w.reshape(&split)?.swap_axes(1, 2)?.reshape(&shape)
}

/// Applies llama.cpp's row permutation (the inverse of [`unpermute_rows`]): what its converter
/// does to a Hugging Face query or key projection.
pub fn permute_rows(w: &Array, heads: i32) -> std::result::Result<Array, mlx_rs::error::Exception> {
    let shape = w.shape().to_vec();
    let rows = shape.first().copied().unwrap_or(0);
    if heads <= 0 || rows % (2 * heads) != 0 {
        return Err(mlx_rs::error::Exception::custom(format!(
            "{rows} rows do not split into {heads} heads of pairs"
        )));
    }
    let mut split = vec![heads, 2, rows / heads / 2];
    split.extend_from_slice(&shape[1..]);
    w.reshape(&split)?.swap_axes(1, 2)?.reshape(&shape)
}
