//! One host command, from the poll to the outbox:
//!
//! 1. A command already in the outbox or the ledger is not executed again:
//!    its completion is sent again.
//! 2. In-flight record `Received`, durably, before anything else.
//! 3. PutHostCommandAcknowledgement; a command the service already closed
//!    (Succeeded/Failed) is dropped.
//! 4. GetDeploymentSpecification, cached durably per deployment.
//! 5. In-flight record `Running`; the group's status record; the event.
//! 6. The completion into the outbox, durably; the in-flight record removed.
//!
//! A command found in flight goes through the recovery table
//! ([`inflight::decide`]).

use crate::appspec::LifecycleEvent;
use crate::client::CallError;
use crate::clock;
use crate::diagnostic::Diagnostic;
use crate::engine::{Deployment, Engine};
use crate::protocol::command::{
    self, CommandStatus, GetDeploymentSpecificationInput, GetDeploymentSpecificationOutput, HostCommandInstance,
    PutHostCommandAcknowledgementInput, PutHostCommandAcknowledgementOutput,
};
use crate::protocol::spec::DeploymentSpec;
use crate::state::{DeploymentStatus, Phase};

use super::inflight::{self, InFlight, Resume};
use super::outbox::Completion;
use super::{Daemon, Pass, StepError, local, spec};
use crate::logger::untrusted;

/// Why no specification could be had.
enum SpecError {
    /// Worth retrying later (network, throttling, server error).
    Call(CallError),
    /// The command cannot run: reported Failed with this message.
    Unusable(String),
}

/// True for failures that may go away by themselves.
fn retryable(e: &CallError) -> bool {
    !matches!(e, CallError::Service { status: 400..=499, .. })
}

/// Longest HostCommandIdentifier or DeploymentExecutionId accepted.
pub const MAX_ID_BYTES: usize = 1024;

/// Why a command the poll returned is not executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It cannot even be reported (no usable HostCommandIdentifier).
    Unreportable(String),
    /// It is reported Failed with this message.
    Report(String),
}

/// Checks a command from the poll before anything is done for it: its
/// ids, its host (it must be `me`) and its event. Pure: no I/O.
pub fn check_command(command: &HostCommandInstance, me: &str) -> Result<(), Refusal> {
    let id = &command.host_command_identifier;
    if id.trim().is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Refusal::Unreportable(format!(
            "HostCommandIdentifier {} is not 1 to {MAX_ID_BYTES} bytes",
            untrusted(id)
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Refusal::Report(format!("HostCommandIdentifier {} holds control characters", untrusted(id))));
    }
    if command.host_identifier != me {
        return Err(Refusal::Report(format!(
            "the command is addressed to host {}, this agent is {}",
            untrusted(&command.host_identifier),
            untrusted(me)
        )));
    }
    let execution = &command.deployment_execution_id;
    if execution.trim().is_empty() || execution.len() > MAX_ID_BYTES || execution.chars().any(char::is_control) {
        return Err(Refusal::Report(format!(
            "DeploymentExecutionId {} is not 1 to {MAX_ID_BYTES} bytes without control characters",
            untrusted(execution)
        )));
    }
    if LifecycleEvent::from_name(&command.command_name).is_none() {
        return Err(Refusal::Report(format!("unknown lifecycle event {}", untrusted(&command.command_name))));
    }
    Ok(())
}

impl Daemon<'_> {
    /// A command the poll returned. `Idle` when nothing new was started
    /// (a completion sent again, a refusal that cannot be reported), so a
    /// server that hands out the same command again and again is polled
    /// at the normal pace, not in a tight loop.
    pub(super) fn accept(&mut self, host_command: HostCommandInstance) -> Result<Pass, StepError> {
        let id = &host_command.host_command_identifier;
        log::info!(
            "received {} (command {}, execution {})",
            untrusted(&host_command.command_name),
            untrusted(id),
            untrusted(&host_command.deployment_execution_id)
        );
        match check_command(&host_command, &self.identity.host_identifier) {
            Ok(()) => {}
            Err(Refusal::Unreportable(reason)) => {
                log::warn!("refused a command: {reason}; not executed, and it cannot be reported");
                return Ok(Pass::Idle);
            }
            Err(Refusal::Report(reason)) => return self.refuse(&host_command, &reason),
        }
        if self.outbox.contains(id) {
            log::info!(
                "command {} was already executed: its completion is in the outbox, sending it again",
                untrusted(id)
            );
            return Ok(Pass::Idle);
        }
        if let Some(entry) = self.outbox.completed(id).map_err(local)? {
            log::info!(
                "command {} was already executed ({:?}): sending its completion again",
                untrusted(id),
                entry.status
            );
            self.outbox.add(&entry.resend(clock::now_epoch().0)).map_err(local)?;
            return Ok(Pass::Idle);
        }
        let record = InFlight::received(&host_command, &self.boot_id, clock::now_epoch().0);
        inflight::write(&self.inflight_path, &record).map_err(local)?;
        self.process(record)?;
        Ok(Pass::Worked)
    }

    /// Reports a refused command Failed (never executed, not acknowledged),
    /// unless its completion was already stored or delivered.
    fn refuse(&mut self, command: &HostCommandInstance, reason: &str) -> Result<Pass, StepError> {
        let id = &command.host_command_identifier;
        if self.outbox.contains(id) || self.outbox.completed(id).map_err(local)?.is_some() {
            log::warn!("refused command {} again ({reason}): it was already reported", untrusted(id));
            return Ok(Pass::Idle);
        }
        log::warn!("refused command {}: {reason}; not executed, reported Failed", untrusted(id));
        let diagnostic = Diagnostic::unknown(format!("refused by the agent: {reason}"));
        let name = untrusted(&command.command_name);
        let completion = Completion::new(id, &name, None, &diagnostic, clock::now_epoch().0);
        self.outbox.add(&completion).map_err(local)?;
        Ok(Pass::Worked)
    }

    /// Works on the in-flight command until its completion is in the outbox.
    pub(super) fn process(&mut self, record: InFlight) -> Result<(), StepError> {
        let id = record.host_command_identifier.clone();
        if self.outbox.contains(&id) || self.outbox.completed(&id).map_err(local)?.is_some() {
            // Killed after the completion was stored, before the record went.
            return inflight::clear(&self.inflight_path).map_err(local);
        }
        let Some(event) = record.event() else {
            let reason = format!("unknown lifecycle event {}", untrusted(&record.command_name));
            log::warn!("refused command {}: {reason}; not executed, reported Failed", untrusted(&id));
            return self.complete(&record, None, &Diagnostic::unknown(reason));
        };
        match inflight::decide(record.state, Some(event)) {
            Resume::Execute => self.execute_new(record, event),
            Resume::Reexecute => {
                let cached = record.deployment_id.as_deref().and_then(|d| self.specs.load(d));
                let spec = match cached {
                    Some(spec) => spec,
                    None => match self.specification(&record) {
                        Ok(spec) => spec,
                        Err(SpecError::Call(e)) => return Err(e.into()),
                        Err(SpecError::Unusable(m)) => return self.refuse_spec(&record, &m),
                    },
                };
                self.run(record, event, &spec)
            }
            Resume::ReportInterrupted => {
                let spec = record.deployment_id.as_deref().and_then(|d| self.specs.load(d));
                let diagnostic = inflight::interrupted(event.name());
                log::warn!("{} of {}: {}", event, record.deployment_id.as_deref().unwrap_or("?"), diagnostic.message);
                self.complete(&record, spec.as_ref(), &diagnostic)
            }
        }
    }

    /// Acknowledges, fetches the specification and runs the event.
    fn execute_new(&mut self, record: InFlight, event: LifecycleEvent) -> Result<(), StepError> {
        let id = record.host_command_identifier.clone();
        let input = PutHostCommandAcknowledgementInput { host_command_identifier: id.clone(), diagnostics: None };
        let ack: Result<PutHostCommandAcknowledgementOutput, CallError> =
            self.client.call(command::TARGET_PREFIX, command::SIGNING_NAME, "PutHostCommandAcknowledgement", &input);
        match ack {
            Ok(out) => {
                if let Some(status @ (CommandStatus::Failed | CommandStatus::Succeeded)) = out.command_status {
                    log::info!("the service already closed command {id} ({status:?}): {event} is not executed");
                    return inflight::clear(&self.inflight_path).map_err(local);
                }
            }
            Err(e) if !retryable(&e) => {
                log::warn!("the service refused the acknowledgement of command {id}: {e}; {event} is not executed");
                return inflight::clear(&self.inflight_path).map_err(local);
            }
            Err(e) => return Err(e.into()),
        }
        match self.specification(&record) {
            Ok(spec) => self.run(record, event, &spec),
            Err(SpecError::Call(e)) => Err(e.into()),
            Err(SpecError::Unusable(message)) => self.refuse_spec(&record, &message),
        }
    }

    /// Completes a command whose specification cannot be used: Failed,
    /// with one log line naming the reason.
    fn refuse_spec(&mut self, record: &InFlight, reason: &str) -> Result<(), StepError> {
        let reason = untrusted(reason);
        log::warn!(
            "refused the specification of {} (command {}): {reason}; not executed, reported Failed",
            record.command_name,
            untrusted(&record.host_command_identifier)
        );
        self.complete(record, None, &Diagnostic::unknown(reason))
    }

    /// GetDeploymentSpecification, decoded and cached.
    fn specification(&self, record: &InFlight) -> Result<DeploymentSpec, SpecError> {
        let input = GetDeploymentSpecificationInput {
            deployment_execution_id: record.deployment_execution_id.clone(),
            host_identifier: self.identity.host_identifier.clone(),
        };
        let output: GetDeploymentSpecificationOutput = self
            .client
            .call(command::TARGET_PREFIX, command::SIGNING_NAME, "GetDeploymentSpecification", &input)
            .map_err(|e| {
                if retryable(&e) {
                    SpecError::Call(e)
                } else {
                    SpecError::Unusable(format!("the deployment specification could not be had: {e}"))
                }
            })?;
        let (spec, json) = spec::decode(output).map_err(SpecError::Unusable)?;
        if let Err(e) = self.specs.store(&spec.deployment_id, &json) {
            // Only recovery without the service needs it; it is fetched again otherwise.
            log::warn!("caching the specification of {}: {e}", spec.deployment_id);
        }
        Ok(spec)
    }

    /// Runs `event` of the deployment `spec` describes, and stores its completion.
    fn run(&mut self, record: InFlight, event: LifecycleEvent, spec: &DeploymentSpec) -> Result<(), StepError> {
        let deployment = match spec::to_deployment(spec) {
            Ok(d) => d,
            Err(message) => {
                let message = untrusted(&message);
                log::warn!(
                    "refused {} of {}: unusable revision: {message}; not executed, reported Failed",
                    record.command_name,
                    untrusted(&spec.deployment_id)
                );
                return self.complete(&record, Some(spec), &Diagnostic::unknown(message));
            }
        };
        let running = record.running(&deployment.deployment_id, &deployment.group_id, &self.boot_id);
        inflight::write(&self.inflight_path, &running).map_err(local)?;
        self.record_status(&deployment, event, Phase::InProgress, "");
        log::info!(
            "{event} of deployment {} ({}): starting",
            deployment.deployment_id,
            untrusted(&deployment.application)
        );
        let started = std::time::Instant::now();
        let diagnostic = self.execute(&deployment, event);
        if event == LifecycleEvent::DownloadBundle && !diagnostic.is_success() && self.stop.stop_requested() {
            // The stop may have caused the failure; the download resumes at the next start.
            return Err(StepError::Stopped);
        }
        let took = started.elapsed().as_secs_f64();
        if diagnostic.is_success() {
            log::info!("{event} of deployment {}: succeeded in {took:.1}s: {}", deployment.deployment_id, diagnostic);
        } else {
            log::warn!("{event} of deployment {}: FAILED after {took:.1}s: {diagnostic}", deployment.deployment_id);
        }
        self.complete(&running, Some(spec), &diagnostic)
    }

    /// The event itself, under the group's lock.
    fn execute(&self, deployment: &Deployment, event: LifecycleEvent) -> Diagnostic {
        let _group_lock = match self.root.lock_group(&deployment.group_id) {
            Ok(lock) => lock,
            Err(e) => return Diagnostic::unknown(e.to_string()),
        };
        let engine = Engine::new(self.config).with_bundle_store(&self.store, &self.boot_id);
        let mut log = match engine.open_log(deployment) {
            Ok(log) => log,
            Err(e) => return Diagnostic::unknown(format!("opening the script log: {e}")),
        };
        engine.execute(deployment, event, &mut log)
    }

    /// Stores the completion durably, then forgets the in-flight record.
    fn complete(
        &mut self,
        record: &InFlight,
        spec: Option<&DeploymentSpec>,
        diagnostic: &Diagnostic,
    ) -> Result<(), StepError> {
        let completion = Completion::new(
            &record.host_command_identifier,
            &record.command_name,
            record.deployment_id.as_deref(),
            diagnostic,
            clock::now_epoch().0,
        );
        self.outbox.add(&completion).map_err(local)?;
        if let Some(deployment) = spec.and_then(|s| spec::to_deployment(s).ok()) {
            let phase = if !diagnostic.is_success() {
                Phase::Failed
            } else if spec::is_last_event(spec, &record.command_name) {
                Phase::Succeeded
            } else {
                Phase::InProgress
            };
            let event = LifecycleEvent::from_name(&record.command_name);
            if let Some(event) = event {
                self.record_status(&deployment, event, phase, &diagnostic.to_string());
            }
        }
        inflight::clear(&self.inflight_path).map_err(local)
    }

    /// Updates the group's status record (read by `edgedeploy-agent status`).
    fn record_status(&self, d: &Deployment, event: LifecycleEvent, phase: Phase, message: &str) {
        let now = clock::now_epoch().0;
        let started = match self.root.read_status(&d.group_id) {
            Ok(Some(s)) if s.deployment_id == d.deployment_id => s.started,
            _ => now,
        };
        let status = DeploymentStatus {
            group: d.group_id.clone(),
            deployment_id: d.deployment_id.clone(),
            application: d.application.clone(),
            phase,
            event: Some(event.name().to_string()),
            started,
            finished: (phase != Phase::InProgress).then_some(now),
            message: message.to_string(),
        };
        if let Err(e) = self.root.write_status(&status) {
            log::warn!("recording the status of {}: {e}", d.deployment_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str, host: &str, execution: &str, name: &str) -> HostCommandInstance {
        HostCommandInstance {
            host_command_identifier: id.into(),
            host_identifier: host.into(),
            deployment_execution_id: execution.into(),
            command_name: name.into(),
            nonce: None,
        }
    }

    fn reason(refusal: Result<(), Refusal>) -> String {
        match refusal {
            Err(Refusal::Report(m)) => format!("report: {m}"),
            Err(Refusal::Unreportable(m)) => format!("drop: {m}"),
            Ok(()) => "ok".into(),
        }
    }

    #[test]
    fn a_command_for_this_host_with_a_known_event_is_accepted() {
        assert_eq!(check_command(&command("hc-1", "dev-1", "e-1", "BeforeInstall"), "dev-1"), Ok(()));
    }

    #[test]
    fn a_command_for_another_host_is_reported_not_executed() {
        let r = reason(check_command(&command("hc-1", "dev-2", "e-1", "BeforeInstall"), "dev-1"));
        assert_eq!(r, "report: the command is addressed to host dev-2, this agent is dev-1");
        // Exact comparison: no case folding, no trimming.
        assert!(check_command(&command("hc-1", "DEV-1", "e-1", "Install"), "dev-1").is_err());
        assert!(check_command(&command("hc-1", "dev-1 ", "e-1", "Install"), "dev-1").is_err());
    }

    #[test]
    fn bad_ids_and_unknown_events_are_refused_with_the_reason() {
        assert!(reason(check_command(&command("", "h", "e", "Install"), "h")).starts_with("drop: "));
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let r = reason(check_command(&command(&long, "h", "e", "Install"), "h"));
        assert!(r.starts_with("drop: HostCommandIdentifier xxx") && r.len() < 400, "{r}");
        let r = reason(check_command(&command("hc\n1", "h", "e", "Install"), "h"));
        assert_eq!(r, "report: HostCommandIdentifier hc\\n1 holds control characters");
        assert!(reason(check_command(&command("hc", "h", "", "Install"), "h")).contains("DeploymentExecutionId"));
        let r = reason(check_command(&command("hc", "h", "e", "Frobnicate\u{1b}[2K"), "h"));
        assert_eq!(r, "report: unknown lifecycle event Frobnicate\\u{1b}[2K");
    }
}
