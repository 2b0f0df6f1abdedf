//! Mixture-of-experts layers against mlx-lm's `switch_layers.py`: `SwitchLinear`,
//! `SwitchGLU`, `SwitchMLP`, dense and quantized, with repeated experts, for a few tokens
//! (unsorted) and for enough (token, expert) pairs that the tokens are sorted by expert.

use mlx_models::nn::activations::{Activation, GatedActivation};
use mlx_models::nn::quantized::{QuantMode, Quantization};
use mlx_models::nn::switch::{SwitchGlu, SwitchLinear, SwitchMlp};
use mlx_models_tests::reference::{blocks, DiffLog, Fixture};
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::expand_dims_axes;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "switch")
}

/// Loads `<prefix>.param.*` by name, as the loader does: every name must exist in the module.
fn load(fx: &Fixture, prefix: &str, module: &mut impl ModuleParameters) {
    let want = format!("{prefix}.param.");
    let mut params = module.parameters_mut().flatten();
    let mut n = 0;
    for (k, v) in &fx.arrays {
        if let Some(name) = k.strip_prefix(&want) {
            let slot = params
                .get_mut(name)
                .unwrap_or_else(|| panic!("module has no parameter `{name}`"));
            assert_eq!(slot.shape(), v.shape(), "{name}");
            **slot = v.clone();
            n += 1;
        }
    }
    drop(params);
    // Every parameter the module lists (quantization slots count once filled).
    assert_eq!(
        n,
        module.parameters().flatten().len(),
        "{prefix}: every parameter loaded"
    );
}

#[test]
fn switch_linear_matches_reference() {
    let fx = fixture();
    let mut lin = SwitchLinear::new(64, 128, 4, true).unwrap();
    load(&fx, "lin", &mut lin);
    let mut log = DiffLog::default();
    for case in ["small", "large"] {
        let x = expand_dims_axes(fx.get(&format!("{case}.x")), &[-2, -3]).unwrap();
        let y = lin
            .forward(&x, fx.get(&format!("{case}.idx")), false)
            .unwrap();
        log.close(
            &format!("{case} SwitchLinear"),
            &y,
            fx.get(&format!("{case}.lin")),
            TOL,
        );
    }
    log.report("SwitchLinear");
}

#[test]
fn switch_glu_matches_reference_sorted_and_unsorted() {
    let fx = fixture();
    let mut glu = SwitchGlu::new(64, 128, 4, GatedActivation::SwiGlu, false).unwrap();
    load(&fx, "glu", &mut glu);
    let mut log = DiffLog::default();
    for case in ["small", "large"] {
        let y = glu
            .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
            .unwrap();
        log.close(
            &format!("{case} SwitchGLU"),
            &y,
            fx.get(&format!("{case}.glu")),
            TOL,
        );
    }
    log.report("SwitchGLU");
}

#[test]
fn switch_mlp_matches_reference_sorted_and_unsorted() {
    let fx = fixture();
    let mut mlp = SwitchMlp::new(64, 128, 4, Activation::GeluApprox, true).unwrap();
    load(&fx, "mlp", &mut mlp);
    let mut log = DiffLog::default();
    for case in ["small", "large"] {
        let y = mlp
            .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
            .unwrap();
        log.close(
            &format!("{case} SwitchMLP"),
            &y,
            fx.get(&format!("{case}.mlp")),
            TOL,
        );
    }
    log.report("SwitchMLP");
}

#[test]
fn quantized_switch_layers_match_reference() {
    let fx = fixture();
    let mut log = DiffLog::default();
    for bits in [4, 8] {
        let mut glu = SwitchGlu::new(64, 128, 4, GatedActivation::SwiGlu, false).unwrap();
        for l in [&mut glu.gate_proj, &mut glu.up_proj, &mut glu.down_proj] {
            l.quantize(Quantization::affine(64, bits)).unwrap();
        }
        load(&fx, &format!("qglu{bits}"), &mut glu);
        for case in ["small", "large"] {
            let y = glu
                .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
                .unwrap();
            log.close(
                &format!("{case} SwitchGLU {bits}-bit"),
                &y,
                fx.get(&format!("{case}.qglu{bits}")),
                TOL,
            );
        }
    }
    // 1024 rows: on the CPU the gate and up products are split across cores.
    let mut wide = SwitchGlu::new(64, 1024, 4, GatedActivation::SwiGlu, false).unwrap();
    for l in [&mut wide.gate_proj, &mut wide.up_proj, &mut wide.down_proj] {
        l.quantize(Quantization::affine(32, 4)).unwrap();
    }
    load(&fx, "qglu_wide", &mut wide);
    for case in ["small", "large"] {
        let y = wide
            .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
            .unwrap();
        let want = fx.get(&format!("{case}.qglu_wide"));
        log.close(&format!("{case} wide SwitchGLU 4-bit"), &y, want, TOL);
    }
    let mut fp4 = SwitchGlu::new(64, 128, 4, GatedActivation::SwiGlu, true).unwrap();
    for l in [&mut fp4.gate_proj, &mut fp4.up_proj, &mut fp4.down_proj] {
        l.quantize(Quantization::with_defaults(QuantMode::Mxfp4, None, None))
            .unwrap();
    }
    load(&fx, "qglu_mxfp4", &mut fp4);
    for case in ["small", "large"] {
        let y = fp4
            .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
            .unwrap();
        let want = fx.get(&format!("{case}.qglu_mxfp4"));
        log.close(&format!("{case} SwitchGLU mxfp4"), &y, want, TOL);
    }
    let mut mlp = SwitchMlp::new(64, 128, 4, Activation::GeluApprox, true).unwrap();
    for l in [&mut mlp.fc1, &mut mlp.fc2] {
        l.quantize(Quantization::with_defaults(QuantMode::Mxfp4, None, None))
            .unwrap();
    }
    load(&fx, "qmlp_mxfp4", &mut mlp);
    for case in ["small", "large"] {
        let y = mlp
            .forward(fx.get(&format!("{case}.x")), fx.get(&format!("{case}.idx")))
            .unwrap();
        log.close(
            &format!("{case} SwitchMLP mxfp4"),
            &y,
            fx.get(&format!("{case}.qmlp_mxfp4")),
            TOL,
        );
    }
    log.report("quantized switch layers");
}
