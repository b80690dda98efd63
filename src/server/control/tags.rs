//! Tags (`[{Key, Value}]`) and on-premises tag filters
//! (`[{Key, Value, Type}]`): parsing with the model's exceptions, and the
//! pure matching rules deployment groups select instances by.

use serde_json::{Value, json};

use super::validate::{opt_array, type_error};
use crate::server::api::ApiError;

/// A tag as stored: key and value.
pub type Tag = (String, String);

/// Longest tag key (AWS: 128).
pub const MAX_TAG_KEY: usize = 128;
/// Longest tag value (AWS: 256).
pub const MAX_TAG_VALUE: usize = 256;
/// Most tag groups in an `onPremisesTagSetList` (TagSetListLimitExceededException).
pub const MAX_TAG_SET_GROUPS: usize = 3;

/// The three `TagFilterType` values.
pub const TAG_FILTER_TYPES: [&str; 3] = ["KEY_ONLY", "VALUE_ONLY", "KEY_AND_VALUE"];

/// The tag list in `field`, if given. Each tag needs a non-empty `Key` and a
/// `Value` (which may be empty); anything else is `invalid`.
pub fn parse_tags(input: &Value, field: &str, invalid: &str) -> Result<Option<Vec<Tag>>, ApiError> {
    let Some(items) = opt_array(input, field)? else { return Ok(None) };
    items.iter().map(|item| parse_tag(item, field, invalid)).collect::<Result<Vec<_>, _>>().map(Some)
}

fn parse_tag(item: &Value, field: &str, invalid: &str) -> Result<Tag, ApiError> {
    if !item.is_object() {
        return Err(type_error(field, item, "a list of {Key, Value} tags"));
    }
    let key = tag_part(item, "Key", field, invalid)?.filter(|k| !k.is_empty()).ok_or_else(|| {
        ApiError::client(invalid, format!("{field}: tag {item} has no Key; a tag needs a non-empty Key"))
    })?;
    let value = tag_part(item, "Value", field, invalid)?
        .ok_or_else(|| ApiError::client(invalid, format!("{field}: tag {item} has no Value; a tag needs a Value")))?;
    Ok((key, value))
}

/// `Key` or `Value` of a tag or filter, length-checked.
fn tag_part(item: &Value, part: &str, field: &str, invalid: &str) -> Result<Option<String>, ApiError> {
    let text = match item.get(part) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => return Err(type_error(&format!("{field}.{part}"), other, "a string")),
    };
    check_tag_text(part, text).map_err(|e| ApiError::client(invalid, format!("{field}: {e}")))?;
    Ok(Some(text.clone()))
}

/// CodeDeploy's constraints on a tag's `Key` (`part` "Key", at most
/// [`MAX_TAG_KEY`] characters) or `Value` (at most [`MAX_TAG_VALUE`]):
/// no control characters (they would forge lines in logs and listings).
/// Whether a Key may be empty is the caller's rule.
pub fn check_tag_text(part: &str, text: &str) -> Result<(), String> {
    let max = if part == "Key" { MAX_TAG_KEY } else { MAX_TAG_VALUE };
    let shown: String = text.chars().take(64).collect::<String>().escape_default().to_string();
    if text.chars().count() > max {
        return Err(format!("tag {part} \"{shown}...\" is longer than {max} characters"));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("tag {part} \"{shown}\" contains the control character {:?}", c));
    }
    Ok(())
}

/// Tags as the model's `TagList`.
pub fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|(k, v)| json!({ "Key": k, "Value": v })).collect())
}

/// A `TagFilterList` (`items`, from `field`), normalized: `Type` filled in
/// when it was left out (Key and Value: KEY_AND_VALUE; Key: KEY_ONLY;
/// Value: VALUE_ONLY). A filter whose Type needs a Key or Value it lacks
/// is `invalid`.
pub fn parse_tag_filters(items: &[Value], field: &str, invalid: &str) -> Result<Vec<Value>, ApiError> {
    items.iter().map(|item| parse_tag_filter(item, field, invalid)).collect()
}

fn parse_tag_filter(item: &Value, field: &str, invalid: &str) -> Result<Value, ApiError> {
    if !item.is_object() {
        return Err(type_error(field, item, "a list of {Key, Value, Type} tag filters"));
    }
    let key = tag_part(item, "Key", field, invalid)?.filter(|k| !k.is_empty());
    let value = tag_part(item, "Value", field, invalid)?;
    let kind = match item.get("Type") {
        None | Some(Value::Null) => match (&key, &value) {
            (Some(_), Some(_)) => "KEY_AND_VALUE",
            (Some(_), None) => "KEY_ONLY",
            (None, Some(_)) => "VALUE_ONLY",
            (None, None) => {
                return Err(ApiError::client(invalid, format!("{field}: tag filter {item} has neither Key nor Value")));
            }
        },
        Some(Value::String(t)) if TAG_FILTER_TYPES.contains(&t.as_str()) => t.as_str(),
        Some(other) => {
            return Err(ApiError::client(
                invalid,
                format!("{field}: tag filter Type {other} is not one of {}", TAG_FILTER_TYPES.join(", ")),
            ));
        }
    };
    let needs_key = kind != "VALUE_ONLY";
    let needs_value = kind != "KEY_ONLY";
    if (needs_key && key.is_none()) || (needs_value && value.is_none()) {
        let what = if needs_key && key.is_none() { "a non-empty Key" } else { "a Value" };
        return Err(ApiError::client(invalid, format!("{field}: tag filter {item} of Type {kind} needs {what}")));
    }
    let mut filter = json!({ "Type": kind });
    if let Some(key) = key {
        filter["Key"] = json!(key);
    }
    if let Some(value) = value {
        filter["Value"] = json!(value);
    }
    Ok(filter)
}

/// An `onPremisesTagSet` structure, normalized; at most
/// [`MAX_TAG_SET_GROUPS`] groups.
pub fn parse_tag_set(set: &Value, field: &str, invalid: &str) -> Result<Value, ApiError> {
    let list_field = format!("{field}.onPremisesTagSetList");
    let groups = opt_array(set, "onPremisesTagSetList")?.map(Vec::as_slice).unwrap_or_default();
    if groups.len() > MAX_TAG_SET_GROUPS {
        return Err(ApiError::client(
            "TagSetListLimitExceededException",
            format!("{list_field} has {} tag groups; at most {MAX_TAG_SET_GROUPS} are allowed", groups.len()),
        ));
    }
    let mut parsed = Vec::with_capacity(groups.len());
    for group in groups {
        let filters = group.as_array().ok_or_else(|| type_error(&list_field, group, "a list of tag filter lists"))?;
        parsed.push(Value::Array(parse_tag_filters(filters, &list_field, invalid)?));
    }
    Ok(json!({ "onPremisesTagSetList": parsed }))
}

/// Whether an instance with `tags` matches one tag filter.
pub fn tag_filter_matches(filter: &Value, tags: &[Tag]) -> bool {
    let key = filter.get("Key").and_then(Value::as_str);
    let value = filter.get("Value").and_then(Value::as_str);
    let kind = filter.get("Type").and_then(Value::as_str).unwrap_or(match (key, value) {
        (Some(_), None) => "KEY_ONLY",
        (None, Some(_)) => "VALUE_ONLY",
        _ => "KEY_AND_VALUE",
    });
    tags.iter().any(|(k, v)| match kind {
        "KEY_ONLY" => key == Some(k.as_str()),
        "VALUE_ONLY" => value == Some(v.as_str()),
        _ => key == Some(k.as_str()) && value == Some(v.as_str()),
    })
}

/// Whether an instance with `tags` matches any filter of `filters`.
pub fn any_filter_matches(filters: &[Value], tags: &[Tag]) -> bool {
    filters.iter().any(|f| tag_filter_matches(f, tags))
}

/// Whether a deployment group (its `DeploymentGroupInfo` document) selects
/// an instance with `tags`: with `onPremisesInstanceTagFilters`, any filter
/// matching is enough; with `onPremisesTagSet`, every tag group needs one
/// of its filters to match. A group with neither selects nothing.
pub fn group_matches_instance(group_doc: &Value, tags: &[Tag]) -> bool {
    let filters = group_doc.get("onPremisesInstanceTagFilters").and_then(Value::as_array);
    if let Some(filters) = filters.filter(|f| !f.is_empty()) {
        return any_filter_matches(filters, tags);
    }
    let groups = group_doc.pointer("/onPremisesTagSet/onPremisesTagSetList").and_then(Value::as_array);
    match groups.filter(|g| !g.is_empty()) {
        Some(groups) => {
            groups.iter().all(|group| group.as_array().is_some_and(|filters| any_filter_matches(filters, tags)))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_and_values_follow_codedeploy_constraints() {
        assert!(check_tag_text("Key", &"k".repeat(128)).is_ok());
        assert!(check_tag_text("Key", &"k".repeat(129)).unwrap_err().contains("longer than 128"));
        assert!(check_tag_text("Value", &"v".repeat(256)).is_ok());
        assert!(check_tag_text("Value", "").is_ok());
        assert!(check_tag_text("Value", &"é".repeat(256)).is_ok(), "characters, not bytes");
        assert!(check_tag_text("Value", &"v".repeat(257)).unwrap_err().contains("longer than 256"));
        for bad in ["a\nb", "a\rb", "\u{1b}[31m", "a\u{0}b", "a\u{7f}", "\u{85}"] {
            let error = check_tag_text("Value", bad).unwrap_err();
            assert!(error.contains("control character") && !error.contains('\n'), "{error}");
        }
        assert!(check_tag_text("Key", "env: prod/eu-west_1 +@=.").is_ok());
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_filter_type_compares_what_it_names() {
        let t = tags(&[("env", "prod"), ("role", "web")]);
        assert!(tag_filter_matches(&json!({"Key": "env", "Type": "KEY_ONLY"}), &t));
        assert!(tag_filter_matches(&json!({"Key": "env", "Value": "other", "Type": "KEY_ONLY"}), &t));
        assert!(!tag_filter_matches(&json!({"Key": "zone", "Type": "KEY_ONLY"}), &t));
        assert!(tag_filter_matches(&json!({"Value": "web", "Type": "VALUE_ONLY"}), &t));
        assert!(!tag_filter_matches(&json!({"Value": "env", "Type": "VALUE_ONLY"}), &t));
        assert!(tag_filter_matches(&json!({"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}), &t));
        assert!(!tag_filter_matches(&json!({"Key": "env", "Value": "web", "Type": "KEY_AND_VALUE"}), &t));
        assert!(!tag_filter_matches(&json!({"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}), &[]));
    }

    #[test]
    fn tag_filters_of_a_group_are_or_ed() {
        let group = json!({"onPremisesInstanceTagFilters": [
            {"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"},
            {"Key": "canary", "Type": "KEY_ONLY"},
        ]});
        assert!(group_matches_instance(&group, &tags(&[("env", "prod")])));
        assert!(group_matches_instance(&group, &tags(&[("canary", "")])));
        assert!(!group_matches_instance(&group, &tags(&[("env", "dev")])));
    }

    #[test]
    fn tag_set_groups_are_and_ed_and_filters_within_a_group_or_ed() {
        let group = json!({"onPremisesTagSet": {"onPremisesTagSetList": [
            [{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}, {"Key": "env", "Value": "staging", "Type": "KEY_AND_VALUE"}],
            [{"Key": "role", "Value": "web", "Type": "KEY_AND_VALUE"}],
        ]}});
        assert!(group_matches_instance(&group, &tags(&[("env", "prod"), ("role", "web")])));
        assert!(group_matches_instance(&group, &tags(&[("env", "staging"), ("role", "web")])));
        assert!(!group_matches_instance(&group, &tags(&[("env", "prod")])));
        assert!(!group_matches_instance(&group, &tags(&[("role", "web"), ("env", "dev")])));
    }

    #[test]
    fn a_group_without_filters_selects_nothing() {
        let t = tags(&[("env", "prod")]);
        assert!(!group_matches_instance(&json!({}), &t));
        assert!(!group_matches_instance(&json!({"onPremisesInstanceTagFilters": []}), &t));
        assert!(!group_matches_instance(&json!({"onPremisesTagSet": {"onPremisesTagSetList": []}}), &t));
    }

    #[test]
    fn filters_are_normalized_and_checked() {
        let parsed = parse_tag_filters(
            &[json!({"Key": "env", "Value": "prod"}), json!({"Key": "x"})],
            "f",
            "InvalidTagException",
        )
        .unwrap();
        assert_eq!(parsed[0]["Type"], "KEY_AND_VALUE");
        assert_eq!(parsed[1]["Type"], "KEY_ONLY");
        let err = parse_tag_filters(&[json!({"Key": "env", "Type": "KEY_AND_VALUE"})], "f", "InvalidTagException")
            .unwrap_err();
        assert_eq!(err.type_, "InvalidTagException");
        let err =
            parse_tag_filters(&[json!({"Key": "env", "Type": "BOTH"})], "f", "InvalidTagFilterException").unwrap_err();
        assert_eq!(err.type_, "InvalidTagFilterException");
    }

    #[test]
    fn a_tag_set_has_at_most_three_groups() {
        let one = json!([{"Key": "a", "Value": "b", "Type": "KEY_AND_VALUE"}]);
        let set = json!({"onPremisesTagSetList": [one, one, one, one]});
        assert_eq!(
            parse_tag_set(&set, "onPremisesTagSet", "InvalidTagException").unwrap_err().type_,
            "TagSetListLimitExceededException"
        );
    }

    #[test]
    fn tags_need_a_key_and_a_value() {
        let bad = json!({"tags": [{"Key": "", "Value": "x"}]});
        assert_eq!(parse_tags(&bad, "tags", "InvalidTagException").unwrap_err().type_, "InvalidTagException");
        let bad = json!({"tags": [{"Key": "k"}]});
        assert_eq!(parse_tags(&bad, "tags", "InvalidTagException").unwrap_err().type_, "InvalidTagException");
        let ok = json!({"tags": [{"Key": "k", "Value": ""}]});
        assert_eq!(parse_tags(&ok, "tags", "InvalidTagException").unwrap().unwrap(), tags(&[("k", "")]));
    }
}
