//! `gemma4` (alias `gemma4_unified`), after mlx-lm's `models/gemma4.py`: the text model of
//! Gemma 4's multimodal checkpoints, `gemma4_text` read from `text_config` (an absent one is
//! empty: the text model's defaults). As in the reference, the vocabulary is the top level's
//! `vocab_size` (262144 when absent), whatever `text_config` says, and the text config's heads
//! default to 8 query heads and 1 key/value head where it has none.
//!
//! Sanitize: the towers and embedders (`vision_tower`, `multi_modal_projector`, `audio_tower`,
//! `embed_audio`, `embed_vision`, `vision_embedder`; at the top level or under `model.`) are
//! dropped, `model.language_model.*` becomes `language_model.model.*`, other keys lose a
//! leading `model.`, and the text model's own sanitize runs on the keys under
//! `language_model.`.

use mlx_rs::macros::ModuleParameters;
use serde_json::{Map, Value};

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules, WithoutTextConfig};

use crate::gemma4_text::{self, Gemma4TextArgs};

/// What gemma4 puts into its text config.
#[derive(Debug)]
pub enum Gemma4Rules {}

impl TextConfigRules for Gemma4Rules {
    const WITHOUT_TEXT_CONFIG: WithoutTextConfig = WithoutTextConfig::Empty;

    fn prepare(top: &Map<String, Value>, text: &mut Map<String, Value>) {
        let vocab = top
            .get("vocab_size")
            .cloned()
            .unwrap_or(Value::from(262144));
        text.insert("vocab_size".to_owned(), vocab);
        text.entry("num_attention_heads").or_insert(Value::from(8));
        text.entry("num_key_value_heads").or_insert(Value::from(1));
        // The reference's text args default their `model_type`.
        text.entry("model_type")
            .or_insert(Value::from("gemma4_text"));
    }
}

/// config.json of a gemma4 checkpoint: the text model's config in `text_config`.
pub type Gemma4Args = TextConfig<Gemma4TextArgs, Gemma4Rules>;

/// The gemma4 model: gemma4_text under `language_model`.
#[mlx_model(
    model_type = "gemma4",
    aliases = ["gemma4_unified"],
    args = Gemma4Args,
    drop = [
        "vision_tower.*", "model.vision_tower.*",
        "multi_modal_projector.*", "model.multi_modal_projector.*",
        "audio_tower.*", "model.audio_tower.*",
        "embed_audio.*", "model.embed_audio.*",
        "embed_vision.*", "model.embed_vision.*",
        "vision_embedder.*", "model.vision_embedder.*",
    ],
    rename("model.language_model" => "language_model.model"),
    strip_prefix = "model.",
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: gemma4_text::Model,
}

mlx_models::text_model!(Model, language_model: gemma4_text::Model);
