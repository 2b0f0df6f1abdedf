//! What the `mlx_model` cases share: a valid args type and a trivial `Architecture`.
#![allow(dead_code)]

use mlx_models::ModelArgs;

#[derive(Debug, ModelArgs)]
pub struct Args {
    pub hidden_size: usize,
}

/// Implements `Architecture` for a model struct with no fields.
#[macro_export]
macro_rules! trivial_architecture {
    ($model:ident) => {
        impl ::mlx_models::model::Architecture for $model {
            fn new(_: &Self::Args) -> Result<Self, ::mlx_rs::error::Exception> {
                Ok($model {})
            }
            fn forward(
                &mut self,
                inputs: &::mlx_rs::Array,
                _: &mut [::mlx_models::cache::Cache],
            ) -> Result<::mlx_rs::Array, ::mlx_rs::error::Exception> {
                Ok(inputs.clone())
            }
            fn make_cache(&self) -> Vec<::mlx_models::cache::Cache> {
                Vec::new()
            }
            fn num_layers(&self) -> usize {
                0
            }
        }
    };
}
