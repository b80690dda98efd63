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
//!
//! No write, chmod, chown or unlink follows a symbolic link: every
//! destination's parent is opened from `/` one component at a time without
//! following links ([`crate::sys::at`]), and the change is made relative to
//! that descriptor. A link anywhere in a destination's path is refused,
//! naming it. Sources are resolved inside the revision, never through a
//! link that leaves it.

pub mod cleanup;
pub mod permissions;
pub mod plan;

mod links;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::appspec::{AppSpec, FileExistsBehavior, FileMapping};
use crate::journal;
use crate::resolve;
use crate::sys::at::{self, Dir, WalkError};
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
    /// Largest total of bytes the install may write (0: no limit).
    pub max_bytes: u64,
    /// Largest number of files, links and directories it may create,
    /// every copy counted (0: no limit).
    pub max_entries: u64,
    /// Accept symbolic links that lead outside their `files` destination.
    pub allow_external_symlinks: bool,
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
    /// A symbolic link of the revision would lead outside its destination.
    LinkLeaves {
        /// Which `files` mapping installs it.
        mapping: usize,
        /// The link in the deployment archive (relative to it).
        entry: PathBuf,
        /// Where it would be installed.
        dst: PathBuf,
        /// The mapping's destination.
        destination: PathBuf,
        /// How it leaves.
        detail: String,
    },
    /// The files to install exceed the install's budget of bytes or entries.
    Limit(String),
    /// A destination's path goes through a symbolic link (or cannot be
    /// walked without following one).
    Walk {
        /// The destination being written.
        path: PathBuf,
        /// The link or the failure on the way.
        source: WalkError,
    },
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
            InstallError::LinkLeaves { mapping, entry, dst, destination, detail } => write!(
                f,
                "files[{mapping}]: the symbolic link {} (installed as {}) {detail}, outside the destination {}; \
                 refused (allow_external_symlinks accepts such links)",
                entry.display(),
                dst.display(),
                destination.display()
            ),
            InstallError::Limit(what) => write!(f, "{what} (nothing was changed)"),
            InstallError::Walk { path, source } => write!(f, "cannot install {}: {source}", path.display()),
            InstallError::Io(e) => write!(f, "install failed: {e}"),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::Walk { source, .. } => Some(source),
            InstallError::Io(e) => Some(e),
            _ => None,
        }
    }
}

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
    let budget = Budget::new(request, &items)?;
    let behavior = effective_behavior(request.appspec, request.deployment_behavior);
    let plan = plan::plan(&items, &request.appspec.files, &previous, behavior, &probe).map_err(InstallError::Plan)?;
    if !request.allow_external_symlinks {
        // After the plan: a path it retains (RETAIN) keeps what is on disk.
        links::check(&items, &request.appspec.files, request.archive_dir, &plan.retained)?;
    }
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
    let report = match stage(&plan.steps, &permissions, budget)
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

/// What is at `path` now, following no link on the way: behind a link in
/// a parent there is nothing of this path (the planner meets the link
/// itself as that parent, and refuses or replaces it).
fn probe(path: &Path) -> Option<Kind> {
    if path.parent().is_none() {
        return Some(Kind::Dir); // `/`
    }
    let (dir, name) = at::parent_nofollow(path).ok()?;
    Some(match dir.kind(name).ok()?? {
        at::Kind::Dir => Kind::Dir,
        at::Kind::Symlink => Kind::Symlink,
        at::Kind::File | at::Kind::Special => Kind::File,
    })
}

/// Lists what each `files` mapping puts where: a directory source's contents
/// are merged into the destination, a file source lands in
/// `destination/<basename>`. Each item knows the index of its mapping. A source is resolved inside the revision: links on its way
/// are followed only while they stay inside (the source itself, if a link,
/// is installed as a link).
fn collect_sources(archive: &Path, mappings: &[FileMapping]) -> Result<Vec<SourceItem>, InstallError> {
    let mut items = Vec::new();
    // One budget for every mapping: many mappings through deep link chains
    // cannot multiply the work.
    let mut steps = resolve::DISK_STEPS;
    for (index, mapping) in mappings.iter().enumerate() {
        let source = mapping.source.display().to_string();
        let rel = resolve::inside_with(archive, &mapping.source, false, &mut steps).map_err(|e| {
            InstallError::Source(format!("files[{index}].source {source:?} {e}; it must stay inside the revision"))
        })?;
        let src = archive.join(rel);
        let meta = fs::symlink_metadata(&src).map_err(|e| {
            InstallError::Source(format!("files[{index}].source {source:?} does not exist in the revision ({e})"))
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

/// The install's byte budget: every file is written in full each time it
/// is installed (two mappings of one source, or hard links of the
/// revision, count each time).
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Bytes still allowed (`u64::MAX`: no limit).
    left: u64,
    max: u64,
}

impl Budget {
    /// Checks the number of `items` and their sizes against the request's
    /// budgets (0: no limit): copies of one source count each time.
    fn new(request: &Request<'_>, items: &[SourceItem]) -> Result<Budget, InstallError> {
        let (max, max_entries) = (request.max_bytes, request.max_entries);
        if max_entries != 0 && items.len() as u64 > max_entries {
            return Err(InstallError::Limit(format!(
                "the install creates {} files, links and directories; max_unpacked_entries allows {max_entries}",
                items.len()
            )));
        }
        let left = if max == 0 { u64::MAX } else { max };
        let mut needed = 0u64;
        for item in items.iter().filter(|i| i.kind == Kind::File) {
            let len = fs::symlink_metadata(&item.src).map(|m| m.len()).unwrap_or(0);
            needed = needed.saturating_add(len);
            if needed > left {
                return Err(InstallError::Limit(format!(
                    "the install writes at least {needed} bytes; max_install_bytes allows {max}"
                )));
            }
        }
        Ok(Budget { left, max })
    }

    /// Takes `n` written bytes from the budget.
    fn spend(&mut self, n: u64) -> io::Result<()> {
        if n > self.left {
            let message = format!("a file grew while installed: the install exceeds max_install_bytes ({})", self.max);
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, message));
        }
        self.left -= n;
        Ok(())
    }
}

/// The parent directory of each destination, opened without following
/// links; the last one is kept, since steps come in path order.
#[derive(Default)]
struct Parents {
    last: Option<(PathBuf, Dir)>,
}

impl Parents {
    /// The parent of `path` and its final name.
    fn of<'p>(&mut self, path: &'p Path) -> Result<(&Dir, &'p OsStr), InstallError> {
        let walk_error = |source| InstallError::Walk { path: path.to_path_buf(), source };
        let name = path.file_name().ok_or_else(|| walk_error(bad_path(path)))?;
        let parent = path.parent().ok_or_else(|| walk_error(bad_path(path)))?;
        if self.last.as_ref().is_none_or(|(p, _)| p != parent) {
            let dir = Dir::open_nofollow(parent).map_err(walk_error)?;
            self.last = Some((parent.to_path_buf(), dir));
        }
        let (_, dir) = self.last.as_ref().ok_or_else(|| walk_error(bad_path(path)))?;
        Ok((dir, name))
    }

    /// Forgets the cached parent (after a directory was replaced).
    fn forget(&mut self) {
        self.last = None;
    }
}

fn bad_path(path: &Path) -> WalkError {
    let source = io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path with a final name");
    WalkError::Io { path: path.to_path_buf(), source }
}

/// The temporary name of `name` in its directory.
fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(journal::TEMP_PREFIX);
    tmp.push(name);
    tmp
}

/// Step 4: directories created, files written under temporary names with
/// their final mode and owner. Nothing visible has changed yet except new,
/// empty directories and removals the plan requires first.
fn stage(steps: &[Step], permissions: &permissions::Resolved, mut budget: Budget) -> Result<Report, InstallError> {
    let mut report = Report::default();
    let mut parents = Parents::default();
    for step in steps {
        match step {
            Step::RemoveFirst(path) => {
                let (dir, name) = parents.of(path)?;
                dir.remove_file(name).map_err(|e| journal::with_path(e, "removing", path))?;
                parents.forget();
            }
            Step::CreateDir(path) => {
                let (dir, name) = parents.of(path)?;
                create_dir(dir, name, path)?;
                report.directories += 1;
            }
            Step::AdoptDir(_) => {}
            Step::Place { src, dst, kind } => {
                let (dir, name) = parents.of(dst)?;
                let tmp = temp_name(name);
                let tmp_path = dst.with_file_name(&tmp);
                let settings = permissions.settings(dst, false);
                let file = write_temporary(src, dir, &tmp, *kind, &mut budget)
                    .map_err(|e| journal::with_path(e, "writing", &tmp_path))?;
                match (settings, file) {
                    (Some(settings), Some(file)) => {
                        permissions::Resolved::apply(dst, &settings, &file).map_err(InstallError::Permissions)?;
                    }
                    (Some(settings), None) if settings.uid.is_some() || settings.gid.is_some() => {
                        dir.lchown(&tmp, settings.uid, settings.gid).map_err(|e| {
                            InstallError::Permissions(format!("permissions for {}: owner/group: {e}", dst.display()))
                        })?;
                    }
                    _ => {}
                }
                report.files += 1;
            }
        }
    }
    Ok(report)
}

fn create_dir(dir: &Dir, name: &OsStr, path: &Path) -> io::Result<()> {
    match dir.create_dir(name, 0o755) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.kind(name)? == Some(at::Kind::Dir) => Ok(()),
        other => other.map_err(|e| journal::with_path(e, "creating directory", path)),
    }
}

/// Copies `src` to `tmp` in `dir`: a link as a link, a file with its mode
/// and mtime (returned open, for its permissions).
fn write_temporary(src: &Path, dir: &Dir, tmp: &OsStr, kind: Kind, budget: &mut Budget) -> io::Result<Option<File>> {
    match dir.kind(tmp)? {
        Some(at::Kind::Dir) => dir.remove_dir(tmp)?,
        Some(_) => dir.remove_file(tmp)?,
        None => {}
    }
    if kind == Kind::Symlink {
        dir.symlink(fs::read_link(src)?.as_os_str(), tmp)?;
        return Ok(None);
    }
    let mut input = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(src)?;
    let meta = input.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", src.display())));
    }
    let mut output = dir.create_new(tmp, 0o600)?;
    let copied = io::copy(&mut (&mut input).take(budget.left.saturating_add(1)), &mut output)?;
    budget.spend(copied)?;
    output.set_permissions(fs::Permissions::from_mode(meta.permissions().mode() & 0o7777))?;
    if let Ok(modified) = meta.modified() {
        output.set_modified(modified)?;
    }
    Ok(Some(output))
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
    let mut parents = Parents::default();
    for step in steps {
        if let Step::Place { dst, .. } = step {
            let (dir, name) = parents.of(dst)?;
            dir.rename(&temp_name(name), dir, name).map_err(|e| journal::with_path(e, "renaming into place", dst))?;
        }
    }
    let has_context = permissions.has_context();
    for step in steps {
        let (path, is_dir) = match step {
            Step::CreateDir(p) | Step::AdoptDir(p) => (p, true),
            Step::Place { dst, .. } => (dst, false),
            Step::RemoveFirst(_) => continue,
        };
        if let Some(settings) = permissions.settings(path, true).filter(|_| is_dir && path.parent().is_some()) {
            // Opened without following a link: a directory swapped for a
            // link since it was created is refused, not followed.
            let (dir, name) = parents.of(path)?;
            let opened = dir.open_dir(name).map_err(|e| journal::with_path(e, "opening directory", path))?;
            permissions::Resolved::apply(path, &settings, opened.as_file()).map_err(InstallError::Permissions)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_directory_is_probed_as_a_directory() {
        // `/` has no parent to open: it is there, and merged into, never created.
        assert_eq!(probe(Path::new("/")), Some(Kind::Dir));
        assert_eq!(probe(Path::new("/proc")), Some(Kind::Dir));
    }
}
