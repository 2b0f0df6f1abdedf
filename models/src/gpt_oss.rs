//! `gpt_oss`, after mlx-lm's `models/gpt_oss.py`: sliding-window and full-attention layers by
//! `layer_types` (by default alternating, sliding first), biased attention projections with a
//! learned sink per query head, RoPE with any scaling (yarn in the released checkpoints), and a
//! mixture of experts in every layer: a biased router, the top `num_experts_per_tok` logits,
//! a softmax over them, biased experts with the clamped SwiGLU. The head is never tied.
//! Hugging Face checkpoints fuse each layer's gate and up projections (`gate_up_proj`, rows
//! interleaved) and the original ones store the experts in OpenAI's mxfp4 layout
//! (`*_blocks`, `*_scales`). As in the reference, an unquantized fused projection is read as
//! `gate_up_proj.weight` `[experts, 2 * intermediate, hidden]`; transformers' own unquantized
//! layout (`gate_up_proj`, no leaf, `[experts, hidden, 2 * intermediate]`) is not converted
//! (nor by the reference) and fails the strict load.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::GatedActivation;
use mlx_models::nn::moe::{check_experts, Routing, SparseMoe, TopK};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layer_types, layer_windows, Attention, AttentionConfig, Decoder,
    DecoderLayer, RopeArgs, MAX_LAYERS,
};
use mlx_models::weights::{mxfp4_blocks, split_fused, Fused, SanitizeError, Weights};

/// config.json of a gpt_oss checkpoint (defaults: the reference's, gpt-oss-120b's sizes).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GptOssArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Number of decoder layers.
    #[arg(default = 36, positive)]
    pub num_hidden_layers: usize,
    /// Experts per layer.
    #[arg(default = 128, positive)]
    pub num_local_experts: usize,
    /// Experts each token goes through.
    #[arg(default = 4, positive)]
    pub num_experts_per_tok: usize,
    /// Number of tokens in the vocabulary.
    #[arg(default = 201088, positive)]
    pub vocab_size: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-5, positive)]
    pub rms_norm_eps: f32,
    /// Width of the residual stream.
    #[arg(default = 2880, positive)]
    pub hidden_size: usize,
    /// Hidden width of one expert.
    #[arg(default = 2880, positive)]
    pub intermediate_size: usize,
    /// Width of one attention head.
    #[arg(default = 64, positive)]
    pub head_dim: usize,
    /// Number of query heads.
    #[arg(default = 64, positive)]
    pub num_attention_heads: usize,
    /// Number of key and value heads.
    #[arg(default = 8, positive)]
    pub num_key_value_heads: usize,
    /// Tokens a sliding-window layer attends to.
    #[arg(default = 128, positive)]
    pub sliding_window: usize,
    /// Base frequency of the rotary position embedding.
    #[arg(default = 150000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling as config.json writes it (transformers v5: inside `rope_parameters`).
    #[arg(alias = "rope_parameters")]
    pub rope_scaling: Option<Value>,
    /// Per layer, `"sliding_attention"` or `"full_attention"`; absent: the two alternating,
    /// sliding first (filled in by the check).
    pub layer_types: Option<Vec<String>>,
}

impl GptOssArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        let keys = ["num_local_experts", "num_experts_per_tok"];
        check_experts(self.num_local_experts, self.num_experts_per_tok, keys)?;
        let layers = self.num_hidden_layers;
        // An absurd count is left to `check_layer_types` to refuse before any list is made.
        if self.layer_types.is_none() && layers <= MAX_LAYERS {
            // The reference repeats the pair `num_hidden_layers / 2` times: with an odd count
            // its last layer would never run.
            if !layers.is_multiple_of(2) {
                return Err(ArgsError::invalid(
                    &["layer_types", "num_hidden_layers"],
                    format!(
                        "without `layer_types`, `num_hidden_layers` must be even (sliding and \
                         full layers alternate in pairs), not {layers}"
                    ),
                ));
            }
            let pair = ["sliding_attention", "full_attention"].map(String::from);
            self.layer_types = Some(pair.iter().cycle().take(layers).cloned().collect());
        }
        check_layer_types(&mut self.layer_types, layers, Some(self.sliding_window))?;
        // The reference builds its masks from the first layer of each kind: it needs both.
        let types = self.layer_types.as_deref().unwrap_or_default();
        if !types.iter().any(|t| t == "sliding_attention") {
            return Err(ArgsError::invalid(
                &["layer_types"],
                "no `sliding_attention` layer (gpt_oss has both kinds)",
            ));
        }
        self.rope().map(drop)
    }

    /// The RoPE settings (the reference passes no `max_position_embeddings`).
    pub fn rope(&self) -> Result<RopeArgs, ArgsError> {
        RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)
    }
}

type Layer = DecoderLayer<Attention, SparseMoe>;

fn layer(args: &GptOssArgs, rope: &Rope, window: Option<usize>) -> Result<Layer, Exception> {
    let (dim, head_dim) = (args.hidden_size, args.head_dim);
    let heads = (args.num_attention_heads, args.num_key_value_heads);
    let config = AttentionConfig::new(dim, heads.0, heads.1, head_dim)
        .bias(true, true)
        .sinks();
    let attention = Attention::new(&config, Some(rope.clone()))?;
    let routing = Routing::TopKSoftmax {
        k: args.num_experts_per_tok as i32,
        pick: TopK::Last,
        float32_weights: false,
    };
    let (hidden, experts) = (args.intermediate_size, args.num_local_experts);
    let moe = SparseMoe::new(dim, hidden, experts, routing)?
        .gate_bias()?
        .expert_bias(true)?
        .activation(GatedActivation::ClampedSwiGlu {
            alpha: 1.702,
            limit: 7.0,
        });
    let layer = DecoderLayer::new(attention, moe, dim, args.rms_norm_eps)?;
    Ok(layer.sliding_window(window))
}

/// The gpt_oss model: embeddings, sliding and full decoder layers, final norm, head. The
/// reference's `mlp.router` is this crate's `mlp.gate`, its `mlp.experts` the `switch_mlp`.
#[mlx_model(
    model_type = "gpt_oss",
    args = GptOssArgs,
    rename("model.layers.{n}.mlp.router" => "model.layers.{n}.mlp.gate"),
    rename("model.layers.{n}.mlp.experts.gate_up_proj_bias" => "model.layers.{n}.mlp.switch_mlp.gate_up_proj.bias"),
    rename("model.layers.{n}.mlp.experts.down_proj_bias" => "model.layers.{n}.mlp.switch_mlp.down_proj.bias"),
    rename("model.layers.{n}.mlp.experts" => "model.layers.{n}.mlp.switch_mlp"),
    sanitize = Self::split_gate_up,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// Always present: gpt_oss does not tie its head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// The experts of a Hugging Face checkpoint: mxfp4 `*_blocks` / `*_scales` as MLX packs
    /// them, then `gate_up_proj` `[experts, 2 * hidden, ...]` (and its bias) split into the
    /// gate projections (even rows) and the up ones (odd rows).
    fn split_gate_up(&self, weights: &mut Weights) -> Result<(), Exception> {
        let err = |e: SanitizeError| Exception::custom(e.to_string());
        mxfp4_blocks(weights, &["gate_up_proj", "down_proj"]).map_err(err)?;
        let parts = ["mlp.switch_mlp.gate_proj", "mlp.switch_mlp.up_proj"];
        let fused = "mlp.switch_mlp.gate_up_proj";
        split_fused(weights, fused, parts, 1, Fused::Interleaved).map_err(err)
    }
}

impl Architecture for Model {
    fn new(args: &GptOssArgs) -> Result<Self, Exception> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?.build(args.head_dim)?;
        let types = args.layer_types.as_deref().unwrap_or_default();
        let layers = layer_windows(types, Some(args.sliding_window))
            .map(|window| layer(args, &rope, window))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
