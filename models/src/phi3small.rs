//! `phi3small`, after mlx-lm's `models/phi3small.py`: Phi-3-small, a pre-norm stack with
//! LayerNorms (biased) and biased projections; grouped-query attention through one fused
//! `query_key_value` laid out by key/value group (each group's queries, then its key, then its
//! value), RoPE of base `rope_embedding_base` with positions times `rope_position_scale`,
//! and μP scalings (embeddings times `mup_embedding_multiplier`, scores times
//! `mup_attn_multiplier / head_dim` with `mup_use_scaling`, logits divided by
//! `mup_width_multiplier`; a multiplier of 0 is not applied); a GeGELU MLP clipped at
//! `gegelu_limit`; the head is the embeddings, with the tokenizer's unused ids (100256 and up)
//! set to minus infinity.
//!
//! Every `dense_attention_every_n_layers`-th layer, from the first, attends block-sparsely
//! ([`mlx_models::nn::block_sparse`]: local blocks and per-head vertical strides). The
//! reference's multi-token forward lets those layers see later tokens of a query's own block
//! (its boolean causal mask is added to the scores), which its token-by-token decode does
//! not: this file follows the decode, and its full forward equals its own decode. Beyond
//! that, where the reference has no answer this file refuses or skips: unused ids past the
//! vocabulary are left alone (the reference writes out of bounds), no local block at all is
//! refused (every row of the reference's scores would be masked), and a quantized cache is
//! refused in a block-sparse layer.

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
use mlx_rs::ops::{arange, select};
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gegelu;
use mlx_models::nn::attention::attend;
use mlx_models::nn::block_sparse::BlockSparse;
use mlx_models::nn::blocks::{merge_heads, positions, rope_after};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, Block, Decoder, DecoderLayer, SelfAttention,
};

/// The first of the token ids the reference's head sets to minus infinity.
const FIRST_UNUSED_ID: usize = 100256;

/// The ids the reference's head sets to minus infinity (the tokenizer's unused ones).
fn unused_ids() -> impl Iterator<Item = usize> {
    [100256, 100258, 100259, 100260, 100264, 100265]
        .into_iter()
        .chain(100267..100352)
}

/// config.json of a phi3small checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Phi3SmallArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Every this many layers, from the first, attends block-sparsely.
    #[arg(positive)]
    pub dense_attention_every_n_layers: usize,
    /// Width of the GeGELU (the up projection is twice as wide).
    #[arg(positive)]
    pub ff_intermediate_size: usize,
    /// Where the GeGELU clips.
    pub gegelu_limit: f32,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Epsilon of the LayerNorms.
    #[arg(positive)]
    pub layer_norm_epsilon: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Number of key and value heads.
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Numerator of the scores' scale `mup_attn_multiplier / head_dim` (with `mup_use_scaling`).
    #[arg(default = 1.0)]
    pub mup_attn_multiplier: f64,
    /// Scale the scores by `mup_attn_multiplier / head_dim` rather than `1 / sqrt(head_dim)`.
    #[arg(default = true)]
    pub mup_use_scaling: bool,
    /// Factor on the embeddings (0: none).
    #[arg(default = 10.0)]
    pub mup_embedding_multiplier: f32,
    /// Divisor of the logits (0: none).
    #[arg(default = 8.0)]
    pub mup_width_multiplier: f32,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, default = 1000000.0, alias = "rope_parameters.rope_theta")]
    pub rope_embedding_base: f32,
    /// Factor on the positions RoPE rotates by.
    #[arg(default = 1.0)]
    pub rope_position_scale: f32,
    /// Positions per block of the block-sparse layers (32 or 64).
    #[arg(default = 64)]
    pub blocksparse_block_size: usize,
    /// Blocks a query sees up to its own, its own included.
    #[arg(positive, default = 16)]
    pub blocksparse_num_local_blocks: usize,
    /// The stride of the vertical blocks.
    #[arg(positive, default = 8)]
    pub blocksparse_vert_stride: usize,
}

impl Phi3SmallArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        if !matches!(self.blocksparse_block_size, 32 | 64) {
            return Err(ArgsError::invalid(
                &["blocksparse_block_size"],
                format!(
                    "unsupported block size {}; expected 32 or 64",
                    self.blocksparse_block_size
                ),
            ));
        }
        let too_big = |key: &str, v: usize| {
            (v > i32::MAX as usize)
                .then(|| ArgsError::invalid(&[key], format!("`{key}` {v} is absurd")))
        };
        let strides = [
            (
                "blocksparse_num_local_blocks",
                self.blocksparse_num_local_blocks,
            ),
            ("blocksparse_vert_stride", self.blocksparse_vert_stride),
        ];
        if let Some(e) = strides.into_iter().find_map(|(k, v)| too_big(k, v)) {
            return Err(e);
        }
        let mlp = self.ff_intermediate_size.checked_mul(2);
        mlx_models::nn::transformer::check_width(
            &["ff_intermediate_size"],
            "the up projection (2 * ff_intermediate_size)",
            mlp,
        )
    }

    /// Width of one head: `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The factor on the scores.
    pub fn scale(&self) -> f32 {
        let head_dim = self.head_dim() as f64;
        let norm_factor = match self.mup_use_scaling {
            true => head_dim / self.mup_attn_multiplier,
            false => head_dim.sqrt(),
        };
        (1.0 / norm_factor) as f32
    }

    /// The block pattern of layer `i`, if it is block-sparse.
    pub fn block_sparse(&self, i: usize) -> Option<BlockSparse> {
        i.is_multiple_of(self.dense_attention_every_n_layers)
            .then_some(BlockSparse {
                block_size: self.blocksparse_block_size as i32,
                num_local_blocks: self.blocksparse_num_local_blocks as i32,
                vert_stride: self.blocksparse_vert_stride as i32,
            })
    }
}

/// Grouped-query attention through the fused `query_key_value`, dense or block-sparse.
#[derive(Debug, ModuleParameters)]
pub struct Attention {
    /// `[(heads + 2 * kv_heads) * head_dim, hidden]`, by key/value group.
    #[param]
    pub query_key_value: Linear,
    /// `[hidden, hidden]`: the output projection.
    #[param]
    pub dense: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    scale: f32,
    rope: Rope,
    block_sparse: Option<BlockSparse>,
}

impl Attention {
    fn new(args: &Phi3SmallArgs, block_sparse: Option<BlockSparse>) -> Result<Self> {
        let (dim, head_dim) = (args.hidden_size as i32, args.head_dim() as i32);
        let (n_heads, n_kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads as i32,
        );
        let rope = Rope::plain(
            head_dim,
            args.rope_embedding_base,
            false,
            args.rope_position_scale,
        );
        Ok(Attention {
            query_key_value: Linear::new(dim, (n_heads + 2 * n_kv_heads) * head_dim, true)?,
            dense: Linear::new(dim, dim, true)?,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: args.scale(),
            rope,
            block_sparse,
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let per_kv = self.n_heads / self.n_kv_heads;
        let qkv = self.query_key_value.forward(x)?.reshape(&[
            b,
            l,
            self.n_kv_heads,
            per_kv + 2,
            self.head_dim,
        ])?;
        let heads = |t: Array| t.transpose_axes(&[0, 2, 1, 3]);
        let queries = qkv.try_index((Ellipsis, ..per_kv, ..))?;
        let queries = heads(queries.reshape(&[b, l, self.n_heads, self.head_dim])?)?;
        let keys = heads(qkv.try_index((Ellipsis, per_kv, ..))?)?;
        let values = heads(qkv.try_index((Ellipsis, per_kv + 1, ..))?)?;
        let queries = rope_after(&self.rope, &queries, cache.as_deref())?;
        let keys = rope_after(&self.rope, &keys, cache.as_deref())?;
        let output = match &self.block_sparse {
            None => attend(&queries, &keys, &values, cache, self.scale, mask, None)?,
            Some(pattern) => {
                let q_pos = positions(l, cache.as_deref())?;
                let (keys, values) = match cache {
                    None => (keys, values),
                    Some(Cache::Quantized(_)) => {
                        return Err(Exception::custom(
                            "phi3small: a block-sparse layer cannot use a quantized cache",
                        ))
                    }
                    Some(c) => c.update_and_fetch(&keys, &values)?,
                };
                pattern.attend(&queries, &keys, &values, self.scale, &q_pos, mask)?
            }
        };
        self.dense.forward(&merge_heads(&output)?)
    }

    /// The block-sparse scores are masked by hand.
    fn mask_as_array(&self) -> bool {
        self.block_sparse.is_some()
    }
}

/// The GeGELU feed-forward: `down_proj(gegelu(up_proj(x)))`, biased.
#[derive(Debug, ModuleParameters)]
pub struct Mlp {
    /// `[2 * ff_intermediate_size, hidden]`, gate and linear features interleaved.
    #[param]
    pub up_proj: Linear,
    /// `[hidden, ff_intermediate_size]`.
    #[param]
    pub down_proj: Linear,
    limit: f32,
}

impl Block for Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let h = gegelu(&self.up_proj.forward(x)?, self.limit)?;
        self.down_proj.forward(&h)
    }
}

type Layer = DecoderLayer<Attention, Mlp, LayerNorm>;

fn layer(args: &Phi3SmallArgs, i: usize) -> Result<Layer> {
    let (dim, hidden, eps) = (
        args.hidden_size as i32,
        args.ff_intermediate_size as i32,
        args.layer_norm_epsilon,
    );
    let mlp = Mlp {
        up_proj: Linear::new(dim, 2 * hidden, true)?,
        down_proj: Linear::new(hidden, dim, true)?,
        limit: args.gegelu_limit,
    };
    let attention = Attention::new(args, args.block_sparse(i))?;
    let norm = || LayerNorm::new(dim, eps, true);
    Ok(DecoderLayer::with_norms(attention, mlp, norm()?, norm()?))
}

/// The phi3small model: scaled embeddings, dense and block-sparse layers, final LayerNorm
/// (`final_layernorm`), and the embeddings as the head, the logits divided and the unused ids
/// masked.
#[mlx_model(
    model_type = "phi3small",
    args = Phi3SmallArgs,
    drop = "*.self_attn.rotary_emb.inv_freq",
    rename("model.final_layernorm" => "model.norm"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Layer, LayerNorm>,
    width_multiplier: Option<f32>,
    /// `[vocab]`: true at the unused ids within the vocabulary; `None` when there are none.
    unused: Option<Array>,
}

impl Architecture for Model {
    fn new(args: &Phi3SmallArgs) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|i| layer(args, i))
            .collect::<Result<_>>()?;
        let norm = LayerNorm::new(dim as i32, args.layer_norm_epsilon, true)?;
        let mut model = Decoder::with_norm(vocab, dim, layers, norm)?;
        if args.mup_embedding_multiplier != 0.0 {
            model = model.embedding_multiplier(args.mup_embedding_multiplier);
        }
        let unused = if vocab > FIRST_UNUSED_ID {
            let ids: Vec<i32> = unused_ids()
                .filter(|&id| id < vocab)
                .map(|id| id as i32)
                .collect();
            let ids = Array::from_slice(&ids, &[ids.len() as i32, 1]);
            let all = arange::<_, i32>(0, vocab as i32, None)?;
            Some(all.eq(&ids)?.any_axis(0, false)?)
        } else {
            None
        };
        Ok(Model {
            model,
            width_multiplier: Some(args.mup_width_multiplier).filter(|m| *m != 0.0),
            unused,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        let mut out = self.model.embed_tokens.as_linear(&h)?;
        if let Some(m) = self.width_multiplier {
            out = out.divide(Array::from_f32(m).as_dtype(out.dtype())?)?;
        }
        if let Some(unused) = &self.unused {
            let neg_inf = Array::from_f32(f32::NEG_INFINITY).as_dtype(out.dtype())?;
            out = select(unused, &neg_inf, &out)?;
        }
        Ok(out)
    }

    mlx_models::decoder_methods!(cache: model);
}
