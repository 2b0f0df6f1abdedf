//! `plamo2` (PLaMo 2), after mlx-lm's `models/plamo2.py`: a hybrid of Mamba2-style mixers and
//! attention. Layer `i` attends when `i % mamba_step == mamba_step / 2` (with no more layers
//! than `mamba_step / 2`: only the last one; with `mamba_enabled` false: all), and otherwise
//! runs a mixer whose input projection interleaves gate and input per head, whose causal conv
//! has its cached state, whose `B`, `C` and low-rank time step are RMS-normed with weights
//! (`B_norm_weight`, ...), scanned by the shared SSD scan with one group and the reference's
//! time-step limits `(0.001, 100)`, and gated by SwiGLU. Attention has a fused `qkv_proj`,
//! RMS-normed queries and keys times per-head weights, and RoPE. Every mixer and MLP output
//! is normed again (sandwich norms with weight offsets 1, 1/5, 1 and 1/5^1.5).
//!
//! As in the reference, `attention_window_size`, `full_attention_idx` and `mamba_chunk_size`
//! are read and not applied (attention is full, the scan's chunk is 256). Beyond it: a config
//! without Mamba layers, or with no more layers than `mamba_step / 2` (the reference looks up
//! a mask at layer `mamba_step / 2` and fails), runs.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::{IndexOp, NewAxis};
use mlx_rs::ops::{log, split_at_indices, zeros_dtype};
use mlx_rs::{fast, Array, Dtype};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::{silu, swiglu};
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::either::Either;
use mlx_models::nn::hybrid::{self, HybridMasks, LayerKind};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::{Embedding, Linear};
use mlx_models::nn::rope::Rope;
use mlx_models::nn::ssm::{
    conv1d_weights_to_mlx, layer_arrays, ssd, DepthwiseConv1d, SsdParams, TimeStepLimit,
};
use mlx_models::nn::transformer::{check_heads, check_layers, check_width, lm_head, FusedMlp};
use mlx_models::weights::Weights;

/// config.json of a plamo2 checkpoint; the defaults are the reference's.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct Plamo2Args {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub hidden_size: usize,
    /// Number of layers.
    #[arg(default = 32, positive)]
    pub num_hidden_layers: usize,
    /// Epsilon of the RMS norms.
    #[arg(default = 1e-6, positive)]
    pub rms_norm_eps: f32,
    /// Whether the head is the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
    /// Query heads.
    #[arg(default = 32, positive)]
    pub num_attention_heads: usize,
    /// Key and value heads.
    #[arg(default = 4, positive)]
    pub num_key_value_heads: usize,
    /// Features per attention head and per Mamba head.
    #[arg(default = 128, positive)]
    pub hidden_size_per_head: usize,
    /// Context length of the checkpoint (sizes nothing).
    #[arg(default = 2048, positive)]
    pub max_position_embeddings: usize,
    /// Read, not applied (the reference's attention is full).
    #[arg(default = 2048, positive)]
    pub attention_window_size: usize,
    /// Read, not applied.
    pub full_attention_idx: Option<Vec<usize>>,
    /// Width of the state of each Mamba head.
    #[arg(default = 64, positive)]
    pub mamba_d_state: usize,
    /// Taps of the Mamba convolution.
    #[arg(default = 4, positive)]
    pub mamba_d_conv: usize,
    /// Heads of the Mamba mixer.
    #[arg(default = 64, positive)]
    pub mamba_num_heads: usize,
    /// One layer in `mamba_step` attends.
    #[arg(default = 2, positive)]
    pub mamba_step: usize,
    /// Read, not applied (the scan's chunk is 256, as the reference's).
    #[arg(default = 256, positive)]
    pub mamba_chunk_size: usize,
    /// Whether any layer is a Mamba mixer.
    #[arg(default = true)]
    pub mamba_enabled: bool,
    /// Hidden width of the MLP.
    #[arg(default = 13312, positive)]
    pub intermediate_size: usize,
    /// Number of tokens in the vocabulary.
    #[arg(default = 32000, positive)]
    pub vocab_size: usize,
}

impl Plamo2Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let hd = self.hidden_size_per_head;
        check_heads(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            Some(hd),
        )?;
        if self.mamba_enabled && self.mamba_step < 2 {
            let msg = format!("`mamba_step` ({}) must be at least 2", self.mamba_step);
            return Err(ArgsError::invalid(&["mamba_step"], msg));
        }
        let keys = ["mamba_num_heads", "hidden_size_per_head"];
        let inner = self.mamba_num_heads.checked_mul(hd);
        check_width(
            &keys,
            "the Mamba input projection (`2 * mamba_num_heads * hidden_size_per_head`)",
            inner.and_then(|i| i.checked_mul(2)),
        )?;
        check_width(
            &["mamba_num_heads", "hidden_size_per_head", "mamba_d_state"],
            "the Mamba state (`mamba_num_heads * hidden_size_per_head * mamba_d_state`)",
            inner.and_then(|i| i.checked_mul(self.mamba_d_state)),
        )?;
        check_width(
            &["mamba_d_state"],
            "the B, C and time-step projection",
            self.mamba_d_state
                .checked_mul(2)
                .and_then(|s| s.checked_add(self.dt_dim())),
        )?;
        check_width(
            &["intermediate_size"],
            "the fused MLP (`2 * intermediate_size`)",
            self.intermediate_size.checked_mul(2),
        )
    }

    /// Width of the low-rank time step, `max(64, hidden_size / 16)`.
    pub fn dt_dim(&self) -> usize {
        (self.hidden_size / 16).max(64)
    }

    /// Whether layer `i` runs a Mamba mixer (else attention), by the reference's rule.
    pub fn is_mamba(&self, i: usize) -> bool {
        let (step, layers) = (self.mamba_step, self.num_hidden_layers);
        if !self.mamba_enabled {
            false
        } else if layers <= step / 2 {
            i + 1 != layers
        } else {
            i % step != step / 2
        }
    }
}

/// `rms_norm(x) * (weight + offset)`, the weights stored centred on `-offset`.
#[derive(Debug, ModuleParameters)]
struct RmsNorm {
    #[param]
    weight: Param<Array>,
    eps: f32,
    offset: f32,
}

impl RmsNorm {
    fn new(dims: i32, eps: f32, offset: f32) -> Result<Self> {
        let weight = Param::new(zeros_dtype(&[dims], Dtype::Float32)?);
        Ok(RmsNorm {
            weight,
            eps,
            offset,
        })
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let offset = Array::from_f32(self.offset).as_dtype(self.weight.dtype())?;
        fast::rms_norm(x, Some(&self.weight.add(&offset)?), self.eps)
    }
}

#[allow(non_snake_case)]
#[derive(Debug, ModuleParameters)]
struct Mamba {
    #[param]
    in_proj: Linear,
    #[param]
    conv1d: DepthwiseConv1d,
    #[param]
    bcdt_proj: Linear,
    #[param]
    dt_proj: Linear,
    #[param]
    dt_bias: Param<Array>,
    #[param]
    A_log: Param<Array>,
    #[param]
    D: Param<Array>,
    #[param]
    dt_norm_weight: Param<Array>,
    #[param]
    B_norm_weight: Param<Array>,
    #[param]
    C_norm_weight: Param<Array>,
    #[param]
    out_proj: Linear,
    heads: i32,
    head_dim: i32,
    state: i32,
    eps: f32,
}

impl Mamba {
    fn new(args: &Plamo2Args) -> Result<Self> {
        let (dim, heads, hd) = (
            args.hidden_size as i32,
            args.mamba_num_heads as i32,
            args.hidden_size_per_head as i32,
        );
        let (inner, n, dt_dim) = (heads * hd, args.mamba_d_state as i32, args.dt_dim() as i32);
        let ones = |k: i32| Array::ones::<f32>(&[k]).map(Param::new);
        Ok(Mamba {
            in_proj: Linear::new(dim, 2 * inner, false)?,
            conv1d: DepthwiseConv1d::new(inner, args.mamba_d_conv as i32, false)?,
            bcdt_proj: Linear::new(inner, dt_dim + 2 * n, false)?,
            dt_proj: Linear::new(dt_dim, heads, false)?,
            dt_bias: Param::new(zeros_dtype(&[heads], Dtype::Float32)?),
            A_log: Param::new(log(
                Array::from_iter(1..=heads, &[heads]).as_dtype(Dtype::Float32)?
            )?),
            D: ones(heads)?,
            dt_norm_weight: ones(dt_dim)?,
            B_norm_weight: ones(n)?,
            C_norm_weight: ones(n)?,
            out_proj: Linear::new(inner, dim, false)?,
            heads,
            head_dim: hd,
            state: n,
            eps: args.rms_norm_eps,
        })
    }

    fn forward(
        &self,
        x: &Array,
        mask: Option<&Array>,
        mut cache: Option<&mut ArraysCache>,
    ) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let (h, hd, n) = (self.heads, self.head_dim, self.state);
        // Per head: the gate's `head_dim` features, then the input's.
        let zx = self.in_proj.forward(x)?.reshape(&[b, l, h, 2 * hd])?;
        let parts = split_at_indices(&zx, &[hd], -1)?;
        let (z, xs) = (&parts[0], parts[1].reshape(&[b, l, h * hd])?);
        let xs = silu(&self.conv1d.forward(&xs, mask, cache.as_deref_mut(), 0)?)?;
        let parts = split_at_indices(&self.bcdt_proj.forward(&xs)?, &[n, 2 * n], -1)?;
        let norm = |t: &Array, w: &Array| fast::rms_norm(t, Some(w), self.eps);
        let bs = norm(&parts[0], &self.B_norm_weight)?.reshape(&[b, l, 1, n])?;
        let cs = norm(&parts[1], &self.C_norm_weight)?.reshape(&[b, l, 1, n])?;
        let dt = self
            .dt_proj
            .forward(&norm(&parts[2], &self.dt_norm_weight)?)?;
        let params = SsdParams {
            a_log: &self.A_log,
            d: &self.D,
            dt_bias: &self.dt_bias,
            time_step_limit: TimeStepLimit(0.001, 100.0),
        };
        let state = cache.as_ref().and_then(|c| c.get(1));
        let lengths = cache.as_ref().and_then(|c| c.lengths.as_ref());
        let xs = xs.reshape(&[b, l, h, hd])?;
        let (y, state) = ssd(&xs, &bs, &cs, &dt, &params, state, mask, lengths)?;
        if let Some(c) = cache {
            c.set(1, state);
            c.advance(l)?;
        }
        let y = swiglu(&z.flatten(-2, -1)?, &y.reshape(&[b, l, h * hd])?)?;
        self.out_proj.forward(&y)
    }
}

#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    qkv_proj: Linear,
    #[param]
    o_proj: Linear,
    /// `[heads, head_dim]`.
    #[param]
    q_weight: Param<Array>,
    /// `[kv_heads, head_dim]`.
    #[param]
    k_weight: Param<Array>,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    rope: Rope,
}

impl Attention {
    fn new(args: &Plamo2Args) -> Result<Self> {
        let (dim, hd) = (args.hidden_size as i32, args.hidden_size_per_head as i32);
        let (heads, kv_heads) = (
            args.num_attention_heads as i32,
            args.num_key_value_heads as i32,
        );
        Ok(Attention {
            qkv_proj: Linear::new(dim, (heads + 2 * kv_heads) * hd, false)?,
            o_proj: Linear::new(heads * hd, dim, false)?,
            q_weight: Param::new(Array::ones::<f32>(&[heads, hd])?),
            k_weight: Param::new(Array::ones::<f32>(&[kv_heads, hd])?),
            heads,
            kv_heads,
            head_dim: hd,
            rope: Rope::plain(hd, 10000.0, false, 1.0),
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let (q_dim, kv_dim) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let parts = split_at_indices(&self.qkv_proj.forward(x)?, &[q_dim, q_dim + kv_dim], -1)?;
        let norm = |t: &Array, heads: i32, w: &Array| {
            let t = fast::rms_norm(&split_heads(t, heads)?, None::<&Array>, 1e-6)?;
            t.multiply(w.index((.., NewAxis, ..)))
        };
        let queries = norm(&parts[0], self.heads, &self.q_weight)?;
        let keys = norm(&parts[1], self.kv_heads, &self.k_weight)?;
        let values = split_heads(&parts[2], self.kv_heads)?;
        let scale = (self.head_dim as f32).powf(-0.5);
        let out = rope_and_attend(&queries, &keys, &values, &self.rope, cache, scale, mask)?;
        self.o_proj.forward(&out)
    }
}

#[derive(Debug, ModuleParameters)]
struct Layer {
    #[param]
    mixer: Either<Mamba, Attention>,
    #[param]
    mlp: FusedMlp,
    #[param]
    pre_mixer_norm: RmsNorm,
    #[param]
    post_mixer_norm: RmsNorm,
    #[param]
    pre_mlp_norm: RmsNorm,
    #[param]
    post_mlp_norm: RmsNorm,
}

#[derive(Debug, ModuleParameters)]
struct PlamoDecoder {
    #[param]
    layers: Vec<Layer>,
}

#[derive(Debug, ModuleParameters)]
struct PlamoModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: PlamoDecoder,
    #[param]
    norm: RmsNorm,
}

/// The plamo2 model: embeddings, Mamba and attention layers with sandwich norms, final norm,
/// head (or tied embeddings).
#[mlx_model(
    model_type = "plamo2",
    args = Plamo2Args,
    tied_head = "lm_head",
    sanitize = Self::sanitize_conv
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: PlamoModel,
    /// `None` with `tie_word_embeddings`.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    fn kinds(&self) -> Vec<LayerKind> {
        let kind = |l: &Layer| match l.mixer {
            Either::Left(_) => LayerKind::Ssm,
            Either::Right(_) => LayerKind::Attention,
        };
        self.model.layers.layers.iter().map(kind).collect()
    }

    fn sanitize_conv(&self, weights: &mut Weights) -> Result<()> {
        conv1d_weights_to_mlx(weights)
    }
}

impl Architecture for Model {
    fn new(args: &Plamo2Args) -> Result<Self> {
        let (dim, eps) = (args.hidden_size as i32, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let mixer = match args.is_mamba(i) {
                    true => Either::Left(Mamba::new(args)?),
                    false => Either::Right(Attention::new(args)?),
                };
                Ok(Layer {
                    mixer,
                    mlp: FusedMlp::new(args.hidden_size, args.intermediate_size)?,
                    pre_mixer_norm: RmsNorm::new(dim, eps, 1.0)?,
                    post_mixer_norm: RmsNorm::new(dim, eps, 1.0 / 5.0)?,
                    pre_mlp_norm: RmsNorm::new(dim, eps, 1.0)?,
                    post_mlp_norm: RmsNorm::new(dim, eps, 1.0 / 5f32.powf(1.5))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: PlamoModel {
                embed_tokens: Embedding::new(args.vocab_size as i32, dim)?,
                layers: PlamoDecoder { layers },
                norm: RmsNorm::new(dim, eps, 1.0)?,
            },
            lm_head: lm_head(args.tie_word_embeddings, args.hidden_size, args.vocab_size)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let masks = HybridMasks::for_stack(inputs.dim(1), &self.kinds(), cache)?;
        let m = &self.model;
        let layers = &m.layers.layers;
        let mut h = m.embed_tokens.forward(inputs)?;
        for (i, layer) in layers.iter().enumerate() {
            let x = layer.pre_mixer_norm.forward(&h)?;
            let x = match &layer.mixer {
                Either::Left(mamba) => {
                    mamba.forward(&x, masks.ssm.as_ref(), layer_arrays(cache, i)?)?
                }
                Either::Right(attn) => attn.forward(&x, &masks.attention, cache.get_mut(i))?,
            };
            h = h.add(layer.post_mixer_norm.forward(&x)?)?;
            let x = layer.mlp.forward(&layer.pre_mlp_norm.forward(&h)?)?;
            h = h.add(layer.post_mlp_norm.forward(&x)?)?;
        }
        let h = m.norm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => m.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        hybrid::make_cache(self.kinds())
    }

    fn num_layers(&self) -> usize {
        self.model.layers.layers.len()
    }
}
