//! YAML text to a `serde_yaml::Value` in bounded time and memory, for the
//! AppSpec and the agent configuration (both come from outside the agent).
//!
//! Why serde_yaml is kept (issue 9, point 5): it is deprecated upstream and
//! runs unsafe-libyaml, a transliteration of libyaml to Rust. libyaml is one
//! of the most fuzzed parsers there is and the transliteration is fuzzed too;
//! serde_yaml is in the agent's dependency contract (DESIGN.md) and the agent
//! also reads CodeDeploy's on-premises file with it, so a second parser would
//! add bytes instead of replacing them, and change how scalars resolve
//! (`mode: 0644` relies on YAML 1.2 as serde_yaml reads it). The maintained
//! pure-Rust parsers (yaml-rust2, saphyr) descend from the same scanner
//! design, with the same per-token work for each open flow level. What
//! serde_yaml lacks are bounds, and they are added here:
//!
//! - **Flow nesting.** libyaml rechecks every open flow level (`[`, `{`) at
//!   every token, so its time is tokens x flow depth: 40 000 nested `[` take
//!   9 s, half a million (1 MiB) about half an hour. Telling flow brackets
//!   from brackets in strings or comments needs a full YAML scanner, and a
//!   scanner that misjudges one quote could hide the depth; so the pre-scan
//!   counts every `[` and `{` in the text, which is an upper bound on the flow
//!   depth whatever the text means, and allows at most
//!   [`FLOW_WORK_BUDGET`] / bytes of them (thousands in a usual AppSpec of a
//!   few kilobytes, 64 in one of 1 MiB).
//! - **Memory.** serde_yaml reads the whole event list of a document before
//!   building anything (about 150 bytes an event): a 1 MiB `{a,a,a,...}`
//!   would be a million events. Every event but the first follows one of
//!   `\n , : - [ { ?` within a few events (at most 4 per such character), so
//!   the pre-scan allows at most [`MAX_STRUCTURE`] of those characters,
//!   counted anywhere (in strings and comments too: an upper bound).
//! - **Nesting.** At most [`MAX_DEPTH`] levels of collections (serde_yaml
//!   stops at 128 by itself).
//! - **Aliases.** Every value is counted as it is built, each use of an alias
//!   counting the whole anchored value again: at most [`MAX_VALUES`], so a
//!   "billion laughs" stops after [`MAX_VALUES`] values.
//! - **Duplicate keys** are refused at the line of the second key.
//!
//! Every error gives the line (and column) of the offending key or value.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Number, Value};

/// Most collections nested in one another.
pub(crate) const MAX_DEPTH: usize = 32;
/// Most values built from one document, aliases counted at each use.
pub(crate) const MAX_VALUES: usize = 100_000;
/// Most line breaks and `, : - [ { ?` characters (bounds the event list).
pub(crate) const MAX_STRUCTURE: usize = 50_000;
/// Bytes x `[`/`{` characters allowed: bounds libyaml's flow-level work.
pub(crate) const FLOW_WORK_BUDGET: usize = 1 << 26;

/// Why a text is not acceptable YAML, with the line it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    /// 1-based line of the offending key or value.
    pub(crate) line: usize,
    /// 1-based column, when known.
    pub(crate) column: Option<usize>,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "invalid YAML at line {}, column {column}: {}", self.line, self.message),
            None => write!(f, "invalid YAML at line {}: {}", self.line, self.message),
        }
    }
}

/// Parses one YAML document within the bounds above.
pub(crate) fn parse(text: &str) -> Result<Value, YamlError> {
    check_flow_brackets(text)?;
    check_structure(text)?;
    let budget = Cell::new(MAX_VALUES);
    let seed = Bounded { budget: &budget, depth: 0, seen: None };
    let deserializer = serde_yaml::Deserializer::from_str(text);
    seed.deserialize(deserializer).map_err(|e| from_serde_yaml(&e, text))
}

/// The pre-scan: at most [`MAX_STRUCTURE`] characters that can start events.
fn check_structure(text: &str) -> Result<(), YamlError> {
    let mut structure = text.match_indices(['\n', ',', ':', '-', '[', '{', '?']);
    match structure.nth(MAX_STRUCTURE) {
        None => Ok(()),
        Some((offset, _)) => Err(YamlError {
            line: line_of(text, offset),
            column: None,
            message: format!(
                "more than {MAX_STRUCTURE} lines and ',' ':' '-' '[' '{{' '?' characters (a bound on the YAML \
                 parser's memory)"
            ),
        }),
    }
}

/// The pre-scan: at most `FLOW_WORK_BUDGET / len` flow brackets.
fn check_flow_brackets(text: &str) -> Result<(), YamlError> {
    let allowed = FLOW_WORK_BUDGET / text.len().max(1);
    let mut brackets = text.match_indices(['[', '{']);
    match brackets.nth(allowed) {
        None => Ok(()),
        Some((offset, _)) => Err(YamlError {
            line: line_of(text, offset),
            column: None,
            message: format!(
                "more than {allowed} '[' and '{{' in {} bytes (the YAML parser's work grows with flow nesting \
                 times size; write lists and maps in block style)",
                text.len()
            ),
        }),
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// serde_yaml's error, with the line it carries. The only errors without one
/// are its own limit on alias uses and end-of-input errors: they get the line
/// of the first alias, or of the end of the text.
fn from_serde_yaml(e: &serde_yaml::Error, text: &str) -> YamlError {
    match e.location() {
        Some(at) => YamlError { line: at.line(), column: Some(at.column()), message: strip_position(e.to_string()) },
        None => {
            let line = first_alias_offset(text).map_or_else(|| line_of(text, text.len()), |at| line_of(text, at));
            YamlError { line, column: None, message: e.to_string() }
        }
    }
}

/// serde_yaml appends " at line L column C" to its messages; the position is
/// given once, in front.
fn strip_position(message: String) -> String {
    match message.find(" at line ") {
        Some(at) if message[at..].contains(" column ") && !message[at..].contains(',') => message[..at].to_string(),
        _ => message,
    }
}

/// Where the first `*name` that could be an alias is (approximate: only used
/// to place an error).
fn first_alias_offset(text: &str) -> Option<usize> {
    text.match_indices('*').map(|(i, _)| i).find(|&i| {
        let next = text.as_bytes().get(i + 1).copied().unwrap_or(b' ');
        let before = if i == 0 { b' ' } else { text.as_bytes()[i - 1] };
        (next.is_ascii_alphanumeric() || next == b'_' || next == b'-') && b" \t\n[{,:-".contains(&before)
    })
}

/// Builds a `Value` like serde_yaml's own `Deserialize`, counting values
/// against a budget, bounding depth and refusing duplicate keys. Errors are
/// raised inside the visitor so that serde_yaml gives them the position of
/// the value (for a duplicate key: the second key).
#[derive(Clone, Copy)]
struct Bounded<'a> {
    /// Values still allowed.
    budget: &'a Cell<usize>,
    /// Collections around this value.
    depth: usize,
    /// For a map key: the keys before it in the same map.
    seen: Option<&'a Mapping>,
}

impl<'a> Bounded<'a> {
    /// One more value; an error once the budget is spent.
    fn count<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "more than {MAX_VALUES} values (each use of an alias counts the whole anchored value again)"
            ))),
        }
    }

    /// A collection opens here: counts it and returns the seed of its items.
    fn open<E: de::Error>(&self) -> Result<Bounded<'a>, E> {
        self.count()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(Bounded { budget: self.budget, depth: self.depth + 1, seen: None })
    }

    /// A scalar value: counted, and checked as a key.
    fn scalar<E: de::Error>(&self, value: Value) -> Result<Value, E> {
        self.count()?;
        self.finish(value)
    }

    /// The value, unless it is a key already present in its map.
    fn finish<E: de::Error>(&self, value: Value) -> Result<Value, E> {
        match self.seen {
            Some(map) if map.contains_key(&value) => Err(E::custom(format_args!("duplicate key {}", show_key(&value)))),
            _ => Ok(value),
        }
    }
}

/// A key as named in the duplicate-key error.
fn show_key(key: &Value) -> String {
    match key {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        _ => "(a collection)".to_string(),
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.scalar(Value::Number(Number::from(i)))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.scalar(Value::Number(Number::from(u)))
    }

    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Value, E> {
        Err(E::custom(format_args!("integer {i} is out of range (64 bits)")))
    }

    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Value, E> {
        Err(E::custom(format_args!("integer {u} is out of range (64 bits)")))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.scalar(Value::Number(Number::from(f)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.scalar(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.scalar(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut data: A) -> Result<Value, A::Error> {
        let item = self.open()?;
        let mut sequence = Vec::new();
        while let Some(value) = data.next_element_seed(item)? {
            sequence.push(value);
        }
        self.finish(Value::Sequence(sequence))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut data: A) -> Result<Value, A::Error> {
        let item = self.open()?;
        let mut mapping = Mapping::new();
        loop {
            let key_seed = Bounded { budget: item.budget, depth: item.depth, seen: Some(&mapping) };
            let Some(key) = data.next_key_seed(key_seed)? else { break };
            let value = data.next_value_seed(item)?;
            mapping.insert(key, value);
        }
        self.finish(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.count()?;
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag"));
        }
        let inner = Bounded { budget: self.budget, depth: self.depth, seen: None };
        let value = contents.newtype_variant_seed(inner)?;
        self.finish(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> YamlError {
        match parse(text) {
            Ok(v) => panic!("expected {text:?} to be refused, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_like_serde_yaml() {
        let text = "a: 1\nb: [x, {c: ~, d: 0644}]\nc: !t 5\n-1: -2.5\ne: &x [1]\nf: *x\n";
        let ours = parse(text).expect("parses");
        let theirs: Value = serde_yaml::from_str(text).expect("parses");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn duplicate_keys_name_the_line_of_the_second_key() {
        let e = error("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n");
        assert_eq!((e.line, e.message.as_str()), (5, "b: duplicate key \"c\""));
        let e = error("a: 1\na: 2\n");
        assert_eq!((e.line, e.message.as_str()), (2, "duplicate key \"a\""));
        let e = error("x:\n  - {k: 1,\n     k: 2}\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("duplicate key \"k\""), "{e}");
    }

    #[test]
    fn syntax_errors_carry_their_line_once() {
        let e = error("a: [1\nb: 2\n");
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("invalid YAML at line 2, column "), "{e}");
    }

    #[test]
    fn depth_is_bounded_with_the_line() {
        let deep = format!("a:\n{}", (1..=40).map(|i| format!("{}- \n", "  ".repeat(i))).collect::<String>());
        let e = error(&deep);
        assert!(e.message.contains("nested more than 32 levels deep"), "{e}");
        assert_eq!(e.line, MAX_DEPTH + 1);
        assert!(parse(&format!("a: {}1{}", "[".repeat(31), "]".repeat(31))).is_ok());
    }

    #[test]
    fn flow_brackets_are_bounded_by_size() {
        let text = format!("a: {}{}\n#{}", "[".repeat(100), "]".repeat(100), "x".repeat(1 << 20));
        let e = error(&text);
        assert_eq!(e.line, 1);
        assert!(e.message.starts_with("more than 63 '[' and '{' in "), "{e}");
    }

    #[test]
    fn structure_is_bounded() {
        let text = format!("a: {{{}}}\n", "x,".repeat(MAX_STRUCTURE));
        let e = error(&text);
        assert_eq!(e.line, 1);
        assert!(e.message.starts_with("more than 50000 lines and "), "{e}");
        let lines = "a\n".repeat(MAX_STRUCTURE + 1);
        assert_eq!(error(&lines).line, MAX_STRUCTURE + 1);
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 1..10 {
            let uses = vec![format!("*l{}", i - 1); 10].join(", ");
            text.push_str(&format!("l{i}: &l{i} [{uses}]\n"));
        }
        let e = error(&text);
        assert!(e.message.contains("values (each use of an alias") || e.message.contains("repetition limit"), "{e}");
    }

    #[test]
    fn strip_position_keeps_other_text() {
        assert_eq!(strip_position("bad at line 2 column 3".into()), "bad");
        assert_eq!(
            strip_position("x at line 2 column 2, while parsing a map at line 1 column 1".into()),
            "x at line 2 column 2, while parsing a map at line 1 column 1"
        );
    }
}
