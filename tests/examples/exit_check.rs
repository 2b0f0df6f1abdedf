//! Processes that must exit promptly, run back to back by `tests/tests/exit.rs` and
//! `scripts/stress-exit.sh`:
//!
//! - `exit_check make DIR`: writes the float32 test model (see `mlx_models_tests::exit_model`)
//!   and prints its greedy tokens and end token as JSON;
//! - `exit_check stream DIR [--no-exit-drain]`: the library API, as a user's program calls it:
//!   loads DIR, generates greedily until the end-of-sequence token, prints the tokens, exits.
//!   With `--no-exit-drain` the process does not wait for MLX at exit, so only the token
//!   stream's own guarantee (no work in flight once it is dropped) keeps the exit clean;
//! - `exit_check async [--no-exit-drain]`: mlx-rs alone: queues float32 products with
//!   `async_eval` and exits without waiting for them (the exit drain's case).

use std::path::Path;
use std::process::ExitCode;

use mlx_models::generate::{model_stream, GenerationConfig};
use mlx_models::load::{load_dir, LoadOptions};
use mlx_models_tests::exit_model::{self, Sizes, PROMPT};
use mlx_rs::{random, Array};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_drain = args.iter().any(|a| a == "--no-exit-drain");
    let rest: Vec<&str> = args
        .iter()
        .filter(|a| *a != "--no-exit-drain")
        .map(String::as_str)
        .collect();
    let result = match rest.as_slice() {
        ["make", dir] => make(Path::new(dir)),
        ["stream", dir] => stream(Path::new(dir), no_drain),
        ["async"] => queue_and_exit(no_drain, false),
        ["sync"] => queue_and_exit(no_drain, true),
        _ => Err("usage: exit_check make DIR | stream DIR | async [--no-exit-drain]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make(dir: &Path) -> Result<()> {
    let model = exit_model::write(dir, Sizes::DEFAULT)?;
    println!(
        "{}",
        serde_json::json!({"tokens": model.tokens, "eos": model.eos})
    );
    Ok(())
}

fn stream(dir: &Path, no_drain: bool) -> Result<()> {
    let mut loaded = load_dir(dir, &LoadOptions::default())?;
    if no_drain {
        // After loading, which turns it on.
        mlx_sys::set_exit_drain(false);
    }
    let mut cache = loaded.model.make_cache();
    let config = GenerationConfig {
        max_tokens: 64,
        eos_token_ids: loaded.eos_token_ids.clone(),
        ..Default::default()
    };
    let tokens = model_stream(loaded.model.as_mut(), &mut cache, &PROMPT, config)?
        .map(|t| t.map(|t| t.token))
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    println!("{}", serde_json::json!({ "tokens": tokens }));
    Ok(())
}

fn queue_and_exit(no_drain: bool, wait: bool) -> Result<()> {
    if no_drain {
        mlx_sys::set_exit_drain(false);
    }
    let a = random::normal::<f32>(&[1024, 1024], 0.0, 0.03, None)?;
    let mut x = random::normal::<f32>(&[1, 1024], 0.0, 1.0, None)?;
    mlx_rs::transforms::eval([&a, &x])?;
    // A chain of row-times-matrix products (each one multi-threaded in OpenBLAS), queued and
    // left running.
    for _ in 0..400 {
        x = x.matmul(&a)?;
    }
    if wait {
        mlx_rs::transforms::eval([&x])?;
    } else {
        mlx_rs::transforms::async_eval([&x])?;
    }
    let _keep: &Array = &x;
    println!("queued");
    Ok(())
}
