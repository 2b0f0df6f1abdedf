//! The reading state that generated `ModelArgs` code drives: one [`Object`] per JSON object,
//! and one [`Cx`] per config for what outlives the objects (unknown keys, likely typos).

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::{ArgsError, ArgsErrorKind};
use super::value::{ConfigValue, Positive};
use super::ModelArgs;

/// A key of the config that no field reads.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownKey {
    /// Dotted path, e.g. `quantization_config` or `rope_scaling.mrope_section`.
    pub key: String,
    /// The value found there.
    pub value: Value,
    pub(crate) segments: Vec<String>,
    /// A top-level key hidden by the same key in `text_config`: kept for writing the config
    /// back, but not unknown.
    pub(crate) shadowed: bool,
}

/// An unknown key close to a field that the config lacks: most likely a misspelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key `{key}`; did you mean `{suggestion}`?")]
pub struct Typo {
    /// The unknown key, as a dotted path.
    pub key: String,
    /// The field key it is within edit distance 2 of, as a dotted path.
    pub suggestion: String,
}

/// State of one parse.
#[doc(hidden)]
pub struct Cx {
    model: String,
    pub(crate) extra: Vec<UnknownKey>,
    pub(crate) typos: Vec<Typo>,
    consumed: HashSet<String>,
}

impl Cx {
    pub(crate) fn new(model: String) -> Self {
        Cx {
            model,
            extra: Vec::new(),
            typos: Vec::new(),
            consumed: HashSet::new(),
        }
    }

    /// Drops what a dotted alias read after its object was listed as unknown.
    pub(crate) fn settle(&mut self) {
        if self.consumed.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.extra.len());
        for e in std::mem::take(&mut self.extra) {
            split_consumed(e, &self.consumed, &mut out);
        }
        self.extra = out;
        let consumed = &self.consumed;
        self.typos.retain(|t| !consumed.contains(&t.key));
    }
}

fn split_consumed(e: UnknownKey, consumed: &HashSet<String>, out: &mut Vec<UnknownKey>) {
    if consumed.contains(&e.key) {
        return;
    }
    let inside = format!("{}.", e.key);
    let partly = consumed.iter().any(|c| c.starts_with(&inside));
    match (&e.value, partly) {
        (Value::Object(m), true) => {
            for (k, v) in m {
                let mut segments = e.segments.clone();
                segments.push(k.clone());
                let sub = UnknownKey {
                    key: format!("{}.{k}", e.key),
                    value: v.clone(),
                    segments,
                    shadowed: e.shadowed,
                };
                split_consumed(sub, consumed, out);
            }
        }
        _ => out.push(e),
    }
}

struct Layer<'v> {
    map: &'v Map<String, Value>,
    segments: Vec<String>,
    used: HashSet<&'v str>,
    shadowed: HashSet<&'v str>,
}

impl Layer<'_> {
    fn path_of(&self, key: &str) -> String {
        join(&self.segments, key)
    }
}

fn join(segments: &[String], key: &str) -> String {
    if segments.is_empty() {
        key.to_owned()
    } else {
        format!("{}.{key}", segments.join("."))
    }
}

/// The value at `key` of `map`; a dotted key (`rope_parameters.rope_theta`) walks into nested
/// objects.
fn value_at<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    let mut segments = key.split('.');
    let mut cur = map.get(segments.next()?)?;
    for seg in segments {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// Which key of a group (the field key, then its aliases) a field reads in one object: the
/// first present with a value other than `null`, else the first present. A `null` gives way to
/// an alias with a value (`"rope_scaling": null` beside `"rope_parameters": {...}` reads the
/// latter), so that writing the config back (which leaves the `null` out) reads the same.
fn pick<'k, 'v>(map: &'v Map<String, Value>, keys: &[&'k str]) -> Option<(&'k str, &'v Value)> {
    let mut null = None;
    for key in keys {
        match value_at(map, key) {
            Some(v) if !v.is_null() => return Some((key, v)),
            Some(v) => {
                null.get_or_insert((*key, v));
            }
            None => {}
        }
    }
    null
}

/// One JSON object being read into a struct or an enum variant.
#[doc(hidden)]
pub struct Object<'v, 'c> {
    cx: &'c mut Cx,
    layers: Vec<Layer<'v>>,
    /// Key groups asked for (canonical key first, then aliases) and whether one was found.
    asked: Vec<(&'static [&'static str], bool)>,
}

impl<'v, 'c> Object<'v, 'c> {
    pub(crate) fn new(cx: &'c mut Cx, map: &'v Map<String, Value>, segments: Vec<String>) -> Self {
        let base = Layer {
            map,
            segments,
            used: HashSet::new(),
            shadowed: HashSet::new(),
        };
        Object {
            cx,
            layers: vec![base],
            asked: Vec::new(),
        }
    }

    /// Reads `text_config` first: values there win over the top level. Once per object (a
    /// flattened struct may ask again).
    pub fn text_config(&mut self) {
        if self.layers.len() > 1 {
            return;
        }
        let Some(base) = self.layers.last_mut() else {
            return;
        };
        if let Some((key, Value::Object(inner))) = base.map.get_key_value("text_config") {
            base.used.insert(key.as_str());
            let mut segments = base.segments.clone();
            segments.push("text_config".to_owned());
            let layer = Layer {
                map: inner,
                segments,
                used: HashSet::new(),
                shadowed: HashSet::new(),
            };
            self.layers.insert(0, layer);
        }
    }

    /// The object's own map (for a whole config, its top level), below any `text_config`.
    pub(crate) fn own_map(&self) -> Option<&'v Map<String, Value>> {
        self.layers.last().map(|l| l.map)
    }

    /// Marks keys of the object's own map as read (`None`: all of them).
    pub(crate) fn mark_read(&mut self, key: Option<&str>) {
        let Some(layer) = self.layers.last_mut() else {
            return;
        };
        let map = layer.map;
        for k in map.keys() {
            if key.is_none_or(|key| key == k) {
                layer.used.insert(k.as_str());
            }
        }
    }

    /// The error for a required key that the object lacks.
    pub(crate) fn missing_key(&self, key: &str) -> ArgsError {
        self.missing(&[key])
    }

    /// Reads `T` from `value`, an object made by the caller (not part of the config), whose
    /// keys are reported under `segments` (unknown ones and errors alike).
    pub(crate) fn read_made<T: ModelArgs>(
        &mut self,
        value: &Value,
        segments: Vec<String>,
    ) -> Result<T, ArgsError> {
        let path = segments.join(".");
        let map = value
            .as_object()
            .ok_or_else(|| ArgsError::wrong_type(&path, "an object", value))?;
        let mut obj = Object::new(self.cx, map, segments);
        let v = T::parse_object(&mut obj)?;
        obj.finish();
        Ok(v)
    }

    fn path(&self, key: &str) -> String {
        self.layers
            .last()
            .map_or_else(|| key.to_owned(), |l| l.path_of(key))
    }

    /// Finds the key of the group `keys` that a field reads (see [`pick`]), in the highest layer
    /// that has one.
    fn lookup(&mut self, keys: &'static [&'static str]) -> Option<(&'v Value, String)> {
        let mut hit = None;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let Some((key, value)) = pick(layer.map, keys) else {
                continue;
            };
            // The null keys of the group passed over for this one are read, and hidden.
            for skipped in keys.iter().take_while(|k| **k != key) {
                if let Some((k, _)) = layer.map.get_key_value(*skipped) {
                    layer.used.insert(k.as_str());
                    layer.shadowed.insert(k.as_str());
                }
            }
            let path = layer.path_of(key);
            if key.contains('.') {
                self.cx.consumed.insert(path.clone());
            } else {
                layer.used.insert(key);
            }
            hit = Some((i, value, path));
            break;
        }
        self.asked.push((keys, hit.is_some()));
        let (i, value, path) = hit?;
        // The same key in a lower layer (the top level under `text_config`) is hidden.
        for layer in self.layers.iter_mut().skip(i + 1) {
            for key in keys {
                if let Some((k, _)) = layer.map.get_key_value(*key) {
                    layer.used.insert(k.as_str());
                    layer.shadowed.insert(k.as_str());
                }
            }
        }
        Some((value, path))
    }

    /// A key that must be present (`keys`: the field key, then its aliases).
    pub fn required<T: ConfigValue>(
        &mut self,
        keys: &'static [&'static str],
    ) -> Result<T, ArgsError> {
        match self.lookup(keys) {
            None => Err(self.missing(keys)),
            Some((v, path)) if v.is_null() && !T::accepts_null() => {
                Err(ArgsError::wrong_type(&path, T::expected(), v))
            }
            Some((v, path)) => T::from_config_value(v, self.cx, &path),
        }
    }

    /// A key that may be absent (or `null`).
    pub fn optional<T: ConfigValue>(
        &mut self,
        keys: &'static [&'static str],
    ) -> Result<Option<T>, ArgsError> {
        match self.lookup(keys) {
            None => Ok(None),
            Some((v, _)) if v.is_null() => Ok(None),
            Some((v, path)) => T::from_config_value(v, self.cx, &path).map(Some),
        }
    }

    /// [`Object::required`] for `#[arg(positive)]`.
    pub fn required_positive<T: ConfigValue + Positive>(
        &mut self,
        keys: &'static [&'static str],
    ) -> Result<T, ArgsError> {
        let found = self.peek(keys);
        let v = self
            .required::<T>(keys)
            .map_err(|e| positive_words::<T>(e, found.clone()))?;
        check_positive(v, found, || self.path(keys[0]))
    }

    /// [`Object::optional`] for `#[arg(positive)]`.
    pub fn optional_positive<T: ConfigValue + Positive>(
        &mut self,
        keys: &'static [&'static str],
    ) -> Result<Option<T>, ArgsError> {
        let found = self.peek(keys);
        let v = self
            .optional::<T>(keys)
            .map_err(|e| positive_words::<T>(e, found.clone()))?;
        match v {
            Some(v) => check_positive(v, found, || self.path(keys[0])).map(Some),
            None => Ok(None),
        }
    }

    fn peek(&self, keys: &[&str]) -> Option<(&'v Value, String)> {
        self.layers
            .iter()
            .find_map(|layer| pick(layer.map, keys).map(|(key, v)| (v, layer.path_of(key))))
    }

    /// Reads the tag of a tagged enum: the first of `tags` present; all present are consumed.
    pub fn tag(&mut self, tags: &'static [&'static str]) -> Result<String, ArgsError> {
        let mut first: Option<(&'v Value, String)> = None;
        for i in 0..tags.len() {
            let group: &'static [&'static str] = &tags[i..=i];
            if let Some(found) = self.lookup(group) {
                first.get_or_insert(found);
            }
        }
        // Present or not, the tag keys are not fields the config might have misspelt.
        let n = self.asked.len();
        for entry in &mut self.asked[n.saturating_sub(tags.len())..] {
            entry.1 = true;
        }
        match first {
            None => Err(self.missing(tags)),
            Some((Value::String(s), _)) => Ok(s.clone()),
            Some((v, path)) => Err(ArgsError::wrong_type(&path, "a string", v)),
        }
    }

    /// The error for a tag that names no variant.
    pub fn unknown_variant(
        &mut self,
        tags: &'static [&'static str],
        found: &str,
        expected: &[&str],
    ) -> ArgsError {
        let path = self
            .peek(tags)
            .map_or_else(|| self.path(tags[0]), |(_, p)| p);
        let expected = expected
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        ArgsError::new(ArgsErrorKind::UnknownVariant {
            key: path,
            found: format!("{found:?}"),
            expected,
        })
    }

    /// Runs the result of a post-parse hook: key names in its errors become full paths.
    pub fn hook(&self, result: Result<(), ArgsError>) -> Result<(), ArgsError> {
        let prefix = self
            .layers
            .last()
            .map(|l| l.segments.join("."))
            .unwrap_or_default();
        result.map_err(|e| e.under(&prefix))
    }

    fn missing(&self, keys: &[&str]) -> ArgsError {
        ArgsError::new(ArgsErrorKind::MissingKey {
            key: self.path(keys.first().copied().unwrap_or_default()),
            model: self.cx.model.clone(),
        })
    }

    /// Lists what no field read, and the likely typos among it.
    pub(crate) fn finish(self) {
        let Object { cx, layers, asked } = self;
        let absent: Vec<&str> = asked
            .iter()
            .filter(|(_, found)| !found)
            .flat_map(|(keys, _)| keys.iter().copied())
            .filter(|k| !k.contains('.'))
            .collect();
        for layer in &layers {
            for (k, v) in layer.map {
                let shadowed = layer.shadowed.contains(k.as_str());
                if layer.used.contains(k.as_str()) && !shadowed {
                    continue;
                }
                let mut segments = layer.segments.clone();
                segments.push(k.clone());
                let key = layer.path_of(k);
                if !shadowed {
                    if let Some(near) = nearest(k, &absent) {
                        cx.typos.push(Typo {
                            key: key.clone(),
                            suggestion: layer.path_of(near),
                        });
                    }
                }
                cx.extra.push(UnknownKey {
                    key,
                    value: v.clone(),
                    segments,
                    shadowed,
                });
            }
        }
    }
}

/// The field key within edit distance 2 of an unknown key, if one is.
fn nearest<'a>(unknown: &str, fields: &[&'a str]) -> Option<&'a str> {
    if unknown.len() < 4 {
        return None;
    }
    fields
        .iter()
        .map(|f| (strsim::levenshtein(unknown, f), *f))
        .filter(|(d, _)| (1..=2).contains(d))
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

fn positive_words<T: Positive>(e: ArgsError, found: Option<(&Value, String)>) -> ArgsError {
    match (e.kind(), found) {
        (ArgsErrorKind::WrongType { key, .. }, Some((v, path))) if *key == path => {
            ArgsError::wrong_type(&path, T::positive_expected(), v)
        }
        _ => e,
    }
}

fn check_positive<T: Positive>(
    v: T,
    found: Option<(&Value, String)>,
    path: impl FnOnce() -> String,
) -> Result<T, ArgsError> {
    if v.is_positive() {
        return Ok(v);
    }
    Err(match found {
        Some((value, p)) => ArgsError::wrong_type(&p, T::positive_expected(), value),
        None => ArgsError::wrong_type(&path(), T::positive_expected(), &Value::Null),
    })
}

/// Reads a nested `ModelArgs` (a struct or a tagged enum) found at `path`.
#[doc(hidden)]
pub fn nested<T: ModelArgs>(value: &Value, cx: &mut Cx, path: &str) -> Result<T, ArgsError> {
    let map = value
        .as_object()
        .ok_or_else(|| ArgsError::wrong_type(path, "an object", value))?;
    let segments = path.split('.').map(str::to_owned).collect();
    let mut obj = Object::new(cx, map, segments);
    let v = T::parse_object(&mut obj)?;
    obj.finish();
    Ok(v)
}

/// Where a `#[arg(text_config)]` type writes its fields.
#[doc(hidden)]
pub fn text_config_map(out: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let slot = out
        .entry("text_config")
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!("text_config is an object"),
    }
}

/// Writes one field; `null` (an absent `Option`) is left out.
#[doc(hidden)]
pub fn write_field<T: ConfigValue>(out: &mut Map<String, Value>, key: &str, value: &T) {
    let v = value.to_config_value();
    if !v.is_null() {
        out.insert(key.to_owned(), v);
    }
}
