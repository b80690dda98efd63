//! The `hooks` section: lifecycle event name -> scripts.

use std::time::Duration;

use serde_yaml::Value;

use super::paths::script_location;
use super::value::{Fields, Result, as_list, as_str, entries, error, id_or_name, index_path, key_path, quote, show};
use super::{LifecycleEvent, Script};

/// Default and maximum script timeout, and the most the timeouts written
/// for one event may add up to: CodeDeploy's one hour per lifecycle event.
pub(super) const MAX_EVENT_SECONDS: u64 = 3600;

/// Events CodeDeploy reserves for itself that are not [`LifecycleEvent`]s.
const RESERVED_TRAFFIC_EVENTS: [&str; 2] = ["BlockTraffic", "AllowTraffic"];

/// Parses `hooks` (null: no hooks), keeping the order written.
pub(super) fn parse_hooks(value: Option<&Value>) -> Result<Vec<(LifecycleEvent, Vec<Script>)>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    if value.is_sequence() {
        return Err(error(
            "hooks",
            "expected a map from lifecycle event to scripts, found a list (the list form is for Lambda and ECS deployments)",
        ));
    }
    let mut hooks = Vec::new();
    for (name, scripts) in entries("hooks", value)? {
        let event = parse_event(name)?;
        let path = key_path("hooks", name);
        let scripts = parse_scripts(&path, scripts)?;
        match event {
            Some(event) if !event.is_agent_event() => hooks.push((event, scripts)),
            _ if scripts.is_empty() => {}
            _ => return Err(error(&path, "this event is reserved for the agent and cannot run scripts")),
        }
    }
    Ok(hooks)
}

/// A lifecycle event name, exactly as CodeDeploy spells it; `None` for the
/// reserved traffic events, which have no [`LifecycleEvent`].
fn parse_event(name: &str) -> Result<Option<LifecycleEvent>> {
    if let Some(event) = LifecycleEvent::from_name(name) {
        return Ok(Some(event));
    }
    if RESERVED_TRAFFIC_EVENTS.contains(&name) {
        return Ok(None);
    }
    let hint = match closest_event(name) {
        Some(event) => format!(" (did you mean {:?}?)", event.name()),
        None => {
            let names: Vec<&str> =
                LifecycleEvent::ALL.iter().filter(|e| !e.is_agent_event()).map(|e| e.name()).collect();
            format!(" (expected one of: {})", names.join(", "))
        }
    };
    Err(error("hooks", format!("unknown lifecycle event {}{hint}", quote(name))))
}

/// The scriptable event nearest to `name` by edit distance, ignoring case,
/// when it is near enough to be a plausible typo.
fn closest_event(name: &str) -> Option<LifecycleEvent> {
    let lower = name.to_ascii_lowercase();
    let (distance, event) = LifecycleEvent::ALL
        .iter()
        .filter(|e| !e.is_agent_event())
        .map(|e| (edit_distance(&lower, &e.name().to_ascii_lowercase()), *e))
        .min_by_key(|(d, _)| *d)?;
    (distance <= 3.max(name.len() / 4)).then_some(event)
}

/// Levenshtein distance (inputs are short; names of at most 64 chars count).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The scripts of one event (null: none); the timeouts written for the
/// event may add up to at most [`MAX_EVENT_SECONDS`].
fn parse_scripts(path: &str, value: &Value) -> Result<Vec<Script>> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let list = as_list(path, value)?;
    let mut scripts = Vec::with_capacity(list.len());
    let mut written_total = 0u64;
    for (i, item) in list.iter().enumerate() {
        let (script, written) = parse_script(&index_path(path, i), item)?;
        written_total += written.unwrap_or(0);
        scripts.push(script);
    }
    if written_total > MAX_EVENT_SECONDS {
        return Err(error(
            path,
            format!(
                "the timeouts add up to {written_total} s, more than the {MAX_EVENT_SECONDS} s CodeDeploy allows for one lifecycle event"
            ),
        ));
    }
    Ok(scripts)
}

/// One script, and the timeout when one was written.
fn parse_script(path: &str, value: &Value) -> Result<(Script, Option<u64>)> {
    if value.is_string() {
        return Err(error(
            path,
            format!("expected a map with location, found {} (write - location: ...)", show(value)),
        ));
    }
    let fields = Fields::new(path, value, &["location", "timeout", "runas"])?;
    let location_path = fields.path_of("location");
    let location = script_location(&location_path, as_str(&location_path, fields.require("location")?)?)?;
    let timeout = fields.get("timeout").map(|v| parse_timeout(&fields.path_of("timeout"), v)).transpose()?;
    let runas = fields.get("runas").map(|v| parse_runas(&fields.path_of("runas"), v)).transpose()?;
    let seconds = timeout.unwrap_or(MAX_EVENT_SECONDS);
    Ok((Script { location, timeout: Duration::from_secs(seconds), runas }, timeout))
}

/// Whole seconds, 1 to 3600; an integer or a string of digits.
fn parse_timeout(path: &str, value: &Value) -> Result<u64> {
    let seconds = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    match seconds {
        Some(0) => Err(error(path, "0 is not a timeout: give at least 1 second")),
        Some(s) if s > MAX_EVENT_SECONDS => Err(error(
            path,
            format!("{s} is more than {MAX_EVENT_SECONDS} seconds, the most CodeDeploy allows for a lifecycle event"),
        )),
        Some(s) => Ok(s),
        None => Err(error(path, format!("{} is not a whole number of seconds", show(value)))),
    }
}

/// A user name (trimmed, as CodeDeploy does) or numeric id (not one that
/// setuid(2) cannot take: -1, 4294967295, beyond 32 bits).
fn parse_runas(path: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => id_or_name(path, &Value::String(s.trim().to_string())),
        other => id_or_name(path, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest_event("BeforeInstal"), Some(LifecycleEvent::BeforeInstall));
        assert_eq!(closest_event("afterinstall"), Some(LifecycleEvent::AfterInstall));
        assert_eq!(closest_event("ValidateServices"), Some(LifecycleEvent::ValidateService));
        assert_eq!(closest_event("Deploy"), None);
        // Agent events are never suggested.
        assert_ne!(closest_event("Instal"), Some(LifecycleEvent::Install));
    }

    #[test]
    fn timeouts_accept_integers_and_digit_strings() {
        let v = |t: &str| serde_yaml::from_str::<Value>(t).expect("yaml");
        assert_eq!(parse_timeout("t", &v("180")).ok(), Some(180));
        assert_eq!(parse_timeout("t", &v("\"180\"")).ok(), Some(180));
        assert_eq!(parse_timeout("t", &v("3600")).ok(), Some(3600));
        assert!(parse_timeout("t", &v("3601")).is_err());
        assert!(parse_timeout("t", &v("0")).is_err());
        assert!(parse_timeout("t", &v("-5")).is_err());
        assert!(parse_timeout("t", &v("1.5")).is_err());
        assert!(parse_timeout("t", &v("1h")).is_err());
    }
}
