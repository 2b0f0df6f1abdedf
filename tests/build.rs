//! Passes mlx-sys's runtime folder (where the wheel's reference BLAS lives) to the tests and
//! benchmarks, which compare it with OpenBLAS, and gives the examples an rpath to libmlx so that
//! scripts can run them outside cargo (`scripts/stress-exit.sh`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_RPATH");
    if let Ok(dir) = std::env::var("DEP_MLX_RPATH") {
        println!("cargo:rustc-link-arg-examples=-Wl,-rpath,{dir}");
    }
    for key in ["RUNTIME_DIR", "OPENBLAS"] {
        println!("cargo:rerun-if-env-changed=DEP_MLX_{key}");
        if let Ok(v) = std::env::var(format!("DEP_MLX_{key}")) {
            println!("cargo:rustc-env=MLX_SYS_{key}={v}");
        }
    }
}
