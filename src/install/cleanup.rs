//! The cleanup list: `deployment-instructions/<group>-cleanup`, one absolute
//! path per line (CodeDeploy's format), naming every file, link and
//! directory that installs of the group put on disk. It is written ahead of
//! each change, so after a crash it covers whatever the install created.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::journal;
use crate::sys::at;

/// Reads the list; empty when there is none.
pub fn read(list: &Path) -> io::Result<Vec<PathBuf>> {
    let text = journal::read_optional(list)?.unwrap_or_default();
    Ok(text.lines().filter(|l| l.starts_with('/')).map(PathBuf::from).collect())
}

/// Replaces the list atomically and durably.
pub fn write(list: &Path, paths: &[PathBuf]) -> io::Result<()> {
    let mut text = String::with_capacity(paths.len() * 48);
    for path in paths {
        text.push_str(&path.to_string_lossy());
        text.push('\n');
    }
    journal::write_atomic(list, text.as_bytes())
}

/// Removes what a crashed install may have left half-written: the temporary
/// sibling of every listed path. Listed paths themselves are complete (they
/// only ever appear by rename) and are left to the next plan. A path whose
/// parent is no longer a real directory (a link now) is skipped: nothing of
/// ours can be behind a link, and nothing is removed through one.
pub fn remove_temporaries(paths: &[PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    for path in paths {
        let tmp = journal::temp_path(path);
        let Some((dir, name)) = parent_of(&tmp) else { continue };
        let result = match dir.kind(name) {
            Ok(Some(at::Kind::Dir)) => fs::remove_dir_all(&tmp),
            Ok(Some(_)) => dir.remove_file(name),
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        result.map_err(|e| journal::with_path(e, "removing leftover", &tmp))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes `paths` in reverse order (children before parents): files and
/// links are unlinked, directories removed only when empty (a directory
/// that still holds files that are not ours stays). Missing paths are fine.
/// Nothing is removed through a link: a path whose parent has become a link
/// is skipped (the link itself, if it is ours, is removed in its turn).
pub fn remove(paths: &[PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    for path in paths.iter().rev() {
        let Some((dir, name)) = parent_of(path) else { continue };
        let result = match dir.kind(name) {
            Ok(Some(at::Kind::Dir)) => match dir.remove_dir(name) {
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
                other => other,
            },
            Ok(Some(_)) => dir.remove_file(name),
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        result.map_err(|e| journal::with_path(e, "removing", path))?;
        removed += 1;
    }
    Ok(removed)
}

/// The parent of `path` opened without following links, and its name;
/// `None` (logged when it is a link) when it cannot be reached that way.
fn parent_of(path: &Path) -> Option<(at::Dir, &std::ffi::OsStr)> {
    match at::parent_nofollow(path) {
        Ok(found) => Some(found),
        Err(at::WalkError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("not removing {}: {e}", path.display());
            None
        }
    }
}
