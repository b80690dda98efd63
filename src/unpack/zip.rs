//! zip bundles, read by a small hand-written reader.
//!
//! Why not the `zip` crate: the agent's size is a feature (DESIGN.md aims
//! at about 1 MB) and the crate brings several compression codecs, crypto
//! and time handling we would never call. Bundles need only what CodeDeploy
//! bundles use: stored and deflate entries, Unix modes, zip64 sizes. That is
//! the end record, the central directory, local headers, `flate2`'s
//! `DeflateDecoder` (already linked for tgz) and a CRC-32 check.
//!
//! Two passes over the central directory, both streamed (memory does not
//! grow with the number of entries): the first checks every entry and the
//! declared sizes before anything is written, so a corrupt directory, an
//! unsupported entry or a declared bomb writes nothing; the second unpacks.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;

use flate2::Crc;
use flate2::read::DeflateDecoder;

use super::UnpackError;
use super::limits::{Counter, limit, over_ratio};
use super::safety::{self, MAX_NAME, rule};
use super::tree::{Special, Tree, corrupt, lossy, read_error, refused};
use super::zip_format::{self as fmt, Central, Directory, Kind};

/// The bundle file and its path (for I/O errors).
struct Source<'f> {
    file: &'f File,
    path: PathBuf,
}

/// Unpacks the zip bundle `file` into `tree`.
pub(super) fn unpack_zip(file: &File, tree: &mut Tree<'_>) -> Result<(), UnpackError> {
    let src = Source { file, path: tree.bundle().to_path_buf() };
    let dir = locate(&src)?;
    let input: Counter = Rc::default();
    tree.meter.watch(input.clone(), None);
    tree.meter.cap_input(file.metadata().map_err(|e| read_error(&src.path, "zip", e))?.len());
    precheck(&src, &dir, tree)?;
    walk(file, &dir, &mut |central| extract(&src, &dir, central, &input, tree))
}

/// Finds the central directory from the end records (zip64 when present).
fn locate(src: &Source<'_>) -> Result<Directory, UnpackError> {
    let len = src.file.metadata().map_err(|e| read_error(&src.path, "zip", e))?.len();
    let tail_len = len.min((fmt::EOCD_LEN + fmt::MAX_COMMENT) as u64);
    let mut tail = vec![0; tail_len as usize];
    src.read_at(&mut tail, len - tail_len, "end of central directory")?;
    let (at, record) = fmt::find_eocd(&tail).ok_or_else(|| corrupt("no end of central directory record".into()))?;
    let eocd_pos = len - tail_len + at as u64;
    let eocd = fmt::parse_eocd(&record);
    if eocd.multi_disk {
        return Err(corrupt("multi-disk zip archives are not supported".into()));
    }
    let (dir, end) = match zip64_directory(src, eocd_pos)? {
        Some(found) => found,
        None if eocd.needs_zip64 => return Err(corrupt("zip64 end of central directory record missing".into())),
        None => (eocd.dir, eocd_pos),
    };
    if dir.offset.checked_add(dir.size).is_none_or(|cd_end| cd_end > end) {
        return Err(corrupt(format!("central directory at offset {} is out of bounds", dir.offset)));
    }
    if dir.entries.saturating_mul(fmt::CENTRAL_LEN as u64) > dir.size {
        return Err(corrupt(format!("central directory too small for {} entries", dir.entries)));
    }
    Ok(dir)
}

/// Reads the zip64 locator and record, if the archive has them; returns the
/// directory and the offset it must end before.
fn zip64_directory(src: &Source<'_>, eocd_pos: u64) -> Result<Option<(Directory, u64)>, UnpackError> {
    let Some(locator_pos) = eocd_pos.checked_sub(fmt::LOCATOR_LEN as u64) else { return Ok(None) };
    let mut locator = [0; fmt::LOCATOR_LEN];
    src.read_at(&mut locator, locator_pos, "zip64 locator")?;
    let Some(record_pos) = fmt::parse_locator(&locator) else { return Ok(None) };
    if record_pos.checked_add(fmt::ZIP64_EOCD_LEN as u64).is_none_or(|end| end > locator_pos) {
        return Err(corrupt(format!("zip64 end record at offset {record_pos} is out of bounds")));
    }
    let mut record = [0; fmt::ZIP64_EOCD_LEN];
    src.read_at(&mut record, record_pos, "zip64 end of central directory")?;
    let dir = fmt::parse_zip64_eocd(&record).map_err(|d| corrupt(format!("offset {record_pos}: {d}")))?;
    Ok(Some((dir, record_pos)))
}

/// Calls `each` with every central directory entry, in order, streaming.
fn walk(
    file: &File,
    dir: &Directory,
    each: &mut dyn FnMut(Central) -> Result<(), UnpackError>,
) -> Result<(), UnpackError> {
    let mut cd = BufReader::new(Span { file, pos: dir.offset, end: dir.offset + dir.size, count: None });
    for index in 0..dir.entries {
        let bad = |what: &str| corrupt(format!("central directory entry {index}: {what}"));
        let mut fixed = [0; fmt::CENTRAL_LEN];
        cd.read_exact(&mut fixed).map_err(|_| bad("truncated"))?;
        let (mut central, tail) = fmt::parse_central(&fixed).map_err(bad)?;
        let mut name = vec![0; tail.name];
        let mut extra = vec![0; tail.extra];
        cd.read_exact(&mut name).and_then(|()| cd.read_exact(&mut extra)).map_err(|_| bad("truncated"))?;
        let comment = io::copy(&mut (&mut cd).take(tail.comment as u64), &mut io::sink());
        if comment.ok() != Some(tail.comment as u64) {
            return Err(bad("truncated"));
        }
        fmt::apply_zip64(&mut central, &extra).map_err(bad)?;
        central.name = name;
        each(central)?;
    }
    Ok(())
}

/// First pass: refuses what would fail later, before anything is written.
fn precheck(src: &Source<'_>, dir: &Directory, tree: &Tree<'_>) -> Result<(), UnpackError> {
    let policy = tree.policy();
    if policy.max_entries != 0 && dir.entries > policy.max_entries {
        return Err(limit(format!("number of entries exceeds max_entries ({})", policy.max_entries)));
    }
    let mut declared = 0u64;
    walk(src.file, dir, &mut |central| {
        check_entry(&central, dir, tree)?;
        safety::normalize(&central.name, policy).map_err(|r| refused(&central.name, r))?;
        declared = declared.saturating_add(central.size);
        Ok(())
    })?;
    let max = tree.meter.max_bytes();
    if max != 0 && declared > max {
        return Err(limit(format!("unpacked size exceeds max_bytes ({max}): the zip declares {declared} bytes")));
    }
    Ok(())
}

/// Checks one entry's central record: supported, in bounds, sizes sane.
fn check_entry(central: &Central, dir: &Directory, tree: &Tree<'_>) -> Result<(), UnpackError> {
    let at = format!("entry {:?}", lossy(&central.name));
    if central.flags & 1 != 0 {
        return Err(corrupt(format!("{at}: encrypted entries are not supported")));
    }
    if central.method != 0 && central.method != 8 {
        return Err(corrupt(format!("{at}: unsupported compression method {}", central.method)));
    }
    if central.method == 0 && central.compressed != central.size {
        return Err(corrupt(format!("{at}: stored entry with different sizes")));
    }
    if central.disk != 0 || central.offset >= dir.offset {
        return Err(corrupt(format!("{at}: local header out of bounds")));
    }
    let ratio = tree.meter.max_ratio();
    if over_ratio(central.size, central.compressed, ratio) {
        let (size, compressed) = (central.size, central.compressed);
        return Err(limit(format!(
            "{at}: compression ratio exceeds max_ratio ({ratio}): {size} bytes from {compressed}"
        )));
    }
    Ok(())
}

/// Second pass: unpacks one entry.
fn extract(
    src: &Source<'_>,
    dir: &Directory,
    central: Central,
    input: &Counter,
    tree: &mut Tree<'_>,
) -> Result<(), UnpackError> {
    let start = data_start(src, &central, dir)?;
    let end = start.checked_add(central.compressed).filter(|end| *end <= dir.offset);
    let Some(end) = end else {
        return Err(corrupt(format!("entry {:?}: data out of bounds", lossy(&central.name))));
    };
    let span = Span { file: src.file, pos: start, end, count: Some(input.clone()) };
    let body: Box<dyn Read + '_> =
        if central.method == 8 { Box::new(DeflateDecoder::new(span)) } else { Box::new(span) };
    let mut data = Checked { inner: body, expected: central.size, seen: 0, crc: Crc::new(), want_crc: central.crc };
    let name = &central.name;
    let mode = fmt::unix_mode(&central);
    match fmt::kind(&central) {
        Kind::Dir => tree.dir(name, mode),
        Kind::File => tree.file(name, mode, Some(central.size), &mut data),
        Kind::Symlink => {
            let target = read_target(name, &mut data, tree)?;
            tree.symlink(name, &target)
        }
        Kind::Fifo => tree.special(name, Special::Fifo, mode),
        Kind::Socket => tree.special(name, Special::Socket, mode),
        Kind::Device if !tree.policy().allow_special_files => Err(refused(name, rule::SPECIAL)),
        Kind::Device => Err(refused(name, "device file without a device number (zip stores none)")),
    }
}

/// Reads a symlink entry's data, its target, checking size and CRC.
fn read_target(name: &[u8], data: &mut Checked<'_>, tree: &Tree<'_>) -> Result<Vec<u8>, UnpackError> {
    if data.expected > MAX_NAME as u64 {
        return Err(refused(name, rule::SYMLINK_TOO_LONG));
    }
    let mut target = Vec::new();
    data.take(MAX_NAME as u64 + 1).read_to_end(&mut target).map_err(|e| tree.read_error(name, e))?;
    Ok(target)
}

/// Reads the local header at the entry's offset and returns where its data
/// starts; the local name must match the central one.
fn data_start(src: &Source<'_>, central: &Central, dir: &Directory) -> Result<u64, UnpackError> {
    let at = format!("entry {:?}", lossy(&central.name));
    let mut fixed = [0; fmt::LOCAL_LEN];
    src.read_at(&mut fixed, central.offset, &at)?;
    let (name_len, extra_len) = fmt::parse_local(&fixed).ok_or_else(|| corrupt(format!("{at}: bad local header")))?;
    let mut name = vec![0; name_len];
    src.read_at(&mut name, central.offset + fmt::LOCAL_LEN as u64, &at)?;
    if name != central.name {
        return Err(corrupt(format!("{at}: local header names {:?}", lossy(&name))));
    }
    let start = central.offset + (fmt::LOCAL_LEN + name_len + extra_len) as u64;
    if start > dir.offset {
        return Err(corrupt(format!("{at}: local header out of bounds")));
    }
    Ok(start)
}

impl Source<'_> {
    /// Reads exactly `buf.len()` bytes at `pos`; a short file is corrupt.
    fn read_at(&self, buf: &mut [u8], pos: u64, what: &str) -> Result<(), UnpackError> {
        self.file.read_exact_at(buf, pos).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt(format!("{what}: truncated at offset {pos}")),
            _ => UnpackError::Io { path: self.path.clone(), source: e },
        })
    }
}

/// A window `pos..end` of the bundle, read with pread (no shared offset, no
/// seeking), counting the bytes it reads for the ratio check.
struct Span<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    count: Option<Counter>,
}

impl Read for Span<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        if let Some(count) = &self.count {
            count.set(count.get() + n as u64);
        }
        Ok(n)
    }
}

/// Checks an entry's data as it streams: never more than the declared size
/// (a bomb lying about its size stops there), and at the end exactly the
/// declared size and CRC-32.
struct Checked<'f> {
    inner: Box<dyn Read + 'f>,
    expected: u64,
    seen: u64,
    crc: Crc,
    want_crc: u32,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            return self.at_end();
        }
        self.seen += n as u64;
        if self.seen > self.expected {
            let msg = format!("more data than its declared size ({} bytes)", self.expected);
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl Checked<'_> {
    fn at_end(&self) -> io::Result<usize> {
        let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        if self.seen != self.expected {
            return bad(format!("truncated: {} of {} bytes", self.seen, self.expected));
        }
        if self.crc.sum() != self.want_crc {
            return bad(format!("CRC-32 mismatch: {:08x}, expected {:08x}", self.crc.sum(), self.want_crc));
        }
        Ok(0)
    }
}
