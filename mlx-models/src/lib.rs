//! mlx-models: large language models on MLX, one annotated file per architecture.
//!
//! This crate holds what every architecture shares. The macros live in `mlx-models-derive` and
//! are re-exported here.

pub use mlx_rs;
