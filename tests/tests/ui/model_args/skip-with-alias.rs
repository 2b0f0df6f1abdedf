use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(skip, alias = "kv")]
    kv_heads: usize,
}

fn main() {}
