//! The architectures of mlx-models, one file per `model_type`. Each registers itself with
//! `#[mlx_model]`; linking this crate makes them all available to the loader.
//!
//! Each module is one architecture: its config type (`llama::LlamaArgs`, config.json field by
//! field) and its `Model`, which can be built directly from the args
//! (`mlx_models::model::Architecture::new`) or found through `mlx_models::registry` and
//! loaded with `mlx_models::load::load`. See the README's "Use it from your crate".

#![warn(missing_docs)]

pub mod apertus;
pub mod baichuan_m1;
pub mod cohere;
pub mod cohere2;
pub mod deepseek_v2;
pub mod deepseek_v3;
pub mod deepseek_v32;
pub mod ernie4_5;
pub mod exaone;
pub mod exaone4;
pub mod falcon_h1;
pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod gemma3_text;
pub mod gemma3n;
pub mod gemma4;
pub mod gemma4_text;
pub mod glm;
pub mod glm4;
pub mod glm4_moe;
pub mod glm4_moe_lite;
pub mod gpt2;
pub mod gpt_bigcode;
pub mod gpt_neox;
pub mod gpt_oss;
pub mod gptj;
pub mod granite;
pub mod granitemoe;
pub mod granitemoehybrid;
pub mod helium;
pub mod hunyuan_v1_dense;
pub mod internlm2;
pub mod internlm3;
pub mod jamba;
pub mod lfm2;
pub mod lfm2_vl;
pub mod llama;
pub mod llama4;
pub mod llama4_text;
pub mod mamba;
pub mod mamba2;
pub mod mellum;
pub mod mimo;
pub mod minicpm;
pub mod minicpm3;
pub mod ministral3;
pub mod mistral3;
pub mod mixtral;
pub mod nanochat;
pub mod nemotron;
pub mod nemotron_h;
pub mod nemotron_nas;
pub mod olmo2;
pub mod olmo3;
pub mod olmoe;
pub mod openelm;
pub mod phi;
pub mod phi3;
pub mod phi3small;
pub mod phimoe;
pub mod pixtral;
pub mod plamo;
pub mod plamo2;
pub mod qwen;
pub mod qwen2;
pub mod qwen2_moe;
pub mod qwen2_vl;
pub mod qwen3;
pub mod qwen3_5;
pub mod qwen3_moe;
pub mod qwen3_next;
pub mod qwen3_vl;
pub mod qwen3_vl_moe;
pub mod recurrent_gemma;
pub mod seed_oss;
pub mod smollm3;
pub mod stablelm;
pub mod starcoder2;
pub mod telechat3;
pub mod youtu_llm;

/// Does nothing; calling it guarantees this crate is linked, so every architecture in it is in
/// the registry.
pub fn link() {}

/// The README's "Use it from your crate" section (`docs/use-from-your-crate.md`): its code
/// compiles as a doctest of this crate, against the API a downstream crate sees.
#[cfg(doctest)]
#[doc = include_str!("../../docs/use-from-your-crate.md")]
pub struct UseFromYourCrate;
