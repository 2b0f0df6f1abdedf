//! Quantized checkpoints that do not fit: each problem is named in the one loader error, never
//! a panic or garbage output. The checkpoints start from the reference's 4-bit llama
//! (`scripts/reference/parity/quantized.py`) and are then broken on purpose.

use std::collections::HashMap;
use std::path::Path;

use mlx_models::load::{load_dir, LoadError, LoadOptions};
use mlx_rs::Array;

/// A copy of the reference's 4-bit llama, with `edit` applied to its config and tensors.
fn broken(
    edit: impl FnOnce(&mut serde_json::Value, &mut HashMap<String, Array>),
) -> tempfile::TempDir {
    let src = mlx_models_tests::parity::fixtures("quantized").join("llama_4bit");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("config"))
            .expect("json");
    let mut weights = Array::load_safetensors(src.join("model.safetensors")).expect("weights");
    edit(&mut config, &mut weights);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config");
    Array::save_safetensors(weights, None, dir.path().join("model.safetensors"))
        .expect("write weights");
    dir
}

fn load_error(dir: &Path) -> String {
    match load_dir(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e @ LoadError::Mismatch(_)) => e.to_string(),
        Err(other) => panic!("expected a weight mismatch, got: {other}"),
    }
}

/// The one-line error of a config whose `quantization` entry MLX has no kernels for: it comes
/// alone, before any tensor is compared (each would otherwise be reported as misshaped).
fn quantization_error(dir: &Path) -> String {
    match load_dir(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e @ LoadError::Quantization { .. }) => {
            let msg = e.to_string();
            assert_eq!(msg.lines().count(), 1, "one line: {msg}");
            msg
        }
        Err(other) => panic!("expected a quantization error, got: {other}"),
    }
}

#[test]
fn packed_tensors_without_a_quantization_config_are_unexpected() {
    let dir = broken(|c, _| {
        let obj = c.as_object_mut().expect("object");
        obj.remove("quantization");
        obj.remove("quantization_config");
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("unexpected: `model.layers.0.mlp.down_proj.scales`"),
        "{err}"
    );
    assert!(
        err.contains(
            "shape: `model.layers.0.mlp.down_proj.weight` is [64, 128] in the model but [64, 16]"
        ),
        "{err}"
    );
}

#[test]
fn a_per_layer_entry_that_disagrees_with_the_packing_is_a_shape_error() {
    let dir = broken(|c, _| {
        c["quantization"]["model.layers.1.self_attn.o_proj"] =
            serde_json::json!({"group_size": 32, "bits": 8});
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("shape: `model.layers.1.self_attn.o_proj.weight` is [64, 16] in the model but [64, 8] in the checkpoint"),
        "{err}"
    );
    // The other layers load; only this one is reported.
    assert_eq!(err.matches("\n  ").count(), 1, "{err}");
}

#[test]
fn a_layer_the_config_keeps_dense_rejects_its_packed_tensors() {
    let dir = broken(|c, _| {
        c["quantization"]["model.layers.0.self_attn.k_proj"] = serde_json::json!(false)
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("unexpected: `model.layers.0.self_attn.k_proj.scales`"),
        "{err}"
    );
    assert!(
        err.contains("unexpected: `model.layers.0.self_attn.k_proj.biases`"),
        "{err}"
    );
}

#[test]
fn missing_biases_and_unreadable_packing_are_listed_together() {
    let dir = broken(|_, w| {
        w.remove("model.layers.0.mlp.up_proj.biases");
        // Scales with a group count that divides no width.
        let s = w["model.layers.1.mlp.gate_proj.scales"].clone();
        let cut = mlx_rs::ops::indexing::IndexOp::index(&s, (.., ..1));
        w.insert(
            "model.layers.1.mlp.gate_proj.scales".into(),
            mlx_rs::ops::concatenate(&[&s, &cut], -1).expect("concat"),
        );
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("missing: `model.layers.0.mlp.up_proj.biases`"),
        "{err}"
    );
    assert!(
        err.contains("quantization: `model.layers.1.mlp.gate_proj`"),
        "{err}"
    );
}

#[test]
fn the_4bit_checkpoint_reports_its_layers_as_quantized() {
    let src = mlx_models_tests::parity::fixtures("quantized").join("llama_4bit");
    let loaded = load_dir(&src, &LoadOptions::default()).expect("loads");
    let names: Vec<String> = mlx_models::load::parameter_shapes(loaded.model.as_ref())
        .into_keys()
        .collect();
    assert!(
        names.iter().any(|n| n == "model.embed_tokens.scales"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "lm_head.biases"), "{names:?}");
}

#[test]
fn unsupported_bits_or_group_size_in_the_config_are_named() {
    // The packing of the checkpoint is 4 bits in groups of 64; a config that says otherwise
    // with values MLX has no kernels for is refused, whatever the shapes would allow.
    for (key, value, want) in [
        (
            "bits",
            serde_json::json!(1),
            "config.json: `quantization`: `bits` 1 is not supported in mode affine (supported: 2, 3, 4, 5, 6, 8)",
        ),
        (
            "group_size",
            serde_json::json!(0),
            "config.json: `quantization`: `group_size` 0 is not supported in mode affine (supported: 32, 64, 128)",
        ),
        (
            "mode",
            serde_json::json!("int3"),
            "config.json: `quantization`: unknown `mode` `int3` (supported: affine, mxfp4, nvfp4, mxfp8)",
        ),
    ] {
        let dir = broken(|c, _| c["quantization"][key] = value.clone());
        assert_eq!(quantization_error(dir.path()), want);
    }
}

#[test]
fn a_per_layer_entry_with_absurd_bits_is_named_without_overflow() {
    let dir = broken(|c, _| {
        c["quantization"]["model.layers.0.mlp.down_proj"] =
            serde_json::json!({"group_size": 64, "bits": 4_000_000_000u64});
    });
    assert_eq!(
        quantization_error(dir.path()),
        "config.json: `quantization.model.layers.0.mlp.down_proj`: `bits` 4000000000 is not \
         supported in mode affine (supported: 2, 3, 4, 5, 6, 8)"
    );
    let dir = broken(|c, _| {
        c["quantization"]["model.layers.0.mlp.down_proj"] = serde_json::json!([4, 64]);
    });
    assert!(quantization_error(dir.path()).contains("is not a quantization"));
}

/// The raw bytes of an FP8 weight without its `weight_scale_inv` (or any integer tensor) where
/// a dense floating-point parameter goes are named with their type, not loaded as numbers.
#[test]
fn integer_tensors_for_floating_parameters_are_named() {
    let dir = broken(|_, w| {
        let norm = &w["model.norm.weight"];
        let bytes = vec![0x38u8; norm.size()];
        let shape = norm.shape().to_vec();
        w.insert(
            "model.norm.weight".into(),
            Array::from_slice(&bytes, &shape),
        );
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("type: `model.norm.weight` is Uint8 in the checkpoint, not floating point (FP8 bytes need their `weight_scale_inv`)"),
        "{err}"
    );
    assert!(err.contains("(1 problems)"), "{err}");
}

#[test]
fn on_the_cpu_a_quantized_checkpoint_can_compute_in_float32() {
    // The reference's 4-bit llama with every floating tensor in bfloat16, as mlx-community's
    // checkpoints are: kept in bfloat16 by default, in float32 when the command line's option
    // asks for it (the CPU kernels of quantized products serve float32 results).
    let dir = broken(|_, weights| {
        for w in weights.values_mut() {
            if w.dtype() == mlx_rs::Dtype::Float32 {
                *w = w.as_dtype(mlx_rs::Dtype::Bfloat16).expect("cast");
            }
        }
    });
    let ids = Array::from_slice(&[1i32, 5, 9, 2], &[1, 4]);
    let logits_dtype = |options: &LoadOptions| {
        let mut loaded = load_dir(dir.path(), options).expect("loads");
        loaded
            .model
            .forward(&ids, &mut [])
            .expect("forward")
            .dtype()
    };
    assert_eq!(
        logits_dtype(&LoadOptions::default()),
        mlx_rs::Dtype::Bfloat16
    );
    let float32 = LoadOptions {
        float32_quantized_on_cpu: true,
        ..Default::default()
    };
    assert_eq!(logits_dtype(&float32), mlx_rs::Dtype::Float32);
    // An explicit dtype wins.
    let half = LoadOptions {
        dtype: Some(mlx_rs::Dtype::Float16),
        float32_quantized_on_cpu: true,
        ..Default::default()
    };
    assert_eq!(logits_dtype(&half), mlx_rs::Dtype::Float16);
}
