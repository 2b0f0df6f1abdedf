//! The continuous-batching engine (`mlx_models::engine`): requests that arrive while others
//! are decoding join the running batch and leave it when done, and each one's greedy tokens
//! are what that prompt gives alone (`model_stream`), on a model whose caches batch (llama),
//! one whose windows do not (gemma3_text, decoded row by row) and a recurrent one (mamba2).
//! Prompts that share a prefix with a finished request reuse its cache and still give the
//! same tokens; a request whose listener goes away frees its slot; bad requests fail alone.

use std::sync::{Arc, Mutex};

use mlx_models::engine::{Engine, EngineConfig, Event, Request};
use mlx_models::generate::{model_stream, FinishReason, GenerationConfig};
use mlx_models::load::{load_dir, LoadOptions};
use mlx_models::sampling::{LogitsConfig, SamplerConfig};
use mlx_models_tests::parity::fixtures;

type Log = Arc<Mutex<Vec<Event>>>;

fn request(prompt: &[u32], max_tokens: usize) -> (Request, Log) {
    let log: Log = Arc::default();
    let sink_log = Arc::clone(&log);
    let request = Request {
        prompt: prompt.to_vec(),
        max_tokens,
        sampler: SamplerConfig::default(),
        logits: LogitsConfig::default(),
        top_logprobs: None,
        sink: Box::new(move |e| {
            sink_log.lock().expect("log").push(e);
            true
        }),
    };
    (request, log)
}

fn tokens(log: &Log) -> Vec<u32> {
    log.lock()
        .expect("log")
        .iter()
        .filter_map(|e| match e {
            Event::Token { token, .. } => Some(*token),
            _ => None,
        })
        .collect()
}

fn finished(log: &Log) -> Option<FinishReason> {
    log.lock().expect("log").iter().find_map(|e| match e {
        Event::Finished { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn cached_tokens(log: &Log) -> Option<usize> {
    log.lock().expect("log").iter().find_map(|e| match e {
        Event::Started { cached_tokens, .. } => Some(*cached_tokens),
        _ => None,
    })
}

/// The prompt's greedy tokens alone (no end-of-sequence token: the engine's config has none).
fn alone(arch: &str, case: &str, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut loaded = load_dir(&fixtures(arch).join(case), &LoadOptions::default()).expect("load");
    let mut cache = loaded.model.make_cache();
    let config = GenerationConfig {
        max_tokens,
        eos_token_ids: Vec::new(),
        ..Default::default()
    };
    model_stream(loaded.model.as_mut(), &mut cache, prompt, config)
        .expect("stream")
        .map(|t| t.expect("token").token)
        .collect()
}

fn engine(arch: &str, case: &str, max_concurrency: usize) -> Engine {
    let loaded = load_dir(&fixtures(arch).join(case), &LoadOptions::default()).expect("load");
    let config = EngineConfig {
        max_concurrency,
        prefill_step_size: 5,
        prompt_cache_bytes: 64 << 20,
        eos_token_ids: Vec::new(),
    };
    Engine::new(loaded.model, config).expect("engine")
}

fn run_until_idle(engine: &mut Engine) {
    for _ in 0..10_000 {
        if engine.is_idle() {
            return;
        }
        engine.step();
    }
    panic!("the engine did not finish");
}

/// Four prompts of different lengths, two of them arriving while the first two decode.
fn staggered_requests_match_each_prompt_alone(arch: &str, case: &str, batched: bool) {
    let base: Vec<u32> = vec![1, 5, 9, 33, 7, 100, 42, 3, 250, 17, 64, 128];
    let prompts: Vec<Vec<u32>> = vec![
        base.clone(),
        base[3..9].to_vec(),
        vec![200, 11, 4],
        base.iter().rev().copied().collect(),
    ];
    let limits = [9, 12, 6, 10];
    let mut engine = engine(arch, case, 3);
    assert_eq!(engine.is_batched(), batched, "{arch}");
    let mut logs = Vec::new();
    for (p, &n) in prompts.iter().zip(&limits).take(2) {
        let (r, log) = request(p, n);
        engine.submit(r);
        logs.push(log);
    }
    for _ in 0..6 {
        engine.step();
    }
    for (p, &n) in prompts.iter().zip(&limits).skip(2) {
        let (r, log) = request(p, n);
        engine.submit(r);
        logs.push(log);
    }
    run_until_idle(&mut engine);
    for ((p, &n), log) in prompts.iter().zip(&limits).zip(&logs) {
        assert_eq!(finished(log), Some(FinishReason::Length), "{arch} {p:?}");
        assert_eq!(tokens(log), alone(arch, case, p, n), "{arch}: prompt {p:?}");
    }
}

#[test]
fn llama_requests_joining_and_leaving_the_batch_get_their_own_tokens() {
    staggered_requests_match_each_prompt_alone("llama", "untied", true);
}

#[test]
fn sliding_window_requests_decoded_row_by_row_get_their_own_tokens() {
    staggered_requests_match_each_prompt_alone("gemma3_text", "untied_pattern2_window8", false);
}

#[test]
fn recurrent_requests_decoded_row_by_row_get_their_own_tokens() {
    let case = mlx_models_tests::parity::cases("mamba2")
        .into_iter()
        .next()
        .expect("a mamba2 case");
    staggered_requests_match_each_prompt_alone("mamba2", &case, false);
}

/// Turn 2 of a conversation (turn 1's prompt and reply, then more) reuses turn 1's cache and
/// gives the tokens it gives from scratch.
#[test]
fn a_shared_prefix_is_reused_from_the_prompt_cache() {
    for (arch, case) in [
        ("llama", "untied"),
        ("gemma3_text", "untied_pattern2_window8"),
    ] {
        let turn1: Vec<u32> = vec![1, 5, 9, 33, 7, 100, 42, 3];
        let mut engine = engine(arch, case, 2);
        let (r, log1) = request(&turn1, 6);
        engine.submit(r);
        run_until_idle(&mut engine);
        let reply = tokens(&log1);
        assert_eq!(cached_tokens(&log1), Some(0));
        assert_eq!(engine.prompt_cache().len(), 1, "{arch}");

        let mut turn2 = turn1.clone();
        turn2.extend(&reply);
        turn2.extend([250, 17, 64]);
        let (r, log2) = request(&turn2, 7);
        engine.submit(r);
        run_until_idle(&mut engine);
        // The cache holds turn 1's prompt and its whole reply: the step that read back the
        // last reply token had already fed it (decoding runs one step ahead).
        let reused = turn1.len() + reply.len();
        let cached = cached_tokens(&log2);
        if arch == "llama" {
            assert_eq!(cached, Some(reused), "{arch}");
        } else {
            // A rotating window cannot be trimmed back once it has wrapped: no reuse then,
            // and never a wrong answer.
            assert!(
                cached == Some(reused) || cached == Some(0),
                "{arch}: {cached:?}"
            );
        }
        assert_eq!(tokens(&log2), alone(arch, case, &turn2, 7), "{arch}");

        // A prompt that diverges inside the cached tokens reuses the common part only.
        let mut other = turn1[..5].to_vec();
        other.extend([77, 78]);
        let (r, log3) = request(&other, 4);
        engine.submit(r);
        run_until_idle(&mut engine);
        if arch == "llama" {
            assert_eq!(cached_tokens(&log3), Some(5), "{arch}");
        }
        assert_eq!(tokens(&log3), alone(arch, case, &other, 4), "{arch}");
    }
}

/// A request whose listener is gone leaves at the next step and lets a waiting one in; a
/// request with bad settings fails alone.
#[test]
fn gone_listeners_free_their_slot_and_bad_requests_fail_alone() {
    let mut engine = engine("llama", "untied", 1);
    let heard = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&heard);
    let leaving = Request {
        prompt: vec![1, 5, 9],
        max_tokens: 1000,
        sampler: SamplerConfig::default(),
        logits: LogitsConfig::default(),
        top_logprobs: None,
        sink: Box::new(move |e| {
            let mut n = counter.lock().expect("count");
            if matches!(e, Event::Token { .. }) {
                *n += 1;
            }
            *n < 3
        }),
    };
    engine.submit(leaving);
    let (next, log) = request(&[4, 8, 15, 16], 5);
    engine.submit(next);
    let bad_sampler = SamplerConfig {
        temperature: f32::NAN,
        ..SamplerConfig::default()
    };
    let (mut bad, bad_log) = request(&[1, 2], 4);
    bad.sampler = bad_sampler;
    engine.submit(bad);
    let (empty, empty_log) = request(&[], 4);
    engine.submit(empty);
    run_until_idle(&mut engine);
    assert_eq!(
        *heard.lock().expect("count"),
        3,
        "the leaving request stops at once"
    );
    assert_eq!(tokens(&log), alone("llama", "untied", &[4, 8, 15, 16], 5));
    for (what, log) in [("NaN temperature", &bad_log), ("empty prompt", &empty_log)] {
        let events = log.lock().expect("log").clone();
        assert!(
            matches!(events.as_slice(), [Event::Failed { .. }]),
            "{what}: {events:?}"
        );
    }
}

/// With `top_logprobs`, each token carries its log-probability, which is the largest of the
/// listed ones under greedy decoding, and the list is sorted.
#[test]
fn logprobs_come_with_each_token() {
    let mut engine = engine("llama", "untied", 2);
    let (mut r, log) = request(&[1, 5, 9, 33], 5);
    r.top_logprobs = Some(3);
    engine.submit(r);
    run_until_idle(&mut engine);
    let events = log.lock().expect("log").clone();
    let mut seen = 0;
    for e in events {
        if let Event::Token {
            token,
            logprob,
            top_logprobs,
        } = e
        {
            seen += 1;
            assert_eq!(top_logprobs.len(), 3);
            assert_eq!(top_logprobs[0].0, token, "greedy picks the most likely");
            assert!((top_logprobs[0].1 - logprob).abs() < 1e-6);
            assert!(logprob <= 0.0 && logprob.is_finite());
            assert!(top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
        }
    }
    assert_eq!(seen, 5);
}

/// A request that ends at an end-of-sequence token: the token is not sent, the request
/// finishes with `Stop`, and its cache (which had already been fed that token, decoding running
/// one step ahead) goes to the prompt cache without it, so a follow-up reuses exactly the
/// prompt and the sent tokens.
#[test]
fn an_end_of_sequence_token_ends_the_request_and_stays_out_of_the_prompt_cache() {
    let prompt: Vec<u32> = vec![1, 5, 9, 33, 7, 100, 42, 3];
    let greedy = alone("llama", "untied", &prompt, 6);
    let eos = greedy[3];
    assert!(
        !greedy[..3].contains(&eos),
        "pick a case whose 4th token is new: {greedy:?}"
    );
    let loaded =
        load_dir(&fixtures("llama").join("untied"), &LoadOptions::default()).expect("load");
    let config = EngineConfig {
        max_concurrency: 2,
        prefill_step_size: 5,
        prompt_cache_bytes: 64 << 20,
        eos_token_ids: vec![eos],
    };
    let mut engine = Engine::new(loaded.model, config).expect("engine");
    let (r, log) = request(&prompt, 6);
    engine.submit(r);
    run_until_idle(&mut engine);
    assert_eq!(tokens(&log), greedy[..3].to_vec());
    assert_eq!(finished(&log), Some(FinishReason::Stop));

    let mut next = prompt.clone();
    next.extend(&greedy[..3]);
    next.push(250);
    let (r, log) = request(&next, 3);
    engine.submit(r);
    run_until_idle(&mut engine);
    assert_eq!(cached_tokens(&log), Some(prompt.len() + 3));
    let expected: Vec<u32> = alone("llama", "untied", &next, 3)
        .into_iter()
        .take_while(|t| *t != eos)
        .collect();
    assert_eq!(tokens(&log), expected);
}
