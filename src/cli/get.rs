//! `edgedeploy get RESOURCE NAME`: one item, as readable fields (and, for
//! a deployment or a target, a table of its instances or events), or as
//! the Get operation's output document.

use serde_json::{Value, json};

use super::connect::Operator;
use super::list::{self, Filters, Resource};
use super::table::{self, Table};

/// What `get` found: the API's output document and its readable form.
#[derive(Debug, Clone)]
pub struct Found {
    /// The Get operation's output, as the API returned it.
    pub raw: Value,
    /// Fields (and tables) for people.
    pub text: String,
}

/// Gets item `name` of `resource`.
pub fn get(op: &Operator, resource: Resource, name: &str, filters: &Filters) -> Result<Found, String> {
    match resource {
        Resource::Applications => application(op, name),
        Resource::DeploymentGroups => group(op, filters.application("get deployment-group")?, name),
        Resource::DeploymentConfigs => config(op, name),
        Resource::Deployments => deployment(op, name),
        Resource::Instances => instance(op, name),
        Resource::Revisions => revision(op, filters.application("get revision")?, name),
        Resource::Targets => target(op, filters.deployment("get target")?, name),
    }
}

fn application(op: &Operator, name: &str) -> Result<Found, String> {
    let raw = op.call("GetApplication", json!({ "applicationName": name }))?;
    let a = &raw["application"];
    let text = table::fields(&[
        ("application", table::text(&a["applicationName"])),
        ("id", table::text(&a["applicationId"])),
        ("platform", table::text(&a["computePlatform"])),
        ("created", table::time(&a["createTime"])),
    ]);
    Ok(Found { raw, text })
}

fn group(op: &Operator, application: &str, name: &str) -> Result<Found, String> {
    let raw = op.call("GetDeploymentGroup", json!({ "applicationName": application, "deploymentGroupName": name }))?;
    let g = &raw["deploymentGroupInfo"];
    let last = |d: &Value| match d["deploymentId"].as_str() {
        Some(id) => format!("{id} {} (created {})", table::text(&d["status"]), table::time(&d["createTime"])),
        None => "-".into(),
    };
    let triggers: Vec<String> = g["triggerConfigurations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} -> {}", table::text(&t["triggerName"]), table::text(&t["triggerTargetArn"])))
        .collect();
    let rollback = &g["autoRollbackConfiguration"];
    let rollback = if rollback["enabled"] == true {
        let events: Vec<&str> =
            rollback["events"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).collect();
        format!("on {}", events.join(", "))
    } else {
        "off".into()
    };
    let text = table::fields(&[
        ("application", table::text(&g["applicationName"])),
        ("deployment group", table::text(&g["deploymentGroupName"])),
        ("id", table::text(&g["deploymentGroupId"])),
        ("config", table::text(&g["deploymentConfigName"])),
        ("instances", list::group_selection(g)),
        ("target revision", table::revision(&g["targetRevision"])),
        ("last successful", last(&g["lastSuccessfulDeployment"])),
        ("last attempted", last(&g["lastAttemptedDeployment"])),
        ("auto rollback", rollback),
        ("triggers", triggers.join("; ")),
    ]);
    Ok(Found { raw, text })
}

fn config(op: &Operator, name: &str) -> Result<Found, String> {
    let raw = op.call("GetDeploymentConfig", json!({ "deploymentConfigName": name }))?;
    let c = &raw["deploymentConfigInfo"];
    let text = table::fields(&[
        ("deployment config", table::text(&c["deploymentConfigName"])),
        ("minimum healthy", list::minimum_healthy(c)),
        ("platform", table::text(&c["computePlatform"])),
        ("created", table::time(&c["createTime"])),
    ]);
    Ok(Found { raw, text })
}

fn deployment(op: &Operator, id: &str) -> Result<Found, String> {
    let raw = op.call("GetDeployment", json!({ "deploymentId": id }))?;
    let d = &raw["deploymentInfo"];
    let error = match d["errorInformation"]["message"].as_str() {
        Some(m) => format!("{}: {m}", table::text(&d["errorInformation"]["code"])),
        None => String::new(),
    };
    let rollback = &d["rollbackInfo"];
    let rollback = [
        rollback["rollbackDeploymentId"].as_str().map(|id| format!("rolled back by {id}")),
        rollback["rollbackTriggeringDeploymentId"].as_str().map(|id| format!("rolls back {id}")),
        rollback["rollbackMessage"].as_str().map(str::to_string),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    let mut text = table::fields(&[
        ("deployment", table::text(&d["deploymentId"])),
        ("application", table::text(&d["applicationName"])),
        ("deployment group", table::text(&d["deploymentGroupName"])),
        ("status", table::text(&d["status"])),
        ("instances", table::overview(&d["deploymentOverview"])),
        ("revision", table::revision(&d["revision"])),
        ("previous revision", table::revision(&d["previousRevision"])),
        ("config", table::text(&d["deploymentConfigName"])),
        ("creator", table::text(&d["creator"])),
        ("description", table::text(&d["description"])),
        ("created", table::time(&d["createTime"])),
        ("started", table::time(&d["startTime"])),
        ("completed", table::time(&d["completeTime"])),
        ("error", error),
        ("rollback", rollback),
    ]);
    let targets = list::targets(op, id, &[])?;
    if !targets.is_empty() {
        text.push('\n');
        text.push_str(&list::target_table(&targets).render());
    }
    Ok(Found { raw, text })
}

fn instance(op: &Operator, name: &str) -> Result<Found, String> {
    let raw = op.call("GetOnPremisesInstance", json!({ "instanceName": name }))?;
    let i = &raw["instanceInfo"];
    let text = table::fields(&[
        ("instance", table::text(&i["instanceName"])),
        ("status", list::registration_status(i).into()),
        ("tags", table::tags(&i["tags"])),
        ("arn", table::text(&i["instanceArn"])),
        ("iam session", table::text(&i["iamSessionArn"])),
        ("iam user", table::text(&i["iamUserArn"])),
        ("registered", table::time(&i["registerTime"])),
        ("deregistered", table::time(&i["deregisterTime"])),
    ]);
    Ok(Found { raw, text })
}

/// A revision named `s3://bucket/key`: the newest registered revision of
/// the application at that location (any eTag or version).
fn revision(op: &Operator, application: &str, name: &str) -> Result<Found, String> {
    let (bucket, key) = name
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| format!("revision {name:?}: name it s3://BUCKET/KEY (see `edgedeploy list revisions`)"))?;
    let input = json!({
        "applicationName": application, "s3Bucket": bucket, "s3KeyPrefix": key,
        "sortBy": "registerTime", "sortOrder": "descending",
    });
    let locations = list::all_pages(op, "ListApplicationRevisions", input, "revisions")?;
    let location = locations
        .into_iter()
        .find(|l| l["s3Location"]["key"] == key)
        .ok_or_else(|| format!("application {application} has no revision at {name}"))?;
    let raw = op.call("GetApplicationRevision", json!({ "applicationName": application, "revision": location }))?;
    let (r, info) = (&raw["revision"], &raw["revisionInfo"]);
    let groups: Vec<&str> =
        info["deploymentGroups"].as_array().into_iter().flatten().filter_map(|g| g.as_str()).collect();
    let text = table::fields(&[
        ("application", table::text(&raw["applicationName"])),
        ("revision", table::revision(r)),
        ("bundle type", table::text(&r["s3Location"]["bundleType"])),
        ("etag", table::text(&r["s3Location"]["eTag"])),
        ("description", table::text(&info["description"])),
        ("registered", table::time(&info["registerTime"])),
        ("first used", table::time(&info["firstUsedTime"])),
        ("last used", table::time(&info["lastUsedTime"])),
        ("current for", groups.join(",")),
    ]);
    Ok(Found { raw, text })
}

fn target(op: &Operator, deployment: &str, name: &str) -> Result<Found, String> {
    let raw = op.call("GetDeploymentTarget", json!({ "deploymentId": deployment, "targetId": name }))?;
    let i = &raw["deploymentTarget"]["instanceTarget"];
    let mut text = table::fields(&[
        ("deployment", table::text(&i["deploymentId"])),
        ("instance", table::text(&i["targetId"])),
        ("arn", table::text(&i["targetArn"])),
        ("status", table::text(&i["status"])),
        ("updated", table::time(&i["lastUpdatedAt"])),
    ]);
    let mut events = Table::new(&["EVENT", "STATUS", "START", "END", "DIAGNOSTIC"]);
    for e in i["lifecycleEvents"].as_array().into_iter().flatten() {
        let d = &e["diagnostics"];
        let diagnostic = match d["errorCode"].as_str() {
            Some(code) if code != "Success" => format!("{code}: {}", d["message"].as_str().unwrap_or("").trim()),
            _ => String::new(),
        };
        events.row(vec![
            table::text(&e["lifecycleEventName"]),
            table::text(&e["status"]),
            table::time(&e["startTime"]),
            table::time(&e["endTime"]),
            diagnostic,
        ]);
    }
    text.push('\n');
    text.push_str(&events.render());
    Ok(Found { raw, text })
}
