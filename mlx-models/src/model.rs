//! The traits that tie an architecture file to the runtime.
//!
//! An architecture file writes its model struct, puts `#[mlx_model(...)]` on it (which
//! implements [`ModelSpec`] and registers the type) and implements [`Architecture`] by hand.
//! The runtime only sees `Box<dyn LanguageModel>`, which every `Architecture` is.

use mlx_rs::error::Exception;
use mlx_rs::module::ModuleParameters;
use mlx_rs::Array;

use crate::args::{ArgsError, ModelArgs};
use crate::cache::Cache;
use crate::weights::{self, Rule, SanitizeError, Weights};

/// What `#[mlx_model(...)]` generates: the names and the weight rules of an architecture.
/// Do not implement it by hand.
pub trait ModelSpec {
    /// The config type (`args = ...`).
    type Args: ModelArgs;
    /// The `model_type` of config.json this architecture is registered under.
    const MODEL_TYPE: &'static str;
    /// Other `model_type`s that use this architecture.
    const ALIASES: &'static [&'static str];
    /// The `architectures` entries this type is chosen for (empty: any).
    const ARCHITECTURES: &'static [&'static str];
    /// The weight rules, in order.
    const WEIGHT_RULES: &'static [Rule];

    /// The hand-written tensor work (`sanitize = path`), run after the rules.
    fn sanitize_hook(&self, weights: &mut Weights) -> Result<(), Exception> {
        let _ = weights;
        Ok(())
    }
}

/// What an architecture file implements by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has `#[mlx_model]` but does not implement `Architecture`",
    label = "needs `impl Architecture for {Self}`",
    note = "implement `mlx_models::model::Architecture` (`new`, `forward`, `make_cache`, `num_layers`) for `{Self}`"
)]
pub trait Architecture: ModelSpec + ModuleParameters + Sized + 'static {
    /// Builds the model from its args (weights still to be loaded).
    fn new(args: &Self::Args) -> Result<Self, Exception>;

    /// Token ids `[batch, length]` to logits `[batch, length, vocab]`, reading and extending
    /// `cache` (one entry per [`Architecture::make_cache`] item).
    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception>;

    /// A fresh cache, one entry per layer.
    fn make_cache(&self) -> Vec<Cache>;

    /// The number of decoder layers.
    fn num_layers(&self) -> usize;
}

/// The model as the runtime sees it: the registry builds a `Box<dyn LanguageModel>`.
///
/// It is [`ModuleParameters`], so the loader reads and updates the parameters through it
/// (`parameters()`, `update_flattened(...)`).
pub trait LanguageModel: ModuleParameters {
    /// The `model_type` it was registered under (not the alias it was found by).
    fn model_type(&self) -> &'static str;

    /// The number of decoder layers.
    fn num_layers(&self) -> usize;

    /// Token ids `[batch, length]` to logits `[batch, length, vocab]`.
    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception>;

    /// A fresh cache, one entry per layer.
    fn make_cache(&self) -> Vec<Cache>;

    /// Turns checkpoint tensors into this model's: FP8 block-scaled weights dequantized
    /// ([`weights::dequantize_fp8_blocks`]), compressed-tensors int4 renamed
    /// ([`weights::compressed_tensors_int4`]), the weight rules, then the hook.
    /// Idempotent: already converted weights come back unchanged.
    fn sanitize(&self, weights: Weights) -> Result<Weights, SanitizeError>;
}

impl<T: Architecture> LanguageModel for T {
    fn model_type(&self) -> &'static str {
        T::MODEL_TYPE
    }

    fn num_layers(&self) -> usize {
        Architecture::num_layers(self)
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        Architecture::forward(self, inputs, cache)
    }

    fn make_cache(&self) -> Vec<Cache> {
        Architecture::make_cache(self)
    }

    fn sanitize(&self, mut weights: Weights) -> Result<Weights, SanitizeError> {
        // FP8 block-scaled checkpoints first, as the reference's sanitize does before it
        // stacks experts; for every architecture, not only those whose reference reads them.
        weights::dequantize_fp8_blocks(&mut weights)?;
        weights::compressed_tensors_int4(&mut weights)?;
        let mut weights = weights::apply(T::WEIGHT_RULES, weights, Some(self))?;
        self.sanitize_hook(&mut weights)?;
        Ok(weights)
    }
}

/// Why a model could not be built from a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The config does not parse into the args.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The constructor failed.
    #[error("cannot build `{model_type}`: {}", source.what())]
    Model {
        /// The architecture.
        model_type: &'static str,
        /// What MLX said.
        source: Exception,
    },
    /// No architecture is registered for the config.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}
