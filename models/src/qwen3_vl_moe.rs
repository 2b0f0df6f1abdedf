//! `qwen3_vl_moe`, after mlx-lm's `models/qwen3_vl_moe.py`: the text model of Qwen3-VL's
//! mixture-of-experts checkpoints, `qwen3_moe` read from `text_config`, under
//! `language_model.`. Sanitize drops the vision tower (`visual`, `model.visual`), moves
//! `model.language_model.*` to `language_model.model.*` (the head `lm_head` beside it), and
//! splits transformers' fused experts: `experts.gate_up_proj` `[E, hidden, 2 * width]` into
//! the switch layer's gate and up projections and `experts.down_proj` `[E, width, hidden]`
//! into its down projection, each transposed to MLX's `[E, out, in]`.

use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::indexing::IndexOp;

use mlx_models::mlx_model;
use mlx_models::multimodal::{sanitize_language_model, TextConfig, TextConfigRules};
use mlx_models::weights::Weights;

use crate::qwen3_moe::{self, Qwen3MoeArgs};

/// How qwen3_vl_moe reads its text config: `text_config`, required.
#[derive(Debug)]
pub enum Qwen3VlMoeRules {}

impl TextConfigRules for Qwen3VlMoeRules {}

/// config.json of a qwen3_vl_moe checkpoint: the text model's config in `text_config`.
pub type Qwen3VlMoeArgs = TextConfig<Qwen3MoeArgs, Qwen3VlMoeRules>;

/// The qwen3_vl_moe model: qwen3_moe under `language_model`.
#[mlx_model(
    model_type = "qwen3_vl_moe",
    args = Qwen3VlMoeArgs,
    drop = ["visual.*", "model.visual.*"],
    rename("model.language_model" => "language_model.model"),
    add_prefix = "language_model.",
    sanitize = Self::sanitize_text,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    language_model: qwen3_moe::Model,
}

impl Model {
    fn sanitize_text(&self, weights: &mut Weights) -> Result<(), Exception> {
        let fused: Vec<String> = weights
            .keys()
            .filter(|k| k.ends_with(".mlp.experts.gate_up_proj"))
            .cloned()
            .collect();
        for key in fused {
            let prefix = &key[..key.len() - ".experts.gate_up_proj".len()];
            let down_key = format!("{prefix}.experts.down_proj");
            let (Some(gate_up), Some(down)) = (weights.remove(&key), weights.remove(&down_key))
            else {
                return Err(Exception::custom(format!(
                    "`{key}` comes without `{down_key}` (or the other way round)"
                )));
            };
            let width = gate_up.shape().get(2).copied().unwrap_or(0);
            if gate_up.ndim() != 3 || width % 2 != 0 || down.ndim() != 3 {
                return Err(Exception::custom(format!(
                    "cannot split `{key}` of shape {:?} into gate and up projections",
                    gate_up.shape()
                )));
            }
            let mid = width / 2;
            let name = |proj: &str| format!("{prefix}.switch_mlp.{proj}.weight");
            let gate = gate_up.index((.., .., ..mid)).swap_axes(-2, -1)?;
            let up = gate_up.index((.., .., mid..)).swap_axes(-2, -1)?;
            weights.insert(name("gate_proj"), gate);
            weights.insert(name("up_proj"), up);
            weights.insert(name("down_proj"), down.swap_axes(-2, -1)?);
        }
        sanitize_language_model(self, weights)
    }
}

mlx_models::text_model!(Model, language_model: qwen3_moe::Model);
