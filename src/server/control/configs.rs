//! Deployment configurations (with the predefined CodeDeployDefault.*): control API operations.
//!
//! The three predefined configurations are not rows: they always exist,
//! cannot be created or deleted, and come first in listings. Custom ones
//! are rows of `deployment_configs`.

use serde_json::{Value, json};

use super::validate::{
    DEPLOYMENT_CONFIG_NAME, is_unique_violation, new_uuid, opt_enum, opt_i64, opt_object, page_in_memory, page_start,
};
use crate::server::State;
use crate::server::api::{ApiError, OpResult};
use crate::server::store::{now_millis, wire_time};

/// `minimumHealthyHosts.type` counting instances.
pub const HOST_COUNT: &str = "HOST_COUNT";
/// `minimumHealthyHosts.type` counting a percentage of the deployment's instances.
pub const FLEET_PERCENT: &str = "FLEET_PERCENT";
/// `minimumHealthyHosts.type` of CodeDeployDefault.OneAtATime only (value 1):
/// one instance at a time; the deployment succeeds when every instance but
/// the last succeeded. It cannot be used in CreateDeploymentConfig.
pub const MOST_CONCURRENCY: &str = "MOST_CONCURRENCY";
/// The configuration of groups that do not name one.
pub const DEFAULT_CONFIG: &str = "CodeDeployDefault.OneAtATime";
/// Largest FLEET_PERCENT: at 100 no instance could ever be taken offline.
pub const MAX_FLEET_PERCENT: i64 = 99;

const RESERVED_PREFIX: &str = "CodeDeployDefault.";
/// When AWS created its predefined configurations (their GetDeploymentConfig example).
const PREDEFINED_CREATE_TIME: i64 = 1_446_744_188_711;

/// A predefined configuration: name, id, minimum healthy hosts type and value.
struct Predefined {
    name: &'static str,
    id: &'static str,
    kind: &'static str,
    value: i64,
}

/// The predefined configurations, in name order. OneAtATime's id and type
/// are those of AWS's GetDeploymentConfig example; AllAtOnce (success when
/// any instance succeeds) and HalfAtATime (at least half, rounded up) as the
/// user guide describes them.
const PREDEFINED: [Predefined; 3] = [
    Predefined {
        name: "CodeDeployDefault.AllAtOnce",
        id: "00000000-0000-0000-0000-000000000003",
        kind: HOST_COUNT,
        value: 0,
    },
    Predefined {
        name: "CodeDeployDefault.HalfAtATime",
        id: "00000000-0000-0000-0000-000000000002",
        kind: FLEET_PERCENT,
        value: 50,
    },
    Predefined {
        name: "CodeDeployDefault.OneAtATime",
        id: "00000000-0000-0000-0000-000000000001",
        kind: MOST_CONCURRENCY,
        value: 1,
    },
];

fn predefined(name: &str) -> Option<&'static Predefined> {
    PREDEFINED.iter().find(|p| p.name == name)
}

/// A deployment configuration, predefined or custom.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    id: String,
    name: String,
    kind: String,
    value: i64,
    create_time: i64,
}

impl Config {
    fn info(&self) -> Value {
        json!({
            "deploymentConfigId": self.id,
            "deploymentConfigName": self.name,
            "minimumHealthyHosts": { "type": self.kind, "value": self.value },
            "createTime": wire_time(self.create_time),
            "computePlatform": "Server",
        })
    }
}

async fn find_config(state: &State, name: &str) -> Result<Option<Config>, ApiError> {
    if let Some(p) = predefined(name) {
        return Ok(Some(Config {
            id: p.id.into(),
            name: p.name.into(),
            kind: p.kind.into(),
            value: p.value,
            create_time: PREDEFINED_CREATE_TIME,
        }));
    }
    let row: Option<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT deployment_config_id, min_healthy_type, min_healthy_value, create_time FROM deployment_configs WHERE deployment_config_name = $1",
    )
    .bind(name)
    .fetch_optional(&state.store.pool)
    .await?;
    Ok(row.map(|(id, kind, value, create_time)| Config { id, name: name.to_string(), kind, value, create_time }))
}

async fn require_config(state: &State, name: &str) -> Result<Config, ApiError> {
    find_config(state, name).await?.ok_or_else(|| {
        ApiError::client(
            "DeploymentConfigDoesNotExistException",
            format!("deployment configuration {name:?} does not exist"),
        )
    })
}

/// The minimum healthy hosts of configuration `config_name`: `(type, value)`
/// with type [`HOST_COUNT`], [`FLEET_PERCENT`] or, for
/// CodeDeployDefault.OneAtATime only, [`MOST_CONCURRENCY`] (value 1).
/// DeploymentConfigDoesNotExistException when there is no such configuration.
pub async fn min_healthy(state: &State, config_name: &str) -> Result<(String, i64), ApiError> {
    let config = require_config(state, config_name).await?;
    Ok((config.kind, config.value))
}

/// Checks that configuration `name` exists (DeploymentConfigDoesNotExistException).
pub async fn check_config_exists(state: &State, name: &str) -> Result<(), ApiError> {
    require_config(state, name).await.map(drop)
}

fn invalid_min_healthy(message: String) -> ApiError {
    ApiError::client("InvalidMinimumHealthyHostValueException", message)
}

/// `minimumHealthyHosts` of CreateDeploymentConfig: HOST_COUNT >= 0 or
/// FLEET_PERCENT 0..=99.
fn parse_min_healthy(input: &Value) -> Result<(String, i64), ApiError> {
    let hosts = opt_object(input, "minimumHealthyHosts")?
        .ok_or_else(|| invalid_min_healthy("minimumHealthyHosts is required for the Server compute platform".into()))?;
    let kind = opt_enum(hosts, "type", &[HOST_COUNT, FLEET_PERCENT], "InvalidMinimumHealthyHostValueException")?
        .ok_or_else(|| {
            invalid_min_healthy("minimumHealthyHosts.type is required: HOST_COUNT or FLEET_PERCENT".into())
        })?;
    let value =
        opt_i64(hosts, "value")?.ok_or_else(|| invalid_min_healthy("minimumHealthyHosts.value is required".into()))?;
    let max = if kind == FLEET_PERCENT { MAX_FLEET_PERCENT } else { i64::from(i32::MAX) };
    if !(0..=max).contains(&value) {
        return Err(invalid_min_healthy(format!(
            "minimumHealthyHosts.value {value} is out of range 0..={max} for {kind}"
        )));
    }
    Ok((kind.to_string(), value))
}

/// Refuses what a Server configuration cannot have.
fn check_server_only(input: &Value) -> Result<(), ApiError> {
    let platform = opt_enum(input, "computePlatform", &["Server", "Lambda", "ECS"], "InvalidComputePlatformException")?;
    if let Some(platform) = platform.filter(|p| *p != "Server") {
        return Err(ApiError::client(
            "InvalidComputePlatformException",
            format!(
                "computePlatform {platform:?} is not supported: this server deploys to on-premises instances (Server) only"
            ),
        ));
    }
    if let Some(routing) = opt_object(input, "trafficRoutingConfig")?
        && routing.get("type").and_then(Value::as_str) != Some("AllAtOnce")
    {
        return Err(ApiError::client(
            "InvalidTrafficRoutingConfigurationException",
            format!(
                "trafficRoutingConfig {routing} is for Lambda and ECS deployments; Server configurations only take {{\"type\": \"AllAtOnce\"}}"
            ),
        ));
    }
    if opt_object(input, "zonalConfig")?.is_some() {
        return Err(ApiError::client(
            "InvalidZonalDeploymentConfigurationException",
            "zonalConfig is not supported: on-premises instances have no Availability Zone",
        ));
    }
    Ok(())
}

fn already_exists(name: &str) -> ApiError {
    ApiError::client(
        "DeploymentConfigAlreadyExistsException",
        format!("deployment configuration {name:?} already exists"),
    )
}

/// `CreateDeploymentConfig`.
pub async fn create_deployment_config(state: &State, input: Value) -> OpResult {
    let name = DEPLOYMENT_CONFIG_NAME.required(&input)?;
    if predefined(&name).is_some() {
        return Err(already_exists(&name));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::client(
            "InvalidDeploymentConfigNameException",
            format!(
                "deploymentConfigName {name:?} is invalid: the prefix {RESERVED_PREFIX} is reserved for predefined configurations"
            ),
        ));
    }
    check_server_only(&input)?;
    let (kind, value) = parse_min_healthy(&input)?;
    if find_config(state, &name).await?.is_some() {
        return Err(already_exists(&name));
    }
    let id = new_uuid();
    let doc = json!({ "computePlatform": "Server", "minimumHealthyHosts": { "type": kind, "value": value } });
    sqlx::query(
        "INSERT INTO deployment_configs (deployment_config_id, deployment_config_name, compute_platform, min_healthy_type, min_healthy_value, create_time, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&name)
    .bind("Server")
    .bind(&kind)
    .bind(value)
    .bind(now_millis())
    .bind(doc.to_string())
    .execute(&state.store.pool)
    .await
    .map_err(|e| if is_unique_violation(&e) { already_exists(&name) } else { e.into() })?;
    Ok(json!({ "deploymentConfigId": id }))
}

/// `GetDeploymentConfig`.
pub async fn get_deployment_config(state: &State, input: Value) -> OpResult {
    let name = DEPLOYMENT_CONFIG_NAME.required(&input)?;
    Ok(json!({ "deploymentConfigInfo": require_config(state, &name).await?.info() }))
}

/// `ListDeploymentConfigs`: predefined and custom names, in byte order.
pub async fn list_deployment_configs(state: &State, input: Value) -> OpResult {
    let start = page_start(&input)?;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT deployment_config_name FROM deployment_configs").fetch_all(&state.store.pool).await?;
    let mut names: Vec<String> = PREDEFINED.iter().map(|p| p.name.to_string()).collect();
    names.extend(rows.into_iter().map(|(n,)| n));
    names.sort();
    names.dedup();
    let (names, next) = page_in_memory(names, start.as_deref());
    let mut output = json!({ "deploymentConfigsList": names });
    if let Some(token) = next {
        output["nextToken"] = json!(token);
    }
    Ok(output)
}

/// `DeleteDeploymentConfig`: refused for predefined configurations and for
/// those a deployment group or an active deployment uses. Deleting one that
/// does not exist succeeds.
pub async fn delete_deployment_config(state: &State, input: Value) -> OpResult {
    let name = DEPLOYMENT_CONFIG_NAME.required(&input)?;
    if predefined(&name).is_some() {
        return Err(ApiError::client(
            "InvalidOperationException",
            format!("{name} is a predefined deployment configuration and cannot be deleted"),
        ));
    }
    if let Some(user) = config_user(state, &name).await? {
        return Err(ApiError::client(
            "DeploymentConfigInUseException",
            format!("deployment configuration {name:?} is used by {user}"),
        ));
    }
    sqlx::query("DELETE FROM deployment_configs WHERE deployment_config_name = $1")
        .bind(&name)
        .execute(&state.store.pool)
        .await?;
    Ok(json!({}))
}

/// A deployment group or active deployment using configuration `name`.
async fn config_user(state: &State, name: &str) -> Result<Option<String>, ApiError> {
    let group: Option<(String, String)> = sqlx::query_as(
        "SELECT application_name, deployment_group_name FROM deployment_groups WHERE deployment_config_name = $1 ORDER BY application_name, deployment_group_name LIMIT 1",
    )
    .bind(name)
    .fetch_optional(&state.store.pool)
    .await?;
    if let Some((app, group)) = group {
        return Ok(Some(format!("deployment group {group:?} of application {app:?}")));
    }
    let active: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.deployment_id, d.doc FROM active_deployments a JOIN deployments d ON d.deployment_id = a.deployment_id",
    )
    .fetch_all(&state.store.pool)
    .await?;
    Ok(active.into_iter().find_map(|(id, doc)| {
        let doc: Value = serde_json::from_str(&doc).ok()?;
        (doc.get("deploymentConfigName").and_then(Value::as_str) == Some(name))
            .then(|| format!("active deployment {id}"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_configurations_are_sorted_and_named_by_aws() {
        let names: Vec<&str> = PREDEFINED.iter().map(|p| p.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(predefined(DEFAULT_CONFIG).is_some());
    }

    #[test]
    fn minimum_healthy_hosts_are_range_checked() {
        let ok = |v: Value| parse_min_healthy(&json!({ "minimumHealthyHosts": v }));
        assert_eq!(ok(json!({"type": "HOST_COUNT", "value": 0})).unwrap(), ("HOST_COUNT".into(), 0));
        assert_eq!(ok(json!({"type": "FLEET_PERCENT", "value": 99})).unwrap(), ("FLEET_PERCENT".into(), 99));
        for bad in [
            json!({"type": "FLEET_PERCENT", "value": 100}),
            json!({"type": "HOST_COUNT", "value": -1}),
            json!({"type": "MOST_CONCURRENCY", "value": 1}),
            json!({"type": "HOST_COUNT"}),
            json!({"value": 1}),
        ] {
            assert_eq!(ok(bad.clone()).unwrap_err().type_, "InvalidMinimumHealthyHostValueException", "{bad}");
        }
        let err = parse_min_healthy(&json!({})).unwrap_err();
        assert_eq!(err.type_, "InvalidMinimumHealthyHostValueException");
    }

    #[test]
    fn lambda_and_ecs_settings_are_refused() {
        assert_eq!(
            check_server_only(&json!({"computePlatform": "Lambda"})).unwrap_err().type_,
            "InvalidComputePlatformException"
        );
        let canary = json!({"trafficRoutingConfig": {"type": "TimeBasedCanary"}});
        assert_eq!(check_server_only(&canary).unwrap_err().type_, "InvalidTrafficRoutingConfigurationException");
        assert!(
            check_server_only(&json!({"computePlatform": "Server", "trafficRoutingConfig": {"type": "AllAtOnce"}}))
                .is_ok()
        );
    }
}
