//! The text model inside a multimodal checkpoint (gemma3, mistral3, qwen2_vl, lfm2-vl, ...).
//!
//! Such a checkpoint nests the text model's config under `text_config` and its weights under
//! `language_model.` (or `model.language_model.`), beside a vision or audio tower that a text
//! model drops. An architecture file for one is thin: its args are
//! [`TextConfig<TextArgs, Rules>`](TextConfig), where `Rules` ([`TextConfigRules`]) says what
//! the wrapper puts into the text config before it is read, its model holds the text model in a
//! `language_model` field, its `#[mlx_model]` rules drop the towers and move the keys under
//! `language_model.`, its sanitize hook is [`sanitize_language_model`] (the text model's own
//! sanitize, on the keys under `language_model.`), and [`text_model!`] writes the rest.
//!
//! The text config is read as the reference reads it: `text_config` alone, with the text
//! model's defaults for what it lacks (the top level is not consulted, unlike
//! `#[arg(text_config)]`), or the whole config where the wrapper allows a config without one.
//!
//! [`text_model!`]: crate::text_model

use std::fmt;
use std::marker::PhantomData;

use mlx_rs::error::Exception;
use serde_json::{Map, Value};

use crate::args::{text_config_map, ArgsError, ModelArgs, Object};
use crate::model::LanguageModel;
use crate::weights::Weights;

/// What a wrapper reads when a config has no `text_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutTextConfig {
    /// Nothing: `text_config` is required.
    Refused,
    /// The whole config is the text config (qwen2_vl's older checkpoints are flat).
    WholeConfig,
    /// An empty text config: the text model's defaults (gemma4).
    Empty,
}

/// How a multimodal config holds its text model's config.
pub trait TextConfigRules {
    /// What a config without `text_config` gives.
    const WITHOUT_TEXT_CONFIG: WithoutTextConfig = WithoutTextConfig::Refused;

    /// What the wrapper puts into the text config before it is read (`text`), from the top
    /// level (`top`): defaults of its own (`entry(..).or_insert`) and values it forces.
    fn prepare(top: &Map<String, Value>, text: &mut Map<String, Value>) {
        let _ = (top, text);
    }
}

/// The args of a multimodal checkpoint's text model: `A` read from `text_config` as `R` says.
pub struct TextConfig<A, R> {
    /// The text model's args.
    pub text: A,
    rules: PhantomData<fn() -> R>,
}

impl<A, R> TextConfig<A, R> {
    /// Wraps a text model's args.
    pub fn new(text: A) -> Self {
        TextConfig {
            text,
            rules: PhantomData,
        }
    }
}

impl<A, R> std::ops::Deref for TextConfig<A, R> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.text
    }
}

impl<A: fmt::Debug, R> fmt::Debug for TextConfig<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextConfig")
            .field("text", &self.text)
            .finish()
    }
}

impl<A: Clone, R> Clone for TextConfig<A, R> {
    fn clone(&self) -> Self {
        TextConfig::new(self.text.clone())
    }
}

impl<A: PartialEq, R> PartialEq for TextConfig<A, R> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<A: ModelArgs, R: TextConfigRules> ModelArgs for TextConfig<A, R> {
    fn parse_object(obj: &mut Object<'_, '_>) -> Result<Self, ArgsError> {
        let Some(top) = obj.own_map() else {
            return Err(obj.missing_key("text_config"));
        };
        let (mut text, segments) = match top.get("text_config") {
            Some(Value::Object(text)) => {
                obj.mark_read(Some("text_config"));
                (text.clone(), vec!["text_config".to_owned()])
            }
            Some(other) => {
                return Err(ArgsError::wrong_type("text_config", "an object", other));
            }
            None => match R::WITHOUT_TEXT_CONFIG {
                WithoutTextConfig::Refused => return Err(obj.missing_key("text_config")),
                WithoutTextConfig::WholeConfig => {
                    // The whole config is the text config: its keys are reported (unknown
                    // ones included) by the text model's reading of the copy below.
                    obj.mark_read(None);
                    (top.clone(), Vec::new())
                }
                WithoutTextConfig::Empty => (Map::new(), vec!["text_config".to_owned()]),
            },
        };
        R::prepare(top, &mut text);
        let text = obj.read_made::<A>(&Value::Object(text), segments)?;
        Ok(TextConfig::new(text))
    }

    fn write_object(&self, out: &mut Map<String, Value>) {
        self.text.write_object(text_config_map(out));
    }
}

/// Runs the text model's own sanitize on the keys under `prefix` (`"language_model."`), as the
/// reference's wrappers call their text model's; the other keys are left as they are.
pub fn sanitize_text_model(
    text_model: &dyn LanguageModel,
    prefix: &str,
    weights: &mut Weights,
) -> Result<(), Exception> {
    let keys: Vec<String> = weights
        .keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect();
    let mut inner = Weights::new();
    for key in keys {
        if let Some(value) = weights.remove(&key) {
            inner.insert(key[prefix.len()..].to_owned(), value);
        }
    }
    let inner = text_model
        .sanitize(inner)
        .map_err(|e| Exception::custom(e.to_string()))?;
    for (key, value) in inner {
        weights.insert(format!("{prefix}{key}"), value);
    }
    Ok(())
}

/// A model that holds a multimodal checkpoint's text model (under `language_model`).
pub trait TextModelWrapper {
    /// The text model.
    fn text_model(&self) -> &dyn LanguageModel;
}

/// The sanitize hook of a wrapper (`sanitize = mlx_models::multimodal::sanitize_language_model`):
/// the text model's own sanitize on the keys under `language_model.`.
pub fn sanitize_language_model<M: TextModelWrapper>(
    model: &M,
    weights: &mut Weights,
) -> Result<(), Exception> {
    sanitize_text_model(model.text_model(), "language_model.", weights)
}

/// The `Architecture` of a wrapper whose args are a [`TextConfig`] of the text model's
/// (`new` builds the text model from them, the rest is delegated to it), and its
/// [`TextModelWrapper`]: `mlx_models::text_model!(Model, language_model: qwen2::Model);`.
#[macro_export]
macro_rules! text_model {
    ($model:ident, $field:ident: $text:ty) => {
        impl $crate::model::Architecture for $model {
            fn new(
                args: &Self::Args,
            ) -> ::core::result::Result<Self, $crate::mlx_rs::error::Exception> {
                ::core::result::Result::Ok($model {
                    $field: <$text as $crate::model::Architecture>::new(&args.text)?,
                })
            }

            $crate::text_model_methods!($field);
        }

        impl $crate::multimodal::TextModelWrapper for $model {
            fn text_model(&self) -> &dyn $crate::model::LanguageModel {
                &self.$field
            }
        }
    };
}

/// `forward`, `make_cache` and `num_layers` of a wrapper, delegated to its text model's field
/// (`language_model`).
#[macro_export]
macro_rules! text_model_methods {
    ($field:ident) => {
        fn forward(
            &mut self,
            inputs: &$crate::mlx_rs::Array,
            cache: &mut [$crate::cache::Cache],
        ) -> ::core::result::Result<$crate::mlx_rs::Array, $crate::mlx_rs::error::Exception> {
            $crate::model::Architecture::forward(&mut self.$field, inputs, cache)
        }

        fn make_cache(&self) -> ::std::vec::Vec<$crate::cache::Cache> {
            $crate::model::Architecture::make_cache(&self.$field)
        }

        fn num_layers(&self) -> usize {
            $crate::model::Architecture::num_layers(&self.$field)
        }
    };
}
