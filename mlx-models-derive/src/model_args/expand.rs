//! Code generation for `#[derive(ModelArgs)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{Container, Data, Field};

pub fn impls(c: &Container<'_>) -> TokenStream {
    let ident = &c.input.ident;
    let (parse_body, write_body, expected) = match &c.data {
        Data::Struct(fields) => struct_bodies(c, fields),
        Data::Enum(_) => enum_bodies(c),
    };
    let deref = match &c.data {
        Data::Struct(fields) => deref_to_flattened(ident, fields),
        Data::Enum(_) => TokenStream::new(),
    };
    quote! {
        #deref
        const _: () = {
            #[automatically_derived]
            impl ::mlx_models::__private::ModelArgs for #ident {
                fn parse_object(
                    __obj: &mut ::mlx_models::__private::Object<'_, '_>,
                ) -> ::core::result::Result<Self, ::mlx_models::__private::ArgsError> {
                    #parse_body
                }

                fn write_object(
                    &self,
                    __out: &mut ::mlx_models::__private::Map<::std::string::String, ::mlx_models::__private::Value>,
                ) {
                    #write_body
                }
            }

            #[automatically_derived]
            impl ::mlx_models::__private::ConfigValue for #ident {
                fn expected() -> ::std::string::String {
                    ::std::string::String::from(#expected)
                }

                fn from_config_value(
                    __value: &::mlx_models::__private::Value,
                    __cx: &mut ::mlx_models::__private::Cx,
                    __path: &str,
                ) -> ::core::result::Result<Self, ::mlx_models::__private::ArgsError> {
                    ::mlx_models::__private::nested::<Self>(__value, __cx, __path)
                }

                fn to_config_value(&self) -> ::mlx_models::__private::Value {
                    <Self as ::mlx_models::__private::ModelArgs>::to_config(self)
                }
            }
        };
    }
}

/// A struct with exactly one `#[arg(flatten)]` field derefs to it, as a subclass has its
/// base's fields: `smollm3_args.hidden_size` reads the flattened llama args' field.
fn deref_to_flattened(ident: &syn::Ident, fields: &[Field<'_>]) -> TokenStream {
    let mut flattened = fields.iter().filter(|f| f.attrs.flatten.is_some());
    let (Some(f), None) = (flattened.next(), flattened.next()) else {
        return TokenStream::new();
    };
    let (field, ty) = (f.ident, f.ty);
    quote! {
        #[automatically_derived]
        impl ::core::ops::Deref for #ident {
            type Target = #ty;
            fn deref(&self) -> &#ty {
                &self.#field
            }
        }

        #[automatically_derived]
        impl ::core::ops::DerefMut for #ident {
            fn deref_mut(&mut self) -> &mut #ty {
                &mut self.#field
            }
        }
    }
}

/// The impls with `unreachable!()` bodies, so that an error in the attributes is the only
/// error the user sees.
pub fn stub(input: &syn::DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let (impl_g, ty_g, where_g) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_g ::mlx_models::__private::ModelArgs for #ident #ty_g #where_g {
                fn parse_object(
                    _: &mut ::mlx_models::__private::Object<'_, '_>,
                ) -> ::core::result::Result<Self, ::mlx_models::__private::ArgsError> {
                    ::core::unreachable!()
                }
                fn write_object(
                    &self,
                    _: &mut ::mlx_models::__private::Map<::std::string::String, ::mlx_models::__private::Value>,
                ) {
                    ::core::unreachable!()
                }
            }
            #[automatically_derived]
            impl #impl_g ::mlx_models::__private::ConfigValue for #ident #ty_g #where_g {
                fn expected() -> ::std::string::String {
                    ::core::unreachable!()
                }
                fn from_config_value(
                    _: &::mlx_models::__private::Value,
                    _: &mut ::mlx_models::__private::Cx,
                    _: &str,
                ) -> ::core::result::Result<Self, ::mlx_models::__private::ArgsError> {
                    ::core::unreachable!()
                }
                fn to_config_value(&self) -> ::mlx_models::__private::Value {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// `let <field> = <read>;` for each field.
fn reads(fields: &[Field<'_>]) -> TokenStream {
    fields
        .iter()
        .map(|f| {
            let ident = f.ident;
            let ty = f.ty;
            let span = f.ty.span();
            let keys = f.keys();
            let keys = quote! { &[#(#keys),*] };
            let positive = f.attrs.positive.is_some();
            let default_expr = match &f.attrs.default {
                Some((_, Some(expr))) => quote_spanned! {expr.span()=> #expr },
                Some((key, None)) => {
                    quote_spanned! {key.span()=> ::core::default::Default::default() }
                }
                None => quote_spanned! {span=> ::core::default::Default::default() },
            };
            let read = if f.attrs.flatten.is_some() {
                quote_spanned! {span=> <#ty as ::mlx_models::__private::ModelArgs>::parse_object(__obj)? }
            } else if f.attrs.skip.is_some() {
                quote_spanned! {span=> { let __v: #ty = #default_expr; __v } }
            } else if let Some(inner) = f.option {
                if positive {
                    quote_spanned! {span=> __obj.optional_positive::<#inner>(#keys)? }
                } else {
                    quote_spanned! {span=> __obj.optional::<#inner>(#keys)? }
                }
            } else if f.attrs.default.is_some() {
                let call = if positive {
                    quote!(optional_positive)
                } else {
                    quote!(optional)
                };
                quote_spanned! {span=>
                    match __obj.#call::<#ty>(#keys)? {
                        ::core::option::Option::Some(__v) => __v,
                        ::core::option::Option::None => { let __v: #ty = #default_expr; __v }
                    }
                }
            } else if positive {
                quote_spanned! {span=> __obj.required_positive::<#ty>(#keys)? }
            } else {
                quote_spanned! {span=> __obj.required::<#ty>(#keys)? }
            };
            quote! { let #ident = #read; }
        })
        .collect()
}

fn writes(fields: &[Field<'_>], access: impl Fn(&Field<'_>) -> TokenStream) -> TokenStream {
    fields
        .iter()
        .filter(|f| f.attrs.skip.is_none())
        .map(|f| {
            let key = f.key();
            let value = access(f);
            if f.attrs.flatten.is_some() {
                let ty = f.ty;
                quote_spanned! {ty.span()=> <#ty as ::mlx_models::__private::ModelArgs>::write_object(#value, __out); }
            } else {
                quote! { ::mlx_models::__private::write_field(__out, #key, #value); }
            }
        })
        .collect()
}

fn hook(c: &Container<'_>) -> TokenStream {
    match &c.attrs.validate {
        Some(path) => quote_spanned! {path.span()=>
            let __hook: fn(&mut Self) -> ::core::result::Result<(), ::mlx_models::__private::ArgsError> = #path;
            __obj.hook(__hook(&mut __this))?;
        },
        None => TokenStream::new(),
    }
}

fn struct_bodies(c: &Container<'_>, fields: &[Field<'_>]) -> (TokenStream, TokenStream, String) {
    let text_config = c
        .attrs
        .text_config
        .as_ref()
        .map(|_| quote! { __obj.text_config(); });
    let reads = reads(fields);
    let idents = fields.iter().map(|f| f.ident);
    let hook = hook(c);
    let parse = quote! {
        #text_config
        #reads
        #[allow(unused_mut)]
        let mut __this = Self { #(#idents),* };
        #hook
        ::core::result::Result::Ok(__this)
    };
    let target = c.attrs.text_config.as_ref().map(|_| {
        quote! { let __out = ::mlx_models::__private::text_config_map(__out); }
    });
    let writes = writes(fields, |f| {
        let ident = f.ident;
        quote! { &self.#ident }
    });
    let write = quote! { #target #writes };
    (parse, write, "an object".to_owned())
}

fn enum_bodies(c: &Container<'_>) -> (TokenStream, TokenStream, String) {
    let Data::Enum(variants) = &c.data else {
        return Default::default();
    };
    let tags: Vec<String> = c.attrs.tags.iter().map(syn::LitStr::value).collect();
    let first_tag = tags.first().cloned().unwrap_or_default();
    let names: Vec<String> = variants.iter().flat_map(|v| v.names()).collect();
    let arms = variants.iter().map(|v| {
        let vident = v.ident();
        let pats = v.names();
        let reads = reads(&v.fields);
        let idents = v.fields.iter().map(|f| f.ident);
        let build = match &v.original.fields {
            syn::Fields::Unit => quote! { Self::#vident },
            _ => quote! { Self::#vident { #(#idents),* } },
        };
        quote! { #(#pats)|* => { #reads #build } }
    });
    let hook = hook(c);
    let parse = quote! {
        const __TAGS: &[&str] = &[#(#tags),*];
        let __tag = __obj.tag(__TAGS)?;
        #[allow(unused_mut)]
        let mut __this = match __tag.as_str() {
            #(#arms)*
            __other => {
                return ::core::result::Result::Err(__obj.unknown_variant(__TAGS, __other, &[#(#names),*]));
            }
        };
        #hook
        ::core::result::Result::Ok(__this)
    };
    let write_arms = variants.iter().map(|v| {
        let vident = v.ident();
        let name = v.name();
        let binds: Vec<_> = v
            .fields
            .iter()
            .enumerate()
            .map(|(i, _)| format_ident!("__f{}", i))
            .collect();
        let field_idents = v.fields.iter().map(|f| f.ident);
        let pattern = match &v.original.fields {
            syn::Fields::Unit => quote! { Self::#vident },
            _ => quote! { Self::#vident { #(#field_idents: #binds,)* .. } },
        };
        let writes = writes(&v.fields, |f| {
            let i = v
                .fields
                .iter()
                .position(|g| g.ident == f.ident)
                .unwrap_or_default();
            let b = format_ident!("__f{}", i);
            quote! { #b }
        });
        quote! {
            #pattern => {
                __out.insert(
                    ::std::string::String::from(#first_tag),
                    ::mlx_models::__private::Value::String(::std::string::String::from(#name)),
                );
                #writes
            }
        }
    });
    let write = quote! {
        #[allow(unused_variables)]
        match self { #(#write_arms)* };
    };
    (parse, write, format!("an object with a `{first_tag}` key"))
}
