//! The model-independent token stream, driven by closures that return fixed logits.

use std::cell::RefCell;

use mlx_models::generate::{
    generate_tokens, FinishReason, GenerateError, GenerationConfig, TokenStream,
};
use mlx_models::sampling::{log_softmax, LogitsConfig, Sampler, SamplerConfig};
use mlx_rs::error::Exception;
use mlx_rs::{Array, Dtype};

const VOCAB: i32 = 32;

/// Logits that put `target` far ahead, with a gentle slope over the others.
fn peaked(target: u32) -> Vec<f32> {
    (0..VOCAB as u32)
        .map(|t| if t == target { 10.0 } else { (t as f32) * 0.01 })
        .collect()
}

/// A "model" whose next token is the last input token plus one (mod VOCAB), returning
/// `[1, n, VOCAB]` logits; it records the inputs it saw.
fn counting_model(
    calls: &RefCell<Vec<Vec<u32>>>,
) -> impl FnMut(&Array) -> Result<Array, Exception> + '_ {
    move |tokens: &Array| {
        let ids: Vec<u32> = tokens.as_dtype(Dtype::Uint32)?.as_slice::<u32>().to_vec();
        calls.borrow_mut().push(ids.clone());
        let n = ids.len() as i32;
        let rows: Vec<f32> = ids
            .iter()
            .flat_map(|&t| peaked((t + 1) % VOCAB as u32))
            .collect();
        Ok(Array::from_slice(&rows, &[1, n, VOCAB]))
    }
}

fn config(max_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        max_tokens,
        ..GenerationConfig::default()
    }
}

#[test]
fn greedy_stream_with_chunked_prefill() {
    let calls = RefCell::new(Vec::new());
    let prompt = [3u32, 4, 5, 6, 7, 8];
    let mut cfg = config(5);
    cfg.prefill_step_size = 2;
    let prefilled = RefCell::new(Vec::new());
    let stream = generate_tokens(&prompt, cfg, counting_model(&calls))
        .unwrap()
        .with_prefill_hook(|chunk, done, total| {
            prefilled.borrow_mut().push((chunk.to_vec(), done, total));
            Ok(())
        });
    let out: Vec<_> = stream.map(Result::unwrap).collect();
    let tokens: Vec<u32> = out.iter().map(|t| t.token).collect();
    assert_eq!(tokens, vec![9, 10, 11, 12, 13]);
    // Prefill: all but the last prompt token, in chunks of 2; then the last token; then one
    // call per generated token (the last generated token is never fed back at max_tokens).
    let calls = calls.into_inner();
    assert_eq!(calls[0], vec![3, 4]);
    assert_eq!(calls[1], vec![5, 6]);
    assert_eq!(calls[2], vec![7]);
    assert_eq!(calls[3], vec![8]);
    assert_eq!(&calls[4..], &[vec![9], vec![10], vec![11], vec![12]]);
    assert_eq!(
        prefilled.into_inner(),
        vec![(vec![3, 4], 2, 6), (vec![5, 6], 4, 6), (vec![7], 5, 6)]
    );
    // Finish reasons and stats.
    assert!(out[..4].iter().all(|t| t.finish_reason.is_none()));
    assert_eq!(out[4].finish_reason, Some(FinishReason::Length));
    let stats = out[4].stats;
    assert_eq!(stats.prompt_tokens, 6);
    assert_eq!(stats.generation_tokens, 5);
    assert!(
        stats.prompt_tps > 0.0 && stats.generation_tps > 0.0,
        "{stats:?}"
    );
    assert!(stats.peak_memory_bytes > 0);
    assert_eq!(
        out.iter()
            .map(|t| t.stats.generation_tokens)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Printed like mlx-lm.
    let text = stats.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("Prompt: 6 tokens, {:.3} tokens-per-sec", stats.prompt_tps)
    );
    assert_eq!(
        lines[1],
        format!(
            "Generation: 5 tokens, {:.3} tokens-per-sec",
            stats.generation_tps
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "Peak memory: {:.3} GB",
            stats.peak_memory_bytes as f64 / 1e9
        )
    );
}

#[test]
fn stops_on_any_eos_and_yields_it_last() {
    let calls = RefCell::new(Vec::new());
    let mut cfg = config(100);
    cfg.eos_token_ids = vec![31, 12];
    let out: Vec<_> = generate_tokens(&[9], cfg, counting_model(&calls))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let tokens: Vec<u32> = out.iter().map(|t| t.token).collect();
    assert_eq!(tokens, vec![10, 11, 12]);
    assert_eq!(out.last().unwrap().finish_reason, Some(FinishReason::Stop));
}

#[test]
fn logprobs_of_chosen_tokens() {
    let fixed = peaked(7);
    let logits = Array::from_slice(&fixed, &[1, VOCAB]);
    let expected = log_softmax(&logits).unwrap();
    let expected: Vec<f32> = expected.as_slice::<f32>().to_vec();
    let model =
        |_: &Array| -> Result<Array, Exception> { Ok(Array::from_slice(&fixed, &[1, VOCAB])) };
    let out: Vec<_> = generate_tokens(&[1, 2], config(3), model)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in &out {
        assert_eq!(t.token, 7);
        assert!((t.logprob - expected[7]).abs() < 1e-6);
        assert_eq!(t.logprobs.shape(), &[VOCAB]);
        assert_eq!(t.logprobs.as_slice::<f32>(), expected.as_slice());
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_matches_the_sampler() {
    // Flat-ish logits so that sampling really varies.
    let fixed: Vec<f32> = (0..VOCAB).map(|t| ((t * 7919) % 13) as f32 * 0.3).collect();
    let sampler = SamplerConfig {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 20,
        seed: Some(42),
        ..SamplerConfig::default()
    };
    let run = || -> Vec<u32> {
        let cfg = GenerationConfig {
            max_tokens: 24,
            sampler: sampler.clone(),
            ..GenerationConfig::default()
        };
        let model = |_: &Array| -> Result<Array, Exception> {
            Ok(Array::from_slice(&fixed, &[1, 1, VOCAB]))
        };
        generate_tokens(&[0], cfg, model)
            .unwrap()
            .map(|t| t.unwrap().token)
            .collect()
    };
    let a = run();
    assert_eq!(a, run());
    assert!(
        a.iter().collect::<std::collections::HashSet<_>>().len() > 1,
        "{a:?}"
    );
    // The stream draws exactly as a sampler over log_softmax(logits) does.
    let mut direct = Sampler::new(sampler.clone()).unwrap();
    let lp = log_softmax(&Array::from_slice(&fixed, &[1, VOCAB])).unwrap();
    let b: Vec<u32> = (0..24)
        .map(|_| direct.sample(&lp).unwrap().as_slice::<u32>()[0])
        .collect();
    assert_eq!(a, b);
}

#[test]
fn penalties_see_prompt_and_generated_tokens() {
    // The model prefers token 5, then 6, then 7, ... by small margins; a presence penalty larger
    // than the margins forbids every token seen so far (prompt included).
    let fixed: Vec<f32> = (0..VOCAB)
        .map(|t| {
            if t >= 5 {
                2.0 - (t - 5) as f32 * 0.1
            } else {
                -5.0
            }
        })
        .collect();
    let cfg = GenerationConfig {
        max_tokens: 4,
        logits: LogitsConfig {
            presence_penalty: Some(1.0),
            presence_context_size: 20,
            ..LogitsConfig::default()
        },
        ..GenerationConfig::default()
    };
    let model =
        |_: &Array| -> Result<Array, Exception> { Ok(Array::from_slice(&fixed, &[1, VOCAB])) };
    let tokens: Vec<u32> = generate_tokens(&[6], cfg, model)
        .unwrap()
        .map(|t| t.unwrap().token)
        .collect();
    assert_eq!(tokens, vec![5, 7, 8, 9]);
}

#[test]
fn bad_inputs_are_errors() {
    let model =
        |_: &Array| -> Result<Array, Exception> { Ok(Array::from_slice(&peaked(1), &[1, VOCAB])) };
    assert!(matches!(
        generate_tokens(&[], config(3), model).err(),
        Some(GenerateError::EmptyPrompt)
    ));
    assert!(matches!(
        generate_tokens(&[1], config(0), model).err(),
        Some(GenerateError::InvalidConfig(_))
    ));
    let mut cfg = config(3);
    cfg.prefill_step_size = 0;
    assert!(matches!(
        generate_tokens(&[1], cfg, model).err(),
        Some(GenerateError::InvalidConfig(_))
    ));
    let mut cfg = config(3);
    cfg.sampler.temperature = -1.0;
    assert!(matches!(
        generate_tokens(&[1], cfg, model).err(),
        Some(GenerateError::Sampling(_))
    ));

    // Logits of a wrong shape.
    let wrong =
        |_: &Array| -> Result<Array, Exception> { Ok(Array::from_slice(&[0f32; 4], &[2, 2])) };
    let mut s = generate_tokens(&[1], config(3), wrong).unwrap();
    assert!(matches!(s.next(), Some(Err(GenerateError::LogitsShape(_)))));
    assert!(s.next().is_none(), "the stream ends after an error");

    // The model's own error comes through.
    #[derive(Debug)]
    struct Broken;
    impl std::fmt::Display for Broken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the model broke")
        }
    }
    impl std::error::Error for Broken {}
    let failing = |_: &Array| -> Result<Array, Broken> { Err(Broken) };
    let mut s: TokenStream<_> = generate_tokens(&[1, 2, 3], config(3), failing).unwrap();
    match s.next() {
        Some(Err(GenerateError::Model(e))) => assert_eq!(e.to_string(), "the model broke"),
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[test]
fn prefill_without_a_hook_and_errors_during_prefill() {
    let calls = RefCell::new(Vec::new());
    let mut cfg = config(2);
    cfg.prefill_step_size = 3;
    let prompt: Vec<u32> = (0..8).collect();
    let tokens: Vec<u32> = generate_tokens(&prompt, cfg.clone(), counting_model(&calls))
        .unwrap()
        .map(|t| t.unwrap().token)
        .collect();
    assert_eq!(tokens, vec![8, 9]);
    let calls = calls.into_inner();
    assert_eq!(&calls[..3], &[vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    assert_eq!(calls[3], vec![7]);
    // A hook's error stops the stream.
    let calls = RefCell::new(Vec::new());
    let mut s = generate_tokens(&prompt, cfg, counting_model(&calls))
        .unwrap()
        .with_prefill_hook(|_, done, _| {
            if done > 3 {
                Err(GenerateError::InvalidConfig("stop here".into()))
            } else {
                Ok(())
            }
        });
    assert!(matches!(
        s.next(),
        Some(Err(GenerateError::InvalidConfig(_)))
    ));
    assert!(s.next().is_none());
    drop(s);
    assert_eq!(calls.into_inner().len(), 2);
}

#[test]
fn prefill_progress_follows_each_chunk() {
    let calls = RefCell::new(Vec::new());
    let prompt = [3u32, 4, 5, 6, 7, 8, 9];
    let mut cfg = config(2);
    cfg.prefill_step_size = 2;
    let seen = RefCell::new(Vec::new());
    let stream = generate_tokens(&prompt, cfg, counting_model(&calls))
        .unwrap()
        .with_prefill_progress(|done, total| seen.borrow_mut().push((done, total)));
    let tokens: Vec<u32> = stream.map(|t| t.unwrap().token).collect();
    assert_eq!(tokens, vec![10, 11]);
    // All but the last prompt token, in chunks of two.
    assert_eq!(*seen.borrow(), vec![(2, 7), (4, 7), (6, 7)]);
}
