//! `edgedeploy demo`: the whole system on one machine, on the embedded
//! default. Starts a server on loopback with a fresh data directory,
//! onboards a few local devices (agent processes), pushes the example app,
//! deploys it with a deployment configuration, shows progress and reports.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::connect::Operator;
use super::{deploy, push};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of local devices.
    pub devices: usize,
    /// Deployment configuration.
    pub deployment_config: String,
    /// The app to deploy (a directory with appspec.yml).
    pub source: PathBuf,
    /// Where everything goes; a fresh temporary directory when absent.
    pub work_dir: Option<PathBuf>,
    /// Leave the server, agents and app running at the end.
    pub keep: bool,
}

/// The processes the demo started; stopped when dropped.
struct Fleet {
    work: PathBuf,
    server: Option<Child>,
    agents: Vec<Child>,
    homes: Vec<PathBuf>,
    keep: bool,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for home in &self.homes {
            if let Ok(pid) = fs::read_to_string(home.join("app.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        for child in self.agents.iter_mut().chain(self.server.as_mut()) {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// Runs the demo, printing to `out`; Ok when the deployment succeeded.
pub fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<(), String> {
    let bin_dir =
        std::env::current_exe().map_err(|e| e.to_string())?.parent().map(Path::to_path_buf).unwrap_or_default();
    let agent_bin = bin_dir.join("edgedeploy-agent");
    if !agent_bin.is_file() {
        return Err(format!("{} is missing: build both binaries first (cargo build --release)", agent_bin.display()));
    }
    if !options.source.join("appspec.yml").is_file() {
        return Err(format!(
            "{} has no appspec.yml (run the demo from the repository, or give --source)",
            options.source.display()
        ));
    }
    let work = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("edgedeploy-demo-{}", std::process::id())),
    };
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut fleet =
        Fleet { work: work.clone(), server: None, agents: Vec::new(), homes: Vec::new(), keep: options.keep };
    let data_dir = work.join("server");
    let port = free_port()?;
    let _ = writeln!(out, "==> server on http://127.0.0.1:{port} (data {})", data_dir.display());
    fleet.server = Some(start_server(&bin_dir.join("edgedeploy"), &data_dir, port, &work)?);
    wait_for_port(port, Duration::from_secs(20))?;

    let _ = writeln!(out, "==> onboarding {} devices (tag fleet=demo)", options.devices);
    for i in 1..=options.devices {
        let (agent, home) = onboard(&bin_dir, &agent_bin, &data_dir, &work, i)?;
        fleet.agents.push(agent);
        fleet.homes.push(home);
    }
    let op = Operator::connect(Some(&data_dir), None)?;
    op.call("CreateApplication", json!({ "applicationName": "hello-fleet", "computePlatform": "Server" }))?;
    op.call(
        "CreateDeploymentGroup",
        json!({
            "applicationName": "hello-fleet",
            "deploymentGroupName": "demo",
            "deploymentConfigName": options.deployment_config,
            "serviceRoleArn": "arn:aws:iam::000000000000:role/edgedeploy",
            "onPremisesInstanceTagFilters": [{ "Key": "fleet", "Value": "demo", "Type": "KEY_AND_VALUE" }]
        }),
    )?;
    let pushed = push::push(&op, "hello-fleet", &options.source, push::DEFAULT_BUCKET, None, Some("demo"))?;
    let _ = writeln!(
        out,
        "==> pushed {} as s3://{}/{} ({} bytes)",
        options.source.display(),
        pushed.bucket,
        pushed.key,
        pushed.size
    );
    let request = deploy::Request {
        application: "hello-fleet".into(),
        group: "demo".into(),
        revision: Some(pushed.revision()),
        config: Some(options.deployment_config.clone()),
        ..Default::default()
    };
    let id = deploy::create(&op, &request)?;
    let _ = writeln!(out, "==> deploying with {}", options.deployment_config);
    let outcome = deploy::follow(&op, &id, Duration::from_secs(600), out)?;
    report(&fleet, out);
    let _ = writeln!(out, "==> deployment {id} {}; logs in {}", outcome.status, fleet.work.display());
    if options.keep {
        let _ = writeln!(out, "    (--keep: server and agents are still running)");
    }
    if outcome.status == "Succeeded" { Ok(()) } else { Err(format!("deployment {id} ended {}", outcome.status)) }
}

fn report(fleet: &Fleet, out: &mut dyn Write) {
    for (i, home) in fleet.homes.iter().enumerate() {
        let revision = fs::read_to_string(home.join("revision")).unwrap_or_default();
        let beat = fs::read_to_string(home.join("heartbeat")).unwrap_or_default();
        let _ = writeln!(
            out,
            "    device {}: revision {} heartbeat {}",
            i + 1,
            revision.trim().if_empty("-"),
            beat.trim().if_empty("-")
        );
    }
}

trait IfEmpty {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str;
}

impl IfEmpty for str {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str {
        if self.is_empty() { other } else { self }
    }
}

fn start_server(bin: &Path, data_dir: &Path, port: u16, work: &Path) -> Result<Child, String> {
    let log = fs::File::create(work.join("server.log")).map_err(|e| e.to_string())?;
    Command::new(bin)
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))
}

/// Registers device `i`, writes its agent configuration and starts its agent.
fn onboard(
    bin_dir: &Path,
    agent_bin: &Path,
    data_dir: &Path,
    work: &Path,
    i: usize,
) -> Result<(Child, PathBuf), String> {
    let device = work.join(format!("device-{i}"));
    let home = device.join("app");
    fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let config = device.join("agent.yml");
    let status = Command::new(bin_dir.join("edgedeploy"))
        .arg("register-instance")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", &format!("demo-device-{i}"), "--tag", "fleet=demo"])
        .arg("--agent-config")
        .arg(&config)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("register-instance for device {i} failed"));
    }
    let mut text = fs::read_to_string(&config).map_err(|e| e.to_string())?;
    text.push_str(&format!("root_dir: {}\nwait_between_runs: 1\n", device.join("root").display()));
    fs::write(&config, text).map_err(|e| e.to_string())?;
    let log = fs::File::create(device.join("agent.log")).map_err(|e| e.to_string())?;
    let child = Command::new(agent_bin)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("EDGEDEPLOY_DEMO_HOME", &home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting the agent of device {i}: {e}"))?;
    Ok((child, home))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_for_port(port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the server did not start listening on port {port} within {} s", limit.as_secs()))
}
