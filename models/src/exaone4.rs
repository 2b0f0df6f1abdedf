//! `exaone4` (LG EXAONE 4.0), after mlx-lm's `models/exaone4.py`: olmo2-style post-norm
//! layers (norms after the attention and after the MLP, inside the residual branches, no
//! pre-norms) with per-head q/k RMS norms before RoPE. `sliding_window_pattern` (such as
//! `"LLLG"`, repeated over the layers) makes the `L` layers attend to the last
//! `sliding_window` positions through a rotating cache, with RoPE (and its scaling), and the
//! `G` layers attend to everything without positional encoding; without a pattern every layer
//! is full attention with RoPE. (The reference needs an `L` and a `G` in a pattern; here a
//! pattern of one kind also runs.)

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, Attention, AttentionConfig, Decoder, DecoderArgs, Mlp,
    PostNormLayer, RopeArgs,
};

/// config.json of an exaone4 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Exaone4Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Context length of the checkpoint (dynamic NTK, llama3, yarn and longrope need it).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    pub tie_word_embeddings: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Positions a sliding-window (`L`) layer attends to, itself included.
    #[arg(positive)]
    pub sliding_window: Option<usize>,
    /// `L` (sliding window) or `G` (global) per layer, repeated over the stack; absent, `null`
    /// or empty: every layer global with RoPE.
    pub sliding_window_pattern: Option<String>,
}

impl Exaone4Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        let pattern = self.sliding_window_pattern.as_deref().unwrap_or_default();
        if let Some(bad) = pattern.chars().find(|c| !matches!(c, 'L' | 'G')) {
            return Err(ArgsError::invalid(
                &["sliding_window_pattern"],
                format!("`sliding_window_pattern` has {bad:?}; expected only \"L\" and \"G\""),
            ));
        }
        if pattern.contains('L') && self.sliding_window.is_none() {
            return Err(ArgsError::invalid(
                &["sliding_window_pattern", "sliding_window"],
                "`L` layers of `sliding_window_pattern` need `sliding_window`",
            ));
        }
        self.rope().map(drop)
    }

    /// Per layer: `Some(is_local)` from the pattern, or `None` without one (global with RoPE).
    pub fn layer_kinds(&self) -> impl Iterator<Item = Option<bool>> + '_ {
        let pattern: Vec<char> = self
            .sliding_window_pattern
            .as_deref()
            .unwrap_or_default()
            .chars()
            .collect();
        (0..self.num_hidden_layers).map(move |i| match pattern.is_empty() {
            true => None,
            false => Some(pattern[i % pattern.len()] == 'L'),
        })
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope.max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// A layer of this model: norms after the attention and after the MLP (the shared
/// post-norm layer).
type TransformerBlock = PostNormLayer;

fn block(
    args: &Exaone4Args,
    rope: Option<Rope>,
    window: Option<usize>,
) -> Result<TransformerBlock> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let attention = AttentionConfig::new(dim, heads.0, heads.1, args.head_dim).qk_norm(eps);
    TransformerBlock::new(
        Attention::new(&attention, rope)?,
        Mlp::new(dim, args.intermediate_size, false)?,
        dim,
        eps,
        window.map(|w| w as i32),
    )
}

/// The exaone4 model: embeddings, sliding-window and global layers, final norm, head (or tied
/// embeddings).
#[mlx_model(model_type = "exaone4", args = Exaone4Args, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Exaone4Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?.build(args.head_dim)?;
        let layers = args
            .layer_kinds()
            .map(|is_local| match is_local {
                // A global layer of a pattern has no positional encoding.
                Some(false) => block(args, None, None),
                Some(true) => block(args, Some(rope.clone()), args.sliding_window),
                None => block(args, Some(rope.clone()), None),
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
