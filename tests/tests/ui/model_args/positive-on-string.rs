use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(positive)]
    model_type: String,
}

fn main() {}
