//! `internlm2` (InternLM2 / 2.5), after mlx-lm's `models/internlm2.py`: llama with the q/k/v
//! projections fused in one `wqkv`, grouped by key/value head (each group's query heads, then
//! its key, then its value), biases on `wqkv` and `wo` with `bias` (on by default, never on the
//! MLP), and its own names (`tok_embeddings`, `attention_norm`, `attention.wqkv` / `wo`,
//! `ffn_norm`, `feed_forward.w1` / `w3` / `w2`, `output`), mapped onto the shared stack's. RoPE
//! scaling, when given, must name `factor` and a `type` of `linear` or `dynamic`, as the
//! reference requires. The head width is `hidden_size / num_attention_heads`. Rotary buffers
//! (`*attention.rope.inv_freq`) are dropped.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, Decoder, DecoderArgs, DecoderLayer, Mlp, RopeArgs,
    SelfAttention,
};

/// config.json of an internlm2 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct InternLm2Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Biases on `wqkv` and `wo`.
    #[arg(default = true)]
    pub bias: bool,
    /// Context length of the checkpoint (dynamic NTK scaling needs it).
    #[arg(default = 32768, positive)]
    pub max_position_embeddings: usize,
    /// Number of key and value heads; absent: `num_attention_heads`.
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// `{"type": "linear" | "dynamic", "factor": ...}`, or absent.
    pub rope_scaling: Option<Value>,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `output`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl InternLm2Args {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        // The reference checks a non-empty scaling object for these keys and types.
        let scaling = self.rope_scaling.as_ref().and_then(Value::as_object);
        if let Some(scaling) = scaling.filter(|s| !s.is_empty()) {
            if !(scaling.contains_key("factor") && scaling.contains_key("type")) {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling` must have the keys `factor` and `type`",
                ));
            }
            let rope_type = scaling.get("type").and_then(Value::as_str);
            if !matches!(rope_type, Some("linear" | "dynamic")) {
                return Err(ArgsError::invalid(
                    &["rope_scaling"],
                    "`rope_scaling.type` must be \"linear\" or \"dynamic\"",
                ));
            }
        }
        self.rope().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }
}

/// Grouped-query attention through one fused projection, `[kv_heads, groups + 2, head_dim]`
/// per position: each key/value head's query heads, then its key, then its value.
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    wqkv: Linear,
    #[param]
    wo: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &InternLm2Args, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        Ok(Attention {
            wqkv: Linear::new(dim, (n_heads + 2 * n_kv_heads) * head_dim, args.bias)?,
            wo: Linear::new(n_heads * head_dim, dim, args.bias)?,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
            rope,
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let groups = self.n_heads / self.n_kv_heads;
        let shape = [b, l, self.n_kv_heads, groups + 2, self.head_dim];
        let qkv = self.wqkv.forward(x)?.reshape(&shape)?;
        let qkv = qkv.split_at_indices(&[groups, groups + 1], 3)?;
        let queries = split_heads(&qkv[0].reshape(&[b, l, self.n_heads, -1])?, self.n_heads)?;
        let keys = split_heads(
            &qkv[1].reshape(&[b, l, self.n_kv_heads, -1])?,
            self.n_kv_heads,
        )?;
        let values = split_heads(
            &qkv[2].reshape(&[b, l, self.n_kv_heads, -1])?,
            self.n_kv_heads,
        )?;
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.wo.forward(&output)
    }
}

/// llama's pre-norm layer around the fused attention.
type TransformerBlock = DecoderLayer<Attention, Mlp>;

/// The internlm2 model: embeddings, decoder layers, final norm, head (or tied embeddings),
/// its checkpoint names mapped onto the shared stack's.
#[mlx_model(
    model_type = "internlm2",
    args = InternLm2Args,
    drop = "*attention.rope.inv_freq",
    tied_head = "lm_head",
    rename("model.tok_embeddings" => "model.embed_tokens"),
    rename("model.layers.{n}.attention_norm" => "model.layers.{n}.input_layernorm"),
    rename("model.layers.{n}.ffn_norm" => "model.layers.{n}.post_attention_layernorm"),
    rename("model.layers.{n}.attention" => "model.layers.{n}.self_attn"),
    rename("model.layers.{n}.feed_forward.w1" => "model.layers.{n}.mlp.gate_proj"),
    rename("model.layers.{n}.feed_forward.w3" => "model.layers.{n}.mlp.up_proj"),
    rename("model.layers.{n}.feed_forward.w2" => "model.layers.{n}.mlp.down_proj"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[mlx_model(weights = "output")]
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &InternLm2Args) -> Result<Self> {
        let (dim, vocab, eps) = (args.hidden_size, args.vocab_size, args.rms_norm_eps);
        let rope = args.rope()?.build(args.head_dim())?;
        let layers = (0..args.num_hidden_layers)
            .map(|_| {
                let mlp = Mlp::new(dim, args.intermediate_size, false)?;
                DecoderLayer::new(Attention::new(args, rope.clone())?, mlp, dim, eps)
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
