//! The deployment root on disk (CodeDeploy's layout) and the agent's own
//! state under `<root>/.edgedeploy/`. Every state file goes through
//! [`journal::write_atomic`].
//!
//! ```text
//! <root>/<group>/<deployment>/bundle.tar            the bundle (a link to it for local bundles)
//! <root>/<group>/<deployment>/deployment-archive/   the unpacked revision
//! <root>/<group>/<deployment>/logs/scripts.log      hook output
//! <root>/deployment-instructions/<group>_last_successful_install
//! <root>/deployment-instructions/<group>_most_recent_install
//! <root>/deployment-instructions/<group>-cleanup
//! <root>/deployment-logs/edgedeploy-deployments.log
//! <root>/.edgedeploy/groups/<group>.json            last deployment's status
//! <root>/.edgedeploy/locks/<group>.lock             one deployment per group at a time
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::journal;

/// Name of the unpacked revision inside a deployment directory.
pub const ARCHIVE_DIR: &str = "deployment-archive";
/// Name of the directory a revision is unpacked into before it is complete.
pub const PARTIAL_ARCHIVE_DIR: &str = "deployment-archive.partial";

/// Paths of one deployment root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// The root at `dir` (nothing is created yet).
    pub fn new(dir: &Path) -> Self {
        Root { dir: dir.to_path_buf() }
    }

    /// Creates the root's fixed directories.
    pub fn create(&self) -> io::Result<()> {
        for dir in [self.instructions_dir(), self.dir.join("deployment-logs"), self.private_dir().join("groups")] {
            journal::create_dir_all_durable(&dir)?;
        }
        journal::create_dir_all_durable(&self.private_dir().join("locks"))
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<root>/<group>`.
    pub fn group_dir(&self, group: &str) -> PathBuf {
        self.dir.join(group)
    }

    /// `<root>/<group>/<deployment>`.
    pub fn deployment_dir(&self, group: &str, deployment: &str) -> PathBuf {
        self.group_dir(group).join(deployment)
    }

    fn instructions_dir(&self) -> PathBuf {
        self.dir.join("deployment-instructions")
    }

    fn private_dir(&self) -> PathBuf {
        self.dir.join(".edgedeploy")
    }

    /// `<root>/deployment-instructions/<group>-cleanup`.
    pub fn cleanup_list(&self, group: &str) -> PathBuf {
        self.instructions_dir().join(format!("{group}-cleanup"))
    }

    /// `<root>/deployment-logs/edgedeploy-deployments.log`.
    pub fn deployments_log(&self) -> PathBuf {
        self.dir.join("deployment-logs").join("edgedeploy-deployments.log")
    }

    fn pointer(&self, group: &str, which: Pointer) -> PathBuf {
        let suffix = match which {
            Pointer::LastSuccessful => "last_successful_install",
            Pointer::MostRecent => "most_recent_install",
        };
        self.instructions_dir().join(format!("{group}_{suffix}"))
    }

    /// The deployment directory a pointer names, if it is set.
    pub fn read_pointer(&self, group: &str, which: Pointer) -> io::Result<Option<PathBuf>> {
        let text = journal::read_optional(&self.pointer(group, which))?;
        Ok(text.map(|t| PathBuf::from(t.trim_end_matches('\n'))).filter(|p| p.is_absolute()))
    }

    /// Points `which` at `deployment_dir`, durably.
    pub fn write_pointer(&self, group: &str, which: Pointer, deployment_dir: &Path) -> io::Result<()> {
        journal::write_atomic(&self.pointer(group, which), deployment_dir.as_os_str().as_encoded_bytes())
    }

    /// `<root>/.edgedeploy/groups/<group>.json`.
    fn status_file(&self, group: &str) -> PathBuf {
        self.private_dir().join("groups").join(format!("{group}.json"))
    }

    /// The last recorded deployment of `group`.
    pub fn read_status(&self, group: &str) -> io::Result<Option<DeploymentStatus>> {
        let path = self.status_file(group);
        let Some(text) = journal::read_optional(&path)? else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
    }

    /// Records the deployment of `status.group`, durably.
    pub fn write_status(&self, status: &DeploymentStatus) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
        journal::write_atomic(&self.status_file(&status.group), &json)
    }

    /// Every group with a recorded status, sorted.
    pub fn groups(&self) -> io::Result<Vec<String>> {
        let dir = self.private_dir().join("groups");
        let mut groups = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(groups),
            Err(e) => return Err(journal::with_path(e, "reading", &dir)),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(group) = name.strip_suffix(".json").filter(|g| !g.starts_with('.')) {
                groups.push(group.to_string());
            }
        }
        groups.sort();
        Ok(groups)
    }

    /// Takes the group's lock, so two deployments of one group never overlap.
    /// The lock is released when the returned file is dropped (or the process dies).
    pub fn lock_group(&self, group: &str) -> io::Result<File> {
        let path = self.private_dir().join("locks").join(format!("{group}.lock"));
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("another deployment of group {group} is in progress (lock {} is held)", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(journal::with_path(e, "locking", &path)),
        }
    }
}

/// The two deployment pointers CodeDeploy keeps per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointer {
    /// The last deployment whose Install succeeded: ApplicationStop and the
    /// BlockTraffic hooks run from its revision.
    LastSuccessful,
    /// The last deployment whose revision was downloaded.
    MostRecent,
}

/// Where a deployment is, as `edgedeploy-agent status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Running (or interrupted, when no agent is running it).
    InProgress,
    /// Every event succeeded.
    Succeeded,
    /// An event failed.
    Failed,
}

/// The status record of a group's last deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Deployment group id (the folder under the root).
    pub group: String,
    /// Deployment id.
    pub deployment_id: String,
    /// Application name.
    pub application: String,
    /// Where the deployment is.
    pub phase: Phase,
    /// The event running, or the one that failed.
    pub event: Option<String>,
    /// Seconds since the epoch when it started.
    pub started: u64,
    /// Seconds since the epoch when it ended.
    pub finished: Option<u64>,
    /// The outcome message.
    pub message: String,
}

/// Removes unpack directories left by interrupted deployments of `group`.
pub fn remove_partial_archives(root: &Root, group: &str) -> io::Result<usize> {
    let mut removed = 0;
    for dir in deployment_dirs(root, group)? {
        let partial = dir.join(PARTIAL_ARCHIVE_DIR);
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| journal::with_path(e, "removing", &partial))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Keeps the newest `max_revisions` deployment directories of `group`
/// (counting `current`) and removes older ones, never the one the
/// last-successful pointer names, nor `current`.
pub fn apply_retention(root: &Root, group: &str, max_revisions: usize, current: &Path) -> io::Result<usize> {
    let keep_always = [root.read_pointer(group, Pointer::LastSuccessful)?, Some(current.to_path_buf())];
    let mut dirs: Vec<(SystemTime, PathBuf)> = Vec::new();
    for dir in deployment_dirs(root, group)? {
        let modified = fs::metadata(&dir).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        dirs.push((modified, dir));
    }
    dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut removed = 0;
    for (_, dir) in dirs.into_iter().skip(max_revisions.max(1)) {
        if keep_always.iter().flatten().any(|k| *k == dir) {
            continue;
        }
        fs::remove_dir_all(&dir).map_err(|e| journal::with_path(e, "removing old revision", &dir))?;
        removed += 1;
    }
    Ok(removed)
}

/// The deployment directories of `group`.
fn deployment_dirs(root: &Root, group: &str) -> io::Result<Vec<PathBuf>> {
    let group_dir = root.group_dir(group);
    let entries = match fs::read_dir(&group_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(journal::with_path(e, "reading", &group_dir)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| journal::with_path(e, "reading", &group_dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Checks that `name` can be a single folder name under the root.
pub fn check_folder_name(what: &str, name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.len() > 128
        || name.chars().any(|c| c == '/' || c == '\0' || c.is_control());
    if bad {
        return Err(format!(
            "{what} {name:?} cannot be a folder name (1 to 128 characters, no '/', not starting with '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("edstate-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = Root::new(&dir);
        root.create().unwrap();
        root
    }

    #[test]
    fn retention_keeps_newest_and_last_successful() {
        let root = temp_root("retention");
        let names = ["d-1", "d-2", "d-3", "d-4", "d-5"];
        for name in names {
            fs::create_dir_all(root.deployment_dir("g", name)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        root.write_pointer("g", Pointer::LastSuccessful, &root.deployment_dir("g", "d-1")).unwrap();
        let removed = apply_retention(&root, "g", 2, &root.deployment_dir("g", "d-5")).unwrap();
        assert_eq!(removed, 2);
        let left: Vec<bool> = names.iter().map(|n| root.deployment_dir("g", n).exists()).collect();
        assert_eq!(left, [true, false, false, true, true]);
        fs::remove_dir_all(root.dir()).unwrap();
    }

    #[test]
    fn pointers_and_status_round_trip() {
        let root = temp_root("pointers");
        assert_eq!(root.read_pointer("g", Pointer::MostRecent).unwrap(), None);
        root.write_pointer("g", Pointer::MostRecent, Path::new("/r/g/d-1")).unwrap();
        assert_eq!(root.read_pointer("g", Pointer::MostRecent).unwrap(), Some(PathBuf::from("/r/g/d-1")));
        let status = DeploymentStatus {
            group: "g".into(),
            deployment_id: "d-1".into(),
            application: "app".into(),
            phase: Phase::Failed,
            event: Some("Install".into()),
            started: 1,
            finished: Some(2),
            message: "boom".into(),
        };
        root.write_status(&status).unwrap();
        assert_eq!(root.read_status("g").unwrap(), Some(status));
        assert_eq!(root.groups().unwrap(), vec!["g".to_string()]);
        fs::remove_dir_all(root.dir()).unwrap();
    }

    #[test]
    fn group_lock_is_exclusive() {
        let root = temp_root("lock");
        let held = root.lock_group("g").unwrap();
        let err = root.lock_group("g").unwrap_err();
        assert!(err.to_string().contains("another deployment of group g"), "{err}");
        drop(held);
        root.lock_group("g").unwrap();
        fs::remove_dir_all(root.dir()).unwrap();
    }

    #[test]
    fn folder_names_are_checked() {
        assert!(check_folder_name("group", "default-local-deployment-group").is_ok());
        for bad in ["", "..", ".hidden", "a/b"] {
            assert!(check_folder_name("group", bad).is_err(), "{bad}");
        }
    }
}
