//! Deciding what an install does, without touching the disk: every conflict
//! is found here, before anything is created, replaced or deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::appspec::{FileExistsBehavior, FileMapping};

/// What kind of object a path is (or will be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
}

/// One object of the revision to put at `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    /// The object in the deployment archive.
    pub src: PathBuf,
    /// Where it goes on the device.
    pub dst: PathBuf,
    /// What it is in the archive.
    pub kind: Kind,
    /// Index of the `files` mapping it comes from.
    pub mapping: usize,
}

/// One step of the plan, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Remove our previous object at this path first: the revision needs
    /// another kind of object there.
    RemoveFirst(PathBuf),
    /// Create this directory.
    CreateDir(PathBuf),
    /// Keep this directory, created by the previous install; it stays ours.
    AdoptDir(PathBuf),
    /// Install `src` at `dst` (written under a temp name, renamed into place).
    Place {
        /// The object in the deployment archive.
        src: PathBuf,
        /// Its destination.
        dst: PathBuf,
        /// File or symlink.
        kind: Kind,
    },
}

/// The decided install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps in order: parents before children.
    pub steps: Vec<Step>,
    /// Paths of the previous install to remove once the new files are in place.
    pub obsolete: Vec<PathBuf>,
    /// Files that exist and were kept (RETAIN).
    pub retained: Vec<PathBuf>,
}

impl Plan {
    /// Every path this install puts or keeps on disk as its own, in order
    /// (parents before children): the next cleanup list.
    pub fn owned(&self) -> Vec<PathBuf> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateDir(p) | Step::AdoptDir(p) => Some(p.clone()),
                Step::Place { dst, .. } => Some(dst.clone()),
                Step::RemoveFirst(_) => None,
            })
            .collect()
    }
}

/// Why the install cannot go ahead. Nothing has been changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Files exist that are not ours and DISALLOW forbids replacing them.
    Conflicts(Vec<PathBuf>),
    /// The revision needs a directory or file where something incompatible is.
    Blocked {
        /// The path.
        path: PathBuf,
        /// What is in the way.
        reason: String,
    },
    /// Two sources map to the same destination file.
    Duplicate(PathBuf),
    /// A destination name cannot be recorded in the cleanup list.
    BadName(PathBuf),
}

/// Decides the install. `mappings` are the AppSpec's `files` (named in
/// errors), `previous` is the previous install's cleanup list (paths that
/// are ours to replace or remove); `probe` tells what is on the disk at a
/// path now (`None`: nothing), without following a final symlink.
pub fn plan(
    items: &[SourceItem],
    mappings: &[FileMapping],
    previous: &[PathBuf],
    behavior: FileExistsBehavior,
    probe: &dyn Fn(&Path) -> Option<Kind>,
) -> Result<Plan, PlanError> {
    let ours: HashSet<&Path> = previous.iter().map(PathBuf::as_path).collect();
    let mut planner =
        Planner { ours: &ours, probe, behavior, mappings, plan: Plan::default(), decided: HashMap::new() };
    let mut conflicts = Vec::new();
    for item in items {
        if item.dst.as_os_str().as_bytes().contains(&b'\n') {
            return Err(PlanError::BadName(item.dst.clone()));
        }
        planner.ancestors(&item.dst, item.mapping)?;
        match item.kind {
            Kind::Dir => planner.dir(&item.dst, item.mapping)?,
            Kind::File | Kind::Symlink => {
                if let Some(conflict) = planner.place(item)? {
                    conflicts.push(conflict);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(PlanError::Conflicts(conflicts));
    }
    let mut plan = planner.plan;
    let kept: BTreeSet<PathBuf> = plan.owned().into_iter().collect();
    plan.obsolete = previous.iter().filter(|p| !kept.contains(*p)).cloned().collect();
    Ok(plan)
}

struct Planner<'a> {
    ours: &'a HashSet<&'a Path>,
    probe: &'a dyn Fn(&Path) -> Option<Kind>,
    behavior: FileExistsBehavior,
    mappings: &'a [FileMapping],
    plan: Plan,
    /// Destinations already decided, so a path is planned once: whether
    /// as a directory, and by which mapping.
    decided: HashMap<PathBuf, (bool, usize)>,
}

impl Planner<'_> {
    /// Plans the missing parent directories of `dst`, outermost first.
    fn ancestors(&mut self, dst: &Path, mapping: usize) -> Result<(), PlanError> {
        let parents: Vec<&Path> = dst.ancestors().skip(1).filter(|p| p.parent().is_some()).collect();
        for parent in parents.into_iter().rev() {
            self.dir(parent, mapping)?;
        }
        Ok(())
    }

    /// Records that `mapping` needs `path` (as a directory when `as_dir`):
    /// `Ok(true)` the first time, `Ok(false)` when already decided the same
    /// way, an error naming both mappings when another needs the other kind.
    fn decide(&mut self, path: &Path, as_dir: bool, mapping: usize) -> Result<bool, PlanError> {
        match self.decided.get(path) {
            None => {
                self.decided.insert(path.to_path_buf(), (as_dir, mapping));
                Ok(true)
            }
            Some(&(dir, _)) if dir == as_dir => Ok(false),
            Some(&(_, first)) => {
                let (dir_mapping, file_mapping) = if as_dir { (mapping, first) } else { (first, mapping) };
                let reason = format!(
                    "{} needs a directory there and {} a file",
                    describe(self.mappings, dir_mapping),
                    describe(self.mappings, file_mapping)
                );
                Err(PlanError::Blocked { path: path.to_path_buf(), reason })
            }
        }
    }

    fn dir(&mut self, path: &Path, mapping: usize) -> Result<(), PlanError> {
        if !self.decide(path, true, mapping)? {
            return Ok(());
        }
        let ours = self.ours.contains(path);
        let step = match ((self.probe)(path), ours) {
            (None, _) => Step::CreateDir(path.to_path_buf()),
            (Some(Kind::Dir), true) => Step::AdoptDir(path.to_path_buf()),
            (Some(Kind::Dir), false) => return Ok(()),
            (Some(_), true) => {
                self.plan.steps.push(Step::RemoveFirst(path.to_path_buf()));
                Step::CreateDir(path.to_path_buf())
            }
            (Some(kind), false) => {
                return Err(PlanError::Blocked {
                    path: path.to_path_buf(),
                    reason: format!("a directory is needed there, but a {} exists", kind_name(kind)),
                });
            }
        };
        self.plan.steps.push(step);
        Ok(())
    }

    /// Plans one file or symlink; returns the path when it is a DISALLOW conflict.
    fn place(&mut self, item: &SourceItem) -> Result<Option<PathBuf>, PlanError> {
        if !self.decide(&item.dst, false, item.mapping)? {
            return Err(PlanError::Duplicate(item.dst.clone()));
        }
        let existing = (self.probe)(&item.dst);
        if existing == Some(Kind::Dir) {
            let reason = "a file is to be installed there, but a directory exists".to_string();
            return Err(PlanError::Blocked { path: item.dst.clone(), reason });
        }
        if existing.is_some() && !self.ours.contains(item.dst.as_path()) {
            match self.behavior {
                FileExistsBehavior::Disallow => return Ok(Some(item.dst.clone())),
                FileExistsBehavior::Retain => {
                    self.plan.retained.push(item.dst.clone());
                    return Ok(None);
                }
                FileExistsBehavior::Overwrite => {}
            }
        }
        let step = Step::Place { src: item.src.clone(), dst: item.dst.clone(), kind: item.kind };
        self.plan.steps.push(step);
        Ok(None)
    }
}

/// `files[1] (source "b/x", destination "/srv")`.
fn describe(mappings: &[FileMapping], index: usize) -> String {
    match mappings.get(index) {
        Some(m) => format!(
            "files[{index}] (source {:?}, destination {:?})",
            if m.source.as_os_str().is_empty() { "/".into() } else { m.source.to_string_lossy() },
            m.destination.to_string_lossy()
        ),
        None => format!("files[{index}]"),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Dir => "directory",
        Kind::File => "file",
        Kind::Symlink => "symbolic link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn disk(entries: &[(&str, Kind)]) -> impl Fn(&Path) -> Option<Kind> {
        let map: HashMap<PathBuf, Kind> = entries.iter().map(|(p, k)| (PathBuf::from(p), *k)).collect();
        move |p: &Path| map.get(p).copied()
    }

    fn file(dst: &str) -> SourceItem {
        SourceItem {
            src: PathBuf::from("/archive").join(dst.trim_start_matches('/')),
            dst: dst.into(),
            kind: Kind::File,
            mapping: 0,
        }
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn creates_missing_ancestors_outermost_first() {
        let probe = disk(&[("/", Kind::Dir), ("/opt", Kind::Dir)]);
        let plan = plan(&[file("/opt/app/bin/run")], &[], &[], FileExistsBehavior::Disallow, &probe).unwrap();
        assert_eq!(plan.owned(), paths(&["/opt/app", "/opt/app/bin", "/opt/app/bin/run"]));
    }

    #[test]
    fn disallow_reports_every_conflict_and_plans_nothing() {
        let probe = disk(&[("/etc", Kind::Dir), ("/etc/a", Kind::File), ("/etc/b", Kind::File)]);
        let items = [file("/etc/a"), file("/etc/b"), file("/etc/c")];
        let err = plan(&items, &[], &[], FileExistsBehavior::Disallow, &probe).unwrap_err();
        assert_eq!(err, PlanError::Conflicts(paths(&["/etc/a", "/etc/b"])));
    }

    #[test]
    fn files_of_the_previous_install_are_not_conflicts() {
        let probe = disk(&[("/srv", Kind::Dir), ("/srv/app", Kind::Dir), ("/srv/app/old", Kind::File)]);
        let previous = paths(&["/srv/app", "/srv/app/old", "/srv/app/gone"]);
        let plan =
            plan(&[file("/srv/app/old"), file("/srv/app/new")], &[], &previous, FileExistsBehavior::Disallow, &probe)
                .unwrap();
        assert_eq!(plan.steps[0], Step::AdoptDir("/srv/app".into()));
        assert_eq!(plan.owned(), paths(&["/srv/app", "/srv/app/old", "/srv/app/new"]));
        assert_eq!(plan.obsolete, paths(&["/srv/app/gone"]));
    }

    #[test]
    fn retain_keeps_existing_and_overwrite_takes_it_over() {
        let probe = disk(&[("/etc", Kind::Dir), ("/etc/a", Kind::File)]);
        let retained = plan(&[file("/etc/a")], &[], &[], FileExistsBehavior::Retain, &probe).unwrap();
        assert!(retained.owned().is_empty());
        assert_eq!(retained.retained, paths(&["/etc/a"]));
        let overwritten = plan(&[file("/etc/a")], &[], &[], FileExistsBehavior::Overwrite, &probe).unwrap();
        assert_eq!(overwritten.owned(), paths(&["/etc/a"]));
    }

    #[test]
    fn duplicate_destination_is_refused() {
        let probe = disk(&[("/etc", Kind::Dir)]);
        let err = plan(&[file("/etc/a"), file("/etc/a")], &[], &[], FileExistsBehavior::Overwrite, &probe).unwrap_err();
        assert_eq!(err, PlanError::Duplicate("/etc/a".into()));
    }

    #[test]
    fn file_where_a_directory_is_needed_is_blocked_unless_ours() {
        let probe = disk(&[("/etc", Kind::Dir), ("/etc/app", Kind::File)]);
        let err = plan(&[file("/etc/app/conf")], &[], &[], FileExistsBehavior::Overwrite, &probe).unwrap_err();
        assert!(matches!(err, PlanError::Blocked { ref path, .. } if path == Path::new("/etc/app")));
        let plan =
            plan(&[file("/etc/app/conf")], &[], &paths(&["/etc/app"]), FileExistsBehavior::Disallow, &probe).unwrap();
        assert_eq!(plan.steps[0], Step::RemoveFirst("/etc/app".into()));
        assert_eq!(plan.steps[1], Step::CreateDir("/etc/app".into()));
    }

    #[test]
    fn existing_directories_not_ours_are_merged_not_owned() {
        let probe = disk(&[("/var", Kind::Dir), ("/var/www", Kind::Dir)]);
        let dir = SourceItem { src: "/archive/www".into(), dst: "/var/www".into(), kind: Kind::Dir, mapping: 0 };
        let plan = plan(&[dir, file("/var/www/index.html")], &[], &[], FileExistsBehavior::Disallow, &probe).unwrap();
        assert_eq!(plan.owned(), paths(&["/var/www/index.html"]));
    }

    fn mapping(source: &str, destination: &str) -> FileMapping {
        FileMapping { source: source.into(), destination: destination.into() }
    }

    #[test]
    fn a_path_needed_as_file_and_directory_names_both_mappings() {
        let probe = disk(&[("/srv", Kind::Dir)]);
        let mappings = [mapping("conf", "/srv"), mapping("tree", "/srv")];
        // files[0] puts a file at /srv/conf; files[1] needs /srv/conf/ as a directory.
        let items =
            [SourceItem { mapping: 0, ..file("/srv/conf") }, SourceItem { mapping: 1, ..file("/srv/conf/app.ini") }];
        let err = plan(&items, &mappings, &[], FileExistsBehavior::Overwrite, &probe).unwrap_err();
        let reason = "files[1] (source \"tree\", destination \"/srv\") needs a directory there and \
                      files[0] (source \"conf\", destination \"/srv\") a file";
        assert_eq!(err, PlanError::Blocked { path: "/srv/conf".into(), reason: reason.into() });
        // The other order: the directory first, then the file.
        let dir = SourceItem { src: "/archive/tree".into(), dst: "/srv/conf".into(), kind: Kind::Dir, mapping: 0 };
        let items = [dir, SourceItem { mapping: 1, ..file("/srv/conf") }];
        let mappings = [mapping("", "/srv/conf"), mapping("conf", "/srv")];
        let err = plan(&items, &mappings, &[], FileExistsBehavior::Overwrite, &probe).unwrap_err();
        let reason = "files[0] (source \"/\", destination \"/srv/conf\") needs a directory there and \
                      files[1] (source \"conf\", destination \"/srv\") a file";
        assert_eq!(err, PlanError::Blocked { path: "/srv/conf".into(), reason: reason.into() });
    }
}
