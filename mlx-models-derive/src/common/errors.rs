//! Collect every error, then fail once.

use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Errors of one macro call; `finish` turns them into one `syn::Error` (several messages).
#[derive(Default)]
#[must_use = "errors must be reported with `finish`"]
pub struct Errors {
    all: Option<syn::Error>,
}

impl Errors {
    pub fn new() -> Self {
        Errors::default()
    }

    pub fn push(&mut self, e: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(e),
            None => self.all = Some(e),
        }
    }

    /// An error spanning `tokens` (the smallest wrong token, as the user wrote it).
    pub fn at<T: ToTokens>(&mut self, tokens: T, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at a span.
    pub fn at_span(&mut self, span: proc_macro2::Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Absorbs the result of a parse step.
    pub fn ok<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        match self.all {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The errors as `compile_error!` tokens (empty when there are none).
    pub fn into_compile_errors(self) -> TokenStream {
        self.all.map(|e| e.to_compile_error()).unwrap_or_default()
    }
}

/// A setting that may be given once; a second one reports itself.
pub struct Once<T> {
    what: &'static str,
    value: Option<(syn::Ident, T)>,
}

impl<T> Once<T> {
    pub fn new(what: &'static str) -> Self {
        Once { what, value: None }
    }

    pub fn set(&mut self, errors: &mut Errors, key: &syn::Ident, value: T) {
        if self.value.is_some() {
            errors.at(
                key,
                format_args!("duplicate `{}` argument `{key}`; give it once", self.what),
            );
        } else {
            self.value = Some((key.clone(), value));
        }
    }

    pub fn get(self) -> Option<T> {
        self.value.map(|(_, v)| v)
    }
}
