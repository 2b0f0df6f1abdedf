//! `seed_oss` (Seed-OSS), after mlx-lm's `models/seed_oss.py`: llama with an explicit
//! `head_dim`, biases on the q/k/v projections (`attention_bias`) and on o_proj
//! (`attention_out_bias`) set apart, optional MLP biases, any RoPE scaling, and a head tied by
//! default. (The reference's tied head multiplies by the embedding matrix itself, which only
//! works unquantized; here the embeddings serve as the head either way.)

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer,
    RopeArgs,
};

/// config.json of a seed_oss checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct SeedOssArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Context length of the checkpoint (dynamic NTK and longrope scaling need it).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Biases on the q/k/v projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// A bias on o_proj.
    #[arg(default = false)]
    pub attention_out_bias: bool,
    /// Biases on the MLP's three projections.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl SeedOssArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        self.rope().map(drop)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(self.max_position_embeddings))
    }
}

/// The seed_oss model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(model_type = "seed_oss", args = SeedOssArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &SeedOssArgs) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim, args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim)
            .bias(args.attention_bias, args.attention_out_bias);
        let rope = args.rope()?.build(head_dim)?;
        let hidden = args.intermediate_size;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                DecoderLayer::llama(&attention, Some(rope.clone()), hidden, args.mlp_bias, eps)
            })
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
