//! The one place that writes under `dest`: every format's reader hands its
//! entries here, so the safety rules and limits are applied the same way to
//! tar, zip and directory bundles.
//!
//! Guarantees: every path written is `dest` joined with a normalized
//! relative path whose parents are directories this unpack created itself
//! (no symlink exists under `dest` until [`Tree::finish`], and nothing is
//! written after the symlinks are made except permission bits on recorded
//! directories); files are created with `O_CREAT|O_EXCL`, never opened
//! for writing in place, so a later entry never writes through a hard link.
//!
//! Memory: only directories and pending symlinks are kept (bounded by
//! `limits::MAX_REMEMBERED`). Whether a path is a file or special file is
//! asked of the disk (lstat): `dest` is fresh and private to this unpack,
//! so what is there is what this unpack put there.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::limits::{Meter, limit};
use super::safety::{self, Kind, LinkCheck, Node, Nodes, SYMLINK_STEPS, Slot, rule};
use super::{Policy, Report, UnpackError};
use crate::sys;

/// Size of the one copy buffer: file content never sits in memory beyond it.
const COPY_BUFFER: usize = 64 * 1024;

/// A device, fifo or socket entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// A named pipe.
    Fifo,
    /// A unix socket (directory bundles only).
    Socket,
    /// A character device with its device number.
    Char(u64),
    /// A block device with its device number.
    Block(u64),
}

/// The unpacked tree under construction.
pub(super) struct Tree<'p> {
    /// `dest`: created by this unpack, private to it.
    root: PathBuf,
    /// The bundle, named in I/O errors while reading it.
    bundle: PathBuf,
    policy: &'p Policy,
    /// Directories and pending symlinks; see [`Nodes`] for the invariant.
    nodes: Nodes,
    /// Limits on entries, bytes and ratio.
    pub(super) meter: Meter,
    /// Entries written, for the report.
    written: u64,
    /// The copy buffer, allocated once.
    buf: Vec<u8>,
}

impl<'p> Tree<'p> {
    /// An empty tree under `root`, which the caller has just created.
    pub(super) fn new(root: &Path, bundle: &Path, policy: &'p Policy) -> Self {
        Tree {
            root: root.to_path_buf(),
            bundle: bundle.to_path_buf(),
            policy,
            nodes: Nodes::new(),
            meter: Meter::new(policy),
            written: 0,
            buf: vec![0; COPY_BUFFER],
        }
    }

    /// The policy in force.
    pub(super) fn policy(&self) -> &'p Policy {
        self.policy
    }

    /// The bundle being read.
    pub(super) fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// Counts one entry against max_entries and rechecks the ratio.
    fn begin(&mut self) -> Result<(), UnpackError> {
        self.meter.count_entry()?;
        self.meter.check_ratio()
    }

    /// A directory entry. The archive root itself (`./`) is accepted and skipped.
    pub(super) fn dir(&mut self, name: &[u8], mode: Option<u32>) -> Result<(), UnpackError> {
        self.begin()?;
        let mode = safety::entry_mode(mode, true, self.policy).map_err(|r| refused(name, r))?;
        let rel = safety::normalize(name, self.policy).map_err(|r| refused(name, r))?;
        if rel.is_empty() {
            return Ok(());
        }
        let (slot, full) = self.prepare(name, &rel, true)?;
        if slot != Slot::Dir {
            make_dir(&full)?;
            self.meter.remember(rel.len())?;
        }
        self.nodes.insert(rel, Node::Dir { mode });
        self.written += 1;
        Ok(())
    }

    /// A regular file whose content is read from `data`. `size`, when
    /// known, is checked against the limit first and the bytes copied after.
    pub(super) fn file(
        &mut self,
        name: &[u8],
        mode: Option<u32>,
        size: Option<u64>,
        data: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        self.begin()?;
        let mode = safety::entry_mode(mode, false, self.policy).map_err(|r| refused(name, r))?;
        if let Some(size) = size {
            self.meter.fits(size)?;
        }
        let rel = self.locate(name, false)?;
        let (_, full) = self.prepare(name, &rel, false)?;
        let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&full).map_err(io_at(&full))?;
        let copied = self.copy(name, data, &mut out, &full)?;
        match size {
            Some(size) if copied != size => {
                return Err(corrupt(format!("entry {:?}: truncated: {copied} of {size} bytes", lossy(name))));
            }
            _ => {}
        }
        // After the content: writing would clear setuid bits again.
        out.set_permissions(Permissions::from_mode(mode)).map_err(io_at(&full))?;
        self.written += 1;
        Ok(())
    }

    /// A symbolic link: checked now, recorded, and created only by [`Tree::finish`].
    pub(super) fn symlink(&mut self, name: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        self.begin()?;
        safety::symlink_target(target, self.policy).map_err(|r| refused(name, r))?;
        let rel = self.locate(name, false)?;
        self.prepare(name, &rel, false)?;
        self.meter.remember(rel.len() + target.len() + name.len())?;
        self.nodes.insert(rel, Node::Symlink { target: target.to_vec(), entry: name.to_vec() });
        Ok(())
    }

    /// A hard link to an earlier regular file of this bundle.
    pub(super) fn hardlink(&mut self, name: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        self.begin()?;
        let target = safety::normalize(target, self.policy).map_err(|_| refused(name, rule::HARDLINK_LEAVES))?;
        if self.kind_at(&target) != Some(Kind::File) {
            return Err(refused(name, rule::HARDLINK_NOT_FILE));
        }
        let rel = self.locate(name, false)?;
        if rel == target {
            return Err(refused(name, rule::HARDLINK_SELF));
        }
        let source = self.full(&target);
        // Its bytes count again: installed, each link becomes a copy.
        let len = fs::symlink_metadata(&source).map_err(io_at(&source))?.len();
        self.meter.add_bytes(len)?;
        self.meter.check_ratio()?;
        let (_, full) = self.prepare(name, &rel, false)?;
        fs::hard_link(&source, &full).map_err(io_at(&full))?;
        self.written += 1;
        Ok(())
    }

    /// A device, fifo or socket: refused unless allow_special_files.
    pub(super) fn special(&mut self, name: &[u8], kind: Special, mode: Option<u32>) -> Result<(), UnpackError> {
        self.begin()?;
        if !self.policy.allow_special_files {
            return Err(refused(name, rule::SPECIAL));
        }
        let mode = safety::entry_mode(mode, false, self.policy).map_err(|r| refused(name, r))?;
        let rel = self.locate(name, false)?;
        let (_, full) = self.prepare(name, &rel, false)?;
        let (format, dev) = match kind {
            Special::Fifo => (libc::S_IFIFO, 0),
            Special::Socket => (libc::S_IFSOCK, 0),
            Special::Char(dev) => (libc::S_IFCHR, dev),
            Special::Block(dev) => (libc::S_IFBLK, dev),
        };
        sys::mknod(&full, format | (mode & 0o777), dev).map_err(io_at(&full))?;
        fs::set_permissions(&full, Permissions::from_mode(mode)).map_err(io_at(&full))?;
        self.written += 1;
        Ok(())
    }

    /// Ends the unpack: checks every symlink against the final tree, creates
    /// them, then gives directories their modes, deepest first.
    pub(super) fn finish(mut self) -> Result<Report, UnpackError> {
        if !self.policy.allow_external_symlinks {
            self.check_symlinks()?;
        }
        for (rel, node) in &self.nodes {
            if let Node::Symlink { target, .. } = node {
                let full = self.full(rel);
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &full).map_err(io_at(&full))?;
                self.written += 1;
            }
        }
        // Reverse order puts every path before its parent (a parent is a prefix).
        for (rel, node) in self.nodes.iter().rev() {
            if let Node::Dir { mode } = node {
                let full = self.full(rel);
                fs::set_permissions(&full, Permissions::from_mode(*mode)).map_err(io_at(&full))?;
            }
        }
        Ok(Report { entries: self.written, bytes: self.meter.bytes() })
    }

    fn check_symlinks(&self) -> Result<(), UnpackError> {
        let mut steps = SYMLINK_STEPS;
        for (rel, node) in &self.nodes {
            if let Node::Symlink { target, entry } = node {
                safety::check_symlink(&self.nodes, rel, target, &mut steps).map_err(|check| match check {
                    LinkCheck::Refused(rule) => refused(entry, rule),
                    LinkCheck::TooMuchWork => {
                        limit(format!("checking symlinks took more than {SYMLINK_STEPS} steps (too many or too deep)"))
                    }
                })?;
            }
        }
        Ok(())
    }

    /// What `rel` is: a directory or pending symlink from memory, else
    /// whatever this unpack left on disk (a file or special file), if anything.
    fn kind_at(&self, rel: &[u8]) -> Option<Kind> {
        if let Some(node) = self.nodes.get(rel) {
            return Some(node.kind());
        }
        let meta = fs::symlink_metadata(self.full(rel)).ok()?;
        Some(match meta.file_type() {
            t if t.is_file() => Kind::File,
            t if t.is_dir() => Kind::Dir,
            _ => Kind::Special,
        })
    }

    /// Normalizes `name`, refusing the archive root for anything but a directory.
    fn locate(&self, name: &[u8], is_dir: bool) -> Result<Vec<u8>, UnpackError> {
        let rel = safety::normalize(name, self.policy).map_err(|r| refused(name, r))?;
        if rel.is_empty() && !is_dir {
            return Err(refused(name, rule::ROOT));
        }
        Ok(rel)
    }

    /// Applies the plan for `rel`: creates missing parents, removes an
    /// earlier regular file in the way. Returns the slot and the full path.
    fn prepare(&mut self, name: &[u8], rel: &[u8], is_dir: bool) -> Result<(Slot, PathBuf), UnpackError> {
        let plan = safety::plan(&|p| self.kind_at(p), rel, is_dir).map_err(|r| refused(name, r))?;
        for end in plan.missing_parents {
            make_dir(&self.full(&rel[..end]))?;
            self.meter.remember(end)?;
            self.nodes.insert(rel[..end].to_vec(), Node::Dir { mode: 0o755 });
        }
        let full = self.full(rel);
        if plan.slot == Slot::File {
            fs::remove_file(&full).map_err(io_at(&full))?;
        }
        Ok((plan.slot, full))
    }

    /// Copies `data` to `out` through the fixed buffer, counting every chunk
    /// against the limits before it is written. Returns the bytes copied.
    fn copy(&mut self, name: &[u8], data: &mut dyn Read, out: &mut File, full: &Path) -> Result<u64, UnpackError> {
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(name, e)),
            };
            self.meter.add_bytes(n as u64)?;
            out.write_all(&self.buf[..n]).map_err(io_at(full))?;
            copied += n as u64;
            self.meter.check_ratio()?;
        }
    }

    /// Maps an error reading the bundle: bad data is `Corrupt` (naming the
    /// entry), anything else is `Io` on the bundle.
    pub(super) fn read_error(&self, name: &[u8], err: io::Error) -> UnpackError {
        read_error(&self.bundle, &format!("entry {:?}", lossy(name)), err)
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }
}

/// Creates one directory, private (0700) until [`Tree::finish`] sets its mode.
fn make_dir(full: &Path) -> Result<(), UnpackError> {
    DirBuilder::new().mode(0o700).create(full).map_err(io_at(full))
}

/// Maps an error reading the bundle at `place` (an entry or an offset).
pub(super) fn read_error(bundle: &Path, place: &str, err: io::Error) -> UnpackError {
    use io::ErrorKind::{InvalidData, InvalidInput, Other, UnexpectedEof};
    match err.kind() {
        InvalidData | InvalidInput | UnexpectedEof | Other => corrupt(format!("{place}: {err}")),
        _ => UnpackError::Io { path: bundle.to_path_buf(), source: err },
    }
}

/// A `Refused` error for the entry stored as `name`.
pub(super) fn refused(name: &[u8], rule: &str) -> UnpackError {
    UnpackError::Refused { entry: lossy(name), rule: rule.to_string() }
}

/// A `Corrupt` error.
pub(super) fn corrupt(detail: String) -> UnpackError {
    UnpackError::Corrupt { detail }
}

/// Maps an I/O error on `path` (under `dest`, or the bundle).
pub(super) fn io_at(path: &Path) -> impl Fn(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.to_path_buf(), source }
}

/// An entry name as text, for messages.
pub(super) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
