//! Masks and attention against mlx-lm's `base.py`: `create_causal_mask` (offsets, windows,
//! left and right padding, including a window of 8 over 36 tokens), `create_attention_mask`
//! with and without a cache, `scaled_dot_product_attention` with grouped-query heads, every
//! mask kind and sinks, the quantized-cache path, and llama4's chunked masks.

use mlx_models::cache::create_attention_mask;
use mlx_models::cache::{Cache, KvCache};
use mlx_models::nn::attention::attend;
use mlx_models::nn::mask::{create_causal_mask, AttentionMask};
use mlx_models_tests::reference::{assert_equal, blocks, DiffLog, Fixture};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
use mlx_rs::Array;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "attention")
}

fn array(mask: AttentionMask) -> Array {
    match mask {
        AttentionMask::Array(a) => a,
        other => panic!("expected an explicit mask, got {other:?}"),
    }
}

#[test]
fn window_of_8_over_36_tokens_matches_reference() {
    let fx = fixture();
    let m = create_causal_mask(36, 0, Some(8), None, None).unwrap();
    assert_equal(
        "causal mask, window 8, 36 tokens",
        &m,
        fx.get("causal_36_w8"),
    );
    // each query sees exactly 8 keys once 8 are behind it: the ninth is masked
    let row: Vec<bool> = m
        .try_index(20)
        .unwrap()
        .as_dtype(mlx_rs::Dtype::Int32)
        .unwrap()
        .to_vec_exact::<i32>()
        .unwrap()
        .into_iter()
        .map(|v| v != 0)
        .collect();
    assert_eq!(row.iter().filter(|&&b| b).count(), 8);
    assert!(!row[12] && row[13] && row[20] && !row[21]);
}

#[test]
fn causal_masks_with_offsets_and_windows_match_reference() {
    let fx = fixture();
    assert_equal(
        "offset 7",
        &create_causal_mask(5, 7, None, None, None).unwrap(),
        fx.get("causal_5_off7"),
    );
    assert_equal(
        "offset 7 window 4",
        &create_causal_mask(5, 7, Some(4), None, None).unwrap(),
        fx.get("causal_5_off7_w4"),
    );
}

#[test]
fn padding_masks_match_reference() {
    let fx = fixture();
    let lp = fx.get("left_padding");
    let rp = fx.get("right_padding");
    assert_equal(
        "left padding",
        &create_causal_mask(6, 0, None, Some(lp), None).unwrap(),
        fx.get("causal_6_left"),
    );
    assert_equal(
        "left and right padding, offset 2",
        &create_causal_mask(6, 2, None, Some(lp), Some(rp)).unwrap(),
        fx.get("causal_6_off2_left_right"),
    );
}

#[test]
fn attention_mask_choice_matches_reference() {
    let fx = fixture();
    assert_equal(
        "no cache, window 8",
        &array(create_attention_mask(36, None, Some(8), false).unwrap()),
        fx.get("attn_mask_36_w8"),
    );
    assert_equal(
        "no cache, array",
        &array(create_attention_mask(36, None, None, true).unwrap()),
        fx.get("attn_mask_36_array"),
    );
    assert!(matches!(
        create_attention_mask(36, None, None, false).unwrap(),
        AttentionMask::Causal
    ));
    assert!(matches!(
        create_attention_mask(1, None, None, false).unwrap(),
        AttentionMask::None
    ));

    let mut kv = KvCache::new();
    let z = Array::from_slice(&[0f32; 40], &[1, 1, 10, 4]);
    kv.update_and_fetch(&z, &z).unwrap();
    let cache = Cache::Kv(kv);
    assert_equal(
        "kv offset 10, array",
        &array(create_attention_mask(5, Some(&cache), None, true).unwrap()),
        fx.get("kv_mask_5_off10_array"),
    );
    assert_equal(
        "kv offset 10, window 4",
        &array(create_attention_mask(5, Some(&cache), Some(4), false).unwrap()),
        fx.get("kv_mask_5_off10_w4"),
    );
    assert_equal(
        "kv decode, window 4",
        &array(create_attention_mask(1, Some(&cache), Some(4), false).unwrap()),
        fx.get("kv_mask_1_off10_w4"),
    );
}

#[test]
fn sdpa_with_grouped_heads_masks_and_sinks_matches_reference() {
    let fx = fixture();
    let (q, k, v, sinks) = (fx.get("q"), fx.get("k"), fx.get("v"), fx.get("sinks"));
    let scale = fx.json("scale").as_f64().unwrap() as f32;
    let window = AttentionMask::Array(create_causal_mask(36, 0, Some(8), None, None).unwrap());
    let additive = AttentionMask::Array(fx.get("additive").clone());
    let mut log = DiffLog::default();
    let cases: [(&str, &AttentionMask, Option<&Array>); 6] = [
        ("sdpa_none", &AttentionMask::None, None),
        ("sdpa_causal", &AttentionMask::Causal, None),
        ("sdpa_window8", &window, None),
        ("sdpa_additive", &additive, None),
        ("sdpa_causal_sinks", &AttentionMask::Causal, Some(sinks)),
        ("sdpa_window8_sinks", &window, Some(sinks)),
    ];
    for (key, mask, s) in cases {
        let out = attend(q, k, v, None, scale, mask, s).unwrap();
        log.close(key, &out, fx.get(key), TOL);
    }
    let last = q.try_index((Ellipsis, 35..36, ..)).unwrap();
    log.close(
        "sdpa_decode",
        &attend(&last, k, v, None, scale, &AttentionMask::None, None).unwrap(),
        fx.get("sdpa_decode"),
        TOL,
    );
    let lp = Array::from_slice(&[0i32, 7], &[2]);
    let padded = AttentionMask::Array(create_causal_mask(36, 0, None, Some(&lp), None).unwrap());
    log.close(
        "sdpa_left_padded",
        &attend(q, k, v, None, scale, &padded, None).unwrap(),
        fx.get("sdpa_left_padded"),
        TOL,
    );
    log.report("attention (fused SDPA)");
}

#[test]
fn attention_through_a_kv_cache_equals_attention_without_one() {
    let fx = fixture();
    let (q, k, v) = (fx.get("q"), fx.get("k"), fx.get("v"));
    let scale = fx.json("scale").as_f64().unwrap() as f32;
    let mut cache = Cache::kv();
    let out = attend(
        q,
        k,
        v,
        Some(&mut cache),
        scale,
        &AttentionMask::Causal,
        None,
    )
    .unwrap();
    let mut log = DiffLog::default();
    log.close(
        "sdpa_causal through a KV cache",
        &out,
        fx.get("sdpa_causal"),
        TOL,
    );
    assert_eq!(cache.offset(), 36);
}

#[test]
fn quantized_cache_attention_matches_reference() {
    let fx = fixture();
    let (q, k, v) = (fx.get("q2"), fx.get("k2"), fx.get("v2"));
    let scale = (64f32).powf(-0.5);
    let mut log = DiffLog::default();
    for bits in [4, 8] {
        let masks = [
            ("none", AttentionMask::None),
            ("causal", AttentionMask::Causal),
            (
                "window3",
                AttentionMask::Array(create_causal_mask(6, 0, Some(3), None, None).unwrap()),
            ),
        ];
        for (name, mask) in masks {
            let mut cache = Cache::quantized(32, bits);
            let out = attend(q, k, v, Some(&mut cache), scale, &mask, None).unwrap();
            let key = format!("qsdpa_{bits}_{name}");
            log.close(&key, &out, fx.get(&key), TOL);
        }
    }
    log.report("attention (quantized KV)");
    let mut cache = Cache::quantized(32, 4);
    let sinks = Array::from_slice(&[0f32; 8], &[8]);
    assert!(attend(
        q,
        k,
        v,
        Some(&mut cache),
        scale,
        &AttentionMask::None,
        Some(&sinks)
    )
    .is_err());
}

/// A boolean mask as rows of `0` / `1`, one string per row of the last two axes.
fn rows(mask: &Array) -> Vec<String> {
    let k = mask.dim(-1) as usize;
    let bits = mask
        .as_dtype(mlx_rs::Dtype::Int32)
        .unwrap()
        .to_vec_exact::<i32>()
        .unwrap();
    bits.chunks(k)
        .map(|r| r.iter().map(|b| if *b != 0 { '1' } else { '0' }).collect())
        .collect()
}

/// llama4's chunked mask: a query sees the earlier keys of its own chunk only, counted from
/// the cache's first held position, and a left-padded batch row is the unpadded sequence's
/// mask shifted right, its padding hidden.
#[test]
fn chunked_masks_keep_each_query_in_its_chunk() {
    use mlx_models::cache::create_chunked_attention_mask;
    use mlx_models::nn::mask::create_chunked_mask;

    // Six tokens, chunks of 4: positions 0-3, then 4-5.
    let m = create_chunked_mask(6, 0, 0, 4, None).unwrap();
    assert_eq!(
        rows(&m),
        ["100000", "110000", "111000", "111100", "000010", "000011"]
    );
    // Three queries at positions 5, 6, 7 over the keys held from position 2.
    let m = create_chunked_mask(3, 2, 5, 4, None).unwrap();
    assert_eq!(rows(&m), ["001100", "001110", "001111"]);

    // Row 1 is padded by 2: its positions start at column 2.
    let lp = Array::from_slice(&[0i32, 2], &[2]);
    let m = create_chunked_mask(6, 0, 0, 3, Some(&lp)).unwrap();
    assert_eq!(m.shape(), [2, 1, 6, 6]);
    let got = rows(&m);
    let alone = rows(&create_chunked_mask(4, 0, 0, 3, None).unwrap());
    assert_eq!(
        got[..6],
        rows(&create_chunked_mask(6, 0, 0, 3, None).unwrap())
    );
    for (row, want) in got[8..].iter().zip(&alone) {
        assert_eq!(*row, format!("00{want}"));
    }
    // The padded queries see nothing.
    assert_eq!(got[6..8], ["000000", "000000"]);

    // From the caches: a chunked cache after a trim reads from its first held position.
    let mut cache = Cache::chunked(4);
    let kv = mlx_rs::ops::zeros::<f32>(&[1, 1, 6, 2]).unwrap();
    cache.update_and_fetch(&kv, &kv).unwrap();
    if let Cache::Chunked(c) = &mut cache {
        c.maybe_trim_front().unwrap();
        assert_eq!((c.start_position, c.offset), (2, 6));
    }
    let m = array(create_chunked_attention_mask(1, Some(&cache), 4).unwrap());
    assert_eq!(rows(&m), ["00111"]);
    let m = array(create_chunked_attention_mask(2, None, 4).unwrap());
    assert_eq!(rows(&m), ["10", "11"]);
    assert!(create_chunked_attention_mask(1, Some(&Cache::rotating(4, 0)), 4).is_err());
}
