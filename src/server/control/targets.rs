//! Deployment targets (the instances of a deployment): control API
//! operations, read from `deployment_targets` and `host_commands`. A target
//! id is the instance name. Lifecycle events are the instance's host
//! commands, in order, with the statuses of `docs/orchestrator.md`.

use serde_json::{Value, json};
use sqlx::AnyConnection;

use super::deployments::require_deployment;
use super::validate::{encode_token, opt_array, opt_object, opt_str, page_start, type_error};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::orchestrator::records::{self, Command, Target};

/// Most ids BatchGetDeploymentTargets takes.
const TARGET_BATCH_LIMIT: usize = 25;
/// Most ids BatchGetDeploymentInstances takes.
const INSTANCE_BATCH_LIMIT: usize = 100;
/// Ids per List* page.
const PAGE_SIZE: usize = 100;
/// Every `TargetStatus` / `InstanceStatus`.
const TARGET_STATUSES: [&str; 7] = ["Pending", "InProgress", "Succeeded", "Failed", "Skipped", "Unknown", "Ready"];

fn required_id(input: &Value) -> Result<String, ApiError> {
    match opt_str(input, "deploymentId")? {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(ApiError::client("DeploymentIdRequiredException", "deploymentId is required")),
    }
}

/// The deployment's targets with their commands.
async fn load_all(conn: &mut AnyConnection, deployment_id: &str) -> Result<Vec<(Target, Vec<Command>)>, ApiError> {
    require_deployment(conn, deployment_id).await?;
    let targets = records::targets_of(conn, deployment_id).await?;
    let commands = records::commands_of(conn, deployment_id).await?;
    Ok(targets
        .into_iter()
        .map(|t| {
            let own = commands.iter().filter(|c| c.instance_name == t.instance_name).cloned().collect();
            (t, own)
        })
        .collect())
}

/// One page of `ids` (sorted) after the request's nextToken.
fn paged(input: &Value, ids: Vec<String>) -> Result<(Vec<String>, Option<String>), ApiError> {
    let start = page_start(input)?;
    let after: Vec<String> = ids.into_iter().filter(|id| start.as_deref().is_none_or(|s| id.as_str() > s)).collect();
    let page: Vec<String> = after.iter().take(PAGE_SIZE).cloned().collect();
    let token = (after.len() > PAGE_SIZE).then(|| page.last().map(|last| encode_token(last))).flatten();
    Ok((page, token))
}

fn page_output(ids_field: &str, (ids, token): (Vec<String>, Option<String>)) -> Value {
    let mut output = json!({ ids_field: ids });
    if let Some(token) = token {
        output["nextToken"] = json!(token);
    }
    output
}

fn statuses_filter(values: Option<&Vec<Value>>, field: &str, exception: &str) -> Result<Vec<String>, ApiError> {
    let mut statuses = Vec::new();
    for v in values.into_iter().flatten() {
        match v.as_str() {
            Some(s) if TARGET_STATUSES.contains(&s) => statuses.push(s.to_string()),
            _ => return Err(ApiError::client(exception, format!("{field}: {v} is not an instance status"))),
        }
    }
    Ok(statuses)
}

/// `ListDeploymentTargets`: filters TargetStatus and ServerInstanceLabel
/// (in-place targets have no label, so any label filter matches none).
pub async fn list_deployment_targets(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let filters = opt_object(&input, "targetFilters")?;
    let mut statuses = Vec::new();
    let mut labelled = false;
    if let Some(filters) = filters.and_then(Value::as_object) {
        for (name, values) in filters {
            let values = values.as_array().ok_or_else(|| type_error(name, values, "a list of strings"))?;
            match name.as_str() {
                "TargetStatus" => statuses = statuses_filter(Some(values), name, "InvalidInstanceStatusException")?,
                "ServerInstanceLabel" => labelled = !values.is_empty(),
                other => {
                    return Err(ApiError::client(
                        "InvalidTargetFilterNameException",
                        format!("targetFilters: {other:?} is not TargetStatus or ServerInstanceLabel"),
                    ));
                }
            }
        }
    }
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let ids = all
        .into_iter()
        .filter(|(t, _)| !labelled && (statuses.is_empty() || statuses.contains(&t.status)))
        .map(|(t, _)| t.instance_name)
        .collect();
    Ok(page_output("targetIds", paged(&input, ids)?))
}

fn target_json(deployment_id: &str, target: &Target, commands: &[Command]) -> Value {
    json!({ "deploymentTargetType": "InstanceTarget", "instanceTarget": target.instance_target(deployment_id, commands) })
}

/// `GetDeploymentTarget`.
pub async fn get_deployment_target(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let target_id = match opt_str(&input, "targetId")? {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return Err(ApiError::client("DeploymentTargetIdRequiredException", "targetId is required")),
    };
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let (target, commands) =
        all.iter().find(|(t, _)| t.instance_name == target_id).ok_or_else(|| target_missing(&id, &target_id))?;
    Ok(json!({ "deploymentTarget": target_json(&id, target, commands) }))
}

fn target_missing(id: &str, target: &str) -> ApiError {
    ApiError::client("DeploymentTargetDoesNotExistException", format!("deployment {id} has no target {target:?}"))
}

fn id_list(
    input: &Value,
    field: &str,
    required: &str,
    limit: usize,
    limit_exception: &str,
) -> Result<Vec<String>, ApiError> {
    let items = opt_array(input, field)?.ok_or_else(|| ApiError::client(required, format!("{field} is required")))?;
    if items.len() > limit {
        return Err(ApiError::client(
            limit_exception,
            format!("{field} has {} ids; at most {limit} are allowed", items.len()),
        ));
    }
    items
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| type_error(field, v, "a list of strings")))
        .collect()
}

/// `BatchGetDeploymentTargets`: every id must be a target.
pub async fn batch_get_deployment_targets(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let wanted = id_list(
        &input,
        "targetIds",
        "DeploymentTargetIdRequiredException",
        TARGET_BATCH_LIMIT,
        "DeploymentTargetListSizeExceededException",
    )?;
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let mut out = Vec::with_capacity(wanted.len());
    for target_id in &wanted {
        let (target, commands) =
            all.iter().find(|(t, _)| &t.instance_name == target_id).ok_or_else(|| target_missing(&id, target_id))?;
        out.push(target_json(&id, target, commands));
    }
    Ok(json!({ "deploymentTargets": out }))
}

/// `ListDeploymentInstances`: instanceStatusFilter; instanceTypeFilter
/// (Blue/Green) matches nothing of an in-place deployment.
pub async fn list_deployment_instances(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let statuses = statuses_filter(
        opt_array(&input, "instanceStatusFilter")?,
        "instanceStatusFilter",
        "InvalidInstanceStatusException",
    )?;
    let mut typed = false;
    for t in opt_array(&input, "instanceTypeFilter")?.into_iter().flatten() {
        match t.as_str() {
            Some("Blue" | "Green") => typed = true,
            _ => {
                return Err(ApiError::client(
                    "InvalidInstanceTypeException",
                    format!("instanceTypeFilter: {t} is not Blue or Green"),
                ));
            }
        }
    }
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let ids = all
        .into_iter()
        .filter(|(t, _)| !typed && (statuses.is_empty() || statuses.contains(&t.status)))
        .map(|(t, _)| t.instance_name)
        .collect();
    Ok(page_output("instancesList", paged(&input, ids)?))
}

/// `GetDeploymentInstance`.
pub async fn get_deployment_instance(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let instance = match opt_str(&input, "instanceId")? {
        Some(i) if !i.is_empty() => i.to_string(),
        _ => return Err(ApiError::client("InstanceIdRequiredException", "instanceId is required")),
    };
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let (target, commands) = all.iter().find(|(t, _)| t.instance_name == instance).ok_or_else(|| {
        ApiError::client("InstanceDoesNotExistException", format!("deployment {id} has no instance {instance:?}"))
    })?;
    Ok(json!({ "instanceSummary": target.instance_summary(&id, commands) }))
}

/// `BatchGetDeploymentInstances`: unknown ids are named in errorMessage.
pub async fn batch_get_deployment_instances(state: &State, input: Value) -> OpResult {
    let id = required_id(&input)?;
    let wanted = id_list(
        &input,
        "instanceIds",
        "InstanceIdRequiredException",
        INSTANCE_BATCH_LIMIT,
        "BatchLimitExceededException",
    )?;
    let mut conn = state.store.pool.acquire().await?;
    let all = load_all(&mut conn, &id).await?;
    let mut summaries = Vec::new();
    let mut missing = Vec::new();
    for instance in &wanted {
        match all.iter().find(|(t, _)| &t.instance_name == instance) {
            Some((target, commands)) => summaries.push(target.instance_summary(&id, commands)),
            None => missing.push(instance.as_str()),
        }
    }
    let mut output = json!({ "instancesSummary": summaries });
    if !missing.is_empty() {
        output["errorMessage"] = json!(format!("not instances of deployment {id}: {}", missing.join(", ")));
    }
    Ok(output)
}
