//! The binary finds libmlx when run outside cargo too: an rpath to the MLX folder that mlx-sys
//! reports (its wheel cache, or `MLX_DIR`). Needs `mlx-sys` as a direct dependency.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_RPATH");
    if let Ok(dir) = std::env::var("DEP_MLX_RPATH") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
}
