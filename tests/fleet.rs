//! A fleet of real `edgedeploy-agent run` processes deployed to through a
//! real `edgedeploy server` on loopback: the bundle is pushed with
//! `edgedeploy push`, deployments are created and read back with boto3, and
//! the concurrency is measured from the server's own lifecycle-event times.

mod server_common;

use serde_json::Value;
use server_common::ServerProcess;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

/// One hook for every event: records the event, fails it when the agent's
/// environment says so, and makes ValidateService last long enough for
/// instances in flight together to overlap.
const HOOK: &str = r#"#!/bin/sh
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$FLEET_HOME/events"
if [ "$FAIL_EVENT" = "$LIFECYCLE_EVENT" ]; then
    echo "failing $LIFECYCLE_EVENT on purpose" >&2
    exit 7
fi
if [ "$LIFECYCLE_EVENT" = ValidateService ]; then sleep 2; fi
exit 0
"#;

struct Fleet {
    server: ServerProcess,
    agents: Vec<(String, Child, PathBuf)>,
}

impl Fleet {
    /// A server and `n` agents `dev-1`..`dev-n` tagged fleet=test; `fail`
    /// gives one agent an event to fail.
    fn start(n: usize, fail: Option<(usize, &str)>) -> Fleet {
        let server = ServerProcess::start();
        let mut agents = Vec::new();
        for i in 1..=n {
            let name = format!("dev-{i}");
            let dir = server.work_dir().join(&name);
            fs::create_dir_all(&dir).unwrap();
            let config = dir.join("agent.yml");
            let data_dir = server.data_dir().to_str().unwrap().to_string();
            let out = server.edgedeploy(&[
                "register-instance",
                "--data-dir",
                &data_dir,
                "--name",
                &name,
                "--tag",
                "fleet=test",
                "--agent-config",
                config.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "register-instance: {}", String::from_utf8_lossy(&out.stderr));
            let mut text = fs::read_to_string(&config).unwrap();
            text.push_str(&format!(
                "root_dir: {}\nwait_between_runs: 1\nhook_kill_grace_seconds: 1\n",
                dir.join("root").display()
            ));
            fs::write(&config, text).unwrap();
            let log = fs::File::create(dir.join("agent.log")).unwrap();
            let mut cmd = Command::new(AGENT);
            cmd.arg("run").arg("-c").arg(&config).env("FLEET_HOME", &dir).env_remove("FAIL_EVENT");
            if let Some((who, event)) = fail.filter(|(who, _)| *who == i) {
                let _ = who;
                cmd.env("FAIL_EVENT", event);
            }
            let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
            agents.push((name, child, dir));
        }
        Fleet { server, agents }
    }

    /// Pushes a bundle whose every event runs [`HOOK`]; returns its s3Location JSON.
    fn push_app(&self, application: &str) -> String {
        let app = self.server.work_dir().join("app");
        fs::create_dir_all(app.join("scripts")).unwrap();
        let mut spec = String::from("version: 0.0\nos: linux\nhooks:\n");
        for event in ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"] {
            spec.push_str(&format!("  {event}:\n    - location: scripts/hook.sh\n      timeout: 60\n"));
        }
        fs::write(app.join("appspec.yml"), spec).unwrap();
        fs::write(app.join("scripts/hook.sh"), HOOK).unwrap();
        fs::set_permissions(app.join("scripts/hook.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let data_dir = self.server.data_dir().to_str().unwrap().to_string();
        let out = self.server.edgedeploy(&[
            "push",
            "--data-dir",
            &data_dir,
            "--application",
            application,
            "--source",
            app.to_str().unwrap(),
            "--key",
            "app/bundle.tgz",
        ]);
        assert!(out.status.success(), "push: {}", String::from_utf8_lossy(&out.stderr));
        r#"{"bucket": "edgedeploy-bundles", "key": "app/bundle.tgz", "bundleType": "tgz"}"#.to_string()
    }

    /// Creates the application and a group selecting fleet=test, with boto3.
    fn create_group(&self, application: &str, config: &str) {
        self.server.boto3_ok(&format!(
            r#"
            c = client()
            c.create_application(applicationName="{application}")
            c.create_deployment_group(applicationName="{application}", deploymentGroupName="g",
                deploymentConfigName="{config}", serviceRoleArn="arn:aws:iam::000000000000:role/x",
                onPremisesInstanceTagFilters=[{{"Key": "fleet", "Value": "test", "Type": "KEY_AND_VALUE"}}])
            emit(c.get_deployment_group(applicationName="{application}", deploymentGroupName="g")["deploymentGroupInfo"]["onPremisesInstanceTagFilters"])
            "#
        ));
    }

    /// Deploys with boto3, waits for the end, returns the deployment and its targets.
    fn deploy(&self, application: &str, location: &str, config: &str) -> (Value, Vec<Value>) {
        self.server
            .boto3_ok(&format!(
                r#"
            import time
            c = client()
            d = c.create_deployment(applicationName="{application}", deploymentGroupName="g",
                deploymentConfigName="{config}", revision={{"revisionType": "S3", "s3Location": {location}}})
            did = d["deploymentId"]
            for _ in range(600):
                info = c.get_deployment(deploymentId=did)["deploymentInfo"]
                if info["status"] in ("Succeeded", "Failed", "Stopped"):
                    break
                time.sleep(0.5)
            ids = c.list_deployment_targets(deploymentId=did)["targetIds"]
            targets = c.batch_get_deployment_targets(deploymentId=did, targetIds=ids)["deploymentTargets"]
            targets = [t["instanceTarget"] for t in targets]
            for t in targets:
                for e in t.get("lifecycleEvents", []):
                    for k in ("startTime", "endTime"):
                        if k in e:
                            e[k] = e[k].timestamp()
            emit([info, targets])
            "#
            ))
            .as_array()
            .map(|a| (a[0].clone(), a[1].as_array().cloned().unwrap_or_default()))
            .unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child, dir) in &mut self.agents {
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

fn seconds(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// The largest number of instances whose first-to-last event windows overlap.
fn max_in_flight(targets: &[Value]) -> usize {
    let mut edges = Vec::new();
    for t in targets {
        let events = t["lifecycleEvents"].as_array().cloned().unwrap_or_default();
        let starts: Vec<f64> = events.iter().filter_map(|e| seconds(&e["startTime"])).collect();
        let ends: Vec<f64> = events.iter().filter_map(|e| seconds(&e["endTime"])).collect();
        if let (Some(start), Some(end)) =
            (starts.iter().cloned().reduce(f64::min), ends.iter().cloned().reduce(f64::max))
        {
            edges.push((start, 1i32));
            edges.push((end, -1i32));
        }
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

fn statuses(targets: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = targets
        .iter()
        .map(|t| (t["targetId"].as_str().unwrap_or("").to_string(), t["status"].as_str().unwrap_or("").to_string()))
        .collect();
    v.sort();
    v
}

fn event_statuses(target: &Value) -> Vec<(String, String)> {
    target["lifecycleEvents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (e["lifecycleEventName"].as_str().unwrap_or("").to_string(), e["status"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn six_real_agents_follow_each_configurations_concurrency_limit() {
    let fleet = Fleet::start(6, None);
    fleet.server.boto3_ok(
        r#"
        c = client()
        c.create_deployment_config(deploymentConfigName="TwoAtATime",
            minimumHealthyHosts={"type": "HOST_COUNT", "value": 4})
        emit("ok")
        "#,
    );
    fleet.create_group("shop", "CodeDeployDefault.AllAtOnce");
    let location = fleet.push_app("shop");
    for (config, limit) in [
        ("CodeDeployDefault.AllAtOnce", 6),
        ("CodeDeployDefault.HalfAtATime", 3),
        ("CodeDeployDefault.OneAtATime", 1),
        ("TwoAtATime", 2),
    ] {
        let (info, targets) = fleet.deploy("shop", &location, config);
        assert_eq!(info["status"], "Succeeded", "{config}: {info}");
        assert_eq!(targets.len(), 6, "{config}");
        assert!(statuses(&targets).iter().all(|(_, s)| s == "Succeeded"), "{config}: {:?}", statuses(&targets));
        assert_eq!(max_in_flight(&targets), limit, "{config}: instances in flight at once");
        assert_eq!(info["deploymentOverview"]["Succeeded"], 6, "{config}: {info}");
    }
    // Each agent ran each deployment's hooks once per event, in order.
    for (name, _, dir) in &fleet.agents {
        let events = fs::read_to_string(dir.join("events")).unwrap();
        let lines: Vec<&str> = events.lines().map(|l| l.split(' ').next().unwrap()).collect();
        // The first deployment has no previous revision: no ApplicationStop.
        assert_eq!(lines.len(), 4 + 3 * 5, "{name}: {events}");
        assert_eq!(&lines[..4], ["BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"], "{name}");
    }
}

#[test]
fn a_hook_failing_on_one_instance_fails_it_and_one_at_a_time_stops() {
    let fleet = Fleet::start(4, Some((2, "AfterInstall")));
    fleet.create_group("shop", "CodeDeployDefault.OneAtATime");
    let location = fleet.push_app("shop");
    let (info, targets) = fleet.deploy("shop", &location, "CodeDeployDefault.OneAtATime");
    assert_eq!(info["status"], "Failed", "{info}");
    assert_eq!(info["errorInformation"]["code"], "HEALTH_CONSTRAINTS", "{info}");
    let arn = |n: &str| format!("arn:aws:codedeploy:us-east-1:000000000000:instance/{n}");
    let by_name: Vec<(String, String)> = statuses(&targets);
    let expected: Vec<(String, String)> =
        [("dev-1", "Succeeded"), ("dev-2", "Failed"), ("dev-3", "Skipped"), ("dev-4", "Skipped")]
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
    let names: Vec<(String, String)> =
        by_name.iter().map(|(id, s)| (id.rsplit('/').next().unwrap_or(id).to_string(), s.clone())).collect();
    assert_eq!(names, expected, "targets: {by_name:?} ({})", arn("dev-1"));
    let failed = targets.iter().find(|t| t["targetId"].as_str().unwrap_or("").ends_with("dev-2")).unwrap();
    assert_eq!(
        event_statuses(failed),
        [
            ("ApplicationStop", "Succeeded"),
            ("DownloadBundle", "Succeeded"),
            ("BeforeInstall", "Succeeded"),
            ("Install", "Succeeded"),
            ("AfterInstall", "Failed"),
            ("ApplicationStart", "Skipped"),
            ("ValidateService", "Skipped"),
        ]
        .map(|(e, s)| (e.to_string(), s.to_string()))
    );
    let after = failed["lifecycleEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["lifecycleEventName"] == "AfterInstall")
        .unwrap();
    assert_eq!(after["diagnostics"]["errorCode"], "ScriptFailed", "{after}");
    assert_eq!(after["diagnostics"]["scriptName"], "scripts/hook.sh", "{after}");
    assert!(
        after["diagnostics"]["logTail"].as_str().unwrap_or("").contains("failing AfterInstall on purpose"),
        "{after}"
    );
    // The skipped instances never ran anything.
    for (name, _, dir) in &fleet.agents[2..] {
        assert!(!dir.join("events").exists(), "{name} ran hooks");
    }
    let _ = Path::new("");
}
