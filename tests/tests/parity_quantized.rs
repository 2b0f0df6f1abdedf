//! Quantized checkpoints (llama and qwen3) against the reference: its `quantize_model` output (4, 3 and 6 bits,
//! mxfp4, per-layer overrides with a dense layer and an 8-bit layer, quantized tied
//! embeddings) loads strictly through our loader, which reads each layer's packing back from
//! the config and the shapes, and computes the reference's logits and greedy tokens.

#[test]
fn quantized_checkpoints_match_the_reference() {
    let reports = mlx_models_tests::parity::check_arch("quantized");
    assert_eq!(reports.len(), 7, "cases: {reports:?}");
}
