//! `gemma3_text`, after mlx-lm's `models/gemma3_text.py`: every `sliding_window_pattern`-th
//! layer global (RoPE base `rope_theta`, with `rope_scaling`), the others sliding-window layers
//! (base `rope_local_base_freq`, a rotating cache of `sliding_window`); q/k norms, gemma2's
//! four norms per layer, float16 residuals clipped, and a head tied exactly when the checkpoint
//! has none.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::gemma::{
    check_kv_heads, is_global_layer, resolve_tied_head, EmbedScale, SandwichLayer,
};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::{Rope, RopeScaling};
use mlx_models::nn::transformer::{lm_head, Attention, AttentionConfig, Decoder, Mlp};
use mlx_models::weights::Weights;

/// config.json of a gemma3 text checkpoint (defaults: the reference's, gemma-3-1b's).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Gemma3TextArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 1152, positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(default = 26, positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(default = 6912, positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(default = 4, positive)]
    pub num_attention_heads: usize,
    /// Width of one attention head.
    #[arg(default = 256, positive)]
    pub head_dim: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(default = 262144, positive)]
    pub vocab_size: usize,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(default = 1, positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 1_000_000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// RoPE base frequency of the sliding-window layers.
    #[arg(default = 10_000.0)]
    pub rope_local_base_freq: f32,
    /// The attention scale is `query_pre_attn_scalar^-0.5`.
    #[arg(default = 256.0, positive)]
    pub query_pre_attn_scalar: f32,
    /// Tokens a sliding-window layer attends to.
    #[arg(default = 512, positive)]
    pub sliding_window: usize,
    /// One layer in this many attends to the whole sequence; the others use the sliding window.
    #[arg(default = 6, positive)]
    pub sliding_window_pattern: usize,
    /// Context length of the checkpoint.
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
    /// Applies to the global layers only.
    #[arg(alias = "rope_parameters")]
    pub rope_scaling: Option<Value>,
    /// Whether the model is built without a head; a checkpoint that disagrees is reconciled
    /// in sanitize ([`resolve_tied_head`]), as the reference decides by the checkpoint.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl Gemma3TextArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        check_kv_heads(self.num_attention_heads, self.num_key_value_heads)?;
        self.rope_scaling()
            .map_err(|e| ArgsError::invalid(&["rope_scaling"], e.to_string()))?;
        Ok(())
    }

    /// The RoPE scaling of the global layers.
    pub fn rope_scaling(&self) -> Result<RopeScaling, mlx_models::nn::rope::RopeConfigError> {
        RopeScaling::from_json(self.rope_scaling.as_ref().unwrap_or(&Value::Null))
    }

    /// Whether layer `i` is global (full attention).
    pub fn is_global(&self, i: usize) -> bool {
        is_global_layer(i, self.sliding_window_pattern)
    }
}

/// Global layers: base `rope_theta` with `rope_scaling`; local ones: `rope_local_base_freq`
/// and a window of `sliding_window` positions.
fn layer(args: &Gemma3TextArgs, is_global: bool) -> Result<SandwichLayer, Exception> {
    let (dim, head_dim) = (args.hidden_size as i32, args.head_dim as i32);
    let rope = if is_global {
        let scaling = args.rope_scaling()?;
        let max_positions = Some(args.max_position_embeddings as i32);
        Rope::new(head_dim, args.rope_theta, false, &scaling, max_positions)?
    } else {
        Rope::plain(head_dim, args.rope_local_base_freq, false, 1.0)
    };
    let (heads, kv_heads) = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(args.hidden_size, heads, kv_heads, args.head_dim)
        .scale((args.query_pre_attn_scalar as f64).powf(-0.5) as f32)
        .zero_centered_qk_norm(args.rms_norm_eps);
    let attention = Attention::new(&config, Some(rope))?;
    let mlp = Mlp::new(args.hidden_size, args.intermediate_size, false)?;
    let mlp = mlp.with_activation(GatedActivation::GeGlu);
    let layer = SandwichLayer::new(attention, mlp, dim, args.rms_norm_eps, true)?;
    let window = (!is_global).then_some(args.sliding_window);
    Ok(layer.sliding_window(window))
}

/// The gemma3 text model: scaled embeddings, local and global layers, final norm, head (or
/// the embeddings).
#[mlx_model(model_type = "gemma3_text", args = Gemma3TextArgs, sanitize = Self::resolve_head)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<SandwichLayer>,
    /// `None` when tied: the embeddings double as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    fn resolve_head(&self, weights: &mut Weights) -> Result<(), Exception> {
        resolve_tied_head(
            weights,
            self.lm_head.is_some(),
            "lm_head",
            "model.embed_tokens",
        )
    }
}

impl Architecture for Model {
    fn new(args: &Gemma3TextArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, args.is_global(i)))
            .collect::<Result<_, _>>()?;
        let norm = RmsNorm::zero_centered(dim as i32, args.rms_norm_eps)?;
        let model = Decoder::with_norm(vocab, dim, layers, norm)?;
        let scale = EmbedScale::Bfloat16.factor(dim)?;
        Ok(Model {
            model: model.embedding_multiplier(scale),
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
