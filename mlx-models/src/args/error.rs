//! The error of config parsing: a value, never a panic, that names the file and the key.

use serde_json::Value;

/// Why a config could not be turned into typed args.
///
/// It displays as one line that names the file and the key, for instance
/// ``config.json: `num_attention_heads`: expected a positive integer of at most 2147483647 (MLX's size limit), found "abc"``.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {kind}")]
pub struct ArgsError {
    file: String,
    kind: ArgsErrorKind,
}

/// What went wrong, without the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsErrorKind {
    /// A key without default is absent.
    #[error("missing key `{key}` (required by {model})")]
    MissingKey {
        /// Dotted path of the key, e.g. `rope_scaling.factor`.
        key: String,
        /// The `model_type` of the config (or the Rust type when there is none).
        model: String,
    },
    /// A value of the wrong JSON type or out of range.
    #[error("`{key}`: expected {expected}, found {found}")]
    WrongType {
        /// Dotted path of the key.
        key: String,
        /// What the field accepts, e.g. `a positive integer`.
        expected: String,
        /// The value found, as compact JSON.
        found: String,
    },
    /// The tag of a tagged sub-config (`rope_scaling.type`) names no variant.
    #[error("`{key}`: unknown variant {found}; expected one of {expected}")]
    UnknownVariant {
        /// Dotted path of the tag key.
        key: String,
        /// The tag found, as JSON.
        found: String,
        /// The accepted tags, quoted and comma separated.
        expected: String,
    },
    /// A check of the post-parse hook failed.
    #[error("{message}")]
    Invalid {
        /// The keys involved, as dotted paths.
        keys: Vec<String>,
        /// The whole message, which names the keys.
        message: String,
    },
    /// The file is not JSON, or its top level is not an object.
    #[error("{0}")]
    Json(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
}

impl ArgsError {
    pub(crate) fn new(kind: ArgsErrorKind) -> Self {
        ArgsError {
            file: "config.json".to_owned(),
            kind,
        }
    }

    /// An error of a post-parse hook: `keys` are the keys involved (as the user writes them in
    /// config.json), `message` says what is wrong and names them.
    ///
    /// ```
    /// # use mlx_models::args::ArgsError;
    /// let e = ArgsError::invalid(
    ///     &["hidden_size", "num_attention_heads"],
    ///     "`hidden_size` (4095) is not divisible by `num_attention_heads` (32)",
    /// );
    /// assert_eq!(
    ///     e.to_string(),
    ///     "config.json: `hidden_size` (4095) is not divisible by `num_attention_heads` (32)"
    /// );
    /// ```
    pub fn invalid(keys: &[&str], message: impl Into<String>) -> Self {
        ArgsError::new(ArgsErrorKind::Invalid {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            message: message.into(),
        })
    }

    /// A "must be positive" error for `key`, in the words of the parser.
    pub fn not_positive(key: &str, found: &Value, integer: bool) -> Self {
        ArgsError::wrong_type(
            key,
            if integer {
                "a positive integer"
            } else {
                "a positive number"
            },
            found,
        )
    }

    pub(crate) fn wrong_type(key: &str, expected: impl Into<String>, found: &Value) -> Self {
        ArgsError::new(ArgsErrorKind::WrongType {
            key: key.to_owned(),
            expected: expected.into(),
            found: show(found),
        })
    }

    pub(crate) fn json(message: impl Into<String>) -> Self {
        ArgsError::new(ArgsErrorKind::Json(message.into()))
    }

    /// The same error, said of another file (`generation_config.json`, a path on disk).
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }

    /// The file the error is about (`config.json` unless told otherwise).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// What went wrong.
    pub fn kind(&self) -> &ArgsErrorKind {
        &self.kind
    }

    /// The keys the error is about, as dotted paths.
    pub fn keys(&self) -> Vec<&str> {
        match &self.kind {
            ArgsErrorKind::MissingKey { key, .. }
            | ArgsErrorKind::WrongType { key, .. }
            | ArgsErrorKind::UnknownVariant { key, .. } => vec![key.as_str()],
            ArgsErrorKind::Invalid { keys, .. } => keys.iter().map(String::as_str).collect(),
            ArgsErrorKind::Json(_) | ArgsErrorKind::Io(_) => Vec::new(),
        }
    }

    /// Puts `prefix.` in front of the keys, for errors of hooks of nested args.
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        if prefix.is_empty() {
            return self;
        }
        if let ArgsErrorKind::Invalid { keys, .. } = &mut self.kind {
            for k in keys {
                *k = format!("{prefix}.{k}");
            }
        }
        self
    }
}

/// Compact JSON of a value, cut to a readable length. Only the head of the value is written,
/// so that a wrong value of megabytes costs no more than a small one.
pub(crate) fn show(v: &Value) -> String {
    // A tagged float (`{"__float__": "Infinity"}`, as transformers writes NaN and the
    // infinities, and as config.json's bare `Infinity` is read) shows as the number it is.
    if let Some(tag) = v
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("__float__"))
    {
        if let Some(tag @ ("Infinity" | "-Infinity" | "NaN")) = tag.as_str() {
            return tag.to_owned();
        }
    }
    /// Keeps the first `HEAD` bytes written, then refuses more (which stops serde_json).
    struct Head(Vec<u8>);
    // 60 characters are at most 240 bytes; one more byte tells that there is more.
    const HEAD: usize = 241;
    impl std::io::Write for Head {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = HEAD - self.0.len();
            if room == 0 {
                return Err(std::io::Error::other("enough"));
            }
            let n = room.min(buf.len());
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut head = Head(Vec::with_capacity(HEAD));
    let _ = serde_json::to_writer(&mut head, v);
    let s = match String::from_utf8(head.0) {
        Ok(s) => s,
        // Cut inside a character: keep the whole ones.
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A config error met while building a model (`Architecture::new` returns MLX's error type), so
/// that `?` carries its message.
impl From<ArgsError> for mlx_rs::error::Exception {
    fn from(e: ArgsError) -> Self {
        mlx_rs::error::Exception::custom(e.to_string())
    }
}
