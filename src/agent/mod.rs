//! The daemon, `edgedeploy-agent run`: poll the command API, execute one
//! lifecycle event per host command, report it, survive any kill.
//! Single-threaded and blocking; `docs/agent.md` is the reference.
//!
//! - [`credentials`]: who the agent is (HostIdentifier, key, region).
//! - [`poll`]: backoff, failure logging, the wait between polls.
//! - [`inflight`]: the durable record of the command being worked on, and
//!   the recovery table.
//! - [`commands`]: one host command, from acknowledgement to outbox.
//! - [`outbox`]: completions until the service acknowledges them.
//! - [`spec`]: the deployment specification and its cache.
//!
//! Every pass of the loop does, in order: finish the in-flight command if
//! there is one; deliver the outbox; poll for the next command. A pass that
//! did work is followed by another at once; an idle one by
//! `wait_between_runs`; a failed one by a jittered exponential backoff.

pub mod commands;
pub mod credentials;
pub mod inflight;
pub mod outbox;
pub mod poll;
pub mod spec;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{CallError, Client, Endpoint, HttpOptions};
use crate::config::Config;
use crate::logger;
use crate::protocol::command::{self, PollHostCommandInput, PollHostCommandOutput};
use crate::state::Root;

use credentials::Identity;
use outbox::Outbox;
use poll::{Backoff, FailureClass, FailureLog, Prng, StopWatch};

/// Runs the daemon until SIGTERM or SIGINT. Errors are startup errors
/// (configuration, root, lock); once running, failures are retried.
pub fn run(config: &Config) -> Result<(), String> {
    let identity = credentials::resolve(config)?;
    let control = config
        .deploy_control_endpoint
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or("deploy_control_endpoint is not set: the daemon needs the URL of the command API")?;
    let store_url = config.s3_endpoint_override.as_deref().map(|u| u.trim_end_matches('/').to_string());
    let calls = config.network.for_calls(config.proxy_uri.clone(), config.ca_bundle.clone());
    let downloads = HttpOptions { timeout: Some(config.network.download), ..calls.clone() };
    let endpoint = |url: &str| Endpoint {
        url: url.to_string(),
        region: identity.region.clone(),
        credentials: identity.credentials.clone(),
    };
    let client = Client::new(endpoint(&control), &calls).map_err(|e| format!("deploy_control_endpoint: {e}"))?;
    let store = Client::new(endpoint(store_url.as_deref().unwrap_or(&control)), &downloads)
        .map_err(|e| format!("s3_endpoint_override: {e}"))?;

    let root = Root::new(&config.root_dir);
    root.create().map_err(|e| format!("creating the deployment root {}: {e}", config.root_dir.display()))?;
    let private = config.root_dir.join(".edgedeploy");
    let _lock = lock_agent(&private)?;
    let outbox = Outbox::new(&private);
    let specs = spec::Cache::new(&private);
    outbox.create().and_then(|()| specs.create()).map_err(|e| format!("creating agent state: {e}"))?;
    let stop = StopWatch::install().map_err(|e| format!("installing the signal handlers: {e}"))?;
    let boot_id = inflight::boot_id();
    log::info!(
        "edgedeploy-agent {} running: host {}, command API {control}, bundle store {}, root {}",
        env!("CARGO_PKG_VERSION"),
        identity.host_identifier,
        store_url.as_deref().unwrap_or(&control),
        config.root_dir.display()
    );
    let mut daemon = Daemon {
        config,
        identity,
        client,
        store,
        root,
        inflight_path: private.join("inflight.json"),
        outbox,
        specs,
        boot_id,
        stop,
    };
    daemon.announce_recovery();
    daemon.run_loop();
    Ok(())
}

/// Takes `<private>/agent.lock`, so two agents never share a root.
fn lock_agent(private: &Path) -> Result<File, String> {
    let path = private.join("agent.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(format!(
            "another edgedeploy-agent is running on this deployment root (lock {} is held)",
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// The running daemon.
pub struct Daemon<'a> {
    config: &'a Config,
    identity: Identity,
    /// Command API client.
    client: Client,
    /// Bundle store client.
    store: Client,
    root: Root,
    inflight_path: PathBuf,
    outbox: Outbox,
    specs: spec::Cache,
    boot_id: String,
    stop: StopWatch,
}

/// What one pass of the loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Worked on a command or delivered completions: go again now.
    Worked,
    /// Nothing to do: wait `wait_between_runs`.
    Idle,
}

/// What delivering the outbox did.
struct Delivery {
    /// A completion was delivered.
    delivered: bool,
    /// The error of a completion kept in the outbox, when the service
    /// answered it with an error that concerns that call only.
    held: Option<CallError>,
}

/// Why a pass stopped.
#[derive(Debug)]
pub enum StepError {
    /// A call failed in a way worth retrying.
    Call(CallError),
    /// Local state could not be read or written.
    Local(String),
    /// A stop was requested in the middle of a step that resumes.
    Stopped,
}

impl From<CallError> for StepError {
    fn from(e: CallError) -> Self {
        StepError::Call(e)
    }
}

/// Maps a local I/O error.
fn local(e: impl std::fmt::Display) -> StepError {
    StepError::Local(e.to_string())
}

impl Daemon<'_> {
    fn run_loop(&mut self) {
        let mut backoff = Backoff::default();
        let mut failures = FailureLog::default();
        let mut rng = Prng::from_entropy();
        loop {
            if self.stop.stop_requested() {
                break;
            }
            let result = self.pass();
            if self.stop.stop_requested() {
                // Whatever the pass did is durable; a failure may be the signal's (EINTR).
                break;
            }
            if !matches!(result, Err(StepError::Call(_) | StepError::Local(_)))
                && let Some(n) = failures.succeeded()
            {
                log::info!("the service answers again (after {n} failed attempts)");
                backoff.reset();
            }
            let wait = match result {
                Ok(Pass::Worked) => Duration::ZERO,
                Ok(Pass::Idle) => self.config.wait_between_runs,
                Err(StepError::Stopped) => break,
                Err(StepError::Call(e)) => {
                    let class = FailureClass::of(&e);
                    if failures.failed(class) {
                        log::warn!(
                            "{} ({}); retrying with backoff, logged again when this changes",
                            class.describe(),
                            FailureClass::detail(&e)
                        );
                    }
                    backoff.next_delay(&mut rng)
                }
                Err(StepError::Local(message)) => {
                    if failures.failed(FailureClass::Local) {
                        log::error!("{} ({message}); retrying with backoff", FailureClass::Local.describe());
                    }
                    backoff.next_delay(&mut rng)
                }
            };
            if !wait.is_zero() && self.stop.sleep(wait) {
                break;
            }
        }
        match inflight::read(&self.inflight_path) {
            Ok(Some(r)) => log::info!(
                "stopping (signal); {} of command {} resumes at the next start",
                r.command_name,
                r.host_command_identifier
            ),
            _ => log::info!("stopping (signal)"),
        }
    }

    /// One pass: the in-flight command, the outbox, a poll.
    fn pass(&mut self) -> Result<Pass, StepError> {
        if let Some(record) = inflight::read(&self.inflight_path).map_err(local)? {
            self.process(record)?;
            return Ok(Pass::Worked);
        }
        let delivery = self.deliver_outbox()?;
        if delivery.delivered {
            return Ok(Pass::Worked);
        }
        if self.stop.stop_requested() {
            return Err(StepError::Stopped);
        }
        let input = PollHostCommandInput { host_identifier: self.identity.host_identifier.clone() };
        let output: PollHostCommandOutput =
            self.client.call(command::TARGET_PREFIX, command::SIGNING_NAME, "PollHostCommand", &input)?;
        let pass = match output.host_command {
            Some(host_command) => self.accept(host_command)?,
            None => Pass::Idle,
        };
        match (pass, delivery.held) {
            // A completion still waits: the idle pass counts as failed, so
            // it is retried with the backoff (and logged once per class).
            (Pass::Idle, Some(e)) => Err(e.into()),
            (pass, _) => Ok(pass),
        }
    }

    /// Sends every pending completion. A failure of the service as a whole
    /// (no answer, throttling, refused credentials) ends the pass; an error
    /// answer to one completion (5xx, an unreadable answer) keeps it in the
    /// outbox and goes on with the others and the poll, so one completion
    /// the service keeps failing never stalls the loop.
    fn deliver_outbox(&mut self) -> Result<Delivery, StepError> {
        let mut delivery = Delivery { delivered: false, held: None };
        for completion in self.outbox.pending().map_err(local)? {
            let input = completion.input();
            let result = self.client.call_acknowledged(
                command::TARGET_PREFIX,
                command::SIGNING_NAME,
                "PutHostCommandComplete",
                &input,
            );
            let what = format!(
                "{} of {} (command {})",
                completion.command_name,
                completion.deployment_id.as_deref().unwrap_or("a deployment"),
                logger::untrusted(&completion.host_command_identifier)
            );
            match result {
                Ok(None) => log::info!("reported {what}: {:?}", completion.command_status),
                Ok(Some(note)) => log::warn!(
                    "reported {what}: {:?}; the service answered 2xx without a JSON body ({note}): counted as \
                     delivered",
                    completion.command_status
                ),
                Err(e @ CallError::Service { status: 400..=499, .. }) => {
                    log::warn!("the service refused the completion of {what}: {e}; counted as delivered");
                }
                Err(e) if poll::fails_one_call(&e) => {
                    delivery.held.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.outbox.delivered(&completion).map_err(local)?;
            delivery.delivered = true;
        }
        Ok(delivery)
    }

    /// Logs what a restart finds in flight (the next pass acts on it).
    fn announce_recovery(&self) {
        let record = match inflight::read(&self.inflight_path) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                log::error!("reading the in-flight record: {e}");
                return;
            }
        };
        let cause = inflight::Cause::of(&record.boot_id, &self.boot_id);
        let action = match inflight::decide(record.state, record.event()) {
            inflight::Resume::Execute => "it had not started: acknowledging it again and executing it",
            inflight::Resume::Reexecute if record.event() == Some(crate::appspec::LifecycleEvent::DownloadBundle) => {
                "executing it again: the download resumes"
            }
            inflight::Resume::Reexecute => "executing it again: the install rolls forward",
            inflight::Resume::ReportInterrupted => "a hook is never run twice: reporting it Failed",
        };
        log::warn!(
            "recovering {} ({:?}) of {} (command {}) after {}; {action}",
            record.command_name,
            record.state,
            record.deployment_id.as_deref().unwrap_or("a deployment"),
            record.host_command_identifier,
            cause.describe()
        );
    }
}
