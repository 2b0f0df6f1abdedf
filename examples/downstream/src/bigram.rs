//! `downstream_bigram`: an architecture defined outside the zoo. Each token's logits depend only
//! on that token: `lm_head(embed_tokens[token])`. Registered by `#[mlx_model]` exactly as the
//! zoo's architectures are, so `mlx_models::load` finds it by its `model_type`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::nn::quantized::{Embedding, Linear};

/// config.json of a bigram checkpoint.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
pub struct BigramArgs {
    /// `"downstream_bigram"`.
    pub model_type: String,
    /// Tokens in the vocabulary.
    #[arg(positive)]
    pub vocab_size: usize,
    /// Width of a token's embedding.
    #[arg(positive)]
    pub hidden_size: usize,
    /// Whether the head has an additive bias.
    #[arg(default = true)]
    pub head_bias: bool,
}

impl BigramArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        if self.hidden_size > self.vocab_size {
            return Err(ArgsError::invalid(
                &["hidden_size", "vocab_size"],
                format!(
                    "`hidden_size` ({}) exceeds `vocab_size` ({}): a bigram table needs no more",
                    self.hidden_size, self.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// The bigram model. Older checkpoints of it name the embedding `wte`, which the rename rule
/// maps onto the field.
#[mlx_model(
    model_type = "downstream_bigram",
    args = BigramArgs,
    rename("wte" => "embed_tokens"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    embed_tokens: Embedding,
    #[param]
    lm_head: Linear,
}

impl Architecture for Model {
    fn new(args: &BigramArgs) -> Result<Self, Exception> {
        let (vocab, dim) = (args.vocab_size as i32, args.hidden_size as i32);
        Ok(Model {
            embed_tokens: Embedding::new(vocab, dim)?,
            lm_head: Linear::new(dim, vocab, args.head_bias)?,
        })
    }

    fn forward(&mut self, inputs: &Array, _cache: &mut [Cache]) -> Result<Array, Exception> {
        self.lm_head.forward(&self.embed_tokens.forward(inputs)?)
    }

    fn make_cache(&self) -> Vec<Cache> {
        Vec::new()
    }

    fn num_layers(&self) -> usize {
        0
    }
}
