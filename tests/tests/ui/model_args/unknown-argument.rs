use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(defualt = 1e-5)]
    rms_norm_eps: f32,
}

fn main() {}
