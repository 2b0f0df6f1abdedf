#[path = "../support/mod.rs"]
mod support;

use mlx_models::mlx_model;
use mlx_rs::macros::ModuleParameters;

#[mlx_model(model_type = "llama", args = support::Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[mlx_model(weight = "output")]
    #[param]
    lm_head: Option<mlx_rs::nn::Linear>,
}

fn main() {}
