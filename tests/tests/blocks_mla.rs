//! Multi-head latent attention (`mlx_models::nn::mla`) against mlx-lm's deepseek_v3 attention
//! module alone, on random weights and inputs, through a KV cache: a prefill of 37 positions,
//! then one more (the absorbed decode at offset 37), one position at offset 0, and a chunk of
//! 5 after 37 (per-head keys expanded at an offset). Two shapes: low-rank queries with yarn's
//! `mscale_all_dim` in the scale, and one `q_proj` with biases and plain RoPE. Also: what the
//! cache holds per position is the latent and the shared rotated key, nothing per head, and with
//! deepseek_v32's sparse-attention indexer, the indexer's key besides (its values zero wide).

use mlx_models::cache::{create_attention_mask, Cache};
use mlx_models::nn::dsa::{Indexer, IndexerConfig};
use mlx_models::nn::mla::{mla_scale, MlaConfig, MultiLatentAttention};
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::RopeArgs;
use mlx_models_tests::reference::{blocks, DiffLog, Fixture};
use mlx_rs::module::ModuleParameters;
use mlx_rs::Array;

const TOL: f32 = 1e-5;

fn fixture() -> Fixture {
    Fixture::load(&blocks(), "mla")
}

/// The layer of `name`'s config, every parameter loaded from `<name>.param.*`.
fn layer(fx: &Fixture, name: &str) -> MultiLatentAttention {
    let c = fx.json(&format!("{name}.config"));
    let int = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("{k}")) as i32;
    let (nope, rope_dims) = (int("qk_nope_head_dim"), int("qk_rope_head_dim"));
    let scaling = c.get("rope_scaling").filter(|v| !v.is_null());
    let config = MlaConfig {
        hidden_size: int("hidden_size"),
        n_heads: int("num_attention_heads"),
        q_lora_rank: c["q_lora_rank"].as_i64().map(|r| r as i32),
        kv_lora_rank: int("kv_lora_rank"),
        qk_nope_head_dim: nope,
        qk_rope_head_dim: rope_dims,
        v_head_dim: int("v_head_dim"),
        bias: c["attention_bias"].as_bool().unwrap(),
        norm_eps: 1e-6,
        scale: mla_scale((nope + rope_dims) as usize, scaling),
    };
    let theta = c["rope_theta"].as_f64().map(|t| t as f32);
    let max = c["max_position_embeddings"].as_u64().map(|m| m as usize);
    let rope = RopeArgs::from_config(theta, scaling, None)
        .unwrap()
        .traditional(true)
        .max_position_embeddings(max)
        .build(rope_dims as usize)
        .unwrap();
    let mut attn = MultiLatentAttention::new(config, rope).unwrap();

    let want = format!("{name}.param.");
    let mut params = attn.parameters_mut().flatten();
    let mut n = 0;
    for (k, v) in &fx.arrays {
        if let Some(p) = k.strip_prefix(&want) {
            let slot = params
                .get_mut(p)
                .unwrap_or_else(|| panic!("{name}: the layer has no parameter `{p}`"));
            assert_eq!(slot.shape(), v.shape(), "{name}: {p}");
            **slot = v.clone();
            n += 1;
        }
    }
    drop(params);
    assert_eq!(
        n,
        attn.parameters().flatten().len(),
        "{name}: every parameter loaded"
    );
    attn
}

/// One step as the decoder runs it: the mask from the cache, then the layer.
fn run(attn: &MultiLatentAttention, x: &Array, cache: &mut Cache) -> Array {
    let mask = create_attention_mask(x.dim(1), Some(cache), None, true).unwrap();
    attn.forward(x, &mask, Some(cache)).unwrap()
}

#[test]
fn latent_attention_through_a_cache_matches_the_reference() {
    let fx = fixture();
    for name in ["lora", "plain"] {
        let attn = layer(&fx, name);
        let x = |k: &str| fx.get(&format!("{name}.{k}")).clone();
        let (x_pre, x_one, x_chunk) = (x("x_pre"), x("x_one"), x("x_chunk"));
        let mut log = DiffLog::default();

        let mut cache = Cache::kv();
        let prefill = run(&attn, &x_pre, &mut cache);
        log.close("prefill of 37", &prefill, &x("prefill"), TOL);
        let Cache::Kv(kv) = &cache else {
            unreachable!()
        };
        let (keys, values) = kv.keys_and_values().unwrap();
        log.close("cached latents", &keys, &x("prefill.keys"), TOL);
        log.close("cached rotated keys", &values, &x("prefill.values"), TOL);
        let step = run(&attn, &x_one, &mut cache);
        log.close("one position at offset 37", &step, &x("step"), TOL);
        assert_eq!(cache.offset(), 38);

        let first = run(&attn, &x_one, &mut Cache::kv());
        log.close("one position at offset 0", &first, &x("first"), TOL);

        let mut cache = Cache::kv();
        run(&attn, &x_pre, &mut cache);
        let chunk = run(&attn, &x_chunk, &mut cache);
        log.close("five positions at offset 37", &chunk, &x("chunk"), TOL);
        log.report(&format!("latent attention ({name})"));
    }
}

#[test]
fn the_cache_holds_the_latent_and_the_rotated_key_per_position() {
    let fx = fixture();
    let c = fx.json("lora.config");
    let per_position = ["kv_lora_rank", "qk_rope_head_dim"]
        .iter()
        .map(|k| c[*k].as_u64().unwrap() as usize)
        .sum::<usize>();
    assert_eq!(per_position, 32 + 8);
    let attn = layer(&fx, "lora");
    let x_pre = fx.get("lora.x_pre");
    let (batch, positions) = (x_pre.dim(0) as usize, x_pre.dim(1) as usize);
    let mut cache = Cache::kv();
    run(&attn, x_pre, &mut cache);
    let Cache::Kv(kv) = &cache else {
        unreachable!()
    };
    // The positions held: 4 bytes (float32) for each of the latent's and the rotated key's
    // features, one layer, whatever the number of heads (4 here).
    let (keys, values) = kv.keys_and_values().unwrap();
    let held = keys.nbytes() + values.nbytes();
    assert_eq!(held, batch * positions * per_position * 4);
    assert_eq!(held / (batch * positions), 160);
    // The buffer behind them (grown in steps) has the same bytes per position it can hold.
    let capacity = kv.keys.as_ref().unwrap().dim(2) as usize;
    assert!(capacity >= positions);
    assert_eq!(cache.nbytes(), batch * capacity * per_position * 4);
}

#[test]
fn a_sparse_layer_caches_the_indexer_keys_without_values() {
    let fx = fixture();
    let attn = layer(&fx, "lora");
    let c = attn.config.clone();
    let indexer = Indexer::new(
        IndexerConfig {
            hidden_size: c.hidden_size,
            q_lora_rank: c.q_lora_rank.unwrap(),
            n_heads: 2,
            head_dim: 16,
            topk: 4,
        },
        Rope::plain(c.qk_rope_head_dim, 10000.0, false, 1.0),
    )
    .unwrap();
    let attn = attn.with_indexer(indexer).unwrap();
    let (x_pre, x_one) = (fx.get("lora.x_pre"), fx.get("lora.x_one"));
    let (batch, positions) = (x_pre.dim(0) as usize, x_pre.dim(1) as usize);

    // A plain cache made for the layer becomes the pair it needs on the first step.
    let mut cache = Cache::kv();
    run(&attn, x_pre, &mut cache);
    let step = run(&attn, x_one, &mut cache);
    assert_eq!(step.shape(), x_one.shape());
    let Cache::List(parts) = &cache else {
        panic!("a sparse layer's cache is a list")
    };
    let [Cache::Kv(latents), Cache::Kv(keys)] = &parts[..] else {
        panic!("two key/value caches")
    };
    assert_eq!((latents.offset, keys.offset), (38, 38));
    let (k, v) = keys.keys_and_values().unwrap();
    let b = batch as i32;
    assert_eq!(
        (k.shape(), v.shape()),
        (&[b, 1, 38, 16][..], &[b, 1, 38, 0][..])
    );
    // Per position: the latent (32), the rotated key (8) and the indexer's key (16), float32.
    let capacity = latents.keys.as_ref().unwrap().dim(2) as usize;
    assert!(capacity > positions);
    assert_eq!(cache.nbytes(), batch * capacity * (32 + 8 + 16) * 4);

    // A filled cache of one kind is not split.
    let mut filled = Cache::kv();
    run(&layer(&fx, "lora"), x_pre, &mut filled);
    let mask = create_attention_mask(1, Some(&filled), None, true).unwrap();
    assert!(attn.forward(x_one, &mask, Some(&mut filled)).is_err());
}
