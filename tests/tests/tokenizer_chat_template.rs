//! Chat templates: where they come from (tokenizer_config.json as a string or a list of named
//! templates, chat_template.jinja), and rendering with transformers' conventions.

use std::path::Path;

use mlx_models::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use mlx_models::tokenizer::{ChatOptions, Tokenizer, TokenizerError};
use serde_json::json;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::AddedToken;

/// A minimal tokenizer.json (the template tests do not depend on the vocabulary).
fn write_tokenizer(dir: &Path, extra_tokens: &[&str]) {
    let mut vocab = std::collections::HashMap::new();
    vocab.insert("<unk>".to_string(), 0u32);
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("<unk>".into()).build().unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    let mut specials: Vec<AddedToken> = ["<s>", "</s>"].iter().map(|t| AddedToken::from(*t, true)).collect();
    specials.extend(extra_tokens.iter().map(|t| AddedToken::from(*t, true)));
    tok.add_special_tokens(&specials);
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hi!"),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "2+2?"),
    ]
}

fn gen() -> ChatOptions {
    ChatOptions {
        add_generation_prompt: true,
        ..ChatOptions::default()
    }
}

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn llama3_template_from_tokenizer_config() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    let cfg = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3});
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert!(tok.has_chat_template());
    let out = tok.apply_chat_template(&conversation(), &gen()).unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let no_gen = tok.apply_chat_template(&conversation(), &ChatOptions::default()).unwrap();
    assert!(out.starts_with(&no_gen) && !no_gen.ends_with("assistant<|end_header_id|>\n\n"));
}

#[test]
fn named_templates_and_jinja_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    let cfg = json!({"chat_template": [
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": CHATML},
    ]});
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let msgs = vec![ChatMessage::new("user", "Hi")];
    assert_eq!(
        tok.apply_chat_template(&msgs, &gen()).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(ChatTemplate::select(&cfg["chat_template"], Some("tool_use")).unwrap(), "TOOLS");
    assert!(matches!(
        ChatTemplate::select(&cfg["chat_template"], Some("nope")),
        Err(TemplateError::NoSuchTemplate { .. })
    ));
    assert!(matches!(ChatTemplate::select(&json!(3), None), Err(TemplateError::BadShape)));
    // chat_template.jinja wins over tokenizer_config.json.
    std::fs::write(dir.path().join("chat_template.jinja"), "{{ bos_token }}J:{{ messages[0].content }}").unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), json!({"bos_token": "<s>", "chat_template": CHATML}).to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.apply_chat_template(&msgs, &gen()).unwrap(), "<s>J:Hi");
}

#[test]
fn no_template_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert!(!tok.has_chat_template());
    assert!(matches!(
        tok.apply_chat_template(&conversation(), &gen()).unwrap_err(),
        TokenizerError::NoChatTemplate
    ));
}

fn render(src: &str, ctx: serde_json::Value) -> Result<String, TemplateError> {
    ChatTemplate::new(src)?.render(&ctx)
}

#[test]
fn python_compatibility() {
    // String and dict methods, loop controls, trimmed blocks.
    let src = "{% for m in messages %}{% if m.role == 'stop' %}{% break %}{% endif %}\n  {{ m.content.strip().upper() }}|{{ m.content.startswith(' a') }}|{{ m.content.split(',') | length }}\n{% endfor %}{% for k, v in extra.items() %}{{ k }}={{ v }};{% endfor %}{{ extra.get('missing', 'dflt') }}";
    let ctx = json!({
        "messages": [{"role": "user", "content": " a,b "}, {"role": "stop", "content": "x"}, {"role": "user", "content": "never"}],
        "extra": {"k1": 1},
    });
    // What jinja2 renders with transformers' settings (checked with the reference venv):
    // booleans print as Python's, and the indentation before `{{` is kept.
    assert_eq!(render(src, ctx).unwrap(), "  A,B|True|2\nk1=1;dflt");
}

#[test]
fn raise_exception_surfaces_the_message() {
    let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}ok";
    let err = render(src, json!({"messages": [{"role": "assistant", "content": "x"}]})).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)));
    assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    assert_eq!(render(src, json!({"messages": [{"role": "user", "content": "x"}]})).unwrap(), "ok");
}

#[test]
fn strftime_now() {
    let out = render("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}", json!({})).unwrap();
    let (iso, human) = out.split_once('|').unwrap();
    let parts: Vec<&str> = iso.split('-').collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert!(parts[0].len() == 4 && parts[0].parse::<u32>().unwrap() >= 2024, "{out}");
    assert!(human.ends_with(parts[0]), "{out}");
}

#[test]
fn tojson_like_python_json_dumps() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Météo <now> & \"quoted\"", "parameters": {"type": "object", "required": ["city"], "n": 1.5, "k": 2, "empty": {}, "none": null}}}]);
    let out = render("{{ tools | tojson }}", json!({"tools": tools})).unwrap();
    // serde_json orders object keys alphabetically in the test's input; the separators, the
    // escapes and the kept non-ASCII are Python's.
    assert_eq!(
        out,
        r#"[{"function": {"description": "Météo <now> & \"quoted\"", "name": "get_weather", "parameters": {"empty": {}, "k": 2, "n": 1.5, "none": null, "required": ["city"], "type": "object"}}, "type": "function"}]"#
    );
    let out = render("{{ x | tojson(indent=2) }}", json!({"x": {"a": [1, 2], "b": {}}})).unwrap();
    assert_eq!(out, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}");
    // Markup is not escaped anywhere (the output is a prompt, not HTML).
    assert_eq!(render("{{ '<b>' }}{{ x }}", json!({"x": "&"})).unwrap(), "<b>&");
}

#[test]
fn tools_extra_variables_and_thinking() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &["<think>", "</think>"]);
    let src = "{% if tools %}T{{ tools | length }};{% endif %}{{ enable_thinking }};{{ eos_token }};{{ custom | default('none') }}";
    std::fs::write(dir.path().join("tokenizer_config.json"), json!({"eos_token": "</s>", "chat_template": src}).to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let msgs = vec![ChatMessage::new("user", "x")];
    assert_eq!(tok.apply_chat_template(&msgs, &gen()).unwrap(), "True;</s>;none");
    let mut opts = gen();
    opts.tools = Some(json!([{"name": "a"}, {"name": "b"}]));
    opts.extra.insert("enable_thinking".into(), json!(false));
    opts.extra.insert("custom".into(), json!("yes"));
    assert_eq!(tok.apply_chat_template(&msgs, &opts).unwrap(), "T2;False;</s>;yes");
    // Messages as free-form JSON.
    let msgs = json!([{"role": "user", "content": "x", "tool_calls": [{"name": "a"}]}]);
    assert_eq!(tok.apply_chat_template_json(&msgs, &gen()).unwrap(), "True;</s>;none");
}

#[test]
fn prompt_encoding_skips_a_second_bos() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    std::fs::write(dir.path().join("tokenizer_config.json"), json!({"bos_token": "<s>"}).to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let bos = tok.inner().token_to_id("<s>").unwrap();
    let ids = tok.encode_prompt("<s>").unwrap();
    assert_eq!(ids, vec![bos]);
}

#[test]
fn syntax_errors_and_runaway_templates() {
    assert!(matches!(ChatTemplate::new("{% for %}"), Err(TemplateError::Syntax(_))));
    // A template that would run (practically) forever is stopped.
    let err = render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", json!({})).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}
