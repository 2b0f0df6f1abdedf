use mlx_models::ModelArgs;

struct Activation;

#[derive(ModelArgs)]
struct Args {
    hidden_act: Activation,
}

fn main() {}
