use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(alias = n_kv_heads)]
    num_key_value_heads: usize,
}

fn main() {}
