use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args(usize, f32);

fn main() {}
