//! The cleanup list: `deployment-instructions/<group>-cleanup`, one absolute
//! path per line (CodeDeploy's format), naming every file, link and
//! directory that installs of the group put on disk. It is written ahead of
//! each change, so after a crash it covers whatever the install created.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::journal;
use crate::sys::at;

/// Reads the list; empty when there is none. Names are taken byte for
/// byte: a name that is not UTF-8 is listed as its bytes, so it matches the
/// file on disk when the same revision is deployed again.
pub fn read(list: &Path) -> io::Result<Vec<PathBuf>> {
    let bytes = match fs::read(list) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(journal::with_path(e, "reading", list)),
    };
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter(|line| line.starts_with(b"/"))
        .map(|line| PathBuf::from(OsStr::from_bytes(line)))
        .collect())
}

/// Replaces the list atomically and durably, each path as its bytes. A path
/// with a newline cannot be listed (the planner refuses such names first).
pub fn write(list: &Path, paths: &[PathBuf]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(paths.len() * 48);
    for path in paths {
        let name = path.as_os_str().as_bytes();
        if name.contains(&b'\n') {
            let message = format!("{path:?}: a name with a newline cannot be recorded in the cleanup list");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        bytes.extend_from_slice(name);
        bytes.push(b'\n');
    }
    journal::write_atomic(list, &bytes)
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
    path.parent()?; // `/` is never removed
    match at::parent_nofollow(path) {
        Ok(found) => Some(found),
        Err(at::WalkError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("not removing {}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn names_that_are_not_utf8_round_trip_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("cleanup-bytes-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let list = dir.join("g-cleanup");
        let odd = PathBuf::from(std::ffi::OsString::from_vec(b"/srv/app/caf\xe9 \xff\xfe.txt".to_vec()));
        let paths = vec![PathBuf::from("/srv/app"), odd.clone(), PathBuf::from("/srv/app/caf\u{e9}.txt")];
        write(&list, &paths).expect("write");
        assert_eq!(read(&list).expect("read"), paths);
        assert_eq!(
            fs::read(&list).expect("bytes"),
            b"/srv/app\n/srv/app/caf\xe9 \xff\xfe.txt\n/srv/app/caf\xc3\xa9.txt\n"
        );
        let err = write(&list, &[PathBuf::from("/srv/a\nb")]).unwrap_err();
        assert!(err.to_string().contains("\"/srv/a\\nb\": a name with a newline cannot be recorded"), "{err}");
        assert_eq!(read(&list).expect("read"), paths, "a refused write leaves the list as it was");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
