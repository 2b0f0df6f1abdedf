//! `openelm` (Apple's OpenELM), after mlx-lm's `models/openelm.py`: a pre-norm decoder whose
//! layers differ in width ("layer-wise scaling"): each layer has its own query and key/value
//! head counts and its own MLP width (`ffn_multipliers[i] * model_dim`, rounded to a multiple of
//! `ffn_dim_divisor` as the reference's `make_divisible` does). Queries, keys and values come
//! from one fused projection, split by heads; per-head RMS norms on queries and keys
//! (`normalize_qk_projections`), plain RoPE of base `rope_freq_constant`, and a SwiGLU MLP
//! whose gate and input are the two halves of `proj_1`. The embeddings are the head unless
//! `share_input_output_layers` is off. Its checkpoint names (`transformer.token_embeddings`,
//! `transformer.layers.N` with `attn_norm`, `attn.qkv_proj` / `out_proj` / `q_norm` /
//! `k_norm`, `ffn_norm`, `ffn.proj_1` / `proj_2`, `transformer.norm`) are mapped onto the
//! shared stack's.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::split_at_indices;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::swiglu;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_layers, check_width, lm_head, Block, Decoder, DecoderLayer, SelfAttention,
};

/// config.json of an openelm checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct OpenElmArgs {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of one attention head (in every layer).
    #[arg(positive)]
    pub head_dim: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_transformer_layers: usize,
    /// Width of the residual stream.
    #[arg(positive)]
    pub model_dim: usize,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Each MLP's width is rounded to a multiple of this.
    #[arg(positive)]
    pub ffn_dim_divisor: usize,
    /// Query heads, per layer.
    pub num_query_heads: Vec<usize>,
    /// Key/value heads, per layer (each dividing that layer's query heads).
    pub num_kv_heads: Vec<usize>,
    /// MLP width over `model_dim`, per layer.
    pub ffn_multipliers: Vec<f64>,
    /// Read but not used: the reference's MLP is always gated.
    #[arg(default = true)]
    pub ffn_with_glu: bool,
    /// Per-head RMS norms on the queries and keys.
    #[arg(default = true)]
    pub normalize_qk_projections: bool,
    /// Whether the head is the embedding matrix (else the checkpoint has an `lm_head`).
    #[arg(default = true)]
    pub share_input_output_layers: bool,
    /// Epsilon of every RMS norm.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(default = 10000.0, positive, alias = "rope_parameters.rope_theta")]
    pub rope_freq_constant: f32,
}

impl OpenElmArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let n = self.num_transformer_layers;
        check_layers("num_transformer_layers", n)?;
        let per_layer = |key: &str, len: usize| match len == n {
            true => Ok(()),
            false => Err(ArgsError::invalid(
                &[key, "num_transformer_layers"],
                format!("`{key}` has {len} entries for {n} layers"),
            )),
        };
        per_layer("num_query_heads", self.num_query_heads.len())?;
        per_layer("num_kv_heads", self.num_kv_heads.len())?;
        per_layer("ffn_multipliers", self.ffn_multipliers.len())?;
        let heads = ["num_query_heads", "num_kv_heads"];
        for (i, (&q, &kv)) in self
            .num_query_heads
            .iter()
            .zip(&self.num_kv_heads)
            .enumerate()
        {
            if q == 0 || kv == 0 || !q.is_multiple_of(kv) {
                return Err(ArgsError::invalid(
                    &heads,
                    format!(
                        "layer {i} has {q} query heads and {kv} key/value heads; expected a \
                         positive multiple of a positive count"
                    ),
                ));
            }
            let fused = kv.checked_mul(2).and_then(|w| w.checked_add(q));
            let what =
                format!("layer {i}'s fused projection ((query + 2 key/value heads) * head_dim)");
            check_width(
                &[heads[0], heads[1], "head_dim"],
                &what,
                fused.and_then(|w| w.checked_mul(self.head_dim)),
            )?;
        }
        check_width(&["model_dim"], "`model_dim`", Some(self.model_dim))?;
        for (i, &m) in self.ffn_multipliers.iter().enumerate() {
            if !(m.is_finite() && m > 0.0) {
                return Err(ArgsError::invalid(
                    &["ffn_multipliers"],
                    format!("`ffn_multipliers` has {m} for layer {i}; expected a positive number"),
                ));
            }
            let what = format!("layer {i}'s MLP (2 * ffn_multipliers[{i}] * model_dim)");
            let width = self.intermediate_size(i).checked_mul(2);
            check_width(&["ffn_multipliers", "model_dim"], &what, width)?;
        }
        Ok(())
    }

    /// The MLP width of layer `i` (below `num_transformer_layers`): `ffn_multipliers[i] *
    /// model_dim` to the nearest multiple of `ffn_dim_divisor` (at least one), one more multiple
    /// when that loses over 10%.
    pub fn intermediate_size(&self, i: usize) -> usize {
        let (v, d) = (
            self.ffn_multipliers[i] * self.model_dim as f64,
            self.ffn_dim_divisor,
        );
        // Saturates for absurd products, which the width check then refuses.
        let rounded = (v + d as f64 / 2.0) as usize / d * d;
        let width = rounded.max(d);
        match (width as f64) < 0.9 * v {
            true => width.saturating_add(d),
            false => width,
        }
    }
}

/// Attention through one fused projection split by heads: queries, keys, values.
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    qkv_proj: Linear,
    #[param]
    out_proj: Linear,
    #[param]
    q_norm: Option<RmsNorm>,
    #[param]
    k_norm: Option<RmsNorm>,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &OpenElmArgs, layer: usize) -> Result<Self> {
        let (dim, head_dim) = (args.model_dim as i32, args.head_dim as i32);
        let n_heads = args.num_query_heads[layer] as i32;
        let n_kv_heads = args.num_kv_heads[layer] as i32;
        let norm = || {
            let eps = args.rms_norm_eps;
            args.normalize_qk_projections
                .then(|| RmsNorm::new(head_dim, eps))
                .transpose()
        };
        Ok(Attention {
            qkv_proj: Linear::new(dim, (n_heads + 2 * n_kv_heads) * head_dim, false)?,
            out_proj: Linear::new(n_heads * head_dim, dim, false)?,
            q_norm: norm()?,
            k_norm: norm()?,
            n_heads,
            n_kv_heads,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::plain(head_dim, args.rope_freq_constant, false, 1.0),
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (q, kv) = (self.n_heads, self.n_kv_heads);
        let qkv = split_heads(&self.qkv_proj.forward(x)?, q + 2 * kv)?;
        let parts = split_at_indices(&qkv, &[q, q + kv], 1)?;
        let norm = |x: &Array, norm: &Option<RmsNorm>| match norm {
            Some(n) => n.forward(x),
            None => Ok(x.clone()),
        };
        let queries = norm(&parts[0], &self.q_norm)?;
        let keys = norm(&parts[1], &self.k_norm)?;
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &parts[2], rope, cache, scale, mask)?;
        self.out_proj.forward(&output)
    }
}

/// The SwiGLU MLP with the gate and its input fused in `proj_1` (the gate's half first).
#[derive(Debug, ModuleParameters)]
struct Ffn {
    #[param]
    proj_1: Linear,
    #[param]
    proj_2: Linear,
}

impl Ffn {
    fn new(args: &OpenElmArgs, layer: usize) -> Result<Self> {
        let (dim, hidden) = (args.model_dim as i32, args.intermediate_size(layer) as i32);
        Ok(Ffn {
            proj_1: Linear::new(dim, 2 * hidden, false)?,
            proj_2: Linear::new(hidden, dim, false)?,
        })
    }
}

impl Block for Ffn {
    fn forward(&self, x: &Array) -> Result<Array> {
        let halves = self.proj_1.forward(x)?.split_equal(2, -1)?;
        self.proj_2.forward(&swiglu(&halves[0], &halves[1])?)
    }
}

/// The openelm model: embeddings, layers of their own widths, final norm, head (or the tied
/// embeddings), its checkpoint names mapped onto the shared stack's.
#[mlx_model(
    model_type = "openelm",
    args = OpenElmArgs,
    tied_head = "lm_head",
    rename("transformer.token_embeddings" => "model.embed_tokens"),
    rename("transformer.norm" => "model.norm"),
    rename("transformer.layers.{n}.attn_norm" => "model.layers.{n}.input_layernorm"),
    rename("transformer.layers.{n}.ffn_norm" => "model.layers.{n}.post_attention_layernorm"),
    rename("transformer.layers.{n}.attn" => "model.layers.{n}.self_attn"),
    rename("transformer.layers.{n}.ffn" => "model.layers.{n}.mlp"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<DecoderLayer<Attention, Ffn>>,
    /// `None` with `share_input_output_layers`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &OpenElmArgs) -> Result<Self> {
        let (dim, vocab, eps) = (args.model_dim, args.vocab_size, args.rms_norm_eps);
        let layers = (0..args.num_transformer_layers)
            .map(|i| DecoderLayer::new(Attention::new(args, i)?, Ffn::new(args, i)?, dim, eps))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, eps, layers)?,
            lm_head: lm_head(args.share_input_output_layers, dim, vocab)?,
        })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
