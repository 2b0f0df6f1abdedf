//! `lfm2-vl`, after mlx-lm's `models/lfm2-vl.py`: the text model of LFM2-VL checkpoints,
//! `lfm2` read from `text_config` (the reference also forces `tie_word_embeddings` off there,
//! which changes nothing: lfm2's head is always the embeddings). The vision tower and the
//! projector are dropped; the text model's weights are under `language_model.` and go through lfm2's
//! own sanitize.

use mlx_rs::macros::ModuleParameters;

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules};

use crate::lfm2::{self, Lfm2Args};

/// How lfm2-vl reads its text config: `text_config`, required.
#[derive(Debug)]
pub enum Lfm2VlRules {}

impl TextConfigRules for Lfm2VlRules {}

/// config.json of an lfm2-vl checkpoint: the text model's config in `text_config`.
pub type Lfm2VlArgs = TextConfig<Lfm2Args, Lfm2VlRules>;

/// The lfm2-vl model: lfm2 under `language_model`.
#[mlx_model(
    model_type = "lfm2-vl",
    args = Lfm2VlArgs,
    drop = ["vision_tower.*", "multi_modal_projector.*"],
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: lfm2::Model,
}

mlx_models::text_model!(Model, language_model: lfm2::Model);
