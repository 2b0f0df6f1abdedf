//! Checks across attributes: what each `#[arg]` means next to the others.

use std::collections::HashMap;

use syn::LitStr;

use super::ast::{Container, Data, Field};
use crate::common::Errors;

pub fn check(c: &Container<'_>, errors: &mut Errors) {
    let input = c.input;
    if let Some(param) = input.generics.params.first() {
        errors.at(
            param,
            "`ModelArgs` does not support generic parameters; write the concrete types",
        );
    }
    match &c.data {
        Data::Struct(fields) => {
            for key in &c.attrs.tag_keys {
                if key == "tag" {
                    errors.at(
                        key,
                        "`tag` applies to enums; a struct reads every key by name",
                    );
                }
            }
            check_fields(fields, errors);
        }
        Data::Enum(variants) => {
            for key in &c.attrs.tag_keys {
                if key == "text_config" {
                    errors.at(key, "`text_config` applies to structs; put it on the struct that holds this enum");
                }
            }
            if c.attrs.tags.is_empty() && c.attrs.tag_keys.iter().all(|k| k != "tag") {
                if let syn::Data::Enum(e) = &input.data {
                    errors.at(
                        e.enum_token,
                        "`#[derive(ModelArgs)]` on an enum needs `#[arg(tag = \"...\")]`; name the key that chooses the variant",
                    );
                }
            }
            check_strings(&c.attrs.tags, "tag", errors);
            let mut seen: HashMap<String, &syn::Ident> = HashMap::new();
            for v in variants {
                if let Some(r) = &v.rename {
                    check_strings(std::slice::from_ref(r), "rename", errors);
                }
                check_strings(&v.aliases, "alias", errors);
                let spans: Vec<(String, Option<&LitStr>)> =
                    std::iter::once((v.name(), v.rename.as_ref()))
                        .chain(v.aliases.iter().map(|a| (a.value(), Some(a))))
                        .collect();
                for (name, lit) in spans {
                    if let Some(other) = seen.get(&name) {
                        let msg = format!("variant name \"{name}\" is already taken by `{other}`; give one of them another `rename` or `alias`");
                        match lit {
                            Some(l) => errors.at(l, msg),
                            None => errors.at(v.ident(), msg),
                        }
                    } else {
                        seen.insert(name, v.ident());
                    }
                }
                check_fields(&v.fields, errors);
            }
        }
    }
}

fn check_strings(lits: &[LitStr], what: &str, errors: &mut Errors) {
    for l in lits {
        let v = l.value();
        if v.is_empty() {
            errors.at(l, format_args!("empty `{what}`; write the JSON key"));
        } else if v.chars().any(char::is_whitespace) {
            errors.at(
                l,
                format_args!("`{what}` \"{v}\" has whitespace; JSON keys of configs have none"),
            );
        } else if v.split('.').any(str::is_empty) {
            errors.at(
                l,
                format_args!("`{what}` \"{v}\" has an empty part between dots"),
            );
        }
    }
}

fn check_fields(fields: &[Field<'_>], errors: &mut Errors) {
    // key -> field that reads it
    let mut keys: HashMap<String, &syn::Ident> = HashMap::new();
    for f in fields
        .iter()
        .filter(|f| f.attrs.skip.is_none() && f.attrs.flatten.is_none())
    {
        keys.insert(f.key(), f.ident);
    }
    let mut aliases_seen: HashMap<String, &syn::Ident> = HashMap::new();
    for f in fields {
        let a = &f.attrs;
        if let Some(r) = &a.rename {
            check_strings(std::slice::from_ref(r), "rename", errors);
            if r.value().contains('.') {
                errors.at(
                    r,
                    "`rename` takes one key, without dots; use `alias` to read a nested key",
                );
            }
        }
        check_strings(&a.aliases, "alias", errors);
        if let (Some((key, _)), Some(_)) = (&a.default, f.option) {
            errors.at(
                key,
                format_args!(
                    "`default` on the `Option` field `{}`; an absent key is already `None`: remove `default` or the `Option`",
                    f.ident
                ),
            );
        }
        if let Some(skip) = &a.skip {
            for (what, present) in [
                ("alias", a.aliases.first().map(|l| l.span())),
                ("rename", a.rename.as_ref().map(|l| l.span())),
                ("positive", a.positive.as_ref().map(|i| i.span())),
            ] {
                if let Some(span) = present {
                    errors.at_span(span, format_args!("`{what}` on a `skip` field; a skipped field is not read from the config"));
                    errors.at(skip, format_args!("`skip` here makes `{what}` meaningless"));
                }
            }
        }
        if let Some(flatten) = &a.flatten {
            check_flatten(f, flatten, errors);
        }
        for alias in &a.aliases {
            let v = alias.value();
            if let Some(owner) = keys.get(&v) {
                if *owner == f.ident {
                    errors.at(
                        alias,
                        format_args!(
                            "alias \"{v}\" is the key of `{}` itself; remove it",
                            f.ident
                        ),
                    );
                } else {
                    errors.at(
                        alias,
                        format_args!("alias \"{v}\" collides with field `{owner}`; a key reads into one field only"),
                    );
                }
            } else if let Some(owner) = aliases_seen.get(&v) {
                errors.at(
                    alias,
                    format_args!("alias \"{v}\" is already an alias of `{owner}`"),
                );
            } else {
                aliases_seen.insert(v, f.ident);
            }
        }
    }
}

/// `flatten` reads a whole struct from the keys of this object: nothing else of a field applies.
fn check_flatten(f: &Field<'_>, flatten: &syn::Ident, errors: &mut Errors) {
    let a = &f.attrs;
    for (what, present) in [
        ("default", a.default.as_ref().map(|(k, _)| k.span())),
        ("alias", a.aliases.first().map(|l| l.span())),
        ("rename", a.rename.as_ref().map(|l| l.span())),
        ("positive", a.positive.as_ref().map(|i| i.span())),
        ("skip", a.skip.as_ref().map(|i| i.span())),
    ] {
        if let Some(span) = present {
            errors.at_span(
                span,
                format_args!("`{what}` on a `flatten` field; its struct's own `#[arg]`s say how each key is read"),
            );
        }
    }
    if f.option.is_some() {
        errors.at(
            flatten,
            format_args!(
                "`flatten` on the `Option` field `{}`; a flattened struct reads keys of this object and is always there: remove the `Option`",
                f.ident
            ),
        );
    }
}
