#![allow(dead_code)] // Each test file uses a different subset.
//! A restartable `edgedeploy server` process driven through the control API
//! with the crate's own signed client, and scripted agents (real signed
//! HTTP clients with each instance's key that poll, acknowledge and
//! complete commands, failing the events a rule names).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use edgedeploy::client::{CallError, Client, Endpoint, HttpOptions};
use edgedeploy::protocol::command::{SIGNING_NAME, TARGET_PREFIX};
use edgedeploy::protocol::sigv4::Credentials;
use edgedeploy::protocol::spec::DeploymentSpec;
use serde_json::{Value, json};

const SERVER: &str = env!("CARGO_BIN_EXE_edgedeploy");
const CONTROL: &str = "CodeDeploy_20141006";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A server process on its own data directory and port; `kill` and
/// `spawn` restart it on the same ones.
pub struct Server {
    /// Data directory (also holds `agents/` and `server.log`).
    pub dir: PathBuf,
    port: u16,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    admin: Option<Client>,
}

/// The secrets key for servers that share one database: the one of the
/// environment (`EDGEDEPLOY_SECRETS_KEY`, which CI sets for runs on a shared
/// PostgreSQL) or a fixed test key. Replicas must share it.
pub fn shared_secrets_key() -> String {
    std::env::var("EDGEDEPLOY_SECRETS_KEY")
        .unwrap_or_else(|_| "7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e".to_string())
}

impl Server {
    /// Starts a server with `extra` arguments.
    pub fn start(name: &str, extra: &[&str]) -> Server {
        Self::start_with_env(name, extra, &[])
    }

    /// Starts a server with `extra` arguments and `env` added to its environment.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("edscripted-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("agents")).expect("creating the test directory");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // A shared store (e.g. PostgreSQL) when EDGEDEPLOY_TEST_DATABASE names one.
        if let Ok(url) = std::env::var("EDGEDEPLOY_TEST_DATABASE")
            && !extra.iter().any(|a| a == "--database")
        {
            extra.extend(["--database".to_string(), url]);
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut server = Server { dir, port, extra, env, child: None, admin: None };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) and waits until it answers.
    pub fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let child = Command::new(SERVER)
            .args(["server", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting edgedeploy server");
        self.child = Some(child);
        loop {
            if let Some((id, secret)) = read_credentials(&self.dir.join("admin-credentials")) {
                let admin = client(&self.url(), &id, &secret, "us-east-1");
                if admin.call_raw(CONTROL, "codedeploy", "ListApplications", b"{}").is_ok() {
                    self.admin = Some(admin);
                    return;
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "server exited: {exited:?}\n{}", self.log());
            assert!(Instant::now() < deadline, "server did not come up; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the process again with `extra` arguments instead of the
    /// first ones (after [`Server::kill`]); the database URL is kept.
    pub fn respawn_with(&mut self, extra: &[&str]) {
        let database: Vec<String> = self
            .extra
            .iter()
            .position(|a| a == "--database")
            .map(|i| self.extra[i..(i + 2).min(self.extra.len())].to_vec())
            .unwrap_or_default();
        self.extra = extra.iter().map(|s| s.to_string()).chain(database).collect();
        self.spawn();
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Calls control API `op`.
    pub fn call(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.admin.as_ref().expect("server started").call_raw(CONTROL, "codedeploy", op, body.to_string().as_bytes())
    }

    /// Calls `op`, panicking on an error.
    pub fn ok(&self, op: &str, body: Value) -> Value {
        self.call(op, body.clone()).unwrap_or_else(|e| panic!("{op} {body}: {e}\nlog:\n{}", self.log()))
    }

    /// The exception `op` fails with (panics when it succeeds).
    pub fn error(&self, op: &str, body: Value) -> String {
        match self.call(op, body.clone()) {
            Ok(v) => panic!("{op} {body} succeeded: {v}"),
            Err(e) => e.exception().unwrap_or_default().to_string(),
        }
    }

    /// Registers `name` tagged `fleet=TAG`; returns its agent config path and scripted instance.
    pub fn register(&self, name: &str, tag: &str) -> (PathBuf, Instance) {
        let config = self.dir.join("agents").join(format!("{name}.yml"));
        let out = Command::new(SERVER)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["register-instance", "--data-dir"])
            .arg(&self.dir)
            .args(["--name", name, "--tag", &format!("fleet={tag}"), "--agent-config"])
            .arg(&config)
            .args(["--endpoint", &self.url()])
            .args(self.database_args())
            .output()
            .expect("running register-instance");
        assert!(out.status.success(), "register-instance {name}: {}", String::from_utf8_lossy(&out.stderr));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let field = |k: &str| yaml[k].as_str().unwrap_or_else(|| panic!("{k} in {}", config.display())).to_string();
        let region = yaml["region"].as_str().unwrap_or("us-east-1").to_string();
        let client = client(&self.url(), &field("aws_access_key_id"), &field("aws_secret_access_key"), &region);
        let host = field("host_identifier");
        (config, Instance { name: name.to_string(), host, client: Arc::new(client) })
    }

    fn database_args(&self) -> Vec<String> {
        match self.extra.iter().position(|a| a == "--database") {
            Some(i) => self.extra[i..=i + 1].to_vec(),
            None => Vec::new(),
        }
    }

    /// Application `app` and group `group` over `n` new instances tagged
    /// `fleet=<group>` (`<group>-0` ...), with `settings` added to the group.
    pub fn fleet(&self, app: &str, group: &str, n: usize, settings: Value) -> Vec<Instance> {
        self.application(app);
        let instances = (0..n).map(|i| self.register(&format!("{group}-{i}"), group).1).collect();
        self.group(app, group, settings);
        instances
    }

    /// Creates application `app` unless it exists.
    pub fn application(&self, app: &str) {
        if let Err(e) = self.call("CreateApplication", json!({"applicationName": app})) {
            assert_eq!(e.exception(), Some("ApplicationAlreadyExistsException"), "{e}");
        }
    }

    /// Creates group `group` selecting `fleet=<group>`, with `settings` added.
    pub fn group(&self, app: &str, group: &str, settings: Value) {
        let mut body = json!({
            "applicationName": app,
            "deploymentGroupName": group,
            "deploymentConfigName": "CodeDeployDefault.AllAtOnce",
            "serviceRoleArn": "arn:aws:iam::000000000000:role/CodeDeploy",
            "onPremisesInstanceTagFilters": [{"Key": "fleet", "Value": group, "Type": "KEY_AND_VALUE"}],
        });
        merge(&mut body, &settings);
        self.ok("CreateDeploymentGroup", body);
    }

    /// Deploys S3 object `bundles/<key>` (tgz) with `extra` fields; returns the id.
    pub fn deploy(&self, app: &str, group: &str, key: &str, extra: Value) -> String {
        let mut body = json!({
            "applicationName": app,
            "deploymentGroupName": group,
            "revision": {"revisionType": "S3", "s3Location": {"bucket": "bundles", "key": key, "bundleType": "tgz"}},
        });
        merge(&mut body, &extra);
        self.ok("CreateDeployment", body)["deploymentId"].as_str().expect("a deploymentId").to_string()
    }

    /// GetDeployment's deploymentInfo.
    pub fn deployment(&self, id: &str) -> Value {
        self.ok("GetDeployment", json!({"deploymentId": id}))["deploymentInfo"].clone()
    }

    /// Waits until deployment `id` has ended; returns its deploymentInfo.
    pub fn wait_end(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let info = self.deployment(id);
            if ["Succeeded", "Failed", "Stopped"].contains(&info["status"].as_str().unwrap_or_default()) {
                return info;
            }
            assert!(Instant::now() < deadline, "deployment {id} still {info}\nlog:\n{}", self.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The group's deployments, newest first.
    pub fn deployments(&self, app: &str, group: &str) -> Vec<String> {
        let listed = self.ok("ListDeployments", json!({"applicationName": app, "deploymentGroupName": group}));
        listed["deployments"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
    }

    /// instance name -> target status of deployment `id`.
    pub fn target_statuses(&self, id: &str) -> Vec<(String, String)> {
        let ids = self.ok("ListDeploymentTargets", json!({"deploymentId": id}))["targetIds"].clone();
        let got = self.ok("BatchGetDeploymentTargets", json!({"deploymentId": id, "targetIds": ids}));
        let mut out: Vec<(String, String)> = got["deploymentTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let t = &t["instanceTarget"];
                (t["targetId"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string())
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("server log ({}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn merge(body: &mut Value, extra: &Value) {
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
}

fn read_credentials(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = |key: &str| {
        text.lines().find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().to_string()))
    };
    Some((value("aws_access_key_id")?, value("aws_secret_access_key")?))
}

fn client(url: &str, id: &str, secret: &str, region: &str) -> Client {
    let endpoint = Endpoint {
        url: url.to_string(),
        region: region.to_string(),
        credentials: Credentials { access_key_id: id.to_string(), secret_access_key: secret.to_string() },
    };
    Client::new(endpoint, &HttpOptions { timeout: Some(Duration::from_secs(10)), ..HttpOptions::default() }).unwrap()
}

/// A registered instance and its own signed client.
#[derive(Clone)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    host: String,
    client: Arc<Client>,
}

impl Instance {
    fn command(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.client.call_raw(TARGET_PREFIX, SIGNING_NAME, op, body.to_string().as_bytes())
    }
}

/// Decides whether `instance` fails `event` of the deployment `spec` describes.
pub type FailRule = Arc<dyn Fn(&str, &DeploymentSpec, &str) -> bool + Send + Sync>;

/// A rule that fails nothing.
pub fn never() -> FailRule {
    Arc::new(|_: &str, _: &DeploymentSpec, _: &str| false)
}

/// The S3 key of the revision a specification deploys.
pub fn revision_key(spec: &DeploymentSpec) -> &str {
    spec.revision.s3_revision.as_ref().map(|s| s.key.as_str()).unwrap_or_default()
}

/// Scripted agents, one thread per instance; each records the
/// specifications it was given.
pub struct Agents {
    stop: Arc<AtomicBool>,
    specs: Arc<Mutex<Vec<(String, DeploymentSpec)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Agents {
    /// Starts one agent per instance.
    pub fn run(instances: &[Instance], fail: FailRule) -> Agents {
        let stop = Arc::new(AtomicBool::new(false));
        let specs = Arc::new(Mutex::new(Vec::new()));
        let threads = instances
            .iter()
            .map(|instance| {
                let (instance, fail, stop, specs) = (instance.clone(), fail.clone(), stop.clone(), specs.clone());
                thread::spawn(move || agent_loop(&instance, &fail, &stop, &specs))
            })
            .collect();
        Agents { stop, specs, threads }
    }

    /// Stops the agents; returns (instance, specification) of every deployment they took part in.
    pub fn stop(self) -> Vec<(String, DeploymentSpec)> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("agent thread");
        }
        self.specs.lock().unwrap().clone()
    }
}

fn diagnostics(code: i64, script: &str, message: &str) -> Value {
    let payload = json!({"error_code": code, "script_name": script, "message": message, "log": ""});
    json!({"Format": "JSON", "Payload": payload.to_string()})
}

fn agent_loop(instance: &Instance, fail: &FailRule, stop: &AtomicBool, specs: &Mutex<Vec<(String, DeploymentSpec)>>) {
    let mut known: Vec<(String, DeploymentSpec)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let polled = instance.command("PollHostCommand", json!({"HostIdentifier": instance.host}));
        let Some(command) = polled.ok().and_then(|o| o.get("HostCommand").cloned()) else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        let id = command["HostCommandIdentifier"].as_str().unwrap().to_string();
        let execution = command["DeploymentExecutionId"].as_str().unwrap().to_string();
        let event = command["CommandName"].as_str().unwrap().to_string();
        if !known.iter().any(|(e, _)| *e == execution) {
            let body = json!({"DeploymentExecutionId": execution, "HostIdentifier": instance.host});
            let Ok(out) = instance.command("GetDeploymentSpecification", body) else { continue };
            let payload = out["DeploymentSpecification"]["GenericEnvelope"]["Payload"].as_str().unwrap().to_string();
            let spec: DeploymentSpec = serde_json::from_str(&payload).unwrap();
            specs.lock().unwrap().push((instance.name.clone(), spec.clone()));
            known.push((execution.clone(), spec));
        }
        let spec = known.iter().find(|(e, _)| *e == execution).map(|(_, s)| s.clone()).unwrap();
        let Ok(ack) = instance.command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id})) else {
            continue;
        };
        if ack["CommandStatus"] == "Failed" {
            continue;
        }
        let (status, diag) = if fail(&instance.name, &spec, &event) {
            ("Failed", diagnostics(4, &format!("scripts/{event}.sh"), "exited with status 3"))
        } else {
            ("Succeeded", diagnostics(0, "", "ok"))
        };
        let body = json!({"HostCommandIdentifier": id, "CommandStatus": status, "Diagnostics": diag});
        let _ = instance.command("PutHostCommandComplete", body);
    }
}
