//! The llama family against the reference, one test per architecture, every case through
//! `mlx_models_tests::parity::check_arch` (strict load, logits, greedy decode, full forward vs
//! decode, batch of two, float16).

/// `llama` (and `mistral`): untied and tied heads, attention and MLP biases with an explicit
/// head_dim, llama3 and linear RoPE scaling (traditional layout), a sliding window shorter than
/// the sequence, and a tied checkpoint in the Hugging Face layout (rotary buffers, a redundant
/// `lm_head`).
#[test]
fn llama_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("llama");
    assert_eq!(reports.len(), 6, "cases: {reports:?}");
}

/// `qwen2`: q/k/v biases without an o_proj bias; untied, tied, a tied checkpoint in the Hugging
/// Face layout (rotary buffers, a redundant `lm_head`), llama3 RoPE scaling.
#[test]
fn qwen2_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("qwen2");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

/// `qwen3`: per-head q/k norms and an explicit head_dim (32, not 64 / 4); untied, tied, a tied
/// checkpoint with a redundant `lm_head`, yarn RoPE scaling with one key/value head.
#[test]
fn qwen3_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("qwen3");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

/// `granite`: embedding, attention, residual and logits multipliers; untied, tied with
/// attention and MLP biases, a tied checkpoint with a redundant `lm_head`, linear RoPE scaling.
#[test]
fn granite_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("granite");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

/// `smollm3`: layers without RoPE by interval (default 4, and 2) or listed in the middle; tied
/// and untied; a tied checkpoint in the Hugging Face layout; sliding-window layers with llama3
/// RoPE scaling.
#[test]
fn smollm3_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("smollm3");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

/// A left-padded batch through batch caches (padding masks, per-sequence RoPE offsets): each
/// row, at prefill and at a decode step, equals its sequence run alone.
#[test]
fn left_padded_batch_cache_matches_each_sequence_alone() {
    mlx_models_tests::parity::check_left_padded_batch("qwen2", "llama3_rope");
}
