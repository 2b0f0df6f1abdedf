//! `lfm2-vl`, after mlx-lm's `models/lfm2-vl.py`: the text model of LFM2-VL checkpoints,
//! `lfm2` read from `text_config` (the reference also forces `tie_word_embeddings` off there,
//! which changes nothing: lfm2's head is always the embeddings). The vision tower and the
//! projector are dropped; the text model's weights are under `language_model.` and go through lfm2's
//! own sanitize.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;

use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::multimodal::{sanitize_text_model, TextConfig, TextConfigRules};
use mlx_models::weights::Weights;

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
    sanitize = Self::sanitize_text,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: lfm2::Model,
}

impl Model {
    fn sanitize_text(&self, weights: &mut Weights) -> Result<(), Exception> {
        sanitize_text_model(&self.language_model, "language_model.", weights)
    }
}

impl Architecture for Model {
    fn new(args: &Lfm2VlArgs) -> Result<Self, Exception> {
        let language_model = lfm2::Model::new(&args.text)?;
        Ok(Model { language_model })
    }

    mlx_models::text_model_methods!(language_model);
}
