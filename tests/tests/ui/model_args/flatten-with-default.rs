use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Base {
    hidden_size: usize,
}

#[derive(ModelArgs)]
struct Args {
    #[arg(flatten, default)]
    base: Base,
}

fn main() {}
