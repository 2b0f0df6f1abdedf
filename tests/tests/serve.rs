//! `mlx-models serve` end to end: a real server on a free loopback port, driven by the official
//! `openai` Python client (pinned in the reference environment) through
//! `tests/python/openai_client.py`, on SmolLM2-135M-Instruct (Q4_1 GGUF):
//!
//! - chat and text completions, streamed and not, equal to `mlx-models generate` on the same
//!   prompt (greedy); usage counts; stop strings cut and never streamed past; log-probabilities;
//!   a tool-call round trip (the model answers with a `<tool_call>`, the result goes back);
//! - 16 concurrent streaming clients x 4 requests: every answer complete and equal to its
//!   prompt's single-request answer, and the server's memory after a second round no larger
//!   than after the first (plus a margin);
//! - malformed requests (bad JSON, wrong types, `n > 1`, `max_tokens` 0, an unknown model, a
//!   prompt past the context, a wrong key, an oversized body) get 4xx in OpenAI's error shape;
//!   a client that disconnects mid-stream; a full queue answers 503 with Retry-After.
//!
//! Every test stops the server it starts.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlx_models_tests::cli::{binary, run, smollm2_gguf};
use mlx_models_tests::reference::{repo_root, require_python};

const KEY: &str = "test-key";

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .args(["serve", "-m"])
            .arg(model)
            .args([
                "--port",
                "0",
                "--api-key",
                KEY,
                "--served-model-name",
                "smollm2",
                "-q",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mlx-models serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server did not say where it listens");
        server.url = format!("http://{addr}");
        server
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Runs one check of the client script; returns its JSON summary.
    fn check(&self, check: &str, expected: &Path) -> serde_json::Value {
        let python = require_python();
        let out = Command::new(python)
            .arg(repo_root().join("tests/python/openai_client.py"))
            .args([check, &self.url, KEY])
            .arg(expected)
            .output()
            .expect("run the openai client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client check {check} failed:\n{}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
            .expect("the client's summary")
    }
}

/// What `mlx-models generate` gives for the prompts the client checks use.
fn expected(model: &Path, dir: &Path, max_tokens: usize) -> std::path::PathBuf {
    let gen = |args: &[&str]| -> String {
        let model = model.to_str().expect("utf-8 path");
        let n = max_tokens.to_string();
        let mut all = vec!["generate", "-m", model, "--max-tokens", &n, "-q"];
        all.extend_from_slice(args);
        let out = run(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.strip_suffix('\n').unwrap_or(&text).to_owned()
    };
    let chat_prompt = "What is the capital of France?";
    let completion_prompt = "The three primary colors are";
    let value = serde_json::json!({
        "model": "smollm2",
        "chat_prompt": chat_prompt,
        "completion_prompt": completion_prompt,
        "max_tokens": max_tokens,
        "chat": gen(&["-p", chat_prompt]),
        "completion": gen(&["-p", completion_prompt, "--no-chat-template"]),
    });
    let path = dir.join("expected.json");
    std::fs::write(&path, value.to_string()).expect("write expected.json");
    path
}

fn model() -> std::path::PathBuf {
    smollm2_gguf().unwrap_or_else(|e| panic!("SmolLM2 is needed: {e}"))
}

#[test]
fn the_openai_client_gets_what_generate_gives_streams_stops_logprobs_and_tool_calls() {
    let model = model();
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = expected(&model, dir.path(), 12);
    let server = Server::start(&model, &[]);
    let summary = server.check("api", &expected);
    assert_eq!(summary["tool_call"]["name"], "get_weather", "{summary}");
    let bad = server.check("bad", &expected);
    assert_eq!(bad["bad_requests"], "ok");
}

#[test]
fn sixteen_concurrent_clients_get_their_single_request_answers_in_bounded_memory() {
    let model = model();
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = expected(&model, dir.path(), 8);
    let server = Server::start(
        &model,
        &["--max-concurrency", "8", "--prompt-cache-bytes", "67108864"],
    );
    let started = Instant::now();
    let first = server.check("load", &expected);
    let after_first = server.rss_kb();
    let second = server.check("load", &expected);
    let after_second = server.rss_kb();
    assert_eq!(first["load"]["requests"], 64, "{first}");
    assert_eq!(second["load"]["requests"], 64, "{second}");
    // The prompt cache is bounded and MLX's buffers are given back: a second round of the
    // same load does not grow the server by more than a quarter.
    assert!(
        after_second < after_first + after_first / 4,
        "memory grew from {after_first} kB to {after_second} kB over a second round"
    );
    eprintln!(
        "load: {first} then {second} in {:.0?}; RSS {after_first} -> {after_second} kB",
        started.elapsed()
    );
}

#[test]
fn a_full_queue_answers_503_and_a_gone_client_frees_its_slot() {
    let model = model();
    let server = Server::start(&model, &["--max-concurrency", "1", "--max-queue", "0"]);
    let summary = server.check("overload", Path::new("-"));
    assert_eq!(summary["overload"], "ok");
}

#[test]
fn bad_flags_and_a_port_in_use_are_one_line_errors() {
    let model = model();
    let model = model.to_str().expect("utf-8 path");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    for (args, want) in [
        (
            vec!["serve", "-m", model, "--port", &port],
            "cannot listen on",
        ),
        (
            vec!["serve", "-m", model, "--host", "no such host!"],
            "--host",
        ),
        (
            vec!["serve", "-m", model, "--max-concurrency", "0"],
            "max-concurrency",
        ),
        (
            vec!["serve", "-m", "/nonexistent/model", "--port", "0"],
            "error",
        ),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
