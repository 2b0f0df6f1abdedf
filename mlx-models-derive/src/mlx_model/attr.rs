//! Reads `#[mlx_model(...)]` and the field attributes of the model struct.

use proc_macro2::TokenStream;
use syn::Item;

use super::ast::{Model, Rule, RuleKind};
use crate::common::errors::Once;
use crate::common::meta::{attrs_named, did_you_mean, split};
use crate::common::Errors;
use crate::sym;

/// The model struct, or an error at the keyword of whatever item it is.
pub fn item(item: TokenStream, errors: &mut Errors) -> Option<syn::ItemStruct> {
    let parsed = match syn::parse2::<Item>(item) {
        Ok(i) => i,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let msg = "`#[mlx_model]` goes on the model struct";
    match parsed {
        Item::Struct(s) => Some(s),
        Item::Enum(e) => {
            errors.at(e.enum_token, msg);
            None
        }
        Item::Fn(f) => {
            errors.at(f.sig.fn_token, msg);
            None
        }
        Item::Union(u) => {
            errors.at(u.union_token, msg);
            None
        }
        Item::Impl(i) => {
            errors.at(i.impl_token, msg);
            None
        }
        Item::Trait(t) => {
            errors.at(t.trait_token, msg);
            None
        }
        other => {
            errors.at(other, msg);
            None
        }
    }
}

pub fn model(attr: TokenStream, strukt: &mut syn::ItemStruct, errors: &mut Errors) -> Model {
    let mut model_type = Once::new(sym::MLX_MODEL);
    let mut aliases = Once::new(sym::MLX_MODEL);
    let mut args = Once::new(sym::MLX_MODEL);
    let mut architectures = Once::new(sym::MLX_MODEL);
    let mut sanitize = Once::new(sym::MLX_MODEL);
    let mut tied = Once::new(sym::MLX_MODEL);
    let mut rules = Vec::new();
    let mut written = Vec::new();
    for item in split(attr, errors) {
        let name = item.name();
        written.push(name.clone());
        let key = item.key.clone();
        match name.as_str() {
            sym::MODEL_TYPE => {
                if let Some(s) = errors.ok(item.lit_str("model_type = \"llama\"")) {
                    model_type.set(errors, &key, s);
                }
            }
            sym::ALIASES => {
                if let Some(l) = errors.ok(item.str_list("aliases = [\"mistral\"]")) {
                    aliases.set(errors, &key, l);
                }
            }
            sym::ARGS => {
                if let Some(t) = errors.ok(item.ty("args = LlamaArgs")) {
                    args.set(errors, &key, t);
                }
            }
            sym::ARCHITECTURES => {
                if let Some(l) = errors.ok(item.str_list("architectures = [\"LlamaForCausalLM\"]"))
                {
                    architectures.set(errors, &key, l);
                }
            }
            sym::SANITIZE => {
                if let Some(p) = errors.ok(item.path("sanitize = Self::fix_weights")) {
                    sanitize.set(errors, &key, p);
                }
            }
            sym::RENAME_RULE => {
                if let Some(pairs) = errors.ok(item.pairs("rename(\"old.{n}\" => \"new.{n}\")")) {
                    for (from, to) in pairs {
                        rules.push(Rule {
                            key: key.clone(),
                            kind: RuleKind::Rename { from, to },
                        });
                    }
                }
            }
            sym::STACK_EXPERTS => {
                let example = "stack_experts(\"model.layers.{n}.mlp.experts.{e}\" => \"model.layers.{n}.mlp.switch_mlp\")";
                if let Some(pairs) = errors.ok(item.pairs(example)) {
                    for (from, to) in pairs {
                        rules.push(Rule {
                            key: key.clone(),
                            kind: RuleKind::StackExperts { from, to },
                        });
                    }
                }
            }
            sym::STRIP_PREFIX => {
                if let Some(s) = errors.ok(item.lit_str("strip_prefix = \"language_model.\"")) {
                    rules.push(Rule {
                        key,
                        kind: RuleKind::StripPrefix(s),
                    });
                }
            }
            sym::ADD_PREFIX => {
                if let Some(s) = errors.ok(item.lit_str("add_prefix = \"language_model.\"")) {
                    rules.push(Rule {
                        key,
                        kind: RuleKind::AddPrefix(s),
                    });
                }
            }
            sym::DROP => {
                if let Some(list) =
                    errors.ok(item.str_or_list("drop = [\"*.rotary_emb.inv_freq\"]"))
                {
                    for s in list {
                        rules.push(Rule {
                            key: key.clone(),
                            kind: RuleKind::Drop(s),
                        });
                    }
                }
            }
            sym::TIED_HEAD => {
                if let Some(s) = errors.ok(item.lit_str("tied_head = \"lm_head\"")) {
                    tied.set(errors, &key, ());
                    rules.push(Rule {
                        key,
                        kind: RuleKind::TiedHead(s),
                    });
                }
            }
            _ => errors.at(
                &item.key,
                format_args!(
                    "unknown `mlx_model` argument `{name}`{}",
                    did_you_mean(&name, sym::MODEL_ARGS)
                ),
            ),
        }
    }
    field_rules(strukt, &mut rules, errors);
    let _ = tied.get();
    Model {
        model_type: model_type.get(),
        aliases: aliases.get().unwrap_or_default(),
        args: args.get(),
        architectures: architectures.get().unwrap_or_default(),
        rules,
        sanitize: sanitize.get(),
        written,
    }
}

/// Reads and removes `#[mlx_model(weights = "...")]` from the fields.
fn field_rules(strukt: &mut syn::ItemStruct, rules: &mut Vec<Rule>, errors: &mut Errors) {
    for field in strukt.fields.iter_mut() {
        let items = attrs_named(&field.attrs, sym::MLX_MODEL, errors);
        field.attrs.retain(|a| !a.path().is_ident(sym::MLX_MODEL));
        let mut weights = Once::new(sym::MLX_MODEL);
        for item in items {
            let name = item.name();
            if name == sym::WEIGHTS {
                if let Some(s) = errors.ok(item.lit_str("weights = \"transformer.wte\"")) {
                    weights.set(errors, &item.key, (item.key.clone(), s));
                }
            } else {
                errors.at(
                    &item.key,
                    format_args!(
                        "unknown `mlx_model` field argument `{name}`{}",
                        did_you_mean(&name, sym::MODEL_FIELD_ARGS)
                    ),
                );
            }
        }
        if let Some((key, from)) = weights.get() {
            match &field.ident {
                Some(ident) => rules.push(Rule {
                    key,
                    kind: RuleKind::Field {
                        field: ident.clone(),
                        from,
                    },
                }),
                None => errors.at(
                    &key,
                    "`weights` needs a named field; the field name is the module path",
                ),
            }
        }
    }
}
