use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args<T> {
    hidden_size: T,
}

fn main() {}
