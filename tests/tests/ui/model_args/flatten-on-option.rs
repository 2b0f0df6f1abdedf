use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Base {
    hidden_size: usize,
}

#[derive(ModelArgs)]
struct Args {
    #[arg(flatten)]
    base: Option<Base>,
}

fn main() {}
