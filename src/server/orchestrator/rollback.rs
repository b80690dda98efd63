//! Rollbacks: a deployment that failed (or was stopped) with automatic
//! rollback configured is followed by a new deployment, in the same group,
//! of the revision of the group's last deployment that succeeded before
//! it, to the same instances, created by `codeDeployRollback`. Both carry
//! `rollbackInfo`. Everything happens in the caller's transaction, the one
//! that ended the deployment. Rules: `docs/orchestrator.md` (rule 13).

use serde_json::{Value, json};
use sqlx::AnyConnection;

use super::records::{self, Deployment, INTERNAL};
use crate::server::control::deployments::{insert_target, new_deployment_id};
use crate::server::store::wire_time;
use crate::server::triggers::message::{self, DeploymentEvent};

/// The AutoRollbackEvent of a failed deployment.
pub const ON_FAILURE: &str = "DEPLOYMENT_FAILURE";
/// The AutoRollbackEvent of a deployment stopped by StopDeployment.
pub const ON_STOP_REQUEST: &str = "DEPLOYMENT_STOP_ON_REQUEST";
/// The DeploymentCreator of a rollback.
pub const ROLLBACK_CREATOR: &str = "codeDeployRollback";

/// True when the deployment's `autoRollbackConfiguration` is enabled for `event`.
pub fn configured_for(doc: &Value, event: &str) -> bool {
    let config = &doc["autoRollbackConfiguration"];
    config["enabled"].as_bool().unwrap_or(false)
        && config["events"].as_array().is_some_and(|events| events.iter().any(|e| e == event))
}

/// How the description of a rollback deployment made by `edgedeploy
/// rollback` (a plain CreateDeployment, which cannot carry `rollbackInfo`)
/// starts: "rollback of d-XXXXXXXXX: ...".
pub const MANUAL_ROLLBACK_PREFIX: &str = "rollback of ";

/// The deployment that `deployment` (a DeploymentInfo) rolls back: its
/// `rollbackInfo.rollbackTriggeringDeploymentId` (the server's rollbacks),
/// else the id its description names after [`MANUAL_ROLLBACK_PREFIX`].
pub fn rolls_back(deployment: &Value) -> Option<&str> {
    if let Some(id) = deployment["rollbackInfo"]["rollbackTriggeringDeploymentId"].as_str() {
        return Some(id);
    }
    let rest = deployment["description"].as_str()?.strip_prefix(MANUAL_ROLLBACK_PREFIX)?;
    rest.split(':').next()
}

/// The **previous good deployment** for deployment `from`: the one rule
/// for the server's automatic rollbacks and `edgedeploy rollback`
/// (`docs/orchestrator.md`, rule 13). `group` is every deployment of the
/// group, newest first (create time, then id, descending; each a
/// DeploymentInfo with `status`). When `from` did not succeed (it failed or
/// was stopped: every automatic rollback), the answer is the newest
/// deployment created before it that Succeeded, whatever its revision: the
/// group's last successful revision, as CodeDeploy does. When `from`
/// succeeded (only `edgedeploy rollback` asks then), it is the newest
/// deployment created before `from` that Succeeded, whose revision differs
/// from `from`'s, and that no rollback undid (see [`rolls_back`]), so a
/// second rollback goes one revision further back, not forth.
pub fn previous_good<'a>(group: &'a [Value], from: &str) -> Option<&'a Value> {
    let position = group.iter().position(|d| d["deploymentId"] == from)?;
    let earlier = &group[position + 1..];
    if group[position]["status"] != "Succeeded" {
        return earlier.iter().find(|d| d["status"] == "Succeeded");
    }
    let revision = &group[position]["revision"];
    let undone: Vec<&str> = group.iter().filter_map(rolls_back).collect();
    earlier.iter().find(|d| {
        d["status"] == "Succeeded"
            && d["revision"] != *revision
            && !undone.contains(&d["deploymentId"].as_str().unwrap_or_default())
    })
}

/// The previous good deployment for `failed` ([`previous_good`]).
async fn last_success(conn: &mut AnyConnection, failed: &Deployment) -> Result<Option<Deployment>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT deployment_id, status, doc FROM deployments WHERE deployment_group_id = $1 \
         ORDER BY create_time DESC, deployment_id DESC",
    )
    .bind(&failed.group_id)
    .fetch_all(&mut *conn)
    .await?;
    let group: Vec<Value> = rows
        .into_iter()
        .map(|(id, status, doc)| {
            let doc: Value = serde_json::from_str(&doc).unwrap_or_else(|_| json!({}));
            json!({
                "deploymentId": id, "status": status, "revision": doc["revision"],
                "rollbackInfo": doc["rollbackInfo"], "description": doc["description"],
            })
        })
        .collect();
    match previous_good(&group, &failed.id).and_then(|d| d["deploymentId"].as_str()) {
        Some(id) => records::load_deployment(conn, id).await,
        None => Ok(None),
    }
}

async fn set_info(conn: &mut AnyConnection, id: &str, info: Value) -> Result<(), sqlx::Error> {
    records::update_deployment_doc(conn, id, |doc| doc["rollbackInfo"] = info).await
}

/// Rolls back deployment `failed_id`, which just ended (`why`: "failed",
/// "was stopped"). Returns the rollback deployment's id, or None with the
/// reason written into the ended deployment's `rollbackInfo.rollbackMessage`.
pub async fn roll_back(
    conn: &mut AnyConnection,
    failed_id: &str,
    why: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let Some(failed) = records::load_deployment(conn, failed_id).await? else { return Ok(None) };
    if failed.doc["creator"] == ROLLBACK_CREATOR {
        let mut info = failed.doc.get("rollbackInfo").cloned().unwrap_or_else(|| json!({}));
        info["rollbackMessage"] = json!(format!(
            "Rollback deployment {failed_id} {why}; a rollback is not rolled back again. Redeploy a known good \
             revision yourself."
        ));
        set_info(conn, failed_id, info).await?;
        log::warn!("rollback deployment {failed_id} {why}; not rolling it back");
        return Ok(None);
    }
    let refuse = |message: String| json!({ "rollbackMessage": message });
    let Some(good) = last_success(conn, &failed).await? else {
        let message = format!(
            "Automatic rollback was not done: deployment {failed_id} {why}, and no earlier deployment of deployment \
             group {} succeeded with another revision (one no rollback undid), so there is no known good revision \
             to redeploy.",
            failed.group_name
        );
        log::warn!("deployment {failed_id}: {message}");
        set_info(conn, failed_id, refuse(message)).await?;
        return Ok(None);
    };
    let (Some(revision), Some(plan)) = (good.doc.get("revision").cloned(), failed.doc.get(INTERNAL).cloned()) else {
        let message = format!("Automatic rollback was not done: the stored plan of deployment {failed_id} is damaged.");
        set_info(conn, failed_id, refuse(message)).await?;
        return Ok(None);
    };
    let id = new_deployment_id();
    let claimed = sqlx::query(
        "INSERT INTO active_deployments (deployment_group_id, deployment_id) VALUES ($1, $2) \
         ON CONFLICT (deployment_group_id) DO NOTHING",
    )
    .bind(&failed.group_id)
    .bind(&id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed == 0 {
        let message = format!(
            "Automatic rollback was not done: deployment group {} already has another active deployment.",
            failed.group_name
        );
        set_info(conn, failed_id, refuse(message)).await?;
        return Ok(None);
    }
    let doc = rollback_doc(&failed, &good, &id, revision.clone(), plan, why, now);
    sqlx::query(
        "INSERT INTO deployments (deployment_id, application_name, deployment_group_name, deployment_group_id, status, create_time, doc) \
         VALUES ($1, $2, $3, $4, 'Created', $5, $6)",
    )
    .bind(&id)
    .bind(&failed.application_name)
    .bind(&failed.group_name)
    .bind(&failed.group_id)
    .bind(now)
    .bind(doc.to_string())
    .execute(&mut *conn)
    .await?;
    let events: Vec<String> = doc[INTERNAL]["events"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    for target in records::targets_of(conn, failed_id).await? {
        let arn = target.doc.get("targetArn").and_then(Value::as_str);
        insert_target(conn, &id, &target.instance_name, arn, &events, now).await?;
    }
    records::record_in_group(conn, &failed.group_id, &id, "Created", now, None, Some(&revision)).await?;
    let message = format!(
        "Deployment {failed_id} {why}; rolled back by deployment {id}, which redeploys the revision of {}, the last \
         successful deployment.",
        good.id
    );
    set_info(conn, failed_id, json!({ "rollbackDeploymentId": id, "rollbackMessage": message })).await?;
    message::emit_deployment(conn, failed_id, DeploymentEvent::Rollback, now).await?;
    log::info!("deployment {failed_id} {why}: rollback deployment {id} redeploys the revision of {}", good.id);
    Ok(Some(id))
}

/// The DeploymentInfo document of rollback `id` of `failed` to `good`'s revision.
fn rollback_doc(
    failed: &Deployment,
    good: &Deployment,
    id: &str,
    revision: Value,
    plan: Value,
    why: &str,
    now: i64,
) -> Value {
    let copy = |key: &str| failed.doc.get(key).cloned().unwrap_or(Value::Null);
    let mut doc = json!({
        "applicationName": failed.application_name,
        "deploymentGroupName": failed.group_name,
        "deploymentConfigName": copy("deploymentConfigName"),
        "deploymentId": id,
        "revision": revision,
        "previousRevision": good.doc.get("revision").cloned().unwrap_or(Value::Null),
        "createTime": wire_time(now),
        "creator": ROLLBACK_CREATOR,
        "description": format!("Rollback of {}", failed.id),
        "ignoreApplicationStopFailures": copy("ignoreApplicationStopFailures"),
        "updateOutdatedInstancesOnly": false,
        "deploymentStyle": copy("deploymentStyle"),
        "fileExistsBehavior": copy("fileExistsBehavior"),
        "computePlatform": "Server",
        "instanceTerminationWaitTimeStarted": false,
        "rollbackInfo": {
            "rollbackTriggeringDeploymentId": failed.id,
            "rollbackMessage": format!(
                "Rollback of deployment {}, which {why}: redeploys the revision of {}, the last successful deployment.",
                failed.id, good.id
            ),
        },
        INTERNAL: plan,
    });
    if let Some(config) = failed.doc.get("autoRollbackConfiguration") {
        doc["autoRollbackConfiguration"] = config.clone();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_needs_the_configuration_enabled_for_the_event() {
        let on = json!({"autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_FAILURE"]}});
        assert!(configured_for(&on, ON_FAILURE));
        assert!(!configured_for(&on, ON_STOP_REQUEST));
        let off = json!({"autoRollbackConfiguration": {"enabled": false, "events": ["DEPLOYMENT_FAILURE"]}});
        assert!(!configured_for(&off, ON_FAILURE));
        assert!(!configured_for(&json!({}), ON_FAILURE));
    }

    fn d(id: &str, status: &str, key: &str) -> Value {
        json!({"deploymentId": id, "status": status,
               "revision": {"revisionType": "S3", "s3Location": {"bucket": "b", "key": key, "bundleType": "tgz"}}})
    }

    fn good<'a>(group: &'a [Value], from: &str) -> Option<&'a str> {
        previous_good(group, from).and_then(|d| d["deploymentId"].as_str())
    }

    #[test]
    fn the_previous_good_deployment_succeeded_earlier_with_another_revision_and_was_not_undone() {
        // v2 succeeded after v1: back to v1.
        let group = [d("d-3", "Succeeded", "v2"), d("d-2", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-3"), Some("d-2"));
        // v2 failed or was stopped: back to the last success, v1.
        let group = [d("d-3", "Stopped", "v2"), d("d-2", "Failed", "v2"), d("d-1", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-3"), Some("d-1"));
        // A failed redeploy of v2 after v2 succeeded: v2, the last
        // successful revision (CodeDeploy's rule for a failed deployment).
        let group = [d("d-3", "Failed", "v2"), d("d-2", "Succeeded", "v2"), d("d-1", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-3"), Some("d-2"));
        // A succeeded v2 rolled back by hand: back to v1, not v2 again.
        let group = [d("d-3", "Succeeded", "v2"), d("d-2", "Succeeded", "v2"), d("d-1", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-3"), Some("d-1"));
        // Only deployments created before `from` count.
        let group = [d("d-3", "Succeeded", "v0"), d("d-2", "Failed", "v2"), d("d-1", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-2"), Some("d-1"));
        // After a rollback from v2 to v1 (d-4), again: past the undone v2
        // and v1 itself, to v0; whether `edgedeploy rollback` made it ...
        let mut manual = d("d-4", "Succeeded", "v1");
        manual["description"] = json!("rollback of d-3: redeploys the revision of d-2");
        let group = [manual, d("d-3", "Succeeded", "v2"), d("d-2", "Succeeded", "v1"), d("d-1", "Succeeded", "v0")];
        assert_eq!(good(&group, "d-4"), Some("d-1"));
        // ... or the server did.
        let mut by_server = d("d-4", "Succeeded", "v1");
        by_server["rollbackInfo"] = json!({"rollbackTriggeringDeploymentId": "d-3"});
        let group = [by_server, d("d-3", "Succeeded", "v2"), d("d-2", "Succeeded", "v1"), d("d-1", "Succeeded", "v0")];
        assert_eq!(good(&group, "d-4"), Some("d-1"));
        // A plain redeploy of v1 is no rollback: back to v2.
        let group = [d("d-4", "Succeeded", "v1"), d("d-3", "Succeeded", "v2"), d("d-2", "Succeeded", "v1")];
        assert_eq!(good(&group, "d-4"), Some("d-3"));
        // Nothing earlier, only the same revision, or `from` unknown: none.
        assert_eq!(good(&[d("d-1", "Succeeded", "v1")], "d-1"), None);
        assert_eq!(good(&[d("d-2", "Succeeded", "v1"), d("d-1", "Succeeded", "v1")], "d-2"), None);
        assert_eq!(good(&[d("d-2", "Failed", "v1"), d("d-1", "Failed", "v0")], "d-2"), None);
        assert_eq!(good(&[d("d-1", "Succeeded", "v1")], "d-9"), None);
        assert_eq!(good(&[], "d-1"), None);
    }
}
