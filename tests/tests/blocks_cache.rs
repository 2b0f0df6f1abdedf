//! Every cache against mlx-lm's `cache.py`, step by step: what `update_and_fetch` returns,
//! the offset, the buffer's capacity (steps of 256), the rotating cache's write position,
//! trim, the masks each cache makes, and prompt-cache files written by `save_prompt_cache`.

use std::collections::HashMap;

use mlx_models::cache::{load_prompt_cache, save_prompt_cache, ArraysCache, Cache, KvCache};
use mlx_models::nn::mask::AttentionMask;
use mlx_models_tests::reference::{assert_equal, blocks, run_python, Fixture};
use mlx_rs::Array;
use serde_json::Value;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "cache")
}

fn capacity(cache: &Cache) -> Option<i32> {
    match cache {
        Cache::Kv(c) => c.keys.as_ref().map(|k| k.dim(2)),
        Cache::Rotating(c) => c.keys.as_ref().map(|k| k.dim(2)),
        Cache::Chunked(c) => c.keys.as_ref().map(|k| k.dim(2)),
        Cache::Quantized(c) => c.keys.as_ref().map(|k| k.w.dim(2)),
        _ => None,
    }
}

fn keys_and_values(cache: &Cache) -> (Array, Array) {
    match cache {
        Cache::Kv(c) => c.keys_and_values().unwrap(),
        Cache::Rotating(c) => c.keys_and_values().unwrap(),
        Cache::Chunked(c) => c.keys_and_values().unwrap(),
        other => panic!("no keys in {}", other.class_name()),
    }
}

/// Replays the reference's script on `cache`, comparing after every step.
fn replay(prefix: &str, mut cache: Cache) {
    let fx = fixture();
    let meta = fx.json(prefix);
    let queries: Vec<(i32, Option<i32>, bool)> = meta["mask_queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q[0].as_i64().unwrap() as i32,
                q[1].as_i64().map(|w| w as i32),
                q[2].as_bool().unwrap(),
            )
        })
        .collect();
    for (i, step) in meta["script"].as_array().unwrap().iter().enumerate() {
        let at = |what: &str| format!("{prefix} step {i} ({}): {what}", step["op"]);
        match step["op"].as_str().unwrap() {
            "update" => {
                let (k, v) = cache
                    .update_and_fetch(
                        fx.get(&format!("{prefix}.{i}.in_k")),
                        fx.get(&format!("{prefix}.{i}.in_v")),
                    )
                    .unwrap();
                assert_equal(&at("keys"), &k, fx.get(&format!("{prefix}.{i}.k")));
                assert_equal(&at("values"), &v, fx.get(&format!("{prefix}.{i}.v")));
            }
            "trim" => {
                let trimmed = cache.trim(step["n"].as_i64().unwrap() as i32);
                assert_eq!(
                    trimmed as i64,
                    step["trimmed"].as_i64().unwrap(),
                    "{}",
                    at("trimmed")
                );
            }
            "trim_front" => match &mut cache {
                Cache::Chunked(c) => c.maybe_trim_front().unwrap(),
                _ => unreachable!(),
            },
            other => panic!("unknown op {other}"),
        }
        if step["op"] != "update" && fx.has(&format!("{prefix}.{i}.k")) {
            let (k, v) = keys_and_values(&cache);
            assert_equal(&at("keys"), &k, fx.get(&format!("{prefix}.{i}.k")));
            assert_equal(&at("values"), &v, fx.get(&format!("{prefix}.{i}.v")));
        }
        assert_eq!(
            cache.offset() as i64,
            step["offset"].as_i64().unwrap(),
            "{}",
            at("offset")
        );
        assert_eq!(
            cache.is_trimmable(),
            step["trimmable"].as_bool().unwrap(),
            "{}",
            at("trimmable")
        );
        if let Some(size) = step.get("size") {
            assert_eq!(
                cache.size() as i64,
                size.as_i64().unwrap(),
                "{}",
                at("size")
            );
        }
        if let Some(cap) = step.get("capacity") {
            assert_eq!(
                capacity(&cache).map(i64::from),
                cap.as_i64(),
                "{}",
                at("capacity")
            );
        }
        if let (Some(idx), Cache::Rotating(c)) = (step.get("idx"), &cache) {
            assert_eq!(
                c.idx as i64,
                idx.as_i64().unwrap(),
                "{}",
                at("write position")
            );
        }
        let kinds = step["masks"].as_array().cloned().unwrap_or_default();
        for (j, (&(n, window, ret), kind)) in queries.iter().zip(&kinds).enumerate() {
            let what = at(&format!(
                "make_mask(n={n}, window={window:?}, return_array={ret})"
            ));
            let mask = cache
                .make_mask(n, window, ret)
                .unwrap()
                .expect("this cache makes masks");
            match (kind.as_str().unwrap(), &mask) {
                ("none", AttentionMask::None) | ("causal", AttentionMask::Causal) => {}
                ("array", AttentionMask::Array(a)) => {
                    assert_equal(&what, a, fx.get(&format!("{prefix}.{i}.mask{j}")))
                }
                (want, got) => panic!("{what}: reference gives {want}, we give {got:?}"),
            }
        }
    }
}

#[test]
fn kv_cache_grows_in_steps_and_trims_like_reference() {
    replay("kv", Cache::kv());
}

#[test]
fn rotating_cache_keeps_a_prompt_longer_than_the_window_then_rotates() {
    replay("rot_long_prompt", Cache::rotating(8, 2));
}

#[test]
fn rotating_cache_trims_before_it_wraps_and_wraps_like_reference() {
    replay("rot_short", Cache::rotating(8, 0));
}

#[test]
fn rotating_cache_masks_a_window_shorter_than_its_size() {
    replay("rot_window", Cache::rotating(12, 0));
}

#[test]
fn chunked_cache_drops_positions_past_its_chunk() {
    replay("chunked", Cache::chunked(8));
}

#[test]
fn quantized_cache_stores_the_reference_bits_step_by_step() {
    let fx = fixture();
    for bits in [4, 8] {
        let mut cache = Cache::quantized(32, bits);
        let log = fx.json(&format!("q{bits}"));
        for (i, step) in log.as_array().unwrap().iter().enumerate() {
            let Cache::Quantized(c) = &mut cache else {
                unreachable!()
            };
            if let Some(n) = step.get("trim") {
                assert_eq!(
                    c.trim(n.as_i64().unwrap() as i32) as i64,
                    step["trimmed"].as_i64().unwrap()
                );
                assert_eq!(c.offset as i64, step["offset"].as_i64().unwrap());
                continue;
            }
            let p = format!("q{bits}.{i}");
            let (k, v) = c
                .update_and_fetch(fx.get(&format!("{p}.in_k")), fx.get(&format!("{p}.in_v")))
                .unwrap();
            for (j, (ours_k, ours_v)) in k.parts().iter().zip(v.parts()).enumerate() {
                assert_equal(
                    &format!("{p} keys[{j}]"),
                    ours_k,
                    fx.get(&format!("{p}.k{j}")),
                );
                assert_equal(
                    &format!("{p} values[{j}]"),
                    ours_v,
                    fx.get(&format!("{p}.v{j}")),
                );
            }
            assert_eq!(
                c.offset as i64,
                step["offset"].as_i64().unwrap(),
                "{p} offset"
            );
            assert_eq!(
                capacity(&cache).map(i64::from),
                step["capacity"].as_i64(),
                "{p} capacity"
            );
        }
    }
}

#[test]
fn kv_cache_to_quantized_matches_reference() {
    let fx = fixture();
    let mut kv = KvCache::new();
    kv.update_and_fetch(fx.get("to_quantized.in_k"), fx.get("to_quantized.in_v"))
        .unwrap();
    let q = kv.to_quantized(32, 4).unwrap();
    for (j, part) in q.keys.as_ref().unwrap().parts().iter().enumerate() {
        assert_equal(
            &format!("to_quantized keys[{j}]"),
            part,
            fx.get(&format!("to_quantized.k{j}")),
        );
    }
    assert_eq!(q.offset, 7);
}

#[test]
fn arrays_cache_masks_left_padding_and_lengths() {
    let fx = fixture();
    let mut c = ArraysCache::with_left_padding(2, &[0, 2, 3]);
    assert_equal(
        "left padding",
        &c.make_mask(5).unwrap().unwrap(),
        fx.get("arrays.mask_left"),
    );
    c.lengths = Some(Array::from_slice(&[5i32, 4, 2], &[3]));
    assert_equal(
        "left padding and lengths",
        &c.make_mask(5).unwrap().unwrap(),
        fx.get("arrays.mask_left_lengths"),
    );
    c.advance(2).unwrap();
    assert_equal(
        "after advancing",
        &c.make_mask(3).unwrap().unwrap(),
        fx.get("arrays.mask_advanced"),
    );
    assert!(ArraysCache::new(2).make_mask(3).unwrap().is_none());
    assert!(!Cache::Arrays(c).is_trimmable());
}

#[test]
fn cache_list_trims_all_and_reports_the_largest_size() {
    let mut list = Cache::List(vec![Cache::kv(), Cache::kv()]);
    let k = Array::from_slice(&[0f32; 16], &[1, 1, 4, 4]);
    if let Cache::List(l) = &mut list {
        l[0].update_and_fetch(&k, &k).unwrap();
        l[1].update_and_fetch(&k.index_first(3), &k.index_first(3))
            .unwrap();
    }
    assert_eq!(list.size(), 4);
    assert!(list.is_trimmable());
    assert_eq!(list.trim(2), 2);
    assert_eq!(list.size(), 2);
    let mut with_state = Cache::List(vec![Cache::kv(), Cache::arrays(1)]);
    assert!(!with_state.is_trimmable());
    assert_eq!(with_state.trim(1), 0);
}

trait FirstRows {
    fn index_first(&self, n: i32) -> Array;
}

impl FirstRows for Array {
    fn index_first(&self, n: i32) -> Array {
        use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
        self.try_index((Ellipsis, 0..n, ..)).unwrap()
    }
}

fn check_loaded(fx: &Fixture, caches: &[Cache]) {
    let expect = fx.json("prompt_cache");
    let expect = expect.as_array().unwrap();
    assert_eq!(caches.len(), expect.len());
    for (i, (c, e)) in caches.iter().zip(expect).enumerate() {
        assert_eq!(c.class_name(), e["class"].as_str().unwrap(), "cache {i}");
        if let Some(off) = e.get("offset").and_then(Value::as_i64) {
            assert_eq!(c.offset() as i64, off, "cache {i} offset");
        }
        match c {
            Cache::Kv(_) | Cache::Chunked(_) => {
                let (k, v) = keys_and_values(c);
                assert_equal(&format!("cache {i} keys"), &k, fx.get(&format!("pc.{i}.k")));
                assert_equal(
                    &format!("cache {i} values"),
                    &v,
                    fx.get(&format!("pc.{i}.v")),
                );
            }
            Cache::Rotating(r) => {
                assert_equal(
                    &format!("cache {i} keys"),
                    r.keys.as_ref().unwrap(),
                    fx.get(&format!("pc.{i}.k")),
                );
                assert_equal(
                    &format!("cache {i} values"),
                    r.values.as_ref().unwrap(),
                    fx.get(&format!("pc.{i}.v")),
                );
                assert_eq!((r.keep, r.max_size), (1, 4));
            }
            Cache::Quantized(q) => {
                for (j, part) in q.keys.as_ref().unwrap().parts().iter().enumerate() {
                    assert_equal(
                        &format!("cache {i} keys[{j}]"),
                        part,
                        fx.get(&format!("pc.{i}.k{j}")),
                    );
                }
                assert_eq!((q.group_size, q.bits), (32, 8));
            }
            Cache::Batch(_) => panic!("the reference file has no batch cache"),
            Cache::Arrays(a) => {
                for j in 0..a.cache.len() {
                    assert_equal(
                        &format!("cache {i} slot {j}"),
                        a.get(j).unwrap(),
                        fx.get(&format!("pc.{i}.s{j}")),
                    );
                }
                assert!(a.left_padding.is_none() && a.lengths.is_none());
            }
            Cache::List(inner) => {
                let names: Vec<&str> = inner.iter().map(Cache::class_name).collect();
                let want: Vec<&str> = e["inner"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(names, want);
                assert_equal(
                    "list keys",
                    &keys_and_values(&inner[0]).0,
                    fx.get(&format!("pc.{i}.0.k")),
                );
                let Cache::Arrays(a) = &inner[1] else {
                    panic!("second entry is not an ArraysCache")
                };
                assert_equal(
                    "list slot",
                    a.get(0).unwrap(),
                    fx.get(&format!("pc.{i}.1.s0")),
                );
            }
        }
    }
}

#[test]
fn prompt_cache_saved_by_reference_loads_and_round_trips() {
    let dir = blocks();
    let fx = fixture();
    let (caches, meta) = load_prompt_cache(dir.join("prompt_cache.safetensors")).unwrap();
    assert_eq!(meta.get("model").map(String::as_str), Some("tiny"));
    assert_eq!(meta.get("note").map(String::as_str), Some("blocks"));
    check_loaded(&fx, &caches);

    let tmp = std::env::temp_dir().join(format!(
        "blocks-prompt-cache-{}.safetensors",
        std::process::id()
    ));
    let mut m = HashMap::new();
    m.insert("model".to_string(), "tiny".to_string());
    m.insert("note".to_string(), "blocks".to_string());
    save_prompt_cache(&tmp, &caches, &m).unwrap();
    let (again, meta2) = load_prompt_cache(&tmp).unwrap();
    // and mlx-lm reads the file we wrote
    let seen = run_python(
        "import sys, json\n\
         from mlx_lm.models.cache import load_prompt_cache\n\
         c, m = load_prompt_cache(sys.argv[1], return_metadata=True)\n\
         print(json.dumps({'classes': [type(x).__name__ for x in c], \
         'offsets': [getattr(x, 'offset', None) for x in c], 'meta': m}))",
        &[tmp.as_os_str()],
    );
    std::fs::remove_file(&tmp).ok();
    let seen: Value = serde_json::from_str(seen.trim()).expect("the reference prints JSON");
    let classes: Vec<&str> = caches.iter().map(Cache::class_name).collect();
    assert_eq!(seen["classes"], serde_json::json!(classes));
    for (i, c) in caches.iter().enumerate() {
        if let Some(off) = seen["offsets"][i].as_i64() {
            assert_eq!(
                off,
                c.offset() as i64,
                "cache {i} offset as mlx-lm reads it"
            );
        }
    }
    assert_eq!(seen["meta"]["model"], "tiny");
    assert_eq!(meta2, meta);
    check_loaded(&fx, &again);
}

#[test]
fn a_quantized_cache_refuses_dense_update() {
    let mut c = Cache::quantized(32, 4);
    let k = Array::from_slice(&[0f32; 64], &[1, 1, 1, 64]);
    assert!(c.update_and_fetch(&k, &k).is_err());
    assert!(Cache::arrays(1).update_and_fetch(&k, &k).is_err());
}

#[test]
fn batch_cache_pads_masks_trims_filters_extracts_and_merges_like_reference() {
    use mlx_models::cache::BatchKvCache;
    let fx = fixture();
    let meta = fx.json("batch");
    let g = |k: &str| fx.get(&format!("batch.{k}"));
    let mut cache = Cache::batch(&[1, 3, 0]);
    let mask = |c: &Cache, n, w| match c.make_mask(n, w, false).unwrap() {
        Some(AttentionMask::Array(a)) => a,
        other => panic!("a batch cache makes explicit masks, got {other:?}"),
    };
    assert_equal(
        "mask before the prompt",
        &mask(&cache, 4, None),
        g("0.mask"),
    );
    let (k, v) = cache.update_and_fetch(g("0.in_k"), g("0.in_v")).unwrap();
    assert_equal("prompt keys", &k, g("0.k"));
    assert_equal("prompt values", &v, g("0.v"));
    assert_equal("offsets", cache.offsets().unwrap(), g("0.offset"));
    assert_equal("decode mask", &mask(&cache, 1, None), g("1.mask"));
    assert_equal(
        "decode mask, window 3",
        &mask(&cache, 1, Some(3)),
        g("1.mask_w3"),
    );
    let (k, _) = cache.update_and_fetch(g("1.in_k"), g("1.in_v")).unwrap();
    assert_equal("decode keys", &k, g("1.k"));
    assert_eq!(cache.trim(2) as i64, meta["trimmed"].as_i64().unwrap());
    let Cache::Batch(b) = &mut cache else {
        unreachable!()
    };
    let (k, v) = b.keys_and_values().unwrap();
    assert_equal("trimmed keys", &k, g("2.k"));
    assert_equal("trimmed values", &v, g("2.v"));
    assert_equal("trimmed offsets", &b.offset, g("2.offset"));
    let (k, _) = b.update_and_fetch(g("3.in_k"), g("3.in_v")).unwrap();
    assert_equal("keys after trim", &k, g("3.k"));
    b.filter(&Array::from_slice(&[1i32, 2], &[2])).unwrap();
    let (k, v) = b.keys_and_values().unwrap();
    assert_equal("filtered keys", &k, g("4.k"));
    assert_equal("filtered values", &v, g("4.v"));
    assert_equal("filtered offsets", &b.offset, g("4.offset"));
    assert_equal("filtered padding", &b.left_padding, g("4.left_padding"));
    assert_eq!(b.idx as i64, meta["idx_after_filter"].as_i64().unwrap());
    assert_equal("filtered mask", &b.make_mask(2, None).unwrap(), g("4.mask"));
    let one = b.extract(0).unwrap();
    assert_equal("extracted keys", one.keys.as_ref().unwrap(), g("5.k"));
    assert_eq!(one.offset as i64, meta["extract_offset"].as_i64().unwrap());

    let singles: Vec<KvCache> = [3, 5]
        .iter()
        .map(|n| {
            let mut c = KvCache::new();
            c.update_and_fetch(g(&format!("merge.in_k{n}")), g(&format!("merge.in_v{n}")))
                .unwrap();
            c
        })
        .chain(std::iter::once(KvCache::new()))
        .collect();
    let merged = BatchKvCache::merge(&singles).unwrap();
    let (k, v) = merged.keys_and_values().unwrap();
    assert_equal("merged keys", &k, g("merge.k"));
    assert_equal("merged values", &v, g("merge.v"));
    assert_equal("merged offsets", &merged.offset, g("merge.offset"));
    assert_equal(
        "merged padding",
        &merged.left_padding,
        g("merge.left_padding"),
    );
    assert_eq!(merged.idx as i64, meta["merge_idx"].as_i64().unwrap());
    assert_equal(
        "merged mask",
        &merged.make_mask(1, None).unwrap(),
        g("merge.mask"),
    );
}
