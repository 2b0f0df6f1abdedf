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
    use mlx_models::cache::Cache;
    use mlx_models::load::{load_dir, LoadOptions};
    use mlx_models_tests::reference::assert_close;
    use mlx_rs::ops::indexing::IndexOp;
    use mlx_rs::Array;

    let dir = mlx_models_tests::parity::fixtures("qwen2").join("llama3_rope");
    let mut loaded = load_dir(&dir, &LoadOptions::default()).expect("load");
    let model = loaded.model.as_mut();
    let long = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128];
    let short = [42, 3, 250, 17, 64, 128, 9, 77];
    let pad = (long.len() - short.len()) as i32;
    let row = |t: &[i32]| Array::from_slice(t, &[1, t.len() as i32]);
    let alone = |m: &mut dyn mlx_models::model::LanguageModel, t: &[i32]| {
        m.forward(&row(t), &mut []).expect("forward alone")
    };

    let batch = Array::from_slice(&[&long[..], &[0; 4], &short].concat(), &[2, 12]);
    let mut cache: Vec<Cache> = (0..model.num_layers())
        .map(|_| Cache::batch(&[0, pad]))
        .collect();
    let prefill = model.forward(&batch, &mut cache).expect("batch prefill");
    let step = model
        .forward(&Array::from_slice(&[7, 7], &[2, 1]), &mut cache)
        .expect("batch decode step");

    let long_alone = alone(model, &[&long[..], &[7]].concat());
    let short_alone = alone(model, &[&short[..], &[7]].concat());
    let tol = mlx_models_tests::parity::TOL;
    assert_close(
        "long prefill",
        &prefill.index((0, 11)),
        &long_alone.index((0, 11)),
        tol,
    );
    assert_close(
        "long step",
        &step.index((0, 0)),
        &long_alone.index((0, 12)),
        tol,
    );
    assert_close(
        "short prefill",
        &prefill.index((1, 11)),
        &short_alone.index((0, 7)),
        tol,
    );
    assert_close(
        "short step",
        &step.index((1, 0)),
        &short_alone.index((0, 8)),
        tol,
    );
}
