//! Splits `#[name(key = value, key(...), flag)]` into items without ever panicking, and reads
//! the values the macros accept.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token};

use super::Errors;

/// One `key`, `key = value` or `key(...)`.
pub struct MetaItem {
    pub key: Ident,
    pub value: MetaValue,
}

pub enum MetaValue {
    Flag,
    Eq(TokenStream),
    List(Group),
}

/// Splits at top-level commas. Malformed items are reported and left out.
pub fn split(tokens: TokenStream, errors: &mut Errors) -> Vec<MetaItem> {
    let mut items = Vec::new();
    let mut chunk: Vec<TokenTree> = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    loop {
        let next = iter.next();
        let at_end = next.is_none();
        match next {
            Some(TokenTree::Punct(p)) if p.as_char() == ',' => {}
            Some(tt) => {
                chunk.push(tt);
                continue;
            }
            None => {}
        }
        if !chunk.is_empty() {
            if let Some(item) = item(std::mem::take(&mut chunk), errors) {
                items.push(item);
            }
        }
        if at_end {
            return items;
        }
    }
}

fn item(chunk: Vec<TokenTree>, errors: &mut Errors) -> Option<MetaItem> {
    let mut it = chunk.into_iter();
    let key = match it.next() {
        Some(TokenTree::Ident(i)) => i,
        Some(other) => {
            errors.at(&other, "expected an argument name");
            return None;
        }
        None => return None,
    };
    let rest: Vec<TokenTree> = it.collect();
    let value = match rest.first() {
        None => MetaValue::Flag,
        Some(TokenTree::Punct(p)) if p.as_char() == '=' && rest.len() > 1 => {
            MetaValue::Eq(rest[1..].iter().cloned().collect())
        }
        Some(TokenTree::Punct(p)) if p.as_char() == '=' => {
            errors.at(p, format_args!("expected a value after `{key} =`"));
            return None;
        }
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis && rest.len() == 1 => {
            MetaValue::List(g.clone())
        }
        Some(other) => {
            errors.at(other, format_args!("expected `=` or `(...)` after `{key}`"));
            return None;
        }
    };
    Some(MetaItem { key, value })
}

/// The items of every `#[name(...)]` attribute in `attrs`.
pub fn attrs_named(attrs: &[syn::Attribute], name: &str, errors: &mut Errors) -> Vec<MetaItem> {
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident(name)) {
        match &attr.meta {
            syn::Meta::List(list) => out.extend(split(list.tokens.clone(), errors)),
            other => errors.at(other, format_args!("expected `#[{name}(...)]`")),
        }
    }
    out
}

/// `; did you mean `x`?` for the nearest of `known`, or the list of what is accepted.
pub fn did_you_mean(word: &str, known: &[&str]) -> String {
    let near = known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2 || (k.starts_with(word) && word.len() >= 3))
        .min_by_key(|(d, _)| *d);
    match near {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            format!("; expected one of {}", list.join(", "))
        }
    }
}

impl MetaItem {
    pub fn name(&self) -> String {
        self.key.to_string()
    }

    /// The tokens after `=`, or an error that says how the key is written.
    fn eq_tokens(&self, example: &str) -> syn::Result<&TokenStream> {
        match &self.value {
            MetaValue::Eq(t) => Ok(t),
            MetaValue::Flag => Err(syn::Error::new_spanned(
                &self.key,
                format_args!("`{}` needs a value; write `{example}`", self.key),
            )),
            MetaValue::List(g) => Err(syn::Error::new_spanned(
                g,
                format_args!("`{}` takes `=`, not `(...)`; write `{example}`", self.key),
            )),
        }
    }

    pub fn lit_str(&self, example: &str) -> syn::Result<LitStr> {
        let t = self.eq_tokens(example)?;
        syn::parse2::<LitStr>(t.clone()).map_err(|_| {
            syn::Error::new_spanned(
                t,
                format_args!("expected a string for `{}`; write `{example}`", self.key),
            )
        })
    }

    pub fn str_list(&self, example: &str) -> syn::Result<Vec<LitStr>> {
        let t = self.eq_tokens(example)?;
        let mut it = t.clone().into_iter();
        let group = match (it.next(), it.next()) {
            (Some(TokenTree::Group(g)), None) if g.delimiter() == Delimiter::Bracket => g,
            _ => {
                return Err(syn::Error::new_spanned(
                    t,
                    format_args!(
                        "expected a list of strings for `{}`; write `{example}`",
                        self.key
                    ),
                ))
            }
        };
        let parser = |input: ParseStream| Punctuated::<Expr, Token![,]>::parse_terminated(input);
        let exprs = parser.parse2(group.stream())?;
        let mut out = Vec::new();
        let mut errors: Option<syn::Error> = None;
        for e in exprs {
            match e {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => out.push(s),
                other => {
                    let err = syn::Error::new_spanned(
                        other,
                        format_args!("expected a string in `{}`", self.key),
                    );
                    match &mut errors {
                        Some(all) => all.combine(err),
                        None => errors = Some(err),
                    }
                }
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// One string or a list of strings (`drop = "x"`, `drop = ["x", "y"]`).
    pub fn str_or_list(&self, example: &str) -> syn::Result<Vec<LitStr>> {
        match self.lit_str(example) {
            Ok(s) => Ok(vec![s]),
            Err(_) => self.str_list(example),
        }
    }

    pub fn path(&self, example: &str) -> syn::Result<syn::Path> {
        let t = self.eq_tokens(example)?;
        syn::parse2::<syn::Path>(t.clone()).map_err(|_| {
            syn::Error::new_spanned(
                t,
                format_args!("expected a path for `{}`; write `{example}`", self.key),
            )
        })
    }

    pub fn ty(&self, example: &str) -> syn::Result<syn::Type> {
        let t = self.eq_tokens(example)?;
        if let Ok(lit) = syn::parse2::<syn::Lit>(t.clone()) {
            return Err(syn::Error::new_spanned(
                lit,
                format_args!(
                    "expected a type for `{}`, not a literal; write `{example}`",
                    self.key
                ),
            ));
        }
        syn::parse2::<syn::Type>(t.clone()).map_err(|_| {
            syn::Error::new_spanned(
                t,
                format_args!("expected a type for `{}`; write `{example}`", self.key),
            )
        })
    }

    pub fn expr(&self, example: &str) -> syn::Result<Expr> {
        let t = self.eq_tokens(example)?;
        syn::parse2::<Expr>(t.clone()).map_err(|_| {
            syn::Error::new_spanned(
                t,
                format_args!(
                    "expected an expression for `{}`; write `{example}`",
                    self.key
                ),
            )
        })
    }

    /// A flag takes no value.
    pub fn flag(&self) -> syn::Result<()> {
        match &self.value {
            MetaValue::Flag => Ok(()),
            MetaValue::Eq(t) => Err(syn::Error::new_spanned(
                t,
                format_args!("`{}` takes no value; write `{}` alone", self.key, self.key),
            )),
            MetaValue::List(g) => Err(syn::Error::new_spanned(
                g,
                format_args!("`{}` takes no value; write `{}` alone", self.key, self.key),
            )),
        }
    }

    /// `key("a" => "b", "c" => "d")`.
    pub fn pairs(&self, example: &str) -> syn::Result<Vec<(LitStr, LitStr)>> {
        let g = match &self.value {
            MetaValue::List(g) => g,
            MetaValue::Eq(t) => {
                return Err(syn::Error::new_spanned(
                    t,
                    format_args!("`{}` takes `(...)`, not `=`; write `{example}`", self.key),
                ))
            }
            MetaValue::Flag => {
                return Err(syn::Error::new_spanned(
                    &self.key,
                    format_args!("`{}` needs rules; write `{example}`", self.key),
                ))
            }
        };
        let key = self.key.to_string();
        let example = example.to_owned();
        let parser = move |input: ParseStream| {
            let mut out = Vec::new();
            while !input.is_empty() {
                let from: LitStr = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format_args!(
                            "expected `\"source\" => \"target\"` in `{key}`; write `{example}`"
                        ),
                    )
                })?;
                let _: Token![=>] = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format_args!("expected `=>` after the source pattern in `{key}`"),
                    )
                })?;
                let to: LitStr = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format_args!("expected a target pattern string after `=>` in `{key}`"),
                    )
                })?;
                out.push((from, to));
                if input.is_empty() {
                    break;
                }
                let _: Token![,] = input.parse()?;
            }
            Ok(out)
        };
        let pairs = parser.parse2(g.stream())?;
        if pairs.is_empty() {
            return Err(syn::Error::new_spanned(
                g,
                format_args!("`{}` needs at least one rule", self.key),
            ));
        }
        Ok(pairs)
    }
}

impl ToTokens for MetaItem {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.key.to_tokens(tokens);
        match &self.value {
            MetaValue::Flag => {}
            MetaValue::Eq(t) => {
                <Token![=]>::default().to_tokens(tokens);
                t.to_tokens(tokens);
            }
            MetaValue::List(g) => g.to_tokens(tokens),
        }
    }
}
