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

/// The last deployment of `failed`'s group that succeeded before it.
async fn last_success(conn: &mut AnyConnection, failed: &Deployment) -> Result<Option<Deployment>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT deployment_id FROM deployments WHERE deployment_group_id = $1 AND status = 'Succeeded' \
         AND create_time <= $2 AND deployment_id <> $3 ORDER BY create_time DESC, deployment_id DESC LIMIT 1",
    )
    .bind(&failed.group_id)
    .bind(failed.create_time)
    .bind(&failed.id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((id,)) => records::load_deployment(conn, &id).await,
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
             group {} succeeded, so there is no known good revision to redeploy.",
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
}
