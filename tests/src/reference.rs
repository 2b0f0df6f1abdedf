//! Reference fixtures: runs a script of `scripts/reference/` with the reference Python
//! (mlx-lm 0.32.2, see `shared/docs/REFERENCE.md`) and hands the tests its output folder.
//!
//! - The Python is `$MLX_MODELS_REF_PYTHON`, else `<repo>/.venv-ref/bin/python` (made by
//!   `scripts/setup.sh`). When it is missing, or lacks a package at the version pinned in
//!   `scripts/reference-requirements.txt`, the test fails with a message saying so: a
//!   comparison that cannot run, or runs against another oracle, must not pass.
//! - Output lives under `<target>/reference-cache/<script>-<hash>/`, the hash covering the
//!   script's text, the shared helpers in `scripts/reference/*.py` and what the Python has
//!   installed (its version and every `name==version`, not its path), so an edited script or
//!   a changed pin regenerates and nothing is committed.
//! - Each script runs at most once per test process (a memo) and once across processes (an
//!   exclusive `flock` on a lock file, and the output folder appears by an atomic rename only
//!   when the script succeeded), so parallel tests and test binaries do not race.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use mlx_rs::{Array, Dtype};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The reference Python interpreter (it may not exist; see [`run_script`]).
pub fn reference_python() -> PathBuf {
    match std::env::var_os("MLX_MODELS_REF_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv-ref/bin/python"),
    }
}

/// The target directory the running test binary was built in (`<target>/<profile>/deps/x`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

struct FileLock(File);

impl FileLock {
    fn exclusive(path: &Path) -> FileLock {
        let file =
            File::create(path).unwrap_or_else(|e| panic!("creating lock {}: {e}", path.display()));
        // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {} failed", path.display());
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The reference Python, or a panic saying how to get it: a comparison that cannot run must
/// not pass. Its packages are checked against the pins (by `installed`).
pub fn require_python() -> PathBuf {
    let python = reference_python();
    if !python.exists() {
        panic!(
            "the reference Python {} does not exist: run `bash scripts/setup.sh` (it creates \
             .venv-ref with mlx-lm 0.32.2) or point MLX_MODELS_REF_PYTHON at a Python that has \
             mlx-lm 0.32.2; these tests compare against it and cannot pass without it",
            python.display()
        );
    }
    installed(&python);
    python
}

/// What `python` has installed: `python==X.Y.Z`, then one sorted `name==version` line per
/// distribution, names normalised as pip writes them. Read once per process (every reference
/// call needs it). Panics when a package pinned in `scripts/reference-requirements.txt` is
/// missing or at another version: fixtures made with another mlx or mlx-lm would test nothing.
fn installed(python: &Path) -> &'static str {
    const CODE: &str = "import importlib.metadata as m, platform, re\n\
        names = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() + '==' + d.version\n\
                 for d in m.distributions() if d.metadata['Name']}\n\
        print('\\n'.join(['python==' + platform.python_version()] + sorted(names)))";
    static INSTALLED: OnceLock<String> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let output = Command::new(python)
            .arg("-c")
            .arg(CODE)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        if !output.status.success() {
            panic!(
                "listing the packages of the reference Python {} failed ({}): {}",
                python.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        let found: HashMap<&str, &str> =
            listing.lines().filter_map(|l| l.split_once("==")).collect();

        let path = repo_root().join("scripts/reference-requirements.txt");
        let pins =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let wrong: Vec<String> = pins
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_alphanumeric()))
            .filter_map(|l| l.split_whitespace().next()?.split_once("=="))
            .filter_map(|(name, pinned)| {
                let name = name.to_ascii_lowercase().replace(['_', '.'], "-");
                match found.get(name.as_str()) {
                    Some(&v) if v == pinned => None,
                    Some(v) => Some(format!("`{name}` is {v}, pinned {pinned}")),
                    None => Some(format!("`{name}` is not installed, pinned {pinned}")),
                }
            })
            .collect();
        if !wrong.is_empty() {
            panic!(
                "the reference Python {} does not match scripts/reference-requirements.txt: {}; \
                 run `bash scripts/setup.sh` (it rebuilds .venv-ref when a pin changes) or unset \
                 MLX_MODELS_REF_PYTHON",
                python.display(),
                wrong.join("; ")
            );
        }
        listing
    })
}

/// Runs `python -c CODE ARGS...` with the reference Python and returns its standard output;
/// panics with the output when it fails.
pub fn run_python(code: &str, args: &[&std::ffi::OsStr]) -> String {
    let python = require_python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    if !output.status.success() {
        panic!(
            "the reference Python failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `script` (a path relative to the repository root) with the reference Python as
/// `python SCRIPT OUT_DIR`, once, and returns `OUT_DIR`. Panics with the reason when the
/// reference Python is missing or the script fails.
pub fn run_script(script: &str) -> PathBuf {
    static DONE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let memo = DONE.get_or_init(Default::default);
    let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = memo.get(script) {
        return dir.clone();
    }

    let python = require_python();
    let script_path = repo_root().join(script);
    let text =
        fs::read(&script_path).unwrap_or_else(|e| panic!("reading {}: {e}", script_path.display()));
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    // What is installed, not where: a rebuilt venv with other pins regenerates, the same
    // packages under another path do not.
    installed(&python).hash(&mut h);
    // The shared helpers a script imports (`scripts/reference/*.py`) are part of its output.
    let mut helpers: Vec<PathBuf> = fs::read_dir(repo_root().join("scripts/reference"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "py"))
                .collect()
        })
        .unwrap_or_default();
    helpers.sort();
    for helper in helpers {
        fs::read(&helper).unwrap_or_default().hash(&mut h);
    }
    let stem = script_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("script");
    let cache = target_dir().join("reference-cache");
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
    let out = cache.join(format!("{stem}-{:016x}", h.finish()));

    let _lock = FileLock::exclusive(&cache.join(format!("{stem}.lock")));
    if !out.is_dir() {
        let tmp = cache.join(format!("{stem}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let output = Command::new(&python)
            .arg(&script_path)
            .arg(&tmp)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running {} {}: {e}",
                    python.display(),
                    script_path.display()
                )
            });
        if !output.status.success() {
            panic!(
                "the reference script {} failed ({}):\n{}\n{}",
                script,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        fs::rename(&tmp, &out)
            .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), out.display()));
    }
    memo.insert(script.to_string(), out.clone());
    out
}

/// One safetensors file of a fixture: its arrays and its metadata.
pub struct Fixture {
    /// Where it was read from.
    pub path: PathBuf,
    /// The arrays.
    pub arrays: HashMap<String, Array>,
    /// The metadata (JSON text for structured entries).
    pub meta: HashMap<String, String>,
}

impl Fixture {
    /// Reads `<dir>/<name>.safetensors`.
    pub fn load(dir: &Path, name: &str) -> Fixture {
        let path = dir.join(format!("{name}.safetensors"));
        let (arrays, meta) = Array::load_safetensors_with_metadata(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        Fixture { path, arrays, meta }
    }

    /// The array `key`; panics naming the file when it is absent.
    pub fn get(&self, key: &str) -> &Array {
        self.arrays
            .get(key)
            .unwrap_or_else(|| panic!("{} has no array `{key}`", self.path.display()))
    }

    /// Whether the array `key` exists.
    pub fn has(&self, key: &str) -> bool {
        self.arrays.contains_key(key)
    }

    /// The metadata entry `key` parsed as JSON.
    pub fn json(&self, key: &str) -> serde_json::Value {
        let text = self
            .meta
            .get(key)
            .unwrap_or_else(|| panic!("{} has no metadata `{key}`", self.path.display()));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("metadata `{key}` is not JSON: {e}"))
    }
}

/// The output folder of `scripts/reference/blocks.py`.
pub fn blocks() -> PathBuf {
    run_script("scripts/reference/blocks.py")
}

/// The largest absolute difference between two arrays of the same shape (compared in
/// float32). Panics when the shapes differ.
pub fn max_abs_diff(actual: &Array, expected: &Array) -> f32 {
    assert_eq!(actual.shape(), expected.shape(), "shapes differ");
    if actual.size() == 0 {
        return 0.0;
    }
    let a = actual.as_dtype(Dtype::Float32).expect("cast");
    let e = expected.as_dtype(Dtype::Float32).expect("cast");
    // Infinities in the same places compare equal.
    let same = a.eq(&e).expect("eq");
    let diff = mlx_rs::ops::abs(a.subtract(&e).expect("sub")).expect("abs");
    let diff = mlx_rs::ops::select(&same, Array::from_f32(0.0), &diff).expect("where");
    let m = diff.max(None).expect("max");
    m.item_exact::<f32>()
}

/// Asserts `actual` matches `expected` to `tol` (absolute) and returns the difference; the
/// message names `what`. NaN anywhere fails.
#[track_caller]
pub fn assert_close(what: &str, actual: &Array, expected: &Array, tol: f32) -> f32 {
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{what}: shape {:?} vs reference {:?}",
        actual.shape(),
        expected.shape()
    );
    let d = max_abs_diff(actual, expected);
    assert!(d <= tol, "{what}: max |difference| {d:e} exceeds {tol:e}");
    d
}

/// Asserts two arrays are identical (shape, dtype and every element), for integer and
/// boolean outputs.
#[track_caller]
pub fn assert_equal(what: &str, actual: &Array, expected: &Array) {
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{what}: shape {:?} vs reference {:?}",
        actual.shape(),
        expected.shape()
    );
    assert_eq!(actual.dtype(), expected.dtype(), "{what}: dtype");
    let same = actual.eq_values(expected).expect("array_eq");
    assert!(same, "{what}: differs from the reference");
}

/// Collects the largest difference per block for the report a test prints.
#[derive(Default)]
pub struct DiffLog(Vec<(String, f32)>);

impl DiffLog {
    /// Compares and records (see [`assert_close`]).
    #[track_caller]
    pub fn close(&mut self, what: &str, actual: &Array, expected: &Array, tol: f32) {
        let d = assert_close(what, actual, expected, tol);
        self.0.push((what.to_string(), d));
    }

    /// Prints the largest difference (run the tests with `--nocapture` to see it).
    pub fn report(&self, block: &str) {
        let worst =
            self.0.iter().cloned().fold(
                (String::new(), 0.0f32),
                |a, b| if b.1 > a.1 { b } else { a },
            );
        println!(
            "{block}: {} comparisons, largest difference {:e} ({})",
            self.0.len(),
            worst.1,
            worst.0
        );
    }
}
