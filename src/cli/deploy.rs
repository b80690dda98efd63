//! `edgedeploy deploy`: create a deployment and, with `--wait`, follow it
//! to the end: one line per change of the deployment or of an instance.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::connect::Operator;

/// What to deploy.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Application.
    pub application: String,
    /// Deployment group.
    pub group: String,
    /// RevisionLocation; the application's newest revision when absent.
    pub revision: Option<Value>,
    /// Deployment configuration name.
    pub config: Option<String>,
    /// DISALLOW, OVERWRITE or RETAIN.
    pub file_exists_behavior: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// How a followed deployment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Deployment id.
    pub deployment_id: String,
    /// Final status (Succeeded, Failed, Stopped).
    pub status: String,
}

/// Creates the deployment; returns its id.
pub fn create(op: &Operator, request: &Request) -> Result<String, String> {
    let revision = match &request.revision {
        Some(revision) => revision.clone(),
        None => newest_revision(op, &request.application)?,
    };
    let mut input = json!({
        "applicationName": request.application,
        "deploymentGroupName": request.group,
        "revision": revision,
    });
    if let Some(config) = &request.config {
        input["deploymentConfigName"] = json!(config);
    }
    if let Some(behavior) = &request.file_exists_behavior {
        input["fileExistsBehavior"] = json!(behavior);
    }
    if let Some(description) = &request.description {
        input["description"] = json!(description);
    }
    let output = op.call("CreateDeployment", input)?;
    output["deploymentId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "CreateDeployment returned no deploymentId".into())
}

fn newest_revision(op: &Operator, application: &str) -> Result<Value, String> {
    let output = op.call(
        "ListApplicationRevisions",
        json!({ "applicationName": application, "sortBy": "registerTime", "sortOrder": "descending" }),
    )?;
    output["revisions"]
        .as_array()
        .and_then(|r| r.first())
        .cloned()
        .ok_or_else(|| format!("application {application} has no revision: push one first (edgedeploy push)"))
}

/// Follows `deployment_id` until it ends or `timeout` passes, printing
/// changes to `out`.
pub fn follow(op: &Operator, deployment_id: &str, timeout: Duration, out: &mut dyn Write) -> Result<Outcome, String> {
    let deadline = Instant::now() + timeout;
    let mut last_summary = String::new();
    let mut last_instances: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let info = op.call("GetDeployment", json!({ "deploymentId": deployment_id }))?["deploymentInfo"].clone();
        let status = info["status"].as_str().unwrap_or("Unknown").to_string();
        let summary = format!("{deployment_id}  {status:<11} {}", overview(&info["deploymentOverview"]));
        if summary != last_summary {
            let _ = writeln!(out, "{summary}");
            last_summary = summary;
        }
        for (instance, line) in instance_lines(op, deployment_id)? {
            if last_instances.get(&instance) != Some(&line) {
                let _ = writeln!(out, "  {instance:<24} {line}");
                last_instances.insert(instance, line);
            }
        }
        if matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped") {
            if let Some(message) = info["errorInformation"]["message"].as_str() {
                let code = info["errorInformation"]["code"].as_str().unwrap_or("");
                let _ = writeln!(out, "  error: {code}: {message}");
            }
            return Ok(Outcome { deployment_id: deployment_id.to_string(), status });
        }
        if Instant::now() > deadline {
            return Err(format!("deployment {deployment_id} still {status} after {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn overview(o: &Value) -> String {
    let n = |k: &str| o[k].as_i64().unwrap_or(0);
    format!(
        "pending {} in-progress {} succeeded {} failed {} skipped {}",
        n("Pending"),
        n("InProgress"),
        n("Succeeded"),
        n("Failed"),
        n("Skipped")
    )
}

/// Per instance: its status and the event it is at (or the failure).
fn instance_lines(op: &Operator, deployment_id: &str) -> Result<Vec<(String, String)>, String> {
    let ids = op.call("ListDeploymentTargets", json!({ "deploymentId": deployment_id }))?["targetIds"].clone();
    let ids: Vec<Value> = ids.as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    for chunk in ids.chunks(25) {
        let output =
            op.call("BatchGetDeploymentTargets", json!({ "deploymentId": deployment_id, "targetIds": chunk }))?;
        for target in output["deploymentTargets"].as_array().into_iter().flatten() {
            let t = &target["instanceTarget"];
            let name = t["targetId"].as_str().unwrap_or("?").to_string();
            lines.push((name, describe_target(t)));
        }
    }
    Ok(lines)
}

fn describe_target(t: &Value) -> String {
    let status = t["status"].as_str().unwrap_or("Unknown");
    let events = t["lifecycleEvents"].as_array().cloned().unwrap_or_default();
    let current =
        events.iter().find(|e| e["status"] == "InProgress").or_else(|| events.iter().find(|e| e["status"] == "Failed"));
    match current {
        Some(e) if e["status"] == "Failed" => {
            let d = &e["diagnostics"];
            format!(
                "{status}  {} failed: {}: {}",
                e["lifecycleEventName"].as_str().unwrap_or("?"),
                d["errorCode"].as_str().unwrap_or("?"),
                d["message"].as_str().unwrap_or("")
            )
        }
        Some(e) => format!("{status}  {}", e["lifecycleEventName"].as_str().unwrap_or("?")),
        None => status.to_string(),
    }
}
