//! `qwen2_vl` (alias `qwen2_5_vl`), after mlx-lm's `models/qwen2_vl.py`: the text model of
//! Qwen2-VL and Qwen2.5-VL checkpoints, `qwen2` read from `text_config`, or from the whole
//! config where there is none (the older, flat checkpoints). Multimodal RoPE is plain RoPE on
//! text. The vision tower (`visual`, `vision_tower`, or `model.visual` where newer checkpoints
//! nest both halves under `model`) is dropped; `model.language_model.*` becomes
//! `language_model.model.*` and every other key goes under `language_model.`.

use mlx_rs::macros::ModuleParameters;

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules, WithoutTextConfig};

use crate::qwen2::{self, Qwen2Args};

/// How qwen2_vl reads its text config: `text_config`, or the whole config.
#[derive(Debug)]
pub enum Qwen2VlRules {}

impl TextConfigRules for Qwen2VlRules {
    const WITHOUT_TEXT_CONFIG: WithoutTextConfig = WithoutTextConfig::WholeConfig;
}

/// config.json of a qwen2_vl checkpoint.
pub type Qwen2VlArgs = TextConfig<Qwen2Args, Qwen2VlRules>;

/// The qwen2_vl model: qwen2 under `language_model`.
#[mlx_model(
    model_type = "qwen2_vl",
    aliases = ["qwen2_5_vl"],
    args = Qwen2VlArgs,
    drop = ["visual.*", "vision_tower.*", "model.visual.*"],
    rename("model.language_model" => "language_model.model"),
    add_prefix = "language_model.",
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: qwen2::Model,
}

mlx_models::text_model!(Model, language_model: qwen2::Model);
