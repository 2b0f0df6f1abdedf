use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(default = 1e-5, default = 1e-6)]
    rms_norm_eps: f32,
}

fn main() {}
