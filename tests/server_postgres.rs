//! PostgreSQL as the shared store of several `edgedeploy server` replicas.
//!
//! The test starts a real PostgreSQL server from the distribution's packages
//! itself (initdb into a temporary directory, a free loopback port, the
//! socket in the same directory; stopped at the end, also on failure), then
//! two server replicas started at the same moment on one empty database,
//! and a fleet of real `edgedeploy-agent run` daemons, each talking to one
//! of the two replicas. It asserts that every lifecycle event of every
//! instance ran exactly once: from the database, from both replicas' logs,
//! from the agents' logs and from the hooks' own records.
//!
//! The PostgreSQL binaries come from the Debian package `postgresql`
//! (`/usr/lib/postgresql/VERSION/bin`); without them the test fails and
//! says so. As root, PostgreSQL runs as the user `nobody`.

mod postgres_common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edgedeploy::client::{Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::Credentials;
use postgres_common::{
    CONTROL, Postgres, Replica, SERVER, call, create_group, deploy, one_at_a_time, run, scratch, wait_end,
};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");
/// The events every deployment has, in order (one command each).
const EVENTS: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];
/// The events whose hook runs on every deployment (ApplicationStop runs
/// the previous revision's hook, so not on an instance's first one).
const HOOKED: [&str; 4] = ["BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"];

/// Every hook: one line per run, in a file of the host's own.
const HOOK: &str = r#"#!/bin/sh
echo "$DEPLOYMENT_ID $LIFECYCLE_EVENT $FLEET_HOST" >> "$FLEET_HOME/events"
exit 0
"#;

/// A running `edgedeploy-agent run` daemon.
struct Agent {
    name: String,
    dir: PathBuf,
    child: Child,
}

impl Agent {
    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// The agents; killed when dropped.
struct Fleet(Vec<Agent>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for agent in &mut self.0 {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
        if thread::panicking() {
            for agent in &self.0 {
                let log = agent.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("agent {} log, last lines:", agent.name);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Registers `name` through `registrar` (on the shared database), writes its
/// agent configuration with `control` as command API and `bundles` as
/// bundle store, and starts its daemon.
fn start_agent(
    work: &Path,
    registrar: &Replica,
    database: &str,
    name: &str,
    control: &Replica,
    bundles: &Replica,
) -> Agent {
    let dir = work.join(name);
    fs::create_dir_all(&dir).expect("agent directory");
    let config = dir.join("agent.yml");
    let half = if name.ends_with(['0', '2', '4', '6', '8']) { "even" } else { "odd" };
    run(Command::new(SERVER)
        .args(["register-instance", "--data-dir"])
        .env("EDGEDEPLOY_SECRETS_KEY", postgres_common::SECRETS_KEY)
        .arg(registrar.data_dir())
        .args(["--database", database, "--name", name, "--tag", "fleet=pg", "--tag", &format!("half={half}")])
        .arg("--agent-config")
        .arg(&config)
        .args(["--endpoint", &control.url()]));
    let written = fs::read_to_string(&config).expect("agent config");
    let mut text: String =
        written.lines().filter(|l| !l.starts_with("s3_endpoint_override")).map(|l| format!("{l}\n")).collect();
    text.push_str(&format!(
        "s3_endpoint_override: {}\nroot_dir: {}\nwait_between_runs: 1\nhook_kill_grace_seconds: 1\n",
        bundles.url(),
        dir.join("root").display()
    ));
    fs::write(&config, text).expect("writing the agent config");
    let log = fs::File::create(dir.join("agent.log")).expect("agent.log");
    let child = Command::new(AGENT)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("FLEET_HOME", &dir)
        .env("FLEET_HOST", name)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting edgedeploy-agent");
    Agent { name: name.to_string(), dir, child }
}

/// Pushes a revision whose every hooked event runs [`HOOK`] to `replica`.
fn push_app(work: &Path, replica: &Replica) -> Value {
    let app = work.join("app");
    fs::create_dir_all(app.join("scripts")).expect("app directory");
    let mut spec = String::from("version: 0.0\nos: linux\nhooks:\n");
    for event in ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"] {
        spec.push_str(&format!("  {event}:\n    - location: scripts/hook.sh\n      timeout: 60\n"));
    }
    fs::write(app.join("appspec.yml"), spec).expect("appspec");
    fs::write(app.join("scripts/hook.sh"), HOOK).expect("hook");
    fs::set_permissions(app.join("scripts/hook.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    run(Command::new(SERVER)
        .args(["push", "--data-dir"])
        .arg(replica.data_dir())
        .args(["--application", "pgapp", "--source"])
        .arg(&app)
        .args(["--key", "app/bundle.tgz"]));
    json!({"revisionType": "S3", "s3Location": {"bucket": "edgedeploy-bundles", "key": "app/bundle.tgz", "bundleType": "tgz"}})
}

/// (instance, event) of `line` if it is `<instance>: <event> of <deployment> <what>`.
fn server_line<'a>(line: &'a str, deployment: &str, what: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.split_once(" info: ")?.1;
    let (instance, rest) = rest.split_once(": ")?;
    let rest = rest.strip_suffix(what)?.strip_suffix(' ')?;
    let (event, dep) = rest.split_once(" of ")?;
    (dep == deployment).then_some((instance, event))
}

#[test]
fn two_replicas_on_postgresql_serve_twenty_agents_each_command_once() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE edgedeploy");
    let database = pg.url("edgedeploy");
    // Both replicas start at the same moment on the empty database: the
    // schema is created under an advisory lock, so neither fails.
    let mut a = Replica::spawn("replica-a", &database);
    let mut b = Replica::spawn("replica-b", &database);
    a.wait_up();
    b.wait_up();
    let tables = pg.psql("edgedeploy", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert!(tables.trim().parse::<u32>().unwrap_or(0) >= 11, "tables: {tables}");

    let work = scratch("fleet");
    let names: Vec<String> = (0..20).map(|i| format!("dev-{i:02}")).collect();
    // Agents alternate between the replicas for the command API; bundles
    // come from replica A, whose built-in store holds them.
    let fleet = Fleet(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (registrar, control) = if i % 2 == 0 { (&a, &a) } else { (&b, &b) };
                start_agent(&work, registrar, &database, name, control, &a)
            })
            .collect(),
    );
    let admin_a = a.admin(&a);
    let admin_b = b.admin(&a);
    call(&admin_a, "CreateApplication", json!({"applicationName": "pgapp", "computePlatform": "Server"}));
    let revision = push_app(&work, &a);
    create_group(&admin_a, "all", "fleet", "pg");
    create_group(&admin_b, "even", "half", "even");
    create_group(&admin_b, "odd", "half", "odd");
    let setup = started.elapsed();

    // (deployment, group, instances): created on either replica, followed on the other.
    let deploying = Instant::now();
    let mut deployments: Vec<(String, &str, usize)> = Vec::new();
    let first = deploy(&admin_a, "all", "CodeDeployDefault.AllAtOnce", &revision);
    assert_eq!(wait_end(&admin_b, &first, Duration::from_secs(240))["status"], "Succeeded");
    deployments.push((first, "all", 20));
    let even = deploy(&admin_a, "even", "CodeDeployDefault.HalfAtATime", &revision);
    let odd = deploy(&admin_b, "odd", "CodeDeployDefault.AllAtOnce", &revision);
    assert_eq!(wait_end(&admin_b, &even, Duration::from_secs(240))["status"], "Succeeded");
    assert_eq!(wait_end(&admin_a, &odd, Duration::from_secs(240))["status"], "Succeeded");
    deployments.push((even, "even", 10));
    deployments.push((odd, "odd", 10));
    let last = deploy(&admin_b, "all", "CodeDeployDefault.HalfAtATime", &revision);
    assert_eq!(wait_end(&admin_a, &last, Duration::from_secs(240))["status"], "Succeeded");
    deployments.push((last, "all", 20));
    let deploy_time = deploying.elapsed();
    let total_commands: usize = deployments.iter().map(|(_, _, n)| n * EVENTS.len()).sum();

    // 1. The API: every target Succeeded, every event Succeeded.
    for (id, group, n) in &deployments {
        let info = call(&admin_a, "GetDeployment", json!({"deploymentId": id}))["deploymentInfo"].clone();
        assert_eq!(info["status"], "Succeeded", "{group}: {info}");
        assert_eq!(info["deploymentOverview"]["Succeeded"], *n, "{group}: {info}");
        let ids = call(&admin_b, "ListDeploymentTargets", json!({"deploymentId": id}))["targetIds"].clone();
        let got = call(&admin_b, "BatchGetDeploymentTargets", json!({"deploymentId": id, "targetIds": ids}));
        let targets = got["deploymentTargets"].as_array().expect("deploymentTargets");
        assert_eq!(targets.len(), *n, "{group}");
        for t in targets {
            let t = &t["instanceTarget"];
            assert_eq!(t["status"], "Succeeded", "{group}: {t}");
            let events: Vec<(&str, &str)> = t["lifecycleEvents"]
                .as_array()
                .expect("lifecycleEvents")
                .iter()
                .map(|e| (e["lifecycleEventName"].as_str().unwrap_or(""), e["status"].as_str().unwrap_or("")))
                .collect();
            let expected: Vec<(&str, &str)> = EVENTS.iter().map(|e| (*e, "Succeeded")).collect();
            assert_eq!(events, expected, "{group}: {t}");
        }
    }

    // 2. The database: one command per (deployment, instance, event), each
    // dispatched, acknowledged and completed in that order.
    let ids_sql = deployments.iter().map(|(id, _, _)| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let duplicates = pg.psql(
        "edgedeploy",
        "SELECT deployment_id, instance_name, command_name, count(*) FROM host_commands \
         GROUP BY deployment_id, instance_name, command_name HAVING count(*) <> 1",
    );
    assert_eq!(duplicates.trim(), "", "duplicate commands");
    let summary = pg.psql(
        "edgedeploy",
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE status = 'Succeeded' AND dispatched_at <= acknowledged_at \
             AND acknowledged_at <= completed_at) FROM host_commands WHERE deployment_id IN ({ids_sql})"
        ),
    );
    assert_eq!(summary.trim(), format!("{total_commands}|{total_commands}"), "commands (all | well-ordered)");
    let rows = pg.psql(
        "edgedeploy",
        &format!(
            "SELECT command_id, instance_name, deployment_id FROM host_commands WHERE deployment_id IN ({ids_sql})"
        ),
    );
    // command id -> (instance, deployment)
    let owner: BTreeMap<String, (String, String)> = rows
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('|');
            Some((cols.next()?.to_string(), (cols.next()?.to_string(), cols.next()?.to_string())))
        })
        .collect();
    assert_eq!(owner.len(), total_commands);

    // 3. The replicas' logs: each command handed out, acknowledged and
    // completed exactly once over both, and both served agents.
    let logs = [a.log(), b.log()];
    for (id, group, n) in &deployments {
        for what in ["handed out", "acknowledged", "Succeeded"] {
            let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for log in &logs {
                for line in log.lines() {
                    if let Some(key) = server_line(line, id, what) {
                        *seen.entry(key).or_default() += 1;
                    }
                }
            }
            assert_eq!(seen.len(), n * EVENTS.len(), "{group} {id}: distinct events {what}");
            let twice: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
            assert!(twice.is_empty(), "{group} {id}: {what} more than once: {twice:?}");
        }
    }
    for (replica, log) in [&a, &b].iter().zip(&logs) {
        let handed = log.lines().filter(|l| l.ends_with(" handed out")).count();
        assert!(handed > 0, "replica {} handed out no command", replica.name);
        eprintln!("replica {} handed out {handed} commands", replica.name);
    }

    // 4. The agents' logs: each command received by its own instance's
    // agent only, once.
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for agent in &fleet.0 {
        for line in agent.log().lines() {
            let Some(rest) = line.split_once("received ").map(|(_, r)| r) else { continue };
            let Some(id) = rest.split_once("(command ").and_then(|(_, r)| r.split_once(',')).map(|(id, _)| id) else {
                continue;
            };
            received.entry(id.to_string()).or_default().push(agent.name.clone());
        }
    }
    for (id, (instance, _)) in &owner {
        let by = received.get(id).cloned().unwrap_or_default();
        assert_eq!(by, vec![instance.clone()], "command {id} of {instance} was received by {by:?}");
    }

    // 5. The hooks' own records: each hooked event ran once per instance
    // and deployment, on that instance.
    for agent in &fleet.0 {
        let text = fs::read_to_string(agent.dir.join("events")).unwrap_or_default();
        let mut runs: BTreeMap<(String, String), usize> = BTreeMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{}: hook record {line:?}", agent.name);
            assert_eq!(parts[2], agent.name, "a hook of {} ran with another host's environment", agent.name);
            *runs.entry((parts[0].to_string(), parts[1].to_string())).or_default() += 1;
        }
        let twice: Vec<_> = runs.iter().filter(|(_, c)| **c != 1).collect();
        assert!(twice.is_empty(), "{}: hooks that ran more than once: {twice:?}", agent.name);
        let mine: BTreeSet<&str> = owner.values().filter(|(i, _)| *i == agent.name).map(|(_, d)| d.as_str()).collect();
        assert!(!mine.is_empty(), "{} was in no deployment", agent.name);
        for dep in &mine {
            for event in HOOKED {
                assert!(
                    runs.contains_key(&(dep.to_string(), event.to_string())),
                    "{}: {event} of {dep} did not run",
                    agent.name
                );
            }
        }
    }

    let total = started.elapsed();
    eprintln!(
        "20 agents, 2 replicas, {} deployments, {total_commands} commands: setup {:.1} s, deployments {:.1} s \
         ({:.1} commands/s end to end), whole test {:.1} s",
        deployments.len(),
        setup.as_secs_f64(),
        deploy_time.as_secs_f64(),
        total_commands as f64 / deploy_time.as_secs_f64(),
        total.as_secs_f64()
    );
    drop(fleet);
    let _ = fs::remove_dir_all(&work);
}

/// One scripted agent's view of one request.
#[derive(Debug, Clone)]
struct Seen {
    instance: String,
    /// "poll", "ack" or "complete".
    what: &'static str,
    command: String,
    deployment: String,
    /// When the request was sent.
    sent: Instant,
    /// The acknowledgement's CommandStatus.
    answer: String,
}

/// An instance driven by a scripted agent: real signed HTTP, its own key,
/// every request to the other replica than the one before.
struct Scripted {
    name: String,
    host: String,
    clients: [Client; 2],
}

impl Scripted {
    fn register(registrar: &Replica, database: &str, name: &str, replicas: [&Replica; 2], work: &Path) -> Scripted {
        let config = work.join(format!("{name}.yml"));
        run(Command::new(SERVER)
            .args(["register-instance", "--data-dir"])
            .env("EDGEDEPLOY_SECRETS_KEY", postgres_common::SECRETS_KEY)
            .arg(registrar.data_dir())
            .args(["--database", database, "--name", name, "--tag", "fleet=scripted", "--agent-config"])
            .arg(&config)
            .args(["--endpoint", &registrar.url()]));
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(&config).expect("agent config")).expect("agent config YAML");
        let field = |k: &str| yaml[k].as_str().unwrap_or_else(|| panic!("{k} in {}", config.display())).to_string();
        let client = |replica: &Replica| {
            let endpoint = Endpoint {
                url: replica.url(),
                region: field("region"),
                credentials: Credentials {
                    access_key_id: field("aws_access_key_id"),
                    secret_access_key: field("aws_secret_access_key"),
                },
            };
            Client::new(endpoint, &HttpOptions { timeout: Some(Duration::from_secs(30)), ..HttpOptions::default() })
                .expect("client")
        };
        Scripted {
            name: name.to_string(),
            host: field("host_identifier"),
            clients: [client(replicas[0]), client(replicas[1])],
        }
    }

    /// Polls, acknowledges and completes (Succeeded) until `stop`.
    fn run(&self, stop: &std::sync::atomic::AtomicBool, seen: &std::sync::Mutex<Vec<Seen>>) {
        use edgedeploy::protocol::command::{SIGNING_NAME, TARGET_PREFIX};
        let mut turn = self.name.len();
        let mut call = |op: &str, body: Value| {
            turn += 1;
            self.clients[turn % 2].call_raw(TARGET_PREFIX, SIGNING_NAME, op, body.to_string().as_bytes())
        };
        let record = |what, command: &str, deployment: &str, sent, answer: &str| {
            seen.lock().expect("records").push(Seen {
                instance: self.name.clone(),
                what,
                command: command.to_string(),
                deployment: deployment.to_string(),
                sent,
                answer: answer.to_string(),
            });
        };
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let sent = Instant::now();
            let polled = call("PollHostCommand", json!({"HostIdentifier": self.host}));
            let Some(command) = polled.ok().and_then(|v| v.get("HostCommand").cloned()) else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            let id = command["HostCommandIdentifier"].as_str().expect("HostCommandIdentifier").to_string();
            let execution = command["DeploymentExecutionId"].as_str().expect("DeploymentExecutionId");
            let deployment = execution.split('/').nth(2).expect("deployment in the execution id").to_string();
            record("poll", &id, &deployment, sent, "");
            let sent = Instant::now();
            let Ok(ack) = call("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id})) else { continue };
            let answer = ack["CommandStatus"].as_str().unwrap_or_default().to_string();
            record("ack", &id, &deployment, sent, &answer);
            if answer == "Failed" {
                continue;
            }
            let sent = Instant::now();
            let body = json!({"HostCommandIdentifier": id, "CommandStatus": "Succeeded",
                "Diagnostics": {"Format": "JSON", "Payload": "{\"error_code\":0,\"script_name\":\"\",\"message\":\"ok\",\"log\":\"\"}"}});
            if call("PutHostCommandComplete", body).is_ok() {
                record("complete", &id, &deployment, sent, "");
            }
        }
    }
}

#[test]
fn scripted_agents_through_two_replicas_never_get_a_command_of_a_stopped_deployment() {
    let _serial = one_at_a_time();
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE edgedeploy");
    let database = pg.url("edgedeploy");
    let mut a = Replica::spawn("scripted-a", &database);
    let mut b = Replica::spawn("scripted-b", &database);
    a.wait_up();
    b.wait_up();
    let work = scratch("scripted");
    let instances: Vec<Scripted> =
        (0..20).map(|i| Scripted::register(&a, &database, &format!("bot-{i:02}"), [&a, &b], &work)).collect();
    let admin_a = a.admin(&a);
    let admin_b = b.admin(&b);
    call(&admin_a, "CreateApplication", json!({"applicationName": "pgapp", "computePlatform": "Server"}));
    create_group(&admin_b, "bots", "fleet", "scripted");
    let revision = json!({"revisionType": "S3", "s3Location": {"bucket": "edgedeploy-bundles", "key": "none.tgz", "bundleType": "tgz"}});
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::Mutex::new(Vec::new());
    thread::scope(|scope| {
        for instance in &instances {
            let (stop, seen) = (&stop, &seen);
            scope.spawn(move || instance.run(stop, seen));
        }
        // Throughput: three AllAtOnce deployments, one after the other.
        let timing = Instant::now();
        let mut finished = Vec::new();
        for n in 0..3 {
            let (create, follow) = if n % 2 == 0 { (&admin_a, &admin_b) } else { (&admin_b, &admin_a) };
            let id = deploy(create, "bots", "CodeDeployDefault.AllAtOnce", &revision);
            let info = wait_end(follow, &id, Duration::from_secs(120));
            assert_eq!(info["status"], "Succeeded", "{info}");
            finished.push(id);
        }
        let took = timing.elapsed();
        let commands = finished.len() * 20 * EVENTS.len();
        eprintln!(
            "scripted: {commands} commands (poll + acknowledge + complete each) through 2 replicas in {:.1} s: {:.0} commands/s",
            took.as_secs_f64(),
            commands as f64 / took.as_secs_f64()
        );
        // Stops at various moments, on the other replica than the creation.
        let mut stopped = Vec::new();
        for (n, delay) in [150u64, 250, 350, 450, 550, 650, 750, 850, 950, 1050].into_iter().enumerate() {
            let (create, halt) = if n % 2 == 0 { (&admin_a, &admin_b) } else { (&admin_b, &admin_a) };
            let id = deploy(create, "bots", "CodeDeployDefault.AllAtOnce", &revision);
            thread::sleep(Duration::from_millis(delay));
            let halted = halt.call_raw(
                CONTROL,
                "codedeploy",
                "StopDeployment",
                json!({"deploymentId": id}).to_string().as_bytes(),
            );
            let at = Instant::now();
            match halted {
                Ok(_) => stopped.push((id.clone(), at)),
                Err(e) => assert_eq!(e.exception(), Some("DeploymentAlreadyCompletedException"), "{e}"),
            }
            wait_end(create, &id, Duration::from_secs(60));
        }
        thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = seen.lock().expect("records").clone();
        // No command was handed out or acknowledged as runnable once its
        // deployment's stop had returned.
        for (id, at) in &stopped {
            let late: Vec<&Seen> = seen
                .iter()
                .filter(|s| {
                    &s.deployment == id
                        && s.sent > *at
                        && (s.what == "poll" || (s.what == "ack" && s.answer != "Failed"))
                })
                .collect();
            assert!(late.is_empty(), "after StopDeployment of {id} returned: {late:#?}");
            // A completion sent after the stop returned changes nothing: no
            // command it reports may be Succeeded.
            let succeeded = pg.psql(
                "edgedeploy",
                &format!("SELECT command_id FROM host_commands WHERE deployment_id = '{id}' AND status = 'Succeeded'"),
            );
            let succeeded: BTreeSet<&str> = succeeded.lines().collect();
            let late: Vec<&Seen> = seen
                .iter()
                .filter(|s| &s.deployment == id && s.what == "complete" && s.sent > *at)
                .filter(|s| succeeded.contains(s.command.as_str()))
                .collect();
            assert!(late.is_empty(), "completed after StopDeployment of {id} returned: {late:#?}");
            let open = pg.psql(
                "edgedeploy",
                &format!("SELECT count(*) FROM host_commands WHERE deployment_id = '{id}' AND status IN ('Pending', 'Dispatched', 'InProgress')"),
            );
            assert_eq!(open.trim(), "0", "{id}: commands still open after the stop");
        }
        // Each command handed out once (re-deliveries would be polls of a
        // command already seen), completed at most once.
        let mut polls: BTreeMap<&str, usize> = BTreeMap::new();
        let mut completes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &seen {
            let map = match s.what {
                "poll" => &mut polls,
                "complete" => &mut completes,
                _ => continue,
            };
            *map.entry(s.command.as_str()).or_default() += 1;
        }
        let rows = pg.psql("edgedeploy", "SELECT command_id, instance_name FROM host_commands");
        let owner: BTreeMap<&str, &str> = rows.lines().filter_map(|l| l.split_once('|')).collect();
        for s in &seen {
            assert_eq!(owner.get(s.command.as_str()), Some(&s.instance.as_str()), "{s:?} is another instance's");
        }
        let twice: Vec<_> = polls.iter().chain(completes.iter()).filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "commands handed out or completed more than once: {twice:?}");
        let duplicates = pg.psql(
            "edgedeploy",
            "SELECT deployment_id, instance_name, seq FROM host_commands GROUP BY 1, 2, 3 HAVING count(*) <> 1",
        );
        assert_eq!(duplicates.trim(), "");
        eprintln!("scripted: {} stops landed mid-deployment", stopped.len());
    });
    let _ = fs::remove_dir_all(&work);
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with
/// `openssl` in `dir`; readable by the user PostgreSQL runs as.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = dir.join("ca.crt");
    let (cert, key, ext) = (dir.join("server.crt"), dir.join("server.key"), dir.join("ext.cnf"));
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=edgedeploy test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    if let Some((uid, gid)) = postgres_common::unprivileged_ids() {
        for file in [&cert, &key] {
            std::os::unix::fs::chown(file, Some(uid), Some(gid)).expect("handing the certificate to nobody");
        }
    }
    (ca, cert, key)
}

#[test]
fn replicas_reach_postgresql_over_verified_tls_and_refuse_an_unknown_certificate() {
    let _serial = one_at_a_time();
    let work = scratch("tls");
    let (ca, cert, key) = make_certificates(&work);
    let pg = Postgres::start_with(&[
        "ssl=on",
        &format!("ssl_cert_file={}", cert.display()),
        &format!("ssl_key_file={}", key.display()),
    ]);
    pg.psql("postgres", "CREATE DATABASE edgedeploy");
    let verified = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url("edgedeploy"), ca.display());
    let mut replica = Replica::spawn("tls", &verified);
    replica.wait_up();
    // Every connection of the replica is encrypted (psql's own excluded).
    let ssl = pg.psql(
        "edgedeploy",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'edgedeploy' AND a.pid <> pg_backend_pid()",
    );
    let (with, without) = ssl.trim().split_once('|').expect("two counts");
    assert!(with.parse::<u32>().unwrap_or(0) >= 1 && without == "0", "connections with|without TLS: {ssl}");
    let tables = pg.psql("edgedeploy", "SELECT count(*) FROM pg_tables WHERE tablename = 'host_commands'");
    assert_eq!(tables.trim(), "1");

    // Without our CA, the certificate does not check out: the server stops.
    let unverified = format!("{}?sslmode=verify-full", pg.url("edgedeploy"));
    let mut refused = Replica::spawn("tls-refused", &unverified);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = refused.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server started with an unverifiable database certificate:\n{}",
            refused.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = refused.log();
    assert!(log.contains("invalid peer certificate") && log.contains("UnknownIssuer"), "{log}");
    assert!(log.contains("opening the store postgres://postgres@127.0.0.1:"), "{log}");
    drop(replica);
    let _ = fs::remove_dir_all(&work);
}
