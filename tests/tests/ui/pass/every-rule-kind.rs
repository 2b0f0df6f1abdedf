//! Every weight rule kind, a field rule and a hook on one model; the registry finds it.

use mlx_models::args::ModelArgs;
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::{Architecture, ModelSpec};
use mlx_models::weights::{Rule, Weights};
use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;

#[derive(Debug, ModelArgs)]
pub struct MoeArgs {
    num_local_experts: usize,
}

#[mlx_model(
    model_type = "every_rule",
    aliases = ["every_rule_alias"],
    args = MoeArgs,
    architectures = ["EveryRuleForCausalLM"],
    strip_prefix = "model.language_model.",
    rename("transformer.h.{n}.attn" => "model.layers.{n}.self_attn"),
    add_prefix = "model.",
    drop = ["*.rotary_emb.inv_freq", "vision_tower.*"],
    tied_head = "lm_head",
    stack_experts("model.layers.{n}.mlp.experts.{e}" => "model.layers.{n}.mlp.switch_mlp"),
    sanitize = Self::shift_norms,
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[mlx_model(weights = "output")]
    #[param]
    lm_head: Option<mlx_rs::nn::Linear>,
}

impl Model {
    fn shift_norms(&self, _weights: &mut Weights) -> Result<(), Exception> {
        Ok(())
    }
}

impl Architecture for Model {
    fn new(_: &MoeArgs) -> Result<Self, Exception> {
        Ok(Model { lm_head: None })
    }
    fn forward(&mut self, inputs: &Array, _: &mut [Cache]) -> Result<Array, Exception> {
        Ok(inputs.clone())
    }
    fn make_cache(&self) -> Vec<Cache> {
        Vec::new()
    }
    fn num_layers(&self) -> usize {
        0
    }
}

fn main() {
    assert_eq!(<Model as ModelSpec>::MODEL_TYPE, "every_rule");
    assert_eq!(<Model as ModelSpec>::WEIGHT_RULES.len(), 8);
    assert_eq!(
        <Model as ModelSpec>::WEIGHT_RULES.last(),
        Some(&Rule::Rename { from: "output", to: "lm_head" }),
        "field rules run last"
    );
    let entry = mlx_models::registry::find("every_rule_alias", &["EveryRuleForCausalLM"]).expect("registered");
    assert_eq!(entry.model_type, "every_rule");
}
