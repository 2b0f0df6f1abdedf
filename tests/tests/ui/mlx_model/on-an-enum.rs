use mlx_models::mlx_model;

#[mlx_model(model_type = "llama", args = Args)]
pub enum Model {
    Small,
}

fn main() {}
