//! mlx-models: large language models on MLX, one annotated file per architecture.
//!
//! This crate holds what every architecture shares: config parsing and the model registry
//! (with the macros from `mlx-models-derive`), and the building blocks (attention, RoPE,
//! caches, quantized and mixture-of-experts layers).

pub use mlx_rs;

// --- config parsing, weight rules, registry (macros issue) ---
pub mod args;
pub mod model;
pub mod registry;
pub mod weights;

pub use mlx_models_derive::{mlx_model, ModelArgs};

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

// --- shared building blocks (blocks issue) ---
pub mod cache;
pub mod nn;

// --- loading, tokenizer, generation (loader issue) ---
pub mod tokenizer;
pub mod chat_template;
pub mod detokenizer;
pub mod sampling;
pub mod generate;
pub mod hub;
pub mod checkpoint;
pub mod load;
pub mod gguf;
