//! GGUF checkpoints on small files the tests write themselves (MLX's GGUF writer for F32
//! tensors, raw bytes where MLX cannot write the type): the header scan, the metadata and
//! tensor-name mapping, llama.cpp's query/key row permutation (undoing it gives the
//! reference's logits; keeping it needs the traditional RoPE), unsupported types refused by
//! name, and the tokenizer and chat template built from `tokenizer.ggml.*` metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mlx_models::gguf::header::{self, GgmlType};
use mlx_models::gguf::{permute_rows, unpermute_rows, GgufCheckpoint, GgufError};
use mlx_models::load::{load_dir, load_parts, load_with, LoadError, LoadOptions};
use mlx_models::tokenizer::ChatOptions;
use mlx_models_tests::parity;
use mlx_models_tests::reference::{assert_close, max_abs_diff, Fixture};
use mlx_rs::io::GgufFile;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};
use serde_json::{json, Value};

/// A file path in a fresh temporary folder, removed when dropped.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = tempfile::tempdir().expect("scratch dir");
    let path = dir.path().join(name);
    Scratch { _dir: dir, path }
}

/// llama.cpp's tensor name for a Hugging Face llama tensor, written out independently of the
/// library's rules.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.", "token_embd."),
        ("model.norm.", "output_norm."),
        ("lm_head.", "output."),
    ];
    for (from, to) in fixed {
        if let Some(rest) = hf.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
    let (layer, rest) = rest.split_once('.').expect("layer index");
    let modules = [
        ("input_layernorm.", "attn_norm."),
        ("post_attention_layernorm.", "ffn_norm."),
        ("self_attn.q_proj.", "attn_q."),
        ("self_attn.k_proj.", "attn_k."),
        ("self_attn.v_proj.", "attn_v."),
        ("self_attn.o_proj.", "attn_output."),
        ("mlp.gate_proj.", "ffn_gate."),
        ("mlp.up_proj.", "ffn_up."),
        ("mlp.down_proj.", "ffn_down."),
    ];
    for (from, to) in modules {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("blk.{layer}.{to}{tail}");
        }
    }
    panic!("no GGUF name for {hf}");
}

/// What llama.cpp's converter makes of a llama checkpoint folder: metadata from config.json,
/// tensors renamed, query/key rows permuted. Returns the config.
fn write_llama_gguf(dir: &Path, out: &Path) -> Value {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
            .expect("json");
    let int = |k: &str| config[k].as_i64().expect(k) as i32;
    let heads = int("num_attention_heads");
    let kv_heads = int("num_key_value_heads");
    let mut file = GgufFile::new().expect("gguf");
    file.insert_metadata("general.architecture", "llama")
        .expect("meta");
    for (key, value) in [
        ("llama.embedding_length", int("hidden_size")),
        ("llama.block_count", int("num_hidden_layers")),
        ("llama.feed_forward_length", int("intermediate_size")),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv_heads),
        ("llama.vocab_size", int("vocab_size")),
    ] {
        file.insert_metadata(key, Array::from_int(value))
            .expect("meta");
    }
    if let Some(head_dim) = config.get("head_dim").and_then(Value::as_i64) {
        file.insert_metadata(
            "llama.attention.key_length",
            Array::from_int(head_dim as i32),
        )
        .expect("meta");
    }
    file.insert_metadata(
        "llama.rope.freq_base",
        Array::from_f32(config["rope_theta"].as_f64().expect("theta") as f32),
    )
    .expect("meta");
    file.insert_metadata(
        "llama.attention.layer_norm_rms_epsilon",
        Array::from_f32(config["rms_norm_eps"].as_f64().expect("eps") as f32),
    )
    .expect("meta");
    let weights = mlx_models::checkpoint::load_weights(dir).expect("weights");
    for (name, w) in &weights {
        let w = if name.contains(".q_proj.") {
            permute_rows(w, heads).expect("permute")
        } else if name.contains(".k_proj.") {
            permute_rows(w, kv_heads).expect("permute")
        } else {
            w.clone()
        };
        file.insert_array(gguf_name(name), &w).expect("tensor");
    }
    file.save(out).expect("save gguf");
    config
}

fn prompt_logits(model: &mut dyn mlx_models::model::LanguageModel, prompt: &[i32]) -> Array {
    let ids = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    model
        .forward(&ids, &mut [])
        .expect("forward")
        .index(0)
        .as_dtype(Dtype::Float32)
        .expect("cast")
}

fn case_prompt(dir: &Path) -> Vec<i32> {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("meta"))
            .expect("json");
    meta["prompt"]
        .as_array()
        .expect("prompt")
        .iter()
        .map(|v| v.as_i64().expect("id") as i32)
        .collect()
}

#[test]
fn llama_gguf_gives_the_reference_logits() {
    let fixtures = parity::fixtures("llama");
    // Untied with a plain head, and tied with attention biases (permuted like the weights) and
    // an explicit head_dim (`attention.key_length`).
    for case in ["untied", "tied_bias_head_dim"] {
        let dir = fixtures.join(case);
        let path = scratch(&format!("{case}.gguf"));
        let config = write_llama_gguf(&dir, &path);
        let prompt = case_prompt(&dir);
        let reference = Fixture::load(&dir, "reference");

        let mut from_gguf =
            load_with(path.to_str().expect("utf-8"), &LoadOptions::default()).expect("load gguf");
        assert_eq!(
            from_gguf.model.num_layers() as i64,
            config["num_hidden_layers"].as_i64().expect("layers")
        );
        let logits = prompt_logits(from_gguf.model.as_mut(), &prompt);
        let diff = assert_close(
            &format!("{case}: GGUF prompt logits"),
            &logits,
            reference.get("prompt_logits"),
            parity::TOL,
        );

        let mut from_dir = load_dir(&dir, &LoadOptions::default()).expect("load folder");
        let same = max_abs_diff(&logits, &prompt_logits(from_dir.model.as_mut(), &prompt));
        println!("{case}: GGUF vs reference {diff:.2e}, GGUF vs safetensors {same:.2e}");
        assert_eq!(
            same, 0.0,
            "{case}: the GGUF and the safetensors checkpoint load the same weights"
        );
    }
}

#[test]
fn llama_metadata_and_names_map_to_the_checkpoint() {
    let dir = parity::fixtures("llama").join("tied_bias_head_dim");
    let path = scratch("mapping.gguf");
    write_llama_gguf(&dir, &path);
    let gguf = GgufCheckpoint::open(&path).expect("open");
    let config = gguf.config().expect("config");
    assert_eq!(
        config,
        json!({
            "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5f32,
            "head_dim": 32, "rope_theta": 10000.0, "vocab_size": 256, "tie_word_embeddings": true,
            "attention_bias": true, "mlp_bias": true,
        })
    );
    let mut names: Vec<String> = gguf.weights().expect("weights").into_keys().collect();
    names.sort();
    let mut want: Vec<String> = mlx_models::checkpoint::load_weights(&dir)
        .expect("weights")
        .into_keys()
        .collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn llama_cpp_rows_pair_rotary_halves() {
    // One head of dimension 8: Hugging Face rows 0..8 rotate (i, i + 4); llama.cpp stores
    // them so that the pairs are adjacent: 0, 4, 1, 5, 2, 6, 3, 7.
    let rows = Array::from_slice(&[0f32, 1., 2., 3., 4., 5., 6., 7.], &[8, 1]);
    let permuted = permute_rows(&rows, 1).expect("permute");
    assert_eq!(
        permuted.as_slice::<f32>(),
        &[0., 4., 1., 5., 2., 6., 3., 7.]
    );
    assert_eq!(
        unpermute_rows(&permuted, 1)
            .expect("unpermute")
            .as_slice::<f32>(),
        rows.as_slice::<f32>()
    );
    // Two heads: each head is permuted on its own.
    let two = Array::from_slice(&(0..8).map(|i| i as f32).collect::<Vec<_>>(), &[8]);
    assert_eq!(
        permute_rows(&two, 2).expect("permute").as_slice::<f32>(),
        &[0., 2., 1., 3., 4., 6., 5., 7.]
    );
    assert!(
        permute_rows(&two, 3).is_err(),
        "8 rows do not split into 3 heads"
    );
}

#[test]
fn quantized_rows_unpermute_like_dense_rows() {
    // Scales and biases are per row, so moving whole rows of the packed triplet is the same
    // as moving the rows of the dense matrix.
    let w = mlx_rs::random::normal::<f32>(&[64, 64], None, None, None).expect("random");
    let (q, scales, biases) = mlx_rs::ops::quantize(&w, 32, 4).expect("quantize");
    let heads = 4;
    let un = |a: &Array| unpermute_rows(a, heads).expect("unpermute");
    let from_triplet =
        mlx_rs::ops::dequantize(un(&q), un(&scales), &un(&biases), 32, 4).expect("dequantize");
    let dense = un(&mlx_rs::ops::dequantize(&q, &scales, &biases, 32, 4).expect("dequantize"));
    assert_eq!(max_abs_diff(&from_triplet, &dense), 0.0);
}

#[test]
fn keeping_llama_cpp_rows_needs_the_traditional_rope() {
    let dir = parity::fixtures("llama").join("untied");
    let path = scratch("layout.gguf");
    write_llama_gguf(&dir, &path);
    let prompt = case_prompt(&dir);
    let reference = Fixture::load(&dir, "reference");
    let gguf = GgufCheckpoint::open(&path).expect("open");
    let (heads, kv_heads) = (4, 2);
    // The tensors as stored in the file: rows in llama.cpp's order.
    let stored = || -> HashMap<String, Array> {
        gguf.weights()
            .expect("weights")
            .into_iter()
            .map(|(k, w)| {
                let w = match () {
                    _ if k.contains(".q_proj.") => permute_rows(&w, heads).expect("permute"),
                    _ if k.contains(".k_proj.") => permute_rows(&w, kv_heads).expect("permute"),
                    _ => w,
                };
                (k, w)
            })
            .collect()
    };
    let run = |config: Value| {
        let mut loaded =
            load_parts(config, stored(), vec![], &path, &LoadOptions::default()).expect("load");
        max_abs_diff(
            &prompt_logits(loaded.model.as_mut(), &prompt),
            reference.get("prompt_logits"),
        )
    };
    let mut config = gguf.config().expect("config");
    let wrong = run(config.clone());
    config["rope_traditional"] = Value::Bool(true);
    let traditional = run(config);
    println!("stored rows: usual RoPE {wrong:.2e}, traditional RoPE {traditional:.2e}");
    assert!(
        wrong > 1e-2,
        "llama.cpp's rows with the usual RoPE should not match the reference ({wrong})"
    );
    assert!(
        traditional < parity::TOL,
        "llama.cpp's rows with the traditional RoPE match ({traditional})"
    );
}

#[test]
fn header_scan_lists_keys_and_tensor_types() {
    let path = scratch("scan.gguf");
    let mut file = GgufFile::new().expect("gguf");
    file.insert_metadata("general.architecture", "llama")
        .expect("meta");
    file.insert_metadata(
        "tokenizer.ggml.tokens",
        vec!["a".to_string(), "b".to_string()],
    )
    .expect("meta");
    file.insert_metadata("x.ids", Array::from_slice(&[1i32, 2, 3], &[3]))
        .expect("meta");
    file.insert_array("a.weight", &Array::zeros::<f32>(&[3, 5]).expect("zeros"))
        .expect("tensor");
    file.insert_array(
        "b.weight",
        &Array::zeros::<f32>(&[7])
            .expect("zeros")
            .as_dtype(Dtype::Float16)
            .expect("f16"),
    )
    .expect("tensor");
    file.save(&path).expect("save");

    let scanned = header::scan(&path).expect("scan");
    let mut keys = scanned.keys.clone();
    keys.sort();
    assert_eq!(
        keys,
        ["general.architecture", "tokenizer.ggml.tokens", "x.ids"]
    );
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = scanned
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.ggml_type))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tensors,
        [
            ("a.weight".to_string(), vec![3, 5], GgmlType::F32),
            ("b.weight".to_string(), vec![7], GgmlType::F16)
        ]
    );
}

/// A GGUF file written byte by byte: `general.architecture = "llama"` and the given tensors
/// `(name, dimensions innermost first, type, data bytes)`; the data is zeros.
fn raw_gguf(path: &Path, tensors: &[(&str, &[u64], u32, usize)]) {
    let zeros: Vec<Vec<u8>> = tensors.iter().map(|t| vec![0; t.3]).collect();
    let with_data: Vec<(&str, &[u64], u32, &[u8])> = tensors
        .iter()
        .zip(&zeros)
        .map(|(t, z)| (t.0, t.1, t.2, z.as_slice()))
        .collect();
    raw_gguf_with(path, &with_data);
}

/// As [`raw_gguf`], with the tensors' bytes given.
fn raw_gguf_with(path: &Path, tensors: &[(&str, &[u64], u32, &[u8])]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(1u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "llama");
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, data) in tensors {
        out.extend(*data);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, out).expect("write gguf");
}

/// Random bytes from a fixed seed (xorshift), for quantized blocks.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// llama.cpp's `dequantize_row_q6_K` for one block of 256: `ql[128] qh[64] scales[16] d`.
fn q6_k_block(b: &[u8]) -> Vec<f32> {
    let d = f16_at(b, 208);
    let mut y = vec![0f32; 256];
    for half in 0..2 {
        let (ql, qh, sc) = (&b[64 * half..], &b[128 + 32 * half..], &b[192 + 8 * half..]);
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q =
                |low: u8, shift: u32| ((low | (((qh[l] >> shift) & 3) << 4)) as i32 - 32) as f32;
            let scale = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = scale(0) * q(ql[l] & 0xF, 0);
            y[l + 32] = scale(2) * q(ql[l + 32] & 0xF, 2);
            y[l + 64] = scale(4) * q(ql[l] >> 4, 4);
            y[l + 96] = scale(6) * q(ql[l + 32] >> 4, 6);
        }
    }
    y
}

/// llama.cpp's `dequantize_row_q2_K` for one block of 256: `scales[16] qs[64] d dmin`.
fn q2_k_block(b: &[u8]) -> Vec<f32> {
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    let mut y = Vec::with_capacity(256);
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = b[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                y.extend((0..16).map(|l| dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml));
            }
        }
    }
    y
}

#[test]
fn k_quants_load_as_llama_cpp_decodes_them() {
    // Two rows of 512 values; random blocks with small positive scales.
    let blocks = |size: usize, scale_at: &[usize], seed: u64| {
        let mut data = random_bytes(4 * size, seed);
        for block in data.chunks_mut(size) {
            for (i, &at) in scale_at.iter().enumerate() {
                let v =
                    half::f16::from_f32(0.004 + 0.003 * (block[0] % 8) as f32 + 0.001 * i as f32);
                block[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        data
    };
    let q6 = blocks(210, &[208], 7);
    let q2 = blocks(84, &[80, 82], 11);
    let path = scratch("k-quants.gguf");
    raw_gguf_with(
        &path,
        &[
            ("blk.0.ffn_down.weight", &[512, 2], 14, &q6),
            ("blk.0.ffn_up.weight", &[512, 2], 10, &q2),
        ],
    );
    let weights = GgufCheckpoint::open(&path)
        .expect("open")
        .weights()
        .expect("weights");
    for (name, data, size, decode) in [
        (
            "model.layers.0.mlp.down_proj.weight",
            &q6,
            210,
            q6_k_block as fn(&[u8]) -> Vec<f32>,
        ),
        ("model.layers.0.mlp.up_proj.weight", &q2, 84, q2_k_block),
    ] {
        let want: Vec<f32> = data.chunks(size).flat_map(decode).collect();
        let got = &weights[name];
        assert_eq!(got.shape(), &[2, 512], "{name}");
        assert_eq!(
            got.dtype(),
            Dtype::Float16,
            "{name}: dequantized to float16"
        );
        let want = Array::from_slice(&want, &[2, 512]);
        let scale = mlx_rs::ops::abs(&want)
            .expect("abs")
            .max(None)
            .expect("max")
            .item_exact::<f32>();
        let diff = max_abs_diff(&got.as_dtype(Dtype::Float32).expect("cast"), &want);
        println!("{name}: {diff:.2e} off llama.cpp's decoding, largest value {scale:.2}");
        assert!(
            diff <= scale * 1e-3,
            "{name}: {diff} off llama.cpp's decoding (largest value {scale})"
        );
    }

    // Q4_K, which MLX's loader decodes differently from llama.cpp, is refused.
    let q4 = blocks(144, &[0, 2], 13);
    let path = scratch("q4k.gguf");
    raw_gguf_with(&path, &[("blk.0.ffn_gate.weight", &[512, 2], 12, &q4)]);
    let err = GgufCheckpoint::open(&path).expect_err("Q4_K");
    assert!(err.to_string().contains("Q4_K"), "{err}");
}

#[test]
fn unsupported_tensor_types_are_named() {
    // Q5_K: 256 values in 176 bytes; BF16: 2 bytes a value.
    let path = scratch("q5k.gguf");
    raw_gguf(
        &path,
        &[
            ("token_embd.weight", &[256], 0, 1024),
            ("blk.0.attn_q.weight", &[256], 13, 176),
        ],
    );
    match GgufCheckpoint::open(&path) {
        Err(e @ GgufError::UnsupportedType { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("Q5_K") && message.contains("blk.0.attn_q.weight"),
                "{message}"
            );
        }
        other => panic!("expected an unsupported-type error, got {other:?}"),
    }
    let path = scratch("bf16.gguf");
    raw_gguf(&path, &[("output_norm.weight", &[64], 30, 128)]);
    let err =
        mlx_models::load::load_with(path.to_str().expect("utf-8 path"), &LoadOptions::default())
            .expect_err("BF16 is not supported");
    assert!(
        matches!(err, LoadError::Gguf(GgufError::UnsupportedType { ref type_name, .. }) if type_name == "BF16"),
        "{err}"
    );

    // The command says the same and exits 1.
    let out = Command::new(cli_binary())
        .args([
            "generate",
            "--model",
            path.to_str().expect("utf-8"),
            "--prompt-tokens",
            "1",
            "--max-tokens",
            "1",
        ])
        .output()
        .expect("run mlx-models");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("BF16") && stderr.contains("not supported yet"),
        "{stderr}"
    );
}

#[test]
fn malformed_files_are_errors() {
    let path = scratch("truncated.gguf");
    raw_gguf(&path, &[("a.weight", &[32], 0, 128)]);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..40]).expect("truncate");
    let err = GgufCheckpoint::open(&path).expect_err("truncated");
    assert!(matches!(err, GgufError::Malformed { .. }), "{err}");

    let path = scratch("not.gguf");
    std::fs::write(&path, b"GGML not a gguf file at all").expect("write");
    let err = GgufCheckpoint::open(&path).expect_err("bad magic");
    assert!(
        err.to_string().contains("does not start with `GGUF`"),
        "{err}"
    );

    // A string length larger than the file.
    let mut lying = b"GGUF".to_vec();
    lying.extend(3u32.to_le_bytes());
    lying.extend(0u64.to_le_bytes());
    lying.extend(1u64.to_le_bytes());
    lying.extend(u64::MAX.to_le_bytes());
    let path = scratch("lying.gguf");
    std::fs::write(&path, lying).expect("write");
    let err = GgufCheckpoint::open(&path).expect_err("lying length");
    assert!(err.to_string().contains("claims"), "{err}");
}

/// Rewrites the data offset of the tensor record of `name` (the last 8 bytes of its record).
fn set_offset(path: &Path, name: &str, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .expect("tensor record");
    // name, u32 dims count, dims (u64 each), u32 type, u64 offset
    let dims = u32::from_le_bytes(
        bytes[at + name.len()..at + name.len() + 4]
            .try_into()
            .unwrap(),
    );
    let offset_at = at + name.len() + 4 + 8 * dims as usize + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&offset.to_le_bytes());
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn tensor_data_outside_the_file_is_refused_before_reading() {
    // Two F32 tensors of 32 values (128 bytes each): the second's offset moved past the end,
    // to a huge value that would overflow, and off the alignment.
    for (offset, needle) in [
        (
            4096,
            "claims bytes 4096..4224 of the data section, but the file holds 256 bytes",
        ),
        (u64::MAX - 31, "claims bytes"),
        (130, "not a multiple of the alignment 32"),
    ] {
        let path = scratch("offsets.gguf");
        raw_gguf(
            &path,
            &[("a.weight", &[32], 0, 128), ("b.weight", &[32], 0, 128)],
        );
        GgufCheckpoint::open(&path).expect("the file as written opens");
        set_offset(&path, "b.weight", offset);
        let err = GgufCheckpoint::open(&path).expect_err("offset outside the file");
        assert!(matches!(err, GgufError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("`b.weight`"), "{err}");
        assert!(err.to_string().contains(needle), "{offset}: {err}");
    }
    // A shape that is not a whole number of blocks.
    let path = scratch("blocks.gguf");
    raw_gguf(&path, &[("a.weight", &[33], 2, 128)]);
    let err = GgufCheckpoint::open(&path).expect_err("partial block");
    assert!(
        err.to_string()
            .contains("not a whole number of Q4_0 blocks of 32"),
        "{err}"
    );
}

#[test]
fn other_architectures_are_refused_by_name() {
    let path = scratch("qwen2.gguf");
    let mut file = GgufFile::new().expect("gguf");
    file.insert_metadata("general.architecture", "qwen2")
        .expect("meta");
    file.insert_array(
        "token_embd.weight",
        &Array::zeros::<f32>(&[4, 4]).expect("zeros"),
    )
    .expect("tensor");
    file.save(&path).expect("save");
    let err = GgufCheckpoint::open(&path)
        .expect("open")
        .config()
        .expect_err("qwen2");
    assert!(
        err.to_string().contains("`qwen2` is not supported yet"),
        "{err}"
    );
}

/// GPT-2's byte-to-character table of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut bytes: Vec<u32> = (0x21..=0x7E)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut extra = 0;
    for b in 0..256 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bytes.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).expect("char");
    }
    table
}

/// A tokenizer-only GGUF: three control tokens, the 256 byte tokens and a few merges.
fn tokenizer_gguf(path: &Path, pre: &str, add_bos: bool, model: &str) -> Vec<String> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_chars().into_iter().map(String::from));
    let merges = ["h e", "l l", "he ll", "hell o", "2 0"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    let mut file = GgufFile::new().expect("gguf");
    file.insert_metadata("general.architecture", "llama")
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.model", model)
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.pre", pre)
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.tokens", tokens.clone())
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.merges", merges.map(String::from).to_vec())
        .expect("meta");
    file.insert_metadata(
        "tokenizer.ggml.token_type",
        Array::from_slice(&types, &[types.len() as i32]),
    )
    .expect("meta");
    file.insert_metadata("tokenizer.ggml.bos_token_id", Array::from_int(1))
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.eos_token_id", Array::from_int(2))
        .expect("meta");
    file.insert_metadata("tokenizer.ggml.add_bos_token", Array::from_bool(add_bos))
        .expect("meta");
    file.insert_metadata(
        "tokenizer.chat_template",
        "{% for m in messages %}{{ bos_token + m['role'] + '\n' + m['content'] + eos_token + '\n' }}{% endfor %}\
         {% if add_generation_prompt %}{{ bos_token + 'assistant\n' }}{% endif %}",
    )
    .expect("meta");
    file.insert_array(
        "token_embd.weight",
        &Array::zeros::<f32>(&[tokens.len() as i32, 4]).expect("zeros"),
    )
    .expect("tensor");
    file.save(path).expect("save");
    tokens
}

#[test]
fn tokenizer_from_metadata_splits_digits_and_keeps_control_tokens() {
    let path = scratch("tokenizer.gguf");
    let tokens = tokenizer_gguf(&path, "smollm", false, "gpt2");
    let id = |t: &str| tokens.iter().position(|x| x == t).expect("token") as u32;
    let tokenizer = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect("tokenizer");
    let ids = tokenizer
        .encode("hello 2024<|im_end|>", false)
        .expect("encode");
    // "2 0" is a merge, but the smollm pre-tokenizer splits every digit apart first.
    assert_eq!(
        ids,
        [id("hello"), id("Ġ"), id("2"), id("0"), id("2"), id("4"), 2]
    );
    assert_eq!(
        tokenizer.decode(&ids, false).expect("decode"),
        "hello 2024<|im_end|>"
    );
    assert_eq!(tokenizer.decode(&ids, true).expect("decode"), "hello 2024");
    assert_eq!(
        tokenizer
            .eos_token_ids()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [2]
    );
    // add_bos_token is false: nothing is added.
    assert_eq!(
        tokenizer.encode("hello", true).expect("encode"),
        [id("hello")]
    );

    let messages = [mlx_models::chat_template::ChatMessage::new("user", "hi")];
    let options = ChatOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let rendered = tokenizer
        .apply_chat_template(&messages, &options)
        .expect("render");
    assert_eq!(
        rendered,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );

    let path = scratch("tokenizer-bos.gguf");
    tokenizer_gguf(&path, "gpt2", true, "gpt2");
    let tokenizer = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect("tokenizer");
    // GPT-2's split keeps the digits together, so the merge applies; BOS comes first.
    assert_eq!(
        tokenizer.encode("2024", true).expect("encode"),
        [1, id("20"), id("2"), id("4")]
    );
}

#[test]
fn unsupported_tokenizers_are_named() {
    let path = scratch("tokenizer-pre.gguf");
    tokenizer_gguf(&path, "qwen2", false, "gpt2");
    let err = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect_err("qwen2 pre-tokenizer");
    assert!(
        err.to_string()
            .contains("pre-tokenizer `qwen2` is not supported yet"),
        "{err}"
    );
    let path = scratch("tokenizer-spm.gguf");
    tokenizer_gguf(&path, "default", false, "llama");
    let err = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect_err("sentencepiece");
    assert!(
        err.to_string()
            .contains("tokenizer model `llama` is not supported yet"),
        "{err}"
    );
}

/// The `mlx-models` binary of this build (`cargo build --workspace` builds it).
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("mlx-models");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

#[test]
fn rope_scaling_metadata_maps_or_is_refused() {
    let write = |name: &str, kind: &str| {
        let path = scratch(name);
        let mut file = GgufFile::new().expect("gguf");
        file.insert_metadata("general.architecture", "llama")
            .expect("meta");
        for (key, value) in [
            ("llama.embedding_length", 64),
            ("llama.block_count", 1),
            ("llama.feed_forward_length", 128),
            ("llama.attention.head_count", 4),
        ] {
            file.insert_metadata(key, Array::from_int(value))
                .expect("meta");
        }
        file.insert_metadata(
            "llama.attention.layer_norm_rms_epsilon",
            Array::from_f32(1e-5),
        )
        .expect("meta");
        file.insert_metadata("llama.rope.scaling.type", kind)
            .expect("meta");
        file.insert_metadata("llama.rope.scaling.factor", Array::from_f32(4.0))
            .expect("meta");
        file.insert_array(
            "token_embd.weight",
            &Array::zeros::<f32>(&[32, 64]).expect("zeros"),
        )
        .expect("tensor");
        file.save(&path).expect("save");
        GgufCheckpoint::open(&path).expect("open").config()
    };
    let config = write("rope-linear.gguf", "linear").expect("linear scaling");
    assert_eq!(
        config["rope_scaling"],
        json!({"type": "linear", "factor": 4.0})
    );
    // Without a vocabulary size or token list, the embedding's rows give it.
    assert_eq!(config["vocab_size"], json!(32));
    assert!(config.get("quantization").is_none());
    assert!(write("rope-none.gguf", "none")
        .expect("no scaling")
        .get("rope_scaling")
        .is_none());
    let err = write("rope-yarn.gguf", "yarn").expect_err("yarn");
    assert!(
        err.to_string()
            .contains("RoPE scaling `yarn` is not supported yet"),
        "{err}"
    );
}
