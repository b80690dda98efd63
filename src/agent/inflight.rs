//! The in-flight record, `<root>/.edgedeploy/inflight.json`: the one host
//! command the agent is working on, written durably before anything else is
//! done for it, and what a restarted agent does with it.
//!
//! States (the only two):
//! - `Received`: the command is known; its event has not started. Nothing
//!   on the device changed for it. Recovery: acknowledge again and execute.
//! - `Running`: the event may have started changing the device. Recovery
//!   depends on the event: DownloadBundle and Install are re-executed (the
//!   download resumes; the install rolls forward, see docs/install.md); a
//!   hook is never run twice: the event is reported Failed.
//!
//! The record is removed once the event's completion is in the outbox.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::appspec::LifecycleEvent;
use crate::diagnostic::Diagnostic;
use crate::journal;
use crate::protocol::command::HostCommandInstance;

/// Where the kernel publishes this boot's random id.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Known; its event has not started.
    Received,
    /// Its event may have started.
    Running,
}

/// The in-flight command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// HostCommandIdentifier.
    pub host_command_identifier: String,
    /// DeploymentExecutionId (for GetDeploymentSpecification).
    pub deployment_execution_id: String,
    /// The lifecycle event (CommandName).
    pub command_name: String,
    /// Received or Running.
    pub state: Stage,
    /// Boot id when the state was written: tells a reboot from an agent restart.
    pub boot_id: String,
    /// Seconds since the epoch when the command was received.
    pub received: u64,
    /// The deployment, once the specification is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Its deployment group id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

impl InFlight {
    /// A command just received.
    pub fn received(command: &HostCommandInstance, boot_id: &str, now: u64) -> InFlight {
        InFlight {
            host_command_identifier: command.host_command_identifier.clone(),
            deployment_execution_id: command.deployment_execution_id.clone(),
            command_name: command.command_name.clone(),
            state: Stage::Received,
            boot_id: boot_id.to_string(),
            received: now,
            deployment_id: None,
            group_id: None,
        }
    }

    /// The same command, its event about to start for `deployment` of `group`.
    pub fn running(&self, deployment: &str, group: &str, boot_id: &str) -> InFlight {
        InFlight {
            state: Stage::Running,
            boot_id: boot_id.to_string(),
            deployment_id: Some(deployment.to_string()),
            group_id: Some(group.to_string()),
            ..self.clone()
        }
    }

    /// The command's lifecycle event, if the name is one.
    pub fn event(&self) -> Option<LifecycleEvent> {
        LifecycleEvent::from_name(&self.command_name)
    }
}

/// What to do with a command found in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Acknowledge (again) and execute: the event never started.
    Execute,
    /// Execute the event again: it is safe to repeat (DownloadBundle resumes,
    /// Install rolls forward).
    Reexecute,
    /// Report the event Failed without running it again: a hook may have
    /// had effects; running it twice is not safe.
    ReportInterrupted,
}

/// The recovery table.
pub fn decide(state: Stage, event: Option<LifecycleEvent>) -> Resume {
    match (state, event) {
        (Stage::Received, _) => Resume::Execute,
        (Stage::Running, Some(LifecycleEvent::DownloadBundle | LifecycleEvent::Install)) => Resume::Reexecute,
        (Stage::Running, _) => Resume::ReportInterrupted,
    }
}

/// What interrupted a command, from the boot ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The device rebooted or lost power.
    Reboot,
    /// The agent stopped or crashed; the device kept running.
    AgentRestart,
    /// No boot id to compare.
    Unknown,
}

impl Cause {
    /// Compares the boot id recorded with this boot's.
    pub fn of(recorded: &str, current: &str) -> Cause {
        if recorded.is_empty() || current.is_empty() {
            Cause::Unknown
        } else if recorded == current {
            Cause::AgentRestart
        } else {
            Cause::Reboot
        }
    }

    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Reboot => "a reboot or power cut (the boot id changed)",
            Cause::AgentRestart => "an agent crash or stop (same boot)",
            Cause::Unknown => "an agent restart",
        }
    }
}

/// The diagnostic of a hook event interrupted by a restart.
pub fn interrupted(event: &str) -> Diagnostic {
    Diagnostic::unknown(format!("interrupted by agent restart during {event}"))
}

/// This boot's id; empty when the kernel does not publish one.
pub fn boot_id() -> String {
    std::fs::read_to_string(BOOT_ID_FILE).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Reads the record. A record that does not parse is moved aside
/// (`.corrupt`) with an error in the log: the command is then left to the
/// service's timeout.
pub fn read(path: &Path) -> io::Result<Option<InFlight>> {
    let Some(text) = journal::read_optional(path)? else { return Ok(None) };
    match serde_json::from_str(&text) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            log::error!("{}: {e}; moved to {} and ignored", path.display(), aside.display());
            std::fs::rename(path, &aside).map_err(|e| journal::with_path(e, "moving aside", path))?;
            journal::fsync_dir(journal::parent_of(path))?;
            Ok(None)
        }
    }
}

/// Writes the record durably.
pub fn write(path: &Path, record: &InFlight) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    journal::write_atomic(path, &json)
}

/// Removes the record durably.
pub fn clear(path: &Path) -> io::Result<()> {
    journal::remove_durable(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str) -> HostCommandInstance {
        HostCommandInstance {
            host_command_identifier: "hc-1".into(),
            host_identifier: "dev-1".into(),
            deployment_execution_id: "ex-1".into(),
            command_name: name.into(),
            nonce: None,
        }
    }

    #[test]
    fn recovery_table() {
        use LifecycleEvent::*;
        for event in LifecycleEvent::ALL {
            assert_eq!(decide(Stage::Received, Some(event)), Resume::Execute, "{event}");
        }
        assert_eq!(decide(Stage::Received, None), Resume::Execute);
        assert_eq!(decide(Stage::Running, Some(DownloadBundle)), Resume::Reexecute);
        assert_eq!(decide(Stage::Running, Some(Install)), Resume::Reexecute);
        for event in [ApplicationStop, BeforeInstall, AfterInstall, ApplicationStart, ValidateService] {
            assert_eq!(decide(Stage::Running, Some(event)), Resume::ReportInterrupted, "{event}");
        }
        for event in [BeforeBlockTraffic, AfterBlockTraffic, BeforeAllowTraffic, AfterAllowTraffic] {
            assert_eq!(decide(Stage::Running, Some(event)), Resume::ReportInterrupted, "{event}");
        }
    }

    #[test]
    fn transitions_keep_the_command_and_record_the_deployment() {
        let received = InFlight::received(&command("AfterInstall"), "boot-a", 10);
        assert_eq!(received.state, Stage::Received);
        assert_eq!(received.deployment_id, None);
        let running = received.running("d-1", "g-1", "boot-b");
        assert_eq!(running.state, Stage::Running);
        assert_eq!(running.host_command_identifier, "hc-1");
        assert_eq!(running.deployment_execution_id, "ex-1");
        assert_eq!((running.deployment_id.as_deref(), running.group_id.as_deref()), (Some("d-1"), Some("g-1")));
        assert_eq!(running.boot_id, "boot-b");
        assert_eq!(running.event(), Some(LifecycleEvent::AfterInstall));
        assert_eq!(InFlight::received(&command("Frobnicate"), "", 0).event(), None);
    }

    #[test]
    fn boot_ids_tell_a_reboot_from_a_restart() {
        assert_eq!(Cause::of("a", "a"), Cause::AgentRestart);
        assert_eq!(Cause::of("a", "b"), Cause::Reboot);
        assert_eq!(Cause::of("", "b"), Cause::Unknown);
        assert!(!boot_id().is_empty(), "Linux publishes a boot id");
    }

    #[test]
    fn interrupted_hooks_are_unknown_errors_naming_the_event() {
        let d = interrupted("AfterInstall");
        assert_eq!(d.error_code, crate::diagnostic::ErrorCode::UnknownError);
        assert_eq!(d.message, "interrupted by agent restart during AfterInstall");
        assert!(d.script_name.is_empty());
    }

    #[test]
    fn record_round_trips_and_a_corrupt_one_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("edinflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inflight.json");
        assert_eq!(read(&path).unwrap(), None);
        let record = InFlight::received(&command("Install"), "boot", 5).running("d-1", "g", "boot");
        write(&path, &record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record));
        clear(&path).unwrap();
        clear(&path).unwrap();
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(read(&path).unwrap(), None);
        assert!(dir.join("inflight.json.corrupt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
