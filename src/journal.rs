//! The one way agent state reaches the disk: temp file, fsync, rename,
//! fsync of the directory. See `docs/crash-model.md` for what this guarantees.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// Prefix of every temporary name the agent creates next to a final name.
/// Anything starting with it is the agent's own and may be removed.
pub const TEMP_PREFIX: &str = ".edgedeploy-tmp.";

/// The temporary sibling of `path` used while `path` is being written.
/// Built from the name's bytes: two names that are not UTF-8 never share
/// a temporary.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(TEMP_PREFIX);
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically and durably: after a crash at any
/// instant, `path` holds either its old content or all of `bytes`. The file
/// is created 0644 (less the umask), as CodeDeploy's state files are.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with_mode(path, bytes, 0o644)
}

/// [`write_atomic`] creating the file with `mode` (less the umask): 0600
/// for keys and credentials.
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        // A leftover (or anything planted) at the temporary name is removed,
        // never written through: O_EXCL does not follow a link.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fsync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| with_path(e, "writing", path))
}

/// Makes the directory entries of `dir` (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, and makes each new entry durable.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(parent_of(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(with_path(e, "creating directory", dir)),
    }
}

/// Flushes every filesystem that holds one of `paths`, one `syncfs` per
/// filesystem however many paths it holds. Paths that no longer exist are
/// skipped (their nearest existing ancestor is synced instead).
pub fn sync_filesystems<'a>(paths: impl IntoIterator<Item = &'a Path>) -> io::Result<()> {
    let mut seen = BTreeSet::new();
    for path in paths {
        let Some(existing) = path.ancestors().find(|p| p.exists()) else { continue };
        let meta = fs::metadata(existing)?;
        if seen.insert(meta.dev()) {
            // Non-blocking: a FIFO in the way is opened, not waited on.
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(existing)
                .map_err(|e| with_path(e, "opening", existing))?;
            sys::syncfs(&file).map_err(|e| with_path(e, "syncing the filesystem of", existing))?;
        }
    }
    Ok(())
}

/// Reads a small state file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(e, "reading", path)),
    }
}

/// Removes `path` if it exists and makes the removal durable.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(parent_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(with_path(e, "removing", path)),
    }
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Wraps an I/O error with what was being done and to which path. The
/// result keeps the error's kind and the error itself as its `source()`
/// (with its OS code), so a full disk is still ENOSPC after the wrapping.
pub fn with_path(err: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), PathError { doing: doing.to_string(), path: path.to_path_buf(), source: err })
}

/// An I/O error on a path: what was being done, where, and the cause.
#[derive(Debug)]
pub struct PathError {
    doing: String,
    path: PathBuf,
    source: io::Error,
}

impl PathError {
    /// The path the operation was on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.doing, self.path.display(), self.source)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("edj-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_atomic_never_writes_through_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("edj-link-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.join("state");
        std::os::unix::fs::symlink(&victim, temp_path(&path)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn with_path_keeps_the_cause() {
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
        let wrapped = with_path(enospc, "writing", Path::new("/data/x"));
        assert_eq!(wrapped.kind(), io::ErrorKind::StorageFull);
        assert!(wrapped.to_string().starts_with("writing /data/x: No space left on device"), "{wrapped}");
        let inner = wrapped.get_ref().and_then(|e| e.downcast_ref::<PathError>()).expect("a PathError inside");
        assert_eq!(inner.io_error().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(inner.path(), Path::new("/data/x"));
        assert!(std::error::Error::source(inner).is_some());
    }

    #[test]
    fn write_atomic_names_the_path_on_error() {
        let err = write_atomic(Path::new("/nonexistent-dir/x/state"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x/state"), "{err}");
    }
}
