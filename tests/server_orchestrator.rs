//! The orchestrator end to end: a real `edgedeploy server` process, set up
//! through the control API, driven by scripted agents (real signed HTTP
//! clients with each instance's key that poll, acknowledge and complete
//! commands). Each test has its own server and data directory.

use std::collections::BTreeMap;
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
const EVENTS: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One lifecycle event as read back: (name, status, diagnostics errorCode).
type EventRow = (String, String, String);
/// instance -> (status, its lifecycle events).
type Targets = BTreeMap<String, (String, Vec<EventRow>)>;

/// The secrets key of every server here: replicas on one database share it
/// (CI sets one for the runs on a shared PostgreSQL).
fn secrets_key() -> String {
    std::env::var("EDGEDEPLOY_SECRETS_KEY")
        .unwrap_or_else(|_| "0bce57a70bce57a70bce57a70bce57a70bce57a70bce57a70bce57a70bce57a7".to_string())
}

/// A server process on its own data directory and port.
struct Server {
    dir: PathBuf,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    admin: Option<Client>,
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Server {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("edorch-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("agents")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--database") {
            extra.extend(database_args());
        }
        let mut server = Server { dir, port, extra, child: None, admin: None };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // A few attempts: servers starting together on one PostgreSQL
        // database may collide creating the schema.
        for attempt in 0..5u64 {
            thread::sleep(Duration::from_millis(attempt * (100 + u64::from(self.port % 200))));
            let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
            let child = Command::new(SERVER)
                .env("EDGEDEPLOY_SECRETS_KEY", secrets_key())
                .args(["server", "--data-dir"])
                .arg(&self.dir)
                .args(["--listen", &format!("127.0.0.1:{}", self.port)])
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            loop {
                if let Some((id, secret)) = read_credentials(&self.dir.join("admin-credentials")) {
                    let admin = client(&self.url(), &id, &secret, "us-east-1");
                    if admin.call_raw(CONTROL, "codedeploy", "ListApplications", b"{}").is_ok() {
                        self.admin = Some(admin);
                        return;
                    }
                }
                if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                    break;
                }
                assert!(Instant::now() < deadline, "server did not come up; log:\n{}", self.log());
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("server exited at start; log:\n{}", self.log());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn call(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.admin.as_ref().unwrap().call_raw(CONTROL, "codedeploy", op, body.to_string().as_bytes())
    }

    fn ok(&self, op: &str, body: Value) -> Value {
        self.call(op, body.clone()).unwrap_or_else(|e| panic!("{op} {body}: {e}"))
    }

    fn error(&self, op: &str, body: Value) -> String {
        match self.call(op, body.clone()) {
            Ok(v) => panic!("{op} {body} succeeded: {v}"),
            Err(e) => e.exception().unwrap_or_default().to_string(),
        }
    }

    /// Registers `name` with `edgedeploy register-instance`, tagged `fleet=TAG`.
    fn register(&self, name: &str, tag: &str) -> Instance {
        let config = self.dir.join("agents").join(format!("{name}.yml"));
        let out = Command::new(SERVER)
            .env("EDGEDEPLOY_SECRETS_KEY", secrets_key())
            .args(["register-instance", "--data-dir"])
            .arg(&self.dir)
            .args(["--name", name, "--tag", &format!("fleet={tag}"), "--agent-config"])
            .arg(&config)
            .args(["--endpoint", &self.url()])
            .args(database_args())
            .output()
            .unwrap();
        assert!(out.status.success(), "register-instance {name}: {}", String::from_utf8_lossy(&out.stderr));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let field = |k: &str| yaml[k].as_str().unwrap_or_else(|| panic!("{k} in {}", config.display())).to_string();
        let region = yaml["region"].as_str().unwrap_or("us-east-1").to_string();
        let client = client(&self.url(), &field("aws_access_key_id"), &field("aws_secret_access_key"), &region);
        Instance {
            name: name.to_string(),
            host: field("host_identifier"),
            client: Arc::new(client),
            replica: None,
            turn: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Application `app`, and group `group` of `n` new instances tagged
    /// `fleet=<group>` (named `<group>-0` ...), with `config`.
    fn fleet(&self, app: &str, group: &str, n: usize, config: &str, extra: Value) -> Vec<Instance> {
        let created = self.call("CreateApplication", json!({"applicationName": app, "computePlatform": "Server"}));
        if let Err(e) = created {
            assert_eq!(e.exception(), Some("ApplicationAlreadyExistsException"), "{e}");
        }
        let instances: Vec<Instance> = (0..n).map(|i| self.register(&format!("{group}-{i}"), group)).collect();
        let mut body = json!({
            "applicationName": app,
            "deploymentGroupName": group,
            "deploymentConfigName": config,
            "serviceRoleArn": "arn:aws:iam::000000000000:role/CodeDeploy",
            "onPremisesInstanceTagFilters": [{"Key": "fleet", "Value": group, "Type": "KEY_AND_VALUE"}],
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.ok("CreateDeploymentGroup", body);
        instances
    }

    fn deploy(&self, app: &str, group: &str, extra: Value) -> String {
        let mut body = json!({
            "applicationName": app,
            "deploymentGroupName": group,
            "revision": {"revisionType": "S3", "s3Location": {"bucket": "bundles", "key": "app.tgz", "bundleType": "tgz"}},
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.ok("CreateDeployment", body)["deploymentId"].as_str().unwrap().to_string()
    }

    fn deployment(&self, id: &str) -> Value {
        self.ok("GetDeployment", json!({"deploymentId": id}))["deploymentInfo"].clone()
    }

    fn wait_end(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(v) = self.call("GetDeployment", json!({"deploymentId": id})) {
                let info = &v["deploymentInfo"];
                if ["Succeeded", "Failed", "Stopped"].contains(&info["status"].as_str().unwrap_or_default()) {
                    return info.clone();
                }
                assert!(Instant::now() < deadline, "deployment {id} still {info}\nlog:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The deployment's targets and their events.
    fn targets(&self, id: &str) -> Targets {
        let ids = self.ok("ListDeploymentTargets", json!({"deploymentId": id}))["targetIds"].clone();
        let got = self.ok("BatchGetDeploymentTargets", json!({"deploymentId": id, "targetIds": ids}));
        let mut out = BTreeMap::new();
        for t in got["deploymentTargets"].as_array().unwrap() {
            let t = &t["instanceTarget"];
            let events = t["lifecycleEvents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let code = e["diagnostics"]["errorCode"].as_str().unwrap_or_default().to_string();
                    (
                        e["lifecycleEventName"].as_str().unwrap().to_string(),
                        e["status"].as_str().unwrap().to_string(),
                        code,
                    )
                })
                .collect();
            out.insert(
                t["targetId"].as_str().unwrap().to_string(),
                (t["status"].as_str().unwrap().to_string(), events),
            );
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `--database URL` when `EDGEDEPLOY_TEST_DATABASE` names a shared store
/// (e.g. an empty PostgreSQL database: group and instance names differ
/// between the tests, so they can share it); SQLite in the data directory
/// otherwise.
fn database_args() -> Vec<String> {
    std::env::var("EDGEDEPLOY_TEST_DATABASE").map(|url| vec!["--database".to_string(), url]).unwrap_or_default()
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
struct Instance {
    name: String,
    host: String,
    client: Arc<Client>,
    /// Another server replica: requests alternate between the two.
    replica: Option<Arc<Client>>,
    turn: Arc<AtomicUsize>,
}

impl Instance {
    fn command(&self, op: &str, body: Value) -> Result<Value, CallError> {
        let client = match &self.replica {
            Some(replica) if self.turn.fetch_add(1, Ordering::SeqCst) % 2 == 1 => replica,
            _ => &self.client,
        };
        client.call_raw(TARGET_PREFIX, SIGNING_NAME, op, body.to_string().as_bytes())
    }

    /// The same instance, talking to `server` too.
    fn with_replica(&self, server: &Server) -> Instance {
        let endpoint = Endpoint { url: server.url(), ..self.client.endpoint().clone() };
        let replica = Client::new(endpoint, &HttpOptions::default()).unwrap();
        Instance { replica: Some(Arc::new(replica)), ..self.clone() }
    }

    fn poll(&self) -> Option<Value> {
        let out = self.command("PollHostCommand", json!({"HostIdentifier": self.host})).ok()?;
        out.get("HostCommand").cloned()
    }

    /// Polls until a command comes (or `within` passes).
    fn poll_until(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.poll() {
                return c;
            }
            assert!(Instant::now() < deadline, "{} got no command", self.name);
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn diagnostics(code: i64, script: &str, message: &str) -> Value {
    let payload =
        json!({"error_code": code, "script_name": script, "message": message, "log": format!("log of {script}")});
    json!({"Format": "JSON", "Payload": payload.to_string()})
}

/// One command as a scripted agent ran it.
#[derive(Debug, Clone)]
struct Record {
    instance: String,
    deployment: String,
    event: String,
    received: Instant,
    completed: Instant,
}

/// What the scripted agents do.
#[derive(Clone, Default)]
struct Script {
    /// (instance, event) that fails.
    fail: Vec<(String, String)>,
    /// Instances whose agent never polls.
    silent: Vec<String>,
    /// How long each event takes.
    hold: Duration,
}

/// Scripted agents, one thread per instance.
struct Agents {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    specs: Arc<Mutex<Vec<DeploymentSpec>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Agents {
    fn run(instances: &[Instance], script: Script) -> Agents {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let specs = Arc::new(Mutex::new(Vec::new()));
        let threads = instances
            .iter()
            .filter(|i| !script.silent.contains(&i.name))
            .map(|instance| {
                let (instance, script) = (instance.clone(), script.clone());
                let (stop, records, specs) = (stop.clone(), records.clone(), specs.clone());
                thread::spawn(move || agent_loop(&instance, &script, &stop, &records, &specs))
            })
            .collect();
        Agents { stop, records, specs, threads }
    }

    fn stop(self) -> (Vec<Record>, Vec<DeploymentSpec>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let records = self.records.lock().unwrap().clone();
        let specs = self.specs.lock().unwrap().clone();
        (records, specs)
    }
}

fn agent_loop(
    instance: &Instance,
    script: &Script,
    stop: &AtomicBool,
    records: &Mutex<Vec<Record>>,
    specs: &Mutex<Vec<DeploymentSpec>>,
) {
    let mut seen = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Some(command) = instance.poll() else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        let received = Instant::now();
        let id = command["HostCommandIdentifier"].as_str().unwrap().to_string();
        let execution = command["DeploymentExecutionId"].as_str().unwrap().to_string();
        let event = command["CommandName"].as_str().unwrap().to_string();
        if !seen.contains(&execution) {
            let body = json!({"DeploymentExecutionId": execution, "HostIdentifier": instance.host});
            let Ok(out) = instance.command("GetDeploymentSpecification", body) else { continue };
            let envelope = &out["DeploymentSpecification"]["GenericEnvelope"];
            assert_eq!(envelope["Format"], "TEXT/JSON");
            let spec: DeploymentSpec = serde_json::from_str(envelope["Payload"].as_str().unwrap()).unwrap();
            specs.lock().unwrap().push(spec);
            seen.push(execution.clone());
        }
        let Ok(ack) = instance.command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id})) else {
            continue;
        };
        if ack["CommandStatus"] == "Failed" {
            continue;
        }
        thread::sleep(script.hold);
        let fails = script.fail.iter().any(|(i, e)| *i == instance.name && *e == event);
        let (status, diag) = if fails {
            ("Failed", diagnostics(4, &format!("scripts/{event}.sh"), "exited with status 3"))
        } else {
            ("Succeeded", diagnostics(0, "", "ok"))
        };
        let body = json!({"HostCommandIdentifier": id, "CommandStatus": status, "Diagnostics": diag});
        if instance.command("PutHostCommandComplete", body).is_err() {
            continue;
        }
        let deployment = execution.split('/').nth(2).unwrap().to_string();
        records.lock().unwrap().push(Record {
            instance: instance.name.clone(),
            deployment,
            event,
            received,
            completed: Instant::now(),
        });
    }
}

/// The most instances of `deployment` the agents had in flight at once: an
/// instance is in flight from receiving its first command to completing
/// its last.
fn max_in_flight(records: &[Record], deployment: &str) -> usize {
    let mut spans: BTreeMap<&str, (Instant, Instant)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.deployment == deployment) {
        let span = spans.entry(&r.instance).or_insert((r.received, r.completed));
        span.0 = span.0.min(r.received);
        span.1 = span.1.max(r.completed);
    }
    let spans: Vec<(Instant, Instant)> = spans.into_values().collect();
    spans.iter().map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count()).max().unwrap_or(0)
}

fn statuses(targets: &Targets) -> Vec<String> {
    targets.values().map(|(s, _)| s.clone()).collect()
}

fn event_statuses(events: &[EventRow]) -> Vec<&str> {
    events.iter().map(|(_, s, _)| s.as_str()).collect()
}

#[test]
fn configurations_limit_the_instances_in_flight() {
    let server = Server::start("limits", &[]);
    server.ok(
        "CreateDeploymentConfig",
        json!({"deploymentConfigName": "FourHealthy", "minimumHealthyHosts": {"type": "HOST_COUNT", "value": 4}}),
    );
    let fleet = server.fleet("shop", "six", 6, "CodeDeployDefault.OneAtATime", json!({}));
    let agents = Agents::run(&fleet, Script { hold: Duration::from_millis(60), ..Script::default() });
    let cases = [
        ("CodeDeployDefault.AllAtOnce", 6),
        ("CodeDeployDefault.HalfAtATime", 3),
        ("CodeDeployDefault.OneAtATime", 1),
        ("FourHealthy", 2),
    ];
    let mut ids = Vec::new();
    for (config, _) in cases {
        let id = server.deploy("shop", "six", json!({"deploymentConfigName": config}));
        let info = server.wait_end(&id, Duration::from_secs(90));
        assert_eq!(info["status"], "Succeeded", "{config}: {info}");
        assert_eq!(info["deploymentOverview"]["Succeeded"], 6, "{config}: {info}");
        assert!(info["completeTime"].as_f64().unwrap() >= info["startTime"].as_f64().unwrap());
        ids.push(id);
    }
    let (records, specs) = agents.stop();
    for ((config, limit), id) in cases.iter().zip(&ids) {
        assert_eq!(max_in_flight(&records, id), *limit, "{config} ({id})");
        assert_eq!(records.iter().filter(|r| &r.deployment == id).count(), 6 * EVENTS.len(), "{config}");
    }
    // Each instance ran the events in order.
    let order: Vec<&str> =
        records.iter().filter(|r| r.instance == "six-0" && r.deployment == ids[0]).map(|r| r.event.as_str()).collect();
    assert_eq!(order, EVENTS);
    // The specification the agents were given.
    let spec = specs.iter().find(|s| s.deployment_id == ids[0]).unwrap();
    assert_eq!((spec.application_name.as_str(), spec.deployment_group_name.as_str()), ("shop", "six"));
    assert_eq!(spec.deployment_type, "IN_PLACE");
    let s3 = spec.revision.s3_revision.as_ref().unwrap();
    assert_eq!((s3.bucket.as_str(), s3.key.as_str(), s3.bundle_type.as_str()), ("bundles", "app.tgz", "tgz"));
    assert_eq!(spec.file_exists_behavior(), Some("DISALLOW"));
    assert_eq!(spec.all_possible_lifecycle_events, EVENTS);
    // The group remembers its last deployments.
    let group = server.ok("GetDeploymentGroup", json!({"applicationName": "shop", "deploymentGroupName": "six"}));
    let last = &group["deploymentGroupInfo"]["lastSuccessfulDeployment"];
    assert_eq!(last["deploymentId"], ids[3].as_str(), "{group}");
    assert_eq!(group["deploymentGroupInfo"]["lastAttemptedDeployment"]["status"], "Succeeded");
    let listed = server.ok("ListDeployments", json!({"applicationName": "shop", "deploymentGroupName": "six"}));
    assert_eq!(listed["deployments"].as_array().unwrap().len(), 4);
}

#[test]
fn a_failing_hook_fails_its_instance_and_skips_its_remaining_events() {
    let server = Server::start("hook", &[]);
    let fleet = server.fleet("shop", "web", 3, "CodeDeployDefault.AllAtOnce", json!({}));
    let script = Script { fail: vec![("web-1".into(), "AfterInstall".into())], ..Script::default() };
    let agents = Agents::run(&fleet, script);
    let id = server.deploy("shop", "web", json!({}));
    let info = server.wait_end(&id, Duration::from_secs(60));
    agents.stop();
    // AllAtOnce: one success is enough.
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["deploymentOverview"]["Failed"], 1);
    let targets = server.targets(&id);
    assert_eq!(statuses(&targets), ["Succeeded", "Failed", "Succeeded"]);
    let (_, events) = &targets["web-1"];
    assert_eq!(
        event_statuses(events),
        ["Succeeded", "Succeeded", "Succeeded", "Succeeded", "Failed", "Skipped", "Skipped"]
    );
    assert_eq!(events[4], ("AfterInstall".into(), "Failed".into(), "ScriptFailed".into()));
    let one = server.ok("GetDeploymentTarget", json!({"deploymentId": id, "targetId": "web-1"}));
    let failed = &one["deploymentTarget"]["instanceTarget"]["lifecycleEvents"][4];
    assert_eq!(failed["diagnostics"]["scriptName"], "scripts/AfterInstall.sh");
    assert_eq!(failed["diagnostics"]["message"], "exited with status 3");
    assert_eq!(failed["diagnostics"]["logTail"], "log of scripts/AfterInstall.sh");
    assert!(failed["endTime"].as_f64().unwrap() >= failed["startTime"].as_f64().unwrap());
    let old = server.ok("GetDeploymentInstance", json!({"deploymentId": id, "instanceId": "web-1"}));
    assert_eq!(old["instanceSummary"]["status"], "Failed");
    let failed_only =
        server.ok("ListDeploymentTargets", json!({"deploymentId": id, "targetFilters": {"TargetStatus": ["Failed"]}}));
    assert_eq!(failed_only["targetIds"], json!(["web-1"]));
}

#[test]
fn one_at_a_time_fails_on_an_early_instance_but_not_on_the_last() {
    let server = Server::start("oneatatime", &[]);
    let fleet = server.fleet("shop", "line", 3, "CodeDeployDefault.OneAtATime", json!({}));
    // The first instance (by name) fails: the others are skipped.
    let agents =
        Agents::run(&fleet, Script { fail: vec![("line-0".into(), "BeforeInstall".into())], ..Script::default() });
    let id = server.deploy("shop", "line", json!({}));
    let info = server.wait_end(&id, Duration::from_secs(60));
    agents.stop();
    assert_eq!(info["status"], "Failed", "{info}");
    assert_eq!(info["errorInformation"]["code"], "HEALTH_CONSTRAINTS", "{info}");
    assert_eq!(statuses(&server.targets(&id)), ["Failed", "Skipped", "Skipped"]);
    let skipped = &server.targets(&id)["line-2"].1;
    assert!(event_statuses(skipped).iter().all(|s| *s == "Skipped"), "{skipped:?}");
    // The last instance fails: the deployment still succeeds.
    let agents =
        Agents::run(&fleet, Script { fail: vec![("line-2".into(), "ValidateService".into())], ..Script::default() });
    let id = server.deploy("shop", "line", json!({}));
    let info = server.wait_end(&id, Duration::from_secs(60));
    agents.stop();
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(statuses(&server.targets(&id)), ["Succeeded", "Succeeded", "Failed"]);
}

#[test]
fn ignore_application_stop_failures_lets_instances_continue() {
    let server = Server::start("ignorestop", &[]);
    let fleet = server.fleet("shop", "kiosk", 2, "CodeDeployDefault.AllAtOnce", json!({}));
    let fail_stop: Vec<(String, String)> = fleet.iter().map(|i| (i.name.clone(), "ApplicationStop".into())).collect();
    let agents = Agents::run(&fleet, Script { fail: fail_stop.clone(), ..Script::default() });
    let id =
        server.deploy("shop", "kiosk", json!({"ignoreApplicationStopFailures": true, "fileExistsBehavior": "RETAIN"}));
    let info = server.wait_end(&id, Duration::from_secs(60));
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["ignoreApplicationStopFailures"], true);
    for (status, events) in server.targets(&id).values() {
        assert_eq!(status, "Succeeded");
        assert_eq!(
            event_statuses(events),
            ["Failed", "Succeeded", "Succeeded", "Succeeded", "Succeeded", "Succeeded", "Succeeded"]
        );
    }
    // Without the flag the same failures fail every instance.
    let id = server.deploy("shop", "kiosk", json!({}));
    let info = server.wait_end(&id, Duration::from_secs(60));
    let (_, specs) = agents.stop();
    assert!(specs.iter().any(|spec| spec.file_exists_behavior() == Some("RETAIN")));
    assert_eq!(info["status"], "Failed", "{info}");
    assert_eq!(info["errorInformation"]["code"], "HEALTH_CONSTRAINTS");
    assert_eq!(statuses(&server.targets(&id)), ["Failed", "Failed"]);
}

#[test]
fn impossible_deployments_fail_at_once_with_their_error_code() {
    let server = Server::start("invalid", &[]);
    server.ok(
        "CreateDeploymentConfig",
        json!({"deploymentConfigName": "AllHealthy", "minimumHealthyHosts": {"type": "HOST_COUNT", "value": 2}}),
    );
    server.fleet("shop", "pair", 2, "AllHealthy", json!({}));
    let id = server.deploy("shop", "pair", json!({}));
    let info = server.deployment(&id);
    assert_eq!(info["status"], "Failed", "{info}");
    assert_eq!(info["errorInformation"]["code"], "HEALTH_CONSTRAINTS_INVALID", "{info}");
    // The group is free again, and a feasible configuration works.
    let id = server.deploy("shop", "pair", json!({"deploymentConfigName": "CodeDeployDefault.HalfAtATime"}));
    assert_ne!(server.deployment(&id)["status"], "Failed");
    server.ok("StopDeployment", json!({"deploymentId": id}));
    // A group whose tags match no instance.
    server.fleet("shop", "nobody", 0, "CodeDeployDefault.OneAtATime", json!({}));
    let id = server.deploy("shop", "nobody", json!({}));
    let info = server.deployment(&id);
    assert_eq!(info["status"], "Failed");
    assert_eq!(info["errorInformation"]["code"], "NO_INSTANCES", "{info}");
    assert_eq!(
        server.error("GetDeployment", json!({"deploymentId": "d-NOPE00000"})),
        "DeploymentDoesNotExistException"
    );
    assert_eq!(server.error("GetDeployment", json!({"deploymentId": "nope"})), "InvalidDeploymentIdException");
}

#[test]
fn one_active_deployment_per_group_and_stop_releases_it() {
    let server = Server::start("limit", &[]);
    let fleet = server.fleet("shop", "solo", 2, "CodeDeployDefault.AllAtOnce", json!({}));
    let first = server.deploy("shop", "solo", json!({}));
    let body = json!({"applicationName": "shop", "deploymentGroupName": "solo",
        "revision": {"revisionType": "S3", "s3Location": {"bucket": "b", "key": "k.tgz", "bundleType": "tgz"}}});
    assert_eq!(server.error("CreateDeployment", body), "DeploymentLimitExceededException");
    // solo-0 takes its first command and acknowledges it; then the stop.
    let command = fleet[0].poll_until(Duration::from_secs(10));
    let id = command["HostCommandIdentifier"].clone();
    let ack = fleet[0].command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id})).unwrap();
    assert_eq!(ack["CommandStatus"], "InProgress");
    let stopped = server.ok("StopDeployment", json!({"deploymentId": first}));
    assert_eq!(stopped["status"], "Succeeded", "{stopped}");
    let info = server.deployment(&first);
    assert_eq!(info["status"], "Stopped", "{info}");
    // The agent is told its command failed; its late completion changes nothing.
    let ack = fleet[0].command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id})).unwrap();
    assert_eq!(ack["CommandStatus"], "Failed");
    let done =
        json!({"HostCommandIdentifier": id, "CommandStatus": "Succeeded", "Diagnostics": diagnostics(0, "", "ok")});
    fleet[0].command("PutHostCommandComplete", done).unwrap();
    let targets = server.targets(&first);
    assert_eq!(targets["solo-0"].0, "Failed");
    assert_eq!(event_statuses(&targets["solo-0"].1)[..2], ["Failed", "Skipped"]);
    assert!(fleet[0].poll().is_none(), "no command after the stop");
    assert_eq!(server.error("StopDeployment", json!({"deploymentId": first})), "DeploymentAlreadyCompletedException");
    // The group is free again.
    let agents = Agents::run(&fleet, Script::default());
    let second = server.deploy("shop", "solo", json!({}));
    assert_eq!(server.wait_end(&second, Duration::from_secs(60))["status"], "Succeeded");
    agents.stop();
}

#[test]
fn a_completion_delivered_twice_changes_nothing() {
    let server = Server::start("twice", &[]);
    let fleet = server.fleet("shop", "dup", 1, "CodeDeployDefault.OneAtATime", json!({}));
    let id = server.deploy("shop", "dup", json!({}));
    let agent = &fleet[0];
    let command = agent.poll_until(Duration::from_secs(10));
    // Not acknowledged yet: a poll hands the same command out again.
    assert_eq!(agent.poll_until(Duration::from_secs(5))["HostCommandIdentifier"], command["HostCommandIdentifier"]);
    let cid = command["HostCommandIdentifier"].clone();
    agent.command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": cid})).unwrap();
    let ok =
        json!({"HostCommandIdentifier": cid, "CommandStatus": "Succeeded", "Diagnostics": diagnostics(0, "", "ok")});
    agent.command("PutHostCommandComplete", ok.clone()).unwrap();
    let before = server.ok("GetDeploymentTarget", json!({"deploymentId": id, "targetId": "dup-0"}));
    agent.command("PutHostCommandComplete", ok).unwrap();
    let failed =
        json!({"HostCommandIdentifier": cid, "CommandStatus": "Failed", "Diagnostics": diagnostics(4, "x.sh", "late")});
    agent.command("PutHostCommandComplete", failed).unwrap();
    let after = server.ok("GetDeploymentTarget", json!({"deploymentId": id, "targetId": "dup-0"}));
    assert_eq!(before, after);
    assert_eq!(after["deploymentTarget"]["instanceTarget"]["lifecycleEvents"][0]["status"], "Succeeded");
    // The next command is the next event.
    assert_eq!(agent.poll_until(Duration::from_secs(5))["CommandName"], "DownloadBundle");
    let unknown = json!({"HostCommandIdentifier": "hc-unknown", "CommandStatus": "Succeeded"});
    let err = agent.command("PutHostCommandComplete", unknown).unwrap_err();
    assert_eq!(err.exception(), Some("ClientException"), "{err}");
}

#[test]
fn instances_cannot_act_for_each_other() {
    let server = Server::start("cross", &[]);
    let fleet = server.fleet("shop", "pairs", 2, "CodeDeployDefault.AllAtOnce", json!({}));
    let (a, b) = (&fleet[0], &fleet[1]);
    server.deploy("shop", "pairs", json!({}));
    let command = a.poll_until(Duration::from_secs(10));
    let denied = |r: Result<Value, CallError>| match r {
        Err(e) => assert_eq!(e.exception(), Some("AccessDeniedException"), "{e}"),
        Ok(v) => panic!("allowed: {v}"),
    };
    denied(b.command("PollHostCommand", json!({"HostIdentifier": a.host})));
    denied(b.command("PollHostCommand", json!({"HostIdentifier": a.name})));
    let execution = command["DeploymentExecutionId"].clone();
    denied(
        b.command("GetDeploymentSpecification", json!({"DeploymentExecutionId": execution, "HostIdentifier": b.host})),
    );
    let cid = command["HostCommandIdentifier"].clone();
    denied(b.command("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": cid})));
    denied(b.command("PutHostCommandComplete", json!({"HostCommandIdentifier": cid, "CommandStatus": "Failed"})));
    // The admin key is not an instance.
    let admin = server.admin.as_ref().unwrap();
    denied(admin.call_raw(
        TARGET_PREFIX,
        SIGNING_NAME,
        "PollHostCommand",
        json!({"HostIdentifier": a.host}).to_string().as_bytes(),
    ));
    // Both forms of the caller's own identity work.
    assert!(a.command("PollHostCommand", json!({"HostIdentifier": a.name})).is_ok());
    assert!(
        a.command("GetDeploymentSpecification", json!({"DeploymentExecutionId": execution, "HostIdentifier": a.host}))
            .is_ok()
    );
    // The execution id has four parts: edgedeploy/<region>/<deployment>/<instance>.
    assert_eq!(execution.as_str().unwrap().splitn(4, '/').count(), 4);
}

#[test]
fn an_agent_that_never_polls_fails_its_instance_after_the_pickup_timeout() {
    let server = Server::start("pickup", &["--pickup-timeout", "2"]);
    let fleet = server.fleet("shop", "quiet", 2, "CodeDeployDefault.AllAtOnce", json!({}));
    let agents = Agents::run(&fleet, Script { silent: vec!["quiet-1".into()], ..Script::default() });
    let started = Instant::now();
    let id = server.deploy("shop", "quiet", json!({}));
    let info = server.wait_end(&id, Duration::from_secs(30));
    agents.stop();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(info["status"], "Succeeded", "{info}");
    let target = server.ok("GetDeploymentTarget", json!({"deploymentId": id, "targetId": "quiet-1"}));
    let target = &target["deploymentTarget"]["instanceTarget"];
    assert_eq!(target["status"], "Failed");
    let first = &target["lifecycleEvents"][0];
    assert_eq!(first["status"], "Failed");
    let message = first["diagnostics"]["message"].as_str().unwrap();
    assert!(message.starts_with("the agent did not pick up ApplicationStop within 2 s"), "{message}");
    assert_eq!(target["lifecycleEvents"][6]["status"], "Skipped");
}

#[test]
fn a_server_killed_mid_deployment_resumes_from_the_store() {
    let mut server = Server::start("restart", &[]);
    let fleet = server.fleet("shop", "phoenix", 3, "CodeDeployDefault.OneAtATime", json!({}));
    let agents = Agents::run(&fleet, Script { hold: Duration::from_millis(100), ..Script::default() });
    let id = server.deploy("shop", "phoenix", json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.deployment(&id)["deploymentOverview"]["Succeeded"] == 0 {
        assert!(Instant::now() < deadline, "no instance finished");
        thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    thread::sleep(Duration::from_millis(500));
    server.spawn();
    let info = server.wait_end(&id, Duration::from_secs(60));
    let (records, _) = agents.stop();
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(statuses(&server.targets(&id)), ["Succeeded", "Succeeded", "Succeeded"]);
    assert_eq!(max_in_flight(&records, &id), 1);
}

#[test]
fn two_replicas_on_one_database_run_each_command_once() {
    let first = Server::start("replica-a", &[]);
    let shared = std::env::var("EDGEDEPLOY_TEST_DATABASE")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", first.dir.join("edgedeploy.db").display()));
    let second = Server::start("replica-b", &["--database", &shared]);
    let fleet: Vec<Instance> = first
        .fleet("shop", "twins", 6, "CodeDeployDefault.HalfAtATime", json!({}))
        .iter()
        .map(|i| i.with_replica(&second))
        .collect();
    let agents = Agents::run(&fleet, Script { hold: Duration::from_millis(60), ..Script::default() });
    let cases = [("CodeDeployDefault.HalfAtATime", 3), ("CodeDeployDefault.OneAtATime", 1)];
    let mut ids = Vec::new();
    for (config, _) in cases {
        // Created on one replica, followed on the other.
        let id = first.deploy("shop", "twins", json!({"deploymentConfigName": config}));
        assert_eq!(second.wait_end(&id, Duration::from_secs(90))["status"], "Succeeded", "{config}");
        ids.push(id);
    }
    let (records, _) = agents.stop();
    for ((config, limit), id) in cases.iter().zip(&ids) {
        assert_eq!(max_in_flight(&records, id), *limit, "{config}");
        let mut ran: Vec<(&str, &str)> =
            records.iter().filter(|r| &r.deployment == id).map(|r| (r.instance.as_str(), r.event.as_str())).collect();
        let all = ran.len();
        ran.sort();
        ran.dedup();
        assert_eq!((all, ran.len()), (6 * EVENTS.len(), 6 * EVENTS.len()), "{config}: each event once");
    }
}
