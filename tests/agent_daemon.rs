//! `edgedeploy-agent run`: the daemon as real processes on loopback.
//!
//! Startup checks run without a server. The rest runs the real
//! `edgedeploy server` (control API, command API, bundle store), onboards
//! the device with `edgedeploy register-instance`, pushes revisions to the
//! bundle store and deploys them: end to end, and with the agent SIGKILLed
//! during DownloadBundle, Install and a hook, with the server stopped while
//! a completion is pending, and with refused credentials.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory per test.
fn sandbox(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("edagent-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An agent process whose stderr goes to a file (one file per start).
struct Agent {
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Agent {
    fn new(dir: &Path, config: &Path) -> Agent {
        Agent { config: config.to_path_buf(), dir: dir.to_path_buf(), child: None, starts: 0 }
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.join(format!("agent-{start}.log"))
    }

    fn start(&mut self) {
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

    /// The log of the current (or last) start.
    fn log(&self) -> String {
        fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// Every start's log.
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // Used by the server tests.
    fn all_logs(&self) -> String {
        (1..=self.starts).map(|i| fs::read_to_string(self.log_path(i)).unwrap_or_default()).collect()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM; returns the exit status and how long it took.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("agent running");
        let started = Instant::now();
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn write_config(path: &Path, root: &Path, extra: &str) {
    let text = format!("root_dir: {}\nwait_between_runs: 1\nhook_kill_grace_seconds: 1\n{extra}", root.display());
    fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------
// Startup, without a server.

#[test]
fn missing_host_identifier_is_named() {
    let dir = sandbox("nohost");
    let config = dir.join("agent.yml");
    write_config(
        &config,
        &dir.join("root"),
        "deploy_control_endpoint: http://127.0.0.1:9\naws_access_key_id: AK\naws_secret_access_key: s\n",
    );
    let out = Command::new(AGENT).arg("run").arg("-c").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: host_identifier is not set"), "{stderr}");
}

#[test]
fn missing_endpoint_and_credentials_are_named() {
    let dir = sandbox("noendpoint");
    let config = dir.join("agent.yml");
    write_config(
        &config,
        &dir.join("root"),
        "host_identifier: dev-1\naws_access_key_id: AK\naws_secret_access_key: s\n",
    );
    let out = Command::new(AGENT).arg("run").arg("-c").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deploy_control_endpoint is not set"));
    write_config(&config, &dir.join("root"), "host_identifier: dev-1\ndeploy_control_endpoint: http://127.0.0.1:9\n");
    let out = Command::new(AGENT).arg("run").arg("-c").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws_access_key_id"));
}

#[test]
fn credentials_from_the_on_premises_file() {
    let dir = sandbox("onprem");
    let onprem = dir.join("codedeploy.onpremises.yml");
    fs::write(
        &onprem,
        "---\nregion: local\naws_access_key_id: AKFILE\naws_secret_access_key: s\niam_user_arn: arn:aws:iam::1:user/dev\n",
    )
    .unwrap();
    let config = dir.join("agent.yml");
    let port = free_port();
    let extra =
        format!("deploy_control_endpoint: http://127.0.0.1:{port}\non_premises_config_file: {}\n", onprem.display());
    write_config(&config, &dir.join("root"), &extra);
    let mut agent = Agent::new(&dir, &config);
    agent.start();
    wait_until(Duration::from_secs(10), "the agent to start", || agent.log().contains("running: host"));
    let log = agent.log();
    assert!(log.contains("host arn:aws:iam::1:user/dev"), "{log}");
    agent.terminate();
}

#[test]
fn two_agents_never_share_a_root_and_sigterm_stops_promptly() {
    let dir = sandbox("lock");
    let config = dir.join("agent.yml");
    let port = free_port(); // nothing listens: the agent backs off
    let extra = format!(
        "deploy_control_endpoint: http://127.0.0.1:{port}\nhost_identifier: dev-1\n\
         aws_access_key_id: AK\naws_secret_access_key: s\n"
    );
    write_config(&config, &dir.join("root"), &extra);
    let mut agent = Agent::new(&dir, &config);
    agent.start();
    wait_until(Duration::from_secs(10), "the unreachable line", || agent.log().contains("unreachable"));
    let second = Command::new(AGENT).arg("run").arg("-c").arg(&config).output().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another edgedeploy-agent is running on this deployment root"), "{stderr}");
    // Let the backoff grow, then stop it in the middle of a wait.
    std::thread::sleep(Duration::from_secs(4));
    let (status, took) = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    let log = agent.log();
    assert_eq!(log.matches("the service is unreachable").count(), 1, "one line per class of failure:\n{log}");
    assert!(log.contains("stopping (signal)"), "{log}");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn waiting_agent_uses_no_cpu() {
    let dir = sandbox("idle");
    let config = dir.join("agent.yml");
    let port = free_port(); // refused: the agent waits in its backoff
    let extra = format!(
        "deploy_control_endpoint: http://127.0.0.1:{port}\nhost_identifier: dev-1\n\
         aws_access_key_id: AK\naws_secret_access_key: s\n"
    );
    write_config(&config, &dir.join("root"), &extra);
    let mut agent = Agent::new(&dir, &config);
    agent.start();
    let pid = agent.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_ticks(pid) - before;
    assert!(used <= 3, "the agent used {used} ticks of CPU in 5 s while waiting");
    agent.terminate();
}

#[test]
fn second_sigterm_ends_a_hung_request_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let dir = sandbox("hung");
    let config = dir.join("agent.yml");
    // Accepts connections and never answers: the poll waits for its deadline.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = format!(
        "deploy_control_endpoint: http://127.0.0.1:{port}\nhost_identifier: dev-1\n\
         aws_access_key_id: AK\naws_secret_access_key: s\n"
    );
    write_config(&config, &dir.join("root"), &extra);
    let mut agent = Agent::new(&dir, &config);
    agent.start();
    let (_connection, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut child = agent.child.take().unwrap();
    let pid = child.id().to_string();
    let term = || Command::new("kill").arg("-TERM").arg(&pid).status().unwrap();
    term();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the first SIGTERM waits for the end of the step");
    term();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the second SIGTERM did not end the agent");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(15), "{status:?}");
}

// ---------------------------------------------------------------------------
// With the real server.

#[cfg(feature = "server")]
mod with_server {
    use super::*;
    use edgedeploy::cli::connect::Operator;
    use edgedeploy::cli::{deploy, push};
    use serde_json::{Value, json};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    const SERVER: &str = env!("CARGO_BIN_EXE_edgedeploy");

    /// An `edgedeploy server` on a loopback port, restartable on the same port.
    struct Server {
        data_dir: PathBuf,
        port: u16,
        child: Option<Child>,
        starts: usize,
    }

    impl Server {
        fn start(dir: &Path) -> Server {
            let mut server = Server { data_dir: dir.join("server"), port: free_port(), child: None, starts: 0 };
            server.restart();
            server
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        fn restart(&mut self) {
            self.starts += 1;
            let log = fs::File::create(self.data_dir.with_extension(format!("{}.log", self.starts)))
                .or_else(|_| fs::File::create(std::env::temp_dir().join("edagent-server.log")))
                .unwrap();
            let child = Command::new(SERVER)
                .arg("server")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            let port = self.port;
            wait_until(Duration::from_secs(30), "the server to listen", || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while child.try_wait().unwrap().is_none() {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }

        fn operator(&self) -> Operator {
            Operator::connect(Some(&self.data_dir), Some(&self.url())).unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// A device: registered, with its agent configuration, in application
    /// `app-<name>` / group `group-<name>` (tag test=<name>).
    struct Device {
        root: PathBuf,
        config: PathBuf,
        name: String,
        app: String,
        group: String,
    }

    fn onboard(server: &Server, dir: &Path, name: &str, extra: &str) -> Device {
        let config = dir.join("agent.yml");
        let out = Command::new(SERVER)
            .arg("register-instance")
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["--name", &format!("dev-{name}"), "--tag", &format!("test={name}")])
            .arg("--agent-config")
            .arg(&config)
            .arg("--endpoint")
            .arg(server.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "register-instance: {}", String::from_utf8_lossy(&out.stderr));
        let root = dir.join("root");
        let mut text = fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "root_dir: {}\nwait_between_runs: 1\nhook_kill_grace_seconds: 1\n{extra}",
            root.display()
        ));
        fs::write(&config, text).unwrap();
        let op = server.operator();
        let app = format!("app-{name}");
        let group = format!("group-{name}");
        op.call("CreateApplication", json!({ "applicationName": app, "computePlatform": "Server" })).unwrap();
        op.call(
            "CreateDeploymentGroup",
            json!({
                "applicationName": app,
                "deploymentGroupName": group,
                "serviceRoleArn": "arn:aws:iam::000000000000:role/edgedeploy",
                "onPremisesInstanceTagFilters": [{ "Key": "test", "Value": name, "Type": "KEY_AND_VALUE" }]
            }),
        )
        .unwrap();
        Device { root, config, name: format!("dev-{name}"), app, group }
    }

    /// Replaces the value of `key` in the agent configuration.
    fn set_config(device: &Device, key: &str, value: &str) {
        let text = fs::read_to_string(&device.config).unwrap();
        let mut lines: Vec<String> =
            text.lines().filter(|l| !l.starts_with(&format!("{key}:"))).map(str::to_string).collect();
        lines.push(format!("{key}: {value}"));
        fs::write(&device.config, lines.join("\n") + "\n").unwrap();
    }

    /// Writes a revision directory: `files` (path, content); `.sh` files executable.
    fn revision(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        for (rel, content) in files {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            if rel.ends_with(".sh") {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir.to_path_buf()
    }

    fn deploy(server: &Server, device: &Device, source: &Path) -> String {
        let op = server.operator();
        let pushed = push::push(&op, &device.app, source, push::DEFAULT_BUCKET, None, None).unwrap();
        create(server, device, pushed.revision())
    }

    fn create(server: &Server, device: &Device, revision: Value) -> String {
        let request = deploy::Request {
            application: device.app.clone(),
            group: device.group.clone(),
            revision: Some(revision),
            file_exists_behavior: Some("OVERWRITE".into()),
            ..Default::default()
        };
        deploy::create(&server.operator(), &request).unwrap()
    }

    fn wait_for_end(server: &Server, id: &str, limit: Duration) -> String {
        let outcome = deploy::follow(&server.operator(), id, limit, &mut std::io::sink()).unwrap();
        outcome.status
    }

    /// The lifecycle events of the device in deployment `id`.
    fn events(server: &Server, device: &Device, id: &str) -> Vec<Value> {
        let out = server
            .operator()
            .call("GetDeploymentInstance", json!({ "deploymentId": id, "instanceId": device.name }))
            .unwrap();
        out["instanceSummary"]["lifecycleEvents"].as_array().cloned().unwrap_or_default()
    }

    fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
        events.iter().find(|e| e["lifecycleEventName"] == name).unwrap_or_else(|| panic!("no {name} in {events:?}"))
    }

    fn inflight(device: &Device) -> String {
        fs::read_to_string(device.root.join(".edgedeploy/inflight.json")).unwrap_or_default()
    }

    fn running(device: &Device, event: &str) -> bool {
        let record = inflight(device);
        record.contains(&format!("\"command_name\": \"{event}\"")) && record.contains("\"Running\"")
    }

    fn appspec(dest: &Path, hooks: &str) -> String {
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n{hooks}",
            dest.display()
        )
    }

    #[test]
    fn deploys_a_revision_end_to_end() {
        let dir = sandbox("e2e");
        let server = Server::start(&dir);
        let device = onboard(&server, &dir, "e2e", "");
        let dest = dir.join("dest");
        let env_file = dir.join("env.txt");
        let hook = format!(
            "#!/bin/sh\nenv | grep -E '^(BUNDLE_|DEPLOYMENT_|LIFECYCLE_EVENT)' | sort >> {}\n",
            env_file.display()
        );
        let spec =
            appspec(&dest, "  AfterInstall:\n    - location: hook.sh\n  ValidateService:\n    - location: hook.sh\n");
        let source = revision(
            &dir.join("rev1"),
            &[("appspec.yml", &spec), ("hook.sh", &hook), ("app/hello.txt", "hello\n"), ("app/sub/b.txt", "b\n")],
        );
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Succeeded", "{}", agent.log());
        assert_eq!(fs::read_to_string(dest.join("hello.txt")).unwrap(), "hello\n");
        assert_eq!(fs::read_to_string(dest.join("sub/b.txt")).unwrap(), "b\n");
        let env = fs::read_to_string(&env_file).unwrap();
        assert!(env.contains("BUNDLE_BUCKET=edgedeploy-bundles"), "{env}");
        assert!(env.contains("BUNDLE_KEY=app-e2e/"), "{env}");
        assert!(env.contains("BUNDLE_ETAG="), "{env}");
        assert!(env.contains(&format!("DEPLOYMENT_ID={id}")), "{env}");
        assert!(env.contains("LIFECYCLE_EVENT=ValidateService"), "{env}");
        // The bundle is where CodeDeploy puts it; nothing is left in flight or in the outbox.
        let group_id = fs::read_dir(&device.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| !n.starts_with('.') && !n.starts_with("deployment-"))
            .unwrap();
        assert!(device.root.join(&group_id).join(&id).join("bundle.tar").is_file());
        wait_until(Duration::from_secs(10), "the outbox to drain", || {
            fs::read_dir(device.root.join(".edgedeploy/outbox")).unwrap().count() == 0
        });
        assert!(inflight(&device).is_empty());
        // `status` reads what the daemon recorded.
        let status = Command::new(AGENT).arg("status").arg("-c").arg(&device.config).output().unwrap();
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(status.contains(&id) && status.contains("Succeeded at ValidateService"), "{status}");
        for event in ["DownloadBundle", "Install", "AfterInstall", "ValidateService"] {
            assert_eq!(event_status(&server, &device, &id, event), "Succeeded");
        }
        let (exit, _) = agent.terminate();
        assert!(exit.success());
    }

    fn event_status(server: &Server, device: &Device, id: &str, name: &str) -> String {
        event(&events(server, device, id), name)["status"].as_str().unwrap_or_default().to_string()
    }

    /// A TCP forwarder that passes the server's answers at `rate` bytes per
    /// second and counts them: slows bundle downloads enough to kill the
    /// agent in the middle, and measures what was fetched. Not a server.
    struct Throttle {
        port: u16,
        down: Arc<AtomicU64>,
    }

    /// `cut_first_at`: the first connection is closed after that many bytes
    /// of answer (a truncated body).
    fn throttle(target: u16, rate: u64, cut_first_at: Option<u64>) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicU64::new(0));
        let counter = down.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().flatten().enumerate() {
                let cut = if n == 0 { cut_first_at } else { None };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (mut c_read, mut u_write) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut u_write);
                    let _ = u_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut u_read, mut c_write) = (upstream, client);
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    let started = Instant::now();
                    let mut sent = 0u64;
                    loop {
                        let n = match u_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = match cut {
                            Some(cut) if sent + n as u64 >= cut => (cut - sent) as usize,
                            _ => n,
                        };
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        if cut == Some(sent) {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Throttle { port, down }
    }

    /// Random bytes (xorshift): incompressible, like a real payload.
    fn random_file(path: &Path, len: usize, seed: u64) {
        let mut state = seed | 1;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        bytes.truncate(len);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn download_resumes_after_sigkill() {
        const SIZE: usize = 50 << 20;
        let dir = sandbox("resume");
        let server = Server::start(&dir);
        let slow = throttle(server.port, 8 << 20, None);
        let device = onboard(&server, &dir, "resume", "");
        set_config(&device, "s3_endpoint_override", &format!("http://127.0.0.1:{}", slow.port));
        let dest = dir.join("dest");
        let source = dir.join("rev");
        random_file(&source.join("app/big.bin"), SIZE, 42);
        revision(&source, &[("appspec.yml", &appspec(&dest, ""))]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        let part = || {
            fs::read_dir(&device.root)
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .map(|g| g.path().join(&id).join("bundle.tar.part"))
                .find(|p| p.exists())
        };
        wait_until(Duration::from_secs(120), "a partial download of 12 MiB", || {
            part().and_then(|p| fs::metadata(p).ok()).is_some_and(|m| m.len() >= 12 << 20)
        });
        agent.kill9();
        let killed_at = fs::metadata(part().unwrap()).unwrap().len();
        assert!(killed_at < SIZE as u64, "the download was complete when killed");
        assert!(running(&device, "DownloadBundle"), "in flight: {}", inflight(&device));
        let before_restart = slow.down.load(Ordering::SeqCst);
        agent.start();
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(300)), "Succeeded", "{}", agent.all_logs());
        let log = agent.log();
        let resumed: u64 = log
            .split("resumed at ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no 'resumed at' line:\n{log}"));
        assert!(resumed > 0 && resumed <= killed_at, "resumed at {resumed}, killed at {killed_at}");
        assert!(log.contains("after an agent crash or stop (same boot)"), "{log}");
        let fetched_after = slow.down.load(Ordering::SeqCst) - before_restart;
        assert!(
            fetched_after < SIZE as u64 - (8 << 20),
            "{fetched_after} bytes went through after the restart; the bundle is {SIZE}"
        );
        let installed = fs::read(dest.join("big.bin")).unwrap();
        assert_eq!(installed, fs::read(source.join("app/big.bin")).unwrap());
    }

    #[test]
    fn truncated_download_is_resumed_within_the_event() {
        const SIZE: usize = 4 << 20;
        let dir = sandbox("truncated");
        let server = Server::start(&dir);
        let cutter = throttle(server.port, 1 << 30, Some(1 << 20));
        let device = onboard(&server, &dir, "truncated", "");
        set_config(&device, "s3_endpoint_override", &format!("http://127.0.0.1:{}", cutter.port));
        let dest = dir.join("dest");
        let source = dir.join("rev");
        random_file(&source.join("app/big.bin"), SIZE, 7);
        revision(&source, &[("appspec.yml", &appspec(&dest, ""))]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Succeeded", "{}", agent.log());
        let log = agent.log();
        assert!(log.contains("connection lost at byte") || log.contains("truncated:"), "{log}");
        assert!(log.contains("resumed at "), "{log}");
        assert_eq!(fs::read(dest.join("big.bin")).unwrap(), fs::read(source.join("app/big.bin")).unwrap());
    }

    #[test]
    fn bundle_over_max_bundle_bytes_fails_download_clearly() {
        let dir = sandbox("toolarge");
        let server = Server::start(&dir);
        let device = onboard(&server, &dir, "toolarge", "max_bundle_bytes: 1000\n");
        let source = dir.join("rev");
        random_file(&source.join("app/big.bin"), 64 << 10, 9);
        revision(&source, &[("appspec.yml", &appspec(&dir.join("dest"), ""))]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Failed", "{}", agent.log());
        let events = events(&server, &device, &id);
        let download = event(&events, "DownloadBundle");
        let message = download["diagnostics"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("max_bundle_bytes allows 1000"), "{download}");
    }

    #[test]
    fn sigterm_during_a_download_stops_and_the_download_resumes() {
        const SIZE: usize = 16 << 20;
        let dir = sandbox("termdl");
        let server = Server::start(&dir);
        let slow = throttle(server.port, 4 << 20, None);
        let device = onboard(&server, &dir, "termdl", "");
        set_config(&device, "s3_endpoint_override", &format!("http://127.0.0.1:{}", slow.port));
        let dest = dir.join("dest");
        let source = dir.join("rev");
        random_file(&source.join("app/big.bin"), SIZE, 11);
        revision(&source, &[("appspec.yml", &appspec(&dest, ""))]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        wait_until(Duration::from_secs(60), "the download to be under way", || {
            agent.log().contains("downloading /") && running(&device, "DownloadBundle")
        });
        std::thread::sleep(Duration::from_secs(1));
        let (status, took) = agent.terminate();
        assert!(status.success(), "{status:?}");
        assert!(took < Duration::from_secs(2), "stopping took {took:?}");
        assert!(running(&device, "DownloadBundle"), "the event stays in flight: {}", inflight(&device));
        assert!(agent.log().contains("DownloadBundle of command"), "{}", agent.log());
        agent.start();
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Succeeded", "{}", agent.all_logs());
        assert!(agent.log().contains("resumed at "), "{}", agent.log());
        assert_eq!(fs::read(dest.join("big.bin")).unwrap(), fs::read(source.join("app/big.bin")).unwrap());
    }

    #[test]
    fn install_rolls_forward_after_sigkill() {
        let dir = sandbox("install");
        let server = Server::start(&dir);
        let device = onboard(&server, &dir, "install", "");
        let dest = dir.join("dest");
        let source = dir.join("rev");
        let mut files = Vec::new();
        for i in 0..3000 {
            files.push((format!("app/d{}/f{i}.txt", i % 30), format!("file {i}\n")));
        }
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        revision(&source, &refs);
        revision(&source, &[("appspec.yml", &appspec(&dest, ""))]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        wait_until(Duration::from_secs(120), "Install to be running", || running(&device, "Install"));
        agent.kill9();
        let interrupted = running(&device, "Install");
        agent.start();
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Succeeded", "{}", agent.all_logs());
        if interrupted {
            let log = agent.log();
            assert!(log.contains("recovering Install (Running)"), "{log}");
            assert!(log.contains("the install rolls forward"), "{log}");
        }
        for (rel, content) in &files {
            let installed = dest.join(rel.trim_start_matches("app/"));
            assert_eq!(fs::read_to_string(&installed).unwrap(), *content, "{}", installed.display());
        }
        let leftovers: Vec<_> = walk(&dest).into_iter().filter(|p| p.contains(".edgedeploy-tmp.")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.display().to_string());
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&path));
            }
        }
        out
    }

    #[test]
    fn interrupted_hook_is_reported_failed_and_not_run_again() {
        let dir = sandbox("hook");
        let server = Server::start(&dir);
        let device = onboard(&server, &dir, "hook", "");
        let dest = dir.join("dest");
        let marker = dir.join("runs.txt");
        let hook = format!("#!/bin/sh\necho run >> {}\nsleep 4\n", marker.display());
        let spec = appspec(&dest, "  AfterInstall:\n    - location: slow.sh\n");
        let source = revision(&dir.join("rev"), &[("appspec.yml", &spec), ("slow.sh", &hook), ("app/a.txt", "a\n")]);
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        wait_until(Duration::from_secs(120), "the hook to run", || {
            running(&device, "AfterInstall") && fs::read_to_string(&marker).is_ok_and(|m| m.lines().count() == 1)
        });
        agent.kill9();
        agent.start();
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Failed", "{}", agent.all_logs());
        let events = events(&server, &device, &id);
        let after = event(&events, "AfterInstall");
        assert_eq!(after["status"], "Failed", "{after}");
        let message = after["diagnostics"]["message"].as_str().unwrap_or_default();
        assert_eq!(message, "interrupted by agent restart during AfterInstall", "{after}");
        assert_eq!(after["diagnostics"]["errorCode"], "UnknownError", "{after}");
        std::thread::sleep(Duration::from_secs(5)); // the killed hook's sleep ends; nothing runs it again
        assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 1, "the hook ran again");
        let log = agent.log();
        assert!(log.contains("a hook is never run twice"), "{log}");
        let status = Command::new(AGENT).arg("status").arg("-c").arg(&device.config).output().unwrap();
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.contains("Failed at AfterInstall") && status.contains("interrupted by agent restart"),
            "{status}"
        );
    }

    #[test]
    fn completion_survives_a_server_outage() {
        let dir = sandbox("outage");
        let mut server = Server::start(&dir);
        let device = onboard(&server, &dir, "outage", "");
        let dest = dir.join("dest");
        let spec = appspec(&dest, "  ApplicationStart:\n    - location: start.sh\n");
        let source = revision(
            &dir.join("rev"),
            &[("appspec.yml", &spec), ("start.sh", "#!/bin/sh\nsleep 2\necho started\n"), ("app/a.txt", "a\n")],
        );
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        let id = deploy(&server, &device, &source);
        wait_until(Duration::from_secs(120), "ApplicationStart to run", || running(&device, "ApplicationStart"));
        server.stop();
        let outbox = device.root.join(".edgedeploy/outbox");
        wait_until(Duration::from_secs(30), "the completion in the outbox", || {
            fs::read_dir(&outbox).unwrap().count() == 1 && inflight(&device).is_empty()
        });
        wait_until(Duration::from_secs(30), "the unreachable line", || agent.log().contains("unreachable"));
        std::thread::sleep(Duration::from_secs(2));
        server.restart();
        assert_eq!(wait_for_end(&server, &id, Duration::from_secs(120)), "Succeeded", "{}", agent.log());
        let log = agent.log();
        assert_eq!(log.matches("the service is unreachable").count(), 1, "{log}");
        assert!(log.contains("the service answers again"), "{log}");
        assert!(log.contains("reported ApplicationStart"), "{log}");
        assert_eq!(event_status(&server, &device, &id, "ApplicationStart"), "Succeeded");
    }

    #[test]
    fn refused_credentials_give_one_clear_line() {
        let dir = sandbox("refused");
        let server = Server::start(&dir);
        let device = onboard(&server, &dir, "refused", "");
        set_config(&device, "aws_secret_access_key", "not-the-secret");
        let mut agent = Agent::new(&dir, &device.config);
        agent.start();
        std::thread::sleep(Duration::from_secs(6));
        let (status, _) = agent.terminate();
        assert!(status.success());
        let log = agent.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("refuses this agent's credentials")).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("InvalidSignatureException") || lines[0].contains("SignatureDoesNotMatch"), "{log}");
        drop(server);
    }
}
