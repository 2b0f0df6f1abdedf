//! Generation features of the CLI against the reference and on a real model: the quantized
//! key/value cache (`--kv-bits`), prompt-cache files in both directions (`cache-prompt`,
//! `--prompt-cache-file`), stop strings across token boundaries, extra end-of-sequence
//! tokens, prompts from standard input and chat-template variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mlx_models_tests::cli::{binary, run, run_with_input, smollm2_gguf};
use mlx_models_tests::reference::{run_python, run_script};
use serde_json::Value;

/// The reference's runs (`scripts/reference/generation.py`) and its folder.
fn reference() -> (PathBuf, Value) {
    let dir = run_script("scripts/reference/generation.py");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    (dir, serde_json::from_str(&text).expect("json"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|t| t.as_u64().expect("an id") as u32)
        .collect()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// Runs the CLI in `dir` (for checkpoints named relative to it, as a prompt cache records).
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mlx-models")
}

#[test]
fn quantized_kv_cache_generation_equals_the_reference() {
    let (dir, r) = reference();
    let model = dir.join("model");
    let model = model.to_str().expect("path");
    let prompt = csv(&ids(&r["prompt"]));
    let steps = r["steps"].to_string();
    let base = [
        "generate",
        "--model",
        model,
        "--prompt-tokens",
        &prompt,
        "--max-tokens",
        &steps,
        "--format",
        "json",
    ];
    let plain = json_out(&run(&base));
    assert_eq!(ids(&plain["tokens"]), ids(&r["plain"]));
    let mut differs = 0;
    for case in r["kv"].as_array().expect("kv cases") {
        let (bits, group, start) = (
            case["bits"].to_string(),
            case["group_size"].to_string(),
            case["start"].to_string(),
        );
        let mut args = base.to_vec();
        args.extend([
            "--kv-bits",
            &bits,
            "--kv-group-size",
            &group,
            "--quantized-kv-start",
            &start,
        ]);
        let out = json_out(&run(&args));
        let want = ids(&case["tokens"]);
        assert_eq!(
            ids(&out["tokens"]),
            want,
            "--kv-bits {bits} --kv-group-size {group} --quantized-kv-start {start}"
        );
        differs += usize::from(want != ids(&r["plain"]));
        // The cache at the end is quantized: smaller than the float32 one.
        assert!(
            out["cache_bytes"].as_u64() < plain["cache_bytes"].as_u64(),
            "{bits} bits: {} vs {}",
            out["cache_bytes"],
            plain["cache_bytes"]
        );
    }
    // The cases would not tell a quantized cache from a plain one if all matched plain.
    assert!(differs >= 1, "every quantized run equals the plain one");

    for (flags, needle) in [
        (
            ["--kv-bits", "7", "--kv-group-size", "64"],
            "--kv-bits / --kv-group-size: kv bits must be 2, 3, 4, 5, 6 or 8, not 7",
        ),
        (
            ["--kv-bits", "4", "--kv-group-size", "48"],
            "kv group size must be 32, 64 or 128, not 48",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(flags);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn prompt_cache_files_cross_load_with_the_reference() {
    let (dir, r) = reference();
    let prompt = ids(&r["prompt"]);
    let split = r["split"].as_u64().expect("split") as usize;
    let steps = r["steps"].to_string();
    let want = ids(&r["prompt_cache"]["tokens"]);
    let rest = csv(&prompt[split..]);

    // The reference's file, continued by us (the model named as the file records it).
    let from_reference = json_out(&run_in(
        &dir,
        &[
            "generate",
            "--model",
            "model",
            "--prompt-cache-file",
            "prompt_cache.safetensors",
            "--prompt-tokens",
            &rest,
            "--max-tokens",
            &steps,
            "--format",
            "json",
        ],
    ));
    assert_eq!(ids(&from_reference["tokens"]), want);

    // Our file, continued by the reference and by us.
    let scratch = tempfile::tempdir().expect("temp dir");
    let ours = scratch.path().join("ours.safetensors");
    let model = dir.join("model");
    let model = model.to_str().expect("path");
    let made = run(&[
        "cache-prompt",
        "--model",
        model,
        "--prompt-tokens",
        &csv(&prompt[..split]),
        "--out",
        ours.to_str().expect("path"),
        "--prefill-step-size",
        "3",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let code = r#"
import json, sys
import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import load_prompt_cache
from mlx_lm.utils import load_model
cache, meta = load_prompt_cache(sys.argv[1], return_metadata=True)
from pathlib import Path
model, _ = load_model(Path(sys.argv[2]))
rest = mx.array(json.loads(sys.argv[3]), dtype=mx.uint32)
tokens = [int(t) for t, _ in generate_step(rest, model, max_tokens=int(sys.argv[4]), prompt_cache=cache)]
print(json.dumps({"tokens": tokens, "meta": meta}))
"#;
    let rest_json = serde_json::to_string(&prompt[split..]).expect("json");
    let out = run_python(
        code,
        &[
            ours.as_os_str(),
            dir.join("model").as_os_str(),
            std::ffi::OsStr::new(&rest_json),
            std::ffi::OsStr::new(&steps),
        ],
    );
    let by_reference: Value =
        serde_json::from_str(out.trim().lines().last().expect("a line")).expect("json");
    assert_eq!(ids(&by_reference["tokens"]), want);
    assert_eq!(by_reference["meta"]["model"].as_str(), Some(model));
    assert!(by_reference["meta"]["tokenizer_config"].is_string());
    let by_us = json_out(&run(&[
        "generate",
        "--model",
        model,
        "--prompt-cache-file",
        ours.to_str().expect("path"),
        "--prompt-tokens",
        &rest,
        "--max-tokens",
        &steps,
        "--format",
        "json",
    ]));
    assert_eq!(ids(&by_us["tokens"]), want);

    // Another model than the file's, a missing file, and a corrupt one: one line each.
    let other = scratch.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir.join("model").join(f), other.join(f)).expect("copy");
    }
    let junk = scratch.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a cache").expect("write");
    for (model, file, needle) in [
        (
            other.to_str().expect("path"),
            ours.to_str().expect("path"),
            "it was made with the model",
        ),
        (model, "/nonexistent/cache.safetensors", "no such file"),
        (model, junk.to_str().expect("path"), "--prompt-cache-file"),
    ] {
        let out = run(&[
            "generate",
            "--model",
            model,
            "--prompt-cache-file",
            file,
            "--prompt-tokens",
            &rest,
            "--max-tokens",
            "2",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// The SmolLM2 GGUF; a test that cannot fetch it fails with the reason (it has not run).
fn smollm2() -> String {
    match smollm2_gguf() {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(reason) => {
            panic!("the SmolLM2 GGUF could not be fetched, so this test cannot run: {reason}")
        }
    }
}

fn smollm2_json(model: &str, extra: &[&str], input: Option<&str>) -> Value {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--max-tokens",
        "24",
        "--format",
        "json",
        "--quiet",
    ];
    if input.is_none() {
        args.extend(["--prompt", "Write a short poem about the sea."]);
    }
    args.extend(extra);
    json_out(&run_with_input(&args, input))
}

#[test]
fn stop_strings_extra_eos_tokens_and_stdin_prompts() {
    let model = smollm2();
    let plain = smollm2_json(&model, &[], None);
    let tokens = ids(&plain["tokens"]);
    let text = plain["text"].as_str().expect("text").to_string();
    assert_eq!(plain["finish_reason"], "length");
    assert_eq!(tokens.len(), 24);

    // The same prompt from standard input.
    let stdin = smollm2_json(
        &model,
        &["--prompt", "-"],
        Some("Write a short poem about the sea."),
    );
    assert_eq!(stdin["tokens"], plain["tokens"]);

    // A stop string that starts inside one token and ends inside a later one.
    let words: Vec<(usize, char)> = text.char_indices().collect();
    let mid = words.len() / 2;
    let stop: String = words[mid..mid + 4].iter().map(|(_, c)| c).collect();
    let before = &text[..text.find(&stop).expect("the stop string is in the text")];
    let stopped = smollm2_json(&model, &["--stop", &stop], None);
    assert_eq!(stopped["text"].as_str(), Some(before), "stop {stop:?}");
    assert_eq!(stopped["finish_reason"], "stop");
    assert!(ids(&stopped["tokens"]).len() < tokens.len());
    // In text mode nothing of it is printed.
    let out = run(&[
        "generate",
        "--model",
        &model,
        "--max-tokens",
        "24",
        "--quiet",
        "--prompt",
        "Write a short poem about the sea.",
        "--stop",
        &stop,
        "--stop",
        "unlikely-stop-string",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.trim_end_matches('\n'), before);

    // An extra end-of-sequence token, by id: generation ends at its first occurrence.
    let eos = tokens[6];
    let first = tokens.iter().position(|&t| t == eos).expect("present");
    let ended = smollm2_json(&model, &["--extra-eos-token", &eos.to_string()], None);
    assert_eq!(ids(&ended["tokens"]), tokens[..=first].to_vec());
    assert_eq!(ended["finish_reason"], "stop");

    for (flags, needle) in [
        (
            vec!["--extra-eos-token", "no-such-token-text"],
            "is not a token of this tokenizer",
        ),
        (
            vec!["--stop", ""],
            "--stop: a stop string must not be empty",
        ),
        (
            vec!["--chat-template-config", "[1, 2]"],
            "expected a JSON object",
        ),
        (vec!["--chat-template-config", "{oops"], "not JSON"),
    ] {
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
        ];
        args.extend(flags.iter().copied());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// A word-level tokenizer whose words are ids below 256 and a template that writes `T` or `F`
/// from `enable_thinking`, on the reference's llama fixture: the prompt ids show what the
/// template saw.
#[test]
fn chat_template_config_reaches_the_template() {
    let src = mlx_models_tests::parity::fixtures("llama").join("untied");
    let dir = tempfile::tempdir().expect("temp dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "T": 1, "F": 2, "hi": 3, "x": 4},
                  "unk_token": "<unk>"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).expect("write");
    let config = serde_json::json!({
        "chat_template": "{% if enable_thinking %}T{% else %}F{% endif %} {{ messages[-1]['content'] }} {{ level | default('x') }}"
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).expect("write");
    let model = dir.path().to_str().expect("path");
    let prompt_of = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--max-tokens",
            "1",
            "--format",
            "json",
        ];
        args.extend(extra);
        ids(&json_out(&run(&args))["prompt_tokens"])
    };
    assert_eq!(prompt_of(&[]), vec![2, 3, 4]);
    assert_eq!(
        prompt_of(&[
            "--chat-template-config",
            r#"{"enable_thinking": true, "level": "hi"}"#
        ]),
        vec![1, 3, 3]
    );
}

/// `--prompts-file`: prompts of different lengths (and their own `max_tokens`) as one
/// left-padded batch, each output the tokens of that prompt generated alone, in input order.
#[test]
fn a_prompts_file_runs_as_one_batch_equal_to_single_runs() {
    let (dir, _) = reference();
    let model = dir.join("model");
    let model = model.to_str().expect("path");
    let prompts: [(&[u32], Option<usize>); 4] = [
        (&[1, 17, 42, 99, 3, 250, 8, 64, 128, 77, 5, 200], None),
        (&[9, 8], Some(5)),
        (&[100, 101, 102, 103, 104], None),
        (&[7], Some(1)),
    ];
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("prompts.jsonl");
    let mut lines = String::new();
    for (tokens, max) in &prompts {
        let mut line = serde_json::json!({ "prompt_tokens": tokens });
        if let Some(m) = max {
            line["max_tokens"] = (*m).into();
        }
        lines.push_str(&format!("{line}\n\n"));
    }
    std::fs::write(&file, lines).expect("write");
    let out = run(&[
        "generate",
        "--model",
        model,
        "--prompts-file",
        file.to_str().expect("path"),
        "--max-tokens",
        "12",
        "--prefill-step-size",
        "4",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Generation: ") && stderr.contains("tokens-per-sec"),
        "{stderr}"
    );
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(results.len(), prompts.len());
    for (i, ((tokens, max), result)) in prompts.iter().zip(&results).enumerate() {
        assert_eq!(result["index"], i);
        assert_eq!(ids(&result["prompt_tokens"]), tokens.to_vec());
        let steps = max.unwrap_or(12).to_string();
        let alone = json_out(&run(&[
            "generate",
            "--model",
            model,
            "--prompt-tokens",
            &csv(tokens),
            "--max-tokens",
            &steps,
            "--format",
            "json",
        ]));
        assert_eq!(result["tokens"], alone["tokens"], "prompt {i}");
        assert_eq!(
            result["finish_reason"], alone["finish_reason"],
            "prompt {i}"
        );
    }

    for (body, needle) in [
        (
            "{\"prompt_tokens\": [1, 2]}\n{\"prompt_tokens\": []}\n",
            "line 2: `prompt_tokens` is empty",
        ),
        (
            "{\"prompt_tokens\": [1], \"prompt\": \"x\"}\n",
            "line 1: give `prompt` or `prompt_tokens`, not both",
        ),
        (
            "{\"prompt_tokens\": [1], \"max_tokens\": 0}\n",
            "line 1: `max_tokens` must be a positive integer",
        ),
        (
            "{\"prompt_tokens\": [1, -3]}\n",
            "line 1: `prompt_tokens` must be token ids",
        ),
        (
            "{\"prompt_tokens\": [1], \"temperature\": 1}\n",
            "line 1: unknown key `temperature`",
        ),
        ("not json\n", "line 1: expected ident"),
        (
            "{\"prompt_tokens\": [1, 99999]}\n",
            "token 99999 is outside the vocabulary",
        ),
        ("\n\n", "no prompts"),
    ] {
        std::fs::write(&file, body).expect("write");
        let out = run(&[
            "generate",
            "--model",
            model,
            "--prompts-file",
            file.to_str().expect("path"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Text prompts through the chat template and `--stop`, batched on a real model: each row's
/// tokens and text are those of the prompt generated alone.
#[test]
fn text_prompts_batch_like_single_runs_on_a_real_model() {
    let model = smollm2();
    let texts = [
        "What is the capital of France?",
        "Name three colours.",
        "Count to five.",
    ];
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("prompts.jsonl");
    let body: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "prompt": t })))
        .collect();
    std::fs::write(&file, body).expect("write");
    let out = run(&[
        "generate",
        "--model",
        &model,
        "--prompts-file",
        file.to_str().expect("path"),
        "--max-tokens",
        "16",
        "--format",
        "json",
        "--quiet",
        "--stop",
        "\n\n",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(results.len(), texts.len());
    for (text, result) in texts.iter().zip(&results) {
        let alone = json_out(&run(&[
            "generate",
            "--model",
            &model,
            "--prompt",
            text,
            "--max-tokens",
            "16",
            "--format",
            "json",
            "--quiet",
            "--stop",
            "\n\n",
        ]));
        assert_eq!(result["prompt_tokens"], alone["prompt_tokens"], "{text}");
        assert_eq!(result["text"], alone["text"], "{text}");
        assert_eq!(result["finish_reason"], alone["finish_reason"], "{text}");
    }
}

/// `--draft-model`: greedy output is the target's own (the reference's plain greedy tokens)
/// for a llama pair, a qwen3 pair and a 4-bit target; the same tokens come from the draft as
/// in the reference's `speculative_generate_step`, and all of them when the draft is the
/// target itself.
#[test]
fn speculative_decoding_keeps_the_targets_greedy_output() {
    let (dir, r) = reference();
    let prompt = csv(&ids(&r["prompt"]));
    let steps = r["steps"].to_string();
    for run_ in r["speculative"].as_array().expect("runs") {
        let target = dir.join(run_["target"].as_str().expect("target"));
        let draft = dir.join(run_["draft"].as_str().expect("draft"));
        let what = format!("{} with {}", run_["target"], run_["draft"]);
        let out = json_out(&run(&[
            "generate",
            "--model",
            target.to_str().expect("path"),
            "--draft-model",
            draft.to_str().expect("path"),
            "--num-draft-tokens",
            "3",
            "--prompt-tokens",
            &prompt,
            "--max-tokens",
            &steps,
            "--format",
            "json",
        ]));
        assert_eq!(ids(&out["tokens"]), ids(&run_["plain"]), "{what}");
        assert_eq!(
            out["speculative"]["from_draft"], run_["from_draft"],
            "{what}"
        );
        let accepted = run_["from_draft"]
            .as_array()
            .expect("flags")
            .iter()
            .filter(|f| f.as_bool() == Some(true))
            .count();
        assert_eq!(
            out["speculative"]["accepted"].as_u64(),
            Some(accepted as u64),
            "{what}"
        );
        if run_["target"] == run_["draft"] {
            assert_eq!(
                out["speculative"]["acceptance_rate"].as_f64(),
                Some(1.0),
                "{what}"
            );
            assert!(accepted >= 18, "{what}: {accepted}");
        }
    }

    // A draft of another vocabulary, logits processors, and zero draft tokens are refused.
    let model = dir.join("model");
    let model = model.to_str().expect("path");
    let gguf = smollm2();
    for (extra, needle) in [
        (
            vec!["--draft-model", gguf.as_str()],
            "--draft-model: its vocabulary",
        ),
        (
            vec!["--draft-model", model, "--repetition-penalty", "1.2"],
            "speculative decoding does not apply logits processors",
        ),
        (
            vec!["--draft-model", model, "--num-draft-tokens", "0"],
            "--num-draft-tokens",
        ),
    ] {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt-tokens",
            "1,2,3",
            "--max-tokens",
            "4",
        ];
        args.extend(extra.iter().copied());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
