//! The gemma family's float16 runs against the reference's float16 logits, on top of the
//! shared parity check that `tests/tests/parity.rs` runs on every case of every architecture.
//! The cases:
//!
//! - `gemma`: grouped-query and multi-query heads with an explicit head_dim, a hidden size whose
//!   square root (the embedding scale) is inexact, traditional RoPE.
//! - `gemma2`: tight and default attention / final soft-caps with `query_pre_attn_scalar`, and
//!   a config carrying a window shorter than the sequence, which the reference (full attention
//!   on every layer) ignores and so do we.
//! - `gemma3_text`: sliding-window layers (windows 8 and 6 of 36 tokens) by
//!   `sliding_window_pattern` 1, 2 and 3, the local RoPE base, linear RoPE scaling on the
//!   global layers, an untied head, tied checkpoints in the Hugging Face layout (no head, or a
//!   redundant copy), including one whose config says untied, and a residual stream that
//!   leaves float16's range.
//!
//! gemma2 and gemma3_text also compare their float16 prompt logits with the reference's
//! float16 run (soft-caps, masks and the embedding scale in float16, gemma3's residual clip),
//! and each architecture runs a left-padded batch through batch caches (per-sequence RoPE
//! offsets and padding masks; for gemma3_text with the sliding window too), which must equal
//! each sequence alone.

use std::path::Path;

use mlx_models::load::{load_dir, LoadOptions};
use mlx_models_tests::parity::fixtures;
use mlx_models_tests::reference::{assert_close, Fixture};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

/// One float16 step at the logits' magnitude (a few units); the runs agree bit for bit today.
const FLOAT16_TOL: f32 = 4e-3;

/// Our float16 prompt logits against the reference's (`float16.safetensors`), every case.
fn check_float16(arch: &str) -> f32 {
    let out = fixtures(arch);
    let mut dirs: Vec<_> = std::fs::read_dir(&out)
        .expect("fixture folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("float16.safetensors").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no float16 fixtures of {arch}");
    let mut worst = 0.0f32;
    for dir in &dirs {
        worst = worst.max(check_float16_case(dir));
    }
    eprintln!("parity {arch}: float16 logits within {worst:.2e} of the reference's");
    worst
}

fn check_float16_case(dir: &Path) -> f32 {
    let options = LoadOptions {
        dtype: Some(Dtype::Float16),
        ..Default::default()
    };
    let mut loaded = load_dir(dir, &options).expect("loads in float16");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("JSON");
    let prompt: Vec<i32> = meta["prompt"]
        .as_array()
        .expect("prompt")
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    let ids = Array::from_slice(&prompt, &[1, prompt.len() as i32]);
    let logits = loaded
        .model
        .forward(&ids, &mut [])
        .expect("float16 forward");
    assert_eq!(logits.dtype(), Dtype::Float16);
    let logits = logits.index(0).as_dtype(Dtype::Float32).expect("cast");
    let reference = Fixture::load(dir, "float16");
    assert_close(
        &format!("{}: float16 prompt logits", dir.display()),
        &logits,
        reference.get("prompt_logits"),
        FLOAT16_TOL,
    )
}

#[test]
fn gemma2_float16_logits_match_the_reference() {
    check_float16("gemma2");
}

#[test]
fn gemma3_text_float16_logits_match_the_reference() {
    check_float16("gemma3_text");
}
