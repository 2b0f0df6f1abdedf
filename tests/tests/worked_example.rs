//! Compiles and runs the worked example of `docs/add-an-architecture.md`: the code inside
//! `mod tiny_llama` is the document's code block, character for character (a test checks it).

#[rustfmt::skip]
mod tiny_llama {
//! `tiny_llama` (alias `tiny_mistral`): a llama-style decoder, after mlx-lm's `models/llama.py`.

use mlx_rs::builder::Builder;
use mlx_rs::error::Exception;
use mlx_rs::fast::{rope, scaled_dot_product_attention, ScaledDotProductAttentionMask};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use mlx_rs::nn::{self, Embedding, Linear, LinearBuilder, RmsNorm, RmsNormBuilder};
use mlx_rs::{ops, Array};

use mlx_models::args::{ArgsError, ModelArgs};
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;

/// config.json, field by field: names are the JSON keys, defaults sit on the field.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
pub struct TinyLlamaArgs {
    pub model_type: String,
    #[arg(positive)]
    pub hidden_size: usize,
    #[arg(positive)]
    pub num_hidden_layers: usize,
    #[arg(positive)]
    pub intermediate_size: usize,
    #[arg(positive)]
    pub num_attention_heads: usize,
    #[arg(alias = "n_kv_heads", positive)]
    pub num_key_value_heads: Option<usize>,
    #[arg(positive)]
    pub vocab_size: usize,
    #[arg(default = 1e-5)]
    pub rms_norm_eps: f32,
    #[arg(default = 10000.0)]
    pub rope_theta: f32,
    #[arg(default = true)]
    pub tie_word_embeddings: bool,
}

impl TinyLlamaArgs {
    /// Derived defaults and checks, run right after parsing; errors name the keys.
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        if self.hidden_size % heads != 0 {
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                format!("`hidden_size` ({}) is not divisible by `num_attention_heads` ({heads})", self.hidden_size),
            ));
        }
        let kv_heads = *self.num_key_value_heads.get_or_insert(heads);
        if heads % kv_heads != 0 {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "num_key_value_heads"],
                format!("`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"),
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
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
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    rope_theta: f32,
}

impl Attention {
    fn new(args: &TinyLlamaArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let n_heads = args.num_attention_heads as i32;
        let n_kv_heads = args.num_key_value_heads.unwrap_or(args.num_attention_heads) as i32;
        let head_dim = args.head_dim() as i32;
        let linear = |i: i32, o: i32| LinearBuilder::new(i, o).bias(false).build();
        Ok(Attention {
            q_proj: linear(dim, n_heads * head_dim)?,
            k_proj: linear(dim, n_kv_heads * head_dim)?,
            v_proj: linear(dim, n_kv_heads * head_dim)?,
            o_proj: linear(n_heads * head_dim, dim)?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: args.rope_theta,
        })
    }

    fn forward(&mut self, x: &Array, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let split = |t: Array, heads: i32| t.reshape(&[b, l, heads, -1])?.transpose_axes(&[0, 2, 1, 3]);
        let queries = split(self.q_proj.forward(x)?, self.n_heads)?;
        let keys = split(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let values = split(self.v_proj.forward(x)?, self.n_kv_heads)?;

        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let queries = rope(&queries, self.head_dim, false, self.rope_theta, 1.0, offset, None::<&Array>)?;
        let keys = rope(&keys, self.head_dim, false, self.rope_theta, 1.0, offset, None::<&Array>)?;
        let (keys, values) = match cache {
            Some(c) => c.update_and_fetch(&keys, &values)?,
            None => (keys, values),
        };

        let mask = (l > 1).then_some(ScaledDotProductAttentionMask::Causal);
        let scale = (self.head_dim as f32).powf(-0.5);
        let output = scaled_dot_product_attention(queries, keys, values, scale, mask, None::<&Array>)?;
        self.o_proj.forward(&output.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?)
    }
}

#[derive(Debug, ModuleParameters)]
struct Mlp {
    #[param]
    gate_proj: Linear,
    #[param]
    up_proj: Linear,
    #[param]
    down_proj: Linear,
}

impl Mlp {
    fn new(dim: i32, hidden: i32) -> Result<Self, Exception> {
        let linear = |i: i32, o: i32| LinearBuilder::new(i, o).bias(false).build();
        Ok(Mlp { gate_proj: linear(dim, hidden)?, up_proj: linear(dim, hidden)?, down_proj: linear(hidden, dim)? })
    }

    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        let gate = nn::silu(self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&ops::multiply(&gate, &self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, ModuleParameters)]
struct DecoderLayer {
    #[param]
    self_attn: Attention,
    #[param]
    mlp: Mlp,
    #[param]
    input_layernorm: RmsNorm,
    #[param]
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(args: &TinyLlamaArgs) -> Result<Self, Exception> {
        let norm = || RmsNormBuilder::new(args.hidden_size as i32).eps(args.rms_norm_eps).build();
        Ok(DecoderLayer {
            self_attn: Attention::new(args)?,
            mlp: Mlp::new(args.hidden_size as i32, args.intermediate_size as i32)?,
            input_layernorm: norm()?,
            post_attention_layernorm: norm()?,
        })
    }

    fn forward(&mut self, x: &Array, cache: Option<&mut Cache>) -> Result<Array, Exception> {
        let r = self.self_attn.forward(&self.input_layernorm.forward(x)?, cache)?;
        let h = ops::add(x, &r)?;
        let r = self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?;
        ops::add(&h, &r)
    }
}

#[derive(Debug, ModuleParameters)]
struct TinyLlamaModel {
    #[param]
    embed_tokens: Embedding,
    #[param]
    layers: Vec<DecoderLayer>,
    #[param]
    norm: RmsNorm,
}

/// The registered model. Field names are checkpoint names; the rules handle the rest:
/// rotary buffers some checkpoints carry, the head of tied checkpoints, a legacy name.
#[mlx_model(
    model_type = "tiny_llama",
    aliases = ["tiny_mistral"],
    args = TinyLlamaArgs,
    drop = "*.rotary_emb.inv_freq",
    tied_head = "lm_head",
    rename("transformer.h.{n}.attn.c_proj" => "model.layers.{n}.self_attn.o_proj"),
)]
#[derive(Debug, ModuleParameters)]
pub struct Model {
    #[param]
    model: TinyLlamaModel,
    /// `None` when `tie_word_embeddings`: the embedding doubles as the head.
    #[mlx_model(weights = "output")]
    #[param]
    lm_head: Option<Linear>,
}

impl Architecture for Model {
    fn new(args: &TinyLlamaArgs) -> Result<Self, Exception> {
        let dim = args.hidden_size as i32;
        let vocab = args.vocab_size as i32;
        let model = TinyLlamaModel {
            embed_tokens: Embedding::new(vocab, dim)?,
            layers: (0..args.num_hidden_layers).map(|_| DecoderLayer::new(args)).collect::<Result<_, _>>()?,
            norm: RmsNormBuilder::new(dim).eps(args.rms_norm_eps).build()?,
        };
        let lm_head = if args.tie_word_embeddings {
            None
        } else {
            Some(LinearBuilder::new(dim, vocab).bias(false).build()?)
        };
        Ok(Model { model, lm_head })
    }

    fn forward(&mut self, inputs: &Array, cache: &mut [Cache]) -> Result<Array, Exception> {
        let mut h = self.model.embed_tokens.forward(inputs)?;
        let mut caches = cache.iter_mut();
        for layer in &mut self.model.layers {
            h = layer.forward(&h, caches.next())?;
        }
        let h = self.model.norm.forward(&h)?;
        match &mut self.lm_head {
            Some(head) => head.forward(&h),
            None => self.model.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<Cache> {
        self.model.layers.iter().map(|_| Cache::kv()).collect()
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }
}
}
// end of the example

use std::collections::HashSet;

use mlx_models::model::LanguageModel;
use mlx_models::registry;
use mlx_models::weights::Weights;
use mlx_rs::Array;
use serde_json::json;

fn config(tied: bool) -> serde_json::Value {
    json!({
        "model_type": "tiny_mistral",
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 50,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32"
    })
}

fn build(tied: bool) -> Box<dyn LanguageModel> {
    registry::build(&config(tied)).expect("builds").model
}

fn keys(w: &Weights) -> HashSet<String> {
    w.keys().cloned().collect()
}

/// The model's own parameters, as an MLX checkpoint of it would hold them.
fn converted(model: &dyn LanguageModel) -> Weights {
    model
        .parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn doc_shows_the_code_this_test_compiles() {
    let doc = include_str!("../../docs/add-an-architecture.md");
    let this = include_str!("worked_example.rs");
    let start = this.find("mod tiny_llama {\n").expect("marker") + "mod tiny_llama {\n".len();
    let end = this.find("}\n// end of the example").expect("marker");
    let code = &this[start..end];
    assert!(
        doc.contains(&format!("```rust\n{code}```")),
        "docs/add-an-architecture.md differs from this test"
    );
}

#[test]
fn registry_finds_the_example_by_type_and_alias() {
    registry::check().expect("no duplicate names");
    for name in ["tiny_llama", "tiny_mistral"] {
        assert_eq!(
            registry::find(name, &[]).expect("registered").model_type,
            "tiny_llama"
        );
    }
    let e = registry::find("tiny_lama", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "model type `tiny_lama` not supported; did you mean `tiny_llama`?"
    );
}

#[test]
fn a_config_builds_a_model_that_runs() {
    let built = registry::build(&config(false)).expect("builds");
    let unknown: Vec<&str> = built.unknown_keys.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(unknown, ["architectures", "torch_dtype"]);
    let mut model = built.model;
    assert_eq!(model.model_type(), "tiny_llama");
    assert_eq!(model.num_layers(), 2);
    let mut cache = model.make_cache();
    assert_eq!(cache.len(), 2);
    let tokens = Array::from_slice(&[1i32, 2, 3, 4, 5], &[1, 5]);
    let logits = model.forward(&tokens, &mut cache).expect("runs");
    assert_eq!(logits.shape(), &[1, 5, 50]);
}

#[test]
fn sanitize_maps_a_checkpoint_onto_the_parameters() {
    let model = build(false);
    let expected = converted(model.as_ref());
    // A checkpoint as the hub has it: legacy name, head under another key, rotary buffers.
    let mut checkpoint = expected.clone();
    let o = checkpoint
        .remove("model.layers.1.self_attn.o_proj.weight")
        .expect("o_proj");
    checkpoint.insert("transformer.h.1.attn.c_proj.weight".into(), o);
    let head = checkpoint.remove("lm_head.weight").expect("head");
    checkpoint.insert("output.weight".into(), head);
    checkpoint.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Array::from_slice(&[1.0f32], &[1]),
    );

    let once = model.sanitize(checkpoint).expect("sanitizes");
    assert_eq!(keys(&once), keys(&expected));
    let twice = model.sanitize(once).expect("sanitizes again");
    assert_eq!(keys(&twice), keys(&expected), "sanitize is idempotent");
}

#[test]
fn tied_checkpoints_lose_their_head() {
    let model = build(true);
    let expected = converted(model.as_ref());
    assert!(!expected.contains_key("lm_head.weight"));
    let mut checkpoint = expected.clone();
    checkpoint.insert("lm_head.weight".into(), Array::from_slice(&[0.0f32], &[1]));
    assert_eq!(
        keys(&model.sanitize(checkpoint).expect("sanitizes")),
        keys(&expected)
    );
}

#[test]
fn full_forward_equals_token_by_token_decode() {
    let mut model = build(true);
    let ids = [3i32, 1, 4, 1, 5];
    let full = model
        .forward(&Array::from_slice(&ids, &[1, 5]), &mut [])
        .expect("runs");
    let full = full.reshape(&[5, 50]).expect("reshape");
    let mut cache = model.make_cache();
    for (i, id) in ids.iter().enumerate() {
        let step = model
            .forward(&Array::from_slice(&[*id], &[1, 1]), &mut cache)
            .expect("runs");
        let row = full
            .take_axis(Array::from_slice(&[i as i32], &[1]), 0)
            .expect("row");
        let same = step
            .reshape(&[1, 50])
            .expect("reshape")
            .all_close(&row, 1e-4, 1e-4, None)
            .expect("compares");
        assert!(same, "token {i} differs between full forward and decode");
    }
}
