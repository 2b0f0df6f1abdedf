//! The platform works: real MLX computations through an unmodified `mlx-rs` on top of our
//! `mlx-sys`, each checked against the formula written out on the host.

use std::collections::HashMap;

use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops;
use mlx_rs::{random, Array, Dtype};

fn host(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).expect("cast");
    a.eval().expect("eval");
    a.as_slice::<f32>().to_vec()
}

fn normal(shape: &[i32], seed: u64) -> Array {
    let key = random::key(seed).expect("key");
    random::normal::<f32>(shape, None, None, &key).expect("normal")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn matmul_gives_exact_small_integer_products() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = Array::from_slice(&[7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]);
    let c = ops::matmul(&a, &b).expect("matmul");
    assert_eq!(c.shape(), &[2, 2]);
    assert_eq!(host(&c), vec![58.0, 64.0, 139.0, 154.0]);
}

#[test]
fn large_float32_matmul_matches_host_dot_products() {
    // Big enough to go through BLAS (cblas_sgemm), unlike tiny products.
    let (m, k, n) = (64, 96, 48);
    let a = normal(&[m, k], 1);
    let b = normal(&[k, n], 2);
    let c = host(&ops::matmul(&a, &b).expect("matmul"));
    let (ha, hb) = (host(&a), host(&b));
    let mut worst = 0.0f32;
    for i in 0..m as usize {
        for j in 0..n as usize {
            let want: f32 = (0..k as usize)
                .map(|t| ha[i * k as usize + t] * hb[t * n as usize + j])
                .sum();
            worst = worst.max((want - c[i * n as usize + j]).abs());
        }
    }
    assert!(worst < 1e-4, "largest difference {worst}");
}

/// RoPE written out: position `p = offset + t`, frequency `theta_i = base^(-2i/dims)`,
/// angle `p * scale * theta_i`; pairs are `(x[i], x[i + dims/2])` or, traditional,
/// `(x[2i], x[2i+1])`.
fn rope_reference(
    x: &[f32],
    l: usize,
    d: usize,
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    offset: usize,
) -> Vec<f32> {
    let rows = x.len() / d;
    let mut out = x.to_vec();
    for r in 0..rows {
        let t = r % l;
        let pos = (offset + t) as f32 * scale;
        for i in 0..dims / 2 {
            let theta = base.powf(-2.0 * i as f32 / dims as f32);
            let (c, s) = ((pos * theta).cos(), (pos * theta).sin());
            let (a, b) = if traditional {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + dims / 2)
            };
            let (x1, x2) = (x[r * d + a], x[r * d + b]);
            out[r * d + a] = x1 * c - x2 * s;
            out[r * d + b] = x1 * s + x2 * c;
        }
    }
    out
}

#[test]
fn fast_rope_matches_the_formula_in_both_layouts_with_offset_and_partial_dims() {
    let (b, h, l, d) = (1, 2, 7, 16);
    let x = normal(&[b, h, l, d], 3);
    let hx = host(&x);
    for &traditional in &[false, true] {
        for &(dims, offset, scale) in &[(16usize, 0usize, 1.0f32), (16, 5, 1.0), (8, 3, 0.5)] {
            let got = fast::rope(
                &x,
                dims as i32,
                traditional,
                10000.0,
                scale,
                offset as i32,
                None,
            )
            .expect("rope");
            let want = rope_reference(
                &hx,
                l as usize,
                d as usize,
                dims,
                traditional,
                10000.0,
                scale,
                offset,
            );
            let diff = max_abs_diff(&host(&got), &want);
            assert!(
                diff < 1e-4,
                "traditional={traditional} dims={dims} offset={offset}: {diff}"
            );
        }
    }
}

/// softmax(Q K^T * scale + mask) V written out, with grouped-query heads (query head `h`
/// reads key/value head `h / (n_q / n_kv)`) and an optional causal mask aligned to the end.
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_kv: usize,
    lq: usize,
    lk: usize,
    d: usize,
    scale: f32,
    causal: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; n_q * lq * d];
    for h in 0..n_q {
        let kh = h / (n_q / n_kv);
        for i in 0..lq {
            let mut scores: Vec<f32> = (0..lk)
                .map(|j| {
                    let dot: f32 = (0..d)
                        .map(|t| q[(h * lq + i) * d + t] * k[(kh * lk + j) * d + t])
                        .sum();
                    let visible = !causal || j <= i + (lk - lq);
                    if visible {
                        dot * scale
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - m).exp();
                total += *s;
            }
            for j in 0..lk {
                let p = scores[j] / total;
                for t in 0..d {
                    out[(h * lq + i) * d + t] += p * v[(kh * lk + j) * d + t];
                }
            }
        }
    }
    out
}

#[test]
fn sdpa_matches_the_formula_for_causal_grouped_query_attention() {
    let (n_q, n_kv, lq, lk, d) = (4usize, 2usize, 5usize, 9usize, 8usize);
    let q = normal(&[1, n_q as i32, lq as i32, d as i32], 4);
    let k = normal(&[1, n_kv as i32, lk as i32, d as i32], 5);
    let v = normal(&[1, n_kv as i32, lk as i32, d as i32], 6);
    let scale = 1.0 / (d as f32).sqrt();
    let (hq, hk, hv) = (host(&q), host(&k), host(&v));

    let none = fast::scaled_dot_product_attention(&q, &k, &v, scale, None, None).expect("sdpa");
    let want = attention_reference(&hq, &hk, &hv, n_q, n_kv, lq, lk, d, scale, false);
    assert!(max_abs_diff(&host(&none), &want) < 1e-5);

    let causal = fast::scaled_dot_product_attention(
        &q,
        &k,
        &v,
        scale,
        ScaledDotProductAttentionMask::Causal,
        None,
    )
    .expect("sdpa causal");
    let want = attention_reference(&hq, &hk, &hv, n_q, n_kv, lq, lk, d, scale, true);
    assert!(max_abs_diff(&host(&causal), &want) < 1e-5);

    // The same causal mask given as an additive array.
    let mask: Vec<f32> = (0..lq)
        .flat_map(|i| {
            (0..lk).map(move |j| {
                if j <= i + (lk - lq) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    let mask = Array::from_slice(&mask, &[lq as i32, lk as i32]);
    let masked =
        fast::scaled_dot_product_attention(&q, &k, &v, scale, &mask, None).expect("sdpa mask");
    assert!(max_abs_diff(&host(&masked), &want) < 1e-5);
}

#[test]
fn quantize_round_trip_stays_within_half_a_step_and_quantized_matmul_equals_dequantized_matmul() {
    let w = normal(&[32, 128], 7);
    let hw = host(&w);
    for &bits in &[2, 3, 4, 6, 8] {
        let group = 64;
        let (wq, scales, biases) = ops::quantize(&w, group, bits).expect("quantize");
        assert_eq!(wq.dtype(), Dtype::Uint32);
        assert_eq!(wq.shape(), &[32, 128 * bits / 32]);
        let back = ops::dequantize(&wq, &scales, &biases, group, bits).expect("dequantize");
        let hb = host(&back);
        let hs = host(&scales);
        // Affine quantization: MLX snaps the grid so that zero is representable, which can
        // push the far end of a group's range up to one step (the group's scale) away; on
        // average a value is within a quarter step (uniform error over half a step each side).
        let mut total = 0.0f32;
        for (idx, (orig, deq)) in hw.iter().zip(&hb).enumerate() {
            let step = hs[idx / group as usize].abs();
            assert!(
                (orig - deq).abs() <= step + 1e-5,
                "bits={bits} idx={idx}: {orig} vs {deq}, step {step}"
            );
            total += (orig - deq).abs() / step;
        }
        let mean = total / hw.len() as f32;
        assert!(mean < 0.35, "bits={bits}: mean error {mean} steps");
        let x = normal(&[3, 128], 8);
        let qmm = ops::quantized_matmul(&x, &wq, &scales, &biases, true, group, bits).expect("qmm");
        let mm = ops::matmul(&x, back.t()).expect("mm");
        let diff = max_abs_diff(&host(&qmm), &host(&mm));
        assert!(diff < 1e-4, "bits={bits}: {diff}");
    }
}

#[test]
fn safetensors_round_trip_keeps_names_shapes_dtypes_and_values() {
    let dir = std::env::temp_dir().join(format!("mlx-models-platform-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("round.safetensors");
    let a = normal(&[3, 4], 9);
    let b = Array::from_slice(&[1i32, -2, 3], &[3]);
    let c = normal(&[2, 2], 10).as_dtype(Dtype::Bfloat16).expect("bf16");
    let arrays = HashMap::from([
        ("a".to_string(), a.clone()),
        ("b.c".to_string(), b.clone()),
        ("h".to_string(), c.clone()),
    ]);
    Array::save_safetensors(arrays, None, &path).expect("save");
    let loaded = Array::load_safetensors(&path).expect("load");
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded["a"].shape(), &[3, 4]);
    assert_eq!(host(&loaded["a"]), host(&a));
    assert_eq!(loaded["b.c"].dtype(), Dtype::Int32);
    assert_eq!(loaded["b.c"].as_slice::<i32>(), &[1, -2, 3]);
    assert_eq!(loaded["h"].dtype(), Dtype::Bfloat16);
    assert_eq!(host(&loaded["h"]), host(&c));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn half_precision_item_values_cross_the_ffi_intact() {
    use half::{bf16, f16};
    let x = Array::from_f32(1.5).as_dtype(Dtype::Float16).expect("f16");
    assert_eq!(x.try_item_exact::<f16>().expect("item"), f16::from_f32(1.5));
    let y = Array::from_f32(-3.25)
        .as_dtype(Dtype::Bfloat16)
        .expect("bf16");
    assert_eq!(
        y.try_item_exact::<bf16>().expect("item"),
        bf16::from_f32(-3.25)
    );
    // Arithmetic in half precision, read back through the data pointer.
    let z = Array::from_slice(&[f16::from_f32(0.5), f16::from_f32(2.0)], &[2]);
    let z = ops::multiply(&z, &z).expect("mul");
    assert_eq!(
        z.as_slice::<f16>(),
        &[f16::from_f32(0.25), f16::from_f32(4.0)]
    );
    let w = Array::from_slice(&[bf16::from_f32(65504.0)], &[1]);
    assert_eq!(w.as_slice::<bf16>(), &[bf16::from_f32(65504.0)]);
}

#[test]
fn seeded_random_numbers_are_reproducible() {
    let a = host(&normal(&[16], 42));
    let b = host(&normal(&[16], 42));
    let c = host(&normal(&[16], 43));
    assert_eq!(a, b);
    assert_ne!(a, c);
    random::seed(7).expect("seed");
    let d = host(&random::uniform::<_, f32>(0.0, 1.0, &[8], None).expect("uniform"));
    random::seed(7).expect("seed");
    let e = host(&random::uniform::<_, f32>(0.0, 1.0, &[8], None).expect("uniform"));
    assert_eq!(d, e);
    assert!(d.iter().all(|v| (0.0..1.0).contains(v)));
}
