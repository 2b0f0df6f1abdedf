//! Parser tests: `parse_quote!` input, assertions on the messages.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse_quote;

use super::{attr, valid};
use crate::common::Errors;

fn messages(args: TokenStream) -> Vec<String> {
    let mut strukt: syn::ItemStruct = parse_quote! {
        pub struct Model {
            #[mlx_model(weights = "transformer.wte")]
            embed_tokens: Embedding,
            lm_head: Option<Linear>,
        }
    };
    let mut errors = Errors::new();
    let model = attr::model(args, &mut strukt, &mut errors);
    valid::check(&model, &strukt, &mut errors);
    assert!(
        strukt.fields.iter().all(|f| f.attrs.is_empty()),
        "field attributes are removed"
    );
    match errors.finish() {
        Ok(()) => Vec::new(),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_full_attribute_has_no_errors() {
    let m = messages(quote! {
        model_type = "llama", aliases = ["mistral"], args = LlamaArgs,
        architectures = ["LlamaForCausalLM"],
        rename("transformer.h.{n}.attn.c_proj" => "model.layers.{n}.self_attn.o_proj"),
        strip_prefix = "language_model.", add_prefix = "model.",
        drop = ["*.rotary_emb.inv_freq", "vision_tower.*"], tied_head = "lm_head",
        stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
        sanitize = Self::fix,
    });
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn missing_model_type_and_args() {
    let m = messages(quote! {});
    assert_eq!(m.len(), 2);
    assert!(m[0].starts_with("missing `model_type`"), "{m:?}");
    assert!(m[1].starts_with("missing `args`"), "{m:?}");
}

#[test]
fn unknown_argument_suggests_the_nearest() {
    let m = messages(quote! { model_typ = "llama", args = A });
    assert!(
        m.contains(
            &"unknown `mlx_model` argument `model_typ`; did you mean `model_type`?".to_owned()
        ),
        "{m:?}"
    );
}

#[test]
fn capture_on_one_side_only() {
    let m = messages(quote! { model_type = "x", args = A, rename("a.{n}.b" => "c.b") });
    assert_eq!(
        m,
        ["capture `{n}` of source `a.{n}.b` is missing in target `c.b`; use it on both sides"]
    );
    let m = messages(quote! { model_type = "x", args = A, rename("a.b" => "c.{m}") });
    assert_eq!(
        m,
        ["unknown capture `{m}` in target `c.{m}`; the source `a.b` does not capture it"]
    );
}

#[test]
fn unbalanced_capture() {
    let m = messages(quote! { model_type = "x", args = A, rename("a.{n.b" => "c") });
    assert_eq!(m.len(), 1);
    assert!(m[0].starts_with("unbalanced `{`"), "{m:?}");
}

#[test]
fn stacking_needs_e() {
    let m = messages(
        quote! { model_type = "x", args = A, stack_experts("a.{n}.experts" => "a.{n}.switch_mlp") },
    );
    assert_eq!(
        m,
        ["`stack_experts` source `a.{n}.experts` has no `{e}`; mark the expert index with `{e}`"]
    );
}

#[test]
fn two_rules_to_one_key_are_shown_at_both() {
    let m = messages(quote! { model_type = "x", args = A, rename("a" => "embed_tokens") });
    assert_eq!(
        m,
        [
            "two weight rules map to `embed_tokens`; keep one",
            "`embed_tokens` is also mapped here"
        ]
    );
}

#[test]
fn target_matching_its_source_is_not_idempotent() {
    let m = messages(quote! { model_type = "x", args = A, rename("{p}.norm" => "{p}.norm.inner") });
    assert_eq!(m.len(), 1);
    assert!(m[0].contains("matches its own source"), "{m:?}");
}

#[test]
fn duplicate_and_wrong_literal() {
    let m = messages(quote! { model_type = "a", model_type = "b", args = A });
    assert_eq!(
        m,
        ["duplicate `mlx_model` argument `model_type`; give it once"]
    );
    let m = messages(quote! { model_type = llama, args = A });
    assert_eq!(
        m[0],
        "expected a string for `model_type`; write `model_type = \"llama\"`"
    );
    let m = messages(quote! { model_type = "a", args = "A" });
    assert_eq!(
        m,
        ["expected a type for `args`, not a literal; write `args = LlamaArgs`"]
    );
}

#[test]
fn non_struct_items_are_refused_at_their_keyword() {
    let mut errors = Errors::new();
    assert!(attr::item(quote! { enum E { A } }, &mut errors).is_none());
    let m: Vec<String> = errors
        .finish()
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(m, ["`#[mlx_model]` goes on the model struct"]);
}
