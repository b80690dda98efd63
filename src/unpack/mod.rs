//! Turn a bundle (tar, tgz, zip or a directory) into a deployment archive:
//! streamed, with safe paths and limits.
//!
//! This is the product's security boundary: a bundle is untrusted input.
//! Every format's reader hands entries to one writer (`tree`), which applies
//! the rules (`safety`, pure decisions) and the limits (`limits`). The rules
//! and their switches are written down in `docs/bundle-safety.md`.

use std::fmt;
use std::fs::{self, DirBuilder, File, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod dir;
mod limits;
mod safety;
mod tar;
mod tree;
mod zip;
mod zip_format;

/// The bundle types `deploy-local -t` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleType {
    /// POSIX tar (gzip is detected by its magic bytes whatever the type says).
    Tar,
    /// gzip-compressed tar.
    Tgz,
    /// zip.
    Zip,
    /// A directory on disk, copied.
    Directory,
}

impl BundleType {
    /// Parses `tar`, `tgz`, `zip`, `directory` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tar" => Some(BundleType::Tar),
            "tgz" | "tar.gz" => Some(BundleType::Tgz),
            "zip" => Some(BundleType::Zip),
            "directory" => Some(BundleType::Directory),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            BundleType::Tar => "tar",
            BundleType::Tgz => "tgz",
            BundleType::Zip => "zip",
            BundleType::Directory => "directory",
        }
    }
}

/// What unpacking refuses by default, and the limits it enforces.
/// Every rule is on by default; each switch relaxes one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Largest total of unpacked bytes (0: no limit). Default 1 GiB.
    pub max_bytes: u64,
    /// Largest number of entries (0: no limit). Default 100,000.
    pub max_entries: u64,
    /// Largest ratio of unpacked to compressed bytes (0: no limit). Default 200.
    pub max_ratio: u64,
    /// Accept absolute entry names, unpacked relative to the archive root.
    pub allow_absolute_paths: bool,
    /// Accept `..` components that stay inside the archive.
    pub allow_parent_components: bool,
    /// Accept symbolic links whose target leaves the archive.
    pub allow_external_symlinks: bool,
    /// Accept device, fifo and socket entries (created with mknod).
    pub allow_special_files: bool,
    /// Keep setuid/setgid bits instead of refusing the entry.
    pub allow_setuid: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_bytes: 1 << 30,
            max_entries: 100_000,
            max_ratio: 200,
            allow_absolute_paths: false,
            allow_parent_components: false,
            allow_external_symlinks: false,
            allow_special_files: false,
            allow_setuid: false,
        }
    }
}

/// What was unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Why a bundle was refused.
#[derive(Debug)]
pub enum UnpackError {
    /// An entry broke a safety rule: `entry` is its name in the bundle,
    /// `rule` says which rule (e.g. "absolute path", "symlink target leaves the archive").
    Refused {
        /// The entry's name as stored in the bundle.
        entry: String,
        /// The rule it broke.
        rule: String,
    },
    /// A limit was exceeded (`what` names the limit and the figures).
    Limit {
        /// Which limit and by how much.
        what: String,
    },
    /// The bundle is truncated or corrupt (`detail` says where).
    Corrupt {
        /// What is wrong and where.
        detail: String,
    },
    /// Reading the bundle or writing the archive failed.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Refused { entry, rule } => write!(f, "bundle entry {entry:?} refused: {rule}"),
            UnpackError::Limit { what } => write!(f, "bundle refused: {what}"),
            UnpackError::Corrupt { detail } => write!(f, "bundle is corrupt or truncated: {detail}"),
            UnpackError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for UnpackError {}

/// Unpacks `bundle` of type `kind` into the directory `dest`, which must not
/// exist yet (it is created, mode 0755; its parent must exist). Nothing is
/// ever written outside `dest`.
/// On error `dest` may hold a partial tree; the caller removes it.
///
/// For `Tar` and `Tgz` the content decides: gzip is recognized by its magic
/// bytes, and a zip (local header magic) is read as a zip.
pub fn unpack(bundle: &Path, kind: BundleType, dest: &Path, policy: &Policy) -> Result<Report, UnpackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    if kind == BundleType::Directory {
        create_dest(dest)?;
        let mut tree = tree::Tree::new(dest, bundle, policy);
        dir::copy_dir(bundle, dest, &mut tree)?;
        return tree.finish();
    }
    let file = File::open(bundle).map_err(io(bundle))?;
    let mut magic = [0u8; 4];
    let got = file.read_at(&mut magic, 0).map_err(io(bundle))?;
    let format = detect(kind, &magic[..got]);
    create_dest(dest)?;
    let mut tree = tree::Tree::new(dest, bundle, policy);
    match format {
        Format::Zip => zip::unpack_zip(&file, &mut tree)?,
        Format::Tar { gzip } => tar::unpack_tar(file, gzip, &mut tree)?,
    }
    tree.finish()
}

/// Checks, once a revision's root is chosen inside the unpacked tree (its
/// single top-level directory, `top` in the bundle's names), that every
/// symbolic link under `root` still resolves inside `root`: a link that
/// stayed inside the bundle may climb out of the directory that is
/// deployed (`top/s -> ../x`). Skipped with `allow_external_symlinks`.
pub fn check_links_inside(root: &Path, top: &Path, policy: &Policy) -> Result<(), UnpackError> {
    if policy.allow_external_symlinks {
        return Ok(());
    }
    let mut steps = crate::resolve::DEFAULT_STEPS;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let entries = fs::read_dir(&dir).map_err(|source| UnpackError::Io { path: dir.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| UnpackError::Io { path: dir.clone(), source })?;
            let path = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(|source| UnpackError::Io { path: root.join(&path), source })?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_symlink() {
                check_link(root, &rel, &path, &mut steps).map_err(|rule| UnpackError::Refused {
                    entry: top.join(&path).to_string_lossy().into_owned(),
                    rule,
                })?;
            }
        }
    }
    Ok(())
}

/// Where the link at `root/path` (in directory `rel`) leads, or the rule it breaks.
fn check_link(root: &Path, rel: &Path, path: &Path, steps: &mut u64) -> Result<(), String> {
    use crate::resolve::{self, Escape, Tree};
    let target = fs::read_link(root.join(path)).map_err(|e| format!("unreadable symlink: {e}"))?;
    let mut link = |p: &Path| resolve::disk_link(root, p);
    let mut tree = Tree { root: None, link: &mut link, steps };
    match resolve::resolve(&mut tree, rel, &target, true) {
        Ok(_) => Ok(()),
        Err(Escape::TooMuchWork) => Err("too many or too deep symlinks to check".to_string()),
        Err(e) => Err(format!(
            "{} once the single top-level directory is the revision (to {}: {e})",
            safety::rule::SYMLINK_LEAVES,
            target.display()
        )),
    }
}

/// How a file bundle is actually read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Zip,
    Tar { gzip: bool },
}

/// Chooses the reader from the declared type and the first bytes. A
/// declared zip is read as zip. A declared tar or tgz that starts with a
/// zip local header is read as zip too (people name their zips .tar), and
/// gzip is recognized by its magic bytes whatever was declared.
fn detect(kind: BundleType, magic: &[u8]) -> Format {
    if kind == BundleType::Zip || magic.starts_with(b"PK\x03\x04") {
        return Format::Zip;
    }
    Format::Tar { gzip: magic.starts_with(&[0x1f, 0x8b]) }
}

/// Creates `dest` (which must not exist) with mode 0755 whatever the umask.
fn create_dest(dest: &Path) -> Result<(), UnpackError> {
    let io = |source| UnpackError::Io { path: dest.to_path_buf(), source };
    DirBuilder::new().mode(0o755).create(dest).map_err(io)?;
    fs::set_permissions(dest, Permissions::from_mode(0o755)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_by_content() {
        let tar = Format::Tar { gzip: false };
        let tgz = Format::Tar { gzip: true };
        assert_eq!(detect(BundleType::Tar, b"abcd"), tar);
        assert_eq!(detect(BundleType::Tgz, b"abcd"), tar);
        assert_eq!(detect(BundleType::Tar, &[0x1f, 0x8b, 8, 0]), tgz);
        assert_eq!(detect(BundleType::Tar, b"PK\x03\x04"), Format::Zip);
        assert_eq!(detect(BundleType::Zip, b"abcd"), Format::Zip);
        assert_eq!(detect(BundleType::Tar, b""), tar);
    }

    #[test]
    fn type_names() {
        for kind in [BundleType::Tar, BundleType::Tgz, BundleType::Zip, BundleType::Directory] {
            assert_eq!(BundleType::from_name(kind.name()), Some(kind));
        }
        assert_eq!(BundleType::from_name("TAR.GZ"), Some(BundleType::Tgz));
        assert_eq!(BundleType::from_name("rar"), None);
    }
}
