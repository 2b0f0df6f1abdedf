use mlx_models::ModelArgs;

#[derive(ModelArgs)]
enum RopeScaling {
    Linear { factor: f32 },
    Dynamic { factor: f32 },
}

fn main() {}
