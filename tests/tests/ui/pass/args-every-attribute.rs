//! Every `#[arg]` attribute at once, and what it reads.

use mlx_models::args::{ArgsError, ModelArgs};

#[derive(Debug, PartialEq, ModelArgs)]
#[arg(tag = "rope_type", tag = "type", validate = Self::check)]
enum Rope {
    Default,
    #[arg(rename = "linear", alias = "scaled")]
    Linear { factor: f32 },
}

impl Rope {
    fn check(&mut self) -> Result<(), ArgsError> {
        Ok(())
    }
}

#[derive(Debug, PartialEq, ModelArgs)]
struct Vision {
    #[arg(default = 224)]
    image_size: usize,
}

#[derive(Debug, PartialEq, ModelArgs)]
struct Extra {
    #[arg(default = 4)]
    no_rope_layer_interval: usize,
    head_dim: Option<usize>,
}

#[derive(Debug, PartialEq, ModelArgs)]
#[arg(text_config, validate = Self::check)]
struct Args {
    #[arg(positive, alias = "d_model")]
    hidden_size: usize,
    #[arg(alias = "n_kv_heads")]
    num_key_value_heads: Option<usize>,
    #[arg(default = 1e-5)]
    rms_norm_eps: f32,
    #[arg(default)]
    attention_bias: bool,
    #[arg(rename = "sliding-window")]
    sliding_window: Option<usize>,
    #[arg(alias = "rope_parameters")]
    rope_scaling: Option<Rope>,
    vision_config: Option<Vision>,
    layer_types: Vec<String>,
    r#type: Option<String>,
    #[arg(skip)]
    kv_heads: usize,
    #[arg(flatten)]
    extra: Extra,
}

impl Args {
    fn check(&mut self) -> Result<(), ArgsError> {
        self.kv_heads = self.num_key_value_heads.unwrap_or(1);
        Ok(())
    }
}

fn main() {
    let config = serde_json::json!({
        "text_config": {"d_model": 8, "layer_types": ["full"], "head_dim": 2},
        "sliding-window": 4,
        "rope_parameters": {"type": "scaled", "factor": 2},
        "vision_config": {}
    });
    let args = Args::from_config(&config).expect("parses");
    assert_eq!(args.hidden_size, 8);
    assert_eq!(args.sliding_window, Some(4));
    assert_eq!(args.rope_scaling, Some(Rope::Linear { factor: 2.0 }));
    assert_eq!(args.vision_config, Some(Vision { image_size: 224 }));
    assert_eq!(args.kv_heads, 1);
    let extra = Extra { no_rope_layer_interval: 4, head_dim: Some(2) };
    assert_eq!(args.extra, extra);
}
