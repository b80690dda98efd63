//! Shared helpers for the end-to-end tests: a fresh sandbox per test, bundle
//! builders and a runner for the real `edgedeploy-agent` binary.
#![allow(dead_code)] // Each test file uses a different subset.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const AGENT: &str = env!("CARGO_BIN_EXE_edgedeploy-agent");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory holding a deployment root, destinations and bundles.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("edtest-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sandbox = Sandbox { dir };
        sandbox.write_config("");
        sandbox
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.yml")
    }

    /// Writes the agent config: root_dir in the sandbox plus `extra` lines.
    pub fn write_config(&self, extra: &str) {
        let text = format!("root_dir: {}\nhook_kill_grace_seconds: 1\n{extra}", self.root().display());
        fs::write(self.config(), text).unwrap();
    }

    /// Creates a bundle directory `name` with `files` (path, content) and
    /// makes every `.sh` file executable.
    pub fn bundle(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join("bundles").join(name);
        let _ = fs::remove_dir_all(&dir);
        for (rel, content) in files {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            if rel.ends_with(".sh") {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir
    }

    /// Runs `deploy-local -c <config> <args>`.
    pub fn deploy(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(AGENT);
        cmd.arg("deploy-local").arg("-c").arg(self.config()).args(args);
        cmd.output().unwrap()
    }

    /// Deploys the directory bundle `bundle`, asserting success.
    pub fn deploy_ok(&self, bundle: &Path, extra: &[&str]) -> String {
        let mut args = vec!["-l", bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.deploy(&args);
        assert_success(&out);
        deployment_id(&out)
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    pub fn cleanup_list(&self, group: &str) -> Vec<String> {
        let path = self.root().join("deployment-instructions").join(format!("{group}-cleanup"));
        fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "deploy-local failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The deployment id printed on the first line of deploy-local's output.
pub fn deployment_id(out: &Output) -> String {
    let text = stdout(out);
    let first = text.lines().next().unwrap_or_default();
    first.split_whitespace().nth(1).unwrap_or_default().to_string()
}

/// A hook script that appends `<tag> $LIFECYCLE_EVENT` to `log`.
pub fn recording_hook(log: &Path, tag: &str) -> String {
    format!("#!/bin/sh\necho \"{tag} $LIFECYCLE_EVENT $DEPLOYMENT_ID\" >> {}\n", log.display())
}

/// Every regular file and symlink under `dir` (relative paths, sorted).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
