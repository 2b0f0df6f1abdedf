//! The `mlx-models` command: `generate --format json` reproduces the reference's greedy
//! tokens, and every bad input ends with an error and exit status 1, never a panic or a hang.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mlx_models_tests::cli::run;

use mlx_models_tests::parity;
use mlx_rs::Array;

fn untied_fixture() -> PathBuf {
    parity::fixtures("llama").join("untied")
}

/// A copy of the untied llama checkpoint in a fresh folder, to break.
fn scratch_copy(name: &str) -> PathBuf {
    let src = untied_fixture();
    let dir = std::env::temp_dir().join(format!("mlx-models-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy fixture");
    }
    dir
}

/// Runs `generate` on `dir` and asserts a clean failure whose message contains `needle`.
#[track_caller]
fn assert_fails(dir: &Path, needle: &str) -> String {
    generate_fails(dir, &[needle], Duration::from_secs(120))
}

/// Runs `generate` on `dir` with a time limit and asserts a clean failure: exit status 1, no
/// panic, one `error: ` line that contains every needle. Returns standard error.
#[track_caller]
fn generate_fails(dir: &Path, needles: &[&str], limit: Duration) -> String {
    let out = mlx_models_tests::cli::run_with(
        &[
            "generate",
            "--model",
            dir.to_str().expect("utf-8 path"),
            "--prompt-tokens",
            "1,2,3",
            "--max-tokens",
            "2",
        ],
        None,
        limit,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, got {:?}; stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
    stderr
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
    edit(&mut v);
    std::fs::write(&path, v.to_string()).expect("write config");
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Array>)) {
    let path = dir.join("model.safetensors");
    let mut w = Array::load_safetensors(&path).expect("load");
    edit(&mut w);
    std::fs::remove_file(&path).expect("remove");
    Array::save_safetensors(w, None, &path).expect("save");
}

#[test]
fn generate_json_reproduces_the_reference_greedy_tokens() {
    let dir = untied_fixture();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("meta"))
            .expect("json");
    let prompt: Vec<String> = meta["prompt"]
        .as_array()
        .expect("prompt")
        .iter()
        .map(|v| v.to_string())
        .collect();
    let want = meta["tokens"].as_array().expect("tokens").len();
    let out = run(&[
        "generate",
        "--model",
        dir.to_str().expect("path"),
        "--prompt-tokens",
        &prompt.join(","),
        "--max-tokens",
        &want.to_string(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["tokens"], meta["tokens"]);
    assert_eq!(
        v["prompt_tokens"].as_array().expect("prompt_tokens").len(),
        prompt.len()
    );
    let logprobs = v["logprobs"].as_array().expect("logprobs");
    assert_eq!(logprobs.len(), want);
    assert!(
        logprobs
            .iter()
            .all(|l| l.as_f64().is_some_and(|x| x <= 0.0)),
        "logprobs: {logprobs:?}"
    );
    assert_eq!(v["stats"]["generation_tokens"].as_u64(), Some(want as u64));
    assert_eq!(
        v["stats"]["prompt_tokens"].as_u64(),
        Some(prompt.len() as u64)
    );
}

#[test]
fn list_names_llama_and_its_aliases() {
    let out = run(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("llama") && l.contains("mistral")),
        "{text}"
    );
}

#[test]
fn missing_folder_is_an_error() {
    assert_fails(
        Path::new("/nonexistent/checkpoint"),
        "neither an existing folder",
    );
}

#[test]
fn malformed_config_is_an_error() {
    let dir = scratch_copy("malformed");
    std::fs::write(
        dir.join("config.json"),
        "{\"model_type\": \"llama\", \"hidden_size\": ",
    )
    .expect("write");
    assert_fails(&dir, "config.json");
}

#[test]
fn hostile_config_values_are_errors() {
    let dir = scratch_copy("negative");
    edit_config(&dir, |v| v["hidden_size"] = serde_json::json!(-64));
    assert_fails(&dir, "hidden_size");
    let dir = scratch_copy("string");
    edit_config(&dir, |v| {
        v["num_attention_heads"] = serde_json::json!("abc")
    });
    assert_fails(&dir, "num_attention_heads");
    let dir = scratch_copy("huge");
    edit_config(&dir, |v| v["num_hidden_layers"] = serde_json::json!(1e300));
    assert_fails(&dir, "num_hidden_layers");
}

#[test]
fn unknown_model_type_lists_the_supported_ones_and_the_closest() {
    let dir = scratch_copy("unknown");
    edit_config(&dir, |v| v["model_type"] = serde_json::json!("lama"));
    let err = assert_fails(&dir, "not supported");
    assert!(err.contains("did you mean `llama`"), "{err}");
    assert!(
        err.contains("supported: ") && err.contains("mistral"),
        "{err}"
    );
}

#[test]
fn more_layers_than_weights_is_refused_before_building() {
    let dir = scratch_copy("layers");
    edit_config(&dir, |v| v["num_hidden_layers"] = serde_json::json!(3));
    assert_fails(
        &dir,
        "`num_hidden_layers` is 3, but the checkpoint holds 2 layers (indices 0 to 1)",
    );
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_reported_together() {
    let dir = scratch_copy("tensors");
    rewrite_weights(&dir, |w| {
        w.remove("model.norm.weight");
        let q = w
            .remove("model.layers.0.self_attn.q_proj.weight")
            .expect("q_proj");
        w.insert("model.layers.0.self_attn.q_prj.weight".into(), q);
        w.insert(
            "model.layers.1.mlp.up_proj.weight".into(),
            Array::from_slice(&[0.0f32; 6], &[2, 3]),
        );
    });
    let err = assert_fails(&dir, "missing: `model.norm.weight`");
    assert!(err.contains("unexpected: `model.layers.0.self_attn.q_prj.weight` (did you mean `model.layers.0.self_attn.q_proj.weight`?)"), "{err}");
    assert!(
        err.contains("shape: `model.layers.1.mlp.up_proj.weight`"),
        "{err}"
    );
}

#[test]
fn truncated_and_lying_safetensors_are_errors() {
    let dir = scratch_copy("truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    assert_fails(&dir, "model.safetensors");

    let dir = scratch_copy("lying");
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");
    assert_fails(&dir, "model.safetensors");
}

#[test]
fn pickle_only_checkpoints_are_refused() {
    let dir = scratch_copy("pickle");
    std::fs::remove_file(dir.join("model.safetensors")).expect("remove");
    // Would run code if unpickled; it must never be opened.
    std::fs::write(
        dir.join("pytorch_model.bin"),
        b"\x80\x04cos\nsystem\n(S'exit 3'\ntR.",
    )
    .expect("write");
    assert_fails(&dir, "pytorch_model.bin");
}

#[test]
fn prompt_token_outside_the_vocabulary_is_an_error() {
    let out = run(&[
        "generate",
        "--model",
        untied_fixture().to_str().expect("path"),
        "--prompt-tokens",
        "1,4096",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the vocabulary"));
}

/// Every hostile config value below is refused with an error naming its key, before any
/// model is built (each run has a time limit of 30 s; the layer count used to take minutes and
/// all memory).
#[track_caller]
fn assert_config_refused(name: &str, edit: impl FnOnce(&mut serde_json::Value), needles: &[&str]) {
    let dir = scratch_copy(name);
    edit_config(&dir, edit);
    let stderr = generate_fails(&dir, needles, Duration::from_secs(30));
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{name}: not one line: {stderr}"
    );
}

#[test]
fn an_absurd_layer_count_is_refused_before_building() {
    assert_config_refused(
        "layers",
        |c| c["num_hidden_layers"] = serde_json::json!(1_000_000_000u64),
        &["`num_hidden_layers` is 1000000000", "holds 2 layers"],
    );
}

#[test]
fn sizes_beyond_mlx_dimensions_are_refused_with_their_key() {
    assert_config_refused(
        "vocab",
        |c| c["vocab_size"] = serde_json::json!(1u64 << 40),
        &["`vocab_size`", "at most 2147483647", "1099511627776"],
    );
    assert_config_refused(
        "hidden",
        |c| c["hidden_size"] = serde_json::json!(1u64 << 31),
        &["`hidden_size`", "at most 2147483647"],
    );
    // Each factor fits, their product does not.
    assert_config_refused(
        "head-dim",
        |c| c["head_dim"] = serde_json::json!(1u64 << 30),
        &["attention projections", "exceed MLX's size limit"],
    );
}

#[test]
fn non_finite_and_negative_floats_are_refused_with_their_key() {
    assert_config_refused(
        "rope-nan",
        |c| {
            c["rope_scaling"] =
                serde_json::json!({"type": "linear", "factor": {"__float__": "NaN"}})
        },
        &["`rope_scaling`", "`factor`", "finite"],
    );
    assert_config_refused(
        "rope-negative",
        |c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": -2.0}),
        &[
            "`rope_scaling`",
            "`factor` must be a positive number, got -2",
        ],
    );
    assert_config_refused(
        "theta-inf",
        |c| c["rope_theta"] = serde_json::json!({"__float__": "Infinity"}),
        &["`rope_theta`", "finite"],
    );
    assert_config_refused(
        "theta-negative",
        |c| c["rope_theta"] = serde_json::json!(-10000.0),
        &["`rope_theta` must be a positive number"],
    );
    assert_config_refused(
        "eps-overflow",
        |c| c["rms_norm_eps"] = serde_json::json!(1e300),
        &["`rms_norm_eps`", "finite", "1e+300"],
    );
}

#[test]
fn bad_sampling_flags_are_refused_before_the_model_loads() {
    // The model does not exist: the flag is checked first.
    for (flag, value, needle) in [
        ("--top-p", "2.5", "--top-p: must be in [0, 1], got 2.5"),
        ("--top-p", "nan", "--top-p: must be in [0, 1], got NaN"),
        ("--min-p=-1", "", "--min-p: must be in [0, 1]"),
        ("--temp", "inf", "--temp: must be a number >= 0"),
        ("--repetition-penalty=-1", "", "--repetition-penalty"),
        ("--max-tokens", "0", "--max-tokens: must be at least 1"),
    ] {
        let mut args = vec![
            "generate",
            "--model",
            "/nonexistent/checkpoint",
            "--prompt-tokens",
            "1",
            flag,
        ];
        if !value.is_empty() {
            args.push(value);
        }
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{flag} {value}: `{needle}` not in {stderr}"
        );
        assert!(!stderr.contains("nonexistent"), "loaded first: {stderr}");
    }
}

#[test]
fn a_likely_typo_in_the_config_is_a_warning_of_generate() {
    let dir = scratch_copy("typo");
    // A key within two edits of a field the config lacks (here one with a default).
    edit_config(&dir, |c| {
        c.as_object_mut()
            .expect("object")
            .remove("tie_word_embeddings");
        c["tie_word_embedding"] = serde_json::json!(false);
    });
    let out = run(&[
        "generate",
        "--model",
        dir.to_str().expect("utf-8 path"),
        "--prompt-tokens",
        "1,2,3",
        "--max-tokens",
        "2",
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: config.json: unknown key `tie_word_embedding` is ignored; did you mean `tie_word_embeddings`?"
        ),
        "{stderr}"
    );
}

#[test]
fn inspect_reads_the_headers_and_checks_the_config() {
    // The tensor data is overwritten with garbage past the header: inspect never reads it.
    let dir = scratch_copy("inspect");
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    for b in &mut bytes[header..] {
        *b = 0xff; // NaN in every float
    }
    std::fs::write(&path, &bytes).expect("write");
    let out = run(&["inspect", "--model", dir.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("model type:   llama"), "{stdout}");
    assert!(stdout.contains("layers:       2"), "{stdout}");
    assert!(stdout.contains("parameters:"), "{stdout}");

    edit_config(&dir, |c| {
        c["num_hidden_layers"] = serde_json::json!(1_000_000_000u64)
    });
    let out = run(&["inspect", "--model", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`num_hidden_layers` is 1000000000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bad flags and values are one `error:` line each: ours (a value out of range, exit 1) and
/// clap's (an unknown flag, a value that is not a number, exit 2), with no usage block.
#[test]
fn bad_flags_are_one_line() {
    let model = untied_fixture();
    let model = model.to_str().expect("path");
    for (flags, code, needle) in [
        (
            &["--temp", "-1"][..],
            1,
            "error: --temp: must be a number >= 0, got -1",
        ),
        (
            &["--top-p", "nan"][..],
            1,
            "error: --top-p: must be in [0, 1], got NaN",
        ),
        (
            &["--max-tokens", "-5"][..],
            2,
            "error: invalid value '-5' for '--max-tokens",
        ),
        (
            &["--bogus"][..],
            2,
            "error: unexpected argument '--bogus' found (see --help)",
        ),
    ] {
        let mut args = vec!["generate", "--model", model, "--prompt-tokens", "1,2"];
        args.extend_from_slice(flags);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.starts_with(needle), "{flags:?}: {stderr}");
    }
}
