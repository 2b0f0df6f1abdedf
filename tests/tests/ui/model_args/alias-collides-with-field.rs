use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    hidden_size: usize,
    #[arg(alias = "hidden_size")]
    d_model: usize,
}

fn main() {}
