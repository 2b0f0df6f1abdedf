//! Every RoPE variant against mlx-lm's `initialize_rope` (and phi3's `SuScaledRoPE` for the
//! `su` spelling) at several offsets, traditional and not, and with per-sequence offsets.

use mlx_models::nn::rope::{apply_yarn_mscale, Rope, RopeScaling};
use mlx_models_tests::reference::{blocks, DiffLog, Fixture};
use mlx_rs::Array;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "rope")
}

fn build(fx: &Fixture, name: &str, traditional: bool) -> (Rope, serde_json::Value) {
    let case = fx.json(name);
    let scaling = RopeScaling::from_json(&case["rope_scaling"]).expect("config parses");
    let rope = Rope::new(
        case["dims"].as_i64().unwrap() as i32,
        case["base"].as_f64().unwrap() as f32,
        traditional,
        &scaling,
        case["max_position_embeddings"].as_i64().map(|v| v as i32),
    )
    .expect("rope builds");
    (rope, case)
}

fn check_variant(name: &str, traditional_too: bool) {
    let fx = fixture();
    let x = fx.get("x");
    let offsets: Vec<i32> = serde_json::from_value(fx.json("offsets")).unwrap();
    let mut log = DiffLog::default();
    for trad in if traditional_too {
        vec![false, true]
    } else {
        vec![false]
    } {
        let (rope, _) = build(&fx, name, trad);
        for &off in &offsets {
            let key = format!("{name}.{}.{off}", trad as i32);
            let y = rope.forward(x, off).unwrap();
            log.close(&key, &y, fx.get(&key), TOL);
        }
        let key = format!("{name}.{}.batch", trad as i32);
        if fx.has(&key) {
            let offs = Array::from_slice(&[3i32, 11], &[2]);
            let y = rope.forward_with_offsets(x, &offs).unwrap();
            log.close(&key, &y, fx.get(&key), TOL);
        }
    }
    log.report(&format!("rope {name}"));
}

#[test]
fn default_rope_matches_reference() {
    check_variant("default", true);
}

#[test]
fn partial_default_rope_rotates_only_its_dims() {
    check_variant("default_partial", true);
}

#[test]
fn linear_rope_matches_reference() {
    check_variant("linear", true);
}

#[test]
fn dynamic_ntk_rope_matches_reference_past_max_positions() {
    check_variant("dynamic", true);
}

#[test]
fn dynamic_ntk_rope_refuses_per_sequence_offsets() {
    let fx = fixture();
    let (rope, _) = build(&fx, "dynamic", false);
    assert!(rope
        .forward_with_offsets(fx.get("x"), &Array::from_slice(&[3i32, 11], &[2]))
        .is_err());
}

#[test]
fn llama3_rope_matches_reference() {
    check_variant("llama3", true);
    check_variant("llama3_small_context", true);
}

#[test]
fn yarn_rope_matches_reference() {
    check_variant("yarn", true);
    check_variant("deepseek_yarn", true);
}

#[test]
fn yarn_attention_scale_matches_reference() {
    let fx = fixture();
    for name in ["default", "yarn", "deepseek_yarn", "llama3"] {
        let case = fx.json(name);
        let scaling = RopeScaling::from_json(&case["rope_scaling"]).unwrap();
        let ours = apply_yarn_mscale(0.125, &scaling);
        let theirs = case["attention_scale"].as_f64().unwrap() as f32;
        assert!(
            (ours - theirs).abs() <= 1e-7 * theirs.abs(),
            "{name}: {ours} vs {theirs}"
        );
    }
}

#[test]
fn longrope_matches_reference() {
    // the reference's SuScaledRoPE ignores `traditional`
    check_variant("longrope", false);
}

#[test]
fn su_spelling_matches_phi3_su_scaled_rope() {
    check_variant("su", false);
}

#[test]
fn proportional_rope_matches_reference() {
    check_variant("proportional", true);
}

#[test]
fn mrope_on_text_is_plain_rope() {
    check_variant("mrope", true);
}

#[test]
fn rope_parameters_spelling_reads_scaling_and_theta() {
    let fx = fixture();
    let cfg = fx.json("rope_parameters")["config"].clone();
    let scaling = RopeScaling::from_config(&cfg).unwrap();
    assert!(matches!(scaling, RopeScaling::Llama3 { .. }), "{scaling:?}");
    let theta = RopeScaling::theta_from_config(&cfg).unwrap();
    let rope = Rope::new(32, theta, false, &scaling, Some(131072)).unwrap();
    let x = fx.get("x");
    let mut log = DiffLog::default();
    for off in [0, 1, 9, 40] {
        let key = format!("rope_parameters.0.{off}");
        log.close(&key, &rope.forward(x, off).unwrap(), fx.get(&key), TOL);
    }
    log.report("rope rope_parameters");
}

#[test]
fn rope_config_errors_name_the_problem() {
    let err = RopeScaling::from_json(&serde_json::json!({"type": "nope"})).unwrap_err();
    assert_eq!(err.to_string(), "unsupported RoPE type `nope`");
    let err = RopeScaling::from_json(&serde_json::json!({"rope_type": "llama3"})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "RoPE type `llama3` needs `factor` in its config"
    );
    assert_eq!(
        RopeScaling::from_json(&serde_json::Value::Null).unwrap(),
        RopeScaling::Default
    );
    // `type` wins over `rope_type`, as in the reference
    let s = RopeScaling::from_json(
        &serde_json::json!({"type": "linear", "rope_type": "dynamic", "factor": 2.0}),
    )
    .unwrap();
    assert_eq!(s, RopeScaling::Linear { factor: 2.0 });
}
