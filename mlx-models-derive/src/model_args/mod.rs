//! `#[derive(ModelArgs)]`: read what the user wrote (`attr` into `ast`), check it across
//! attributes (`valid`), generate the impls (`expand`).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro2::TokenStream;

use crate::common::Errors;

pub fn expand(input: &syn::DeriveInput) -> TokenStream {
    let mut errors = Errors::new();
    let container = attr::container(input, &mut errors);
    if let Some(c) = &container {
        valid::check(c, &mut errors);
    }
    match (container, errors.finish()) {
        (Some(c), Ok(())) => expand::impls(&c),
        (_, Err(e)) => {
            let mut out = e.to_compile_error();
            out.extend(expand::stub(input));
            out
        }
        // `attr::container` reports why it gives nothing.
        (None, Ok(())) => expand::stub(input),
    }
}

#[cfg(test)]
mod tests;
