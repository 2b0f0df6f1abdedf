//! Sampling parameters and token ids out of range are typed errors, never panics.

use std::collections::BTreeMap;

use mlx_models::sampling::{
    apply_min_p, apply_top_k, apply_xtc, chosen_logprobs, greedy, log_softmax, LogitsConfig,
    Sampler, SamplerConfig, SamplingError,
};
use mlx_rs::Array;

fn logits() -> Array {
    Array::from_slice(&[0.5f32, 2.0, -1.0, 0.0, 1.0, 3.0, -2.0, 0.25], &[1, 8])
}

#[test]
fn sampler_parameters_are_checked() {
    let bad = [
        SamplerConfig {
            temperature: -0.5,
            ..Default::default()
        },
        SamplerConfig {
            temperature: f32::NAN,
            ..Default::default()
        },
        SamplerConfig {
            temperature: 1.0,
            min_p: 1.5,
            ..Default::default()
        },
        SamplerConfig {
            temperature: 1.0,
            min_tokens_to_keep: 0,
            ..Default::default()
        },
        SamplerConfig {
            temperature: 1.0,
            xtc_probability: 2.0,
            ..Default::default()
        },
        SamplerConfig {
            temperature: 1.0,
            xtc_probability: 0.5,
            xtc_threshold: 0.7,
            ..Default::default()
        },
        SamplerConfig {
            temperature: 1.0,
            top_p: f32::INFINITY,
            ..Default::default()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(
                Sampler::new(cfg.clone()),
                Err(SamplingError::InvalidParameter(_))
            ),
            "{cfg:?}"
        );
    }
    // top_k must be below the vocabulary size (checked when the vocabulary is known).
    let lp = log_softmax(&logits()).unwrap();
    assert!(matches!(
        apply_top_k(&lp, 8),
        Err(SamplingError::InvalidParameter(_))
    ));
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_k: 100,
        seed: Some(1),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        s.sample(&lp),
        Err(SamplingError::InvalidParameter(_))
    ));
    assert!(matches!(
        apply_min_p(&lp, -0.1, 1),
        Err(SamplingError::InvalidParameter(_))
    ));
    assert!(matches!(
        apply_xtc(&lp, &Array::from_f32(0.0), 1.0, 0.1, &[8]),
        Err(SamplingError::TokenOutOfRange { token: 8, vocab: 8 })
    ));
}

#[test]
fn token_ids_out_of_the_vocabulary() {
    let x = logits();
    let mut bias = BTreeMap::new();
    bias.insert(1000u32, 1.0f32);
    let cfg = LogitsConfig {
        logit_bias: bias,
        ..Default::default()
    };
    assert!(matches!(
        cfg.apply(&[], &x),
        Err(SamplingError::TokenOutOfRange { token: 1000, .. })
    ));
    let cfg = LogitsConfig {
        repetition_penalty: Some(1.2),
        ..Default::default()
    };
    assert!(matches!(
        cfg.apply(&[1, 99], &x),
        Err(SamplingError::TokenOutOfRange { token: 99, .. })
    ));
    let cfg = LogitsConfig {
        repetition_penalty: Some(-1.0),
        ..Default::default()
    };
    assert!(matches!(
        cfg.validate(),
        Err(SamplingError::InvalidParameter(_))
    ));
    let mut bias = BTreeMap::new();
    bias.insert(1u32, f32::NAN);
    assert!(LogitsConfig {
        logit_bias: bias,
        ..Default::default()
    }
    .validate()
    .is_err());
    // Nothing active: the logits come back unchanged, even with an empty history.
    let cfg = LogitsConfig::default();
    assert!(!cfg.is_active());
    assert_eq!(
        cfg.apply(&[], &x).unwrap().as_slice::<f32>(),
        x.as_slice::<f32>()
    );
    // Penalties with an empty history change nothing either.
    let cfg = LogitsConfig {
        presence_penalty: Some(1.0),
        frequency_penalty: Some(1.0),
        repetition_penalty: Some(2.0),
        ..Default::default()
    };
    assert_eq!(
        cfg.apply(&[], &x).unwrap().as_slice::<f32>(),
        x.as_slice::<f32>()
    );
}

#[test]
fn greedy_and_chosen_logprobs() {
    let lp = log_softmax(&logits()).unwrap();
    let t = greedy(&lp).unwrap();
    assert_eq!(t.as_slice::<u32>(), &[5]);
    let chosen = chosen_logprobs(&lp, &t).unwrap();
    assert_eq!(chosen.shape(), &[1]);
    assert_eq!(chosen.as_slice::<f32>()[0], lp.as_slice::<f32>()[5]);
    // Temperature 0 is greedy whatever the seed.
    let mut s = Sampler::new(SamplerConfig {
        temperature: 0.0,
        seed: Some(3),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.sample(&lp).unwrap().as_slice::<u32>(), &[5]);
}
