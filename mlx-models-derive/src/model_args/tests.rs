//! Parser tests: `parse_quote!` input, assertions on the messages.

use syn::parse_quote;

use super::ast::snake_case;
use super::{attr, valid};
use crate::common::Errors;

fn messages(input: syn::DeriveInput) -> Vec<String> {
    let mut errors = Errors::new();
    if let Some(c) = attr::container(&input, &mut errors) {
        valid::check(&c, &mut errors);
    }
    match errors.finish() {
        Ok(()) => Vec::new(),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_plain_struct_has_no_errors() {
    let m = messages(parse_quote! {
        #[arg(text_config, validate = Self::check)]
        struct Args {
            hidden_size: usize,
            #[arg(alias = "n_kv_heads", positive)]
            num_key_value_heads: Option<usize>,
            #[arg(default = 1e-5)]
            rms_norm_eps: f32,
        }
    });
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn unknown_argument_suggests_the_nearest() {
    let m = messages(parse_quote! {
        struct Args { #[arg(defualt = 1)] a: usize }
    });
    assert_eq!(
        m,
        ["unknown `arg` argument `defualt`; did you mean `default`?"]
    );
}

#[test]
fn three_typos_give_three_errors() {
    let m = messages(parse_quote! {
        struct Args {
            #[arg(defualt = 1)] a: usize,
            #[arg(alais = "x")] b: usize,
            #[arg(postive)] c: usize,
        }
    });
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m[2].contains("did you mean `positive`?"), "{m:?}");
}

#[test]
fn duplicate_argument_is_reported() {
    let m = messages(parse_quote! {
        struct Args { #[arg(default = 1, default = 2)] a: usize }
    });
    assert_eq!(m, ["duplicate `arg` argument `default`; give it once"]);
}

#[test]
fn default_on_option_is_rejected() {
    let m = messages(parse_quote! {
        struct Args { #[arg(default = Some(1))] a: Option<usize> }
    });
    assert_eq!(m.len(), 1);
    assert!(
        m[0].starts_with("`default` on the `Option` field `a`"),
        "{m:?}"
    );
}

#[test]
fn alias_colliding_with_a_field_is_rejected() {
    let m = messages(parse_quote! {
        struct Args { hidden_size: usize, #[arg(alias = "hidden_size")] d_model: usize }
    });
    assert_eq!(m, ["alias \"hidden_size\" collides with field `hidden_size`; a key reads into one field only"]);
}

#[test]
fn enum_needs_a_tag_and_tuple_variants_are_rejected() {
    let m = messages(parse_quote! {
        enum Rope { Linear { factor: f32 }, Dynamic(f32) }
    });
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m.iter().any(|e| e.starts_with("tuple variant `Dynamic`")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|e| e.contains("needs `#[arg(tag = \"...\")]`")),
        "{m:?}"
    );
}

#[test]
fn tuple_struct_and_wrong_literal_are_rejected() {
    let m = messages(parse_quote! { struct Args(usize); });
    assert!(m[0].contains("tuple struct"), "{m:?}");
    let m = messages(parse_quote! { struct Args { #[arg(alias = 3)] a: usize } });
    assert_eq!(
        m,
        ["expected a string for `alias`; write `alias = \"n_kv_heads\"`"]
    );
}

#[test]
fn variant_names_are_snake_case() {
    assert_eq!(snake_case("Llama3"), "llama3");
    assert_eq!(snake_case("LongRope"), "long_rope");
    assert_eq!(snake_case("NTKAware"), "ntk_aware");
    assert_eq!(snake_case("Default"), "default");
}

#[test]
fn no_input_panics() {
    // Odd shapes: every one must give errors or nothing, never a panic.
    let inputs: Vec<syn::DeriveInput> = vec![
        parse_quote! { struct A { #[arg] a: usize } },
        parse_quote! { struct A { #[arg = 1] a: usize } },
        parse_quote! { struct A { #[arg(,,)] a: usize } },
        parse_quote! { struct A { #[arg(1)] a: usize } },
        parse_quote! { struct A { #[arg(default =)] a: usize } },
        parse_quote! { struct A { #[arg(alias(1))] a: usize } },
        parse_quote! { union A { a: usize } },
        parse_quote! { struct A<T> { a: T } },
    ];
    for i in inputs {
        let _ = messages(i);
    }
}

#[test]
fn flatten_takes_nothing_else() {
    let m = messages(parse_quote! {
        struct Args {
            #[arg(flatten, default, alias = "x")]
            base: Base,
            #[arg(flatten)]
            other: Option<Base>,
            #[arg(flatten)]
            plain: Base,
        }
    });
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m[0].starts_with("`default` on a `flatten` field"), "{m:?}");
    assert!(m[1].starts_with("`alias` on a `flatten` field"), "{m:?}");
    assert!(
        m[2].starts_with("`flatten` on the `Option` field `other`"),
        "{m:?}"
    );
}
