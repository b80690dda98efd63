//! Parse and validate `appspec.yml` (CodeDeploy AppSpec, `os: linux`).
//!
//! INTERFACE (owned by the appspec work; other modules rely on these types).
//!
//! The text is parsed into a `serde_yaml::Value` within bounds (see
//! `yaml.rs`: size, nesting, aliases, duplicate keys) and validated by hand, so
//! that every error names the key path and the value, e.g.
//! `files[1].destination: "relative/dir" is not an absolute path`. What is
//! accepted, and where it differs from CodeDeploy, is in `docs/appspec.md`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod document;
mod events;
mod glob;
mod load;
mod mode;
mod paths;
mod permissions;
mod value;
pub(crate) mod yaml;

/// The AppSpec file name a revision has unless the deployment names
/// another; `appspec.yaml` is tried when it is missing.
pub const DEFAULT_APPSPEC_FILENAME: &str = "appspec.yml";

/// The largest AppSpec accepted, in bytes (it comes from outside).
pub const MAX_APPSPEC_SIZE: u64 = 1 << 20;

/// A validated AppSpec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// `files`: what to copy where, in the order written.
    pub files: Vec<FileMapping>,
    /// `file_exists_behavior`, when the AppSpec sets it.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    /// `permissions`, in the order written.
    pub permissions: Vec<Permission>,
    /// `hooks`: scripts per lifecycle event, in the order written.
    pub hooks: Vec<(LifecycleEvent, Vec<Script>)>,
}

/// One `files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    /// Path inside the revision, relative, normalized (no `.`/`..`);
    /// empty for `/` (the whole revision).
    pub source: PathBuf,
    /// Absolute destination directory on the device, normalized.
    pub destination: PathBuf,
}

/// What to do when a file to install already exists and is not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileExistsBehavior {
    /// Fail the deployment (the default).
    Disallow,
    /// Replace the existing file.
    Overwrite,
    /// Keep the existing file; do not install the revision's.
    Retain,
}

/// The kind of filesystem object a permission applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// Regular files (and symlinks, which CodeDeploy counts as files).
    File,
    /// Directories.
    Directory,
}

/// An SELinux context (`context:` of a permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelinuxContext {
    /// SELinux user, e.g. `system_u`.
    pub user: Option<String>,
    /// SELinux type, e.g. `httpd_sys_content_t` (required).
    pub type_: String,
    /// Sensitivity range, e.g. `s0`.
    pub range: Option<String>,
}

/// One `permissions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// Absolute path of the file or directory the entry is about.
    pub object: PathBuf,
    /// Glob for the names under `object`; `**` (everything) by default.
    pub pattern: String,
    /// Globs for names under `object` to leave alone.
    pub except: Vec<String>,
    /// Owner name (or numeric id).
    pub owner: Option<String>,
    /// Group name (or numeric id).
    pub group: Option<String>,
    /// Mode bits, e.g. 0o644.
    pub mode: Option<u32>,
    /// ACL entries for setfacl, e.g. `u:bob:rw`.
    pub acls: Vec<String>,
    /// SELinux context.
    pub context: Option<SelinuxContext>,
    /// Types the entry applies to; empty means files and directories.
    pub types: Vec<ObjectType>,
}

/// One script of a lifecycle hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Path of the script inside the revision, as written in the AppSpec.
    pub location: String,
    /// How long the script may run; 3600 s by default.
    pub timeout: Duration,
    /// User to run as; the agent's own user when absent.
    pub runas: Option<String>,
}

/// Lifecycle events of an in-place deployment, in CodeDeploy's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LifecycleEvent {
    /// Before instances are taken out of a load balancer.
    BeforeBlockTraffic,
    /// After instances are taken out of a load balancer.
    AfterBlockTraffic,
    /// Stop the running application (scripts of the last successful revision).
    ApplicationStop,
    /// The agent downloads and unpacks the revision (no scripts).
    DownloadBundle,
    /// Before files are installed.
    BeforeInstall,
    /// The agent installs the files (no scripts).
    Install,
    /// After files are installed.
    AfterInstall,
    /// Start the application.
    ApplicationStart,
    /// Check the application works.
    ValidateService,
    /// Before instances are put back into a load balancer.
    BeforeAllowTraffic,
    /// After instances are put back into a load balancer.
    AfterAllowTraffic,
}

impl LifecycleEvent {
    /// All events, in execution order.
    pub const ALL: [LifecycleEvent; 11] = [
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::DownloadBundle,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::Install,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    /// The name as written in AppSpecs and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            LifecycleEvent::BeforeBlockTraffic => "BeforeBlockTraffic",
            LifecycleEvent::AfterBlockTraffic => "AfterBlockTraffic",
            LifecycleEvent::ApplicationStop => "ApplicationStop",
            LifecycleEvent::DownloadBundle => "DownloadBundle",
            LifecycleEvent::BeforeInstall => "BeforeInstall",
            LifecycleEvent::Install => "Install",
            LifecycleEvent::AfterInstall => "AfterInstall",
            LifecycleEvent::ApplicationStart => "ApplicationStart",
            LifecycleEvent::ValidateService => "ValidateService",
            LifecycleEvent::BeforeAllowTraffic => "BeforeAllowTraffic",
            LifecycleEvent::AfterAllowTraffic => "AfterAllowTraffic",
        }
    }

    /// Parses an event name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// True for the events whose scripts come from the last successful
    /// revision rather than the one being deployed.
    pub fn runs_from_last_successful(self) -> bool {
        matches!(
            self,
            LifecycleEvent::ApplicationStop | LifecycleEvent::BeforeBlockTraffic | LifecycleEvent::AfterBlockTraffic
        )
    }

    /// True for the events the agent performs itself (no scripts allowed).
    pub fn is_agent_event(self) -> bool {
        matches!(self, LifecycleEvent::DownloadBundle | LifecycleEvent::Install)
    }
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an AppSpec was refused: the file, the key and the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpecError {
    /// Human-readable message naming the key and the value.
    pub message: String,
}

impl fmt::Display for AppSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppSpecError {}

impl AppSpec {
    /// Parses and validates AppSpec text. Errors name the key path and the
    /// value (`permissions[0].mode: "0999" is not an octal mode ...`), or the
    /// line and column of malformed YAML. Text larger than
    /// [`MAX_APPSPEC_SIZE`] is refused.
    pub fn parse(text: &str) -> Result<AppSpec, AppSpecError> {
        document::parse(text)
    }

    /// Finds `filename` in `archive_dir` (falling back from `appspec.yml` to
    /// `appspec.yaml` when `filename` is the default) and parses it.
    ///
    /// Errors start with the path of the file. The file must resolve to a
    /// regular file inside `archive_dir` (links out of it are refused) of at
    /// most [`MAX_APPSPEC_SIZE`] bytes of UTF-8.
    pub fn load(archive_dir: &Path, filename: &str) -> Result<AppSpec, AppSpecError> {
        load::load(archive_dir, filename)
    }

    /// Refuses setuid and setgid bits in `permissions` modes unless
    /// `allow_setuid` (the agent's `allow_setuid` switch, which rules archive
    /// entries too). The error names the entry and its mode.
    pub fn check_setuid(&self, allow_setuid: bool) -> Result<(), AppSpecError> {
        match permissions::setuid_problem(&self.permissions).filter(|_| !allow_setuid) {
            Some(message) => Err(AppSpecError { message }),
            None => Ok(()),
        }
    }

    /// The scripts for `event` (empty when the AppSpec has none).
    pub fn scripts(&self, event: LifecycleEvent) -> &[Script] {
        self.hooks.iter().find(|(e, _)| *e == event).map(|(_, s)| s.as_slice()).unwrap_or(&[])
    }
}

impl Permission {
    /// True when this entry applies to `path` (absolute, on the device),
    /// which is a directory when `is_dir`: `path` is `object` itself or lies
    /// under it, matches `pattern`, matches no `except`, and its type is in
    /// `types`. Pure: no filesystem access.
    ///
    /// CodeDeploy's rules, in detail:
    /// - Under `object` (a directory), `pattern` `**` selects everything at
    ///   any depth; any other pattern is a glob matched against the path
    ///   relative to `object` (`*` and `?` stay within one component, `**`
    ///   as a component spans components), so `*.txt` selects only direct
    ///   children.
    /// - `except` globs are matched the same way; one starting with `/` is
    ///   matched against the whole absolute path.
    /// - `object` itself: never when it is a directory; when it is a file,
    ///   only if `types` allows files, `pattern` is `**` and `except` is
    ///   empty (see [`Permission::check_file_object`]).
    /// - Paths that are relative or contain `..` never match.
    pub fn applies_to(&self, path: &Path, is_dir: bool) -> bool {
        permissions::applies_to(self, path, is_dir)
    }

    /// For the installer, when `object` turns out to be a file: CodeDeploy
    /// fails such an entry if it applies to files yet narrows with a
    /// `pattern` other than `**` or with `except`. The error names the object.
    pub fn check_file_object(&self) -> Result<(), AppSpecError> {
        match permissions::file_object_problem(self) {
            Some(message) => Err(AppSpecError { message: format!("permissions: {message}") }),
            None => Ok(()),
        }
    }
}
