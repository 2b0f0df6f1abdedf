//! Every keyword the macros accept, in one place.

// `#[arg(...)]` on fields, variants and containers.
pub const DEFAULT: &str = "default";
pub const ALIAS: &str = "alias";
pub const RENAME: &str = "rename";
pub const POSITIVE: &str = "positive";
pub const SKIP: &str = "skip";
pub const FLATTEN: &str = "flatten";
pub const TEXT_CONFIG: &str = "text_config";
pub const VALIDATE: &str = "validate";
pub const TAG: &str = "tag";

pub const ARG: &str = "arg";
pub const FIELD_ARGS: &[&str] = &[DEFAULT, ALIAS, RENAME, POSITIVE, SKIP, FLATTEN];
pub const VARIANT_ARGS: &[&str] = &[RENAME, ALIAS];
pub const STRUCT_ARGS: &[&str] = &[TEXT_CONFIG, VALIDATE];
pub const ENUM_ARGS: &[&str] = &[TAG, VALIDATE];

// `#[mlx_model(...)]` on the model struct.
pub const MLX_MODEL: &str = "mlx_model";
pub const MODEL_TYPE: &str = "model_type";
pub const ALIASES: &str = "aliases";
pub const ARGS: &str = "args";
pub const ARCHITECTURES: &str = "architectures";
pub const RENAME_RULE: &str = "rename";
pub const STRIP_PREFIX: &str = "strip_prefix";
pub const ADD_PREFIX: &str = "add_prefix";
pub const DROP: &str = "drop";
pub const TIED_HEAD: &str = "tied_head";
pub const STACK_EXPERTS: &str = "stack_experts";
pub const SANITIZE: &str = "sanitize";
pub const MODEL_ARGS: &[&str] = &[
    MODEL_TYPE,
    ALIASES,
    ARGS,
    ARCHITECTURES,
    RENAME_RULE,
    STRIP_PREFIX,
    ADD_PREFIX,
    DROP,
    TIED_HEAD,
    STACK_EXPERTS,
    SANITIZE,
];

// `#[mlx_model(...)]` on a field of the model struct.
pub const WEIGHTS: &str = "weights";
pub const MODEL_FIELD_ARGS: &[&str] = &[WEIGHTS];

/// The capture that `stack_experts` stacks over.
pub const EXPERT: &str = "e";
