//! tar and tar.gz bundles, streamed through `tar::Archive::entries()`.
//!
//! The archive is read in tar-rs's *raw* mode: tar-rs would otherwise read
//! GNU long-name and pax records whole into memory with no cap, so a
//! gzipped record of a few MB could ask for GBs. Here each such record is
//! capped ([`MAX_RECORD`]) and applied to the next entry by this module.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use tar::{EntryType, PaxExtensions};

use super::UnpackError;
use super::limits::{Counter, Counting};
use super::safety::MAX_NAME;
use super::tree::{Special, Tree, corrupt, lossy, read_error, refused};
use crate::sys;

/// Largest pax or GNU long-name record accepted, in bytes.
const MAX_RECORD: u64 = 64 * 1024;

/// Most data accepted after the end-of-archive block (tar pads to its
/// record size, 10 KiB by default); it is read to reach the gzip trailer.
const MAX_TRAILER: u64 = 1 << 20;

/// Unpacks a tar stream from `file`, gunzipping it first when `gzip`.
pub(super) fn unpack_tar(file: File, gzip: bool, tree: &mut Tree<'_>) -> Result<(), UnpackError> {
    let input: Counter = Rc::default();
    let raw = BufReader::with_capacity(32 * 1024, Counting::new(file, input.clone()));
    let stream: Box<dyn Read> = if gzip {
        let output: Counter = Rc::default();
        tree.meter.watch(input, Some(output.clone()));
        Box::new(Counting::new(GzDecoder::new(raw), output))
    } else {
        tree.meter.watch(input, None);
        Box::new(raw)
    };
    let mut stream = EofFlag { inner: stream, eof: Rc::default() };
    let eof = stream.eof.clone();
    read_entries(&mut tar::Archive::new(&mut stream as &mut dyn Read), tree)?;
    if eof.get() {
        return Err(corrupt("truncated: the archive ends without an end-of-archive block".to_string()));
    }
    drain_trailer(&mut stream, tree)
}

/// Reads past the end-of-archive block so a gzip trailer (CRC and length) is checked.
fn drain_trailer(stream: &mut dyn Read, tree: &Tree<'_>) -> Result<(), UnpackError> {
    let mut rest = stream.take(MAX_TRAILER + 1);
    let n = io::copy(&mut rest, &mut io::sink())
        .map_err(|e| read_error(tree.bundle(), "after the end-of-archive block", e))?;
    if n > MAX_TRAILER {
        return Err(corrupt(format!("more than {MAX_TRAILER} bytes of data after the end-of-archive block")));
    }
    tree.meter.check_ratio()
}

/// Records that apply to the next entry (pax `x`, GNU `L` and `K`).
/// A pax record's names win over GNU ones, which win over the header's.
#[derive(Default)]
struct Pending {
    gnu_path: Option<Vec<u8>>,
    gnu_link: Option<Vec<u8>>,
    /// The pax record, when there was one.
    pax: Option<Pax>,
}

/// The pax keys that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.gnu_path.is_none() && self.gnu_link.is_none() && self.pax.is_none()
    }
}

fn read_entries(archive: &mut tar::Archive<&mut dyn Read>, tree: &mut Tree<'_>) -> Result<(), UnpackError> {
    let bundle = tree.bundle().to_path_buf();
    let entries = archive.entries().map_err(|e| read_error(&bundle, "tar header", e))?.raw(true);
    let mut pending = Pending::default();
    let mut offset = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(&bundle, &format!("tar header after offset {offset}"), e))?;
        offset = entry.raw_header_position();
        tree.meter.check_ratio()?;
        match entry.header().entry_type() {
            EntryType::GNULongName => set_once(&mut pending.gnu_path, read_record(&mut entry, tree)?, offset)?,
            EntryType::GNULongLink => set_once(&mut pending.gnu_link, read_record(&mut entry, tree)?, offset)?,
            EntryType::XHeader => {
                if pending.pax.is_some() {
                    return Err(corrupt(format!("two pax records for one entry at offset {offset}")));
                }
                pending.pax = Some(parse_pax(&read_record(&mut entry, tree)?, offset)?);
            }
            EntryType::XGlobalHeader => {}
            _ => one_entry(&mut entry, std::mem::take(&mut pending), tree)?,
        }
    }
    if !pending.is_empty() {
        return Err(corrupt(format!("truncated: extension record at offset {offset} describes no entry")));
    }
    Ok(())
}

/// Reads a pax or long-name record, refusing one over [`MAX_RECORD`].
fn read_record(entry: &mut tar::Entry<'_, &mut dyn Read>, tree: &Tree<'_>) -> Result<Vec<u8>, UnpackError> {
    let offset = entry.raw_header_position();
    let size = entry.header().entry_size().map_err(|e| read_error(tree.bundle(), &format!("offset {offset}"), e))?;
    if size > MAX_RECORD {
        return Err(corrupt(format!("extension record at offset {offset} is {size} bytes (limit {MAX_RECORD})")));
    }
    let mut record = Vec::new();
    let read = entry.take(MAX_RECORD).read_to_end(&mut record);
    read.map_err(|e| read_error(tree.bundle(), &format!("extension record at offset {offset}"), e))?;
    if record.len() as u64 != size {
        return Err(corrupt(format!("truncated: extension record at offset {offset}")));
    }
    Ok(record)
}

fn set_once(slot: &mut Option<Vec<u8>>, value: Vec<u8>, offset: u64) -> Result<(), UnpackError> {
    if slot.is_some() {
        return Err(corrupt(format!("two long-name records for one entry at offset {offset}")));
    }
    *slot = Some(strip_nuls(value));
    Ok(())
}

fn strip_nuls(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// Reads the pax keys that matter here (path, linkpath, size); refuses
/// sparse files, whose layout this reader does not implement.
fn parse_pax(record: &[u8], offset: u64) -> Result<Pax, UnpackError> {
    let mut pax = Pax::default();
    for ext in PaxExtensions::new(record) {
        let ext = ext.map_err(|_| corrupt(format!("malformed pax record at offset {offset}")))?;
        match ext.key_bytes() {
            b"path" => pax.path = Some(ext.value_bytes().to_vec()),
            b"linkpath" => pax.link = Some(ext.value_bytes().to_vec()),
            b"size" => pax.size = Some(pax_number(ext.value_bytes(), offset)?),
            key if key.starts_with(b"GNU.sparse.") => {
                let name = pax.path.as_deref().unwrap_or(b"(pax record)");
                return Err(refused(name, "unsupported entry type (sparse file)"));
            }
            _ => {}
        }
    }
    Ok(pax)
}

fn pax_number(value: &[u8], offset: u64) -> Result<u64, UnpackError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(format!("bad pax size at offset {offset}")))
}

/// Hands one file, directory, link or special entry to the tree.
fn one_entry(
    entry: &mut tar::Entry<'_, &mut dyn Read>,
    pending: Pending,
    tree: &mut Tree<'_>,
) -> Result<(), UnpackError> {
    let header = entry.header().clone();
    let pax = pending.pax.unwrap_or_default();
    let name = pax.path.or(pending.gnu_path).unwrap_or_else(|| header.path_bytes().into_owned());
    let at = || format!("entry {:?}", lossy(&name));
    let bad = |e: io::Error| read_error(tree.bundle(), &at(), e);
    let size = header.entry_size().map_err(bad)?;
    if pax.size.is_some_and(|s| s != size) {
        return Err(corrupt(format!("{}: pax size differs from the header size (not supported)", at())));
    }
    let mode = Some(header.mode().map_err(bad)?);
    let link = pax.link.or(pending.gnu_link).or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
    let kind = header.entry_type();
    match kind {
        // Old tars mark directories with a trailing slash on a regular entry.
        EntryType::Regular if name.ends_with(b"/") => tree.dir(&name, mode),
        EntryType::Regular | EntryType::Continuous => tree.file(&name, mode, Some(size), entry),
        EntryType::Directory => tree.dir(&name, mode),
        EntryType::Symlink => tree.symlink(&name, &link_name(link, &name)?),
        EntryType::Link => tree.hardlink(&name, &link_name(link, &name)?),
        EntryType::Fifo => tree.special(&name, Special::Fifo, mode),
        EntryType::Char => tree.special(&name, Special::Char(device(&header, &name, tree)?), mode),
        EntryType::Block => tree.special(&name, Special::Block(device(&header, &name, tree)?), mode),
        other => Err(refused(&name, &format!("unsupported entry type {:?}", char::from(other.as_byte())))),
    }
}

fn link_name(link: Option<Vec<u8>>, name: &[u8]) -> Result<Vec<u8>, UnpackError> {
    let link = link.unwrap_or_default();
    if link.len() > MAX_NAME {
        return Err(refused(name, "link target too long"));
    }
    Ok(link)
}

fn device(header: &tar::Header, name: &[u8], tree: &Tree<'_>) -> Result<u64, UnpackError> {
    let bad = |e: io::Error| read_error(tree.bundle(), &format!("entry {:?}", lossy(name)), e);
    match (header.device_major().map_err(bad)?, header.device_minor().map_err(bad)?) {
        (Some(major), Some(minor)) => Ok(sys::makedev(major, minor)),
        _ => Err(corrupt(format!("entry {:?}: device without a device number", lossy(name)))),
    }
}

/// Remembers whether the stream below reached its end: tar-rs takes a clean
/// end of input at a header boundary for the end of the archive, but a
/// complete archive ends with a zero block, so hitting EOF means truncated.
struct EofFlag {
    inner: Box<dyn Read>,
    eof: Rc<Cell<bool>>,
}

impl Read for EofFlag {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}
