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
use super::{Daemon, StepError, local, spec};

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

impl Daemon<'_> {
    /// A command the poll returned.
    pub(super) fn accept(&mut self, host_command: HostCommandInstance) -> Result<(), StepError> {
        let id = &host_command.host_command_identifier;
        log::info!(
            "received {} (command {id}, execution {})",
            host_command.command_name,
            host_command.deployment_execution_id
        );
        if self.outbox.contains(id) {
            log::info!("command {id} was already executed: its completion is in the outbox, sending it again");
            return Ok(());
        }
        if let Some(entry) = self.outbox.completed(id).map_err(local)? {
            log::info!("command {id} was already executed ({:?}): sending its completion again", entry.status);
            return self.outbox.add(&entry.resend(clock::now_epoch().0)).map_err(local);
        }
        let record = InFlight::received(&host_command, &self.boot_id, clock::now_epoch().0);
        inflight::write(&self.inflight_path, &record).map_err(local)?;
        self.process(record)
    }

    /// Works on the in-flight command until its completion is in the outbox.
    pub(super) fn process(&mut self, record: InFlight) -> Result<(), StepError> {
        let id = record.host_command_identifier.clone();
        if self.outbox.contains(&id) || self.outbox.completed(&id).map_err(local)?.is_some() {
            // Killed after the completion was stored, before the record went.
            return inflight::clear(&self.inflight_path).map_err(local);
        }
        let Some(event) = record.event() else {
            let diagnostic = Diagnostic::unknown(format!("unknown lifecycle event {:?}", record.command_name));
            return self.complete(&record, None, &diagnostic);
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
                        Err(SpecError::Unusable(m)) => return self.complete(&record, None, &Diagnostic::unknown(m)),
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
            Err(SpecError::Unusable(message)) => self.complete(&record, None, &Diagnostic::unknown(message)),
        }
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
            Err(message) => return self.complete(&record, Some(spec), &Diagnostic::unknown(message)),
        };
        let running = record.running(&deployment.deployment_id, &deployment.group_id, &self.boot_id);
        inflight::write(&self.inflight_path, &running).map_err(local)?;
        self.record_status(&deployment, event, Phase::InProgress, "");
        log::info!("{event} of deployment {} ({}): starting", deployment.deployment_id, deployment.application);
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
