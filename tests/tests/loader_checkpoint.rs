//! Reading checkpoint folders: weights (single file, sharded), config files, and hostile input
//! that must end in a typed error, never a panic, a hang or a huge allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlx_models::checkpoint::{
    self, load_safetensors, load_weights, load_weights_with, read_config, read_safetensors_header,
    summarize, weight_files, CheckpointError, LoadOptions, LoadStrategy,
};
use mlx_rs::{Array, Dtype};
use safetensors::tensor::{Dtype as StDtype, TensorView};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a valid safetensors file with the `safetensors` crate.
fn write_st(path: &Path, tensors: &[(&str, StDtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a file from a raw header and data, for hostile cases.
fn write_raw(path: &Path, header_len: u64, header: &[u8], data: &[u8]) {
    let mut bytes = header_len.to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn raw_with_header(path: &Path, header: &str, data: &[u8]) {
    write_raw(path, header.len() as u64, header.as_bytes(), data);
}

fn values(a: &Array) -> Vec<f32> {
    a.as_dtype(Dtype::Float32)
        .unwrap()
        .as_slice::<f32>()
        .to_vec()
}

fn folder() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn sample(dir: &Path) -> PathBuf {
    let path = dir.join("model.safetensors");
    let bf16: Vec<u8> = [1.5f32, -2.0, 0.25]
        .iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect();
    write_st(
        &path,
        &[
            (
                "a.weight",
                StDtype::F32,
                vec![2, 3],
                f32_bytes(&[1., 2., 3., 4., 5., 6.]),
            ),
            ("b.bias", StDtype::BF16, vec![3], bf16),
            (
                "c.idx",
                StDtype::I32,
                vec![2],
                [7i32, -9].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "d.q",
                StDtype::U32,
                vec![1, 2],
                [0xdeadbeefu32, 1]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                "e.fp8",
                StDtype::F8_E4M3,
                vec![4],
                vec![0x38, 0x40, 0xb8, 0],
            ),
        ],
    );
    path
}

fn check_sample(w: &HashMap<String, Array>) {
    assert_eq!(w.len(), 5);
    let a = &w["a.weight"];
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.dtype(), Dtype::Float32);
    assert_eq!(values(a), vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!(w["b.bias"].dtype(), Dtype::Bfloat16);
    assert_eq!(values(&w["b.bias"]), vec![1.5, -2.0, 0.25]);
    assert_eq!(w["c.idx"].as_slice::<i32>(), &[7, -9]);
    assert_eq!(w["d.q"].as_slice::<u32>(), &[0xdeadbeef, 1]);
    // fp8 stays raw bytes in uint8, as MLX's own loader does.
    assert_eq!(w["e.fp8"].dtype(), Dtype::Uint8);
    assert_eq!(w["e.fp8"].as_slice::<u8>(), &[0x38, 0x40, 0xb8, 0]);
}

#[test]
fn single_file_every_strategy() {
    let dir = folder();
    sample(dir.path());
    for strategy in [LoadStrategy::Mmap, LoadStrategy::Copy, LoadStrategy::Mlx] {
        let w = load_weights_with(dir.path(), LoadOptions { strategy }).unwrap();
        check_sample(&w);
    }
}

#[test]
fn mapped_tensors_outlive_the_rest_and_never_write_the_file() {
    let dir = folder();
    let path = sample(dir.path());
    let before = std::fs::read(&path).unwrap();
    let mut w = load_weights_with(
        dir.path(),
        LoadOptions {
            strategy: LoadStrategy::Mmap,
        },
    )
    .unwrap();
    // The only reference: MLX may reuse its buffer for the result (donation).
    let a = w.remove("a.weight").unwrap();
    drop(w);
    let b = mlx_rs::ops::add(&a, Array::from_f32(1.0)).unwrap();
    drop(a);
    let c = mlx_rs::ops::multiply(&b, Array::from_f32(2.0)).unwrap();
    assert_eq!(values(&c), vec![4., 6., 8., 10., 12., 14.]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the checkpoint file was modified"
    );
}

#[test]
fn header_only_read() {
    let dir = folder();
    let path = sample(dir.path());
    let h = read_safetensors_header(&path).unwrap();
    assert_eq!(h.tensors.len(), 5);
    assert_eq!(h.tensors["a.weight"].shape, vec![2, 3]);
    assert_eq!(h.tensors["e.fp8"].file_dtype, "F8_E4M3");
    assert_eq!(h.tensors["e.fp8"].dtype, Dtype::Uint8);
}

fn write_sharded(dir: &Path) {
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("x", StDtype::F32, vec![2], f32_bytes(&[1., 2.]))],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[("y", StDtype::F32, vec![1], f32_bytes(&[3.]))],
    );
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata": {"total_size": 12}, "weight_map": {
            "x": "model-00001-of-00002.safetensors",
            "y": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
}

#[test]
fn sharded_checkpoint() {
    let dir = folder();
    write_sharded(dir.path());
    let files = weight_files(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    let w = load_weights(dir.path()).unwrap();
    assert_eq!(values(&w["x"]), vec![1., 2.]);
    assert_eq!(values(&w["y"]), vec![3.]);
}

#[test]
fn missing_shard_is_named() {
    let dir = folder();
    write_sharded(dir.path());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_weights(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingShard { shard, .. } if shard == "model-00002-of-00002.safetensors"),
        "{err:?}"
    );
    assert!(err.to_string().contains("model-00002-of-00002.safetensors"));
}

#[test]
fn index_pointing_to_the_wrong_shard() {
    let dir = folder();
    write_sharded(dir.path());
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "model-00002-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = load_weights(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::IndexedTensorMissing { tensor, .. } if tensor == "x"),
        "{err:?}"
    );
}

#[test]
fn index_with_path_traversal_or_bad_shape() {
    let dir = folder();
    write_sharded(dir.path());
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"x": "../model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = load_weights(dir.path()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::BadShardName { .. }),
        "{err:?}"
    );
    std::fs::write(&index, r#"{"weight_map": {"x": "/etc/passwd"}}"#).unwrap();
    let err = load_weights(dir.path()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::BadShardName { .. }),
        "{err:?}"
    );
    std::fs::write(&index, r#"{"weight_map": [1, 2]}"#).unwrap();
    assert!(matches!(
        load_weights(dir.path()).unwrap_err(),
        CheckpointError::BadIndex { .. }
    ));
    std::fs::write(&index, r#"{"weight_map": {"x": 3}}"#).unwrap();
    assert!(matches!(
        load_weights(dir.path()).unwrap_err(),
        CheckpointError::BadIndex { .. }
    ));
    std::fs::write(&index, "{not json").unwrap();
    assert!(matches!(
        load_weights(dir.path()).unwrap_err(),
        CheckpointError::MalformedJson { .. }
    ));
}

#[test]
fn duplicate_tensor_across_files() {
    let dir = folder();
    write_st(
        &dir.path().join("model-a.safetensors"),
        &[("x", StDtype::F32, vec![1], f32_bytes(&[1.]))],
    );
    write_st(
        &dir.path().join("model-b.safetensors"),
        &[("x", StDtype::F32, vec![1], f32_bytes(&[2.]))],
    );
    let err = load_weights(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::DuplicateTensor { tensor, .. } if tensor == "x"),
        "{err:?}"
    );
}

#[test]
fn pickle_only_is_refused_and_other_files_are_ignored() {
    let dir = folder();
    // A pickle that would run code if it were ever unpickled.
    let payload = b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned'\ntR.";
    for name in ["pytorch_model.bin", "weights.pt", "model.pth", "model.ckpt"] {
        std::fs::write(dir.path().join(name), payload).unwrap();
    }
    let err = load_weights(dir.path()).unwrap_err();
    match &err {
        CheckpointError::PickleOnly { files, .. } => {
            for name in ["pytorch_model.bin", "weights.pt", "model.pth", "model.ckpt"] {
                assert!(files.contains(name), "{files}");
            }
        }
        other => panic!("expected PickleOnly, got {other:?}"),
    }
    assert!(err.to_string().contains("refused"));
    // With safetensors beside them, the pickles are ignored.
    sample(dir.path());
    check_sample(&load_weights(dir.path()).unwrap());
}

#[test]
fn no_weights_and_not_a_folder() {
    let dir = folder();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    assert!(matches!(
        load_weights(dir.path()).unwrap_err(),
        CheckpointError::NoWeights(_)
    ));
    let missing = dir.path().join("nope");
    assert!(matches!(
        load_weights(&missing).unwrap_err(),
        CheckpointError::NotAFolder(_)
    ));
    assert!(matches!(
        read_config(&missing).unwrap_err(),
        CheckpointError::NotAFolder(_)
    ));
}

// --- hostile files ---------------------------------------------------------------------------

fn load_one(path: &Path) -> Result<HashMap<String, Array>, CheckpointError> {
    let r = load_safetensors(path, LoadStrategy::Mmap);
    // Every strategy validates first, so each gives the same verdict.
    let r2 = load_safetensors(path, LoadStrategy::Mlx);
    assert_eq!(r.is_ok(), r2.is_ok());
    r
}

#[test]
fn truncated_files() {
    let dir = folder();
    let good = sample(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"").unwrap();
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::TooSmall(_)
    ));
    std::fs::write(&bad, &bytes[..5]).unwrap();
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::TooSmall(_)
    ));
    // Cut inside the header: the header length now lies.
    std::fs::write(&bad, &bytes[..40]).unwrap();
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::HeaderLength { .. }
    ));
    // Cut inside the data.
    std::fs::write(&bad, &bytes[..bytes.len() - 3]).unwrap();
    let err = load_one(&bad).unwrap_err();
    match err {
        CheckpointError::DataSize {
            expected, actual, ..
        } => assert_eq!(expected, actual + 3),
        other => panic!("expected DataSize, got {other:?}"),
    }
    // Every possible truncation is an error, never a panic.
    for cut in 0..bytes.len() {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        assert!(load_one(&bad).is_err(), "cut at {cut} loaded");
    }
}

#[test]
fn header_length_that_lies() {
    let dir = folder();
    let bad = dir.path().join("bad.safetensors");
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    for claimed in [u64::MAX, 1 << 40, 200_000_000, header.len() as u64 + 5] {
        write_raw(&bad, claimed, header, &[0; 4]);
        let err = load_one(&bad).unwrap_err();
        assert!(
            matches!(err, CheckpointError::HeaderLength { header_len, .. } if header_len == claimed),
            "{claimed}: {err:?}"
        );
    }
    // Shorter than the real header: the JSON is cut.
    write_raw(&bad, 10, header, &[0; 4]);
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::BadHeader { .. }
    ));
}

#[test]
fn bad_header_json() {
    let dir = folder();
    let bad = dir.path().join("bad.safetensors");
    for header in [
        "{not json",
        "[1,2,3]",
        "\"x\"",
        r#"{"x": {"shape": [1], "data_offsets": [0, 4]}}"#,
        r#"{"x": {"dtype": "F32", "shape": "big", "data_offsets": [0, 4]}}"#,
        r#"{"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
    ] {
        raw_with_header(&bad, header, &[0; 4]);
        let err = load_one(&bad).unwrap_err();
        assert!(
            matches!(err, CheckpointError::BadHeader { .. }),
            "{header}: {err:?}"
        );
    }
    write_raw(&bad, 4, &[0xff, 0xfe, 0xfd, 0xfc], &[]);
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::BadHeader { .. }
    ));
}

#[test]
fn unknown_dtypes() {
    let dir = folder();
    let bad = dir.path().join("bad.safetensors");
    for dtype in ["F7", "Q4_K", "F4", "F6_E2M3", "F6_E3M2", ""] {
        let header = format!(r#"{{"x":{{"dtype":"{dtype}","shape":[1],"data_offsets":[0,1]}}}}"#);
        raw_with_header(&bad, &header, &[0]);
        let err = load_one(&bad).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::UnsupportedDtype { dtype: d, tensor, .. } if d == dtype && tensor == "x"),
            "{dtype}: {err:?}"
        );
    }
}

#[test]
fn offsets_out_of_range_overlapping_and_mismatched() {
    let dir = folder();
    let bad = dir.path().join("bad.safetensors");
    // Past the end of the data.
    raw_with_header(
        &bad,
        r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        &[0; 8],
    );
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::DataSize {
            expected: 16,
            actual: 8,
            ..
        }
    ));
    // Start far past the end.
    raw_with_header(
        &bad,
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4000000000,4000000004]}}"#,
        &[0; 8],
    );
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::BadOffsets { .. }
    ));
    // Overlapping tensors.
    raw_with_header(
        &bad,
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert!(matches!(
        load_one(&bad).unwrap_err(),
        CheckpointError::BadOffsets { .. }
    ));
    // Offsets that disagree with shape x dtype.
    raw_with_header(
        &bad,
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let err = load_one(&bad).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::BadOffsets { tensor, .. } if tensor == "x"),
        "{err:?}"
    );
    // End before start.
    raw_with_header(
        &bad,
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
        &[0; 4],
    );
    assert!(load_one(&bad).is_err());
}

#[test]
fn shapes_too_large() {
    let dir = folder();
    let bad = dir.path().join("bad.safetensors");
    for shape in [
        "[4294967296, 4294967296, 4294967296]",
        "[3000000000]",
        "[18446744073709551615]",
    ] {
        let header = format!(r#"{{"x":{{"dtype":"F32","shape":{shape},"data_offsets":[0,4]}}}}"#);
        raw_with_header(&bad, &header, &[0; 4]);
        let err = load_one(&bad).unwrap_err();
        assert!(
            matches!(err, CheckpointError::ShapeTooLarge { .. }),
            "{shape}: {err:?}"
        );
    }
}

#[test]
fn random_header_corruption_never_panics() {
    let dir = folder();
    let good = sample(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.safetensors");
    // A small deterministic generator (no external randomness needed).
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % header_end;
            b[i] = next() as u8;
        }
        std::fs::write(&bad, &b).unwrap();
        // Ok or a typed error; any array that loads has the size its header claims.
        if let Ok(w) = load_safetensors(&bad, LoadStrategy::Mmap) {
            for a in w.values() {
                assert_eq!(
                    a.shape().iter().map(|&d| d as usize).product::<usize>(),
                    a.size()
                );
            }
        }
    }
}

// --- config files ----------------------------------------------------------------------------

#[test]
fn config_missing_malformed_and_not_an_object() {
    let dir = folder();
    let err = read_config(dir.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::ConfigMissing(_)));
    assert!(err.to_string().contains("config.json"));
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llama\",",
    )
    .unwrap();
    let err = read_config(dir.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::MalformedJson { .. }));
    assert!(err.to_string().contains("line 1"), "{err}");
    std::fs::write(dir.path().join("config.json"), "[1]").unwrap();
    assert!(matches!(
        read_config(dir.path()).unwrap_err(),
        CheckpointError::ConfigNotObject(_)
    ));
}

#[test]
fn generation_config_eos_wins() {
    let dir = folder();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "eos_token_id": 2}"#,
    )
    .unwrap();
    assert_eq!(checkpoint::eos_token_ids(dir.path()).unwrap(), vec![2]);
    let gen = dir.path().join("generation_config.json");
    std::fs::write(&gen, r#"{"eos_token_id": [128001, 128008, 128009]}"#).unwrap();
    assert_eq!(
        checkpoint::eos_token_ids(dir.path()).unwrap(),
        vec![128001, 128008, 128009]
    );
    assert_eq!(
        read_config(dir.path()).unwrap()["eos_token_id"],
        serde_json::json!([128001, 128008, 128009])
    );
    std::fs::write(&gen, r#"{"eos_token_id": 7}"#).unwrap();
    assert_eq!(checkpoint::eos_token_ids(dir.path()).unwrap(), vec![7]);
    // As in the reference: a falsy value or a malformed file leaves config.json's.
    std::fs::write(&gen, r#"{"eos_token_id": null}"#).unwrap();
    assert_eq!(checkpoint::eos_token_ids(dir.path()).unwrap(), vec![2]);
    std::fs::write(&gen, r#"{"eos_token_id": "#).unwrap();
    assert_eq!(checkpoint::eos_token_ids(dir.path()).unwrap(), vec![2]);
    // A wrong type is an error naming the file.
    std::fs::write(&gen, r#"{"eos_token_id": "</s>"}"#).unwrap();
    let err = checkpoint::eos_token_ids(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::InvalidEosTokenId { path, .. } if path.ends_with("generation_config.json")),
        "{err:?}"
    );
    std::fs::remove_file(&gen).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"eos_token_id": [-1]}"#).unwrap();
    assert!(matches!(
        checkpoint::eos_token_ids(dir.path()).unwrap_err(),
        CheckpointError::InvalidEosTokenId { .. }
    ));
    std::fs::write(dir.path().join("config.json"), r#"{}"#).unwrap();
    assert_eq!(
        checkpoint::eos_token_ids(dir.path()).unwrap(),
        Vec::<u32>::new()
    );
}

/// Times the load strategies on a ~256 MB checkpoint (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn measure_load_strategies() {
    let dir = folder();
    let n = 64 * 1024 * 1024; // f32 elements: 256 MB
    let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let names: Vec<String> = (0..16).map(|i| format!("layer{i}.weight")).collect();
    let chunk = data.len() / 16;
    let tensors: Vec<(&str, StDtype, Vec<usize>, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                StDtype::F32,
                vec![chunk / 4],
                data[i * chunk..(i + 1) * chunk].to_vec(),
            )
        })
        .collect();
    write_st(&dir.path().join("model.safetensors"), &tensors);
    drop(tensors);
    // Twice over, in two orders, so that no strategy is favoured by a warm cache.
    let order = [LoadStrategy::Mlx, LoadStrategy::Mmap, LoadStrategy::Copy];
    for strategy in order.iter().chain(order.iter().rev()).copied() {
        let t = std::time::Instant::now();
        let w = load_weights_with(dir.path(), LoadOptions { strategy }).unwrap();
        let load = t.elapsed();
        let arrays: Vec<&Array> = w.values().collect();
        mlx_rs::transforms::eval(arrays.iter().copied()).unwrap();
        let evald = t.elapsed();
        let sum: f32 = w
            .values()
            .map(|a| a.sum(None).unwrap().item_exact::<f32>())
            .sum();
        let total = t.elapsed();
        println!(
            "{strategy:?}: load {load:?}, load+eval {evald:?}, +first use {total:?} (sum {sum})"
        );
    }
}

#[test]
fn summary_from_headers() {
    let dir = folder();
    write_sharded(dir.path());
    write_st(
        &dir.path().join("model-extra.safetensors"),
        &[
            ("layers.0.q.weight", StDtype::U32, vec![4, 2], vec![0; 32]),
            ("layers.0.q.scales", StDtype::BF16, vec![4, 1], vec![0; 8]),
            ("layers.0.q.biases", StDtype::BF16, vec![4, 1], vec![0; 8]),
        ],
    );
    let s = summarize(dir.path()).unwrap();
    assert_eq!(s.files.len(), 3);
    assert_eq!(s.tensors, 5);
    assert_eq!(s.elements, 2 + 1 + 8 + 4 + 4);
    assert_eq!(s.bytes, 12 + 32 + 8 + 8);
    assert_eq!(s.dtypes["F32"], 3);
    assert_eq!(s.dtypes["U32"], 8);
    assert_eq!(s.dtypes["BF16"], 8);
    assert_eq!(s.quantized_layers, vec!["layers.0.q".to_string()]);
    // A hostile file is reported, not summarized.
    std::fs::write(dir.path().join("model-bad.safetensors"), [255u8; 16]).unwrap();
    assert!(matches!(
        summarize(dir.path()).unwrap_err(),
        CheckpointError::HeaderLength { .. }
    ));
}

#[test]
fn bare_non_finite_floats_in_config() {
    // Python's json.dump writes these; they are read as transformers' tagged floats.
    let dir = folder();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"a": Infinity, "b": [-Infinity, NaN], "s": "NaN and Infinity stay \"text\"", "eos_token_id": 1}"#,
    )
    .unwrap();
    let c = read_config(dir.path()).unwrap();
    assert_eq!(c["a"], serde_json::json!({"__float__": "Infinity"}));
    assert_eq!(
        c["b"],
        serde_json::json!([{"__float__": "-Infinity"}, {"__float__": "NaN"}])
    );
    assert_eq!(c["s"], serde_json::json!("NaN and Infinity stay \"text\""));
    assert_eq!(checkpoint::tag_bare_non_finite(r#"{"x": 1}"#), None);
    // Other damage is still an error.
    std::fs::write(dir.path().join("config.json"), r#"{"a": Inf}"#).unwrap();
    assert!(matches!(
        read_config(dir.path()).unwrap_err(),
        CheckpointError::MalformedJson { .. }
    ));
}

/// Every FP8 type of the format loads, under every strategy: `F8_E4M3` and `F8_E8M0` as their
/// bytes in uint8 (as MLX's loader keeps them), `F8_E5M2` (which MLX's loader refuses)
/// decoded to float16 exactly, infinities, NaN and the smallest subnormal included.
#[test]
fn fp8_dtypes_load_under_every_strategy() {
    let dir = folder();
    let path = dir.path().join("fp8.safetensors");
    // E5M2: 1.0, -2.0, +inf, 2^-16 (the smallest subnormal), 57344 (the largest), NaN.
    let e5m2 = vec![0x3C, 0xC0, 0x7C, 0x01, 0x7B, 0x7E];
    let e4m3 = vec![0x38, 0x40, 0x7E, 0x01];
    let e8m0 = vec![127, 128, 0];
    let f32s = f32_bytes(&[1.5, -0.25]);
    write_st(
        &path,
        &[
            ("e5m2", StDtype::F8_E5M2, vec![2, 3], e5m2.clone()),
            ("e4m3", StDtype::F8_E4M3, vec![4], e4m3.clone()),
            ("e8m0", StDtype::F8_E8M0, vec![3], e8m0.clone()),
            ("f32", StDtype::F32, vec![2], f32s),
        ],
    );
    let header = read_safetensors_header(&path).unwrap();
    assert_eq!(header.tensors["e5m2"].file_dtype, "F8_E5M2");
    assert_eq!(header.tensors["e5m2"].dtype, Dtype::Float16);
    for strategy in [LoadStrategy::Mlx, LoadStrategy::Mmap, LoadStrategy::Copy] {
        let w = load_safetensors(&path, strategy).unwrap();
        let e5 = &w["e5m2"];
        assert_eq!(
            (e5.dtype(), e5.shape()),
            (Dtype::Float16, &[2, 3][..]),
            "{strategy:?}"
        );
        let v = values(e5);
        assert_eq!(
            &v[..5],
            &[1.0, -2.0, f32::INFINITY, 2f32.powi(-16), 57344.0],
            "{strategy:?}"
        );
        assert!(v[5].is_nan(), "{strategy:?}: {v:?}");
        assert_eq!(w["e4m3"].dtype(), Dtype::Uint8);
        assert_eq!(w["e4m3"].as_slice::<u8>(), &e4m3[..]);
        assert_eq!(w["e8m0"].as_slice::<u8>(), &e8m0[..]);
        assert_eq!(values(&w["f32"]), vec![1.5, -0.25], "{strategy:?}");
    }
}
