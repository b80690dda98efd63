//! Deployment groups (with on-premises tag filters and tag sets): control API operations.
//!
//! A row of `deployment_groups` per group; `doc` is the group's
//! `DeploymentGroupInfo` (plus its own `tags`, never output). The columns
//! `deployment_group_name` and `deployment_config_name` mirror the document.
//! Every change of the document goes through [`update_group_doc`], a
//! compare-and-swap, so that the control API and the orchestrator never
//! lose each other's writes.

use serde_json::{Value, json};

use super::applications::require_application;
use super::configs::{DEFAULT_CONFIG, check_config_exists};
use super::group_settings;
use super::instances::registered_with_tags;
use super::revisions::retarget_group;
use super::validate::{
    APPLICATION_NAME, DEPLOYMENT_CONFIG_NAME, DEPLOYMENT_GROUP_NAME, PAGE_SIZE, is_unique_violation, new_uuid, opt_str,
    page, page_start,
};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};

pub use super::tags::{group_matches_instance, tag_filter_matches};

/// How many times a document update is retried when someone else changed
/// the document in between.
const CAS_ATTEMPTS: usize = 20;

fn does_not_exist(app: &str, group: &str) -> ApiError {
    ApiError::client(
        "DeploymentGroupDoesNotExistException",
        format!("deployment group {group:?} of application {app:?} does not exist"),
    )
}

fn already_exists(app: &str, group: &str) -> ApiError {
    ApiError::client(
        "DeploymentGroupAlreadyExistsException",
        format!("deployment group {group:?} of application {app:?} already exists"),
    )
}

/// The group's `DeploymentGroupInfo`: the document without its own tags.
pub fn group_info(doc: &Value) -> Value {
    let mut info = doc.clone();
    if let Some(map) = info.as_object_mut() {
        map.remove("tags");
    }
    info
}

fn parse_doc(text: &str, group_id: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::internal(format!("deployment group {group_id}: bad doc: {e}")))
}

async fn find_group(state: &State, app: &str, group: &str) -> Result<Option<(String, Value)>, ApiError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT deployment_group_id, doc FROM deployment_groups WHERE application_name = $1 AND deployment_group_name = $2",
    )
    .bind(app)
    .bind(group)
    .fetch_optional(&state.store.pool)
    .await?;
    row.map(|(id, doc)| parse_doc(&doc, &id).map(|doc| (id, group_info(&doc)))).transpose()
}

/// The group `group` of application `app`: its id and `DeploymentGroupInfo`.
/// ApplicationDoesNotExistException or DeploymentGroupDoesNotExistException.
pub async fn load_group(state: &State, app: &str, group: &str) -> Result<(String, Value), ApiError> {
    require_application(state, app).await?;
    find_group(state, app, group).await?.ok_or_else(|| does_not_exist(app, group))
}

/// The registered (not deregistered) instances group `group` of `app`
/// selects by its tag filters or tag set, sorted by name.
pub async fn resolve_targets(state: &State, application_name: &str, group_name: &str) -> Result<Vec<String>, ApiError> {
    let (_, doc) = load_group(state, application_name, group_name).await?;
    let instances = registered_with_tags(state).await?;
    Ok(instances.into_iter().filter(|(_, tags)| group_matches_instance(&doc, tags)).map(|(name, _)| name).collect())
}

/// Changes the document of group `group_id` with `change`, atomically with
/// respect to other writers (compare-and-swap on the document, retried).
/// The name and configuration columns follow the document. Returns the new
/// document. DeploymentGroupDoesNotExistException when the group is gone;
/// DeploymentGroupAlreadyExistsException when a rename collides.
pub async fn update_group_doc<F>(state: &State, group_id: &str, mut change: F) -> Result<Value, ApiError>
where
    F: FnMut(&mut Value) -> Result<(), ApiError>,
{
    for _ in 0..CAS_ATTEMPTS {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT application_name, doc FROM deployment_groups WHERE deployment_group_id = $1")
                .bind(group_id)
                .fetch_optional(&state.store.pool)
                .await?;
        let Some((app, old_text)) = row else {
            return Err(ApiError::client(
                "DeploymentGroupDoesNotExistException",
                format!("deployment group {group_id} does not exist"),
            ));
        };
        let mut doc = parse_doc(&old_text, group_id)?;
        change(&mut doc)?;
        let name = doc.get("deploymentGroupName").and_then(Value::as_str).unwrap_or_default().to_string();
        let config = doc.get("deploymentConfigName").and_then(Value::as_str).unwrap_or(DEFAULT_CONFIG).to_string();
        let updated = sqlx::query(
            "UPDATE deployment_groups SET deployment_group_name = $1, deployment_config_name = $2, doc = $3 WHERE deployment_group_id = $4 AND doc = $5",
        )
        .bind(&name)
        .bind(&config)
        .bind(doc.to_string())
        .bind(group_id)
        .bind(&old_text)
        .execute(&state.store.pool)
        .await
        .map_err(|e| if is_unique_violation(&e) { already_exists(&app, &name) } else { e.into() })?;
        if updated.rows_affected() == 1 {
            return Ok(doc);
        }
    }
    Err(ApiError::internal(format!(
        "deployment group {group_id}: document kept changing; gave up after {CAS_ATTEMPTS} attempts"
    )))
}

/// Refuses webhook targets on loopback, link-local or private addresses
/// (unless the server allows them): `triggerConfigurations` of `doc`.
async fn check_webhooks(state: &State, doc: &Value) -> Result<(), ApiError> {
    let settings = &state.settings.triggers;
    let triggers = doc.get("triggerConfigurations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for trigger in triggers {
        let name = trigger.get("triggerName").and_then(Value::as_str).unwrap_or_default();
        let Some(url) = trigger.get("triggerTargetArn").and_then(Value::as_str) else { continue };
        crate::server::triggers::address::check_url(url, settings.allow_private, WEBHOOK_RESOLVE_WAIT)
            .await
            .map_err(|e| ApiError::client("InvalidTriggerConfigException", format!("trigger {name:?}: {e}")))?;
    }
    Ok(())
}

/// How long a webhook's host name may take to resolve when it is configured.
const WEBHOOK_RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `CreateDeploymentGroup`.
pub async fn create_deployment_group(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let name = DEPLOYMENT_GROUP_NAME.required(&input)?;
    let config = DEPLOYMENT_CONFIG_NAME.optional(&input)?.unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    let role = opt_str(&input, "serviceRoleArn")?
        .ok_or_else(|| ApiError::client("RoleRequiredException", "serviceRoleArn is required"))?;
    group_settings::check_role(role)?;
    let id = new_uuid();
    let mut doc = group_settings::defaults();
    group_settings::apply(&mut doc, &input)?;
    group_settings::apply_tags(&mut doc, &input)?;
    check_webhooks(state, &doc).await?;
    require_application(state, &app).await?;
    check_config_exists(state, &config).await?;
    if find_group(state, &app, &name).await?.is_some() {
        return Err(already_exists(&app, &name));
    }
    doc["applicationName"] = json!(app);
    doc["deploymentGroupId"] = json!(id);
    doc["deploymentGroupName"] = json!(name);
    doc["deploymentConfigName"] = json!(config);
    sqlx::query(
        "INSERT INTO deployment_groups (deployment_group_id, application_name, deployment_group_name, deployment_config_name, doc) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(&app)
    .bind(&name)
    .bind(&config)
    .bind(doc.to_string())
    .execute(&state.store.pool)
    .await
    .map_err(|e| if is_unique_violation(&e) { already_exists(&app, &name) } else { e.into() })?;
    Ok(json!({ "deploymentGroupId": id }))
}

/// `GetDeploymentGroup`.
pub async fn get_deployment_group(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let name = DEPLOYMENT_GROUP_NAME.required(&input)?;
    let (_, info) = load_group(state, &app, &name).await?;
    Ok(json!({ "deploymentGroupInfo": info }))
}

/// `BatchGetDeploymentGroups`: the groups that exist, and an
/// `errorMessage` naming those that do not.
pub async fn batch_get_deployment_groups(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let names = DEPLOYMENT_GROUP_NAME.batch(&input, "deploymentGroupNames")?;
    require_application(state, &app).await?;
    let mut infos = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in &names {
        match find_group(state, &app, name).await? {
            Some((_, info)) => infos.push(info),
            None => missing.push(name.as_str()),
        }
    }
    let mut output = json!({ "deploymentGroupsInfo": infos });
    if !missing.is_empty() {
        output["errorMessage"] =
            json!(format!("deployment groups of application {app:?} that do not exist: {}", missing.join(", ")));
    }
    Ok(output)
}

/// `ListDeploymentGroups`: names in byte order, [`PAGE_SIZE`] per page.
pub async fn list_deployment_groups(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let after = page_start(&input)?.unwrap_or_default();
    require_application(state, &app).await?;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT deployment_group_name FROM deployment_groups WHERE application_name = $1 AND deployment_group_name > $2 ORDER BY deployment_group_name LIMIT $3",
    )
    .bind(&app)
    .bind(&after)
    .bind(PAGE_SIZE as i64 + 1)
    .fetch_all(&state.store.pool)
    .await?;
    let (names, next) = page(rows.into_iter().map(|(n,)| n).collect());
    let mut output = json!({ "applicationName": app, "deploymentGroups": names });
    if let Some(token) = next {
        output["nextToken"] = json!(token);
    }
    Ok(output)
}

/// `UpdateDeploymentGroup`: renames the group and/or replaces the settings given.
pub async fn update_deployment_group(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let current = DEPLOYMENT_GROUP_NAME.field("currentDeploymentGroupName").required(&input)?;
    let new_name = DEPLOYMENT_GROUP_NAME.field("newDeploymentGroupName").optional(&input)?;
    let config = DEPLOYMENT_CONFIG_NAME.optional(&input)?;
    let (id, _) = load_group(state, &app, &current).await?;
    if let Some(config) = &config {
        check_config_exists(state, config).await?;
    }
    check_webhooks(state, &input).await?;
    if let Some(new_name) = new_name.as_deref().filter(|n| *n != current)
        && find_group(state, &app, new_name).await?.is_some()
    {
        return Err(already_exists(&app, new_name));
    }
    update_group_doc(state, &id, |doc| {
        group_settings::apply(doc, &input)?;
        if let Some(new_name) = &new_name {
            doc["deploymentGroupName"] = json!(new_name);
        }
        if let Some(config) = &config {
            doc["deploymentConfigName"] = json!(config);
        }
        Ok(())
    })
    .await?;
    if let Some(new_name) = new_name.as_deref().filter(|n| *n != current) {
        retarget_group(state, &app, &current, Some(new_name), None).await?;
    }
    Ok(json!({ "hooksNotCleanedUp": [] }))
}

/// `DeleteDeploymentGroup`. Deleting a group that does not exist succeeds.
pub async fn delete_deployment_group(state: &State, input: Value) -> OpResult {
    let app = APPLICATION_NAME.required(&input)?;
    let name = DEPLOYMENT_GROUP_NAME.required(&input)?;
    sqlx::query("DELETE FROM deployment_groups WHERE application_name = $1 AND deployment_group_name = $2")
        .bind(&app)
        .bind(&name)
        .execute(&state.store.pool)
        .await?;
    retarget_group(state, &app, &name, None, None).await?;
    Ok(json!({ "hooksNotCleanedUp": [] }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::control::{applications, instances, revisions};
    use crate::server::{Settings, open_state};

    async fn state(name: &str) -> (Arc<State>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("edgedeploy-groups-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (open_state(&dir, None, Settings::default()).await.unwrap(), dir)
    }

    async fn device(state: &State, name: &str, tags: &[(&str, &str)]) {
        let session = instances::session_arn_for(name);
        instances::register(state, name, Some(&session), None, "us-east-1").await.unwrap();
        let tags: Vec<(String, String)> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        instances::add_tags(state, &[name.to_string()], &tags).await.unwrap();
    }

    #[tokio::test]
    async fn targets_are_the_registered_instances_the_group_selects() {
        let (state, dir) = state("targets").await;
        applications::create_application(&state, json!({"applicationName": "app"})).await.unwrap();
        let role = "arn:aws:iam::0:role/r";
        let filters = json!([{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}]);
        let group = json!({"applicationName": "app", "deploymentGroupName": "prod", "serviceRoleArn": role,
                           "onPremisesInstanceTagFilters": filters});
        create_deployment_group(&state, group).await.unwrap();
        let set = json!({"onPremisesTagSetList": [[{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}],
                                                  [{"Value": "web", "Type": "VALUE_ONLY"}]]});
        let group = json!({"applicationName": "app", "deploymentGroupName": "prod-web", "serviceRoleArn": role,
                           "onPremisesTagSet": set});
        create_deployment_group(&state, group).await.unwrap();
        device(&state, "c", &[("env", "prod"), ("role", "web")]).await;
        device(&state, "a", &[("env", "prod"), ("role", "db")]).await;
        device(&state, "b", &[("env", "dev"), ("role", "web")]).await;
        device(&state, "d", &[("env", "prod"), ("role", "web")]).await;
        instances::deregister_on_premises_instance(&state, json!({"instanceName": "d"})).await.unwrap();

        assert_eq!(resolve_targets(&state, "app", "prod").await.unwrap(), ["a", "c"]);
        assert_eq!(resolve_targets(&state, "app", "prod-web").await.unwrap(), ["c"]);
        let err = resolve_targets(&state, "app", "nope").await.unwrap_err();
        assert_eq!(err.type_, "DeploymentGroupDoesNotExistException");
        let err = load_group(&state, "nope", "prod").await.unwrap_err();
        assert_eq!(err.type_, "ApplicationDoesNotExistException");
        let (id, doc) = load_group(&state, "app", "prod").await.unwrap();
        assert_eq!(doc["deploymentGroupId"], json!(id));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn document_updates_keep_other_writers_fields_and_follow_renames() {
        let (state, dir) = state("cas").await;
        applications::create_application(&state, json!({"applicationName": "app"})).await.unwrap();
        let group = json!({"applicationName": "app", "deploymentGroupName": "g", "serviceRoleArn": "r"});
        create_deployment_group(&state, group).await.unwrap();
        let (id, _) = load_group(&state, "app", "g").await.unwrap();
        let attempt = json!({"deploymentId": "d-1", "status": "InProgress"});
        update_group_doc(&state, &id, |doc| {
            doc["lastAttemptedDeployment"] = attempt.clone();
            Ok(())
        })
        .await
        .unwrap();
        let update = json!({"applicationName": "app", "currentDeploymentGroupName": "g", "newDeploymentGroupName": "h",
                            "deploymentConfigName": "CodeDeployDefault.AllAtOnce"});
        update_deployment_group(&state, update).await.unwrap();
        let (same_id, doc) = load_group(&state, "app", "h").await.unwrap();
        assert_eq!(same_id, id);
        assert_eq!(doc["lastAttemptedDeployment"], attempt);
        assert_eq!(doc["deploymentConfigName"], "CodeDeployDefault.AllAtOnce");
        let (config,): (String,) =
            sqlx::query_as("SELECT deployment_config_name FROM deployment_groups WHERE deployment_group_id = $1")
                .bind(&id)
                .fetch_one(&state.store.pool)
                .await
                .unwrap();
        assert_eq!(config, "CodeDeployDefault.AllAtOnce");

        let revision =
            json!({"revisionType": "S3", "s3Location": {"bucket": "b", "key": "v1.tgz", "bundleType": "tgz"}});
        revisions::record_revision_use(&state, "app", &revision, "h").await.unwrap();
        let rename =
            json!({"applicationName": "app", "currentDeploymentGroupName": "h", "newDeploymentGroupName": "k"});
        update_deployment_group(&state, rename).await.unwrap();
        let got = revisions::get_application_revision(&state, json!({"applicationName": "app", "revision": revision}))
            .await
            .unwrap();
        assert_eq!(got["revisionInfo"]["deploymentGroups"], json!(["k"]));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
