//! `mellum`, after mlx-lm's `models/mellum.py`: qwen3_moe's layer (per-head q/k norms,
//! explicit `head_dim`, a softmax top-k mixture of experts in every layer, renormalised with
//! `norm_topk_prob`) with sliding-window layers listed in `layer_types`, each attending to the
//! last `sliding_window` positions through a rotating cache. RoPE is set per layer type in
//! transformers v5's `rope_parameters` (`{"full_attention": {...}, "sliding_attention": {...}}`,
//! each with its `rope_theta`); as in the reference, a `"linear"` type rotates plainly (its
//! factor is not applied) and other types take their scaling. `intermediate_size` is read and
//! unused: every layer is sparse.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::{Rope, RopeScaling};
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, layer_windows, lm_head, Attention, AttentionConfig, Decoder,
    DecoderArgs, DecoderLayer,
};

/// config.json of a mellum checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MellumArgs {
    /// Type and sizes (`intermediate_size` is unused).
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    #[arg(positive)]
    pub head_dim: usize,
    /// Routed experts of each layer.
    #[arg(positive)]
    pub num_experts: usize,
    /// Experts each token goes through.
    #[arg(positive)]
    pub num_experts_per_tok: usize,
    /// Hidden width of one expert.
    #[arg(positive)]
    pub moe_intermediate_size: usize,
    /// Renormalise the chosen experts' probabilities to sum to one.
    pub norm_topk_prob: bool,
    /// Whether the head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Context length of the checkpoint (scaled RoPE types read it).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Positions a sliding-window layer attends to, itself included.
    #[arg(positive)]
    pub sliding_window: usize,
    /// Per layer, `"full_attention"` or `"sliding_attention"`.
    pub layer_types: Vec<String>,
    /// The RoPE of each layer type used: `rope_theta` and optionally `rope_type` with its
    /// parameters.
    pub rope_parameters: Option<Value>,
}

impl MellumArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let mut types = Some(std::mem::take(&mut self.layer_types));
        let window = Some(self.sliding_window);
        let checked = check_layer_types(&mut types, self.num_hidden_layers, window);
        self.layer_types = types.unwrap_or_default();
        checked?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        let keys = ["num_experts", "num_experts_per_tok"];
        check_experts(self.num_experts, self.num_experts_per_tok, keys)?;
        for t in &self.layer_types {
            self.rope(t)?;
        }
        Ok(())
    }

    /// The RoPE of the layers of type `layer_type`, from its entry in `rope_parameters`.
    pub fn rope(&self, layer_type: &str) -> std::result::Result<Rope, ArgsError> {
        let bad = |why: String| ArgsError::invalid(&["rope_parameters"], why);
        let params = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get(layer_type))
            .and_then(Value::as_object)
            .ok_or_else(|| bad(format!("no `{layer_type}` object in `rope_parameters`")))?;
        let base = params
            .get("rope_theta")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| bad(format!("`{layer_type}` needs a positive `rope_theta`")))?;
        let dims = self.head_dim as i32;
        let rope_type = params.get("rope_type").and_then(Value::as_str);
        if matches!(rope_type, None | Some("default" | "linear")) {
            return Ok(Rope::plain(dims, base as f32, false, 1.0));
        }
        // The type is read from `rope_type` alone (a stray `type` does not override it).
        let mut scaling = params.clone();
        scaling.remove("type");
        let scaling = RopeScaling::from_json(&Value::Object(scaling))
            .map_err(|e| bad(format!("`{layer_type}`: {e}")))?;
        let max_positions = Some(self.max_position_embeddings as i32);
        Rope::new(dims, base as f32, false, &scaling, max_positions)
            .map_err(|e| bad(format!("`{layer_type}`: {e}")))
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &MellumArgs, layer_type: &str, window: Option<usize>) -> Result<Layer> {
    let (dim, head_dim, eps) = (args.hidden_size, args.head_dim, args.rms_norm_eps);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(dim, heads.0, heads.1, head_dim).qk_norm(eps);
    let attention = Attention::new(&config, Some(args.rope(layer_type)?))?;
    let routing = Routing::SoftmaxTopK {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Last,
        renormalize: args.norm_topk_prob,
    };
    let (hidden, experts) = (args.moe_intermediate_size, args.num_experts);
    let mlp = SparseMoe::new(dim, hidden, experts, routing)?;
    Ok(DecoderLayer::new(attention, mlp, dim, eps)?.sliding_window(window))
}

/// The mellum model: embeddings, full and sliding-window layers (each a mixture of experts),
/// final norm, head (or tied embeddings). Checkpoints in the Hugging Face layout (one tensor
/// per expert) are stacked into the switch layers.
#[mlx_model(
    model_type = "mellum",
    args = MellumArgs,
    tied_head = "lm_head",
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
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
    fn new(args: &MellumArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let windows = layer_windows(&args.layer_types, Some(args.sliding_window));
        let layers = args
            .layer_types
            .iter()
            .zip(windows)
            .map(|(t, window)| layer(args, t, window))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
