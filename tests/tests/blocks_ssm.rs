//! The shared state-space blocks (`mlx_models::nn::ssm`) against the reference.
//!
//! The SSD scan against mlx-lm's `ssm_update` (its ops path on the CPU) on random inputs
//! (`scripts/reference/blocks/ssm.py`): a prompt, a prompt over two scan chunks, grouped and
//! ungrouped `B`/`C`, a starting state, a left-padding mask, per-row lengths, clipped time steps,
//! one decoded position (our recurrence step against the reference's chunked form), float32
//! and bfloat16. And the causal convolution: a sequence in chunks through the cached conv
//! state equals the sequence at once, and the Hugging Face weight layout converts once.

use mlx_models::cache::ArraysCache;
use mlx_models::nn::ssm::{conv1d_weights_to_mlx, ssd, DepthwiseConv1d, SsdParams, TimeStepLimit};
use mlx_models_tests::reference::{assert_close, run_script, Fixture};
use mlx_rs::ops::concatenate;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{random, Array, Dtype};

const CASES: &[&str] = &[
    "prompt",
    "two_chunks",
    "with_state",
    "decode_step",
    "masked",
    "masked_decode",
    "lengths",
    "limits",
    "bfloat16",
    "bfloat16_step",
];

fn fixture() -> Fixture {
    Fixture::load(&run_script("scripts/reference/blocks/ssm.py"), "ssd")
}

#[test]
fn ssd_scan_matches_the_reference() {
    let fx = fixture();
    for case in CASES {
        let get = |k: &str| fx.get(&format!("{case}.{k}")).clone();
        let opt = |k: &str| {
            let key = format!("{case}.{k}");
            fx.arrays.get(&key).cloned()
        };
        let limit = fx.json(case)["limit"].clone();
        let limit = TimeStepLimit(
            limit[0].as_f64().expect("min") as f32,
            match limit[1].as_f64().expect("max") {
                m if m >= 3.0e38 => f32::INFINITY,
                m => m as f32,
            },
        );
        let (a_log, d, dt_bias) = (get("a_log"), get("d"), get("dt_bias"));
        let params = SsdParams {
            a_log: &a_log,
            d: &d,
            dt_bias: &dt_bias,
            time_step_limit: limit,
        };
        let (state, mask, lengths) = (opt("state"), opt("mask"), opt("lengths"));
        let (y, next) = ssd(
            &get("x"),
            &get("b"),
            &get("c"),
            &get("dt"),
            &params,
            state.as_ref(),
            mask.as_ref(),
            lengths.as_ref(),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let want_y = get("y");
        assert_eq!(y.dtype(), want_y.dtype(), "{case}: y's type");
        let tol = if want_y.dtype() == Dtype::Bfloat16 {
            2e-2
        } else {
            2e-5
        };
        let f32 = |a: &Array| a.as_dtype(Dtype::Float32).expect("cast");
        let dy = assert_close(&format!("{case}: y"), &f32(&y), &f32(&want_y), tol);
        let ds = assert_close(
            &format!("{case}: state"),
            &f32(&next),
            &f32(&get("new_state")),
            tol,
        );
        eprintln!("ssd {case}: y {dy:.2e}, state {ds:.2e}");
    }
}

/// A random depthwise filter bank with a bias.
fn conv(channels: i32, kernel: i32) -> DepthwiseConv1d {
    let mut c = DepthwiseConv1d::new(channels, kernel, true).expect("conv");
    *c.weight = random::normal::<f32>(&[channels, kernel, 1], None, None, None).expect("w");
    let bias = random::normal::<f32>(&[channels], None, None, None).expect("b");
    *c.bias = Some(bias);
    c
}

#[test]
fn conv_in_chunks_through_its_state_equals_the_whole_sequence() {
    random::seed(3).expect("seed");
    for kernel in [1, 2, 4] {
        let c = conv(6, kernel);
        let x = random::normal::<f32>(&[2, 13, 6], None, None, None).expect("x");
        let whole = c.forward(&x, None, None, 0).expect("whole");
        let mut cache = ArraysCache::new(1);
        let mut parts = Vec::new();
        for (start, end) in [(0, 1), (1, 6), (6, 7), (7, 13)] {
            let piece = x.index((.., start..end, ..));
            parts.push(c.forward(&piece, None, Some(&mut cache), 0).expect("chunk"));
        }
        let chunked = concatenate(&parts, 1).expect("concat");
        assert_close(&format!("kernel {kernel}"), &chunked, &whole, 1e-6);
        let state = cache.get(0).expect("conv state");
        assert_eq!(
            state.shape(),
            &[2, kernel - 1, 6],
            "kernel {kernel}: state shape"
        );
    }
}

#[test]
fn conv_zeroes_masked_inputs_as_if_absent() {
    random::seed(4).expect("seed");
    let c = conv(4, 3);
    let x = random::normal::<f32>(&[1, 5, 4], None, None, None).expect("x");
    // The same row behind three padded positions holding garbage.
    let garbage = random::normal::<f32>(&[1, 3, 4], None, None, None).expect("pad");
    let padded = concatenate(&[&garbage, &x], 1).expect("concat");
    let mask = Array::from_slice(
        &[false, false, false, true, true, true, true, true],
        &[1, 8],
    );
    let alone = c.forward(&x, None, None, 0).expect("alone");
    let masked = c.forward(&padded, Some(&mask), None, 0).expect("masked");
    assert_close("masked row", &masked.index((.., 3.., ..)), &alone, 1e-6);
}

#[test]
fn hugging_face_conv_weights_convert_once() {
    let hf = random::normal::<f32>(&[6, 1, 4], None, None, None).expect("w");
    let mut weights = mlx_models::weights::Weights::new();
    weights.insert("backbone.layers.0.mixer.conv1d.weight".into(), hf.clone());
    weights.insert("backbone.layers.0.mixer.in_proj.weight".into(), hf.clone());
    conv1d_weights_to_mlx(&mut weights).expect("convert");
    let once = weights["backbone.layers.0.mixer.conv1d.weight"].clone();
    assert_eq!(once.shape(), &[6, 4, 1]);
    assert_close(
        "transposed",
        &once.index((.., .., 0)),
        &hf.index((.., 0, ..)),
        0.0,
    );
    assert_eq!(
        weights["backbone.layers.0.mixer.in_proj.weight"].shape(),
        &[6, 1, 4]
    );
    conv1d_weights_to_mlx(&mut weights).expect("again");
    assert_close(
        "converted weights pass unchanged",
        &weights["backbone.layers.0.mixer.conv1d.weight"],
        &once,
        0.0,
    );
}
