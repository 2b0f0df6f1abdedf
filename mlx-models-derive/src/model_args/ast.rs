//! What the user wrote, each piece keeping its syn node for spans.

use syn::{Expr, Ident, LitStr, Path, Type};

pub struct Container<'a> {
    pub input: &'a syn::DeriveInput,
    pub attrs: ContainerAttrs,
    pub data: Data<'a>,
}

pub enum Data<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
}

#[derive(Default)]
pub struct ContainerAttrs {
    /// `text_config`: read `text_config` first.
    pub text_config: Option<Ident>,
    /// `validate = path`: the post-parse hook.
    pub validate: Option<Path>,
    /// `tag = "type"` (several): the keys that choose an enum's variant.
    pub tags: Vec<LitStr>,
    /// Where each `tag` or `text_config` was written, to point at it when it is misplaced.
    pub tag_keys: Vec<Ident>,
}

pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// `T` of an `Option<T>` field.
    pub option: Option<&'a Type>,
    pub attrs: FieldAttrs,
}

#[derive(Default)]
pub struct FieldAttrs {
    /// The `default` key and its expression (`None`: `Default::default()`).
    pub default: Option<(Ident, Option<Expr>)>,
    pub aliases: Vec<LitStr>,
    pub rename: Option<LitStr>,
    pub positive: Option<Ident>,
    pub skip: Option<Ident>,
    /// `flatten`: the field's type (a `ModelArgs` struct) reads its keys from the same object.
    pub flatten: Option<Ident>,
}

pub struct Variant<'a> {
    pub original: &'a syn::Variant,
    pub fields: Vec<Field<'a>>,
    pub rename: Option<LitStr>,
    pub aliases: Vec<LitStr>,
}

impl Field<'_> {
    /// The JSON key: the `rename`, or the field name without `r#`.
    pub fn key(&self) -> String {
        match &self.attrs.rename {
            Some(r) => r.value(),
            None => {
                let s = self.ident.to_string();
                s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
            }
        }
    }

    /// The key, then the aliases.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![self.key()];
        keys.extend(self.attrs.aliases.iter().map(LitStr::value));
        keys
    }
}

impl Variant<'_> {
    pub fn ident(&self) -> &Ident {
        &self.original.ident
    }

    /// The tag value: the `rename`, or the snake_case of the variant name.
    pub fn name(&self) -> String {
        match &self.rename {
            Some(r) => r.value(),
            None => snake_case(&self.original.ident.to_string()),
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.name()];
        names.extend(self.aliases.iter().map(LitStr::value));
        names
    }
}

/// `Llama3` -> `llama3`, `LongRope` -> `long_rope`, `NTKAware` -> `ntk_aware`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `T` when `ty` is `Option<T>` (written as `Option`, `std::option::Option`, ...).
pub fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}
