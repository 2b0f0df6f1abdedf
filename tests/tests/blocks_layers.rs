//! Activations and norms against mlx / mlx-lm: silu, gelu and its approximations, relu²,
//! SwiGLU, GeGLU, GPT-OSS's clamped SwiGLU, RMSNorm (plain and gemma's zero-centred),
//! LayerNorm (affine, without bias, plain).

use mlx_models::nn::activations::{self as act, Activation, GatedActivation};
use mlx_models::nn::norm::{LayerNorm, RmsNorm};
use mlx_models_tests::reference::{blocks, DiffLog, Fixture};
use mlx_rs::module::Param;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "layers")
}

#[test]
fn activations_match_reference() {
    let fx = fixture();
    let (x, gate) = (fx.get("x"), fx.get("gate"));
    let mut log = DiffLog::default();
    for (name, a) in [
        ("silu", Activation::Silu),
        ("gelu", Activation::Gelu),
        ("gelu_approx", Activation::GeluApprox),
        ("gelu_fast_approx", Activation::GeluFastApprox),
        ("relu", Activation::Relu),
        ("relu2", Activation::Relu2),
    ] {
        log.close(name, &a.apply(x).unwrap(), fx.get(name), TOL);
    }
    log.close(
        "swiglu",
        &GatedActivation::SwiGlu.apply(x, gate).unwrap(),
        fx.get("swiglu"),
        TOL,
    );
    log.close(
        "geglu",
        &GatedActivation::GeGlu.apply(x, gate).unwrap(),
        fx.get("geglu"),
        TOL,
    );
    log.close(
        "swiglu_oai",
        &act::clamped_swiglu(gate, x, 1.702, 7.0).unwrap(),
        fx.get("swiglu_oai"),
        TOL,
    );
    log.report("activations");
    assert_eq!(
        Activation::from_name("gelu_pytorch_tanh"),
        Some(Activation::GeluApprox)
    );
    assert_eq!(Activation::from_name("silu"), Some(Activation::Silu));
}

#[test]
fn norms_match_reference() {
    let fx = fixture();
    let x = fx.get("x");
    let mut log = DiffLog::default();
    let mut rms = RmsNorm::new(64, 1e-6).unwrap();
    rms.weight = Param::new(fx.get("w").clone());
    log.close(
        "rms_norm",
        &rms.forward(x).unwrap(),
        fx.get("rms_norm"),
        TOL,
    );
    let mut gemma = RmsNorm::zero_centered(64, 1e-6).unwrap();
    gemma.weight = Param::new(fx.get("w").clone());
    log.close(
        "rms_norm_zero_centered",
        &gemma.forward(x).unwrap(),
        fx.get("rms_norm_zero_centered"),
        TOL,
    );
    let mut ln = LayerNorm::new(64, 1e-5, true).unwrap();
    ln.weight = Param::new(Some(fx.get("w").clone()));
    ln.bias = Param::new(Some(fx.get("bias").clone()));
    log.close(
        "layer_norm",
        &ln.forward(x).unwrap(),
        fx.get("layer_norm"),
        TOL,
    );
    let mut ln = LayerNorm::new(64, 1e-5, false).unwrap();
    ln.weight = Param::new(Some(fx.get("w").clone()));
    log.close(
        "layer_norm_nobias",
        &ln.forward(x).unwrap(),
        fx.get("layer_norm_nobias"),
        TOL,
    );
    let plain = LayerNorm {
        weight: Param::new(None),
        bias: Param::new(None),
        eps: 1e-5,
    };
    log.close(
        "layer_norm_plain",
        &plain.forward(x).unwrap(),
        fx.get("layer_norm_plain"),
        TOL,
    );
    log.report("norms");
}
