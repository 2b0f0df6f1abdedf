//! The gemma family against the reference.
//!
//! - `gemma`: grouped-query and multi-query heads with an explicit head_dim, a hidden size whose
//!   square root (the embedding scale) is inexact, traditional RoPE.
//! - `gemma2`: tight and default attention / final soft-caps with `query_pre_attn_scalar`, and
//!   a config carrying a window shorter than the sequence, which the reference (full attention
//!   on every layer) ignores and so do we.
//! - `gemma3_text`: sliding-window layers (windows 8 and 6 of 36 tokens) by
//!   `sliding_window_pattern` 1, 2 and 3, the local RoPE base, linear RoPE scaling on the
//!   global layers, an untied head, and tied checkpoints in the Hugging Face layout (no head,
//!   or a redundant copy), including one whose config says untied.

#[test]
fn gemma_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("gemma");
    assert_eq!(reports.len(), 3, "cases: {reports:?}");
}

#[test]
fn gemma2_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("gemma2");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

#[test]
fn gemma3_text_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("gemma3_text");
    assert_eq!(reports.len(), 5, "cases: {reports:?}");
}
