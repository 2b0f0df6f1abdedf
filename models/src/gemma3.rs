//! `gemma3`, after mlx-lm's `models/gemma3.py`: the text model of Gemma 3's multimodal
//! checkpoints, `gemma3_text` read from `text_config`. As in the reference, the vocabulary is
//! the top level's `vocab_size` (262208 when absent), whatever `text_config` says, and the text
//! config's heads default to 8 query and 4 key/value heads (the 4B model's) where it has none.
//! The vision tower and the projector are dropped; the text model's weights are under
//! `language_model.` and go through `gemma3_text`'s own sanitize (its head tied exactly when
//! the checkpoint has none).

use mlx_rs::macros::ModuleParameters;
use serde_json::{Map, Value};

use mlx_models::mlx_model;
use mlx_models::multimodal::{TextConfig, TextConfigRules};

use crate::gemma3_text::{self, Gemma3TextArgs};

/// What gemma3 puts into its text config.
#[derive(Debug)]
pub enum Gemma3Rules {}

impl TextConfigRules for Gemma3Rules {
    fn prepare(top: &Map<String, Value>, text: &mut Map<String, Value>) {
        let vocab = top
            .get("vocab_size")
            .cloned()
            .unwrap_or(Value::from(262208));
        text.insert("vocab_size".to_owned(), vocab);
        text.entry("num_attention_heads").or_insert(Value::from(8));
        text.entry("num_key_value_heads").or_insert(Value::from(4));
    }
}

/// config.json of a gemma3 checkpoint: the text model's config in `text_config`.
pub type Gemma3Args = TextConfig<Gemma3TextArgs, Gemma3Rules>;

/// The gemma3 model: gemma3_text under `language_model`.
#[mlx_model(
    model_type = "gemma3",
    args = Gemma3Args,
    drop = ["vision_tower.*", "multi_modal_projector.*"],
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: gemma3_text::Model,
}

mlx_models::text_model!(Model, language_model: gemma3_text::Model);
