//! `glm` (GLM-4 of 2024, `GlmForCausalLM`), after mlx-lm's `models/glm.py`: llama with
//! traditional (interleaved) RoPE, optional biases on the q/k/v projections (never on
//! o_proj), and the gate and up projections fused in one `gate_up_proj`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, lm_head, Attention, AttentionConfig, Decoder,
    DecoderArgs, DecoderLayer, FusedMlp,
};

/// config.json of a glm checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GlmArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Width of one attention head; `null`: `hidden_size / num_attention_heads`.
    #[arg(positive)]
    pub head_dim: Option<usize>,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Context length of the checkpoint (read; the RoPE is plain).
    #[arg(positive)]
    pub max_position_embeddings: Option<usize>,
    /// Biases on the q/k/v projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl GlmArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, self.head_dim)?;
        let fused = self.intermediate_size.checked_mul(2);
        check_width(
            &["intermediate_size"],
            "the fused gate_up_proj (2 * intermediate_size)",
            fused,
        )
    }

    /// `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

type Layer = DecoderLayer<Attention, FusedMlp>;

/// The glm model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(
    model_type = "glm",
    args = GlmArgs,
    drop = "*.self_attn.rotary_emb.inv_freq",
    tied_head = "lm_head",
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &GlmArgs) -> Result<Self, Exception> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim(), args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let attention =
            AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(args.attention_bias, false);
        let rope = Rope::plain(head_dim as i32, args.rope_theta, true, 1.0);
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let self_attn = Attention::new(&attention, Some(rope.clone()))?;
                let mlp = FusedMlp::new(dim, args.intermediate_size)?;
                DecoderLayer::new(self_attn, mlp, dim, eps)
            })
            .collect::<Result<_, Exception>>()?;
        Ok(Model {
            model: Decoder::new(args.vocab_size, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
