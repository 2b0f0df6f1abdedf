//! The weight rule engine on synthetic weights: what each kind of rule does, and that each is
//! idempotent (already converted weights come back unchanged); likewise the helpers that
//! sanitize hooks share (fused projections split, mxfp4 blocks repacked).

use std::collections::BTreeSet;

use mlx_models::weights::{
    apply, compressed_tensors_int4, dequantize_fp8_blocks, mxfp4_blocks, split_fused, Fused, Rule,
    SanitizeError, Weights,
};
use mlx_rs::{Array, Dtype};

fn weights(keys: &[&str]) -> Weights {
    keys.iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), Array::from_slice(&[i as f32], &[1])))
        .collect()
}

fn keys(w: &Weights) -> BTreeSet<&str> {
    w.keys().map(String::as_str).collect()
}

/// Applies `rules` to `input`, checks the keys, then applies them again to the result and
/// checks that nothing changed, values included.
fn check(rules: &[Rule], input: &[&str], expected: &[&str]) -> Weights {
    let once = apply(rules, weights(input), None).expect("sanitizes");
    assert_eq!(
        keys(&once),
        expected.iter().copied().collect(),
        "after {rules:?}"
    );
    let twice = apply(rules, once.clone(), None).expect("sanitizes again");
    assert_eq!(keys(&twice), keys(&once), "{rules:?} is not idempotent");
    for (k, v) in &once {
        assert_eq!(
            twice[k].as_slice::<f32>(),
            v.as_slice::<f32>(),
            "{k} changed on the second pass"
        );
    }
    once
}

#[test]
fn rename_with_captures_is_idempotent() {
    let rules = [Rule::Rename {
        from: "transformer.h.{n}.attn.c_proj",
        to: "model.layers.{n}.self_attn.o_proj",
    }];
    let out = check(
        &rules,
        &[
            "transformer.h.0.attn.c_proj.weight",
            "transformer.h.11.attn.c_proj.bias",
            "transformer.h.0.attn.c_projx.weight",
        ],
        &[
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.11.self_attn.o_proj.bias",
            "transformer.h.0.attn.c_projx.weight",
        ],
    );
    assert_eq!(
        out["model.layers.11.self_attn.o_proj.bias"].as_slice::<f32>(),
        [1.0],
        "the tensor moves with its key"
    );
}

#[test]
fn strip_prefix_is_idempotent() {
    check(
        &[Rule::StripPrefix("model.language_model.")],
        &["model.language_model.layers.0.weight", "lm_head.weight"],
        &["layers.0.weight", "lm_head.weight"],
    );
}

#[test]
fn add_prefix_is_idempotent() {
    check(
        &[Rule::AddPrefix("language_model.")],
        &["model.norm.weight", "language_model.lm_head.weight"],
        &[
            "language_model.model.norm.weight",
            "language_model.lm_head.weight",
        ],
    );
}

#[test]
fn drop_patterns_are_idempotent() {
    check(
        &[
            Rule::Drop("*.rotary_emb.inv_freq"),
            Rule::Drop("vision_tower.*"),
            Rule::Drop("mtp.*"),
        ],
        &[
            "model.layers.0.self_attn.rotary_emb.inv_freq",
            "vision_tower.encoder.0.weight",
            "mtp.layers.0.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ],
        &["model.layers.0.self_attn.q_proj.weight"],
    );
}

#[test]
fn tied_head_is_dropped_only_when_the_model_has_none() {
    #[derive(Debug, mlx_rs::macros::ModuleParameters)]
    struct Tied {
        #[param]
        lm_head: Option<mlx_rs::nn::Linear>,
    }
    let rules = [Rule::TiedHead("lm_head")];
    let input = weights(&[
        "lm_head.weight",
        "lm_head.scales",
        "lm_head_extra.weight",
        "model.norm.weight",
    ]);
    let tied = Tied { lm_head: None };
    let once = apply(&rules, input.clone(), Some(&tied)).expect("sanitizes");
    assert_eq!(
        keys(&once),
        ["lm_head_extra.weight", "model.norm.weight"]
            .into_iter()
            .collect()
    );
    let twice = apply(&rules, once.clone(), Some(&tied)).expect("sanitizes again");
    assert_eq!(keys(&twice), keys(&once));

    let untied = Tied {
        lm_head: Some(mlx_rs::nn::Linear::new(2, 2).expect("linear")),
    };
    let kept = apply(&rules, input, Some(&untied)).expect("sanitizes");
    assert!(kept.contains_key("lm_head.weight") && kept.contains_key("lm_head.scales"));
}

#[test]
fn experts_stack_for_weight_scales_and_biases() {
    let mut input = Weights::new();
    for e in 0..3 {
        for (suffix, shape) in [("weight", [4, 2]), ("scales", [4, 1]), ("biases", [4, 1])] {
            let n = shape[0] * shape[1];
            let data: Vec<f32> = (0..n).map(|i| (e * 100 + i) as f32).collect();
            input.insert(
                format!("model.layers.1.mlp.experts.{e}.gate_proj.{suffix}"),
                Array::from_slice(&data, &shape),
            );
        }
        input.insert(
            format!("model.layers.1.mlp.experts.{e}.down_proj.weight"),
            Array::from_slice(&[e as f32; 2], &[1, 2]),
        );
    }
    input.insert(
        "model.layers.1.mlp.gate.weight".into(),
        Array::from_slice(&[0.0f32; 3], &[3, 1]),
    );
    let rules = [Rule::StackExperts {
        from: "model.layers.{n}.mlp.experts.{e}",
        to: "model.layers.{n}.mlp.switch_mlp",
    }];
    let once = apply(&rules, input, None).expect("stacks");
    assert_eq!(
        keys(&once),
        [
            "model.layers.1.mlp.gate.weight",
            "model.layers.1.mlp.switch_mlp.down_proj.weight",
            "model.layers.1.mlp.switch_mlp.gate_proj.biases",
            "model.layers.1.mlp.switch_mlp.gate_proj.scales",
            "model.layers.1.mlp.switch_mlp.gate_proj.weight",
        ]
        .into_iter()
        .collect()
    );
    let w = &once["model.layers.1.mlp.switch_mlp.gate_proj.weight"];
    assert_eq!(w.shape(), &[3, 4, 2]);
    assert_eq!(w.as_slice::<f32>()[8], 100.0, "expert 1 comes second");
    assert_eq!(
        once["model.layers.1.mlp.switch_mlp.down_proj.weight"].as_slice::<f32>(),
        [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    );
    let twice = apply(&rules, once.clone(), None).expect("stacks again");
    assert_eq!(keys(&twice), keys(&once), "stacking is idempotent");
    assert_eq!(
        twice["model.layers.1.mlp.switch_mlp.gate_proj.weight"].shape(),
        &[3, 4, 2]
    );
}

#[test]
fn a_missing_expert_is_an_error() {
    let input = weights(&["l.0.experts.0.w.weight", "l.0.experts.2.w.weight"]);
    let rules = [Rule::StackExperts {
        from: "l.{n}.experts.{e}",
        to: "l.{n}.switch_mlp",
    }];
    let e = apply(&rules, input, None).unwrap_err();
    assert!(matches!(e, SanitizeError::Stack { .. }));
    assert_eq!(
        e.to_string(),
        "cannot stack experts into `l.0.switch_mlp.w.weight`: expert 1 is missing (2 found)"
    );
}

#[test]
fn a_rename_onto_an_existing_key_is_an_error() {
    let input = weights(&["wte.weight", "embed_tokens.weight"]);
    let e = apply(
        &[Rule::Rename {
            from: "wte",
            to: "embed_tokens",
        }],
        input,
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "weight rule rename(\"wte\" => \"embed_tokens\") maps `wte.weight` to `embed_tokens.weight`, which the checkpoint already has"
    );
}

#[test]
fn rules_compose_in_order_and_stay_idempotent() {
    let rules = [
        Rule::StripPrefix("language_model."),
        Rule::Drop("vision_tower.*"),
        Rule::Rename {
            from: "transformer.h.{n}.mlp.experts.{e}.w1",
            to: "model.layers.{n}.mlp.experts.{e}.gate_proj",
        },
        Rule::StackExperts {
            from: "model.layers.{n}.mlp.experts.{e}",
            to: "model.layers.{n}.mlp.switch_mlp",
        },
        Rule::Drop("*.rotary_emb.inv_freq"),
    ];
    check(
        &rules,
        &[
            "language_model.transformer.h.0.mlp.experts.0.w1.weight",
            "language_model.transformer.h.0.mlp.experts.1.w1.weight",
            "language_model.model.layers.0.self_attn.rotary_emb.inv_freq",
            "vision_tower.patch.weight",
        ],
        &["model.layers.0.mlp.switch_mlp.gate_proj.weight"],
    );
}

#[test]
fn fused_tensors_split_in_halves_or_interleaved() {
    let fused = || Array::from_slice(&[0f32, 1., 2., 3., 4., 5., 6., 7.], &[1, 4, 2]);
    for (how, gate, up) in [
        (Fused::Halves, [0f32, 1., 2., 3.], [4f32, 5., 6., 7.]),
        (Fused::Interleaved, [0., 1., 4., 5.], [2., 3., 6., 7.]),
    ] {
        let mut w: Weights = [("l.0.gate_up.weight".to_string(), fused())].into();
        split_fused(&mut w, "gate_up", ["gate", "up"], 1, how).expect("splits");
        assert_eq!(keys(&w), ["l.0.gate.weight", "l.0.up.weight"].into());
        assert_eq!(w["l.0.gate.weight"].shape(), &[1, 2, 2]);
        assert_eq!(w["l.0.gate.weight"].as_slice::<f32>(), gate, "{how:?}");
        assert_eq!(w["l.0.up.weight"].as_slice::<f32>(), up, "{how:?}");
        let again = w.clone();
        split_fused(&mut w, "gate_up", ["gate", "up"], 1, how).expect("splits again");
        assert_eq!(keys(&w), keys(&again), "splitting is idempotent");
    }
}

#[test]
fn mxfp4_blocks_become_mlx_packed_words() {
    // Two rows of one group: 16 bytes each, read as four little-endian uint32 words.
    let bytes: Vec<u8> = (0..32).collect();
    let mut w: Weights = [
        (
            "e.down_proj_blocks".to_string(),
            Array::from_slice(&bytes, &[2, 1, 16]),
        ),
        (
            "e.down_proj_scales".to_string(),
            Array::from_slice(&[127u8, 128], &[2, 1]),
        ),
        (
            "e.down_proj_bias".to_string(),
            Array::from_slice(&[0f32; 2], &[2]),
        ),
    ]
    .into();
    mxfp4_blocks(&mut w, &["down_proj"]).expect("converts");
    assert_eq!(
        keys(&w),
        [
            "e.down_proj.scales",
            "e.down_proj.weight",
            "e.down_proj_bias"
        ]
        .into()
    );
    let words = &w["e.down_proj.weight"];
    assert_eq!((words.dtype(), words.shape()), (Dtype::Uint32, &[2, 4][..]));
    assert_eq!(words.as_slice::<u32>()[0], u32::from_le_bytes([0, 1, 2, 3]));
    assert_eq!(
        words.as_slice::<u32>()[7],
        u32::from_le_bytes([28, 29, 30, 31])
    );
    assert_eq!(w["e.down_proj.scales"].as_slice::<u8>(), [127, 128]);
    let again = w.clone();
    mxfp4_blocks(&mut w, &["down_proj"]).expect("converts again");
    assert_eq!(keys(&w), keys(&again), "converting is idempotent");

    let mut bad: Weights = [(
        "e.down_proj_blocks".to_string(),
        Array::from_slice(&[0f32; 16], &[1, 16]),
    )]
    .into();
    let e = mxfp4_blocks(&mut bad, &["down_proj"]).unwrap_err();
    assert!(matches!(e, SanitizeError::Layout { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "cannot convert `e.down_proj_blocks`: mxfp4 blocks are uint8 [..., groups, 16], not Float32 [1, 16]"
    );
}

fn e4m3(bytes: &[u8], shape: &[i32]) -> Array {
    Array::from_slice(bytes, shape)
}

/// FP8 release layout: E4M3 bytes (0x38 is 1.0, 0x40 is 2.0, 0xB8 is -1.0) times one scale
/// per 128 x 128 block, padded blocks at the edges; bfloat16 out, scales gone, idempotent.
#[test]
fn fp8_block_scales_dequantize_to_bfloat16() {
    // [130, 3]: two row blocks (128 rows and 2), one column block (3 of 128 columns).
    let mut bytes = vec![0x38u8; 130 * 3];
    bytes[0] = 0x40;
    bytes[129 * 3 + 2] = 0xB8;
    let mut w = Weights::new();
    w.insert("layer.weight".into(), e4m3(&bytes, &[130, 3]));
    w.insert(
        "layer.weight_scale_inv".into(),
        Array::from_slice(&[0.5f32, 3.0], &[2, 1]),
    );
    w.insert("norm.weight".into(), Array::from_slice(&[1.0f32; 3], &[3]));
    dequantize_fp8_blocks(&mut w).unwrap();
    assert!(!w.contains_key("layer.weight_scale_inv"));
    let dense = &w["layer.weight"];
    assert_eq!(
        (dense.dtype(), dense.shape()),
        (Dtype::Bfloat16, &[130, 3][..])
    );
    let v: Vec<f32> = dense
        .as_dtype(Dtype::Float32)
        .unwrap()
        .as_slice::<f32>()
        .to_vec();
    assert_eq!(v[0], 1.0); // 2.0 * 0.5
    assert_eq!(v[1], 0.5);
    assert_eq!(v[127 * 3], 0.5);
    assert_eq!(v[128 * 3], 3.0);
    assert_eq!(v[129 * 3 + 2], -3.0);
    assert_eq!(w["norm.weight"].dtype(), Dtype::Float32);
    // Converted weights pass unchanged.
    let before = v.clone();
    dequantize_fp8_blocks(&mut w).unwrap();
    let again: Vec<f32> = w["layer.weight"]
        .as_dtype(Dtype::Float32)
        .unwrap()
        .as_slice::<f32>()
        .to_vec();
    assert_eq!(before, again);
}

/// A 0-d `weight_scale_inv` (Ministral 3's per-tensor FP8 scales) multiplies the whole weight:
/// FP8 bytes decoded first, a floating-point weight as it is; idempotent.
#[test]
fn fp8_per_tensor_scales_multiply_the_whole_weight() {
    let mut w = Weights::new();
    w.insert("a.weight".into(), e4m3(&[0x38, 0x40, 0xB8], &[1, 3]));
    w.insert("a.weight_scale_inv".into(), Array::from_f32(0.5));
    w.insert(
        "b.weight".into(),
        Array::from_slice(&[3.0f32, -1.0], &[2, 1]),
    );
    w.insert("b.weight_scale_inv".into(), Array::from_f32(2.0));
    dequantize_fp8_blocks(&mut w).unwrap();
    assert!(!w.keys().any(|k| k.ends_with("_scale_inv")));
    fn values(w: &Weights, k: &str) -> Vec<f32> {
        let a = w[k].as_dtype(Dtype::Float32).unwrap();
        a.as_slice::<f32>().to_vec()
    }
    assert_eq!(values(&w, "a.weight"), [0.5, 1.0, -0.5]);
    assert_eq!(values(&w, "b.weight"), [6.0, -2.0]);
    assert_eq!(w["b.weight"].shape(), &[2, 1]);
    let before = (values(&w, "a.weight"), values(&w, "b.weight"));
    dequantize_fp8_blocks(&mut w).unwrap();
    assert_eq!(before, (values(&w, "a.weight"), values(&w, "b.weight")));
    // Integer weights are not FP8 bytes, whatever the scale.
    let mut w = Weights::new();
    w.insert("x.weight".into(), Array::from_slice(&[1i32, 2], &[1, 2]));
    w.insert("x.weight_scale_inv".into(), Array::from_f32(2.0));
    let err = dequantize_fp8_blocks(&mut w).unwrap_err();
    assert!(
        matches!(&err, SanitizeError::Layout { key, .. } if key == "x.weight_scale_inv"),
        "{err}"
    );
}

#[test]
fn fp8_scales_that_do_not_fit_are_errors_naming_the_tensor() {
    let cases: [(&str, Array, Option<Array>); 4] = [
        // A scale without its weight.
        ("orphan", Array::from_slice(&[1.0f32], &[1, 1]), None),
        // Two column blocks for three columns.
        (
            "tiling",
            Array::from_slice(&[1.0f32, 1.0], &[1, 2]),
            Some(e4m3(&[0x38; 6], &[2, 3])),
        ),
        // A vector weight.
        (
            "vector",
            Array::from_slice(&[1.0f32], &[1]),
            Some(e4m3(&[0x38; 3], &[3])),
        ),
        // Integer weights that are not FP8 bytes.
        (
            "int",
            Array::from_slice(&[1.0f32], &[1, 1]),
            Some(Array::from_slice(&[1i32, 2], &[1, 2])),
        ),
    ];
    for (what, scale, weight) in cases {
        let mut w = Weights::new();
        w.insert("x.weight_scale_inv".into(), scale);
        if let Some(weight) = weight {
            w.insert("x.weight".into(), weight);
        }
        let err = dequantize_fp8_blocks(&mut w).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, SanitizeError::Layout { key, .. } if key == "x.weight_scale_inv"),
            "{what}: {text}"
        );
        assert!(!text.contains('\n'), "{what}: {text}");
    }
}

/// compressed-tensors' packed int4: the words as uint32 weights, the scales, biases of -8 x
/// scale; idempotent; a missing scale or a shape that disagrees with the packing is an error.
#[test]
fn compressed_tensors_int4_becomes_affine_4bit() {
    let mut w = Weights::new();
    w.insert(
        "x.weight_packed".into(),
        Array::from_slice(&[-1i32, 7, 0, 1], &[2, 2]),
    );
    w.insert(
        "x.weight_scale".into(),
        Array::from_slice(&[0.5f32, 2.0], &[2, 1]),
    );
    w.insert(
        "x.weight_shape".into(),
        Array::from_slice(&[2i64, 16], &[2]),
    );
    compressed_tensors_int4(&mut w).unwrap();
    assert_eq!(
        keys(&w),
        BTreeSet::from(["x.weight", "x.scales", "x.biases"])
    );
    assert_eq!(w["x.weight"].dtype(), Dtype::Uint32);
    assert_eq!(w["x.weight"].as_slice::<u32>(), &[u32::MAX, 7, 0, 1]);
    assert_eq!(w["x.biases"].as_slice::<f32>(), &[-4.0, -16.0]);
    let before = keys(&w).into_iter().map(str::to_owned).collect::<Vec<_>>();
    compressed_tensors_int4(&mut w).unwrap();
    assert_eq!(
        keys(&w).into_iter().map(str::to_owned).collect::<Vec<_>>(),
        before
    );

    let mut w = Weights::new();
    w.insert(
        "x.weight_packed".into(),
        Array::from_slice(&[1i32, 2], &[1, 2]),
    );
    assert!(compressed_tensors_int4(&mut w)
        .unwrap_err()
        .to_string()
        .contains("weight_scale"));
    let mut w = Weights::new();
    w.insert(
        "x.weight_packed".into(),
        Array::from_slice(&[1i32, 2], &[1, 2]),
    );
    w.insert(
        "x.weight_scale".into(),
        Array::from_slice(&[1.0f32], &[1, 1]),
    );
    w.insert("x.weight_shape".into(), Array::from_slice(&[1i32, 8], &[2]));
    let err = compressed_tensors_int4(&mut w).unwrap_err().to_string();
    assert!(err.contains("does not match the packing"), "{err}");
}
