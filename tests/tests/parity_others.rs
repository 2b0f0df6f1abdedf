//! phi3, starcoder2, olmo2 and cohere against the reference, through the shared parity check.
//!
//! - phi3: fused projections, untied and tied heads, partial rotary, LongRoPE (`longrope` and
//!   `su`, with a sequence longer than `original_max_position_embeddings`), linear scaling in
//!   the traditional layout, and a 4-bit checkpoint.
//! - starcoder2: LayerNorms and projections with biases, exact-gelu MLP, tied and untied heads.
//! - olmo2: whole-projection q/k norms and post-norms; tied and untied heads, biases with an
//!   explicit head_dim, llama3 RoPE scaling, and a Hugging Face checkpoint with rotary buffers.
//! - cohere: parallel attention and MLP, `logit_scale`, with and without per-head q/k norms,
//!   attention and LayerNorm biases, and a 4-bit checkpoint.

#[test]
fn phi3_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("phi3");
    assert_eq!(reports.len(), 6, "cases: {reports:?}");
}

#[test]
fn starcoder2_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("starcoder2");
    assert_eq!(reports.len(), 2, "cases: {reports:?}");
}

#[test]
fn olmo2_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("olmo2");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

#[test]
fn cohere_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("cohere");
    assert_eq!(reports.len(), 4, "cases: {reports:?}");
}

/// A left-padded batch through batch caches (padding masks, each row at its own positions):
/// each row, at prefill and at a decode step, equals its sequence run alone, for one case of
/// each architecture.
#[test]
fn left_padded_batch_cache_matches_each_sequence_alone() {
    for (arch, case) in [
        ("phi3", "su_partial_tied"),
        ("starcoder2", "tied_gqa"),
        ("olmo2", "llama3_rope"),
        ("cohere", "qk_norm"),
    ] {
        mlx_models_tests::parity::check_left_padded_batch(arch, case);
    }
}
