//! Lifecycle hooks: pick the scripts of an event and run them under a
//! single-threaded supervisor. INTERFACE (owned by the hooks work).

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::appspec::{LifecycleEvent, Script};
use crate::diagnostic::Diagnostic;

/// How scripts are supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// Time between SIGTERM and SIGKILL when a script times out. Default 5 s.
    pub kill_grace: Duration,
    /// How long to keep reading output after the script exited while
    /// background processes still hold its stdout/stderr. Default 2 s.
    pub output_grace: Duration,
    /// Cap on the size of a deployment's `logs/scripts.log`. Default 1 MiB.
    pub max_log_bytes: u64,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision { kill_grace: Duration::from_secs(5), output_grace: Duration::from_secs(2), max_log_bytes: 1 << 20 }
    }
}

/// Where script output goes: the deployment's `logs/scripts.log` (capped)
/// and the agent-wide `deployment-logs/edgedeploy-deployments.log`.
pub struct ScriptLog {
    _private: (),
}

impl ScriptLog {
    /// Opens (appending, creating) both logs for `deployment_id`.
    pub fn open(
        _scripts_log: &Path,
        _deployments_log: &Path,
        _deployment_id: &str,
        _max_bytes: u64,
    ) -> io::Result<Self> {
        todo!("hooks work")
    }
}

/// Runs the `scripts` of `event` in order, stopping at the first failure.
/// Script locations are relative to `archive_dir`. `env` holds the
/// deployment variables (DEPLOYMENT_ID, ...); LIFECYCLE_EVENT is added here.
pub fn run_event(
    _event: LifecycleEvent,
    _scripts: &[Script],
    _archive_dir: &Path,
    _env: &[(String, String)],
    _log: &mut ScriptLog,
    _supervision: &Supervision,
) -> Diagnostic {
    todo!("hooks work")
}
