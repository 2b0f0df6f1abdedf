//! Passes mlx-sys's runtime folder (where the wheel's reference BLAS lives) to the tests and
//! benchmarks, which compare it with OpenBLAS.
fn main() {
    for key in ["RUNTIME_DIR", "OPENBLAS"] {
        println!("cargo:rerun-if-env-changed=DEP_MLX_{key}");
        if let Ok(v) = std::env::var(format!("DEP_MLX_{key}")) {
            println!("cargo:rustc-env=MLX_SYS_{key}={v}");
        }
    }
}
