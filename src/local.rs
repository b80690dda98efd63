//! `edgedeploy-agent deploy-local`: one deployment of a local bundle, no
//! server, with the options and defaults of AWS's `codedeploy-local`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::appspec::{FileExistsBehavior, LifecycleEvent};
use crate::clock;
use crate::config::Config;
use crate::diagnostic::Diagnostic;
use crate::engine::{Deployment, Engine, Revision};
use crate::install;
use crate::state::{self, DeploymentStatus, Phase};
use crate::unpack::BundleType;

/// `-g` default, as codedeploy-local.
pub const DEFAULT_GROUP_ID: &str = "default-local-deployment-group";
/// `-d` default, as codedeploy-local.
pub const DEFAULT_GROUP_NAME: &str = "LocalFleet";

/// What `deploy-local` was asked to do (already parsed, not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-l`: the bundle (absolute or relative to the current directory).
    pub bundle_location: PathBuf,
    /// `-t`.
    pub bundle_type: BundleType,
    /// `-b`.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    /// `-g`.
    pub group_id: String,
    /// `-d`.
    pub group_name: String,
    /// `-a`; the bundle location when absent.
    pub application_name: Option<String>,
    /// `-e`, as given.
    pub events: Option<Vec<String>>,
    /// `-A`.
    pub appspec_filename: String,
}

/// A deployment that could not run or did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Bad options or an unusable root: nothing was deployed.
    Setup(String),
    /// `event` of deployment `deployment_id` failed with `diagnostic`.
    Event {
        /// The deployment.
        deployment_id: String,
        /// The event that failed.
        event: LifecycleEvent,
        /// What it reported.
        diagnostic: Diagnostic,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(message) => f.write_str(message),
            Failure::Event { deployment_id, event, diagnostic } => {
                write!(f, "deployment {deployment_id} failed in lifecycle event {event}: {diagnostic}")?;
                if !diagnostic.script_name.is_empty() && !diagnostic.message.contains(&diagnostic.script_name) {
                    write!(f, " (script {})", diagnostic.script_name)?;
                }
                Ok(())
            }
        }
    }
}

/// Parses `-b`.
pub fn parse_behavior(text: &str) -> Option<FileExistsBehavior> {
    match text.to_ascii_uppercase().as_str() {
        "DISALLOW" => Some(FileExistsBehavior::Disallow),
        "OVERWRITE" => Some(FileExistsBehavior::Overwrite),
        "RETAIN" => Some(FileExistsBehavior::Retain),
        _ => None,
    }
}

/// The events to run: all of them in order by default; with `-e`, the
/// listed ones in the listed order, after DownloadBundle and Install unless
/// those are listed too.
pub fn select_events(listed: Option<&[String]>) -> Result<Vec<LifecycleEvent>, String> {
    let Some(listed) = listed else { return Ok(LifecycleEvent::ALL.to_vec()) };
    let mut events = Vec::new();
    for name in listed.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let event = LifecycleEvent::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = LifecycleEvent::ALL.iter().map(|e| e.name()).collect();
            format!("--events: unknown lifecycle event {name:?}; known events: {}", known.join(", "))
        })?;
        if events.contains(&event) {
            return Err(format!("--events: {name} is listed twice"));
        }
        events.push(event);
    }
    for required in [LifecycleEvent::Install, LifecycleEvent::DownloadBundle] {
        if !events.contains(&required) {
            events.insert(0, required);
        }
    }
    Ok(events)
}

/// Runs the deployment, printing one line per event to `out`.
/// Returns the deployment id on success.
pub fn deploy(config: &Config, options: &Options, out: &mut dyn Write) -> Result<String, Failure> {
    let events = select_events(options.events.as_deref()).map_err(Failure::Setup)?;
    let deployment = prepare(options)?;
    let engine = Engine::new(config);
    let root = engine.root();
    root.create().map_err(|e| setup_error("creating the deployment root", e))?;
    let _lock = root.lock_group(&deployment.group_id).map_err(|e| Failure::Setup(e.to_string()))?;
    recover_interrupted(&engine, &deployment.group_id)?;

    let mut status = DeploymentStatus {
        group: deployment.group_id.clone(),
        deployment_id: deployment.deployment_id.clone(),
        application: deployment.application.clone(),
        phase: Phase::InProgress,
        event: None,
        started: clock::now_epoch().0,
        finished: None,
        message: String::new(),
    };
    root.write_status(&status).map_err(|e| setup_error("recording the deployment", e))?;
    let mut log = engine.open_log(&deployment).map_err(|e| setup_error("opening the script log", e))?;
    let _ = writeln!(
        out,
        "Deployment {} of {} to {}",
        deployment.deployment_id,
        options.bundle_location.display(),
        root.dir().join(&deployment.group_id).display()
    );

    for event in events {
        status.event = Some(event.name().to_string());
        root.write_status(&status).map_err(|e| setup_error("recording the deployment", e))?;
        let started = Instant::now();
        let diagnostic = engine.execute(&deployment, event, &mut log);
        let took = started.elapsed().as_secs_f64();
        if !diagnostic.is_success() {
            let _ = writeln!(out, "  {:<20} FAILED after {took:.2}s", event.name());
            finish(root, &mut status, Phase::Failed, &diagnostic.to_string());
            return Err(Failure::Event { deployment_id: deployment.deployment_id, event, diagnostic });
        }
        let _ = writeln!(out, "  {:<20} ok ({took:.2}s) {}", event.name(), diagnostic.message);
    }
    finish(root, &mut status, Phase::Succeeded, "all lifecycle events succeeded");
    let _ = writeln!(out, "Deployment {} succeeded", deployment.deployment_id);
    Ok(deployment.deployment_id)
}

/// Checks the options and builds the deployment.
fn prepare(options: &Options) -> Result<Deployment, Failure> {
    state::check_folder_name("--deployment-group", &options.group_id).map_err(Failure::Setup)?;
    let location = std::path::absolute(&options.bundle_location)
        .map_err(|e| Failure::Setup(format!("--bundle-location {}: {e}", options.bundle_location.display())))?;
    let meta = std::fs::metadata(&location)
        .map_err(|e| Failure::Setup(format!("--bundle-location {}: {e}", location.display())))?;
    let revision = match options.bundle_type {
        BundleType::Directory if meta.is_dir() => Revision::LocalDirectory { path: location.clone() },
        BundleType::Directory => {
            return Err(Failure::Setup(format!(
                "--bundle-location {} is not a directory; give its type with --type tar|tgz|zip",
                location.display()
            )));
        }
        bundle_type if meta.is_file() => Revision::LocalFile { path: location.clone(), bundle_type },
        bundle_type => {
            return Err(Failure::Setup(format!(
                "--bundle-location {} is not a file, as --type {} requires",
                location.display(),
                bundle_type.name()
            )));
        }
    };
    Ok(Deployment {
        deployment_id: new_deployment_id(),
        group_id: options.group_id.clone(),
        group_name: options.group_name.clone(),
        application: options.application_name.clone().unwrap_or_else(|| location.display().to_string()),
        revision,
        appspec_filename: options.appspec_filename.clone(),
        file_exists_behavior: options.file_exists_behavior,
    })
}

/// Before a new deployment of `group`: the leftovers of one that was killed
/// are removed, and its status says it was interrupted.
fn recover_interrupted(engine: &Engine, group: &str) -> Result<(), Failure> {
    let root = engine.root();
    state::remove_partial_archives(root, group).map_err(|e| setup_error("removing interrupted unpacks", e))?;
    install::recover(&root.cleanup_list(group)).map_err(|e| setup_error("recovering an interrupted install", e))?;
    if let Ok(Some(mut previous)) = root.read_status(group)
        && previous.phase == Phase::InProgress
    {
        let event = previous.event.clone().unwrap_or_default();
        let message = format!("interrupted by agent restart during {event}");
        finish(root, &mut previous, Phase::Failed, &message);
    }
    Ok(())
}

fn finish(root: &state::Root, status: &mut DeploymentStatus, phase: Phase, message: &str) {
    status.phase = phase;
    status.finished = Some(clock::now_epoch().0);
    status.message = message.to_string();
    if let Err(e) = root.write_status(status) {
        log::warn!("recording the outcome of {}: {e}", status.deployment_id);
    }
}

fn setup_error(doing: &str, e: io::Error) -> Failure {
    Failure::Setup(format!("{doing}: {e}"))
}

/// `d-XXXXXXXXX-local`: nine random characters from A-Z0-9, as codedeploy-local.
pub fn new_deployment_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut seed = [0u8; 9];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    if random.is_err() {
        let (secs, millis) = clock::now_epoch();
        let mixed = secs.wrapping_mul(6_364_136_223_846_793_005) ^ u64::from(millis) ^ u64::from(std::process::id());
        seed.iter_mut().enumerate().for_each(|(i, b)| *b = (mixed >> (i * 7)) as u8);
    }
    let id: String = seed.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    format!("d-{id}-local")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(events: &[LifecycleEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.name()).collect()
    }

    #[test]
    fn default_events_are_all_in_order() {
        assert_eq!(select_events(None).unwrap(), LifecycleEvent::ALL.to_vec());
    }

    #[test]
    fn listed_events_follow_download_and_install() {
        let listed = ["ApplicationStart".to_string(), "BeforeInstall".to_string()];
        assert_eq!(
            names(&select_events(Some(&listed)).unwrap()),
            ["DownloadBundle", "Install", "ApplicationStart", "BeforeInstall"]
        );
        let with_install = ["DownloadBundle".to_string(), "AfterInstall".to_string(), "Install".to_string()];
        assert_eq!(names(&select_events(Some(&with_install)).unwrap()), ["DownloadBundle", "AfterInstall", "Install"]);
    }

    #[test]
    fn unknown_event_is_refused_by_name() {
        let err = select_events(Some(&["AfterInstal".to_string()])).unwrap_err();
        assert!(err.contains("\"AfterInstal\""), "{err}");
    }

    #[test]
    fn deployment_ids_look_like_codedeploy_local() {
        let id = new_deployment_id();
        assert_eq!(id.len(), "d-XXXXXXXXX-local".len());
        assert!(id.starts_with("d-") && id.ends_with("-local"), "{id}");
        assert_ne!(new_deployment_id(), id);
    }
}
