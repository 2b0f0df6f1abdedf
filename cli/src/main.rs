//! `mlx-models`: generate text with any registered architecture, list them, inspect a
//! checkpoint. Every failure ends with a one-line error and exit status 1.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mlx_models::cache::Cache;
use mlx_models::chat_template::ChatMessage;
use mlx_models::generate::{model_stream, FinishReason, GenerationConfig, GenerationStats};
use mlx_models::hub::{self, HubOptions};
use mlx_models::load::{load_with, LoadOptions, LoadedModel};
use mlx_models::registry;
use mlx_models::sampling::{LogitsConfig, SamplerConfig};
use mlx_models::tokenizer::{ChatOptions, Tokenizer};
use mlx_rs::Dtype;
use serde_json::json;

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
    /// List the registered architectures and their aliases.
    List,
    /// Describe a checkpoint: type, parameters, dtype, quantization, layers, unknown config keys.
    Inspect(SourceArgs),
}

#[derive(Args)]
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
    /// Cast floating-point weights: float32, float16 or bfloat16 (default: as stored).
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
    /// The prompt text.
    #[arg(long, short = 'p', conflicts_with = "prompt_tokens")]
    prompt: Option<String>,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return flag_error(e),
    };
    let result = match cli.command {
        Command::Generate(args) => generate(args),
        Command::Chat(args) => chat(args),
        Command::List => {
            list();
            Ok(())
        }
        Command::Inspect(args) => inspect(args),
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
fn user_turn(tokenizer: &Tokenizer, system: Option<&str>, text: &str) -> CliResult<Vec<u32>> {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", text));
    let options = ChatOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let rendered = tokenizer
        .apply_chat_template(&messages, &options)
        .map_err(|e| e.to_string())?;
    tokenizer
        .encode(&rendered, false)
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

fn prompt_ids(
    args: &GenerateArgs,
    dir: &std::path::Path,
) -> CliResult<(Vec<u32>, Option<Tokenizer>)> {
    if let Some(ids) = &args.prompt_tokens {
        if ids.is_empty() {
            return Err("--prompt-tokens is empty".into());
        }
        // A tokenizer is optional here: only to stream text.
        let tokenizer = if args.format == Format::Text {
            tokenizer_for(dir).ok()
        } else {
            None
        };
        return Ok((ids.clone(), tokenizer));
    }
    let text = args
        .prompt
        .as_deref()
        .ok_or("give --prompt or --prompt-tokens")?;
    let tokenizer = tokenizer_for(dir)?;
    let ids = if !args.no_chat_template && tokenizer.has_chat_template() {
        user_turn(&tokenizer, args.system.as_deref(), text)?
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
    // Whatever else the library checks, before loading too.
    generation_config(args, max_tokens, Vec::new())
        .validate()
        .map_err(|e| e.to_string())
}

fn generate(args: GenerateArgs) -> CliResult<()> {
    mlx_models_zoo::link();
    check_flags(&args.sampling, args.max_tokens)?;
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
    let eos = eos_ids(&loaded, tokenizer.as_ref());

    let config = generation_config(&args.sampling, args.max_tokens, eos);

    let model = loaded.model.as_mut();
    let mut cache = Cache::for_prompt(
        model.make_cache(),
        args.sampling.max_kv_size.map(|m| m as usize),
    );
    let stream = model_stream(model, &mut cache, &prompt, config)
        .map_err(|e| e.to_string())?
        .with_prefill_progress(prefill_progress(args.source.quiet));

    let mut detok = tokenizer.as_ref().map(|t| t.detokenizer());
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    let mut stats = GenerationStats::default();
    let mut out = std::io::stdout().lock();
    for step in stream {
        let step = step.map_err(|e| e.to_string())?;
        tokens.push(step.token);
        logprobs.push(step.logprob);
        stats = step.stats;
        // As the reference's stream, the EOS token ends the text without being printed.
        let eos_step = step.finish_reason == Some(FinishReason::Stop);
        if args.format == Format::Text && !eos_step {
            match detok.as_mut() {
                Some(d) => {
                    let piece = d.add_token(step.token).map_err(|e| e.to_string())?;
                    let _ = write!(out, "{piece}");
                }
                None => {
                    let _ = write!(out, "{} ", step.token);
                }
            }
            let _ = out.flush();
        }
    }
    match args.format {
        Format::Text => {
            if let Some(d) = detok.as_mut() {
                let _ = write!(out, "{}", d.finalize().map_err(|e| e.to_string())?);
            }
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
            eprintln!("Peak memory: {:.3} GB", stats.peak_memory_gb());
        }
        Format::Json => {
            let value = json!({
                "prompt_tokens": prompt,
                "tokens": tokens,
                "logprobs": logprobs,
                "stats": stats,
                "load_seconds": load_seconds,
            });
            let _ = writeln!(out, "{value}");
        }
    }
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
    }
}

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
    let config = generation_config(
        &args.sampling,
        args.max_tokens,
        eos_ids(&loaded, Some(&tokenizer)),
    );
    config.validate().map_err(|e| e.to_string())?;
    let max_kv = args.sampling.max_kv_size.map(|m| m as usize);
    let model = loaded.model.as_mut();
    let mut cache = Cache::for_prompt(model.make_cache(), max_kv);
    let mut first_turn = true;
    eprintln!(
        "[INFO] Chatting with {}. Type `q` to quit, `r` to start over.",
        args.source.model
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
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
                cache = Cache::for_prompt(model.make_cache(), max_kv);
                first_turn = true;
                continue;
            }
            _ => {}
        }
        let system = if first_turn {
            args.system.as_deref()
        } else {
            None
        };
        let ids = user_turn(&tokenizer, system, query)?;
        first_turn = false;

        let stream = model_stream(&mut *model, &mut cache, &ids, config.clone())
            .map_err(|e| e.to_string())?
            .with_prefill_progress(prefill_progress(args.source.quiet));
        let mut detok = tokenizer.detokenizer();
        for step in stream {
            let step = step.map_err(|e| e.to_string())?;
            if step.finish_reason == Some(FinishReason::Stop) {
                break;
            }
            let piece = detok.add_token(step.token).map_err(|e| e.to_string())?;
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        }
        let _ = writeln!(out, "{}", detok.finalize().map_err(|e| e.to_string())?);
        let _ = out.flush();
    }
    Ok(())
}
