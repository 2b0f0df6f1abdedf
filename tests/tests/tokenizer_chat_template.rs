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
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    let mut specials: Vec<AddedToken> = ["<s>", "</s>"]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
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
    let no_gen = tok
        .apply_chat_template(&conversation(), &ChatOptions::default())
        .unwrap();
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
    assert_eq!(
        ChatTemplate::select(&cfg["chat_template"], Some("tool_use")).unwrap(),
        "TOOLS"
    );
    assert!(matches!(
        ChatTemplate::select(&cfg["chat_template"], Some("nope")),
        Err(TemplateError::NoSuchTemplate { .. })
    ));
    assert!(matches!(
        ChatTemplate::select(&json!(3), None),
        Err(TemplateError::BadShape)
    ));
    // chat_template.jinja wins over tokenizer_config.json.
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ bos_token }}J:{{ messages[0].content }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "chat_template": CHATML}).to_string(),
    )
    .unwrap();
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
        tok.apply_chat_template(&conversation(), &gen())
            .unwrap_err(),
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
    let err = render(
        src,
        json!({"messages": [{"role": "assistant", "content": "x"}]}),
    )
    .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)));
    assert!(
        err.to_string()
            .contains("Conversation roles must alternate"),
        "{err}"
    );
    assert_eq!(
        render(src, json!({"messages": [{"role": "user", "content": "x"}]})).unwrap(),
        "ok"
    );
}

#[test]
fn strftime_now() {
    let out = render(
        "{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}",
        json!({}),
    )
    .unwrap();
    let (iso, human) = out.split_once('|').unwrap();
    let parts: Vec<&str> = iso.split('-').collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert!(
        parts[0].len() == 4 && parts[0].parse::<u32>().unwrap() >= 2024,
        "{out}"
    );
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
    let out = render(
        "{{ x | tojson(indent=2) }}",
        json!({"x": {"a": [1, 2], "b": {}}}),
    )
    .unwrap();
    assert_eq!(out, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}");
    // Markup is not escaped anywhere (the output is a prompt, not HTML).
    assert_eq!(
        render("{{ '<b>' }}{{ x }}", json!({"x": "&"})).unwrap(),
        "<b>&"
    );
}

#[test]
fn tools_extra_variables_and_thinking() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &["<think>", "</think>"]);
    let src = "{% if tools %}T{{ tools | length }};{% endif %}{{ enable_thinking }};{{ eos_token }};{{ custom | default('none') }}";
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"eos_token": "</s>", "chat_template": src}).to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let msgs = vec![ChatMessage::new("user", "x")];
    assert_eq!(
        tok.apply_chat_template(&msgs, &gen()).unwrap(),
        "True;</s>;none"
    );
    let mut opts = gen();
    opts.tools = Some(json!([{"name": "a"}, {"name": "b"}]));
    opts.extra.insert("enable_thinking".into(), json!(false));
    opts.extra.insert("custom".into(), json!("yes"));
    assert_eq!(
        tok.apply_chat_template(&msgs, &opts).unwrap(),
        "T2;False;</s>;yes"
    );
    // Messages as free-form JSON.
    let msgs = json!([{"role": "user", "content": "x", "tool_calls": [{"name": "a"}]}]);
    assert_eq!(
        tok.apply_chat_template_json(&msgs, &gen()).unwrap(),
        "True;</s>;none"
    );
}

#[test]
fn prompt_encoding_skips_a_second_bos() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>"}).to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let bos = tok.inner().token_to_id("<s>").unwrap();
    let ids = tok.encode_prompt("<s>").unwrap();
    assert_eq!(ids, vec![bos]);
}

#[test]
fn syntax_errors_and_runaway_templates() {
    assert!(matches!(
        ChatTemplate::new("{% for %}"),
        Err(TemplateError::Syntax(_))
    ));
    // A template that would run (practically) forever is stopped.
    let err = render(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        json!({}),
    )
    .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}

// --- parity with transformers ----------------------------------------------------------------

/// Qwen2.5's template (tools, tool calls and tool responses, `tojson`, whitespace control).
const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// Jinja features templates lean on: namespaces, filters, tests, slicing, Python methods.
const FEATURES: &str = r#"{%- set ns = namespace(count=0, sys='') -%}
{%- for m in messages -%}{%- if m.role == 'system' -%}{%- set ns.sys = m.content -%}{%- else -%}{%- set ns.count = ns.count + 1 -%}{%- endif -%}{%- endfor -%}
SYS={{ ns.sys }};N={{ ns.count }};ROLES={{ messages | map(attribute='role') | join(',') }};
{%- for m in messages[::-1] %}[{{ loop.index }}/{{ loop.length }}:{{ m.content.replace(' ', '_').lstrip('_') | upper }}:{{ m.content.endswith('?') }}]{% endfor %}
{{ tools | tojson(indent=4) }}
{%- for k, v in tools[0].items() %}{{ k }}{% if v is mapping %}=map{% elif v is string %}=str{% endif %};{% endfor %}
{{ (messages | first).role }}/{{ (messages | last).content | length }}/{{ messages[0].content.split(' ') | last }}/{{ 3 // 2 }}/{{ 7 % 3 }}/{{ 'a' ~ 1 }}/{{ [1, 2] + [3] }}/{{ 'x' in 'xyz' }}/{{ none is none }}
{% if add_generation_prompt %}GEN{% endif %}"#;

fn tools() -> serde_json::Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Météo à Paris, \"quoted\" <b>", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 3}}, "required": ["city"]}}}])
}

fn tool_conversation() -> serde_json::Value {
    json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "content": "22°C, sunny"},
        {"role": "tool", "content": "{\"tomorrow\": 21.5}"},
        {"role": "assistant", "content": "22°C and sunny."},
        {"role": "user", "content": "  And Lyon ?  "},
    ])
}

#[test]
fn rendering_matches_transformers() {
    let plain = serde_json::to_value(conversation()).unwrap();
    let alternating = json!([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye?"}
    ]);
    let specials = json!({"bos_token": "<s>", "eos_token": "</s>"});
    let mut cases = Vec::new();
    for (template, messages, tools, gen) in [
        (LLAMA3, &plain, None, true),
        (CHATML, &plain, None, false),
        (QWEN25, &plain, None, true),
        (QWEN25, &tool_conversation(), Some(tools()), true),
        (MISTRAL, &alternating, None, false),
        (MISTRAL, &plain, None, false),
        (GEMMA, &alternating, None, true),
        (GEMMA, &plain, None, true),
        (FEATURES, &tool_conversation(), Some(tools()), true),
        (
            FEATURES,
            &plain,
            Some(json!([{"a": [1, {"b": null}], "s": "é"}])),
            false,
        ),
    ] {
        cases.push(json!({"template": template, "messages": messages, "tools": tools, "add_generation_prompt": gen, "kwargs": specials}));
    }
    let expected = transformers_render(&cases);
    assert_eq!(expected.len(), cases.len());
    let (mut compared, mut errors) = (0, 0);
    for (case, want) in cases.iter().zip(&expected) {
        let mut ctx = case["kwargs"].as_object().unwrap().clone();
        ctx.insert("messages".into(), case["messages"].clone());
        ctx.insert(
            "add_generation_prompt".into(),
            case["add_generation_prompt"].clone(),
        );
        if !case["tools"].is_null() {
            ctx.insert("tools".into(), case["tools"].clone());
        }
        let ours = ChatTemplate::new(case["template"].as_str().unwrap())
            .unwrap()
            .render(&serde_json::Value::Object(ctx));
        match (
            &ours,
            want.get("ok").and_then(|v| v.as_str()),
            want.get("error").and_then(|v| v.as_str()),
        ) {
            (Ok(text), Some(reference), _) => {
                assert_eq!(text, reference, "template:\n{}", case["template"]);
                compared += 1;
            }
            (Err(e), None, Some(reference)) => {
                // Both raise; the template's own message comes through.
                assert!(e.to_string().contains(reference), "{e} vs {reference}");
                errors += 1;
            }
            (ours, _, _) => panic!(
                "ours {ours:?} vs transformers {want}\ntemplate:\n{}",
                case["template"]
            ),
        }
    }
    assert_eq!((compared, errors), (8, 2));
}

/// Renders the cases with transformers' own `render_jinja_template` in the reference python
/// (see `mlx_models_tests::reference`; the test fails if it is missing).
fn transformers_render(cases: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(&input, serde_json::to_vec(cases).unwrap()).unwrap();
    const SCRIPT: &str = r#"
import json, sys
from transformers.utils.chat_template_utils import render_jinja_template
out = []
for c in json.load(open(sys.argv[1])):
    try:
        text, _ = render_jinja_template(conversations=[c["messages"]], tools=c["tools"], chat_template=c["template"],
                                        add_generation_prompt=c["add_generation_prompt"], **c["kwargs"])
        out.append({"ok": text[0]})
    except Exception as e:
        out.append({"error": str(e)})
json.dump(out, sys.stdout)
"#;
    let stdout = mlx_models_tests::reference::run_python(SCRIPT, &[input.as_os_str()]);
    serde_json::from_str(&stdout).unwrap()
}

/// `continue_final_message`, as transformers: the rendering ends right after the last
/// message's content (its end-of-turn token cut), also when the template trims the content.
#[test]
fn continue_final_message_cuts_after_the_last_content() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &[]);
    let cfg = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3});
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let open = ChatOptions {
        continue_final_message: true,
        ..ChatOptions::default()
    };
    for content in ["Once upon", "Once upon  \n"] {
        let messages = vec![ChatMessage::new("user", content)];
        let out = tok.apply_chat_template(&messages, &open).unwrap();
        assert_eq!(
            out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nOnce upon",
            "{content:?}"
        );
    }
    // Content the template does not show is an error, not a silent cut.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "chat_template": "{{ bos_token }}hello"}).to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let err = tok
        .apply_chat_template(&[ChatMessage::new("user", "absent")], &open)
        .unwrap_err();
    assert!(err.to_string().contains("continue_final_message"), "{err}");
}
