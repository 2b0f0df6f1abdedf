//! Procedural macros of mlx-models. Use them through the `mlx-models` crate.
//!
//! - `#[derive(ModelArgs)]`: config.json to typed args (see `mlx_models::args::ModelArgs`).
//! - `#[mlx_model(...)]`: registry entry and weight rules of a model struct (see
//!   `mlx_models::model`).

#![warn(missing_docs)]

mod common;
mod mlx_model;
mod model_args;
mod sym;

use proc_macro::TokenStream;

/// Derives `mlx_models::args::ModelArgs`; see that trait for the attributes.
#[proc_macro_derive(ModelArgs, attributes(arg))]
pub fn derive_model_args(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    model_args::expand(&input).into()
}

/// Registers a model struct and generates its weight rules; see `mlx_models::model`.
#[proc_macro_attribute]
pub fn mlx_model(attr: TokenStream, item: TokenStream) -> TokenStream {
    mlx_model::expand(attr.into(), item.into()).into()
}
