//! Sampling against the reference: `scripts/reference/sampling.py` runs mlx-lm's own sampler and
//! logits processors on fixed logits (with the reference python, see
//! `mlx_models_tests::reference`) and saves inputs, outputs and the list of cases; this test
//! replays every case with `mlx_models::sampling` and compares.
//!
//! The reference output is cached under the target folder, keyed by the script's content.
//! Without the reference python this test fails (it never passes silently).

use std::collections::BTreeMap;

use mlx_models::sampling::{
    apply_min_p, apply_top_k, apply_top_p, apply_xtc, greedy, log_softmax, LogitsConfig, Sampler,
    SamplerConfig,
};
use mlx_models_tests::reference::{run_script, Fixture};
use mlx_rs::{Array, Dtype};
use serde_json::Value;

struct Reference {
    arrays: std::collections::HashMap<String, Array>,
    cases: Vec<Value>,
}

fn load_reference() -> Reference {
    let fixture = Fixture::load(&run_script("scripts/reference/sampling.py"), "sampling");
    let cases = match fixture.json("cases") {
        Value::Array(cases) => cases,
        other => panic!("cases: {other}"),
    };
    Reference {
        arrays: fixture.arrays,
        cases,
    }
}

fn f32s(a: &Array) -> Vec<f32> {
    a.as_dtype(Dtype::Float32)
        .unwrap()
        .as_slice::<f32>()
        .to_vec()
}

fn assert_close(name: &str, ours: &Array, theirs: &Array) {
    assert_eq!(ours.shape(), theirs.shape(), "{name}: shape");
    let (a, b) = (f32s(ours), f32s(theirs));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x.is_infinite() || y.is_infinite() {
            assert_eq!(x, y, "{name}[{i}]: {x} vs reference {y}");
        } else {
            assert!((x - y).abs() <= 1e-5, "{name}[{i}]: {x} vs reference {y}");
        }
    }
}

fn f(case: &Value, key: &str) -> f32 {
    case[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {case}")) as f32
}

fn u(case: &Value, key: &str) -> usize {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {case}")) as usize
}

fn sampler_config(case: &Value) -> SamplerConfig {
    let d = SamplerConfig::default();
    let get = |k: &str, default: f32| {
        case.get(k)
            .and_then(Value::as_f64)
            .map(|v| v as f32)
            .unwrap_or(default)
    };
    SamplerConfig {
        temperature: get("temp", d.temperature),
        top_p: get("top_p", d.top_p),
        min_p: get("min_p", d.min_p),
        min_tokens_to_keep: case
            .get("min_tokens_to_keep")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(1),
        top_k: case
            .get("top_k")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(0),
        xtc_probability: get("xtc_probability", d.xtc_probability),
        xtc_threshold: get("xtc_threshold", d.xtc_threshold),
        xtc_special_tokens: case
            .get("xtc_special_tokens")
            .and_then(Value::as_array)
            .map(|v| v.iter().map(|t| t.as_u64().unwrap() as u32).collect())
            .unwrap_or_default(),
        seed: case.get("seed").and_then(Value::as_u64),
    }
}

fn logits_config(case: &Value) -> LogitsConfig {
    let d = LogitsConfig::default();
    let opt = |k: &str| case.get(k).and_then(Value::as_f64).map(|v| v as f32);
    let size = |k: &str, default: usize| {
        case.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(default)
    };
    let mut logit_bias = BTreeMap::new();
    if let Some(b) = case.get("logit_bias").and_then(Value::as_object) {
        for (k, v) in b {
            logit_bias.insert(k.parse().unwrap(), v.as_f64().unwrap() as f32);
        }
    }
    LogitsConfig {
        logit_bias,
        repetition_penalty: opt("repetition_penalty"),
        repetition_context_size: size("repetition_context_size", d.repetition_context_size),
        presence_penalty: opt("presence_penalty"),
        presence_context_size: size("presence_context_size", d.presence_context_size),
        frequency_penalty: opt("frequency_penalty"),
        frequency_context_size: size("frequency_context_size", d.frequency_context_size),
    }
}

#[test]
fn every_reference_case_matches() {
    let r = load_reference();
    assert!(
        r.cases.len() > 100,
        "expected the full case list, got {}",
        r.cases.len()
    );
    let history: Vec<u32> = r.arrays["history"]
        .as_slice::<i32>()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for case in &r.cases {
        let kind = case["kind"].as_str().unwrap();
        let input = &r.arrays[case["input"].as_str().unwrap()];
        let name = case["output"].as_str().unwrap();
        let expected = &r.arrays[name];
        *counts.entry(kind.to_string()).or_default() += 1;
        match kind {
            "top_p" => assert_close(
                name,
                &apply_top_p(input, f(case, "top_p")).unwrap(),
                expected,
            ),
            "min_p" => assert_close(
                name,
                &apply_min_p(input, f(case, "min_p"), u(case, "min_tokens_to_keep")).unwrap(),
                expected,
            ),
            "top_k" => assert_close(
                name,
                &apply_top_k(input, u(case, "top_k")).unwrap(),
                expected,
            ),
            "xtc" => {
                let special: Vec<u32> = case["xtc_special_tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect();
                // Probability 1: any draw in [0, 1) applies it.
                for draw in [0.0f32, 0.999] {
                    let out = apply_xtc(
                        input,
                        &Array::from_f32(draw),
                        1.0,
                        f(case, "xtc_threshold"),
                        &special,
                    )
                    .unwrap();
                    assert_close(name, &out, expected);
                }
            }
            "greedy" => {
                let ours = greedy(input).unwrap();
                let ours: Vec<u32> = ours.as_slice::<u32>().to_vec();
                let theirs: Vec<u32> = expected
                    .as_slice::<i32>()
                    .iter()
                    .map(|&t| t as u32)
                    .collect();
                assert_eq!(ours, theirs, "{name}");
            }
            "sample" => {
                let mut sampler = Sampler::new(sampler_config(case)).unwrap();
                let steps = u(case, "steps");
                let ours: Vec<u32> = (0..steps)
                    .map(|_| sampler.sample(input).unwrap().as_slice::<u32>()[0])
                    .collect();
                let theirs: Vec<u32> = expected
                    .as_slice::<i32>()
                    .iter()
                    .map(|&t| t as u32)
                    .collect();
                assert_eq!(
                    ours, theirs,
                    "{name}: seeded tokens differ from the reference ({case})"
                );
            }
            "processors" => {
                let cfg = logits_config(case);
                cfg.validate().unwrap();
                assert!(cfg.is_active());
                assert_close(name, &cfg.apply(&history, input).unwrap(), expected);
            }
            other => panic!("unknown case kind {other}"),
        }
    }
    for kind in [
        "top_p",
        "min_p",
        "top_k",
        "xtc",
        "greedy",
        "sample",
        "processors",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} case ran"
        );
    }
}

#[test]
fn log_softmax_matches_the_reference() {
    let r = load_reference();
    for name in ["a", "b", "batch"] {
        let ours = log_softmax(&r.arrays[&format!("logits_{name}")]).unwrap();
        assert_close(name, &ours, &r.arrays[&format!("logprobs_{name}")]);
    }
}
