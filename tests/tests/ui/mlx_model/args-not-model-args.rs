#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
pub struct PlainArgs {
    hidden_size: usize,
}

use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "llama", args = PlainArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

fn main() {}
