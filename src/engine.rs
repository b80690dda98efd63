//! Executes one lifecycle event of a deployment on this device. Each event
//! is a function of what is on disk, so an agent that restarts can pick up
//! at any event: `deploy-local` and the daemon both drive this.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::appspec::{AppSpec, FileExistsBehavior, LifecycleEvent};
use crate::client::{self, Client, HttpOptions};
use crate::config::Config;
use crate::diagnostic::Diagnostic;
use crate::fetch;
use crate::hooks::{self, ScriptLog};
use crate::install;
use crate::journal;
use crate::state::{self, Pointer, Root};
use crate::unpack::{self, BundleType};

/// Where a revision comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// A bundle file on this device.
    LocalFile {
        /// Absolute path of the bundle.
        path: PathBuf,
        /// Its declared type (gzip is detected whatever it says).
        bundle_type: BundleType,
    },
    /// A directory on this device, copied.
    LocalDirectory {
        /// Absolute path of the directory.
        path: PathBuf,
    },
    /// A bundle in an S3-compatible store, downloaded with resume.
    S3 {
        /// Bucket, key, version and what the bundle must be (ETag, SHA-256).
        object: fetch::Object,
        /// Its declared type (tar, tgz or zip).
        bundle_type: BundleType,
    },
    /// A commit of a GitHub repository: downloaded from the archive the
    /// server made of it (ours); without one it cannot be downloaded.
    GitHub {
        /// `account/repository`.
        repository: String,
        /// Commit id.
        commit_id: String,
        /// The commit's archive in the bundle store, and its type.
        archive: Option<(fetch::Object, BundleType)>,
    },
    /// A bundle at an http(s) URL (ours), downloaded without signing and
    /// verified against its SHA-256.
    Url {
        /// The URL and the SHA-256 the bundle must have.
        object: fetch::Object,
        /// Its declared type (tar, tgz or zip).
        bundle_type: BundleType,
    },
}

/// One deployment to this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Deployment id (`d-XXXXXXXXX`).
    pub deployment_id: String,
    /// Deployment group id: the folder under the root.
    pub group_id: String,
    /// Deployment group name, for hooks.
    pub group_name: String,
    /// Application name, for hooks.
    pub application: String,
    /// The revision.
    pub revision: Revision,
    /// AppSpec file name inside the revision.
    pub appspec_filename: String,
    /// file_exists_behavior given with the deployment.
    pub file_exists_behavior: Option<FileExistsBehavior>,
}

/// Runs lifecycle events against one deployment root.
#[derive(Debug)]
pub struct Engine<'a> {
    config: &'a Config,
    root: Root,
    /// Client of the bundle store, for S3 revisions.
    s3: Option<&'a Client>,
    /// This boot's id, for resuming downloads.
    boot_id: String,
}

impl<'a> Engine<'a> {
    /// An engine over `config.root_dir`.
    pub fn new(config: &'a Config) -> Self {
        Engine { config, root: Root::new(&config.root_dir), s3: None, boot_id: String::new() }
    }

    /// The engine with a bundle store client (S3 revisions need one) and
    /// this boot's id (a download resumes from the part's length when the
    /// boot is the same, from its last durable point otherwise).
    pub fn with_bundle_store(mut self, client: &'a Client, boot_id: &str) -> Self {
        self.s3 = Some(client);
        self.boot_id = boot_id.to_string();
        self
    }

    /// The deployment root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// `<root>/<group>/<deployment>`.
    pub fn deployment_dir(&self, d: &Deployment) -> PathBuf {
        self.root.deployment_dir(&d.group_id, &d.deployment_id)
    }

    /// Opens the script logs of `d`, creating its directory.
    pub fn open_log(&self, d: &Deployment) -> io::Result<ScriptLog> {
        let logs = self.deployment_dir(d).join("logs");
        journal::create_dir_all_durable(&logs)?;
        ScriptLog::open(
            &logs.join("scripts.log"),
            &self.root.deployments_log(),
            &d.deployment_id,
            self.config.hooks.max_log_bytes,
        )
    }

    /// Executes `event` of `d`.
    pub fn execute(&self, d: &Deployment, event: LifecycleEvent, log: &mut ScriptLog) -> Diagnostic {
        let result = match event {
            LifecycleEvent::DownloadBundle => self.download_bundle(d),
            LifecycleEvent::Install => self.install(d),
            _ => return self.run_hooks(d, event, log),
        };
        result.unwrap_or_else(Diagnostic::unknown)
    }

    /// DownloadBundle: the revision unpacked into `deployment-archive`,
    /// complete and durable, or not there at all.
    fn download_bundle(&self, d: &Deployment) -> Result<Diagnostic, String> {
        let dir = self.deployment_dir(d);
        let archive = dir.join(state::ARCHIVE_DIR);
        let partial = dir.join(state::PARTIAL_ARCHIVE_DIR);
        journal::create_dir_all_durable(&dir).map_err(|e| e.to_string())?;
        remove_tree(&partial)?;
        remove_tree(&archive)?;
        // A refused or failed unpack leaves nothing of its partial tree.
        let unpacked = self.unpack_revision(d, &dir, &partial);
        let (report, root) = match unpacked {
            Ok(done) => done,
            Err(e) => {
                if let Err(cleanup) = remove_tree(&partial) {
                    log::warn!("{cleanup}");
                }
                return Err(e);
            }
        };
        journal::sync_filesystems([partial.as_path()]).map_err(|e| e.to_string())?;
        fs::rename(&root, &archive).map_err(|e| format!("renaming {} into place: {e}", root.display()))?;
        if root != partial {
            remove_tree(&partial)?;
        }
        journal::fsync_dir(&dir).map_err(|e| e.to_string())?;
        self.root.write_pointer(&d.group_id, Pointer::MostRecent, &dir).map_err(|e| e.to_string())?;
        state::apply_retention(&self.root, &d.group_id, self.config.max_revisions, &dir).map_err(|e| e.to_string())?;
        let appspec = AppSpec::load(&archive, &d.appspec_filename).map_err(|e| e.to_string())?;
        appspec.check_setuid(self.config.unpack.allow_setuid).map_err(|e| e.to_string())?;
        Ok(Diagnostic::success(format!("unpacked {} entries, {} bytes", report.entries, report.bytes)))
    }

    /// Downloads (or links) the revision and unpacks it into `partial`;
    /// returns what was unpacked and the revision root in it, whose links
    /// are checked again when it is the single top-level directory.
    fn unpack_revision(&self, d: &Deployment, dir: &Path, partial: &Path) -> Result<(unpack::Report, PathBuf), String> {
        let report = match &d.revision {
            Revision::LocalFile { path, bundle_type } => {
                link_bundle(&dir.join("bundle.tar"), path).map_err(|e| e.to_string())?;
                unpack::unpack(path, *bundle_type, partial, &self.config.unpack)
            }
            Revision::LocalDirectory { path } => {
                unpack::unpack(path, BundleType::Directory, partial, &self.config.unpack)
            }
            Revision::S3 { object, bundle_type } | Revision::GitHub { archive: Some((object, bundle_type)), .. } => {
                let transport = fetch::Transport { store: self.s3, web: None };
                self.fetch(transport, object, dir)?;
                unpack::unpack(&dir.join(fetch::BUNDLE_FILE), *bundle_type, partial, &self.config.unpack)
            }
            Revision::Url { object, bundle_type } => {
                let options = HttpOptions {
                    proxy: self.config.proxy_uri.clone(),
                    ca_bundle: self.config.ca_bundle.clone(),
                    ..self.config.network.for_downloads()
                };
                let web = client::web_agent(&object.path(), &options)?;
                self.fetch(fetch::Transport { store: None, web: Some(&web) }, object, dir)?;
                unpack::unpack(&dir.join(fetch::BUNDLE_FILE), *bundle_type, partial, &self.config.unpack)
            }
            Revision::GitHub { repository, commit_id, archive: None } => {
                return Err(format!(
                    "GitHub revision {repository} at {commit_id} comes without an archive: this agent downloads \
                     GitHub revisions only from a server that archived the commit (see docs/revisions.md)"
                ));
            }
        }
        .map_err(|e| e.to_string())?;
        let root = revision_root(partial, &d.appspec_filename)?;
        if root != partial {
            let top = root.strip_prefix(partial).unwrap_or(&root);
            unpack::check_links_inside(&root, top, &self.config.unpack).map_err(|e| e.to_string())?;
        }
        Ok((report, root))
    }

    /// Downloads `object` into `dir/bundle.tar`.
    fn fetch(&self, transport: fetch::Transport<'_>, object: &fetch::Object, dir: &Path) -> Result<(), String> {
        let options = fetch::Options { max_bytes: self.config.max_bundle_bytes, boot_id: self.boot_id.clone() };
        fetch::download(transport, object, dir, &options).map(drop).map_err(|e| e.to_string())
    }

    /// Install: files per the AppSpec, then this deployment becomes the
    /// group's last successful install (as CodeDeploy does).
    fn install(&self, d: &Deployment) -> Result<Diagnostic, String> {
        let dir = self.deployment_dir(d);
        let archive = dir.join(state::ARCHIVE_DIR);
        let appspec = AppSpec::load(&archive, &d.appspec_filename).map_err(|e| e.to_string())?;
        appspec.check_setuid(self.config.unpack.allow_setuid).map_err(|e| e.to_string())?;
        let cleanup_list = self.root.cleanup_list(&d.group_id);
        let request = install::Request {
            archive_dir: &archive,
            appspec: &appspec,
            deployment_behavior: d.file_exists_behavior,
            cleanup_list: &cleanup_list,
            max_bytes: self.config.max_install_bytes,
            max_entries: self.config.unpack.max_entries,
            allow_external_symlinks: self.config.unpack.allow_external_symlinks,
        };
        let report = install::install(&request).map_err(|e| e.to_string())?;
        self.root.write_pointer(&d.group_id, Pointer::LastSuccessful, &dir).map_err(|e| e.to_string())?;
        Ok(Diagnostic::success(format!(
            "installed {} files and {} directories; removed {} of the previous install; retained {}",
            report.files, report.directories, report.removed, report.retained
        )))
    }

    /// A hook event: the scripts of the revision the event runs from.
    fn run_hooks(&self, d: &Deployment, event: LifecycleEvent, log: &mut ScriptLog) -> Diagnostic {
        let archive = if event.runs_from_last_successful() {
            match self.root.read_pointer(&d.group_id, Pointer::LastSuccessful) {
                Ok(Some(dir)) if dir.join(state::ARCHIVE_DIR).is_dir() => dir.join(state::ARCHIVE_DIR),
                Ok(_) => return Diagnostic::success("skipped: no previous successful revision on this device"),
                Err(e) => return Diagnostic::unknown(e.to_string()),
            }
        } else {
            self.deployment_dir(d).join(state::ARCHIVE_DIR)
        };
        let appspec = match AppSpec::load(&archive, &d.appspec_filename) {
            Ok(appspec) => appspec,
            Err(e) => return Diagnostic::unknown(e.to_string()),
        };
        hooks::run_event(event, appspec.scripts(event), &archive, &hook_environment(d), log, &self.config.hooks)
    }
}

/// The environment hooks see, besides LIFECYCLE_EVENT.
pub fn hook_environment(d: &Deployment) -> Vec<(String, String)> {
    let mut env = vec![
        ("DEPLOYMENT_ID".to_string(), d.deployment_id.clone()),
        ("APPLICATION_NAME".to_string(), d.application.clone()),
        ("DEPLOYMENT_GROUP_NAME".to_string(), d.group_name.clone()),
        ("DEPLOYMENT_GROUP_ID".to_string(), d.group_id.clone()),
    ];
    let mut add = |name: &str, value: &str| env.push((name.to_string(), value.to_string()));
    match &d.revision {
        Revision::LocalFile { path, bundle_type } => {
            add("BUNDLE_TYPE", bundle_type.name());
            add("BUNDLE_LOCATION", &path.display().to_string());
        }
        Revision::LocalDirectory { path } => {
            add("BUNDLE_TYPE", "directory");
            add("BUNDLE_LOCATION", &path.display().to_string());
        }
        // As CodeDeploy: the S3 location, version and ETag when known.
        Revision::S3 { object, .. } => {
            if let fetch::Location::Store { bucket, key, version } = &object.location {
                add("BUNDLE_BUCKET", bucket);
                add("BUNDLE_KEY", key);
                if let Some(version) = version {
                    add("BUNDLE_VERSION", version);
                }
            }
            if let Some(etag) = &object.etag {
                add("BUNDLE_ETAG", etag);
            }
        }
        Revision::GitHub { commit_id, .. } => add("BUNDLE_COMMIT", commit_id),
        Revision::Url { object, .. } => {
            add("BUNDLE_URL", &object.path());
            if let Some(sha256) = &object.sha256 {
                add("BUNDLE_SHA256", sha256);
            }
        }
    }
    env
}

/// Finds the revision root in an unpacked bundle: the bundle's top level,
/// or its single top-level directory when the AppSpec is inside it.
fn revision_root(unpacked: &Path, appspec_filename: &str) -> Result<PathBuf, String> {
    let has_appspec = |dir: &Path| {
        dir.join(appspec_filename).is_file()
            || (appspec_filename == "appspec.yml" && dir.join("appspec.yaml").is_file())
    };
    if has_appspec(unpacked) {
        return Ok(unpacked.to_path_buf());
    }
    let mut entries = fs::read_dir(unpacked).map_err(|e| format!("reading {}: {e}", unpacked.display()))?;
    if let (Some(Ok(only)), None) = (entries.next(), entries.next()) {
        let top = only.path();
        if only.file_type().map(|t| t.is_dir()).unwrap_or(false) && has_appspec(&top) {
            return Ok(top);
        }
    }
    Err(format!(
        "The revision has no AppSpec file: {appspec_filename:?} is neither at the top of the bundle \
         nor inside its single top-level directory"
    ))
}

/// Makes `bundle.tar` in the deployment directory name the local bundle.
fn link_bundle(link: &Path, bundle: &Path) -> io::Result<()> {
    match fs::remove_file(link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(journal::with_path(e, "removing", link)),
        _ => {}
    }
    symlink(bundle, link).map_err(|e| journal::with_path(e, "linking", link))
}

fn remove_tree(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("removing {}: {e}", dir.display())),
        _ => Ok(()),
    }
}
