//! The cleanup list: `deployment-instructions/<group>-cleanup`, one absolute
//! path per line (CodeDeploy's format), naming every file, link and
//! directory that installs of the group put on disk. It is written ahead of
//! each change, so after a crash it covers whatever the install created.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::journal;

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
/// only ever appear by rename) and are left to the next plan.
pub fn remove_temporaries(paths: &[PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    for path in paths {
        let tmp = journal::temp_path(path);
        match fs::symlink_metadata(&tmp) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&tmp),
            Ok(_) => fs::remove_file(&tmp),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        }
        .map_err(|e| journal::with_path(e, "removing leftover", &tmp))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes `paths` in reverse order (children before parents): files and
/// links are unlinked, directories removed only when empty (a directory
/// that still holds files that are not ours stays). Missing paths are fine.
pub fn remove(paths: &[PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    for path in paths.iter().rev() {
        let result = match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => match fs::remove_dir(path) {
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
                other => other,
            },
            Ok(_) => fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        result.map_err(|e| journal::with_path(e, "removing", path))?;
        removed += 1;
    }
    Ok(removed)
}
