//! mlx-models: large language models on MLX, one annotated file per architecture.
//!
//! This crate holds what every architecture shares: config parsing and the model registry
//! (with the macros from `mlx-models-derive`), the building blocks (attention, RoPE, caches,
//! quantized and mixture-of-experts layers), and loading, tokenizing and generation. The
//! architectures themselves live in `mlx-models-zoo`, one module each (`llama`, `qwen3`, ...),
//! each with its config type (`LlamaArgs`) and its `Model`.
//!
//! # Where to start
//!
//! - [`load::load`]: a checkpoint folder or Hugging Face repo id to a model with every
//!   parameter set, the architecture picked by config.json's `model_type` through the
//!   [`registry`].
//! - [`generate::model_stream`] (a model and its caches) and [`generate::generate_tokens`] (any
//!   closure from tokens to logits): a stream of tokens with the reference's sampling and
//!   stopping rules; [`tokenizer`] and [`chat_template`] turn text into prompts.
//! - [`cache::Cache`]: the per-layer key/value state a model reads and extends.
//! - [`model::Architecture`], [`macro@mlx_model`] and [`derive@ModelArgs`]: what an
//!   architecture file writes, in the zoo or in a crate of yours; [`registry::entries`] lists
//!   every architecture linked into the binary.
//!
//! Linking architectures: a binary sees the architectures of the crates its linker keeps, so
//! call `mlx_models_zoo::link()` (or use any item of the zoo) before looking one up by name.
//!
//! ```no_run
//! use mlx_models::generate::{model_stream, GenerationConfig};
//!
//! // mlx_models_zoo::link();  (in a crate that depends on the zoo)
//! let mut loaded = mlx_models::load::load("path/to/checkpoint")?;
//! let config = GenerationConfig {
//!     max_tokens: 16,
//!     eos_token_ids: loaded.eos_token_ids.clone(),
//!     ..Default::default()
//! };
//! let mut cache = loaded.model.make_cache();
//! for step in model_stream(loaded.model.as_mut(), &mut cache, &[1, 2, 3], config)? {
//!     print!("{} ", step?.token);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

// The derives emit `::mlx_models::...` paths; this makes them resolve inside the crate too.
extern crate self as mlx_models;

pub use mlx_rs;

// --- config parsing, weight rules, registry (macros issue) ---
pub mod args;
pub mod model;
pub mod multimodal;
pub mod registry;
pub mod weights;

/// Registers a model struct as an architecture and generates its weight rules
/// ([`model::ModelSpec`]); the struct also implements [`model::Architecture`] by hand.
///
/// It works the same in any crate that depends on `mlx-models` (and on `mlx-rs`, for
/// `#[derive(ModuleParameters)]`): the entry joins the zoo's in the [`registry`] when the crate
/// is linked, and [`load::load`] finds it by its `model_type`. The arguments (`model_type`,
/// `args`, `aliases`, `architectures`, `rename`, `strip_prefix`, `add_prefix`, `drop`,
/// `tied_head`, `stack_experts`, `sanitize`) are described in the repository's
/// `docs/add-an-architecture.md`.
///
/// ```
/// use mlx_models::args::ModelArgs;
/// use mlx_models::cache::Cache;
/// use mlx_models::model::Architecture;
/// use mlx_models::nn::quantized::Linear;
/// use mlx_models::{mlx_model, registry};
/// use mlx_rs::{error::Exception, macros::ModuleParameters, Array};
///
/// /// config.json of the toy model.
/// #[derive(Debug, Clone, ModelArgs)]
/// pub struct ToyArgs {
///     /// `"toy"`.
///     pub model_type: String,
///     /// Tokens in the vocabulary.
///     #[arg(positive)]
///     pub vocab_size: usize,
/// }
///
/// /// Logits from a one-hot input through one linear layer.
/// #[mlx_model(model_type = "toy", aliases = ["toy_v2"], args = ToyArgs, drop = "*.inv_freq")]
/// #[derive(Debug, ModuleParameters)]
/// pub struct Toy {
///     #[param]
///     head: Linear,
///     vocab: i32,
/// }
///
/// impl Architecture for Toy {
///     fn new(args: &ToyArgs) -> Result<Self, Exception> {
///         let vocab = args.vocab_size as i32;
///         Ok(Toy { head: Linear::new(vocab, vocab, false)?, vocab })
///     }
///     fn forward(&mut self, inputs: &Array, _: &mut [Cache]) -> Result<Array, Exception> {
///         let eye = mlx_rs::ops::eye::<f32>(self.vocab, None, None)?;
///         self.head.forward(&eye.take_axis(inputs, 0)?)
///     }
///     fn make_cache(&self) -> Vec<Cache> {
///         Vec::new()
///     }
///     fn num_layers(&self) -> usize {
///         0
///     }
/// }
///
/// let entry = registry::find("toy_v2", &[])?;
/// assert_eq!(entry.model_type, "toy");
/// let mut built = entry.build(&serde_json::json!({"model_type": "toy", "vocab_size": 4}))?;
/// let logits = built.model.forward(&Array::from_slice(&[1u32, 3], &[1, 2]), &mut [])?;
/// assert_eq!(logits.shape(), [1, 2, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use mlx_models_derive::mlx_model;

/// Derives [`args::ModelArgs`]: config.json to typed args, field names being the JSON keys;
/// see that trait for the `#[arg(...)]` attributes.
pub use mlx_models_derive::ModelArgs;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

// --- shared building blocks (blocks issue) ---
pub mod cache;
pub mod nn;

// --- loading, tokenizer, generation (loader issue) ---
pub mod batch;
pub mod chat_template;
pub mod checkpoint;
pub mod detokenizer;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod load;
pub mod sampling;
pub mod source;
pub mod speculative;
pub mod stop;
pub mod tokenizer;
