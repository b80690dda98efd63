//! Shared harness of the fuzz targets: unpacking a bundle made of the fuzzer's
//! bytes into a fresh directory, with small limits, and checking that nothing
//! appeared beside it. See docs/fuzzing.md.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgedeploy::unpack::{self, BundleType, Policy, UnpackError};

/// Largest content a fuzzed bundle may unpack to.
pub const MAX_BYTES: u64 = 1 << 20;
/// Largest number of entries a fuzzed bundle may have.
pub const MAX_ENTRIES: u64 = 256;

/// This process's scratch directory: it holds `bundle` and `out` only. Its
/// parent is `$EDGEDEPLOY_FUZZ_SCRATCH` (fuzz/run.sh makes one per target
/// and removes it), else /dev/shm when there is one (the many small writes
/// stay in memory), else the temporary directory.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = match std::env::var_os("EDGEDEPLOY_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let dir = parent.join(format!("edgedeploy-fuzz-{}", std::process::id()));
        remove_tree(&dir);
        fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        dir
    })
}

/// The policy of one run: the defaults with small limits. The length of the
/// input picks which of the path switches are on, so that the relaxed rules
/// (which still promise to write nothing outside the archive) are fuzzed
/// too. Special files and links leaving the archive stay refused: the
/// fuzzer runs as root in CI and must not create devices or write through
/// a link to anywhere on the machine.
pub fn policy(len: usize) -> Policy {
    Policy {
        max_bytes: MAX_BYTES,
        max_entries: MAX_ENTRIES,
        allow_absolute_paths: len & 1 != 0,
        allow_parent_components: len & 2 != 0,
        allow_setuid: len & 4 != 0,
        ..Policy::default()
    }
}

/// Writes `data` as a bundle of type `kind`, unpacks it into a fresh
/// directory and removes both. Panics (a finding) when unpacking panics,
/// when a success reports more than the limits allow, or when anything
/// other than the bundle and the archive appears in the scratch directory.
pub fn unpack_bytes(data: &[u8], kind: BundleType) {
    let dir = scratch();
    let bundle = dir.join("bundle");
    let out = dir.join("out");
    fs::write(&bundle, data).expect("writing the bundle");
    let policy = policy(data.len());
    let result = unpack::unpack(&bundle, kind, &out, &policy);
    if let Ok(report) = &result {
        assert!(report.bytes <= MAX_BYTES, "unpacked {} bytes past the {MAX_BYTES}-byte limit", report.bytes);
        assert!(report.entries <= MAX_ENTRIES, "unpacked {} entries past the limit", report.entries);
        check_archive(&out);
    }
    if let Err(UnpackError::Io { path, .. }) = &result {
        assert!(path.starts_with(dir), "I/O error on {} outside the scratch directory", path.display());
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("listing the scratch directory")
        .map(|e| e.expect("listing the scratch directory").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    remove_tree(&out);
    assert!(
        names.iter().all(|n| n == "bundle" || n == "out"),
        "unpacking wrote beside the archive: {names:?} ({result:?})"
    );
}

/// What a successful unpack promises of the tree on disk, checked on the
/// disk itself: its regular files hold at most [`MAX_BYTES`] (apparent
/// sizes, each file once however many hard links it has: a later copy
/// writes that much), and every symbolic link resolves inside it.
fn check_archive(out: &Path) {
    let root = fs::canonicalize(out).expect("resolving the archive");
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let resolved = resolve(&path);
                assert!(
                    resolved.starts_with(&root),
                    "symlink {} -> {:?} resolves to {}, outside the archive",
                    path.display(),
                    fs::read_link(&path).unwrap_or_default(),
                    resolved.display()
                );
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.len();
            }
        }
    }
    assert!(bytes <= MAX_BYTES, "the archive's files hold {bytes} bytes, past the {MAX_BYTES}-byte limit");
}

/// Where `path` leads on disk, following symbolic links component by
/// component as the kernel would; past a missing component the rest is
/// taken lexically. At most 40 links, like the kernel.
fn resolve(path: &Path) -> PathBuf {
    let mut pending: Vec<OsString> = path.components().rev().map(|c| c.as_os_str().to_os_string()).collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_bytes() {
            b"/" => at = PathBuf::from("/"),
            b"." => {}
            b".." => {
                at.pop();
            }
            _ => {
                let next = at.join(&part);
                match fs::read_link(&next) {
                    Ok(target) if links < 40 => {
                        links += 1;
                        pending.extend(target.components().rev().map(|c| c.as_os_str().to_os_string()));
                    }
                    _ => at = next,
                }
            }
        }
    }
    at
}

/// Removes `root` even when the archive left directories without write or
/// search permission (as an unprivileged user).
fn remove_tree(root: &Path) {
    if fs::remove_dir_all(root).is_ok() || fs::symlink_metadata(root).is_err() {
        return;
    }
    open_up(root);
    let _ = fs::remove_dir_all(root);
}

fn open_up(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgedeploy-fuzz-test-{name}-{}", std::process::id()));
        remove_tree(&dir);
        fs::create_dir_all(dir.join("out/sub")).unwrap();
        dir
    }

    #[test]
    fn resolve_follows_links_physically() {
        let dir = fresh("resolve");
        let out = dir.join("out");
        symlink(".", out.join("dot")).unwrap();
        symlink("dot/..", out.join("esc")).unwrap();
        symlink("sub/../sub", out.join("in")).unwrap();
        let root = fs::canonicalize(&out).unwrap();
        assert_eq!(resolve(&out.join("esc")), fs::canonicalize(&dir).unwrap());
        assert_eq!(resolve(&out.join("in")), root.join("sub"));
        assert_eq!(resolve(&out.join("sub/missing/../../x")), root.join("x"));
        remove_tree(&dir);
    }

    #[test]
    #[should_panic(expected = "outside the archive")]
    fn check_archive_catches_a_link_through_a_dot_link() {
        let dir = fresh("dotlink");
        let out = dir.join("out");
        symlink(".", out.join("dot")).unwrap();
        symlink("../dot/..", out.join("sub/esc")).unwrap();
        check_archive(&out);
    }

    #[test]
    #[should_panic(expected = "past the")]
    fn check_archive_counts_apparent_sizes() {
        let dir = fresh("sparse");
        let file = fs::File::create(dir.join("out/sparse")).unwrap();
        file.set_len(MAX_BYTES + 1).unwrap();
        check_archive(&dir.join("out"));
    }
}
