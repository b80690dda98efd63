//! `edgedeploy deploy`: create a deployment and, with `--wait`, follow it
//! to the end: on a terminal a live view redrawn in place, else one line
//! per change of the deployment or of an instance (see `progress`).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::connect::Operator;
use super::progress::{self, Snapshot};

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

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One line per change (logs, pipes).
    Plain,
    /// The whole picture, redrawn in place (a terminal).
    Live,
}

impl View {
    /// [`View::Live`] when stdout is a terminal that understands cursor
    /// movement (not `TERM=dumb`), else [`View::Plain`].
    pub fn for_stdout() -> View {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stdout().is_terminal() && !dumb { View::Live } else { View::Plain }
    }
}

/// Follows `deployment_id` until it ends or `timeout` passes, printing
/// changes to `out` (the plain view).
pub fn follow(op: &Operator, deployment_id: &str, timeout: Duration, out: &mut dyn Write) -> Result<Outcome, String> {
    follow_with(op, deployment_id, timeout, out, View::Plain)
}

/// Follows `deployment_id` with the given view.
pub fn follow_with(
    op: &Operator,
    deployment_id: &str,
    timeout: Duration,
    out: &mut dyn Write,
    view: View,
) -> Result<Outcome, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last: Option<Snapshot> = None;
    let mut drawn = 0;
    loop {
        let now = progress::snapshot(op, deployment_id)?;
        match view {
            View::Plain => {
                for line in progress::changes(last.as_ref(), &now) {
                    let _ = writeln!(out, "{line}");
                }
            }
            View::Live => {
                let lines = progress::frame(&now, start.elapsed().as_secs());
                let _ = write!(out, "{}", progress::redraw(drawn, &lines));
                drawn = lines.len();
            }
        }
        let _ = out.flush();
        if progress::is_final(&now.status) {
            return Ok(Outcome { deployment_id: deployment_id.to_string(), status: now.status });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "deployment {deployment_id} still {} after {} s: it goes on; watch it with `edgedeploy watch {deployment_id}` \
                 or stop it with `edgedeploy stop {deployment_id}`",
                now.status,
                timeout.as_secs()
            ));
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(500));
    }
}
