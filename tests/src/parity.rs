//! The one parity check every architecture goes through, against fixtures the reference made
//! (`scripts/reference/parity.py`, one case script per architecture in
//! `scripts/reference/parity/`):
//!
//! - the checkpoint the reference saved loads strictly through our loader;
//! - model type and layer count match;
//! - prompt logits within 1e-4 (float32) of the reference's;
//! - the greedy continuation with the cache gives the reference's tokens, and each step's
//!   logits are within 1e-4;
//! - a full forward over prompt + continuation equals the token-by-token decode;
//! - for models with recurrent state, the prompt prefilled in chunks of 1, 7 and 64 tokens
//!   equals the one-shot prefill (its last logits, and the next decode step);
//! - a batch of two sequences equals the two run alone;
//! - float16 and bfloat16 runs: logits of the type the reference's give, finite, within a
//!   half-precision tolerance of the reference's half-precision logits, and the reference's
//!   greedy tokens when decoding with the cache.

use std::path::{Path, PathBuf};

use mlx_models::cache::Cache;
use mlx_models::load::{load_dir, LoadOptions, LoadedModel};
use mlx_models::model::LanguageModel;
use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{Array, Dtype};

use crate::reference::{assert_close, run_script, Fixture};

/// Logits tolerance in float32.
pub const TOL: f32 = 1e-4;

/// Logits tolerance in float16: about one unit in the last place at the logits' size (below
/// 8 here). Measured: every case equal to the reference's to the bit but mxfp4's (1.0e-6).
pub const HALF_TOL: f32 = 1e-2;

/// Logits tolerance in bfloat16 (one unit in the last place at 8). Measured: every case equal
/// to the reference's to the bit.
pub const BF16_TOL: f32 = 6e-2;

/// The output folder of `scripts/reference/parity/<arch>.py`.
pub fn fixtures(arch: &str) -> PathBuf {
    // Linking the architectures registers them.
    mlx_models_zoo::link();
    run_script(&format!("scripts/reference/parity/{arch}.py"))
}

/// The checkpoint's tensors as saved, through the model's `sanitize` once and then again:
/// the second pass changes nothing (an already converted checkpoint passes unchanged).
fn check_sanitize_is_idempotent(model: &dyn LanguageModel, dir: &Path, case: &str) {
    let mut raw = mlx_models::weights::Weights::new();
    for entry in std::fs::read_dir(dir).expect("case folder").flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".safetensors") && name != "reference.safetensors" {
            raw.extend(Array::load_safetensors(&path).expect("checkpoint tensors"));
        }
    }
    assert!(
        !raw.is_empty(),
        "{case}: no checkpoint tensors in {}",
        dir.display()
    );
    let once = model.sanitize(raw).expect("sanitize");
    let twice = model.sanitize(once.clone()).expect("sanitize again");
    let mut keys: Vec<&String> = once.keys().collect();
    keys.sort();
    let mut again: Vec<&String> = twice.keys().collect();
    again.sort();
    assert_eq!(
        keys, again,
        "{case}: sanitize renames converted weights again"
    );
    for (k, v) in &once {
        assert!(
            v.eq_values(&twice[k]).expect("compare"),
            "{case}: sanitize changes `{k}` again"
        );
    }
}

/// What one case measured.
#[derive(Debug)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Largest logit difference with the reference (prompt and decode steps).
    pub max_logit_diff: f32,
    /// Largest difference between full forward and incremental decode.
    pub max_decode_diff: f32,
    /// Largest difference with the reference's float16 and bfloat16 prompt logits.
    pub max_half_diff: [f32; 2],
}

fn load(dir: &Path, dtype: Option<Dtype>) -> LoadedModel {
    load_dir(
        dir,
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

fn ids(tokens: &[i32]) -> Array {
    Array::from_slice(tokens, &[1, tokens.len() as i32])
}

fn last_logits(logits: &Array) -> Array {
    let l = logits.shape()[1];
    logits
        .index((0, l - 1))
        .as_dtype(Dtype::Float32)
        .expect("cast")
}

/// Greedy decoding with the cache after `prompt`: the `steps` tokens chosen, and the last
/// position's logits (float32) after feeding each.
fn greedy_decode(
    model: &mut dyn LanguageModel,
    prompt: &[i32],
    steps: usize,
) -> (Vec<i32>, Vec<Array>) {
    let mut cache: Vec<Cache> = model.make_cache();
    let mut step = last_logits(&model.forward(&ids(prompt), &mut cache).expect("prefill"));
    let (mut tokens, mut logits) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let tok = argmax_axis(&step, 0, None)
            .expect("argmax")
            .item_exact::<u32>() as i32;
        tokens.push(tok);
        step = last_logits(
            &model
                .forward(&ids(&[tok]), &mut cache)
                .expect("decode step"),
        );
        logits.push(step.clone());
    }
    (tokens, logits)
}

/// Whether a layer cache holds recurrent state (an arrays cache, alone or in a list).
fn holds_state(cache: &Cache) -> bool {
    match cache {
        Cache::Arrays(_) => true,
        Cache::List(l) => l.iter().any(holds_state),
        _ => false,
    }
}

/// Runs every check on `<out>/<case>`.
pub fn check_case(out: &Path, case: &str) -> CaseReport {
    let dir = out.join(case);
    let reference = Fixture::load(&dir, "reference");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("reference.json is JSON");
    let prompt: Vec<i32> = meta["prompt"]
        .as_array()
        .expect("prompt")
        .iter()
        .map(|v| v.as_i64().expect("id") as i32)
        .collect();
    let want_tokens: Vec<i32> = reference.get("tokens").as_slice::<i32>().to_vec();

    let mut loaded = load(&dir, None);
    let model = loaded.model.as_mut();
    // The registered type the config's `model_type` (perhaps an alias) resolves to.
    let config_type = meta["model_type"].as_str().expect("model_type");
    let entry = mlx_models::registry::find(config_type, &[]).expect("registered model type");
    assert_eq!(model.model_type(), entry.model_type, "{case}: model type");
    assert_eq!(
        model.num_layers() as u64,
        meta["num_layers"].as_u64().expect("num_layers"),
        "{case}: layer count"
    );

    check_sanitize_is_idempotent(model, &dir, case);

    // Prompt logits, no cache.
    let logits = model.forward(&ids(&prompt), &mut []).expect("forward");
    let logits = logits.index(0).as_dtype(Dtype::Float32).expect("cast");
    let mut max_logit_diff = assert_close(
        &format!("{case}: prompt logits"),
        &logits,
        reference.get("prompt_logits"),
        TOL,
    );

    // Greedy decode with the cache.
    let (got_tokens, decoded) = greedy_decode(model, &prompt, want_tokens.len());
    let step_logits = reference.get("step_logits");
    for (i, (&tok, &want)) in got_tokens.iter().zip(&want_tokens).enumerate() {
        let so_far = &got_tokens[..=i];
        assert_eq!(
            tok, want,
            "{case}: greedy token {i} is {tok}, the reference chose {want} (so far {so_far:?})"
        );
        let d = assert_close(
            &format!("{case}: decode step {i} logits"),
            &decoded[i],
            &step_logits.index(i as i32),
            TOL,
        );
        max_logit_diff = max_logit_diff.max(d);
    }

    // Full forward over prompt + continuation equals the incremental decode: position
    // `prompt.len() + i` of the full forward predicts what decode step `i` did.
    let mut all = prompt.clone();
    all.extend_from_slice(&want_tokens);
    let full = model
        .forward(&ids(&all), &mut [])
        .expect("full forward")
        .as_dtype(Dtype::Float32)
        .expect("cast");
    let mut max_decode_diff = 0.0f32;
    for (i, d) in decoded.iter().enumerate() {
        let pos = (prompt.len() + i) as i32;
        let f = full.index((0, pos));
        max_decode_diff = max_decode_diff.max(assert_close(
            &format!("{case}: full forward vs decode at {pos}"),
            &f,
            d,
            TOL,
        ));
    }

    // Models that keep recurrent state: the prompt prefilled in chunks of 1, 7 and 64 tokens
    // gives the one-shot prompt's last logits, and the state it leaves decodes the first
    // greedy token as the one-shot prefill's did.
    if model.make_cache().iter().any(holds_state) {
        let last = logits.index(prompt.len() as i32 - 1);
        for chunk in [1, 7, 64] {
            let mut cache = model.make_cache();
            let mut out = None;
            for piece in prompt.chunks(chunk) {
                out = Some(
                    model
                        .forward(&ids(piece), &mut cache)
                        .expect("chunked prefill"),
                );
            }
            let out = last_logits(&out.expect("a prompt"));
            assert_close(
                &format!("{case}: prefill in chunks of {chunk}"),
                &out,
                &last,
                TOL,
            );
            let step = model
                .forward(&ids(&want_tokens[..1]), &mut cache)
                .expect("decode after a chunked prefill");
            assert_close(
                &format!("{case}: first decode step after chunks of {chunk}"),
                &last_logits(&step),
                &decoded[0],
                TOL,
            );
        }
    }

    // A batch of two equals each sequence alone.
    let other: Vec<i32> = prompt.iter().rev().copied().collect();
    let batch = Array::from_slice(
        &[prompt.clone(), other.clone()].concat(),
        &[2, prompt.len() as i32],
    );
    let batched = model.forward(&batch, &mut []).expect("batch forward");
    // Row 0 is the prompt, whose single-sequence logits were computed first.
    let single_b = model.forward(&ids(&other), &mut []).expect("single");
    assert_close(
        &format!("{case}: batch row 0"),
        &batched.index(0),
        &logits,
        TOL,
    );
    assert_close(
        &format!("{case}: batch row 1"),
        &batched.index(1),
        &single_b.index(0),
        TOL,
    );

    // Half precision, as a float16 or bfloat16 checkpoint runs: the logits' type is the
    // reference's, they are finite, and they are the reference's half-precision logits within
    // a tolerance that scales with the type's precision (same kernels, same order of operations).
    let mut max_half_diff = [0.0f32; 2];
    for (i, (dtype, name, tol)) in [
        (Dtype::Float16, "float16", HALF_TOL),
        (Dtype::Bfloat16, "bfloat16", BF16_TOL),
    ]
    .into_iter()
    .enumerate()
    {
        let mut half = load(&dir, Some(dtype));
        let out = half
            .model
            .forward(&ids(&prompt), &mut [])
            .unwrap_or_else(|e| panic!("{case}: {name} forward: {e}"));
        let want_dtype = meta[format!("{name}_logits_dtype")]
            .as_str()
            .unwrap_or(name);
        let got_dtype = format!("{:?}", out.dtype()).to_lowercase();
        assert_eq!(
            got_dtype, want_dtype,
            "{case}: a {name} run gives {got_dtype} logits, the reference's {want_dtype}"
        );
        let out = out.index(0).as_dtype(Dtype::Float32).expect("cast");
        let want = reference.get(&format!("{name}_prompt_logits"));
        // Finite, but where the reference's logits are the same infinity (phi3small's head
        // sets the tokenizer's unused ids to minus infinity).
        let finite = out
            .is_finite()
            .expect("isfinite")
            .logical_or(&out.eq(want).expect("eq"))
            .expect("or")
            .all(None)
            .expect("all")
            .item_exact::<bool>();
        assert!(finite, "{case}: {name} logits are not all finite");
        max_half_diff[i] = assert_close(&format!("{case}: {name} prompt logits"), &out, want, tol);

        // Greedy decoding with the cache in that precision picks the reference's tokens.
        let want_tokens: Vec<i32> = meta[format!("{name}_tokens")]
            .as_array()
            .unwrap_or_else(|| panic!("{case}: reference.json has no {name}_tokens"))
            .iter()
            .map(|v| v.as_i64().expect("token id") as i32)
            .collect();
        let (got_tokens, _) = greedy_decode(half.model.as_mut(), &prompt, want_tokens.len());
        assert_eq!(got_tokens, want_tokens, "{case}: {name} greedy tokens");
    }

    CaseReport {
        name: case.to_string(),
        max_logit_diff,
        max_decode_diff,
        max_half_diff,
    }
}

/// Runs [`check_case`] on every case folder of `arch`'s fixtures and prints a line each.
/// The case names of `scripts/reference/parity/<arch>.py` (its fixture folders), sorted.
pub fn cases(arch: &str) -> Vec<String> {
    let out = fixtures(arch);
    let mut cases: Vec<String> = std::fs::read_dir(&out)
        .expect("fixture folder")
        .flatten()
        .filter(|e| e.path().join("reference.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

pub fn check_arch(arch: &str) -> Vec<CaseReport> {
    let out = fixtures(arch);
    let cases = cases(arch);
    assert!(!cases.is_empty(), "no parity cases in {}", out.display());
    cases
        .iter()
        .map(|c| {
            let r = check_case(&out, c);
            eprintln!(
                "parity {arch}/{}: logits {:.2e}, full vs decode {:.2e}, float16 {:.2e}, bfloat16 {:.2e}",
                r.name, r.max_logit_diff, r.max_decode_diff, r.max_half_diff[0], r.max_half_diff[1]
            );
            r
        })
        .collect()
}

/// A batch of a long and a left-padded short sequence through batch caches (prefill, then one
/// decode step) equals each sequence run alone: the padding masks and each row's positions.
pub fn check_left_padded_batch(arch: &str, case: &str) {
    let dir = fixtures(arch).join(case);
    let mut loaded = load_dir(&dir, &LoadOptions::default()).expect("load");
    let model = loaded.model.as_mut();
    let long = [1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128];
    let short = [42, 3, 250, 17, 64, 128, 9, 77];
    let pad = (long.len() - short.len()) as i32;
    let mut alone = |t: &[i32]| {
        let ids = Array::from_slice(t, &[1, t.len() as i32]);
        model.forward(&ids, &mut []).expect("forward alone")
    };
    let long_alone = alone(&[&long[..], &[7]].concat());
    let short_alone = alone(&[&short[..], &[7]].concat());

    let batch = Array::from_slice(&[&long[..], &[0; 4], &short].concat(), &[2, 12]);
    let mut cache: Vec<Cache> = model
        .make_cache()
        .iter()
        // Windowed layers attend through a full batch cache: the prompts are shorter than
        // the windows, and each layer masks its own window.
        .map(|c| {
            c.batched(&[0, pad])
                .unwrap_or_else(|| Cache::batch(&[0, pad]))
        })
        .collect();
    let prefill = model.forward(&batch, &mut cache).expect("batch prefill");
    let step = model
        .forward(&Array::from_slice(&[7, 7], &[2, 1]), &mut cache)
        .expect("batch decode step");

    let what = |s: &str| format!("{arch}/{case}: {s}");
    assert_close(
        &what("long prefill"),
        &prefill.index((0, 11)),
        &long_alone.index((0, 11)),
        TOL,
    );
    assert_close(
        &what("long step"),
        &step.index((0, 0)),
        &long_alone.index((0, 12)),
        TOL,
    );
    assert_close(
        &what("short prefill"),
        &prefill.index((1, 11)),
        &short_alone.index((0, 7)),
        TOL,
    );
    assert_close(
        &what("short step"),
        &step.index((1, 0)),
        &short_alone.index((0, 8)),
        TOL,
    );
}
