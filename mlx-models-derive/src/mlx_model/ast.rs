//! What the user wrote in `#[mlx_model(...)]`, each piece keeping its tokens for spans.

use syn::{Ident, LitStr, Path, Type};

#[derive(Default)]
pub struct Model {
    pub model_type: Option<LitStr>,
    pub aliases: Vec<LitStr>,
    pub args: Option<Type>,
    pub architectures: Vec<LitStr>,
    /// Rules in the order written; field rules come last.
    pub rules: Vec<Rule>,
    pub sanitize: Option<Path>,
    /// Every key written, valid or not: a bad `args = "x"` is not also reported missing.
    pub written: Vec<String>,
}

pub struct Rule {
    /// The keyword (`rename`, `drop`, ...) as written, or the field's `weights`.
    pub key: Ident,
    pub kind: RuleKind,
}

pub enum RuleKind {
    Rename {
        from: LitStr,
        to: LitStr,
    },
    StripPrefix(LitStr),
    AddPrefix(LitStr),
    Drop(LitStr),
    TiedHead(LitStr),
    StackExperts {
        from: LitStr,
        to: LitStr,
    },
    /// `#[mlx_model(weights = "checkpoint.key")]` on field `field`.
    Field {
        field: Ident,
        from: LitStr,
    },
}
