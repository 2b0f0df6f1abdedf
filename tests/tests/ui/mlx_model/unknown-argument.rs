#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_typ = "llama", args = support::Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

fn main() {}
