//! Diagnostics of `#[derive(ModelArgs)]` and `#[mlx_model]` (one mistake per case, with its
//! `.stderr` snapshot), and cases that must compile and run. The toolchain is pinned in
//! rust-toolchain.toml so that the snapshots stay stable; refresh them with
//! `TRYBUILD=overwrite cargo test -p mlx-models-tests --test macros_ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/model_args/*.rs");
    t.compile_fail("tests/ui/mlx_model/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
