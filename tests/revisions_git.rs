//! GitHub-type revisions resolved from git repositories the server is
//! configured with: real `git` repositories, a real `edgedeploy server`, a
//! real agent on loopback. See docs/revisions.md.

mod revisions_common;
mod server_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgedeploy::client::{CallError, Client};
use revisions_common::{Agent, Device, admin, call, call_ok, create_deployment, files_of, onboard, wait_for_end};
use serde_json::{Value, json};
use server_common::ServerProcess;

/// Runs git; panics with its stderr on failure; returns stdout, trimmed.
fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("running git (is it installed?)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository and the work tree its commits are made from.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(bare: &Path) -> Repo {
        git(&["init", "--bare", "--quiet", &bare.to_string_lossy()]);
        let work = bare.with_extension("work");
        fs::create_dir_all(&work).unwrap();
        Repo { bare: bare.to_path_buf(), work }
    }

    /// Writes `files` (`.sh` executable), removes `remove`, commits; returns the full id.
    fn commit(&self, files: &[(&str, &str)], remove: &[&str]) -> String {
        for (rel, content) in files {
            let path = self.work.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            if rel.ends_with(".sh") {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        for rel in remove {
            fs::remove_file(self.work.join(rel)).unwrap();
        }
        let (dir, tree) =
            (format!("--git-dir={}", self.bare.display()), format!("--work-tree={}", self.work.display()));
        git(&[&dir, &tree, "add", "-A"]);
        git(&[&dir, &tree, "commit", "--quiet", "-m", "a revision"]);
        git(&[&dir, "rev-parse", "HEAD"])
    }
}

fn github(repository: &str, commit: &str) -> Value {
    json!({ "revisionType": "GitHub", "gitHubLocation": { "repository": repository, "commitId": commit } })
}

/// An AppSpec installing `app/` into `dest`, with an AfterInstall hook that
/// appends `BUNDLE_COMMIT` to `commits`.
fn app_files(dest: &Path, commits: &Path) -> Vec<(String, String)> {
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n  AfterInstall:\n    - location: hooks/record.sh\n",
        dest.display()
    );
    let hook = format!("#!/bin/sh\necho \"$BUNDLE_COMMIT\" >> {}\n", commits.display());
    vec![("appspec.yml".into(), appspec), ("hooks/record.sh".into(), hook)]
}

fn refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn deploy_and_wait(client: &Client, device: &Device, agent: &Agent, revision: &Value) -> (String, Value) {
    let id = create_deployment(client, device, revision).unwrap_or_else(|e| panic!("CreateDeployment: {e}"));
    let info = wait_for_end(client, &id, Duration::from_secs(120));
    assert_eq!(info["status"], "Succeeded", "{info}\nagent log:\n{}", agent.logs());
    (id, info)
}

/// Keys of the bundle store's bucket `bucket` (ListObjects).
fn bucket_keys(client: &Client, bucket: &str) -> Vec<String> {
    let empty = edgedeploy::protocol::sigv4::sha256_hex(b"");
    let mut response = client.s3_request("GET", &format!("/{bucket}"), Vec::new(), &empty).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.body_mut().read_to_string().unwrap();
    body.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect()
}

fn service_error(result: Result<String, CallError>) -> (String, String) {
    match result {
        Err(CallError::Service { type_, message, .. }) => (type_, message),
        other => panic!("expected a service error, got {other:?}"),
    }
}

#[test]
fn commits_of_a_local_bare_repository_deploy_their_trees_and_are_archived_once() {
    let server_dir = std::env::temp_dir().join(format!("edgedeploy-revgit-local-{}", std::process::id()));
    let _ = fs::remove_dir_all(&server_dir);
    fs::create_dir_all(&server_dir).unwrap();
    let repo = Repo::new(&server_dir.join("shop.git"));
    let (dest, commits) = (server_dir.join("dest"), server_dir.join("commits.txt"));
    let mut files = app_files(&dest, &commits);
    files.extend([("app/hello.txt".into(), "hello v1\n".into()), ("app/old/gone.txt".into(), "v1 only\n".into())]);
    let first = repo.commit(&refs(&files), &[]);
    let second =
        repo.commit(&[("app/hello.txt", "hello v2\n"), ("app/new/added.txt", "v2 only\n")], &["app/old/gone.txt"]);

    let flag = format!("acme/shop={}", repo.bare.display());
    let server = ServerProcess::start_with(&["--git-repository", &flag]);
    let client = admin(&server);
    let device = onboard(&server, &client, "local", "");
    let agent = Agent::start(&device);

    // A short commit id is resolved; the deployment names the full one.
    let (id, info) = deploy_and_wait(&client, &device, &agent, &github("acme/shop", &first[..10]));
    assert_eq!(info["revision"]["gitHubLocation"]["commitId"], first, "{info}");
    assert_eq!(
        files_of(&dest),
        vec![("hello.txt".into(), "hello v1\n".into()), ("old/gone.txt".into(), "v1 only\n".into())]
    );
    assert_eq!(fs::read_to_string(&commits).unwrap(), format!("{first}\n"), "BUNDLE_COMMIT seen by the hook");
    let download = revisions_common::event(&client, &device, &id, "DownloadBundle");
    assert_eq!(download["status"], "Succeeded");

    let _ = deploy_and_wait(&client, &device, &agent, &github("acme/shop", &second));
    assert_eq!(
        files_of(&dest),
        vec![("hello.txt".into(), "hello v2\n".into()), ("new/added.txt".into(), "v2 only\n".into())]
    );

    // The first commit again: its archive is reused, not made again.
    let _ = deploy_and_wait(&client, &device, &agent, &github("acme/shop", &first));
    assert_eq!(
        files_of(&dest),
        vec![("hello.txt".into(), "hello v1\n".into()), ("old/gone.txt".into(), "v1 only\n".into())]
    );
    assert_eq!(fs::read_to_string(&commits).unwrap(), format!("{first}\n{second}\n{first}\n"));
    let log = server.log();
    assert_eq!(log.matches(&format!("git: archived acme/shop at {first}")).count(), 1, "{log}");
    assert_eq!(log.matches(&format!("git: archived acme/shop at {second}")).count(), 1, "{log}");
    assert!(log.contains(&format!("git: acme/shop at {first} is already archived")), "{log}");
    let mut keys = bucket_keys(&client, "edgedeploy-git");
    keys.sort();
    let mut expected = vec![format!("acme/shop/{first}.tgz"), format!("acme/shop/{second}.tgz")];
    expected.sort();
    assert_eq!(keys, expected);

    // The revision is registered by its use, under the full commit id.
    let got = call_ok(
        &client,
        "GetApplicationRevision",
        json!({ "applicationName": device.app, "revision": github("acme/shop", &first) }),
    );
    assert_eq!(got["revisionInfo"]["deploymentGroups"], json!([device.group]), "{got}");
    drop(agent);
    let _ = fs::remove_dir_all(&server_dir);
}

#[test]
fn unknown_repositories_and_commits_are_refused_at_create_deployment() {
    let dir = std::env::temp_dir().join(format!("edgedeploy-revgit-errors-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let repo = Repo::new(&dir.join("shop.git"));
    let commit = repo.commit(&[("appspec.yml", "version: 0.0\nos: linux\n")], &[]);
    let flag = format!("acme/shop={}", repo.bare.display());
    let server = ServerProcess::start_with(&["--git-repository", &flag]);
    let client = admin(&server);
    let device = onboard(&server, &client, "errors", "");

    let (type_, message) = service_error(create_deployment(&client, &device, &github("acme/nope", &commit)));
    assert_eq!(type_, "RevisionDoesNotExistException");
    assert!(message.contains("\"acme/nope\""), "{message}");
    let (type_, message) = service_error(create_deployment(&client, &device, &github("acme/shop", "deadbeefdeadbeef")));
    assert_eq!(type_, "RevisionDoesNotExistException");
    assert!(message.contains("deadbeefdeadbeef") && message.contains("acme/shop"), "{message}");
    let (type_, message) = service_error(create_deployment(&client, &device, &github("acme/shop", "main")));
    assert_eq!(type_, "InvalidRevisionException");
    assert!(message.contains("\"main\" is not a commit id"), "{message}");
    let listed = call_ok(&client, "ListDeployments", json!({}));
    assert_eq!(listed["deployments"], json!([]), "a refused deployment left a record");

    // The AWS SDK's view (botocore's own model): the same refusal, and
    // GitHub revisions register and read back as before.
    let script = format!(
        r#"
        cd = client()
        bad = dict(revisionType="GitHub", gitHubLocation=dict(repository="acme/shop", commitId="0123abcd"))
        refused = error_of(cd.create_deployment, applicationName="{app}", deploymentGroupName="{group}", revision=bad)
        rev = dict(revisionType="GitHub", gitHubLocation=dict(repository="acme/shop", commitId="{commit}"))
        cd.register_application_revision(applicationName="{app}", revision=rev, description="from git")
        got = cd.get_application_revision(applicationName="{app}", revision=rev)
        emit([refused, got["revision"], got["revisionInfo"]["description"]])
        "#,
        app = device.app,
        group = device.group,
    );
    let out = server.boto3_ok(&script);
    assert_eq!(out[0][0], "RevisionDoesNotExistException", "{out}");
    assert_eq!(out[0][1], 400);
    assert_eq!(out[1], github("acme/shop", &commit));
    assert_eq!(out[2], "from git");

    // A server without git repositories says how to configure them.
    let bare = ServerProcess::start();
    let client = admin(&bare);
    let device = onboard(&bare, &client, "nogit", "");
    let (type_, message) = service_error(create_deployment(&client, &device, &github("acme/shop", &commit)));
    assert_eq!(type_, "RevisionDoesNotExistException");
    assert!(message.contains("no git repositories configured") && message.contains("--git-repository"), "{message}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_git_url_is_mirrored_and_fetched_again_for_new_commits() {
    let dir = std::env::temp_dir().join(format!("edgedeploy-revgit-url-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let origin = Repo::new(&dir.join("origin/web.git"));
    let (dest, commits) = (dir.join("dest"), dir.join("commits.txt"));
    let mut files = app_files(&dest, &commits);
    files.push(("app/index.html".into(), "<h1>one</h1>\n".into()));
    let first = origin.commit(&refs(&files), &[]);
    // --git-root: acme/tools is ROOT/acme/tools.git.
    let root = dir.join("root");
    let tools = Repo::new(&root.join("acme/tools.git"));
    let tools_commit = tools.commit(&[("appspec.yml", "version: 0.0\nos: linux\n")], &[]);

    let flag = format!("acme/web=file://{}", origin.bare.display());
    let server = ServerProcess::start_with(&["--git-repository", &flag, "--git-root", &root.to_string_lossy()]);
    let client = admin(&server);
    let device = onboard(&server, &client, "url", "");
    let agent = Agent::start(&device);

    let _ = deploy_and_wait(&client, &device, &agent, &github("acme/web", &first));
    assert_eq!(files_of(&dest), vec![("index.html".into(), "<h1>one</h1>\n".into())]);
    let mirror = server.data_dir().join("git/mirrors/acme/web.git");
    assert!(mirror.join("HEAD").is_file(), "no mirror at {}", mirror.display());

    // A commit made after the mirror was created: fetched at CreateDeployment.
    let second = origin.commit(&[("app/index.html", "<h1>two</h1>\n")], &[]);
    let _ = deploy_and_wait(&client, &device, &agent, &github("acme/web", &second[..12]));
    assert_eq!(files_of(&dest), vec![("index.html".into(), "<h1>two</h1>\n".into())]);
    assert_eq!(fs::read_to_string(&commits).unwrap(), format!("{first}\n{second}\n"));

    // A repository under --git-root resolves too (a group without instances).
    call_ok(
        &client,
        "CreateDeploymentGroup",
        json!({
            "applicationName": device.app,
            "deploymentGroupName": "empty",
            "serviceRoleArn": "arn:aws:iam::000000000000:role/edgedeploy",
            "onPremisesInstanceTagFilters": [{ "Key": "test", "Value": "nobody", "Type": "KEY_AND_VALUE" }]
        }),
    );
    let input = json!({ "applicationName": device.app, "deploymentGroupName": "empty", "revision": github("acme/tools", &tools_commit[..8]) });
    call(&client, "CreateDeployment", input).unwrap_or_else(|e| panic!("CreateDeployment of acme/tools: {e}"));
    assert!(bucket_keys(&client, "edgedeploy-git").contains(&format!("acme/tools/{tools_commit}.tgz")));
    drop(agent);
    let _ = fs::remove_dir_all(&dir);
}
