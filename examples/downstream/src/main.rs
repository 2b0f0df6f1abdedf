//! An application built on mlx-models from outside its workspace. It uses only the public API:
//!
//! 1. builds `llama::Model` from typed args, without the registry, and runs it with and without
//!    a cache;
//! 2. saves it as a checkpoint (config.json and model.safetensors), loads that through the
//!    registry (`mlx_models::load::load_dir`) and generates greedily from it;
//! 3. registers an architecture of its own (`bigram.rs`, with `#[mlx_model]`), finds it in the
//!    registry next to the zoo's, loads a checkpoint of it with known weights and checks every
//!    logit against a computation on the host;
//! 4. generates from a float32 llama large enough for OpenBLAS's worker threads until its
//!    end-of-sequence token, and exits right after (the program must then exit promptly:
//!    `scripts/test.sh` runs it several times with a time limit).
//!
//! Every check prints one line; the first failure ends the run with `error: ...` and exit
//! status 1.

mod bigram;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{random, Array};
use serde_json::json;

use mlx_models::args::ModelArgs;
use mlx_models::cache::Cache;
use mlx_models::generate::{model_stream, FinishReason, GenerationConfig};
use mlx_models::load::{load, load_dir, LoadOptions};
use mlx_models::model::Architecture;
use mlx_models::registry;
use mlx_models_zoo::llama::{self, LlamaArgs};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PROMPT: [u32; 6] = [3, 141, 59, 26, 5, 35];

fn main() -> ExitCode {
    let scratch = Scratch::new();
    let result = scratch.and_then(|s| run(&s.0));
    match result {
        Ok(()) => {
            println!("downstream: every check passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(scratch: &Path) -> Result<()> {
    let (args, model, logits) = typed_llama()?;
    through_the_registry(scratch, &args, &model, &logits)?;
    own_architecture(scratch)?;
    stop_at_the_end_token(scratch)
}

/// Greedy generation that stops at the end-of-sequence token, a few tokens in, on a float32
/// llama whose products OpenBLAS runs on its threads; the program exits right after it.
fn stop_at_the_end_token(scratch: &Path) -> Result<()> {
    let config = json!({
        "model_type": "llama",
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "intermediate_size": 1408,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 4096,
        "tie_word_embeddings": false,
    });
    let args = LlamaArgs::from_config(&config)?;
    let mut model = llama::Model::new(&args)?;
    randomize(&mut model, 13)?;
    let dir = scratch.join("llama-f32");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), args.to_config().to_string())?;
    save_parameters(&model, &dir.join("model.safetensors"))?;
    drop(model);
    let mut loaded = load_dir(&dir, &LoadOptions::default())?;
    let greedy = |loaded: &mut mlx_models::load::LoadedModel, eos: Vec<u32>| -> Result<Vec<_>> {
        let mut cache = loaded.model.make_cache();
        let config = GenerationConfig {
            max_tokens: 16,
            eos_token_ids: eos,
            ..Default::default()
        };
        let tokens = model_stream(loaded.model.as_mut(), &mut cache, &PROMPT, config)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(tokens)
    };
    let free: Vec<u32> = greedy(&mut loaded, vec![])?.iter().map(|t| t.token).collect();
    let at = (3..free.len())
        .find(|&i| !free[..i].contains(&free[i]))
        .ok_or_else(|| format!("greedy tokens {free:?} repeat: no end token to pick"))?;
    let stopped = greedy(&mut loaded, vec![free[at]])?;
    let tokens: Vec<u32> = stopped.iter().map(|t| t.token).collect();
    ensure(
        tokens == free[..=at]
            && stopped.last().and_then(|t| t.finish_reason) == Some(FinishReason::Stop),
        format!("stopped at {tokens:?}, expected {:?} ending with Stop", &free[..=at]),
    )?;
    println!(
        "end of sequence: a float32 llama stopped at token {} after {} tokens",
        free[at],
        tokens.len()
    );
    Ok(())
}

/// llama from typed args, no registry involved: the logits of [`PROMPT`], after checking that
/// token-by-token decoding through the cache ends where the full forward does.
fn typed_llama() -> Result<(LlamaArgs, llama::Model, Vec<f32>)> {
    let config = json!({
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 256,
    });
    let mut args = LlamaArgs::from_config(&config)?;
    args.tie_word_embeddings = false;
    let mut model = llama::Model::new(&args)?;
    randomize(&mut model, 7)?;
    let tokens = Array::from_slice(&PROMPT, &[1, PROMPT.len() as i32]);
    let mut cache: Vec<Cache> = model.make_cache();
    let logits = Architecture::forward(&mut model, &tokens, &mut cache)?;
    let vocab = args.vocab_size as i32;
    ensure(
        logits.shape() == [1, PROMPT.len() as i32, vocab],
        format!("llama logits have shape {:?}", logits.shape()),
    )?;
    let values = host(&logits)?;
    ensure(
        values.iter().all(|v| v.is_finite()),
        "llama logits are not all finite",
    )?;
    let spread = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    ensure(
        spread > 0.1,
        format!("llama logits are flat (max |x| {spread})"),
    )?;
    println!(
        "typed args: llama::Model::new, logits {:?}, max |logit| {spread:.3}",
        logits.shape()
    );

    // Token by token through the cache, the last position matches the full forward.
    let mut cache = model.make_cache();
    let mut step = None;
    for &t in &PROMPT {
        let one = Array::from_slice(&[t], &[1, 1]);
        step = Some(Architecture::forward(&mut model, &one, &mut cache)?);
    }
    let step = step.ok_or("empty prompt")?;
    let last = last_position(&logits);
    let diff = max_abs_diff(&host(&step)?, &host(&last)?);
    ensure(
        diff < 1e-4,
        format!("decode differs from the full forward by {diff}"),
    )?;
    println!("cache: token-by-token decode within {diff:.1e} of the full forward");
    Ok((args, model, values))
}

/// The same weights as a checkpoint, loaded through the registry: the same logits, and greedy
/// generation through the cache equal to recomputing the whole sequence at each step.
fn through_the_registry(
    scratch: &Path,
    args: &LlamaArgs,
    model: &llama::Model,
    values: &[f32],
) -> Result<()> {
    let dir = scratch.join("llama");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), args.to_config().to_string())?;
    save_parameters(model, &dir.join("model.safetensors"))?;
    let mut loaded = load_dir(&dir, &LoadOptions::default())?;
    ensure(
        loaded.model.model_type() == "llama",
        format!("loaded a `{}`", loaded.model.model_type()),
    )?;
    let tokens = Array::from_slice(&PROMPT, &[1, PROMPT.len() as i32]);
    let mut cache = loaded.model.make_cache();
    let reloaded = loaded.model.forward(&tokens, &mut cache)?;
    let diff = max_abs_diff(&host(&reloaded)?, values);
    ensure(
        diff == 0.0,
        format!("the loaded checkpoint's logits differ by {diff}"),
    )?;
    println!("registry load: `load_dir` built a llama with the same logits (difference {diff})");

    let n = 8;
    let mut cache = loaded.model.make_cache();
    let config = GenerationConfig {
        max_tokens: n,
        prefill_step_size: 4, // the prompt in two chunks
        ..Default::default()
    };
    let generated = model_stream(loaded.model.as_mut(), &mut cache, &PROMPT, config)?
        .map(|t| t.map(|t| t.token))
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    ensure(
        cache
            .iter()
            .all(|c| c.offset() == (PROMPT.len() + n - 1) as i32),
        "the caches did not keep the conversation",
    )?;
    let model = loaded.model.as_mut();
    let mut sequence = PROMPT.to_vec();
    for _ in 0..n {
        let input = Array::from_slice(&sequence, &[1, sequence.len() as i32]);
        let mut fresh = model.make_cache();
        let logits = model.forward(&input, &mut fresh)?;
        let next = argmax_axis(last_position(&logits), -1, None)?;
        sequence.push(next.try_item_cast::<u32>()?);
    }
    ensure(
        generated == sequence[PROMPT.len()..],
        format!(
            "generated {generated:?}, recomputed {:?}",
            &sequence[PROMPT.len()..]
        ),
    )?;
    println!("generation: {n} greedy tokens {generated:?}, as recomputed without a cache");
    Ok(())
}

/// Our own architecture, next to the zoo's in the registry: found by name, loaded from a
/// checkpoint with known weights (under a legacy name its rule renames), every logit checked.
fn own_architecture(scratch: &Path) -> Result<()> {
    let names: Vec<&str> = registry::entries().iter().flat_map(|e| e.names()).collect();
    for name in ["llama", "mistral", "qwen3", "downstream_bigram"] {
        ensure(
            names.contains(&name),
            format!("`{name}` is not in the registry: {names:?}"),
        )?;
    }
    let entry = registry::find("downstream_bigram", &[])?;
    ensure(
        entry.rust_type.ends_with("bigram::Model"),
        format!("`downstream_bigram` is served by `{}`", entry.rust_type),
    )?;
    registry::check()?;
    println!(
        "registry: {} names, `downstream_bigram` served by `{}` next to `llama`",
        names.len(),
        entry.rust_type
    );

    let (vocab, dim) = (16usize, 4usize);
    let wte: Vec<f32> = (0..vocab * dim)
        .map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0)
        .collect();
    let head: Vec<f32> = (0..vocab * dim)
        .map(|i| ((i * 3 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let bias: Vec<f32> = (0..vocab).map(|v| v as f32 / 16.0).collect();
    let dir = scratch.join("bigram");
    std::fs::create_dir_all(&dir)?;
    let config =
        json!({"model_type": "downstream_bigram", "vocab_size": vocab, "hidden_size": dim});
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let (v, d) = (vocab as i32, dim as i32);
    let weights = HashMap::from([
        // The legacy name: the rename rule of `#[mlx_model]` maps it to `embed_tokens`.
        ("wte.weight", Array::from_slice(&wte, &[v, d])),
        ("lm_head.weight", Array::from_slice(&head, &[v, d])),
        ("lm_head.bias", Array::from_slice(&bias, &[v])),
    ]);
    Array::save_safetensors(weights, None, dir.join("model.safetensors"))?;
    let source = dir.to_str().ok_or("the scratch path is not UTF-8")?;
    let mut loaded = load(source)?;
    ensure(
        loaded.model.model_type() == "downstream_bigram",
        format!("loaded a `{}`", loaded.model.model_type()),
    )?;
    let ids = [3u32, 0, 15, 3];
    let input = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let logits = loaded.model.forward(&input, &mut [])?;
    ensure(
        logits.shape() == [1, ids.len() as i32, v],
        format!("bigram logits have shape {:?}", logits.shape()),
    )?;
    let expected: Vec<f32> = ids
        .iter()
        .flat_map(|&t| {
            let e = &wte[t as usize * dim..][..dim];
            let (head, bias) = (&head, &bias);
            (0..vocab).map(move |o| {
                let w = &head[o * dim..][..dim];
                bias[o] + e.iter().zip(w).map(|(a, b)| a * b).sum::<f32>()
            })
        })
        .collect();
    let diff = max_abs_diff(&host(&logits)?, &expected);
    ensure(
        diff < 1e-6,
        format!("bigram logits differ from the host computation by {diff}"),
    )?;
    println!(
        "own architecture: `load` built a downstream_bigram, logits {:?} within {diff:.1e} of the host",
        logits.shape()
    );
    Ok(())
}

/// Fills every parameter with seeded noise (the constructors leave zeros for the loader).
fn randomize(model: &mut impl ModuleParameters, seed: u64) -> Result<()> {
    random::seed(seed)?;
    let mut params: Vec<_> = model.parameters_mut().flatten().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0)); // the same draws for the same names, run after run
    for (name, p) in params {
        let noise = random::normal::<f32>(p.shape(), 0.0, 0.3, None)?;
        // Norm scales near one, as trained ones are.
        *p = if name.contains("norm") {
            noise.add(Array::from_f32(1.0))?
        } else {
            noise
        };
    }
    Ok(())
}

fn save_parameters(model: &impl ModuleParameters, path: &Path) -> Result<()> {
    let params = model.parameters().flatten();
    let arrays = params.iter().map(|(k, v)| (k.to_string(), (*v).clone()));
    Array::save_safetensors(arrays, None, path)?;
    Ok(())
}

/// The values of `a` as float32, on the host.
fn host(a: &Array) -> Result<Vec<f32>> {
    let a = a.as_type::<f32>()?;
    a.eval()?;
    Ok(a.try_as_slice::<f32>()?.to_vec())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn ensure(ok: bool, message: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(message.into().into())
    }
}

/// The last position of `[batch, length, vocab]` logits: `[batch, vocab]`.
fn last_position(logits: &Array) -> Array {
    logits.index((.., -1, ..))
}

/// A scratch folder for the checkpoints, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("mlx-models-downstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
