//! The AWS CLI (`aws`, installed from PyPI as `awscli`) against a real
//! `edgedeploy server` on loopback with `--endpoint-url`: the `aws deploy`
//! and `aws s3` commands an operator scripts with, their JSON output
//! parsed and checked, and deployments run by real `edgedeploy-agent run`
//! processes so that `aws deploy wait deployment-successful` really waits.
//!
//! The AWS CLI is required: without `aws` on PATH these tests fail and say
//! to `pip install awscli` (CI installs it in `.ci/run`).

mod server_common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use server_common::ServerProcess;
use sha2::Sha256;

/// Every hooked event records itself; ValidateService sleeps for the
/// seconds in the bundle's `sleep` file.
const HOOK: &str = r#"#!/bin/sh
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$FLEET_HOME/events"
if [ "$LIFECYCLE_EVENT" = ValidateService ]; then sleep "$(cat "$(dirname "$0")/../sleep")"; fi
exit 0
"#;

/// The `aws` program, or a failure saying how to install it.
fn aws_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("aws")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the AWS CLI (`aws`) is not on PATH: install it with `pip install awscli` \
                 (CI does, in .ci/run); these tests check that it works against the server"
        )
    })
}

/// Runs the AWS CLI against one server, as its admin.
struct Aws<'a> {
    program: PathBuf,
    server: &'a ServerProcess,
}

impl<'a> Aws<'a> {
    fn new(server: &'a ServerProcess) -> Aws<'a> {
        Aws { program: aws_program(), server }
    }

    /// `aws ARGS --endpoint-url URL --output json` with the admin's
    /// credentials file, region us-east-1, and no other AWS configuration.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.program)
            .args(args)
            .args(["--endpoint-url", self.server.endpoint(), "--output", "json"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_CA_BUNDLE")
            .env("AWS_SHARED_CREDENTIALS_FILE", self.server.admin_credentials_file())
            .env("AWS_CONFIG_FILE", self.server.work_dir().join("no-aws-config"))
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // `aws deploy push` makes its own S3 client, without --endpoint-url.
            .env("AWS_ENDPOINT_URL_S3", self.server.endpoint())
            .env("AWS_PAGER", "")
            .stdin(Stdio::null())
            .output()
            .expect("running aws")
    }

    /// [`Self::run`], which must succeed; its JSON output (Null when empty).
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "aws {args:?} failed ({}):\n{}\nstdout:\n{stdout}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.server.log()
        );
        if stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("aws {args:?}: output is not JSON ({e}):\n{stdout}"))
    }

    /// [`Self::run`], which must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "aws {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

/// One request the webhook got: its lower-cased header names with their
/// values, and its raw body.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("trigger body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTP endpoint on loopback that answers 200 to anything and keeps the
/// requests: the target of a deployment group's trigger.
fn webhook() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook listener");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if let Some(delivery) = read_request(&mut stream) {
                sink.lock().unwrap().push(delivery);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

/// Reads one HTTP/1.1 request with a `content-length` body (what the
/// server's trigger delivery sends), or None if it is cut short.
fn read_request(stream: &mut impl Read) -> Option<Delivery> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
    Some(Delivery { headers, body: data[head_end..head_end + length].to_vec() })
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `key`.
fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Waits (at most 60 s) until the webhook has, for every `(eventType,
/// deploymentId, n)` in `wanted`, at least n such events; returns
/// everything it got by then.
fn wait_for_events(seen: &Mutex<Vec<Delivery>>, wanted: &[(&str, &str, usize)]) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = seen.lock().unwrap().clone();
        let has = |(kind, id, n): &(&str, &str, usize)| {
            let count = got
                .iter()
                .filter(|d| {
                    let m = d.json();
                    m["eventType"] == *kind && m["deploymentId"] == *id
                })
                .count();
            count >= *n
        };
        if wanted.iter().all(has) {
            return got;
        }
        if Instant::now() > deadline {
            let kinds: Vec<String> =
                got.iter().map(|d| format!("{} {}", d.json()["eventType"], d.json()["deploymentId"])).collect();
            panic!("within 60 s the webhook got {kinds:?}, not all of {wanted:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes an app (AppSpec + hook + `sleep` file) into `dir`.
fn write_app(dir: &Path, sleep: u32) {
    fs::create_dir_all(dir.join("scripts")).unwrap();
    let mut spec = String::from("version: 0.0\nos: linux\nhooks:\n");
    for event in ["BeforeInstall", "ApplicationStart", "ValidateService"] {
        spec.push_str(&format!("  {event}:\n    - location: scripts/hook.sh\n      timeout: 120\n"));
    }
    fs::write(dir.join("appspec.yml"), spec).unwrap();
    fs::write(dir.join("scripts/hook.sh"), HOOK).unwrap();
    fs::set_permissions(dir.join("scripts/hook.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("sleep"), sleep.to_string()).unwrap();
}

/// A tgz of `dir` made by tar(1).
fn tgz(dir: &Path, out: &Path) {
    let status = Command::new("tar").arg("czf").arg(out).arg("-C").arg(dir).arg(".").status().unwrap();
    assert!(status.success(), "tar czf {}", out.display());
}

/// Agents registered with `edgedeploy register-instance` (tag role=device
/// only: the group selects them once the AWS CLI tags them), killed on drop.
struct Agents(Vec<(Child, PathBuf)>);

impl Agents {
    fn start(server: &ServerProcess, names: &[&str]) -> Agents {
        let mut agents = Vec::new();
        for name in names {
            let dir = server.work_dir().join(name);
            fs::create_dir_all(&dir).unwrap();
            let config = dir.join("agent.yml");
            let data_dir = server.data_dir().to_str().unwrap().to_string();
            let out = server.edgedeploy(&[
                "register-instance",
                "--data-dir",
                &data_dir,
                "--name",
                name,
                "--tag",
                "role=device",
                "--agent-config",
                config.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "register-instance: {}", String::from_utf8_lossy(&out.stderr));
            let child = server_common::start_agent(&config, &dir);
            agents.push((child, dir));
        }
        Agents(agents)
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (child, dir) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "agent log {}:\n{}",
                    dir.display(),
                    fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                );
            }
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str()).map(String::from).collect();
    out.sort();
    out
}

#[test]
fn aws_cli_manages_applications_configs_groups_instances_and_bundles() {
    // Its webhook receiver is on loopback.
    let server = ServerProcess::start_with(&["--allow-private-webhooks"]);
    let aws = Aws::new(&server);
    let work = server.work_dir().to_path_buf();

    let created = aws.ok(&["deploy", "create-application", "--application-name", "shop"]);
    let id = created["applicationId"].as_str().expect("applicationId").to_string();
    let got = aws.ok(&["deploy", "get-application", "--application-name", "shop"]);
    assert_eq!(got["application"]["applicationId"], id.as_str());
    assert_eq!(got["application"]["computePlatform"], "Server");
    assert_eq!(aws.ok(&["deploy", "list-applications"])["applications"], serde_json::json!(["shop"]));

    let created = aws.ok(&[
        "deploy",
        "create-deployment-config",
        "--deployment-config-name",
        "AtLeastOne",
        "--minimum-healthy-hosts",
        "type=HOST_COUNT,value=1",
    ]);
    assert!(created["deploymentConfigId"].is_string(), "{created}");
    let got = aws.ok(&["deploy", "get-deployment-config", "--deployment-config-name", "AtLeastOne"]);
    assert_eq!(
        got["deploymentConfigInfo"]["minimumHealthyHosts"],
        serde_json::json!({"type": "HOST_COUNT", "value": 1})
    );
    let configs = strings(&aws.ok(&["deploy", "list-deployment-configs"])["deploymentConfigsList"]);
    assert!(
        configs.contains(&"AtLeastOne".to_string()) && configs.contains(&"CodeDeployDefault.OneAtATime".to_string())
    );

    let (hook, _) = webhook();
    let trigger =
        format!("triggerName=notify,triggerTargetArn={hook},triggerEvents=DeploymentSuccess,DeploymentFailure");
    let created = aws.ok(&[
        "deploy",
        "create-deployment-group",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "lyon",
        "--deployment-config-name",
        "AtLeastOne",
        "--service-role-arn",
        "arn:aws:iam::000000000000:role/edgedeploy",
        "--on-premises-instance-tag-filters",
        "Key=site,Value=lyon,Type=KEY_AND_VALUE",
        "Key=canary,Type=KEY_ONLY",
        "--trigger-configurations",
        &trigger,
        "--auto-rollback-configuration",
        "enabled=true,events=DEPLOYMENT_FAILURE",
    ]);
    let group_id = created["deploymentGroupId"].as_str().expect("deploymentGroupId").to_string();
    let got =
        aws.ok(&["deploy", "get-deployment-group", "--application-name", "shop", "--deployment-group-name", "lyon"]);
    let g = &got["deploymentGroupInfo"];
    assert_eq!(g["deploymentGroupId"], group_id.as_str());
    assert_eq!(g["deploymentConfigName"], "AtLeastOne");
    assert_eq!(
        g["onPremisesInstanceTagFilters"],
        serde_json::json!([{"Key": "site", "Value": "lyon", "Type": "KEY_AND_VALUE"}, {"Key": "canary", "Type": "KEY_ONLY"}])
    );
    assert_eq!(
        g["triggerConfigurations"],
        serde_json::json!([{"triggerName": "notify", "triggerTargetArn": hook, "triggerEvents": ["DeploymentSuccess", "DeploymentFailure"]}])
    );
    assert_eq!(g["autoRollbackConfiguration"]["enabled"], true);
    assert_eq!(
        aws.ok(&["deploy", "list-deployment-groups", "--application-name", "shop"])["deploymentGroups"],
        serde_json::json!(["lyon"])
    );

    // On-premises instances: register, tag, list by tag, untag, deregister.
    for name in ["kiosk-1", "kiosk-2"] {
        let arn = format!("arn:aws:sts::000000000000:assumed-role/edgedeploy/{name}");
        assert_eq!(
            aws.ok(&["deploy", "register-on-premises-instance", "--instance-name", name, "--iam-session-arn", &arn]),
            Value::Null
        );
    }
    aws.ok(&[
        "deploy",
        "add-tags-to-on-premises-instances",
        "--instance-names",
        "kiosk-1",
        "kiosk-2",
        "--tags",
        "Key=site,Value=lyon",
    ]);
    aws.ok(&[
        "deploy",
        "add-tags-to-on-premises-instances",
        "--instance-names",
        "kiosk-2",
        "--tags",
        "Key=canary,Value=yes",
    ]);
    let got = aws.ok(&["deploy", "get-on-premises-instance", "--instance-name", "kiosk-2"]);
    let i = &got["instanceInfo"];
    assert_eq!(i["iamSessionArn"], "arn:aws:sts::000000000000:assumed-role/edgedeploy/kiosk-2");
    assert_eq!(i["instanceArn"], "arn:aws:codedeploy:us-east-1:000000000000:instance/kiosk-2");
    assert_eq!(i["tags"].as_array().map(Vec::len), Some(2), "{i}");
    let listed =
        aws.ok(&["deploy", "list-on-premises-instances", "--tag-filters", "Key=canary,Value=yes,Type=KEY_AND_VALUE"]);
    assert_eq!(strings(&listed["instanceNames"]), ["kiosk-2"]);
    let batch = aws.ok(&["deploy", "batch-get-on-premises-instances", "--instance-names", "kiosk-1", "kiosk-2"]);
    assert_eq!(batch["instanceInfos"].as_array().map(Vec::len), Some(2));
    aws.ok(&[
        "deploy",
        "remove-tags-from-on-premises-instances",
        "--instance-names",
        "kiosk-2",
        "--tags",
        "Key=canary,Value=yes",
    ]);
    let listed =
        aws.ok(&["deploy", "list-on-premises-instances", "--tag-filters", "Key=canary,Value=yes,Type=KEY_AND_VALUE"]);
    assert_eq!(listed["instanceNames"], serde_json::json!([]));
    aws.ok(&["deploy", "deregister-on-premises-instance", "--instance-name", "kiosk-1"]);
    let listed = aws.ok(&["deploy", "list-on-premises-instances", "--registration-status", "Deregistered"]);
    assert_eq!(strings(&listed["instanceNames"]), ["kiosk-1"]);
    let got = aws.ok(&["deploy", "get-on-premises-instance", "--instance-name", "kiosk-1"]);
    assert!(got["instanceInfo"]["deregisterTime"].is_number(), "{got}");

    // Bundles: s3 cp up and down, s3 ls; register the revision.
    let app = work.join("app");
    write_app(&app, 0);
    let bundle = work.join("app.tgz");
    tgz(&app, &bundle);
    let out = aws.run(&["s3", "cp", bundle.to_str().unwrap(), "s3://edgedeploy-bundles/shop/app.tgz"]);
    assert!(out.status.success(), "s3 cp: {}", String::from_utf8_lossy(&out.stderr));
    let out = aws.run(&["s3", "ls", "s3://edgedeploy-bundles/shop/"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("app.tgz"), "{}", String::from_utf8_lossy(&out.stdout));
    let back = work.join("back.tgz");
    let out = aws.run(&["s3", "cp", "s3://edgedeploy-bundles/shop/app.tgz", back.to_str().unwrap()]);
    assert!(out.status.success(), "s3 cp down: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(&back).unwrap(), fs::read(&bundle).unwrap());
    aws.ok(&[
        "deploy",
        "register-application-revision",
        "--application-name",
        "shop",
        "--s3-location",
        "bucket=edgedeploy-bundles,key=shop/app.tgz,bundleType=tgz",
        "--description",
        "first",
    ]);
    let got = aws.ok(&[
        "deploy",
        "get-application-revision",
        "--application-name",
        "shop",
        "--s3-location",
        "bucket=edgedeploy-bundles,key=shop/app.tgz,bundleType=tgz",
    ]);
    assert_eq!(got["revisionInfo"]["description"], "first");

    // `aws deploy push`: zips the directory, uploads it, registers it.
    let out = aws.run(&[
        "deploy",
        "push",
        "--application-name",
        "shop",
        "--s3-location",
        "s3://edgedeploy-bundles/shop/pushed.zip",
        "--source",
        app.to_str().unwrap(),
        "--description",
        "pushed",
    ]);
    assert!(out.status.success(), "deploy push: {}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let revisions = aws.ok(&[
        "deploy",
        "list-application-revisions",
        "--application-name",
        "shop",
        "--s3-bucket",
        "edgedeploy-bundles",
    ]);
    let zipped: Vec<&Value> = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["s3Location"]["key"] == "shop/pushed.zip")
        .collect();
    assert_eq!(zipped.len(), 1, "{revisions}");
    assert_eq!(zipped[0]["s3Location"]["bundleType"], "zip");
    assert!(zipped[0]["s3Location"]["eTag"].is_string(), "{revisions}");

    // An error is the model's exception, as the AWS CLI reports it.
    let stderr = aws.fails(&["deploy", "get-application", "--application-name", "nope"]);
    assert!(stderr.contains("ApplicationDoesNotExistException"), "{stderr}");
}

/// Polls until a target of `id` is in ValidateService.
fn wait_in_validate_service(aws: &Aws, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let ids = aws.ok(&["deploy", "list-deployment-targets", "--deployment-id", id]);
        let ids = strings(&ids["targetIds"]);
        if !ids.is_empty() {
            let mut args = vec!["deploy", "batch-get-deployment-targets", "--deployment-id", id, "--target-ids"];
            args.extend(ids.iter().map(String::as_str));
            let targets = aws.ok(&args);
            let busy = targets["deploymentTargets"].as_array().into_iter().flatten().any(|t| {
                t["instanceTarget"]["lifecycleEvents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["lifecycleEventName"] == "ValidateService" && e["status"] == "InProgress")
            });
            if busy {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("deployment {id}: no instance reached ValidateService within 90 s");
}

#[test]
fn aws_cli_deploys_to_real_agents_waits_for_success_and_stops() {
    // Its webhook receiver is on loopback.
    let server = ServerProcess::start_with(&["--allow-private-webhooks"]);
    let aws = Aws::new(&server);
    let work = server.work_dir().to_path_buf();
    let _agents = Agents::start(&server, &["dev-1", "dev-2"]);
    let (hook, seen) = webhook();

    aws.ok(&["deploy", "create-application", "--application-name", "shop"]);
    let trigger = format!(
        "triggerName=notify,triggerTargetArn={hook},\
         triggerEvents=DeploymentStart,DeploymentSuccess,DeploymentStop,InstanceStart,InstanceSuccess"
    );
    aws.ok(&[
        "deploy",
        "create-deployment-group",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "fleet",
        "--deployment-config-name",
        "CodeDeployDefault.AllAtOnce",
        "--service-role-arn",
        "arn:aws:iam::000000000000:role/edgedeploy",
        "--on-premises-instance-tag-filters",
        "Key=fleet,Value=test,Type=KEY_AND_VALUE",
        "--trigger-configurations",
        &trigger,
    ]);
    // The devices are selected only once the AWS CLI has tagged them.
    aws.ok(&[
        "deploy",
        "add-tags-to-on-premises-instances",
        "--instance-names",
        "dev-1",
        "dev-2",
        "--tags",
        "Key=fleet,Value=test",
    ]);

    let app = work.join("app");
    write_app(&app, 1);
    let bundle = work.join("app.tgz");
    tgz(&app, &bundle);
    let out = aws.run(&["s3", "cp", bundle.to_str().unwrap(), "s3://edgedeploy-bundles/shop/v1.tgz"]);
    assert!(out.status.success(), "s3 cp: {}", String::from_utf8_lossy(&out.stderr));

    let created = aws.ok(&[
        "deploy",
        "create-deployment",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "fleet",
        "--s3-location",
        "bucket=edgedeploy-bundles,key=shop/v1.tgz,bundleType=tgz",
        "--description",
        "from the aws cli",
    ]);
    let id = created["deploymentId"].as_str().expect("deploymentId").to_string();
    let out = aws.run(&["deploy", "wait", "deployment-successful", "--deployment-id", &id]);
    assert!(
        out.status.success(),
        "wait deployment-successful: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let info = aws.ok(&["deploy", "get-deployment", "--deployment-id", &id])["deploymentInfo"].clone();
    assert_eq!(info["status"], "Succeeded", "{info}");
    assert_eq!(info["description"], "from the aws cli");
    assert_eq!(info["creator"], "user");
    assert_eq!(info["deploymentOverview"]["Succeeded"], 2, "{info}");
    assert_eq!(info["revision"]["s3Location"]["key"], "shop/v1.tgz");
    let ids = strings(&aws.ok(&["deploy", "list-deployment-targets", "--deployment-id", &id])["targetIds"]);
    assert_eq!(ids, ["dev-1", "dev-2"]);
    let targets =
        aws.ok(&["deploy", "batch-get-deployment-targets", "--deployment-id", &id, "--target-ids", "dev-1", "dev-2"]);
    let targets = targets["deploymentTargets"].as_array().cloned().unwrap_or_default();
    assert_eq!(targets.len(), 2);
    for t in &targets {
        assert_eq!(t["deploymentTargetType"], "InstanceTarget");
        let i = &t["instanceTarget"];
        assert_eq!(i["status"], "Succeeded", "{t}");
        assert!(
            i["targetArn"].as_str().unwrap_or("").starts_with("arn:aws:codedeploy:us-east-1:000000000000:instance/")
        );
        let events: Vec<(String, String)> = i["lifecycleEvents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["lifecycleEventName"].as_str().unwrap_or("").into(), e["status"].as_str().unwrap_or("").into()))
            .collect();
        assert_eq!(events.len(), 7, "{events:?}");
        assert!(events.iter().all(|(_, s)| s == "Succeeded" || s == "Skipped"), "{events:?}");
        assert_eq!(events.last().map(|e| e.0.as_str()), Some("ValidateService"));
    }
    let listed =
        aws.ok(&["deploy", "list-deployments", "--application-name", "shop", "--deployment-group-name", "fleet"]);
    assert_eq!(listed["deployments"], serde_json::json!([id]));
    check_trigger_deliveries(&server, &seen, &id);

    // A slow revision pushed with `aws deploy push` (zip), stopped in flight.
    let slow = work.join("slow");
    write_app(&slow, 30);
    let out = aws.run(&[
        "deploy",
        "push",
        "--application-name",
        "shop",
        "--s3-location",
        "s3://edgedeploy-bundles/shop/slow.zip",
        "--source",
        slow.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "deploy push: {}", String::from_utf8_lossy(&out.stderr));
    let pushed = aws.ok(&[
        "deploy",
        "list-application-revisions",
        "--application-name",
        "shop",
        "--s3-key-prefix",
        "shop/slow",
        "--s3-bucket",
        "edgedeploy-bundles",
    ]);
    let etag = pushed["revisions"][0]["s3Location"]["eTag"].as_str().expect("eTag of the pushed revision").to_string();
    let location = format!("bucket=edgedeploy-bundles,key=shop/slow.zip,bundleType=zip,eTag={etag}");
    let created = aws.ok(&[
        "deploy",
        "create-deployment",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "fleet",
        "--s3-location",
        &location,
    ]);
    let slow_id = created["deploymentId"].as_str().expect("deploymentId").to_string();
    wait_in_validate_service(&aws, &slow_id);
    let stopped = aws.ok(&["deploy", "stop-deployment", "--deployment-id", &slow_id]);
    assert_eq!(stopped["status"], "Succeeded", "{stopped}");
    assert!(stopped["statusMessage"].as_str().is_some_and(|m| !m.is_empty()), "{stopped}");
    let info = aws.ok(&["deploy", "get-deployment", "--deployment-id", &slow_id])["deploymentInfo"].clone();
    assert_eq!(info["status"], "Stopped", "{info}");
    assert_eq!(info["errorInformation"]["code"], "MANUAL_STOP", "{info}");
    assert_eq!(info["previousRevision"]["s3Location"]["key"], "shop/v1.tgz", "{info}");
    // The waiter's failure state for Stopped.
    let stderr = aws.fails(&["deploy", "wait", "deployment-successful", "--deployment-id", &slow_id]);
    assert!(stderr.contains("Waiter DeploymentSuccessful failed"), "{stderr}");
    let stderr = aws.fails(&["deploy", "stop-deployment", "--deployment-id", &slow_id]);
    assert!(stderr.contains("DeploymentAlreadyCompletedException"), "{stderr}");
    // The stopped deployment's trigger events: started, stopped, never a success.
    let got = wait_for_events(&seen, &[("DeploymentStart", &slow_id, 1), ("DeploymentStop", &slow_id, 1)]);
    let slow_kinds: Vec<String> = got
        .iter()
        .map(Delivery::json)
        .filter(|m| m["deploymentId"] == slow_id.as_str())
        .map(|m| m["eventType"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!slow_kinds.iter().any(|k| k == "DeploymentSuccess" || k == "InstanceSuccess"), "{slow_kinds:?}");
    let stop = got.iter().map(Delivery::json).find(|m| m["eventType"] == "DeploymentStop").unwrap();
    assert_eq!(stop["status"], "Stopped", "{stop}");
    check_signed_once(&server, &got);
}

/// The webhook got deployment `id`'s DeploymentStart and
/// DeploymentSuccess once each and InstanceStart and InstanceSuccess once
/// per device, each naming the deployment, application and group, each
/// signed with the server's key, each eventId once.
fn check_trigger_deliveries(server: &ServerProcess, seen: &Mutex<Vec<Delivery>>, id: &str) {
    let wanted = [
        ("DeploymentStart", id, 1),
        ("DeploymentSuccess", id, 1),
        ("InstanceStart", id, 2),
        ("InstanceSuccess", id, 2),
    ];
    let got = wait_for_events(seen, &wanted);
    let messages: Vec<Value> = got.iter().map(Delivery::json).filter(|m| m["deploymentId"] == id).collect();
    let of = |kind: &str| messages.iter().filter(|m| m["eventType"] == kind).cloned().collect::<Vec<Value>>();
    assert_eq!(of("DeploymentStart").len(), 1, "{messages:?}");
    let success = of("DeploymentSuccess");
    assert_eq!(success.len(), 1, "{messages:?}");
    assert_eq!(success[0]["status"], "Succeeded", "{}", success[0]);
    assert_eq!(success[0]["deploymentOverview"]["Succeeded"], "2", "{}", success[0]);
    for kind in ["InstanceStart", "InstanceSuccess"] {
        let mut names: Vec<String> =
            of(kind).iter().map(|m| m["instanceName"].as_str().unwrap_or_default().to_string()).collect();
        names.sort();
        assert_eq!(names, ["dev-1", "dev-2"], "{kind}: {messages:?}");
    }
    for m in of("InstanceSuccess") {
        assert_eq!(m["instanceStatus"], "Succeeded", "{m}");
    }
    for m in &messages {
        assert_eq!(m["applicationName"], "shop", "{m}");
        assert_eq!(m["deploymentGroupName"], "fleet", "{m}");
        assert_eq!(m["eventTriggerName"], "notify", "{m}");
        let kind = m["eventType"].as_str().unwrap_or_default();
        assert!(["DeploymentStart", "DeploymentSuccess", "InstanceStart", "InstanceSuccess"].contains(&kind), "{m}");
    }
    check_signed_once(server, &got);
}

/// Every delivery carries a valid `X-Edgedeploy-Signature` (HMAC-SHA256
/// of the raw body under the key in DATA_DIR/trigger-signing-key) and
/// headers matching its body, and no eventId came twice.
fn check_signed_once(server: &ServerProcess, got: &[Delivery]) {
    let path = server.data_dir().join("trigger-signing-key");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let key = text.strip_suffix('\n').unwrap_or(&text);
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{}: {text:?}", path.display());
    let mut ids = Vec::new();
    for d in got {
        let m = d.json();
        let wanted = signature(key.as_bytes(), &d.body);
        assert_eq!(d.header("x-edgedeploy-signature"), Some(wanted.as_str()), "{m}");
        // A signature over anything else does not match.
        assert_ne!(signature(b"another key", &d.body), wanted);
        assert_eq!(d.header("x-edgedeploy-event-id"), m["eventId"].as_str(), "{m}");
        assert_eq!(d.header("x-edgedeploy-event-type"), m["eventType"].as_str(), "{m}");
        assert!(d.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{m}");
        let event_id = m["eventId"].as_str().unwrap_or_else(|| panic!("no eventId: {m}")).to_string();
        assert!(event_id.starts_with("ev-"), "{m}");
        assert!(!ids.contains(&event_id), "eventId {event_id} delivered twice");
        ids.push(event_id);
    }
}
