//! Directory bundles: the tree is copied with the same rules as an archive.
//! Nothing in the source is followed: symlinks are copied as symlinks (and
//! their targets checked), files are opened with `O_NOFOLLOW`, and other
//! file types are special files. Hard links in the source become copies.

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::UnpackError;
use super::limits::limit;
use super::tree::{Special, Tree, corrupt, io_at, lossy};

/// Copies the tree under `source` into `tree`. The destination is skipped
/// if it lies inside the source (it is identified by device and inode).
pub(super) fn copy_dir(source: &Path, dest: &Path, tree: &mut Tree<'_>) -> Result<(), UnpackError> {
    let meta = fs::metadata(source).map_err(io_at(source))?;
    if !meta.is_dir() {
        let err = io::Error::new(io::ErrorKind::InvalidInput, "bundle of type directory is not a directory");
        return Err(UnpackError::Io { path: source.to_path_buf(), source: err });
    }
    let dest = fs::symlink_metadata(dest).map_err(io_at(dest))?;
    let skip = (dest.dev(), dest.ino());
    // Directories still to list, with their names relative to the bundle.
    let mut pending: Vec<(PathBuf, Vec<u8>)> = vec![(source.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = pending.pop() {
        for name in sorted_names(&dir, tree)? {
            let path = dir.join(&name);
            let child = join(&rel, name.as_bytes());
            let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
            if meta.is_dir() && (meta.dev(), meta.ino()) == skip {
                continue;
            }
            if copy_one(&path, &child, &meta, tree)? {
                pending.push((path, child));
            }
        }
    }
    Ok(())
}

/// Lists a directory's names, sorted so the copy is reproducible. The list
/// is bounded by max_entries.
fn sorted_names(dir: &Path, tree: &Tree<'_>) -> Result<Vec<OsString>, UnpackError> {
    let max = tree.policy().max_entries;
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io_at(dir))? {
        names.push(item.map_err(io_at(dir))?.file_name());
        if max != 0 && names.len() as u64 > max {
            return Err(limit(format!("number of entries exceeds max_entries ({max})")));
        }
    }
    names.sort();
    Ok(names)
}

/// Hands one source entry to the tree; true when it is a directory to descend into.
fn copy_one(path: &Path, rel: &[u8], meta: &Metadata, tree: &mut Tree<'_>) -> Result<bool, UnpackError> {
    let kind = meta.file_type();
    let mode = Some(meta.mode() & 0o7777);
    if kind.is_dir() {
        tree.dir(rel, mode)?;
        return Ok(true);
    }
    if kind.is_file() {
        copy_file(path, rel, meta, tree)?;
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_at(path))?;
        tree.symlink(rel, target.as_os_str().as_bytes())?;
    } else {
        tree.special(rel, special(meta), mode)?;
    }
    Ok(false)
}

fn copy_file(path: &Path, rel: &[u8], meta: &Metadata, tree: &mut Tree<'_>) -> Result<(), UnpackError> {
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path);
    let file: File = opened.map_err(io_at(path))?;
    let mut data = ReadOrIo { file, path };
    tree.file(rel, Some(meta.mode() & 0o7777), Some(meta.len()), &mut (&mut data).take(meta.len()))
        .map_err(|e| changed(e, rel))
}

/// A source file that shrank while copied shows as "truncated"; say what happened.
fn changed(err: UnpackError, rel: &[u8]) -> UnpackError {
    match err {
        UnpackError::Corrupt { .. } => corrupt(format!("entry {:?}: file changed while it was copied", lossy(rel))),
        other => other,
    }
}

fn special(meta: &Metadata) -> Special {
    let kind = meta.file_type();
    if kind.is_char_device() {
        Special::Char(meta.rdev())
    } else if kind.is_block_device() {
        Special::Block(meta.rdev())
    } else if kind.is_fifo() {
        Special::Fifo
    } else {
        Special::Socket
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    [parent, name].join(&b'/')
}

/// Reads a source file; its errors are disk errors, not corruption, so they
/// are reported as `Io` on the source path (wrapped so the tree passes them on).
struct ReadOrIo<'a> {
    file: File,
    path: &'a Path,
}

impl Read for ReadOrIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}
