//! Deployments: control API operations. CreateDeployment fixes everything
//! a deployment needs at its start (targets, policy, one host command per
//! lifecycle event per instance) in one transaction; the orchestrator
//! (`server::orchestrator`) moves it on from there. Rules:
//! `docs/orchestrator.md`.

use rand::Rng;
use serde_json::{Value, json};
use sqlx::AnyConnection;

use super::validate::{
    APPLICATION_NAME, DEPLOYMENT_CONFIG_NAME, DEPLOYMENT_GROUP_NAME, encode_token, is_unique_violation, opt_array,
    opt_enum, opt_object, opt_str, opt_text, page_start, type_error,
};
use super::{applications, configs, groups, instances, revisions};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::orchestrator::records::{self, Deployment, INTERNAL};
use crate::server::orchestrator::rollback;
use crate::server::orchestrator::rules::{self, Policy};
use crate::server::store::{now_millis, wire_time};
use crate::server::triggers::message::{self, DeploymentEvent};

/// Longest deployment description.
const MAX_DESCRIPTION: usize = 100;
/// Most ids BatchGetDeployments takes.
const BATCH_LIMIT: usize = 25;
/// Deployments per ListDeployments page.
const PAGE_SIZE: usize = 100;
/// Every `DeploymentStatus`.
const STATUSES: [&str; 8] = ["Created", "Queued", "InProgress", "Baking", "Succeeded", "Failed", "Stopped", "Ready"];

/// A new deployment id: `d-` and 9 uppercase letters or digits.
pub fn new_deployment_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..9).map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())])).collect();
    format!("d-{tail}")
}

fn new_command_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..24).map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())])).collect();
    format!("hc-{tail}")
}

/// A deployment id from `input[field]`: required, `d-` + 9 letters or digits.
fn deployment_id(input: &Value) -> Result<String, ApiError> {
    let id = opt_str(input, "deploymentId")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::client("DeploymentIdRequiredException", "deploymentId is required"))?;
    check_deployment_id(id)?;
    Ok(id.to_string())
}

fn check_deployment_id(id: &str) -> Result<(), ApiError> {
    let tail = id.strip_prefix("d-").unwrap_or_default();
    if tail.len() == 9 && tail.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Ok(());
    }
    Err(ApiError::client("InvalidDeploymentIdException", format!("deploymentId {id:?} is not of the form d-XXXXXXXXX")))
}

/// The deployment `id` (DeploymentDoesNotExistException).
pub async fn require_deployment(conn: &mut AnyConnection, id: &str) -> Result<Deployment, ApiError> {
    records::load_deployment(conn, id)
        .await?
        .ok_or_else(|| ApiError::client("DeploymentDoesNotExistException", format!("deployment {id} does not exist")))
}

fn opt_bool(input: &Value, field: &str, exception: &str) -> Result<bool, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::client(exception, format!("{field}: {other} is not true or false"))),
    }
}

/// The revision to deploy: the input's, else the group's target revision;
/// S3 bundles must say their type (tar, tgz or zip).
fn revision_to_deploy(input: &Value, group: &Value) -> Result<Value, ApiError> {
    let given = opt_object(input, "revision")?.or_else(|| group.get("targetRevision").filter(|r| r.is_object()));
    let revision = revisions::normalize_revision(given.ok_or_else(|| {
        ApiError::client(
            "RevisionRequiredException",
            "revision is required: the deployment group has no target revision",
        )
    })?)?;
    if revision["revisionType"] == "S3" {
        let bundle = revision["s3Location"]["bundleType"].as_str().unwrap_or_default();
        if !["tar", "tgz", "zip"].contains(&bundle) {
            return Err(ApiError::client(
                "InvalidRevisionException",
                format!("revision.s3Location.bundleType {bundle:?}: an on-premises deployment needs tar, tgz or zip"),
            ));
        }
    }
    Ok(revision)
}

/// `CreateDeployment`.
pub async fn create_deployment(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let group_name = DEPLOYMENT_GROUP_NAME
        .optional(&input)?
        .ok_or_else(|| ApiError::client("DeploymentGroupNameRequiredException", "deploymentGroupName is required"))?;
    let (group_id, group) = groups::load_group(state, &app, &group_name).await?;
    let revision = revision_to_deploy(&input, &group)?;
    let config_name = match DEPLOYMENT_CONFIG_NAME.optional(&input)? {
        Some(name) => name,
        None => group["deploymentConfigName"].as_str().unwrap_or(configs::DEFAULT_CONFIG).to_string(),
    };
    let (kind, value) = configs::min_healthy(state, &config_name).await?;
    let description = opt_text(&input, "description", MAX_DESCRIPTION, "DescriptionTooLongException")?;
    let file_exists = opt_enum(
        &input,
        "fileExistsBehavior",
        &["DISALLOW", "OVERWRITE", "RETAIN"],
        "InvalidFileExistsBehaviorException",
    )?
    .unwrap_or("DISALLOW");
    let ignore_stop =
        opt_bool(&input, "ignoreApplicationStopFailures", "InvalidIgnoreApplicationStopFailuresValueException")?;
    let outdated_only =
        opt_bool(&input, "updateOutdatedInstancesOnly", "InvalidUpdateOutdatedInstancesOnlyValueException")?;
    if opt_object(&input, "targetInstances")?.is_some() {
        return Err(ApiError::client(
            "InvalidTargetInstancesException",
            "targetInstances is for blue/green deployments to EC2; this server deploys in place to the group's instances",
        ));
    }
    let rollback = opt_object(&input, "autoRollbackConfiguration")?.or(group.get("autoRollbackConfiguration")).cloned();
    let with_traffic = group["deploymentStyle"]["deploymentOption"] == "WITH_TRAFFIC_CONTROL";
    let events: Vec<&str> = rules::events(with_traffic).iter().map(|e| e.name()).collect();

    let targets = groups::resolve_targets(state, &app, &group_name).await?;
    let mut arns = Vec::with_capacity(targets.len());
    for name in &targets {
        arns.push(instances::registered_instance_arn(state, name).await?);
    }
    let policy = Policy::new(&config_name, &kind, value, targets.len());
    // A GitHub commit is resolved and archived now, so the deployment names its full id.
    let revision = crate::server::git::prepare_revision(state, revision).await?;

    let id = new_deployment_id();
    let now = now_millis();
    let mut doc = json!({
        "applicationName": app,
        "deploymentGroupName": group_name,
        "deploymentConfigName": config_name,
        "deploymentId": id,
        "revision": revision,
        "createTime": wire_time(now),
        "creator": "user",
        "ignoreApplicationStopFailures": ignore_stop,
        "updateOutdatedInstancesOnly": outdated_only,
        "deploymentStyle": {
            "deploymentType": "IN_PLACE",
            "deploymentOption": if with_traffic { "WITH_TRAFFIC_CONTROL" } else { "WITHOUT_TRAFFIC_CONTROL" },
        },
        "fileExistsBehavior": file_exists,
        "computePlatform": "Server",
        "instanceTerminationWaitTimeStarted": false,
        INTERNAL: { "events": events },
    });
    if let Some(description) = description {
        doc["description"] = json!(description);
    }
    if let Some(rollback) = rollback {
        doc["autoRollbackConfiguration"] = rollback;
    }
    if let Some(previous) = previous_revision(state, &group).await? {
        doc["previousRevision"] = previous;
    }
    let status = match &policy {
        Ok(p) => {
            doc[INTERNAL]["policy"] =
                json!({ "total": p.total, "minHealthy": p.min_healthy, "maxInFlight": p.max_in_flight });
            "Created"
        }
        Err(e) => {
            doc["errorInformation"] = json!({ "code": e.code(), "message": e.message() });
            doc["startTime"] = wire_time(now);
            doc["completeTime"] = wire_time(now);
            "Failed"
        }
    };

    let mut tx = state.store.pool.begin().await?;
    let claimed = sqlx::query("INSERT INTO active_deployments (deployment_group_id, deployment_id) VALUES ($1, $2)")
        .bind(&group_id)
        .bind(&id)
        .execute(&mut *tx)
        .await;
    if let Err(e) = claimed {
        if !is_unique_violation(&e) {
            return Err(e.into());
        }
        drop(tx);
        return Err(limit_exceeded(state, &group_id, &group_name).await);
    }
    sqlx::query(
        "INSERT INTO deployments (deployment_id, application_name, deployment_group_name, deployment_group_id, status, create_time, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&app)
    .bind(&group_name)
    .bind(&group_id)
    .bind(status)
    .bind(now)
    .bind(doc.to_string())
    .execute(&mut *tx)
    .await?;
    if policy.is_ok() {
        for (name, arn) in targets.iter().zip(&arns) {
            insert_target(&mut tx, &id, name, arn.as_deref(), &events, now).await?;
        }
    } else {
        records::release_group(&mut tx, &group_id, &id).await?;
    }
    let end = (status == "Failed").then_some(now);
    records::record_in_group(&mut tx, &group_id, &id, status, now, end, Some(&revision)).await?;
    if status == "Failed" {
        message::emit_deployment(&mut tx, &id, DeploymentEvent::Failure, now).await?;
    }
    tx.commit().await?;
    log::info!("deployment {id} of {app}/{group_name} created: {status}, {} instances", targets.len());
    if let Err(e) = revisions::record_revision_use(state, &app, &revision, &group_name).await {
        log::warn!("deployment {id}: recording the use of its revision: {e}");
    }
    Ok(json!({ "deploymentId": id }))
}

/// Stores target `name` of deployment `id` and one Pending command per event.
pub async fn insert_target(
    conn: &mut AnyConnection,
    id: &str,
    name: &str,
    arn: Option<&str>,
    events: &[&str],
    now: i64,
) -> Result<(), sqlx::Error> {
    let doc = match arn {
        Some(arn) => json!({ "targetArn": arn }),
        None => json!({}),
    };
    sqlx::query(
        "INSERT INTO deployment_targets (deployment_id, instance_name, status, last_updated, doc) VALUES ($1, $2, 'Pending', $3, $4)",
    )
    .bind(id)
    .bind(name)
    .bind(now)
    .bind(doc.to_string())
    .execute(&mut *conn)
    .await?;
    for (seq, event) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO host_commands (command_id, deployment_id, instance_name, seq, command_name, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'Pending', $6)",
        )
        .bind(new_command_id())
        .bind(id)
        .bind(name)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .bind(*event)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn limit_exceeded(state: &State, group_id: &str, group_name: &str) -> ApiError {
    let active: Option<(String,)> =
        sqlx::query_as("SELECT deployment_id FROM active_deployments WHERE deployment_group_id = $1")
            .bind(group_id)
            .fetch_optional(&state.store.pool)
            .await
            .unwrap_or(None);
    let which = active.map(|(id,)| format!(" ({id})")).unwrap_or_default();
    ApiError::client(
        "DeploymentLimitExceededException",
        format!("deployment group {group_name} already has an active deployment{which}; wait for it or stop it"),
    )
}

/// The revision of the group's last successful deployment.
async fn previous_revision(state: &State, group: &Value) -> Result<Option<Value>, ApiError> {
    let Some(last) = group["lastSuccessfulDeployment"]["deploymentId"].as_str() else { return Ok(None) };
    let mut conn = state.store.pool.acquire().await?;
    Ok(records::load_deployment(&mut conn, last).await?.and_then(|d| d.doc.get("revision").cloned()))
}

/// A deployment's DeploymentInfo.
async fn info(conn: &mut AnyConnection, deployment: &Deployment) -> Result<Value, ApiError> {
    let overview = records::overview(conn, &deployment.id).await?;
    Ok(deployment.info(overview))
}

/// `GetDeployment`.
pub async fn get_deployment(state: &State, input: Value) -> OpResult {
    let id = deployment_id(&input)?;
    let mut conn = state.store.pool.acquire().await?;
    let deployment = require_deployment(&mut conn, &id).await?;
    Ok(json!({ "deploymentInfo": info(&mut conn, &deployment).await? }))
}

/// `BatchGetDeployments`: unknown ids are left out.
pub async fn batch_get_deployments(state: &State, input: Value) -> OpResult {
    let ids = opt_array(&input, "deploymentIds")?
        .ok_or_else(|| ApiError::client("DeploymentIdRequiredException", "deploymentIds is required"))?;
    if ids.len() > BATCH_LIMIT {
        return Err(ApiError::client(
            "BatchLimitExceededException",
            format!("deploymentIds has {} ids; at most {BATCH_LIMIT} are allowed", ids.len()),
        ));
    }
    let mut conn = state.store.pool.acquire().await?;
    let mut infos = Vec::new();
    for id in ids {
        let id = id.as_str().ok_or_else(|| type_error("deploymentIds", id, "a list of strings"))?;
        check_deployment_id(id)?;
        if let Some(deployment) = records::load_deployment(&mut conn, id).await? {
            infos.push(info(&mut conn, &deployment).await?);
        }
    }
    Ok(json!({ "deploymentsInfo": infos }))
}

/// Epoch milliseconds of an epoch-seconds wire timestamp.
fn millis_of(value: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().filter(|s| s.is_finite()).map(|s| Some((s * 1000.0).round() as i64)).ok_or_else(|| {
            ApiError::client("InvalidTimeRangeException", format!("createTimeRange.{field}: {v} is not a timestamp"))
        }),
    }
}

/// `ListDeployments`: newest first; application and group go together.
pub async fn list_deployments(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.optional(&input)?;
    let group = DEPLOYMENT_GROUP_NAME.optional(&input)?;
    match (&app, &group) {
        (Some(app), Some(group)) => drop(groups::load_group(state, app, group).await?),
        (Some(_), None) => {
            return Err(ApiError::client(
                "DeploymentGroupNameRequiredException",
                "deploymentGroupName is required with applicationName",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::client(
                "ApplicationNameRequiredException",
                "applicationName is required with deploymentGroupName",
            ));
        }
        (None, None) => {}
    }
    if let Some(app) = &app {
        applications::require_application(state, app).await?;
    }
    let mut statuses = Vec::new();
    for s in opt_array(&input, "includeOnlyStatuses")?.into_iter().flatten() {
        match s.as_str() {
            Some(s) if STATUSES.contains(&s) => statuses.push(s.to_string()),
            _ => {
                return Err(ApiError::client(
                    "InvalidDeploymentStatusException",
                    format!("{s} is not a DeploymentStatus"),
                ));
            }
        }
    }
    let (start, end) = match opt_object(&input, "createTimeRange")? {
        Some(range) => (millis_of(range, "start")?, millis_of(range, "end")?),
        None => (None, None),
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(ApiError::client("InvalidTimeRangeException", "createTimeRange.start is after its end"));
    }
    let external = opt_str(&input, "externalId")?;
    let skip: usize = match page_start(&input)? {
        Some(key) => key.parse().map_err(|_| ApiError::client("InvalidNextTokenException", "nextToken is not ours"))?,
        None => 0,
    };
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT deployment_id, application_name, deployment_group_name, status, create_time FROM deployments \
         ORDER BY create_time DESC, deployment_id DESC",
    )
    .fetch_all(&state.store.pool)
    .await?;
    let matching: Vec<String> = rows
        .into_iter()
        .filter(|(_, a, g, s, t)| {
            app.as_ref().is_none_or(|app| app == a)
                && group.as_ref().is_none_or(|group| group == g)
                && (statuses.is_empty() || statuses.contains(s))
                && start.is_none_or(|start| *t >= start)
                && end.is_none_or(|end| *t <= end)
                && external.is_none()
        })
        .map(|(id, ..)| id)
        .collect();
    let page: Vec<String> = matching.iter().skip(skip).take(PAGE_SIZE).cloned().collect();
    let mut output = json!({ "deployments": page });
    if matching.len() > skip + PAGE_SIZE {
        output["nextToken"] = json!(encode_token(&(skip + PAGE_SIZE).to_string()));
    }
    Ok(output)
}

/// `StopDeployment`: the deployment ends Stopped at once; commands not run
/// yet are Skipped, those an agent holds are Failed (an acknowledgement
/// then answers Failed, and a late completion changes nothing); the
/// instances not started are Skipped, those in flight Failed; the group is
/// released. Then, in the same transaction, the rollback: with
/// `autoRollbackEnabled` true always, false never, absent when the
/// deployment's autoRollbackConfiguration has DEPLOYMENT_STOP_ON_REQUEST.
pub async fn stop_deployment(state: &State, input: Value) -> OpResult {
    let id = deployment_id(&input)?;
    let wants_rollback = match input.get("autoRollbackEnabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(type_error("autoRollbackEnabled", other, "true or false")),
    };
    let mut conn = state.store.pool.acquire().await?;
    let deployment = require_deployment(&mut conn, &id).await?;
    drop(conn);
    let now = now_millis();
    let message = format!("Deployment {id} was stopped by StopDeployment");
    let mut tx = state.store.pool.begin().await?;
    let error = json!({ "code": "MANUAL_STOP", "message": message });
    if !records::finish_deployment(&mut tx, &deployment, "Stopped", Some(error), now).await? {
        return Err(ApiError::client(
            "DeploymentAlreadyCompletedException",
            format!("deployment {id} is already {}", deployment.status),
        ));
    }
    let diag = records::diagnostics("UnknownError", "", &message, "");
    sqlx::query(
        "UPDATE host_commands SET status = 'Failed', completed_at = $1, diagnostics = $2 \
         WHERE deployment_id = $3 AND status IN ('Dispatched', 'InProgress')",
    )
    .bind(now)
    .bind(diag.to_string())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    records::skip_open_commands(&mut tx, &id, None, now).await?;
    let mut in_flight = 0;
    for target in records::targets_of(&mut tx, &id).await?.iter().filter(|t| t.status == "InProgress") {
        if records::set_target_status(&mut tx, &id, &target.instance_name, "InProgress", "Failed", now).await? {
            in_flight += 1;
        }
    }
    records::skip_pending_targets(&mut tx, &id, now).await?;
    message::emit_deployment(&mut tx, &id, DeploymentEvent::Stop, now).await?;
    let roll = wants_rollback.unwrap_or_else(|| rollback::configured_for(&deployment.doc, rollback::ON_STOP_REQUEST));
    let rolled = match roll {
        true => rollback::roll_back(&mut tx, &id, "was stopped", now).await?,
        false => None,
    };
    tx.commit().await?;
    log::info!("deployment {id}: stopped ({in_flight} instances were in flight)");
    let mut status_message = format!("{message}; {in_flight} instances in flight were failed, the others skipped");
    if let Some(rollback) = rolled {
        status_message.push_str(&format!("; rollback deployment {rollback} created"));
    }
    Ok(json!({ "status": "Succeeded", "statusMessage": status_message }))
}
