use mlx_models::ModelArgs;

#[derive(ModelArgs)]
#[arg(tag = "type")]
struct Args {
    factor: f32,
}

fn main() {}
