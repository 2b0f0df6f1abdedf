//! `#[mlx_model(...)]`: read the attribute and the struct (`attr` into `ast`), check the rules
//! across each other (`valid`), generate the spec impl and the registry entry (`expand`).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro2::TokenStream;

use crate::common::Errors;

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new();
    let Some(mut strukt) = attr::item(item.clone(), &mut errors) else {
        // Not a struct: give the item back untouched, with the error.
        let mut out = errors.into_compile_errors();
        out.extend(item);
        return out;
    };
    let model = attr::model(attr, &mut strukt, &mut errors);
    valid::check(&model, &strukt, &mut errors);
    match errors.finish() {
        Ok(()) => expand::output(&model, &strukt),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(expand::fallback(&model, &strukt));
            out
        }
    }
}

#[cfg(test)]
mod tests;
