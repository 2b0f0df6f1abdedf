//! `mlx-models`: generate text with any registered architecture, list them, inspect a
//! checkpoint. Every failure ends with a one-line error and exit status 1.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mlx_models::cache::{Cache, KvQuantization, Snapshot};
use mlx_models::chat_template::ChatMessage;
use mlx_models::generate::{model_stream, FinishReason, GenerationConfig, GenerationStats};
use mlx_models::hub::{self, HubOptions};
use mlx_models::load::{load_with, LoadOptions, LoadedModel};
use mlx_models::registry;
use mlx_models::sampling::{LogitsConfig, SamplerConfig};
use mlx_models::stop::StopStrings;
use mlx_models::tokenizer::{ChatOptions, Tokenizer};
use mlx_rs::Dtype;
use serde_json::json;

mod serve;

type CliResult<T> = Result<T, String>;

#[derive(Parser)]
#[command(name = "mlx-models", version, about = "Large language models on MLX")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt.
    // `--temp -1` is a value to refuse with its own message, not an unknown flag.
    #[command(allow_negative_numbers = true)]
    Generate(GenerateArgs),
    /// Chat interactively (one message a line; `q` quits, `r` starts over); the cache is
    /// kept between turns, so each turn only processes its new tokens.
    #[command(allow_negative_numbers = true)]
    Chat(ChatArgs),
    /// Process a prompt once and save the model's cache, for `generate --prompt-cache-file`.
    CachePrompt(CachePromptArgs),
    /// List the registered architectures and their aliases.
    List,
    /// Describe a checkpoint: type, parameters, dtype, quantization, layers, unknown config keys.
    Inspect(SourceArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text completions,
    /// streaming, tool calls, continuous batching, prompt-prefix reuse).
    #[command(allow_negative_numbers = true)]
    Serve(serve::ServeArgs),
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// A checkpoint folder, a `.gguf` file, or a Hugging Face repo id (`org/name`, optionally
    /// `@revision`).
    #[arg(long = "model", short = 'm', value_name = "SRC")]
    model: String,
    /// A branch, tag or commit of the repo.
    #[arg(long)]
    revision: Option<String>,
    /// Only use the local Hugging Face cache (also `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    offline: bool,
    /// Cast floating-point weights: float32, float16 or bfloat16 (default: as stored, except
    /// that a quantized checkpoint on the CPU computes in float32, where the fast CPU kernels
    /// of quantized products run).
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<Dtype>,
    /// No progress bars (downloads, loading a checkpoint over 1 GB, a long prompt); they are
    /// also off when standard error is not a terminal.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The prompt text (`-` reads standard input).
    #[arg(long, short = 'p', conflicts_with = "prompt_tokens")]
    prompt: Option<String>,
    /// Many prompts, generated together as a left-padded batch: a JSONL file with one object a
    /// line, `{"prompt": "..."}` or `{"prompt_tokens": [...]}`, optionally `"max_tokens": n`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "prompt_tokens", "prompt_cache_file"])]
    prompts_file: Option<std::path::PathBuf>,
    /// With `--prompts-file`: prompts per batch (each batch is one left-padded batch).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
    /// The prompt as token ids (`3,17,42`); needs no tokenizer.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    prompt_tokens: Option<Vec<u32>>,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    no_chat_template: bool,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Output: streamed text, or one JSON object with the token ids and log-probabilities.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Start from a prompt cache saved by `cache-prompt` (or by the reference's
    /// `mlx_lm.cache_prompt`); the prompt is what follows the cached part.
    #[arg(long, value_name = "FILE")]
    prompt_cache_file: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct CachePromptArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The prompt text (`-` reads standard input); with a chat template it is the start of a
    /// user message that `generate --prompt-cache-file` continues.
    #[arg(long, short = 'p', conflicts_with = "prompt_tokens")]
    prompt: Option<String>,
    /// The prompt as token ids (`3,17,42`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    prompt_tokens: Option<Vec<u32>>,
    /// Where to write the cache (a safetensors file in the reference's layout).
    #[arg(long, alias = "prompt-cache-file", value_name = "FILE")]
    out: std::path::PathBuf,
    /// Bound every full-attention cache to this many positions, as `generate`'s.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_kv_size: Option<u32>,
    /// Quantize the cache to this many bits once it holds `--quantized-kv-start` positions.
    #[arg(long)]
    kv_bits: Option<i32>,
    /// Group size of the quantized cache.
    #[arg(long, default_value_t = 64)]
    kv_group_size: i32,
    /// Positions from which the cache is quantized, with `--kv-bits`.
    #[arg(long, default_value_t = KvQuantization::DEFAULT_START)]
    quantized_kv_start: usize,
    /// Prompt tokens per model call.
    #[arg(long, default_value_t = 2048)]
    prefill_step_size: usize,
}

/// Sampling, logits processing and cache settings shared by `generate` and `chat`.
#[derive(Args)]
struct SamplingArgs {
    /// Sampling temperature (0: greedy).
    #[arg(long, alias = "temperature", default_value_t = 0.0)]
    temp: f32,
    /// Nucleus sampling threshold (0 or 1: off).
    #[arg(long, default_value_t = 0.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Min-p sampling threshold (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// XTC probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    xtc_probability: f32,
    /// XTC threshold.
    #[arg(long, default_value_t = 0.1)]
    xtc_threshold: f32,
    /// Repetition penalty (off when absent).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Presence penalty (off when absent).
    #[arg(long)]
    presence_penalty: Option<f32>,
    /// Frequency penalty (off when absent).
    #[arg(long)]
    frequency_penalty: Option<f32>,
    /// Logit bias as `id:bias` pairs, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Random seed of the sampler.
    #[arg(long)]
    seed: Option<u64>,
    /// Prompt tokens per model call while processing the prompt.
    #[arg(long, default_value_t = 2048)]
    prefill_step_size: usize,
    /// Bound every full-attention cache to this many positions (a rotating cache keeping the
    /// first 4), as the reference's `--max-kv-size`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_kv_size: Option<u32>,
    /// Quantize the key/value cache to this many bits (2, 3, 4, 5, 6 or 8) once it holds
    /// `--quantized-kv-start` positions (off when absent).
    #[arg(long)]
    kv_bits: Option<i32>,
    /// Group size of the quantized key/value cache (32, 64 or 128).
    #[arg(long, default_value_t = 64)]
    kv_group_size: i32,
    /// Positions from which the key/value cache is quantized, with `--kv-bits`.
    #[arg(long, default_value_t = KvQuantization::DEFAULT_START)]
    quantized_kv_start: usize,
    /// Stop when the text contains this string (repeatable; matched across tokens; the string
    /// and what follows are not printed).
    #[arg(long, value_name = "STRING")]
    stop: Vec<String>,
    /// One more end-of-sequence token, as its text or its id (repeatable).
    #[arg(long, value_name = "TOKEN")]
    extra_eos_token: Vec<String>,
    /// A smaller model of the same vocabulary that drafts tokens for the model to check
    /// (speculative decoding; greedy output is the model's own).
    #[arg(long, value_name = "SRC")]
    draft_model: Option<String>,
    /// Tokens the draft model proposes per round, with `--draft-model`.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    num_draft_tokens: u32,
    /// A JSON object of further chat-template variables (`{"enable_thinking": false}`).
    #[arg(long, value_name = "JSON", value_parser = parse_template_config)]
    chat_template_config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// A system message, sent with the first turn.
    #[arg(long)]
    system: Option<String>,
    /// The most tokens of one answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Start the conversation from a prompt cache saved by `cache-prompt`: the first message
    /// continues the cached user message (and `r` goes back to the cache).
    #[arg(long, value_name = "FILE")]
    prompt_cache_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    match s {
        "float32" | "f32" => Ok(Dtype::Float32),
        "float16" | "f16" => Ok(Dtype::Float16),
        "bfloat16" | "bf16" => Ok(Dtype::Bfloat16),
        _ => Err(format!(
            "unknown dtype `{s}` (float32, float16 or bfloat16)"
        )),
    }
}

fn parse_template_config(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `id:bias`"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("`{id}` is not a token id"))?;
    let bias = bias
        .trim()
        .parse()
        .map_err(|_| format!("`{bias}` is not a number"))?;
    Ok((id, bias))
}

fn hub_options(source: &SourceArgs) -> HubOptions {
    HubOptions {
        revision: source.revision.clone(),
        offline: source.offline || hub::offline_from_env(|k| std::env::var(k).ok()),
        progress: !source.quiet,
        ..Default::default()
    }
}

/// Loads the model, warning on standard error about config keys that look misspelt (they
/// are ignored, so the model may not be the one its author meant).
fn load(source: &SourceArgs) -> CliResult<LoadedModel> {
    let options = LoadOptions {
        dtype: source.dtype,
        hub: hub_options(source),
        progress: !source.quiet,
        float32_quantized_on_cpu: true,
    };
    let loaded = load_with(&source.model, &options).map_err(|e| e.to_string())?;
    warn_typos(&loaded.typos);
    Ok(loaded)
}

fn warn_typos(typos: &[mlx_models::args::Typo]) {
    for typo in typos {
        eprintln!(
            "warning: config.json: unknown key `{}` is ignored; did you mean `{}`?",
            typo.key, typo.suggestion
        );
    }
}

/// A prefill progress bar that appears once the prompt has taken over two seconds (and never
/// with `--quiet` or when standard error is not a terminal).
fn prefill_progress(quiet: bool) -> impl FnMut(usize, usize) {
    let started = std::time::Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |done, total| {
        if quiet {
            return;
        }
        if bar.is_none() && started.elapsed() > std::time::Duration::from_secs(2) {
            let style = indicatif::ProgressStyle::with_template(
                "prompt {bar:30} {pos}/{len} tokens ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar = Some(indicatif::ProgressBar::new(total as u64).with_style(style));
        }
        if let Some(b) = &bar {
            b.set_position(done as u64);
            if done + 1 >= total {
                b.finish_and_clear();
            }
        }
    }
}

/// mimalloc serves every allocation of the process, MLX's C++ included (its `override` feature
/// exports `malloc` / `free`, which the loader resolves in the executable first): MLX allocates
/// and frees every intermediate array of every step, and glibc's allocator spent about a
/// sixth of a CPU decode step consolidating and unlinking chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return flag_error(e),
    };
    let result = match cli.command {
        Command::Generate(args) => generate(args),
        Command::Chat(args) => chat(args),
        Command::CachePrompt(args) => cache_prompt(args),
        Command::List => {
            list();
            Ok(())
        }
        Command::Inspect(args) => inspect(args),
        Command::Serve(args) => serve::serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line: the first line of the message, the rest indented below it.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap writes them; a bad flag or value is one `error:` line
/// (clap's first) and exit status 2.
fn flag_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("error: bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("error: {first} (see --help)");
    ExitCode::from(2)
}

fn list() {
    mlx_models_zoo::link();
    let mut entries = registry::entries();
    entries.sort_by_key(|e| e.model_type);
    for entry in entries {
        if entry.aliases.is_empty() {
            println!("{}", entry.model_type);
        } else {
            println!(
                "{} (aliases: {})",
                entry.model_type,
                entry.aliases.join(", ")
            );
        }
    }
}

/// Describes a checkpoint from its config and tensor headers: no tensor data is read (a GGUF
/// is opened once, through MLX's reader, which needs its metadata).
fn inspect(args: SourceArgs) -> CliResult<()> {
    mlx_models_zoo::link();
    let source = std::path::Path::new(&args.model);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let (dir, config, names, count, dtypes, eos) =
        if mlx_models::gguf::is_gguf_path(source) && source.is_file() {
            let gguf = mlx_models::gguf::GgufCheckpoint::open(source).map_err(|e| err(&e))?;
            let mut dtypes: BTreeMap<String, u64> = BTreeMap::new();
            let mut count = 0u64;
            for t in &gguf.header().tensors {
                let n: u64 = t.shape.iter().product();
                count += n;
                *dtypes.entry(t.ggml_type.name()).or_default() += n;
            }
            let names = gguf
                .header()
                .tensors
                .iter()
                .map(|t| t.name.clone())
                .collect();
            let config = gguf.config().map_err(|e| err(&e))?;
            let eos = gguf.eos_token_ids().map_err(|e| err(&e))?;
            (source.to_path_buf(), config, names, count, dtypes, eos)
        } else {
            let dir = if source.is_dir() {
                source.to_path_buf()
            } else {
                hub::resolve(&args.model, &hub_options(&args)).map_err(|e| err(&e))?
            };
            let config = serde_json::Value::Object(
                mlx_models::checkpoint::read_config(&dir).map_err(|e| err(&e))?,
            );
            let summary = mlx_models::checkpoint::summarize(&dir).map_err(|e| err(&e))?;
            let eos = mlx_models::checkpoint::eos_token_ids(&dir).map_err(|e| err(&e))?;
            (
                dir,
                config,
                summary.names,
                summary.elements,
                summary.dtypes,
                eos,
            )
        };
    // The config is checked as loading checks it (layer count first), and the model built
    // with no parameters read, for its layer count and the config's unknown keys.
    mlx_models::load::check_layer_count(&config, &names).map_err(|e| err(&e))?;
    let built = registry::build(&config).map_err(|e| err(&e))?;
    warn_typos(&built.typos);
    println!("folder:       {}", dir.display());
    println!(
        "model type:   {} (config: {})",
        built.model.model_type(),
        config["model_type"]
    );
    println!("layers:       {}", built.model.num_layers());
    println!("parameters:   {count} stored ({:.1}M)", count as f64 / 1e6);
    println!("dtypes:       {dtypes:?}");
    let quant = config
        .get("quantization")
        .or_else(|| config.get("quantization_config"));
    println!(
        "quantization: {}",
        quant.map_or("none".to_string(), |q| q.to_string())
    );
    println!("eos ids:      {eos:?}");
    let unknown: Vec<String> = built
        .unknown_keys
        .iter()
        .filter(|k| !mlx_models::checkpoint::LOADER_KEYS.contains(&k.key.as_str()))
        .map(|k| format!("`{}`", k.key))
        .collect();
    println!(
        "unknown keys: {}",
        if unknown.is_empty() {
            "none".into()
        } else {
            unknown.join(", ")
        }
    );
    for typo in &built.typos {
        println!(
            "likely typo:  `{}` (did you mean `{}`?)",
            typo.key, typo.suggestion
        );
    }
    Ok(())
}

/// The tokens of one user message (after a system message, if any) rendered through the chat
/// template with the generation prompt.
fn user_turn(
    tokenizer: &Tokenizer,
    system: Option<&str>,
    text: &str,
    template_config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> CliResult<Vec<u32>> {
    let rendered = render_user_turn(tokenizer, system, text, template_config)?;
    tokenizer
        .encode(&rendered, false)
        .map_err(|e| e.to_string())
}

/// The tokens of a user turn whose start is in a prompt cache, as the reference cuts them: the
/// rendering from where the user's text goes on (found by rendering `<query>` in its place).
fn continued_turn(
    tokenizer: &Tokenizer,
    system: Option<&str>,
    text: &str,
    template_config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> CliResult<Vec<u32>> {
    let full = render_user_turn(tokenizer, system, text, template_config)?;
    let probe = render_user_turn(tokenizer, system, "<query>", template_config)?;
    let start = probe
        .find("<query>")
        .ok_or("the chat template does not show the user's message")?;
    let suffix = full.get(start..).unwrap_or_default();
    tokenizer.encode(suffix, false).map_err(|e| e.to_string())
}

/// The chat template over an optional system message and one user message, ending with the
/// start of the assistant's turn.
fn render_user_turn(
    tokenizer: &Tokenizer,
    system: Option<&str>,
    text: &str,
    template_config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> CliResult<String> {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", text));
    let options = ChatOptions {
        add_generation_prompt: true,
        extra: template_config.cloned().unwrap_or_default(),
        ..Default::default()
    };
    tokenizer
        .apply_chat_template(&messages, &options)
        .map_err(|e| e.to_string())
}

/// The tokenizer of a checkpoint folder, or of a GGUF file's metadata.
fn tokenizer_for(source: &std::path::Path) -> CliResult<Tokenizer> {
    if mlx_models::gguf::is_gguf_path(source) && source.is_file() {
        let gguf = mlx_models::gguf::GgufCheckpoint::open(source).map_err(|e| e.to_string())?;
        return gguf.tokenizer().map_err(|e| e.to_string());
    }
    Tokenizer::from_dir(source).map_err(|e| e.to_string())
}

/// `--prompt`, or standard input for `--prompt -`, with the reference's `\n` and `\t`
/// escapes turned into a newline and a tab.
fn prompt_text(flag: Option<&str>) -> CliResult<String> {
    let text = flag.ok_or("give --prompt or --prompt-tokens")?;
    if text == "-" {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .map_err(|e| format!("--prompt -: reading standard input: {e}"))?;
        return Ok(buf);
    }
    Ok(text.replace("\\n", "\n").replace("\\t", "\t"))
}

fn prompt_ids(
    args: &GenerateArgs,
    dir: &std::path::Path,
) -> CliResult<(Vec<u32>, Option<Tokenizer>)> {
    if let Some(ids) = &args.prompt_tokens {
        if ids.is_empty() {
            return Err("--prompt-tokens is empty".into());
        }
        // A tokenizer is optional here: only to stream text, and needed to match stop strings.
        let tokenizer = if !args.sampling.stop.is_empty() {
            Some(tokenizer_for(dir).map_err(|e| format!("--stop needs the tokenizer: {e}"))?)
        } else if args.format == Format::Text {
            tokenizer_for(dir).ok()
        } else {
            None
        };
        return Ok((ids.clone(), tokenizer));
    }
    let text = prompt_text(args.prompt.as_deref())?;
    let text = text.as_str();
    let tokenizer = tokenizer_for(dir)?;
    let ids = if !args.no_chat_template && tokenizer.has_chat_template() {
        let config = args.sampling.chat_template_config.as_ref();
        if args.prompt_cache_file.is_some() {
            continued_turn(&tokenizer, args.system.as_deref(), text, config)?
        } else {
            user_turn(&tokenizer, args.system.as_deref(), text, config)?
        }
    } else {
        tokenizer.encode_prompt(text).map_err(|e| e.to_string())?
    };
    Ok((ids, Some(tokenizer)))
}

/// Checks every sampling and generation flag before anything is loaded, naming the flag.
fn check_flags(args: &SamplingArgs, max_tokens: usize) -> CliResult<()> {
    let unit = |flag: &str, v: f32| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{flag}: must be in [0, 1], got {v}"))
        }
    };
    if !(args.temp.is_finite() && args.temp >= 0.0) {
        return Err(format!("--temp: must be a number >= 0, got {}", args.temp));
    }
    unit("--top-p", args.top_p)?;
    unit("--min-p", args.min_p)?;
    unit("--xtc-probability", args.xtc_probability)?;
    if !(0.0..=0.5).contains(&args.xtc_threshold) {
        return Err(format!(
            "--xtc-threshold: must be in [0, 0.5], got {}",
            args.xtc_threshold
        ));
    }
    if let Some(p) = args.repetition_penalty {
        if !(p.is_finite() && p >= 0.0) {
            return Err(format!(
                "--repetition-penalty: must be a number >= 0, got {p}"
            ));
        }
    }
    for (flag, p) in [
        ("--presence-penalty", args.presence_penalty),
        ("--frequency-penalty", args.frequency_penalty),
    ] {
        if let Some(p) = p {
            if !p.is_finite() {
                return Err(format!("{flag}: must be a finite number, got {p}"));
            }
        }
    }
    if let Some((id, bias)) = args.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
        return Err(format!(
            "--logit-bias: the bias of token {id} must be a finite number, got {bias}"
        ));
    }
    if max_tokens == 0 {
        return Err("--max-tokens: must be at least 1".into());
    }
    if args.prefill_step_size == 0 {
        return Err("--prefill-step-size: must be at least 1".into());
    }
    if let Some(q) = kv_quantization(args) {
        q.validate()
            .map_err(|e| format!("--kv-bits / --kv-group-size: {e}"))?;
    }
    if args.stop.iter().any(String::is_empty) {
        return Err("--stop: a stop string must not be empty".into());
    }
    // Whatever else the library checks, before loading too.
    generation_config(args, max_tokens, Vec::new())
        .validate()
        .map_err(|e| e.to_string())
}

fn generate(args: GenerateArgs) -> CliResult<()> {
    mlx_models_zoo::link();
    check_flags(&args.sampling, args.max_tokens)?;
    if let Some(file) = &args.prompts_file {
        return generate_batch(file, &args);
    }
    let load_started = std::time::Instant::now();
    let mut loaded = load(&args.source)?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let (prompt, tokenizer) = prompt_ids(&args, &loaded.dir)?;
    let vocab = loaded.config.get("vocab_size").and_then(|v| v.as_u64());
    if let Some(vocab) = vocab {
        if let Some(bad) = prompt.iter().find(|&&t| u64::from(t) >= vocab) {
            return Err(format!(
                "prompt token {bad} is outside the vocabulary (vocab_size {vocab})"
            ));
        }
    }
    let mut eos = eos_ids(&loaded, tokenizer.as_ref());
    eos.extend(extra_eos_ids(
        &args.sampling.extra_eos_token,
        tokenizer.as_ref(),
    )?);
    eos.sort_unstable();
    eos.dedup();

    let config = generation_config(&args.sampling, args.max_tokens, eos);

    let draft = load_draft(&args.source, &args.sampling, &loaded, tokenizer.as_ref())?;
    let model = loaded.model.as_mut();
    let mut cache = match &args.prompt_cache_file {
        Some(file) => cached_prompt(file, &args.source, &args.sampling, model)?,
        None => Cache::for_prompt(
            model.make_cache(),
            args.sampling.max_kv_size.map(|m| m as usize),
        ),
    };
    let mut em = Emitter::new(tokenizer.as_ref(), &args.sampling.stop, args.format)?;
    let mut stats = GenerationStats::default();
    let mut speculative = None;
    if let Some(mut draft) = draft {
        let mut draft_cache = Cache::for_prompt(
            draft.model.make_cache(),
            args.sampling.max_kv_size.map(|m| m as usize),
        );
        let mut failed = None;
        let spec = mlx_models::speculative::speculative_generate(
            model,
            &mut cache,
            draft.model.as_mut(),
            &mut draft_cache,
            &prompt,
            &config,
            args.sampling.num_draft_tokens as usize,
            |t| {
                let eos = t.finish_reason == Some(FinishReason::Stop);
                match em.token(t.token, t.logprob, eos, Some(t.from_draft)) {
                    Ok(go_on) => go_on,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            },
        )
        .map_err(|e| e.to_string())?;
        if let Some(e) = failed {
            return Err(e);
        }
        stats = GenerationStats {
            prompt_tokens: spec.prompt_tokens,
            prompt_seconds: spec.prompt_seconds,
            prompt_tps: spec.prompt_tps(),
            generation_tokens: spec.generation_tokens,
            generation_seconds: spec.generation_seconds,
            generation_tps: spec.generation_tps(),
            peak_memory_bytes: mlx_models::generate::peak_memory().unwrap_or(0),
        };
        speculative = Some(spec);
    } else {
        let stream = model_stream(model, &mut cache, &prompt, config)
            .map_err(|e| e.to_string())?
            .with_prefill_progress(prefill_progress(args.source.quiet));
        for step in stream {
            let step = step.map_err(|e| e.to_string())?;
            stats = step.stats;
            let eos = step.finish_reason == Some(FinishReason::Stop);
            if !em.token(step.token, step.logprob, eos, None)? {
                break;
            }
        }
    }
    em.finish()?;
    let Emitter {
        tokens,
        logprobs,
        from_draft,
        text,
        finish,
        mut out,
        ..
    } = em;
    match args.format {
        Format::Text => {
            let _ = writeln!(out);
            eprintln!("==========");
            eprintln!(
                "Prompt: {} tokens, {:.3} tokens-per-sec",
                stats.prompt_tokens, stats.prompt_tps
            );
            eprintln!(
                "Generation: {} tokens, {:.3} tokens-per-sec",
                stats.generation_tokens, stats.generation_tps
            );
            if let Some(spec) = &speculative {
                eprintln!(
                    "Draft: {} of {} drafted tokens accepted ({:.1}%)",
                    spec.accepted,
                    spec.drafted,
                    100.0 * spec.acceptance_rate()
                );
            }
            eprintln!("Peak memory: {:.3} GB", stats.peak_memory_gb());
        }
        Format::Json => {
            let mut value = json!({
                "prompt_tokens": prompt,
                "tokens": tokens,
                "logprobs": logprobs,
                "text": tokenizer.as_ref().map(|_| text),
                "finish_reason": finish,
                "stats": stats,
                "load_seconds": load_seconds,
                // What the cache holds at the end (every layer's keys and values, or latents).
                "cache_bytes": cache.iter().map(Cache::nbytes).sum::<usize>(),
            });
            if let Some(spec) = &speculative {
                value["speculative"] = json!({
                    "drafted": spec.drafted,
                    "accepted": spec.accepted,
                    "acceptance_rate": spec.acceptance_rate(),
                    "from_draft": from_draft,
                });
            }
            let _ = writeln!(out, "{value}");
        }
    }
    Ok(())
}

/// The generated tokens on their way out: detokenized, held back while they could become a
/// stop string, printed in text mode, collected for JSON.
struct Emitter {
    detok: Option<mlx_models::detokenizer::StreamingDetokenizer>,
    stops: StopStrings,
    format: Format,
    out: std::io::StdoutLock<'static>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    from_draft: Vec<bool>,
    text: String,
    finish: &'static str,
}

impl Emitter {
    fn new(tokenizer: Option<&Tokenizer>, stops: &[String], format: Format) -> CliResult<Self> {
        Ok(Emitter {
            detok: tokenizer.map(Tokenizer::detokenizer),
            stops: StopStrings::new(stops.to_vec()).map_err(|e| e.to_string())?,
            format,
            out: std::io::stdout().lock(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            from_draft: Vec::new(),
            text: String::new(),
            finish: "length",
        })
    }

    fn write(&mut self, piece: &str) {
        self.text.push_str(piece);
        if self.format == Format::Text {
            let _ = write!(self.out, "{piece}");
            let _ = self.out.flush();
        }
    }

    /// Takes one token; false when generation must end (an end token or a stop string).
    fn token(
        &mut self,
        token: u32,
        logprob: f32,
        eos: bool,
        draft: Option<bool>,
    ) -> CliResult<bool> {
        self.tokens.push(token);
        self.logprobs.push(logprob);
        if let Some(d) = draft {
            self.from_draft.push(d);
        }
        // As the reference's stream, the EOS token ends the text without being printed.
        if eos {
            self.finish = "stop";
            return Ok(false);
        }
        let piece = match self.detok.as_mut() {
            Some(d) => d.add_token(token).map_err(|e| e.to_string())?,
            None => format!("{token} "),
        };
        // Stop strings: what could still become one is held back, and one ends the stream.
        let (piece, hit) = self.stops.push(&piece);
        self.write(&piece);
        if hit {
            self.finish = "stop";
        }
        Ok(!hit)
    }

    /// The text held back by the detokenizer and the stop strings, at the end.
    fn finish(&mut self) -> CliResult<()> {
        if self.stops.stopped() {
            return Ok(());
        }
        if let Some(d) = self.detok.as_mut() {
            let tail = d.finalize().map_err(|e| e.to_string())?;
            let (piece, _) = self.stops.push(&tail);
            self.write(&piece);
        }
        let rest = self.stops.finish();
        self.write(&rest);
        Ok(())
    }
}

/// The draft model of `--draft-model`, loaded as the model is (same dtype and hub options),
/// with the same vocabulary as the model (config's `vocab_size`, and the tokenizers' sizes
/// when both have one, as the reference checks).
fn load_draft(
    source: &SourceArgs,
    sampling: &SamplingArgs,
    loaded: &LoadedModel,
    tokenizer: Option<&Tokenizer>,
) -> CliResult<Option<LoadedModel>> {
    let Some(draft_src) = &sampling.draft_model else {
        return Ok(None);
    };
    let options = LoadOptions {
        dtype: source.dtype,
        hub: hub_options(source),
        progress: !source.quiet,
        float32_quantized_on_cpu: true,
    };
    let draft = load_with(draft_src, &options).map_err(|e| format!("--draft-model: {e}"))?;
    let vocab = |c: &serde_json::Value| c.get("vocab_size").and_then(|v| v.as_u64());
    if vocab(&draft.config) != vocab(&loaded.config) {
        return Err(format!(
            "--draft-model: its vocabulary ({:?} tokens) is not the model's ({:?})",
            vocab(&draft.config),
            vocab(&loaded.config)
        ));
    }
    if let (Some(t), Ok(dt)) = (tokenizer, tokenizer_for(&draft.dir)) {
        if t.vocab_size() != dt.vocab_size() {
            return Err(format!(
                "--draft-model: its tokenizer has {} tokens, the model's {}",
                dt.vocab_size(),
                t.vocab_size()
            ));
        }
    }
    Ok(Some(draft))
}

/// The largest `--prompts-file` read.
const MAX_PROMPTS_FILE: u64 = 256 << 20;

/// One line of `--prompts-file`.
struct PromptLine {
    prompt: Option<String>,
    prompt_tokens: Option<Vec<u32>>,
    max_tokens: Option<usize>,
}

impl PromptLine {
    fn parse(line: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let serde_json::Value::Object(map) = value else {
            return Err("expected a JSON object".into());
        };
        if let Some(key) = map
            .keys()
            .find(|k| !["prompt", "prompt_tokens", "max_tokens"].contains(&k.as_str()))
        {
            return Err(format!("unknown key `{key}`"));
        }
        let prompt = match map.get("prompt") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`prompt` must be a string".into()),
        };
        let prompt_tokens = match map.get("prompt_tokens") {
            None => None,
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or("`prompt_tokens` must be token ids")?,
            ),
            Some(_) => return Err("`prompt_tokens` must be an array of token ids".into()),
        };
        let max_tokens = match map.get("max_tokens") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n >= 1)
                    .ok_or("`max_tokens` must be a positive integer")?,
            ),
        };
        Ok(PromptLine {
            prompt,
            prompt_tokens,
            max_tokens,
        })
    }
}

/// `generate --prompts-file`: every prompt of the file, in batches of `--batch-size`, each
/// result printed in the file's order (a JSON object a line with `--format json`).
fn generate_batch(file: &std::path::Path, args: &GenerateArgs) -> CliResult<()> {
    use mlx_models::batch::{batch_generate, BatchPrompt};
    let what = |e: &dyn std::fmt::Display| format!("--prompts-file {}: {e}", file.display());
    let size = std::fs::metadata(file).map_err(|e| what(&e))?.len();
    if size > MAX_PROMPTS_FILE {
        return Err(what(&format!(
            "{size} bytes, more than the {MAX_PROMPTS_FILE} read"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| what(&e))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: &dyn std::fmt::Display| what(&format!("line {}: {e}", n + 1));
        let parsed = PromptLine::parse(line).map_err(|e| at(&e))?;
        match (&parsed.prompt, &parsed.prompt_tokens) {
            (Some(_), Some(_)) => return Err(at(&"give `prompt` or `prompt_tokens`, not both")),
            (None, None) => return Err(at(&"no `prompt` or `prompt_tokens`")),
            (None, Some(t)) if t.is_empty() => return Err(at(&"`prompt_tokens` is empty")),
            _ => {}
        }
        lines.push((n + 1, parsed));
    }
    if lines.is_empty() {
        return Err(what(&"no prompts"));
    }

    let mut loaded = load(&args.source)?;
    let needs_tokenizer =
        lines.iter().any(|(_, l)| l.prompt.is_some()) || !args.sampling.stop.is_empty();
    let tokenizer = if needs_tokenizer {
        Some(tokenizer_for(&loaded.dir)?)
    } else {
        tokenizer_for(&loaded.dir).ok()
    };
    let vocab = loaded.config.get("vocab_size").and_then(|v| v.as_u64());
    let mut prompts = Vec::with_capacity(lines.len());
    for (n, line) in &lines {
        let tokens = match (&line.prompt, &line.prompt_tokens, tokenizer.as_ref()) {
            (_, Some(t), _) => t.clone(),
            (Some(text), None, Some(tok)) => {
                if !args.no_chat_template && tok.has_chat_template() {
                    user_turn(
                        tok,
                        args.system.as_deref(),
                        text,
                        args.sampling.chat_template_config.as_ref(),
                    )?
                } else {
                    tok.encode_prompt(text).map_err(|e| e.to_string())?
                }
            }
            _ => return Err(what(&format!("line {n}: no tokenizer for its `prompt`"))),
        };
        let outside = |&&t: &&u32| vocab.is_some_and(|v| v <= u64::from(t));
        if let (Some(vocab), Some(bad)) = (vocab, tokens.iter().find(outside)) {
            return Err(what(&format!(
                "line {n}: token {bad} is outside the vocabulary (vocab_size {vocab})"
            )));
        }
        prompts.push(BatchPrompt {
            tokens,
            max_tokens: line.max_tokens,
        });
    }
    let mut eos = eos_ids(&loaded, tokenizer.as_ref());
    eos.extend(extra_eos_ids(
        &args.sampling.extra_eos_token,
        tokenizer.as_ref(),
    )?);
    eos.sort_unstable();
    eos.dedup();
    let config = generation_config(&args.sampling, args.max_tokens, eos);
    let model = loaded.model.as_mut();
    let mut out = std::io::stdout().lock();
    let (mut generated, mut seconds, mut prompt_tokens, mut prompt_seconds) = (0, 0.0, 0, 0.0);
    let mut index = 0;
    for group in prompts.chunks(args.batch_size as usize) {
        let (results, stats) = batch_generate(model, group, &config).map_err(|e| e.to_string())?;
        generated += stats.generation_tokens;
        seconds += stats.generation_seconds;
        prompt_tokens += stats.prompt_tokens;
        prompt_seconds += stats.prompt_seconds;
        for (prompt, result) in group.iter().zip(results) {
            let mut tokens = result.tokens;
            let mut finish = match result.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            };
            // As in `generate`, the end-of-sequence token is in `tokens` but not in the text.
            let text_len = tokens.len() - usize::from(finish == "stop");
            let text = match tokenizer.as_ref() {
                Some(tok) => {
                    let mut stops =
                        StopStrings::new(args.sampling.stop.clone()).map_err(|e| e.to_string())?;
                    let mut detok = tok.detokenizer();
                    let mut text = String::new();
                    let mut kept = tokens.len();
                    for (i, &t) in tokens[..text_len].iter().enumerate() {
                        let (piece, hit) =
                            stops.push(&detok.add_token(t).map_err(|e| e.to_string())?);
                        text.push_str(&piece);
                        if hit {
                            kept = i + 1;
                            finish = "stop";
                            break;
                        }
                    }
                    if !stops.stopped() {
                        let (piece, _) = stops.push(&detok.finalize().map_err(|e| e.to_string())?);
                        text.push_str(&piece);
                        text.push_str(&stops.finish());
                    } else {
                        tokens.truncate(kept);
                    }
                    Some(text)
                }
                None => None,
            };
            match args.format {
                Format::Json => {
                    let value = json!({
                        "index": index,
                        "prompt_tokens": prompt.tokens,
                        "tokens": tokens,
                        "text": text,
                        "finish_reason": finish,
                    });
                    let _ = writeln!(out, "{value}");
                }
                Format::Text => {
                    // Without a tokenizer, the ids (as `generate` streams them).
                    let text = text.unwrap_or_else(|| {
                        let ids: Vec<String> = tokens.iter().map(u32::to_string).collect();
                        ids.join(" ")
                    });
                    let _ = writeln!(out, "{text}\n");
                }
            }
            index += 1;
        }
        let _ = out.flush();
    }
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    eprintln!("==========");
    eprintln!(
        "Prompts: {}, {prompt_tokens} tokens, {:.3} tokens-per-sec",
        prompts.len(),
        rate(prompt_tokens, prompt_seconds)
    );
    eprintln!(
        "Generation: {generated} tokens, {:.3} tokens-per-sec",
        rate(generated, seconds)
    );
    eprintln!(
        "Peak memory: {:.3} GB",
        mlx_models::generate::peak_memory().unwrap_or(0) as f64 / 1e9
    );
    Ok(())
}

/// The cache of `--prompt-cache-file`, checked against the model and the flags as the
/// reference checks it: made with the same `--model`, and with the same `--kv-bits` and
/// `--kv-group-size` when it is quantized.
fn cached_prompt(
    file: &std::path::Path,
    source: &SourceArgs,
    sampling: &SamplingArgs,
    model: &dyn mlx_models::model::LanguageModel,
) -> CliResult<Vec<Cache>> {
    let what = |e: &dyn std::fmt::Display| format!("--prompt-cache-file {}: {e}", file.display());
    if !file.is_file() {
        return Err(what(&"no such file"));
    }
    let (cache, metadata) = mlx_models::cache::load_prompt_cache(file).map_err(|e| what(&e))?;
    if let Some(made_with) = metadata.get("model") {
        let same = made_with == &source.model
            || matches!(
                (std::fs::canonicalize(made_with), std::fs::canonicalize(&source.model)),
                (Ok(a), Ok(b)) if a == b
            );
        if !same {
            return Err(what(&format!(
                "it was made with the model `{made_with}`, not `{}`",
                source.model
            )));
        }
    }
    let layers = model.make_cache().len();
    if cache.len() != layers {
        return Err(what(&format!(
            "it holds {} layer caches, and the model has {layers}",
            cache.len()
        )));
    }
    if let Some(Cache::Quantized(q)) = cache.first() {
        if sampling.kv_bits.is_some_and(|b| b != q.bits) {
            return Err(what(&format!(
                "--kv-bits does not match its {} bits",
                q.bits
            )));
        }
        if sampling.kv_group_size != q.group_size {
            return Err(what(&format!(
                "--kv-group-size does not match its groups of {}",
                q.group_size
            )));
        }
    }
    Ok(cache)
}

/// `cache-prompt`, as the reference's `mlx_lm.cache_prompt`: the prompt (a user message left
/// open, with a chat template) runs through the model in chunks and the cache is saved with
/// the metadata the reference writes (`model`, `tokenizer_config`).
fn cache_prompt(args: CachePromptArgs) -> CliResult<()> {
    mlx_models_zoo::link();
    if args.prefill_step_size == 0 {
        return Err("--prefill-step-size: must be at least 1".into());
    }
    let kv = args.kv_bits.map(|bits| KvQuantization {
        bits,
        group_size: args.kv_group_size,
        start: args.quantized_kv_start,
    });
    if let Some(q) = &kv {
        q.validate()
            .map_err(|e| format!("--kv-bits / --kv-group-size: {e}"))?;
    }
    let mut loaded = load(&args.source)?;
    let prompt = match &args.prompt_tokens {
        Some(ids) if ids.is_empty() => return Err("--prompt-tokens is empty".into()),
        Some(ids) => ids.clone(),
        None => {
            let text = prompt_text(args.prompt.as_deref())?;
            let tokenizer = tokenizer_for(&loaded.dir)?;
            if tokenizer.has_chat_template() {
                let options = ChatOptions {
                    continue_final_message: true,
                    ..Default::default()
                };
                let rendered = tokenizer
                    .apply_chat_template(&[ChatMessage::new("user", text)], &options)
                    .map_err(|e| e.to_string())?;
                tokenizer
                    .encode(&rendered, false)
                    .map_err(|e| e.to_string())?
            } else {
                tokenizer.encode(&text, true).map_err(|e| e.to_string())?
            }
        }
    };
    if let Some(vocab) = loaded.config.get("vocab_size").and_then(|v| v.as_u64()) {
        if let Some(bad) = prompt.iter().find(|&&t| u64::from(t) >= vocab) {
            return Err(format!(
                "prompt token {bad} is outside the vocabulary (vocab_size {vocab})"
            ));
        }
    }
    let model = loaded.model.as_mut();
    let mut cache = Cache::for_prompt(model.make_cache(), args.max_kv_size.map(|m| m as usize));
    let mut progress = prefill_progress(args.source.quiet);
    let started = std::time::Instant::now();
    for (i, chunk) in prompt.chunks(args.prefill_step_size).enumerate() {
        let tokens = mlx_rs::Array::from_slice(chunk, &[1, chunk.len() as i32]);
        drop(
            model
                .forward(&tokens, &mut cache)
                .map_err(|e| e.to_string())?,
        );
        if let Some(q) = &kv {
            Cache::maybe_quantize(&mut cache, q).map_err(|e| e.to_string())?;
        }
        Cache::eval_all(&cache).map_err(|e| e.to_string())?;
        let _ = mlx_rs::memory::clear_cache();
        progress(
            (i * args.prefill_step_size + chunk.len()).min(prompt.len()),
            prompt.len(),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("model".to_string(), args.source.model.clone());
    metadata.insert(
        "tokenizer_config".to_string(),
        json!({ "trust_remote_code": false }).to_string(),
    );
    mlx_models::cache::save_prompt_cache(&args.out, &cache, &metadata)
        .map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    eprintln!(
        "Processed {} tokens ({:.2} tok/s); peak memory: {:.3} GB; saved {}",
        prompt.len(),
        prompt.len() as f64 / seconds.max(1e-9),
        mlx_models::generate::peak_memory().unwrap_or(0) as f64 / 1e9,
        args.out.display()
    );
    Ok(())
}

/// The end-of-sequence ids: the checkpoint's and the tokenizer's.
fn eos_ids(loaded: &LoadedModel, tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    let mut eos = loaded.eos_token_ids.clone();
    if let Some(t) = tokenizer {
        eos.extend(t.eos_token_ids().iter().copied());
    }
    eos.sort_unstable();
    eos.dedup();
    eos
}

fn generation_config(args: &SamplingArgs, max_tokens: usize, eos: Vec<u32>) -> GenerationConfig {
    GenerationConfig {
        max_tokens,
        sampler: SamplerConfig {
            temperature: args.temp,
            top_p: args.top_p,
            min_p: args.min_p,
            top_k: args.top_k,
            xtc_probability: args.xtc_probability,
            xtc_threshold: args.xtc_threshold,
            xtc_special_tokens: eos.clone(),
            seed: args.seed,
            ..Default::default()
        },
        logits: LogitsConfig {
            logit_bias: args.logit_bias.iter().copied().collect(),
            repetition_penalty: args.repetition_penalty,
            presence_penalty: args.presence_penalty,
            frequency_penalty: args.frequency_penalty,
            ..Default::default()
        },
        eos_token_ids: eos,
        prefill_step_size: args.prefill_step_size,
        kv_quantization: kv_quantization(args),
    }
}

fn kv_quantization(args: &SamplingArgs) -> Option<KvQuantization> {
    args.kv_bits.map(|bits| KvQuantization {
        bits,
        group_size: args.kv_group_size,
        start: args.quantized_kv_start,
    })
}

/// The end-of-sequence ids of `--extra-eos-token`: ids as given, token texts through the
/// tokenizer (which must then exist and know them).
fn extra_eos_ids(tokens: &[String], tokenizer: Option<&Tokenizer>) -> CliResult<Vec<u32>> {
    tokens
        .iter()
        .map(|t| match (t.parse::<u32>(), tokenizer) {
            (Ok(id), _) => Ok(id),
            (Err(_), Some(tok)) => tok.inner().token_to_id(t).ok_or_else(|| {
                format!("--extra-eos-token: {t:?} is not a token of this tokenizer")
            }),
            (Err(_), None) => Err(format!(
                "--extra-eos-token: {t:?} needs the checkpoint's tokenizer (or give the token id)"
            )),
        })
        .collect()
}

/// The most memory `chat` spends on snapshots for `u` (recurrent state kept by value); the
/// oldest go first.
const CHAT_UNDO_BYTES: usize = 1 << 30;

/// The chat loop, as the reference's `mlx_lm.chat`: each line is a user message, rendered
/// alone through the chat template (the system message with the first one) and fed on top of
/// the cache of the conversation so far.
fn chat(args: ChatArgs) -> CliResult<()> {
    mlx_models_zoo::link();
    check_flags(&args.sampling, args.max_tokens)?;
    let mut loaded = load(&args.source)?;
    let tokenizer = tokenizer_for(&loaded.dir)?;
    if !tokenizer.has_chat_template() {
        return Err(format!(
            "{} has no chat template; use `generate --no-chat-template`",
            args.source.model
        ));
    }
    let mut eos = eos_ids(&loaded, Some(&tokenizer));
    eos.extend(extra_eos_ids(
        &args.sampling.extra_eos_token,
        Some(&tokenizer),
    )?);
    eos.sort_unstable();
    eos.dedup();
    let config = generation_config(&args.sampling, args.max_tokens, eos);
    config.validate().map_err(|e| e.to_string())?;
    let max_kv = args.sampling.max_kv_size.map(|m| m as usize);
    let mut draft = load_draft(&args.source, &args.sampling, &loaded, Some(&tokenizer))?;
    let fresh_draft_cache = |d: &Option<LoadedModel>| {
        d.as_ref()
            .map(|d| Cache::for_prompt(d.model.make_cache(), max_kv))
            .unwrap_or_default()
    };
    let mut draft_cache = fresh_draft_cache(&draft);
    let model = loaded.model.as_mut();
    let start_cache = |model: &dyn mlx_models::model::LanguageModel| match &args.prompt_cache_file {
        Some(file) => cached_prompt(file, &args.source, &args.sampling, model),
        None => Ok(Cache::for_prompt(model.make_cache(), max_kv)),
    };
    let mut cache = start_cache(&*model)?;
    let mut first_turn = true;
    // Where the conversation stood before each exchange, newest last, for `u`: growing caches
    // by their offset, recurrent state and windows by value (so a hybrid model takes an
    // exchange back without recomputing the conversation), within a memory budget.
    let mut before: std::collections::VecDeque<(Snapshot, Snapshot)> = Default::default();
    // Whether the oldest snapshots were let go (the first exchange can then not be reached).
    let mut dropped_any = false;
    eprintln!(
        "[INFO] Chatting with {}. Type `q` to quit, `r` to start over, `u` to take back the last exchange.",
        args.source.model
    );
    let stdin = std::io::stdin();
    loop {
        eprint!(">> ");
        let mut line = String::new();
        if stdin
            .read_line(&mut line)
            .map_err(|e| format!("reading standard input: {e}"))?
            == 0
        {
            break;
        }
        let query = line.trim();
        match query {
            "" => continue,
            "q" => break,
            "r" => {
                cache = start_cache(&*model)?;
                draft_cache = fresh_draft_cache(&draft);
                first_turn = true;
                before.clear();
                dropped_any = false;
                continue;
            }
            "u" => {
                match before.pop_back() {
                    Some((target, draft_state)) => {
                        target
                            .restore(&mut cache)
                            .and_then(|()| draft_state.restore(&mut draft_cache))
                            .map_err(|e| format!("taking back the last exchange: {e}"))?;
                        first_turn = before.is_empty() && !dropped_any;
                        eprintln!("[INFO] Took back the last exchange.");
                    }
                    None => eprintln!("[INFO] No exchange to take back."),
                }
                continue;
            }
            _ => {}
        }
        before.push_back((Snapshot::take(&cache), Snapshot::take(&draft_cache)));
        let held = |b: &std::collections::VecDeque<(Snapshot, Snapshot)>| {
            b.iter()
                .map(|(t, d)| t.nbytes() + d.nbytes())
                .sum::<usize>()
        };
        while before.len() > 1 && held(&before) > CHAT_UNDO_BYTES {
            before.pop_front();
            dropped_any = true;
        }
        let system = if first_turn {
            args.system.as_deref()
        } else {
            None
        };
        let template_config = args.sampling.chat_template_config.as_ref();
        let ids = if first_turn && args.prompt_cache_file.is_some() {
            continued_turn(&tokenizer, system, query, template_config)?
        } else {
            user_turn(&tokenizer, system, query, template_config)?
        };
        first_turn = false;

        let mut em = Emitter::new(Some(&tokenizer), &args.sampling.stop, Format::Text)?;
        if let Some(d) = draft.as_mut() {
            let mut failed = None;
            mlx_models::speculative::speculative_generate(
                &mut *model,
                &mut cache,
                d.model.as_mut(),
                &mut draft_cache,
                &ids,
                &config,
                args.sampling.num_draft_tokens as usize,
                |t| {
                    let eos = t.finish_reason == Some(FinishReason::Stop);
                    em.token(t.token, t.logprob, eos, Some(t.from_draft))
                        .unwrap_or_else(|e| {
                            failed = Some(e);
                            false
                        })
                },
            )
            .map_err(|e| e.to_string())?;
            if let Some(e) = failed {
                return Err(e);
            }
        } else {
            let stream = model_stream(&mut *model, &mut cache, &ids, config.clone())
                .map_err(|e| e.to_string())?
                .with_prefill_progress(prefill_progress(args.source.quiet));
            for step in stream {
                let step = step.map_err(|e| e.to_string())?;
                let eos = step.finish_reason == Some(FinishReason::Stop);
                if !em.token(step.token, step.logprob, eos, None)? {
                    break;
                }
            }
        }
        em.finish()?;
        let _ = writeln!(em.out);
        let _ = em.out.flush();
    }
    Ok(())
}
