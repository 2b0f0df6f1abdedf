//! Build script of the drop-in `mlx-sys`.
//!
//! 1. Find MLX 0.32.2: `MLX_DIR` (an install with `lib/`, `include/`, `share/cmake/MLX`) or the
//!    official wheel for this platform, fetched once with pip into a cache folder.
//! 2. Get mlx-c's sources from the crates.io package `mlx-sys` 0.7.0 through cargo itself.
//! 3. Compile mlx-c as a static library against MLX's headers (C++20, with the compatibility
//!    header force-included) and generate the bindings with bindgen.
//! 4. Link `libmlx` (a copy under `OUT_DIR` so that `cargo run`/`cargo test` find it, and an
//!    rpath to the stable location exported as `DEP_MLX_RPATH`), `libstdc++`, and on Linux
//!    OpenBLAS ahead of the wheel's reference BLAS.
//!
//! Every failure ends the build with one line saying what to install or set.

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The MLX release the mlx-c inside `mlx-sys` 0.7.0 is written against.
const MLX_VERSION: &str = "0.32.2";
/// The crates.io package whose `src/mlx-c` we compile.
const MLX_C_CRATE: &str = "mlx-sys";
const MLX_C_CRATE_VERSION: &str = "0.7.0";

struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<io::Error> for BuildError {
    fn from(e: io::Error) -> Self {
        BuildError(format!("I/O error: {e}"))
    }
}

fn fail(msg: impl Into<String>) -> BuildError {
    BuildError(msg.into())
}

type Result<T> = std::result::Result<T, BuildError>;

fn main() {
    if let Err(e) = run() {
        // One line, no CMake or compiler wall: cargo prints it as `error: ...`.
        // `cargo::error` fails the build with this line alone; exiting non-zero would make
        // cargo dump the whole build-script output under it.
        println!("cargo::error={e}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Os {
    Linux,
    MacOs,
    Other,
}

struct Target {
    os: Os,
    arch: String,
}

impl Target {
    fn from_env() -> Self {
        let os = match env::var("CARGO_CFG_TARGET_OS").as_deref() {
            Ok("linux") => Os::Linux,
            Ok("macos") => Os::MacOs,
            _ => Os::Other,
        };
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        Target { os, arch }
    }

    fn has_native_half(&self) -> bool {
        self.arch == "aarch64"
    }
}

/// Where MLX lives and what to link.
struct MlxInstall {
    /// Folder with `lib/libmlx.*` and `include/mlx/mlx.h`.
    prefix: PathBuf,
    /// The tree `libmlx` needs at run time, relative paths preserved (the wheels' `libmlx`
    /// finds its bundled libraries through `$ORIGIN/../../<name>.libs`).
    runtime_root: PathBuf,
    /// Sub-folders of `runtime_root` to mirror next to the build.
    runtime_parts: Vec<PathBuf>,
    /// `prefix/lib` relative to `runtime_root`.
    lib_rel: PathBuf,
}

fn run() -> Result<()> {
    for var in [
        "MLX_DIR",
        "MLX_SYS_CACHE_DIR",
        "MLX_SYS_PYTHON",
        "MLX_SYS_NO_OPENBLAS",
        "LIBCLANG_PATH",
        "OPENBLAS_LIB_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=compat/mlx_sys_compat.h");

    let target = Target::from_env();
    if target.os == Os::Other {
        return Err(fail(
            "only Linux and macOS are supported (MLX ships no prebuilt library for this target)",
        ));
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|_| fail("OUT_DIR not set"))?);
    let manifest_dir = PathBuf::from(
        env::var("CARGO_MANIFEST_DIR").map_err(|_| fail("CARGO_MANIFEST_DIR not set"))?,
    );
    let compat_header = manifest_dir.join("compat").join("mlx_sys_compat.h");

    let blas = if target.os == Os::Linux && env::var_os("MLX_SYS_NO_OPENBLAS").is_none() {
        Some(find_openblas()?)
    } else {
        None
    };
    let libclang_hint = check_libclang(&target)?;

    let mlx = locate_mlx(&target)?;
    let mlx_c = fetch_mlx_c_sources(&out_dir)?;

    // Our CPU kernels for quantized products (see the file) are compiled with mlx-c, against
    // the same headers, and reached through its array and stream handles.
    let kernels = vec![manifest_dir.join("kernels").join("cpu_quantized.cpp")];
    println!("cargo:rerun-if-changed=kernels/cpu_quantized.cpp");
    compile_mlx_c(&mlx_c, &mlx, &compat_header, &kernels)?;
    generate_bindings(
        &mlx_c,
        &mlx,
        &compat_header,
        &target,
        &out_dir,
        libclang_hint,
    )?;

    // A copy of the runtime tree inside the target directory: cargo puts link-search paths that
    // lie inside it on the loader path of `cargo run` and `cargo test`, for every crate that
    // depends on us, with no LD_LIBRARY_PATH set by hand.
    let runtime_copy = out_dir.join("mlx-runtime");
    mirror_runtime(&mlx, &runtime_copy)?;
    let linked_lib_dir = runtime_copy.join(&mlx.lib_rel);
    println!(
        "cargo:rustc-link-search=native={}",
        linked_lib_dir.display()
    );
    println!("cargo:rustc-link-lib=dylib=mlx");
    if target.os == Os::MacOs {
        println!("cargo:rustc-link-lib=dylib=c++");
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }

    if target.os == Os::Linux {
        // Waits for MLX's CPU streams at exit, before OpenBLAS's destructor can race a BLAS
        // call still in flight (see the file). Linked whole into each binary, so that every
        // program registers it before `main`.
        let mut drain = cc::Build::new();
        drain
            .file(manifest_dir.join("compat").join("exit_drain.cpp"))
            .cpp(true)
            .std("c++20")
            .cpp_link_stdlib(None)
            .include(mlx.prefix.join("include"))
            .cargo_metadata(false)
            .warnings(false);
        drain.try_compile("mlx_sys_exit_drain").map_err(|e| {
            fail(format!(
                "compiling the exit drain failed: {}",
                first_line(&e.to_string())
            ))
        })?;
        println!("cargo:rerun-if-changed=compat/exit_drain.cpp");
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=mlx_sys_exit_drain");
    }

    if let Some(blas) = &blas {
        // OpenBLAS must be a direct dependency of every binary that links MLX: the loader then
        // resolves libmlx's `cblas_*` calls to it (breadth-first, the executable's own
        // dependencies come first) before the wheel's slow reference BLAS (a dependency of
        // libmlx). rustc-link-lib reaches every dependent binary, unlike link-arg; the
        // `-as-needed` modifier is unstable, so a tiny object linked whole into each binary
        // references an OpenBLAS symbol, which keeps the library under `--as-needed`.
        cc::Build::new()
            .file(manifest_dir.join("compat").join("link_openblas.c"))
            .cargo_metadata(false)
            .warnings(false)
            .try_compile("mlx_sys_openblas_anchor")
            .map_err(|e| {
                fail(format!(
                    "compiling the OpenBLAS anchor failed: {}",
                    first_line(&e.to_string())
                ))
            })?;
        println!("cargo:rerun-if-changed=compat/link_openblas.c");
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=mlx_sys_openblas_anchor");
        println!("cargo:rustc-link-search=native={}", blas.dir.display());
        println!("cargo:rustc-link-lib=dylib:+verbatim={}", blas.file_name);
        println!(
            "cargo::metadata=openblas={}",
            blas.dir.join(&blas.file_name).display()
        );
    }

    // `DEP_MLX_*` for crates that depend on us directly (see README.md).
    let stable_lib_dir = mlx.runtime_root.join(&mlx.lib_rel);
    println!("cargo::metadata=rpath={}", stable_lib_dir.display());
    println!("cargo::metadata=lib_dir={}", linked_lib_dir.display());
    println!("cargo::metadata=runtime_dir={}", runtime_copy.display());
    println!(
        "cargo::metadata=include={}",
        mlx.prefix.join("include").display()
    );
    println!("cargo::metadata=mlx_c_include={}", mlx_c.display());
    println!("cargo::metadata=version={MLX_VERSION}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// System dependencies

struct OpenBlas {
    dir: PathBuf,
    file_name: String,
}

fn find_openblas() -> Result<OpenBlas> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("OPENBLAS_LIB_DIR") {
        dirs.push(dir.into());
    }
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "",
    };
    for base in ["/usr/lib", "/usr/local/lib", "/usr/lib64", "/lib"] {
        if !multiarch.is_empty() {
            dirs.push(Path::new(base).join(multiarch));
        }
        dirs.push(PathBuf::from(base));
    }
    for dir in dirs {
        for name in ["libopenblas.so.0", "libopenblas.so"] {
            if dir.join(name).exists() {
                return Ok(OpenBlas {
                    dir,
                    file_name: name.to_string(),
                });
            }
        }
    }
    Err(fail(
        "OpenBLAS not found; install it with `apt-get install libopenblas0-pthread` \
         (Debian/Ubuntu), or set OPENBLAS_LIB_DIR, or MLX_SYS_NO_OPENBLAS=1 to keep the wheel's \
         slow reference BLAS",
    ))
}

/// bindgen loads libclang at run time; without it, it panics with pages of text. Returns the
/// folder where it was found, for `LIBCLANG_PATH`.
fn check_libclang(target: &Target) -> Result<Option<PathBuf>> {
    if let Some(dir) = env::var_os("LIBCLANG_PATH") {
        return Ok(Some(dir.into()));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if target.os == Os::MacOs {
        dirs.push("/Library/Developer/CommandLineTools/usr/lib".into());
        dirs.push(
            "/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/lib"
                .into(),
        );
        dirs.push("/opt/homebrew/opt/llvm/lib".into());
        dirs.push("/usr/local/opt/llvm/lib".into());
    } else {
        for base in ["/usr/lib", "/usr/lib64", "/usr/local/lib"] {
            if let Ok(entries) = fs::read_dir(base) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with("llvm") {
                        dirs.push(entry.path().join("lib"));
                    }
                }
            }
            dirs.push(Path::new(base).join("x86_64-linux-gnu"));
            dirs.push(Path::new(base).join("aarch64-linux-gnu"));
            dirs.push(PathBuf::from(base));
        }
    }
    for dir in &dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("libclang")
                    && !name.starts_with("libclang-cpp")
                    && (name.contains(".so") || name.ends_with(".dylib"))
                {
                    return Ok(None);
                }
            }
        }
    }
    Err(fail(
        "libclang not found (bindgen needs it); install it with `apt-get install \
         libclang-dev` (Debian/Ubuntu) or `brew install llvm` (macOS), or set LIBCLANG_PATH",
    ))
}

fn python() -> PathBuf {
    env::var_os("MLX_SYS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into())
}

fn check_pip() -> Result<()> {
    let ok = Command::new(python())
        .args(["-m", "pip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(fail(
            "python3 with pip is needed to fetch the MLX wheel; install it with \
             `apt-get install python3 python3-pip python3-venv` (Debian/Ubuntu) or \
             `brew install python` (macOS), or point MLX_DIR at an MLX install",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// MLX itself

fn locate_mlx(target: &Target) -> Result<MlxInstall> {
    if let Some(dir) = env::var_os("MLX_DIR") {
        let prefix = PathBuf::from(dir);
        for needed in ["lib", "include/mlx/mlx.h", "share/cmake/MLX"] {
            if !prefix.join(needed).exists() {
                return Err(fail(format!(
                    "MLX_DIR={} has no `{needed}`; it must be an MLX {MLX_VERSION} install \
                     with lib/, include/ and share/cmake/MLX",
                    prefix.display()
                )));
            }
        }
        return Ok(MlxInstall {
            runtime_root: prefix.clone(),
            runtime_parts: vec![PathBuf::from("lib")],
            lib_rel: PathBuf::from("lib"),
            prefix,
        });
    }

    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some();
    let cuda13 = env::var_os("CARGO_FEATURE_CUDA13").is_some();
    let package = match target.os {
        Os::MacOs => "mlx-metal",
        _ if cuda13 => "mlx-cuda-13",
        _ if cuda => "mlx-cuda-12",
        _ => "mlx-cpu",
    };
    let root = cache_dir()?.join(format!("{package}-{MLX_VERSION}-{}", target.arch));
    if !root
        .join("mlx")
        .join("include")
        .join("mlx")
        .join("mlx.h")
        .exists()
    {
        install_wheel(package, cuda, &root)?;
    }
    let mut parts = vec![PathBuf::from("mlx").join("lib")];
    for entry in fs::read_dir(&root)?.flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        // Bundled libraries (`mlx_cpu.libs`) and, for CUDA, the NVIDIA wheels' libraries.
        if name_str.ends_with(".libs") || name_str == "nvidia" {
            parts.push(PathBuf::from(name));
        }
    }
    Ok(MlxInstall {
        prefix: root.join("mlx"),
        lib_rel: PathBuf::from("mlx").join("lib"),
        runtime_parts: parts,
        runtime_root: root,
    })
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("MLX_SYS_CACHE_DIR") {
        return Ok(dir.into());
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("mlx-sys"));
    }
    let home = env::var_os("HOME").ok_or_else(|| {
        fail("set HOME, XDG_CACHE_HOME or MLX_SYS_CACHE_DIR for the MLX wheel cache")
    })?;
    let home = PathBuf::from(home);
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        Ok(home.join("Library").join("Caches").join("mlx-sys"))
    } else {
        Ok(home.join(".cache").join("mlx-sys"))
    }
}

/// Downloads `package==MLX_VERSION` (and, for CUDA, its NVIDIA dependencies) with pip and
/// unpacks every wheel into `root`, as pip would lay out site-packages.
fn install_wheel(package: &str, with_deps: bool, root: &Path) -> Result<()> {
    check_pip()?;
    let parent = root.parent().ok_or_else(|| fail("bad cache folder"))?;
    fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        root.file_name().and_then(OsStr::to_str).unwrap_or("mlx"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    let wheels = staging.join("wheels");
    let tree = staging.join("tree");
    fs::create_dir_all(&wheels)?;
    fs::create_dir_all(&tree)?;

    let spec = format!("{package}=={MLX_VERSION}");
    let mut pip = Command::new(python());
    pip.args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
    ]);
    if !with_deps {
        pip.arg("--no-deps");
    }
    pip.arg("--dest").arg(&wheels).arg(&spec);
    let output = pip
        .output()
        .map_err(|e| fail(format!("could not run pip to fetch {spec}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let _ = fs::remove_dir_all(&staging);
        return Err(fail(format!(
            "`pip download {spec}` failed ({last}); check network access to PyPI, or \
             point MLX_DIR at an MLX {MLX_VERSION} install"
        )));
    }
    let script = "import sys, zipfile\nfor w in sys.argv[2:]:\n    zipfile.ZipFile(w).extractall(sys.argv[1])\n";
    let mut files: Vec<PathBuf> = fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("whl")))
        .collect();
    files.sort();
    let status = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&tree)
        .args(&files)
        .status()
        .map_err(|e| fail(format!("could not unpack the MLX wheel: {e}")))?;
    if !status.success() || !tree.join("mlx/include/mlx/mlx.h").exists() {
        let _ = fs::remove_dir_all(&staging);
        return Err(fail(format!(
            "the {spec} wheel did not contain mlx/include/mlx/mlx.h"
        )));
    }
    // Another build may have finished first: theirs is as good as ours.
    if fs::rename(&tree, root).is_err() && !root.join("mlx/include/mlx/mlx.h").exists() {
        let _ = fs::remove_dir_all(&staging);
        return Err(fail(format!(
            "could not move the MLX wheel into {}",
            root.display()
        )));
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// Mirrors the parts of the runtime tree under `dest`, with hard links where the file system
/// allows and copies elsewhere.
fn mirror_runtime(mlx: &MlxInstall, dest: &Path) -> Result<()> {
    for part in &mlx.runtime_parts {
        mirror_dir(&mlx.runtime_root.join(part), &dest.join(part))?;
    }
    Ok(())
}

fn mirror_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            mirror_dir(&src, &dst)?;
        } else {
            let fresh = match (fs::metadata(&src), fs::metadata(&dst)) {
                (Ok(a), Ok(b)) => a.len() != b.len() || a.modified().ok() > b.modified().ok(),
                _ => true,
            };
            if fresh {
                let _ = fs::remove_file(&dst);
                if fs::hard_link(&src, &dst).is_err() {
                    fs::copy(&src, &dst)?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mlx-c

/// mlx-c's sources ship inside the crates.io package `mlx-sys` 0.7.0; cargo fetches (and
/// checksums) it for us into `OUT_DIR`, so no third-party source lives in this repository.
fn fetch_mlx_c_sources(out_dir: &Path) -> Result<PathBuf> {
    let fetch = out_dir.join("mlx-c-fetch");
    let vendor = fetch.join("vendor");
    let mlx_c = vendor
        .join(format!("{MLX_C_CRATE}-{MLX_C_CRATE_VERSION}"))
        .join("src")
        .join("mlx-c");
    if mlx_c.join("CMakeLists.txt").exists() {
        return Ok(mlx_c);
    }
    fs::create_dir_all(&fetch)?;
    fs::write(
        fetch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"mlx-c-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n\
             {MLX_C_CRATE} = {{ version = \"={MLX_C_CRATE_VERSION}\", default-features = false }}\n\n\
             # Not part of the project that builds us.\n[workspace]\n"
        ),
    )?;
    fs::write(fetch.join("lib.rs"), "")?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut last_error = String::new();
    for offline in [false, true] {
        let mut cmd = Command::new(&cargo);
        cmd.arg("vendor")
            .arg("--versioned-dirs")
            .arg("--manifest-path")
            .arg(fetch.join("Cargo.toml"))
            .arg(&vendor)
            .current_dir(&fetch)
            // Keep the outer build's settings out of the nested cargo.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        if offline {
            cmd.arg("--offline");
        }
        match cmd.output() {
            Ok(out) if out.status.success() && mlx_c.join("CMakeLists.txt").exists() => {
                return Ok(mlx_c);
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                last_error = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string();
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(fail(format!(
        "could not get mlx-c's sources from the crates.io package \
         {MLX_C_CRATE} {MLX_C_CRATE_VERSION} ({last_error}); check access to crates.io"
    )))
}

/// The sources mlx-c's own CMakeLists.txt builds (commented-out lines excluded), so the list
/// follows mlx-c rather than being copied here.
fn mlx_c_sources(mlx_c: &Path) -> Result<Vec<PathBuf>> {
    let cmake = fs::read_to_string(mlx_c.join("CMakeLists.txt"))?;
    let sources: Vec<PathBuf> = cmake
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("${CMAKE_CURRENT_LIST_DIR}/"))
        .map(|l| l.trim_end_matches(')'))
        .filter(|l| l.starts_with("mlx/c/") && l.ends_with(".cpp"))
        .map(|l| mlx_c.join(l))
        .collect();
    if sources.is_empty() {
        return Err(fail("found no sources in mlx-c's CMakeLists.txt"));
    }
    Ok(sources)
}

fn compile_mlx_c(
    mlx_c: &Path,
    mlx: &MlxInstall,
    compat_header: &Path,
    extra: &[PathBuf],
) -> Result<()> {
    let mut sources = mlx_c_sources(mlx_c)?;
    sources.extend(extra.iter().cloned());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .pic(true)
        .warnings(false)
        .opt_level(2)
        .debug(false)
        .include(mlx_c)
        .include(mlx.prefix.join("include"))
        .flag("-include")
        .flag(compat_header.to_string_lossy().as_ref())
        .files(&sources)
        // cc emits its own link-lib for the C++ runtime; we emit ours after libmlx instead.
        .cpp_link_stdlib(None);
    let compiler = build.get_compiler();
    if Command::new(compiler.path())
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(fail(format!(
            "no C++ compiler (`{}`); install it with `apt-get install g++` \
             (Debian/Ubuntu) or `xcode-select --install` (macOS)",
            compiler.path().display()
        )));
    }
    build.try_compile("mlxc").map_err(|e| {
        fail(format!(
            "compiling mlx-c failed: {}",
            first_line(&e.to_string())
        ))
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn generate_bindings(
    mlx_c: &Path,
    _mlx: &MlxInstall,
    compat_header: &Path,
    target: &Target,
    out_dir: &Path,
    libclang_dir: Option<PathBuf>,
) -> Result<()> {
    if let Some(dir) = libclang_dir {
        env::set_var("LIBCLANG_PATH", dir);
    }
    let header_dir = mlx_c.join("mlx").join("c");
    let mut headers: Vec<PathBuf> = fs::read_dir(&header_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("h")))
        .collect();
    headers.sort();

    // The same configuration the published mlx-sys uses, so mlx-rs sees the same API.
    let mut builder = bindgen::Builder::default()
        .rust_target(
            "1.73.0"
                .parse()
                .map_err(|_| fail("bad bindgen rust target"))?,
        )
        .clang_arg(format!("-I{}", mlx_c.display()))
        .blocklist_function("malloc")
        .blocklist_function("realloc");
    if !target.has_native_half() {
        builder = builder
            .clang_arg("-include")
            .clang_arg(compat_header.to_string_lossy())
            .blocklist_type("float16_t")
            .blocklist_type("mlx_sys_float16")
            // What bindgen emits for `__fp16` on ARM; mlx-rs reads the bits through `.0`.
            .raw_line("#[repr(transparent)]")
            .raw_line("#[derive(Debug, Default, Copy, Clone, Hash, PartialEq, Eq)]")
            .raw_line("pub struct float16_t(pub u16);");
    }
    for header in &headers {
        builder = builder.header(header.to_string_lossy());
    }
    let bindings = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.generate()))
        .map_err(|_| {
            fail("bindgen failed to load libclang; install `libclang-dev` (Debian/Ubuntu) or `brew install llvm`, or set LIBCLANG_PATH")
        })?
        .map_err(|e| fail(format!("generating bindings failed: {}", first_line(&e.to_string()))))?;
    bindings.write_to_file(out_dir.join("bindings.rs"))?;
    Ok(())
}
