#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "llama", args = support::Args, sanitize = Self::fix)]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

impl Model {
    fn fix(&mut self, _weights: Vec<u8>) {}
}

fn main() {}
