//! `plamo` (Preferred Networks' PLaMo), after mlx-lm's `models/plamo.py`: a parallel layer
//! (one RMS norm; attention and a SwiGLU MLP both read it, and both join the residual stream)
//! around an attention whose `num_attention_heads / n_shared_head` key/value heads are shared
//! in turn: the reference tiles them `n_shared_head` times, so that query head `i` reads
//! key/value head `i mod kv_heads`. Here the query heads are regrouped instead, so that the
//! shared grouped-query attention (any cache, quantized included) computes the same. Plain
//! RoPE, an untied bias-free head. The checkpoint nests the layers one level deeper
//! (`model.layers.layers.N`), mapped onto the shared stack's names.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_heads, check_layers, Decoder, DecoderArgs, Layer, Mlp};

/// config.json of a plamo checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct PlamoArgs {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// How many query heads share one key/value head (it must divide `num_attention_heads`).
    #[arg(default = 8, positive)]
    pub n_shared_head: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Whether RoPE rotates consecutive pairs of features instead of the two halves.
    #[arg(default = false)]
    pub rope_traditional: bool,
}

impl PlamoArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, shared) = (self.num_attention_heads, self.n_shared_head);
        check_heads(self.hidden_size, heads, heads, None)?;
        // The reference tiles ceil(heads / shared) key/value heads `shared` times; its
        // attention runs only where that makes exactly `heads`.
        if !heads.is_multiple_of(shared) {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "n_shared_head"],
                format!(
                    "`num_attention_heads` ({heads}) is not a multiple of `n_shared_head` ({shared})"
                ),
            ));
        }
        Ok(())
    }

    /// The key/value heads, `num_attention_heads / n_shared_head`.
    pub fn num_key_value_heads(&self) -> usize {
        self.num_attention_heads / self.n_shared_head
    }
}

/// Attention whose key/value heads are shared in turn (query head `i` reads key/value head
/// `i mod n_kv_heads`).
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    q_proj: Linear,
    #[param]
    k_proj: Linear,
    #[param]
    v_proj: Linear,
    #[param]
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rotary_emb: Rope,
}

impl Attention {
    fn new(args: &PlamoArgs) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let (n_heads, n_kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads() as i32,
        );
        let head_dim = dim / n_heads;
        Ok(Attention {
            q_proj: Linear::new(dim, n_heads * head_dim, false)?,
            k_proj: Linear::new(dim, n_kv_heads * head_dim, false)?,
            v_proj: Linear::new(dim, n_kv_heads * head_dim, false)?,
            o_proj: Linear::new(n_heads * head_dim, dim, false)?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rotary_emb: Rope::plain(head_dim, args.rope_theta, args.rope_traditional, 1.0),
        })
    }

    /// `[B, heads, L, D]` with head `g * n_kv + k` moved to `k * shared + g` (and back with
    /// `inverse`): the heads that read key/value head `k` become neighbours, as grouped-query
    /// attention groups them.
    fn regroup(&self, x: &Array, inverse: bool) -> Result<Array> {
        let (b, l, d) = (x.dim(0), x.dim(2), x.dim(3));
        let shared = self.n_heads / self.n_kv_heads;
        let (outer, inner) = match inverse {
            false => (shared, self.n_kv_heads),
            true => (self.n_kv_heads, shared),
        };
        x.reshape(&[b, outer, inner, l, d])?
            .swap_axes(1, 2)?
            .reshape(&[b, self.n_heads, l, d])
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_kv_heads)?;
        let rope = &self.rotary_emb;
        let queries = rope_after(rope, &queries, cache.as_deref())?;
        let keys = rope_after(rope, &keys, cache.as_deref())?;
        let queries = self.regroup(&queries, false)?;
        let output = attend(&queries, &keys, &values, cache, self.scale, mask, None)?;
        self.o_proj
            .forward(&merge_heads(&self.regroup(&output, true)?)?)
    }
}

/// The parallel layer: `x + attn(norm(x)) + mlp(norm(x))`.
#[derive(Debug, ModuleParameters)]
struct PlamoDecoderLayer {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    norm: RmsNorm,
}

impl PlamoDecoderLayer {
    fn new(args: &PlamoArgs) -> Result<Self> {
        let dim = args.hidden_size;
        Ok(PlamoDecoderLayer {
            self_attn: Attention::new(args)?,
            mlp: Mlp::new(dim, args.intermediate_size, false)?,
            norm: RmsNorm::new(dim as i32, args.rms_norm_eps)?,
        })
    }
}

impl Layer for PlamoDecoderLayer {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = self.norm.forward(x)?;
        let attn = self.self_attn.forward(&h, mask, cache)?;
        let mlp = self.mlp.forward(&h)?;
        x.add(&attn)?.add(&mlp)
    }
}

/// The plamo model: embeddings, parallel decoder layers, final norm, untied head.
#[mlx_model(
    model_type = "plamo",
    args = PlamoArgs,
    rename("model.layers.layers.{n}" => "model.layers.{n}"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<PlamoDecoderLayer>,
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &PlamoArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|_| PlamoDecoderLayer::new(args))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: Some(Linear::new(dim as i32, vocab as i32, false)?),
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
