//! `mlx-models`: until the generation CLI lands, runs a real MLX computation and prints it.
use mlx_rs::{ops, Array};

fn main() -> Result<(), mlx_rs::error::Exception> {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let b = Array::from_slice(&[5.0f32, 6.0, 7.0, 8.0], &[2, 2]);
    let c = ops::matmul(&a, &b)?;
    c.eval()?;
    println!("[[1, 2], [3, 4]] @ [[5, 6], [7, 8]] = {:?}", c.as_slice::<f32>());
    Ok(())
}
