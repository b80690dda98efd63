//! The top level of an AppSpec: `version`, `os`, `files`,
//! `file_exists_behavior`, then `permissions` and `hooks` (own modules).

use serde_yaml::Value;

use super::events::parse_hooks;
use super::mode::radix_modes;
use super::paths::{absolute_path, revision_path};
use super::permissions::parse_permissions;
use super::value::{Fields, Result, as_list, as_str, entries, error, expected, index_path, quote, show};
use super::{AppSpec, AppSpecError, FileExistsBehavior, FileMapping, MAX_APPSPEC_SIZE, yaml};

const TOP_LEVEL_KEYS: &[&str] = &["version", "os", "files", "file_exists_behavior", "permissions", "hooks"];

/// Parses and validates AppSpec text (see [`AppSpec::parse`]).
pub(super) fn parse(text: &str) -> Result<AppSpec> {
    if text.len() as u64 > MAX_APPSPEC_SIZE {
        return Err(error(
            "",
            format!("the AppSpec is {} bytes, more than the {MAX_APPSPEC_SIZE} allowed", text.len()),
        ));
    }
    let doc: Value = yaml::parse(text).map_err(|e| yaml_error(&e))?;
    validate(&doc, text).map_err(|e| with_line(e, text))
}

/// Checks the parsed document (see [`AppSpec::parse`]).
fn validate(doc: &Value, text: &str) -> Result<AppSpec> {
    if doc.is_null() {
        return Err(error("", "the AppSpec is empty (it needs at least version: 0.0 and os: linux)"));
    }
    if !doc.is_mapping() {
        return Err(expected("", "a map of AppSpec sections at the top level", doc));
    }
    check_top_level_keys(doc)?;
    let fields = Fields::new("", doc, TOP_LEVEL_KEYS)?;
    check_version(fields.get("version"))?;
    check_os(fields.get("os"))?;
    Ok(AppSpec {
        files: parse_files(fields.get("files"))?,
        file_exists_behavior: fields.get("file_exists_behavior").map(parse_file_exists_behavior).transpose()?,
        permissions: parse_permissions(fields.get("permissions"), &radix_modes(text))?,
        hooks: parse_hooks(fields.get("hooks"))?,
    })
}

/// A validation error with the line of the key its message starts with:
/// `files[1].destination: "x" is not an absolute path (line 7)`; for an
/// unknown key or event, the line of that key. Unchanged when there is no
/// such key.
fn with_line(e: AppSpecError, text: &str) -> AppSpecError {
    let Some((path, rest)) = e.message.split_once(": ") else { return e };
    let Some(steps) = yaml::steps(path) else { return e };
    let unknown = ["unknown key \"", "unknown lifecycle event \""]
        .iter()
        .find_map(|prefix| rest.strip_prefix(prefix))
        .and_then(|r| r.split_once('"'))
        .map(|(key, _)| key);
    let line = unknown
        .and_then(|key| yaml::line_of_path(text, &[steps.as_slice(), &[yaml::Step::Key(key.to_string())]].concat()))
        .or_else(|| yaml::line_of_path(text, &steps));
    match line {
        Some(line) => AppSpecError { message: format!("{} (line {line})", e.message) },
        None => e,
    }
}

/// Malformed YAML: the message with its line (and column).
fn yaml_error(e: &yaml::YamlError) -> AppSpecError {
    let hint = if e.message.contains("while scanning an alias") {
        " (a value starting with * must be quoted, e.g. pattern: \"*.txt\")"
    } else {
        ""
    };
    AppSpecError { message: format!("{e}{hint}") }
}

/// Unknown top-level keys, with a specific word for the usual mistakes.
fn check_top_level_keys(doc: &Value) -> Result<()> {
    for (key, _) in entries("", doc)? {
        if TOP_LEVEL_KEYS.contains(&key) {
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let why = if lower == "resources" {
            "not supported for on-premises deployments (it describes Lambda and ECS deployments)".to_string()
        } else if TOP_LEVEL_KEYS.contains(&lower.as_str()) {
            format!("unknown key (keys are lowercase: {lower})")
        } else {
            format!("unknown top-level key (expected one of: {})", TOP_LEVEL_KEYS.join(", "))
        };
        return Err(error(key, why));
    }
    Ok(())
}

/// `version: 0.0`: the float, the string "0.0", or 0 (CodeDeploy compares
/// numerically, so it accepts 0 too).
fn check_version(value: Option<&Value>) -> Result<()> {
    let Some(value) = value else { return Err(error("version", "missing (write version: 0.0)")) };
    let ok = match value {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s == "0.0",
        _ => false,
    };
    if ok { Ok(()) } else { Err(error("version", format!("{} is not supported (write version: 0.0)", show(value)))) }
}

/// `os: linux`; `windows` refused with the reason.
fn check_os(value: Option<&Value>) -> Result<()> {
    let Some(value) = value else { return Err(error("os", "missing (write os: linux)")) };
    match value.as_str() {
        Some("linux") => Ok(()),
        Some("windows") => Err(error("os", "\"windows\" is not supported: edgedeploy-agent runs on Linux only")),
        _ => Err(error("os", format!("{} is not supported (write os: linux)", show(value)))),
    }
}

/// `files` (null: none).
fn parse_files(value: Option<&Value>) -> Result<Vec<FileMapping>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let list = as_list("files", value)?;
    list.iter().enumerate().map(|(i, entry)| parse_file_mapping(&index_path("files", i), entry)).collect()
}

fn parse_file_mapping(path: &str, value: &Value) -> Result<FileMapping> {
    let fields = Fields::new(path, value, &["source", "destination"])?;
    let source_path = fields.path_of("source");
    let source = revision_path(&source_path, as_str(&source_path, fields.require("source")?)?)?;
    let destination_path = fields.path_of("destination");
    let destination = absolute_path(&destination_path, as_str(&destination_path, fields.require("destination")?)?)?;
    Ok(FileMapping { source, destination })
}

/// `DISALLOW`, `OVERWRITE` or `RETAIN`, in capitals as documented.
fn parse_file_exists_behavior(value: &Value) -> Result<FileExistsBehavior> {
    let path = "file_exists_behavior";
    match as_str(path, value)? {
        "DISALLOW" => Ok(FileExistsBehavior::Disallow),
        "OVERWRITE" => Ok(FileExistsBehavior::Overwrite),
        "RETAIN" => Ok(FileExistsBehavior::Retain),
        other => {
            let upper = other.to_ascii_uppercase();
            let hint = if ["DISALLOW", "OVERWRITE", "RETAIN"].contains(&upper.as_str()) {
                format!(" (write it in capitals: {upper})")
            } else {
                String::new()
            };
            Err(error(path, format!("{} is not DISALLOW, OVERWRITE or RETAIN{hint}", quote(other))))
        }
    }
}
