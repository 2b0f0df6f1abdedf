//! phi3, starcoder2, olmo2 and cohere against the reference, through the shared parity check.
//!
//! - phi3: fused projections, untied and tied heads, partial rotary, LongRoPE (`longrope` and
//!   `su`, with a sequence longer than `original_max_position_embeddings`), linear scaling in
//!   the traditional layout.

#[test]
fn phi3_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("phi3");
    assert_eq!(reports.len(), 5, "cases: {reports:?}");
}
