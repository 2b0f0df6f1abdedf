//! Leaf values of a config: how each Rust type reads itself from JSON and writes itself back.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Number, Value};

use super::error::ArgsError;
use super::parser::Cx;

/// A type that a `#[derive(ModelArgs)]` field may have.
///
/// Implemented for `bool`, the integers, `f32`/`f64`, `String`, `Option<T>`, `Vec<T>`,
/// string-keyed maps, `serde_json::Value`, and every type that derives `ModelArgs` (nested
/// structs and tagged enums).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read from config.json",
    label = "not a config value",
    note = "a field of `#[derive(ModelArgs)]` is a number, `bool`, `String`, `Option`, `Vec`, a map, `serde_json::Value`, or a type that derives `ModelArgs` itself"
)]
pub trait ConfigValue: Sized {
    /// What the type accepts, as said in errors: `an integer`, `a string`.
    fn expected() -> String;

    /// Reads the value found at `path`.
    #[doc(hidden)]
    fn from_config_value(value: &Value, cx: &mut Cx, path: &str) -> Result<Self, ArgsError>;

    /// Writes the value as config.json holds it.
    fn to_config_value(&self) -> Value;

    /// Whether a JSON `null` reads as this type (only `Option` and `Value` do).
    #[doc(hidden)]
    fn accepts_null() -> bool {
        false
    }
}

/// A numeric type that `#[arg(positive)]` can check.
#[diagnostic::on_unimplemented(
    message = "`#[arg(positive)]` needs a number, not `{Self}`",
    label = "not a number",
    note = "`positive` applies to integer and float fields (or an `Option` of one)"
)]
pub trait Positive {
    /// Whether the value is above zero.
    fn is_positive(&self) -> bool;
    /// Whether the type is an integer (for the words of the error).
    const INTEGER: bool;
    /// What a positive value of this type is, in the words of the error.
    fn positive_expected() -> String {
        if Self::INTEGER {
            "a positive integer".to_owned()
        } else {
            "a positive finite number".to_owned()
        }
    }
}

macro_rules! ints {
    ($($t:ty => $what:literal),*) => {$(
        impl ConfigValue for $t {
            fn expected() -> String {
                $what.to_owned()
            }
            fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
                let n = match value {
                    Value::Number(n) => n,
                    _ => return Err(ArgsError::wrong_type(path, Self::expected(), value)),
                };
                let v = if let Some(i) = n.as_i64() {
                    <$t>::try_from(i).ok()
                } else if let Some(u) = n.as_u64() {
                    <$t>::try_from(u).ok()
                } else {
                    None
                };
                v.ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
            }
            fn to_config_value(&self) -> Value {
                Value::from(*self)
            }
        }
        impl Positive for $t {
            #[allow(unused_comparisons)]
            fn is_positive(&self) -> bool {
                *self > 0
            }
            const INTEGER: bool = true;
        }
    )*};
}

ints!(
    u8 => "a non-negative integer", u16 => "a non-negative integer",
    u32 => "a non-negative integer", u64 => "a non-negative integer",
    i8 => "an integer", i16 => "an integer", i32 => "an integer", i64 => "an integer",
    isize => "an integer"
);

/// The largest size a config may declare: MLX's dimensions are 32-bit signed integers, so
/// every `usize` of a config (the type architectures use for sizes, counts and lengths) is
/// checked here, once, to fit, with the key named; no cast further on can truncate.
pub const MAX_SIZE: usize = i32::MAX as usize;

impl ConfigValue for usize {
    fn expected() -> String {
        format!("a non-negative integer of at most {MAX_SIZE} (MLX's size limit)")
    }
    fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .filter(|&u| u <= MAX_SIZE as u64)
                .map(|u| u as usize)
                .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value)),
            _ => Err(ArgsError::wrong_type(path, Self::expected(), value)),
        }
    }
    fn to_config_value(&self) -> Value {
        Value::from(*self)
    }
}

impl Positive for usize {
    fn is_positive(&self) -> bool {
        *self > 0
    }
    const INTEGER: bool = true;
    fn positive_expected() -> String {
        format!("a positive integer of at most {MAX_SIZE} (MLX's size limit)")
    }
}

/// Reads a number, accepting integers and transformers' `{"__float__": "Infinity"}`.
pub(crate) fn read_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Object(m) if m.len() == 1 => match m.get("__float__")?.as_str()? {
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            "NaN" | "nan" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

/// Writes a float the way transformers does: a number, or `{"__float__": ...}` when JSON
/// has no number for it.
pub(crate) fn write_f64(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None => {
            let s = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            let mut m = Map::new();
            m.insert("__float__".to_owned(), Value::String(s.to_owned()));
            Value::Object(m)
        }
    }
}

impl ConfigValue for f64 {
    fn expected() -> String {
        "a finite number".to_owned()
    }
    /// NaN and the infinities (transformers' `{"__float__": ...}`) are refused: no setting of
    /// a model means anything with them, and they would only turn into NaN logits later.
    fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        read_f64(value)
            .filter(|v| v.is_finite())
            .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
    }
    fn to_config_value(&self) -> Value {
        write_f64(*self)
    }
}

impl ConfigValue for f32 {
    fn expected() -> String {
        "a finite number (in float32's range)".to_owned()
    }
    /// NaN, the infinities and numbers beyond float32's range are refused (see `f64`).
    fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        read_f64(value)
            .map(|v| v as f32)
            .filter(|v| v.is_finite())
            .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
    }
    fn to_config_value(&self) -> Value {
        // Through the shortest decimal form, so that 1e-5f32 writes back as 1e-5 and not as
        // 9.99999974737875e-6.
        let wide = if self.is_finite() {
            self.to_string().parse::<f64>().unwrap_or(f64::from(*self))
        } else {
            f64::from(*self)
        };
        write_f64(wide)
    }
}

impl Positive for f32 {
    fn is_positive(&self) -> bool {
        *self > 0.0
    }
    const INTEGER: bool = false;
}

impl Positive for f64 {
    fn is_positive(&self) -> bool {
        *self > 0.0
    }
    const INTEGER: bool = false;
}

impl<T: Positive> Positive for Option<T> {
    fn is_positive(&self) -> bool {
        self.as_ref().is_none_or(T::is_positive)
    }
    const INTEGER: bool = T::INTEGER;
    fn positive_expected() -> String {
        T::positive_expected()
    }
}

impl ConfigValue for bool {
    fn expected() -> String {
        "a boolean".to_owned()
    }
    fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        value
            .as_bool()
            .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
    }
    fn to_config_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ConfigValue for String {
    fn expected() -> String {
        "a string".to_owned()
    }
    fn from_config_value(value: &Value, _cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))
    }
    fn to_config_value(&self) -> Value {
        Value::String(self.clone())
    }
}

impl ConfigValue for Value {
    fn expected() -> String {
        "any JSON value".to_owned()
    }
    fn from_config_value(value: &Value, _cx: &mut Cx, _path: &str) -> Result<Self, ArgsError> {
        Ok(value.clone())
    }
    fn to_config_value(&self) -> Value {
        self.clone()
    }
    fn accepts_null() -> bool {
        true
    }
}

impl<T: ConfigValue> ConfigValue for Option<T> {
    fn expected() -> String {
        format!("{} or null", T::expected())
    }
    fn from_config_value(value: &Value, cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        if value.is_null() {
            Ok(None)
        } else {
            T::from_config_value(value, cx, path).map(Some)
        }
    }
    fn to_config_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_config_value)
    }
    fn accepts_null() -> bool {
        true
    }
}

impl<T: ConfigValue> ConfigValue for Vec<T> {
    fn expected() -> String {
        format!("an array of {}", plural(&T::expected()))
    }
    fn from_config_value(value: &Value, cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        let items = value
            .as_array()
            .ok_or_else(|| ArgsError::wrong_type(path, Self::expected(), value))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| T::from_config_value(v, cx, &format!("{path}[{i}]")))
            .collect()
    }
    fn to_config_value(&self) -> Value {
        Value::Array(self.iter().map(T::to_config_value).collect())
    }
}

fn read_map<T: ConfigValue>(
    value: &Value,
    cx: &mut Cx,
    path: &str,
    expected: impl FnOnce() -> String,
) -> Result<Vec<(String, T)>, ArgsError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ArgsError::wrong_type(path, expected(), value))?;
    obj.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                T::from_config_value(v, cx, &format!("{path}.{k}"))?,
            ))
        })
        .collect()
}

impl<T: ConfigValue> ConfigValue for BTreeMap<String, T> {
    fn expected() -> String {
        format!("an object of {}", plural(&T::expected()))
    }
    fn from_config_value(value: &Value, cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        Ok(read_map(value, cx, path, Self::expected)?
            .into_iter()
            .collect())
    }
    fn to_config_value(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.clone(), v.to_config_value()))
                .collect(),
        )
    }
}

impl<T: ConfigValue, S: std::hash::BuildHasher + Default> ConfigValue for HashMap<String, T, S> {
    fn expected() -> String {
        format!("an object of {}", plural(&T::expected()))
    }
    fn from_config_value(value: &Value, cx: &mut Cx, path: &str) -> Result<Self, ArgsError> {
        Ok(read_map(value, cx, path, Self::expected)?
            .into_iter()
            .collect())
    }
    fn to_config_value(&self) -> Value {
        // Sorted, so that the file written is the same on every run.
        let sorted: BTreeMap<&String, &T> = self.iter().collect();
        Value::Object(
            sorted
                .into_iter()
                .map(|(k, v)| (k.clone(), v.to_config_value()))
                .collect(),
        )
    }
}

/// "an integer" -> "integers", "a string or null" -> "strings or nulls".
fn plural(what: &str) -> String {
    what.split(" or ")
        .map(|part| {
            let bare = part
                .strip_prefix("an ")
                .or_else(|| part.strip_prefix("a "))
                .unwrap_or(part);
            match bare.split_once(" of ") {
                // "array of integers" -> "arrays of integers"
                Some((head, tail)) => format!("{head}s of {tail}"),
                None => format!("{bare}s"),
            }
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn plural_reads_naturally() {
        assert_eq!(plural("an integer"), "integers");
        assert_eq!(plural("a string"), "strings");
        assert_eq!(plural("a non-negative integer"), "non-negative integers");
        assert_eq!(plural("a number or null"), "numbers or nulls");
        assert_eq!(plural("an array of integers"), "arrays of integers");
    }
}
