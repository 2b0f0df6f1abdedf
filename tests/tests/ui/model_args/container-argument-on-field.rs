use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(text_config)]
    hidden_size: usize,
}

fn main() {}
