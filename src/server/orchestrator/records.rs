//! The rows the orchestrator, the command API and the deployment read
//! operations share (`deployments`, `deployment_targets`, `host_commands`),
//! their JSON views, and the state changes more than one of them makes.
//!
//! Every change is conditional on the state it leaves (`WHERE status =
//! ...`), so two server replicas on one database cannot make it twice.

use serde_json::{Map, Value, json};
use sqlx::AnyConnection;

use super::rules::{CommandState, Policy};
use crate::server::store::wire_time;
use crate::server::triggers::message;

/// Key of the deployment document that holds what only the server needs
/// (never shown by GetDeployment).
pub const INTERNAL: &str = "_edgedeploy";

/// Deployment statuses a deployment moves forward from.
pub const ACTIVE_STATUSES: [&str; 2] = ["Created", "InProgress"];

/// One `deployments` row.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `d-XXXXXXXXX`.
    pub id: String,
    /// The application.
    pub application_name: String,
    /// The deployment group.
    pub group_name: String,
    /// The deployment group's id.
    pub group_id: String,
    /// The `DeploymentStatus`; the authority for transitions.
    pub status: String,
    /// Epoch milliseconds.
    pub create_time: i64,
    /// The model's DeploymentInfo, plus [`INTERNAL`].
    pub doc: Value,
}

type DeploymentTuple = (String, String, String, String, String, i64, String);

const DEPLOYMENT_COLUMNS: &str =
    "deployment_id, application_name, deployment_group_name, deployment_group_id, status, create_time, doc";

impl Deployment {
    fn from_row(row: DeploymentTuple) -> Deployment {
        let (id, application_name, group_name, group_id, status, create_time, doc) = row;
        Deployment { doc: parse_doc(&doc, &id), id, application_name, group_name, group_id, status, create_time }
    }

    /// The policy fixed at creation.
    pub fn policy(&self) -> Option<Policy> {
        let p = self.doc.get(INTERNAL)?.get("policy")?;
        let field = |name: &str| p.get(name).and_then(Value::as_u64).and_then(|v| usize::try_from(v).ok());
        Some(Policy { total: field("total")?, min_healthy: field("minHealthy")?, max_in_flight: field("maxInFlight")? })
    }

    /// `ignoreApplicationStopFailures`.
    pub fn ignores_stop_failures(&self) -> bool {
        self.doc.get("ignoreApplicationStopFailures").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The model's DeploymentInfo, with `overview` as `deploymentOverview`.
    pub fn info(&self, overview: Value) -> Value {
        let mut doc = match &self.doc {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        doc.remove(INTERNAL);
        doc.insert("status".into(), json!(self.status));
        doc.insert("deploymentOverview".into(), overview);
        Value::Object(doc)
    }
}

/// Parses a stored JSON document; a damaged one is logged and read as `{}`.
pub fn parse_doc(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| {
        log::error!("the stored document of {what} is not JSON ({e}); reading it as empty");
        json!({})
    })
}

/// The deployment `id`, if it exists.
pub async fn load_deployment(conn: &mut AnyConnection, id: &str) -> Result<Option<Deployment>, sqlx::Error> {
    let row: Option<DeploymentTuple> =
        sqlx::query_as(&format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE deployment_id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(Deployment::from_row))
}

/// Ids of the deployments still moving (Created or InProgress), oldest first.
pub async fn active_deployment_ids(conn: &mut AnyConnection) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT deployment_id FROM deployments WHERE status IN ('Created', 'InProgress') ORDER BY create_time, deployment_id",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One `host_commands` row: one lifecycle event of one instance.
#[derive(Debug, Clone)]
pub struct Command {
    /// Primary key; the HostCommandIdentifier.
    pub command_id: String,
    /// The deployment.
    pub deployment_id: String,
    /// The instance.
    pub instance_name: String,
    /// Position among the instance's events, from 0.
    pub seq: i64,
    /// The lifecycle event.
    pub name: String,
    /// Where it stands.
    pub state: CommandState,
    /// Epoch milliseconds of creation (the deployment's).
    pub created_at: i64,
    /// When an agent polled it.
    pub dispatched_at: Option<i64>,
    /// When the agent acknowledged it (the event's startTime).
    pub acknowledged_at: Option<i64>,
    /// When it ended (the event's endTime).
    pub completed_at: Option<i64>,
    /// The model's Diagnostics JSON.
    pub diagnostics: Option<Value>,
}

type CommandTuple =
    (String, String, String, i64, String, String, i64, Option<i64>, Option<i64>, Option<i64>, Option<String>);

/// Columns of [`Command`], in its tuple's order.
pub const COMMAND_COLUMNS: &str = "command_id, deployment_id, instance_name, seq, command_name, status, created_at, \
     dispatched_at, acknowledged_at, completed_at, diagnostics";

impl Command {
    fn from_row(row: CommandTuple) -> Command {
        let (command_id, deployment_id, instance_name, seq, name, status, created_at, dispatched, acked, done, diag) =
            row;
        let state = CommandState::parse(&status).unwrap_or_else(|| {
            log::error!("host command {command_id} has unknown status {status:?}; reading it as Failed");
            CommandState::Failed
        });
        Command {
            diagnostics: diag.map(|d| parse_doc(&d, &command_id)),
            command_id,
            deployment_id,
            instance_name,
            seq,
            name,
            state,
            created_at,
            dispatched_at: dispatched,
            acknowledged_at: acked,
            completed_at: done,
        }
    }

    /// The model's LifecycleEvent JSON.
    pub fn lifecycle_event(&self) -> Value {
        let mut event = json!({ "lifecycleEventName": self.name, "status": self.state.event_status() });
        let started = self.acknowledged_at.or(self.dispatched_at.filter(|_| self.state == CommandState::Failed));
        if let Some(t) = started {
            event["startTime"] = wire_time(t);
        }
        if let Some(t) = self.completed_at.filter(|_| self.state.is_final() && self.state != CommandState::Skipped) {
            event["endTime"] = wire_time(t);
        }
        if let Some(d) = &self.diagnostics {
            event["diagnostics"] = d.clone();
        }
        event
    }

    /// The latest time anything happened to it.
    pub fn last_change(&self) -> i64 {
        [self.dispatched_at, self.acknowledged_at, self.completed_at].into_iter().flatten().max().unwrap_or(0)
    }
}

/// Loads commands with a query that selects [`COMMAND_COLUMNS`].
pub async fn fetch_commands(conn: &mut AnyConnection, sql: &str, binds: &[&str]) -> Result<Vec<Command>, sqlx::Error> {
    let mut query = sqlx::query_as::<_, CommandTuple>(sql);
    for b in binds {
        query = query.bind(*b);
    }
    Ok(query.fetch_all(conn).await?.into_iter().map(Command::from_row).collect())
}

/// Every command of a deployment, by instance then seq.
pub async fn commands_of(conn: &mut AnyConnection, deployment_id: &str) -> Result<Vec<Command>, sqlx::Error> {
    let sql =
        format!("SELECT {COMMAND_COLUMNS} FROM host_commands WHERE deployment_id = $1 ORDER BY instance_name, seq");
    fetch_commands(conn, &sql, &[deployment_id]).await
}

/// The commands of one instance in a deployment, by seq.
pub async fn commands_of_instance(
    conn: &mut AnyConnection,
    deployment_id: &str,
    instance: &str,
) -> Result<Vec<Command>, sqlx::Error> {
    let sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM host_commands WHERE deployment_id = $1 AND instance_name = $2 ORDER BY seq"
    );
    fetch_commands(conn, &sql, &[deployment_id, instance]).await
}

/// One command by id.
pub async fn load_command(conn: &mut AnyConnection, command_id: &str) -> Result<Option<Command>, sqlx::Error> {
    let sql = format!("SELECT {COMMAND_COLUMNS} FROM host_commands WHERE command_id = $1");
    Ok(fetch_commands(conn, &sql, &[command_id]).await?.into_iter().next())
}

/// One `deployment_targets` row.
#[derive(Debug, Clone)]
pub struct Target {
    /// The instance.
    pub instance_name: String,
    /// `TargetStatus`: Pending, InProgress, Succeeded, Failed or Skipped.
    pub status: String,
    /// Epoch milliseconds of the last status change (while InProgress:
    /// when the instance was started).
    pub last_updated: i64,
    /// `{"targetArn"}`.
    pub doc: Value,
}

/// The targets of a deployment, by instance name.
pub async fn targets_of(conn: &mut AnyConnection, deployment_id: &str) -> Result<Vec<Target>, sqlx::Error> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT instance_name, status, last_updated, doc FROM deployment_targets WHERE deployment_id = $1 ORDER BY instance_name",
    )
    .bind(deployment_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(instance_name, status, last_updated, doc)| Target {
            doc: parse_doc(&doc, &instance_name),
            instance_name,
            status,
            last_updated,
        })
        .collect())
}

impl Target {
    /// The model's InstanceTarget JSON, with `commands` (this instance's).
    pub fn instance_target(&self, deployment_id: &str, commands: &[Command]) -> Value {
        let mut target = json!({
            "deploymentId": deployment_id,
            "targetId": self.instance_name,
            "status": self.status,
            "lastUpdatedAt": wire_time(self.last_change(commands)),
            "lifecycleEvents": commands.iter().map(Command::lifecycle_event).collect::<Vec<_>>(),
        });
        if let Some(arn) = self.doc.get("targetArn") {
            target["targetArn"] = arn.clone();
        }
        target
    }

    /// The model's InstanceSummary JSON (ListDeploymentInstances era).
    pub fn instance_summary(&self, deployment_id: &str, commands: &[Command]) -> Value {
        json!({
            "deploymentId": deployment_id,
            "instanceId": self.instance_name,
            "status": self.status,
            "lastUpdatedAt": wire_time(self.last_change(commands)),
            "lifecycleEvents": commands.iter().map(Command::lifecycle_event).collect::<Vec<_>>(),
        })
    }

    fn last_change(&self, commands: &[Command]) -> i64 {
        commands.iter().map(Command::last_change).max().unwrap_or(0).max(self.last_updated)
    }
}

/// `deploymentOverview`: instances per status.
pub async fn overview(conn: &mut AnyConnection, deployment_id: &str) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM deployment_targets WHERE deployment_id = $1 GROUP BY status")
            .bind(deployment_id)
            .fetch_all(conn)
            .await?;
    let mut overview = json!({"Pending": 0, "InProgress": 0, "Succeeded": 0, "Failed": 0, "Skipped": 0, "Ready": 0});
    for (status, count) in rows {
        overview[status] = json!(count);
    }
    Ok(overview)
}

/// A Diagnostics document.
pub fn diagnostics(error_code: &str, script_name: &str, message: &str, log_tail: &str) -> Value {
    json!({ "errorCode": error_code, "scriptName": script_name, "message": message, "logTail": log_tail })
}

/// Moves the target `instance` of `deployment_id` from status `from` to
/// `to` (one conditional UPDATE), and queues the instance trigger event of
/// `to` (InstanceStart, InstanceSuccess, InstanceFailure) when it moved.
/// Returns false when the target was not in `from`.
pub async fn set_target_status(
    conn: &mut AnyConnection,
    deployment_id: &str,
    instance: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE deployment_targets SET status = $1, last_updated = $2 \
         WHERE deployment_id = $3 AND instance_name = $4 AND status = $5",
    )
    .bind(to)
    .bind(now)
    .bind(deployment_id)
    .bind(instance)
    .bind(from)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    if let Some(event) = message::instance_event(to) {
        message::emit_instance(conn, deployment_id, instance, event, now).await?;
    }
    Ok(true)
}

/// Ends an in-flight instance as Failed: `command` (if still open) is
/// Failed with `diagnostics`, the events after it Skipped, the target
/// Failed. Returns false when the target was no longer in flight.
pub async fn fail_instance(
    conn: &mut AnyConnection,
    deployment_id: &str,
    instance: &str,
    command: Option<(&str, &Value)>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if let Some((command_id, diag)) = command {
        sqlx::query(
            "UPDATE host_commands SET status = 'Failed', completed_at = $1, diagnostics = $2 \
             WHERE command_id = $3 AND status IN ('Pending', 'Dispatched', 'InProgress')",
        )
        .bind(now)
        .bind(diag.to_string())
        .bind(command_id)
        .execute(&mut *conn)
        .await?;
    }
    skip_open_commands(conn, deployment_id, Some(instance), now).await?;
    set_target_status(conn, deployment_id, instance, "InProgress", "Failed", now).await
}

/// Rewrites the document of deployment `id` with `change` (the row is
/// locked by the caller's transaction).
pub async fn update_deployment_doc(
    conn: &mut AnyConnection,
    id: &str,
    change: impl FnOnce(&mut Value),
) -> Result<(), sqlx::Error> {
    let Some(deployment) = load_deployment(conn, id).await? else { return Ok(()) };
    let mut doc = deployment.doc;
    change(&mut doc);
    sqlx::query("UPDATE deployments SET doc = $1 WHERE deployment_id = $2")
        .bind(doc.to_string())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks every Pending command of the deployment (of one instance, when
/// given) Skipped.
pub async fn skip_open_commands(
    conn: &mut AnyConnection,
    deployment_id: &str,
    instance: Option<&str>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let result = match instance {
        Some(instance) => {
            sqlx::query(
                "UPDATE host_commands SET status = 'Skipped', completed_at = $1 \
                 WHERE deployment_id = $2 AND instance_name = $3 AND status = 'Pending'",
            )
            .bind(now)
            .bind(deployment_id)
            .bind(instance)
            .execute(conn)
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE host_commands SET status = 'Skipped', completed_at = $1 WHERE deployment_id = $2 AND status = 'Pending'",
            )
            .bind(now)
            .bind(deployment_id)
            .execute(conn)
            .await?
        }
    };
    Ok(result.rows_affected())
}

/// Skips the instances of the deployment that have not started, and their
/// commands.
pub async fn skip_pending_targets(conn: &mut AnyConnection, deployment_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deployment_targets SET status = 'Skipped', last_updated = $1 WHERE deployment_id = $2 AND status = 'Pending'",
    )
    .bind(now)
    .bind(deployment_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE host_commands SET status = 'Skipped', completed_at = $1 WHERE deployment_id = $2 AND status = 'Pending' \
         AND instance_name IN (SELECT instance_name FROM deployment_targets WHERE deployment_id = $2 AND status = 'Skipped')",
    )
    .bind(now)
    .bind(deployment_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes the deployment's `lastAttemptedDeployment` (and, when it
/// succeeded, `lastSuccessfulDeployment`; at creation, the deployed
/// revision as `targetRevision`) into its group's document. The
/// group document is also written by UpdateDeploymentGroup: the write is
/// conditional on the document read, retried when it changed meanwhile.
pub async fn record_in_group(
    conn: &mut AnyConnection,
    group_id: &str,
    deployment_id: &str,
    status: &str,
    create_time: i64,
    end_time: Option<i64>,
    target_revision: Option<&Value>,
) -> Result<(), sqlx::Error> {
    let mut last = json!({ "deploymentId": deployment_id, "status": status, "createTime": wire_time(create_time) });
    if let Some(end) = end_time {
        last["endTime"] = wire_time(end);
    }
    for _ in 0..5 {
        let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM deployment_groups WHERE deployment_group_id = $1")
            .bind(group_id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((text,)) = row else { return Ok(()) };
        let mut doc = parse_doc(&text, group_id);
        let Some(map) = doc.as_object_mut() else { return Ok(()) };
        map.insert("lastAttemptedDeployment".into(), last.clone());
        if status == "Succeeded" {
            map.insert("lastSuccessfulDeployment".into(), last.clone());
        }
        if let Some(revision) = target_revision {
            map.insert("targetRevision".into(), revision.clone());
        }
        let written = sqlx::query("UPDATE deployment_groups SET doc = $1 WHERE deployment_group_id = $2 AND doc = $3")
            .bind(doc.to_string())
            .bind(group_id)
            .bind(&text)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if written == 1 {
            return Ok(());
        }
    }
    log::warn!("deployment group {group_id} kept changing; its last deployment is not recorded");
    Ok(())
}

/// Frees the group for its next deployment.
pub async fn release_group(conn: &mut AnyConnection, group_id: &str, deployment_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM active_deployments WHERE deployment_group_id = $1 AND deployment_id = $2")
        .bind(group_id)
        .bind(deployment_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends an active deployment with `status` (`Succeeded`, `Failed` or
/// `Stopped`) and `error` (`{code, message}`), if it is still active:
/// completeTime set, group released and informed. Returns false when it
/// had already ended.
pub async fn finish_deployment(
    conn: &mut AnyConnection,
    deployment: &Deployment,
    status: &str,
    error: Option<Value>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let mut doc = deployment.doc.clone();
    doc["completeTime"] = wire_time(now);
    if doc.get("startTime").is_none() {
        doc["startTime"] = wire_time(now);
    }
    if let Some(error) = error {
        doc["errorInformation"] = error;
    }
    let ended = sqlx::query(
        "UPDATE deployments SET status = $1, doc = $2 WHERE deployment_id = $3 AND status IN ('Created', 'InProgress')",
    )
    .bind(status)
    .bind(doc.to_string())
    .bind(&deployment.id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if ended == 0 {
        return Ok(false);
    }
    release_group(conn, &deployment.group_id, &deployment.id).await?;
    record_in_group(conn, &deployment.group_id, &deployment.id, status, deployment.create_time, Some(now), None)
        .await?;
    Ok(true)
}
