//! Shared by the revision tests (`revisions_git`, `revisions_url`): a real
//! `edgedeploy server` (from `server_common`), a device onboarded with
//! `edgedeploy register-instance` in its own application and group, a real
//! `edgedeploy-agent run` process, and control API calls signed with the
//! admin's key.
#![allow(dead_code)] // Each test file uses a different subset.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgedeploy::client::{CallError, Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::Credentials;
use serde_json::{Value, json};

use crate::server_common::{EDGEDEPLOY, ServerProcess};

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

/// A control API client with the admin's key of `server`.
pub fn admin(server: &ServerProcess) -> Client {
    let text = fs::read_to_string(server.admin_credentials_file()).expect("admin-credentials");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in admin-credentials"))
    };
    let credentials =
        Credentials { access_key_id: field("aws_access_key_id"), secret_access_key: field("aws_secret_access_key") };
    let endpoint = Endpoint { url: server.endpoint().to_string(), region: "us-east-1".into(), credentials };
    Client::new(endpoint, &HttpOptions::default()).expect("client")
}

/// Calls control API `operation`.
pub fn call(client: &Client, operation: &str, input: Value) -> Result<Value, CallError> {
    client.call_raw("CodeDeploy_20141006", "codedeploy", operation, input.to_string().as_bytes())
}

/// Calls control API `operation`; panics on an error.
pub fn call_ok(client: &Client, operation: &str, input: Value) -> Value {
    call(client, operation, input).unwrap_or_else(|e| panic!("{operation}: {e}"))
}

/// A device registered with the server, in application `app-NAME`, group
/// `group-NAME` (tag test=NAME), its agent configuration written.
pub struct Device {
    /// The agent's deployment root.
    pub root: PathBuf,
    /// The agent's configuration file.
    pub config: PathBuf,
    /// Application name.
    pub app: String,
    /// Deployment group name.
    pub group: String,
    /// Instance name.
    pub name: String,
}

/// Registers device `name` and creates its application and group.
pub fn onboard(server: &ServerProcess, client: &Client, name: &str, extra_config: &str) -> Device {
    let dir = server.work_dir().join(format!("device-{name}"));
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.yml");
    let out = Command::new(EDGEDEPLOY)
        .arg("register-instance")
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["--name", &format!("dev-{name}"), "--tag", &format!("test={name}")])
        .arg("--agent-config")
        .arg(&config)
        .args(["--endpoint", server.endpoint()])
        .output()
        .unwrap();
    assert!(out.status.success(), "register-instance: {}", String::from_utf8_lossy(&out.stderr));
    let root = dir.join("root");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("root_dir: {}\nwait_between_runs: 1\n{extra_config}", root.display()));
    fs::write(&config, text).unwrap();
    let (app, group) = (format!("app-{name}"), format!("group-{name}"));
    call_ok(client, "CreateApplication", json!({ "applicationName": app, "computePlatform": "Server" }));
    call_ok(
        client,
        "CreateDeploymentGroup",
        json!({
            "applicationName": app,
            "deploymentGroupName": group,
            "serviceRoleArn": "arn:aws:iam::000000000000:role/edgedeploy",
            "onPremisesInstanceTagFilters": [{ "Key": "test", "Value": name, "Type": "KEY_AND_VALUE" }]
        }),
    );
    Device { root, config, app, group, name: format!("dev-{name}") }
}

/// CreateDeployment of `revision` to the device's group (OVERWRITE).
pub fn create_deployment(client: &Client, device: &Device, revision: &Value) -> Result<String, CallError> {
    let input = json!({
        "applicationName": device.app,
        "deploymentGroupName": device.group,
        "revision": revision,
        "fileExistsBehavior": "OVERWRITE",
    });
    let out = call(client, "CreateDeployment", input)?;
    Ok(out["deploymentId"].as_str().expect("deploymentId").to_string())
}

/// Waits for deployment `id` to end; returns its DeploymentInfo.
pub fn wait_for_end(client: &Client, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let info = call_ok(client, "GetDeployment", json!({ "deploymentId": id }))["deploymentInfo"].clone();
        if ["Succeeded", "Failed", "Stopped"].contains(&info["status"].as_str().unwrap_or_default()) {
            return info;
        }
        assert!(Instant::now() < deadline, "deployment {id} did not end within {limit:?}: {info}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The device's lifecycle event `name` in deployment `id`.
pub fn event(client: &Client, device: &Device, id: &str, name: &str) -> Value {
    let out = call_ok(client, "GetDeploymentInstance", json!({ "deploymentId": id, "instanceId": device.name }));
    let events = out["instanceSummary"]["lifecycleEvents"].as_array().cloned().unwrap_or_default();
    events.into_iter().find(|e| e["lifecycleEventName"] == name).unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// An `edgedeploy-agent run` process; each start logs to its own file.
pub struct Agent {
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Agent {
    /// Starts the agent of `device`.
    pub fn start(device: &Device) -> Agent {
        let dir = device.config.parent().unwrap().to_path_buf();
        let mut agent = Agent { config: device.config.clone(), dir, child: None, starts: 0 };
        agent.restart();
        agent
    }

    /// Starts it again (after [`Agent::kill9`]).
    pub fn restart(&mut self) {
        self.starts += 1;
        let log = fs::File::create(self.log_path(self.starts)).unwrap();
        let child = Command::new(AGENT)
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.join(format!("agent-{start}.log"))
    }

    /// Every start's log.
    pub fn logs(&self) -> String {
        (1..=self.starts).map(|i| fs::read_to_string(self.log_path(i)).unwrap_or_default()).collect()
    }

    /// The log of the current (last) start.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Relative paths of the files under `dir` with their contents, sorted.
pub fn files_of(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read_to_string(&path).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}
