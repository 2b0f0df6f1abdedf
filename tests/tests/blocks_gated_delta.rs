//! The gated delta rule (`mlx_models::nn::gated_delta`) against mlx-lm's `gated_delta.py` on
//! the CPU (its ops functions), on random inputs from `scripts/reference/blocks/gated_delta.py`:
//! key heads shared by several value heads and not, with and without an initial state,
//! left- and right-padded rows (a padded position leaves the state as it was), one decode
//! step, prompts of 7 and 64 positions, per-head and per-feature decays, and float16 /
//! bfloat16 inputs (the state stays float32), prompts of 80 and 130 positions through the
//! chunked form (decays that reach zero in float32 among them). Also `normalize_qk`,
//! `compute_g` and qwen3_next's gated RMSNorm.

use mlx_models::nn::gated_delta::{
    compute_g, gated_delta_chunked, gated_delta_ops, gated_delta_update, normalize_qk,
    GatedRmsNorm, CHUNK,
};
use mlx_models_tests::reference::{run_script, DiffLog, Fixture};
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{IndexOp, NewAxis};
use mlx_rs::ops::select;
use mlx_rs::{Array, Dtype};

fn fixture() -> Fixture {
    Fixture::load(
        &run_script("scripts/reference/blocks/gated_delta.py"),
        "gated_delta",
    )
}

/// The cases of one kind, with their dtype.
fn cases(fx: &Fixture, kind: &str) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = fx
        .meta
        .keys()
        .filter(|k| !k.starts_with("__"))
        .map(|k| (k.clone(), fx.json(k)))
        .filter(|(_, c)| c["kind"] == kind)
        .map(|(k, c)| (k, c["dtype"].as_str().expect("dtype").to_string()))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no `{kind}` cases in {}",
        fx.path.display()
    );
    names
}

/// Tolerance of outputs in `dtype`: float32 to rounding, the half types to about one unit in
/// the last place at the outputs' size (a few units).
fn tol(dtype: &str) -> f32 {
    match dtype {
        "float32" => 1e-5,
        "float16" => 4e-3,
        "bfloat16" => 3e-2,
        other => panic!("unknown dtype {other}"),
    }
}

#[test]
fn gated_delta_update_matches_the_reference() {
    let fx = fixture();
    for (name, dtype) in cases(&fx, "update") {
        let get = |k: &str| fx.get(&format!("{name}.{k}"));
        let opt = |k: &str| fx.arrays.get(&format!("{name}.{k}"));
        let (q, k, v) = (get("q"), get("k"), get("v"));
        let dk = q.dim(-1) as f32;
        let mut log = DiffLog::default();
        let (qn, kn) = normalize_qk(q, k, dk.powf(-0.5), 1e-6).unwrap();
        assert_eq!(qn.dtype(), q.dtype(), "{name}: normalized queries' dtype");
        log.close(
            &format!("{name}: normalized q"),
            &qn,
            get("qn"),
            tol(&dtype),
        );
        log.close(
            &format!("{name}: normalized k"),
            &kn,
            get("kn"),
            tol(&dtype),
        );
        let g = compute_g(get("A_log"), get("a"), get("dt_bias")).unwrap();
        assert_eq!(g.dtype(), Dtype::Float32, "{name}: the decay is float32");
        log.close(&format!("{name}: g"), &g, get("g"), 1e-6);

        let (y, state) = gated_delta_update(
            get("qn"),
            get("kn"),
            v,
            get("a"),
            get("b"),
            get("A_log"),
            get("dt_bias"),
            opt("state"),
            opt("mask"),
        )
        .unwrap();
        assert_eq!(y.dtype(), q.dtype(), "{name}: output dtype");
        assert_eq!(state.dtype(), Dtype::Float32, "{name}: state dtype");
        // A prompt of CHUNK positions or more runs chunked: its outputs at padded positions
        // (which nothing reads) are not the reference's, so those are compared zeroed.
        let (y, want) = match opt("mask").filter(|_| q.dim(1) >= CHUNK) {
            Some(m) => {
                let m = m.index((.., .., NewAxis, NewAxis));
                let zero = Array::from_f32(0.0).as_dtype(y.dtype()).unwrap();
                (
                    select(&m, &y, &zero).unwrap(),
                    select(&m, get("y"), &zero).unwrap(),
                )
            }
            None => (y, get("y").clone()),
        };
        log.close(&format!("{name}: y"), &y, &want, tol(&dtype));
        log.close(&format!("{name}: state"), &state, get("final_state"), 1e-5);
        log.report(&format!("gated delta update ({name})"));
    }
}

#[test]
fn gated_delta_ops_matches_the_reference_with_scalar_and_vector_decays() {
    let fx = fixture();
    for (name, _) in cases(&fx, "ops") {
        let get = |k: &str| fx.get(&format!("{name}.{k}"));
        let mask = fx.arrays.get(&format!("{name}.mask"));
        let (y, state) = gated_delta_ops(
            get("q"),
            get("k"),
            get("v"),
            get("g"),
            get("beta"),
            Some(get("state")),
            mask,
        )
        .unwrap();
        let mut log = DiffLog::default();
        log.close(&format!("{name}: y"), &y, get("y"), 1e-5);
        log.close(&format!("{name}: state"), &state, get("final_state"), 1e-5);
        log.report(&format!("gated delta ops ({name})"));
    }
}

/// The chunked form against the reference's steps on short sequences too (a chunk of 7, of
/// 1), where the update itself steps: the same outputs and states within float32 rounding.
#[test]
fn the_chunked_rule_matches_the_reference_on_short_sequences() {
    let fx = fixture();
    for name in [
        "grouped_prefill",
        "grouped_state_masked",
        "right_padded",
        "decode_step",
    ] {
        let get = |k: &str| fx.get(&format!("{name}.{k}"));
        let opt = |k: &str| fx.arrays.get(&format!("{name}.{k}"));
        let beta = mlx_rs::ops::sigmoid(get("b")).unwrap();
        let (y, state) = gated_delta_chunked(
            get("qn"),
            get("kn"),
            get("v"),
            get("g"),
            &beta,
            opt("state"),
            opt("mask"),
        )
        .unwrap();
        let (y, want) = match opt("mask") {
            Some(m) => {
                let m = m.index((.., .., NewAxis, NewAxis));
                (
                    select(&m, &y, Array::from_f32(0.0)).unwrap(),
                    select(&m, get("y"), Array::from_f32(0.0)).unwrap(),
                )
            }
            None => (y, get("y").clone()),
        };
        let mut log = DiffLog::default();
        log.close(&format!("{name}: chunked y"), &y, &want, 1e-5);
        log.close(
            &format!("{name}: chunked state"),
            &state,
            get("final_state"),
            1e-5,
        );
        log.report(&format!("chunked gated delta ({name})"));
    }
}

#[test]
fn a_padded_position_leaves_the_state_unchanged() {
    let fx = fixture();
    let name = "ops_scalar_gate";
    let get = |k: &str| fx.get(&format!("{name}.{k}"));
    // Every position of both rows padded: the state comes back as it went in.
    let mask = Array::from_slice(&[false; 14], &[2, 7]);
    let (_, state) = gated_delta_ops(
        get("q"),
        get("k"),
        get("v"),
        get("g"),
        get("beta"),
        Some(get("state")),
        Some(&mask),
    )
    .unwrap();
    assert!(state.eq_values(get("state")).unwrap());
}

#[test]
fn grouped_heads_that_do_not_divide_are_refused() {
    let q = Array::zeros::<f32>(&[1, 2, 3, 4]).unwrap();
    let v = Array::zeros::<f32>(&[1, 2, 4, 4]).unwrap();
    let g = Array::ones::<f32>(&[1, 2, 4]).unwrap();
    let err = gated_delta_ops(&q, &q, &v, &g, &g, None, None).unwrap_err();
    assert!(err.to_string().contains("4 value heads"), "{err}");
}

#[test]
fn gated_rms_norm_matches_the_reference() {
    let fx = fixture();
    for (name, dtype) in cases(&fx, "norm") {
        let get = |k: &str| fx.get(&format!("{name}.{k}"));
        let mut norm = GatedRmsNorm::new(16, 1e-6).unwrap();
        norm.weight = Param::new(get("weight").clone());
        let gated = norm.forward(get("x"), Some(get("z"))).unwrap();
        let plain = norm.forward(get("x"), None).unwrap();
        assert_eq!(gated.dtype(), get("x").dtype(), "{name}: dtype");
        let mut log = DiffLog::default();
        log.close(&format!("{name}: gated"), &gated, get("gated"), tol(&dtype));
        log.close(&format!("{name}: plain"), &plain, get("plain"), tol(&dtype));
        log.report(&format!("gated RMSNorm ({name})"));
    }
}
