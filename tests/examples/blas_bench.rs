//! Float32 matmul throughput with OpenBLAS (what every binary links) against the MLX wheel's
//! bundled reference BLAS, same sizes, same binary: the second measurement re-runs this program
//! with the reference BLAS preloaded, so that it wins the symbol lookup.
//!
//! `cargo run --release -p mlx-models-tests --example blas_bench`

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use mlx_rs::{ops, random, Array};

const SIZES: [i32; 4] = [256, 512, 1024, 2048];
const CHILD: &str = "MLX_MODELS_BLAS_BENCH_CHILD";

fn blas_library() -> String {
    let name = CString::new("cblas_sgemm").expect("name");
    // SAFETY: libc lookups on a NUL-terminated name; dladdr writes only into `info`.
    unsafe {
        let addr = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        if addr.is_null() || libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return "unknown".into();
        }
        CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    }
}

fn gflops(n: i32) -> f64 {
    let key = random::key(0).expect("key");
    let a = random::normal::<f32>(&[n, n], None, None, &key).expect("a");
    let b = random::normal::<f32>(&[n, n], None, None, &key).expect("b");
    a.eval().expect("eval");
    b.eval().expect("eval");
    ops::matmul(&a, &b).expect("warm-up").eval().expect("eval");
    let flop = 2.0 * (n as f64).powi(3);
    // Enough repetitions for about half a second with OpenBLAS, at least two.
    let reps = ((2.0e10 / flop) as usize).clamp(2, 200);
    let start = Instant::now();
    for _ in 0..reps {
        let c: Array = ops::matmul(&a, &b).expect("matmul");
        c.eval().expect("eval");
    }
    flop * reps as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn measure() -> Vec<f64> {
    SIZES.iter().map(|&n| gflops(n)).collect()
}

fn reference_blas() -> Option<PathBuf> {
    let runtime = PathBuf::from(option_env!("MLX_SYS_RUNTIME_DIR")?);
    for entry in std::fs::read_dir(&runtime).ok()?.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(".libs") {
            continue;
        }
        for lib in std::fs::read_dir(entry.path()).ok()?.flatten() {
            if lib.file_name().to_string_lossy().starts_with("libblas") {
                return Some(lib.path());
            }
        }
    }
    None
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let values: Vec<String> = measure().iter().map(|v| format!("{v:.3}")).collect();
        println!("{}\t{}", blas_library(), values.join(","));
        return;
    }

    let open_lib = blas_library();
    let open = measure();

    let Some(reference) = reference_blas() else {
        eprintln!("blas_bench: the wheel's reference BLAS was not found next to libmlx");
        std::process::exit(1);
    };
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .env(CHILD, "1")
        .env("LD_PRELOAD", &reference)
        .output()
        .expect("re-run with the reference BLAS");
    let text = String::from_utf8_lossy(&out.stdout);
    let (ref_lib, values) = text.trim().split_once('\t').expect("child output");
    let reference_values: Vec<f64> = values
        .split(',')
        .map(|v| v.parse().expect("number"))
        .collect();

    println!(
        "float32 matmul, MLX CPU, {} threads available",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("  OpenBLAS:       {open_lib}");
    println!("  reference BLAS: {ref_lib}");
    println!(
        "{:>6} {:>14} {:>16} {:>8}",
        "n", "OpenBLAS GF/s", "reference GF/s", "ratio"
    );
    for ((n, o), r) in SIZES.iter().zip(&open).zip(&reference_values) {
        println!("{n:>6} {o:>14.1} {r:>16.2} {:>7.1}x", o / r);
    }
}
