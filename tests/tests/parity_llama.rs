//! `llama` (and `mistral`) against the reference: untied and tied heads, attention and MLP
//! biases with an explicit head_dim, llama3 and linear RoPE scaling (traditional layout), and a
//! sliding window shorter than the sequence, and a tied checkpoint in the Hugging Face layout
//! (rotary buffers, a redundant `lm_head`).

#[test]
fn llama_matches_the_reference_on_every_case() {
    let reports = mlx_models_tests::parity::check_arch("llama");
    assert_eq!(reports.len(), 6, "cases: {reports:?}");
}
