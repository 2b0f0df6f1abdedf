//! `phi3`, after mlx-lm's `models/phi3.py`: fused `qkv_proj` and `gate_up_proj`, RoPE on
//! `partial_rotary_factor` of each head, scaled linearly or with LongRoPE (`longrope` / `su`).

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
use mlx_models::nn::rope::{Rope, RopeConfigError, RopeScaling};
use mlx_models::nn::transformer::{
    check_heads, lm_head, Decoder, DecoderArgs, DecoderLayer, FusedMlp, SelfAttention,
};

/// config.json of a phi3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct Phi3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Number of key and value heads (grouped-query attention when fewer than the query heads).
    #[arg(positive)]
    pub num_key_value_heads: Option<usize>,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(default = 10000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// `linear` (`factor`) or `longrope` / `su` (`long_factor`, `short_factor`); the
    /// reference requires `type` and `long_factor` and ignores other types.
    #[arg(alias = "rope_parameters")]
    pub rope_scaling: Option<Value>,
    /// Fraction of each head's features that RoPE rotates.
    #[arg(default = 1.0, positive)]
    pub partial_rotary_factor: f64,
    /// Context length of the checkpoint.
    #[arg(default = 131072, positive)]
    pub max_position_embeddings: usize,
    /// Context length before the long-context extension (LongRoPE switches factors past it).
    #[arg(default = 4096, positive)]
    pub original_max_position_embeddings: usize,
    /// Whether the head reuses the embedding matrix (the checkpoint then needs no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl Phi3Args {
    fn derive_and_check(&mut self) -> std::result::Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        // The fused gate/up projection is twice `intermediate_size` wide.
        if self.intermediate_size > mlx_models::args::MAX_SIZE / 2 {
            return Err(ArgsError::invalid(
                &["intermediate_size"],
                format!(
                    "`intermediate_size` {} is too large: the fused gate/up projection (twice it) exceeds MLX's size limit {}",
                    self.intermediate_size,
                    mlx_models::args::MAX_SIZE
                ),
            ));
        }
        self.rope().map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The rotated features of each head: `int(head_dim * partial_rotary_factor)`.
    pub fn rope_dim(&self) -> i32 {
        (self.head_dim() as f64 * self.partial_rotary_factor) as i32
    }

    /// The RoPE of every layer, on the first [`rope_dim`](Self::rope_dim) features of each head.
    pub fn rope(&self) -> std::result::Result<Rope, ArgsError> {
        let (rope_dim, head_dim) = (self.rope_dim(), self.head_dim());
        if rope_dim < 2 || rope_dim % 2 != 0 || rope_dim as usize > head_dim {
            let msg = format!("RoPE on {rope_dim} of {head_dim} features; expected an even number");
            return Err(ArgsError::invalid(&["partial_rotary_factor"], msg));
        }
        let invalid = |e: String| ArgsError::invalid(&["rope_scaling"], e);
        let scaling = self.rope_scaling().map_err(|e| invalid(e.to_string()))?;
        if let RopeScaling::LongRope { long_factor, .. } = &scaling {
            let n = long_factor.len();
            if n != 1 && n != rope_dim as usize / 2 {
                let msg = format!("`long_factor` has {n} entries for {rope_dim} rotated features");
                return Err(invalid(msg));
            }
        }
        let (base, traditional) = (self.rope_theta, self.rope_traditional);
        let max_positions = Some(self.max_position_embeddings as i32);
        Rope::new(rope_dim, base, traditional, &scaling, max_positions)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The RoPE scaling as the reference reads it: none for a missing or empty object and for
    /// types other than `linear`, `longrope` and `su` (the reference warns and drops those);
    /// LongRoPE takes `original_max_position_embeddings` from the top level of the config.
    pub fn rope_scaling(&self) -> std::result::Result<RopeScaling, RopeConfigError> {
        let scaling = self.rope_scaling.as_ref().and_then(Value::as_object);
        let Some(obj) = scaling.filter(|o| !o.is_empty()) else {
            return Ok(RopeScaling::Default);
        };
        // transformers v5's `rope_parameters` says `rope_type` (and carries `rope_theta`).
        let mut obj = obj.clone();
        if !obj.contains_key("type") {
            if let Some(t) = obj.get("rope_type").cloned() {
                obj.insert("type".into(), t);
            }
        }
        let plain = match obj.get("type").and_then(Value::as_str) {
            Some(t) => t == "default",
            None => obj.keys().all(|k| k == "rope_theta"),
        };
        if plain {
            return Ok(RopeScaling::Default);
        }
        if let Some(key) = ["long_factor", "type"]
            .into_iter()
            .find(|k| !obj.contains_key(*k))
        {
            let msg = format!("phi3's `rope_scaling` must contain `{key}`");
            return Err(RopeConfigError::Invalid(msg));
        }
        match obj.get("type").and_then(Value::as_str) {
            Some("longrope" | "su") => {
                let original = Value::from(self.original_max_position_embeddings);
                obj.insert("original_max_position_embeddings".into(), original);
                RopeScaling::from_json(&Value::Object(obj))
            }
            Some("linear") => RopeScaling::from_json(&Value::Object(obj)),
            _ => Ok(RopeScaling::Default),
        }
    }
}

#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    qkv_proj: Linear,
    #[param]
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &Phi3Args, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        Ok(Attention {
            qkv_proj: Linear::new(dim, (n_heads + 2 * n_kv_heads) * head_dim, false)?,
            o_proj: Linear::new(n_heads * head_dim, dim, false)?,
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
        let query_pos = self.n_heads * self.head_dim;
        let kv_pos = query_pos + self.n_kv_heads * self.head_dim;
        let qkv = self.qkv_proj.forward(x)?;
        let qkv = qkv.split_at_indices(&[query_pos, kv_pos], -1)?;
        let queries = split_heads(&qkv[0], self.n_heads)?;
        let keys = split_heads(&qkv[1], self.n_kv_heads)?;
        let values = split_heads(&qkv[2], self.n_kv_heads)?;
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.o_proj.forward(&output)
    }
}

/// llama's pre-norm layer around the fused attention and MLP.
type TransformerBlock = DecoderLayer<Attention, FusedMlp>;

fn layer(args: &Phi3Args, rope: Rope) -> Result<TransformerBlock> {
    let mlp = FusedMlp::new(args.hidden_size, args.intermediate_size)?;
    let self_attn = Attention::new(args, rope)?;
    DecoderLayer::new(self_attn, mlp, args.hidden_size, args.rms_norm_eps)
}

/// The phi3 model: embeddings, decoder layers, final norm, head (or tied embeddings).
#[mlx_model(model_type = "phi3", args = Phi3Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &Phi3Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?;
        let layers = (0..args.num_hidden_layers).map(|_| layer(args, rope.clone()));
        let layers = layers.collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
