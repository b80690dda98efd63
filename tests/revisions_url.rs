//! URL revisions (ours: `revisionType: URL`, `urlLocation {url, sha256,
//! bundleType}`): the agent downloads the bundle straight from an HTTP
//! server (here a small one on loopback with Range, If-Range, ETag and a
//! throttle), unsigned, resumably, and verifies its SHA-256. See
//! docs/revisions.md.

mod revisions_common;
mod server_common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgedeploy::client::CallError;
use revisions_common::{Agent, admin, call, call_ok, create_deployment, event, files_of, onboard, wait_for_end};
use serde_json::{Value, json};
use server_common::ServerProcess;
use sha2::{Digest, Sha256};

/// One request the HTTP server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    status: u16,
    /// Body bytes sent in answer.
    sent: Arc<AtomicU64>,
}

/// A static HTTP/1.1 server on loopback: serves `files` with an ETag,
/// honours `Range: bytes=N-` (with `If-Range`), sends bodies at `rate`
/// bytes per second, and records every request.
struct HttpServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    rate: Arc<AtomicU64>,
}

const ETAG: &str = "\"bundle-v1\"";

impl HttpServer {
    fn start(files: HashMap<String, Vec<u8>>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer { port, seen: Arc::default(), rate: Arc::new(AtomicU64::new(u64::MAX)) };
        let files = Arc::new(files);
        let (seen, rate) = (server.seen.clone(), server.rate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, seen, rate) = (files.clone(), seen.clone(), rate.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &files, &seen, &rate);
                });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    seen: &Mutex<Vec<Seen>>,
    rate: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let mut out = stream;
    let Some(body) = files.get(&path) else {
        seen.lock().unwrap().push(Seen { path, headers, status: 404, sent: Arc::default() });
        return out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found");
    };
    let range_start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| headers.get("if-range").is_none_or(|v| v == ETAG));
    let (status, start) = match range_start {
        Some(n) if n < body.len() => (206, n),
        _ => (200, 0),
    };
    let sent = Arc::new(AtomicU64::new(0));
    seen.lock().unwrap().push(Seen { path, headers, status, sent: sent.clone() });
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\netag: {ETAG}\r\naccept-ranges: bytes\r\ncontent-length: {}\r\nconnection: close\r\n",
        if status == 206 { "Partial Content" } else { "OK" },
        body.len() - start
    );
    if status == 206 {
        head.push_str(&format!("content-range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let started = Instant::now();
    let mut done = 0usize;
    for chunk in body[start..].chunks(16 * 1024) {
        out.write_all(chunk)?;
        done += chunk.len();
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        let rate = rate.load(Ordering::SeqCst);
        if rate != u64::MAX {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A bundle made with `tar` from `files` (path, content; `.sh` executable).
fn bundle(dir: &Path, files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let tree = dir.join("tree");
    for (rel, content) in files {
        let path = tree.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        if rel.ends_with(".sh") {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let out = dir.join(if gzip { "bundle.tgz" } else { "bundle.tar" });
    let flags = if gzip { "czf" } else { "cf" };
    let status = Command::new("tar").arg(flags).arg(&out).arg("-C").arg(&tree).arg(".").status().unwrap();
    assert!(status.success());
    fs::read(out).unwrap()
}

fn url_revision(url: &str, sha256: &str, bundle_type: &str) -> Value {
    json!({ "revisionType": "URL", "urlLocation": { "url": url, "sha256": sha256, "bundleType": bundle_type } })
}

fn appspec(dest: &Path, hooks: &str) -> String {
    format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n{hooks}", dest.display())
}

/// Random bytes (xorshift): incompressible.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[test]
fn a_url_revision_is_downloaded_unsigned_verified_and_installed() {
    let server = ServerProcess::start();
    let dir = server.work_dir().join("web");
    let (dest, env_file) = (dir.join("dest"), dir.join("env.txt"));
    let hook = format!("#!/bin/sh\nenv | grep '^BUNDLE_' | sort >> {}\n", env_file.display());
    let spec = appspec(&dest, "hooks:\n  AfterInstall:\n    - location: record.sh\n");
    let tgz = bundle(
        &dir,
        &[("appspec.yml", spec.as_bytes()), ("record.sh", hook.as_bytes()), ("app/site/index.html", b"<h1>hi</h1>\n")],
        true,
    );
    let sha = sha256_hex(&tgz);
    let web = HttpServer::start(HashMap::from([("/releases/app-1.tgz".to_string(), tgz)]));
    let client = admin(&server);
    let device = onboard(&server, &client, "url", "");
    let agent = Agent::start(&device);

    let url = web.url("/releases/app-1.tgz");
    // Given in upper case, kept in lower case.
    let revision = url_revision(&url, &sha.to_ascii_uppercase(), "tgz");
    let id = create_deployment(&client, &device, &revision).unwrap();
    let info = wait_for_end(&client, &id, Duration::from_secs(120));
    assert_eq!(info["status"], "Succeeded", "{info}\n{}", agent.logs());
    assert_eq!(info["revision"], url_revision(&url, &sha, "tgz"));
    assert_eq!(files_of(&dest), vec![("site/index.html".to_string(), "<h1>hi</h1>\n".to_string())]);
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(env.contains(&format!("BUNDLE_URL={url}")) && env.contains(&format!("BUNDLE_SHA256={sha}")), "{env}");
    let requests = web.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(!requests[0].headers.contains_key("authorization"), "the URL request was signed: {requests:?}");
    assert!(!requests[0].headers.contains_key("range"), "{requests:?}");

    // Registered by its use; bad URL revisions are refused with the field named.
    let got = call_ok(
        &client,
        "GetApplicationRevision",
        json!({ "applicationName": device.app, "revision": url_revision(&url, &sha, "tgz") }),
    );
    assert_eq!(got["revisionInfo"]["deploymentGroups"], json!([device.group]), "{got}");
    for (bad, field) in [
        (url_revision("ftp://127.0.0.1/a.tgz", &sha, "tgz"), "urlLocation.url"),
        (url_revision(&url, "0123", "tgz"), "urlLocation.sha256"),
        (url_revision(&url, &sha, "rar"), "bundleType"),
    ] {
        let input = json!({ "applicationName": device.app, "revision": bad });
        match call(&client, "RegisterApplicationRevision", input) {
            Err(CallError::Service { type_, message, .. }) => {
                assert_eq!(type_, "InvalidRevisionException");
                assert!(message.contains(field), "{message}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn a_url_download_resumes_with_range_after_the_agent_is_killed() {
    const SIZE: usize = 24 << 20;
    let server = ServerProcess::start();
    let dir = server.work_dir().join("web");
    let dest = dir.join("dest");
    let big = random_bytes(SIZE, 7);
    let spec = appspec(&dest, "");
    let tar = bundle(&dir, &[("appspec.yml", spec.as_bytes()), ("app/big.bin", &big)], false);
    let (total, sha) = (tar.len() as u64, sha256_hex(&tar));
    let web = HttpServer::start(HashMap::from([("/big.tar".to_string(), tar)]));
    web.rate.store(3 << 20, Ordering::SeqCst);
    let client = admin(&server);
    let device = onboard(&server, &client, "resume", "");
    let mut agent = Agent::start(&device);
    let id = create_deployment(&client, &device, &url_revision(&web.url("/big.tar"), &sha, "tar")).unwrap();

    let part = || {
        fs::read_dir(&device.root)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|g| g.path().join(&id).join("bundle.tar.part"))
            .find(|p| p.exists())
    };
    revisions_common::wait_until(Duration::from_secs(120), "6 MiB of the download", || {
        part().and_then(|p| fs::metadata(p).ok()).is_some_and(|m| m.len() >= 6 << 20)
    });
    agent.kill9();
    let killed_at = fs::metadata(part().unwrap()).unwrap().len();
    assert!(killed_at < total, "the download was complete when killed");
    web.rate.store(u64::MAX, Ordering::SeqCst);
    agent.restart();
    let info = wait_for_end(&client, &id, Duration::from_secs(180));
    assert_eq!(info["status"], "Succeeded", "{info}\n{}", agent.logs());
    assert_eq!(fs::read(dest.join("big.bin")).unwrap(), big);

    let requests = web.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let resumed = &requests[1];
    let offset: u64 = resumed.headers["range"]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("second request without a Range: {resumed:?}"));
    assert!(offset > 0 && offset <= killed_at, "resumed at {offset}, killed at {killed_at}");
    assert_eq!(resumed.headers.get("if-range").map(String::as_str), Some(ETAG));
    assert_eq!(resumed.status, 206);
    assert_eq!(resumed.path, "/big.tar");
    assert_eq!(resumed.sent.load(Ordering::SeqCst), total - offset, "the rest only was sent again");
    assert!(agent.log().contains(&format!("resumed at {offset} bytes of {total}")), "{}", agent.log());
}

#[test]
fn a_wrong_sha256_fails_download_bundle_with_both_digests_and_installs_nothing() {
    let server = ServerProcess::start();
    let dir = server.work_dir().join("web");
    let dest = dir.join("dest");
    let spec = appspec(&dest, "");
    let tgz = bundle(&dir, &[("appspec.yml", spec.as_bytes()), ("app/a.txt", b"a\n")], true);
    let actual = sha256_hex(&tgz);
    let wrong = sha256_hex(b"something else");
    let web = HttpServer::start(HashMap::from([("/a.tgz".to_string(), tgz)]));
    let client = admin(&server);
    let device = onboard(&server, &client, "badsha", "");
    let agent = Agent::start(&device);
    let url = web.url("/a.tgz");
    let id = create_deployment(&client, &device, &url_revision(&url, &wrong, "tgz")).unwrap();
    let info = wait_for_end(&client, &id, Duration::from_secs(120));
    assert_eq!(info["status"], "Failed", "{info}\n{}", agent.logs());
    let download = event(&client, &device, &id, "DownloadBundle");
    assert_eq!(download["status"], "Failed", "{download}");
    let message = download["diagnostics"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&url) && message.contains(&actual) && message.contains(&wrong), "{message}");
    assert_ne!(event(&client, &device, &id, "Install")["status"], "Succeeded");
    assert!(!dest.exists(), "something was installed");
    let leftovers: Vec<String> = fs::read_dir(&device.root)
        .unwrap()
        .flatten()
        .filter(|g| {
            let name = g.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.starts_with("deployment-")
        })
        .flat_map(|g| files_of(&g.path().join(&id)))
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("bundle") || p.starts_with("deployment-archive"))
        .collect();
    assert!(leftovers.is_empty(), "bundle files left: {leftovers:?}");
}

/// Runs a boto3 `script` (after server_common's PRELUDE) as the admin, with
/// `AWS_DATA_PATH` set to `models` when given.
fn boto3_with_models(server: &ServerProcess, script: &str, models: Option<&Path>) -> std::process::Output {
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(format!("{}\n{}", server_common::PRELUDE, server_common::dedent(script)))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DATA_PATH")
        .env("AWS_SHARED_CREDENTIALS_FILE", server.admin_credentials_file())
        .env("AWS_CONFIG_FILE", server.work_dir().join("no-aws-config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ENDPOINT", server.endpoint());
    if let Some(models) = models {
        command.env("AWS_DATA_PATH", models);
    }
    command.output().expect("running python3 with boto3")
}

#[test]
fn the_extended_model_of_the_docs_lets_boto3_send_url_revisions() {
    let server = ServerProcess::start();
    let client = admin(&server);
    call_ok(&client, "CreateApplication", json!({ "applicationName": "shop" }));
    let models = server.work_dir().join("models");
    let model_dir = models.join("codedeploy/2014-10-06");
    fs::create_dir_all(&model_dir).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/url-revision-model.py");
    let out = Command::new("python3").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(model_dir.join("service-2.json"), &out.stdout).unwrap();

    let sha = sha256_hex(b"bundle");
    let script = format!(
        r#"
        cd = client(parameter_validation=True)
        rev = dict(revisionType="URL", urlLocation=dict(url="https://cdn.example/shop-1.tgz", sha256="{sha}", bundleType="tgz"))
        cd.register_application_revision(applicationName="shop", revision=rev)
        emit(cd.get_application_revision(applicationName="shop", revision=rev)["revision"])
        "#
    );
    let stock = boto3_with_models(&server, &script, None);
    assert!(!stock.status.success());
    assert!(
        String::from_utf8_lossy(&stock.stderr).contains("urlLocation"),
        "{}",
        String::from_utf8_lossy(&stock.stderr)
    );
    let extended = boto3_with_models(&server, &script, Some(&models));
    let stdout = String::from_utf8_lossy(&extended.stdout);
    assert!(extended.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&extended.stderr));
    let revision: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(revision, url_revision("https://cdn.example/shop-1.tgz", &sha, "tgz"));
}

/// An HTTP proxy as ureq uses it: `CONNECT host:port` opens a tunnel (also
/// for plain http), absolute-form requests are forwarded; one upstream per
/// connection, requests forwarded in order (bodies by Content-Length),
/// answers piped back. It records every request line it sees, including
/// those inside a tunnel.
struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || proxy_connection(client, &log));
            }
        });
        Proxy { port, seen }
    }
}

/// One request head, through its blank line.
fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line.trim().is_empty() {
            return Some(head);
        }
    }
}

/// Connects to `authority` and pipes its answers back to `client`.
fn open_upstream(authority: &str, client: &TcpStream) -> Option<TcpStream> {
    let stream = TcpStream::connect(authority).ok()?;
    let (mut from, mut to) = (stream.try_clone().ok()?, client.try_clone().ok()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
    Some(stream)
}

fn proxy_connection(client: TcpStream, seen: &Mutex<Vec<String>>) {
    use std::io::Read;
    let Ok(reader) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    let mut upstream: Option<TcpStream> = None;
    while let Some(mut head) = read_head(&mut reader) {
        let line = head.lines().next().unwrap_or_default().to_string();
        seen.lock().unwrap().push(line.clone());
        if let Some(authority) = line.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()) {
            let Ok(mut answer) = client.try_clone() else { return };
            // The answer goes out before the upstream's bytes can.
            if answer.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
                return;
            }
            upstream = open_upstream(authority, &client);
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next()) else { return };
        if let Some(rest) = uri.strip_prefix("http://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if upstream.is_none() {
                upstream = open_upstream(authority, &client);
            }
            let path = if path.is_empty() { "/" } else { path };
            head = head.replacen(&line, &format!("{method} {path} {version}"), 1);
        }
        let Some(out) = upstream.as_mut() else { return };
        let length: u64 = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        match std::io::copy(&mut (&mut reader).take(length), out) {
            Ok(n) if n == length => {}
            _ => return,
        }
    }
}

#[test]
fn a_url_download_goes_through_proxy_uri() {
    let server = ServerProcess::start();
    let dir = server.work_dir().join("web");
    let dest = dir.join("dest");
    let spec = appspec(&dest, "");
    let tgz = bundle(&dir, &[("appspec.yml", spec.as_bytes()), ("app/p.txt", b"via proxy\n")], true);
    let sha = sha256_hex(&tgz);
    let web = HttpServer::start(HashMap::from([("/p.tgz".to_string(), tgz)]));
    let proxy = Proxy::start();
    let client = admin(&server);
    let device = onboard(&server, &client, "proxy", &format!("proxy_uri: http://127.0.0.1:{}\n", proxy.port));
    let agent = Agent::start(&device);
    let url = web.url("/p.tgz");
    let id = create_deployment(&client, &device, &url_revision(&url, &sha, "tgz")).unwrap();
    let info = wait_for_end(&client, &id, Duration::from_secs(120));
    assert_eq!(info["status"], "Succeeded", "{info}\n{}", agent.logs());
    assert_eq!(fs::read_to_string(dest.join("p.txt")).unwrap(), "via proxy\n");
    let seen = proxy.seen.lock().unwrap().clone();
    let through = seen.contains(&format!("GET {url} HTTP/1.1"))
        || (seen.contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", web.port))
            && seen.contains(&"GET /p.tgz HTTP/1.1".to_string()));
    assert!(through, "the bundle GET did not go through the proxy: {seen:#?}");
    assert_eq!(web.requests().len(), 1);
}
