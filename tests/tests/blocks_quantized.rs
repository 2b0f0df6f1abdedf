//! Quantized linear and embedding layers against `mlx.nn.QuantizedLinear` /
//! `QuantizedEmbedding`: affine at 2, 3, 4, 5, 6 and 8 bits and other group sizes, mxfp4,
//! nvfp4, mxfp8; the packed weights our `quantize` makes, the outputs, `as_linear`, and the
//! flat parameter names of mlx-community checkpoints.

use mlx_models::nn::quantized::{dequantize, Embedding, Linear, QuantMode, Quantization};
use mlx_models_tests::reference::{assert_equal, blocks, DiffLog, Fixture};
use mlx_rs::module::ModuleParameters;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "quantized")
}

fn quantization(case: &serde_json::Value) -> Quantization {
    Quantization {
        group_size: case["group_size"].as_i64().unwrap() as i32,
        bits: case["bits"].as_i64().unwrap() as i32,
        mode: QuantMode::parse(case["mode"].as_str().unwrap()).unwrap(),
    }
}

#[test]
fn dense_linear_matches_reference() {
    let fx = fixture();
    let mut log = DiffLog::default();
    let lin = Linear::from_weights(fx.get("w").clone(), Some(fx.get("b").clone()));
    log.close(
        "dense",
        &lin.forward(fx.get("x")).unwrap(),
        fx.get("dense"),
        TOL,
    );
    let lin = Linear::from_weights(fx.get("w").clone(), None);
    log.close(
        "dense_nobias",
        &lin.forward(fx.get("x")).unwrap(),
        fx.get("dense_nobias"),
        TOL,
    );
    log.report("linear (dense)");
}

#[test]
fn quantized_linear_matches_reference_for_every_bit_width_and_mode() {
    let fx = fixture();
    let x = fx.get("x");
    let mut log = DiffLog::default();
    let cases = fx.json("cases");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let q = quantization(case);
        let biases = fx
            .has(&format!("{name}.biases"))
            .then(|| fx.get(&format!("{name}.biases")).clone());
        assert_eq!(biases.is_some(), q.mode.has_biases(), "{name}: biases");

        // quantizing the dense layer packs exactly what the reference packs
        let mut lin = Linear::from_weights(fx.get("w").clone(), Some(fx.get("b").clone()));
        lin.quantize(q).unwrap();
        assert_equal(
            &format!("{name} packed weight"),
            &lin.weight,
            fx.get(&format!("{name}.weight")),
        );
        assert_equal(
            &format!("{name} scales"),
            lin.scales.get().unwrap(),
            fx.get(&format!("{name}.scales")),
        );
        if let Some(b) = &biases {
            assert_equal(&format!("{name} biases"), lin.biases.get().unwrap(), b);
        }
        log.close(
            &format!("{name} out"),
            &lin.forward(x).unwrap(),
            fx.get(&format!("{name}.out")),
            TOL,
        );

        // and a layer made from the checkpoint's arrays computes the same
        let loaded = Linear::from_quantized(
            fx.get(&format!("{name}.weight")).clone(),
            fx.get(&format!("{name}.scales")).clone(),
            biases.clone(),
            Some(fx.get("b").clone()),
            q,
        );
        log.close(
            &format!("{name} out (loaded)"),
            &loaded.forward(x).unwrap(),
            fx.get(&format!("{name}.out")),
            TOL,
        );
        let deq = dequantize(
            fx.get(&format!("{name}.weight")),
            fx.get(&format!("{name}.scales")),
            biases.as_ref(),
            &q,
        )
        .unwrap();
        log.close(
            &format!("{name} dequantized"),
            &deq,
            fx.get(&format!("{name}.dequantized")),
            TOL,
        );
    }
    log.report("linear (quantized)");
}

#[test]
fn quantized_linear_parameters_have_the_flat_checkpoint_names() {
    let mut lin = Linear::new(128, 48, true).unwrap();
    let mut names: Vec<String> = lin
        .parameters()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["bias", "weight"]);
    lin.quantize(Quantization::affine(64, 4)).unwrap();
    let mut names: Vec<String> = lin
        .parameters()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["bias", "biases", "scales", "weight"]);
    let mut fp4 = Linear::new(128, 48, false).unwrap();
    fp4.quantize(Quantization::with_defaults(QuantMode::Mxfp4, None, None))
        .unwrap();
    let mut names: Vec<String> = fp4
        .parameters()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["scales", "weight"]);
}

#[test]
fn quantization_config_reads_modes_and_defaults() {
    let q = Quantization::from_json(&serde_json::json!({"group_size": 32, "bits": 8})).unwrap();
    assert_eq!(q, Quantization::affine(32, 8));
    let q = Quantization::from_json(&serde_json::json!({"mode": "nvfp4"})).unwrap();
    assert_eq!((q.group_size, q.bits, q.mode), (16, 4, QuantMode::Nvfp4));
    assert!(Quantization::from_json(&serde_json::json!({"mode": "int3"})).is_none());
}

#[test]
fn embeddings_dense_and_quantized_match_reference_including_as_linear() {
    let fx = fixture();
    let (x, ids) = (fx.get("x"), fx.get("ids"));
    let mut log = DiffLog::default();
    let emb = Embedding::from_weights(fx.get("table").clone());
    log.close(
        "embedding dense",
        &emb.forward(ids).unwrap(),
        fx.get("emb.dense"),
        TOL,
    );
    log.close(
        "embedding dense as_linear",
        &emb.as_linear(x).unwrap(),
        fx.get("emb.dense_as_linear"),
        TOL,
    );
    let cases = fx.json("emb_cases");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let q = quantization(case);
        let mut e = Embedding::from_weights(fx.get("table").clone());
        e.quantize(q).unwrap();
        assert_equal(
            &format!("{name} packed"),
            &e.weight,
            fx.get(&format!("{name}.weight")),
        );
        log.close(
            &format!("{name} rows"),
            &e.forward(ids).unwrap(),
            fx.get(&format!("{name}.out")),
            TOL,
        );
        log.close(
            &format!("{name} as_linear"),
            &e.as_linear(x).unwrap(),
            fx.get(&format!("{name}.as_linear")),
            TOL,
        );
        let biases = fx
            .has(&format!("{name}.biases"))
            .then(|| fx.get(&format!("{name}.biases")).clone());
        let loaded = Embedding::from_quantized(
            fx.get(&format!("{name}.weight")).clone(),
            fx.get(&format!("{name}.scales")).clone(),
            biases,
            q,
        );
        log.close(
            &format!("{name} rows (loaded)"),
            &loaded.forward(ids).unwrap(),
            fx.get(&format!("{name}.out")),
            TOL,
        );
    }
    log.report("embedding");
}

#[test]
fn a_bad_quantization_is_an_error_not_a_crash() {
    let mut lin = Linear::new(100, 8, false).unwrap();
    // 100 inputs do not split into groups of 64
    assert!(lin.quantize(Quantization::affine(64, 4)).is_err());
    let mut lin = Linear::new(128, 8, false).unwrap();
    assert!(lin.quantize(Quantization::affine(64, 7)).is_err());
}

#[test]
fn a_dense_layer_filled_with_packed_tensors_becomes_quantized() {
    use mlx_rs::module::ModuleParameters;
    let w = mlx_rs::random::normal::<f32>(&[32, 128], None, None, None).unwrap();
    let mut reference = Linear::from_weights(w.clone(), None);
    reference.quantize(Quantization::affine(32, 4)).unwrap();

    // A dense layer lists no scales, yet the loader can write them.
    let mut lin = Linear::new(128, 32, false).unwrap();
    let listed: Vec<String> = lin
        .parameters()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(listed, ["weight"]);
    let mut writable: Vec<String> = lin
        .parameters_mut()
        .flatten()
        .keys()
        .map(|k| k.to_string())
        .collect();
    writable.sort();
    assert_eq!(writable, ["biases", "scales", "weight"]);

    let mut flat = std::collections::HashMap::new();
    flat.insert(std::rc::Rc::from("weight"), (*reference.weight).clone());
    flat.insert(
        std::rc::Rc::from("scales"),
        reference.scales.get().unwrap().clone(),
    );
    flat.insert(
        std::rc::Rc::from("biases"),
        reference.biases.get().unwrap().clone(),
    );
    lin.update_flattened(flat);
    assert_eq!(
        lin.quantization().unwrap(),
        Some(Quantization::affine(32, 4))
    );
    let x = mlx_rs::random::normal::<f32>(&[2, 128], None, None, None).unwrap();
    assert_equal(
        "filled layer",
        &lin.forward(&x).unwrap(),
        &reference.forward(&x).unwrap(),
    );
}

#[test]
fn packing_is_read_back_from_shapes_as_the_reference_does() {
    use mlx_models::nn::quantized::infer_quantization;
    let w = mlx_rs::random::normal::<f32>(&[8, 256], None, None, None).unwrap();
    for (q, want) in [
        (Quantization::affine(64, 4), Quantization::affine(64, 4)),
        (Quantization::affine(32, 3), Quantization::affine(32, 3)),
        (Quantization::affine(128, 8), Quantization::affine(128, 8)),
        (
            Quantization::with_defaults(QuantMode::Mxfp4, None, None),
            Quantization {
                group_size: 32,
                bits: 4,
                mode: QuantMode::Mxfp4,
            },
        ),
        (
            Quantization::with_defaults(QuantMode::Mxfp8, None, None),
            Quantization {
                group_size: 32,
                bits: 8,
                mode: QuantMode::Mxfp8,
            },
        ),
    ] {
        let (packed, scales, _) = mlx_models::nn::quantized::quantize(&w, &q).unwrap();
        assert_eq!(infer_quantization(256, &packed, &scales).unwrap(), want);
    }
    let (packed, scales, _) =
        mlx_models::nn::quantized::quantize(&w, &Quantization::affine(64, 4)).unwrap();
    let err = infer_quantization(100, &packed, &scales).unwrap_err();
    assert!(err.contains("does not fit 100 input columns"), "{err}");
}

#[test]
fn split_quantized_products_equal_the_single_product() {
    use mlx_models::nn::quantized::{quantized_linear, quantized_matmul};
    // Rows enough to be split across the cores (and an odd count, so the parts differ).
    for (rows, q) in [
        (1030, Quantization::affine(64, 4)),
        (1536, Quantization::affine(32, 8)),
        (
            768,
            Quantization::with_defaults(QuantMode::Mxfp4, None, None),
        ),
    ] {
        let w = mlx_rs::random::normal::<f32>(&[rows, 256], None, None, None).unwrap();
        let (packed, scales, biases) = mlx_models::nn::quantized::quantize(&w, &q).unwrap();
        for tokens in [1, 7] {
            let x = mlx_rs::random::normal::<f32>(&[1, tokens, 256], None, None, None).unwrap();
            let single = quantized_matmul(&x, &packed, &scales, biases.as_ref(), true, &q).unwrap();
            let split = quantized_linear(&x, &packed, &scales, biases.as_ref(), &q).unwrap();
            assert_eq!(split.shape(), single.shape());
            assert_equal(
                &format!("{rows} rows, {tokens} tokens, {q:?}"),
                &split,
                &single,
            );
        }
    }
}
