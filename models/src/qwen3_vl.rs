//! `qwen3_vl`, after mlx-lm's `models/qwen3_vl.py`: the text model of
//! Qwen3-VL checkpoints, `qwen3` read from `text_config`, or from the whole
//! config where there is none. Multimodal RoPE is plain RoPE on
//! text. The vision tower (`visual`, `vision_tower`, or `model.visual` where newer checkpoints
//! nest both halves under `model`) is dropped; `model.language_model.*` becomes
//! `language_model.model.*` and every other key goes under `language_model.`.

use mlx_rs::macros::ModuleParameters;

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules, WithoutTextConfig};

use crate::qwen3::{self, Qwen3Args};

/// How qwen3_vl reads its text config: `text_config`, or the whole config.
#[derive(Debug)]
pub enum Qwen3VlRules {}

impl TextConfigRules for Qwen3VlRules {
    const WITHOUT_TEXT_CONFIG: WithoutTextConfig = WithoutTextConfig::WholeConfig;
}

/// config.json of a qwen3_vl checkpoint.
pub type Qwen3VlArgs = TextConfig<Qwen3Args, Qwen3VlRules>;

/// The qwen3_vl model: qwen3 under `language_model`.
#[mlx_model(
    model_type = "qwen3_vl",
    args = Qwen3VlArgs,
    drop = ["visual.*", "vision_tower.*", "model.visual.*"],
    rename("model.language_model" => "language_model.model"),
    add_prefix = "language_model.",
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: qwen3::Model,
}

mlx_models::text_model!(Model, language_model: qwen3::Model);
