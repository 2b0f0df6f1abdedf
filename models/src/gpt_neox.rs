//! `gpt_neox` (Pythia, GPT-NeoX-20B), after mlx-lm's `models/gpt_neox.py`: a fused
//! `query_key_value` laid out head by head, RoPE on `rotary_pct` of each head, a `4 * hidden`
//! tanh-gelu MLP, LayerNorms, attention and MLP in parallel from two norms of the same input
//! (or one after the other), and an untied head `embed_out`.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu_approx;
use mlx_models::nn::blocks::rope_and_attend;
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_layers, check_width, rotary_dims, Decoder, Layer};

/// config.json of a gpt_neox checkpoint. As in the reference, `intermediate_size`,
/// `hidden_act`, `attention_bias` and `num_key_value_heads` are not read: the MLP is
/// `4 * hidden_size` wide with the tanh gelu, every projection has a bias, and every head its
/// own keys and values. (The original models read `hidden_act`, which is the exact gelu for
/// Pythia; the reference, and so this file, always take the tanh approximation.)
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GptNeoxArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Context length; the reference requires it and sizes nothing by it.
    #[arg(positive)]
    pub max_position_embeddings: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of attention heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Epsilon of the layer norms.
    #[arg(positive)]
    pub layer_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Base frequency of the rotary position embedding.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rotary_emb_base: f32,
    /// Fraction of each head's features that RoPE rotates.
    /// transformers v5 writes it inside `rope_parameters`.
    #[arg(alias = "rope_parameters.partial_rotary_factor")]
    pub rotary_pct: f64,
    /// Whether attention and MLP run side by side on the layer's input (else one after the
    /// other).
    #[arg(default = true)]
    pub use_parallel_residual: bool,
}

impl GptNeoxArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (dim, heads) = (self.hidden_size, self.num_attention_heads);
        if !dim.is_multiple_of(heads) {
            let msg = format!(
                "`hidden_size` ({dim}) is not divisible by `num_attention_heads` ({heads})"
            );
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                msg,
            ));
        }
        check_width(
            &["hidden_size"],
            "the MLP (`4 * hidden_size`)",
            dim.checked_mul(4),
        )?;
        rotary_dims("rotary_pct", self.head_dim(), self.rotary_pct).map(drop)
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[derive(Debug, ModuleParameters)]
struct Attention {
    /// Per head, its query, key and value features in turn.
    #[param]
    query_key_value: Linear,
    #[param]
    dense: Linear,
    n_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &GptNeoxArgs, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        Ok(Attention {
            query_key_value: Linear::new(dim, 3 * dim, true)?,
            dense: Linear::new(dim, dim, true)?,
            n_heads: args.num_attention_heads as i32,
            scale: (args.head_dim() as f32).powf(-0.5),
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let qkv = self.query_key_value.forward(x)?;
        let qkv = qkv.reshape(&[b, l, self.n_heads, -1])?.split_equal(3, -1)?;
        let heads = |t: &Array| t.transpose_axes(&[0, 2, 1, 3]);
        let (queries, keys, values) = (heads(&qkv[0])?, heads(&qkv[1])?, heads(&qkv[2])?);
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.dense.forward(&output)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    dense_h_to_4h: Linear,
    #[param]
    dense_4h_to_h: Linear,
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let h = gelu_approx(&self.dense_h_to_4h.forward(x)?)?;
        self.dense_4h_to_h.forward(&h)
    }
}

#[derive(Debug, ModuleParameters)]
struct TransformerBlock {
    #[param]
    attention: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    input_layernorm: LayerNorm,
    #[param]
    post_attention_layernorm: LayerNorm,
    use_parallel_residual: bool,
}

impl TransformerBlock {
    fn new(args: &GptNeoxArgs, rope: Rope) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let norm = || LayerNorm::new(dim, args.layer_norm_eps, true);
        Ok(TransformerBlock {
            attention: Attention::new(args, rope)?,
            mlp: Mlp {
                dense_h_to_4h: Linear::new(dim, 4 * dim, true)?,
                dense_4h_to_h: Linear::new(4 * dim, dim, true)?,
            },
            input_layernorm: norm()?,
            post_attention_layernorm: norm()?,
            use_parallel_residual: args.use_parallel_residual,
        })
    }
}

impl Layer for TransformerBlock {
    /// Parallel: `x + attn(ln1(x)) + mlp(ln2(x))`; sequential: `h = x + attn(ln1(x))`,
    /// `h + mlp(ln2(h))`.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let attn = self
            .attention
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        if self.use_parallel_residual {
            let ffn = self
                .mlp
                .forward(&self.post_attention_layernorm.forward(x)?)?;
            attn.add(&ffn)?.add(x)
        } else {
            let h = x.add(&attn)?;
            h.add(
                self.mlp
                    .forward(&self.post_attention_layernorm.forward(&h)?)?,
            )
        }
    }
}

/// The gpt_neox model: embeddings, decoder layers, final LayerNorm, head. The reference's
/// sanitize drops the attention's buffers and maps the Hugging Face names (`gpt_neox.*`) to
/// its own (`model.*`, the layers `model.h`); both map onto the shared stack's names here.
/// (The reference's substring replacement would also read a `model.gpt_neox.` prefix, which no
/// checkpoint has; that one is not read.)
#[mlx_model(
    model_type = "gpt_neox",
    args = GptNeoxArgs,
    drop = ["*.attention.bias", "*.attention.masked_bias", "*.attention.rotary_emb.inv_freq"],
    rename("gpt_neox.layers" => "model.h"),
    rename("gpt_neox" => "model"),
    rename("model.h" => "model.layers"),
    rename("model.embed_in" => "model.embed_tokens"),
    rename("model.final_layer_norm" => "model.norm"),
    rename("model.embed_out" => "embed_out"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock, LayerNorm>,
    #[param]
    embed_out: Linear,
}

impl Architecture for Model {
    fn new(args: &GptNeoxArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let rope_dims = rotary_dims("rotary_pct", args.head_dim(), args.rotary_pct)?;
        let rope = Rope::plain(rope_dims, args.rotary_emb_base, false, 1.0);
        let layers = (0..args.num_hidden_layers).map(|_| TransformerBlock::new(args, rope.clone()));
        let norm = LayerNorm::new(dim as i32, args.layer_norm_eps, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            embed_out: Linear::new(dim as i32, vocab as i32, false)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, Some(&self.embed_out))
    }

    mlx_models::decoder_methods!(cache: model);
}
