//! The recurrent blocks against the reference's own functions and modules on random inputs
//! and weights (`scripts/reference/blocks/recurrent.py`):
//!
//! - `nn::rglru::linear_scan` against recurrent_gemma's `rnn_scan` (one position or seven, with
//!   and without a starting state, float32 and bfloat16);
//! - `nn::rglru::Rglru` against its `RGLRU` on 9 positions, then 3 more from the state;
//! - `nn::mamba::MambaMixer` against mamba's `MambaBlock` with an arrays cache on 7 positions,
//!   then 3 more (both states carried), and the 10 at once without a cache.

use mlx_models::cache::ArraysCache;
use mlx_models::nn::mamba::{MambaMixer, MambaMixerConfig, TimeStepNorm};
use mlx_models::nn::rglru::{linear_scan, Rglru};
use mlx_models_tests::reference::{assert_close, run_script, Fixture};
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(
        &run_script("scripts/reference/blocks/recurrent.py"),
        "recurrent",
    )
}

/// Loads every `<prefix>.param.*` array of the fixture into `module`, each by its name.
fn load_params(fx: &Fixture, prefix: &str, module: &mut impl ModuleParameters) {
    let want = format!("{prefix}.param.");
    let mut params = module.parameters_mut().flatten();
    let mut n = 0;
    for (k, v) in &fx.arrays {
        if let Some(p) = k.strip_prefix(&want) {
            let slot = params
                .get_mut(p)
                .unwrap_or_else(|| panic!("{prefix}: no parameter `{p}`"));
            assert_eq!(slot.shape(), v.shape(), "{prefix}: {p}");
            **slot = v.clone();
            n += 1;
        }
    }
    // Dense layers' quantization slots (`scales`, `biases`) stay empty.
    let dense = params
        .keys()
        .filter(|k| !k.ends_with(".scales") && !k.ends_with(".biases"))
        .count();
    assert_eq!(n, dense, "{prefix}: every parameter loaded");
}

fn f32(a: &Array) -> Array {
    a.as_dtype(Dtype::Float32).expect("cast")
}

#[test]
fn linear_scan_matches_rnn_scan() {
    let fx = fixture();
    for dtype in ["float32", "bfloat16"] {
        for length in [1, 7] {
            for state in ["fresh", "state"] {
                let case = format!("scan.{dtype}_{length}_{state}");
                let get = |k: &str| fx.get(&format!("{case}.{k}")).clone();
                let h0 = fx.arrays.get(&format!("{case}.h0"));
                let (y, last) = linear_scan(&get("x"), &get("a"), h0, None).expect("scan");
                assert_eq!(y.dtype(), get("y").dtype(), "{case}: type");
                assert_close(&format!("{case}: y"), &f32(&y), &f32(&get("y")), 0.0);
                assert_close(
                    &format!("{case}: last"),
                    &f32(&last),
                    &f32(&get("last")),
                    0.0,
                );
            }
        }
    }
}

#[test]
fn rglru_matches_the_reference_across_a_state() {
    let fx = fixture();
    let mut rglru = Rglru::new(16, 4).expect("rglru");
    load_params(&fx, "rglru", &mut rglru);
    let (y1, h1) = rglru
        .forward(fx.get("rglru.x1"), None, None)
        .expect("first");
    assert_close("rglru: first part", &y1, fx.get("rglru.y1"), TOL);
    assert_close("rglru: its state", &h1, fx.get("rglru.h1"), TOL);
    let (y2, h2) = rglru
        .forward(fx.get("rglru.x2"), Some(&h1), None)
        .expect("second");
    assert_close("rglru: continued", &y2, fx.get("rglru.y2"), TOL);
    assert_close("rglru: the last state", &h2, fx.get("rglru.h2"), TOL);
}

#[test]
fn mamba_mixer_matches_the_reference_across_its_cache() {
    let fx = fixture();
    let config = MambaMixerConfig {
        hidden_size: 16,
        intermediate_size: 24,
        state_size: 8,
        conv_kernel: 4,
        time_step_rank: 3,
        proj_bias: true,
        conv_bias: true,
        norm: TimeStepNorm::None,
    };
    let mut mixer = MambaMixer::new(&config).expect("mixer");
    load_params(&fx, "mamba", &mut mixer);
    let mut cache = ArraysCache::new(2);
    let y1 = mixer
        .forward(fx.get("mamba.x1"), None, Some(&mut cache))
        .expect("first");
    assert_close("mamba: first part", &y1, fx.get("mamba.y1"), TOL);
    let y2 = mixer
        .forward(fx.get("mamba.x2"), None, Some(&mut cache))
        .expect("second");
    assert_close("mamba: continued", &y2, fx.get("mamba.y2"), TOL);
    let conv = cache.get(0).expect("conv state");
    let ssm = cache.get(1).expect("ssm state");
    assert_close("mamba: conv state", conv, fx.get("mamba.conv_state"), TOL);
    assert_close("mamba: ssm state", ssm, fx.get("mamba.ssm_state"), TOL);
    let whole =
        mlx_rs::ops::concatenate(&[fx.get("mamba.x1"), fx.get("mamba.x2")], 1).expect("cat");
    let y = mixer.forward(&whole, None, None).expect("whole");
    assert_close("mamba: without a cache", &y, fx.get("mamba.whole"), TOL);
}
