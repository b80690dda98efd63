//! The zip records the reader needs, parsed from bytes (no I/O): end of
//! central directory (plain and zip64), central directory entries with
//! their zip64 extra field, and local headers. Layouts are from PKWARE's
//! APPNOTE.TXT, sections 4.3.7 to 4.3.16.

/// Length of the end of central directory record (without its comment).
pub(super) const EOCD_LEN: usize = 22;
/// Length of the zip64 end of central directory locator.
pub(super) const LOCATOR_LEN: usize = 20;
/// Length of the zip64 end of central directory record (without extensible data).
pub(super) const ZIP64_EOCD_LEN: usize = 56;
/// Length of a central directory entry's fixed part.
pub(super) const CENTRAL_LEN: usize = 46;
/// Length of a local file header's fixed part.
pub(super) const LOCAL_LEN: usize = 30;
/// Longest zip comment, so the farthest the end record can be from the end.
pub(super) const MAX_COMMENT: usize = 0xFFFF;

const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
const LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const ZIP64_EOCD_SIG: &[u8; 4] = b"PK\x06\x06";
const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";

/// Where the central directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Directory {
    /// Number of entries.
    pub entries: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset of its first entry.
    pub offset: u64,
}

/// The end of central directory record's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Eocd {
    /// The directory as this record states it (may be 0xFFFF.. for zip64).
    pub dir: Directory,
    /// True when a field is saturated, so the zip64 record must say.
    pub needs_zip64: bool,
    /// True when the record names more than one disk.
    pub multi_disk: bool,
}

/// One central directory entry: what the reader needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Central {
    /// The entry's name as stored.
    pub name: Vec<u8>,
    /// "Version made by": the high byte is the host system (3 = Unix).
    pub made_by: u16,
    /// General purpose flags (bit 0: encrypted).
    pub flags: u16,
    /// Compression method (0 stored, 8 deflate).
    pub method: u16,
    /// CRC-32 of the uncompressed data.
    pub crc: u32,
    /// Compressed size.
    pub compressed: u64,
    /// Uncompressed size.
    pub size: u64,
    /// External attributes (Unix mode in the high 16 bits).
    pub external: u32,
    /// Offset of the local header.
    pub offset: u64,
    /// Disk holding the local header.
    pub disk: u32,
}

/// Lengths of the variable parts that follow a central entry's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail {
    /// Name length.
    pub name: usize,
    /// Extra field length.
    pub extra: usize,
    /// Comment length.
    pub comment: usize,
}

/// What a zip entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (the data is the target).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A device (zip stores no device number).
    Device,
}

fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from(le16(b, at)) | u32::from(le16(b, at + 2)) << 16
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// Finds the end record in the last bytes of the file: the last signature
/// whose comment length reaches exactly the end of the file.
pub(super) fn find_eocd(tail: &[u8]) -> Option<(usize, [u8; EOCD_LEN])> {
    let last = tail.len().checked_sub(EOCD_LEN)?;
    (0..=last).rev().find_map(|at| {
        let record: [u8; EOCD_LEN] = tail.get(at..at + EOCD_LEN)?.try_into().ok()?;
        let fits = at + EOCD_LEN + usize::from(le16(&record, 20)) == tail.len();
        (record.starts_with(EOCD_SIG) && fits).then_some((at, record))
    })
}

/// Parses the end of central directory record.
pub(super) fn parse_eocd(rec: &[u8; EOCD_LEN]) -> Eocd {
    let (disk, cd_disk, here, entries) = (le16(rec, 4), le16(rec, 6), le16(rec, 8), le16(rec, 10));
    let (size, offset) = (le32(rec, 12), le32(rec, 16));
    let needs_zip64 = [disk, cd_disk, here, entries].contains(&0xFFFF) || size == u32::MAX || offset == u32::MAX;
    let dir = Directory { entries: entries.into(), size: size.into(), offset: offset.into() };
    Eocd { dir, needs_zip64, multi_disk: !needs_zip64 && (disk != 0 || cd_disk != 0 || here != entries) }
}

/// Parses the zip64 locator: the offset of the zip64 end record, if the
/// signature is there.
pub(super) fn parse_locator(rec: &[u8; LOCATOR_LEN]) -> Option<u64> {
    rec.starts_with(LOCATOR_SIG).then(|| le64(rec, 8))
}

/// Parses the zip64 end of central directory record.
pub(super) fn parse_zip64_eocd(rec: &[u8; ZIP64_EOCD_LEN]) -> Result<Directory, &'static str> {
    if !rec.starts_with(ZIP64_EOCD_SIG) {
        return Err("bad zip64 end of central directory signature");
    }
    let (disk, cd_disk, here, entries) = (le32(rec, 16), le32(rec, 20), le64(rec, 24), le64(rec, 32));
    if disk != 0 || cd_disk != 0 || here != entries {
        return Err("multi-disk zip archives are not supported");
    }
    Ok(Directory { entries, size: le64(rec, 40), offset: le64(rec, 48) })
}

/// Parses a central entry's fixed part (the name is filled in later).
pub(super) fn parse_central(rec: &[u8; CENTRAL_LEN]) -> Result<(Central, Tail), &'static str> {
    if !rec.starts_with(CENTRAL_SIG) {
        return Err("bad central directory entry signature");
    }
    let central = Central {
        name: Vec::new(),
        made_by: le16(rec, 4),
        flags: le16(rec, 8),
        method: le16(rec, 10),
        crc: le32(rec, 16),
        compressed: le32(rec, 20).into(),
        size: le32(rec, 24).into(),
        external: le32(rec, 38),
        offset: le32(rec, 42).into(),
        disk: le16(rec, 34).into(),
    };
    let tail = Tail { name: le16(rec, 28).into(), extra: le16(rec, 30).into(), comment: le16(rec, 32).into() };
    Ok((central, tail))
}

/// Applies the zip64 extra field (id 1): it holds, in this order, each of
/// size, compressed size, offset and disk whose central field is saturated.
pub(super) fn apply_zip64(central: &mut Central, extra: &[u8]) -> Result<(), &'static str> {
    let mut rest = extra;
    while rest.len() >= 4 {
        let (id, len) = (le16(rest, 0), usize::from(le16(rest, 2)));
        let data = rest.get(4..4 + len).ok_or("extra field overruns its entry")?;
        if id == 1 {
            return read_zip64(central, data);
        }
        rest = &rest[4 + len..];
    }
    Ok(())
}

fn read_zip64(central: &mut Central, data: &[u8]) -> Result<(), &'static str> {
    let mut at = 0;
    let mut next = |width: usize| -> Result<u64, &'static str> {
        let value = if width == 8 { le64(data, at) } else { le32(data, at).into() };
        at += width;
        if at > data.len() { Err("zip64 extra field too short") } else { Ok(value) }
    };
    if central.size == u64::from(u32::MAX) {
        central.size = next(8)?;
    }
    if central.compressed == u64::from(u32::MAX) {
        central.compressed = next(8)?;
    }
    if central.offset == u64::from(u32::MAX) {
        central.offset = next(8)?;
    }
    if central.disk == 0xFFFF {
        central.disk = next(4)? as u32;
    }
    Ok(())
}

/// Parses a local header's fixed part: the lengths of its name and extra field.
pub(super) fn parse_local(rec: &[u8; LOCAL_LEN]) -> Option<(usize, usize)> {
    rec.starts_with(LOCAL_SIG).then(|| (le16(rec, 26).into(), le16(rec, 28).into()))
}

/// The Unix mode from the external attributes, when the entry was made on
/// Unix (3) or macOS (19) and has one.
pub(super) fn unix_mode(central: &Central) -> Option<u32> {
    let mode = central.external >> 16;
    (matches!(central.made_by >> 8, 3 | 19) && mode != 0).then_some(mode)
}

/// What an entry is: from its Unix file type when there is one, else a
/// trailing `/` or the MS-DOS directory attribute means a directory.
pub(super) fn kind(central: &Central) -> Kind {
    let by_name = || {
        if central.name.ends_with(b"/") || central.external & 0x10 != 0 { Kind::Dir } else { Kind::File }
    };
    match unix_mode(central).map(|m| m & 0o170_000) {
        Some(0o040_000) => Kind::Dir,
        Some(0o120_000) => Kind::Symlink,
        Some(0o010_000) => Kind::Fifo,
        Some(0o140_000) => Kind::Socket,
        Some(0o020_000 | 0o060_000) => Kind::Device,
        _ => by_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eocd(entries: u16, size: u32, offset: u32, comment: &[u8]) -> Vec<u8> {
        let mut v = EOCD_SIG.to_vec();
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&entries.to_le_bytes());
        v.extend_from_slice(&entries.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        v.extend_from_slice(comment);
        v
    }

    #[test]
    fn finds_end_record_with_comment() {
        let mut file = b"junk".to_vec();
        file.extend(eocd(2, 92, 100, b"a comment with PK\x05\x06 inside"));
        let (at, rec) = find_eocd(&file).expect("found");
        assert_eq!(at, 4);
        let parsed = parse_eocd(&rec);
        assert_eq!(parsed.dir, Directory { entries: 2, size: 92, offset: 100 });
        assert!(!parsed.needs_zip64 && !parsed.multi_disk);
    }

    #[test]
    fn no_end_record() {
        assert_eq!(find_eocd(b"PK\x05\x06 too short"), None);
        let mut file = eocd(0, 0, 0, b"");
        file.push(0);
        assert_eq!(find_eocd(&file), None);
    }

    #[test]
    fn saturated_fields_need_zip64() {
        let (_, rec) = find_eocd(&eocd(0xFFFF, 0, 0, b"")).expect("found");
        assert!(parse_eocd(&rec).needs_zip64);
    }

    #[test]
    fn zip64_extra_replaces_saturated_fields() {
        let mut c = Central { size: u32::MAX.into(), compressed: 10, offset: u32::MAX.into(), ..Central::default() };
        let mut extra = vec![0x99, 0, 0, 0];
        extra.extend_from_slice(&[1, 0, 16, 0]);
        extra.extend_from_slice(&(5u64 << 32).to_le_bytes());
        extra.extend_from_slice(&7u64.to_le_bytes());
        apply_zip64(&mut c, &extra).expect("zip64");
        assert_eq!((c.size, c.compressed, c.offset), (5 << 32, 10, 7));
    }

    #[test]
    fn zip64_extra_too_short() {
        let mut c = Central { size: u32::MAX.into(), compressed: u32::MAX.into(), ..Central::default() };
        let extra = [1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(apply_zip64(&mut c, &extra).is_err());
        assert!(apply_zip64(&mut c, &[1, 0, 9, 0]).is_err());
    }

    #[test]
    fn kinds() {
        let unix = |mode: u32, name: &str| Central {
            made_by: 3 << 8,
            external: mode << 16,
            name: name.as_bytes().to_vec(),
            ..Central::default()
        };
        assert_eq!(kind(&unix(0o100_644, "a")), Kind::File);
        assert_eq!(kind(&unix(0o040_755, "a")), Kind::Dir);
        assert_eq!(kind(&unix(0o120_777, "a")), Kind::Symlink);
        assert_eq!(kind(&unix(0o020_644, "a")), Kind::Device);
        assert_eq!(kind(&unix(0o010_644, "a")), Kind::Fifo);
        assert_eq!(kind(&unix(0, "a/")), Kind::Dir);
        let dos = Central { external: 0x10, name: b"d".to_vec(), ..Central::default() };
        assert_eq!(kind(&dos), Kind::Dir);
        assert_eq!(unix_mode(&dos), None);
    }
}
