//! Processes that stop generating at an end-of-sequence token exit promptly: the command, a
//! program on the library API, and a program on mlx-rs alone, each run back to back as a
//! child with a time limit on a float32 model made here, large enough that OpenBLAS runs its
//! products on its worker threads. Before the fix, about one run in seven of the command hung
//! in OpenBLAS's exit-time thread shutdown (`scripts/stress-exit.sh` measures it at length).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use mlx_models_tests::cli::{example, run_program};
use mlx_models_tests::exit_model::{self, ExitModel, Sizes};

/// Runs per case: each hung with a probability of about 0.15 before the fix, so twenty runs
/// all pass by chance with a probability of about 4%.
const RUNS: usize = 20;
const LIMIT: Duration = Duration::from_secs(60);

fn model() -> &'static ExitModel {
    static MODEL: OnceLock<ExitModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mlx-models-exit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        exit_model::write(&dir, Sizes::DEFAULT).expect("write the float32 test model")
    })
}

fn tokens_of(stdout: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("token id"))
        .collect()
}

fn expected() -> Vec<u64> {
    model().tokens.iter().map(|&t| u64::from(t)).collect()
}

/// Runs `program ARGS` back to back [`RUNS`] times, each with the time limit; every run must
/// exit with success, and `check` sees each one's standard output.
fn runs(program: &std::path::Path, args: &[&str], check: impl Fn(usize, &[u8])) {
    for run in 0..RUNS {
        let out = run_program(program, args, None, LIMIT);
        assert!(
            out.status.success(),
            "run {run}: {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        check(run, &out.stdout);
    }
}

#[test]
fn the_model_stops_at_its_end_token_before_the_limit() {
    let m = model();
    assert!(m.tokens.len() >= 4 && m.tokens.len() < 64, "{:?}", m.tokens);
    assert_eq!(m.tokens.last(), Some(&m.eos));
}

#[test]
fn the_command_exits_after_stopping_at_the_end_token() {
    let dir = model().dir.to_str().expect("utf-8 path").to_string();
    let args = ["generate", "--model", &dir, "--prompt-tokens", "1,2,3,4"];
    let args = [&args[..], &["--max-tokens", "64", "--format", "json"]].concat();
    runs(&mlx_models_tests::cli::binary(), &args, |run, stdout| {
        assert_eq!(tokens_of(stdout), expected(), "run {run}");
    });
}

#[test]
fn a_program_on_the_library_exits_without_the_exit_drain() {
    // Only the token stream's own guarantee (no work in flight once it ends) is left.
    let dir = model().dir.to_str().expect("utf-8 path").to_string();
    let program: PathBuf = example("exit_check");
    runs(
        &program,
        &["stream", &dir, "--no-exit-drain"],
        |run, stdout| {
            assert_eq!(tokens_of(stdout), expected(), "run {run}");
        },
    );
}

#[test]
fn the_exit_drain_waits_for_work_left_in_flight() {
    // mlx-rs alone: products queued with async_eval, and an exit without waiting for them.
    runs(&example("exit_check"), &["async"], |run, stdout| {
        assert_eq!(
            String::from_utf8_lossy(stdout).trim(),
            "queued",
            "run {run}"
        );
    });
}

#[test]
fn the_drain_finds_the_cpu_stream_in_use() {
    let a = mlx_rs::Array::from_slice(&[1.0f32, 2.0], &[2]);
    let b = a.multiply(&a).expect("multiply");
    mlx_rs::transforms::async_eval([&b]).expect("async_eval");
    let waited = mlx_sys::drain_cpu_streams().expect("the drain ran");
    assert!(waited >= 1, "waited for {waited} streams");
    assert_eq!(b.as_slice::<f32>(), &[1.0, 4.0]);
}

#[test]
fn ctrl_c_and_sigterm_end_a_generation_at_once() {
    let dir = model().dir.to_str().expect("utf-8 path").to_string();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut command = std::process::Command::new(mlx_models_tests::cli::binary());
        command
            .args(["generate", "--model", &dir, "--prompt-tokens", "1,2,3"])
            .args(["--max-tokens", "100000", "--format", "json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // The child gets the default dispositions whatever this test inherited: a test run
        // started in the background by a non-interactive shell ignores SIGINT, and ignored
        // signals stay ignored across exec, which would hide what the command itself does.
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start mlx-models");
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: a signal to our own child, whose pid we hold.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > LIMIT {
                let _ = child.kill();
                panic!("signal {signal} did not end the generation in {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "{status:?}");
    }
}
