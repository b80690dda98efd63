//! `edgedeploy list RESOURCE`: every item of a resource, as a table or as
//! the API's own documents. Each resource is one List call (all pages) and
//! the Get/BatchGet calls that give each item's details.

use serde_json::{Value, json};

use super::connect::Operator;
use super::table::{self, Table};
use crate::server::orchestrator::rollback::rolls_back;

/// The resources `list` and `get` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Applications.
    Applications,
    /// Deployment groups of an application.
    DeploymentGroups,
    /// Deployment configurations.
    DeploymentConfigs,
    /// Deployments.
    Deployments,
    /// On-premises instances.
    Instances,
    /// Revisions of an application.
    Revisions,
    /// The instances (targets) of one deployment.
    Targets,
}

/// Every resource name, as the help text shows them.
pub const RESOURCE_NAMES: &str =
    "applications, deployment-groups, deployment-configs, deployments, instances, revisions, targets";

impl Resource {
    /// The resource named `name` (plural or singular; `groups`, `configs` for short).
    pub fn parse(name: &str) -> Result<Resource, String> {
        let resource = match name.trim_end_matches('s') {
            "application" | "app" => Resource::Applications,
            "deployment-group" | "group" => Resource::DeploymentGroups,
            "deployment-config" | "config" => Resource::DeploymentConfigs,
            "deployment" => Resource::Deployments,
            "instance" => Resource::Instances,
            "revision" => Resource::Revisions,
            "target" | "deployment-target" | "deployment-instance" => Resource::Targets,
            _ => return Err(format!("unknown resource {name:?}: say one of {RESOURCE_NAMES}")),
        };
        Ok(resource)
    }
}

/// Narrowing options of `list` (and the context `get` needs).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `--application`.
    pub application: Option<String>,
    /// `--deployment-group`.
    pub group: Option<String>,
    /// `--deployment`.
    pub deployment: Option<String>,
    /// `--status` (repeatable).
    pub statuses: Vec<String>,
    /// `--tag KEY=VALUE` (repeatable; instances).
    pub tags: Vec<String>,
}

impl Filters {
    /// `--application`, or an error saying the resource needs it.
    pub fn application(&self, what: &str) -> Result<&str, String> {
        self.application.as_deref().ok_or_else(|| format!("{what} needs --application NAME"))
    }

    /// `--deployment`, or an error saying the resource needs it.
    pub fn deployment(&self, what: &str) -> Result<&str, String> {
        self.deployment.as_deref().ok_or_else(|| format!("{what} needs --deployment DEPLOYMENT_ID"))
    }
}

/// The documents of a listing and their table.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The API's documents, one per item, in list order.
    pub docs: Vec<Value>,
    /// The readable form.
    pub table: Table,
}

/// Lists `resource`.
pub fn list(op: &Operator, resource: Resource, filters: &Filters) -> Result<Listing, String> {
    match resource {
        Resource::Applications => applications(op),
        Resource::DeploymentGroups => groups(op, filters.application("list deployment-groups")?),
        Resource::DeploymentConfigs => configs(op),
        Resource::Deployments => deployments(op, filters),
        Resource::Instances => instances(op, filters),
        Resource::Revisions => revisions(op, filters.application("list revisions")?),
        Resource::Targets => {
            let docs = targets(op, filters.deployment("list targets")?, &filters.statuses)?;
            Ok(Listing { table: target_table(&docs), docs })
        }
    }
}

/// Calls a List operation until it returns no `nextToken`; returns the
/// items under `key` of every page.
pub fn all_pages(op: &Operator, operation: &str, input: Value, key: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut input = input;
    for _ in 0..10_000 {
        let output = op.call(operation, input.clone())?;
        items.extend(output[key].as_array().cloned().unwrap_or_default());
        match output["nextToken"].as_str() {
            Some(token) if !token.is_empty() => input["nextToken"] = json!(token),
            _ => return Ok(items),
        }
    }
    Err(format!("{operation}: more than 10000 pages"))
}

fn applications(op: &Operator) -> Result<Listing, String> {
    let names = all_pages(op, "ListApplications", json!({}), "applications")?;
    let mut docs = Vec::new();
    for chunk in names.chunks(100) {
        let output = op.call("BatchGetApplications", json!({ "applicationNames": chunk }))?;
        docs.extend(output["applicationsInfo"].as_array().cloned().unwrap_or_default());
    }
    let mut t = Table::new(&["NAME", "PLATFORM", "CREATED"]);
    for d in &docs {
        t.row(vec![
            table::text(&d["applicationName"]),
            table::text(&d["computePlatform"]),
            table::time(&d["createTime"]),
        ]);
    }
    Ok(Listing { docs, table: t })
}

fn groups(op: &Operator, application: &str) -> Result<Listing, String> {
    let names = all_pages(op, "ListDeploymentGroups", json!({ "applicationName": application }), "deploymentGroups")?;
    let mut docs = Vec::new();
    for chunk in names.chunks(100) {
        let input = json!({ "applicationName": application, "deploymentGroupNames": chunk });
        let output = op.call("BatchGetDeploymentGroups", input)?;
        docs.extend(output["deploymentGroupsInfo"].as_array().cloned().unwrap_or_default());
    }
    let mut t = Table::new(&["NAME", "CONFIG", "INSTANCES", "LAST SUCCESSFUL", "LAST ATTEMPTED"]);
    for d in &docs {
        let attempted = &d["lastAttemptedDeployment"];
        let attempted = match attempted["deploymentId"].as_str() {
            Some(id) => format!("{id} {}", table::text(&attempted["status"])),
            None => "-".into(),
        };
        t.row(vec![
            table::text(&d["deploymentGroupName"]),
            table::text(&d["deploymentConfigName"]),
            group_selection(d),
            table::text(&d["lastSuccessfulDeployment"]["deploymentId"]),
            attempted,
        ]);
    }
    Ok(Listing { docs, table: t })
}

/// Which instances a group selects, in words.
pub fn group_selection(group: &Value) -> String {
    let sets = group["onPremisesTagSet"]["onPremisesTagSetList"].as_array().cloned().unwrap_or_default();
    if !sets.is_empty() {
        return sets.iter().map(|s| format!("({})", table::tag_filters(s))).collect::<Vec<_>>().join(" and ");
    }
    table::tag_filters(&group["onPremisesInstanceTagFilters"])
}

fn configs(op: &Operator) -> Result<Listing, String> {
    let names = all_pages(op, "ListDeploymentConfigs", json!({}), "deploymentConfigsList")?;
    let mut docs = Vec::new();
    for name in &names {
        let output = op.call("GetDeploymentConfig", json!({ "deploymentConfigName": name }))?;
        docs.push(output["deploymentConfigInfo"].clone());
    }
    let mut t = Table::new(&["NAME", "MINIMUM HEALTHY", "CREATED"]);
    for d in &docs {
        t.row(vec![table::text(&d["deploymentConfigName"]), minimum_healthy(d), table::time(&d["createTime"])]);
    }
    Ok(Listing { docs, table: t })
}

/// `FLEET_PERCENT 50` and the like.
pub fn minimum_healthy(config: &Value) -> String {
    let m = &config["minimumHealthyHosts"];
    format!("{} {}", table::text(&m["type"]), table::text(&m["value"]))
}

fn deployments(op: &Operator, filters: &Filters) -> Result<Listing, String> {
    let mut input = json!({});
    if let Some(app) = &filters.application {
        input["applicationName"] = json!(app);
    }
    if let Some(group) = &filters.group {
        input["deploymentGroupName"] = json!(group);
    }
    if !filters.statuses.is_empty() {
        input["includeOnlyStatuses"] = json!(filters.statuses);
    }
    let ids = all_pages(op, "ListDeployments", input, "deployments")?;
    let docs = batch_deployments(op, &ids)?;
    let mut t =
        Table::new(&["DEPLOYMENT", "APPLICATION", "GROUP", "STATUS", "CREATED", "INSTANCES", "REVISION", "ROLLBACK"]);
    for d in &docs {
        t.row(vec![
            table::text(&d["deploymentId"]),
            table::text(&d["applicationName"]),
            table::text(&d["deploymentGroupName"]),
            table::text(&d["status"]),
            table::time(&d["createTime"]),
            table::overview(&d["deploymentOverview"]),
            table::revision(&d["revision"]),
            rollback_marker(d),
        ]);
    }
    Ok(Listing { docs, table: t })
}

/// The ROLLBACK column: `of d-X` for a rollback deployment (the server's,
/// creator `codeDeployRollback`, or one `edgedeploy rollback` made),
/// `by d-Y` for a deployment a server rollback undid, `-` otherwise.
fn rollback_marker(d: &Value) -> String {
    if let Some(id) = rolls_back(d) {
        return format!("of {id}");
    }
    match d["rollbackInfo"]["rollbackDeploymentId"].as_str() {
        Some(id) => format!("by {id}"),
        None => "-".into(),
    }
}

/// The DeploymentInfo of each id, in the order given.
pub fn batch_deployments(op: &Operator, ids: &[Value]) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for chunk in ids.chunks(25) {
        let output = op.call("BatchGetDeployments", json!({ "deploymentIds": chunk }))?;
        let mut infos = output["deploymentsInfo"].as_array().cloned().unwrap_or_default();
        infos.sort_by_key(|i| chunk.iter().position(|id| *id == i["deploymentId"]));
        docs.extend(infos);
    }
    Ok(docs)
}

fn instances(op: &Operator, filters: &Filters) -> Result<Listing, String> {
    let mut input = json!({});
    if let Some(status) = filters.statuses.first() {
        input["registrationStatus"] = json!(status);
    }
    if !filters.tags.is_empty() {
        let tags = filters.tags.iter().map(|t| tag_filter(t)).collect::<Result<Vec<_>, _>>()?;
        input["tagFilters"] = json!(tags);
    }
    let names = all_pages(op, "ListOnPremisesInstances", input, "instanceNames")?;
    let mut docs = Vec::new();
    for chunk in names.chunks(100) {
        let output = op.call("BatchGetOnPremisesInstances", json!({ "instanceNames": chunk }))?;
        let mut infos = output["instanceInfos"].as_array().cloned().unwrap_or_default();
        infos.sort_by_key(|i| chunk.iter().position(|n| *n == i["instanceName"]));
        docs.extend(infos);
    }
    let mut t = Table::new(&["NAME", "STATUS", "TAGS", "REGISTERED", "DEREGISTERED"]);
    for d in &docs {
        t.row(vec![
            table::text(&d["instanceName"]),
            registration_status(d).into(),
            table::tags(&d["tags"]),
            table::time(&d["registerTime"]),
            table::time(&d["deregisterTime"]),
        ]);
    }
    Ok(Listing { docs, table: t })
}

/// `Registered`, or `Deregistered` once the InstanceInfo has a `deregisterTime`.
pub fn registration_status(instance: &Value) -> &'static str {
    if instance["deregisterTime"].is_null() { "Registered" } else { "Deregistered" }
}

/// `KEY=VALUE` as a tag filter `{Key, Value, Type: KEY_AND_VALUE}`;
/// `KEY` alone as a `KEY_ONLY` filter.
pub fn tag_filter(text: &str) -> Result<Value, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(json!({ "Key": key, "Value": value, "Type": "KEY_AND_VALUE" })),
        None if !text.is_empty() => Ok(json!({ "Key": text, "Type": "KEY_ONLY" })),
        _ => Err(format!("--tag {text:?}: write KEY=VALUE or KEY")),
    }
}

fn revisions(op: &Operator, application: &str) -> Result<Listing, String> {
    let input = json!({ "applicationName": application, "sortBy": "registerTime", "sortOrder": "descending" });
    let locations = all_pages(op, "ListApplicationRevisions", input, "revisions")?;
    let docs = batch_revisions(op, application, &locations)?;
    let mut t = Table::new(&["REVISION", "BUNDLE", "REGISTERED", "LAST USED", "CURRENT FOR", "DESCRIPTION"]);
    for d in &docs {
        let (location, info) = (&d["revisionLocation"], &d["genericRevisionInfo"]);
        let groups: Vec<String> = info["deploymentGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str())
            .map(String::from)
            .collect();
        t.row(vec![
            table::revision(location),
            table::text(&location["s3Location"]["bundleType"]),
            table::time(&info["registerTime"]),
            table::time(&info["lastUsedTime"]),
            if groups.is_empty() { "-".into() } else { groups.join(",") },
            table::text(&info["description"]),
        ]);
    }
    Ok(Listing { docs, table: t })
}

/// `{revisionLocation, genericRevisionInfo}` of each location, in order.
pub fn batch_revisions(op: &Operator, application: &str, locations: &[Value]) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for chunk in locations.chunks(100) {
        let input = json!({ "applicationName": application, "revisions": chunk });
        let output = op.call("BatchGetApplicationRevisions", input)?;
        docs.extend(output["revisions"].as_array().cloned().unwrap_or_default());
    }
    Ok(docs)
}

/// The DeploymentTarget documents of a deployment.
pub fn targets(op: &Operator, deployment: &str, statuses: &[String]) -> Result<Vec<Value>, String> {
    let mut input = json!({ "deploymentId": deployment });
    if !statuses.is_empty() {
        input["targetFilters"] = json!({ "TargetStatus": statuses });
    }
    let ids = all_pages(op, "ListDeploymentTargets", input, "targetIds")?;
    let mut docs = Vec::new();
    for chunk in ids.chunks(25) {
        let output = op.call("BatchGetDeploymentTargets", json!({ "deploymentId": deployment, "targetIds": chunk }))?;
        docs.extend(output["deploymentTargets"].as_array().cloned().unwrap_or_default());
    }
    Ok(docs)
}

/// One row per target: instance, status, the event it is at (or failed
/// in, with the diagnostic), last update.
pub fn target_table(docs: &[Value]) -> Table {
    let mut t = Table::new(&["INSTANCE", "STATUS", "EVENT", "UPDATED", "DETAIL"]);
    for d in docs {
        let i = &d["instanceTarget"];
        let (event, detail) = current_event(i);
        t.row(vec![
            table::text(&i["targetId"]),
            table::text(&i["status"]),
            event,
            table::time(&i["lastUpdatedAt"]),
            detail,
        ]);
    }
    t
}

/// The event an instance target is at: the one in progress, else the one
/// that failed (with its diagnostic), else the last that ended.
pub fn current_event(instance_target: &Value) -> (String, String) {
    let events = instance_target["lifecycleEvents"].as_array().cloned().unwrap_or_default();
    let name = |e: &Value| table::text(&e["lifecycleEventName"]);
    if let Some(e) = events.iter().find(|e| e["status"] == "InProgress") {
        return (name(e), String::new());
    }
    if let Some(e) = events.iter().find(|e| e["status"] == "Failed") {
        let d = &e["diagnostics"];
        let detail = format!("{}: {}", table::text(&d["errorCode"]), d["message"].as_str().unwrap_or("").trim());
        return (name(e), detail);
    }
    match events.iter().rev().find(|e| matches!(e["status"].as_str(), Some("Succeeded" | "Skipped"))) {
        Some(e) => (name(e), String::new()),
        None => ("-".into(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_plural_singular_and_short() {
        assert_eq!(Resource::parse("applications"), Ok(Resource::Applications));
        assert_eq!(Resource::parse("deployment-group"), Ok(Resource::DeploymentGroups));
        assert_eq!(Resource::parse("configs"), Ok(Resource::DeploymentConfigs));
        assert_eq!(Resource::parse("target"), Ok(Resource::Targets));
        assert!(Resource::parse("widgets").unwrap_err().contains("deployment-configs"));
    }

    #[test]
    fn the_current_event_is_the_running_one_else_the_failed_one() {
        let t = json!({"lifecycleEvents": [
            {"lifecycleEventName": "DownloadBundle", "status": "Succeeded"},
            {"lifecycleEventName": "Install", "status": "InProgress"},
            {"lifecycleEventName": "AfterInstall", "status": "Pending"}]});
        assert_eq!(current_event(&t).0, "Install");
        let t = json!({"lifecycleEvents": [
            {"lifecycleEventName": "DownloadBundle", "status": "Succeeded"},
            {"lifecycleEventName": "AfterInstall", "status": "Failed",
             "diagnostics": {"errorCode": "ScriptFailed", "message": "exit 7"}}]});
        assert_eq!(current_event(&t), ("AfterInstall".into(), "ScriptFailed: exit 7".into()));
        assert_eq!(tag_filter("env=prod").unwrap()["Type"], "KEY_AND_VALUE");
        assert_eq!(tag_filter("env").unwrap()["Type"], "KEY_ONLY");
        assert!(tag_filter("=x").is_err());
    }
}
