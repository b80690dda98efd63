//! The operator's commands (`edgedeploy list/get/watch/stop/rollback/
//! deregister-instance/tag-instance/untag-instance`, and `deploy --wait`'s
//! progress) against a real `edgedeploy server` on loopback, with real
//! `edgedeploy-agent run` processes where a deployment must really run.
//! What the commands print is checked against what boto3 reads from the API.

mod server_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use server_common::{EDGEDEPLOY, ServerProcess};

/// Every event's hook: records the event; ValidateService sleeps for the
/// seconds in the bundle's `sleep` file (so a deployment can be caught in
/// flight), and fails when the bundle has a `fail` file.
const HOOK: &str = r#"#!/bin/sh
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$FLEET_HOME/events"
if [ "$LIFECYCLE_EVENT" = ValidateService ]; then sleep "$(cat "$(dirname "$0")/../sleep")"; fi
if [ "$LIFECYCLE_EVENT" = ValidateService ] && [ -f "$(dirname "$0")/../fail" ]; then
    echo "failing on purpose" >&2
    exit 7
fi
exit 0
"#;

/// A server and its agents; the agents are killed on drop.
struct Fleet {
    server: ServerProcess,
    agents: Vec<(Child, PathBuf)>,
}

impl Fleet {
    fn start(devices: usize) -> Fleet {
        let server = ServerProcess::start();
        let mut fleet = Fleet { server, agents: Vec::new() };
        for i in 1..=devices {
            fleet.add_agent(&format!("dev-{i}"));
        }
        fleet
    }

    /// Registers `name` (tag fleet=test) with `register-instance` and starts its agent.
    fn add_agent(&mut self, name: &str) {
        let dir = self.server.work_dir().join(name);
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("agent.yml");
        self.ok(&["register-instance", "--name", name, "--tag", "fleet=test", "--agent-config", s(&config)]);
        let child = server_common::start_agent(&config, &dir);
        self.agents.push((child, dir));
    }

    /// `edgedeploy ARGS --data-dir DATA_DIR`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", s(self.server.data_dir())]);
        Command::new(EDGEDEPLOY)
            .args(&all)
            .env_remove("EDGEDEPLOY_DATA_DIR")
            .env_remove("EDGEDEPLOY_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`Self::run`], which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "edgedeploy {args:?} failed: {}\nstdout:\n{stdout}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server.log()
        );
        stdout
    }

    /// [`Self::ok`] with `--output json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} --output json: {e}:\n{text}"))
    }

    /// Pushes an app whose ValidateService sleeps `sleep` seconds, at key `app/VERSION.tgz`.
    fn push(&self, version: &str, sleep: u32) -> String {
        self.push_app(version, sleep, false)
    }

    /// [`Self::push`], with a ValidateService that fails when `fail`.
    fn push_app(&self, version: &str, sleep: u32, fail: bool) -> String {
        let app = self.server.work_dir().join(format!("app-{version}"));
        fs::create_dir_all(app.join("scripts")).unwrap();
        let mut spec = String::from("version: 0.0\nos: linux\nhooks:\n");
        for event in ["BeforeInstall", "ApplicationStart", "ValidateService"] {
            spec.push_str(&format!("  {event}:\n    - location: scripts/hook.sh\n      timeout: 120\n"));
        }
        fs::write(app.join("appspec.yml"), spec).unwrap();
        fs::write(app.join("scripts/hook.sh"), HOOK).unwrap();
        fs::set_permissions(app.join("scripts/hook.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(app.join("sleep"), sleep.to_string()).unwrap();
        fs::write(app.join("version"), version).unwrap();
        if fail {
            fs::write(app.join("fail"), "").unwrap();
        }
        let key = format!("app/{version}.tgz");
        self.ok(&["push", "--application", "shop", "--source", s(&app), "--key", &key, "--description", version]);
        key
    }

    /// Application `shop`, group `g` (fleet=test, AllAtOnce) and a custom configuration.
    fn create_group(&self) {
        self.server.boto3_ok(
            r#"
            c = client()
            c.create_application(applicationName="shop")
            c.create_deployment_config(deploymentConfigName="AtLeastOne",
                minimumHealthyHosts={"type": "HOST_COUNT", "value": 1})
            c.create_deployment_group(applicationName="shop", deploymentGroupName="g",
                deploymentConfigName="CodeDeployDefault.AllAtOnce", serviceRoleArn="arn:aws:iam::000000000000:role/x",
                onPremisesInstanceTagFilters=[{"Key": "fleet", "Value": "test", "Type": "KEY_AND_VALUE"}])
            emit("ok")
            "#,
        );
    }

    /// A deployment's DeploymentInfo, read with boto3 (times as strings).
    fn deployment(&self, id: &str) -> Value {
        self.server.boto3_ok(&format!("emit(client().get_deployment(deploymentId='{id}')['deploymentInfo'])"))
    }

    /// Waits until deployment `id` has an instance in ValidateService.
    fn wait_in_flight(&self, id: &str) {
        self.server.boto3_ok(&format!(
            r#"
            import time
            c = client()
            for _ in range(240):
                ids = c.list_deployment_targets(deploymentId="{id}")["targetIds"]
                ts = c.batch_get_deployment_targets(deploymentId="{id}", targetIds=ids)["deploymentTargets"]
                events = [e for t in ts for e in t["instanceTarget"].get("lifecycleEvents", [])]
                if any(e["lifecycleEventName"] == "ValidateService" and e["status"] == "InProgress" for e in events):
                    break
                time.sleep(0.25)
            else:
                raise AssertionError("no instance reached ValidateService")
            emit("ok")
            "#
        ));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, dir) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "agent log {}:\n{}",
                    dir.display(),
                    fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                );
            }
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The deployment id in a "created deployment d-..." line.
/// `edgedeploy deploy` of bundle-store object `key` to shop/g, then `extra`.
fn deploy_args<'a>(key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "deploy",
        "--application",
        "shop",
        "--deployment-group",
        "g",
        "--bucket",
        "edgedeploy-bundles",
        "--key",
        key,
    ];
    args.extend_from_slice(extra);
    args
}

fn created_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("created deployment "))
        .unwrap_or_else(|| panic!("no 'created deployment' line in:\n{stdout}"))
        .trim()
        .to_string()
}

/// The row of a table whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"));
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
}

#[test]
fn an_unreachable_server_gets_a_hint_and_a_failing_exit_status() {
    let work = std::env::temp_dir().join(format!("edgedeploy-cli-unreachable-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let credentials = work.join("credentials");
    server_common::write_credentials(&credentials, "AKIAEXAMPLE", "secret");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["list", "applications", "--endpoint", &url],
        vec!["get", "deployment", "d-AAAAAAAAA", "--endpoint", &url],
        vec!["stop", "d-AAAAAAAAA", "--endpoint", &url],
    ] {
        let out = Command::new(EDGEDEPLOY)
            .args(&args)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("EDGEDEPLOY_DATA_DIR")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(&format!("cannot reach the server at {url}")), "{args:?}: {stderr}");
        assert!(stderr.contains("is `edgedeploy server` running there?"), "{stderr}");
        assert!(stderr.contains("EDGEDEPLOY_ENDPOINT"), "{stderr}");
    }
    // The same through EDGEDEPLOY_ENDPOINT instead of the flag.
    let out = Command::new(EDGEDEPLOY)
        .args(["list", "instances"])
        .env("EDGEDEPLOY_ENDPOINT", &url)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env_remove("EDGEDEPLOY_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot reach the server at {url}")));
    // Nowhere to go at all.
    let out = Command::new(EDGEDEPLOY)
        .args(["list", "instances"])
        .env_remove("EDGEDEPLOY_ENDPOINT")
        .env_remove("EDGEDEPLOY_DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--data-dir") && stderr.contains("EDGEDEPLOY_ENDPOINT"), "{stderr}");
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn list_and_get_show_tables_and_the_apis_json_and_instances_are_tagged_and_removed() {
    let fleet = Fleet::start(0);
    fleet.create_group();
    let server = &fleet.server;
    let data_dir = s(server.data_dir()).to_string();
    for (name, site) in [("kiosk-1", "lyon"), ("kiosk-2", "paris")] {
        let config = server.work_dir().join(format!("{name}.yml"));
        fleet.ok(&[
            "register-instance",
            "--name",
            name,
            "--tag",
            "fleet=test",
            "--tag",
            &format!("site={site}"),
            "--agent-config",
            s(&config),
        ]);
    }
    let key = fleet.push("v1", 0);

    // Applications: table row, and the JSON documents are BatchGetApplications'.
    let table = fleet.ok(&["list", "applications"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(row(&table, "shop")[1], "Server");
    let docs = fleet.json(&["list", "applications"]);
    let api = server.boto3_ok("emit(client().batch_get_applications(applicationNames=['shop'])['applicationsInfo'])");
    assert_eq!(docs.as_array().unwrap().len(), 1);
    assert_eq!(docs[0]["applicationId"], api[0]["applicationId"]);
    assert_eq!(docs[0]["computePlatform"], "Server");
    assert!(docs[0]["createTime"].is_number(), "raw epoch seconds: {docs}");

    // Deployment groups and configurations.
    let table = fleet.ok(&["list", "deployment-groups", "--application", "shop"]);
    assert_eq!(row(&table, "g")[1..3], ["CodeDeployDefault.AllAtOnce", "fleet=test"]);
    let got = fleet.json(&["get", "deployment-group", "g", "--application", "shop"]);
    let api = server.boto3_ok("emit(client().get_deployment_group(applicationName='shop', deploymentGroupName='g'))");
    assert_eq!(got["deploymentGroupInfo"]["deploymentGroupId"], api["deploymentGroupInfo"]["deploymentGroupId"]);
    assert_eq!(
        got["deploymentGroupInfo"]["onPremisesInstanceTagFilters"],
        api["deploymentGroupInfo"]["onPremisesInstanceTagFilters"]
    );
    let text = fleet.ok(&["get", "deployment-group", "g", "--application", "shop"]);
    assert_eq!(row(&text, "instances")[1], "fleet=test", "{text}");
    let out = fleet.run(&["list", "deployment-groups"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --application"));
    let table = fleet.ok(&["list", "deployment-configs"]);
    assert_eq!(row(&table, "AtLeastOne")[1], "HOST_COUNT 1");
    assert_eq!(row(&table, "CodeDeployDefault.HalfAtATime")[1], "FLEET_PERCENT 50");
    let got = fleet.json(&["get", "deployment-config", "AtLeastOne"]);
    assert_eq!(got["deploymentConfigInfo"]["minimumHealthyHosts"]["value"], 1);

    // Instances: table, JSON, tag filter, get.
    let table = fleet.ok(&["list", "instances"]);
    assert_eq!(row(&table, "kiosk-1")[1..3], ["Registered", "fleet=test,site=lyon"]);
    let docs = fleet.json(&["list", "instances", "--tag", "site=paris"]);
    let names: Vec<&str> = docs.as_array().unwrap().iter().map(|d| d["instanceName"].as_str().unwrap()).collect();
    assert_eq!(names, ["kiosk-2"]);
    let api = server
        .boto3_ok("emit(client().get_on_premises_instance(instanceName='kiosk-2')['instanceInfo']['instanceArn'])");
    assert_eq!(docs[0]["instanceArn"], api);

    // Tags: add, remove by key and value, remove by key alone.
    let said = fleet.ok(&["tag-instance", "kiosk-1", "kiosk-2", "--tag", "env=prod", "--tag", "rack=3"]);
    assert!(said.contains("tagged kiosk-1, kiosk-2 with env=prod,rack=3"), "{said}");
    fleet.ok(&["untag-instance", "kiosk-1", "--tag", "env=prod", "--tag", "rack"]);
    let tags = server.boto3_ok(
        "emit([sorted((t['Key'], t['Value']) for t in client().get_on_premises_instance(instanceName=n)['instanceInfo']['tags']) for n in ('kiosk-1', 'kiosk-2')])",
    );
    assert_eq!(
        tags,
        serde_json::json!([
            [["fleet", "test"], ["site", "lyon"]],
            [["env", "prod"], ["fleet", "test"], ["rack", "3"], ["site", "paris"]]
        ])
    );

    // Revisions: the pushed one, by its location.
    let table = fleet.ok(&["list", "revisions", "--application", "shop"]);
    let r = row(&table, &format!("s3://edgedeploy-bundles/{key}"));
    assert_eq!(r[1], "tgz");
    assert_eq!(r.last().copied(), Some("v1"), "{table}");
    let got = fleet.json(&["get", "revision", &format!("s3://edgedeploy-bundles/{key}"), "--application", "shop"]);
    assert_eq!(got["revision"]["s3Location"]["key"], key);
    assert_eq!(got["revisionInfo"]["description"], "v1");

    // No deployment yet: nothing to roll back to, and the way out is named.
    let out = fleet.run(&["rollback", "--application", "shop", "--deployment-group", "g"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nothing to roll back to: shop/g has no deployments"), "{stderr}");
    assert!(stderr.contains("edgedeploy deploy --application shop --deployment-group g"), "{stderr}");

    // Deregistration says what to do on the device; the key is gone.
    let said = fleet.ok(&["deregister-instance", "kiosk-2"]);
    assert!(said.contains("deregistered instance kiosk-2"), "{said}");
    assert!(said.contains("On the device: stop the agent"), "{said}");
    let table = fleet.ok(&["list", "instances", "--status", "Deregistered"]);
    assert_eq!(row(&table, "kiosk-2")[1], "Deregistered");
    assert!(!table.contains("kiosk-1"), "{table}");
    let again = fleet.ok(&["deregister-instance", "kiosk-2"]);
    assert!(again.contains("already deregistered"), "{again}");

    // The environment variable stands for --data-dir.
    let out = Command::new(EDGEDEPLOY)
        .args(["get", "instance", "kiosk-1"])
        .env("EDGEDEPLOY_DATA_DIR", &data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(row(&text, "status")[1], "Registered", "{text}");
    assert_eq!(row(&text, "arn")[1], "arn:aws:codedeploy:us-east-1:000000000000:instance/kiosk-1", "{text}");

    // Unknown things are named.
    let out = fleet.run(&["get", "application", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ApplicationDoesNotExistException"));
    let out = fleet.run(&["list", "widgets"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown resource \"widgets\""));
}

#[test]
fn deploy_watch_stop_and_rollback_with_real_agents() {
    let fleet = Fleet::start(2);
    fleet.create_group();
    let v1 = fleet.push("v1", 1);

    // deploy --wait, not on a terminal: one plain line per change, no escapes.
    let out = fleet.ok(&deploy_args(&v1, &["--wait"]));
    let first = created_id(&out);
    assert!(!out.contains('\x1b'), "escape codes in plain output:\n{out}");
    assert!(out.contains(&format!("{first}  InProgress")), "{out}");
    assert!(
        out.contains(&format!("{first}  Succeeded   pending 0 in-progress 0 succeeded 2 failed 0 skipped 0")),
        "{out}"
    );
    for dev in ["dev-1", "dev-2"] {
        assert!(out.contains(&format!("  {dev:<24} InProgress  ")), "{dev} never shown at an event:\n{out}");
        assert!(out.contains(&format!("  {dev:<24} Succeeded")), "{out}");
    }
    assert!(out.trim_end().ends_with(&format!("deployment {first} succeeded")), "{out}");
    // Each line is printed once: the lines of a change are not repeated.
    let lines: Vec<&str> = out.lines().collect();
    for pair in lines.windows(2) {
        assert_ne!(pair[0], pair[1], "{out}");
    }

    // Targets and the deployment, as tables and JSON.
    let table = fleet.ok(&["list", "targets", "--deployment", &first]);
    for dev in ["dev-1", "dev-2"] {
        assert_eq!(row(&table, dev)[1..3], ["Succeeded", "ValidateService"], "{table}");
    }
    let docs = fleet.json(&["list", "targets", "--deployment", &first]);
    assert_eq!(docs.as_array().unwrap().len(), 2);
    assert_eq!(docs[0]["deploymentTargetType"], "InstanceTarget");
    let got = fleet.json(&["get", "deployment", &first]);
    let api = fleet.deployment(&first);
    assert_eq!(got["deploymentInfo"]["status"], api["status"]);
    assert_eq!(got["deploymentInfo"]["deploymentOverview"], api["deploymentOverview"]);
    let text = fleet.ok(&["get", "target", "dev-1", "--deployment", &first]);
    assert!(row(&text, "Install")[1] == "Succeeded", "{text}");
    let table = fleet.ok(&["list", "deployments", "--application", "shop", "--deployment-group", "g"]);
    assert_eq!(row(&table, &first)[3], "Succeeded");
    assert!(table.contains("2/2 succeeded"), "{table}");

    // The live view on a terminal (a pty from script(1)): redrawn in place.
    let command = format!("{EDGEDEPLOY} watch {first} --data-dir {}", s(fleet.server.data_dir()));
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let live = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "watch on a pty: {live}");
    assert!(live.contains("\x1b[J"), "no redraw on a terminal: {live:?}");
    assert!(live.contains(&format!("deployment {first}  Succeeded")), "{live:?}");
    assert!(live.contains("[#######] 7/7"), "{live:?}");
    let plain = fleet.ok(&["watch", &first]);
    assert!(!plain.contains('\x1b') && plain.contains(&format!("deployment {first} succeeded")), "{plain}");

    // v2, then roll back: v1 again, by a new deployment.
    let v2 = fleet.push("v2", 1);
    let out = fleet.ok(&["deploy", "--application", "shop", "--deployment-group", "g", "--wait", "--plain"]);
    let second = created_id(&out);
    assert_eq!(fleet.deployment(&second)["revision"]["s3Location"]["key"], v2.as_str());
    let out = fleet.ok(&["rollback", "--application", "shop", "--deployment-group", "g", "--wait"]);
    let third = created_id(&out);
    assert!(out.contains(&format!("redeploying s3://edgedeploy-bundles/{v1}, the revision of {first}")), "{out}");
    assert!(out.contains(&format!("replacing that of {second}")), "{out}");
    assert!(out.contains(&format!("deployment {third} succeeded")), "{out}");
    let info = fleet.deployment(&third);
    assert_eq!(info["revision"]["s3Location"]["key"], v1.as_str());
    assert_eq!(info["status"], "Succeeded");
    // Again: v2 was undone, and before v1 there is nothing: no deployment.
    let out = fleet.run(&["rollback", "--application", "shop", "--deployment-group", "g"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("nothing to roll back to"), "{stderr}");
    let listed = fleet.json(&["list", "deployments", "--application", "shop", "--deployment-group", "g"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    // A failing revision: the progress names the event and the script's
    // error, and the exit status says it failed.
    let bad = fleet.push_app("bad", 0, true);
    let out = fleet.run(&deploy_args(&bad, &["--wait"]));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a failed deployment exited 0:\n{stdout}");
    let failed = created_id(&stdout);
    for dev in ["dev-1", "dev-2"] {
        assert!(stdout.contains(&format!("  {dev:<24} Failed  ValidateService failed: ScriptFailed: ")), "{stdout}");
    }
    assert!(
        stdout.contains(&format!("{failed}  Failed      pending 0 in-progress 0 succeeded 0 failed 2")),
        "{stdout}"
    );
    assert!(stdout.contains("  error: "), "{stdout}");
    assert!(stderr.contains(&format!("error: deployment {failed} ended Failed")), "{stderr}");
    let text = fleet.ok(&["get", "target", "dev-1", "--deployment", &failed]);
    assert!(row(&text, "ValidateService")[1] == "Failed" && text.contains("ScriptFailed"), "{text}");

    // stop: a slow deployment caught in flight ends Stopped.
    let v3 = fleet.push("v3", 20);
    let out = fleet.ok(&deploy_args(&v3, &[]));
    let fourth = created_id(&out);
    fleet.wait_in_flight(&fourth);
    let said = fleet.ok(&["stop", &fourth]);
    assert!(said.starts_with(&format!("stopped deployment {fourth}: ")), "{said}");
    assert_eq!(fleet.deployment(&fourth)["status"], "Stopped");
    let out = fleet.run(&["stop", &fourth]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DeploymentAlreadyCompletedException"));

    // rollback while a deployment is in flight: it is stopped, and the
    // group goes back to the last good revision before it (v1).
    let out = fleet.ok(&deploy_args(&v3, &[]));
    let fifth = created_id(&out);
    fleet.wait_in_flight(&fifth);
    let out = fleet.ok(&["rollback", "--application", "shop", "--deployment-group", "g", "--wait", "--timeout", "300"]);
    assert!(out.contains(&format!("stopped deployment {fifth}")), "{out}");
    let sixth = created_id(&out);
    assert_eq!(fleet.deployment(&fifth)["status"], "Stopped");
    let info = fleet.deployment(&sixth);
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["revision"]["s3Location"]["key"], v1.as_str());

    // stop --rollback asks the server to roll back and says what it did.
    let out = fleet.ok(&deploy_args(&v3, &[]));
    let seventh = created_id(&out);
    fleet.wait_in_flight(&seventh);
    let said = fleet.ok(&["stop", &seventh, "--rollback"]);
    assert!(said.starts_with(&format!("stopped deployment {seventh}")), "{said}");
    assert!(
        said.contains("rolling back with deployment d-") || said.contains("the server started no rollback deployment"),
        "{said}"
    );
    assert_eq!(fleet.deployment(&seventh)["status"], "Stopped");
}

/// The rollback deployment named in `id`'s `rollbackInfo`.
fn rollback_of(fleet: &Fleet, id: &str) -> String {
    let info = fleet.json(&["get", "deployment", id]);
    info["deploymentInfo"]["rollbackInfo"]["rollbackDeploymentId"]
        .as_str()
        .unwrap_or_else(|| panic!("deployment {id} has no rollbackDeploymentId: {info}"))
        .to_string()
}

#[test]
fn the_servers_rollbacks_show_in_get_and_list_and_stop_rollback_names_them() {
    let fleet = Fleet::start(1);
    fleet.create_group();
    fleet.server.boto3_ok(
        r#"
        client().update_deployment_group(applicationName="shop", currentDeploymentGroupName="g",
            autoRollbackConfiguration={"enabled": True, "events": ["DEPLOYMENT_FAILURE"]})
        emit("ok")
        "#,
    );
    let a = fleet.push("a", 0);
    let deploy = |key: &str, wait: bool| {
        let out = fleet.run(&deploy_args(key, if wait { &["--wait"] } else { &[] }));
        (out.status.success(), created_id(&String::from_utf8_lossy(&out.stdout)))
    };
    let (ok, good) = deploy(&a, true);
    assert!(ok, "deployment {good} of a failed");

    // b fails on the real agent: the server rolls back to a by itself.
    let b = fleet.push_app("b", 0, true);
    let (ok, failed) = deploy(&b, true);
    assert!(!ok, "deployment {failed} of a failing revision exited 0");
    let rollback = rollback_of(&fleet, &failed);
    let watched = fleet.ok(&["watch", &rollback]);
    assert!(watched.contains(&format!("deployment {rollback} succeeded")), "{watched}");

    let info = fleet.json(&["get", "deployment", &rollback])["deploymentInfo"].clone();
    assert_eq!(info["creator"], "codeDeployRollback", "{info}");
    assert_eq!(info["rollbackInfo"]["rollbackTriggeringDeploymentId"], failed.as_str(), "{info}");
    assert_eq!(info["revision"]["s3Location"]["key"], a.as_str(), "{info}");
    let text = fleet.ok(&["get", "deployment", &rollback]);
    assert_eq!(row(&text, "creator")[1], "codeDeployRollback", "{text}");
    assert!(text.contains(&format!("rolls back {failed}")), "{text}");
    let text = fleet.ok(&["get", "deployment", &failed]);
    assert!(text.contains(&format!("rolled back by {rollback}")), "{text}");
    assert_eq!(row(&text, "creator")[1], "user", "{text}");

    let table = fleet.ok(&["list", "deployments", "--application", "shop", "--deployment-group", "g"]);
    assert!(table.lines().next().is_some_and(|header| header.trim_end().ends_with("ROLLBACK")), "{table}");
    assert_eq!(row(&table, &rollback).last().copied(), Some(format!("of {failed}").as_str()), "{table}");
    assert_eq!(row(&table, &failed).last().copied(), Some(format!("by {rollback}").as_str()), "{table}");
    assert_eq!(row(&table, &good).last().copied(), Some("-"), "{table}");

    // stop --rollback on a deployment in flight: the command names the
    // rollback the server made, back to a (the rollback's success counts).
    let c = fleet.push("c", 30);
    let (ok, slow) = deploy(&c, false);
    assert!(ok, "deploy {slow}");
    fleet.wait_in_flight(&slow);
    let said = fleet.ok(&["stop", &slow, "--rollback"]);
    let second = rollback_of(&fleet, &slow);
    assert!(said.contains(&format!("rolling back with deployment {second};")), "{said}");
    let info = fleet.json(&["get", "deployment", &second])["deploymentInfo"].clone();
    assert_eq!(info["creator"], "codeDeployRollback", "{info}");
    assert_eq!(info["revision"]["s3Location"]["key"], a.as_str(), "{info}");
    let watched = fleet.ok(&["watch", &second]);
    assert!(watched.contains(&format!("deployment {second} succeeded")), "{watched}");

    // The manual rollback goes by the same rule: the group is on a, and
    // every earlier success is a or was undone, so there is nothing to go
    // back to (and nothing is deployed).
    let out = fleet.run(&["rollback", "--application", "shop", "--deployment-group", "g"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("nothing to roll back to"), "{stderr}");
    let listed = fleet.json(&["list", "deployments", "--application", "shop", "--deployment-group", "g"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(5), "{listed}");
}
