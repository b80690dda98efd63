//! The network-fault suite: a hostile server, started by each test on
//! 127.0.0.1 (a plain `TcpListener`, one thread per connection), drives the
//! real `edgedeploy-agent run`. The server speaks the command API honestly
//! except where the case makes it hostile: garbage instead of HTTP, a
//! connection accepted and never answered, headers then silence, a drip,
//! resets, endless bodies, and lying Content-Length / Content-Range on the
//! bundle download.
//!
//! For every case: the agent is still running at the end, its peak RSS
//! (VmHWM) stays under [`MAX_HWM_KIB`] (printed), the number of requests
//! over a window shows the backoff, and nothing in the sandbox changed
//! outside root_dir and the agent's log (the agent runs with its current
//! directory, HOME and TMPDIR inside the sandbox). Deadlines are configured
//! short (1 s phases, 3 s calls) so the whole suite takes a minute or two.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");
/// Bound on the agent's peak resident set, in KiB.
const MAX_HWM_KIB: u64 = 48 * 1024;
const HOST: &str = "dev-net";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// The hostile server.

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    /// When the connection was accepted.
    at: Instant,
    /// `PollHostCommand`, ..., or `GET /b/k.tgz`; empty when not read.
    what: String,
    /// Request headers, lower-case names.
    headers: BTreeMap<String, String>,
    /// The body.
    body: Vec<u8>,
}

type Behaviour = dyn Fn(&Request, &mut TcpStream, &State) + Send + Sync;

/// What the server's threads share.
#[derive(Default)]
struct State {
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

/// Answers 200 with a chunked body of `fill` bytes that never ends, until
/// the test ends or the agent closes the connection.
fn serve_endless_chunks(stream: &mut TcpStream, server: &State, fill: u8) {
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = [fill; 65536];
    while !server.stopping() {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

impl State {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Holds the connection open, reading nothing more, until the test
    /// ends or the agent closes it.
    fn hold(&self, stream: &mut TcpStream) {
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut byte = [0u8; 1];
        while !self.stopping() {
            match stream.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

/// The server; dropping it stops its threads.
struct Server {
    port: u16,
    state: Arc<State>,
}

impl Server {
    /// Starts a server whose every request goes to `behaviour` once read.
    /// A request whose head cannot be read is recorded with an empty
    /// `what` and handed over too (the connection may carry no HTTP).
    fn start(behaviour: impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static) -> Server {
        Server::start_with(true, behaviour)
    }

    /// With `read` false, connections are handed over unread (`what` is
    /// empty): closing one then resets it.
    fn start_with(read: bool, behaviour: impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping() {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let at = Instant::now();
                let (behaviour, state) = (behaviour.clone(), shared.clone());
                thread::spawn(move || {
                    let request = if read {
                        read_request(&mut stream, at)
                    } else {
                        Request { at, what: String::new(), headers: BTreeMap::new(), body: Vec::new() }
                    };
                    state.requests.lock().unwrap().push(request.clone());
                    behaviour(&request, &mut stream, &state);
                });
            }
        });
        Server { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    fn count(&self, what: &str) -> usize {
        self.requests().iter().filter(|r| r.what == what).count()
    }

    fn times(&self, what: &str) -> Vec<Instant> {
        self.requests().iter().filter(|r| r.what == what).map(|r| r.at).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(stream: &mut TcpStream, at: Instant) -> Request {
    let mut request = Request { at, what: String::new(), headers: BTreeMap::new(), body: Vec::new() };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) if head.len() < 65536 => head.push(byte[0]),
            _ => return request,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request.headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = request.headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    if stream.read_exact(&mut body).is_err() {
        return request;
    }
    request.body = body;
    request.what = match request.headers.get("x-amz-target") {
        Some(target) => target.rsplit('.').next().unwrap_or_default().to_string(),
        None => first.split(' ').take(2).collect::<Vec<_>>().join(" "),
    };
    request
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn respond_json(stream: &mut TcpStream, value: &Value) {
    respond(stream, "200 OK", value.to_string().as_bytes());
}

/// A deployment specification of an S3 revision `b/k.tgz`.
fn spec(format: &str, deployment_id: &str, revision_type: &str) -> Value {
    let payload = json!({
        "DeploymentId": deployment_id,
        "DeploymentGroupId": "g-net",
        "DeploymentGroupName": "net",
        "ApplicationName": "app-net",
        "Revision": {"RevisionType": revision_type, "S3Revision": {"Bucket": "b", "Key": "k.tgz", "BundleType": "tgz"}}
    });
    json!({
        "DeploymentSystem": "CodeDeploy",
        "DeploymentSpecification": {"GenericEnvelope": {"Format": format, "Payload": payload.to_string()}}
    })
}

/// The command API, honestly: the first poll hands out `command` (when
/// given), later ones nothing; the specification is `spec`; completions
/// get `{}`. Anything else (the bundle GETs) goes to `store`.
fn honest_api(
    command: Option<Value>,
    spec: Value,
    store: impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static,
) -> impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static {
    let handed = AtomicBool::new(false);
    move |request, stream, server| match request.what.as_str() {
        "PollHostCommand" => match &command {
            Some(c) if !handed.swap(true, Ordering::SeqCst) => respond_json(stream, &json!({ "HostCommand": c })),
            _ => respond_json(stream, &json!({})),
        },
        "PutHostCommandAcknowledgement" => respond_json(stream, &json!({"CommandStatus": "InProgress"})),
        "GetDeploymentSpecification" => respond_json(stream, &spec),
        "PutHostCommandComplete" => respond_json(stream, &json!({})),
        _ => store(request, stream, server),
    }
}

fn command(id: &str, host: &str, name: &str) -> Value {
    json!({"HostCommandIdentifier": id, "HostIdentifier": host, "DeploymentExecutionId": "exec-1", "CommandName": name})
}

/// The completions the server received: (command id, status, diagnostics payload).
fn completions(server: &Server) -> Vec<(String, String, Value)> {
    server
        .requests()
        .iter()
        .filter(|r| r.what == "PutHostCommandComplete")
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let payload = body["Diagnostics"]["Payload"].as_str().unwrap_or("{}");
            (
                body["HostCommandIdentifier"].as_str().unwrap().to_string(),
                body["CommandStatus"].as_str().unwrap().to_string(),
                serde_json::from_str(payload).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The agent in its sandbox.

struct Sandbox {
    dir: PathBuf,
    child: Option<Child>,
}

impl Sandbox {
    /// A sandbox whose agent talks to `server` for both the command API and
    /// the bundle store, with short deadlines.
    fn start(name: &str, server: &Server, extra: &str) -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ednet-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["root", "cwd", "home", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let config = format!(
            "root_dir: {root}\nwait_between_runs: 1\nhost_identifier: {HOST}\naws_access_key_id: AK\n\
             aws_secret_access_key: secret\nregion: us-east-1\ndeploy_control_endpoint: {url}\n\
             s3_endpoint_override: {url}\nhttp_connect_timeout_seconds: 1\nhttp_response_timeout_seconds: 1\n\
             http_stall_timeout_seconds: 1\nhttp_call_timeout_seconds: 3\ndownload_timeout_seconds: 5\n\
             max_bundle_bytes: 1048576\n{extra}",
            root = dir.join("root").display(),
            url = server.url()
        );
        fs::write(dir.join("agent.yml"), config).unwrap();
        let mut sandbox = Sandbox { dir, child: None };
        let before = sandbox.outside_root();
        let log = fs::File::create(sandbox.dir.join("agent.log")).unwrap();
        let child = Command::new(AGENT)
            .arg("run")
            .arg("-c")
            .arg(sandbox.dir.join("agent.yml"))
            .current_dir(sandbox.dir.join("cwd"))
            .env("HOME", sandbox.dir.join("home"))
            .env("TMPDIR", sandbox.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        sandbox.child = Some(child);
        fs::write(sandbox.dir.join("before.txt"), before.join("\n")).unwrap();
        sandbox
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Every path of the sandbox outside root_dir and the agent's log, with
    /// its kind, size and mode.
    fn outside_root(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            use std::os::unix::fs::PermissionsExt;
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                let rel = path.strip_prefix(base).unwrap().to_string_lossy().to_string();
                if matches!(rel.as_str(), "root" | "agent.log" | "before.txt") {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                out.push(format!("{rel} {:?} {} {:o}", meta.file_type(), meta.len(), meta.permissions().mode()));
                if meta.is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out);
        out.sort();
        out
    }

    /// The checks every case ends with: alive, bounded memory, nothing
    /// written outside root_dir. Returns the peak RSS in KiB.
    fn check_invariants(&mut self, case: &str) -> u64 {
        let child = self.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "{case}: the agent died\n{}", self.log());
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status");
        println!("{case}: agent peak RSS (VmHWM) {hwm} KiB");
        assert!(hwm < MAX_HWM_KIB, "{case}: peak RSS {hwm} KiB, bound {MAX_HWM_KIB} KiB");
        let before = fs::read_to_string(self.dir.join("before.txt")).unwrap();
        assert_eq!(self.outside_root().join("\n"), before, "{case}: the agent wrote outside root_dir");
        hwm
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `window` has passed since the first request the server saw
/// (the server's clock: no sleep stands for an event) and returns the
/// number of connections accepted in it.
fn requests_in_window(server: &Server, window: Duration) -> usize {
    wait_until(Duration::from_secs(20), "the agent's first request", || !server.requests().is_empty());
    let first = server.requests()[0].at;
    wait_until(window + Duration::from_secs(5), "the end of the window", || first.elapsed() >= window);
    server.requests().iter().filter(|r| r.at.duration_since(first) < window).count()
}

/// A command API that fails every poll in the way `hostile` does: the
/// agent must stay alive and back off. Without backoff the agent would
/// retry every `wait_between_runs` (1 s) plus the failure's own deadline;
/// with it the waits are drawn from 1, 2, 4, 8, 16, 32, 60 s ceilings, so
/// `bound` requests in `window` is exceeded with a probability below 1e-4.
fn poll_case(
    case: &str,
    window: Duration,
    bound: usize,
    hostile: impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static,
) -> Sandbox {
    let server = Server::start(hostile);
    let mut sandbox = Sandbox::start(case, &server, "");
    let seen = requests_in_window(&server, window);
    println!("{case}: {seen} requests in {window:?} (bound {bound})");
    assert!(seen >= 2, "{case}: the agent did not retry: {seen} requests\n{}", sandbox.log());
    assert!(seen <= bound, "{case}: {seen} requests in {window:?}: no backoff\n{}", sandbox.log());
    sandbox.check_invariants(case);
    assert!(sandbox.log().contains("retrying with backoff"), "{case}: the failure was not logged\n{}", sandbox.log());
    sandbox
}

// ---------------------------------------------------------------------------
// The command API is hostile.

/// Failures that come at once: 15 s; an agent without backoff makes 15 requests.
const FAST_WINDOW: Duration = Duration::from_secs(15);
/// Failures that take a 1 s deadline each: 25 s; without backoff about 12.
const SLOW_WINDOW: Duration = Duration::from_secs(25);
const BOUND: usize = 9;

#[test]
fn garbage_instead_of_http_is_retried_with_backoff() {
    poll_case("garbage", FAST_WINDOW, BOUND, |_, stream, _| {
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let _ = stream.write_all(&garbage);
    });
}

#[test]
fn connection_reset_is_retried_with_backoff() {
    // The request is left unread in the receive buffer: closing sends a RST.
    let server = Server::start_with(false, |_, stream, _| {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.peek(&mut [0u8; 1]);
    });
    let mut sandbox = Sandbox::start("reset", &server, "");
    let seen = requests_in_window(&server, FAST_WINDOW);
    println!("reset: {seen} requests in {FAST_WINDOW:?} (bound {BOUND})");
    assert!((2..=BOUND).contains(&seen), "{seen} requests\n{}", sandbox.log());
    sandbox.check_invariants("reset");
    let log = sandbox.log();
    assert!(log.contains("reset") || log.contains("os error 104"), "not seen as a reset: {log}");
}

#[test]
fn accepted_and_never_answered_is_given_up_after_the_response_deadline() {
    let sandbox = poll_case("silent", SLOW_WINDOW, BOUND, |_, stream, server| server.hold(stream));
    // The first attempt ended after the 1 s response deadline, not the 3 s call deadline.
    let log = sandbox.log();
    assert!(log.contains("the service is unreachable"), "{log}");
}

#[test]
fn headers_then_silence_is_cut_by_the_stall_deadline() {
    poll_case("stall", SLOW_WINDOW, BOUND, |_, stream, server| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n");
        server.hold(stream);
    });
}

#[test]
fn a_drip_is_cut_by_the_call_deadline() {
    // A byte every 300 ms defeats the 1 s stall deadline; the 3 s call
    // deadline ends each attempt (at most 12 attempts in 25 s even without
    // backoff: this case shows the deadline, the others the backoff).
    poll_case("drip", SLOW_WINDOW, BOUND, |_, stream, server| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        while !server.stopping() {
            if stream.write_all(b" ").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    });
}

#[test]
fn an_endless_poll_answer_is_cut_and_memory_stays_bounded() {
    poll_case("endless", FAST_WINDOW, BOUND, |_, stream, server| {
        serve_endless_chunks(stream, server, b' ');
    });
}

#[test]
fn a_huge_content_length_poll_answer_is_cut_and_memory_stays_bounded() {
    poll_case("huge", FAST_WINDOW, BOUND, |_, stream, server| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n[");
        let chunk = [b'['; 65536];
        while !server.stopping() && stream.write_all(&chunk).is_ok() {}
    });
}

// ---------------------------------------------------------------------------
// The bundle store is hostile: DownloadBundle must fail after a bounded
// number of attempts, with backoff, and report it.

/// Runs DownloadBundle against a store that behaves as `store`; returns
/// the sandbox, the server and the diagnostic payload of the completion.
fn download_case(
    case: &str,
    store: impl Fn(&Request, &mut TcpStream, &State) + Send + Sync + 'static,
) -> (Sandbox, Server, Value) {
    let cmd = command("hc-dl", HOST, "DownloadBundle");
    let server = Server::start(honest_api(Some(cmd), spec("TEXT/JSON", "d-NET1", "S3"), store));
    let mut sandbox = Sandbox::start(case, &server, "");
    let started = Instant::now();
    wait_until(Duration::from_secs(90), "the completion of DownloadBundle", || !completions(&server).is_empty());
    let took = started.elapsed();
    let (id, status, payload) = completions(&server).remove(0);
    assert_eq!((id.as_str(), status.as_str()), ("hc-dl", "Failed"), "{payload}\n{}", sandbox.log());
    let gets = server.count("GET /b/k.tgz");
    println!("{case}: DownloadBundle failed after {gets} requests in {took:.1?}: {}", payload["message"]);
    // MAX_STALLED_ATTEMPTS (4) retries without net progress after the last
    // attempt that made some (at most one here: the lying range's first).
    assert!((1..=6).contains(&gets), "{case}: {gets} GETs\n{}", sandbox.log());
    let times = server.times("GET /b/k.tgz");
    for pair in times.windows(2) {
        // Each retry comes within the deadlines plus the longest wait (16 s).
        assert!(pair[1].duration_since(pair[0]) < Duration::from_secs(25), "{case}: {times:?}");
    }
    // The agent polls again after the failure: the loop goes on.
    let completes = server.requests().iter().position(|r| r.what == "PutHostCommandComplete").unwrap();
    wait_until(Duration::from_secs(10), "a poll after the completion", || {
        server.requests()[completes..].iter().any(|r| r.what == "PollHostCommand")
    });
    sandbox.check_invariants(case);
    (sandbox, server, payload)
}

#[test]
fn a_store_that_accepts_and_never_answers_fails_the_download_within_bounds() {
    let (_sandbox, server, payload) = download_case("store-silent", |_, stream, server| server.hold(stream));
    let message = payload["message"].as_str().unwrap();
    assert!(message.contains("did not complete") && message.contains("attempts in a row"), "{message}");
    // The first retry came within about a minute (here: 1 s deadline + 2 s wait).
    let gets = server.times("GET /b/k.tgz");
    assert!(gets[1].duration_since(gets[0]) < Duration::from_secs(10), "{gets:?}");
}

#[test]
fn a_store_that_sends_headers_then_stalls_fails_the_download_within_bounds() {
    let (_sandbox, _server, payload) = download_case("store-stall", |_, stream, server| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 1000000\r\n\r\n");
        server.hold(stream);
    });
    assert!(payload["message"].as_str().unwrap().contains("did not complete"), "{payload}");
}

#[test]
fn a_dripping_store_is_cut_as_too_slow() {
    let (sandbox, _server, payload) = download_case("store-drip", |_, stream, server| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 1000000\r\n\r\n");
        while !server.stopping() && stream.write_all(b"x").is_ok() {
            thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(payload["message"].as_str().unwrap().contains("did not complete"), "{payload}");
    assert!(sandbox.log().contains("the transfer is too slow"), "{}", sandbox.log());
}

#[test]
fn a_store_whose_content_length_lies_fails_the_download_within_bounds() {
    let (sandbox, _server, payload) = download_case("store-short", |_, stream, _| {
        // Announces a megabyte, sends a kilobyte, closes: every attempt.
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 1000000\r\n\r\n");
        let _ = stream.write_all(&[b'x'; 1024]);
    });
    assert!(payload["message"].as_str().unwrap().contains("did not complete"), "{payload}");
    assert!(sandbox.log().contains("resuming in"), "{}", sandbox.log());
}

#[test]
fn a_store_whose_content_range_lies_fails_the_download_within_bounds() {
    let (sandbox, server, payload) = download_case("store-range", |request, stream, _| {
        if request.headers.contains_key("range") {
            // Asked for bytes=N-: answers a range that starts elsewhere.
            let _ = stream.write_all(
                b"HTTP/1.1 206 Partial Content\r\nETag: \"e1\"\r\nContent-Range: bytes 0-99/100000\r\nContent-Length: 100\r\n\r\n",
            );
            let _ = stream.write_all(&[b'y'; 100]);
        } else {
            // 70 KiB of 100 KB, then the connection drops.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 100000\r\n\r\n");
            let _ = stream.write_all(&[b'x'; 70_000]);
        }
    });
    assert!(payload["message"].as_str().unwrap().contains("did not complete"), "{payload}");
    assert!(sandbox.log().contains("did not honour the range"), "{}", sandbox.log());
    assert!(server.requests().iter().any(|r| r.headers.get("range").is_some_and(|v| v == "bytes=70000-")));
}

#[test]
fn an_endless_bundle_is_refused_at_max_bundle_bytes_and_its_part_removed() {
    let (sandbox, server, payload) = download_case("store-endless", |_, stream, server| {
        serve_endless_chunks(stream, server, b'z');
    });
    assert!(payload["message"].as_str().unwrap().contains("max_bundle_bytes allows 1048576"), "{payload}");
    assert_eq!(server.count("GET /b/k.tgz"), 1, "too large is final");
    let part = sandbox.dir.join("root/g-net/d-NET1/bundle.tar.part");
    assert!(!part.exists(), "the partial bundle was left behind");
}

#[test]
fn a_bundle_larger_than_announced_is_never_kept() {
    let (sandbox, _server, payload) = download_case("store-long", |_, stream, _| {
        // Content-Range announces 10 bytes in all; the chunked body goes on.
        let _ = stream.write_all(
            b"HTTP/1.1 206 Partial Content\r\nETag: \"e1\"\r\nContent-Range: bytes 0-9/10\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let _ = stream.write_all(b"10000\r\n");
        let _ = stream.write_all(&[b'w'; 0x10000]);
        let _ = stream.write_all(b"\r\n0\r\n\r\n");
    });
    assert!(payload["message"].as_str().unwrap().contains("did not complete"), "{payload}");
    assert!(sandbox.log().contains("longer than the 10 bytes announced"), "{}", sandbox.log());
}

// ---------------------------------------------------------------------------
// Refusals: each one logged once, with the reason; nothing a server sends
// can forge a log line.

/// Runs the agent until the completion of `cmd`; returns the sandbox, the
/// server and the completion.
fn refusal_case(case: &str, cmd: Value, spec: Value) -> (Sandbox, Server, (String, String, Value)) {
    let server = Server::start(honest_api(Some(cmd), spec, |_, stream, _| respond(stream, "404 Not Found", b"")));
    let mut sandbox = Sandbox::start(case, &server, "");
    wait_until(Duration::from_secs(30), "the completion", || !completions(&server).is_empty());
    let completion = completions(&server).remove(0);
    assert_eq!(completion.1, "Failed", "{completion:?}");
    sandbox.check_invariants(case);
    (sandbox, server, completion)
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_command_for_another_host_is_refused_reported_and_never_executed() {
    let cmd = command("hc-other", "dev-someone-else", "BeforeInstall");
    let (sandbox, server, (id, _, payload)) = refusal_case("other-host", cmd, spec("TEXT/JSON", "d-NET2", "S3"));
    assert_eq!(id, "hc-other");
    let message = payload["message"].as_str().unwrap();
    assert!(message.contains("addressed to host dev-someone-else, this agent is dev-net"), "{message}");
    assert_eq!(server.count("PutHostCommandAcknowledgement"), 0, "a refused command is not acknowledged");
    assert_eq!(server.count("GetDeploymentSpecification"), 0, "a refused command is not executed");
    let log = sandbox.log();
    assert_eq!(lines_with(&log, "refused command hc-other").len(), 1, "{log}");
    assert!(!sandbox.dir.join("root/g-net").exists(), "nothing was done for it");
}

#[test]
fn an_unknown_event_is_refused_with_one_log_line() {
    let cmd = command("hc-unknown", HOST, "FrobnicateBundle");
    let (sandbox, server, (_, _, payload)) = refusal_case("unknown-event", cmd, spec("TEXT/JSON", "d-NET3", "S3"));
    assert!(payload["message"].as_str().unwrap().contains("unknown lifecycle event FrobnicateBundle"), "{payload}");
    assert_eq!(server.count("GetDeploymentSpecification"), 0);
    let log = sandbox.log();
    let lines = lines_with(&log, "refused command hc-unknown");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("unknown lifecycle event FrobnicateBundle"), "{log}");
}

#[test]
fn an_unknown_envelope_is_refused_with_one_log_line() {
    let cmd = command("hc-env", HOST, "DownloadBundle");
    let (sandbox, _, (_, _, payload)) = refusal_case("unknown-envelope", cmd, spec("XML/SOAP", "d-NET4", "S3"));
    assert!(payload["message"].as_str().unwrap().contains("unknown envelope"), "{payload}");
    let log = sandbox.log();
    let lines = lines_with(&log, "refused the specification of DownloadBundle (command hc-env)");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("\"XML/SOAP\"") || lines[0].contains("XML/SOAP"), "{log}");
}

#[test]
fn a_bad_deployment_id_is_refused_with_one_log_line() {
    let cmd = command("hc-badid", HOST, "DownloadBundle");
    let (sandbox, _, _) = refusal_case("bad-id", cmd, spec("TEXT/JSON", "../../escape", "S3"));
    let log = sandbox.log();
    let lines = lines_with(&log, "refused the specification of DownloadBundle (command hc-badid)");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("DeploymentId"), "{log}");
    assert!(!sandbox.dir.join("escape").exists());
}

#[test]
fn an_unusable_revision_is_refused_with_one_log_line() {
    let cmd = command("hc-rev", HOST, "DownloadBundle");
    let (sandbox, server, _) = refusal_case("bad-revision", cmd, spec("TEXT/JSON", "d-NET5", "FTP"));
    let log = sandbox.log();
    let lines = lines_with(&log, "unusable revision");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("RevisionType \"FTP\" is not supported"), "{log}");
    assert_eq!(server.count("GET /b/k.tgz"), 0);
}

#[test]
fn no_server_string_can_forge_a_log_line() {
    let forged = "2030-01-01T00:00:00Z info: DownloadBundle of deployment d-FORGED: succeeded";
    let name = format!("Bogus\n{forged}\r\n\u{1b}[2K{}", "x".repeat(100_000));
    let cmd = command("hc-forge", HOST, &name);
    let (sandbox, _, (_, _, payload)) = refusal_case("forge", cmd, spec("TEXT/JSON", "d-NET6", "S3"));
    let log = sandbox.log();
    for line in log.lines() {
        assert!(!line.starts_with("2030-"), "a forged line: {line:?}");
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "a control character: {line:?}");
        assert!(line.len() < 4096, "a line of {} bytes", line.len());
    }
    let lines = lines_with(&log, "refused command hc-forge");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("Bogus\\n2030-01-01") && lines[0].contains("more bytes]"), "{}", lines[0]);
    assert!(payload["message"].as_str().unwrap().len() < 1024, "the report is capped too");
}

// ---------------------------------------------------------------------------
// PutHostCommandComplete answered 2xx without JSON: delivered once, and
// the poll loop goes on.

/// Runs a refused command whose PutHostCommandComplete is answered by
/// `complete`; checks it is sent once and the loop polls on.
fn acknowledgement_case(case: &str, complete: impl Fn(&mut TcpStream, &State) + Send + Sync + 'static) -> Sandbox {
    let cmd = command("hc-ack", HOST, "FrobnicateBundle");
    let handed = AtomicBool::new(false);
    let server = Server::start(move |request, stream, state| match request.what.as_str() {
        "PollHostCommand" if !handed.swap(true, Ordering::SeqCst) => {
            respond_json(stream, &json!({ "HostCommand": cmd.clone() }))
        }
        "PollHostCommand" => respond_json(stream, &json!({})),
        "PutHostCommandComplete" => complete(stream, state),
        _ => respond(stream, "404 Not Found", b""),
    });
    let mut sandbox = Sandbox::start(case, &server, "");
    wait_until(Duration::from_secs(30), "the completion", || server.count("PutHostCommandComplete") == 1);
    let complete_at = server.requests().iter().position(|r| r.what == "PutHostCommandComplete").unwrap();
    // Two polls after the completion: the loop went on; no resend in between.
    wait_until(Duration::from_secs(20), "two polls after the completion", || {
        server.requests()[complete_at..].iter().filter(|r| r.what == "PollHostCommand").count() >= 2
    });
    assert_eq!(server.count("PutHostCommandComplete"), 1, "{case}: the completion was sent again");
    let log = sandbox.log();
    let lines = lines_with(&log, "without a JSON body");
    assert_eq!(lines.len(), 1, "{case}: {log}");
    assert!(lines[0].contains("counted as delivered"), "{log}");
    let outbox = sandbox.dir.join("root/.edgedeploy/outbox");
    assert_eq!(fs::read_dir(&outbox).unwrap().count(), 0, "{case}: the outbox is not empty");
    let ledger = fs::read_to_string(sandbox.dir.join("root/.edgedeploy/completed.json")).unwrap();
    assert!(ledger.contains("hc-ack"), "{case}: not in the ledger: {ledger}");
    sandbox.check_invariants(case);
    sandbox
}

#[test]
fn a_completion_acknowledged_without_json_is_delivered_once() {
    acknowledgement_case("ack-html", |stream, _| respond(stream, "200 OK", b"<html>\n<body>OK</body>\n</html>"));
}

#[test]
fn a_completion_acknowledged_with_a_body_that_never_ends_is_delivered_once() {
    // 200 and its headers, then silence: the status is the acknowledgement;
    // the stall deadline ends the body, the loop goes on.
    acknowledgement_case("ack-stall", |stream, state| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{");
        state.hold(stream);
    });
}

#[test]
fn a_server_repeating_one_command_is_not_polled_in_a_tight_loop() {
    // Every poll hands out the same command, for another host: refused and
    // reported once, then polled at wait_between_runs (1 s), not at once.
    let cmd = command("hc-again", "dev-someone-else", "Install");
    let server = Server::start(move |request, stream, _| match request.what.as_str() {
        "PollHostCommand" => respond_json(stream, &json!({ "HostCommand": cmd.clone() })),
        "PutHostCommandComplete" => respond_json(stream, &json!({})),
        _ => respond(stream, "404 Not Found", b""),
    });
    let mut sandbox = Sandbox::start("repeat", &server, "");
    wait_until(Duration::from_secs(30), "the completion", || server.count("PutHostCommandComplete") == 1);
    let first = server.times("PutHostCommandComplete")[0];
    let window = Duration::from_secs(8);
    wait_until(window + Duration::from_secs(5), "the end of the window", || first.elapsed() >= window);
    let polls =
        server.times("PollHostCommand").iter().filter(|t| **t > first && t.duration_since(first) < window).count();
    println!("repeat: {polls} polls in {window:?} after the refusal");
    // At most one poll per wait_between_runs (1 s), plus the immediate ones after deliveries.
    assert!((2..=12).contains(&polls), "{polls} polls in {window:?}\n{}", sandbox.log());
    assert_eq!(server.count("PutHostCommandAcknowledgement"), 0);
    assert_eq!(server.count("GetDeploymentSpecification"), 0);
    let log = sandbox.log();
    assert!(lines_with(&log, "refused command hc-again").len() >= 2, "{log}");
    assert_eq!(lines_with(&log, "not executed, reported Failed").len(), 1, "{log}");
    sandbox.check_invariants("repeat");
}

#[test]
fn a_completion_the_service_keeps_failing_never_stalls_the_loop() {
    // PutHostCommandComplete of hc-1 always gets a 500; the agent keeps it,
    // retries it with backoff, and still polls, executes (here: refuses)
    // and reports the next command.
    let polls = AtomicUsize::new(0);
    let server = Server::start(move |request, stream, _| match request.what.as_str() {
        "PollHostCommand" => match polls.fetch_add(1, Ordering::SeqCst) {
            0 => respond_json(stream, &json!({ "HostCommand": command("hc-1", HOST, "FrobnicateBundle") })),
            1 => respond_json(stream, &json!({ "HostCommand": command("hc-2", HOST, "FrobnicateBundle") })),
            _ => respond_json(stream, &json!({})),
        },
        "PutHostCommandComplete" if String::from_utf8_lossy(&request.body).contains("\"hc-1\"") => {
            respond(stream, "500 Internal Server Error", br#"{"__type":"InternalFailure","message":"boom"}"#)
        }
        "PutHostCommandComplete" => respond_json(stream, &json!({})),
        _ => respond(stream, "404 Not Found", b""),
    });
    let mut sandbox = Sandbox::start("poison", &server, "");
    wait_until(Duration::from_secs(30), "the completion of hc-2", || {
        completions(&server).iter().any(|(id, _, _)| id == "hc-2")
    });
    let first = server.times("PutHostCommandComplete")[0];
    let window = Duration::from_secs(15);
    wait_until(window + Duration::from_secs(5), "the end of the window", || first.elapsed() >= window);
    let tries = completions(&server).iter().filter(|(id, _, _)| id == "hc-1").count();
    let delivered = completions(&server).iter().filter(|(id, _, _)| id == "hc-2").count();
    println!("poison: hc-1 sent {tries} times in {window:?}; hc-2 delivered {delivered} time(s)");
    assert_eq!(delivered, 1, "{}", sandbox.log());
    // Three tries come at once (the passes that refuse hc-2 and deliver it),
    // then the backoff: 1, 2, 4, 8 s ceilings. Without it: about 17.
    assert!((2..=12).contains(&tries), "hc-1 sent {tries} times: no backoff\n{}", sandbox.log());
    let outbox: Vec<_> = fs::read_dir(sandbox.dir.join("root/.edgedeploy/outbox")).unwrap().collect();
    assert_eq!(outbox.len(), 1, "hc-1 is still in the outbox");
    assert!(sandbox.log().contains("InternalFailure (HTTP 500): boom"), "{}", sandbox.log());
    sandbox.check_invariants("poison");
}
