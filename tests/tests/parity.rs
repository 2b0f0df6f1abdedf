//! Every architecture against the reference, found without a list: each case script in
//! `scripts/reference/parity/` runs through the shared parity check (`tests/src/parity.rs`),
//! every one of its cases also through a left-padded batch, and every registered
//! architecture must have a script. A new architecture adds its file, its `mod` line and its
//! case script; nothing here changes.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlx_models_tests::parity::{cases, check_arch, check_left_padded_batch};
use mlx_models_tests::reference::repo_root;

/// The case scripts, by name (`llama` for `llama.py`), sorted.
fn scripts() -> Vec<String> {
    let dir = repo_root().join("scripts/reference/parity");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".py").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no case scripts in {}", dir.display());
    names
}

/// The case scripts to check: all of them, or by hand only those `MLX_MODELS_PARITY` names
/// (`MLX_MODELS_PARITY=mamba2,lfm2`; CI sets nothing).
fn selected() -> Vec<String> {
    let mut names = scripts();
    if let Ok(only) = std::env::var("MLX_MODELS_PARITY") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        names.retain(|n| only.contains(&n.as_str()));
        assert!(
            !names.is_empty(),
            "MLX_MODELS_PARITY={only:?} names no case script"
        );
    }
    names
}

/// Runs `check` for each name, then fails once, naming every name whose check failed.
fn each(names: &[String], what: &str, check: impl Fn(&str)) {
    let failed: Vec<&String> = names
        .iter()
        .filter(|n| catch_unwind(AssertUnwindSafe(|| check(n))).is_err())
        .collect();
    assert!(
        failed.is_empty(),
        "{what} failed for: {failed:?} (see the panics above)"
    );
}

#[test]
fn every_case_script_matches_the_reference() {
    let names = selected();
    each(&names, "parity", |arch| {
        let reports = check_arch(arch);
        assert!(!reports.is_empty(), "{arch}: no cases");
    });
}

#[test]
fn every_case_runs_as_a_left_padded_batch() {
    let names = selected();
    each(&names, "the left-padded batch", |arch| {
        for case in cases(arch) {
            check_left_padded_batch(arch, &case);
        }
    });
}

#[test]
fn every_registered_architecture_has_parity_cases() {
    mlx_models_zoo::link();
    let scripts: BTreeSet<String> = scripts().into_iter().collect();
    let missing: Vec<&str> = mlx_models::registry::entries()
        .iter()
        .map(|e| e.model_type)
        .filter(|t| !scripts.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "registered architectures without scripts/reference/parity/<model_type>.py: {missing:?}"
    );
}
