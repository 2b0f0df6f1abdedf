//! The inputs that `tests/examples/fuzz.rs` (`scripts/fuzz.sh`) found to crash, hang or
//! over-allocate a parser, minimized, each with the clean error it now gets; and a short fuzz
//! pass over every target.

use std::path::Path;

use mlx_models::args::Config;
use mlx_models::chat_template::{ChatTemplate, TemplateError};
use mlx_models::gguf::{header, GgufCheckpoint, GgufError};
use mlx_models::tokenizer::{Tokenizer, TokenizerError};
use serde_json::{json, Value};

// --- GGUF ------------------------------------------------------------------------------------

/// One metadata value of a hand-written GGUF file: its type and its bytes.
struct Kv<'a> {
    key: &'a str,
    ty: u32,
    value: Vec<u8>,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

/// A GGUF file (version 3, alignment 32): `kvs`, then `(name, dims innermost first, type)`
/// tensors all at offset 0, then `data`.
fn gguf(kvs: &[Kv], tensors: &[(&str, &[u64], u32)], data: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for kv in kvs {
        out.extend(gguf_string(kv.key));
        out.extend(kv.ty.to_le_bytes());
        out.extend(&kv.value);
    }
    for (name, dims, ty) in tensors {
        out.extend(gguf_string(name));
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(0u64.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend(data);
    out
}

fn architecture() -> Kv<'static> {
    Kv {
        key: "general.architecture",
        ty: 8,
        value: gguf_string("llama"),
    }
}

/// Scans `bytes` both from memory and as a file, expects the same refusal from both and from
/// `GgufCheckpoint::open` (which must refuse before MLX's reader sees the file), and returns
/// its message.
fn refused(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let in_memory = header::scan_bytes(&path, bytes).unwrap_err();
    let from_file = header::scan(&path).unwrap_err();
    assert!(
        matches!(in_memory, GgufError::Malformed { .. }),
        "{in_memory:?}"
    );
    assert_eq!(in_memory.to_string(), from_file.to_string());
    let opened = GgufCheckpoint::open(&path).unwrap_err();
    assert_eq!(opened.to_string(), in_memory.to_string());
    in_memory.to_string()
}

/// Found as a segfault inside MLX's GGUF reader: it reads a float64 value as a float32 and
/// advances by 4 bytes instead of 8, so every later key and tensor record is read from the wrong
/// place. The scan now refuses 64-bit float metadata, scalar or array, by key.
#[test]
fn float64_metadata_is_refused_before_mlx_reads_it() {
    let f64_scalar = Kv {
        key: "tokenizer.ggml.token_type",
        ty: 12,
        value: 2f64.to_le_bytes().to_vec(),
    };
    let name = Kv {
        key: "general.name",
        ty: 8,
        value: gguf_string("x"),
    };
    let bytes = gguf(
        &[architecture(), f64_scalar, name],
        &[("output_norm.weight", &[4], 0)],
        &[0; 16],
    );
    let msg = refused(&bytes);
    assert!(
        msg.contains("`tokenizer.ggml.token_type` holds 64-bit floats"),
        "{msg}"
    );

    let mut array = 12u32.to_le_bytes().to_vec();
    array.extend(2u64.to_le_bytes());
    array.extend(1f64.to_le_bytes());
    array.extend(2f64.to_le_bytes());
    let f64_array = Kv {
        key: "general.scores",
        ty: 9,
        value: array,
    };
    let msg = refused(&gguf(&[architecture(), f64_array], &[], &[]));
    assert!(
        msg.contains("`general.scores` holds 64-bit floats"),
        "{msg}"
    );
}

/// Found as an arithmetic overflow: an F32 tensor of 2^62 elements is 2^64 bytes, which wrapped
/// to 0 (in a release build) and so "fit" in an empty data section; MLX would then have copied
/// 2^64 bytes. Now refused by name.
#[test]
fn tensor_size_past_64_bits_is_refused() {
    let bytes = gguf(
        &[architecture()],
        &[("token_embd.weight", &[4, 1 << 30, 1 << 30], 0)],
        &[],
    );
    let msg = refused(&bytes);
    assert!(
        msg.contains("tensor `token_embd.weight`") && msg.contains("more bytes than fit 64 bits"),
        "{msg}"
    );
}

/// MLX's shapes are 32-bit: a dimension past `i32::MAX` (here with another of 0, so the tensor
/// holds no bytes and passed every other check) would be cut short.
#[test]
fn dimension_past_mlx_limit_is_refused() {
    let bytes = gguf(
        &[architecture()],
        &[("output_norm.weight", &[1 << 32, 0], 0)],
        &[],
    );
    let msg = refused(&bytes);
    assert!(
        msg.contains("tensor `output_norm.weight` has a dimension of 4294967296, past MLX's limit"),
        "{msg}"
    );
}

/// MLX's reader casts array lengths to a 32-bit `int`; a longer array is refused by key (here
/// before the length is checked against the file).
#[test]
fn array_longer_than_mlx_int_is_refused() {
    let mut array = 0u32.to_le_bytes().to_vec();
    array.extend((1u64 << 31).to_le_bytes());
    let long = Kv {
        key: "general.bytes",
        ty: 9,
        value: array,
    };
    let msg = refused(&gguf(&[architecture(), long], &[], &[]));
    assert!(
        msg.contains("`general.bytes` claims 2147483648 items, more than MLX's GGUF reader takes"),
        "{msg}"
    );
}

// --- chat templates --------------------------------------------------------------------------

fn render(source: &str, context: Value) -> Result<String, TemplateError> {
    ChatTemplate::new(source)?.render(&context)
}

/// Found as a panic inside minijinja (an index out of bounds in its slicing): a reversed slice
/// of an empty list, which Qwen3's template takes of `messages`. Now an error.
#[test]
fn reversed_slice_of_an_empty_list_is_an_error() {
    let src = "{% for m in messages[::-1] %}{{ m.role }}{% endfor %}";
    let err = render(src, json!({"messages": []})).unwrap_err();
    assert!(matches!(err, TemplateError::Panicked(_)), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "the chat template failed: the template engine crashed on it (index out of bounds"
        ),
        "{err}"
    );
    // The same template on a conversation still renders.
    let out = render(
        src,
        json!({"messages": [{"role": "user"}, {"role": "assistant"}]}),
    )
    .unwrap();
    assert_eq!(out, "assistantuser");
}

/// Found as a hang by the million-input run (23 s on a 645-byte template): a macro that
/// writes a 100 MB string (the most minijinja repeats) and calls itself until minijinja's
/// recursion limit, the output it builds never reaching the bounded writer. What a render
/// formats anywhere, captured output included, is now bounded too.
#[test]
fn output_captured_by_macros_is_bounded() {
    let src = "{% macro m(x) %}{{ 'a' * 99999999 }}{{ m(x) }}{% endmacro %}{{ m(1) }}";
    let err = render(src, json!({})).unwrap_err();
    assert!(matches!(err, TemplateError::TooLarge { .. }), "{err:?}");
    let src = "{% set big %}{% for i in range(100) %}{{ 'a' * 9999999 }}{% endfor %}{% endset %}x";
    let err = render(src, json!({})).unwrap_err();
    assert!(matches!(err, TemplateError::TooLarge { .. }), "{err:?}");
    // A sequence repeated without limit, joined: stopped while it is built.
    let src = "{{ (['a' * 1000] * 99999999) | join(', ') }}";
    let err = render(src, json!({})).unwrap_err();
    assert!(matches!(err, TemplateError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        render(
            "{{ ['a', 1, 'b'] | join('-') }}{{ 'xyz' | join }}",
            json!({})
        )
        .unwrap(),
        "a-1-bxyz"
    );
    // Recursion over a nested schema, as tool templates do, renders as before.
    let nested = (0..20).fold(
        json!({"type": "string"}),
        |inner, _| json!({"items": inner}),
    );
    let walk = "{% macro walk(s) %}[{% if s.items %}{{ walk(s.items) }}{% else %}{{ s.type }}{% endif %}]{% endmacro %}{{ walk(schema) }}";
    let out = render(walk, json!({"schema": nested})).unwrap();
    assert_eq!(out, format!("{}string{}", "[".repeat(21), "]".repeat(21)));
}

/// Found as a hang (and a climb towards 1 GB): a sequence repeated 10^8 times, printed. Fuel
/// counts instructions, not what one instruction writes; the output is now bounded.
#[test]
fn output_is_bounded() {
    let err = render("{{ ['ab' * 1000] * 99999999 }}", json!({})).unwrap_err();
    assert!(
        matches!(err, TemplateError::TooLarge { limit } if limit == mlx_models::chat_template::MAX_OUTPUT),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the chat template failed: its output is larger than {} bytes",
            16 << 20
        )
    );
    let err = render(
        "{{ messages | tojson(indent=' ' * 5000) }}",
        json!({"messages": [1]}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("tojson: a width of 5000 is more than the 4096 allowed"),
        "{err}"
    );
}

/// Padding that one call of `indent`, `format` or `str.format` would allocate (gigabytes at
/// once) is refused; ordinary widths still work.
#[test]
fn wide_padding_is_refused() {
    for (src, what) in [
        ("{{ 'x' | indent(99999999999) }}", "indent: a width of"),
        ("{{ 'x' | indent(width=4000000000) }}", "indent: a width of"),
        ("{{ '%999999999999d' | format(1) }}", "format: a width of"),
        ("{{ '%-2000000000s' | format('x') }}", "format: a width of"),
        (
            "{{ '{:>999999999999}'.format(1) }}",
            "str.format: a width of",
        ),
    ] {
        let err = render(src, json!({})).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{src}: {err:?}");
        assert!(err.to_string().contains(what), "{src}: {err}");
    }
    assert_eq!(
        render(
            "{{ 'a\nb' | indent(2) }}|{{ '%-4s|%03d' | format('x', 7) }}|{{ '{:>3}'.format(1) }}",
            json!({})
        )
        .unwrap(),
        "a\n  b|x   |007|  1"
    );
}

/// `replace` that would build more than the output limit at once is refused.
#[test]
fn huge_replace_is_refused() {
    for src in [
        "{{ ('x' * 1000000) | replace('', 'yyyyyyyyyyyyyyyyyyyy') }}",
        "{{ ('x' * 1000000).replace('x', 'y' * 100) }}",
    ] {
        let err = render(src, json!({})).unwrap_err();
        assert!(
            err.to_string()
                .contains("replace: the result would be larger than"),
            "{src}: {err}"
        );
    }
    assert_eq!(
        render(
            "{{ 'a-b' | replace('-', '+') }}{{ 'a-b'.replace('-', '') }}",
            json!({})
        )
        .unwrap(),
        "a+bab"
    );
}

// --- tokenizer files -------------------------------------------------------------------------

fn word_level(extra: Value) -> Value {
    let mut tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true},
                         {"id": 2, "content": "</s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>",
                  "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}},
    });
    for (k, v) in extra.as_object().unwrap() {
        tok[k] = v.clone();
    }
    tok
}

/// Found as a panic inside the `tokenizers` crate (an `expect` in its deserializer): a
/// `Precompiled` normalizer whose charsmap is not a string. Now a load error naming the file.
#[test]
fn malformed_precompiled_normalizer_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let tok =
        word_level(json!({"normalizer": {"type": "Precompiled", "precompiled_charsmap": null}}));
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json: the tokenizers crate failed on it: Precompiled"),
        "{msg}"
    );
}

/// Found as a panic inside `tokenizers` at encode time: a truncation whose stride is not below
/// the length left once the post-processor's special tokens are counted. A prompt is encoded
/// as transformers encodes it, without truncation or padding, so the settings are ignored.
#[test]
fn truncation_and_padding_of_tokenizer_json_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let tok = word_level(json!({
        "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 2097152},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                           "trim_offsets": true, "add_prefix_space": false},
    }));
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let text = ["hello world"; 6].join(" ");
    let ids = tok.encode(&text, true).unwrap();
    let mut expected = vec![1];
    expected.extend([3, 4].repeat(6));
    expected.push(2);
    assert_eq!(ids, expected);
    assert_eq!(tok.encode("hello", false).unwrap(), vec![3]);
}

/// Found as a panic inside `tokenizers` at encode time: a template post-processor that names a
/// special token it does not define (`"first"` here). Now an encode error.
#[test]
fn undefined_special_token_in_post_processor_is_an_encode_error() {
    let dir = tempfile::tempdir().unwrap();
    let tok = word_level(json!({"post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "first", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}}));
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let err = tok.encode("hello", true).unwrap_err();
    assert!(matches!(err, TokenizerError::Encode(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot encode: the tokenizers crate failed"),
        "{err}"
    );
    // Without the post-processor's tokens it encodes.
    assert_eq!(tok.encode("hello world", false).unwrap(), vec![3, 4]);
}

/// Found as a stack overflow (an abort): a Unigram piece of 300,000 bytes, which `tokenizers`
/// stores as a trie one level per byte and frees recursively. Now a load error.
#[test]
fn very_long_unigram_piece_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(300_000);
    let tok = word_level(
        json!({"model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false,
        "vocab": [["<unk>", 0.0], ["<s>", 0.0], ["</s>", 0.0], [long, -1.0], ["▁hello", -2.0]]}}),
    );
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with(
            "tokenizer.json: the Unigram vocabulary has a piece of 300000 bytes (at most 4096)"
        ),
        "{err}"
    );
}

/// Found as a hang (over 20 s): an added token of 65,536 bytes, for which `tokenizers` builds a
/// matching automaton in time that grows faster than the token's length. Now a load error.
#[test]
fn very_long_added_token_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut tok = word_level(json!({}));
    tok["added_tokens"].as_array_mut().unwrap().push(json!({"id": 5, "content": "x".repeat(65536),
        "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let t0 = std::time::Instant::now();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
    assert!(
        err.to_string()
            .ends_with("tokenizer.json: an added token is 65536 bytes long (at most 1024)"),
        "{err}"
    );
}

/// Found as a panic inside `tokenizers` at decode time (an underflow in `decoders/strip.rs`): a
/// `Strip` decoder whose `stop` is past the end of a token made only of the stripped character.
/// `Tokenizer::decode` now returns an error.
#[test]
fn strip_decoder_past_a_token_is_a_decode_error() {
    let tok = strip_tokenizer();
    let err = tok.decode(&[1], false).unwrap_err();
    assert!(matches!(err, TokenizerError::Decode(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot decode: the tokenizers crate failed"),
        "{err}"
    );
    assert_eq!(tok.decode(&[2], false).unwrap(), "ab");
}

/// The same through the streaming detokenizer, which now calls `tokenizers` through the same
/// guard.
#[test]
fn strip_decoder_past_a_token_is_a_detokenizer_error() {
    let tok = strip_tokenizer();
    let mut stream = tok.detokenizer();
    assert!(stream.add_token(1).is_err());
}

fn strip_tokenizer() -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    let tok = word_level(json!({
        "added_tokens": [],
        "decoder": {"type": "Strip", "content": " ", "start": 0, "stop": 5},
        "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0, "  ": 1, "ab": 2}},
    }));
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    Tokenizer::from_dir(dir.path()).unwrap()
}

// --- config.json -----------------------------------------------------------------------------

/// Found as an abort (a 51 GB allocation): the llama-like args' post-parse hook filled
/// `layer_types` with one entry per layer before anything bounded `num_hidden_layers`
/// (`check_layer_types` in `mlx-models/src/nn/transformer/config.rs`; smollm3's
/// `no_rope_layers` likewise). Now the count is bounded (`MAX_LAYERS`) first.
#[test]
fn huge_layer_count_is_refused() {
    mlx_models_zoo::link();
    let config = json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2147483647,
        "vocab_size": 256, "rms_norm_eps": 1e-5,
    });
    let entry = mlx_models::registry::for_config(&config).unwrap();
    let err = entry.build(&config).unwrap_err();
    assert!(err.to_string().contains("num_hidden_layers"), "{err}");
    let err = Config::<mlx_models_zoo::llama::LlamaArgs>::parse(&config).unwrap_err();
    assert!(err.to_string().contains("num_hidden_layers"), "{err}");
}

/// Found as a broken round trip (`Config::to_json` must parse again to the same args):
/// `"rope_scaling": null` beside its alias `"rope_parameters": "cohere"` read as no scaling, but
/// written back (the `null` left out) read `"cohere"` and failed. In one object, a `null` now
/// gives way to an alias with a value, so both read the same.
#[test]
fn null_key_gives_way_to_an_alias_with_a_value() {
    use mlx_models_zoo::gemma3_text::Gemma3TextArgs;
    let config = |rope_parameters: Value| {
        json!({
            "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 5,
            "head_dim": 32, "vocab_size": 256, "rms_norm_eps": 1e-6,
            "rope_scaling": null, "rope_parameters": rope_parameters,
        })
    };
    let err = Config::<Gemma3TextArgs>::parse(&config(json!("cohere"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.json: RoPE config key `rope_scaling` must be an object"
    );
    let linear = json!({"rope_type": "linear", "factor": 8.0});
    let c = Config::<Gemma3TextArgs>::parse(&config(linear.clone())).unwrap();
    assert_eq!(c.args.rope_scaling, Some(linear));
    // The `null` it passed over is not an unknown key.
    assert_eq!(c.unknown_keys().count(), 0);
    let again = Config::<Gemma3TextArgs>::parse(&c.to_json()).unwrap();
    assert_eq!(again.args, c.args);
    // A `null` with no alias beside it still reads as absent.
    let mut alone = config(json!(null));
    alone.as_object_mut().unwrap().remove("rope_parameters");
    let c = Config::<Gemma3TextArgs>::parse(&alone).unwrap();
    assert_eq!(c.args.rope_scaling, None);
}

// --- a short fuzz pass -----------------------------------------------------------------------

/// A short pass of every fuzz target (the CI's; `scripts/fuzz.sh` runs a million inputs each):
/// no input may panic, hang or allocate more than 1 GiB.
#[test]
fn short_fuzz_pass() {
    let fuzz = mlx_models_tests::cli::example("fuzz");
    let crashes = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&fuzz)
        .args([
            "all",
            "--iterations",
            "300",
            "--seed",
            "7",
            "--hang-ms",
            "10000",
        ])
        .arg("--crash-dir")
        .arg(crashes.path())
        .arg("--corpus")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus"))
        .output()
        .expect("run the fuzz example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        fuzz.display(),
        out.status
    );
    for target in [
        "config",
        "safetensors",
        "gguf",
        "tokenizer",
        "chat-template",
    ] {
        let line = format!("fuzz {target}: 300 inputs, 0 crashes, 0 hangs");
        assert!(stdout.contains(&line), "no `{line}` in:\n{stdout}");
    }
}
