use mlx_models::ModelArgs;

#[derive(ModelArgs)]
#[arg(tag = "type")]
enum RopeScaling {
    Linear { factor: f32 },
    Dynamic(f32),
}

fn main() {}
