//! `#[derive(ModelArgs)]` end to end: config.json values in, typed args out, and back.

use mlx_models::args::{ArgsError, ArgsErrorKind, Config, ModelArgs};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(tag = "rope_type", tag = "type")]
enum RopeScaling {
    Default,
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    Yarn {
        factor: f32,
        #[arg(default = 32.0)]
        beta_fast: f32,
        #[arg(default = 1.0)]
        beta_slow: f32,
    },
    #[arg(alias = "su")]
    Longrope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
    },
}

#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::derive_and_check)]
struct LlamaArgs {
    model_type: String,
    #[arg(positive)]
    hidden_size: usize,
    #[arg(positive)]
    num_hidden_layers: usize,
    #[arg(positive)]
    num_attention_heads: usize,
    #[arg(alias = "n_kv_heads", positive)]
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[arg(positive)]
    intermediate_size: usize,
    vocab_size: usize,
    #[arg(default = 1e-5)]
    rms_norm_eps: f32,
    #[arg(default = 10000.0, alias = "rope_parameters.rope_theta")]
    rope_theta: f32,
    #[arg(alias = "rope_parameters")]
    rope_scaling: Option<RopeScaling>,
    #[arg(default = true)]
    tie_word_embeddings: bool,
    #[arg(default)]
    attention_bias: bool,
    max_position_embeddings: Option<usize>,
    #[arg(skip)]
    kv_heads: usize,
}

impl LlamaArgs {
    fn derive_and_check(&mut self) -> Result<(), ArgsError> {
        let heads = self.num_attention_heads;
        if self.hidden_size % heads != 0 && self.head_dim.is_none() {
            return Err(ArgsError::invalid(
                &["hidden_size", "num_attention_heads"],
                format!(
                    "`hidden_size` ({}) is not divisible by `num_attention_heads` ({heads}); set `head_dim`",
                    self.hidden_size
                ),
            ));
        }
        self.kv_heads = self.num_key_value_heads.unwrap_or(heads);
        if heads % self.kv_heads != 0 {
            return Err(ArgsError::invalid(
                &["num_attention_heads", "num_key_value_heads"],
                format!(
                    "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({})",
                    self.kv_heads
                ),
            ));
        }
        self.head_dim.get_or_insert(self.hidden_size / heads);
        Ok(())
    }
}

fn llama() -> serde_json::Value {
    json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 128,
        "vocab_size": 100,
        "rms_norm_eps": 1e-6,
        "rope_theta": 500000.0,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
        },
        "torch_dtype": "bfloat16"
    })
}

fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    v[key] = value;
    v
}

fn without(mut v: serde_json::Value, key: &str) -> serde_json::Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

#[test]
fn a_full_config_parses_into_typed_args() {
    let a = LlamaArgs::from_config(&llama()).expect("parses");
    assert_eq!(a.hidden_size, 64);
    assert_eq!(a.num_key_value_heads, Some(2));
    assert_eq!(a.rms_norm_eps, 1e-6);
    assert_eq!(a.rope_theta, 500000.0);
    assert_eq!(
        a.rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
}

#[test]
fn defaults_apply_when_key_absent() {
    let config = without(
        without(without(llama(), "rms_norm_eps"), "rope_theta"),
        "attention_bias",
    );
    let a = LlamaArgs::from_config(&config).expect("parses");
    assert_eq!(a.rms_norm_eps, 1e-5);
    assert_eq!(a.rope_theta, 10000.0);
    assert!(!a.attention_bias);
    assert_eq!(a.max_position_embeddings, None);
}

#[test]
fn post_parse_hook_fills_derived_defaults() {
    let a = LlamaArgs::from_config(&without(
        without(llama(), "num_key_value_heads"),
        "head_dim",
    ))
    .expect("parses");
    assert_eq!(a.kv_heads, 4, "kv heads default to attention heads");
    assert_eq!(
        a.head_dim,
        Some(16),
        "head_dim = hidden_size / num_attention_heads"
    );
}

#[test]
fn post_parse_hook_errors_name_the_keys() {
    let e = LlamaArgs::from_config(&with(
        without(llama(), "head_dim"),
        "hidden_size",
        json!(66),
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `hidden_size` (66) is not divisible by `num_attention_heads` (4); set `head_dim`"
    );
    assert_eq!(e.keys(), ["hidden_size", "num_attention_heads"]);
    let e = LlamaArgs::from_config(&with(llama(), "num_key_value_heads", json!(3))).unwrap_err();
    assert_eq!(e.keys(), ["num_attention_heads", "num_key_value_heads"]);
}

#[test]
fn aliases_read_other_spellings() {
    let config = with(
        without(llama(), "num_key_value_heads"),
        "n_kv_heads",
        json!(1),
    );
    assert_eq!(
        LlamaArgs::from_config(&config)
            .expect("parses")
            .num_key_value_heads,
        Some(1)
    );
}

#[test]
fn missing_key_names_the_model_type() {
    let e = LlamaArgs::from_config(&without(llama(), "hidden_size")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: missing key `hidden_size` (required by llama)"
    );
    assert!(matches!(e.kind(), ArgsErrorKind::MissingKey { .. }));
}

#[test]
fn wrong_type_says_what_was_expected_and_found() {
    let e =
        LlamaArgs::from_config(&with(llama(), "num_attention_heads", json!("abc"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `num_attention_heads`: expected a positive integer of at most 2147483647 (MLX's size limit), found \"abc\""
    );
    let e = LlamaArgs::from_config(&with(llama(), "num_attention_heads", json!(0))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `num_attention_heads`: expected a positive integer of at most 2147483647 (MLX's size limit), found 0"
    );
    let e = LlamaArgs::from_config(&with(llama(), "vocab_size", json!(-3))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `vocab_size`: expected a non-negative integer of at most 2147483647 (MLX's size limit), found -3"
    );
    let e =
        LlamaArgs::from_config(&with(llama(), "tie_word_embeddings", json!("yes"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `tie_word_embeddings`: expected a boolean, found \"yes\""
    );
}

#[test]
fn floats_are_rejected_where_integers_are_expected() {
    let e = LlamaArgs::from_config(&with(llama(), "vocab_size", json!(100.5))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `vocab_size`: expected a non-negative integer of at most 2147483647 (MLX's size limit), found 100.5"
    );
}

#[test]
fn integers_are_accepted_where_floats_are_expected() {
    let a = LlamaArgs::from_config(&with(llama(), "rope_theta", json!(10000))).expect("parses");
    assert_eq!(a.rope_theta, 10000.0);
}

#[derive(Debug, PartialEq, ModelArgs)]
struct Softcap {
    final_logit_softcapping: f64,
    #[arg(default = f32::INFINITY)]
    attn_logit_softcapping: f32,
}

#[test]
fn non_finite_floats_are_refused_but_written_as_transformers_does() {
    // transformers' tagged floats are read, and refused: no setting means anything infinite.
    for tagged in ["Infinity", "-Infinity", "NaN"] {
        let e = Softcap::from_config(&json!({"final_logit_softcapping": {"__float__": tagged}}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config.json: `final_logit_softcapping`: expected a finite number, found {tagged}"
            )
        );
    }
    // Beyond float32's range is refused too, for an f32 field.
    let e = Softcap::from_config(
        &json!({"final_logit_softcapping": 1.0, "attn_logit_softcapping": 1e39}),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `attn_logit_softcapping`: expected a finite number (in float32's range), found 1e+39"
    );
    // A default may be infinite, and writes back as transformers writes it.
    let a = Softcap::from_config(&json!({"final_logit_softcapping": 30})).expect("parses");
    assert_eq!(a.attn_logit_softcapping, f32::INFINITY);
    assert_eq!(
        a.to_config(),
        json!({
            "final_logit_softcapping": 30.0,
            "attn_logit_softcapping": {"__float__": "Infinity"}
        })
    );
    let e = Softcap::from_config(&json!({"final_logit_softcapping": {"__float__": "big"}}))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `final_logit_softcapping`: expected a finite number, found {\"__float__\":\"big\"}"
    );
}

#[test]
fn unknown_keys_are_kept_and_listed() {
    let config = Config::<LlamaArgs>::parse(&llama()).expect("parses");
    let unknown: Vec<&str> = config.unknown_keys().map(|u| u.key.as_str()).collect();
    assert_eq!(unknown, ["architectures", "torch_dtype"]);
    assert!(config.typos().is_empty());
}

#[test]
fn unknown_key_near_a_missing_field_is_a_likely_typo() {
    let config = with(
        without(llama(), "rms_norm_eps"),
        "rms_norm_esp",
        json!(1e-6),
    );
    let config = Config::<LlamaArgs>::parse(&config).expect("parses");
    assert_eq!(config.args.rms_norm_eps, 1e-5, "the default applied");
    let typos: Vec<String> = config.typos().iter().map(ToString::to_string).collect();
    assert_eq!(
        typos,
        ["unknown key `rms_norm_esp`; did you mean `rms_norm_eps`?"]
    );
}

#[test]
fn nested_unknown_keys_and_typos_carry_their_path() {
    let mut config = llama();
    config["rope_scaling"] =
        json!({"type": "yarn", "factor": 4.0, "beta_fsat": 16.0, "mscale": 1.0});
    let config = Config::<LlamaArgs>::parse(&config).expect("parses");
    let unknown: Vec<&str> = config.unknown_keys().map(|u| u.key.as_str()).collect();
    assert!(unknown.contains(&"rope_scaling.mscale"), "{unknown:?}");
    assert_eq!(config.typos()[0].suggestion, "rope_scaling.beta_fast");
}

#[test]
fn rope_scaling_is_chosen_by_type_or_rope_type() {
    let by_type = with(
        llama(),
        "rope_scaling",
        json!({"type": "linear", "factor": 2.0}),
    );
    let a = LlamaArgs::from_config(&by_type).expect("parses");
    assert_eq!(a.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    let su = with(
        llama(),
        "rope_scaling",
        json!({"type": "su", "short_factor": [1.0], "long_factor": [2]}),
    );
    let a = LlamaArgs::from_config(&su).expect("parses");
    assert_eq!(
        a.rope_scaling,
        Some(RopeScaling::Longrope {
            short_factor: vec![1.0],
            long_factor: vec![2.0]
        })
    );
    let null = with(llama(), "rope_scaling", json!(null));
    assert_eq!(
        LlamaArgs::from_config(&null).expect("parses").rope_scaling,
        None
    );
}

#[test]
fn unknown_rope_type_lists_the_known_ones() {
    let e = LlamaArgs::from_config(&with(
        llama(),
        "rope_scaling",
        json!({"rope_type": "magic"}),
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: `rope_scaling.rope_type`: unknown variant \"magic\"; expected one of \"default\", \"linear\", \"llama3\", \"yarn\", \"longrope\", \"su\""
    );
    let e =
        LlamaArgs::from_config(&with(llama(), "rope_scaling", json!({"factor": 2.0}))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: missing key `rope_scaling.rope_type` (required by llama)"
    );
    let e = LlamaArgs::from_config(&with(llama(), "rope_scaling", json!({"type": "linear"})))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.json: missing key `rope_scaling.factor` (required by llama)"
    );
}

#[test]
fn transformers_v5_rope_parameters_are_read() {
    let mut config = without(without(llama(), "rope_scaling"), "rope_theta");
    config["rope_parameters"] = json!({"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6});
    let parsed = Config::<LlamaArgs>::parse(&config).expect("parses");
    assert_eq!(parsed.args.rope_theta, 1e6);
    assert_eq!(
        parsed.args.rope_scaling,
        Some(RopeScaling::Linear { factor: 4.0 })
    );
    let unknown: Vec<&str> = parsed.unknown_keys().map(|u| u.key.as_str()).collect();
    assert!(
        !unknown.iter().any(|k| k.starts_with("rope_parameters")),
        "{unknown:?}"
    );
    let again = Config::<LlamaArgs>::parse(&parsed.to_json()).expect("parses");
    assert_eq!(again.args, parsed.args);
}

#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(text_config)]
struct Gemma3Args {
    model_type: String,
    hidden_size: usize,
    #[arg(default = 262208)]
    vocab_size: usize,
    #[arg(rename = "sliding-window")]
    sliding_window: Option<usize>,
}

#[test]
fn text_config_values_win_over_the_top_level() {
    let config = json!({
        "model_type": "gemma3",
        "vocab_size": 1000,
        "text_config": {"model_type": "gemma3_text", "hidden_size": 32, "vocab_size": 2000},
        "vision_config": {"hidden_size": 16},
        "sliding-window": 512
    });
    let parsed = Config::<Gemma3Args>::parse(&config).expect("parses");
    assert_eq!(parsed.args.model_type, "gemma3_text");
    assert_eq!(parsed.args.vocab_size, 2000);
    assert_eq!(parsed.args.hidden_size, 32);
    assert_eq!(
        parsed.args.sliding_window,
        Some(512),
        "top-level keys fill what text_config lacks"
    );
    let unknown: Vec<&str> = parsed.unknown_keys().map(|u| u.key.as_str()).collect();
    assert_eq!(unknown, ["vision_config"]);
    let written = parsed.to_json();
    assert_eq!(
        written["model_type"], "gemma3",
        "the top-level model_type stays for the registry"
    );
    assert_eq!(written["text_config"]["vocab_size"], 2000);
    assert_eq!(
        Config::<Gemma3Args>::parse(&written).expect("parses"),
        parsed
    );
}

#[test]
fn a_config_round_trips_through_json() {
    let original = llama();
    let parsed = Config::<LlamaArgs>::parse(&original).expect("parses");
    assert_eq!(
        parsed.to_json(),
        original,
        "every key written back where it was"
    );
    let again = Config::<LlamaArgs>::parse(&parsed.to_json()).expect("parses");
    assert_eq!(again, parsed);
}

#[test]
fn written_args_parse_to_the_same_args() {
    for rope in [
        json!({"type": "linear", "factor": 2.0}),
        json!({"rope_type": "yarn", "factor": 4.0}),
        json!({"rope_type": "default"}),
        json!({"type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [2.0, 3.0]}),
    ] {
        let a = LlamaArgs::from_config(&with(
            without(llama(), "rms_norm_eps"),
            "rope_scaling",
            rope,
        ))
        .expect("parses");
        let b = LlamaArgs::from_config(&a.to_config()).expect("parses back");
        assert_eq!(a, b);
    }
    let written = LlamaArgs::from_config(&llama())
        .expect("parses")
        .to_config();
    assert_eq!(
        written["rms_norm_eps"],
        json!(1e-6),
        "f32 written in its shortest decimal form"
    );
    assert!(
        written.get("kv_heads").is_none(),
        "skipped fields are not written"
    );
    assert!(
        written.get("max_position_embeddings").is_none(),
        "absent options are left out"
    );
}

#[test]
fn errors_are_values_for_odd_inputs() {
    for odd in [
        json!(null),
        json!([1, 2]),
        json!("llama"),
        json!({"model_type": 3}),
    ] {
        assert!(LlamaArgs::from_config(&odd).is_err(), "{odd}");
    }
    let e = LlamaArgs::from_json("{not json").unwrap_err();
    assert!(
        e.to_string().starts_with("config.json: not valid JSON"),
        "{e}"
    );
    let e = Config::<LlamaArgs>::from_file("/nonexistent/config.json").unwrap_err();
    assert_eq!(e.file(), "/nonexistent/config.json");
}

/// An architecture that extends llama's config, as smollm3 does.
#[derive(Debug, Clone, PartialEq, ModelArgs)]
#[arg(validate = Self::check)]
struct ExtendedArgs {
    #[arg(flatten)]
    base: LlamaArgs,
    #[arg(default = 4, positive)]
    no_rope_layer_interval: usize,
    no_rope_layers: Option<Vec<i64>>,
}

impl ExtendedArgs {
    fn check(&mut self) -> Result<(), ArgsError> {
        let layers = self.base.num_hidden_layers;
        let interval = self.no_rope_layer_interval;
        let rope = self.no_rope_layers.get_or_insert_with(|| {
            (0..layers)
                .map(|i| i64::from((i + 1) % interval != 0))
                .collect()
        });
        if rope.len() != layers {
            return Err(ArgsError::invalid(
                &["no_rope_layers"],
                format!("{} entries for {layers} layers", rope.len()),
            ));
        }
        Ok(())
    }
}

#[test]
fn flatten_reads_the_base_from_the_same_object() {
    let mut config = llama();
    config["no_rope_layer_interval"] = json!(2);
    config["no_rope_layerz"] = json!([1, 1]);
    let parsed = Config::<ExtendedArgs>::parse(&config).unwrap();
    let args = &parsed.args;
    // The base's own defaults, aliases and hook ran.
    assert_eq!(args.base, LlamaArgs::from_config(&llama()).unwrap());
    assert_eq!(args.base.kv_heads, 2);
    // The one flattened field is reached through `Deref`, as a base class's fields are.
    assert_eq!((args.hidden_size, args.kv_heads), (64, 2));
    let mut args = args.clone();
    args.hidden_size = 128;
    assert_eq!(args.base.hidden_size, 128);
    assert_eq!(args.no_rope_layer_interval, 2);
    assert_eq!(args.no_rope_layers.as_deref(), Some(&[1, 0][..]));
    // Keys of the base and of the extension are both known; a misspelling of either is seen.
    let unknown: Vec<&str> = parsed.unknown_keys().map(|u| u.key.as_str()).collect();
    assert_eq!(unknown, ["architectures", "no_rope_layerz", "torch_dtype"]);
    assert_eq!(parsed.typos()[0].suggestion, "no_rope_layers");

    // Written back: one flat object again, which parses to the same args.
    let args = &parsed.args;
    let written = args.to_config();
    assert_eq!(written["hidden_size"], json!(64));
    assert_eq!(written["no_rope_layer_interval"], json!(2));
    assert!(written.get("base").is_none(), "{written}");
    assert_eq!(ExtendedArgs::from_config(&written).unwrap(), *args);
}

#[test]
fn flatten_errors_name_the_key_and_run_both_hooks() {
    let mut missing = llama();
    missing.as_object_mut().unwrap().remove("hidden_size");
    let err = ExtendedArgs::from_config(&missing).unwrap_err();
    assert!(
        matches!(err.kind(), ArgsErrorKind::MissingKey { key, .. } if key == "hidden_size"),
        "{err}"
    );

    let mut bad_base = llama();
    bad_base["num_key_value_heads"] = json!(3);
    let err = ExtendedArgs::from_config(&bad_base).unwrap_err();
    assert!(err.to_string().contains("not a multiple"), "{err}");

    let mut bad_extension = llama();
    bad_extension["no_rope_layers"] = json!([1, 1, 1]);
    let err = ExtendedArgs::from_config(&bad_extension).unwrap_err();
    assert!(err.to_string().contains("3 entries for 2 layers"), "{err}");
}

/// An architecture's own check (gpt_oss): the reference's defaults, its default layer types
/// (sliding and full alternating), and errors that name the keys.
#[test]
fn gpt_oss_defaults_and_checks() {
    use mlx_models_zoo::gpt_oss::GptOssArgs;
    let args = GptOssArgs::from_config(&json!({"model_type": "gpt_oss"})).expect("defaults");
    assert_eq!(
        (
            args.hidden_size,
            args.num_hidden_layers,
            args.num_local_experts
        ),
        (2880, 36, 128)
    );
    let types = args.layer_types.clone().expect("filled in");
    assert_eq!(types.len(), 36);
    assert_eq!(types[..2], ["sliding_attention", "full_attention"]);

    // gpt-oss-20b's config.json (yarn with a `truncate` the reference does not read).
    let released = json!({
        "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "num_hidden_layers": 24,
        "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4,
        "hidden_size": 2880, "intermediate_size": 2880, "head_dim": 64,
        "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
        "rope_theta": 150000, "max_position_embeddings": 131072, "swiglu_limit": 7.0,
        "tie_word_embeddings": false, "attention_bias": true, "hidden_act": "silu",
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 4096,
                         "truncate": false},
        "quantization_config": {"quant_method": "mxfp4",
                                "modules_to_not_convert": ["model.layers.*.self_attn"]},
    });
    let args = GptOssArgs::from_config(&released).expect("parses");
    assert!(args.rope().is_ok());
    assert_eq!(args.layer_types.map(|t| t.len()), Some(24));

    let small = |extra: serde_json::Value| {
        let mut c = json!({"model_type": "gpt_oss", "num_hidden_layers": 3});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        GptOssArgs::from_config(&c).map_err(|e| {
            let keys: Vec<String> = e.keys().iter().map(|k| k.to_string()).collect();
            (e.to_string(), keys)
        })
    };
    let (msg, _) = small(json!({"num_hidden_layers": 2147483646})).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, keys) = small(json!({})).unwrap_err();
    assert!(msg.contains("must be even"), "{msg}");
    assert_eq!(keys, ["layer_types", "num_hidden_layers"]);
    let types = json!(["sliding_attention", "full_attention", "sliding_attention"]);
    assert!(small(json!({"layer_types": types})).is_ok());
    let (msg, _) = small(json!({"layer_types": ["full_attention"]})).unwrap_err();
    assert!(msg.contains("1 entries for 3 layers"), "{msg}");
    let (msg, _) =
        small(json!({"layer_types": ["full_attention", "full_attention", "full_attention"]}))
            .unwrap_err();
    assert!(msg.contains("no `sliding_attention` layer"), "{msg}");
    let (msg, _) =
        small(json!({"layer_types": ["linear_attention", "full_attention", "full_attention"]}))
            .unwrap_err();
    assert!(msg.contains("unknown layer type"), "{msg}");
    let (_, keys) = small(json!({"num_experts_per_tok": 200, "layer_types": types})).unwrap_err();
    assert_eq!(keys, ["num_local_experts", "num_experts_per_tok"]);
    let (_, keys) = small(json!({"num_key_value_heads": 5, "layer_types": types})).unwrap_err();
    assert_eq!(keys, ["num_attention_heads", "num_key_value_heads"]);
    let yarn =
        json!({"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096});
    assert!(small(json!({"rope_scaling": yarn, "layer_types": types})).is_ok());
    let (_, keys) =
        small(json!({"rope_scaling": {"rope_type": "nope"}, "layer_types": types})).unwrap_err();
    assert_eq!(keys, ["rope_scaling"]);
}

/// Mixture-of-experts configs: experts per token beyond the experts, groups that do not split
/// them, a routing the reference does not have, a rotated share that leaves no pair, each an
/// error naming its keys, before anything is built.
#[test]
fn hostile_expert_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::glm4_moe::Glm4MoeArgs;
    use mlx_models_zoo::mixtral::MixtralArgs;
    use mlx_models_zoo::qwen3_moe::Qwen3MoeArgs;
    let qwen3 = json!({
        "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 9, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "moe_intermediate_size": 32, "norm_topk_prob": true,
        "rms_norm_eps": 1e-6, "vocab_size": 256, "max_position_embeddings": 64,
        "rope_theta": 1e6, "tie_word_embeddings": false,
    });
    let err = Config::<Qwen3MoeArgs>::parse(&qwen3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.json: `num_experts_per_tok` (9) must be between 1 and `num_experts` (8)"
    );
    // Every layer dense: the per-token count is not checked against no experts.
    let dense = with(
        with(qwen3.clone(), "num_experts", json!(0)),
        "mlp_only_layers",
        json!([0, 1]),
    );
    assert!(Config::<Qwen3MoeArgs>::parse(&dense).is_ok());
    let huge = with(qwen3, "num_experts", json!(1u64 << 40));
    let err = Config::<Qwen3MoeArgs>::parse(&huge)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`num_experts`") && err.contains("at most 2147483647"),
        "{err}"
    );

    let mixtral =
        json!({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 0});
    let err = Config::<MixtralArgs>::parse(&mixtral)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`num_experts_per_tok`"), "{err}");

    let glm = json!({
        "model_type": "glm4_moe", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "max_position_embeddings": 64, "moe_intermediate_size": 32, "norm_topk_prob": true,
        "num_attention_heads": 4, "n_group": 3, "head_dim": 16, "topk_group": 1,
        "n_shared_experts": 1, "n_routed_experts": 8, "routed_scaling_factor": 1.0,
        "num_experts_per_tok": 2, "first_k_dense_replace": 0, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 1e4, "rope_scaling": null,
        "use_qk_norm": false, "tie_word_embeddings": false, "attention_bias": false,
        "partial_rotary_factor": 0.5,
    });
    let err = Config::<Glm4MoeArgs>::parse(&glm).unwrap_err().to_string();
    assert_eq!(err, "config.json: 8 experts do not split into 3 groups");
    let glm = with(glm, "n_group", json!(4));
    assert!(Config::<Glm4MoeArgs>::parse(&glm).is_ok());
    let err = Config::<Glm4MoeArgs>::parse(&with(glm.clone(), "topk_method", json!("greedy")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`greedy`") && err.contains("noaux_tc"),
        "{err}"
    );
    let err = Config::<Glm4MoeArgs>::parse(&with(glm, "partial_rotary_factor", json!(0.01)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`partial_rotary_factor`"), "{err}");
}

/// The recurrent hybrids' layer patterns and sizes: a period of 0, an offset past its period,
/// heads that do not divide, an unknown block type, a width past MLX's limit, each a one-line
/// error naming its keys, before anything is built.
#[test]
fn hostile_hybrid_patterns_are_refused_with_their_keys() {
    use mlx_models_zoo::jamba::JambaArgs;
    use mlx_models_zoo::plamo2::Plamo2Args;
    use mlx_models_zoo::recurrent_gemma::RecurrentGemmaArgs;
    let jamba = json!({
        "model_type": "jamba", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "attn_layer_period": 4, "attn_layer_offset": 2, "expert_layer_period": 2,
        "expert_layer_offset": 1, "mamba_d_conv": 4, "mamba_d_state": 8, "mamba_expand": 2,
        "num_experts": 4, "num_experts_per_tok": 2, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
    });
    let parsed = Config::<JambaArgs>::parse(&jamba).unwrap().args;
    let kinds: Vec<bool> = (0..4).map(|i| parsed.is_attention(i)).collect();
    assert_eq!(kinds, [false, false, true, false]);
    let sparse: Vec<bool> = (0..4).map(|i| parsed.is_sparse(i)).collect();
    assert_eq!(sparse, [false, true, false, true]);
    let err = |v: serde_json::Value| Config::<JambaArgs>::parse(&v).unwrap_err().to_string();
    assert_eq!(
        err(with(jamba.clone(), "attn_layer_offset", json!(4))),
        "config.json: `attn_layer_offset` (4) must be below `attn_layer_period` (4)"
    );
    assert_eq!(
        err(with(jamba.clone(), "expert_layer_offset", json!(7))),
        "config.json: `expert_layer_offset` (7) must be below `expert_layer_period` (2)"
    );
    assert!(err(with(jamba.clone(), "attn_layer_period", json!(0))).contains("`attn_layer_period`"));
    assert!(
        err(with(jamba.clone(), "num_key_value_heads", json!(3))).contains("`num_key_value_heads`")
    );
    assert!(
        err(with(jamba.clone(), "num_experts_per_tok", json!(5))).contains("`num_experts_per_tok`")
    );
    assert!(err(with(jamba.clone(), "mamba_dt_rank", json!("big"))).contains("`mamba_dt_rank`"));
    let huge = with(jamba.clone(), "mamba_expand", json!(1 << 30));
    assert!(err(huge).contains("exceeds MLX's size limit"));
    let types = with(
        jamba.clone(),
        "layers_block_type",
        json!(["mamba", "attention", "mamba", "ssm"]),
    );
    assert!(err(types).contains("unknown layer type \"ssm\""));
    let short = with(jamba, "layers_block_type", json!(["mamba"]));
    assert_eq!(
        err(short),
        "config.json: `layers_block_type` has 1 entries for 4 layers"
    );

    let griffin = json!({
        "model_type": "recurrent_gemma", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
        "conv1d_width": 4, "logits_soft_cap": 30.0, "rms_norm_eps": 1e-6,
        "attention_window_size": 16, "_block_types": ["recurrent", "recurrent", "attention"],
    });
    let parsed = Config::<RecurrentGemmaArgs>::parse(&griffin).unwrap().args;
    let kinds: Vec<bool> = (0..4).map(|i| parsed.is_attention(i)).collect();
    assert_eq!(kinds, [false, false, true, false]);
    let err = |v: serde_json::Value| {
        Config::<RecurrentGemmaArgs>::parse(&v)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(with(griffin.clone(), "_block_types", json!([]))),
        "config.json: `block_types` is empty"
    );
    assert!(
        err(with(griffin.clone(), "block_types", json!(["mlp"]))).contains("unknown block type")
    );
    assert!(err(with(griffin.clone(), "num_attention_heads", json!(3)))
        .contains("`num_attention_heads`"));
    assert!(err(with(griffin.clone(), "num_attention_heads", json!(32))).contains("multiple of 4"));
    assert!(
        err(with(griffin, "attention_window_size", json!(0))).contains("`attention_window_size`")
    );

    let plamo = json!({"model_type": "plamo2", "hidden_size": 64, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "hidden_size_per_head": 16});
    let parsed = Config::<Plamo2Args>::parse(&plamo).unwrap().args;
    assert!(parsed.is_mamba(0) && !parsed.is_mamba(1));
    let err = |v: serde_json::Value| Config::<Plamo2Args>::parse(&v).unwrap_err().to_string();
    assert_eq!(
        err(with(plamo.clone(), "mamba_step", json!(1))),
        "config.json: `mamba_step` (1) must be at least 2"
    );
    assert!(
        err(with(plamo.clone(), "num_key_value_heads", json!(3))).contains("`num_key_value_heads`")
    );
    assert!(
        err(with(plamo, "mamba_num_heads", json!(1 << 30))).contains("exceeds MLX's size limit")
    );
}

/// Hybrid Mamba2 / attention configs: a layer pattern that disagrees with the layer count, an
/// unknown block, heads that groups do not divide, a Mamba2 or MoE layer without its keys, an
/// absurd stack, each an error naming its keys, before anything is built.
#[test]
fn hostile_hybrid_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::falcon_h1::FalconH1Args;
    use mlx_models_zoo::granitemoehybrid::GraniteMoeHybridArgs;
    use mlx_models_zoo::nemotron_h::NemotronHArgs;
    fn keys<T: ModelArgs>(config: &serde_json::Value) -> (String, Vec<String>) {
        let Err(err) = Config::<T>::parse(config) else {
            panic!("a hostile config parsed: {config}");
        };
        let keys = err.keys().iter().map(|k| k.to_string()).collect();
        (err.to_string(), keys)
    }

    let nemotron = json!({
        "model_type": "nemotron_h", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "max_position_embeddings": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "attention_bias": false, "mamba_num_heads": 8,
        "mamba_head_dim": 16, "mamba_proj_bias": false, "ssm_state_size": 16, "conv_kernel": 4,
        "n_groups": 2, "mlp_bias": false, "layer_norm_epsilon": 1e-5, "use_bias": false,
        "use_conv_bias": true, "hybrid_override_pattern": "M*M-",
    });
    let args = Config::<NemotronHArgs>::parse(&nemotron).expect("a valid config");
    assert_eq!(
        (args.args.num_hidden_layers, args.args.blocks.len()),
        (Some(4), 4)
    );
    let names = with(
        without(nemotron.clone(), "hybrid_override_pattern"),
        "layers_block_type",
        json!(["mamba", "attention", "mlp"]),
    );
    assert_eq!(
        Config::<NemotronHArgs>::parse(&names)
            .expect("names")
            .args
            .blocks,
        ['M', '*', '-']
    );
    let (msg, k) = keys::<NemotronHArgs>(&with(nemotron.clone(), "num_hidden_layers", json!(6)));
    assert_eq!(k, ["hybrid_override_pattern", "num_hidden_layers"], "{msg}");
    let (msg, k) = keys::<NemotronHArgs>(&with(
        nemotron.clone(),
        "hybrid_override_pattern",
        json!("M*X"),
    ));
    assert!(
        k == ["hybrid_override_pattern"] && msg.contains("\"X\""),
        "{msg}"
    );
    let (msg, _) =
        keys::<NemotronHArgs>(&with(names, "layers_block_type", json!(["mamba", "gru"])));
    assert!(msg.contains("\"gru\""), "{msg}");
    let (msg, k) = keys::<NemotronHArgs>(&without(nemotron.clone(), "hybrid_override_pattern"));
    assert_eq!(k, ["hybrid_override_pattern"], "{msg}");
    let huge = "M".repeat(70_000);
    let (msg, _) = keys::<NemotronHArgs>(&with(
        nemotron.clone(),
        "hybrid_override_pattern",
        json!(huge),
    ));
    assert!(msg.contains("absurd"), "{msg}");
    let (msg, k) = keys::<NemotronHArgs>(&with(nemotron.clone(), "n_groups", json!(3)));
    assert_eq!(k, ["mamba_num_heads", "n_groups"], "{msg}");
    let (msg, k) =
        keys::<NemotronHArgs>(&with(nemotron.clone(), "mamba_head_dim", json!(1u64 << 30)));
    assert!(
        k.contains(&"mamba_head_dim".to_string()) && msg.contains("size limit"),
        "{msg}"
    );
    let moe = with(nemotron, "hybrid_override_pattern", json!("ME"));
    let (msg, k) = keys::<NemotronHArgs>(&moe);
    assert_eq!(k, ["n_routed_experts"], "{msg}");

    let granite = json!({
        "model_type": "granitemoehybrid", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 48, "num_hidden_layers": 2, "max_position_embeddings": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "attention_bias": false,
        "embedding_multiplier": 12.0, "attention_multiplier": 0.0625, "logits_scaling": 4.0,
        "residual_multiplier": 0.22, "layer_types": ["mamba", "attention"], "rms_norm_eps": 1e-6,
        "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_d_conv": 4,
        "mamba_n_groups": 1,
    });
    assert!(Config::<GraniteMoeHybridArgs>::parse(&granite).is_ok());
    let (msg, k) =
        keys::<GraniteMoeHybridArgs>(&with(granite.clone(), "num_hidden_layers", json!(3)));
    assert_eq!(k, ["layer_types", "num_hidden_layers"], "{msg}");
    let (msg, k) = keys::<GraniteMoeHybridArgs>(&with(
        granite.clone(),
        "layer_types",
        json!(["mamba", "rwkv"]),
    ));
    assert!(k == ["layer_types"] && msg.contains("\"rwkv\""), "{msg}");
    let (msg, k) = keys::<GraniteMoeHybridArgs>(&without(granite.clone(), "mamba_d_state"));
    assert_eq!(k, ["mamba_d_state"], "{msg}");
    let experts = with(
        with(granite.clone(), "num_local_experts", json!(4)),
        "num_experts_per_tok",
        json!(2),
    );
    let (msg, k) = keys::<GraniteMoeHybridArgs>(&experts);
    assert_eq!(k, ["shared_intermediate_size"], "{msg}");
    let (msg, k) = keys::<GraniteMoeHybridArgs>(&with(experts, "num_experts_per_tok", json!(5)));
    assert_eq!(k, ["num_local_experts", "num_experts_per_tok"], "{msg}");
    let (msg, k) = keys::<GraniteMoeHybridArgs>(&with(granite, "num_attention_heads", json!(5)));
    assert!(k.contains(&"num_attention_heads".to_string()), "{msg}");

    let falcon = json!({
        "model_type": "falcon_h1", "hidden_size": 64, "head_dim": 16, "num_attention_heads": 4,
        "num_key_value_heads": 2, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16,
        "num_hidden_layers": 2, "vocab_size": 256,
    });
    let args = Config::<FalconH1Args>::parse(&falcon).expect("a valid config");
    assert_eq!(args.args.mamba_d_ssm, Some(128));
    let (msg, k) = keys::<FalconH1Args>(&with(falcon.clone(), "mamba_d_ssm", json!(1536)));
    assert_eq!(k, ["mamba_d_ssm", "mamba_n_heads", "mamba_d_head"], "{msg}");
    let (msg, k) =
        keys::<FalconH1Args>(&with(falcon.clone(), "ssm_multipliers", json!([1.0, 2.0])));
    assert_eq!(k, ["ssm_multipliers"], "{msg}");
    let (msg, k) = keys::<FalconH1Args>(&with(
        falcon.clone(),
        "num_hidden_layers",
        json!(1u64 << 20),
    ));
    assert_eq!(k, ["num_hidden_layers"], "{msg}");
    let (msg, k) = keys::<FalconH1Args>(&with(falcon, "mamba_n_groups", json!(3)));
    assert_eq!(k, ["mamba_n_heads", "mamba_n_groups"], "{msg}");
}

/// The hybrid gated delta configs (qwen3_next, qwen3_5): value heads that the key heads do
/// not divide, zero sizes, a zero attention interval, a rotated share that leaves no pair and
/// experts per token beyond the experts are errors naming their keys, before anything is
/// built; qwen3_5 reads `text_config` and takes RoPE from `rope_parameters`, its default when
/// absent (whatever `rope_theta` says) and `rope_theta` / `partial_rotary_factor` when it is empty.
#[test]
fn hostile_gated_delta_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::qwen3_5::Qwen35Args;
    use mlx_models_zoo::qwen3_next::Qwen3NextArgs;
    let next = json!({
        "model_type": "qwen3_next", "hidden_size": 64, "num_hidden_layers": 3,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 32, "linear_num_value_heads": 5, "linear_num_key_heads": 2,
        "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
        "num_experts": 8, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
        "shared_expert_intermediate_size": 64, "mlp_only_layers": [], "moe_intermediate_size": 32,
        "rms_norm_eps": 1e-6, "vocab_size": 256, "rope_theta": 1e4, "partial_rotary_factor": 0.25,
        "max_position_embeddings": 64, "full_attention_interval": 3,
    });
    let err = |v: &serde_json::Value| Config::<Qwen3NextArgs>::parse(v).unwrap_err().to_string();
    assert_eq!(
        err(&next),
        "config.json: `linear_num_value_heads` (5) is not divisible by `linear_num_key_heads` (2)"
    );
    let next = with(next, "linear_num_value_heads", json!(4));
    assert!(Config::<Qwen3NextArgs>::parse(&next).is_ok());
    for key in [
        "linear_key_head_dim",
        "linear_conv_kernel_dim",
        "full_attention_interval",
    ] {
        let e = err(&with(next.clone(), key, json!(0)));
        assert!(e.contains(&format!("`{key}`")), "{e}");
    }
    let e = err(&with(next.clone(), "partial_rotary_factor", json!(0.01)));
    assert!(e.contains("`partial_rotary_factor`"), "{e}");
    let e = err(&with(next.clone(), "num_experts_per_tok", json!(9)));
    assert!(e.contains("`num_experts_per_tok` (9)"), "{e}");
    let e = err(&with(
        next.clone(),
        "shared_expert_intermediate_size",
        json!(0),
    ));
    assert!(e.contains("`shared_expert_intermediate_size`"), "{e}");
    let e = err(&with(next, "linear_key_head_dim", json!(1u64 << 30)));
    assert!(e.contains("size limit"), "{e}");

    let text = json!({
        "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "linear_num_value_heads": 4, "linear_num_key_heads": 3,
    });
    let qwen35 = json!({"model_type": "qwen3_5", "rope_theta": 5000.0, "text_config": text});
    let err = |v: &serde_json::Value| Config::<Qwen35Args>::parse(v).unwrap_err().to_string();
    let e = err(&qwen35);
    assert!(e.contains("`linear_num_value_heads` (4)"), "{e}");
    let qwen35 = json!({"model_type": "qwen3_5", "rope_theta": 5000.0,
                        "text_config": with(text.clone(), "linear_num_key_heads", json!(2))});
    let args = Config::<Qwen35Args>::parse(&qwen35).unwrap().args;
    assert_eq!((args.head_dim(), args.vocab_size), (16, 151936));
    assert_eq!(args.rope().unwrap().base, 100000.0);
    let text = with(text, "linear_num_key_heads", json!(2));
    let empty = json!({"model_type": "qwen3_5",
                       "text_config": with(with(text, "rope_parameters", json!({})), "rope_theta", json!(5000.0))});
    assert_eq!(
        Config::<Qwen35Args>::parse(&empty)
            .unwrap()
            .args
            .rope()
            .unwrap()
            .base,
        5000.0
    );
    let e = err(&with(
        qwen35.clone(),
        "rope_parameters",
        json!({"partial_rotary_factor": 0.01}),
    ));
    assert!(e.contains("`partial_rotary_factor`"), "{e}");
    let e = err(&with(
        with(qwen35, "num_experts", json!(4)),
        "num_experts_per_tok",
        json!(0),
    ));
    assert!(e.contains("`num_experts_per_tok` (0)"), "{e}");
}

/// The text models of multimodal checkpoints read `text_config` as the reference's wrappers
/// do: that object alone (the top level is not a fallback), with what the wrapper puts in
/// (gemma3's top-level vocabulary and default heads), or the whole config where the wrapper
/// allows a flat one (qwen2_vl); a missing or malformed `text_config` is a one-line error.
#[test]
fn multimodal_text_configs_are_read_as_the_reference_reads_them() {
    use mlx_models_zoo::gemma3::Gemma3Args;
    use mlx_models_zoo::lfm2_vl::Lfm2VlArgs;
    use mlx_models_zoo::pixtral::PixtralArgs;
    use mlx_models_zoo::qwen2_vl::Qwen2VlArgs;

    let text = json!({
        "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "head_dim": 16, "vocab_size": 300,
    });
    let gemma3 = json!({"model_type": "gemma3", "text_config": text, "vocab_size": 256});
    let args = Gemma3Args::from_config(&gemma3).expect("parses");
    assert_eq!(args.vocab_size, 256, "the top level's vocabulary wins");
    assert_eq!((args.num_attention_heads, args.num_key_value_heads), (8, 4));
    let args = Gemma3Args::from_config(&without(gemma3.clone(), "vocab_size")).expect("parses");
    assert_eq!(args.vocab_size, 262208);
    // Only `text_config` is read: a top-level width does not reach the text model.
    let args =
        Gemma3Args::from_config(&with(gemma3.clone(), "hidden_size", json!(999))).expect("parses");
    assert_eq!(args.hidden_size, 64);

    let missing = Gemma3Args::from_config(&without(gemma3.clone(), "text_config")).unwrap_err();
    let msg = missing.to_string();
    assert!(
        msg.contains("`text_config`") && !msg.contains('\n'),
        "{msg}"
    );
    let wrong = Gemma3Args::from_config(&with(gemma3.clone(), "text_config", json!([1])));
    let msg = wrong.unwrap_err().to_string();
    assert!(
        msg.contains("text_config") && msg.contains("an object"),
        "{msg}"
    );
    // Errors inside the text config carry its path.
    let bad_text = with(text.clone(), "hidden_size", json!("wide"));
    let msg = Gemma3Args::from_config(&with(gemma3, "text_config", bad_text))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("text_config.hidden_size"), "{msg}");

    // qwen2_vl: a flat config is the text config; with `text_config`, only that is read.
    let qwen = json!({
        "model_type": "qwen2_vl", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "vocab_size": 256, "rope_theta": 1e6,
    });
    let flat = Qwen2VlArgs::from_config(&qwen).expect("parses");
    assert_eq!(flat.text.hidden_size, 64);
    let nested = json!({"model_type": "qwen2_vl", "text_config": with(qwen.clone(), "hidden_size", json!(32))});
    assert_eq!(
        Qwen2VlArgs::from_config(&nested)
            .expect("parses")
            .text
            .hidden_size,
        32
    );
    // lfm2-vl has no flat form.
    let lfm2 = json!({"model_type": "lfm2-vl", "hidden_size": 64});
    assert!(Lfm2VlArgs::from_config(&lfm2)
        .unwrap_err()
        .to_string()
        .contains("text_config"));
    // pixtral's head is never tied, and its text config defaults to 32 query heads.
    let pixtral = json!({"model_type": "pixtral", "text_config": without(with(qwen, "tie_word_embeddings", json!(true)), "num_attention_heads")});
    let args = PixtralArgs::from_config(&with(pixtral, "num_attention_heads", json!(4)));
    let args = args.expect("parses");
    assert!(!args.tie_word_embeddings);
    assert_eq!(args.num_attention_heads, 32, "the top level is not read");
    // gemma4: no `text_config` is an empty one (the text model's defaults), with the top
    // level's vocabulary (262144 by default) and 8 / 1 heads.
    let args = mlx_models_zoo::gemma4::Gemma4Args::from_config(&json!({"model_type": "gemma4"}))
        .expect("parses");
    assert_eq!(args.vocab_size, 262144);
    assert_eq!((args.num_attention_heads, args.num_key_value_heads), (8, 1));

    // mistral3 picks its text model by `text_config.model_type`, refusing mistral4 by name.
    use mlx_models_zoo::mistral3::{Mistral3Args, Mistral3TextArgs};
    let text = json!({
        "model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "vocab_size": 256,
    });
    let mistral3 = json!({"model_type": "mistral3", "text_config": text});
    let args = Mistral3Args::from_config(&mistral3).expect("parses");
    let Mistral3TextArgs::Llama(llama) = &args.text else {
        panic!("a `mistral` text config is llama's: {args:?}");
    };
    assert!(
        !llama.tie_word_embeddings,
        "untied unless the text config says so"
    );
    let mistral4 = json!({"model_type": "mistral3", "text_config": with(text, "model_type", json!("mistral4"))});
    let msg = Mistral3Args::from_config(&mistral4)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mistral4") && !msg.contains('\n'), "{msg}");
}

/// The dense architectures helium, mimo, internlm3, exaone, olmo3, exaone4, internlm2 and
/// qwen: heads that do not divide, an absurd stack, and each one's own rules (internlm3's and
/// internlm2's RoPE scaling types, olmo3's default and checked layer types, exaone4's pattern,
/// qwen's head width) are one-line errors naming their keys, before anything is built.
#[test]
fn hostile_dense_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::exaone::ExaoneArgs;
    use mlx_models_zoo::exaone4::Exaone4Args;
    use mlx_models_zoo::helium::HeliumArgs;
    use mlx_models_zoo::internlm2::InternLm2Args;
    use mlx_models_zoo::internlm3::InternLm3Args;
    use mlx_models_zoo::mimo::MimoArgs;
    use mlx_models_zoo::olmo3::Olmo3Args;
    use mlx_models_zoo::qwen::QwenArgs;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "hidden_size": 64, "num_hidden_layers": 2, "num_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "layer_norm_epsilon": 1e-6, "vocab_size": 256, "head_dim": 16,
        "max_position_embeddings": 4096, "attention_bias": false, "mlp_bias": false,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "sliding_window": 8,
    });
    let of = |model_type: &str, key: &str, value: serde_json::Value| {
        with(
            with(base.clone(), "model_type", json!(model_type)),
            key,
            value,
        )
    };

    let helium = |k: &str, v| HeliumArgs::from_config(&of("helium", k, v)).map_err(keys);
    let mimo = |k: &str, v| MimoArgs::from_config(&of("mimo", k, v)).map_err(keys);
    let internlm3 = |k: &str, v| InternLm3Args::from_config(&of("internlm3", k, v)).map_err(keys);
    let exaone = |k: &str, v| ExaoneArgs::from_config(&of("exaone", k, v)).map_err(keys);
    let olmo3 = |k: &str, v| Olmo3Args::from_config(&of("olmo3", k, v)).map_err(keys);
    let exaone4 = |k: &str, v| Exaone4Args::from_config(&of("exaone4", k, v)).map_err(keys);
    let internlm2 = |k: &str, v| InternLm2Args::from_config(&of("internlm2", k, v)).map_err(keys);
    // qwen's heads are `kv_channels` wide: 16 for the base's 64 over 4 heads.
    let qwen = |k: &str, v| {
        let config = with(of("qwen", "kv_channels", json!(16)), k, v);
        QwenArgs::from_config(&config).map_err(keys)
    };

    let heads = ["num_attention_heads", "num_key_value_heads"];
    for (name, result) in [
        ("helium", helium("num_key_value_heads", json!(3)).map(drop)),
        ("mimo", mimo("num_key_value_heads", json!(3)).map(drop)),
        (
            "internlm3",
            internlm3("num_key_value_heads", json!(3)).map(drop),
        ),
        ("exaone", exaone("num_key_value_heads", json!(3)).map(drop)),
        ("olmo3", olmo3("num_key_value_heads", json!(3)).map(drop)),
        (
            "exaone4",
            exaone4("num_key_value_heads", json!(3)).map(drop),
        ),
        (
            "internlm2",
            internlm2("num_key_value_heads", json!(3)).map(drop),
        ),
    ] {
        let (msg, k) = result.expect_err(name);
        assert!(!msg.contains('\n'), "{name}: {msg}");
        assert_eq!(k, heads, "{name}: {msg}");
    }
    // Without an explicit head width the heads must split the width (helium never reads one).
    let (msg, k) = helium("num_attention_heads", json!(6)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, _) = mimo("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) = exaone("num_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    assert_eq!(k, ["num_layers"]);
    let (msg, _) = helium("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");

    // internlm3 takes linear or dynamic NTK scaling, spelled with `rope_type` and `factor`.
    let linear = json!({"rope_type": "linear", "factor": 2.0});
    assert!(internlm3("rope_scaling", linear).is_ok());
    let (msg, k) = internlm3("rope_scaling", json!({"type": "linear", "factor": 2.0})).unwrap_err();
    assert_eq!(k, ["rope_scaling"], "{msg}");
    let yarn = json!({"rope_type": "yarn", "factor": 2.0});
    let (msg, k) = internlm3("rope_scaling", yarn).unwrap_err();
    assert!(msg.contains("\"linear\" or \"dynamic\""), "{msg}");
    assert_eq!(k, ["rope_scaling"]);
    let args = internlm3("num_key_value_heads", json!(null)).expect("parses");
    assert_eq!(args.num_key_value_heads, Some(4));

    // olmo3: every fourth layer full by default; a listed one is checked.
    let args = olmo3("num_hidden_layers", json!(5)).expect("parses");
    let types = args.layer_types.expect("filled in");
    assert_eq!(types[2..4], ["sliding_attention", "full_attention"]);
    let (msg, k) = olmo3("layer_types", json!(["full_attention"])).unwrap_err();
    assert!(msg.contains("1 entries for 2 layers"), "{msg}");
    assert_eq!(k, ["layer_types", "num_hidden_layers"]);
    let (msg, _) = olmo3(
        "layer_types",
        json!(["sliding_attention", "sliding_attention"]),
    )
    .unwrap_err();
    assert!(msg.contains("no `full_attention` layer"), "{msg}");
    let (msg, k) = olmo3("sliding_window", json!(0)).unwrap_err();
    assert_eq!(k, ["sliding_window"], "{msg}");

    // exaone4: a pattern of `L` and `G` only, and `L` layers need a window.
    let (msg, k) = exaone4("sliding_window_pattern", json!("LLX")).unwrap_err();
    assert!(msg.contains("'X'") && !msg.contains('\n'), "{msg}");
    assert_eq!(k, ["sliding_window_pattern"]);
    let no_window = with(
        of("exaone4", "sliding_window", json!(null)),
        "sliding_window_pattern",
        json!("LG"),
    );
    let (msg, k) = Exaone4Args::from_config(&no_window)
        .map_err(keys)
        .unwrap_err();
    assert_eq!(k, ["sliding_window_pattern", "sliding_window"], "{msg}");
    let (msg, k) = exaone4("head_dim", json!(1_073_741_824)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(
        k,
        ["num_attention_heads", "num_key_value_heads", "head_dim"]
    );
    let (msg, _) = exaone4("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");

    // internlm2 spells its RoPE scaling with `type` (not `rope_type`), linear or dynamic.
    assert!(internlm2("rope_scaling", json!({"type": "dynamic", "factor": 2.0})).is_ok());
    let (msg, k) = internlm2(
        "rope_scaling",
        json!({"rope_type": "linear", "factor": 2.0}),
    )
    .unwrap_err();
    assert_eq!(k, ["rope_scaling"], "{msg}");
    let (msg, _) = internlm2("rope_scaling", json!({"type": "yarn", "factor": 2.0})).unwrap_err();
    assert!(msg.contains("\"linear\" or \"dynamic\""), "{msg}");
    let (msg, k) = internlm2("num_attention_heads", json!(6)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");

    // qwen: the heads must be `kv_channels` wide, within MLX's sizes, and the MLP not empty.
    assert!(qwen("no_bias", json!(false)).is_ok());
    let (msg, k) = qwen("kv_channels", json!(32)).unwrap_err();
    assert_eq!(
        k,
        ["kv_channels", "num_attention_heads", "hidden_size"],
        "{msg}"
    );
    let (msg, k) = qwen("kv_channels", json!(2147483647)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["kv_channels", "num_attention_heads"]);
    let (msg, k) = qwen("intermediate_size", json!(1)).unwrap_err();
    assert_eq!(k, ["intermediate_size"], "{msg}");
    let (msg, _) = qwen("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// gemma4_text: heads that do not divide (sliding or full layers), KV sharing with no layer
/// left to own the keys or a shared type without an owner, an incomplete mixture of experts,
/// a bad per-type RoPE, widths past MLX's limits and absurd stacks are one-line errors naming
/// their keys, before anything is built.
#[test]
fn hostile_gemma4_text_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::gemma4_text::Gemma4TextArgs;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 4,
        "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "global_head_dim": 32, "vocab_size": 256,
        "vocab_size_per_layer_input": 256, "hidden_size_per_layer_input": 16,
        "num_kv_shared_layers": 2, "sliding_window": 8, "sliding_window_pattern": 2,
    });
    let g4 = |k: &str, v| Gemma4TextArgs::from_config(&with(base.clone(), k, v)).map_err(keys);

    let args = g4("num_hidden_layers", json!(4)).expect("parses");
    assert_eq!(
        args.layer_types()[..2],
        ["sliding_attention", "full_attention"]
    );
    assert_eq!(args.kv_sources().expect("sources").source(3), Some(1));

    let (msg, k) = g4("num_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let k_eq_v = with(base.clone(), "attention_k_eq_v", json!(true));
    let (msg, k) =
        Gemma4TextArgs::from_config(&with(k_eq_v, "num_global_key_value_heads", json!(3)))
            .map_err(keys)
            .unwrap_err();
    assert_eq!(
        k,
        ["num_attention_heads", "num_global_key_value_heads"],
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    let (msg, k) = g4("num_kv_shared_layers", json!(4)).unwrap_err();
    assert_eq!(k, ["num_kv_shared_layers", "num_hidden_layers"], "{msg}");
    let full_last = json!([
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention"
    ]);
    let (msg, k) = g4("layer_types", full_last).unwrap_err();
    assert!(msg.contains("KV-shared layer 3"), "{msg}");
    assert_eq!(k, ["num_kv_shared_layers", "layer_types"]);
    let (msg, _) = g4("num_hidden_layers", json!(0)).unwrap_err();
    assert!(msg.contains("num_hidden_layers"), "{msg}");
    let (msg, _) = g4("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");

    let (msg, k) = g4("enable_moe_block", json!(true)).unwrap_err();
    assert_eq!(k[0], "enable_moe_block", "{msg}");
    let moe = json!({"enable_moe_block": true, "num_experts": 2, "top_k_experts": 3,
                     "moe_intermediate_size": 8});
    let mut config = base.clone();
    config
        .as_object_mut()
        .unwrap()
        .extend(moe.as_object().unwrap().clone());
    let (msg, k) = Gemma4TextArgs::from_config(&config)
        .map_err(keys)
        .unwrap_err();
    assert_eq!(k, ["top_k_experts", "num_experts"], "{msg}");

    let bad_rope = json!({"full_attention": {"rope_type": "magic"}});
    let (msg, k) = g4("rope_parameters", bad_rope).unwrap_err();
    assert_eq!(k, ["rope_parameters.full_attention"], "{msg}");
    let (msg, k) = g4(
        "rope_parameters",
        json!({"full_attention": {"rope_theta": "x"}}),
    )
    .unwrap_err();
    assert_eq!(k, ["rope_parameters.full_attention"], "{msg}");

    let (msg, _) = g4("global_head_dim", json!(1_073_741_824)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    let (msg, k) = g4("hidden_size_per_layer_input", json!(1_073_741_824)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["num_hidden_layers", "hidden_size_per_layer_input"]);
}

/// gemma3n (its text model under `text_config`): heads that do not divide, layer types whose
/// owner layers lack a type, per-layer lists of the wrong length or with bad values, an active
/// AltUp copy past the copies, KV sharing with no owner, absurd stacks and missing keys are
/// one-line errors naming their keys; transformers v5's per-type `rope_parameters` give both
/// bases.
#[test]
fn hostile_gemma3n_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::gemma3n::Gemma3nArgs;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let text = json!({
        "model_type": "gemma3n_text", "hidden_size": 64, "num_hidden_layers": 3,
        "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16,
        "rms_norm_eps": 1e-6, "vocab_size": 256, "num_key_value_heads": 2,
        "num_kv_shared_layers": 1, "vocab_size_per_layer_input": 256, "sliding_window": 8,
        "max_position_embeddings": 512, "rope_local_base_freq": 10000.0,
        "rope_theta": 1000000.0, "final_logit_softcapping": 30.0,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "activation_sparsity_pattern": [0.95, 0.0, 0.0], "hidden_size_per_layer_input": 16,
        "altup_num_inputs": 4, "altup_coef_clip": 120.0, "altup_correct_scale": true,
        "altup_active_idx": 0, "laurel_rank": 16,
    });
    let of = |text: serde_json::Value| json!({"model_type": "gemma3n", "text_config": text});
    let g3n = |k: &str, v| Gemma3nArgs::from_config(&of(with(text.clone(), k, v))).map_err(keys);

    let args = g3n("intermediate_size", json!([96, 128, 64])).expect("parses");
    assert_eq!(args.intermediate_sizes, [96, 128, 64]);
    assert_eq!(args.kv_sources().expect("sources").source(2), Some(0));

    let (msg, k) = g3n("num_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let owners_full = json!(["full_attention", "full_attention", "sliding_attention"]);
    let (msg, k) = g3n("layer_types", owners_full).unwrap_err();
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(k[0], "num_kv_shared_layers", "{msg}");
    let (msg, k) = g3n("layer_types", json!(["full_attention"])).unwrap_err();
    assert_eq!(k, ["layer_types", "num_hidden_layers"], "{msg}");
    let (msg, k) = g3n("intermediate_size", json!([96, 128])).unwrap_err();
    assert_eq!(k, ["intermediate_size", "num_hidden_layers"], "{msg}");
    let (msg, k) = g3n("intermediate_size", json!(0)).unwrap_err();
    assert_eq!(k, ["intermediate_size"], "{msg}");
    let (msg, k) = g3n("intermediate_size", json!(2147483647)).unwrap_err();
    assert_eq!(k, ["intermediate_size"], "{msg}");
    let (msg, k) = g3n("activation_sparsity_pattern", json!([0.5, 1.0, 0.0])).unwrap_err();
    assert_eq!(k, ["activation_sparsity_pattern"], "{msg}");
    let (msg, k) = g3n("altup_active_idx", json!(4)).unwrap_err();
    assert_eq!(k, ["altup_active_idx", "altup_num_inputs"], "{msg}");
    let (msg, k) = g3n("num_kv_shared_layers", json!(3)).unwrap_err();
    assert_eq!(k, ["num_kv_shared_layers", "num_hidden_layers"], "{msg}");
    let (msg, _) = g3n("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, _) = g3n("num_hidden_layers", json!(0)).unwrap_err();
    assert!(msg.contains("num_hidden_layers"), "{msg}");
    let (msg, _) = g3n("altup_num_inputs", json!(2147483647)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    let (msg, _) = Gemma3nArgs::from_config(&of(without(text.clone(), "laurel_rank")))
        .map_err(keys)
        .unwrap_err();
    assert!(msg.contains("laurel_rank"), "{msg}");

    let v5 = json!({"full_attention": {"rope_type": "default", "rope_theta": 500.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}});
    let v5 = with(
        without(without(text.clone(), "rope_theta"), "rope_local_base_freq"),
        "rope_parameters",
        v5,
    );
    let args = Gemma3nArgs::from_config(&of(v5)).expect("parses");
    assert_eq!((args.rope_theta, args.rope_local_base_freq), (500.0, 50.0));
}

/// mellum (a mixture of experts with sliding-window layers and a RoPE per layer type): heads
/// that do not divide, too many experts per token, layer types that do not fit, a layer type
/// without its RoPE, an unknown RoPE type and an absurd stack are one-line errors naming their
/// keys, before anything is built.
#[test]
fn hostile_mellum_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::mellum::MellumArgs;
    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "mellum", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "norm_topk_prob": true, "rms_norm_eps": 1e-6, "vocab_size": 256,
        "max_position_embeddings": 64, "tie_word_embeddings": false, "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_theta": 1e4},
        },
    });
    let mellum = |k: &str, v| MellumArgs::from_config(&with(base.clone(), k, v)).map_err(keys);
    assert!(mellum("norm_topk_prob", json!(false)).is_ok());

    let (msg, k) = mellum("num_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = mellum("num_experts_per_tok", json!(9)).unwrap_err();
    assert!(msg.contains("`num_experts_per_tok` (9)"), "{msg}");
    assert_eq!(k, ["num_experts", "num_experts_per_tok"]);
    let (msg, k) = mellum("layer_types", json!(["full_attention"])).unwrap_err();
    assert!(msg.contains("1 entries for 2 layers"), "{msg}");
    assert_eq!(k, ["layer_types", "num_hidden_layers"]);
    let sliding = json!(["sliding_attention", "sliding_attention"]);
    let (msg, _) = mellum("layer_types", sliding).unwrap_err();
    assert!(msg.contains("no `full_attention` layer"), "{msg}");
    let (msg, k) = mellum("layer_types", json!(["local", "full_attention"])).unwrap_err();
    assert!(msg.contains("\"local\""), "{msg}");
    assert_eq!(k, ["layer_types"]);
    let only_full = json!({"full_attention": {"rope_theta": 1e6}});
    let (msg, k) = mellum("rope_parameters", only_full).unwrap_err();
    assert!(
        msg.contains("`sliding_attention`") && !msg.contains('\n'),
        "{msg}"
    );
    assert_eq!(k, ["rope_parameters"]);
    let no_theta = json!({"full_attention": {}, "sliding_attention": {"rope_theta": 1e4}});
    let (msg, k) = mellum("rope_parameters", no_theta).unwrap_err();
    assert!(msg.contains("`rope_theta`"), "{msg}");
    assert_eq!(k, ["rope_parameters"]);
    let odd_type = json!({
        "full_attention": {"rope_type": "spiral", "rope_theta": 1e6},
        "sliding_attention": {"rope_theta": 1e4},
    });
    let (msg, k) = mellum("rope_parameters", odd_type).unwrap_err();
    assert!(msg.contains("spiral"), "{msg}");
    assert_eq!(k, ["rope_parameters"]);
    let (msg, _) = mellum("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) = mellum("sliding_window", json!(0)).unwrap_err();
    assert_eq!(k, ["sliding_window"], "{msg}");
}

/// youtu_llm (latent attention on a dense stack, every key defaulted as in the reference): an
/// odd rotated width, latent or key/value widths past MLX's sizes, a bad RoPE scaling and an
/// absurd stack are one-line errors naming their keys, before anything is built.
#[test]
fn hostile_youtu_llm_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::youtu_llm::YoutuLlmArgs;
    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({"model_type": "youtu_llm"});
    let youtu = |k: &str, v| YoutuLlmArgs::from_config(&with(base.clone(), k, v)).map_err(keys);
    let args = YoutuLlmArgs::from_config(&base).expect("every key has a default");
    assert_eq!((args.hidden_size, args.v_head_dim), (2048, 128));
    assert!(args.rope_traditional && args.tie_word_embeddings);
    assert_eq!(
        youtu("q_lora_rank", json!(null)).expect("null").q_lora_rank,
        None
    );

    let (msg, k) = youtu("qk_rope_head_dim", json!(15)).unwrap_err();
    assert!(msg.contains("must be even"), "{msg}");
    assert_eq!(k, ["qk_rope_head_dim"]);
    let (msg, k) = youtu("v_head_dim", json!(1_073_741_824)).unwrap_err();
    assert!(msg.contains("size limit") && !msg.contains('\n'), "{msg}");
    assert_eq!(k, ["num_attention_heads", "qk_nope_head_dim", "v_head_dim"]);
    let (msg, k) = youtu("kv_lora_rank", json!(2147483647)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["kv_lora_rank", "qk_rope_head_dim"]);
    let (msg, k) = youtu("num_attention_heads", json!(1u64 << 40)).unwrap_err();
    assert!(msg.contains("num_attention_heads"), "{msg}");
    assert_eq!(k, ["num_attention_heads"]);
    let (msg, k) = youtu("rope_scaling", json!({"rope_type": "yarn"})).unwrap_err();
    assert!(msg.contains("factor"), "{msg}");
    assert_eq!(k, ["rope_scaling"]);
    let (msg, _) = youtu("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// ministral3 (RoPE and the query scaling read from `rope_parameters` alone): heads that do
/// not divide, a missing `rope_parameters` or scaling key, a zero `original_max_position_embeddings`,
/// sliding layers without a window and an absurd stack are one-line errors naming their keys,
/// before anything is built; defaults as the reference's.
#[test]
fn hostile_ministral3_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::ministral3::Ministral3Args;
    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "ministral3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "rms_norm_eps": 1e-5,
        "vocab_size": 256,
        "rope_parameters": {
            "rope_theta": 1e6, "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 16,
        },
    });
    let ministral =
        |k: &str, v| Ministral3Args::from_config(&with(base.clone(), k, v)).map_err(keys);
    let args = Ministral3Args::from_config(&base).expect("parses");
    assert_eq!(args.num_key_value_heads, Some(4));
    assert_eq!(args.head_dim(), 16);
    assert!(args.tie_word_embeddings);
    assert_eq!(args.layer_types.as_deref().map(<[String]>::len), Some(2));
    assert_eq!(
        ministral("head_dim", json!(0))
            .expect("0 is absent")
            .head_dim(),
        16
    );

    let (msg, k) = ministral("num_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = ministral("num_attention_heads", json!(6)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, k) = ministral("rope_parameters", json!(null)).unwrap_err();
    assert!(msg.contains("needs `rope_parameters`"), "{msg}");
    assert_eq!(k, ["rope_parameters"]);
    let no_beta = json!({"rope_theta": 1e6, "original_max_position_embeddings": 16});
    let (msg, k) = ministral("rope_parameters", no_beta).unwrap_err();
    assert!(msg.contains("`llama_4_scaling_beta`"), "{msg}");
    assert_eq!(k, ["rope_parameters"]);
    let zero = json!({
        "rope_theta": 1e6, "llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 0,
    });
    let (msg, k) = ministral("rope_parameters", zero).unwrap_err();
    assert!(msg.contains("positive") && !msg.contains('\n'), "{msg}");
    assert_eq!(k, ["rope_parameters"]);
    let no_theta = json!({"llama_4_scaling_beta": 0.1, "original_max_position_embeddings": 16});
    let (msg, k) = ministral("rope_parameters", no_theta).unwrap_err();
    assert!(msg.contains("rope_theta"), "{msg}");
    assert_eq!(k, ["rope_theta"]);
    let sliding = json!(["sliding_attention", "full_attention"]);
    let (msg, k) = ministral("layer_types", sliding).unwrap_err();
    assert_eq!(k, ["layer_types", "sliding_window"], "{msg}");
    let (msg, _) = ministral("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// phi3small: heads that do not divide, a block size the reference refuses, no local block,
/// a zero stride or period, an MLP past MLX's sizes and an absurd stack are one-line errors
/// naming their keys, before anything is built; the μP defaults are the reference's.
#[test]
fn hostile_phi3small_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::phi3small::Phi3SmallArgs;
    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "phi3small", "hidden_size": 64, "dense_attention_every_n_layers": 2,
        "ff_intermediate_size": 128, "gegelu_limit": 20.0, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "layer_norm_epsilon": 1e-5,
        "vocab_size": 256,
    });
    let phi = |k: &str, v| Phi3SmallArgs::from_config(&with(base.clone(), k, v)).map_err(keys);
    let args = Phi3SmallArgs::from_config(&base).expect("parses");
    assert_eq!(args.blocksparse_block_size, 64);
    assert_eq!(args.mup_width_multiplier, 8.0);
    assert_eq!(args.scale(), 1.0 / 16.0);
    assert!(args.block_sparse(0).is_some() && args.block_sparse(1).is_none());

    let (msg, k) = phi("num_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = phi("num_attention_heads", json!(6)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, k) = phi("blocksparse_block_size", json!(16)).unwrap_err();
    assert!(msg.contains("32 or 64") && !msg.contains('\n'), "{msg}");
    assert_eq!(k, ["blocksparse_block_size"]);
    for key in [
        "blocksparse_num_local_blocks",
        "blocksparse_vert_stride",
        "dense_attention_every_n_layers",
    ] {
        let (msg, k) = phi(key, json!(0)).unwrap_err();
        assert_eq!(k, [key], "{msg}");
    }
    let (msg, k) = phi("blocksparse_vert_stride", json!(1u64 << 40)).unwrap_err();
    assert_eq!(k, ["blocksparse_vert_stride"], "{msg}");
    let (msg, k) = phi("ff_intermediate_size", json!(2147483647)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["ff_intermediate_size"]);
    let (msg, _) = phi("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// nemotron-nas (per-layer `block_configs`): a list that does not fit the layers, an
/// attention without its group size or with one that does not divide the heads, an MLP
/// without `ffn_mult` or with an absurd one, an unknown activation, a RoPE scaling without
/// `rope_type` and an absurd stack are one-line errors naming their keys, before anything is
/// built; no-op and linear blocks need neither.
#[test]
fn hostile_nemotron_nas_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::nemotron_nas::NemotronNasArgs;
    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let blocks = json!([
        {"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 1.5}},
        {"attention": {"no_op": true}, "ffn": {"replace_with_linear": true}},
    ]);
    let base = json!({
        "model_type": "nemotron-nas", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 256, "block_configs": blocks,
    });
    let nas = |k: &str, v| NemotronNasArgs::from_config(&with(base.clone(), k, v)).map_err(keys);
    let args = NemotronNasArgs::from_config(&base).expect("parses");
    assert_eq!(args.intermediate_size(0).expect("an MLP"), 256);
    assert_eq!(args.hidden_act, "silu");
    let one = |attention: serde_json::Value, ffn: serde_json::Value| {
        let config = with(base.clone(), "num_hidden_layers", json!(1));
        let blocks = json!([{"attention": attention, "ffn": ffn}]);
        NemotronNasArgs::from_config(&with(config, "block_configs", blocks)).map_err(keys)
    };

    let (msg, k) = nas("num_hidden_layers", json!(3)).unwrap_err();
    assert!(msg.contains("2 entries for 3 layers"), "{msg}");
    assert_eq!(k, ["block_configs", "num_hidden_layers"]);
    let (msg, k) = one(json!({}), json!({"ffn_mult": 1.0})).unwrap_err();
    assert!(msg.contains("`n_heads_in_group`"), "{msg}");
    assert_eq!(k, ["block_configs"]);
    let (msg, k) = one(json!({"n_heads_in_group": 3}), json!({"no_op": true})).unwrap_err();
    assert!(
        msg.contains("not a multiple") && !msg.contains('\n'),
        "{msg}"
    );
    assert_eq!(k, ["num_attention_heads", "block_configs"]);
    let (msg, k) = one(json!({"n_heads_in_group": 0}), json!({"no_op": true})).unwrap_err();
    assert!(msg.contains("n_heads_in_group"), "{msg}");
    assert!(!k.is_empty());
    let (msg, k) = one(json!({"no_op": true}), json!({})).unwrap_err();
    assert!(msg.contains("`ffn_mult`"), "{msg}");
    assert_eq!(k, ["block_configs"]);
    for mult in [json!(0.001), json!(-1.0), json!(1e30)] {
        let (msg, k) = one(json!({"no_op": true}), json!({"ffn_mult": mult})).unwrap_err();
        assert_eq!(k, ["block_configs"], "{msg}");
    }
    let (msg, k) = nas("num_attention_heads", json!(128)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, k) = nas("hidden_act", json!("swish")).unwrap_err();
    assert!(msg.contains("\"swish\""), "{msg}");
    assert_eq!(k, ["hidden_act"]);
    let (msg, k) = nas("rope_scaling", json!({"type": "linear", "factor": 2.0})).unwrap_err();
    assert!(msg.contains("`rope_type`"), "{msg}");
    assert_eq!(k, ["rope_scaling"]);
    assert!(nas("rope_scaling", json!({})).is_ok());
    let (msg, _) = nas("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// llama4 (its text model under `text_config`): fewer than the four layers the reference's
/// masks need, more than one expert per token, heads that do not divide, a chunk or an
/// interleave step of 0, a temperature switch that is neither a number nor a boolean, absurd
/// sizes and a missing `text_config` are one-line errors naming their keys; a boolean or an
/// integer switches the temperature tuning as the reference's truthiness does.
#[test]
fn hostile_llama4_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::llama4::Llama4Args;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let text = json!({
        "model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 4,
        "intermediate_size": 64, "intermediate_size_mlp": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5, "vocab_size": 256,
        "rope_theta": 500000.0, "rope_scaling": null, "max_position_embeddings": 1024,
        "attention_bias": false, "attention_chunk_size": 4, "interleave_moe_layer_step": 2,
        "num_local_experts": 4, "num_experts_per_tok": 1, "use_qk_norm": true,
    });
    let l4 = |k: &str, v| {
        let config = json!({"model_type": "llama4", "text_config": with(text.clone(), k, v)});
        Llama4Args::from_config(&config).map_err(keys)
    };

    let args = l4("attn_temperature_tuning", json!(false)).expect("parses");
    assert!(args.temperature().is_none());
    let args = l4("attn_temperature_tuning", json!(true)).expect("parses");
    assert_eq!(args.temperature().map(|t| t.floor_scale), Some(8192.0));
    let args = l4("head_dim", json!(null)).expect("parses");
    assert_eq!(args.head_dim(), 16);
    // The reference's default: 4, truthy.
    let args = l4("attn_scale", json!(0.5)).expect("parses");
    assert_eq!(args.temperature().map(|t| t.attn_scale), Some(0.5));

    let (msg, k) = l4("num_hidden_layers", json!(3)).unwrap_err();
    assert!(k.iter().any(|k| k.ends_with("num_hidden_layers")), "{msg}");
    assert!(msg.contains("at least 4 layers"), "{msg}");
    let (msg, _) = l4("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) = l4("num_experts_per_tok", json!(2)).unwrap_err();
    assert!(
        k.iter().any(|k| k.ends_with("num_experts_per_tok")),
        "{msg}"
    );
    let (msg, _) = l4("num_experts_per_tok", json!(5)).unwrap_err();
    assert!(msg.contains("num_local_experts"), "{msg}");
    // No layer with experts: their settings are not checked, as in the reference.
    let dense = json!({"model_type": "llama4", "text_config": with(
        with(text.clone(), "interleave_moe_layer_step", json!(5)), "num_experts_per_tok", json!(2))});
    let args = Llama4Args::from_config(&dense).expect("parses");
    assert!(!(0..4).any(|i| args.is_sparse(i)));
    let (msg, k) = l4("num_key_value_heads", json!(3)).unwrap_err();
    assert!(
        k.iter().any(|k| k.ends_with("num_key_value_heads")),
        "{msg}"
    );
    for key in [
        "attention_chunk_size",
        "interleave_moe_layer_step",
        "floor_scale",
    ] {
        let (msg, k) = l4(key, json!(0)).unwrap_err();
        assert!(k.iter().any(|k| k.ends_with(key)), "{key}: {msg}");
    }
    let (msg, k) = l4("attn_temperature_tuning", json!("yes")).unwrap_err();
    assert!(
        k.iter().any(|k| k.ends_with("attn_temperature_tuning")),
        "{msg}"
    );
    let (msg, _) = l4("num_local_experts", json!(1u64 << 40)).unwrap_err();
    assert!(msg.contains("at most 2147483647"), "{msg}");
    let (msg, _) = l4("head_dim", json!(1_073_741_824)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    let (msg, k) = l4("rope_scaling", json!({"rope_type": "magic"})).unwrap_err();
    assert!(k.iter().any(|k| k.ends_with("rope_scaling")), "{msg}");
    let (msg, _) = l4("rope_theta", json!(null)).unwrap_err();
    assert!(msg.contains("rope_theta"), "{msg}");
    for (msg, _) in [
        l4("num_hidden_layers", json!(0)).unwrap_err(),
        l4("num_experts_per_tok", json!(0)).unwrap_err(),
    ] {
        assert!(!msg.contains('\n'), "{msg}");
    }
    let missing = Llama4Args::from_config(&json!({"model_type": "llama4"})).unwrap_err();
    assert!(missing.to_string().contains("`text_config`"), "{missing}");
}

/// telechat3 and plamo: heads that do not divide, an absurd stack, a broken RoPE scaling and
/// plamo's shared key/value heads (`n_shared_head` must divide the query heads, as the
/// reference's tiled attention needs) are one-line errors naming their keys.
#[test]
fn hostile_telechat3_and_plamo_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::plamo::PlamoArgs;
    use mlx_models_zoo::telechat3::Telechat3Args;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": 256, "max_position_embeddings": 4096, "rope_theta": 10000.0,
        "n_shared_head": 2,
    });
    let of = |model_type: &str, key: &str, value: serde_json::Value| {
        with(
            with(base.clone(), "model_type", json!(model_type)),
            key,
            value,
        )
    };
    let telechat3 = |k: &str, v| Telechat3Args::from_config(&of("telechat3", k, v)).map_err(keys);
    let plamo = |k: &str, v| PlamoArgs::from_config(&of("plamo", k, v)).map_err(keys);

    // telechat3: grouped heads, the width split without a head_dim, its scaling, its stack.
    assert!(telechat3("head_dim", json!(24)).is_ok());
    let (msg, k) = telechat3("num_key_value_heads", json!(3)).unwrap_err();
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = telechat3("num_attention_heads", json!(6)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, k) = telechat3("rope_scaling", json!({"rope_type": "telechat3-yarn"})).unwrap_err();
    assert_eq!(k, ["rope_scaling"], "{msg}");
    assert!(msg.contains("factor"), "{msg}");
    let (msg, _) = telechat3("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) =
        Telechat3Args::from_config(&without(of("telechat3", "x", json!(0)), "rope_theta"))
            .map_err(keys)
            .unwrap_err();
    assert_eq!(k, ["rope_theta"], "{msg}");

    // plamo: the shared key/value heads, the width, the stack.
    assert_eq!(
        plamo("num_attention_heads", json!(8)).map(|a| a.num_key_value_heads()),
        Ok(4)
    );
    for (heads, shared) in [(4, 8), (6, 4)] {
        let config = with(
            of("plamo", "num_attention_heads", json!(heads)),
            "hidden_size",
            json!(48),
        );
        let (msg, k) = PlamoArgs::from_config(&with(config, "n_shared_head", json!(shared)))
            .map_err(keys)
            .unwrap_err();
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(k, ["num_attention_heads", "n_shared_head"], "{msg}");
    }
    let (msg, k) = plamo("n_shared_head", json!(0)).unwrap_err();
    assert_eq!(k, ["n_shared_head"], "{msg}");
    let (msg, k) = plamo("num_attention_heads", json!(5)).unwrap_err();
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, _) = plamo("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// openelm's per-layer lists: one entry per layer, query heads a multiple of positive key/value
/// heads, widths within MLX's limit and positive MLP multipliers, each a one-line error naming
/// its keys; the MLP widths are the reference's `make_divisible`.
#[test]
fn hostile_openelm_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::openelm::OpenElmArgs;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "openelm", "head_dim": 16, "num_transformer_layers": 2, "model_dim": 64,
        "vocab_size": 256, "ffn_dim_divisor": 32, "num_query_heads": [4, 4],
        "num_kv_heads": [2, 1], "ffn_multipliers": [0.748, 3.1],
    });
    let openelm = |k: &str, v| OpenElmArgs::from_config(&with(base.clone(), k, v)).map_err(keys);

    // 0.748 * 64 rounds to 32, more than 10% short, so one more multiple: 64; 3.1 * 64 = 198.4
    // rounds down to 192.
    let args = openelm("vocab_size", json!(256)).expect("base config");
    assert_eq!(
        (args.intermediate_size(0), args.intermediate_size(1)),
        (64, 192)
    );
    for (key, value) in [
        ("num_query_heads", json!([4])),
        ("num_kv_heads", json!([2, 1, 1])),
        ("ffn_multipliers", json!([1.0])),
    ] {
        let (msg, k) = openelm(key, value).unwrap_err();
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(k, [key, "num_transformer_layers"], "{msg}");
    }
    for kv in [json!([3, 1]), json!([0, 1])] {
        let (msg, k) = openelm("num_kv_heads", kv).unwrap_err();
        assert_eq!(k, ["num_query_heads", "num_kv_heads"], "{msg}");
    }
    let (msg, k) = openelm("head_dim", json!(2147483647)).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["num_query_heads", "num_kv_heads", "head_dim"]);
    for m in [json!([0.0, 1.0]), json!([-1.0, 1.0])] {
        let (msg, k) = openelm("ffn_multipliers", m).unwrap_err();
        assert_eq!(k, ["ffn_multipliers"], "{msg}");
    }
    let (msg, k) = openelm("ffn_multipliers", json!([1e300, 1.0])).unwrap_err();
    assert!(msg.contains("size limit"), "{msg}");
    assert_eq!(k, ["ffn_multipliers", "model_dim"]);
    let (msg, _) = openelm("num_transformer_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) = openelm("ffn_dim_divisor", json!(0)).unwrap_err();
    assert_eq!(k, ["ffn_dim_divisor"], "{msg}");
}

/// baichuan_m1: heads that do not divide (the sliding layers' own under their own keys), a
/// sliding layer past the stack, a convolution of other than two taps and an absurd stack are
/// one-line errors naming their keys.
#[test]
fn hostile_baichuan_m1_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::baichuan_m1::BaichuanM1Args;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let base = json!({
        "model_type": "baichuan_m1", "hidden_size": 64, "num_hidden_layers": 4,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "vocab_size": 256, "rope_theta": 10000.0, "sliding_window": 6,
        "sliding_window_layers": [1, 3], "conv_window": 2,
    });
    let baichuan =
        |k: &str, v| BaichuanM1Args::from_config(&with(base.clone(), k, v)).map_err(keys);

    let args = baichuan("num_swa_attention_heads", json!(8)).expect("sliding heads");
    assert_eq!((args.heads(true), args.heads(false)), ((8, 2), (4, 2)));
    let (msg, k) = baichuan("num_key_value_heads", json!(3)).unwrap_err();
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = baichuan("num_swa_key_value_heads", json!(3)).unwrap_err();
    assert_eq!(
        k,
        ["num_swa_attention_heads", "num_swa_key_value_heads"],
        "{msg}"
    );
    let config = with(base.clone(), "num_swa_key_value_heads", json!(1));
    let (msg, k) = BaichuanM1Args::from_config(&with(config, "num_swa_attention_heads", json!(6)))
        .map_err(keys)
        .unwrap_err();
    assert_eq!(k, ["hidden_size", "num_swa_attention_heads"], "{msg}");
    let (msg, k) = baichuan("sliding_window_layers", json!([1, 4])).unwrap_err();
    assert_eq!(k, ["sliding_window_layers", "num_hidden_layers"], "{msg}");
    for taps in [1, 3] {
        let (msg, k) = baichuan("conv_window", json!(taps)).unwrap_err();
        assert_eq!(k, ["conv_window"], "{msg}");
    }
    for window in [0, 4294967296i64] {
        let (msg, k) = baichuan("sliding_window", json!(window)).unwrap_err();
        assert_eq!(k, ["sliding_window"], "{msg}");
    }
    let (msg, _) = baichuan("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
}

/// nanochat: every key has the reference's default; heads that do not divide, odd head widths
/// (RoPE rotates pairs) and an absurd stack are one-line errors naming their keys.
#[test]
fn hostile_nanochat_settings_are_refused_with_their_keys() {
    use mlx_models_zoo::nanochat::NanochatArgs;

    fn keys(e: ArgsError) -> (String, Vec<String>) {
        let keys = e.keys().iter().map(|k| k.to_string()).collect();
        (e.to_string(), keys)
    }
    let nanochat = |k: &str, v| {
        let config = with(json!({"model_type": "nanochat"}), k, v);
        NanochatArgs::from_config(&config).map_err(keys)
    };

    let args = nanochat("vocab_size", json!(65536)).expect("defaults");
    assert_eq!(
        (args.hidden_size, args.num_hidden_layers, args.head_dim()),
        (1280, 20, 128)
    );
    let (msg, k) = nanochat("num_key_value_heads", json!(3)).unwrap_err();
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    let (msg, k) = nanochat("num_attention_heads", json!(7)).unwrap_err();
    assert_eq!(k, ["num_attention_heads", "num_key_value_heads"], "{msg}");
    // 1280 over 256 heads is 5 wide.
    let config =
        json!({"model_type": "nanochat", "num_attention_heads": 256, "num_key_value_heads": 8});
    let (msg, k) = NanochatArgs::from_config(&config)
        .map_err(keys)
        .unwrap_err();
    assert!(msg.contains("even"), "{msg}");
    assert_eq!(k, ["hidden_size", "num_attention_heads"], "{msg}");
    let (msg, _) = nanochat("num_hidden_layers", json!(2147483647)).unwrap_err();
    assert!(msg.contains("is absurd"), "{msg}");
    let (msg, k) = nanochat("rope_theta", json!(0.0)).unwrap_err();
    assert_eq!(k, ["rope_theta"], "{msg}");
}
