#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

pub struct PlainArgs {
    pub hidden_size: usize,
}

#[mlx_model(model_type = "llama", args = PlainArgs)]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

fn main() {}
