//! `baichuan_m1` (Baichuan-M1), after mlx-lm's `models/baichuan_m1.py`: llama's pre-norm layer
//! whose attention (queries, keys and values fused in `W_pack`) passes the keys and the values
//! through a two-tap causal convolution over the positions, one pair of taps per key/value head
//! (`conv_k`, `conv_v`: `previous * w0 + current * w1`), before RoPE. The layers listed in
//! `sliding_window_layers` attend to the last `sliding_window` positions through a rotating
//! cache, with their own head counts when `num_swa_attention_heads` /
//! `num_swa_key_value_heads` are set; the others attend to everything.
//!
//! Each layer's cache is a list of its key/value cache and an arrays cache whose two slots hold
//! the last raw key and value (the convolution's state); the reference keeps them in the other
//! order, which a prompt-cache file it saved brings, and which is read too. In a left-padded
//! batch the padded keys and values are zeroed before the convolution, so that a row's first
//! position sees a zero state as it would alone (beyond the reference, which mixes in the
//! padding). The head's rows are normalized when the checkpoint is read (the original
//! `NormHead`), unless the head is quantized or its rows are already of unit norm (a converted
//! checkpoint). The reference's tied head cannot run (its forward always calls `lm_head`); here
//! a tied model uses the embeddings.

use mlx_rs::error::{Exception, Result};
use mlx_rs::linalg::{norm_l2, NormOptions};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{arange, concatenate, select, split_at_indices, zeros_dtype};
use mlx_rs::{Array, Axes, Dtype};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::{ArraysCache, Cache};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::attention::attend;
use mlx_models::nn::blocks::{merge_heads, rope_after, split_heads};
use mlx_models::nn::hybrid::list_parts_mut;
use mlx_models::nn::mask::AttentionMask;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::rope::Rope;
use mlx_models::nn::transformer::{
    check_heads, check_layers, check_width, lm_head, Decoder, DecoderArgs, DecoderLayer, Mlp,
    SelfAttention,
};
use mlx_models::weights::Weights;

/// config.json of a baichuan_m1 checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct BaichuanM1Args {
    /// Type and sizes.
    #[arg(flatten)]
    pub base: DecoderArgs,
    /// Key/value heads of the full-attention layers (and of the sliding ones unless
    /// `num_swa_key_value_heads`).
    #[arg(positive)]
    pub num_key_value_heads: usize,
    /// Base frequency of the rotary position embedding (transformers v5 writes it inside
    /// `rope_parameters`).
    #[arg(positive, alias = "rope_parameters.rope_theta")]
    pub rope_theta: f32,
    /// Positions a sliding-window layer attends to, itself included.
    #[arg(positive)]
    pub sliding_window: usize,
    /// The indices of the sliding-window layers.
    pub sliding_window_layers: Vec<usize>,
    /// Taps of the key/value convolution; the reference runs only 2.
    pub conv_window: usize,
    /// Query heads of the sliding-window layers (absent: `num_attention_heads`).
    #[arg(positive)]
    pub num_swa_attention_heads: Option<usize>,
    /// Key/value heads of the sliding-window layers (absent: `num_key_value_heads`).
    #[arg(positive)]
    pub num_swa_key_value_heads: Option<usize>,
    /// Whether the head reuses the embedding matrix.
    #[arg(default = false)]
    pub tie_word_embeddings: bool,
}

impl BaichuanM1Args {
    fn check(&mut self) -> std::result::Result<(), ArgsError> {
        let layers = self.num_hidden_layers;
        check_layers("num_hidden_layers", layers)?;
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        check_heads(self.hidden_size, heads, kv_heads, None)?;
        if let Some(&bad) = self.sliding_window_layers.iter().find(|&&i| i >= layers) {
            return Err(ArgsError::invalid(
                &["sliding_window_layers", "num_hidden_layers"],
                format!("`sliding_window_layers` lists layer {bad} of {layers}"),
            ));
        }
        if self.conv_window != 2 {
            return Err(ArgsError::invalid(
                &["conv_window"],
                format!("`conv_window` is {}; only 2 is supported", self.conv_window),
            ));
        }
        // The sliding layers' own heads, checked under their own keys.
        let (swa_heads, swa_kv_heads) = self.heads(true);
        let keys = ["num_swa_attention_heads", "num_swa_key_value_heads"];
        if !swa_heads.is_multiple_of(swa_kv_heads) {
            return Err(ArgsError::invalid(
                &keys,
                format!(
                    "the sliding layers' {swa_heads} query heads are not a multiple of their \
                     {swa_kv_heads} key/value heads"
                ),
            ));
        }
        if !self.hidden_size.is_multiple_of(swa_heads) {
            return Err(ArgsError::invalid(
                &["hidden_size", keys[0]],
                format!(
                    "`hidden_size` ({}) is not divisible by the sliding layers' {swa_heads} heads",
                    self.hidden_size
                ),
            ));
        }
        let head_dim = self.hidden_size / swa_heads;
        let width = swa_kv_heads
            .checked_mul(2)
            .and_then(|kv| kv.checked_add(swa_heads))
            .and_then(|n| n.checked_mul(head_dim));
        check_width(&keys, "the sliding layers' W_pack", width)?;
        let window = Some(self.sliding_window);
        check_width(&["sliding_window"], "`sliding_window`", window)
    }

    /// The query and key/value heads of a sliding (`true`) or full-attention layer.
    pub fn heads(&self, sliding: bool) -> (usize, usize) {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        match sliding {
            true => (
                self.num_swa_attention_heads.unwrap_or(heads),
                self.num_swa_key_value_heads.unwrap_or(kv_heads),
            ),
            false => (heads, kv_heads),
        }
    }
}

/// The reference's `_custom_convolution`: `u` `[B, heads, L, D]` mixed with the position
/// before by each head's two taps (`taps` `[1, 1, heads, 1, 2]`), `previous * w0 + u * w1`;
/// the position before the first is `state` (the last of the previous call), zeros without one.
fn shift_conv(u: &Array, taps: &Array, state: Option<&Array>) -> Result<Array> {
    let (b, h, l, d) = (u.dim(0), u.dim(1), u.dim(2), u.dim(3));
    let taps = taps.reshape(&[1, h, 2, 1, 1])?;
    let (w0, w1) = (taps.index((.., .., 0)), taps.index((.., .., 1)));
    let state = match state {
        Some(s) => s.clone(),
        None => zeros_dtype(&[b, h, 1, d], u.dtype())?,
    };
    let previous = match l > 1 {
        true => concatenate(&[state, u.index((.., .., ..l - 1))], 2)?,
        false => state,
    };
    previous.multiply(&w0)?.add(u.multiply(&w1)?)
}

/// `[B, 1, L, 1]`, false at the left padding of a batch cache's rows (`None` for the caches
/// of a single sequence).
fn padding_mask(cache: Option<&Cache>, l: i32) -> Result<Option<Array>> {
    let Some(offsets) = cache.and_then(Cache::offsets) else {
        return Ok(None);
    };
    let positions = offsets
        .reshape(&[-1, 1])?
        .add(arange::<_, i32>(0, l, None)?)?;
    let valid = positions.ge(Array::from_int(0))?;
    Ok(Some(valid.reshape(&[-1, 1, l, 1])?))
}

/// The key/value cache and the convolution's state of a layer's cache list. A lone empty
/// cache (a batch cache made for each layer) becomes such a list.
fn parts(cache: &mut Cache) -> Result<(&mut Cache, &mut ArraysCache)> {
    if !matches!(cache, Cache::List(_)) && cache.is_empty() {
        *cache = Cache::List(vec![std::mem::take(cache), Cache::arrays(2)]);
    }
    list_parts_mut(cache)
}

/// Attention with queries, keys and values fused in `W_pack` and the keys and values
/// convolved over the positions.
#[allow(non_snake_case)]
#[derive(Debug, ModuleParameters)]
struct Attention {
    #[param]
    W_pack: Linear,
    #[param]
    o_proj: Linear,
    /// `[1, 1, kv_heads, 1, 2]`: each key head's taps.
    #[param]
    conv_k: Param<Array>,
    /// `[1, 1, kv_heads, 1, 2]`: each value head's taps.
    #[param]
    conv_v: Param<Array>,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn new(args: &BaichuanM1Args, sliding: bool) -> Result<Self> {
        let dim = args.hidden_size as i32;
        let (heads, kv_heads) = args.heads(sliding);
        let (n_heads, n_kv_heads) = (heads as i32, kv_heads as i32);
        let head_dim = dim / n_heads;
        let taps = || zeros_dtype(&[1, 1, n_kv_heads, 1, 2], Dtype::Float32).map(Param::new);
        Ok(Attention {
            W_pack: Linear::new(dim, dim + 2 * n_kv_heads * head_dim, false)?,
            o_proj: Linear::new(n_heads * head_dim, dim, false)?,
            conv_k: taps()?,
            conv_v: taps()?,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
            rope: Rope::plain(head_dim, args.rope_theta, false, 1.0),
        })
    }
}

impl SelfAttention for Attention {
    fn forward(&self, x: &Array, mask: &AttentionMask, cache: Option<&mut Cache>) -> Result<Array> {
        let l = x.dim(1);
        let (kv_cache, state) = match cache {
            Some(c) => {
                let (kv, state) = parts(c)?;
                (Some(kv), Some(state))
            }
            None => (None, None),
        };
        let (q_width, kv_width) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        let proj = self.W_pack.forward(x)?;
        let qkv = split_at_indices(&proj, &[q_width, q_width + kv_width], -1)?;
        let queries = split_heads(&qkv[0], self.n_heads)?;
        let mut keys = split_heads(&qkv[1], self.n_kv_heads)?;
        let mut values = split_heads(&qkv[2], self.n_kv_heads)?;
        if let Some(valid) = padding_mask(kv_cache.as_deref(), l)? {
            let zero = Array::from_f32(0.0).as_dtype(keys.dtype())?;
            keys = select(&valid, &keys, &zero)?;
            values = select(&valid, &values, &zero)?;
        }

        let slot = |i: usize| state.as_ref().and_then(|s| s.get(i));
        let conv_keys = shift_conv(&keys, &self.conv_k, slot(0))?;
        let conv_values = shift_conv(&values, &self.conv_v, slot(1))?;
        if let Some(state) = state {
            state.set(0, keys.index((.., .., l - 1..)));
            state.set(1, values.index((.., .., l - 1..)));
        }

        let queries = rope_after(&self.rope, &queries, kv_cache.as_deref())?;
        let conv_keys = rope_after(&self.rope, &conv_keys, kv_cache.as_deref())?;
        let output = attend(
            &queries,
            &conv_keys,
            &conv_values,
            kv_cache,
            self.scale,
            mask,
            None,
        )?;
        self.o_proj.forward(&merge_heads(&output)?)
    }
}

/// Llama's pre-norm layer around the convolved attention, sliding or not.
type TransformerBlock = DecoderLayer<Attention, Mlp>;

/// The baichuan_m1 model: embeddings, full and sliding-window layers, final norm, the
/// normalized head (or the tied embeddings).
#[mlx_model(
    model_type = "baichuan_m1",
    args = BaichuanM1Args,
    tied_head = "lm_head",
    sanitize = Self::normalize_head,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder<TransformerBlock>,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Model {
    /// The original head (`NormHead`) divides each row by its norm: done once, in float32,
    /// when the checkpoint is read, as the reference's sanitize does, but for a quantized head
    /// (which the reference leaves as it is) and for rows already within 4e-3 of unit norm
    /// (two bfloat16 steps: a converted checkpoint, normalized when it was written).
    fn normalize_head(&self, weights: &mut Weights) -> Result<()> {
        if weights.contains_key("lm_head.scales") {
            return Ok(());
        }
        let Some(w) = weights.get("lm_head.weight") else {
            return Ok(());
        };
        let dtype = w.dtype();
        let w = w.as_dtype(Dtype::Float32)?;
        let options = NormOptions {
            axes: Axes::Axis(-1),
            keep_dims: true,
        };
        let norms = norm_l2(&w, options)?;
        let off_unit = norms.subtract(Array::from_f32(1.0))?.abs()?.max(None)?;
        let off_unit = off_unit
            .try_item_exact::<f32>()
            .map_err(|e| Exception::custom(format!("lm_head.weight: {e}")))?;
        if off_unit < 4e-3 {
            return Ok(());
        }
        let normalized = w.divide(norms.add(Array::from_f32(1e-7))?)?;
        weights.insert("lm_head.weight".into(), normalized.as_dtype(dtype)?);
        Ok(())
    }
}

/// Each layer's list with its key/value cache first, as the stack reads the masks and the
/// positions from a list's first cache (a list saved by the reference has the state first).
fn key_values_first(cache: &mut [Cache]) {
    for c in cache {
        if let Cache::List(parts) = c {
            if matches!(parts.first(), Some(Cache::Arrays(_))) {
                parts.reverse();
            }
        }
    }
}

impl Architecture for Model {
    fn new(args: &BaichuanM1Args) -> Result<Self> {
        let (dim, vocab, eps) = (args.hidden_size, args.vocab_size, args.rms_norm_eps);
        let layers = (0..args.num_hidden_layers)
            .map(|i| {
                let sliding = args.sliding_window_layers.contains(&i);
                let mlp = Mlp::new(dim, args.intermediate_size, false)?;
                let layer = DecoderLayer::new(Attention::new(args, sliding)?, mlp, dim, eps)?;
                Ok(layer.sliding_window(sliding.then_some(args.sliding_window)))
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            model: Decoder::new(vocab, dim, eps, layers)?,
            lm_head: lm_head(args.tie_word_embeddings, dim, vocab)?,
        })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        key_values_first(cache);
        let h = self.model.forward(inputs, cache)?;
        self.model.logits(&h, self.lm_head.as_ref())
    }

    /// Per layer, a list of its key/value cache (rotating over the window for a sliding
    /// layer) and the convolution's state.
    fn make_cache(&self) -> Vec<Cache> {
        let lists = self.model.make_cache().into_iter();
        lists
            .map(|kv| Cache::List(vec![kv, Cache::arrays(2)]))
            .collect()
    }

    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }
}
