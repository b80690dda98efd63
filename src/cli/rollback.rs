//! `edgedeploy stop` and `edgedeploy rollback`.
//!
//! `stop ID [--rollback]` is StopDeployment (with `autoRollbackEnabled`);
//! it then reports the rollback deployment the server started, if any.
//!
//! `rollback --application A --deployment-group G`: when the group has a
//! deployment in progress, stop it with `autoRollbackEnabled`; if the
//! server starts a rollback deployment, that is the rollback. Otherwise
//! redeploy the revision of the previous good deployment for the group's
//! latest one, by the same rule as the server's automatic rollbacks
//! ([`previous_good`], `docs/orchestrator.md` rule 13).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::connect::Operator;
use super::list;
use super::table;
use crate::server::orchestrator::rollback::{MANUAL_ROLLBACK_PREFIX, previous_good};

/// Deployment statuses that hold the group (a new deployment is refused).
const ACTIVE: [&str; 5] = ["Created", "Queued", "InProgress", "Baking", "Ready"];
/// How long `stop --rollback` looks for the server's rollback deployment.
const ROLLBACK_APPEARS: Duration = Duration::from_secs(3);

/// What `stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// StopDeployment's `statusMessage`.
    pub message: String,
    /// The rollback deployment the server started, if any.
    pub rollback_id: Option<String>,
    /// The server's `rollbackInfo.rollbackMessage`, if any.
    pub rollback_message: Option<String>,
}

/// Stops `id`; with `rollback`, asks the server to roll back and looks
/// for the rollback deployment it started.
pub fn stop(op: &Operator, id: &str, rollback: bool) -> Result<Stopped, String> {
    let output = op.call("StopDeployment", json!({ "deploymentId": id, "autoRollbackEnabled": rollback }))?;
    let message = output["statusMessage"].as_str().unwrap_or("stopped").to_string();
    let mut stopped = Stopped { message, rollback_id: None, rollback_message: None };
    if !rollback {
        return Ok(stopped);
    }
    let deadline = Instant::now() + ROLLBACK_APPEARS;
    loop {
        let info = op.call("GetDeployment", json!({ "deploymentId": id }))?["deploymentInfo"].clone();
        let rollback = &info["rollbackInfo"];
        stopped.rollback_id = rollback["rollbackDeploymentId"].as_str().map(String::from);
        stopped.rollback_message = rollback["rollbackMessage"].as_str().map(String::from);
        if stopped.rollback_id.is_some() || stopped.rollback_message.is_some() || Instant::now() > deadline {
            return Ok(stopped);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What `rollback` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// The deployment in progress that was stopped, if any.
    pub stopped: Option<String>,
    /// The rollback deployment (started by the server or by us).
    pub deployment_id: String,
    /// True when the server started it (`stop` with `autoRollbackEnabled`).
    pub by_server: bool,
    /// The revision it deploys, `s3://...`.
    pub revision: String,
    /// Lines for the operator, in order.
    pub report: Vec<String>,
}

/// Rolls deployment group `group` of `application` back (see the module doc).
pub fn rollback(op: &Operator, application: &str, group: &str) -> Result<RolledBack, String> {
    let mut report = Vec::new();
    let mut stopped = None;
    let active_filter = json!({
        "applicationName": application, "deploymentGroupName": group, "includeOnlyStatuses": ACTIVE,
    });
    if let Some(active) = list::all_pages(op, "ListDeployments", active_filter, "deployments")?.first() {
        let id = active.as_str().unwrap_or_default().to_string();
        let result = stop(op, &id, true)?;
        report.push(format!("stopped deployment {id}: {}", result.message));
        if let Some(rollback_id) = result.rollback_id {
            let revision = revision_of(op, &rollback_id)?;
            report.push(format!("the server is rolling back with deployment {rollback_id} ({revision})"));
            return Ok(RolledBack { stopped: Some(id), deployment_id: rollback_id, by_server: true, revision, report });
        }
        if let Some(message) = result.rollback_message {
            report.push(format!("the server made no rollback deployment: {message}"));
        }
        stopped = Some(id);
    }
    let (latest, target) = rollback_target(op, application, group)?;
    let revision = target["revision"].clone();
    let description =
        format!("{MANUAL_ROLLBACK_PREFIX}{latest}: redeploys the revision of {}", table::text(&target["deploymentId"]));
    let input = json!({
        "applicationName": application, "deploymentGroupName": group,
        "revision": revision, "description": description,
    });
    let id = match op.try_call("CreateDeployment", input) {
        Ok(output) => output["deploymentId"].as_str().unwrap_or_default().to_string(),
        Err(e) if e.exception() == Some("DeploymentLimitExceededException") => {
            return Err(format!(
                "{}; another deployment of {application}/{group} started meanwhile (perhaps the server's own \
                 rollback): see `edgedeploy list deployments --application {application} --deployment-group {group}`",
                op.describe("CreateDeployment", &e)
            ));
        }
        Err(e) => return Err(op.describe("CreateDeployment", &e)),
    };
    let shown = table::revision(&revision);
    report.push(format!(
        "rolling back {application}/{group} with deployment {id}: redeploying {shown}, the revision of {} \
         (succeeded {}), replacing that of {latest}",
        table::text(&target["deploymentId"]),
        table::time(&target["completeTime"]),
    ));
    Ok(RolledBack { stopped, deployment_id: id, by_server: false, revision: shown, report })
}

fn revision_of(op: &Operator, id: &str) -> Result<String, String> {
    let info = op.call("GetDeployment", json!({ "deploymentId": id }))?;
    Ok(table::revision(&info["deploymentInfo"]["revision"]))
}

/// The group's latest deployment id and the deployment whose revision to
/// redeploy, or an error saying there is none and what to do.
fn rollback_target(op: &Operator, application: &str, group: &str) -> Result<(String, Value), String> {
    let filter = json!({ "applicationName": application, "deploymentGroupName": group });
    let ids = list::all_pages(op, "ListDeployments", filter, "deployments")?;
    let none = |why: &str| {
        format!(
            "nothing to roll back to: {why}. Deploy a known good revision with `edgedeploy deploy --application \
             {application} --deployment-group {group} --bucket BUCKET --key KEY` (the application's revisions: \
             `edgedeploy list revisions --application {application}`)"
        )
    };
    if ids.is_empty() {
        return Err(none(&format!("{application}/{group} has no deployments")));
    }
    let mut seen = Vec::new();
    for chunk in ids.chunks(25) {
        seen.extend(list::batch_deployments(op, chunk)?);
        let latest = table::text(&seen[0]["deploymentId"]);
        if let Some(target) = previous_good(&seen, &latest) {
            return Ok((latest, target.clone()));
        }
    }
    let latest = seen.first().map(|l| table::text(&l["deploymentId"])).unwrap_or_default();
    Err(none(&format!(
        "no deployment of {application}/{group} before {latest} succeeded (with another revision than {latest}'s, \
         when {latest} itself succeeded)"
    )))
}
