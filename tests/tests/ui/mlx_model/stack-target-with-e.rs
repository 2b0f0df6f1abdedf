#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "mixtral", args = support::Args, stack_experts("layers.{n}.experts.{e}" => "layers.{n}.switch_mlp.{e}"))]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

fn main() {}
