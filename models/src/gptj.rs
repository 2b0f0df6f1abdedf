//! `gptj` (GPT-J), after mlx-lm's `models/gptj.py`: attention and MLP in parallel from one
//! LayerNorm, traditional (interleaved) RoPE of base 10000 on the first `rotary_dim` features
//! of each head, bias-free attention projections, a `4 * n_embd` tanh-gelu MLP with biases, and
//! an untied head with a bias.

use mlx_rs::error::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::activations::gelu_approx;
use mlx_models::nn::blocks::{rope_and_attend, split_heads};
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::norm::LayerNorm;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{check_layers, check_width, Decoder, Layer};

/// The base of GPT-J's RoPE, fixed in the reference (it reads no `rope_theta`).
const ROPE_BASE: f32 = 10000.0;

/// config.json of a gptj checkpoint (every key has the reference's default). As in the
/// reference, `n_inner` and `activation_function` are not read: the MLP is `4 * n_embd` wide
/// with the tanh gelu.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct GptjArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    #[arg(default = "gptj".to_owned())]
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(default = 4096, positive)]
    pub n_embd: usize,
    /// Number of tokens in the vocabulary.
    #[arg(default = 50400, positive)]
    pub vocab_size: usize,
    /// Epsilon of the layer norm.
    #[arg(default = 1e-5, positive)]
    pub layer_norm_epsilon: f32,
    /// Context length; sizes nothing (RoPE has no scaling).
    #[arg(default = 2048, positive)]
    pub n_positions: usize,
    /// Number of attention heads.
    #[arg(default = 16, positive)]
    pub n_head: usize,
    /// Rotated features of each head; 0 rotates the whole head, as in the reference (where a
    /// `null` does too; here `null` reads as absent, 64).
    #[arg(default = 64)]
    pub rotary_dim: usize,
    /// Number of decoder layers.
    #[arg(default = 28, positive)]
    pub n_layer: usize,
}

impl GptjArgs {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        check_layers("n_layer", self.n_layer)?;
        let (dim, heads) = (self.n_embd, self.n_head);
        if !dim.is_multiple_of(heads) {
            let msg = format!("`n_embd` ({dim}) is not divisible by `n_head` ({heads})");
            return Err(ArgsError::invalid(&["n_embd", "n_head"], msg));
        }
        check_width(&["n_embd"], "the MLP (`4 * n_embd`)", dim.checked_mul(4))?;
        self.rope_dims().map(drop)
    }

    /// `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The rotated features of each head: `rotary_dim`, or the whole head for 0; an even
    /// number from 2 to `head_dim`.
    pub fn rope_dims(&self) -> std::result::Result<i32, ArgsError> {
        let head_dim = self.head_dim();
        match self.rotary_dim {
            0 if head_dim.is_multiple_of(2) => Ok(head_dim as i32),
            d if d >= 2 && d <= head_dim && d.is_multiple_of(2) => Ok(d as i32),
            d => Err(ArgsError::invalid(
                &["rotary_dim"],
                format!(
                    "`rotary_dim` {d} (0: the whole head) does not rotate an even number from 2 \
                     to the {head_dim} features of each head"
                ),
            )),
        }
    }
}

#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    q_proj: Linear,
    #[param]
    k_proj: Linear,
    #[param]
    v_proj: Linear,
    #[param]
    out_proj: Linear,
    n_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &GptjArgs, rope: Rope) -> Result<Self> {
        let dim = args.n_embd as i32;
        Ok(Attention {
            q_proj: Linear::new(dim, dim, false)?,
            k_proj: Linear::new(dim, dim, false)?,
            v_proj: Linear::new(dim, dim, false)?,
            out_proj: Linear::new(dim, dim, false)?,
            n_heads: args.n_head as i32,
            scale: (args.head_dim() as f32).powf(-0.5),
            rope,
        })
    }

    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let queries = split_heads(&self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split_heads(&self.k_proj.forward(x)?, self.n_heads)?;
        let values = split_heads(&self.v_proj.forward(x)?, self.n_heads)?;
        // The reference rotates the first `rotary_dim` features and concatenates the rest
        // back; RoPE over fewer dimensions than the head leaves the rest as they are.
        let (rope, scale) = (&self.rope, self.scale);
        let output = rope_and_attend(&queries, &keys, &values, rope, cache, scale, mask)?;
        self.out_proj.forward(&output)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    fc_in: Linear,
    #[param]
    fc_out: Linear,
}

#[derive(Debug, ModuleParameters)]
struct Block {
    #[param]
    ln_1: LayerNorm,
    #[param]
    attn: Attention,
    #[param]
    mlp: Mlp,
}

impl Block {
    fn new(args: &GptjArgs, rope: Rope) -> Result<Self> {
        let dim = args.n_embd as i32;
        Ok(Block {
            ln_1: LayerNorm::new(dim, args.layer_norm_epsilon, true)?,
            attn: Attention::new(args, rope)?,
            mlp: Mlp {
                fc_in: Linear::new(dim, 4 * dim, true)?,
                fc_out: Linear::new(4 * dim, dim, true)?,
            },
        })
    }
}

impl Layer for Block {
    /// `x + attn(ln_1(x)) + mlp(ln_1(x))`.
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let h = self.ln_1.forward(x)?;
        let attn = self.attn.forward(&h, mask, cache)?;
        let ffn = self
            .mlp
            .fc_out
            .forward(&gelu_approx(&self.mlp.fc_in.forward(&h)?)?)?;
        attn.add(&ffn)?.add(x)
    }
}

/// The gptj model: embeddings, parallel decoder layers, final LayerNorm, head with a bias.
/// The reference's sanitize drops the attention's mask buffers and reads `transformer.*` as
/// `model.*`; both map onto the shared stack's names here.
#[mlx_model(
    model_type = "gptj",
    args = GptjArgs,
    drop = ["transformer.h.{n}.attn.masked_bias", "transformer.h.{n}.attn.bias"],
    rename("transformer" => "model"),
    rename("model.wte" => "model.embed_tokens"),
    rename("model.h" => "model.layers"),
    rename("model.ln_f" => "model.norm"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<Block, LayerNorm>,
    #[param]
    lm_head: Linear,
}

impl Architecture for Model {
    fn new(args: &GptjArgs) -> Result<Self> {
        let (dim, vocab) = (args.n_embd, args.vocab_size);
        let rope = Rope::plain(args.rope_dims()?, ROPE_BASE, true, 1.0);
        let layers = (0..args.n_layer).map(|_| Block::new(args, rope.clone()));
        let norm = LayerNorm::new(dim as i32, args.layer_norm_epsilon, true)?;
        Ok(Model {
            model: Decoder::with_norm(vocab, dim, layers.collect::<Result<_>>()?, norm)?,
            lm_head: Linear::new(dim as i32, vocab as i32, true)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, Some(&self.lm_head))
    }

    mlx_models::decoder_methods!(cache: model);
}
