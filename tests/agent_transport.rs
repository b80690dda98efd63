//! The agent's transport, with real processes on loopback: `edgedeploy
//! server` over https with a throwaway CA made by the `openssl` CLI, the
//! agent trusting it through `ca_bundle` (and refusing a certificate it does
//! not trust), and the agent reaching the server through `proxy_uri`, a real
//! HTTP proxy (a thread-per-connection forwarder in this test process).

mod server_common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgedeploy::client::{Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::Credentials;
use edgedeploy::server::auth::read_shared_credentials;
use edgedeploy::server::http::CONTROL_PREFIX;
use serde_json::{Value, json};
use server_common::{EDGEDEPLOY, ServerProcess, openssl};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory per test (kept on failure for the logs).
fn sandbox(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("edtransport-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

// ---------------------------------------------------------------------------
// Certificates, with the openssl CLI.

/// A self-signed CA, `<name>.pem` + `<name>.key` in `dir`; returns the certificate.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key, subject) = (format!("{name}.pem"), format!("{name}.key"), format!("/CN=edgedeploy test {name}"));
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    dir.join(pem)
}

/// A server certificate for 127.0.0.1 (IP SAN) and localhost signed by CA
/// `ca` (made by [`make_ca`]); returns (certificate, key).
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
    ]);
    #[rustfmt::skip]
    openssl(dir, &[
        "x509", "-req", "-in", "server.csr", "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"),
        "-set_serial", "0x5eed", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    ]);
    (dir.join("server.pem"), dir.join("server.key"))
}

/// An https server with a certificate of a fresh CA; returns it, its
/// `https://127.0.0.1:PORT` and the CA file.
fn tls_server(dir: &Path) -> (ServerProcess, String, PathBuf) {
    let ca = make_ca(dir, "ca");
    let (cert, key) = make_server_cert(dir, "ca");
    let server = ServerProcess::start_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = server.endpoint().replacen("http://", "https://", 1);
    (server, url, ca)
}

// ---------------------------------------------------------------------------
// The server, the device, the agent.

/// The admin's client (in this process), trusting `ca_bundle` for https.
fn admin(server: &ServerProcess, url: &str, ca_bundle: Option<&Path>) -> Client {
    let (id, secret) = read_shared_credentials(&server.admin_credentials_file()).expect("admin credentials");
    let endpoint = Endpoint {
        url: url.to_string(),
        region: "us-east-1".into(),
        credentials: Credentials { access_key_id: id, secret_access_key: secret },
    };
    let options = HttpOptions { ca_bundle: ca_bundle.map(Path::to_path_buf), ..HttpOptions::default() };
    Client::new(endpoint, &options).unwrap()
}

fn control(admin: &Client, operation: &str, input: Value) -> Value {
    admin
        .call_raw(CONTROL_PREFIX, "codedeploy", operation, input.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{operation}: {e}"))
}

/// Registers device `dev-<name>` (tag test=<name>) whose agent reaches the
/// server at `endpoint`, with application `app-<name>` and group
/// `group-<name>`; returns its agent configuration with `extra` appended.
fn onboard(server: &ServerProcess, admin: &Client, dir: &Path, name: &str, endpoint: &str, extra: &str) -> PathBuf {
    let config = dir.join("agent.yml");
    let out = Command::new(EDGEDEPLOY)
        .arg("register-instance")
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["--name", &format!("dev-{name}"), "--tag", &format!("test={name}"), "--endpoint", endpoint])
        .arg("--agent-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "register-instance: {}", text(&out));
    let mut yaml = fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "root_dir: {}\nwait_between_runs: 1\nhook_kill_grace_seconds: 1\n{extra}",
        dir.join("root").display()
    ));
    fs::write(&config, yaml).unwrap();
    control(admin, "CreateApplication", json!({ "applicationName": format!("app-{name}") }));
    control(
        admin,
        "CreateDeploymentGroup",
        json!({
            "applicationName": format!("app-{name}"),
            "deploymentGroupName": format!("group-{name}"),
            "serviceRoleArn": "arn:aws:iam::000000000000:role/edgedeploy",
            "onPremisesInstanceTagFilters": [{ "Key": "test", "Value": name, "Type": "KEY_AND_VALUE" }]
        }),
    );
    config
}

/// A revision: one file installed to `dest`, an AfterInstall hook that
/// writes `dest/../hook-ran`.
fn revision(dir: &Path, dest: &Path) -> PathBuf {
    let source = dir.join("rev");
    fs::create_dir_all(source.join("app")).unwrap();
    fs::write(source.join("app/hello.txt"), "hello over the wire\n").unwrap();
    fs::write(source.join("hook.sh"), format!("#!/bin/sh\necho ran > {}\n", dir.join("hook-ran").display())).unwrap();
    fs::set_permissions(source.join("hook.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n\
         hooks:\n  AfterInstall:\n    - location: hook.sh\n      timeout: 30\n",
        dest.display()
    );
    fs::write(source.join("appspec.yml"), spec).unwrap();
    source
}

/// An `edgedeploy-agent run`, stderr to `<dir>/agent.log`, killed when dropped.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, config: &Path) -> Agent {
        let log = dir.join("agent.log");
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(AGENT)
            .arg("run")
            .arg("-c")
            .arg(config)
            .env_remove("ALL_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent { child: Some(child), log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; panics unless it exits with status 0 within `limit`.
    fn terminate(&mut self, limit: Duration) {
        let mut child = self.child.take().expect("agent running");
        let started = Instant::now();
        assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "agent exited with {status}:\n{}", self.log());
                return;
            }
            assert!(started.elapsed() < limit, "agent still running {limit:?} after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("agent log ({}):\n{}", self.log.display(), self.log());
        }
    }
}

/// Runs `edgedeploy ARGS` with `AWS_CA_BUNDLE` set to `ca` (or unset).
fn operator_command(args: &[&str], ca: Option<&Path>) -> Output {
    let mut command = Command::new(EDGEDEPLOY);
    command.args(args).stdin(Stdio::null()).env_remove("AWS_CA_BUNDLE");
    if let Some(ca) = ca {
        command.env("AWS_CA_BUNDLE", ca);
    }
    command.output().expect("running edgedeploy")
}

// ---------------------------------------------------------------------------
// https.

#[test]
fn agent_deploys_over_tls_trusting_its_ca_bundle() {
    let dir = sandbox("tls");
    let (server, url, ca) = tls_server(&dir);
    let admin = admin(&server, &url, Some(&ca));
    let config = onboard(&server, &admin, &dir, "tls", &url, &format!("ca_bundle: {}\n", ca.display()));
    let yaml = fs::read_to_string(&config).unwrap();
    assert!(yaml.contains(&format!("deploy_control_endpoint: {url}")), "{yaml}");
    let dest = dir.join("dest");
    let source = revision(&dir, &dest);
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let push = ["push", "--data-dir", &data_dir, "--application", "app-tls", "--source", source.to_str().unwrap()];

    // The operator's commands use the system CAs: they refuse the server's
    // certificate, saying so, until AWS_CA_BUNDLE names the CA.
    let refused = operator_command(&push, None);
    assert!(!refused.status.success(), "push trusted an unknown CA: {}", text(&refused));
    assert!(text(&refused).contains("certificate") && text(&refused).contains("AWS_CA_BUNDLE"), "{}", text(&refused));
    let pushed = operator_command(&push, Some(&ca));
    assert!(pushed.status.success(), "push: {}\n{}", text(&pushed), server.log());

    let mut agent = Agent::start(&dir, &config);
    let deploy = [
        "deploy",
        "--data-dir",
        &data_dir,
        "--application",
        "app-tls",
        "--deployment-group",
        "group-tls",
        "--file-exists-behavior",
        "OVERWRITE",
        "--wait",
        "--timeout",
        "120",
    ];
    let deployed = operator_command(&deploy, Some(&ca));
    assert!(deployed.status.success(), "deploy --wait: {}\nagent:\n{}", text(&deployed), agent.log());
    assert!(text(&deployed).contains("succeeded"), "{}", text(&deployed));
    assert_eq!(fs::read_to_string(dest.join("hello.txt")).unwrap(), "hello over the wire\n");
    assert_eq!(fs::read_to_string(dir.join("hook-ran")).unwrap(), "ran\n");
    let log = agent.log();
    assert!(log.contains(&format!("command API {url}")), "{log}");
    assert!(log.contains("downloaded /edgedeploy-bundles/app-tls/"), "{log}");
    assert!(!log.contains("unreachable"), "{log}");
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn agent_refuses_a_server_certificate_it_does_not_trust() {
    let dir = sandbox("untrusted");
    let (server, url, ca) = tls_server(&dir);
    let admin = admin(&server, &url, Some(&ca));
    // The agent trusts another CA only. It goes through a counting relay
    // (plain TCP, the TLS is end to end) so that its attempts can be seen.
    let other_ca = make_ca(&dir, "other-ca");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(port);
    let agent_url = format!("https://127.0.0.1:{}", relay.port);
    let config =
        onboard(&server, &admin, &dir, "untrusted", &agent_url, &format!("ca_bundle: {}\n", other_ca.display()));
    let source = revision(&dir, &dir.join("dest"));
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let push =
        ["push", "--data-dir", &data_dir, "--application", "app-untrusted", "--source", source.to_str().unwrap()];
    let pushed = operator_command(&push, Some(&ca));
    assert!(pushed.status.success(), "push: {}", text(&pushed));

    let created = operator_command(
        &["deploy", "--data-dir", &data_dir, "--application", "app-untrusted", "--deployment-group", "group-untrusted"],
        Some(&ca),
    );
    assert!(created.status.success(), "deploy: {}", text(&created));
    let id = text(&created).split_whitespace().find(|w| w.starts_with("d-")).expect("a deployment id").to_string();
    let instance =
        || control(&admin, "GetDeploymentInstance", json!({ "deploymentId": id, "instanceId": "dev-untrusted" }));
    // The server starts the instance: its first command waits to be picked up.
    wait_until(Duration::from_secs(20), "the instance to start", || {
        instance()["instanceSummary"]["status"] == "InProgress"
    });

    // The agent keeps trying, with backoff (3 attempts take at most 1 + 2 s
    // of waits), and says why once.
    let mut agent = Agent::start(&dir, &config);
    wait_until(Duration::from_secs(20), "three connection attempts", || relay.connections() >= 3);
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("unreachable")).collect();
    assert_eq!(lines.len(), 1, "one line for the whole outage:\n{log}");
    let line = lines[0].to_lowercase();
    assert!(line.contains("certificate") && line.contains("retrying with backoff"), "{log}");

    // The command was never picked up: every lifecycle event is still Pending.
    let instance = instance();
    let events = instance["instanceSummary"]["lifecycleEvents"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "{instance}");
    assert!(events.iter().all(|e| e["status"] == "Pending"), "{instance}");
    assert!(!dir.join("root/.edgedeploy/inflight.json").exists(), "the agent received a command");
    let deployment = control(&admin, "GetDeployment", json!({ "deploymentId": id }));
    assert_eq!(deployment["deploymentInfo"]["status"], "InProgress", "{deployment}");

    // Not hung: it stops at once.
    agent.terminate(Duration::from_secs(3));
    assert!(agent.log().contains("stopping (signal)"), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// proxy_uri.

#[test]
fn agent_reaches_the_server_through_proxy_uri() {
    let dir = sandbox("proxy");
    let server = ServerProcess::start();
    let admin = admin(&server, server.endpoint(), None);
    let port: u16 = server.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = HttpProxy::start();
    // A name only the proxy resolves (.invalid never resolves, RFC 6761):
    // the agent can reach the server through the proxy and no other way.
    let agent_url = format!("http://{PROXIED_HOST}:{port}");
    let config =
        onboard(&server, &admin, &dir, "proxy", &agent_url, &format!("proxy_uri: http://127.0.0.1:{}\n", proxy.port));
    let dest = dir.join("dest");
    let source = revision(&dir, &dest);
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let pushed = operator_command(
        &["push", "--data-dir", &data_dir, "--application", "app-proxy", "--source", source.to_str().unwrap()],
        None,
    );
    assert!(pushed.status.success(), "push: {}", text(&pushed));

    let mut agent = Agent::start(&dir, &config);
    let deployed = operator_command(
        &[
            "deploy",
            "--data-dir",
            &data_dir,
            "--application",
            "app-proxy",
            "--deployment-group",
            "group-proxy",
            "--wait",
            "--timeout",
            "120",
        ],
        None,
    );
    assert!(deployed.status.success(), "deploy --wait: {}\nagent:\n{}", text(&deployed), agent.log());
    assert_eq!(fs::read_to_string(dest.join("hello.txt")).unwrap(), "hello over the wire\n");
    agent.terminate(Duration::from_secs(10));

    let seen = proxy.requests();
    let target = format!("{PROXIED_HOST}:{port}");
    let tunnels: Vec<&String> = seen.iter().filter(|r| r.starts_with("CONNECT ")).collect();
    assert!(!tunnels.is_empty(), "{seen:#?}");
    assert!(tunnels.iter().all(|r| **r == format!("CONNECT {target}")), "{seen:#?}");
    let calls = seen.iter().filter(|r| r.starts_with("POST / ")).count();
    assert!(calls >= 3, "poll, acknowledgement, completion...: {seen:#?}");
    assert!(seen.iter().any(|r| r.starts_with("GET /edgedeploy-bundles/app-proxy/")), "the bundle GET: {seen:#?}");
    assert!(agent.log().contains(&format!("command API {agent_url}")), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// Network helpers: real sockets on loopback.

/// Host name the proxy maps to 127.0.0.1.
const PROXIED_HOST: &str = "edgedeploy.invalid";

/// A TCP relay to `127.0.0.1:target` that counts connections.
struct Relay {
    port: u16,
    count: Arc<AtomicUsize>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) {
                    pipe(client, upstream);
                }
            }
        });
        Relay { port, count }
    }

    fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Copies both ways between `a` and `b` on two threads until either closes.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone(), b.try_clone()), (b.try_clone(), a.try_clone())]
        .into_iter()
        .filter_map(|(x, y)| Some((x.ok()?, y.ok()?)))
    {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

/// An HTTP proxy: `CONNECT host:port` tunnels and absolute-form requests
/// (`GET http://host:port/path`), one thread per connection. It records the
/// request line of every request, including the ones inside a tunnel to a
/// plain-http server (it parses the stream: heads and Content-Length bodies).
/// [`PROXIED_HOST`] resolves to 127.0.0.1 here only.
struct HttpProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    fn start() -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || proxy_connection(client, &log));
            }
        });
        HttpProxy { port, seen }
    }

    /// Request lines seen so far: `CONNECT host:port` for tunnels, then the
    /// requests (origin-form) in order.
    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn resolve(authority: &str) -> Option<TcpStream> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = if host == PROXIED_HOST { "127.0.0.1" } else { host };
    TcpStream::connect((host, port.parse::<u16>().ok()?)).ok()
}

/// Reads one request head (through the blank line); None at end of stream.
fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

fn content_length(head: &str) -> Option<u64> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// `GET http://host:port/path HTTP/1.1` → ("host:port", "GET /path HTTP/1.1").
fn origin_form(request_line: &str) -> Option<(String, String)> {
    let mut parts = request_line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    Some((authority.to_string(), format!("{method} {path} {version}")))
}

fn proxy_connection(client: TcpStream, seen: &Mutex<Vec<String>>) {
    let Ok(reader) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    let Some(first) = read_head(&mut reader) else { return };
    let line = first.lines().next().unwrap_or_default().to_string();
    let mut client_out = client;
    let (upstream, pending) = if let Some(authority) = line.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()) {
        seen.lock().unwrap().push(format!("CONNECT {authority}"));
        let Some(upstream) = resolve(authority) else {
            let _ = client_out.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        if client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
            return;
        }
        (upstream, None)
    } else {
        let Some((authority, _)) = origin_form(&line) else {
            let _ = client_out.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        let Some(upstream) = resolve(&authority) else {
            let _ = client_out.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        (upstream, Some(first))
    };
    // Answers flow back untouched; requests are forwarded one at a time.
    let Ok(mut upstream_in) = upstream.try_clone() else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Both);
    });
    let mut upstream_out = upstream;
    let mut head = pending;
    while let Some(mut request) = head.take().or_else(|| read_head(&mut reader)) {
        let line = request.lines().next().unwrap_or_default().to_string();
        let line = match origin_form(&line) {
            Some((_, origin)) => {
                request = request.replacen(&line, &origin, 1);
                origin
            }
            None => line,
        };
        seen.lock().unwrap().push(line);
        if upstream_out.write_all(request.as_bytes()).is_err() {
            break;
        }
        let chunked = request.to_ascii_lowercase().contains("transfer-encoding:");
        if chunked {
            // Not parsed further: the rest of the stream is passed as is.
            let _ = std::io::copy(&mut reader, &mut upstream_out);
            break;
        }
        let body = content_length(&request).unwrap_or(0);
        match std::io::copy(&mut (&mut reader).take(body), &mut upstream_out) {
            Ok(n) if n == body => {}
            _ => break,
        }
    }
    let _ = upstream_out.shutdown(Shutdown::Write);
}
