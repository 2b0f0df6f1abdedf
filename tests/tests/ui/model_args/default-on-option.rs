use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(default = Some(8))]
    num_key_value_heads: Option<usize>,
}

fn main() {}
