use mlx_models::ModelArgs;

struct Base {
    hidden_size: usize,
}

#[derive(ModelArgs)]
struct Args {
    #[arg(flatten)]
    base: Base,
}

fn main() {}
