#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "mixtral", args = support::Args, stack_experts("model.layers.{n}.experts" => "model.layers.{n}.switch_mlp"))]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

fn main() {}
