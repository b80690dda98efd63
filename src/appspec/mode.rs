//! `permissions[].mode`: every spelling means the octal digits as written.
//!
//! serde_yaml 0.9 resolves scalars by YAML 1.2: `644` and `4755` are the
//! integers 644 and 4755, `0644` (leading zero) is the *string* "0644", and
//! `0o644` / `0x1a4` are the integer 420 (radix prefixes). We read integers
//! and strings alike as the octal digits they are written with, so `644`,
//! `0644`, `"0644"` and `'644'` all mean 0o644. Radix-prefixed spellings
//! cannot be told apart from a plain decimal 420 once parsed, so the raw
//! text is scanned for them and they are refused (see [`radix_modes`]).

use serde_yaml::Value;

use super::value::{Result, error, quote, show};

/// A `mode:` value written with a YAML radix prefix (`0o`, `0x`, `0b`):
/// the text as written and the integer YAML made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RadixMode {
    /// The scalar as written, e.g. `0o644`.
    pub(super) written: String,
    /// Its value as serde_yaml reads it, e.g. 420.
    pub(super) value: u64,
}

/// Finds `mode: 0o...`, `mode: 0x...` and `mode: 0b...` in the raw text
/// (block or flow style; not in comments). A mode integer equal to one of
/// these values is refused, since its digits are not what the author wrote.
pub(super) fn radix_modes(text: &str) -> Vec<RadixMode> {
    text.lines().flat_map(|line| line.split('#').next().map(radix_modes_in_line).unwrap_or_default()).collect()
}

fn radix_modes_in_line(line: &str) -> Vec<RadixMode> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("mode") {
        let before = rest[..at].chars().next_back();
        let after = rest[at + 4..].trim_start_matches(['"', '\'']);
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(value_text) = after.strip_prefix(':') else { continue };
        let token: String =
            value_text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '+').collect();
        if let Some(value) = radix_value(&token) {
            found.push(RadixMode { written: token, value });
        }
    }
    found
}

/// The value of a `0o`/`0x`/`0b` integer as serde_yaml 0.9 reads it.
fn radix_value(token: &str) -> Option<u64> {
    let digits = token.strip_prefix('+').unwrap_or(token);
    [("0o", 8), ("0x", 16), ("0b", 2)]
        .into_iter()
        .find_map(|(prefix, radix)| digits.strip_prefix(prefix).and_then(|d| u64::from_str_radix(d, radix).ok()))
}

/// Parses a mode: 3 or 4 octal digits, from an integer or a string.
pub(super) fn parse_mode(path: &str, value: &Value, radix: &[RadixMode]) -> Result<u32> {
    let digits = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_u64() {
            Some(v) => {
                if let Some(r) = radix.iter().find(|r| r.value == v) {
                    return Err(error(
                        path,
                        format!(
                            "{} is not an octal mode: write the octal digits without a prefix, e.g. 644 or \"0644\"",
                            r.written
                        ),
                    ));
                }
                v.to_string()
            }
            None => return Err(not_octal(path, value)),
        },
        _ => return Err(not_octal(path, value)),
    };
    octal_digits(&digits).ok_or_else(|| not_octal(path, value))
}

/// 3 or 4 characters, each 0-7, as a number in base 8.
fn octal_digits(digits: &str) -> Option<u32> {
    let well_formed = (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if well_formed { u32::from_str_radix(digits, 8).ok() } else { None }
}

fn not_octal(path: &str, value: &Value) -> super::AppSpecError {
    let shown = match value {
        Value::String(s) => quote(s),
        other => show(other),
    };
    error(path, format!("{shown} is not an octal mode (3 or 4 digits 0-7, e.g. 644, \"0644\" or 4755)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `mode: <spelling>` the way the AppSpec parser does.
    fn mode(spelling: &str) -> Result<u32> {
        let text = format!("mode: {spelling}");
        let doc: Value = serde_yaml::from_str(&text).expect("test YAML");
        let value = doc.get("mode").expect("mode key");
        parse_mode("permissions[0].mode", value, &radix_modes(&text))
    }

    fn msg(r: Result<u32>) -> String {
        r.err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn serde_yaml_reads_leading_zero_as_a_string() {
        // The fact the mode decision rests on (YAML 1.2 core schema).
        let doc: Value = serde_yaml::from_str("a: 0644\nb: 644\nc: 0o644").expect("yaml");
        assert_eq!(doc.get("a"), Some(&Value::String("0644".into())));
        assert_eq!(doc.get("b").and_then(Value::as_u64), Some(644));
        assert_eq!(doc.get("c").and_then(Value::as_u64), Some(420));
    }

    #[test]
    fn every_spelling_means_the_digits_written() {
        assert_eq!(mode("644").ok(), Some(0o644));
        assert_eq!(mode("0644").ok(), Some(0o644));
        assert_eq!(mode("\"0644\"").ok(), Some(0o644));
        assert_eq!(mode("'644'").ok(), Some(0o644));
        assert_eq!(mode("\"644\"").ok(), Some(0o644));
        assert_eq!(mode("4755").ok(), Some(0o4755));
        assert_eq!(mode("\"4755\"").ok(), Some(0o4755));
        assert_eq!(mode("0755").ok(), Some(0o755));
        assert_eq!(mode("000").ok(), Some(0));
        assert_eq!(mode("+644").ok(), Some(0o644));
    }

    #[test]
    fn bad_modes_name_key_and_value() {
        assert!(msg(mode("0999")).starts_with(r#"permissions[0].mode: "0999" is not an octal mode"#));
        assert!(msg(mode("999")).starts_with("permissions[0].mode: 999 is not an octal mode"));
        assert!(msg(mode("-644")).starts_with("permissions[0].mode: -644 is not an octal mode"));
        assert!(msg(mode("64")).starts_with("permissions[0].mode: 64 is not"));
        assert!(msg(mode("\"00644\"")).starts_with(r#"permissions[0].mode: "00644" is not"#));
        assert!(msg(mode("47555")).starts_with("permissions[0].mode: 47555 is not"));
        assert!(msg(mode("6.44")).starts_with("permissions[0].mode: 6.44 is not"));
        assert!(msg(mode("u+x")).starts_with(r#"permissions[0].mode: "u+x" is not"#));
        assert!(msg(mode("true")).starts_with("permissions[0].mode: true is not"));
        assert!(msg(mode("\" 644\"")).contains("is not an octal mode"));
    }

    #[test]
    fn radix_prefixes_are_refused() {
        assert!(msg(mode("0o644")).starts_with("permissions[0].mode: 0o644 is not an octal mode: write the octal"));
        assert!(msg(mode("0x1a4")).contains("0x1a4 is not an octal mode"));
        assert!(msg(mode("0b110100100")).contains("0b110100100 is not an octal mode"));
    }

    #[test]
    fn radix_scan_handles_styles_and_ignores_comments() {
        let found = radix_modes("- {object: /a, mode: 0o755}\n  \"mode\": 0x1ed\n# mode: 0o644\nfilemode: 0o7\n");
        let written: Vec<&str> = found.iter().map(|r| r.written.as_str()).collect();
        assert_eq!(written, ["0o755", "0x1ed"]);
        assert_eq!(found[0].value, 0o755);
    }
}
