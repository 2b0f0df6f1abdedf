//! Checks across the arguments of `#[mlx_model(...)]`: required keys, names, and that the
//! weight rules are well formed, one-to-one and idempotent.

use std::collections::{HashMap, HashSet};

use proc_macro2::Span;
use syn::LitStr;

use super::ast::{Model, RuleKind};
use crate::common::pattern::Pattern;
use crate::common::Errors;
use crate::sym;

pub fn check(model: &Model, strukt: &syn::ItemStruct, errors: &mut Errors) {
    let written = |k: &str| model.written.iter().any(|w| w == k);
    if model.model_type.is_none() && !written(sym::MODEL_TYPE) {
        errors.at_span(
            Span::call_site(),
            "missing `model_type` in `#[mlx_model(...)]`; add `model_type = \"...\"`, the `model_type` of config.json",
        );
    }
    if model.args.is_none() && !written(sym::ARGS) {
        errors.at_span(
            Span::call_site(),
            "missing `args` in `#[mlx_model(...)]`; add `args = T`, where `T` derives `ModelArgs`",
        );
    }
    if let Some(param) = strukt.generics.params.first() {
        errors.at(param, "`#[mlx_model]` does not support generic parameters; the registry builds one concrete type");
    }
    if let syn::Fields::Unnamed(f) = &strukt.fields {
        errors.at(
            f,
            "`#[mlx_model]` needs named fields; field names are the module paths of the weights",
        );
    }
    names(model, errors);
    rules(model, errors);
}

fn name_ok(lit: &LitStr, what: &str, errors: &mut Errors) {
    let v = lit.value();
    if v.is_empty() {
        errors.at(
            lit,
            format_args!("empty `{what}`; write the name config.json uses"),
        );
    } else if v.chars().any(|c| c.is_whitespace() || c == '"') {
        errors.at(
            lit,
            format_args!("`{what}` \"{v}\" has whitespace or quotes; config.json names have none"),
        );
    }
}

fn names(model: &Model, errors: &mut Errors) {
    let mut seen: HashSet<String> = HashSet::new();
    if let Some(t) = &model.model_type {
        name_ok(t, sym::MODEL_TYPE, errors);
        seen.insert(t.value());
    }
    for a in &model.aliases {
        name_ok(a, "alias", errors);
        if !seen.insert(a.value()) {
            errors.at(
                a,
                format_args!(
                    "alias \"{}\" repeats a name of this model; remove it",
                    a.value()
                ),
            );
        }
    }
    let mut archs: HashMap<String, &LitStr> = HashMap::new();
    for a in &model.architectures {
        name_ok(a, "architecture", errors);
        if archs.insert(a.value(), a).is_some() {
            errors.at(
                a,
                format_args!("architecture \"{}\" is listed twice", a.value()),
            );
        }
    }
}

fn parse(lit: &LitStr, star: bool, errors: &mut Errors) -> Option<Pattern> {
    match Pattern::parse(&lit.value(), star) {
        Ok(p) => Some(p),
        Err(msg) => {
            errors.at(lit, msg);
            None
        }
    }
}

/// `from => to` must carry the same captures, and converted keys must not match `from`.
fn pair(from: &LitStr, to: &LitStr, stack: bool, errors: &mut Errors) {
    let (Some(pf), Some(pt)) = (parse(from, false, errors), parse(to, false, errors)) else {
        return;
    };
    let fc = pf.captures();
    let tc = pt.captures();
    if stack {
        if !fc.contains(&sym::EXPERT) {
            errors.at(
                from,
                format_args!("`stack_experts` source `{}` has no `{{e}}`; mark the expert index with `{{e}}`", from.value()),
            );
        }
        if tc.contains(&sym::EXPERT) {
            errors.at(
                to,
                format_args!(
                    "`stack_experts` target `{}` has `{{e}}`; the experts are stacked into one key",
                    to.value()
                ),
            );
        }
    }
    for c in &tc {
        let in_source = fc.contains(c) || (stack && *c == sym::EXPERT);
        if !in_source {
            errors.at(
                to,
                format_args!(
                    "unknown capture `{{{c}}}` in target `{}`; the source `{}` does not capture it",
                    to.value(),
                    from.value()
                ),
            );
        }
    }
    for c in &fc {
        let in_target = tc.contains(c) || (stack && *c == sym::EXPERT);
        if !in_target {
            errors.at(
                from,
                format_args!("capture `{{{c}}}` of source `{}` is missing in target `{}`; use it on both sides", from.value(), to.value()),
            );
        }
    }
    if pf.matches_prefix(&pt.sample()) {
        errors.at(
            to,
            format_args!(
                "target `{}` matches its own source `{}`; sanitize would rename converted weights again",
                to.value(),
                from.value()
            ),
        );
    }
}

fn rules(model: &Model, errors: &mut Errors) {
    // target pattern -> where it was first written
    let mut targets: HashMap<String, Span> = HashMap::new();
    let mut target = |to: &str, span: Span, errors: &mut Errors| {
        if let Some(first) = targets.get(to) {
            errors.at_span(
                span,
                format_args!("two weight rules map to `{to}`; keep one"),
            );
            errors.at_span(*first, format_args!("`{to}` is also mapped here"));
        } else {
            targets.insert(to.to_owned(), span);
        }
    };
    for rule in &model.rules {
        match &rule.kind {
            RuleKind::Rename { from, to } => {
                pair(from, to, false, errors);
                target(&to.value(), to.span(), errors);
            }
            RuleKind::StackExperts { from, to } => {
                pair(from, to, true, errors);
                target(&to.value(), to.span(), errors);
            }
            RuleKind::Field { field, from } => {
                if let Some(p) = parse(from, false, errors) {
                    if !p.captures().is_empty() {
                        errors.at(
                            from,
                            "`weights` takes a plain checkpoint path, without captures",
                        );
                    }
                }
                target(&field.to_string(), field.span(), errors);
            }
            RuleKind::StripPrefix(p) | RuleKind::AddPrefix(p) => {
                let v = p.value();
                if v.is_empty() {
                    errors.at(
                        p,
                        format_args!(
                            "empty `{}`; write the prefix, as in \"language_model.\"",
                            rule.key
                        ),
                    );
                } else if v.contains(['{', '}', '*']) {
                    errors.at(
                        p,
                        format_args!(
                            "`{}` takes a plain prefix, without captures or `*`",
                            rule.key
                        ),
                    );
                }
            }
            RuleKind::Drop(p) => {
                parse(p, true, errors);
            }
            RuleKind::TiedHead(p) => {
                let v = p.value();
                if v.is_empty() || v.contains(['{', '}', '*']) || v.ends_with('.') {
                    errors.at(p, "`tied_head` takes a module path, as in \"lm_head\"");
                }
            }
        }
    }
}
