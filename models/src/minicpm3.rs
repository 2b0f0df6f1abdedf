//! `minicpm3`, after mlx-lm's `models/minicpm3.py`: DeepSeek-V2's latent attention in its
//! plain form (low-rank queries, the normed latent expanded through `kv_b_proj` into per-head
//! keys and values of `hidden_size / num_attention_heads` features, the shared rotated key
//! repeated over the heads, softmax scale `(qk_nope_head_dim + qk_rope_head_dim)^-0.5`),
//! su-scaled RoPE (LongRoPE) on the rotated parts, embeddings times `scale_emb`, both residual
//! branches times `scale_depth / sqrt(num_hidden_layers)`, and an untied head fed the hidden
//! states divided by `hidden_size / dim_model_base`. As in the reference, a tied head (the
//! embeddings) gets them undivided, and there is no sanitize: Hugging Face checkpoints are
//! already in this layout.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs, MAX_SIZE};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::mla::{check_mla_heads, ExpandedLatentAttention, MlaConfig};
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::{Rope, RopeScaling};
use mlx_models::nn::transformer::{check_heads, lm_head, Decoder, DecoderArgs, DecoderLayer, Mlp};

/// config.json of a minicpm3 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct MiniCpm3Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// The width the head's input is scaled to: it is divided by `hidden_size / dim_model_base`.
    #[arg(positive)]
    pub dim_model_base: usize,
    /// Read and unused (every head has its own keys and values, from the latent).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Rank of the queries' low-rank pair.
    #[arg(positive)]
    pub q_lora_rank: usize,
    /// Features of each query/key head without position.
    #[arg(positive)]
    pub qk_nope_head_dim: usize,
    /// Rotated features of each query head and of the shared key.
    #[arg(positive)]
    pub qk_rope_head_dim: usize,
    /// Width of the compressed key/value latent.
    #[arg(positive)]
    pub kv_lora_rank: usize,
    /// Numerator of the residual branches' factor `scale_depth / sqrt(num_hidden_layers)`.
    pub scale_depth: f64,
    /// Factor on the embeddings.
    pub scale_emb: f32,
    /// Context length of the checkpoint (with `original_max_position_embeddings`, it sets
    /// RoPE's magnitude scale).
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, default = 1000000.0, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Read and unused: the reference's su-scaled RoPE always rotates the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// The su-scaled RoPE's settings: `long_factor` (one per rotated pair, or one for all;
    /// default 1) and `original_max_position_embeddings` (default 4096); required, as in the
    /// reference, which reads no type and never uses `short_factor`.
    pub rope_scaling: Option<Value>,
    /// Whether the head is the embedding matrix (the checkpoint then has no `lm_head`).
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl MiniCpm3Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        // The value heads split `hidden_size`; there are as many keys and values as queries.
        check_heads(self.hidden_size, heads, heads, None)?;
        check_mla_heads(heads, self.qk_nope_head_dim, self.qk_rope_head_dim)?;
        let kv_width = (self.qk_nope_head_dim + self.v_head_dim()).checked_mul(heads);
        if kv_width.is_none_or(|w| w > MAX_SIZE) {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "qk_nope_head_dim", "hidden_size"],
                "`kv_b_proj` (`num_attention_heads` keys of `qk_nope_head_dim` and values of \
                 `hidden_size / num_attention_heads`) exceeds MLX's size limit",
            ));
        }
        if self.kv_lora_rank + self.qk_rope_head_dim > MAX_SIZE {
            return Err(ArgsError::invalid(
                &["kv_lora_rank", "qk_rope_head_dim"],
                "`kv_lora_rank + qk_rope_head_dim` exceeds MLX's size limit",
            ));
        }
        self.rope().map(drop)
    }

    /// Features of each value head: `hidden_size / num_attention_heads`.
    pub fn v_head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The divisor of the untied head's input: `hidden_size / dim_model_base`.
    pub fn head_divisor(&self) -> f32 {
        (self.hidden_size as f64 / self.dim_model_base as f64) as f32
    }

    /// The factor on both residual branches: `scale_depth / sqrt(num_hidden_layers)`.
    pub fn residual_multiplier(&self) -> f32 {
        (self.scale_depth / (self.num_hidden_layers as f64).sqrt()) as f32
    }

    /// The su-scaled RoPE the reference builds from `rope_scaling`, whatever its type: the
    /// frequencies times `long_factor` (a single factor, or a number, serves every pair), the
    /// rotated features scaled by `sqrt(1 + ln(max / original) / ln(original))` when
    /// `max_position_embeddings` exceeds the original context.
    pub fn rope(&self) -> std::result::Result<Rope, ArgsError> {
        let bad = |why: String| ArgsError::invalid(&["rope_scaling"], why);
        let Some(Value::Object(given)) = &self.rope_scaling else {
            return Err(bad(
                "minicpm3 needs `rope_scaling` as an object (its RoPE is su-scaled)".into(),
            ));
        };
        let pairs = self.qk_rope_head_dim / 2;
        let original = match given.get("original_max_position_embeddings") {
            None | Some(Value::Null) => Value::from(4096),
            Some(v) => v.clone(),
        };
        let long_factor = match given.get("long_factor") {
            None | Some(Value::Null) => Value::from(1.0),
            Some(v) => v.clone(),
        };
        // Read through the shared LongRoPE parser (positive finite factors and length);
        // `short_factor` is never used, so it is not read.
        let scaling = serde_json::json!({
            "type": "longrope",
            "original_max_position_embeddings": original,
            "long_factor": long_factor,
            "short_factor": 1.0,
        });
        let scaling = RopeScaling::from_json(&scaling).map_err(|e| bad(e.to_string()))?;
        let RopeScaling::LongRope {
            original_max_position_embeddings: original,
            short_factor,
            long_factor,
        } = scaling
        else {
            return Err(bad("`rope_scaling` did not read as LongRoPE".into()));
        };
        let long_factor = match long_factor.as_slice() {
            [one] => vec![*one; pairs],
            all if all.len() == pairs => all.to_vec(),
            all => {
                return Err(bad(format!(
                    "`long_factor` has {} entries for {pairs} rotated pairs \
                     (`qk_rope_head_dim` {}); expected {pairs} or one",
                    all.len(),
                    self.qk_rope_head_dim
                )))
            }
        };
        let max_positions = self.max_position_embeddings;
        if max_positions as f64 > original && original <= 1.0 {
            return Err(bad(format!(
                "`original_max_position_embeddings` {original} must be above 1 when the \
                 context ({max_positions}) extends it"
            )));
        }
        let scaling = RopeScaling::LongRope {
            original_max_position_embeddings: original,
            short_factor,
            long_factor,
        };
        let (dims, max_positions) = (self.qk_rope_head_dim as i32, max_positions as i32);
        Rope::new(dims, self.rope_theta, false, &scaling, Some(max_positions))
            .map_err(|e| bad(e.to_string()))
    }
}

type Layer = DecoderLayer<ExpandedLatentAttention, Mlp>;

fn layer(args: &MiniCpm3Args, rope: Rope) -> Result<Layer> {
    let (dim, eps) = (args.hidden_size, args.rms_norm_eps);
    let config = MlaConfig {
        hidden_size: dim as i32,
        n_heads: args.num_attention_heads as i32,
        q_lora_rank: Some(args.q_lora_rank as i32),
        kv_lora_rank: args.kv_lora_rank as i32,
        qk_nope_head_dim: args.qk_nope_head_dim as i32,
        qk_rope_head_dim: args.qk_rope_head_dim as i32,
        v_head_dim: args.v_head_dim() as i32,
        bias: args.attention_bias,
        // `nn.RMSNorm`'s default: the reference gives the latent norms no epsilon.
        norm_eps: 1e-5,
        scale: ((args.qk_nope_head_dim + args.qk_rope_head_dim) as f64).powf(-0.5) as f32,
    };
    let attention = ExpandedLatentAttention::new(config, rope)?;
    let mlp = Mlp::new(dim, args.intermediate_size, false)?;
    let layer = DecoderLayer::new(attention, mlp, dim, eps)?;
    Ok(layer.residual_multiplier(args.residual_multiplier()))
}

/// The minicpm3 model: scaled embeddings, decoder layers with scaled residuals, final norm,
/// and the head (its input divided by `hidden_size / dim_model_base`) or the tied embeddings.
#[mlx_model(model_type = "minicpm3", args = MiniCpm3Args)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    head_divisor: f32,
}

impl Architecture for Model {
    fn new(args: &MiniCpm3Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope = args.rope()?;
        let layers = (0..args.num_hidden_layers).map(|_| layer(args, rope.clone()));
        let model = Decoder::new(
            vocab,
            dim,
            args.rms_norm_eps,
            layers.collect::<Result<_>>()?,
        )?;
        Ok(Model {
            model: model.embedding_multiplier(args.scale_emb),
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
            head_divisor: args.head_divisor(),
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        match &self.lm_head {
            Some(head) => {
                let divisor = Array::from_f32(self.head_divisor).as_dtype(h.dtype())?;
                head.forward(&h.divide(&divisor)?)
            }
            None => self.model.embed_tokens.as_linear(&h),
        }
    }

    mlx_models::decoder_methods!(cache: model);
}
