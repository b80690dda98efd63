//! The orchestrator: every `settings.tick`, moves each active deployment
//! forward (start instances, enforce deadlines, end the deployment). The
//! decisions are in [`rules`]; this loop only reads counts and applies them.
//! Rules and states: `docs/orchestrator.md`.
//!
//! Safe with several server processes on one database: each deployment is
//! advanced inside a transaction whose first statement writes its row
//! (PostgreSQL locks that row until commit; SQLite takes its write lock), so
//! two replicas advance one deployment one after the other, and every state
//! change is conditional on the state it leaves. A restarted server simply
//! carries on from the store.

pub mod records;
pub mod rollback;
pub mod rules;

use std::sync::Arc;

use serde_json::json;
use sqlx::AnyConnection;

use super::State;
use super::store::{now_millis, wire_time};
use super::triggers::message::{self, DeploymentEvent};
use records::{Deployment, Target};
use rules::{Counts, Outcome};

/// Runs until the task is aborted.
pub async fn run(state: Arc<State>) {
    loop {
        if let Err(e) = tick(&state).await {
            log::warn!("orchestrator: {e}");
        }
        tokio::time::sleep(state.settings.tick).await;
    }
}

/// One pass over the active deployments.
pub async fn tick(state: &State) -> Result<(), sqlx::Error> {
    let ids = {
        let mut conn = state.store.pool.acquire().await?;
        records::active_deployment_ids(&mut conn).await?
    };
    for id in ids {
        if let Err(e) = advance(state, &id).await {
            log::warn!("orchestrator: deployment {id}: {e}");
        }
    }
    Ok(())
}

/// Moves one deployment forward, in one transaction.
async fn advance(state: &State, id: &str) -> Result<(), sqlx::Error> {
    let now = now_millis();
    let mut tx = state.store.pool.begin().await?;
    let locked = sqlx::query(
        "UPDATE deployments SET status = status WHERE deployment_id = $1 AND status IN ('Created', 'InProgress')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if locked == 0 {
        return Ok(());
    }
    let Some(mut deployment) = records::load_deployment(&mut tx, id).await? else { return Ok(()) };
    if deployment.status == "Created" {
        begin(&mut tx, &mut deployment, now).await?;
    }
    let Some(policy) = deployment.policy() else {
        log::error!("deployment {id} has no stored policy; failing it");
        let error = json!({"code": "INTERNAL_ERROR", "message": "the deployment's stored plan is damaged"});
        records::skip_pending_targets(&mut tx, id, now).await?;
        end(&mut tx, &deployment, "Failed", Some(error), now).await?;
        return tx.commit().await;
    };
    enforce_deadlines(state, &mut tx, id, now).await?;
    let targets = records::targets_of(&mut tx, id).await?;
    let step = rules::decide(&policy, &count(&targets));
    for target in targets.iter().filter(|t| t.status == "Pending").take(step.start) {
        records::set_target_status(&mut tx, id, &target.instance_name, "Pending", "InProgress", now).await?;
        log::info!("deployment {id}: started instance {}", target.instance_name);
    }
    if step.skip_pending {
        records::skip_pending_targets(&mut tx, id, now).await?;
    }
    if let Some(outcome) = step.finish {
        let (status, error) = match outcome {
            Outcome::Succeeded => ("Succeeded", None),
            Outcome::Failed { code, message } => ("Failed", Some(json!({"code": code, "message": message}))),
        };
        end(&mut tx, &deployment, status, error, now).await?;
    }
    tx.commit().await
}

/// Ends the deployment (rule 11), queues its trigger event and, when it
/// failed and its configuration asks for it, creates its rollback.
async fn end(
    conn: &mut AnyConnection,
    deployment: &Deployment,
    status: &str,
    error: Option<serde_json::Value>,
    now: i64,
) -> Result<(), sqlx::Error> {
    if !records::finish_deployment(conn, deployment, status, error, now).await? {
        return Ok(());
    }
    log::info!("deployment {}: {status}", deployment.id);
    if let Some(event) = DeploymentEvent::of_end(status) {
        message::emit_deployment(conn, &deployment.id, event, now).await?;
    }
    if status == "Failed" && rollback::configured_for(&deployment.doc, rollback::ON_FAILURE) {
        rollback::roll_back(conn, &deployment.id, "failed", now).await?;
    }
    Ok(())
}

/// Created → InProgress, with startTime.
async fn begin(conn: &mut AnyConnection, deployment: &mut Deployment, now: i64) -> Result<(), sqlx::Error> {
    deployment.doc["startTime"] = wire_time(now);
    sqlx::query(
        "UPDATE deployments SET status = 'InProgress', doc = $1 WHERE deployment_id = $2 AND status = 'Created'",
    )
    .bind(deployment.doc.to_string())
    .bind(&deployment.id)
    .execute(&mut *conn)
    .await?;
    deployment.status = "InProgress".into();
    let (group, create) = (&deployment.group_id, deployment.create_time);
    records::record_in_group(conn, group, &deployment.id, "InProgress", create, None, None).await?;
    message::emit_deployment(conn, &deployment.id, DeploymentEvent::Start, now).await?;
    log::info!("deployment {}: in progress", deployment.id);
    Ok(())
}

/// Fails the in-flight instances whose current event is past its pickup
/// or completion deadline; settles instances whose events are all over
/// (normally done by PutHostCommandComplete already).
async fn enforce_deadlines(state: &State, conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let pickup = i64::try_from(state.settings.pickup_timeout.as_millis()).unwrap_or(i64::MAX);
    let event = i64::try_from(state.settings.event_timeout.as_millis()).unwrap_or(i64::MAX);
    let targets = records::targets_of(conn, id).await?;
    let in_flight: Vec<&Target> = targets.iter().filter(|t| t.status == "InProgress").collect();
    if in_flight.is_empty() {
        return Ok(());
    }
    let commands = records::commands_of(conn, id).await?;
    for target in in_flight {
        let own: Vec<&records::Command> = commands.iter().filter(|c| c.instance_name == target.instance_name).collect();
        let Some(i) = own.iter().position(|c| !c.state.lets_next_run()) else {
            records::set_target_status(conn, id, &target.instance_name, "InProgress", "Succeeded", now).await?;
            continue;
        };
        let current = own[i];
        if current.state.is_final() {
            records::fail_instance(conn, id, &target.instance_name, None, now).await?;
            continue;
        }
        let ready_since = match i {
            0 => target.last_updated,
            _ => own[i - 1].completed_at.unwrap_or(target.last_updated).max(target.last_updated),
        };
        let late = rules::deadline_passed(
            &current.name,
            current.state,
            ready_since,
            current.dispatched_at,
            now,
            pickup,
            event,
        );
        if let Some(message) = late {
            log::warn!("deployment {id}: instance {}: {message}", target.instance_name);
            let diag = records::diagnostics("UnknownError", "", &message, "");
            records::fail_instance(conn, id, &target.instance_name, Some((&current.command_id, &diag)), now).await?;
        }
    }
    Ok(())
}

fn count(targets: &[Target]) -> Counts {
    let mut c = Counts::default();
    for t in targets {
        match t.status.as_str() {
            "Pending" => c.pending += 1,
            "InProgress" => c.in_flight += 1,
            "Succeeded" => c.succeeded += 1,
            "Failed" => c.failed += 1,
            _ => c.skipped += 1,
        }
    }
    c
}
