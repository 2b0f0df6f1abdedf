//! transformers v5 writes `rope_theta` (and any scaling) inside `rope_parameters`: every
//! architecture reads it there, with its own default base otherwise. For each one, a parity
//! checkpoint whose base is given either way gives the same logits, and a base that differs
//! from the checkpoint's own changes them (so the key is read, not ignored). An architecture
//! that names its base otherwise (gpt_neox's `rotary_emb_base`) is checked with that key; one
//! that reads no base must be left unchanged by both. A multimodal checkpoint's keys are moved
//! inside its `text_config`, where the text model reads them.

use std::path::Path;

use mlx_models::load::{load_dir, LoadOptions};
use mlx_models_tests::parity::{cases, fixtures};
use mlx_models_tests::reference::repo_root;
use mlx_rs::Array;
use serde_json::{json, Value};

const THETA: f64 = 12345.0;

/// Architectures whose reference reads no RoPE base: learned positions instead (gpt2,
/// gpt_bigcode) or a base fixed in the code (gptj's 10000). For them the keys must change
/// nothing, either way.
const NO_ROPE_BASE: &[&str] = &[
    "gpt2",
    "gpt_bigcode",
    "gptj",
    // qwen (the first Qwen) rotates with a base fixed at 10000 in the reference.
    "qwen",
    // State-space stacks without attention, and hybrids whose attention has no RoPE or a
    // base fixed in the code (plamo2's 10000; the reference ignores recurrent_gemma's
    // `rope_theta`).
    "jamba",
    "mamba",
    "mamba2",
    "nemotron_h",
    "plamo2",
    "recurrent_gemma",
];

/// Architectures whose config names the base otherwise than `rope_theta`.
/// Architectures whose reference reads the base only inside `rope_parameters` (qwen3_5, a
/// transformers v5 model; gemma4_text and its wrapper gemma4, whose `rope_parameters` has one
/// entry per layer type, as has mellum's; ministral3, which reads RoPE and its query scaling
/// from `rope_parameters` alone): a top-level `rope_theta` changes nothing there, and their
/// parity cases already give the base inside `rope_parameters`.
const ONLY_ROPE_PARAMETERS: &[&str] = &["gemma4", "gemma4_text", "mellum", "ministral3", "qwen3_5"];

const BASE_KEY: &[(&str, &str)] = &[
    ("gpt_neox", "rotary_emb_base"),
    ("openelm", "rope_freq_constant"),
    ("phi3small", "rope_embedding_base"),
];

/// The text model's config: `text_config` in a multimodal checkpoint's config.json (whose
/// values win over the top level), else the whole config.
fn text_model(config: &Value) -> &Value {
    config
        .get("text_config")
        .filter(|t| t.is_object())
        .unwrap_or(config)
}

/// [`text_model`], to edit.
fn text_model_mut(config: &mut Value) -> &mut Value {
    if config.get("text_config").is_some_and(Value::is_object) {
        &mut config["text_config"]
    } else {
        config
    }
}

fn logits(dir: &Path, config: &Value) -> Vec<f32> {
    let scratch = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        dir.join("model.safetensors"),
        scratch.path().join("model.safetensors"),
    )
    .expect("copy weights");
    std::fs::write(scratch.path().join("config.json"), config.to_string()).expect("config");
    let mut loaded = load_dir(scratch.path(), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tokens = Array::from_slice(&[1u32, 5, 9, 33, 7, 100, 42, 3], &[1, 8]);
    let mut cache = loaded.model.make_cache();
    let out = loaded.model.forward(&tokens, &mut cache).expect("forward");
    out.as_dtype(mlx_rs::Dtype::Float32)
        .expect("float32")
        .as_slice::<f32>()
        .to_vec()
}

#[test]
fn every_architecture_reads_rope_theta_inside_rope_parameters() {
    mlx_models_zoo::link();
    let mut checked = Vec::new();
    for entry in mlx_models::registry::entries() {
        let arch = entry.model_type;
        if !repo_root()
            .join(format!("scripts/reference/parity/{arch}.py"))
            .exists()
        {
            continue; // every_registered_architecture_has_parity_cases fails for it
        }
        if ONLY_ROPE_PARAMETERS.contains(&arch) {
            checked.push(arch);
            continue;
        }
        let out = fixtures(arch);
        // A case with plain RoPE and float weights: the base alone decides the rotation. An
        // architecture whose RoPE always has a scaling (deepseek_v2's is always yarn) is
        // checked on a case with its `rope_scaling` kept, the base alone moved.
        let configs: Vec<(std::path::PathBuf, Value)> = cases(arch)
            .iter()
            .map(|c| out.join(c))
            .filter_map(|dir| {
                let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
                let config: Value = serde_json::from_str(&text).ok()?;
                let float = config.get("quantization").is_none()
                    && text_model(&config).get("rope_parameters").is_none();
                float.then_some((dir, config))
            })
            .collect();
        // The cases with plain RoPE, in order; a hybrid's first case may have no RoPE at all
        // (granitemoehybrid's "nope" layers), so the first case whose logits the base moves is
        // the one checked.
        let plain: Vec<&(std::path::PathBuf, Value)> = configs
            .iter()
            .filter(|(_, c)| text_model(c).get("rope_scaling").is_none_or(Value::is_null))
            .collect();
        let (candidates, scaled) = match (plain.is_empty(), configs.first()) {
            (false, _) => (plain, false),
            (true, Some(case)) => (vec![case], true),
            (true, None) => panic!("{arch}: no float parity case to check rope_parameters on"),
        };
        let key = BASE_KEY
            .iter()
            .find(|(a, _)| *a == arch)
            .map_or("rope_theta", |(_, k)| k);
        let mut moved = false;
        for (dir, config) in candidates {
            let mut top = config.clone();
            text_model_mut(&mut top)[key] = json!(THETA);
            let mut nested = config.clone();
            let inner = text_model_mut(&mut nested);
            inner.as_object_mut().expect("object").remove(key);
            inner["rope_parameters"] = if scaled {
                json!({"rope_theta": THETA})
            } else {
                json!({"rope_type": "default", "rope_theta": THETA})
            };
            let (a, b) = (logits(dir, &top), logits(dir, &nested));
            let original = logits(dir, config);
            if NO_ROPE_BASE.contains(&arch) {
                assert!(
                    a == original && b == original,
                    "{arch}: a RoPE base changes an architecture that reads none"
                );
                moved = true;
                break;
            }
            if a != original {
                assert_eq!(
                    a, b,
                    "{arch}: `rope_parameters.rope_theta` is not read as `rope_theta`"
                );
                moved = true;
                break;
            }
        }
        assert!(moved, "{arch}: the base changes nothing in any case");
        checked.push(arch);
    }
    assert!(checked.len() >= 12, "checked only {checked:?}");
}
