//! `pixtral`, after mlx-lm's `models/pixtral.py`: the text model of Pixtral checkpoints,
//! `llama` read from `text_config` with its own head (`tie_word_embeddings` forced off) and 32
//! query heads where the text config gives none, as the reference does. The vision tower and
//! the projector are dropped; the text model's weights are under `language_model.` and go
//! through llama's own sanitize.

use mlx_rs::macros::ModuleParameters;
use serde_json::{Map, Value};

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules};

use crate::llama::{self, LlamaArgs};

/// What pixtral puts into its text config.
#[derive(Debug)]
pub enum PixtralRules {}

impl TextConfigRules for PixtralRules {
    fn prepare(_top: &Map<String, Value>, text: &mut Map<String, Value>) {
        text.insert("tie_word_embeddings".to_owned(), Value::Bool(false));
        text.entry("num_attention_heads").or_insert(Value::from(32));
    }
}

/// config.json of a pixtral checkpoint: the text model's config in `text_config`.
pub type PixtralArgs = TextConfig<LlamaArgs, PixtralRules>;

/// The pixtral model: llama under `language_model`.
#[mlx_model(
    model_type = "pixtral",
    args = PixtralArgs,
    drop = ["vision_tower.*", "multi_modal_projector.*"],
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: llama::Model,
}

mlx_models::text_model!(Model, language_model: llama::Model);
