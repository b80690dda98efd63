//! Install the deployment archive's files per the AppSpec's `files`,
//! `file_exists_behavior` and `permissions`. The numbered steps and the
//! crash model are in `docs/install.md`:
//!
//! 1. read the previous cleanup list (what earlier installs put on disk);
//! 2. plan: every conflict is found before anything changes ([`plan`]);
//! 3. write the cleanup list ahead: previous paths plus every new one;
//! 4. stage: create directories, write each file under a temporary name in
//!    its target directory with its final mode and owner; one `syncfs`;
//! 5. commit: rename every file into place, remove what the previous install
//!    had that this one does not, set directory permissions; one `syncfs`;
//! 6. write the cleanup list: exactly what this install owns.

pub mod cleanup;
pub mod permissions;
pub mod plan;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::appspec::{AppSpec, FileExistsBehavior, FileMapping};
use crate::journal;
use plan::{Kind, PlanError, SourceItem, Step};

/// How many conflicting paths an error message lists before summarising.
const CONFLICTS_LISTED: usize = 10;

/// One install of a deployment archive.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The unpacked revision.
    pub archive_dir: &'a Path,
    /// Its AppSpec.
    pub appspec: &'a AppSpec,
    /// file_exists_behavior from the deployment (or `-b`), if given.
    pub deployment_behavior: Option<FileExistsBehavior>,
    /// The group's cleanup list.
    pub cleanup_list: &'a Path,
}

/// What an install did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Files and links installed.
    pub files: usize,
    /// Directories created.
    pub directories: usize,
    /// Paths of the previous install removed.
    pub removed: usize,
    /// Existing files kept (RETAIN).
    pub retained: usize,
}

/// Why an install failed. `Plan` and `Source` errors change nothing on disk.
#[derive(Debug)]
pub enum InstallError {
    /// Conflicts or incompatible objects at the destinations.
    Plan(PlanError),
    /// A `files` source is missing or cannot be installed.
    Source(String),
    /// Applying `permissions` failed.
    Permissions(String),
    /// Reading or writing the disk failed.
    Io(io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Plan(PlanError::Conflicts(paths)) => {
                let shown: Vec<String> = paths.iter().take(CONFLICTS_LISTED).map(|p| p.display().to_string()).collect();
                let more = paths.len().saturating_sub(CONFLICTS_LISTED);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                write!(
                    f,
                    "The deployment failed because a specified file already exists at this location: {}{more} \
                     (file_exists_behavior is DISALLOW; nothing was changed)",
                    shown.join(", ")
                )
            }
            InstallError::Plan(PlanError::Blocked { path, reason }) => {
                write!(f, "cannot install {}: {reason}", path.display())
            }
            InstallError::Plan(PlanError::Duplicate(path)) => write!(
                f,
                "The deployment failed because the application specification file specifies two source files \
                 with the same destination ({})",
                path.display()
            ),
            InstallError::Plan(PlanError::BadName(path)) => {
                write!(f, "cannot install {:?}: file names with a newline are not supported", path)
            }
            InstallError::Source(message) | InstallError::Permissions(message) => f.write_str(message),
            InstallError::Io(e) => write!(f, "install failed: {e}"),
        }
    }
}

impl std::error::Error for InstallError {}

impl From<io::Error> for InstallError {
    fn from(e: io::Error) -> Self {
        InstallError::Io(e)
    }
}

/// The behavior in force: the AppSpec's, else the deployment's, else DISALLOW.
pub fn effective_behavior(appspec: &AppSpec, deployment: Option<FileExistsBehavior>) -> FileExistsBehavior {
    appspec.file_exists_behavior.or(deployment).unwrap_or(FileExistsBehavior::Disallow)
}

/// Cleans up after an install that was interrupted: removes the temporary
/// files it may have left next to the paths of its cleanup list.
pub fn recover(cleanup_list: &Path) -> io::Result<usize> {
    cleanup::remove_temporaries(&cleanup::read(cleanup_list)?)
}

/// Runs the install (steps 1 to 6 above).
pub fn install(request: &Request) -> Result<Report, InstallError> {
    recover(request.cleanup_list)?;
    let previous = cleanup::read(request.cleanup_list)?;
    let items = collect_sources(request.archive_dir, &request.appspec.files)?;
    let behavior = effective_behavior(request.appspec, request.deployment_behavior);
    let plan = plan::plan(&items, &request.appspec.files, &previous, behavior, &probe).map_err(InstallError::Plan)?;
    drop(items);
    let permissions = permissions::Resolved::new(&request.appspec.permissions, owned_objects(&plan.steps))
        .map_err(InstallError::Permissions)?;
    let owned = plan.owned();
    let known: BTreeSet<&Path> = previous.iter().map(PathBuf::as_path).collect();
    let ahead: Vec<PathBuf> =
        previous.iter().cloned().chain(owned.iter().filter(|p| !known.contains(p.as_path())).cloned()).collect();
    cleanup::write(request.cleanup_list, &ahead)?;
    drop(ahead);

    let touched = parent_dirs(owned.iter().chain(&plan.obsolete));
    let report = match stage(&plan.steps, &permissions)
        .and_then(|report| Ok(journal::sync_filesystems(touched.iter().map(PathBuf::as_path)).map(|()| report)?))
    {
        Ok(report) => report,
        Err(e) => {
            abandon_stage(&plan.steps, request.cleanup_list, &previous);
            return Err(e);
        }
    };
    commit(&plan.steps, &permissions)?;
    let removed = cleanup::remove(&plan.obsolete)?;
    journal::sync_filesystems(touched.iter().map(PathBuf::as_path))?;
    cleanup::write(request.cleanup_list, &owned)?;
    Ok(Report { removed, retained: plan.retained.len(), ..report })
}

/// What is at `path` now, without following a final symlink.
fn probe(path: &Path) -> Option<Kind> {
    let file_type = fs::symlink_metadata(path).ok()?.file_type();
    Some(if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    })
}

/// Lists what each `files` mapping puts where: a directory source's contents
/// are merged into the destination, a file source lands in
/// `destination/<basename>`.
fn collect_sources(archive: &Path, mappings: &[FileMapping]) -> Result<Vec<SourceItem>, InstallError> {
    let mut items = Vec::new();
    for (index, mapping) in mappings.iter().enumerate() {
        let src = archive.join(&mapping.source);
        let meta = fs::symlink_metadata(&src).map_err(|e| {
            InstallError::Source(format!(
                "files[{index}].source {:?} does not exist in the revision ({e})",
                mapping.source.display().to_string()
            ))
        })?;
        if meta.is_dir() {
            items.push(SourceItem {
                src: src.clone(),
                dst: mapping.destination.clone(),
                kind: Kind::Dir,
                mapping: index,
            });
            walk(&src, &mapping.destination, index, &mut items)?;
        } else {
            let name = src.file_name().unwrap_or_default();
            let kind = source_kind(&src, &meta)?;
            items.push(SourceItem { dst: mapping.destination.join(name), src, kind, mapping: index });
        }
    }
    Ok(items)
}

fn walk(dir: &Path, dest: &Path, mapping: usize, items: &mut Vec<SourceItem>) -> Result<(), InstallError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| journal::with_path(e, "reading", dir))? {
        names.push(entry.map_err(|e| journal::with_path(e, "reading", dir))?.file_name());
    }
    names.sort();
    for name in names {
        let src = dir.join(&name);
        let dst = dest.join(&name);
        let meta = fs::symlink_metadata(&src).map_err(|e| journal::with_path(e, "reading", &src))?;
        if meta.is_dir() {
            items.push(SourceItem { src: src.clone(), dst: dst.clone(), kind: Kind::Dir, mapping });
            walk(&src, &dst, mapping, items)?;
        } else {
            let kind = source_kind(&src, &meta)?;
            items.push(SourceItem { src, dst, kind, mapping });
        }
    }
    Ok(())
}

fn source_kind(src: &Path, meta: &fs::Metadata) -> Result<Kind, InstallError> {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        Ok(Kind::Symlink)
    } else if file_type.is_file() {
        Ok(Kind::File)
    } else {
        Err(InstallError::Source(format!(
            "{} is a special file; only files, links and directories install",
            src.display()
        )))
    }
}

/// Step 4: directories created, files written under temporary names with
/// their final mode and owner. Nothing visible has changed yet except new,
/// empty directories and removals the plan requires first.
fn stage(steps: &[Step], permissions: &permissions::Resolved) -> Result<Report, InstallError> {
    let mut report = Report::default();
    for step in steps {
        match step {
            Step::RemoveFirst(path) => {
                fs::remove_file(path).map_err(|e| journal::with_path(e, "removing", path))?;
            }
            Step::CreateDir(path) => {
                create_dir(path)?;
                report.directories += 1;
            }
            Step::AdoptDir(_) => {}
            Step::Place { src, dst, kind } => {
                let tmp = journal::temp_path(dst);
                write_temporary(src, &tmp, *kind).map_err(|e| journal::with_path(e, "writing", &tmp))?;
                permissions.apply(dst, &tmp, false).map_err(InstallError::Permissions)?;
                report.files += 1;
            }
        }
    }
    Ok(report)
}

fn create_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o755).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other.map_err(|e| journal::with_path(e, "creating directory", path)),
    }
}

/// Copies `src` to `tmp`: a link as a link, a file with its mode and mtime.
fn write_temporary(src: &Path, tmp: &Path, kind: Kind) -> io::Result<()> {
    if fs::symlink_metadata(tmp).is_ok() {
        fs::remove_file(tmp)?;
    }
    if kind == Kind::Symlink {
        return symlink(fs::read_link(src)?, tmp);
    }
    let mut input = File::open(src)?;
    let meta = input.metadata()?;
    let mut output = File::create_new(tmp)?;
    io::copy(&mut input, &mut output)?;
    output.set_permissions(fs::Permissions::from_mode(meta.permissions().mode() & 0o7777))?;
    if let Ok(modified) = meta.modified() {
        output.set_modified(modified)?;
    }
    Ok(())
}

/// After a failed stage (a full disk, say): the temporaries and the new,
/// still empty directories are removed and the cleanup list goes back to
/// the previous one, so the failed install leaves nothing behind. Best
/// effort: what cannot be removed now is still listed for the next run.
fn abandon_stage(steps: &[Step], cleanup_list: &Path, previous: &[PathBuf]) {
    let mut created = Vec::new();
    for step in steps {
        match step {
            Step::Place { dst, .. } => created.push(journal::temp_path(dst)),
            Step::CreateDir(path) => created.push(path.clone()),
            Step::RemoveFirst(_) | Step::AdoptDir(_) => {}
        }
    }
    let cleaned = cleanup::remove(&created).is_ok() && created.iter().all(|p| fs::symlink_metadata(p).is_err());
    if cleaned {
        let _ = journal::sync_filesystems(created.iter().map(|p| journal::parent_of(p)));
        let _ = cleanup::write(cleanup_list, previous);
    }
}

/// The objects the plan will own, with whether each is a directory.
fn owned_objects(steps: &[Step]) -> impl Iterator<Item = (&Path, bool)> {
    steps.iter().filter_map(|step| match step {
        Step::CreateDir(p) | Step::AdoptDir(p) => Some((p.as_path(), true)),
        Step::Place { dst, .. } => Some((dst.as_path(), false)),
        Step::RemoveFirst(_) => None,
    })
}

/// Step 5: every staged file renamed into place, then directory permissions.
fn commit(steps: &[Step], permissions: &permissions::Resolved) -> Result<(), InstallError> {
    for step in steps {
        if let Step::Place { dst, .. } = step {
            let tmp = journal::temp_path(dst);
            fs::rename(&tmp, dst).map_err(|e| journal::with_path(e, "renaming into place", dst))?;
        }
    }
    let has_context = permissions.has_context();
    for step in steps {
        let (path, is_dir) = match step {
            Step::CreateDir(p) | Step::AdoptDir(p) => (p, true),
            Step::Place { dst, .. } => (dst, false),
            Step::RemoveFirst(_) => continue,
        };
        if is_dir {
            permissions.apply(path, path, true).map_err(InstallError::Permissions)?;
        }
        if has_context {
            permissions.apply_context(path, is_dir).map_err(InstallError::Permissions)?;
        }
    }
    Ok(())
}

/// The distinct parent directories of `paths` (for syncing their filesystems).
fn parent_dirs<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let set: BTreeSet<&Path> = paths.map(|p| journal::parent_of(p)).collect();
    set.into_iter().map(Path::to_path_buf).collect()
}
