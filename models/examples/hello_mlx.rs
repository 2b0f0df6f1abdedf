//! A real MLX computation through `mlx-rs`, printed: the smallest check that MLX runs here.
//!
//! `cargo run --release -p mlx-models-zoo --example hello_mlx`
use mlx_rs::{fast, ops, random, Array};

fn main() -> Result<(), mlx_rs::error::Exception> {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let b = Array::from_slice(&[5.0f32, 6.0, 7.0, 8.0], &[2, 2]);
    let c = ops::matmul(&a, &b)?;
    println!(
        "[[1, 2], [3, 4]] @ [[5, 6], [7, 8]] = {:?}",
        c.as_slice::<f32>()
    );

    // Causal attention over 4 random positions, 2 heads of 8 dimensions.
    let key = random::key(0)?;
    let q = random::normal::<f32>(&[1, 2, 4, 8], None, None, &key)?;
    let out = fast::scaled_dot_product_attention(
        &q,
        &q,
        &q,
        8f32.powf(-0.5),
        fast::ScaledDotProductAttentionMask::Causal,
        None,
    )?;
    println!(
        "attention output {:?}, first row {:?}",
        out.shape(),
        &out.as_slice::<f32>()[..8]
    );
    Ok(())
}
