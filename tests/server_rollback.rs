//! Rollbacks end to end: a real `edgedeploy server`, real agents (files on
//! disk) or scripted agents (real signed clients), automatic rollback on
//! failure, StopDeployment with and without `autoRollbackEnabled`, no
//! rollback without an earlier success, and no rollback of a rollback.

#[path = "server_common/scripted.rs"]
mod scripted;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use edgedeploy::protocol::spec::DeploymentSpec;
use scripted::{Agents, Server, never, revision_key};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");
const SERVER: &str = env!("CARGO_BIN_EXE_edgedeploy");
const WAIT: Duration = Duration::from_secs(90);

fn on_failure() -> Value {
    json!({"autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_FAILURE"]}})
}

/// The rollback deployment `id` triggered, from its rollbackInfo.
fn rollback_of(server: &Server, id: &str) -> String {
    let info = server.deployment(id);
    info["rollbackInfo"]["rollbackDeploymentId"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no rollback: {info}"))
        .to_string()
}

/// A bundle directory: `content/` (version.txt and only-<name>.txt)
/// installed to `install`, and a ValidateService hook that exits `exit`.
fn bundle(dir: &Path, name: &str, install: &Path, exit: i32) {
    fs::create_dir_all(dir.join("content")).unwrap();
    fs::create_dir_all(dir.join("scripts")).unwrap();
    fs::write(dir.join("content/version.txt"), format!("{name}\n")).unwrap();
    fs::write(dir.join(format!("content/only-{name}.txt")), name).unwrap();
    let hook = format!("#!/bin/sh\necho \"validating {name}\"\nexit {exit}\n");
    fs::write(dir.join("scripts/validate.sh"), hook).unwrap();
    fs::set_permissions(dir.join("scripts/validate.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: content\n    destination: {}\nhooks:\n  ValidateService:\n    \
         - location: scripts/validate.sh\n      timeout: 30\n",
        install.display()
    );
    fs::write(dir.join("appspec.yml"), spec).unwrap();
}

fn push(server: &Server, source: &Path, key: &str) -> Value {
    let out = Command::new(SERVER)
        .args(["push", "--data-dir"])
        .arg(&server.dir)
        .args(["--application", "shop", "--source"])
        .arg(source)
        .args(["--key", key])
        .output()
        .unwrap();
    assert!(out.status.success(), "push: {}", String::from_utf8_lossy(&out.stderr));
    json!({"revision": {"revisionType": "S3",
        "s3Location": {"bucket": "edgedeploy-bundles", "key": key, "bundleType": "tgz"}}})
}

struct RealAgent(Child, std::path::PathBuf);

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", fs::read_to_string(self.1.join("agent.log")).unwrap_or_default());
        }
    }
}

#[test]
fn a_failed_deployment_is_rolled_back_to_the_last_good_revision_on_a_real_agent() {
    let server = Server::start("real", &[]);
    server.application("shop");
    let (config, _) = server.register("kiosk-1", "kiosk");
    server.group("shop", "kiosk", on_failure());
    let work = server.dir.join("work");
    let install = work.join("installed");
    fs::create_dir_all(&install).unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("root_dir: {}\nwait_between_runs: 1\n", work.join("root").display()));
    fs::write(&config, text).unwrap();
    let log = fs::File::create(work.join("agent.log")).unwrap();
    let child = Command::new(AGENT)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = RealAgent(child, work.clone());

    bundle(&work.join("a"), "a", &install, 0);
    bundle(&work.join("b"), "b", &install, 1);
    let a = push(&server, &work.join("a"), "app/a.tgz");
    let b = push(&server, &work.join("b"), "app/b.tgz");
    let first = server.deploy("shop", "kiosk", "", a);
    assert_eq!(server.wait_end(&first, WAIT)["status"], "Succeeded");
    assert_eq!(fs::read_to_string(install.join("version.txt")).unwrap(), "a\n");

    let broken = server.deploy("shop", "kiosk", "", b);
    let failed = server.wait_end(&broken, WAIT);
    assert_eq!(failed["status"], "Failed", "{failed}");
    let rollback = rollback_of(&server, &broken);
    let info = server.wait_end(&rollback, WAIT);
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["creator"], "codeDeployRollback");
    assert_eq!(info["revision"]["s3Location"]["key"], "app/a.tgz");
    assert_eq!(info["rollbackInfo"]["rollbackTriggeringDeploymentId"], broken.as_str());
    // The device is on revision a again: b's files are gone.
    assert_eq!(fs::read_to_string(install.join("version.txt")).unwrap(), "a\n");
    assert!(install.join("only-a.txt").exists());
    assert!(!install.join("only-b.txt").exists(), "b's file is left behind");
    let group = server.ok("GetDeploymentGroup", json!({"applicationName": "shop", "deploymentGroupName": "kiosk"}));
    let group = &group["deploymentGroupInfo"];
    assert_eq!(group["lastSuccessfulDeployment"]["deploymentId"], rollback.as_str());
    assert_eq!(group["targetRevision"]["s3Location"]["key"], "app/a.tgz");
}

#[test]
fn every_instance_of_the_failed_deployment_is_redeployed_the_last_good_revision() {
    let server = Server::start("fleet", &[]);
    let fleet = server.fleet("shop", "line", 3, json!({"deploymentConfigName": "CodeDeployDefault.OneAtATime"}));
    // line-0 fails b; OneAtATime then skips line-1 and line-2.
    let fail: scripted::FailRule = Arc::new(|who: &str, spec: &DeploymentSpec, event: &str| {
        who == "line-0" && revision_key(spec) == "b.tgz" && event == "AfterInstall"
    });
    let agents = Agents::run(&fleet, fail);
    let good = server.deploy("shop", "line", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&good, WAIT)["status"], "Succeeded");
    let bad = server.deploy("shop", "line", "b.tgz", on_failure());
    let failed = server.wait_end(&bad, WAIT);
    assert_eq!(failed["status"], "Failed");
    assert_eq!(
        server.target_statuses(&bad).iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["Failed", "Skipped", "Skipped"]
    );
    let rollback = rollback_of(&server, &bad);
    let info = server.wait_end(&rollback, WAIT);
    let specs = agents.stop();
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["creator"], "codeDeployRollback");
    assert_eq!(info["deploymentConfigName"], "CodeDeployDefault.OneAtATime");
    assert_eq!(info["revision"]["s3Location"]["key"], "a.tgz");
    assert_eq!(info["rollbackInfo"]["rollbackTriggeringDeploymentId"], bad.as_str());
    assert!(info["rollbackInfo"]["rollbackMessage"].as_str().unwrap().contains(&good), "{info}");
    let failed = server.deployment(&bad);
    assert_eq!(failed["rollbackInfo"]["rollbackDeploymentId"], rollback.as_str());
    assert!(failed["rollbackInfo"]["rollbackMessage"].as_str().unwrap().contains(&rollback));
    // The same instances, all on a again (the skipped ones too).
    let statuses = server.target_statuses(&rollback);
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|(_, s)| s == "Succeeded"), "{statuses:?}");
    let rollback_specs: Vec<&(String, DeploymentSpec)> =
        specs.iter().filter(|(_, s)| s.deployment_id == rollback).collect();
    assert_eq!(rollback_specs.len(), 3);
    for (who, spec) in rollback_specs {
        assert_eq!(revision_key(spec), "a.tgz", "{who}");
        assert_eq!(spec.deployment_creator, "codeDeployRollback", "{who}");
    }
    assert_eq!(server.deployments("shop", "line").len(), 3);
}

#[test]
fn stop_deployment_rolls_back_as_asked_or_as_configured() {
    let server = Server::start("stop", &[]);
    let fleet = server.fleet("shop", "pair", 2, json!({}));
    let agents = Agents::run(&fleet, never());
    let good = server.deploy("shop", "pair", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&good, WAIT)["status"], "Succeeded");
    agents.stop();
    // No agent runs now: deployments stay in progress until stopped.

    // autoRollbackEnabled true, nothing configured: rolled back.
    let asked = server.deploy("shop", "pair", "b.tgz", json!({}));
    let out = server.ok("StopDeployment", json!({"deploymentId": asked, "autoRollbackEnabled": true}));
    assert_eq!(out["status"], "Succeeded");
    let rollback = rollback_of(&server, &asked);
    assert!(out["statusMessage"].as_str().unwrap().contains(&rollback), "{out}");
    assert_eq!(server.deployment(&asked)["status"], "Stopped");
    let info = server.deployment(&rollback);
    assert_eq!(info["creator"], "codeDeployRollback");
    assert!(["Created", "InProgress"].contains(&info["status"].as_str().unwrap()), "{info}");
    assert_eq!(info["revision"]["s3Location"]["key"], "a.tgz");
    // Stopping the rollback itself with autoRollbackEnabled: not rolled back again.
    server.ok("StopDeployment", json!({"deploymentId": rollback, "autoRollbackEnabled": true}));
    let stopped = server.deployment(&rollback);
    assert_eq!(stopped["status"], "Stopped");
    assert_eq!(stopped["rollbackInfo"]["rollbackTriggeringDeploymentId"], asked.as_str());
    assert!(stopped["rollbackInfo"].get("rollbackDeploymentId").is_none(), "{stopped}");
    assert!(stopped["rollbackInfo"]["rollbackMessage"].as_str().unwrap().contains("not rolled back again"));

    // Absent: the deployment's configuration decides (DEPLOYMENT_STOP_ON_REQUEST).
    let on_stop = json!({"autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_STOP_ON_REQUEST"]}});
    let configured = server.deploy("shop", "pair", "b.tgz", on_stop.clone());
    server.ok("StopDeployment", json!({"deploymentId": configured}));
    let second = rollback_of(&server, &configured);
    server.ok("StopDeployment", json!({"deploymentId": second, "autoRollbackEnabled": false}));
    // Explicit false overrides the configuration; and no configuration, no rollback.
    let declined = server.deploy("shop", "pair", "b.tgz", on_stop);
    server.ok("StopDeployment", json!({"deploymentId": declined, "autoRollbackEnabled": false}));
    assert!(server.deployment(&declined).get("rollbackInfo").is_none());
    let plain = server.deploy("shop", "pair", "b.tgz", json!({}));
    server.ok("StopDeployment", json!({"deploymentId": plain}));
    assert!(server.deployment(&plain).get("rollbackInfo").is_none());
    assert_eq!(server.deployments("shop", "pair").len(), 7);
    let bad = json!({"deploymentId": plain, "autoRollbackEnabled": "yes"});
    assert_ne!(server.error("StopDeployment", bad), "");
}

#[test]
fn without_an_earlier_success_nothing_is_rolled_back_and_the_message_says_why() {
    let server = Server::start("first", &[]);
    let fleet = server.fleet("shop", "fresh", 2, on_failure());
    let fail: scripted::FailRule = Arc::new(|_: &str, _: &DeploymentSpec, event: &str| event == "BeforeInstall");
    let agents = Agents::run(&fleet, fail);
    let id = server.deploy("shop", "fresh", "b.tgz", json!({}));
    let info = server.wait_end(&id, WAIT);
    // Give a rollback, were one made, time to appear.
    std::thread::sleep(Duration::from_millis(1500));
    agents.stop();
    assert_eq!(info["status"], "Failed");
    let info = server.deployment(&id);
    assert!(info["rollbackInfo"].get("rollbackDeploymentId").is_none(), "{info}");
    let message = info["rollbackInfo"]["rollbackMessage"].as_str().unwrap_or_default();
    assert!(message.contains("no earlier deployment of deployment group fresh succeeded"), "{message}");
    assert_eq!(server.deployments("shop", "fresh"), [id]);
}

#[test]
fn a_failing_rollback_is_not_rolled_back_again() {
    let server = Server::start("again", &[]);
    let fleet = server.fleet("shop", "loop", 2, on_failure());
    // b fails, and so does every rollback.
    let fail: scripted::FailRule = Arc::new(|_: &str, spec: &DeploymentSpec, event: &str| {
        event == "ValidateService" && (revision_key(spec) == "b.tgz" || spec.deployment_creator == "codeDeployRollback")
    });
    let agents = Agents::run(&fleet, fail);
    let good = server.deploy("shop", "loop", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&good, WAIT)["status"], "Succeeded");
    let bad = server.deploy("shop", "loop", "b.tgz", json!({}));
    assert_eq!(server.wait_end(&bad, WAIT)["status"], "Failed");
    let rollback = rollback_of(&server, &bad);
    let info = server.wait_end(&rollback, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(info["status"], "Failed", "{info}");
    let info = server.deployment(&rollback);
    assert_eq!(info["rollbackInfo"]["rollbackTriggeringDeploymentId"], bad.as_str());
    assert!(info["rollbackInfo"].get("rollbackDeploymentId").is_none(), "{info}");
    assert!(info["rollbackInfo"]["rollbackMessage"].as_str().unwrap().contains("not rolled back again"), "{info}");
    assert_eq!(server.deployments("shop", "loop").len(), 3, "no rollback of the rollback");
    // The group is free for the next deployment.
    let next = server.deploy("shop", "loop", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&next, WAIT)["status"], "Succeeded");
    agents.stop();
}
