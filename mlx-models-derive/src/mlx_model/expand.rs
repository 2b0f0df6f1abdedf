//! Code generation for `#[mlx_model(...)]`: the struct as written (less our field
//! attributes), its `ModelSpec` impl, and its registry entry.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use super::ast::{Model, RuleKind};

pub fn output(model: &Model, strukt: &syn::ItemStruct) -> TokenStream {
    let ident = &strukt.ident;
    let spec = spec_impl(model, strukt);
    let name = ident.to_string();
    let entry = quote_spanned! {ident.span()=>
        ::mlx_models::__private::inventory::submit! {
            ::mlx_models::__private::entry::<#ident>(::core::concat!(::core::module_path!(), "::", #name))
        }
    };
    quote! {
        #strukt
        const _: () = {
            #spec
            #entry
        };
    }
}

/// On error: the struct and a spec impl, so that the user's `impl Architecture` does not add
/// errors of its own.
pub fn fallback(model: &Model, strukt: &syn::ItemStruct) -> TokenStream {
    let ident = &strukt.ident;
    // Without a usable `args`, a placeholder keeps the user's `impl Architecture` quiet.
    let args = match &model.args {
        Some(args) => quote! { #args },
        None => quote! { ::mlx_models::__private::MissingArgs },
    };
    let spec = strukt.generics.params.is_empty().then(|| {
        quote! {
            #[automatically_derived]
            impl ::mlx_models::__private::ModelSpec for #ident {
                type Args = #args;
                const MODEL_TYPE: &'static str = "";
                const ALIASES: &'static [&'static str] = &[];
                const ARCHITECTURES: &'static [&'static str] = &[];
                const WEIGHT_RULES: &'static [::mlx_models::__private::Rule] = &[];
            }
        }
    });
    let strukt = without_mlx_rs_derives(strukt);
    quote! {
        #strukt
        const _: () = { #spec };
    }
}

/// A tuple struct without mlx-rs's derives (`ModuleParameters`, `Quantizable`) and their
/// field attributes: those derives panic on unnamed fields, and the user must see only our
/// error. Other structs are returned as written.
fn without_mlx_rs_derives(strukt: &syn::ItemStruct) -> syn::ItemStruct {
    let mut strukt = strukt.clone();
    if !matches!(strukt.fields, syn::Fields::Unnamed(_)) {
        return strukt;
    }
    const DERIVES: [&str; 2] = ["ModuleParameters", "Quantizable"];
    const HELPERS: [&str; 2] = ["param", "quantizable"];
    for field in strukt.fields.iter_mut() {
        field
            .attrs
            .retain(|a| !HELPERS.iter().any(|h| a.path().is_ident(h)));
    }
    let mut attrs = Vec::with_capacity(strukt.attrs.len());
    for attr in strukt.attrs.drain(..) {
        if !attr.path().is_ident("derive") {
            attrs.push(attr);
            continue;
        }
        let Ok(paths) = attr.parse_args_with(
            syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
        ) else {
            attrs.push(attr);
            continue;
        };
        let kept: Vec<&syn::Path> = paths
            .iter()
            .filter(|p| {
                p.segments
                    .last()
                    .is_none_or(|s| !DERIVES.iter().any(|d| s.ident == d))
            })
            .collect();
        if !kept.is_empty() {
            attrs.push(syn::parse_quote!(#[derive(#(#kept),*)]));
        }
    }
    strukt.attrs = attrs;
    strukt
}

fn spec_impl(model: &Model, strukt: &syn::ItemStruct) -> TokenStream {
    let ident = &strukt.ident;
    let args = model
        .args
        .as_ref()
        .map(ToTokens::to_token_stream)
        .unwrap_or_default();
    let args = quote_spanned! {args.span()=> #args };
    let model_type = model
        .model_type
        .as_ref()
        .map(|l| l.value())
        .unwrap_or_default();
    let aliases = &model.aliases;
    let archs = &model.architectures;
    // Field rules run last, on keys the container rules have already normalised.
    let ordered = model
        .rules
        .iter()
        .filter(|r| !matches!(r.kind, RuleKind::Field { .. }))
        .chain(
            model
                .rules
                .iter()
                .filter(|r| matches!(r.kind, RuleKind::Field { .. })),
        );
    let rules = ordered.map(|r| match &r.kind {
        RuleKind::Rename { from, to } => {
            quote! { ::mlx_models::__private::Rule::Rename { from: #from, to: #to } }
        }
        RuleKind::StripPrefix(p) => quote! { ::mlx_models::__private::Rule::StripPrefix(#p) },
        RuleKind::AddPrefix(p) => quote! { ::mlx_models::__private::Rule::AddPrefix(#p) },
        RuleKind::Drop(p) => quote! { ::mlx_models::__private::Rule::Drop(#p) },
        RuleKind::TiedHead(p) => quote! { ::mlx_models::__private::Rule::TiedHead(#p) },
        RuleKind::StackExperts { from, to } => {
            quote! { ::mlx_models::__private::Rule::StackExperts { from: #from, to: #to } }
        }
        RuleKind::Field { field, from } => {
            let to = field.to_string();
            let to = to.strip_prefix("r#").unwrap_or(&to).to_owned();
            quote! { ::mlx_models::__private::Rule::Rename { from: #from, to: #to } }
        }
    });
    let hook = model.sanitize.as_ref().map(|path| {
        quote_spanned! {path.span()=>
            fn sanitize_hook(
                &self,
                __weights: &mut ::mlx_models::__private::Weights,
            ) -> ::core::result::Result<(), ::mlx_models::__private::Exception> {
                let __hook: fn(&Self, &mut ::mlx_models::__private::Weights)
                    -> ::core::result::Result<(), ::mlx_models::__private::Exception> = #path;
                __hook(self, __weights)
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl ::mlx_models::__private::ModelSpec for #ident {
            type Args = #args;
            const MODEL_TYPE: &'static str = #model_type;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
            const ARCHITECTURES: &'static [&'static str] = &[#(#archs),*];
            const WEIGHT_RULES: &'static [::mlx_models::__private::Rule] = &[#(#rules),*];
            #hook
        }
    }
}
