//! Trigger events: which triggers of a group an event fires, the message
//! each receives (CodeDeploy's notification format plus `eventId` and
//! `eventType`), and the `trigger_events` rows that carry them to the
//! delivery loop. Every function here runs inside the caller's
//! transaction, so an event is stored if and only if the change that
//! caused it is committed.

use rand::Rng;
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;

use crate::server::control::instances::ACCOUNT_ID;
use crate::server::orchestrator::records::{self, Deployment};

/// The region named in messages (the server's instance ARNs use the
/// instance's own region; messages name the server's).
pub const REGION: &str = "us-east-1";

/// A deployment event type of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentEvent {
    /// The deployment went from Created to InProgress.
    Start,
    /// It ended Succeeded.
    Success,
    /// It ended Failed.
    Failure,
    /// It ended Stopped.
    Stop,
    /// A rollback deployment was created for it.
    Rollback,
}

impl DeploymentEvent {
    /// The `TriggerEventType` name.
    pub fn name(self) -> &'static str {
        match self {
            DeploymentEvent::Start => "DeploymentStart",
            DeploymentEvent::Success => "DeploymentSuccess",
            DeploymentEvent::Failure => "DeploymentFailure",
            DeploymentEvent::Stop => "DeploymentStop",
            DeploymentEvent::Rollback => "DeploymentRollback",
        }
    }

    /// The event of a deployment ending with `status`.
    pub fn of_end(status: &str) -> Option<DeploymentEvent> {
        match status {
            "Succeeded" => Some(DeploymentEvent::Success),
            "Failed" => Some(DeploymentEvent::Failure),
            "Stopped" => Some(DeploymentEvent::Stop),
            _ => None,
        }
    }
}

/// The instance event of a target entering `status`.
pub fn instance_event(status: &str) -> Option<&'static str> {
    match status {
        "InProgress" => Some("InstanceStart"),
        "Succeeded" => Some("InstanceSuccess"),
        "Failed" => Some("InstanceFailure"),
        _ => None,
    }
}

/// A trigger of a group that delivers by webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `triggerName`.
    pub name: String,
    /// `triggerTargetArn`: an http or https URL.
    pub url: String,
}

/// True when a trigger target is delivered to (an http or https URL);
/// other targets (SNS topic ARNs) are stored but never delivered to.
pub fn is_webhook(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://")
}

/// The webhook triggers of group document `group` that fire on `event`.
pub fn webhooks_for(group: &Value, event: &str) -> Vec<Webhook> {
    let triggers = group.get("triggerConfigurations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    triggers
        .iter()
        .filter(|t| t["triggerEvents"].as_array().is_some_and(|events| events.iter().any(|e| e == event)))
        .filter_map(|t| {
            let url = t["triggerTargetArn"].as_str().filter(|u| is_webhook(u))?;
            Some(Webhook { name: t["triggerName"].as_str().unwrap_or_default().to_string(), url: url.to_string() })
        })
        .collect()
}

/// A timestamp as CodeDeploy's messages write it: epoch seconds with
/// milliseconds, as a string (`"1446744188.595"`).
pub fn message_time(millis: i64) -> String {
    format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
}

/// Epoch milliseconds of a wire timestamp (epoch seconds as a number).
fn millis_of(value: &Value) -> Option<i64> {
    value.as_f64().map(|s| (s * 1000.0).round() as i64)
}

/// The message of a deployment event (without the per-trigger fields).
pub fn deployment_message(deployment: &Deployment, overview: &Value) -> Map<String, Value> {
    let doc = &deployment.doc;
    let mut m = Map::new();
    m.insert("region".into(), json!(REGION));
    m.insert("accountId".into(), json!(ACCOUNT_ID));
    m.insert("applicationName".into(), json!(deployment.application_name));
    m.insert("deploymentId".into(), json!(deployment.id));
    m.insert("deploymentGroupName".into(), json!(deployment.group_name));
    m.insert("createTime".into(), json!(message_time(deployment.create_time)));
    if let Some(t) = millis_of(&doc["completeTime"]) {
        m.insert("completeTime".into(), json!(message_time(t)));
    }
    let counts: Map<String, Value> = ["Failed", "InProgress", "Pending", "Skipped", "Succeeded"]
        .iter()
        .map(|k| (k.to_string(), json!(overview[*k].as_i64().unwrap_or(0).to_string())))
        .collect();
    m.insert("deploymentOverview".into(), Value::Object(counts));
    m.insert("status".into(), json!(deployment.status));
    if let Some(error) = doc.get("errorInformation").filter(|e| e.is_object()) {
        m.insert("errorInformation".into(), json!({ "ErrorCode": error["code"], "ErrorMessage": error["message"] }));
    }
    m.insert("creator".into(), doc.get("creator").cloned().unwrap_or(json!("user")));
    if let Some(info) = doc.get("rollbackInfo").filter(|i| i.is_object()) {
        m.insert("rollbackInfo".into(), info.clone());
    }
    m
}

/// The message of an instance event (without the per-trigger fields).
pub fn instance_message(
    deployment: &Deployment,
    target: &records::Target,
    commands: &[records::Command],
) -> Map<String, Value> {
    let last = commands.iter().map(records::Command::last_change).max().unwrap_or(0).max(target.last_updated);
    let events: Vec<Value> = commands
        .iter()
        .map(|c| {
            let event = c.lifecycle_event();
            let mut e = json!({ "LifecycleEvent": c.name, "LifecycleEventStatus": event["status"] });
            if let Some(t) = millis_of(&event["startTime"]) {
                e["StartTime"] = json!(message_time(t));
            }
            if let Some(t) = millis_of(&event["endTime"]) {
                e["EndTime"] = json!(message_time(t));
            }
            e
        })
        .collect();
    let mut m = Map::new();
    m.insert("region".into(), json!(REGION));
    m.insert("accountId".into(), json!(ACCOUNT_ID));
    m.insert("applicationName".into(), json!(deployment.application_name));
    m.insert("deploymentGroupName".into(), json!(deployment.group_name));
    m.insert("deploymentId".into(), json!(deployment.id));
    let instance = target.doc.get("targetArn").and_then(Value::as_str).unwrap_or(&target.instance_name);
    m.insert("instanceId".into(), json!(instance));
    m.insert("instanceName".into(), json!(target.instance_name));
    m.insert("lastUpdatedAt".into(), json!(message_time(last)));
    m.insert("instanceStatus".into(), json!(target.status));
    m.insert("lifecycleEvents".into(), Value::Array(events));
    m
}

/// A new event id: `ev-` and 32 lowercase hex digits.
pub fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("ev-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn group_doc(conn: &mut AnyConnection, group_id: &str) -> Result<Value, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM deployment_groups WHERE deployment_group_id = $1")
        .bind(group_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(text,)| records::parse_doc(&text, group_id)).unwrap_or(Value::Null))
}

/// Stores one row per webhook trigger of the group that fires on `event`.
async fn store(
    conn: &mut AnyConnection,
    deployment: &Deployment,
    hooks: &[Webhook],
    event: &str,
    message: &Map<String, Value>,
    now: i64,
) -> Result<(), sqlx::Error> {
    for hook in hooks {
        let id = new_event_id();
        let mut body = message.clone();
        body.insert("eventId".into(), json!(id));
        body.insert("eventType".into(), json!(event));
        body.insert("eventTriggerName".into(), json!(hook.name));
        body.insert("eventTime".into(), json!(message_time(now)));
        sqlx::query(
            "INSERT INTO trigger_events (event_id, deployment_group_id, deployment_id, trigger_name, target_url, \
             event_type, body, created_at, attempts, next_attempt_at, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $8, 0)",
        )
        .bind(&id)
        .bind(&deployment.group_id)
        .bind(&deployment.id)
        .bind(&hook.name)
        .bind(&hook.url)
        .bind(event)
        .bind(Value::Object(body).to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        log::info!("trigger {}: {event} of {} queued as {id}", hook.name, deployment.id);
    }
    Ok(())
}

/// Queues `event` of deployment `deployment_id` (as it stands in this
/// transaction) for the group's triggers that want it.
pub async fn emit_deployment(
    conn: &mut AnyConnection,
    deployment_id: &str,
    event: DeploymentEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    let Some(deployment) = records::load_deployment(conn, deployment_id).await? else { return Ok(()) };
    let hooks = webhooks_for(&group_doc(conn, &deployment.group_id).await?, event.name());
    if hooks.is_empty() {
        return Ok(());
    }
    let overview = records::overview(conn, deployment_id).await?;
    let message = deployment_message(&deployment, &overview);
    store(conn, &deployment, &hooks, event.name(), &message, now).await
}

/// Queues instance event `event` of `instance` in deployment `deployment_id`.
pub async fn emit_instance(
    conn: &mut AnyConnection,
    deployment_id: &str,
    instance: &str,
    event: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let Some(deployment) = records::load_deployment(conn, deployment_id).await? else { return Ok(()) };
    let hooks = webhooks_for(&group_doc(conn, &deployment.group_id).await?, event);
    if hooks.is_empty() {
        return Ok(());
    }
    let targets = records::targets_of(conn, deployment_id).await?;
    let Some(target) = targets.iter().find(|t| t.instance_name == instance) else { return Ok(()) };
    let commands = records::commands_of_instance(conn, deployment_id, instance).await?;
    let message = instance_message(&deployment, target, &commands);
    store(conn, &deployment, &hooks, event, &message, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_strings_of_seconds_with_milliseconds() {
        assert_eq!(message_time(1_446_744_188_595), "1446744188.595");
        assert_eq!(message_time(1_000), "1.000");
        assert_eq!(message_time(5), "0.005");
    }

    #[test]
    fn only_url_targets_that_want_the_event_are_webhooks() {
        let group = json!({"triggerConfigurations": [
            {"triggerName": "a", "triggerTargetArn": "https://hooks.example/x", "triggerEvents": ["DeploymentSuccess"]},
            {"triggerName": "b", "triggerTargetArn": "arn:aws:sns:us-east-1:0:t", "triggerEvents": ["DeploymentSuccess"]},
            {"triggerName": "c", "triggerTargetArn": "http://10.0.0.1:8080/", "triggerEvents": ["InstanceFailure"]},
        ]});
        let hooks = webhooks_for(&group, "DeploymentSuccess");
        assert_eq!(hooks, [Webhook { name: "a".into(), url: "https://hooks.example/x".into() }]);
        assert_eq!(webhooks_for(&group, "InstanceFailure")[0].name, "c");
        assert!(webhooks_for(&group, "DeploymentStart").is_empty());
        assert!(webhooks_for(&json!({}), "DeploymentStart").is_empty());
    }

    #[test]
    fn event_ids_are_distinct() {
        let (a, b) = (new_event_id(), new_event_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 35);
    }
}
