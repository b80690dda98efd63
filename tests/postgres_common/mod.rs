//! Shared by the PostgreSQL tests: a PostgreSQL server of the test's own
//! (from the Debian package `postgresql`, run as `nobody` under root, on a
//! free loopback port, stopped when dropped even on failure), `edgedeploy
//! server` replicas on it, and control-API helpers.
#![allow(dead_code)] // Each test file uses a different subset.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edgedeploy::client::{CallError, Client, Endpoint, HttpOptions};
use edgedeploy::protocol::sigv4::Credentials;
use serde_json::{Value, json};

/// The `edgedeploy` binary under test.
pub const SERVER: &str = env!("CARGO_BIN_EXE_edgedeploy");
/// X-Amz-Target prefix of the control API.
pub const CONTROL: &str = "CodeDeploy_20141006";
/// Where Debian's `postgresql-NN` packages put the server binaries.
const PG_LIB: &str = "/usr/lib/postgresql";

/// Held by each test: one PostgreSQL, two replicas and 20 agents at a time
/// are enough for a small machine, and keep the printed timings meaningful.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A unique scratch directory for this process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("edgedeploy-pg-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("finding a free loopback port").port()
}

pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest `/usr/lib/postgresql/N/bin` that has `initdb` and `postgres`.
pub fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(PG_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under {PG_LIB}/*/bin: this test needs them; install the \
             Debian package `postgresql` (apt-get install postgresql; .ci/run does)"
        ),
    }
}

/// The user and group ids PostgreSQL runs as: `nobody` as root (PostgreSQL
/// refuses to run as root), none otherwise.
pub fn unprivileged_ids() -> Option<(u32, u32)> {
    let me = run(Command::new("id").arg("-u"));
    if me.trim() != "0" {
        return None;
    }
    let uid = run(Command::new("id").args(["-u", "nobody"])).trim().parse().expect("uid of nobody");
    let gid = run(Command::new("id").args(["-g", "nobody"])).trim().parse().expect("gid of nobody");
    Some((uid, gid))
}

/// A PostgreSQL server of our own, stopped when dropped.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(&[])
    }

    /// Starts one with extra settings (`name=value`, as `postgres -c`).
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = postgres_bin();
        let dir = scratch("db");
        let ids = unprivileged_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("handing the directory to nobody");
        }
        let as_user = |command: &mut Command| {
            if let Some((uid, gid)) = ids {
                command.uid(uid).gid(gid);
            }
            command.current_dir(&dir);
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(dir.join("data")).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"]);
        as_user(&mut initdb);
        run(&mut initdb);
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = fs::File::create(dir.join("postgres.log")).expect("creating postgres.log");
            let mut command = Command::new(bin.join("postgres"));
            command
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
                .args(settings.iter().flat_map(|s| ["-c", s]))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            as_user(&mut command);
            let child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", bin.join("postgres").display()));
            let mut pg = Postgres { bin: bin.clone(), dir: dir.clone(), port, child };
            if pg.wait_ready() {
                return pg;
            }
            last = pg.log();
        }
        panic!("PostgreSQL did not start; its log:\n{last}");
    }

    pub fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status();
            if ready.is_ok_and(|s| s.success()) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in `db` with psql; rows as lines, columns separated by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql =
            [self.bin.join("psql"), PathBuf::from("psql")].into_iter().find(|p| p.is_file()).unwrap_or("psql".into());
        run(Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql]))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (clients disconnected, clean checkpoint).
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("postgres log ({}), last lines:", self.dir.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The secrets key every replica and command on the shared database uses
/// (`EDGEDEPLOY_SECRETS_KEY`): replicas must share it (docs/security.md).
pub const SECRETS_KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

/// One `edgedeploy server` replica with its own data directory.
pub struct Replica {
    /// Its name in messages.
    pub name: String,
    dir: PathBuf,
    port: u16,
    /// The `edgedeploy server` process.
    pub child: Child,
}

impl Replica {
    /// Spawns a replica on `database`; see [`Replica::wait_up`].
    pub fn spawn(name: &str, database: &str) -> Replica {
        let dir = scratch(name);
        let port = free_port();
        let log = fs::File::create(dir.join("server.log")).expect("server.log");
        let child = Command::new(SERVER)
            .args(["server", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database", database])
            .env("EDGEDEPLOY_SECRETS_KEY", SECRETS_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting edgedeploy server");
        Replica { name: name.to_string(), dir, port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits until it listens; panics with its log if it exits first.
    pub fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("replica {} exited with {status} at start:\n{}", self.name, self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.data_dir().join("admin-credentials").exists()
            {
                return;
            }
            assert!(Instant::now() < deadline, "replica {} not up after 60 s:\n{}", self.name, self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client of this replica signed with the admin key of `keys`' data directory.
    pub fn admin(&self, keys: &Replica) -> Client {
        let text = fs::read_to_string(keys.data_dir().join("admin-credentials")).expect("admin-credentials");
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().to_string()))
                .unwrap_or_else(|| panic!("{key} in admin-credentials"))
        };
        let endpoint = Endpoint {
            url: self.url(),
            region: "us-east-1".into(),
            credentials: Credentials {
                access_key_id: value("aws_access_key_id"),
                secret_access_key: value("aws_secret_access_key"),
            },
        };
        Client::new(endpoint, &HttpOptions { timeout: Some(Duration::from_secs(30)), ..HttpOptions::default() })
            .expect("client")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("replica {} log ({}), last lines:", self.name, self.dir.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn call(client: &Client, op: &str, body: Value) -> Value {
    client
        .call_raw(CONTROL, "codedeploy", op, body.to_string().as_bytes())
        .unwrap_or_else(|e: CallError| panic!("{op} {body} on {}: {e}", client.endpoint().url))
}

pub fn create_group(admin: &Client, group: &str, key: &str, value: &str) {
    call(
        admin,
        "CreateDeploymentGroup",
        json!({
            "applicationName": "pgapp",
            "deploymentGroupName": group,
            "serviceRoleArn": "arn:aws:iam::000000000000:role/CodeDeploy",
            "onPremisesInstanceTagFilters": [{"Key": key, "Value": value, "Type": "KEY_AND_VALUE"}],
        }),
    );
}

pub fn deploy(admin: &Client, group: &str, config: &str, revision: &Value) -> String {
    let out = call(
        admin,
        "CreateDeployment",
        json!({"applicationName": "pgapp", "deploymentGroupName": group, "deploymentConfigName": config, "revision": revision}),
    );
    out["deploymentId"].as_str().expect("deploymentId").to_string()
}

pub fn wait_end(admin: &Client, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let info = call(admin, "GetDeployment", json!({"deploymentId": id}))["deploymentInfo"].clone();
        if ["Succeeded", "Failed", "Stopped"].contains(&info["status"].as_str().unwrap_or_default()) {
            return info;
        }
        assert!(Instant::now() < deadline, "deployment {id} not over after {within:?}: {info}");
        thread::sleep(Duration::from_millis(200));
    }
}
