//! Shared helpers for tests against a real `edgedeploy server` process: it
//! listens on a free loopback port with a fresh data directory, and is
//! killed when the [`ServerProcess`] is dropped. Clients are real boto3
//! scripts run by `python3` (CI installs boto3) and the `edgedeploy` binary.
//!
//! ```ignore
//! mod server_common;
//! let server = server_common::ServerProcess::start();
//! let out = server.boto3_ok("print(client().list_applications()['applications'])");
//! ```
#![allow(dead_code)] // Each test file uses a different subset.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `edgedeploy` binary under test.
pub const EDGEDEPLOY: &str = env!("CARGO_BIN_EXE_edgedeploy");
/// How long a server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Python run before every boto3 script. It defines:
/// - `ENDPOINT`: the server's URL;
/// - `client(service="codedeploy", key=None, **config)`: a boto3 client
///   for the server, region us-east-1, no retries, botocore's own parameter
///   validation off (so that the server's validation is what is tested),
///   signing with `key` = `(id, secret)` when given, else with the
///   credentials file; `config` overrides botocore Config settings;
/// - `error_of(call, **params)`: `[code, http_status, message]` of the
///   ClientError the call raises (AssertionError if it succeeds);
/// - `emit(value)`: prints `value` as one JSON line (datetimes as strings).
pub const PRELUDE: &str = r#"
import json, os, sys
import boto3, botocore, botocore.config, botocore.exceptions
ENDPOINT = os.environ["ENDPOINT"]
def client(service="codedeploy", key=None, **config):
    settings = dict(retries={"total_max_attempts": 1}, parameter_validation=False)
    settings.update(config)
    keys = dict(aws_access_key_id=key[0], aws_secret_access_key=key[1]) if key else {}
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        config=botocore.config.Config(**settings), **keys)
def error_of(call, **params):
    try:
        result = call(**params)
    except botocore.exceptions.ClientError as e:
        return [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                e.response["Error"].get("Message", "")]
    raise AssertionError(f"{call.__name__}({params}) succeeded: {result}")
def emit(value):
    print(json.dumps(value, default=str))
"#;

/// A running `edgedeploy server` with its own data directory.
pub struct ServerProcess {
    child: Child,
    work_dir: PathBuf,
    data_dir: PathBuf,
    endpoint: String,
    addr: SocketAddr,
    extra: Vec<String>,
    umask: Option<String>,
}

impl ServerProcess {
    /// Starts a server with default settings; panics if it does not come up.
    pub fn start() -> ServerProcess {
        Self::start_with(&[])
    }

    /// Starts a server with `extra` arguments after `server --data-dir D --listen A`.
    pub fn start_with(extra: &[&str]) -> ServerProcess {
        Self::start_under(None, extra)
    }

    /// Starts a server as [`Self::start_with`] does, through `sh -c` with
    /// `umask MASK` (e.g. `022`) when `umask` is given; the shell also makes
    /// the file `WORK/umask-probe` under that mask, for comparison.
    pub fn start_under(umask: Option<&str>, extra: &[&str]) -> ServerProcess {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let work_dir = std::env::temp_dir().join(format!("edgedeploy-server-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&work_dir);
        fs::create_dir_all(&work_dir).expect("creating the test directory");
        let data_dir = work_dir.join("data");
        let mut last_error = String::new();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..3 {
            let addr = match free_port() {
                Ok(addr) => addr,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            match Self::spawn(&work_dir, &data_dir, addr, &extra, umask) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("edgedeploy server did not start: {last_error}");
    }

    fn spawn(
        work_dir: &Path,
        data_dir: &Path,
        addr: SocketAddr,
        extra: &[String],
        umask: Option<&str>,
    ) -> Result<ServerProcess, String> {
        let child = Self::spawn_child(work_dir, data_dir, addr, extra, umask, &[])?;
        let mut server = ServerProcess {
            child,
            work_dir: work_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            endpoint: format!("http://{addr}"),
            addr,
            extra: extra.to_vec(),
            umask: umask.map(str::to_string),
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn spawn_child(
        work_dir: &Path,
        data_dir: &Path,
        addr: SocketAddr,
        extra: &[String],
        umask: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Child, String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir.join("server.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = match umask {
            None => Command::new(EDGEDEPLOY),
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask} && : > \"$0/umask-probe\" && exec \"$@\""))
                    .arg(work_dir)
                    .arg(EDGEDEPLOY);
                sh
            }
        };
        command.arg("server").arg("--data-dir").arg(data_dir).arg("--listen").arg(addr.to_string()).args(extra);
        command.envs(env.iter().copied());
        command.stdin(Stdio::null()).stdout(log).stderr(log2).spawn().map_err(|e| e.to_string())
    }

    /// Kills the server and starts it again on the same data directory and
    /// address, with `env` added to its environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            self.child =
                Self::spawn_child(&self.work_dir, &self.data_dir, self.addr, &self.extra, self.umask.as_deref(), env)
                    .expect("restarting the server");
            match self.wait_listening() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("the server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let server = self;
        let addr = server.addr;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("it exited with {status}: {}", server.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening on {addr} after {START_DEADLINE:?}: {}", server.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A scratch directory of this test, next to the data directory.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// `DATA_DIR/admin-credentials`, the admin's key in AWS shared-credentials format.
    pub fn admin_credentials_file(&self) -> PathBuf {
        self.data_dir.join("admin-credentials")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.work_dir.join("server.log")).unwrap_or_default()
    }

    /// Runs a boto3 `script` (after [`PRELUDE`]; common indentation removed)
    /// with the admin's credentials.
    pub fn boto3(&self, script: &str) -> Output {
        self.boto3_as(script, &self.admin_credentials_file())
    }

    /// Runs a boto3 `script` with the `[default]` key of `credentials_file`.
    pub fn boto3_as(&self, script: &str, credentials_file: &Path) -> Output {
        Command::new("python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{}", dedent(script)))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env("AWS_SHARED_CREDENTIALS_FILE", credentials_file)
            .env("AWS_CONFIG_FILE", self.work_dir.join("no-aws-config"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ENDPOINT", &self.endpoint)
            .output()
            .expect("running python3 (is it installed, with boto3?)")
    }

    /// Runs a boto3 `script` as admin, panics unless it succeeds, and
    /// returns the JSON of its last output line (see `emit` in [`PRELUDE`]).
    pub fn boto3_ok(&self, script: &str) -> Value {
        json_output(self.boto3(script), &self.log())
    }

    /// [`Self::boto3_ok`] with the `[default]` key of `credentials_file`.
    pub fn boto3_ok_as(&self, script: &str, credentials_file: &Path) -> Value {
        json_output(self.boto3_as(script, credentials_file), &self.log())
    }

    /// Runs `edgedeploy ARGS`.
    pub fn edgedeploy(&self, args: &[&str]) -> Output {
        Command::new(EDGEDEPLOY).args(args).stdin(Stdio::null()).output().expect("running edgedeploy")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("server log ({}):\n{}", self.work_dir.display(), self.log());
        } else {
            let _ = fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// A loopback address nobody listens on right now.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// The JSON of the last stdout line of a successful run.
fn json_output(out: Output, server_log: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "boto3 script failed ({}):\n{stderr}\nstdout:\n{stdout}\nserver log:\n{server_log}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("script output {last:?} is not JSON: {e}\nstderr:\n{stderr}"))
}

/// The `edgedeploy-agent` binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

/// Starts `edgedeploy-agent run` on `config` (an instance config written by
/// `register-instance`), after adding a deployment root under `dir` and a
/// 1 s poll interval to it; output goes to `dir/agent.log`, and the hooks
/// see `FLEET_HOME=dir`.
pub fn start_agent(config: &Path, dir: &Path) -> Child {
    let mut text = fs::read_to_string(config).expect("reading the instance's agent config");
    text.push_str(&format!("root_dir: {}\nwait_between_runs: 1\n", dir.join("root").display()));
    fs::write(config, text).expect("writing the instance's agent config");
    let log = fs::File::create(dir.join("agent.log")).expect("creating agent.log");
    Command::new(AGENT)
        .arg("run")
        .arg("-c")
        .arg(config)
        .env("FLEET_HOME", dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the agent.log handle"))
        .stderr(log)
        .spawn()
        .expect("starting edgedeploy-agent run")
}

/// Removes the indentation common to all non-blank lines.
pub fn dedent(text: &str) -> String {
    let indent =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    text.lines().map(|l| l.get(indent..).unwrap_or("").trim_end()).collect::<Vec<_>>().join("\n")
}

/// Writes a `[default]` shared-credentials file.
pub fn write_credentials(path: &Path, access_key_id: &str, secret: &str) {
    fs::write(path, format!("[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n"))
        .expect("writing a credentials file");
}

/// Runs the `openssl` CLI in `dir`; panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost
/// signed by it, made in `dir` by the `openssl` CLI; returns (CA
/// certificate, server certificate, server key).
pub fn make_tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edgedeploy test ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing server.ext");
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
    ]);
    #[rustfmt::skip]
    openssl(dir, &[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "0x5eed", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}
