//! Resolving a model source: an existing local folder, else a Hugging Face repo id
//! (`org/name`, optionally `org/name@revision`) looked up in (or downloaded into) the standard
//! Hugging Face cache layout:
//!
//! ```text
//! <cache>/models--org--name/refs/<revision>          the commit a branch or tag points to
//! <cache>/models--org--name/snapshots/<commit>/...   the files of that commit
//! ```
//!
//! The cache folder is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
//! Offline (the `offline` option, or `HF_HUB_OFFLINE` set to 1 / true / yes / on), only the cache
//! is used. Online, the files the loader needs are downloaded through the `hf-hub` crate, with a
//! progress bar on stderr; a failed connection falls back to a cached snapshot when there is
//! one.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

/// Why a source could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The source is a file, not a folder.
    #[error("{0} is a file; a model source is a folder or a Hugging Face repo id")]
    NotAFolder(PathBuf),
    /// The source is neither an existing folder nor a valid repo id.
    #[error("{0:?} is neither an existing folder nor a Hugging Face repo id (org/name)")]
    InvalidSource(String),
    /// Offline, and the repo (at that revision) is not in the cache.
    #[error(
        "{repo} (revision {revision}) is not in the Hugging Face cache {cache} and downloads are \
         off (offline mode{why}); it is not a local folder either"
    )]
    NotInCache {
        /// The repo id.
        repo: String,
        /// The revision.
        revision: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// What turned offline mode on.
        why: String,
    },
    /// A request to the hub failed.
    #[error("{repo} is not a local folder, and it cannot be downloaded from the Hugging Face hub: {message}")]
    Download {
        /// The repo id.
        repo: String,
        /// The error.
        message: String,
    },
    /// No home folder to put the default cache in.
    #[error("no cache folder: set HF_HUB_CACHE or HF_HOME")]
    NoCacheDir,
}

type Result<T> = std::result::Result<T, HubError>;

/// The files fetched from a repo: configs, weights, tokenizer and template files (the
/// reference's allow patterns).
pub const DEFAULT_ALLOW_PATTERNS: &[&str] = &[
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
];

/// Options of [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// A branch, tag or commit; `main` by default (an `@revision` suffix of the source wins).
    pub revision: Option<String>,
    /// Only use the cache.
    pub offline: bool,
    /// The cache folder; by default from the environment.
    pub cache_dir: Option<PathBuf>,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// Whether `HF_HUB_OFFLINE` turns offline mode on, given an environment lookup.
pub fn offline_from_env(env: impl Fn(&str) -> Option<String>) -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v))
}

/// The cache folder, given an environment lookup: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir_from_env(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf> {
    if let Some(dir) = env("HF_HUB_CACHE").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(home) = env("HF_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(home).join("hub"));
    }
    let home = env("HOME")
        .filter(|s| !s.is_empty())
        .ok_or(HubError::NoCacheDir)?;
    Ok(PathBuf::from(home)
        .join(".cache")
        .join("huggingface")
        .join("hub"))
}

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A repo id and revision parsed from a source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// `org/name` (or a bare `name`).
    pub repo: String,
    /// The `@revision` suffix, if any.
    pub revision: Option<String>,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

/// Parses `org/name`, `name` or either with an `@revision` suffix; `None` when it is not a
/// valid repo id.
pub fn parse_repo_id(source: &str) -> Option<RepoRef> {
    let (repo, revision) = match source.split_once('@') {
        Some((r, rev)) if !rev.is_empty() && !rev.contains("..") && !rev.starts_with('/') => {
            (r, Some(rev.to_string()))
        }
        Some(_) => return None,
        None => (source, None),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
        return None;
    }
    Some(RepoRef {
        repo: repo.to_string(),
        revision,
    })
}

/// The folder of a model repo in the cache (`models--org--name`).
pub fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cached snapshot of `repo` at `revision` (a branch or tag through `refs/`, or a commit
/// hash), if it is in the cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let folder = repo_folder(cache, repo);
    if is_commit_hash(revision) {
        let snap = folder.join("snapshots").join(revision);
        return snap.is_dir().then_some(snap);
    }
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return None;
    }
    let commit = std::fs::read_to_string(folder.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    if !is_commit_hash(commit) {
        return None;
    }
    let snap = folder.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// Resolves a source to a local folder; see the module documentation.
pub fn resolve(source: &str, options: &HubOptions) -> Result<PathBuf> {
    resolve_with_env(source, options, process_env)
}

/// [`resolve`] with an explicit environment lookup (for tests and embedding).
pub fn resolve_with_env(
    source: &str,
    options: &HubOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() {
        return Err(HubError::NotAFolder(path.to_path_buf()));
    }
    let repo = parse_repo_id(source).ok_or_else(|| HubError::InvalidSource(source.to_string()))?;
    let revision = repo
        .revision
        .clone()
        .or_else(|| options.revision.clone())
        .unwrap_or_else(|| "main".to_string());
    let cache = match &options.cache_dir {
        Some(c) => c.clone(),
        None => cache_dir_from_env(&env)?,
    };
    let env_offline = offline_from_env(&env);
    if options.offline || env_offline {
        return cached_snapshot(&cache, &repo.repo, &revision).ok_or_else(|| {
            HubError::NotInCache {
                repo: repo.repo.clone(),
                revision: revision.clone(),
                cache: cache.clone(),
                why: if options.offline {
                    String::new()
                } else {
                    ", HF_HUB_OFFLINE is set".into()
                },
            }
        });
    }
    match download(&cache, &repo.repo, &revision, options.progress, &env) {
        Ok(dir) => Ok(dir),
        Err(e) => match cached_snapshot(&cache, &repo.repo, &revision) {
            Some(dir) => {
                eprintln!("warning: {e}; using the cached snapshot {}", dir.display());
                Ok(dir)
            }
            None => Err(e),
        },
    }
}

/// Whether a repo file name matches one of the reference's allow patterns (`*` matches any
/// run of characters).
pub fn allowed(name: &str) -> bool {
    DEFAULT_ALLOW_PATTERNS.iter().any(|p| glob_match(p, name))
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A progress bar for one file, fed by `hf-hub`.
struct Bar(ProgressBar);

impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.set_length(size as u64);
        self.0.set_position(0);
        self.0.set_message(filename.to_string());
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

fn download(
    cache: &Path,
    repo: &str,
    revision: &str,
    progress: bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};
    let err = |message: String| HubError::Download {
        repo: repo.to_string(),
        message,
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf())).with_progress(false);
    if let Some(endpoint) = env("HF_ENDPOINT").filter(|s| !s.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = env("HF_TOKEN").filter(|s| !s.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| err(e.to_string()))?;
    let api_repo = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = api_repo.info().map_err(|e| err(e.to_string()))?;
    let snapshot = repo_folder(cache, repo).join("snapshots").join(&info.sha);
    let style = ProgressStyle::with_template(
        "{msg:30!} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    for sibling in info.siblings.iter().filter(|s| allowed(&s.rfilename)) {
        if snapshot.join(&sibling.rfilename).is_file() {
            continue;
        }
        let bar = if progress {
            ProgressBar::new(0).with_style(style.clone())
        } else {
            ProgressBar::hidden()
        };
        api_repo
            .download_with_progress(&sibling.rfilename, Bar(bar))
            .map_err(|e| err(format!("{}: {e}", sibling.rfilename)))?;
    }
    // A revision that is a branch or tag points at this commit from now on.
    if !is_commit_hash(revision) {
        let r = repo_folder(cache, repo).join("refs").join(revision);
        if let Some(parent) = r.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&r, &info.sha);
    }
    if !snapshot.is_dir() {
        return Err(err(format!(
            "the snapshot {} was not created",
            snapshot.display()
        )));
    }
    Ok(snapshot)
}
