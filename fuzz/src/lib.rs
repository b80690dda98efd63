//! Shared harness of the fuzz targets: unpacking a bundle made of the fuzzer's
//! bytes into a fresh directory, with small limits, and checking that nothing
//! appeared beside it. See docs/fuzzing.md.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgedeploy::unpack::{self, BundleType, Policy, UnpackError};

/// Largest content a fuzzed bundle may unpack to.
pub const MAX_BYTES: u64 = 1 << 20;
/// Largest number of entries a fuzzed bundle may have.
pub const MAX_ENTRIES: u64 = 256;

/// This process's scratch directory (in /dev/shm when there is one, so the
/// many small writes stay in memory): it holds `bundle` and `out` only.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
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
