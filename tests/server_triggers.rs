//! Trigger webhooks end to end: a real `edgedeploy server`, scripted agents,
//! and a real HTTP receiver on loopback (a TcpListener thread) that can be
//! down (connections refused) or answer 500. Every event type fires with
//! CodeDeploy's message fields; the signature verifies with the key and
//! not with another; a receiver down across a server restart still gets
//! every event, once per event id.

#[path = "server_common/scripted.rs"]
mod scripted;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use edgedeploy::protocol::spec::DeploymentSpec;
use hmac::{Hmac, Mac};
use scripted::{Agents, Server, revision_key};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(90);
const ALL_EVENTS: [&str; 10] = [
    "DeploymentStart",
    "DeploymentSuccess",
    "DeploymentFailure",
    "DeploymentStop",
    "DeploymentRollback",
    "DeploymentReady",
    "InstanceStart",
    "InstanceSuccess",
    "InstanceFailure",
    "InstanceReady",
];

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
    answered: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }
}

/// A webhook receiver on a loopback port.
struct Receiver {
    port: u16,
    answer: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `port` (0: any) and answers `answer` to every request.
    fn start(port: u16, answer: u16, got: Arc<Mutex<Vec<Received>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let answer = Arc::new(AtomicU16::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, g, s) = (answer.clone(), got, stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &a, &g),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, answer, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/codedeploy", self.port)
    }

    /// Closes the listening socket: connections are refused from now on.
    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shut();
    }
}

fn serve(stream: TcpStream, answer: &AtomicU16, got: &Mutex<Vec<Received>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.starts_with("POST ") {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let code = answer.load(Ordering::SeqCst);
    let body = String::from_utf8_lossy(&body).to_string();
    got.lock().unwrap().push(Received { headers, body, answered: code });
    let mut stream = reader.into_inner();
    let _ = write!(stream, "HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn trigger(name: &str, target: &str, events: &[&str]) -> Value {
    json!({"triggerName": name, "triggerTargetArn": target, "triggerEvents": events})
}

/// The accepted (2xx) requests, one per event id.
fn delivered(got: &Mutex<Vec<Received>>) -> BTreeMap<String, Value> {
    let got = got.lock().unwrap();
    got.iter()
        .filter(|r| r.answered == 200)
        .map(|r| (r.json()["eventId"].as_str().unwrap().to_string(), r.json()))
        .collect()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_event_type_fires_with_its_fields_and_a_verifiable_signature() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, 200, got.clone());
    let server = Server::start("events", &["--allow-private-webhooks"]);
    let settings = json!({
        "triggerConfigurations": [
            trigger("all", &receiver.url(), &ALL_EVENTS),
            trigger("sns", "arn:aws:sns:us-east-1:000000000000:deployments", &ALL_EVENTS),
        ],
        "autoRollbackConfiguration": {"enabled": true, "events": ["DEPLOYMENT_FAILURE"]},
    });
    let fleet = server.fleet("shop", "web", 2, settings);
    let fail: scripted::FailRule = Arc::new(|_: &str, spec: &DeploymentSpec, event: &str| {
        revision_key(spec) == "b.tgz" && event == "AfterInstall"
    });
    let agents = Agents::run(&fleet, fail);
    let good = server.deploy("shop", "web", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&good, WAIT)["status"], "Succeeded");
    let bad = server.deploy("shop", "web", "b.tgz", json!({}));
    assert_eq!(server.wait_end(&bad, WAIT)["status"], "Failed");
    let rollback = server.deployment(&bad)["rollbackInfo"]["rollbackDeploymentId"].as_str().unwrap().to_string();
    assert_eq!(server.wait_end(&rollback, WAIT)["status"], "Succeeded");
    agents.stop();
    let stopped = server.deploy("shop", "web", "c.tgz", json!({}));
    server.ok("StopDeployment", json!({"deploymentId": stopped, "autoRollbackEnabled": false}));

    let of = |deployment: &str, event: &str| -> Vec<Value> {
        delivered(&got).into_values().filter(|m| m["deploymentId"] == deployment && m["eventType"] == event).collect()
    };
    wait_for("every event", Duration::from_secs(30), || {
        of(&stopped, "DeploymentStop").len() == 1
            && of(&rollback, "DeploymentSuccess").len() == 1
            && of(&bad, "DeploymentRollback").len() == 1
    });
    thread::sleep(Duration::from_secs(1));
    let messages = delivered(&got);
    let types: BTreeSet<&str> = messages.values().map(|m| m["eventType"].as_str().unwrap()).collect();
    let fired: BTreeSet<&str> = ALL_EVENTS.iter().copied().filter(|e| !e.ends_with("Ready")).collect();
    assert_eq!(types, fired, "Ready events are blue/green only and never fire");
    // Per deployment: exactly the events that happened, once each.
    let count = |d: &str, e: &str| of(d, e).len();
    for (d, e, n) in [
        (&good, "DeploymentStart", 1),
        (&good, "InstanceStart", 2),
        (&good, "InstanceSuccess", 2),
        (&good, "DeploymentSuccess", 1),
        (&bad, "InstanceFailure", 2),
        (&bad, "DeploymentFailure", 1),
        (&bad, "DeploymentRollback", 1),
        (&bad, "DeploymentSuccess", 0),
        (&rollback, "DeploymentStart", 1),
        (&rollback, "InstanceSuccess", 2),
        (&stopped, "DeploymentStop", 1),
    ] {
        assert_eq!(count(d, e), n, "{e} of {d}: {messages:#?}");
    }
    // Deployment messages: CodeDeploy's fields (times and counts as strings).
    let failure = &of(&bad, "DeploymentFailure")[0];
    for field in ["region", "accountId", "applicationName", "deploymentGroupName", "createTime", "completeTime"] {
        assert!(failure[field].is_string(), "{field}: {failure}");
    }
    assert_eq!(failure["eventTriggerName"], "all");
    assert_eq!(
        (failure["applicationName"].as_str(), failure["deploymentGroupName"].as_str()),
        (Some("shop"), Some("web"))
    );
    assert_eq!(failure["status"], "Failed");
    assert_eq!(failure["deploymentOverview"]["Failed"], "2", "{failure}");
    assert_eq!(failure["deploymentOverview"]["Succeeded"], "0");
    assert_eq!(failure["errorInformation"]["ErrorCode"], "HEALTH_CONSTRAINTS", "{failure}");
    assert!(failure["errorInformation"]["ErrorMessage"].as_str().unwrap().contains("failed"));
    assert!(failure["createTime"].as_str().unwrap().parse::<f64>().unwrap() > 1.6e9);
    let rolled = &of(&bad, "DeploymentRollback")[0];
    assert_eq!(rolled["rollbackInfo"]["rollbackDeploymentId"], rollback.as_str(), "{rolled}");
    let success = &of(&rollback, "DeploymentSuccess")[0];
    assert_eq!(
        (success["status"].as_str(), success["creator"].as_str()),
        (Some("Succeeded"), Some("codeDeployRollback"))
    );
    assert_eq!(success["deploymentOverview"]["Succeeded"], "2");
    let stop = &of(&stopped, "DeploymentStop")[0];
    assert_eq!(stop["status"], "Stopped");
    assert_eq!(stop["errorInformation"]["ErrorCode"], "MANUAL_STOP");
    // Instance messages.
    let instance = of(&bad, "InstanceFailure").into_iter().find(|m| m["instanceName"] == "web-0").unwrap();
    assert_eq!(instance["instanceStatus"], "Failed");
    assert!(instance["instanceId"].as_str().unwrap().ends_with(":instance/web-0"), "{instance}");
    assert!(instance["lastUpdatedAt"].as_str().unwrap().parse::<f64>().is_ok());
    let events = instance["lifecycleEvents"].as_array().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["LifecycleEvent"].as_str().unwrap()).collect();
    assert_eq!(names[..5], ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall"]);
    let after = &events[4];
    assert_eq!(after["LifecycleEventStatus"], "Failed");
    assert!(after["StartTime"].is_string() && after["EndTime"].is_string(), "{after}");
    assert_eq!(events[5]["LifecycleEventStatus"], "Skipped");
    let start = of(&good, "InstanceStart").into_iter().next().unwrap();
    assert_eq!(start["instanceStatus"], "InProgress");

    // The signature: the key in the data directory (0600) verifies every
    // body; another key does not; the SNS trigger never got anything.
    let key_file = server.dir.join("trigger-signing-key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    assert_eq!(key.len(), 64);
    let all = got.lock().unwrap().clone();
    for r in &all {
        let header = &r.headers["x-edgedeploy-signature"];
        assert_eq!(*header, sign(key.as_bytes(), r.body.as_bytes()), "{r:?}");
        assert_ne!(*header, sign(b"not the key", r.body.as_bytes()));
        assert_eq!(r.headers["x-edgedeploy-event-id"], r.json()["eventId"].as_str().unwrap());
        assert_eq!(r.headers["x-edgedeploy-event-type"], r.json()["eventType"].as_str().unwrap());
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.json()["eventTriggerName"], "all");
    }
    // The verification example of docs/triggers.md, in Python.
    let sample = &all[0];
    let body_file = server.dir.join("body.json");
    std::fs::write(&body_file, &sample.body).unwrap();
    let script = r#"
import hashlib, hmac, sys
def verify(key: bytes, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)
key = open(sys.argv[1], "rb").read().strip()
body = open(sys.argv[2], "rb").read()
print(verify(key, body, sys.argv[3]), verify(b"wrong", body, sys.argv[3]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&key_file)
        .arg(&body_file)
        .arg(&sample.headers["x-edgedeploy-signature"])
        .output()
        .expect("running python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True False", "{}", String::from_utf8_lossy(&out.stderr));
    drop(receiver);
}

#[test]
fn a_receiver_down_across_a_server_restart_still_gets_every_event_once() {
    let got = Arc::new(Mutex::new(Vec::new()));
    // Reserve a port, then close it: deliveries are refused.
    let mut receiver = Receiver::start(0, 200, got.clone());
    receiver.shut();
    let port = receiver.port;
    let mut server =
        Server::start("down", &["--allow-private-webhooks", "--trigger-retry-max", "1", "--trigger-timeout", "2"]);
    let wanted = ["DeploymentStart", "DeploymentSuccess", "InstanceStart", "InstanceSuccess"];
    let settings = json!({"triggerConfigurations": [trigger("ops", &receiver.url(), &wanted)]});
    let fleet = server.fleet("shop", "down", 2, settings);
    let agents = Agents::run(&fleet, scripted::never());
    let id = server.deploy("shop", "down", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&id, WAIT)["status"], "Succeeded");
    agents.stop();
    wait_for("failed attempts", Duration::from_secs(20), || server.log().matches("attempt 2 failed").count() >= 1);
    let key_before = std::fs::read_to_string(server.dir.join("trigger-signing-key")).unwrap();

    // The server dies with every event pending; the receiver comes back
    // answering 500 for a while, then 200.
    server.kill();
    let receiver = Receiver::start(port, 500, got.clone());
    server.spawn();
    wait_for("attempts answered 500", Duration::from_secs(20), || got.lock().unwrap().len() >= 6);
    receiver.answer.store(200, Ordering::SeqCst);
    wait_for("every event delivered", Duration::from_secs(30), || delivered(&got).len() >= 6);
    thread::sleep(Duration::from_secs(3));

    let all = got.lock().unwrap().clone();
    let accepted: Vec<&Received> = all.iter().filter(|r| r.answered == 200).collect();
    let ids: BTreeSet<String> = accepted.iter().map(|r| r.json()["eventId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 6, "one per event: {accepted:#?}");
    assert_eq!(accepted.len(), 6, "each accepted once (no resend after a 2xx)");
    let mut types: Vec<String> = accepted.iter().map(|r| r.json()["eventType"].as_str().unwrap().to_string()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "DeploymentStart",
            "DeploymentSuccess",
            "InstanceStart",
            "InstanceStart",
            "InstanceSuccess",
            "InstanceSuccess"
        ]
    );
    assert!(accepted.iter().all(|r| r.json()["deploymentId"] == id.as_str()));
    // Retried: refused before the restart, answered 500 after it, then accepted.
    let refused_then_accepted =
        accepted.iter().filter(|r| r.headers["x-edgedeploy-delivery-attempt"].parse::<u32>().unwrap() >= 3).count();
    assert!(refused_then_accepted >= 1, "{accepted:#?}");
    let rejected: BTreeSet<String> =
        all.iter().filter(|r| r.answered == 500).map(|r| r.json()["eventId"].as_str().unwrap().to_string()).collect();
    assert!(rejected.iter().all(|id| ids.contains(id)), "a 500 is retried until accepted");
    // One key across the restart; every body signed with it.
    let key = std::fs::read_to_string(server.dir.join("trigger-signing-key")).unwrap();
    assert_eq!(key, key_before);
    for r in &all {
        assert_eq!(r.headers["x-edgedeploy-signature"], sign(key.trim().as_bytes(), r.body.as_bytes()));
    }
    drop(receiver);
}

#[test]
fn two_replicas_on_one_database_send_each_event_once() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, 200, got.clone());
    // Replicas share the database's secrets key.
    let key = scripted::shared_secrets_key();
    let env = [("EDGEDEPLOY_SECRETS_KEY", key.as_str())];
    let first = Server::start_with_env("replica-a", &["--allow-private-webhooks"], &env);
    let shared = std::env::var("EDGEDEPLOY_TEST_DATABASE")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", first.dir.join("edgedeploy.db").display()));
    let second = Server::start_with_env("replica-b", &["--allow-private-webhooks", "--database", &shared], &env);
    let wanted = ["DeploymentStart", "DeploymentSuccess", "InstanceStart", "InstanceSuccess"];
    let settings = json!({"triggerConfigurations": [trigger("twins", &receiver.url(), &wanted)]});
    let fleet = first.fleet("shop", "twins", 4, settings);
    let agents = Agents::run(&fleet, scripted::never());
    let mut ids = Vec::new();
    for key in ["a.tgz", "b.tgz", "c.tgz"] {
        let id = first.deploy("shop", "twins", key, json!({}));
        assert_eq!(second.wait_end(&id, WAIT)["status"], "Succeeded");
        ids.push(id);
    }
    agents.stop();
    // Per deployment: start, 4 instance starts, 4 instance successes, success.
    wait_for("every event", Duration::from_secs(30), || delivered(&got).len() >= 30);
    thread::sleep(Duration::from_secs(2));
    let all = got.lock().unwrap().clone();
    let distinct: BTreeSet<String> = all.iter().map(|r| r.json()["eventId"].as_str().unwrap().to_string()).collect();
    assert_eq!((all.len(), distinct.len()), (30, 30), "each event sent once by one of the replicas");
    for id in &ids {
        assert_eq!(all.iter().filter(|r| r.json()["deploymentId"] == id.as_str()).count(), 10, "{id}");
    }
    // Both replicas signed with the one key the database holds.
    let key = std::fs::read_to_string(first.dir.join("trigger-signing-key")).unwrap();
    assert_eq!(std::fs::read_to_string(second.dir.join("trigger-signing-key")).unwrap(), key);
    assert!(all.iter().all(|r| r.headers["x-edgedeploy-signature"] == sign(key.trim().as_bytes(), r.body.as_bytes())));
    // Only this receiver's deliveries. On a database shared with the tests
    // running beside this one (EDGEDEPLOY_TEST_DATABASE), their servers are
    // replicas too and may deliver some of these events: then the two
    // replicas here sent at most the 30 (the receiver's count above is the
    // exactly-once check); on the test's own SQLite file, exactly the 30.
    let ours = format!("delivered to {}", receiver.url());
    let by_first = first.log().matches(ours.as_str()).count();
    let by_second = second.log().matches(ours.as_str()).count();
    eprintln!("deliveries: first replica {by_first}, second {by_second}");
    if std::env::var_os("EDGEDEPLOY_TEST_DATABASE").is_some() {
        assert!(by_first + by_second <= 30, "first {by_first}, second {by_second}");
    } else {
        assert_eq!(by_first + by_second, 30, "first {by_first}, second {by_second}");
    }
    drop(receiver);
}

/// A webhook on loopback, link-local (the cloud metadata address) or a
/// private network would make the server send requests into its own
/// network for whoever configures a group: refused, naming the address and
/// the flag; a public address is accepted; nothing is stored when refused.
#[test]
fn webhook_targets_on_private_addresses_are_refused_without_the_flag() {
    let server = Server::start("private-hooks", &[]);
    server.application("shop");
    let group = |url: &str| {
        json!({
            "applicationName": "shop",
            "deploymentGroupName": "private-hooks",
            "serviceRoleArn": "arn:aws:iam::000000000000:role/cd",
            "triggerConfigurations": [trigger("hook", url, &["DeploymentSuccess"])],
        })
    };
    for (url, address, kind) in [
        ("http://127.0.0.1:9/hook", "127.0.0.1", "loopback"),
        ("http://localhost:9/hook", "127.0.0.1", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
        ("http://10.0.0.5/hook", "10.0.0.5", "private"),
        ("https://192.168.1.10:8443/hook", "192.168.1.10", "private"),
        ("http://[::1]:9/hook", "::1", "loopback"),
        ("http://[fe80::1]/hook", "fe80::1", "link-local"),
        ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1", "loopback"),
    ] {
        let error = server.call("CreateDeploymentGroup", group(url)).expect_err(url);
        assert_eq!(error.exception(), Some("InvalidTriggerConfigException"), "{url}: {error}");
        let message = error.to_string();
        assert!(message.contains(address) && message.contains(kind), "{url}: {message}");
        assert!(message.contains("--allow-private-webhooks"), "{message}");
        assert_eq!(
            server.error(
                "GetDeploymentGroup",
                json!({"applicationName": "shop", "deploymentGroupName": "private-hooks"})
            ),
            "DeploymentGroupDoesNotExistException",
            "nothing stored for {url}"
        );
    }
    server.ok("CreateDeploymentGroup", group("https://93.184.216.34/hook"));
    let error = server
        .call(
            "UpdateDeploymentGroup",
            json!({
                "applicationName": "shop",
                "currentDeploymentGroupName": "private-hooks",
                "triggerConfigurations": [trigger("hook", "http://169.254.169.254/", &["DeploymentSuccess"])],
            }),
        )
        .expect_err("an update to the metadata address");
    assert_eq!(error.exception(), Some("InvalidTriggerConfigException"), "{error}");
    let group_info =
        server.ok("GetDeploymentGroup", json!({"applicationName": "shop", "deploymentGroupName": "private-hooks"}));
    assert_eq!(
        group_info["deploymentGroupInfo"]["triggerConfigurations"][0]["triggerTargetArn"],
        "https://93.184.216.34/hook"
    );
}

/// The address is checked again at every delivery, on the addresses the
/// connection then uses: a target accepted earlier (here, while the server
/// allowed private webhooks; in the wild, a name that resolved to a public
/// address and now resolves to loopback) is not delivered to.
#[test]
fn webhook_deliveries_check_the_address_again() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, 200, got.clone());
    let mut server = Server::start("rebinding", &["--allow-private-webhooks", "--trigger-retry-max", "1"]);
    let wanted = ["DeploymentStart", "DeploymentSuccess"];
    let settings = json!({"triggerConfigurations": [trigger("ops", &receiver.url(), &wanted)]});
    let fleet = server.fleet("shop", "rebinding", 1, settings);
    let agents = Agents::run(&fleet, scripted::never());
    let first = server.deploy("shop", "rebinding", "a.tgz", json!({}));
    assert_eq!(server.wait_end(&first, WAIT)["status"], "Succeeded");
    wait_for("the allowed deliveries", Duration::from_secs(30), || delivered(&got).len() >= 2);
    agents.stop();
    server.kill();
    server.respawn_with(&["--trigger-retry-max", "1"]);
    let agents = Agents::run(&fleet, scripted::never());
    let second = server.deploy("shop", "rebinding", "b.tgz", json!({}));
    assert_eq!(server.wait_end(&second, WAIT)["status"], "Succeeded");
    agents.stop();
    let refused = |line: &&str| {
        line.contains(&receiver.url()) && line.contains("a loopback address; the server sends webhooks only to public")
    };
    wait_for("two refused delivery attempts", Duration::from_secs(30), || {
        server.log().lines().filter(refused).count() >= 2
    });
    let to_second = delivered(&got).into_values().filter(|m| m["deploymentId"] == second.as_str()).count();
    assert_eq!(to_second, 0, "nothing delivered to loopback once private webhooks are not allowed");
}
