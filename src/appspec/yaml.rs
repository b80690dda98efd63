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
//! design, with the same per-token work for each open flow level. Bytes,
//! measured (`--release --no-default-features --features tls`): serde_yaml
//! with unsafe-libyaml is about 150 KB of a 2.4 MB agent (a minimal
//! opt-level z binary grows from 292 KB to 442 KB when it parses YAML);
//! these bounds add 16.7 KB (2 403 440 to 2 420 128 bytes). Replacing the
//! parser could only save bytes if every agent use moved at once and the
//! new parser were smaller than 150 KB, and it would not remove the need for
//! the bounds. What serde_yaml lacks are bounds, and they are added here:
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
            let message = e.to_string();
            let at = if message.contains("more than one document") {
                second_document_line(text)
            } else {
                first_alias_offset(text).map(|at| line_of(text, at))
            };
            YamlError { line: at.unwrap_or_else(|| line_of(text, text.len())), column: None, message }
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

/// The line of the `---` that starts a second document: the first one when
/// content comes before it, else the second one.
fn second_document_line(text: &str) -> Option<usize> {
    let mut content = false;
    let mut starts = 0;
    for (index, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker {
            starts += 1;
            if content || starts == 2 {
                return Some(index + 1);
            }
            content = line[3..].split('#').next().is_some_and(|rest| !rest.trim().is_empty());
        } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') && !line.starts_with('%') {
            content = true;
        }
    }
    None
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

/// One step of a key path as errors name it (`files[1].destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// `files[1].destination` as steps; `None` when it is not such a path.
pub(crate) fn steps(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if name.is_empty() {
            return None;
        }
        steps.push(Step::Key(name.to_string()));
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            steps.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(steps)
}

/// Marks the error that [`Locate`] raises where it stops.
const FOUND: &str = "\u{1}located";

/// The line of the key (or list item) at `path` in `text`, which parsed
/// before: the text is read again and the reading stops with an error at
/// that key, to which serde_yaml gives its position. `None` when there is
/// no such key.
pub(crate) fn line_of_path(text: &str, path: &[Step]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let locate = Locate { path };
    match locate.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|at| at.line()),
        _ => None,
    }
}

/// Walks down `path`; with an empty path, the value it is given is the one
/// looked for, and it stops there.
#[derive(Clone, Copy)]
struct Locate<'p> {
    path: &'p [Step],
}

impl Locate<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() { Err(E::custom(FOUND)) } else { Ok(()) }
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.here()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.here()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.here()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.here()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.here()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut data: A) -> Result<(), A::Error> {
        self.here()?;
        let Some((Step::Index(want), rest)) = self.path.split_first() else {
            while data.next_element::<de::IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut index = 0;
        loop {
            let found = if index == *want {
                data.next_element_seed(Locate { path: rest })?.is_some()
            } else {
                data.next_element::<de::IgnoredAny>()?.is_some()
            };
            if !found {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut data: A) -> Result<(), A::Error> {
        self.here()?;
        let Some((Step::Key(want), rest)) = self.path.split_first() else {
            while data.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(matched) = data.next_key_seed(KeyProbe { want, last: rest.is_empty() })? {
            if matched {
                data.next_value_seed(Locate { path: rest })?;
            } else {
                data.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.here()?;
        let (_, contents): (de::IgnoredAny, _) = data.variant()?;
        contents.newtype_variant_seed(self)
    }
}

/// A map key: `true` when it is `want`. When it is and `last`, the reading
/// stops there (the key is the one looked for).
struct KeyProbe<'w> {
    want: &'w str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match key == self.want {
            true if self.last => Err(E::custom(FOUND)),
            matched => Ok(matched),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut data: A) -> Result<bool, A::Error> {
        while data.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut data: A) -> Result<bool, A::Error> {
        while data.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<bool, A::Error> {
        let (_, contents): (de::IgnoredAny, _) = data.variant()?;
        contents.newtype_variant::<de::IgnoredAny>().map(|_| false)
    }
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
    fn key_paths_are_found_at_their_line() {
        let text = "version: 0.0\nfiles:\n  - source: a\n    destination: /x\n  -\n    source: b\n\n    destination: y\n\
                    hooks: {AfterInstall: [{location: a.sh}, {location: b.sh,\n timeout: 5}]}\n";
        let line = |path: &str| line_of_path(text, &steps(path).expect("a path"));
        assert_eq!(line("version"), Some(1));
        assert_eq!(line("files"), Some(2));
        assert_eq!(line("files[0]"), Some(3));
        assert_eq!(line("files[1].destination"), Some(8));
        assert_eq!(line("files[1]"), Some(6));
        assert_eq!(line("hooks.AfterInstall[1].timeout"), Some(10));
        assert_eq!(line("files[2]"), None);
        assert_eq!(line("nothing.here"), None);
        assert_eq!(
            steps("a[1][2].b"),
            Some(vec![Step::Key("a".into()), Step::Index(1), Step::Index(2), Step::Key("b".into())])
        );
        assert_eq!(steps("a[x]"), None);
        assert_eq!(steps(".a"), None);
    }

    #[test]
    fn a_second_document_is_refused_at_its_line() {
        for (text, line) in [("a: 1\n---\nb: 2\n", 2), ("---\na: 1\n# c\n---\nb: 2\n", 4), ("--- x\n--- y\n", 2)] {
            let e = error(text);
            assert!(e.message.contains("more than one document"), "{e}");
            assert_eq!(e.line, line, "{text:?}");
        }
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
