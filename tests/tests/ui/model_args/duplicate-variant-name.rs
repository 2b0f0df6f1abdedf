use mlx_models::ModelArgs;

#[derive(ModelArgs)]
#[arg(tag = "type")]
enum RopeScaling {
    Linear { factor: f32 },
    #[arg(rename = "linear")]
    Scaled { factor: f32 },
}

fn main() {}
