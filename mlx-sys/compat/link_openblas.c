/*
 * Linked whole into every binary that links MLX on Linux (see build.rs). Its reference to an
 * OpenBLAS-only symbol makes the linker keep `libopenblas` as a direct dependency of the binary
 * even under `--as-needed`, so that the loader resolves libmlx's `cblas_*` / `sgemm_` calls to
 * OpenBLAS before the slow reference BLAS bundled with the wheel.
 *
 * The reference sits in a constructor because `.init_array` survives `--gc-sections`, which
 * would otherwise drop an unreferenced anchor (and the library with it). It only stores a
 * function address; nothing is called.
 */
extern char* openblas_get_config(void);

void* volatile mlx_sys_openblas_anchor;

__attribute__((constructor)) static void mlx_sys_keep_openblas(void) {
  mlx_sys_openblas_anchor = (void*)&openblas_get_config;
}
