//! Lifecycle hooks: run the scripts of an event under a single-threaded
//! supervisor, as CodeDeploy does (see `docs/hooks.md` for the contract).
//!
//! - [`launch`]: path resolution, executable checks, runas, environment, spawn.
//! - [`supervise`]: poll(2) on the script's pipes with deadlines; timeout
//!   escalation TERM → KILL on the process group.
//! - [`log`]: `scripts.log` (capped), the deployments log, the output tail.

mod launch;
mod log;
mod supervise;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use crate::appspec::{LifecycleEvent, Script};
use crate::diagnostic::{Diagnostic, ErrorCode};

pub use log::ScriptLog;

use launch::LaunchError;
use supervise::Ending;

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

/// Runs the `scripts` of `event` in order, stopping at the first failure.
/// Script locations are relative to `archive_dir`. `env` holds the
/// deployment variables (DEPLOYMENT_ID, ...); LIFECYCLE_EVENT is added here.
///
/// The diagnostic's `log` is the last 4 KiB of what the event wrote to
/// `scripts.log` (without timestamps); its `script_name` is the location of
/// the script that failed.
pub fn run_event(
    event: LifecycleEvent,
    scripts: &[Script],
    archive_dir: &Path,
    env: &[(String, String)],
    log: &mut ScriptLog,
    supervision: &Supervision,
) -> Diagnostic {
    if scripts.is_empty() {
        return Diagnostic::success("Succeeded");
    }
    log.start_event(event.name());
    let mut diagnostic = scripts
        .iter()
        .find_map(|script| run_script(event, script, archive_dir, env, log, supervision).err())
        .unwrap_or_else(|| Diagnostic::success("Succeeded"));
    log.flush();
    diagnostic.log = log.tail();
    diagnostic
}

/// Runs one script to its end; the failure diagnostic (without its log)
/// when it did not succeed.
fn run_script(
    event: LifecycleEvent,
    script: &Script,
    archive_dir: &Path,
    env: &[(String, String)],
    log: &mut ScriptLog,
    supervision: &Supervision,
) -> Result<(), Diagnostic> {
    log.start_script(&script.location);
    let location = &script.location;
    let path = launch::resolve(archive_dir, location).map_err(|e| {
        failure(
            ErrorCode::UnknownError,
            script,
            format!("Script location {location} leaves the deployment archive: {e}"),
        )
    })?;
    launch::prepare(archive_dir, &path).map_err(|e| launch_failure(script, e))?;
    let identity =
        launch::identity(script.runas.as_deref()).map_err(|m| failure(ErrorCode::UnknownError, script, m))?;
    let child = launch::spawn(&path, event.name(), env, identity.as_ref()).map_err(|e| launch_failure(script, e))?;
    let ending = supervise::supervise(child, script.timeout, supervision, log).map_err(|e| {
        failure(ErrorCode::UnknownError, script, format!("Supervising script at specified location: {location}: {e}"))
    })?;
    judge(script, ending)
}

/// The verdict on a script that ran: success, failure or timeout.
fn judge(script: &Script, ending: Ending) -> Result<(), Diagnostic> {
    let location = &script.location;
    match ending {
        Ending::TimedOut => Err(failure(
            ErrorCode::ScriptTimedOut,
            script,
            format!(
                "Script at specified location: {location} failed to complete in {} seconds",
                seconds(script.timeout)
            ),
        )),
        Ending::Exited { status, .. } if status.success() => Ok(()),
        Ending::Exited { status, .. } => Err(failure(ErrorCode::ScriptFailed, script, exit_message(location, status))),
    }
}

/// Why a script that exited failed: its exit code or the signal.
fn exit_message(location: &str, status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("Script at specified location: {location} failed with exit code {code}"),
        (None, Some(sig)) => {
            format!("Script at specified location: {location} was killed by signal {sig} ({})", signal_name(sig))
        }
        (None, None) => format!("Script at specified location: {location} failed ({status})"),
    }
}

/// The diagnostic for a script that could not be started.
fn launch_failure(script: &Script, error: LaunchError) -> Diagnostic {
    let location = &script.location;
    match error {
        LaunchError::Missing(path) => failure(
            ErrorCode::ScriptMissing,
            script,
            format!("Script does not exist at specified location: {}", path.display()),
        ),
        LaunchError::NotExecutable(why) => failure(
            ErrorCode::ScriptNotExecutable,
            script,
            format!("Script at specified location: {location} is not executable: {why}"),
        ),
        LaunchError::Unknown(message) => failure(ErrorCode::UnknownError, script, message),
    }
}

fn failure(error_code: ErrorCode, script: &Script, message: String) -> Diagnostic {
    Diagnostic { error_code, script_name: script.location.clone(), message, log: String::new() }
}

/// Whole seconds when the timeout is whole, else with a fraction.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 { d.as_secs().to_string() } else { format!("{:.3}", d.as_secs_f64()) }
}

/// The usual name of signal `sig`.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(location: &str) -> Script {
        Script { location: location.into(), timeout: Duration::from_secs(60), runas: None }
    }

    #[test]
    fn judges_exit_statuses() {
        let s = script("scripts/a.sh");
        let exited = |raw| Ending::Exited { status: ExitStatus::from_raw(raw), abandoned: false };
        assert_eq!(judge(&s, exited(0)), Ok(()));
        let d = judge(&s, exited(3 << 8)).expect_err("exit 3");
        assert_eq!(d.error_code, ErrorCode::ScriptFailed);
        assert_eq!(d.message, "Script at specified location: scripts/a.sh failed with exit code 3");
        assert_eq!(d.script_name, "scripts/a.sh");
        let d = judge(&s, exited(libc::SIGKILL)).expect_err("killed");
        assert!(d.message.ends_with("was killed by signal 9 (SIGKILL)"), "{}", d.message);
        let d = judge(&s, Ending::TimedOut).expect_err("timeout");
        assert_eq!(d.error_code, ErrorCode::ScriptTimedOut);
        assert_eq!(d.message, "Script at specified location: scripts/a.sh failed to complete in 60 seconds");
    }

    #[test]
    fn abandoned_output_does_not_change_the_verdict() {
        let s = script("a.sh");
        let ok = Ending::Exited { status: ExitStatus::from_raw(0), abandoned: true };
        assert_eq!(judge(&s, ok), Ok(()));
    }

    #[test]
    fn launch_errors_map_to_codeploy_codes() {
        let s = script("x.sh");
        let d = launch_failure(&s, LaunchError::Missing("/a/x.sh".into()));
        assert_eq!(
            (d.error_code, d.message.as_str()),
            (ErrorCode::ScriptMissing, "Script does not exist at specified location: /a/x.sh")
        );
        let d = launch_failure(&s, LaunchError::NotExecutable("why".into()));
        assert_eq!(d.error_code, ErrorCode::ScriptNotExecutable);
        let d = launch_failure(&s, LaunchError::Unknown("boom".into()));
        assert_eq!((d.error_code, d.message.as_str()), (ErrorCode::UnknownError, "boom"));
    }

    #[test]
    fn fractional_timeouts_are_printed_exactly() {
        assert_eq!(seconds(Duration::from_secs(3600)), "3600");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
    }
}
