//! Speed of one quantized product on the CPU: mlx-sys's kernels against MLX's own, in one run.
//!
//!     cargo run --release -p mlx-models-tests --example qmm_bench -- ROWS OUT IN GROUP BITS
//!
//! `x [ROWS, IN] @ wᵀ` with `w [OUT, IN]` quantized (affine, float16 scales as GGUF
//! checkpoints have), 200 products per evaluation (5 for MLX's, which is much slower), best of 3; prints microseconds per product
//! and packed bytes read per second for both. Not a test: timings depend on the machine.

use mlx_models::nn::quantized::{quantized_matmul, Quantization};
use mlx_rs::ops::quantize;
use mlx_rs::{random, Array, Dtype};
use std::time::Instant;

fn time(x: &Array, w: &Array, s: &Array, b: &Array, q: &Quantization, reps: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let outs: Vec<Array> = (0..reps)
            .map(|_| quantized_matmul(x, w, s, Some(b), true, q).expect("product"))
            .collect();
        mlx_rs::transforms::eval(outs.iter()).expect("eval");
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn main() {
    let args: Vec<i32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integers: ROWS OUT IN GROUP BITS"))
        .collect();
    let [m, n, k, gs, bits] = args[..] else {
        eprintln!("usage: qmm_bench ROWS OUT IN GROUP BITS");
        std::process::exit(2);
    };
    let x = random::normal::<f32>(&[m, k], None, None, None).expect("x");
    let w = random::normal::<f32>(&[n, k], None, None, None).expect("w");
    let (w, s, b) = quantize(&w, gs, bits).expect("quantize");
    let s = s.as_dtype(Dtype::Float16).expect("scales");
    let b = b.as_dtype(Dtype::Float16).expect("biases");
    mlx_rs::transforms::eval([&w, &s, &b, &x]).expect("eval");
    let q = Quantization::affine(gs, bits);
    let bytes = n as f64 * k as f64 * (bits as f64 / 8.0 + 4.0 / gs as f64);
    let ours = time(&x, &w, &s, &b, &q, 200);
    mlx_sys::set_cpu_kernels(false);
    let mlx = time(&x, &w, &s, &b, &q, 5);
    mlx_sys::set_cpu_kernels(true);
    println!(
        "{m}x{n}x{k} group {gs} bits {bits}: ours {:.1} us ({:.1} GB/s), MLX {:.1} us ({:.1} GB/s), {:.1}x",
        ours * 1e6,
        bytes / ours / 1e9,
        mlx * 1e6,
        bytes / mlx / 1e9,
        mlx / ours
    );
}
