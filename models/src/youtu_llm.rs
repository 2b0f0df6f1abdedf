//! `youtu_llm`, after mlx-lm's `models/youtu_llm.py`: a dense llama stack whose attention is
//! DeepSeek-V2's latent attention in its plain form (queries through a low-rank pair, or one
//! `q_proj` when `q_lora_rank` is `null`; the normed key/value latent expanded through
//! `kv_b_proj` into per-head keys and values, the shared rotated key repeated over the heads,
//! softmax scale `(qk_nope_head_dim + qk_rope_head_dim)^-0.5`), RoPE over `qk_rope_head_dim`
//! features (traditional by default, scaled by `rope_scaling`), a SwiGLU MLP (biases with
//! `mlp_bias`) and a tied head by default.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mla::{check_mla_heads, ExpandedLatentAttention, MlaConfig};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{
    check_layers, check_width, lm_head, Decoder, DecoderLayer, Mlp, RopeArgs,
};

/// config.json of a youtu_llm checkpoint (every key has the reference's default).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct YoutuLlmArgs {
    /// `model_type` of config.json.
    #[arg(default = "youtu_llm".to_owned())]
    pub model_type: String,
    /// Number of tokens in the vocabulary.
    #[arg(positive, default = 128256)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[arg(positive, default = 2048)]
    pub hidden_size: usize,
    /// Hidden width of the MLP.
    #[arg(positive, default = 6144)]
    pub intermediate_size: usize,
    /// Number of decoder layers.
    #[arg(positive, default = 32)]
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    #[arg(positive, default = 16)]
    pub num_attention_heads: usize,
    /// Read and unused (every head has its own keys and values, from the latent).
    #[arg(positive, default = 16)]
    pub num_key_value_heads: usize,
    /// Width of the compressed key/value latent.
    #[arg(positive, default = 512)]
    pub kv_lora_rank: usize,
    /// Rank of the queries' low-rank pair; `null` (or absent): one `q_proj`. (The reference
    /// defaults an absent key to 1536; checkpoints write it, and a config written back leaves
    /// a `null` out, so absent must read as `null`.)
    #[arg(positive)]
    pub q_lora_rank: Option<usize>,
    /// Rotated features of each query head and of the shared key.
    #[arg(positive, default = 64)]
    pub qk_rope_head_dim: usize,
    /// Features of each value head.
    #[arg(positive, default = 128)]
    pub v_head_dim: usize,
    /// Features of each query/key head without position.
    #[arg(positive, default = 128)]
    pub qk_nope_head_dim: usize,
    /// Context length of the checkpoint (scaled RoPE types read it).
    #[arg(positive, default = 131072)]
    pub max_position_embeddings: usize,
    /// Epsilon of the RMS norms (those inside the attention too).
    #[arg(positive, default = 1e-6)]
    pub rms_norm_eps: f32,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, default = 1600000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// The traditional (interleaved) RoPE layout.
    #[arg(default = true)]
    pub rope_traditional: bool,
    /// RoPE scaling (`rope_type` or `type`, and its parameters).
    pub rope_scaling: Option<Value>,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Biases on the MLP's projections.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl YoutuLlmArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let heads = self.num_attention_heads;
        check_mla_heads(heads, self.qk_nope_head_dim, self.qk_rope_head_dim)?;
        let kv_width =
            (self.qk_nope_head_dim.checked_add(self.v_head_dim)).and_then(|w| w.checked_mul(heads));
        let keys = ["num_attention_heads", "qk_nope_head_dim", "v_head_dim"];
        check_width(&keys, "`kv_b_proj`", kv_width)?;
        let latent = self.kv_lora_rank.checked_add(self.qk_rope_head_dim);
        let keys = ["kv_lora_rank", "qk_rope_head_dim"];
        check_width(&keys, "`kv_a_proj_with_mqa`", latent)?;
        self.rope().map(drop)
    }

    /// The RoPE of the rotated parts.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

type Layer = DecoderLayer<ExpandedLatentAttention, Mlp>;

fn layer(args: &YoutuLlmArgs) -> Result<Layer> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let config = MlaConfig {
        hidden_size: dim as i32,
        n_heads: args.num_attention_heads as i32,
        q_lora_rank: args.q_lora_rank.map(|r| r as i32),
        kv_lora_rank: args.kv_lora_rank as i32,
        qk_nope_head_dim: args.qk_nope_head_dim as i32,
        qk_rope_head_dim: args.qk_rope_head_dim as i32,
        v_head_dim: args.v_head_dim as i32,
        bias: args.attention_bias,
        norm_eps: eps,
        scale: ((args.qk_nope_head_dim + args.qk_rope_head_dim) as f64).powf(-0.5) as f32,
    };
    let rope = args.rope()?.build(args.qk_rope_head_dim)?;
    let attention = ExpandedLatentAttention::new(config, rope)?;
    let mlp = Mlp::new(dim, args.intermediate_size, args.mlp_bias)?;
    DecoderLayer::new(attention, mlp, dim, eps)
}

/// The youtu_llm model: embeddings, latent-attention decoder layers, final norm, head (or
/// tied embeddings).
#[mlx_model(model_type = "youtu_llm", args = YoutuLlmArgs, tied_head = "lm_head")]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &YoutuLlmArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers).map(|_| layer(args));
        Ok(Model {
            model: Decoder::new(
                vocab,
                dim,
                args.rms_norm_eps,
                layers.collect::<Result<_>>()?,
            )?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
