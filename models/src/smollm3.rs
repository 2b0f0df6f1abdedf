//! `smollm3`, after mlx-lm's `models/smollm3.py`: llama whose layers listed as 0 in
//! `no_rope_layers` (by default every `no_rope_layer_interval`-th) attend without RoPE.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::Linear;
use mlx_models::nn::transformer::{check_per_layer, Decoder};

use crate::llama::{self, LlamaArgs};

/// config.json of a smollm3 checkpoint: llama's keys and the no-RoPE layers.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct SmolLm3Args {
    /// Llama's keys, with llama's defaults and checks.
    #[arg(flatten)]
    pub llama: LlamaArgs,
    /// Every this-many-th layer attends without RoPE (unless `no_rope_layers` says otherwise).
    #[arg(default = 4, positive)]
    pub no_rope_layer_interval: usize,
    /// Per layer: nonzero where the layer uses RoPE. Default: 0 for every
    /// `no_rope_layer_interval`-th layer, 1 elsewhere.
    pub no_rope_layers: Option<Vec<i64>>,
}

impl SmolLm3Args {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let (layers, interval) = (self.num_hidden_layers, self.no_rope_layer_interval);
        let rotates = |i: usize| i64::from(!(i + 1).is_multiple_of(interval));
        let no_rope = self
            .no_rope_layers
            .get_or_insert_with(|| (0..layers).map(rotates).collect());
        check_per_layer("no_rope_layers", no_rope.len(), layers)
    }
}

/// The smollm3 model: llama's, with RoPE switched off in the no-RoPE layers.
#[mlx_model(
    model_type = "smollm3",
    args = SmolLm3Args,
    drop = "*.self_attn.rotary_emb.inv_freq",
    tied_head = "lm_head",
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: Decoder,
    /// `None` with `tie_word_embeddings`: the embedding doubles as the head.
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &SmolLm3Args) -> Result<Self, Exception> {
        let use_rope = args.no_rope_layers.as_deref().unwrap_or_default();
        let rotates = |i: usize| use_rope.get(i).is_some_and(|&r| r != 0);
        let (model, lm_head) = llama::Model::with_rope_in(&args.llama, rotates)?.into_parts();
        Ok(Model { model, lm_head })
    }

    mlx_models::decoder_methods!(model, lm_head);
}
