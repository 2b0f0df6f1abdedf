//! The installed command (`cargo install --path cli`) finds libmlx outside cargo through an
//! rpath to the stable MLX folder that mlx-sys reports (its wheel cache, or `MLX_DIR`).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_RPATH");
    if let Ok(dir) = std::env::var("DEP_MLX_RPATH") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
}
