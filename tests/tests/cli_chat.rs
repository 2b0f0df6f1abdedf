//! `mlx-models chat` on a real model (SmolLM2-135M-Instruct): the cache carries the
//! conversation, so a follow-up that only makes sense with the first turn is answered; the
//! end-of-turn token is not printed; `r` forgets the conversation; a checkpoint without a chat
//! template is refused with one error line.

use mlx_models_tests::cli::{run_with_input, smollm2_gguf};

/// The SmolLM2 GGUF; a test that cannot fetch it fails with the reason (it has not run).
fn smollm2() -> String {
    match smollm2_gguf() {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(reason) => {
            panic!("the SmolLM2 GGUF could not be fetched, so this test cannot run: {reason}")
        }
    }
}

fn chat(model: &str, input: &str) -> Vec<String> {
    let out = run_with_input(
        &[
            "chat",
            "--model",
            model,
            "--temp",
            "0",
            "--max-tokens",
            "40",
        ],
        Some(input),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_second_turn_sees_the_first() {
    let model = smollm2();
    let answers = chat(
        &model,
        "What is the capital of France?\nAnd of Germany?\nq\n",
    );
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].contains("Paris"), "{answers:?}");
    assert!(
        answers[1].contains("Berlin"),
        "the follow-up lost the conversation: {answers:?}"
    );
    assert!(
        answers.iter().all(|a| !a.contains("<|im_end|>")),
        "{answers:?}"
    );

    // After `r` the same follow-up has nothing to refer to.
    let reset = chat(
        &model,
        "What is the capital of France?\nr\nAnd of Germany?\n",
    );
    assert_eq!(reset.len(), 2, "{reset:?}");
    assert!(
        !reset[1].contains("Berlin"),
        "the reset kept the conversation: {reset:?}"
    );
}

#[test]
fn a_checkpoint_without_a_chat_template_is_refused() {
    let dir = mlx_models_tests::parity::fixtures("llama").join("untied");
    let out = run_with_input(
        &["chat", "--model", dir.to_str().expect("utf-8 path")],
        Some("hello\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") || stderr.contains("\nerror: "),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// With the model as its own draft (`--draft-model`), the answers are the same, turn after
/// turn: the speculative rounds rewind both caches to what was accepted.
#[test]
fn a_draft_model_keeps_the_answers() {
    let model = smollm2();
    let input = "What is the capital of France?\nAnd of Germany?\nq\n";
    let plain = chat(&model, input);
    let out = run_with_input(
        &[
            "chat",
            "--model",
            &model,
            "--temp",
            "0",
            "--max-tokens",
            "40",
            "--draft-model",
            &model,
            "--num-draft-tokens",
            "4",
        ],
        Some(input),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drafted: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(drafted, plain);
}

/// `chat --prompt-cache-file`: the first message continues the cached one, as
/// `generate --prompt-cache-file` does, and `r` goes back to the cache.
#[test]
fn a_prompt_cache_starts_the_conversation() {
    let model = smollm2();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("prefix.safetensors");
    let file = file.to_str().expect("path");
    let made = run_with_input(
        &[
            "cache-prompt",
            "--model",
            &model,
            "--prompt",
            "What is the capital of France",
            "--out",
            file,
        ],
        None,
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let generated = run_with_input(
        &[
            "generate",
            "--model",
            &model,
            "--prompt-cache-file",
            file,
            "--prompt",
            "?",
            "--temp",
            "0",
            "--max-tokens",
            "40",
            "--quiet",
        ],
        None,
    );
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let answer = String::from_utf8_lossy(&generated.stdout)
        .trim()
        .to_string();
    assert!(answer.contains("Paris"), "{answer}");
    let out = run_with_input(
        &[
            "chat",
            "--model",
            &model,
            "--prompt-cache-file",
            file,
            "--temp",
            "0",
            "--max-tokens",
            "40",
        ],
        Some("?\nr\n?\nq\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let turns: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(turns, vec![answer.clone(), answer], "{turns:?}");
}

/// `u` takes back the last exchange: the conversation goes on as if it had never been.
#[test]
fn u_takes_back_the_last_exchange() {
    let model = smollm2();
    let undone = chat(
        &model,
        "What is the capital of France?\nAnd of Germany?\nu\nAnd of Italy?\nq\n",
    );
    let direct = chat(&model, "What is the capital of France?\nAnd of Italy?\nq\n");
    assert_eq!(undone.len(), 3, "{undone:?}");
    assert_eq!(direct.len(), 2, "{direct:?}");
    assert_eq!(undone[0], direct[0], "the first answer");
    assert_eq!(
        undone[2], direct[1],
        "the answer after `u`: {undone:?} vs {direct:?}"
    );
    assert!(undone[1].contains("Berlin"), "{undone:?}");

    // Back to the start, and past it: the first message is rendered as the first again.
    let restarted = chat(
        &model,
        "And of Germany?\nu\nu\nWhat is the capital of France?\nq\n",
    );
    assert_eq!(restarted.len(), 2, "{restarted:?}");
    assert_eq!(
        restarted[1], direct[0],
        "after taking back the only exchange"
    );
}
