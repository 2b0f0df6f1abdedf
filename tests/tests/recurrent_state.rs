//! Going back to an earlier position on models with recurrent state (`cache::Snapshot`), which
//! the reference cannot do (its arrays cache cannot be trimmed):
//!
//! - a conversation's turn 2 continued from a snapshot taken at the end of turn 1, after the
//!   cache went on to something else, gives what turn 2 gives from scratch;
//! - speculative decoding with recurrent targets and drafts (restore and feed the kept tokens
//!   again where a draft was rejected) gives the target's own greedy tokens, the reference's,
//!   and leaves the caches where a plain decode would;
//! - prompt-cache files carry the recurrent state (`cache-prompt`, then `generate
//!   --prompt-cache-file` feeds only the new tokens);
//! - batch generation over left-padded rows (padding masked out of the recurrent state):
//!   each row gives what its prompt gives alone.
//!
//! The models are the parity fixtures of mamba2, mamba, lfm2 (a hybrid of convolutions and
//! attention), the hybrids of Mamba2 and attention (nemotron_h, whose feed-forward blocks keep
//! no cache; granitemoehybrid; falcon_h1, with a cache list per layer), jamba, plamo2 and
//! recurrent_gemma (RG-LRU state and a rotating window; not in batch generation, which has no
//! batched rotating cache yet), baichuan_m1 (a convolution's state beside each layer's key/value
//! cache, rotating in its sliding layers; in batch generation without them) and llama (trimmed,
//! for a mixed pair).

use mlx_models::batch::{batch_generate, BatchPrompt};
use mlx_models::cache::{Cache, Snapshot};
use mlx_models::generate::GenerationConfig;
use mlx_models::load::{load_dir, LoadOptions, LoadedModel};
use mlx_models::speculative::speculative_generate;
use mlx_models_tests::parity::fixtures;
use mlx_models_tests::reference::assert_close;
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{random, Array, Dtype};

const TOL: f32 = 1e-4;

fn load(arch: &str, case: &str) -> (LoadedModel, Vec<u32>, Vec<u32>) {
    let dir = fixtures(arch).join(case);
    let loaded = load_dir(&dir, &LoadOptions::default()).expect("load");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("json"))
            .expect("reference.json");
    let ids = |k: &str| -> Vec<u32> {
        meta[k]
            .as_array()
            .expect(k)
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect()
    };
    (loaded, ids("prompt"), ids("tokens"))
}

fn ids(tokens: &[u32]) -> Array {
    Array::from_slice(tokens, &[1, tokens.len() as i32])
}

fn last(logits: &Array) -> Array {
    let l = logits.dim(1);
    logits
        .index((0, l - 1))
        .as_dtype(Dtype::Float32)
        .expect("cast")
}

#[test]
fn turn_two_from_a_snapshot_equals_turn_two_from_scratch() {
    for (arch, case) in [
        ("mamba2", "tied"),
        ("mamba", "quantized_4bit"),
        ("lfm2", "attn_idxs"),
        ("qwen3_next", "moe"),
        ("qwen3_5", "text_config"),
        ("nemotron_h", "moe_shared"),
        ("granitemoehybrid", "nope_untied_biases"),
        ("falcon_h1", "norm_untied_biases"),
        ("jamba", "periods"),
        ("recurrent_gemma", "cyclic_blocks"),
        ("plamo2", "step2"),
        ("baichuan_m1", "sliding_layers"),
    ] {
        let (mut loaded, prompt, tokens) = load(arch, case);
        let model = loaded.model.as_mut();
        let (turn1, turn2) = (&prompt[..], &tokens[..10]);
        let other = &tokens[10..20];

        let mut cache = model.make_cache();
        drop(model.forward(&ids(turn1), &mut cache).expect("turn 1"));
        let snapshot = Snapshot::take(&cache);
        assert!(
            snapshot.nbytes() > 0,
            "{arch}: recurrent state kept by value"
        );
        // The conversation goes elsewhere (another turn 2, a few decode steps), then back.
        drop(
            model
                .forward(&ids(other), &mut cache)
                .expect("another turn"),
        );
        drop(
            model
                .forward(&ids(&other[..1]), &mut cache)
                .expect("a step"),
        );
        snapshot.restore(&mut cache).expect("restore");
        let from_snapshot = last(&model.forward(&ids(turn2), &mut cache).expect("turn 2"));

        let mut fresh = model.make_cache();
        let all: Vec<u32> = turn1.iter().chain(turn2).copied().collect();
        let from_scratch = last(&model.forward(&ids(&all), &mut fresh).expect("from scratch"));
        assert_close(
            &format!("{arch}: turn 2"),
            &from_snapshot,
            &from_scratch,
            TOL,
        );

        // A snapshot of other caches is refused, not misapplied.
        let mut wrong = vec![Cache::kv(); cache.len() + 1];
        assert!(snapshot.restore(&mut wrong).is_err(), "{arch}: layer count");
    }
}

/// The target's own checkpoint with every floating-point weight shaken by a relative noise of
/// `scale`, so that it agrees with the target on some drafted tokens and not on others (rounds then
/// rewind part of their drafts).
fn shaken_draft(arch: &str, case: &str, seed: u64, scale: f32) -> LoadedModel {
    let (mut draft, _, _) = load(arch, case);
    // Keys of their own (not the global seed, which tests running alongside share).
    for (i, (_, w)) in draft
        .model
        .parameters_mut()
        .flatten()
        .into_iter()
        .enumerate()
    {
        if w.dtype() != Dtype::Float32 {
            continue;
        }
        let key = random::key(seed + i as u64).expect("key");
        let noise = random::normal::<f32>(w.shape(), None, None, Some(&key)).expect("noise");
        let factor = noise.multiply(Array::from_f32(scale)).expect("scale");
        *w = w
            .multiply(factor.add(Array::from_f32(1.0)).expect("1 +"))
            .expect("shake");
    }
    draft
}

#[test]
fn speculative_decoding_rewinds_recurrent_state() {
    let pairs = [
        ("mamba2", "tied", "mamba2", 0.05),
        ("mamba", "quantized_4bit", "mamba", 0.05),
        ("lfm2", "attn_idxs", "lfm2", 0.05),
        ("qwen3_next", "moe", "qwen3_next", 0.05),
        ("nemotron_h", "moe_shared", "nemotron_h", 0.05),
        (
            "granitemoehybrid",
            "nope_untied_biases",
            "granitemoehybrid",
            0.05,
        ),
        ("falcon_h1", "norm_untied_biases", "falcon_h1", 0.05),
        ("jamba", "periods", "jamba", 0.05),
        ("recurrent_gemma", "cyclic_blocks", "recurrent_gemma", 0.05),
        ("plamo2", "step2", "plamo2", 0.05),
        ("baichuan_m1", "sliding_layers", "baichuan_m1", 0.05),
        // A trimmed target with a recurrent draft.
        ("llama", "untied", "mamba2", 0.0),
    ];
    for (arch, case, draft_arch, shake) in pairs {
        let (mut target, prompt, want) = load(arch, case);
        let mut draft = if draft_arch == arch {
            shaken_draft(arch, case, 7, shake)
        } else {
            load(draft_arch, "tied").0
        };
        let config = GenerationConfig {
            max_tokens: want.len(),
            ..Default::default()
        };
        let mut target_cache = target.model.make_cache();
        let mut draft_cache = draft.model.make_cache();
        let mut got = Vec::new();
        let stats = speculative_generate(
            target.model.as_mut(),
            &mut target_cache,
            draft.model.as_mut(),
            &mut draft_cache,
            &prompt,
            &config,
            3,
            |t| {
                got.push(t.token);
                true
            },
        )
        .unwrap_or_else(|e| panic!("{arch} with a {draft_arch} draft: {e}"));
        let what = format!("{arch}/{case} with a {draft_arch} draft");
        eprintln!(
            "{what}: {} of {} drafted tokens accepted",
            stats.accepted, stats.drafted
        );
        assert_eq!(got, want, "{what}: the target's greedy tokens");
        assert!(
            stats.accepted < stats.drafted,
            "{what}: some drafts rejected ({} of {})",
            stats.accepted,
            stats.drafted
        );
        if draft_arch == arch {
            assert!(stats.accepted > 0, "{what}: some drafts accepted");
        }

        // The target's cache is where a plain decode leaves it: everything but the last token.
        let model = target.model.as_mut();
        let next = last(
            &model
                .forward(&ids(&got[got.len() - 1..]), &mut target_cache)
                .expect("next"),
        );
        let all: Vec<u32> = prompt.iter().chain(&got).copied().collect();
        let full = last(&model.forward(&ids(&all), &mut []).expect("full"));
        assert_close(
            &format!("{what}: the cache after generating"),
            &next,
            &full,
            TOL,
        );
    }
}

/// `cache-prompt` on a model with recurrent state saves that state (in the reference's file
/// layout), and `generate --prompt-cache-file` continues from it without feeding the cached
/// prompt again: the same tokens as the whole prompt from scratch.
#[test]
fn prompt_cache_files_carry_recurrent_state() {
    use mlx_models_tests::cli::run;
    let tmp = std::env::temp_dir().join(format!("mlx-models-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    for (arch, case) in [
        ("mamba2", "tied"),
        ("lfm2", "attn_idxs"),
        ("mamba", "quantized_4bit"),
        ("qwen3_next", "dense_layers"),
        ("nemotron_h", "dense_biases"),
        ("granitemoehybrid", "moe_rope"),
        ("falcon_h1", "norm_untied_biases"),
        ("jamba", "block_types_untied_biases"),
        ("recurrent_gemma", "cyclic_blocks"),
        ("plamo2", "step3_untied"),
        ("baichuan_m1", "sliding_layers"),
    ] {
        let (_, prompt, want) = load(arch, case);
        let dir = fixtures(arch).join(case);
        let model = dir.to_str().expect("path");
        let list = |t: &[u32]| t.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let (head, tail) = prompt.split_at(7);
        let file = tmp.join(format!("{arch}.safetensors"));
        let file = file.to_str().expect("path");
        let out = run(&[
            "cache-prompt",
            "--model",
            model,
            "--prompt-tokens",
            &list(head),
            "--out",
            file,
        ]);
        assert!(
            out.status.success(),
            "{arch}: cache-prompt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = want.len().to_string();
        let out = run(&[
            "generate",
            "--model",
            model,
            "--prompt-cache-file",
            file,
            "--prompt-tokens",
            &list(tail),
            "--max-tokens",
            &n,
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{arch}: generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let got: Vec<u32> = json["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(got, want, "{arch}: continued from the file");
        assert_eq!(
            json["prompt_tokens"].as_array().map(Vec::len),
            Some(tail.len()),
            "{arch}: only the new tokens were fed"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn batch_generation_masks_padding_out_of_recurrent_state() {
    for (arch, case) in [
        ("mamba2", "tied"),
        ("lfm2", "attn_idxs"),
        ("mamba", "quantized_4bit"),
        ("qwen3_next", "dense_layers"),
        ("nemotron_h", "dense_biases"),
        ("granitemoehybrid", "moe_rope"),
        ("falcon_h1", "norm_untied_biases"),
        ("jamba", "block_types_untied_biases"),
        ("plamo2", "step3_untied"),
        ("baichuan_m1", "no_sliding_one_kv_head"),
    ] {
        let (mut loaded, prompt, want) = load(arch, case);
        let model = loaded.model.as_mut();
        let prompts = [prompt.clone(), prompt[5..9].to_vec(), prompt[2..3].to_vec()];
        let config = GenerationConfig {
            max_tokens: 6,
            ..Default::default()
        };
        let batch: Vec<BatchPrompt> = prompts
            .iter()
            .map(|p| BatchPrompt {
                tokens: p.clone(),
                max_tokens: None,
            })
            .collect();
        let (outputs, _) = batch_generate(model, &batch, &config).expect("batch");
        assert_eq!(
            outputs[0].tokens,
            want[..6],
            "{arch}: the longest row, the reference's tokens"
        );
        for (i, p) in prompts.iter().enumerate().skip(1) {
            let mut cache = model.make_cache();
            let mut alone = Vec::new();
            let mut next = p.clone();
            for _ in 0..6 {
                let logits = last(&model.forward(&ids(&next), &mut cache).expect("alone"));
                let tok = mlx_rs::ops::indexing::argmax_axis(&logits, 0, None)
                    .expect("argmax")
                    .item::<u32>();
                alone.push(tok);
                next = vec![tok];
            }
            assert_eq!(
                outputs[i].tokens, alone,
                "{arch}: row {i} of the batch against alone"
            );
        }
    }
}

/// baichuan_m1 keeps each layer's cache as a list of its key/value cache and the convolution's
/// state; the reference orders that list the other way, as a prompt-cache file it saved brings
/// it. Continued from caches in either order, the next logits are the same.
#[test]
fn a_cache_list_in_the_reference_order_continues_the_same() {
    let (mut loaded, prompt, tokens) = load("baichuan_m1", "sliding_layers");
    let model = loaded.model.as_mut();
    let mut ours = model.make_cache();
    drop(model.forward(&ids(&prompt), &mut ours).expect("prompt"));
    let mut theirs = ours.clone();
    for cache in &mut theirs {
        match cache {
            Cache::List(parts) if matches!(parts[..], [_, Cache::Arrays(_)]) => parts.reverse(),
            other => panic!("a list of a key/value cache and the state, not {other:?}"),
        }
    }
    let step = ids(&tokens[..3]);
    let want = model.forward(&step, &mut ours).expect("our order");
    let got = model
        .forward(&step, &mut theirs)
        .expect("the reference's order");
    assert_close("the reference's order", &got, &want, 0.0);
}
