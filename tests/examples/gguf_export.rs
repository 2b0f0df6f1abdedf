//! Writes a GGUF checkpoint as an MLX folder that mlx-lm loads: `config.json` (with
//! `quantization` for the blocks kept quantized), `model.safetensors` under Hugging Face names,
//! `tokenizer.json` and `tokenizer_config.json` (chat template, special tokens) built from the
//! GGUF vocabulary. For benchmarks that run the reference on the same weights as ours
//! (`scripts/bench/serve.py`):
//!
//!     cargo run --release -p mlx-models-tests --example gguf_export -- FILE.gguf OUT_DIR

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use mlx_models::gguf::GgufCheckpoint;
use serde_json::{json, Value};

fn export(gguf: &PathBuf, out: &PathBuf) -> Result<(), String> {
    let file = GgufCheckpoint::open(gguf).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut config = file.config().map_err(|e| e.to_string())?;
    let eos = file.eos_token_ids().map_err(|e| e.to_string())?;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("eos_token_id".into(), json!(eos));
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(out.join("config.json"), text).map_err(|e| e.to_string())?;

    let weights = file.weights().map_err(|e| e.to_string())?;
    let meta = HashMap::from([("format".to_owned(), "mlx".to_owned())]);
    mlx_rs::Array::save_safetensors(
        weights.iter().map(|(k, a)| (k.as_str(), a)),
        &meta,
        out.join("model.safetensors"),
    )
    .map_err(|e| e.to_string())?;

    let tokenizer = file.tokenizer().map_err(|e| e.to_string())?;
    tokenizer
        .inner()
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| e.to_string())?;
    let mut tc = serde_json::Map::new();
    tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    for (k, v) in tokenizer.special_tokens() {
        tc.insert(k.clone(), json!(v));
    }
    if let Some(template) = file
        .string("tokenizer.chat_template")
        .map_err(|e| e.to_string())?
    {
        tc.insert("chat_template".into(), Value::String(template));
    }
    let text = serde_json::to_string_pretty(&tc).map_err(|e| e.to_string())?;
    std::fs::write(out.join("tokenizer_config.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [gguf, out] = args.as_slice() else {
        eprintln!("usage: gguf_export FILE.gguf OUT_DIR");
        return ExitCode::from(2);
    };
    match export(gguf, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
