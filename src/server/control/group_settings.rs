//! The settings of a deployment group, as CreateDeploymentGroup and
//! UpdateDeploymentGroup give them: checked one field at a time and written
//! into the group's `DeploymentGroupInfo` document. What needs EC2, Auto
//! Scaling, load balancers or ECS is refused with the model's exception for
//! that field, since this server only deploys to on-premises instances.

use serde_json::{Value, json};

use super::tags::{parse_tag_filters, parse_tag_set, parse_tags, tags_json};
use super::validate::{opt_array, opt_enum, opt_object, opt_str, type_error};
use crate::server::api::ApiError;
use crate::server::triggers::message::is_webhook;

/// Most triggers of one group (AWS: 10).
pub const MAX_TRIGGERS: usize = 10;
/// Most alarms of one group (AWS documents 10 per alarm configuration).
pub const MAX_ALARMS: usize = 10;

const TRIGGER_EVENTS: [&str; 10] = [
    "DeploymentStart",
    "DeploymentSuccess",
    "DeploymentFailure",
    "DeploymentStop",
    "DeploymentRollback",
    "DeploymentReady",
    "InstanceStart",
    "InstanceSuccess",
    "InstanceFailure",
    "InstanceReady",
];
const ROLLBACK_EVENTS: [&str; 3] = ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM", "DEPLOYMENT_STOP_ON_REQUEST"];

/// Fields of a new group's document that a caller may leave out.
pub fn defaults() -> Value {
    json!({
        "onPremisesInstanceTagFilters": [],
        "ec2TagFilters": [],
        "autoScalingGroups": [],
        "triggerConfigurations": [],
        "deploymentStyle": { "deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL" },
        "outdatedInstancesStrategy": "UPDATE",
        "computePlatform": "Server",
        "terminationHookEnabled": false,
    })
}

/// Checks each setting present in `input` and writes it into `doc`; then
/// checks that tag filters and a tag set are not both in use.
pub fn apply(doc: &mut Value, input: &Value) -> Result<(), ApiError> {
    refuse_unsupported(input)?;
    if let Some(filters) = opt_array(input, "onPremisesInstanceTagFilters")? {
        doc["onPremisesInstanceTagFilters"] =
            Value::Array(parse_tag_filters(filters, "onPremisesInstanceTagFilters", "InvalidTagException")?);
    }
    if let Some(set) = opt_object(input, "onPremisesTagSet")? {
        doc["onPremisesTagSet"] = parse_tag_set(set, "onPremisesTagSet", "InvalidTagException")?;
    }
    check_tag_combination(doc)?;
    if let Some(role) = opt_str(input, "serviceRoleArn")? {
        doc["serviceRoleArn"] = json!(check_role(role)?);
    }
    if let Some(triggers) = opt_array(input, "triggerConfigurations")? {
        doc["triggerConfigurations"] = triggers_json(triggers)?;
    }
    if let Some(alarms) = opt_object(input, "alarmConfiguration")? {
        doc["alarmConfiguration"] = alarm_configuration(alarms)?;
    }
    if let Some(rollback) = opt_object(input, "autoRollbackConfiguration")? {
        doc["autoRollbackConfiguration"] = auto_rollback(rollback)?;
    }
    if let Some(style) = opt_object(input, "deploymentStyle")? {
        doc["deploymentStyle"] = deployment_style(style)?;
    }
    let strategies = ["UPDATE", "IGNORE"];
    if let Some(strategy) = opt_enum(input, "outdatedInstancesStrategy", &strategies, "InvalidInputException")? {
        doc["outdatedInstancesStrategy"] = json!(strategy);
    }
    match input.get("terminationHookEnabled") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => doc["terminationHookEnabled"] = json!(b),
        Some(other) => return Err(type_error("terminationHookEnabled", other, "a boolean")),
    }
    Ok(())
}

/// The group's own tags (CreateDeploymentGroup `tags`), kept in the document.
pub fn apply_tags(doc: &mut Value, input: &Value) -> Result<(), ApiError> {
    if let Some(tags) = parse_tags(input, "tags", "InvalidTagsToAddException")? {
        doc["tags"] = tags_json(&tags);
    }
    Ok(())
}

/// `serviceRoleArn`: any non-empty string (there is no IAM here).
pub fn check_role(role: &str) -> Result<&str, ApiError> {
    if role.trim().is_empty() {
        return Err(ApiError::client("RoleRequiredException", "serviceRoleArn is required"));
    }
    if role.len() > 2048 {
        return Err(ApiError::client("InvalidRoleException", "serviceRoleArn is longer than 2048 characters"));
    }
    Ok(role)
}

fn non_empty(input: &Value, field: &str) -> bool {
    match input.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
        Some(_) => true,
    }
}

/// EC2, Auto Scaling, load balancer, blue/green and ECS settings: refused
/// unless empty.
fn refuse_unsupported(input: &Value) -> Result<(), ApiError> {
    const UNSUPPORTED: [(&str, &str); 7] = [
        ("ec2TagFilters", "InvalidEC2TagException"),
        ("ec2TagSet", "InvalidEC2TagCombinationException"),
        ("autoScalingGroups", "InvalidAutoScalingGroupException"),
        ("loadBalancerInfo", "InvalidLoadBalancerInfoException"),
        ("blueGreenDeploymentConfiguration", "InvalidBlueGreenDeploymentConfigurationException"),
        ("ecsServices", "InvalidECSServiceException"),
        ("ec2DeploymentOptions", "InvalidInputException"),
    ];
    for (field, exception) in UNSUPPORTED {
        if non_empty(input, field) {
            return Err(ApiError::client(
                exception,
                format!(
                    "{field} is not supported: this server deploys to on-premises instances only; select them with onPremisesInstanceTagFilters or onPremisesTagSet"
                ),
            ));
        }
    }
    Ok(())
}

/// Tag filters and a tag set cannot both select instances.
fn check_tag_combination(doc: &Value) -> Result<(), ApiError> {
    let filters = non_empty(doc, "onPremisesInstanceTagFilters");
    let set = doc
        .pointer("/onPremisesTagSet/onPremisesTagSetList")
        .and_then(Value::as_array)
        .is_some_and(|groups| !groups.is_empty());
    if filters && set {
        return Err(ApiError::client(
            "InvalidOnPremisesTagCombinationException",
            "onPremisesInstanceTagFilters and onPremisesTagSet cannot both be used; send the one you replace as empty",
        ));
    }
    Ok(())
}

/// Longest triggerName kept (it appears in messages and logs).
const MAX_TRIGGER_NAME: usize = 256;

fn invalid_trigger(message: String) -> ApiError {
    ApiError::client("InvalidTriggerConfigException", message)
}

fn triggers_json(triggers: &[Value]) -> Result<Value, ApiError> {
    if triggers.len() > MAX_TRIGGERS {
        return Err(ApiError::client(
            "TriggerTargetsLimitExceededException",
            format!("triggerConfigurations has {} triggers; at most {MAX_TRIGGERS} are allowed", triggers.len()),
        ));
    }
    let mut out = Vec::with_capacity(triggers.len());
    for trigger in triggers {
        if !trigger.is_object() {
            return Err(type_error("triggerConfigurations", trigger, "a list of trigger configurations"));
        }
        let name = opt_str(trigger, "triggerName")?.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| invalid_trigger(format!("trigger {trigger} has no triggerName")))?;
        if name.chars().any(char::is_control) || name.chars().count() > MAX_TRIGGER_NAME {
            return Err(invalid_trigger(format!(
                "triggerName {name:?} must be 1 to {MAX_TRIGGER_NAME} characters without control characters"
            )));
        }
        let target = opt_str(trigger, "triggerTargetArn")?.filter(|t| !t.is_empty());
        let target = target.ok_or_else(|| invalid_trigger(format!("trigger {name:?} has no triggerTargetArn")))?;
        check_trigger_target(name, target)?;
        let events = enum_list(trigger, "triggerEvents", &TRIGGER_EVENTS, "InvalidTriggerConfigException")?;
        out.push(json!({ "triggerName": name, "triggerTargetArn": target, "triggerEvents": events }));
    }
    Ok(Value::Array(out))
}

/// An http(s) `triggerTargetArn` is a webhook and must be a usable URL;
/// anything else (an SNS topic ARN) is kept for compatibility but never
/// delivered to, which is logged.
fn check_trigger_target(name: &str, target: &str) -> Result<(), ApiError> {
    if !is_webhook(target) {
        log::warn!(
            "trigger {name:?}: triggerTargetArn {target:?} is not an http(s) URL; it is stored but this server \
             delivers triggers only to webhooks, so it will never be notified"
        );
        return Ok(());
    }
    let rest = target.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let bad = host.is_empty()
        || host.contains('@')
        || target.len() > 2048
        || target.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(invalid_trigger(format!(
            "trigger {name:?}: triggerTargetArn {target:?} is not a usable webhook URL (http://host[:port]/path or \
             https://..., no credentials, no spaces, at most 2048 characters)"
        )));
    }
    Ok(())
}

/// A list field whose items are each one of `allowed`.
fn enum_list(input: &Value, field: &str, allowed: &[&str], exception: &str) -> Result<Vec<String>, ApiError> {
    let items = opt_array(input, field)?.map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(s) if allowed.contains(&s) => Ok(s.to_string()),
            _ => Err(ApiError::client(exception, format!("{field}: {item} is not one of {}", allowed.join(", ")))),
        })
        .collect()
}

fn optional_bool(input: &Value, field: &str) -> Result<bool, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(type_error(field, other, "a boolean")),
    }
}

fn alarm_configuration(alarms: &Value) -> Result<Value, ApiError> {
    let list = opt_array(alarms, "alarms")?.map(Vec::as_slice).unwrap_or_default();
    if list.len() > MAX_ALARMS {
        return Err(ApiError::client(
            "AlarmsLimitExceededException",
            format!("alarmConfiguration.alarms has {} alarms; at most {MAX_ALARMS} are allowed", list.len()),
        ));
    }
    let mut names: Vec<Value> = Vec::with_capacity(list.len());
    for alarm in list {
        let name = alarm.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 255);
        let name = name.ok_or_else(|| {
            ApiError::client(
                "InvalidAlarmConfigException",
                format!("alarm {alarm} needs a name of 1 to 255 characters"),
            )
        })?;
        if names.iter().any(|n| n["name"] == name) {
            return Err(ApiError::client("InvalidAlarmConfigException", format!("alarm {name:?} is listed twice")));
        }
        names.push(json!({ "name": name }));
    }
    Ok(json!({
        "enabled": optional_bool(alarms, "enabled")?,
        "ignorePollAlarmFailure": optional_bool(alarms, "ignorePollAlarmFailure")?,
        "alarms": names,
    }))
}

fn auto_rollback(rollback: &Value) -> Result<Value, ApiError> {
    let events = enum_list(rollback, "events", &ROLLBACK_EVENTS, "InvalidAutoRollbackConfigException")?;
    Ok(json!({ "enabled": optional_bool(rollback, "enabled")?, "events": events }))
}

fn deployment_style(style: &Value) -> Result<Value, ApiError> {
    let exception = "InvalidDeploymentStyleException";
    let kind = opt_enum(style, "deploymentType", &["IN_PLACE", "BLUE_GREEN"], exception)?.unwrap_or("IN_PLACE");
    let options = ["WITH_TRAFFIC_CONTROL", "WITHOUT_TRAFFIC_CONTROL"];
    let option = opt_enum(style, "deploymentOption", &options, exception)?.unwrap_or("WITHOUT_TRAFFIC_CONTROL");
    if kind != "IN_PLACE" || option != "WITHOUT_TRAFFIC_CONTROL" {
        return Err(ApiError::client(
            exception,
            format!(
                "deploymentStyle {kind}/{option} is not supported: only IN_PLACE deployments WITHOUT_TRAFFIC_CONTROL"
            ),
        ));
    }
    Ok(json!({ "deploymentType": kind, "deploymentOption": option }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(input: Value) -> Result<Value, ApiError> {
        let mut doc = defaults();
        apply(&mut doc, &input).map(|()| doc)
    }

    #[test]
    fn settings_are_stored_normalized() {
        let doc = applied(json!({
            "serviceRoleArn": "arn:aws:iam::1:role/x",
            "onPremisesInstanceTagFilters": [{"Key": "env", "Value": "prod"}],
            "triggerConfigurations": [{"triggerName": "t", "triggerTargetArn": "arn:t", "triggerEvents": ["DeploymentSuccess"]}],
            "autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_FAILURE"]},
            "alarmConfiguration": {"enabled": true, "alarms": [{"name": "a"}]},
            "outdatedInstancesStrategy": "IGNORE",
        }))
        .unwrap();
        assert_eq!(doc["onPremisesInstanceTagFilters"][0]["Type"], "KEY_AND_VALUE");
        assert_eq!(doc["triggerConfigurations"][0]["triggerEvents"][0], "DeploymentSuccess");
        assert_eq!(doc["autoRollbackConfiguration"]["enabled"], true);
        assert_eq!(doc["alarmConfiguration"]["ignorePollAlarmFailure"], false);
        assert_eq!(doc["outdatedInstancesStrategy"], "IGNORE");
        assert_eq!(doc["deploymentStyle"]["deploymentType"], "IN_PLACE");
    }

    #[test]
    fn each_invalid_setting_has_its_exception() {
        let cases = [
            (json!({"ec2TagFilters": [{"Key": "a"}]}), "InvalidEC2TagException"),
            (json!({"autoScalingGroups": ["asg"]}), "InvalidAutoScalingGroupException"),
            (
                json!({"triggerConfigurations": [{"triggerName": "t", "triggerTargetArn": "a", "triggerEvents": ["Nope"]}]}),
                "InvalidTriggerConfigException",
            ),
            (
                json!({"triggerConfigurations": [{"triggerName": "t", "triggerTargetArn": "https:///x", "triggerEvents": []}]}),
                "InvalidTriggerConfigException",
            ),
            (
                json!({"triggerConfigurations": [{"triggerName": "t", "triggerTargetArn": "https://h/\u{1b}[2J", "triggerEvents": []}]}),
                "InvalidTriggerConfigException",
            ),
            (
                json!({"triggerConfigurations": [{"triggerName": "t\nforged", "triggerTargetArn": "https://h/", "triggerEvents": []}]}),
                "InvalidTriggerConfigException",
            ),
            (json!({"autoRollbackConfiguration": {"events": ["SOMETIMES"]}}), "InvalidAutoRollbackConfigException"),
            (json!({"deploymentStyle": {"deploymentType": "BLUE_GREEN"}}), "InvalidDeploymentStyleException"),
            (json!({"alarmConfiguration": {"alarms": [{"name": "a"}, {"name": "a"}]}}), "InvalidAlarmConfigException"),
            (json!({"onPremisesInstanceTagFilters": [{"Type": "KEY_ONLY"}]}), "InvalidTagException"),
            (
                json!({"onPremisesInstanceTagFilters": [{"Key": "a", "Type": "KEY_ONLY"}],
                       "onPremisesTagSet": {"onPremisesTagSetList": [[{"Key": "b", "Type": "KEY_ONLY"}]]}}),
                "InvalidOnPremisesTagCombinationException",
            ),
            (json!({"serviceRoleArn": ""}), "RoleRequiredException"),
        ];
        for (input, exception) in cases {
            assert_eq!(applied(input.clone()).unwrap_err().type_, exception, "{input}");
        }
    }

    #[test]
    fn switching_from_filters_to_a_tag_set_needs_the_filters_emptied() {
        let mut doc = applied(json!({"onPremisesInstanceTagFilters": [{"Key": "a", "Type": "KEY_ONLY"}]})).unwrap();
        let set = json!({"onPremisesTagSet": {"onPremisesTagSetList": [[{"Key": "b", "Type": "KEY_ONLY"}]]}});
        assert_eq!(apply(&mut doc.clone(), &set).unwrap_err().type_, "InvalidOnPremisesTagCombinationException");
        let mut both = set.clone();
        both["onPremisesInstanceTagFilters"] = json!([]);
        apply(&mut doc, &both).unwrap();
        assert_eq!(doc["onPremisesTagSet"]["onPremisesTagSetList"][0][0]["Key"], "b");
    }
}
