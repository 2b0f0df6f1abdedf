use mlx_models::ModelArgs;

#[derive(ModelArgs)]
union Args {
    hidden_size: usize,
}

fn main() {}
