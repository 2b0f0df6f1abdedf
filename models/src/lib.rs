//! The architectures of mlx-models, one file per `model_type`. Each registers itself with
//! `#[mlx_model]`; linking this crate makes them all available to the loader.

pub mod cohere;
pub mod gemma;
pub mod gemma2;
pub mod gemma3_text;
pub mod granite;
pub mod llama;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod smollm3;
pub mod starcoder2;

/// Does nothing; calling it guarantees this crate is linked, so every architecture in it is in
/// the registry.
pub fn link() {}
