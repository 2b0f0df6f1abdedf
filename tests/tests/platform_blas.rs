//! Every binary that links MLX also links OpenBLAS, and MLX's BLAS calls land in it rather
//! than in the wheel's reference BLAS.
#![cfg(target_os = "linux")]

use std::ffi::{CStr, CString};

/// The file of the shared object that the process-wide lookup of `symbol` resolves to: the
/// same lookup the loader does for libmlx's undefined `cblas_sgemm`.
fn providing_library(symbol: &str) -> Option<String> {
    let name = CString::new(symbol).ok()?;
    // SAFETY: plain libc lookups on a NUL-terminated name; dladdr only writes into `info`.
    unsafe {
        let addr = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if addr.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

#[test]
fn cblas_sgemm_resolves_to_openblas() {
    // Make sure libmlx is loaded and used.
    let a = mlx_rs::Array::from_slice(&[1.0f32; 64 * 64], &[64, 64]);
    let c = mlx_rs::ops::matmul(&a, &a).expect("matmul");
    c.eval().expect("eval");
    assert_eq!(c.as_slice::<f32>()[0], 64.0);

    let lib = providing_library("cblas_sgemm").expect("cblas_sgemm is not loaded at all");
    assert!(
        lib.contains("openblas"),
        "cblas_sgemm comes from {lib}, not OpenBLAS"
    );
    let lib = providing_library("sgemm_").expect("sgemm_ is not loaded");
    assert!(
        lib.contains("openblas"),
        "sgemm_ comes from {lib}, not OpenBLAS"
    );
}

#[test]
fn openblas_is_a_direct_dependency_of_this_test_binary() {
    let exe = std::fs::read("/proc/self/exe").expect("read own executable");
    // DT_NEEDED names live in .dynstr; a direct dependency's name appears there.
    let needle = b"libopenblas.so";
    assert!(
        exe.windows(needle.len()).any(|w| w == needle),
        "libopenblas is not among the binary's dependencies"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    assert!(maps.contains("libopenblas"), "libopenblas is not mapped");
    assert!(maps.contains("libmlx.so"), "libmlx is not mapped");
}
