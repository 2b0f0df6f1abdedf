use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(positive = true)]
    hidden_size: usize,
}

fn main() {}
