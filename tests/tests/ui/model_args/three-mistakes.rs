use mlx_models::ModelArgs;

#[derive(ModelArgs)]
struct Args {
    #[arg(defualt = 1)]
    a: usize,
    #[arg(alais = "x")]
    b: usize,
    #[arg(postive)]
    c: usize,
}

fn main() {}
