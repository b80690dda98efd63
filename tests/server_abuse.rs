//! Hostile clients against a real `edgedeploy server` process: floods of
//! connections that never authenticate (idle, dripping their headers,
//! sending large bodies) over HTTP/1.1, HTTP/2 (prior knowledge) and TLS.
//! During each flood a signed request on a new connection must still be
//! answered within a second, and the server's peak memory (VmHWM) must
//! stay bounded; each figure is printed. Each flood is bounded in sockets
//! and in time. See docs/security.md.

mod server_common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgedeploy::client::{Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::Credentials;
use server_common::ServerProcess;

/// How long each flood lasts.
const FLOOD_TIME: Duration = Duration::from_secs(6);
/// Connections the server under attack may hold (small, so that floods
/// overrun it).
const CAP: &str = "128";
/// Sockets an idle flood keeps open (more than [`CAP`]).
const IDLE_SOCKETS: usize = 300;
/// A signed request must be answered within this during a flood.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Largest growth of the server's peak RSS a flood may cause.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// (VmRSS, VmHWM) of `pid`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server's address, its URL and the admin's key.
struct Target {
    addr: SocketAddr,
    url: String,
    key: (String, String),
    ca: Option<PathBuf>,
}

impl Target {
    fn of(server: &ServerProcess, ca: Option<PathBuf>) -> Target {
        let addr: SocketAddr = server.endpoint().trim_start_matches("http://").parse().expect("endpoint address");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let key = edgedeploy::server::auth::read_shared_credentials(&server.admin_credentials_file())
            .expect("admin credentials");
        Target { addr, url: format!("{scheme}://{addr}"), key, ca }
    }

    /// ListApplications signed with the admin's key on a new connection;
    /// returns how long the answer took.
    fn signed_call(&self) -> Result<Duration, String> {
        let endpoint = Endpoint {
            url: self.url.clone(),
            region: "us-east-1".into(),
            credentials: Credentials { access_key_id: self.key.0.clone(), secret_access_key: self.key.1.clone() },
        };
        let options =
            HttpOptions { ca_bundle: self.ca.clone(), timeout: Some(Duration::from_secs(10)), ..Default::default() };
        let client = Client::new(endpoint, &options)?;
        let started = Instant::now();
        client
            .call_raw("CodeDeploy_20141006", "codedeploy", "ListApplications", b"{}")
            .map_err(|e| format!("signed ListApplications: {e}"))?;
        Ok(started.elapsed())
    }
}

/// One flood at a time in this process: the figures are each flood's own,
/// and the sockets stay well under a 1024 open-files limit.
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the floods `start` spawns for [`FLOOD_TIME`] while making a signed
/// call every 250 ms; checks each answer's time and the server's memory,
/// and prints the figures.
fn under_flood(
    name: &str,
    server: &ServerProcess,
    target: &Target,
    start: impl FnOnce(Arc<AtomicBool>) -> Vec<JoinHandle<u64>>,
) {
    let _one = ONE_FLOOD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    target.signed_call().expect("a signed call before the flood");
    let (rss_before, hwm_before) = memory_kib(server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let floods = start(stop.clone());
    std::thread::sleep(Duration::from_millis(500)); // let the flood build up
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    let end = Instant::now() + FLOOD_TIME;
    let mut failure = None;
    while Instant::now() < end {
        match target.signed_call() {
            Ok(took) => slowest = slowest.max(took),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        calls += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Release);
    let units: u64 = floods.into_iter().map(|h| h.join().expect("a flood thread panicked")).sum();
    let (rss_after, hwm_after) = memory_kib(server.pid());
    println!(
        "{name}: {units} flood units (sockets opened, bytes dripped or pushed); {calls} signed calls, \
         slowest {slowest:?}; server VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm_before} -> {hwm_after} KiB"
    );
    if let Some(e) = failure {
        panic!("{name}: a signed call failed during the flood: {e}\nserver log:\n{}", tail(&server.log()));
    }
    assert!(calls >= 5, "{name}: only {calls} signed calls");
    assert!(slowest < ANSWER_WITHIN, "{name}: a signed call took {slowest:?} during the flood");
    assert!(
        hwm_after.saturating_sub(hwm_before) < MAX_GROWTH_KIB,
        "{name}: peak RSS grew from {hwm_before} to {hwm_after} KiB"
    );
    target.signed_call().expect("a signed call after the flood");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A connection of a flood: plain TCP or TLS.
type Stream = Box<dyn Write + Send>;

/// Connects to `target` (with TLS when it has a CA), or `None`.
fn connect(target: &Target) -> Option<Stream> {
    let tcp = TcpStream::connect_timeout(&target.addr, Duration::from_secs(2)).ok()?;
    tcp.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    match &target.ca {
        None => Some(Box::new(tcp)),
        Some(ca) => {
            let config = tls_client_config(ca);
            let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
            let conn = rustls::ClientConnection::new(config, name).ok()?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            // Complete the handshake now.
            stream.flush().ok()?;
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).ok()?;
            }
            Some(Box::new(stream))
        }
    }
}

fn tls_client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("reading the CA") {
        roots.add(cert.expect("a CA certificate")).expect("adding the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Keeps up to [`IDLE_SOCKETS`] connections open that send nothing (or
/// only a TCP handshake), opening new ones as fast as 400 a second; returns
/// the number opened.
fn idle_flood(addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut open = VecDeque::new();
        let mut opened = 0;
        while !stop.load(Ordering::Acquire) {
            if let Ok(socket) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                open.push_back(socket);
                opened += 1;
            }
            if open.len() > IDLE_SOCKETS {
                open.pop_front();
            }
            std::thread::sleep(Duration::from_micros(2500));
        }
        opened
    })
}

/// Connections that send the start of a request head, then one byte every
/// 100 ms, never ending it; reconnects those the server closes. Returns
/// the bytes dripped.
fn drip_flood(target: Arc<Target>, sockets: usize, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut conns: Vec<Option<Stream>> = (0..sockets).map(|_| None).collect();
        let mut dripped = 0;
        while !stop.load(Ordering::Acquire) {
            for slot in conns.iter_mut() {
                if slot.is_none() {
                    *slot = connect(&target).and_then(|mut s| {
                        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: CodeDeploy_20141006.ListApplications\r\nX-Drip: ").ok()?;
                        s.flush().ok()?;
                        Some(s)
                    });
                }
                if let Some(stream) = slot {
                    if stream.write_all(b"a").and_then(|()| stream.flush()).is_ok() {
                        dripped += 1;
                    } else {
                        *slot = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        dripped
    })
}

/// What a large-body flood sends.
#[derive(Clone, Copy)]
enum Body {
    /// `POST /` to the control API, unsigned.
    JsonUnsigned,
    /// `POST /` signed (headers) with the admin's key id and a wrong
    /// signature: the body is read before the signature can be checked.
    JsonWrongSignature,
    /// `PUT /bucket/key` to the bundle store, unsigned.
    S3Unsigned,
}

/// `threads` clients each sending requests that announce 64 MiB bodies
/// and pushing them as fast as the server takes them; returns the bytes
/// sent.
fn body_flood(target: Arc<Target>, threads: usize, body: Body, stop: Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..threads)
        .map(|_| {
            let target = target.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let chunk = vec![b'{'; 64 << 10];
                let mut sent = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let Some(mut stream) = connect(&target) else { continue };
                    if stream.write_all(request_head(&target, body).as_bytes()).is_err() {
                        continue;
                    }
                    while !stop.load(Ordering::Acquire) && stream.write_all(&chunk).is_ok() {
                        sent += chunk.len() as u64;
                    }
                }
                sent
            })
        })
        .collect()
}

fn request_head(target: &Target, body: Body) -> String {
    let length = 64u64 << 20;
    match body {
        Body::JsonUnsigned => format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             X-Amz-Target: CodeDeploy_20141006.ListApplications\r\nContent-Length: {length}\r\n\r\n",
            target.addr
        ),
        Body::JsonWrongSignature => {
            let now = edgedeploy::clock::now_epoch().0;
            let date = edgedeploy::clock::amz_date(now);
            format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 X-Amz-Target: CodeDeploy_20141006.ListApplications\r\nX-Amz-Date: {date}\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential={}/{}/us-east-1/codedeploy/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\nContent-Length: {length}\r\n\r\n",
                target.addr,
                target.key.0,
                &date[..8],
                "0".repeat(64)
            )
        }
        Body::S3Unsigned => {
            format!("PUT /bundles/flood.tar HTTP/1.1\r\nHost: {}\r\nContent-Length: {length}\r\n\r\n", target.addr)
        }
    }
}

fn plain_target(server: &ServerProcess) -> Arc<Target> {
    Arc::new(Target::of(server, None))
}

#[test]
fn idle_connections_beyond_the_cap_do_not_lock_out_signed_requests() {
    let server = ServerProcess::start_with(&["--max-connections", CAP]);
    let target = plain_target(&server);
    under_flood("http/1.1 idle sockets", &server, &target, |stop| vec![idle_flood(target.addr, stop)]);
}

#[test]
fn dripped_request_heads_do_not_lock_out_signed_requests() {
    let server = ServerProcess::start_with(&["--max-connections", CAP]);
    let target = plain_target(&server);
    under_flood("http/1.1 dripping heads", &server, &target, |stop| {
        vec![drip_flood(target.clone(), 150, stop.clone()), idle_flood(target.addr, stop)]
    });
}

#[test]
fn unauthenticated_large_bodies_are_not_read() {
    let server = ServerProcess::start_with(&["--max-connections", CAP]);
    let target = plain_target(&server);
    under_flood("http/1.1 large bodies", &server, &target, |stop| {
        let mut floods = body_flood(target.clone(), 8, Body::JsonUnsigned, stop.clone());
        floods.extend(body_flood(target.clone(), 8, Body::S3Unsigned, stop.clone()));
        floods.extend(body_flood(target.clone(), 8, Body::JsonWrongSignature, stop));
        floods
    });
}

#[test]
fn tls_handshakes_idle_sockets_and_large_bodies_do_not_lock_out_signed_requests() {
    let dir = std::env::temp_dir().join(format!("edgedeploy-abuse-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = server_common::make_tls_files(&dir);
    let server = ServerProcess::start_with(&[
        "--max-connections",
        CAP,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let target = Arc::new(Target::of(&server, Some(ca)));
    under_flood("tls idle + dripping + large bodies", &server, &target, |stop| {
        // Sockets that never start their handshake, handshakes completed
        // then dripped heads, and large bodies.
        let mut floods = vec![idle_flood(target.addr, stop.clone()), drip_flood(target.clone(), 60, stop.clone())];
        floods.extend(body_flood(target.clone(), 4, Body::JsonUnsigned, stop.clone()));
        floods.extend(body_flood(target.clone(), 4, Body::JsonWrongSignature, stop));
        floods
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTP/2 with prior knowledge on the plain port: idle connections after
/// the preface, and connections opening many streams that push large
/// unauthenticated bodies.
#[test]
fn http2_idle_connections_and_stream_floods_do_not_lock_out_signed_requests() {
    let server = ServerProcess::start_with(&["--max-connections", CAP]);
    let target = plain_target(&server);
    under_flood("h2c idle + streams with large bodies", &server, &target, |stop| {
        vec![h2_flood(target.clone(), 100, stop.clone()), idle_flood(target.addr, stop)]
    });
}

/// `conns` HTTP/2 connections: a third idle after the preface, the rest
/// opening streams (as many as the server allows) that send 64 MiB
/// unauthenticated bodies; returns the bytes sent.
fn h2_flood(target: Arc<Target>, conns: usize, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let sent = Arc::new(AtomicU64::new(0));
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for n in 0..conns {
                let (target, stop, sent) = (target.clone(), stop.clone(), sent.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        let _ = h2_connection(&target, n % 3 == 0, &stop, &sent).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
        sent.load(Ordering::Acquire)
    })
}

async fn h2_connection(target: &Target, idle: bool, stop: &AtomicBool, sent: &AtomicU64) -> Result<(), h2::Error> {
    let Ok(tcp) = tokio::net::TcpStream::connect(target.addr).await else { return Ok(()) };
    let (client, connection) = h2::client::handshake(tcp).await?;
    let driver = tokio::spawn(connection);
    let chunk = axum::body::Bytes::from(vec![b'{'; 16 << 10]);
    while !stop.load(Ordering::Acquire) && !driver.is_finished() {
        if idle {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut client = client.clone().ready().await?;
        let request = axum::http::Request::post(format!("http://{}/", target.addr))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "CodeDeploy_20141006.ListApplications")
            .header("content-length", (64u64 << 20).to_string())
            .body(())
            .expect("a request");
        let (_response, mut stream) = client.send_request(request, false)?;
        // Push data while the server grants window, until it resets the stream.
        for _ in 0..64 {
            stream.reserve_capacity(chunk.len());
            let capacity =
                tokio::time::timeout(Duration::from_millis(200), std::future::poll_fn(|cx| stream.poll_capacity(cx)))
                    .await;
            match capacity {
                Ok(Some(Ok(n))) if n > 0 => {
                    stream.send_data(chunk.slice(..n), false)?;
                    sent.fetch_add(n as u64, Ordering::AcqRel);
                }
                _ => break,
            }
        }
    }
    driver.abort();
    Ok(())
}

/// A connection that sends nothing is closed at the header timeout; one
/// that drips a request head is closed at the header timeout too, as is a
/// TLS connection that never completes its handshake; an idle keep-alive
/// connection is closed at the idle timeout.
#[test]
fn silent_dripping_and_idle_connections_are_closed_at_their_deadlines() {
    let server = ServerProcess::start_with(&["--header-timeout", "1", "--idle-timeout", "2"]);
    let target = plain_target(&server);
    let closed_within = |mut socket: TcpStream, drip: bool| -> Duration {
        let started = Instant::now();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            assert!(started.elapsed() < Duration::from_secs(10), "connection not closed after 10 s");
            if drip {
                let _ = socket.write_all(b"a");
            }
            match socket.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return started.elapsed(),
            }
        }
    };
    let silent = TcpStream::connect(target.addr).unwrap();
    let took = closed_within(silent, false);
    println!("silent connection closed after {took:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");

    let mut dripping = TcpStream::connect(target.addr).unwrap();
    dripping.write_all(b"GET /bundles/x HTTP/1.1\r\nHost: x\r\nX-Drip: ").unwrap();
    let took = closed_within(dripping, true);
    println!("dripping connection closed after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // After an answered request, the connection stays open for the idle timeout.
    let mut keep_alive = TcpStream::connect(target.addr).unwrap();
    keep_alive.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", target.addr).as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = keep_alive.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"), "{}", String::from_utf8_lossy(&buf[..n]));
    let took = closed_within(keep_alive, false);
    println!("idle keep-alive connection closed after {took:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn a_tls_handshake_that_never_completes_is_closed_at_the_header_timeout() {
    let dir = std::env::temp_dir().join(format!("edgedeploy-abuse-tls-deadline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_ca, cert, key) = server_common::make_tls_files(&dir);
    let server = ServerProcess::start_with(&[
        "--header-timeout",
        "1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let target = plain_target(&server);
    let mut socket = TcpStream::connect(target.addr).unwrap();
    // The first bytes of a ClientHello record, and nothing more.
    socket.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let outcome = socket.read(&mut buf);
    let took = started.elapsed();
    println!("half a TLS handshake closed after {took:?}: {outcome:?}");
    assert!(matches!(outcome, Ok(0) | Err(_)), "{outcome:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Other local users, and copies of the database.

/// Every entry under `dir` with its mode (permission bits), links aside.
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
        if !meta.file_type().is_symlink() {
            out.push((path, meta.permissions().mode() & 0o7777));
        }
    }
    out
}

/// Registers instance `name` on `server`'s data directory; returns its
/// agent configuration (YAML).
fn register(server: &ServerProcess, name: &str) -> serde_yaml::Value {
    let config = server.work_dir().join(format!("{name}.yml"));
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        name,
        "--agent-config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "register-instance: {}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap()
}

/// PollHostCommand signed with the key of the instance `config` describes.
fn poll_as_instance(server: &ServerProcess, config: &serde_yaml::Value) -> Result<serde_json::Value, String> {
    let field = |k: &str| config[k].as_str().unwrap_or_else(|| panic!("{k} in the agent config")).to_string();
    let endpoint = Endpoint {
        url: server.endpoint().to_string(),
        region: "us-east-1".into(),
        credentials: Credentials {
            access_key_id: field("aws_access_key_id"),
            secret_access_key: field("aws_secret_access_key"),
        },
    };
    let client = Client::new(endpoint, &HttpOptions { timeout: Some(Duration::from_secs(10)), ..Default::default() })?;
    let body = serde_json::json!({ "HostIdentifier": field("host_identifier") }).to_string();
    client
        .call_raw("CodeDeployCommandService_v20141006", "codedeploy-commands", "PollHostCommand", body.as_bytes())
        .map_err(|e| e.to_string())
}

/// Runs SQL on the server's SQLite database with python3's sqlite3; returns
/// the rows printed as JSON (one line per statement's result).
fn sqlite(server: &ServerProcess, statements: &[&str]) -> Vec<serde_json::Value> {
    let script = "import json, sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n\
                  for sql in json.loads(sys.argv[2]):\n    print(json.dumps(db.execute(sql).fetchall()))\ndb.commit()\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.data_dir().join("edgedeploy.db"))
        .arg(serde_json::to_string(statements).unwrap())
        .output()
        .expect("running python3");
    assert!(out.status.success(), "python3 sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every secret the server keeps: the admin's, the instance's, the trigger signing key.
fn secrets_of(server: &ServerProcess, instance: &serde_yaml::Value) -> Vec<String> {
    let admin = edgedeploy::server::auth::read_shared_credentials(&server.admin_credentials_file()).unwrap().1;
    let trigger = std::fs::read_to_string(server.data_dir().join("trigger-signing-key")).unwrap().trim().to_string();
    let instance = instance["aws_secret_access_key"].as_str().unwrap().to_string();
    vec![admin, instance, trigger]
}

#[test]
fn the_data_directory_is_private_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = ServerProcess::start_under(Some("022"), &[]);
    let probe = std::fs::metadata(server.work_dir().join("umask-probe")).unwrap().permissions().mode() & 0o777;
    assert_eq!(probe, 0o644, "the server was started under umask 022");
    register(&server, "dev1");
    server.boto3_ok(
        r#"
        s3 = client("s3")
        s3.put_object(Bucket="bundles", Key="app/v1.tar", Body=b"x" * 1000)
        emit(s3.head_object(Bucket="bundles", Key="app/v1.tar")["ContentLength"])
        "#,
    );
    let check = |server: &ServerProcess| {
        let modes = modes_under(server.data_dir());
        let names: Vec<String> =
            modes.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for wanted in ["edgedeploy.db", "edgedeploy.db-wal", "edgedeploy.db-shm", "secrets-key", "admin-credentials"] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        assert!(names.iter().any(|n| n == "trigger-signing-key"), "{names:?}");
        let loose: Vec<String> = modes
            .iter()
            .filter(|(p, mode)| *mode != if p.is_dir() { 0o700 } else { 0o600 })
            .map(|(p, mode)| format!("{} {mode:o}", p.display()))
            .collect();
        assert!(loose.is_empty(), "not private: {loose:#?}");
        println!("{} entries of the data directory, all 0700/0600", modes.len());
    };
    check(&server);
    // A data directory left readable by an older version is made private at start.
    server.kill();
    std::fs::set_permissions(server.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(server.data_dir().join("edgedeploy.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    server.restart_with_env(&[]);
    check(&server);
}

#[test]
fn a_copy_of_the_database_reveals_no_secret() {
    let server = ServerProcess::start();
    let instance = register(&server, "dev1");
    assert_eq!(poll_as_instance(&server, &instance).unwrap(), serde_json::json!({}), "the sealed instance key works");
    Target::of(&server, None).signed_call().expect("the sealed admin key works");
    let secrets = secrets_of(&server, &instance);
    let mut scanned = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("edgedeploy.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds a secret in plain text", path.display());
        }
    }
    assert!(scanned > 0, "no database file scanned");
    let rows = sqlite(&server, &["SELECT secret_access_key FROM credentials", "SELECT secret FROM server_secrets"]);
    for row in rows.iter().flat_map(|r| r.as_array().unwrap()) {
        assert!(row[0].as_str().unwrap().starts_with("enc1:"), "{row}");
    }
    println!(
        "{scanned} bytes of database scanned; {} secrets sealed",
        rows.iter().map(|r| r.as_array().unwrap().len()).sum::<usize>()
    );
}

#[test]
fn plain_text_secrets_of_an_older_version_are_sealed_at_start() {
    let mut server = ServerProcess::start();
    let instance = register(&server, "dev1");
    let secrets = secrets_of(&server, &instance);
    let key_id = instance["aws_access_key_id"].as_str().unwrap();
    server.kill();
    // As an older version stored them: in plain text.
    let admin_id = edgedeploy::server::auth::read_shared_credentials(&server.admin_credentials_file()).unwrap().0;
    sqlite(
        &server,
        &[
            &format!("UPDATE credentials SET secret_access_key = '{}' WHERE access_key_id = '{admin_id}'", secrets[0]),
            &format!("UPDATE credentials SET secret_access_key = '{}' WHERE access_key_id = '{key_id}'", secrets[1]),
            &format!("UPDATE server_secrets SET secret = '{}'", secrets[2]),
        ],
    );
    server.restart_with_env(&[]);
    Target::of(&server, None).signed_call().expect("the admin key sealed at start works");
    assert_eq!(poll_as_instance(&server, &instance).unwrap(), serde_json::json!({}));
    let rows = sqlite(&server, &["SELECT secret_access_key FROM credentials", "SELECT secret FROM server_secrets"]);
    for row in rows.iter().flat_map(|r| r.as_array().unwrap()) {
        assert!(row[0].as_str().unwrap().starts_with("enc1:"), "not sealed at start: {row}");
    }
    assert!(server.log().contains("sealed again with secrets key"), "{}", server.log());
}

/// A replica (or a restored backup) without the key the secrets are sealed
/// with does not start, and says which key it needs and where keys come from.
#[test]
fn a_server_without_the_secrets_key_stops_and_names_it() {
    let mut server = ServerProcess::start();
    register(&server, "dev1");
    server.kill();
    let other = edgedeploy::server::secrets::new_key_hex();
    let mut child = std::process::Command::new(server_common::EDGEDEPLOY)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .env(edgedeploy::server::secrets::KEY_ENV, &other)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with another secrets key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("which this server does not have") && stderr.contains("EDGEDEPLOY_SECRETS_KEY"),
        "{stderr}"
    );
}

#[test]
fn rotate_secrets_key_seals_every_secret_under_a_new_key() {
    let mut server = ServerProcess::start();
    let instance = register(&server, "dev1");
    let key_file = server.data_dir().join("secrets-key");
    let before = std::fs::read_to_string(&key_file).unwrap();
    let ids = |server: &ServerProcess| -> Vec<String> {
        let rows =
            sqlite(server, &["SELECT secret_access_key FROM credentials UNION ALL SELECT secret FROM server_secrets"]);
        let mut ids: Vec<String> = rows[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap().split(':').nth(1).unwrap().to_string())
            .collect();
        ids.dedup();
        ids
    };
    let old_ids = ids(&server);
    assert_eq!(old_ids.len(), 1, "{old_ids:?}");
    server.kill();
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let out = server.edgedeploy(&["rotate-secrets-key", "--data-dir", &data_dir]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sealed 2 secret access keys and 1 server secrets again"), "{text}");
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(after, before);
    assert_eq!(after.lines().count(), 1, "the old key is dropped: {after}");
    let new_ids = ids(&server);
    assert_eq!(new_ids.len(), 1, "{new_ids:?}");
    assert_ne!(new_ids, old_ids);
    server.restart_with_env(&[]);
    Target::of(&server, None).signed_call().expect("the admin key after rotation");
    assert_eq!(poll_as_instance(&server, &instance).unwrap(), serde_json::json!({}));
}

/// Authentication comes before the body: a request that is unsigned, or
/// signed with an unknown key, or without X-Amz-Target signed, is answered
/// while its announced 64 MiB body has not been sent at all, and the
/// connection is closed (the body is never read).
#[test]
fn unauthenticated_requests_are_answered_before_their_body_is_sent() {
    let server = ServerProcess::start();
    let target = Target::of(&server, None);
    let date = edgedeploy::clock::amz_date(edgedeploy::clock::now_epoch().0);
    let auth = |key_id: &str, signed: &str| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={key_id}/{}/us-east-1/codedeploy/aws4_request, \
             SignedHeaders={signed}, Signature={}\r\nX-Amz-Date: {date}\r\n",
            &date[..8],
            "0".repeat(64)
        )
    };
    let json = |extra: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: CodeDeploy_20141006.ListApplications\r\n{extra}\
             Content-Length: 67108864\r\n\r\n",
            target.addr
        )
    };
    for (case, head, status) in [
        ("unsigned JSON", json(""), "403"),
        ("unknown key", json(&auth("AKIANOSUCHKEY0000000", "host;x-amz-date;x-amz-target")), "403"),
        ("x-amz-target unsigned", json(&auth(&target.key.0, "host;x-amz-date")), "403"),
        ("unsigned S3 PUT", request_head(&target, Body::S3Unsigned), "403"),
    ] {
        let mut socket = TcpStream::connect(target.addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let started = Instant::now();
        let _ = socket.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        println!("{case}: answered in {:?} without the body", started.elapsed());
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{case}: {text}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{case}: {text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{case}: the server waited for the body");
    }
}
