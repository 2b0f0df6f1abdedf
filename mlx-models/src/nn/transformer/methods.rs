//! [`decoder_methods!`](crate::decoder_methods): the `Architecture` methods of a model that
//! is a [`Decoder`](super::Decoder) and a head.

/// Writes the [`Architecture`](crate::model::Architecture) methods of a model that is a
/// [`Decoder`](crate::nn::transformer::Decoder) field and a head field (`Option<Linear>`, `None` when the embeddings are tied):
/// `forward` runs the decoder, then the head (or the embeddings); `make_cache` and
/// `num_layers` are the decoder's. With only the decoder field, the embeddings are always the
/// head; with `cache: model`, only `make_cache` and `num_layers` are written (for a model
/// whose `forward` does more, such as scaling the logits). Use it inside the `impl`, after
/// `new`; a whole architecture on the shared decoder:
///
/// ```
/// use mlx_models::args::{ArgsError, ModelArgs};
/// use mlx_models::model::Architecture;
/// use mlx_models::nn::quantized::Linear;
/// use mlx_models::nn::transformer::{
///     lm_head, AttentionConfig, Decoder, DecoderArgs, DecoderLayer, RopeArgs,
/// };
/// use mlx_rs::{error::Exception, macros::ModuleParameters, Array};
///
/// /// config.json: the common keys and one of its own.
/// #[derive(Debug, Clone, ModelArgs)]
/// pub struct TinyArgs {
///     /// Type and sizes.
///     #[arg(flatten)]
///     pub base: DecoderArgs,
///     /// Whether the head is the embedding matrix.
///     #[arg(default = true)]
///     pub tie_word_embeddings: bool,
/// }
///
/// /// The model.
/// #[mlx_models::mlx_model(model_type = "tiny_decoder_doc", args = TinyArgs)]
/// #[derive(Debug, ModuleParameters)]
/// pub struct Model {
///     #[param]
///     model: Decoder,
///     #[param]
///     lm_head: Option<Linear>,
/// }
///
/// impl Architecture for Model {
///     fn new(args: &TinyArgs) -> Result<Self, Exception> {
///         // `args.hidden_size`: `TinyArgs` derefs to its one flattened field.
///         let (dim, heads) = (args.hidden_size, args.num_attention_heads);
///         let attention = AttentionConfig::new(dim, heads, heads, dim / heads);
///         let rope = RopeArgs::from_config(Some(10000.0), None, None)?.build(dim / heads)?;
///         let (hidden, eps) = (args.intermediate_size, args.rms_norm_eps);
///         let layers = (0..args.num_hidden_layers)
///             .map(|_| DecoderLayer::llama(&attention, Some(rope.clone()), hidden, false, eps))
///             .collect::<Result<_, _>>()?;
///         Ok(Model {
///             model: Decoder::new(args.vocab_size, dim, eps, layers)?,
///             lm_head: lm_head(args.tie_word_embeddings, dim, args.vocab_size)?,
///         })
///     }
///
///     mlx_models::decoder_methods!(model, lm_head);
/// }
///
/// let args = TinyArgs::from_config(&serde_json::json!({
///     "model_type": "tiny_decoder_doc", "hidden_size": 16, "num_hidden_layers": 2,
///     "intermediate_size": 32, "num_attention_heads": 2, "rms_norm_eps": 1e-5,
///     "vocab_size": 10,
/// }))?;
/// let mut model = Model::new(&args)?;
/// let mut cache = model.make_cache();
/// let logits = model.forward(&Array::from_slice(&[1, 2, 3], &[1, 3]), &mut cache)?;
/// assert_eq!((logits.shape(), model.num_layers()), (&[1, 3, 10][..], 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! decoder_methods {
    ($decoder:ident, $head:ident) => {
        $crate::decoder_methods!(@methods $decoder, |this| this.$head.as_ref());
    };
    ($decoder:ident) => {
        $crate::decoder_methods!(@methods $decoder, |_this| ::core::option::Option::None);
    };
    (cache: $decoder:ident) => {
        fn make_cache(&self) -> ::std::vec::Vec<$crate::cache::Cache> {
            self.$decoder.make_cache()
        }

        fn num_layers(&self) -> usize {
            self.$decoder.num_layers()
        }
    };
    (@methods $decoder:ident, |$this:ident| $head:expr) => {
        $crate::decoder_methods!(cache: $decoder);

        fn forward(
            &mut self,
            inputs: &$crate::mlx_rs::Array,
            cache: &mut [$crate::cache::Cache],
        ) -> ::core::result::Result<$crate::mlx_rs::Array, $crate::mlx_rs::error::Exception> {
            let h = self.$decoder.forward(inputs, cache)?;
            let $this = &*self;
            $this.$decoder.logits(&h, $head)
        }
    };
}
