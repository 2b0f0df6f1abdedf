//! The config side of the shared decoder: the keys every dense decoder's config names
//! ([`DecoderArgs`]), RoPE settings read from any spelling ([`RopeArgs`]), and the checks
//! of head counts, layer types and per-layer lists that architectures share.

#[allow(unused_imports)]
use super::*;

/// The keys that every dense decoder's config.json has and no architecture defaults: its
/// type and sizes. An architecture's args take them with `#[arg(flatten)] pub base:
/// DecoderArgs` (architectures whose reference gives them defaults, such as cohere and
/// gemma3_text, declare their own).
#[derive(Debug, Clone, PartialEq, ModelArgs)]
pub struct DecoderArgs {
    /// `model_type` of config.json: this architecture's name or one of its aliases.
    pub model_type: String,
    /// Width of the residual stream.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Number of decoder layers.
    #[arg(positive)]
    pub num_hidden_layers: usize,
    /// Hidden width of the MLP.
    #[arg(positive)]
    pub intermediate_size: usize,
    /// Number of query heads.
    #[arg(positive)]
    pub num_attention_heads: usize,
    /// Epsilon of the RMS norms.
    #[arg(positive)]
    pub rms_norm_eps: f32,
    /// Number of tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
}

/// The output head of a llama-style model: `None` when `tie_word_embeddings` (the embeddings
/// double as the head), else a bias-free `[vocab, dim]` linear layer.
pub fn lm_head(tie_word_embeddings: bool, dim: usize, vocab: usize) -> Result<Option<Linear>> {
    if tie_word_embeddings {
        Ok(None)
    } else {
        Linear::new(dim as i32, vocab as i32, false).map(Some)
    }
}

/// Checks a grouped-query config: `num_attention_heads` is a multiple of
/// `num_key_value_heads`, and without an explicit `head_dim`, `hidden_size` divides into the
/// heads. For the args' post-parse hooks; errors name the keys.
pub fn check_heads(
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: Option<usize>,
) -> std::result::Result<(), ArgsError> {
    let (heads, kv_heads) = (num_attention_heads, num_key_value_heads);
    if !heads.is_multiple_of(kv_heads) {
        return Err(ArgsError::invalid(
            &["num_attention_heads", "num_key_value_heads"],
            format!(
                "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"
            ),
        ));
    }
    if head_dim.is_none() && !hidden_size.is_multiple_of(heads) {
        return Err(ArgsError::invalid(
            &["hidden_size", "num_attention_heads"],
            format!(
                "`hidden_size` ({hidden_size}) is not divisible by `num_attention_heads` ({heads})"
            ),
        ));
    }
    // The projections are `heads * head_dim` wide (a fused one `(heads + 2 * kv_heads) *
    // head_dim`): each must fit MLX's 32-bit dimensions too, not only each factor.
    let dim = head_dim.unwrap_or(hidden_size / heads);
    let widest = kv_heads
        .checked_mul(2)
        .and_then(|kv| kv.checked_add(heads))
        .and_then(|n| n.checked_mul(dim));
    if widest.is_none_or(|w| w > crate::args::MAX_SIZE) {
        return Err(ArgsError::invalid(
            &["num_attention_heads", "num_key_value_heads", "head_dim"],
            format!(
                "the attention projections (`num_attention_heads` {heads} and \
                 `num_key_value_heads` {kv_heads} heads of {dim}) exceed MLX's size limit {}",
                crate::args::MAX_SIZE
            ),
        ));
    }
    Ok(())
}

/// The most layers a config may declare.
pub const MAX_LAYERS: usize = 1 << 16;

/// Checks a layer count (`key`) against [`MAX_LAYERS`], before anything is made per layer.
pub fn check_layers(key: &str, layers: usize) -> std::result::Result<(), ArgsError> {
    if layers > MAX_LAYERS {
        return Err(ArgsError::invalid(
            &[key],
            format!("`{key}` {layers} is absurd (at most {MAX_LAYERS})"),
        ));
    }
    Ok(())
}

/// Checks that `width`, the size of a tensor's axis computed from config values (`None` when
/// the computation overflowed), fits MLX's 32-bit dimensions; the error names `keys` and says
/// what the width is (`"the MLP (4 * n_embd)"`).
pub fn check_width(
    keys: &[&str],
    what: &str,
    width: Option<usize>,
) -> std::result::Result<(), ArgsError> {
    if width.is_none_or(|w| w > crate::args::MAX_SIZE) {
        return Err(ArgsError::invalid(
            keys,
            format!("{what} exceeds MLX's size limit {}", crate::args::MAX_SIZE),
        ));
    }
    Ok(())
}

/// The features of each head that a partial RoPE rotates, `int(head_dim * fraction)` as the
/// reference computes it (`partial_rotary_factor`, `rotary_pct`): an error naming `key` unless
/// it is even and between 2 and `head_dim`.
pub fn rotary_dims(
    key: &str,
    head_dim: usize,
    fraction: f64,
) -> std::result::Result<i32, ArgsError> {
    let dims = (head_dim as f64 * fraction).trunc();
    if !(dims >= 2.0 && dims <= head_dim as f64) || dims % 2.0 != 0.0 {
        let msg = format!(
            "`{key}` {fraction} rotates {dims} of the {head_dim} features of each head; \
             expected an even number from 2"
        );
        return Err(ArgsError::invalid(&[key], msg));
    }
    Ok(dims as i32)
}

/// Fills `layer_types` (all `"full_attention"` when absent) and checks it: one entry per
/// layer, each `"full_attention"` or `"sliding_attention"`, at least one full layer, and a
/// `sliding_window` when any layer slides. For the args' post-parse hooks.
pub fn check_layer_types(
    layer_types: &mut Option<Vec<String>>,
    num_hidden_layers: usize,
    sliding_window: Option<usize>,
) -> std::result::Result<(), ArgsError> {
    let layers = num_hidden_layers;
    // Before anything is made per layer (a list of types, a model): the largest models have a
    // few hundred layers, and the loader compares the count with the checkpoint anyway.
    check_layers("num_hidden_layers", layers)?;
    let types = layer_types.get_or_insert_with(|| vec!["full_attention".into(); layers]);
    check_per_layer("layer_types", types.len(), layers)?;
    if let Some(bad) = types
        .iter()
        .find(|t| *t != "full_attention" && *t != "sliding_attention")
    {
        return Err(ArgsError::invalid(
            &["layer_types"],
            format!("unknown layer type {bad:?}"),
        ));
    }
    if !types.iter().any(|t| t == "full_attention") {
        return Err(ArgsError::invalid(
            &["layer_types"],
            "no `full_attention` layer",
        ));
    }
    if types.iter().any(|t| t == "sliding_attention") && sliding_window.is_none() {
        return Err(ArgsError::invalid(
            &["layer_types", "sliding_window"],
            "`sliding_attention` layers need `sliding_window`",
        ));
    }
    Ok(())
}

/// Checks that the per-layer list `key` has `len` entries, one per layer.
pub fn check_per_layer(
    key: &str,
    len: usize,
    num_hidden_layers: usize,
) -> std::result::Result<(), ArgsError> {
    if len == num_hidden_layers {
        return Ok(());
    }
    Err(ArgsError::invalid(
        &[key, "num_hidden_layers"],
        format!("`{key}` has {len} entries for {num_hidden_layers} layers"),
    ))
}

/// The window of each layer of a config with `layer_types` (checked by
/// [`check_layer_types`]): `sliding_window` for `"sliding_attention"`, `None` otherwise.
pub fn layer_windows(
    layer_types: &[String],
    sliding_window: Option<usize>,
) -> impl Iterator<Item = Option<usize>> + '_ {
    layer_types
        .iter()
        .map(move |t| sliding_window.filter(|_| t == "sliding_attention"))
}

/// The RoPE a config describes with `rope_theta`, `rope_scaling` and transformers v5's
/// `rope_parameters` (which may carry the theta and the scaling instead).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeArgs {
    /// The base: `rope_parameters.rope_theta` when present, else `rope_theta`.
    pub base: f32,
    /// `rope_scaling` when present and not null, else `rope_parameters`, else default.
    pub scaling: RopeScaling,
    /// The traditional (interleaved) layout.
    pub traditional: bool,
    /// `max_position_embeddings` (dynamic NTK and longrope need it).
    pub max_position_embeddings: Option<i32>,
}

impl RopeArgs {
    /// Reads the keys; a missing theta or a bad scaling is an error naming its key. The
    /// layout is non-traditional until [`traditional`](Self::traditional) says otherwise.
    pub fn from_config(
        rope_theta: Option<f32>,
        rope_scaling: Option<&Value>,
        rope_parameters: Option<&Value>,
    ) -> std::result::Result<Self, ArgsError> {
        let mut config = serde_json::Map::new();
        if let Some(theta) = rope_theta {
            config.insert("rope_theta".into(), Value::from(theta));
        }
        if let Some(v) = rope_scaling {
            config.insert("rope_scaling".into(), v.clone());
        }
        if let Some(v) = rope_parameters {
            config.insert("rope_parameters".into(), v.clone());
        }
        let config = Value::Object(config);
        let base = RopeScaling::theta_from_config(&config).ok_or_else(|| {
            ArgsError::invalid(
                &["rope_theta"],
                "missing key `rope_theta` (nor in `rope_parameters`)",
            )
        })?;
        let scaling = RopeScaling::from_config(&config).map_err(|e| {
            let key = if rope_scaling.is_some_and(|v| !v.is_null()) {
                "rope_scaling"
            } else {
                "rope_parameters"
            };
            ArgsError::invalid(&[key], format!("`{key}`: {e}"))
        })?;
        Ok(RopeArgs {
            base,
            scaling,
            traditional: false,
            max_position_embeddings: None,
        })
    }

    /// Sets the layout (`rope_traditional`).
    pub fn traditional(mut self, traditional: bool) -> Self {
        self.traditional = traditional;
        self
    }

    /// Sets `max_position_embeddings`.
    pub fn max_position_embeddings(mut self, max: Option<usize>) -> Self {
        self.max_position_embeddings = max.map(|m| m as i32);
        self
    }

    /// The RoPE layer over the first `dims` features of each head.
    pub fn build(&self, dims: usize) -> Result<Rope> {
        Rope::new(
            dims as i32,
            self.base,
            self.traditional,
            &self.scaling,
            self.max_position_embeddings,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use mlx_rs::ops::zeros;

    use super::*;

    /// A layer that passes its input through and records the kind of mask it was given.
    #[derive(Debug, ModuleParameters)]
    struct Probe {
        window: Option<i32>,
        as_array: bool,
        seen: RefCell<Vec<&'static str>>,
    }

    impl Probe {
        fn new(window: Option<i32>, as_array: bool) -> Self {
            Probe {
                window,
                as_array,
                seen: RefCell::new(Vec::new()),
            }
        }
    }

    impl Layer for Probe {
        fn forward(&self, x: &Array, mask: &AttentionMask, _: Option<&mut Cache>) -> Result<Array> {
            let kind = match mask {
                AttentionMask::None => "none",
                AttentionMask::Causal => "causal",
                AttentionMask::Array(_) => "array",
            };
            self.seen.borrow_mut().push(kind);
            Ok(x.clone())
        }

        fn window(&self) -> Option<i32> {
            self.window
        }

        fn mask_as_array(&self) -> bool {
            self.as_array
        }
    }

    fn decoder(layers: Vec<Probe>) -> Decoder<Probe> {
        Decoder::new(16, 8, 1e-5, layers).expect("decoder")
    }

    fn seen(decoder: &Decoder<Probe>) -> Vec<Vec<&'static str>> {
        decoder.layers.iter().map(|l| l.seen.take()).collect()
    }

    #[test]
    fn each_layer_gets_the_mask_of_its_window() {
        let model = decoder(vec![
            Probe::new(None, false),
            Probe::new(Some(4), false),
            Probe::new(None, false),
            Probe::new(Some(8), false),
        ]);
        let inputs = zeros::<i32>(&[1, 6]).expect("inputs");
        model.forward(&inputs, &mut []).expect("forward");
        // Six tokens: causal for full attention and the window of 8, explicit for the window of 4.
        assert_eq!(
            seen(&model),
            [["causal"], ["array"], ["causal"], ["causal"]]
        );
    }

    #[test]
    fn a_layer_that_masks_by_hand_gets_an_array() {
        let model = decoder(vec![Probe::new(None, true), Probe::new(None, true)]);
        let inputs = zeros::<i32>(&[1, 3]).expect("inputs");
        model.forward(&inputs, &mut []).expect("forward");
        assert_eq!(seen(&model), [["array"], ["array"]]);
    }

    #[test]
    fn sliding_layers_get_rotating_caches() {
        let model = decoder(vec![Probe::new(Some(4), false), Probe::new(None, false)]);
        let caches = model.make_cache();
        assert!(matches!(caches[..], [Cache::Rotating(_), Cache::Kv(_)]));
        assert_eq!(model.num_layers(), 2);
    }
}
