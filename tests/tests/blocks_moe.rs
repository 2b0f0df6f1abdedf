//! The routers of `mlx_models::nn::moe` against mlx-lm's own routing code, block by block
//! (qwen3_moe, qwen2_moe, olmoe, mixtral, granitemoe, gpt_oss, phimoe, glm4_moe), on random
//! logits with ties: a row of equal logits, rows rounded to halves, ties at the top-k boundary.
//! The experts chosen must be the reference's (a tie broken the other way sends a token
//! elsewhere), each with its weight.

use mlx_models::nn::moe::{Routing, TopK};
use mlx_models_tests::reference::{blocks, Fixture};
use mlx_rs::Array;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "router")
}

/// Per token, the (expert, weight) pairs sorted by expert: the order within a token's `k`
/// experts does not change what the block computes.
fn pairs(inds: &Array, scores: &Array) -> Vec<Vec<(u32, f32)>> {
    let k = inds.dim(-1);
    let inds = inds
        .as_dtype(mlx_rs::Dtype::Uint32)
        .unwrap()
        .contiguous()
        .unwrap();
    let scores = scores
        .as_dtype(mlx_rs::Dtype::Float32)
        .unwrap()
        .contiguous()
        .unwrap();
    let (i, s) = (inds.as_slice::<u32>(), scores.as_slice::<f32>());
    assert_eq!(i.len(), s.len(), "as many weights as experts");
    i.chunks(k as usize)
        .zip(s.chunks(k as usize))
        .map(|(i, s)| {
            let mut row: Vec<(u32, f32)> = i.iter().copied().zip(s.iter().copied()).collect();
            row.sort_by_key(|p| p.0);
            row
        })
        .collect()
}

#[track_caller]
fn check(fx: &Fixture, name: &str, routing: Routing, bias: Option<&Array>) {
    let logits = fx.get("logits");
    let (inds, scores) = routing.route(logits, bias).unwrap();
    let want_inds = fx.get(&format!("{name}.inds"));
    let want_scores = fx.get(&format!("{name}.scores"));
    assert_eq!(
        inds.shape(),
        want_inds.shape(),
        "{name}: shape of the experts"
    );
    let (ours, theirs) = (pairs(&inds, &scores), pairs(want_inds, want_scores));
    for (t, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let experts = |r: &[(u32, f32)]| r.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(
            experts(a),
            experts(b),
            "{name}: token {t} goes to other experts"
        );
        for ((e, x), (_, y)) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-6,
                "{name}: token {t}, expert {e}: weight {x} vs {y}"
            );
        }
    }
}

#[test]
fn softmax_top_k_routers_match_the_reference() {
    let fx = fixture();
    for (name, renormalize) in [("qwen3_moe_renorm", true), ("qwen3_moe_plain", false)] {
        let routing = Routing::SoftmaxTopK {
            k: 2,
            pick: TopK::Last,
            renormalize,
        };
        check(&fx, name, routing, None);
    }
    let qwen2 = Routing::SoftmaxTopK {
        k: 3,
        pick: TopK::Negated,
        renormalize: false,
    };
    check(&fx, "qwen2_moe", qwen2, None);
    let olmoe = Routing::SoftmaxTopK {
        k: 2,
        pick: TopK::Negated,
        renormalize: true,
    };
    check(&fx, "olmoe", olmoe, None);
}

#[test]
fn top_k_softmax_routers_match_the_reference() {
    let fx = fixture();
    let mixtral = Routing::TopKSoftmax {
        k: 2,
        pick: TopK::Negated,
        float32_weights: false,
    };
    check(&fx, "mixtral", mixtral, None);
    let granite = Routing::TopKSoftmax {
        k: 2,
        pick: TopK::Last,
        float32_weights: true,
    };
    check(&fx, "granitemoe", granite, None);
    let gpt_oss = Routing::TopKSoftmax {
        k: 4,
        pick: TopK::Last,
        float32_weights: false,
    };
    check(&fx, "gpt_oss", gpt_oss, None);
}

#[test]
fn sparse_mixer_matches_the_reference() {
    let fx = fixture();
    check(
        &fx,
        "phimoe",
        Routing::SparseMixer {
            k: 2,
            jitter_eps: 0.01,
        },
        None,
    );
}

#[test]
fn group_limited_routing_matches_the_reference() {
    let fx = fixture();
    let bias = fx.get("glm4_moe.bias");
    let grouped = Routing::GroupLimited {
        k: 2,
        n_group: 4,
        topk_group: 2,
        scaling: 2.5,
        renormalize: true,
        epsilon: 0.0,
    };
    check(&fx, "glm4_moe_groups", grouped, Some(bias));
    let flat = Routing::GroupLimited {
        k: 2,
        n_group: 1,
        topk_group: 1,
        scaling: 2.5,
        renormalize: false,
        epsilon: 0.0,
    };
    check(&fx, "glm4_moe_one_group", flat, Some(bias));
}

/// The tie rows really tie at the boundary, so the test would catch the other choice.
#[test]
fn the_fixture_has_ties_at_the_boundary() {
    let fx = fixture();
    let logits = fx
        .get("logits")
        .contiguous()
        .unwrap()
        .as_slice::<f32>()
        .to_vec();
    let row = &logits[6 * 8..7 * 8]; // batch 1, token 0: [3, 1, 1, 1, 0, -1, 1, 2]
    assert_eq!(row.iter().filter(|v| **v == 1.0).count(), 4);
    // Top-3 there (qwen2_moe) takes experts 0 and 7 and one of four tied at 1.0.
    let (inds, _) = Routing::SoftmaxTopK {
        k: 3,
        pick: TopK::Negated,
        renormalize: false,
    }
    .route(fx.get("logits"), None)
    .unwrap();
    let picked = pairs(&inds, &inds.as_dtype(mlx_rs::Dtype::Float32).unwrap());
    let experts: Vec<u32> = picked[6].iter().map(|p| p.0).collect();
    assert!(experts.contains(&0) && experts.contains(&7), "{experts:?}");
}

#[test]
fn bad_routing_is_refused() {
    let logits = Array::from_slice(&[0.0f32; 8], &[1, 8]);
    let r = Routing::SoftmaxTopK {
        k: 9,
        pick: TopK::Last,
        renormalize: false,
    };
    assert!(r.route(&logits, None).is_err());
    assert!(r.check(8).is_err());
    let g = Routing::GroupLimited {
        k: 2,
        n_group: 3,
        topk_group: 1,
        scaling: 1.0,
        renormalize: true,
        epsilon: 0.0,
    };
    assert_eq!(
        g.check(8).unwrap_err(),
        "8 experts do not split into 3 groups"
    );
    let g = Routing::GroupLimited {
        k: 2,
        n_group: 4,
        topk_group: 1,
        scaling: 1.0,
        renormalize: true,
        epsilon: 0.0,
    };
    assert!(
        g.route(&logits, None).is_err(),
        "group-limited routing needs its bias"
    );
}
