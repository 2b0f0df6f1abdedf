//! The CPU kernels of quantized products (mlx-sys `kernels/`) against MLX's own kernel, in the
//! same process on the same inputs: every affine bit width and group size, one row (decode),
//! a few rows (batched decode), 40 rows and more (prefill, through BLAS on dequantized tiles), odd
//! output widths, batch axes, a transposed (strided) input, float32 results of float16 /
//! bfloat16 inputs (half-precision results stay MLX's own, bit for bit),
//! and each code path (AVX-512, AVX2, portable) where the CPU has it.

use mlx_models::nn::quantized::{quantized_linear, quantized_matmul, Quantization};
use mlx_rs::ops::{quantize, quantized_matmul as mlx_quantized_matmul};
use mlx_rs::{random, Array, Dtype};
use mlx_sys::CpuKernelIsa;

/// Largest difference, relative to the largest magnitude of the reference.
fn relative_error(ours: &Array, reference: &Array) -> f32 {
    let ours = ours.as_dtype(Dtype::Float32).unwrap();
    let reference = reference.as_dtype(Dtype::Float32).unwrap();
    assert_eq!(ours.shape(), reference.shape());
    let a = ours.as_slice::<f32>();
    let b = reference.as_slice::<f32>();
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

struct Case {
    x: Array,
    w: Array,
    scales: Array,
    biases: Array,
    q: Quantization,
}

fn case(x_shape: &[i32], n: i32, k: i32, group_size: i32, bits: i32, seed: u64) -> Case {
    let key = random::key(seed).unwrap();
    let (kx, kw) = random::split(&key, 2).unwrap();
    let mut shape = x_shape.to_vec();
    shape.push(k);
    let x = random::normal::<f32>(&shape[..], None, None, Some(&kx)).unwrap();
    let w = random::normal::<f32>(&[n, k], None, None, Some(&kw)).unwrap() * 0.1;
    let (w, scales, biases) = quantize(&w, group_size, bits).unwrap();
    Case {
        x,
        w,
        scales,
        biases,
        q: Quantization::affine(group_size, bits),
    }
}

impl Case {
    /// The same values with x in `x_type` and the scales and biases in `scale_type`.
    fn cast(&self, x_type: Dtype, scale_type: Dtype) -> Case {
        Case {
            x: self.x.as_dtype(x_type).unwrap(),
            w: self.w.clone(),
            scales: self.scales.as_dtype(scale_type).unwrap(),
            biases: self.biases.as_dtype(scale_type).unwrap(),
            q: self.q,
        }
    }
}

fn ours(c: &Case, x: &Array) -> Array {
    let out = quantized_matmul(x, &c.w, &c.scales, Some(&c.biases), true, &c.q).unwrap();
    out.eval().unwrap();
    out
}

fn reference(c: &Case, x: &Array) -> Array {
    let out = mlx_quantized_matmul(
        x,
        &c.w,
        &c.scales,
        &c.biases,
        true,
        c.q.group_size,
        c.q.bits,
    )
    .unwrap();
    out.eval().unwrap();
    out
}

#[test]
fn kernels_are_in_use() {
    assert!(
        mlx_sys::cpu_kernels(),
        "the CPU kernels are off (MLX_MODELS_CPU_KERNELS=0?): this test checks them"
    );
    // A product large enough that our summation order differs from MLX's somewhere: equal
    // within rounding, not bit for bit, so the kernels (and not MLX's op) computed it.
    let c = case(&[1], 300, 384, 64, 4, 1);
    let a = ours(&c, &c.x);
    let b = reference(&c, &c.x);
    assert!(relative_error(&a, &b) < 1e-5);
    assert_ne!(
        a.as_slice::<f32>(),
        b.as_slice::<f32>(),
        "bit-identical to MLX's kernel: the CPU kernels did not run"
    );
}

#[test]
fn every_bit_width_and_group_size_matches_mlx() {
    check_every_width("simd");
}

/// Tests that limit the kernels' instruction set run one at a time (other tests running
/// meanwhile may take the limited code too: it gives the same values within rounding).
static ISA: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_isa(isa: CpuKernelIsa, label: &str) {
    let _one_at_a_time = ISA.lock().unwrap_or_else(|e| e.into_inner());
    mlx_sys::set_cpu_kernels_isa(isa);
    let result = std::panic::catch_unwind(|| check_every_width(label));
    mlx_sys::set_cpu_kernels_isa(CpuKernelIsa::Best);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn portable_code_matches_mlx() {
    // The code of CPUs without AVX2 (and of ARM).
    with_isa(CpuKernelIsa::Portable, "portable");
}

#[test]
fn avx2_code_matches_mlx() {
    // The AVX2 code where the CPU also has AVX-512 (elsewhere the best code is this one, or
    // the portable code).
    with_isa(CpuKernelIsa::Avx2, "avx2");
}

fn check_every_width(label: &str) {
    let mut seed = 10;
    for bits in [2, 3, 4, 5, 6, 8] {
        for group_size in [32, 64, 128] {
            // one row, a few rows, rows past the BLAS threshold; odd output widths
            for (rows, n) in [(1, 37), (3, 130), (7, 20), (16, 67), (40, 301)] {
                seed += 1;
                // K of 3 groups: with groups of 32 not a multiple of 64 (no 4-bit fast path),
                // of 64 a block of 128 and one of 64; and of 9 groups of 64 (576, SmolLM2's).
                let k = match (rows, group_size) {
                    (7, 64) | (3, 32) | (40, 32) => 576,
                    _ => group_size * 3,
                };
                let c = case(&[rows], n, k, group_size, bits, seed);
                let err = relative_error(&ours(&c, &c.x), &reference(&c, &c.x));
                assert!(
                    err < 2e-6,
                    "{label}: bits {bits}, group {group_size}, rows {rows}, n {n}: relative error {err}"
                );
            }
        }
    }
}

#[test]
fn batch_axes_and_strided_inputs_match_mlx() {
    for (i, shape) in [&[2, 5][..], &[2, 1][..], &[3, 2, 7][..], &[2, 20][..]]
        .iter()
        .enumerate()
    {
        let c = case(shape, 96, 256, 64, 4, 100 + i as u64);
        let err = relative_error(&ours(&c, &c.x), &reference(&c, &c.x));
        assert!(err < 2e-6, "x {shape:?}: relative error {err}");
    }
    // x as the transpose of a contiguous array: the kernel reads its strides.
    let c = case(&[1], 80, 128, 32, 8, 200);
    let xt = random::normal::<f32>(&[128, 24], None, None, Some(&random::key(7).unwrap()))
        .unwrap()
        .t();
    let err = relative_error(&ours(&c, &xt), &reference(&c, &xt));
    assert!(err < 2e-6, "transposed x: relative error {err}");
}

#[test]
fn half_precision_results_are_mlx_own() {
    // In float16 / bfloat16 MLX's CPU kernel accumulates in the half type, and mlx-lm's
    // half-precision values (the parity oracle) are that kernel's: such products stay MLX's,
    // bit for bit.
    for dtype in [Dtype::Float16, Dtype::Bfloat16] {
        for rows in [1, 4, 48] {
            let c = case(&[rows], 70, 192, 64, 4, 300 + rows as u64);
            let half = c.cast(dtype, dtype);
            let out = ours(&half, &half.x);
            let mlx = reference(&half, &half.x);
            assert_eq!(out.dtype(), dtype);
            let bits = |a: &Array| {
                a.as_dtype(Dtype::Float32)
                    .unwrap()
                    .as_slice::<f32>()
                    .to_vec()
            };
            assert_eq!(bits(&out), bits(&mlx), "{dtype:?}, rows {rows}");
        }
    }
}

#[test]
fn mixed_types_give_mlx_result_type_and_values() {
    // float32 activations with float16 / bfloat16 scales (GGUF checkpoints), and the reverse.
    for (x_type, s_type) in [
        (Dtype::Float32, Dtype::Float16),
        (Dtype::Float32, Dtype::Bfloat16),
        (Dtype::Float16, Dtype::Float32),
        (Dtype::Bfloat16, Dtype::Float32),
    ] {
        for rows in [1, 5, 20] {
            let c = case(&[rows], 90, 256, 32, 4, 600 + rows as u64);
            let mixed = c.cast(x_type, s_type);
            let out = ours(&mixed, &mixed.x);
            let reference = reference(&mixed, &mixed.x);
            assert_eq!(
                out.dtype(),
                reference.dtype(),
                "{x_type:?} x, {s_type:?} scales"
            );
            let err = relative_error(&out, &reference);
            let tol = if reference.dtype() == Dtype::Float32 {
                2e-6
            } else {
                2e-3
            };
            assert!(
                err < tol,
                "{x_type:?} x, {s_type:?} scales, rows {rows}: error {err}"
            );
        }
    }
}

#[test]
fn linear_layers_use_the_kernels_and_match_mlx() {
    // quantized_linear (what every quantized layer calls) gives the same values.
    let c = case(&[2, 3], 600, 512, 64, 4, 400);
    let out = quantized_linear(&c.x, &c.w, &c.scales, Some(&c.biases), &c.q).unwrap();
    out.eval().unwrap();
    let err = relative_error(&out, &reference(&c, &c.x));
    assert!(err < 2e-6, "relative error {err}");
}

#[test]
fn bad_shapes_are_errors_not_crashes() {
    let c = case(&[2], 64, 128, 64, 4, 500);
    let wrong_x = Array::zeros::<f32>(&[2, 96]).unwrap();
    assert!(quantized_matmul(&wrong_x, &c.w, &c.scales, Some(&c.biases), true, &c.q).is_err());
    let wrong_scales = Array::zeros::<f32>(&[64, 3]).unwrap();
    assert!(quantized_matmul(&c.x, &c.w, &wrong_scales, Some(&c.biases), true, &c.q).is_err());
    let empty = Array::zeros::<f32>(&[0, 128]).unwrap();
    let out = quantized_matmul(&empty, &c.w, &c.scales, Some(&c.biases), true, &c.q).unwrap();
    out.eval().unwrap();
    assert_eq!(out.shape(), &[0, 64]);
}
