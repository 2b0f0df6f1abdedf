//! The zoo's examples, run outside cargo, find libmlx
//! through an rpath to the stable MLX folder that mlx-sys reports (its wheel cache, or
//! `MLX_DIR`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_RPATH");
    if let Ok(dir) = std::env::var("DEP_MLX_RPATH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
