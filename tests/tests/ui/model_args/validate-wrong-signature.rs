use mlx_models::ModelArgs;

#[derive(ModelArgs)]
#[arg(validate = Self::check)]
struct Args {
    hidden_size: usize,
}

impl Args {
    fn check(&self) -> bool {
        self.hidden_size > 0
    }
}

fn main() {}
