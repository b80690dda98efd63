//! The command API for agents (`CodeDeployCommandService_v20141006.*`):
//! an instance polls for its next lifecycle event, fetches the deployment
//! specification, acknowledges and completes the event. Every request acts
//! for the calling instance only. Rules: `docs/orchestrator.md`.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::State;
use super::api::{ApiError, OpResult};
use super::auth::Identity;
use super::orchestrator::records::{self, COMMAND_COLUMNS, Command, Deployment, INTERNAL};
use super::orchestrator::rules::{self, CommandState};
use super::store::now_millis;
use crate::protocol::command::{
    FORMAT_TEXT_JSON, GetDeploymentSpecificationInput, PollHostCommandInput, PutHostCommandAcknowledgementInput,
    PutHostCommandCompleteInput,
};
use crate::protocol::spec::{
    AgentActionOverrides, AgentOverrides, DeploymentSpec, GitHubRevision, Revision, S3Revision, UrlRevision,
};

/// First part of every DeploymentExecutionId of this server.
const EXECUTION_PREFIX: &str = "edgedeploy";
/// The region part of DeploymentExecutionIds.
const REGION: &str = "local";
/// Longest diagnostics text kept per field.
const MAX_DIAGNOSTIC_CHARS: usize = 8192;

/// Runs command API `operation` for `identity`.
pub async fn dispatch(state: &State, identity: &Identity, operation: &str, input: Value) -> OpResult {
    let Identity::Instance(instance) = identity else {
        return Err(ApiError::new(
            403,
            "AccessDeniedException",
            "the command API is for registered instances; sign with the instance's key, not the admin's",
        ));
    };
    match operation {
        "PollHostCommand" => poll_host_command(state, instance, parse(input)?).await,
        "GetDeploymentSpecification" => get_deployment_specification(state, instance, parse(input)?).await,
        "PutHostCommandAcknowledgement" => acknowledge(state, instance, parse(input)?).await,
        "PutHostCommandComplete" => complete(state, instance, parse(input)?).await,
        _ => Err(ApiError::client("UnknownOperationException", format!("operation {operation:?} is not supported"))),
    }
}

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| ApiError::client("ClientException", format!("invalid input: {e}")))
}

fn denied(message: String) -> ApiError {
    ApiError::new(403, "AccessDeniedException", message)
}

/// Refuses a HostIdentifier that is not the caller's own instance, by name
/// or by instance ARN.
async fn check_host(state: &State, instance: &str, host: &str) -> Result<(), ApiError> {
    if host == instance {
        return Ok(());
    }
    let arn: Option<(String,)> = sqlx::query_as("SELECT instance_arn FROM instances WHERE instance_name = $1")
        .bind(instance)
        .fetch_optional(&state.store.pool)
        .await?;
    match arn {
        Some((arn,)) if arn == host => Ok(()),
        _ => Err(denied(format!("instance {instance} may not act for host {host:?}"))),
    }
}

/// The command `id`, which must be the caller's.
async fn own_command(state: &State, instance: &str, id: &str) -> Result<Command, ApiError> {
    let mut conn = state.store.pool.acquire().await?;
    let command = records::load_command(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::client("ClientException", format!("unknown HostCommandIdentifier {id:?}")))?;
    if command.instance_name != instance {
        return Err(denied(format!("host command {id} belongs to another instance than {instance}")));
    }
    Ok(command)
}

/// `edgedeploy/local/<deployment id>/<instance name>`.
pub fn execution_id(deployment_id: &str, instance: &str) -> String {
    format!("{EXECUTION_PREFIX}/{REGION}/{deployment_id}/{instance}")
}

/// Locks the row of deployment `id` until the end of the transaction (a
/// no-op UPDATE: PostgreSQL takes the row lock, SQLite its write lock),
/// when it is still active or `active_only` is false. Every transaction
/// that changes the status of a deployment's targets or commands takes this
/// lock first (the orchestrator's `advance`, StopDeployment, a claim, a
/// completion), so on PostgreSQL's READ COMMITTED each of them sees the
/// others' work whole, and none decides on a state another one is changing.
/// Returns false when there is no such (active) deployment.
async fn lock_deployment(conn: &mut sqlx::AnyConnection, id: &str, active_only: bool) -> Result<bool, sqlx::Error> {
    let sql = if active_only {
        "UPDATE deployments SET status = status WHERE deployment_id = $1 AND status IN ('Created', 'InProgress')"
    } else {
        "UPDATE deployments SET status = status WHERE deployment_id = $1"
    };
    Ok(sqlx::query(sql).bind(id).execute(&mut *conn).await?.rows_affected() == 1)
}

/// PollHostCommand: the instance's current command, or `{}`.
///
/// A command already handed out (Dispatched) or acknowledged (InProgress)
/// is handed out again with the same identifier: the agent may have
/// crashed after receiving it, and dedupes by identifier. Otherwise the
/// next Pending command of an in-flight instance is claimed by [`claim`],
/// so two replicas never hand out the same or an out-of-order command.
async fn poll_host_command(state: &State, instance: &str, input: PollHostCommandInput) -> OpResult {
    check_host(state, instance, &input.host_identifier).await?;
    let columns: Vec<String> = COMMAND_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect();
    let sql = format!(
        "SELECT {} FROM host_commands c JOIN deployment_targets t \
         ON t.deployment_id = c.deployment_id AND t.instance_name = c.instance_name \
         WHERE c.instance_name = $1 AND t.status = 'InProgress' AND c.status IN ('Pending', 'Dispatched', 'InProgress') \
         ORDER BY c.created_at, c.deployment_id, c.seq",
        columns.join(", ")
    );
    let mut conn = state.store.pool.acquire().await?;
    let open = records::fetch_commands(&mut conn, &sql, &[instance]).await?;
    let handed = open.iter().find(|c| matches!(c.state, CommandState::Dispatched | CommandState::InProgress));
    if let Some(command) = handed {
        return Ok(host_command(command, &input.host_identifier));
    }
    let mut seen = Vec::new();
    for command in &open {
        if seen.contains(&&command.deployment_id) {
            continue;
        }
        seen.push(&command.deployment_id);
        if claim(&mut conn, command).await? {
            log::info!("{instance}: {} of {} handed out", command.name, command.deployment_id);
            return Ok(host_command(command, &input.host_identifier));
        }
    }
    Ok(json!({}))
}

/// Pending → Dispatched for `command`, if it is still Pending, its
/// deployment still active, its instance in flight and every earlier event
/// of the instance over without a failure that stops it. One transaction:
/// the deployment's lock, then one conditional UPDATE whose row count
/// decides. Under the lock no stop, timeout or completion of the same
/// deployment runs in between, so the UPDATE's snapshot (taken after the
/// lock was granted) is the current state; two claims of one command are
/// serialized by the command's row lock and the second finds it Dispatched.
async fn claim(conn: &mut sqlx::AnyConnection, command: &Command) -> Result<bool, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if !lock_deployment(&mut tx, &command.deployment_id, true).await? {
        return Ok(false);
    }
    let claimed = sqlx::query(
        "UPDATE host_commands SET status = 'Dispatched', dispatched_at = $1 WHERE command_id = $2 AND status = 'Pending' \
         AND EXISTS (SELECT 1 FROM deployment_targets t WHERE t.deployment_id = host_commands.deployment_id \
             AND t.instance_name = host_commands.instance_name AND t.status = 'InProgress') \
         AND NOT EXISTS (SELECT 1 FROM host_commands e WHERE e.deployment_id = host_commands.deployment_id \
             AND e.instance_name = host_commands.instance_name AND e.seq < host_commands.seq \
             AND e.status NOT IN ('Succeeded', 'Ignored'))",
    )
    .bind(now_millis())
    .bind(&command.command_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(claimed == 1)
}

fn host_command(command: &Command, host: &str) -> Value {
    json!({ "HostCommand": {
        "HostCommandIdentifier": command.command_id,
        "HostIdentifier": host,
        "DeploymentExecutionId": execution_id(&command.deployment_id, &command.instance_name),
        "CommandName": command.name,
        "Nonce": command.seq,
    }})
}

/// GetDeploymentSpecification: the deployment as the agent needs it, in a
/// `TEXT/JSON` GenericEnvelope.
async fn get_deployment_specification(
    state: &State,
    instance: &str,
    input: GetDeploymentSpecificationInput,
) -> OpResult {
    check_host(state, instance, &input.host_identifier).await?;
    let bad = || {
        ApiError::client(
            "ClientException",
            format!("unknown DeploymentExecutionId {:?}", input.deployment_execution_id),
        )
    };
    let parts: Vec<&str> = input.deployment_execution_id.splitn(4, '/').collect();
    let [EXECUTION_PREFIX, _, deployment_id, target] = parts.as_slice() else { return Err(bad()) };
    if *target != instance {
        return Err(denied(format!(
            "deployment execution {} is not for instance {instance}",
            input.deployment_execution_id
        )));
    }
    let mut conn = state.store.pool.acquire().await?;
    let deployment = records::load_deployment(&mut conn, deployment_id).await?.ok_or_else(bad)?;
    let known: Option<(String,)> =
        sqlx::query_as("SELECT status FROM deployment_targets WHERE deployment_id = $1 AND instance_name = $2")
            .bind(deployment_id)
            .bind(instance)
            .fetch_optional(&mut *conn)
            .await?;
    if known.is_none() {
        return Err(denied(format!("instance {instance} is not a target of deployment {deployment_id}")));
    }
    let spec = specification(&mut conn, &deployment).await?;
    let payload = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    Ok(json!({
        "DeploymentSystem": "CodeDeploy",
        "DeploymentSpecification": { "GenericEnvelope": { "Format": FORMAT_TEXT_JSON, "Payload": payload } },
    }))
}

/// The deployment specification of `deployment`.
pub async fn specification(
    conn: &mut sqlx::AnyConnection,
    deployment: &Deployment,
) -> Result<DeploymentSpec, ApiError> {
    let doc = &deployment.doc;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let location = &doc["revision"];
    let revision = match text(location, "revisionType").as_deref() {
        Some("GitHub") => {
            let gh = &location["gitHubLocation"];
            let repository = text(gh, "repository").unwrap_or_default();
            let (account, repo) = repository.split_once('/').unwrap_or(("", &repository));
            let commit_id = text(gh, "commitId").unwrap_or_default();
            // Ours: where this server archived the commit (docs/revisions.md).
            let archive = crate::server::git::spec_archive(conn, &repository, &commit_id).await?;
            Revision {
                revision_type: "GitHub".into(),
                s3_revision: None,
                github_revision: Some(GitHubRevision {
                    account: account.to_string(),
                    repository: repo.to_string(),
                    commit_id,
                    archive,
                }),
                url_revision: None,
            }
        }
        Some("URL") => {
            let url = &location["urlLocation"];
            Revision {
                revision_type: "URL".into(),
                s3_revision: None,
                github_revision: None,
                url_revision: Some(UrlRevision {
                    url: text(url, "url").unwrap_or_default(),
                    sha256: text(url, "sha256").unwrap_or_default(),
                    bundle_type: text(url, "bundleType").unwrap_or_default(),
                }),
            }
        }
        _ => {
            let s3 = &location["s3Location"];
            let (bucket, key) = (text(s3, "bucket").unwrap_or_default(), text(s3, "key").unwrap_or_default());
            let etag = text(s3, "eTag");
            let stored: Option<(String, String)> =
                sqlx::query_as("SELECT etag, sha256 FROM objects WHERE bucket = $1 AND object_key = $2")
                    .bind(&bucket)
                    .bind(&key)
                    .fetch_optional(&mut *conn)
                    .await?;
            // The store's SHA-256 only when it describes the object the
            // revision names (no ETag given, or the same one).
            let unquote = |s: &str| s.trim_matches('"').to_string();
            let sha256 = stored
                .filter(|(stored_etag, _)| etag.as_deref().is_none_or(|e| unquote(e) == unquote(stored_etag)))
                .map(|(_, sha)| sha);
            Revision {
                revision_type: "S3".into(),
                s3_revision: Some(S3Revision {
                    bucket,
                    key,
                    bundle_type: text(s3, "bundleType").unwrap_or_default(),
                    version: text(s3, "version"),
                    etag,
                    sha256,
                }),
                github_revision: None,
                url_revision: None,
            }
        }
    };
    let events = doc[INTERNAL]["events"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(DeploymentSpec {
        deployment_id: deployment.id.clone(),
        deployment_group_id: deployment.group_id.clone(),
        deployment_group_name: deployment.group_name.clone(),
        application_name: deployment.application_name.clone(),
        deployment_creator: text(doc, "creator").unwrap_or_else(|| "user".into()),
        deployment_type: "IN_PLACE".into(),
        app_spec_filename: crate::appspec::DEFAULT_APPSPEC_FILENAME.into(),
        revision,
        agent_action_overrides: Some(AgentActionOverrides {
            agent_overrides: Some(AgentOverrides { file_exists_behavior: text(doc, "fileExistsBehavior") }),
        }),
        all_possible_lifecycle_events: events,
    })
}

/// PutHostCommandAcknowledgement: Dispatched → InProgress; answers the
/// command's status, Failed when it was ended meanwhile (timeout, stop).
async fn acknowledge(state: &State, instance: &str, input: PutHostCommandAcknowledgementInput) -> OpResult {
    let id = &input.host_command_identifier;
    own_command(state, instance, id).await?;
    let acknowledged = sqlx::query(
        "UPDATE host_commands SET status = 'InProgress', acknowledged_at = $1 WHERE command_id = $2 AND status = 'Dispatched'",
    )
    .bind(now_millis())
    .bind(id)
    .execute(&state.store.pool)
    .await?
    .rows_affected();
    let command = own_command(state, instance, id).await?;
    if acknowledged == 1 {
        log::info!("{instance}: {} of {} acknowledged", command.name, command.deployment_id);
    }
    Ok(json!({ "CommandStatus": command.state.command_status() }))
}

/// PutHostCommandComplete: records the event's outcome and diagnostics,
/// and settles the instance (Failed, or Succeeded after its last event).
/// A completion of a command that is no longer Dispatched or InProgress
/// (delivered twice, or ended by a timeout or a stop) changes nothing.
async fn complete(state: &State, instance: &str, input: PutHostCommandCompleteInput) -> OpResult {
    let id = &input.host_command_identifier;
    let command = own_command(state, instance, id).await?;
    let succeeded = match input.command_status {
        crate::protocol::command::CommandStatus::Succeeded => true,
        crate::protocol::command::CommandStatus::Failed => false,
        other => {
            return Err(ApiError::client(
                "ClientException",
                format!("CommandStatus {other:?}: a completion is Succeeded or Failed"),
            ));
        }
    };
    let diagnostics = read_diagnostics(input.diagnostics.as_ref().map(|e| e.payload.as_str()), succeeded);
    let ignores = {
        let mut conn = state.store.pool.acquire().await?;
        records::load_deployment(&mut conn, &command.deployment_id).await?.is_some_and(|d| d.ignores_stop_failures())
    };
    let now = now_millis();
    // The transaction's first statement writes: SQLite takes its write lock
    // at once (no read-then-upgrade conflict), PostgreSQL locks the
    // deployment's row, so the orchestrator's timeouts and a stop of the
    // same deployment run before or after this completion, never across it
    // (nor in the opposite lock order, which would deadlock).
    let mut tx = state.store.pool.begin().await?;
    lock_deployment(&mut tx, &command.deployment_id, false).await?;
    let new_state = match succeeded {
        true => CommandState::Succeeded,
        false if rules::failure_ignored(&command.name, ignores) => CommandState::Ignored,
        false => CommandState::Failed,
    };
    let recorded = sqlx::query(
        "UPDATE host_commands SET status = $1, completed_at = $2, acknowledged_at = COALESCE(acknowledged_at, $2), \
         diagnostics = $3 WHERE command_id = $4 AND status IN ('Dispatched', 'InProgress')",
    )
    .bind(new_state.as_str())
    .bind(now)
    .bind(diagnostics.to_string())
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded == 0 {
        return Ok(json!({}));
    }
    let (deployment, name) = (&command.deployment_id, &command.instance_name);
    if new_state == CommandState::Failed {
        records::fail_instance(&mut tx, deployment, name, None, now).await?;
    } else {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM host_commands WHERE deployment_id = $1 AND instance_name = $2 \
             AND status IN ('Pending', 'Dispatched', 'InProgress')",
        )
        .bind(deployment)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if open == 0 {
            records::set_target_status(&mut tx, deployment, name, "InProgress", "Succeeded", now).await?;
        }
    }
    tx.commit().await?;
    log::info!("{instance}: {} of {deployment} {}", command.name, new_state.as_str());
    Ok(json!({}))
}

/// The model's Diagnostics from the agent's JSON payload
/// `{"error_code", "script_name", "message", "log"}`.
fn read_diagnostics(payload: Option<&str>, succeeded: bool) -> Value {
    let fallback = if succeeded { "Success" } else { "UnknownError" };
    let Some(payload) = payload else {
        let message = if succeeded { "" } else { "the agent sent no diagnostics" };
        return records::diagnostics(fallback, "", message, "");
    };
    let Ok(parsed) = serde_json::from_str::<Value>(payload) else {
        return records::diagnostics(fallback, "", &clip(&format!("unreadable diagnostics: {payload}")), "");
    };
    let field = |key: &str| clip(parsed.get(key).and_then(Value::as_str).unwrap_or_default());
    let code = parsed.get("error_code").and_then(Value::as_i64).map(rules::error_code_name).unwrap_or(fallback);
    records::diagnostics(code, &field("script_name"), &field("message"), &field("log"))
}

/// The last [`MAX_DIAGNOSTIC_CHARS`] characters of `text`.
fn clip(text: &str) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(MAX_DIAGNOSTIC_CHARS)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_have_four_parts() {
        let id = execution_id("d-ABCDEFGHI", "pi/42");
        assert_eq!(id, "edgedeploy/local/d-ABCDEFGHI/pi/42");
        let parts: Vec<&str> = id.splitn(4, '/').collect();
        assert_eq!(parts, ["edgedeploy", "local", "d-ABCDEFGHI", "pi/42"]);
    }

    #[test]
    fn diagnostics_are_read_from_the_agent_payload() {
        let d = read_diagnostics(
            Some(r#"{"error_code":4,"script_name":"scripts/stop.sh","message":"exit 3","log":"boom"}"#),
            false,
        );
        assert_eq!(d, records::diagnostics("ScriptFailed", "scripts/stop.sh", "exit 3", "boom"));
        assert_eq!(read_diagnostics(None, true)["errorCode"], "Success");
        assert_eq!(read_diagnostics(Some("not json"), false)["errorCode"], "UnknownError");
        let long = "x".repeat(MAX_DIAGNOSTIC_CHARS + 10);
        assert_eq!(clip(&long).len(), MAX_DIAGNOSTIC_CHARS);
    }
}
