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
    use mlx_models::cache::Cache;
    use mlx_models::load::{load_dir, LoadOptions};
    use mlx_models_tests::reference::assert_close;
    use mlx_rs::ops::indexing::IndexOp;
    use mlx_rs::Array;

    let long = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128];
    let short = [42, 3, 250, 17, 64, 128, 9, 77];
    let pad = (long.len() - short.len()) as i32;
    let row = |t: &[i32]| Array::from_slice(t, &[1, t.len() as i32]);
    let tol = mlx_models_tests::parity::TOL;
    let cases = [
        ("phi3", "su_partial_tied"),
        ("starcoder2", "tied_gqa"),
        ("olmo2", "llama3_rope"),
        ("cohere", "qk_norm"),
    ];
    for (arch, case) in cases {
        let dir = mlx_models_tests::parity::fixtures(arch).join(case);
        let mut loaded = load_dir(&dir, &LoadOptions::default()).expect("load");
        let model = loaded.model.as_mut();
        let mut alone = |t: &[i32]| model.forward(&row(t), &mut []).expect("forward alone");
        let long_alone = alone(&[&long[..], &[7]].concat());
        let short_alone = alone(&[&short[..], &[7]].concat());

        let batch = Array::from_slice(&[&long[..], &[0; 4], &short].concat(), &[2, 12]);
        let mut cache: Vec<Cache> = (0..model.num_layers())
            .map(|_| Cache::batch(&[0, pad]))
            .collect();
        let prefill = model.forward(&batch, &mut cache).expect("batch prefill");
        let step = model
            .forward(&Array::from_slice(&[7, 7], &[2, 1]), &mut cache)
            .expect("batch decode step");

        let label = |what: &str| format!("{arch}/{case}: {what}");
        let (p, s) = (&prefill, &step);
        assert_close(
            &label("long prefill"),
            &p.index((0, 11)),
            &long_alone.index((0, 11)),
            tol,
        );
        assert_close(
            &label("long step"),
            &s.index((0, 0)),
            &long_alone.index((0, 12)),
            tol,
        );
        assert_close(
            &label("short prefill"),
            &p.index((1, 11)),
            &short_alone.index((0, 7)),
            tol,
        );
        assert_close(
            &label("short step"),
            &s.index((1, 0)),
            &short_alone.index((0, 8)),
            tol,
        );
    }
}
