//! What generated code calls. Not public API: names here change without notice.

pub use inventory;

pub use crate::args::{
    nested, text_config_map, write_field, ArgsError, ConfigValue, Cx, ModelArgs, Object, Positive,
};
pub use crate::model::{Architecture, ModelSpec};
pub use crate::registry::{build_entry, entry, Entry};
pub use crate::weights::{Rule, Weights};
pub use mlx_rs::error::Exception;
pub use serde_json::{Map, Value};

/// Fails to compile unless `T` derives `ModelArgs` (spanned at the `args = ...` path).
pub const fn assert_model_args<T: ModelArgs>() {}

/// Fails to compile unless `T` implements `Architecture` (spanned at the struct name).
pub const fn assert_architecture<T: Architecture>() {}

/// The args of a model whose `#[mlx_model]` has no usable `args`: only there so that the
/// macro's error is the only one. Never parsed.
pub enum MissingArgs {}

impl ModelArgs for MissingArgs {
    fn parse_object(_: &mut Object<'_, '_>) -> Result<Self, ArgsError> {
        Err(ArgsError::invalid(&[], "`#[mlx_model]` has no `args`"))
    }
    fn write_object(&self, _: &mut Map<String, Value>) {
        match *self {}
    }
}
