//! The registry: lookup by model type, alias and (model type, architecture) pair, listing,
//! and the walk that rejects names claimed twice.

use mlx_models::args::ModelArgs;
use mlx_models::cache::Cache;
use mlx_models::mlx_model;
use mlx_models::model::Architecture;
use mlx_models::registry::{self, check_entries, find_in, Entry, RegistryError};
use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::Array;
use serde_json::json;

#[derive(Debug, ModelArgs)]
pub struct Args {
    #[arg(positive)]
    hidden_size: usize,
}

macro_rules! model {
    ($name:ident) => {
        impl Architecture for $name {
            fn new(args: &Args) -> Result<Self, Exception> {
                Ok($name {
                    hidden_size: args.hidden_size,
                })
            }
            fn forward(&mut self, inputs: &Array, _: &mut [Cache]) -> Result<Array, Exception> {
                Ok(inputs.clone())
            }
            fn make_cache(&self) -> Vec<Cache> {
                (0..self.hidden_size).map(|_| Cache::kv()).collect()
            }
            fn num_layers(&self) -> usize {
                self.hidden_size
            }
        }
    };
}

#[mlx_model(model_type = "reg_llama", aliases = ["reg_mistral", "Reg-Xverse"], args = Args)]
#[derive(Debug, ModuleParameters)]
pub struct Llama {
    hidden_size: usize,
}
model!(Llama);

#[mlx_model(model_type = "reg_vl", args = Args, architectures = ["RegVlForConditionalGeneration"])]
#[derive(Debug, ModuleParameters)]
pub struct VlWrapper {
    hidden_size: usize,
}
model!(VlWrapper);

#[mlx_model(model_type = "reg_vl", args = Args, architectures = ["RegVlForCausalLM"])]
#[derive(Debug, ModuleParameters)]
pub struct VlText {
    hidden_size: usize,
}
model!(VlText);

#[test]
fn the_registry_has_no_name_claimed_twice() {
    registry::check().expect("no duplicates");
}

#[test]
fn entries_are_listed_sorted() {
    let names: Vec<&str> = registry::entries().iter().map(|e| e.model_type).collect();
    assert_eq!(names, ["reg_llama", "reg_vl", "reg_vl"]);
}

#[test]
fn lookup_by_type_and_alias() {
    for name in ["reg_llama", "reg_mistral", "Reg-Xverse"] {
        let e = registry::find(name, &[]).expect("found");
        assert_eq!(e.model_type, "reg_llama");
        assert!(e.rust_type.ends_with("::Llama"), "{}", e.rust_type);
    }
}

#[test]
fn lookup_by_architecture_pair() {
    let e = registry::find("reg_vl", &["RegVlForCausalLM"]).expect("found");
    assert!(e.rust_type.ends_with("::VlText"));
    let e = registry::for_config(
        &json!({"model_type": "reg_vl", "architectures": ["RegVlForConditionalGeneration"]}),
    )
    .expect("found");
    assert!(e.rust_type.ends_with("::VlWrapper"));
    let err = registry::find("reg_vl", &["Other"]).unwrap_err();
    assert!(matches!(err, RegistryError::NoArchitecture { .. }), "{err}");
}

#[test]
fn unknown_type_suggests_a_near_name() {
    let err = registry::find("reg_mistrall", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model type `reg_mistrall` not supported; did you mean `reg_mistral`?"
    );
    let err = registry::find("mamba", &[]).unwrap_err();
    assert_eq!(err.to_string(), "model type `mamba` not supported");
    assert_eq!(
        registry::for_config(&json!({})).unwrap_err(),
        RegistryError::NoModelType
    );
}

#[test]
fn build_parses_args_and_constructs() {
    let built =
        registry::build(&json!({"model_type": "reg_mistral", "hidden_size": 3, "extra": 1}))
            .expect("builds");
    assert_eq!(built.model.model_type(), "reg_llama");
    assert_eq!(built.model.num_layers(), 3);
    assert_eq!(built.model.make_cache().len(), 3);
    let mut unknown: Vec<&str> = built.unknown_keys.iter().map(|u| u.key.as_str()).collect();
    unknown.sort_unstable();
    assert_eq!(
        unknown,
        ["extra", "model_type"],
        "keys no field of `Args` reads"
    );
    let err = registry::build(&json!({"model_type": "reg_llama", "hidden_size": 0})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.json: `hidden_size`: expected a positive integer of at most 2147483647 (MLX's size limit), found 0"
    );
}

fn fake(
    model_type: &'static str,
    aliases: &'static [&'static str],
    architectures: &'static [&'static str],
    rust_type: &'static str,
) -> Entry {
    Entry {
        model_type,
        aliases,
        architectures,
        rust_type,
        build: |_| unreachable!("never built"),
        parse: |_| unreachable!("never parsed"),
    }
}

#[test]
fn a_duplicate_model_type_is_rejected() {
    let entries = [
        fake("llama", &[], &[], "a::Llama"),
        fake("llama", &[], &[], "b::Llama"),
    ];
    assert_eq!(
        check_entries(&entries).unwrap_err().to_string(),
        "model type `llama` is registered twice: by `a::Llama` and by `b::Llama`"
    );
}

#[test]
fn a_duplicate_alias_is_rejected() {
    let entries = [
        fake("llama", &["mistral"], &[], "a::Llama"),
        fake("mistral3", &["mistral"], &[], "b::Mistral3"),
    ];
    assert!(matches!(
        check_entries(&entries),
        Err(RegistryError::Duplicate {
            name: "mistral",
            ..
        })
    ));
    let own = [fake("llama", &["llama"], &[], "a::Llama")];
    assert!(matches!(
        check_entries(&own),
        Err(RegistryError::Duplicate { name: "llama", .. })
    ));
}

#[test]
fn one_type_for_distinct_architectures_is_fine() {
    let entries = [
        fake("vl", &[], &["A"], "a::A"),
        fake("vl", &[], &["B"], "b::B"),
        fake("vl", &[], &[], "c::C"),
    ];
    check_entries(&entries).expect("distinct pairs");
    assert_eq!(
        find_in(&entries, "vl", &["B"]).expect("found").rust_type,
        "b::B"
    );
    assert_eq!(
        find_in(&entries, "vl", &["Z"]).expect("default").rust_type,
        "c::C"
    );
    let clash = [
        fake("vl", &[], &["A", "B"], "a::A"),
        fake("vl", &[], &["B"], "b::B"),
    ];
    assert!(check_entries(&clash).is_err());
}
