//! `max_kv_size`: full-attention caches become rotating caches of that many positions (keeping
//! the first 4), and a greedy generation through them equals the reference's
//! `generate_step` with `RotatingKVCache(max_size, keep=4)` caches, on the llama fixture, with a
//! prompt longer than the cache prefilled in chunks.

use mlx_models::cache::Cache;
use mlx_models::generate::{generate_tokens, model_stream, GenerationConfig};
use mlx_models::load::{load_dir, LoadOptions};
use mlx_models_tests::reference::run_python;

const REFERENCE: &str = r#"
import sys, json
from pathlib import Path
import mlx.core as mx
from mlx_lm.utils import load_model
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import RotatingKVCache
model, _ = load_model(Path(sys.argv[1]))
prompt = json.loads(sys.argv[2])
max_kv, step, n = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cache = [RotatingKVCache(max_size=max_kv, keep=4) for _ in model.layers]
out = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=n, prompt_cache=cache, prefill_step_size=step)]
print(json.dumps(out))
"#;

#[test]
fn bounded_caches_generate_what_the_reference_generates() {
    let dir = mlx_models_tests::parity::fixtures("llama").join("untied");
    let mut loaded = load_dir(&dir, &LoadOptions::default()).expect("load");
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 256).collect();
    let (max_kv, step, n) = (16usize, 8usize, 30usize);

    let model = loaded.model.as_mut();
    let mut cache = Cache::for_prompt(model.make_cache(), Some(max_kv));
    assert!(
        cache.iter().all(|c| matches!(c, Cache::Rotating(_))),
        "every layer bounded"
    );
    let config = GenerationConfig {
        max_tokens: n,
        prefill_step_size: step,
        ..Default::default()
    };
    // Through `model_stream`: each prefill chunk evaluates only the caches.
    let ours: Vec<u32> = model_stream(&mut *model, &mut cache, &prompt, config)
        .expect("stream")
        .map(|t| t.expect("token").token)
        .collect();
    for c in &cache {
        assert!(
            c.size() <= max_kv as i32,
            "a cache holds {} positions",
            c.size()
        );
    }

    let prompt_json = serde_json::to_string(&prompt).expect("json");
    let numbers = [max_kv.to_string(), step.to_string(), n.to_string()];
    let args = [
        dir.as_os_str(),
        prompt_json.as_ref(),
        numbers[0].as_ref(),
        numbers[1].as_ref(),
        numbers[2].as_ref(),
    ];
    let want: Vec<u32> =
        serde_json::from_str(run_python(REFERENCE, &args).trim()).expect("reference tokens");
    assert_eq!(ours, want);

    // Unbounded, the same prompt continues differently once it outgrows the window.
    let mut full = model.make_cache();
    let config = GenerationConfig {
        max_tokens: n,
        prefill_step_size: step,
        ..Default::default()
    };
    let unbounded: Vec<u32> = generate_tokens(&prompt, config, |t| model.forward(t, &mut full))
        .expect("stream")
        .map(|t| t.expect("token").token)
        .collect();
    assert_ne!(
        unbounded, ours,
        "the window changed nothing: the test would not notice a bug"
    );
}

#[test]
fn sliding_window_caches_stay_as_the_model_made_them() {
    let caches = Cache::for_prompt(
        vec![Cache::rotating(8, 0), Cache::kv(), Cache::arrays(2)],
        Some(64),
    );
    assert!(matches!(&caches[0], Cache::Rotating(_)));
    assert!(matches!(&caches[1], Cache::Rotating(_)));
    assert!(matches!(&caches[2], Cache::Arrays(_)));
    assert!(matches!(
        Cache::for_prompt(vec![Cache::kv()], None)[0],
        Cache::Kv(_)
    ));
}
