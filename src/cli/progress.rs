//! The progress view of a deployment: a [`Snapshot`] read from the API, and
//! two ways to show a sequence of them, both decided in pure functions:
//! [`changes`] gives one line per change (for logs and pipes), [`frame`]
//! gives the whole picture, redrawn in place on a terminal.

use serde_json::{Value, json};

use super::connect::Operator;
use super::list;
use super::table::{self, Table};

/// The state of a deployment and of each of its instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Deployment id.
    pub id: String,
    /// Deployment status.
    pub status: String,
    /// `deploymentOverview`.
    pub overview: Value,
    /// `errorInformation` as `CODE: message`, once there is one.
    pub error: Option<String>,
    /// One per instance, in the API's order.
    pub instances: Vec<Instance>,
}

/// One instance of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// Target status.
    pub status: String,
    /// The event it is at, failed in, or ended with (`-` before any).
    pub event: String,
    /// The failed event's diagnostic, if any.
    pub detail: String,
    /// Lifecycle events that ended (succeeded or skipped).
    pub done: usize,
    /// Lifecycle events in all.
    pub total: usize,
}

/// The statuses a deployment ends in.
pub fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Stopped")
}

/// Reads the deployment and its targets.
pub fn snapshot(op: &Operator, id: &str) -> Result<Snapshot, String> {
    let info = op.call("GetDeployment", json!({ "deploymentId": id }))?["deploymentInfo"].clone();
    let error = info["errorInformation"]["message"]
        .as_str()
        .map(|m| format!("{}: {m}", info["errorInformation"]["code"].as_str().unwrap_or("")));
    let instances = list::targets(op, id, &[])?.iter().map(|t| instance(&t["instanceTarget"])).collect();
    Ok(Snapshot {
        id: id.to_string(),
        status: info["status"].as_str().unwrap_or("Unknown").to_string(),
        overview: info["deploymentOverview"].clone(),
        error,
        instances,
    })
}

fn instance(t: &Value) -> Instance {
    let events = t["lifecycleEvents"].as_array().cloned().unwrap_or_default();
    let (event, detail) = list::current_event(t);
    Instance {
        name: t["targetId"].as_str().unwrap_or("?").to_string(),
        status: t["status"].as_str().unwrap_or("Unknown").to_string(),
        event,
        detail,
        done: events.iter().filter(|e| matches!(e["status"].as_str(), Some("Succeeded" | "Skipped"))).count(),
        total: events.len(),
    }
}

/// The summary line of the plain view.
fn summary(s: &Snapshot) -> String {
    let n = |k: &str| s.overview[k].as_i64().unwrap_or(0);
    format!(
        "{}  {:<11} pending {} in-progress {} succeeded {} failed {} skipped {}",
        s.id,
        s.status,
        n("Pending"),
        n("InProgress"),
        n("Succeeded"),
        n("Failed"),
        n("Skipped")
    )
}

/// An instance's line of the plain view: status, then the event it is at
/// or the failure.
fn instance_line(i: &Instance) -> String {
    let state = if !i.detail.is_empty() {
        format!("{}  {} failed: {}", i.status, i.event, i.detail)
    } else if i.status == "InProgress" && i.event != "-" {
        format!("{}  {}", i.status, i.event)
    } else {
        i.status.clone()
    };
    format!("  {:<24} {state}", i.name)
}

/// The lines of the plain view that `now` adds after `before`: the
/// summary when it changed, each instance whose line changed, and the
/// error once the deployment has ended.
pub fn changes(before: Option<&Snapshot>, now: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    if before.is_none_or(|b| summary(b) != summary(now)) {
        lines.push(summary(now));
    }
    for i in &now.instances {
        let old = before.and_then(|b| b.instances.iter().find(|o| o.name == i.name));
        if old.is_none_or(|o| instance_line(o) != instance_line(i)) {
            lines.push(instance_line(i));
        }
    }
    if is_final(&now.status)
        && let Some(error) = &now.error
    {
        lines.push(format!("  error: {error}"));
    }
    lines
}

/// The whole view: a title, the counts, and a table of instances with a
/// bar of their lifecycle events.
pub fn frame(s: &Snapshot, elapsed_secs: u64) -> Vec<String> {
    let mut lines = vec![
        format!("deployment {}  {}  {}s", s.id, s.status, elapsed_secs),
        format!("  {}", table::overview(&s.overview)),
    ];
    let mut t = Table::new(&["INSTANCE", "STATUS", "EVENT", "PROGRESS", "DETAIL"]);
    let shown = rows_to_show(&s.instances, MAX_ROWS);
    for i in s.instances.iter().filter(|i| shown.contains(&i.name.as_str())) {
        t.row(vec![i.name.clone(), i.status.clone(), i.event.clone(), bar(i.done, i.total), i.detail.clone()]);
    }
    lines.extend(t.render().lines().map(|l| format!("  {l}")));
    if shown.len() < s.instances.len() {
        lines.push(format!(
            "  ... and {} more instances (all of them: edgedeploy list targets --deployment {})",
            s.instances.len() - shown.len(),
            s.id
        ));
    }
    if let Some(error) = s.error.as_ref().filter(|_| is_final(&s.status)) {
        lines.push(format!("  error: {error}"));
    }
    lines
}

/// Most instance rows in the live view: a frame taller than the terminal
/// cannot be redrawn in place.
const MAX_ROWS: usize = 30;

/// The names of at most `max` instances to show: those failed or in
/// progress first, then the others, each in the API's order.
fn rows_to_show(instances: &[Instance], max: usize) -> Vec<&str> {
    let busy = |i: &&Instance| i.status == "Failed" || i.status == "InProgress";
    let first = instances.iter().filter(busy);
    let rest = instances.iter().filter(|i| !busy(i));
    first.chain(rest).take(max).map(|i| i.name.as_str()).collect()
}

/// `[#####....] 5/9`.
fn bar(done: usize, total: usize) -> String {
    let filled = done.min(total);
    format!("[{}{}] {done}/{total}", "#".repeat(filled), ".".repeat(total - filled))
}

/// The bytes that replace a frame of `previous` lines with `lines` on a
/// terminal: cursor up to the frame's first line, clear to the end of the
/// screen, then the lines with line wrapping off (long lines are cut by
/// the terminal instead of wrapping and breaking the line count).
pub fn redraw(previous: usize, lines: &[String]) -> String {
    let mut out = String::new();
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}F"));
    }
    out.push_str("\x1b[J\x1b[?7l");
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\x1b[?7h");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(status: &str, instances: &[(&str, &str, &str, &str)]) -> Snapshot {
        Snapshot {
            id: "d-ABCDEFGHI".into(),
            status: status.into(),
            overview: json!({"Pending": 1, "InProgress": 1}),
            error: None,
            instances: instances
                .iter()
                .map(|(n, s, e, d)| Instance {
                    name: n.to_string(),
                    status: s.to_string(),
                    event: e.to_string(),
                    detail: d.to_string(),
                    done: 2,
                    total: 9,
                })
                .collect(),
        }
    }

    #[test]
    fn plain_view_prints_only_what_changed() {
        let a = snap("InProgress", &[("dev-1", "InProgress", "Install", ""), ("dev-2", "Pending", "-", "")]);
        let first = changes(None, &a);
        assert_eq!(first.len(), 3);
        assert!(first[0].starts_with("d-ABCDEFGHI  InProgress"));
        assert_eq!(first[1], format!("  {:<24} InProgress  Install", "dev-1"));
        assert!(changes(Some(&a), &a).is_empty());
        let b = snap(
            "InProgress",
            &[("dev-1", "Failed", "AfterInstall", "ScriptFailed: exit 7"), ("dev-2", "Pending", "-", "")],
        );
        assert_eq!(
            changes(Some(&a), &b),
            vec![format!("  {:<24} Failed  AfterInstall failed: ScriptFailed: exit 7", "dev-1")]
        );
    }

    #[test]
    fn a_large_fleet_shows_the_busy_instances_first_and_counts_the_rest() {
        let mut many: Vec<(String, &str)> = (0..40).map(|n| (format!("dev-{n}"), "Succeeded")).collect();
        many[35].1 = "Failed";
        let instances: Vec<Instance> = many
            .iter()
            .map(|(n, st)| Instance { name: n.clone(), status: st.to_string(), ..Instance::default() })
            .collect();
        let shown = rows_to_show(&instances, 30);
        assert_eq!(shown.len(), 30);
        assert_eq!(shown[0], "dev-35");
        let s = Snapshot { id: "d-ABCDEFGHI".into(), status: "InProgress".into(), instances, ..Snapshot::default() };
        let lines = frame(&s, 1);
        assert_eq!(lines.len(), 2 + 1 + 30 + 1, "{lines:?}");
        assert!(lines.last().unwrap().contains("and 10 more instances"), "{lines:?}");
    }

    #[test]
    fn frame_has_counts_and_one_row_per_instance() {
        let a = snap("InProgress", &[("dev-1", "InProgress", "Install", "")]);
        let lines = frame(&a, 7);
        assert_eq!(lines[0], "deployment d-ABCDEFGHI  InProgress  7s");
        assert!(lines[1].contains("0/2 succeeded"), "{lines:?}");
        assert!(lines[3].contains("dev-1") && lines[3].contains("[##.......] 2/9"), "{lines:?}");
        let bytes = redraw(4, &lines);
        assert!(bytes.starts_with("\x1b[4F\x1b[J"));
        assert!(redraw(0, &lines).starts_with("\x1b[J"));
    }
}
