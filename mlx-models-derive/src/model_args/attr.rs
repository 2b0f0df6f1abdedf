//! Reads `#[arg(...)]` on the container, its fields and variants into the ast.

use syn::{Data as SynData, Fields};

use super::ast::{option_inner, Container, ContainerAttrs, Data, Field, FieldAttrs, Variant};
use crate::common::errors::Once;
use crate::common::meta::{attrs_named, did_you_mean};
use crate::common::Errors;
use crate::sym;

pub fn container<'a>(input: &'a syn::DeriveInput, errors: &mut Errors) -> Option<Container<'a>> {
    let is_enum = matches!(input.data, SynData::Enum(_));
    let attrs = container_attrs(&input.attrs, is_enum, errors);
    let data = match &input.data {
        SynData::Struct(s) => match &s.fields {
            Fields::Named(named) => Data::Struct(fields(named.named.iter(), errors)),
            Fields::Unit => Data::Struct(Vec::new()),
            Fields::Unnamed(unnamed) => {
                errors.at(
                    unnamed,
                    "`ModelArgs` cannot be derived for a tuple struct; use named fields, whose names are the config keys",
                );
                return None;
            }
        },
        SynData::Enum(e) => {
            let mut variants = Vec::new();
            for v in &e.variants {
                let (rename, aliases) = variant_attrs(v, errors);
                let fields = match &v.fields {
                    Fields::Named(named) => fields(named.named.iter(), errors),
                    Fields::Unit => Vec::new(),
                    Fields::Unnamed(unnamed) => {
                        errors.at(
                            unnamed,
                            format_args!(
                                "tuple variant `{}` in `ModelArgs`; use named fields, whose names are the config keys",
                                v.ident
                            ),
                        );
                        continue;
                    }
                };
                variants.push(Variant {
                    original: v,
                    fields,
                    rename,
                    aliases,
                });
            }
            Data::Enum(variants)
        }
        SynData::Union(u) => {
            errors.at(
                u.union_token,
                "`ModelArgs` cannot be derived for a union; use a struct with named fields",
            );
            return None;
        }
    };
    Some(Container { input, attrs, data })
}

fn container_attrs(attrs: &[syn::Attribute], is_enum: bool, errors: &mut Errors) -> ContainerAttrs {
    let mut text_config = Once::new(sym::ARG);
    let mut validate = Once::new(sym::ARG);
    let mut out = ContainerAttrs::default();
    let known = if is_enum {
        sym::ENUM_ARGS
    } else {
        sym::STRUCT_ARGS
    };
    for item in attrs_named(attrs, sym::ARG, errors) {
        let name = item.name();
        match name.as_str() {
            sym::TEXT_CONFIG => {
                if errors.ok(item.flag()).is_some() {
                    text_config.set(errors, &item.key, item.key.clone());
                }
                out.tag_keys.push(item.key.clone());
            }
            sym::VALIDATE => {
                if let Some(p) = errors.ok(item.path("validate = Self::check")) {
                    validate.set(errors, &item.key, p);
                }
            }
            sym::TAG => {
                if let Some(s) = errors.ok(item.lit_str("tag = \"type\"")) {
                    out.tags.push(s);
                }
                out.tag_keys.push(item.key.clone());
            }
            _ if sym::FIELD_ARGS.contains(&name.as_str()) => errors.at(
                &item.key,
                format_args!("`{name}` is a field argument; put `#[arg({name})]` on a field"),
            ),
            _ => errors.at(
                &item.key,
                format_args!(
                    "unknown `arg` argument `{name}`{}",
                    did_you_mean(&name, known)
                ),
            ),
        }
    }
    out.text_config = text_config.get();
    out.validate = validate.get();
    out
}

fn variant_attrs(v: &syn::Variant, errors: &mut Errors) -> (Option<syn::LitStr>, Vec<syn::LitStr>) {
    let mut rename = Once::new(sym::ARG);
    let mut aliases = Vec::new();
    for item in attrs_named(&v.attrs, sym::ARG, errors) {
        let name = item.name();
        match name.as_str() {
            sym::RENAME => {
                if let Some(s) = errors.ok(item.lit_str("rename = \"llama3\"")) {
                    rename.set(errors, &item.key, s);
                }
            }
            sym::ALIAS => {
                if let Some(s) = errors.ok(item.lit_str("alias = \"su\"")) {
                    aliases.push(s);
                }
            }
            _ => errors.at(
                &item.key,
                format_args!(
                    "unknown `arg` argument `{name}` on a variant{}",
                    did_you_mean(&name, sym::VARIANT_ARGS)
                ),
            ),
        }
    }
    (rename.get(), aliases)
}

fn fields<'a>(fields: impl Iterator<Item = &'a syn::Field>, errors: &mut Errors) -> Vec<Field<'a>> {
    fields
        .filter_map(|f| {
            let ident = f.ident.as_ref()?;
            Some(Field {
                ident,
                ty: &f.ty,
                option: option_inner(&f.ty),
                attrs: field_attrs(f, errors),
            })
        })
        .collect()
}

fn field_attrs(f: &syn::Field, errors: &mut Errors) -> FieldAttrs {
    let mut default = Once::new(sym::ARG);
    let mut rename = Once::new(sym::ARG);
    let mut positive = Once::new(sym::ARG);
    let mut skip = Once::new(sym::ARG);
    let mut flatten = Once::new(sym::ARG);
    let mut aliases = Vec::new();
    for item in attrs_named(&f.attrs, sym::ARG, errors) {
        let name = item.name();
        match name.as_str() {
            sym::DEFAULT => {
                let expr = match &item.value {
                    crate::common::MetaValue::Flag => Some(None),
                    _ => errors.ok(item.expr("default = 1e-5")).map(Some),
                };
                if let Some(expr) = expr {
                    default.set(errors, &item.key, (item.key.clone(), expr));
                }
            }
            sym::ALIAS => {
                if let Some(s) = errors.ok(item.lit_str("alias = \"n_kv_heads\"")) {
                    aliases.push(s);
                }
            }
            sym::RENAME => {
                if let Some(s) = errors.ok(item.lit_str("rename = \"json-key\"")) {
                    rename.set(errors, &item.key, s);
                }
            }
            sym::POSITIVE => {
                if errors.ok(item.flag()).is_some() {
                    positive.set(errors, &item.key, item.key.clone());
                }
            }
            sym::SKIP => {
                if errors.ok(item.flag()).is_some() {
                    skip.set(errors, &item.key, item.key.clone());
                }
            }
            sym::FLATTEN => {
                if errors.ok(item.flag()).is_some() {
                    flatten.set(errors, &item.key, item.key.clone());
                }
            }
            _ if sym::STRUCT_ARGS.contains(&name.as_str()) || name == sym::TAG => errors.at(
                &item.key,
                format_args!(
                    "`{name}` is a container argument; put `#[arg({name})]` on the struct or enum"
                ),
            ),
            _ => errors.at(
                &item.key,
                format_args!(
                    "unknown `arg` argument `{name}`{}",
                    did_you_mean(&name, sym::FIELD_ARGS)
                ),
            ),
        }
    }
    FieldAttrs {
        default: default.get(),
        aliases,
        rename: rename.get(),
        positive: positive.get(),
        skip: skip.get(),
        flatten: flatten.get(),
    }
}
