//! `falcon_h1`, after mlx-lm's `models/falcon_h1.py`: in every layer a Mamba2 mixer and RoPE
//! attention run side by side on the same normed input and both join the residual stream,
//! then a SwiGLU MLP. Each layer's cache is a list of a KV cache and an arrays cache. The
//! muP multipliers (embeddings, head, attention in and out, SSM in per segment of `in_proj`,
//! SSM out, MLP) are folded into the weights when a Hugging Face checkpoint is converted, as
//! the reference does, so the forward multiplies only the tied head.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::Value;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::hybrid::{list_parts_mut, HybridLayer, HybridMasks, HybridStack, LayerKind};
use mlx_models::nn::norm::RmsNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::ssm::{check_mamba2, Mamba2Config, Mamba2Mixer};
use mlx_models::nn::transformer::{
    check_heads, check_layers, lm_head, Attention, AttentionConfig, Mlp, RopeArgs,
};
use mlx_models::weights::Weights;

/// config.json of a falcon_h1 checkpoint; every key has the reference's default.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct FalconH1Args {
    /// `model_type` of config.json.
    pub model_type: String,
    /// Biases on the attention projections.
    #[arg(default = false)]
    pub attention_bias: bool,
    /// muP factor on `q_proj` and `k_proj`.
    #[arg(default = 1.0)]
    pub attention_in_multiplier: f64,
    /// muP factor on `o_proj`.
    #[arg(default = 0.9375)]
    pub attention_out_multiplier: f64,
    /// muP factor on the embeddings.
    #[arg(default = 5.656854249492381)]
    pub embedding_multiplier: f64,
    /// Width of one attention head.
    #[arg(positive, default = 64)]
    pub head_dim: usize,
    /// Width of the residual stream.
    #[arg(positive, default = 1024)]
    pub hidden_size: usize,
    /// Hidden width of the MLP.
    #[arg(positive, default = 2048)]
    pub intermediate_size: usize,
    /// muP factor on the head.
    #[arg(default = 0.0390625)]
    pub lm_head_multiplier: f64,
    /// A bias on the convolutions.
    #[arg(default = true)]
    pub mamba_conv_bias: bool,
    /// Taps of the causal convolution.
    #[arg(positive, default = 4)]
    pub mamba_d_conv: usize,
    /// Width of one Mamba2 head.
    #[arg(positive, default = 64)]
    pub mamba_d_head: usize,
    /// Width of the mixers' `x` and gate; must be `mamba_n_heads * mamba_d_head` (that
    /// product when absent or null).
    #[arg(positive)]
    pub mamba_d_ssm: Option<usize>,
    /// Width of the SSM state.
    #[arg(positive, default = 128)]
    pub mamba_d_state: usize,
    /// Groups of heads sharing `B` and `C`.
    #[arg(positive, default = 1)]
    pub mamba_n_groups: usize,
    /// Heads of the Mamba2 mixers.
    #[arg(positive, default = 24)]
    pub mamba_n_heads: usize,
    /// With `mamba_rms_norm`: the norm before the gate rather than after it.
    #[arg(default = false)]
    pub mamba_norm_before_gate: bool,
    /// A bias on the mixers' `in_proj`.
    #[arg(default = false)]
    pub mamba_proj_bias: bool,
    /// A gated RMS norm before `out_proj` (else the output is only gated).
    #[arg(default = false)]
    pub mamba_rms_norm: bool,
    /// Context length of the checkpoint.
    #[arg(positive, default = 131072)]
    pub max_position_embeddings: usize,
    /// Biases on the MLP.
    #[arg(default = false)]
    pub mlp_bias: bool,
    /// muP factors on `gate_proj` and `down_proj`.
    #[arg(default = vec![0.8838834764831844, 0.5859375])]
    pub mlp_multipliers: Vec<f64>,
    /// Query heads.
    #[arg(positive, default = 8)]
    pub num_attention_heads: usize,
    /// Number of layers.
    #[arg(positive, default = 36)]
    pub num_hidden_layers: usize,
    /// Key and value heads.
    #[arg(positive, default = 2)]
    pub num_key_value_heads: usize,
    /// A bias on the mixers' `out_proj`.
    #[arg(default = false)]
    pub projectors_bias: bool,
    /// Epsilon of every RMS norm.
    #[arg(positive, default = 1e-5)]
    pub rms_norm_eps: f32,
    /// The traditional (interleaved) RoPE layout.
    #[arg(default = false)]
    pub rope_traditional: bool,
    /// RoPE scaling as config.json writes it.
    pub rope_scaling: Option<Value>,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(
        positive,
        default = 100000000000.0,
        alias = "rope_parameters.rope_theta"
    )]
    pub rope_theta: f32,
    /// muP factor on the mixers' `in_proj`.
    #[arg(default = 1.25)]
    pub ssm_in_multiplier: f64,
    /// muP factors on `in_proj`'s segments: gate, `x`, `B`, `C`, time step.
    #[arg(default = vec![0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738])]
    pub ssm_multipliers: Vec<f64>,
    /// muP factor on the mixers' `out_proj`.
    #[arg(default = 0.23570226039551587)]
    pub ssm_out_multiplier: f64,
    /// Number of tokens in the vocabulary.
    #[arg(positive, default = 32784)]
    pub vocab_size: usize,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl FalconH1Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("num_hidden_layers", self.num_hidden_layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, Some(self.head_dim))?;
        let keys = [
            "mamba_n_heads",
            "mamba_d_head",
            "mamba_n_groups",
            "mamba_d_state",
        ];
        let (heads, head_dim) = (self.mamba_n_heads, self.mamba_d_head);
        check_mamba2(
            keys,
            heads,
            head_dim,
            self.mamba_n_groups,
            self.mamba_d_state,
        )?;
        let inner = heads.checked_mul(head_dim);
        let d_ssm = *self.mamba_d_ssm.get_or_insert(inner.unwrap_or_default());
        if inner != Some(d_ssm) {
            let msg = format!("`mamba_d_ssm` ({d_ssm}) is not `mamba_n_heads` x `mamba_d_head`");
            let keys = ["mamba_d_ssm", "mamba_n_heads", "mamba_d_head"];
            return Err(ArgsError::invalid(&keys, msg));
        }
        for (key, list, n) in [
            ("mlp_multipliers", &self.mlp_multipliers, 2),
            ("ssm_multipliers", &self.ssm_multipliers, 5),
        ] {
            if list.len() != n {
                let msg = format!("`{key}` has {} entries, expected {n}", list.len());
                return Err(ArgsError::invalid(&[key], msg));
            }
        }
        self.rope().map(drop)
    }

    /// The RoPE settings.
    pub fn rope(&self) -> std::result::Result<RopeArgs, ArgsError> {
        let rope = RopeArgs::from_config(Some(self.rope_theta), self.rope_scaling.as_ref(), None)?;
        Ok(rope
            .traditional(self.rope_traditional)
            .max_position_embeddings(Some(self.max_position_embeddings)))
    }

    /// The Mamba2 mixers' shape.
    pub fn mamba(&self) -> Mamba2Config {
        let config = Mamba2Config::new(
            self.hidden_size,
            self.mamba_n_heads,
            self.mamba_d_head,
            self.mamba_n_groups,
            self.mamba_d_state,
            self.mamba_d_conv,
            self.rms_norm_eps,
        );
        config
            .proj_bias(self.mamba_proj_bias, self.projectors_bias)
            .conv_bias(self.mamba_conv_bias)
            .norm(
                self.mamba_rms_norm
                    .then_some((self.rms_norm_eps, self.mamba_norm_before_gate)),
            )
    }

    /// `compute_mup_vector`: each row of `in_proj` times its segment's factor.
    fn mup_vector(&self) -> Vec<f32> {
        let d_ssm = self.mamba_d_ssm.unwrap_or_default();
        let gs = self.mamba_n_groups * self.mamba_d_state;
        let sizes = [d_ssm, d_ssm, gs, gs, self.mamba_n_heads];
        sizes
            .iter()
            .zip(&self.ssm_multipliers)
            .flat_map(|(&n, &m)| std::iter::repeat_n(m as f32, n))
            .collect()
    }
}

#[derive(Debug, ModuleParameters)]
struct FalconH1Layer {
    #[param]
    feed_forward: Mlp,
    #[param]
    mamba: Mamba2Mixer,
    #[param]
    self_attn: Attention,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    pre_ff_layernorm: RmsNorm,
}

impl FalconH1Layer {
    fn new(args: &FalconH1Args) -> Result<Self> {
        let (dim, head_dim, eps) = (args.hidden_size, args.head_dim, args.rms_norm_eps);
        let heads = (args.num_attention_heads, args.num_key_value_heads);
        let bias = args.attention_bias;
        let attention = AttentionConfig::new(dim, heads.0, heads.1, head_dim).bias(bias, bias);
        let rope = args.rope()?.build(head_dim)?;
        Ok(FalconH1Layer {
            feed_forward: Mlp::new(dim, args.intermediate_size, args.mlp_bias)?,
            mamba: Mamba2Mixer::new(&args.mamba())?,
            self_attn: Attention::new(&attention, Some(rope))?,
            input_layernorm: RmsNorm::new(dim as i32, eps)?,
            pre_ff_layernorm: RmsNorm::new(dim as i32, eps)?,
        })
    }
}

impl HybridLayer for FalconH1Layer {
    fn kind(&self) -> LayerKind {
        LayerKind::Parallel
    }

    fn forward(&self, x: &Array, masks: &HybridMasks, cache: Option<&mut Cache>) -> Result<Array> {
        let (attn_cache, ssm_cache) = match cache {
            Some(c) => {
                let (attention, ssm) = list_parts_mut(c)?;
                (Some(attention), Some(ssm))
            }
            None => (None, None),
        };
        let h = self.input_layernorm.forward(x)?;
        let mamba_h = self.mamba.forward(&h, masks.ssm.as_ref(), ssm_cache)?;
        let attn_h = self.self_attn.forward(&h, &masks.attention, attn_cache)?;
        let h = x.add(&mamba_h)?.add(&attn_h)?;
        let r = self
            .feed_forward
            .forward(&self.pre_ff_layernorm.forward(&h)?)?;
        h.add(&r)
    }
}

/// The falcon_h1 model: embeddings, parallel Mamba2 + attention layers with their MLPs, final
/// norm, head (or tied embeddings, scaled by `lm_head_multiplier / embedding_multiplier`).
#[mlx_model(
    model_type = "falcon_h1",
    args = FalconH1Args,
    tied_head = "lm_head",
    rename("model.final_layernorm" => "model.norm"),
    sanitize = Self::fold_multipliers,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: HybridStack<FalconH1Layer>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
    args: FalconH1Args,
}

impl Model {
    /// A Hugging Face checkpoint (its conv filters `[C, 1, K]`) gets the muP multipliers
    /// folded into its weights and its conv filters turned, as the reference's sanitize does;
    /// converted weights (filters `[C, K, 1]`) pass unchanged.
    fn fold_multipliers(&self, weights: &mut Weights) -> Result<()> {
        let hf = weights
            .get("model.layers.0.mamba.conv1d.weight")
            .is_some_and(|c| c.ndim() == 3 && c.dim(-1) > c.dim(1));
        if !hf {
            return Ok(());
        }
        let a = &self.args;
        let mup = a.mup_vector();
        let mup = Array::from_slice(&mup, &[mup.len() as i32, 1]);
        let times = |w: &Array, m: f64| w.multiply(Array::from_f32(m as f32).as_dtype(w.dtype())?);
        for (name, w) in weights.iter_mut() {
            let factor = if name.ends_with("embed_tokens.weight") {
                Some(a.embedding_multiplier)
            } else if name.ends_with("lm_head.weight") {
                Some(a.lm_head_multiplier)
            } else if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                Some(a.attention_in_multiplier)
            } else if name.ends_with("o_proj.weight") {
                Some(a.attention_out_multiplier)
            } else if name.ends_with("out_proj.weight") {
                Some(a.ssm_out_multiplier)
            } else if name.ends_with("gate_proj.weight") {
                Some(a.mlp_multipliers[0])
            } else if name.ends_with("down_proj.weight") {
                Some(a.mlp_multipliers[1])
            } else {
                None
            };
            *w = match factor {
                Some(m) => times(w, m)?,
                None if name.ends_with("in_proj.weight") => {
                    w.multiply(times(&mup.as_dtype(w.dtype())?, a.ssm_in_multiplier)?)?
                }
                None if name.contains("conv1d.weight") && w.ndim() == 3 => {
                    w.transpose_axes(&[0, 2, 1])?
                }
                None => continue,
            };
        }
        Ok(())
    }
}

impl Architecture for Model {
    fn new(args: &FalconH1Args) -> Result<Self> {
        let (dim, vocab) = (args.hidden_size, args.vocab_size);
        let layers = (0..args.num_hidden_layers)
            .map(|_| FalconH1Layer::new(args))
            .collect::<Result<_>>()?;
        Ok(Model {
            model: HybridStack::new(vocab, dim, args.rms_norm_eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
            args: args.clone(),
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        let logits = self.model.logits(&h, self.lm_head.as_ref())?;
        if self.lm_head.is_some() {
            return Ok(logits);
        }
        let scale = (self.args.lm_head_multiplier / self.args.embedding_multiplier) as f32;
        logits.multiply(Array::from_f32(scale).as_dtype(logits.dtype())?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.make_cache()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
