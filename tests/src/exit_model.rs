//! A float32 llama made at test time, large enough that OpenBLAS runs its products on its
//! worker threads and that a decode step takes milliseconds, with an end-of-sequence token
//! that greedy generation reaches after a few tokens: the setting in which a process used to
//! hang at exit (a step still in flight inside OpenBLAS when its destructor ran).

use std::path::{Path, PathBuf};

use mlx_models::args::ModelArgs;
use mlx_models::generate::{model_stream, GenerationConfig};
use mlx_models::load::{load_dir, LoadOptions};
use mlx_models::model::Architecture;
use mlx_models_zoo::llama::{self, LlamaArgs};
use mlx_rs::module::ModuleParameters;
use mlx_rs::{random, Array};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The prompt the model is made for.
pub const PROMPT: [u32; 4] = [1, 2, 3, 4];

/// The sizes of the model.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `vocab_size`.
    pub vocab: usize,
}

impl Sizes {
    /// About 62M parameters (247 MB in float32): a decode step of tens of milliseconds here,
    /// every product above OpenBLAS's threading threshold.
    pub const DEFAULT: Sizes = Sizes {
        hidden: 1024,
        intermediate: 2816,
        layers: 4,
        vocab: 8192,
    };
}

/// The checkpoint written by [`write()`].
#[derive(Debug, Clone)]
pub struct ExitModel {
    /// Its folder (config.json with `eos_token_id`, model.safetensors).
    pub dir: PathBuf,
    /// The greedy tokens generated from [`PROMPT`], the last one the end-of-sequence token.
    pub tokens: Vec<u32>,
    /// The end-of-sequence token.
    pub eos: u32,
}

/// Writes a random float32 llama of `sizes` into `dir` and makes its `eos_token_id` the
/// fourth new token greedy generation produces from [`PROMPT`] (or the first later one not
/// produced before), so that generation stops at the end-of-sequence token after a few steps.
pub fn write(dir: &Path, sizes: Sizes) -> Result<ExitModel> {
    std::fs::create_dir_all(dir)?;
    let heads = 16;
    let mut config = json!({
        "model_type": "llama",
        "hidden_size": sizes.hidden,
        "intermediate_size": sizes.intermediate,
        "num_hidden_layers": sizes.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads / 4,
        "vocab_size": sizes.vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
    });
    let args = LlamaArgs::from_config(&config)?;
    let mut model = llama::Model::new(&args)?;
    random::seed(11)?;
    let mut params: Vec<_> = model.parameters_mut().flatten().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, p) in params {
        *p = if name.contains("norm") {
            mlx_rs::ops::ones::<f32>(p.shape())?
        } else {
            random::normal::<f32>(p.shape(), 0.0, 0.05, None)?
        };
    }
    let weights = model.parameters().flatten();
    Array::save_safetensors(
        weights.iter().map(|(k, v)| (k.to_string(), (*v).clone())),
        None,
        dir.join("model.safetensors"),
    )?;
    std::fs::write(dir.join("config.json"), config.to_string())?;
    drop(model);

    // Greedy tokens without an end token, then the end token chosen among them.
    let mut loaded = load_dir(dir, &LoadOptions::default())?;
    let mut cache = loaded.model.make_cache();
    let generation = GenerationConfig {
        max_tokens: 12,
        ..Default::default()
    };
    let tokens = model_stream(loaded.model.as_mut(), &mut cache, &PROMPT, generation)?
        .map(|t| t.map(|t| t.token))
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    let at = (3..tokens.len())
        .find(|&i| !tokens[..i].contains(&tokens[i]))
        .ok_or_else(|| format!("greedy tokens {tokens:?} repeat: no end token to pick"))?;
    let eos = tokens[at];
    config["eos_token_id"] = json!(eos);
    std::fs::write(dir.join("config.json"), config.to_string())?;
    Ok(ExitModel {
        dir: dir.to_path_buf(),
        tokens: tokens[..=at].to_vec(),
        eos,
    })
}
