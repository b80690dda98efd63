//! Typed access to `serde_yaml::Value` with errors that name the key path
//! and the offending value.

use serde_yaml::{Mapping, Value};

use super::AppSpecError;

/// Result of the validation helpers.
pub(super) type Result<T> = std::result::Result<T, AppSpecError>;

/// Values longer than this are cut in error messages (input is untrusted).
const SHOW_MAX_CHARS: usize = 80;

/// An error about the value at `path` (e.g. `files[1].destination`).
pub(super) fn error(path: &str, message: impl std::fmt::Display) -> AppSpecError {
    let message = if path.is_empty() { message.to_string() } else { format!("{path}: {message}") };
    AppSpecError { message }
}

/// `path` extended by a map key: `files[0]` + `source` = `files[0].source`.
pub(super) fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// `path` extended by a list index: `files` + 1 = `files[1]`.
pub(super) fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A string for messages: quoted and escaped, cut when long.
pub(super) fn quote(text: &str) -> String {
    let mut cut: String = text.chars().take(SHOW_MAX_CHARS).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// How a value is shown in messages: scalars as written, containers by kind.
pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a map".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// "expected {what}, found {value}" at `path`.
pub(super) fn expected(path: &str, what: &str, value: &Value) -> AppSpecError {
    error(path, format!("expected {what}, found {}", show(value)))
}

/// The value as a string.
pub(super) fn as_str<'a>(path: &str, value: &'a Value) -> Result<&'a str> {
    value.as_str().ok_or_else(|| expected(path, "a string", value))
}

/// The value as a list.
pub(super) fn as_list<'a>(path: &str, value: &'a Value) -> Result<&'a [Value]> {
    value.as_sequence().map(Vec::as_slice).ok_or_else(|| expected(path, "a list", value))
}

/// The entries of a map whose keys must all be strings, in the order written.
pub(super) fn entries<'a>(path: &str, value: &'a Value) -> Result<Vec<(&'a str, &'a Value)>> {
    let map = value.as_mapping().ok_or_else(|| expected(path, "a map", value))?;
    map.iter()
        .map(|(k, v)| match k.as_str() {
            Some(key) => Ok((key, v)),
            None => Err(error(path, format!("key {} is not a string", show(k)))),
        })
        .collect()
}

/// A map with a fixed set of keys: unknown keys are refused by name.
pub(super) struct Fields<'a> {
    path: &'a str,
    map: &'a Mapping,
}

impl<'a> Fields<'a> {
    /// Checks that `value` is a map with only keys from `allowed`.
    pub(super) fn new(path: &'a str, value: &'a Value, allowed: &[&str]) -> Result<Self> {
        let map = value.as_mapping().ok_or_else(|| expected(path, "a map", value))?;
        for key in map.keys() {
            let Some(name) = key.as_str() else {
                return Err(error(path, format!("key {} is not a string", show(key))));
            };
            if !allowed.contains(&name) {
                return Err(error(
                    path,
                    format!("unknown key {} (expected one of: {})", quote(name), allowed.join(", ")),
                ));
            }
        }
        Ok(Fields { path, map })
    }

    /// The value of `key`; `None` when absent or null (null means "not set").
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The value of a key that must be present and not null.
    pub(super) fn require(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| error(self.path, format!("missing required key {key:?}")))
    }

    /// The key path of `key` in this map.
    pub(super) fn path_of(&self, key: &str) -> String {
        key_path(self.path, key)
    }
}

/// A name (user, group, SELinux field): a non-empty string without blanks,
/// `:` or NUL; integers are accepted as numeric ids.
pub(super) fn name_or_id(path: &str, value: &Value) -> Result<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some_and(|id| u32::try_from(id).is_ok()) => n.to_string(),
        _ => return Err(expected(path, "a name or a numeric id", value)),
    };
    if text.is_empty() {
        return Err(error(path, "must not be empty"));
    }
    if text.chars().any(|c| c.is_whitespace() || c == ':' || c == '\0') {
        return Err(error(path, format!("{} is not a valid name", quote(&text))));
    }
    Ok(text)
}

/// The id chown(2) reads as "leave unchanged" ((uid_t)-1).
pub(super) const UNCHANGED_ID: u32 = u32::MAX;

/// An `owner`, `group` or `runas`: a name, or a numeric id (integer or digits in a
/// string) that chown(2) really sets: -1, 4294967295 and ids beyond 32 bits
/// would mean "leave unchanged" to it (or wrap around to that), so they are
/// refused rather than silently doing nothing.
pub(super) fn id_or_name(path: &str, value: &Value) -> Result<String> {
    let text = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return name_or_id(path, value),
    };
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return name_or_id(path, value);
    }
    match text.parse::<u32>() {
        Ok(id) if id != UNCHANGED_ID => Ok(text),
        _ => Err(error(
            path,
            format!(
                "{text} is not a usable id: -1 ({UNCHANGED_ID}) means \"leave unchanged\" to chown(2) (setuid(2) \
                 refuses it), and ids beyond 32 bits cannot be set (ids go from 0 to {})",
                UNCHANGED_ID - 1
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML")
    }

    #[test]
    fn show_quotes_strings_and_cuts_long_ones() {
        assert_eq!(show(&yaml("\"a\\\"b\"")), r#""a\"b""#);
        assert_eq!(show(&yaml("12")), "12");
        assert_eq!(show(&yaml("[1]")), "a list");
        let long = "x".repeat(200);
        assert!(quote(&long).ends_with("...\""));
        assert!(quote(&long).len() < 100);
    }

    #[test]
    fn fields_refuse_unknown_and_non_string_keys() {
        let v = yaml("{a: 1, b: 2}");
        let err = Fields::new("p[0]", &v, &["a"]).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some(r#"p[0]: unknown key "b" (expected one of: a)"#));
        let v = yaml("{1: x}");
        let err = Fields::new("p", &v, &["a"]).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some("p: key 1 is not a string"));
    }

    #[test]
    fn fields_treat_null_as_absent() {
        let v = yaml("{a: ~}");
        let fields = Fields::new("p", &v, &["a"]).expect("fields");
        assert!(fields.get("a").is_none());
        assert_eq!(fields.require("a").err().map(|e| e.message).as_deref(), Some(r#"p: missing required key "a""#));
    }

    #[test]
    fn names_accept_strings_and_ids() {
        assert_eq!(name_or_id("o", &yaml("bob")).ok().as_deref(), Some("bob"));
        assert_eq!(name_or_id("o", &yaml("1000")).ok().as_deref(), Some("1000"));
        assert!(name_or_id("o", &yaml("-1")).is_err());
        assert!(name_or_id("o", &yaml("\"a b\"")).is_err());
        assert!(name_or_id("o", &yaml("\"\"")).is_err());
    }
}
