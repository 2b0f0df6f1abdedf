#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "gpt2", args = support::Args, rename("h.{n}.attn" => "model.self_attn"))]
#[derive(Debug, ModuleParameters)]
pub struct Model {}

trivial_architecture!(Model);

fn main() {}
