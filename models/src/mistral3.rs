//! `mistral3` (alias `llava`), after mlx-lm's `models/mistral3.py`: the text model of Mistral
//! 3 (and Ministral 3) multimodal checkpoints, read from `text_config`: `ministral3` when
//! `text_config.model_type` says so, otherwise `llama`. The head is untied unless the text
//! config says `tie_word_embeddings`. The reference's third text model, `mistral4` (latent
//! attention with experts), has no architecture file here: such a checkpoint is refused by name.
//!
//! Sanitize: every key naming the vision tower or the projector is dropped,
//! `model.language_model.*` becomes `language_model.model.*`, other keys go under
//! `language_model.`, and the text model's own sanitize runs on them.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::{Map, Value};

use mlx_models::args::{ArgsError, ModelArgs, Object};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::{Architecture, LanguageModel};
use mlx_models::multimodal::{TextConfig, TextConfigRules, TextModelWrapper};
use mlx_models::nn::either::Either;

use crate::llama::{self, LlamaArgs};
use crate::ministral3::{self, Ministral3Args};

/// The text model's args: ministral3's or llama's, by the text config's `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Mistral3TextArgs {
    /// Any `model_type` but `ministral3` (Mistral Small 3.1's text config says `mistral`).
    Llama(LlamaArgs),
    /// `model_type` `ministral3`.
    Ministral3(Ministral3Args),
}

impl ModelArgs for Mistral3TextArgs {
    fn parse_object(obj: &mut Object<'_, '_>) -> Result<Self, ArgsError> {
        let kind: Option<String> = obj.optional(&["model_type"])?;
        match kind.as_deref() {
            Some("ministral3") => Ministral3Args::parse_object(obj).map(Self::Ministral3),
            Some("mistral4") => Err(ArgsError::invalid(
                &["model_type"],
                "the `mistral4` text model (latent attention with experts) is not supported",
            )),
            _ => LlamaArgs::parse_object(obj).map(Self::Llama),
        }
    }

    fn write_object(&self, out: &mut Map<String, Value>) {
        match self {
            Self::Llama(args) => args.write_object(out),
            Self::Ministral3(args) => args.write_object(out),
        }
    }
}

/// What mistral3 puts into its text config.
#[derive(Debug)]
pub enum Mistral3Rules {}

impl TextConfigRules for Mistral3Rules {
    fn prepare(_top: &Map<String, Value>, text: &mut Map<String, Value>) {
        text.entry("tie_word_embeddings")
            .or_insert(Value::Bool(false));
    }
}

/// config.json of a mistral3 checkpoint: the text model's config in `text_config`.
pub type Mistral3Args = TextConfig<Mistral3TextArgs, Mistral3Rules>;

/// The mistral3 model: llama or ministral3 under `language_model`.
#[mlx_model(
    model_type = "mistral3",
    aliases = ["llava"],
    args = Mistral3Args,
    drop = ["*vision_tower*", "*multi_modal_projector*"],
    rename("model.language_model" => "language_model.model"),
    add_prefix = "language_model.",
    sanitize = mlx_models::multimodal::sanitize_language_model,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: Either<llama::Model, ministral3::Model>,
}

impl TextModelWrapper for Model {
    fn text_model(&self) -> &dyn LanguageModel {
        match &self.language_model {
            Either::Left(m) => m,
            Either::Right(m) => m,
        }
    }
}

impl Architecture for Model {
    fn new(args: &Mistral3Args) -> Result<Self, Exception> {
        let language_model = match &args.text {
            Mistral3TextArgs::Llama(a) => Either::Left(llama::Model::new(a)?),
            Mistral3TextArgs::Ministral3(a) => Either::Right(ministral3::Model::new(a)?),
        };
        Ok(Model { language_model })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        match &mut self.language_model {
            Either::Left(m) => Architecture::forward(m, inputs, cache),
            Either::Right(m) => Architecture::forward(m, inputs, cache),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.text_model().make_cache()
    }

    fn num_layers(&self) -> usize {
        self.text_model().num_layers()
    }
}
