//! Bundles through `unpack`: every attack has its own named test, and the
//! ordinary formats and each relaxing switch have theirs. Each test builds
//! its bundle in a fresh sandbox under the temp dir; `dest` is
//! `<sandbox>/dest`, and `<sandbox>/outside/sentinel` is what an escape
//! would reach. After every hostile bundle the sandbox is checked: nothing
//! new beside `dest`, the sentinel intact, no file at the escape target.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use edgedeploy::unpack::{BundleType, Policy, Report, UnpackError, unpack};
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder};
use tar::{EntryType, Header};

const SENTINEL: &[u8] = b"sentinel: must never change\n";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------- sandbox

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory per test, removed on drop.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(test: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("edgedeploy-unpack-{test}-{}-{n}", std::process::id()));
        remove_tree(&root);
        fs::create_dir_all(root.join("outside")).expect("sandbox");
        fs::write(root.join("outside/sentinel"), SENTINEL).expect("sentinel");
        Sandbox { root }
    }

    fn dest(&self) -> PathBuf {
        self.root.join("dest")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a bundle file (names start with "bundle").
    fn bundle(&self, name: &str, bytes: &[u8]) -> PathBuf {
        assert!(name.starts_with("bundle"));
        let path = self.root.join(name);
        fs::write(&path, bytes).expect("bundle");
        path
    }

    fn unpack(&self, bundle: &Path, kind: BundleType, policy: &Policy) -> Result<Report, UnpackError> {
        unpack(bundle, kind, &self.dest(), policy)
    }

    fn tar(&self, bytes: &[u8], policy: &Policy) -> Result<Report, UnpackError> {
        let bundle = self.bundle("bundle.tar", bytes);
        self.unpack(&bundle, BundleType::Tar, policy)
    }

    fn zip(&self, bytes: &[u8], policy: &Policy) -> Result<Report, UnpackError> {
        let bundle = self.bundle("bundle.zip", bytes);
        self.unpack(&bundle, BundleType::Zip, policy)
    }

    /// Nothing was written outside dest: the sandbox holds only what the
    /// test made, the sentinel is intact, and `escapes` do not exist.
    fn assert_contained(&self, escapes: &[&str]) {
        for entry in fs::read_dir(&self.root).expect("sandbox") {
            let name = entry.expect("entry").file_name().into_string().expect("utf-8");
            let known = name == "outside" || name == "dest" || name.starts_with("bundle") || name == "src";
            assert!(known, "unexpected {name:?} written beside dest");
        }
        let outside: Vec<_> = fs::read_dir(self.path("outside")).expect("outside").collect();
        assert_eq!(outside.len(), 1, "something was written in outside/");
        assert_eq!(fs::read(self.path("outside/sentinel")).expect("sentinel"), SENTINEL);
        for escape in escapes {
            assert!(fs::symlink_metadata(self.path(escape)).is_err(), "{escape} exists");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

/// Removes a tree, making directories writable first (a 0555 directory).
fn remove_tree(root: &Path) {
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
    if root.exists() && fs::remove_dir_all(root).is_err() {
        open_up(root);
        let _ = fs::remove_dir_all(root);
    }
}

fn assert_refused(result: Result<Report, UnpackError>, entry: &str, rule: &str) {
    match result {
        Err(err @ UnpackError::Refused { .. }) => {
            let UnpackError::Refused { entry: e, rule: r } = &err else { unreachable!() };
            assert_eq!(e, entry, "refused entry");
            assert!(r.contains(rule), "rule {r:?} should say {rule:?}");
            let msg = err.to_string();
            assert!(msg.contains(entry) && msg.contains(rule), "message {msg:?}");
        }
        other => panic!("expected {entry:?} refused ({rule}), got {other:?}"),
    }
}

fn assert_limit(result: Result<Report, UnpackError>, words: &str) {
    match result {
        Err(UnpackError::Limit { what }) => assert!(what.contains(words), "limit {what:?} should say {words:?}"),
        other => panic!("expected a limit ({words}), got {other:?}"),
    }
}

fn assert_corrupt(result: Result<Report, UnpackError>, words: &str) {
    match result {
        Err(UnpackError::Corrupt { detail }) => assert!(detail.contains(words), "{detail:?} should say {words:?}"),
        other => panic!("expected corrupt ({words}), got {other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

/// Total size of the regular files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() { du(&entry.path()) } else { meta.len() };
    }
    total
}

// ---------------------------------------------------------------- tar building

/// One tar entry; names and link names are written raw into the header, so
/// hostile names (`../x`, `/abs`) get through (Builder's setters refuse them).
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn raw(field: &mut [u8], value: &str) {
    assert!(value.len() < field.len(), "{value} too long for a raw header field");
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

fn header(kind: EntryType, name: &str, size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    raw(&mut h.as_old_mut().name, name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn append(b: &mut tar::Builder<Vec<u8>>, entry: &E<'_>) {
    let (mut h, data): (Header, &[u8]) = match *entry {
        E::File(name, data, mode) => (header(EntryType::Regular, name, data.len() as u64, mode), data),
        E::Dir(name, mode) => (header(EntryType::Directory, name, 0, mode), b""),
        E::Sym(name, target) | E::Hard(name, target) => {
            let kind = if matches!(entry, E::Sym(..)) { EntryType::Symlink } else { EntryType::Link };
            let mut h = header(kind, name, 0, 0o777);
            raw(&mut h.as_old_mut().linkname, target);
            (h, b"")
        }
        E::Char(name, major, minor) => {
            let mut h = header(EntryType::Char, name, 0, 0o666);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            (h, b"")
        }
        E::Fifo(name) => (header(EntryType::Fifo, name, 0, 0o644), b""),
    };
    h.set_cksum();
    b.append(&h, data).expect("append");
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for entry in entries {
        append(&mut b, entry);
    }
    b.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Incompressible bytes (a fixed LCG), for truncation tests.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------- zip building

/// One zip entry as stored: every field may be made to lie.
struct Z {
    name: Vec<u8>,
    body: Vec<u8>,
    method: u16,
    crc: u32,
    compressed: u32,
    size: u32,
    unix_mode: Option<u32>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("deflate");
    enc.finish().expect("deflate")
}

fn zentry(name: &str, data: &[u8], deflated: bool, unix_mode: Option<u32>) -> Z {
    let body = if deflated { deflate(data) } else { data.to_vec() };
    Z {
        name: name.as_bytes().to_vec(),
        compressed: body.len() as u32,
        body,
        method: if deflated { 8 } else { 0 },
        crc: crc32(data),
        size: data.len() as u32,
        unix_mode,
    }
}

fn zip_of(entries: &[Z]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for z in entries {
        let offset = out.len() as u32;
        let made_by: u16 = if z.unix_mode.is_some() { 3 << 8 | 20 } else { 20 };
        let common = |v: &mut Vec<u8>| {
            for half in [20u16, 0, z.method, 0, 0] {
                v.extend_from_slice(&half.to_le_bytes());
            }
            for word in [z.crc, z.compressed, z.size] {
                v.extend_from_slice(&word.to_le_bytes());
            }
            v.extend_from_slice(&(z.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(&z.name);
        out.extend_from_slice(&z.body);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&made_by.to_le_bytes());
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&(z.unix_mode.unwrap_or(0) << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&z.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

// ---------------------------------------------------------------- bombs

/// Raw deflate data that inflates to `mib` MiB of zeros, made in
/// milliseconds: one sync-flushed MiB of zeros (byte-aligned, not final,
/// referring only to zeros) repeated, then an empty final block.
fn deflated_zeros(mib: u64) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&vec![0; MIB as usize]).expect("deflate");
    enc.flush().expect("sync flush");
    let segment = enc.get_ref().clone();
    let mut out = Vec::with_capacity(segment.len() * mib as usize + 2);
    for _ in 0..mib {
        out.extend_from_slice(&segment);
    }
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

/// CRC-32 of `mib` MiB of zeros, combined rather than computed byte by byte.
fn zeros_crc(prefix: &[u8], mib: u64) -> flate2::Crc {
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut one = flate2::Crc::new();
    one.update(&vec![0; MIB as usize]);
    for _ in 0..mib {
        crc.combine(&one);
    }
    crc
}

/// A valid tgz holding one file, "bomb", of `mib` MiB of zeros (plus a
/// MiB of zeros after it, which ends the archive): ~1 KB per MiB.
fn gzip_bomb(mib: u64) -> Vec<u8> {
    let mut h = header(EntryType::Regular, "bomb", mib * MIB, 0o644);
    h.set_cksum();
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(h.as_bytes()).expect("deflate");
    enc.flush().expect("sync flush");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(enc.get_ref());
    out.extend_from_slice(&deflated_zeros(mib + 1));
    let crc = zeros_crc(h.as_bytes(), mib + 1);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(crc.amount()).to_le_bytes());
    out
}

#[test]
fn bomb_builders_are_valid() {
    // The bombs' data is checked on a small scale: it really inflates.
    let bomb = gzip_bomb(3);
    let mut tgz = flate2::read::GzDecoder::new(&bomb[..]);
    let mut all = Vec::new();
    tgz.read_to_end(&mut all).expect("valid gzip");
    assert_eq!(all.len() as u64, 512 + 4 * MIB);
    let mut zeros = Vec::new();
    flate2::read::DeflateDecoder::new(&deflated_zeros(2)[..]).read_to_end(&mut zeros).expect("valid deflate");
    assert_eq!(zeros.len() as u64, 2 * MIB);
    assert_eq!(zeros_crc(b"", 2).sum(), crc32(&zeros));
}

// ================================================================ attacks: paths

#[test]
fn absolute_path_refused() {
    let sb = Sandbox::new("absolute");
    let target = sb.path("outside/abs");
    let name = target.to_str().expect("utf-8");
    let result = sb.tar(&tar_of(&[E::File(name, b"pwned", 0o644)]), &Policy::default());
    assert_refused(result, name, "absolute path");
    sb.assert_contained(&["outside/abs"]);
}

#[test]
fn parent_component_escape_refused() {
    let sb = Sandbox::new("dotdot");
    let result = sb.tar(&tar_of(&[E::File("../escaped", b"pwned", 0o644)]), &Policy::default());
    assert_refused(result, "../escaped", "parent directory component");
    sb.assert_contained(&["escaped"]);
}

#[test]
fn parent_component_escape_refused_even_when_allowed() {
    let sb = Sandbox::new("dotdot-allowed");
    let policy = Policy { allow_parent_components: true, ..Policy::default() };
    let entries = [E::Dir("a", 0o755), E::File("a/../../outside/sentinel", b"pwned", 0o644)];
    assert_refused(sb.tar(&tar_of(&entries), &policy), "a/../../outside/sentinel", "leaves the archive");
    sb.assert_contained(&[]);
}

#[test]
fn pax_path_escape_refused() {
    // A pax record renames an innocent-looking header; the pax name is the one checked.
    let sb = Sandbox::new("pax");
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", b"../escaped".as_slice())]).expect("pax");
    append(&mut b, &E::File("innocent", b"pwned", 0o644));
    let result = sb.tar(&b.into_inner().expect("tar"), &Policy::default());
    assert_refused(result, "../escaped", "parent directory component");
    sb.assert_contained(&["escaped"]);
}

#[test]
fn oversized_long_name_record_refused() {
    // tar-rs would read a GNU long-name record whole into memory, whatever its size.
    let sb = Sandbox::new("longname");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::GNULongName, "././@LongLink", 4 * MIB, 0o644);
    h.set_cksum();
    b.append(&h, std::io::repeat(b'a').take(4 * MIB)).expect("append");
    append(&mut b, &E::File("x", b"x", 0o644));
    assert_corrupt(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), "limit 65536");
}

#[test]
fn zip_parent_component_refused() {
    let sb = Sandbox::new("zip-dotdot");
    let zip = zip_of(&[zentry("ok.txt", b"fine", false, None), zentry("../escaped", b"pwned", true, None)]);
    assert_refused(sb.zip(&zip, &Policy::default()), "../escaped", "parent directory component");
    sb.assert_contained(&["escaped"]);
    assert!(!sb.dest().join("ok.txt").exists(), "zip names are checked before anything is written");
}

#[test]
fn zip_absolute_path_refused() {
    let sb = Sandbox::new("zip-absolute");
    let target = sb.path("outside/abs");
    let name = target.to_str().expect("utf-8");
    assert_refused(sb.zip(&zip_of(&[zentry(name, b"pwned", false, None)]), &Policy::default()), name, "absolute path");
    sb.assert_contained(&["outside/abs"]);
}

// ================================================================ attacks: links

#[test]
fn symlink_escape_then_write_through_it_refused() {
    let sb = Sandbox::new("symlink-write");
    let entries = [E::Sym("evil", "../outside"), E::File("evil/sentinel", b"pwned", 0o644)];
    assert_refused(sb.tar(&tar_of(&entries), &Policy::default()), "evil/sentinel", "path goes through a symlink");
    sb.assert_contained(&[]);
}

#[test]
fn symlink_write_through_refused_even_with_external_symlinks_allowed() {
    let sb = Sandbox::new("symlink-write-allowed");
    let policy = Policy { allow_external_symlinks: true, ..Policy::default() };
    let outside = sb.path("outside");
    let entries = [E::Sym("evil", outside.to_str().expect("utf-8")), E::File("evil/new", b"pwned", 0o644)];
    assert_refused(sb.tar(&tar_of(&entries), &policy), "evil/new", "path goes through a symlink");
    sb.assert_contained(&[]);
}

#[test]
fn symlink_relative_escape_refused() {
    let sb = Sandbox::new("symlink-rel");
    let result = sb.tar(&tar_of(&[E::Dir("a", 0o755), E::Sym("a/up", "../../outside")]), &Policy::default());
    assert_refused(result, "a/up", "symlink target leaves the archive");
    assert!(fs::symlink_metadata(sb.dest().join("a/up")).is_err(), "the link was not created");
    sb.assert_contained(&[]);
}

#[test]
fn symlink_absolute_target_refused() {
    let sb = Sandbox::new("symlink-abs");
    let result = sb.tar(&tar_of(&[E::Sym("etc", "/etc")]), &Policy::default());
    assert_refused(result, "etc", "symlink target leaves the archive");
    sb.assert_contained(&[]);
}

#[test]
fn symlink_dot_link_then_dotdot_trick_refused() {
    // d -> . is harmless alone, but makes d/.. the parent of dest: lexically
    // x -> d/../outside stays inside, really it leaves.
    let sb = Sandbox::new("dot-trick");
    let result = sb.tar(&tar_of(&[E::Sym("d", "."), E::Sym("x", "d/../outside")]), &Policy::default());
    assert_refused(result, "x", "symlink target leaves the archive");
    assert!(fs::symlink_metadata(sb.dest().join("x")).is_err());
    sb.assert_contained(&[]);
}

#[test]
fn symlink_chain_trick_refused() {
    // The link that makes the escape comes after the one that uses it.
    let sb = Sandbox::new("chain-trick");
    let entries =
        [E::Dir("a", 0o755), E::Dir("a/b", 0o755), E::Sym("x", "a/b/up/../outside"), E::Sym("a/b/up", "../..")];
    assert_refused(sb.tar(&tar_of(&entries), &Policy::default()), "x", "symlink target leaves the archive");
    sb.assert_contained(&[]);
}

#[test]
fn duplicate_entry_replacing_dir_with_symlink_refused() {
    let sb = Sandbox::new("dup-dir");
    let entries = [E::Dir("d", 0o755), E::Sym("d", "../outside"), E::File("d/sentinel", b"pwned", 0o644)];
    assert_refused(sb.tar(&tar_of(&entries), &Policy::default()), "d", "duplicate entry");
    sb.assert_contained(&[]);
}

#[test]
fn duplicate_entry_replacing_symlink_refused() {
    let sb = Sandbox::new("dup-link");
    let entries = [E::Sym("l", "a"), E::File("l", b"x", 0o644)];
    assert_refused(sb.tar(&tar_of(&entries), &Policy::default()), "l", "duplicate entry");
}

#[test]
fn hardlink_escape_refused() {
    let sb = Sandbox::new("hardlink");
    let result = sb.tar(&tar_of(&[E::Hard("h", "../outside/sentinel")]), &Policy::default());
    assert_refused(result, "h", "hard link target leaves the archive");
    sb.assert_contained(&["dest/h"]);
}

fn every_switch() -> Policy {
    Policy {
        allow_absolute_paths: true,
        allow_parent_components: true,
        allow_external_symlinks: true,
        allow_special_files: true,
        allow_setuid: true,
        ..Policy::default()
    }
}

#[test]
fn hardlink_absolute_escape_refused_even_with_every_switch() {
    // The absolute name is taken inside the archive, where no such file is.
    let sb = Sandbox::new("hardlink-all-abs");
    let sentinel = sb.path("outside/sentinel");
    let result = sb.tar(&tar_of(&[E::Hard("h", sentinel.to_str().expect("utf-8"))]), &every_switch());
    assert_refused(result, "h", "hard link target is not an earlier file");
    sb.assert_contained(&[]);
    assert_eq!(fs::metadata(&sentinel).expect("sentinel").nlink(), 1);
}

#[test]
fn hardlink_dotdot_escape_refused_even_with_every_switch() {
    let sb = Sandbox::new("hardlink-all-dotdot");
    let result = sb.tar(&tar_of(&[E::Hard("h", "../outside/sentinel")]), &every_switch());
    assert_refused(result, "h", "hard link target leaves the archive");
    sb.assert_contained(&[]);
    assert_eq!(fs::metadata(sb.path("outside/sentinel")).expect("sentinel").nlink(), 1);
}

#[test]
fn hardlink_to_directory_refused() {
    let sb = Sandbox::new("hardlink-dir");
    let result = sb.tar(&tar_of(&[E::Dir("d", 0o755), E::Hard("h", "d")]), &Policy::default());
    assert_refused(result, "h", "hard link target is not an earlier file");
}

// ================================================================ attacks: file types and modes

#[test]
fn device_node_refused() {
    let sb = Sandbox::new("device");
    assert_refused(sb.tar(&tar_of(&[E::Char("null", 1, 3)]), &Policy::default()), "null", "special file");
    assert!(fs::symlink_metadata(sb.dest().join("null")).is_err());
    sb.assert_contained(&[]);
}

#[test]
fn fifo_refused() {
    let sb = Sandbox::new("fifo");
    assert_refused(sb.tar(&tar_of(&[E::Fifo("pipe")]), &Policy::default()), "pipe", "special file");
    assert!(fs::symlink_metadata(sb.dest().join("pipe")).is_err());
}

#[test]
fn setuid_file_refused() {
    let sb = Sandbox::new("setuid");
    assert_refused(sb.tar(&tar_of(&[E::File("su", b"#!/bin/sh\n", 0o4755)]), &Policy::default()), "su", "setuid");
    assert!(fs::symlink_metadata(sb.dest().join("su")).is_err());
}

#[test]
fn setgid_file_refused() {
    let sb = Sandbox::new("setgid");
    assert_refused(sb.tar(&tar_of(&[E::File("sg", b"x", 0o2755)]), &Policy::default()), "sg", "setuid/setgid bit");
}

#[test]
fn unsupported_entry_type_refused() {
    let sb = Sandbox::new("sparse");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::GNUSparse, "sparse", 0, 0o644);
    h.set_cksum();
    b.append(&h, &b""[..]).expect("append");
    assert_refused(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), "sparse", "unsupported entry type");
}

// ================================================================ attacks: limits

#[test]
fn gzip_bomb_refused_early() {
    let sb = Sandbox::new("gzip-bomb");
    let bomb = gzip_bomb(1024);
    assert!(bomb.len() < 2 * MIB as usize, "the bomb is small: {}", bomb.len());
    let bundle = sb.bundle("bundle.tgz", &bomb);
    assert_limit(sb.unpack(&bundle, BundleType::Tgz, &Policy::default()), "max_ratio (200)");
    assert!(du(&sb.dest()) < 64 * MIB, "stopped early: {} bytes written", du(&sb.dest()));
    sb.assert_contained(&[]);
}

#[test]
fn gzip_bomb_refused_by_max_bytes_without_ratio() {
    let sb = Sandbox::new("gzip-bomb-bytes");
    let policy = Policy { max_ratio: 0, max_bytes: 10 * MIB, ..Policy::default() };
    let bundle = sb.bundle("bundle.tgz", &gzip_bomb(1024));
    assert_limit(sb.unpack(&bundle, BundleType::Tgz, &policy), "max_bytes (10485760)");
    assert!(du(&sb.dest()) <= 10 * MIB);
}

#[test]
fn zip_bomb_refused_before_writing() {
    let sb = Sandbox::new("zip-bomb");
    let body = deflated_zeros(1024);
    let bomb = Z {
        name: b"bomb".to_vec(),
        compressed: body.len() as u32,
        body,
        method: 8,
        crc: zeros_crc(b"", 1024).sum(),
        size: GIB as u32,
        unix_mode: None,
    };
    assert_limit(sb.zip(&zip_of(&[bomb]), &Policy::default()), "max_ratio (200)");
    assert_eq!(fs::read_dir(sb.dest()).expect("dest").count(), 0, "nothing written");
}

#[test]
fn zip_bomb_lying_about_its_size_stops_at_the_declared_size() {
    let sb = Sandbox::new("zip-bomb-lying");
    let body = deflated_zeros(1024);
    let bomb = Z {
        name: b"bomb".to_vec(),
        compressed: body.len() as u32,
        body,
        method: 8,
        crc: 0,
        size: 1000,
        unix_mode: None,
    };
    assert_corrupt(sb.zip(&zip_of(&[bomb]), &Policy::default()), "more data than its declared size (1000 bytes)");
    assert!(du(&sb.dest()) <= 1000);
}

#[test]
fn zip_bomb_overlapping_entries_refused() {
    // 2000 central entries share one local entry of a deflated MiB of zeros:
    // 2000 MiB declared from about 1 KB of data.
    let sb = Sandbox::new("zip-overlap");
    let mut zip = zip_of(&[zentry("z0", &vec![0; MIB as usize], true, None)]);
    let end = zip.split_off(zip.len() - 22);
    let central = zip.split_off(zip.len() - (46 + 2));
    let cd_offset = zip.len() as u32;
    for _ in 0..2000 {
        zip.extend_from_slice(&central);
    }
    zip.extend_from_slice(&end[..8]);
    zip.extend_from_slice(&2000u16.to_le_bytes());
    zip.extend_from_slice(&2000u16.to_le_bytes());
    zip.extend_from_slice(&(2000 * central.len() as u32).to_le_bytes());
    zip.extend_from_slice(&cd_offset.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    assert_limit(sb.zip(&zip, &Policy::default()), "max_bytes (1073741824)");
    assert_eq!(fs::read_dir(sb.dest()).expect("dest").count(), 0, "nothing written");
}

#[test]
fn too_many_entries_refused() {
    let sb = Sandbox::new("entries");
    let policy = Policy { max_entries: 3, ..Policy::default() };
    let entries =
        [E::File("a", b"", 0o644), E::File("b", b"", 0o644), E::File("c", b"", 0o644), E::File("d", b"", 0o644)];
    assert_limit(sb.tar(&tar_of(&entries), &policy), "max_entries (3)");
    assert!(!sb.dest().join("d").exists());
}

#[test]
fn small_compressible_file_does_not_trip_ratio() {
    let sb = Sandbox::new("grace");
    let zeros = vec![0; 512 * 1024];
    let bundle = sb.bundle("bundle.tgz", &gzip(&tar_of(&[E::File("zeros", &zeros, 0o644)])));
    let report = sb.unpack(&bundle, BundleType::Tgz, &Policy::default()).expect("unpack");
    assert_eq!(report.bytes, zeros.len() as u64);
}

// ================================================================ attacks: corrupt input

#[test]
fn truncated_tgz_is_corrupt() {
    let sb = Sandbox::new("truncated-tgz");
    let tgz = gzip(&tar_of(&[E::File("noise", &noise(200_000), 0o644)]));
    let bundle = sb.bundle("bundle.tgz", &tgz[..tgz.len() / 2]);
    assert_corrupt(sb.unpack(&bundle, BundleType::Tgz, &Policy::default()), "noise");
}

#[test]
fn truncated_tar_is_corrupt() {
    let sb = Sandbox::new("truncated-tar");
    let tar = tar_of(&[E::File("noise", &noise(20_000), 0o644)]);
    assert_corrupt(sb.tar(&tar[..10_000], &Policy::default()), "truncated: ");
}

#[test]
fn tar_without_end_block_is_corrupt() {
    let sb = Sandbox::new("no-end");
    let tar = tar_of(&[E::File("a", b"a", 0o644)]);
    assert_corrupt(sb.tar(&tar[..1024], &Policy::default()), "end-of-archive");
}

#[test]
fn tgz_with_bad_crc_is_corrupt() {
    let sb = Sandbox::new("bad-crc");
    let mut tgz = gzip(&tar_of(&[E::File("a", b"hello", 0o644)]));
    let crc_at = tgz.len() - 8;
    tgz[crc_at] ^= 0xff;
    let bundle = sb.bundle("bundle.tgz", &tgz);
    assert_corrupt(sb.unpack(&bundle, BundleType::Tgz, &Policy::default()), "");
}

#[test]
fn tar_header_checksum_mismatch_is_corrupt() {
    let sb = Sandbox::new("bad-header");
    let mut tar = tar_of(&[E::File("a", b"hello", 0o644)]);
    tar[0] = b'b';
    assert_corrupt(sb.tar(&tar, &Policy::default()), "checksum");
}

#[test]
fn zip_corrupt_central_directory_is_corrupt() {
    let sb = Sandbox::new("zip-cd");
    let mut zip = zip_of(&[zentry("a.txt", b"hello", false, None)]);
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").expect("central entry");
    zip[cd + 2] = 0;
    assert_corrupt(sb.zip(&zip, &Policy::default()), "central directory entry 0");
    assert_eq!(fs::read_dir(sb.dest()).expect("dest").count(), 0);
}

#[test]
fn zip_central_directory_out_of_bounds_is_corrupt() {
    let sb = Sandbox::new("zip-cd-oob");
    let mut zip = zip_of(&[zentry("a.txt", b"hello", false, None)]);
    let at = zip.len() - 6;
    zip[at..at + 4].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    assert_corrupt(sb.zip(&zip, &Policy::default()), "out of bounds");
}

#[test]
fn zip_without_end_record_is_corrupt() {
    let sb = Sandbox::new("zip-no-eocd");
    let zip = zip_of(&[zentry("a.txt", b"hello", false, None)]);
    assert_corrupt(sb.zip(&zip[..zip.len() - 10], &Policy::default()), "end of central directory");
}

#[test]
fn zip_crc_mismatch_is_corrupt() {
    let sb = Sandbox::new("zip-crc");
    let mut entry = zentry("a.txt", b"hello world hello world", true, None);
    entry.crc ^= 1;
    assert_corrupt(sb.zip(&zip_of(&[entry]), &Policy::default()), "CRC-32 mismatch");
}

#[test]
fn zip_local_name_mismatch_is_corrupt() {
    let sb = Sandbox::new("zip-local");
    let mut zip = zip_of(&[zentry("a.txt", b"hello", false, None)]);
    zip[30] = b'b';
    assert_corrupt(sb.zip(&zip, &Policy::default()), "local header");
}

#[test]
fn zip_encrypted_entry_is_refused() {
    let sb = Sandbox::new("zip-encrypted");
    let mut zip = zip_of(&[zentry("a.txt", b"hello", false, None)]);
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").expect("central entry");
    zip[cd + 8] |= 1;
    assert_corrupt(sb.zip(&zip, &Policy::default()), "encrypted");
}

// ================================================================ formats

fn sample_tar() -> Vec<u8> {
    tar_of(&[
        E::Dir("./", 0o755),
        E::File("./appspec.yml", b"version: 0.0\n", 0o644),
        E::Dir("./bin", 0o750),
        E::File("./bin/start.sh", b"#!/bin/sh\n", 0o755),
        E::File("./ro.txt", b"read only", 0o400),
        E::File("implicit/dir/file", b"parents made", 0o600),
    ])
}

fn assert_sample(sb: &Sandbox, report: &Report) {
    let dest = sb.dest();
    assert_eq!(read(&dest.join("appspec.yml")), "version: 0.0\n");
    assert_eq!(read(&dest.join("bin/start.sh")), "#!/bin/sh\n");
    assert_eq!(read(&dest.join("implicit/dir/file")), "parents made");
    assert_eq!(mode(&dest.join("bin")), 0o750);
    assert_eq!(mode(&dest.join("bin/start.sh")), 0o755);
    assert_eq!(mode(&dest.join("ro.txt")), 0o400);
    assert_eq!(mode(&dest.join("implicit/dir/file")), 0o600);
    assert_eq!(mode(&dest.join("implicit")), 0o755);
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(report.entries, 5);
    assert_eq!(report.bytes, 13 + 10 + 9 + 12);
    sb.assert_contained(&[]);
}

#[test]
fn tar_unpacks() {
    let sb = Sandbox::new("tar");
    let report = sb.tar(&sample_tar(), &Policy::default()).expect("unpack");
    assert_sample(&sb, &report);
}

#[test]
fn tgz_unpacks() {
    let sb = Sandbox::new("tgz");
    let bundle = sb.bundle("bundle.tgz", &gzip(&sample_tar()));
    let report = sb.unpack(&bundle, BundleType::Tgz, &Policy::default()).expect("unpack");
    assert_sample(&sb, &report);
}

#[test]
fn gzipped_bundle_declared_tar_unpacks() {
    let sb = Sandbox::new("gz-as-tar");
    let bundle = sb.bundle("bundle.tar", &gzip(&sample_tar()));
    let report = sb.unpack(&bundle, BundleType::Tar, &Policy::default()).expect("unpack");
    assert_sample(&sb, &report);
}

#[test]
fn plain_tar_declared_tgz_unpacks() {
    let sb = Sandbox::new("tar-as-tgz");
    let bundle = sb.bundle("bundle.tgz", &sample_tar());
    let report = sb.unpack(&bundle, BundleType::Tgz, &Policy::default()).expect("unpack");
    assert_sample(&sb, &report);
}

#[test]
fn long_names_unpack() {
    let sb = Sandbox::new("long");
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"long"[..]).expect("append");
    sb.tar(&b.into_inner().expect("tar"), &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join(&long)), "long");
}

fn sample_zip() -> Vec<u8> {
    zip_of(&[
        zentry("appspec.yml", b"version: 0.0\n", false, Some(0o100_644)),
        zentry("bin/", b"", false, Some(0o040_750)),
        zentry("bin/start.sh", b"#!/bin/sh\necho started\necho started\n", true, Some(0o100_755)),
        zentry("current", b"bin", false, Some(0o120_777)),
        zentry("dos.txt", &[b'x'; 3000], true, None),
    ])
}

fn assert_sample_zip(sb: &Sandbox, report: &Report) {
    let dest = sb.dest();
    assert_eq!(read(&dest.join("appspec.yml")), "version: 0.0\n");
    assert_eq!(read(&dest.join("bin/start.sh")), "#!/bin/sh\necho started\necho started\n");
    assert_eq!(read(&dest.join("dos.txt")), "x".repeat(3000));
    assert_eq!(fs::read_link(dest.join("current")).expect("symlink"), Path::new("bin"));
    assert_eq!(mode(&dest.join("bin")), 0o750);
    assert_eq!(mode(&dest.join("bin/start.sh")), 0o755);
    assert_eq!(mode(&dest.join("dos.txt")), 0o644);
    assert_eq!(report.entries, 5);
    sb.assert_contained(&[]);
}

#[test]
fn zip_stored_and_deflated_unpacks() {
    let sb = Sandbox::new("zip");
    let report = sb.zip(&sample_zip(), &Policy::default()).expect("unpack");
    assert_sample_zip(&sb, &report);
}

#[test]
fn zip_declared_tar_unpacks() {
    let sb = Sandbox::new("zip-as-tar");
    let bundle = sb.bundle("bundle.tar", &sample_zip());
    let report = sb.unpack(&bundle, BundleType::Tar, &Policy::default()).expect("unpack");
    assert_sample_zip(&sb, &report);
}

#[test]
fn zip_with_data_descriptors_unpacks() {
    // Streaming writers put zeros in the local header (flag bit 3) and the
    // sizes and CRC after the data; the central directory has them.
    let sb = Sandbox::new("zip-descriptor");
    let mut zip = zip_of(&[zentry("a.txt", b"described later", true, Some(0o100_640))]);
    zip[6] |= 8;
    zip[14..26].fill(0);
    let report = sb.zip(&zip, &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join("a.txt")), "described later");
    assert_eq!(mode(&sb.dest().join("a.txt")), 0o640);
    assert_eq!(report.bytes, 15);
}

/// Rewrites a zip from `zip_of` as zip64: saturated central sizes with a
/// zip64 extra field, a zip64 end record and locator, a saturated end record.
fn as_zip64(zip: &[u8], entries: u16) -> Vec<u8> {
    let eocd = zip.len() - 22;
    let cd_offset = u32::from_le_bytes(zip[eocd + 16..eocd + 20].try_into().expect("4 bytes")) as usize;
    let mut out = zip[..cd_offset].to_vec();
    let mut at = cd_offset;
    for _ in 0..entries {
        let name_len = u16::from_le_bytes([zip[at + 28], zip[at + 29]]) as usize;
        let mut fixed = zip[at..at + 46].to_vec();
        let (compressed, size) = (fixed[20..24].to_vec(), fixed[24..28].to_vec());
        fixed[20..28].fill(0xff);
        fixed[30..32].copy_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&fixed);
        out.extend_from_slice(&zip[at + 46..at + 46 + name_len]);
        out.extend_from_slice(&[1, 0, 16, 0]);
        out.extend_from_slice(&u64::from(u32::from_le_bytes(size.try_into().expect("4"))).to_le_bytes());
        out.extend_from_slice(&u64::from(u32::from_le_bytes(compressed.try_into().expect("4"))).to_le_bytes());
        at += 46 + name_len;
    }
    let cd_size = (out.len() - cd_offset) as u64;
    let record = out.len() as u64;
    out.extend_from_slice(b"PK\x06\x06");
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for value in [u64::from(entries), u64::from(entries), cd_size, cd_offset as u64] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(b"PK\x06\x07\0\0\0\0");
    out.extend_from_slice(&record.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0\0");
    out
}

#[test]
fn zip64_unpacks() {
    let sb = Sandbox::new("zip64");
    let zip = zip_of(&[zentry("a.txt", b"sixty-four", true, None), zentry("b/c.txt", b"bits", false, None)]);
    sb.zip(&as_zip64(&zip, 2), &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join("a.txt")), "sixty-four");
    assert_eq!(read(&sb.dest().join("b/c.txt")), "bits");
}

#[test]
fn zip64_end_record_missing_is_corrupt() {
    let sb = Sandbox::new("zip64-missing");
    let mut zip = zip_of(&[zentry("a.txt", b"x", false, None)]);
    let at = zip.len() - 22 + 8;
    zip[at..at + 2].fill(0xff);
    assert_corrupt(sb.zip(&zip, &Policy::default()), "zip64 end of central directory record missing");
}

#[test]
fn dest_must_not_exist() {
    let sb = Sandbox::new("dest-exists");
    fs::create_dir(sb.dest()).expect("dest");
    match sb.tar(&sample_tar(), &Policy::default()) {
        Err(UnpackError::Io { path, source }) => {
            assert_eq!(path, sb.dest());
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

// ================================================================ directory bundles

fn source_tree(sb: &Sandbox) -> PathBuf {
    let src = sb.path("src");
    fs::create_dir_all(src.join("bin")).expect("src");
    fs::write(src.join("appspec.yml"), "version: 0.0\n").expect("write");
    fs::write(src.join("bin/run.sh"), "#!/bin/sh\n").expect("write");
    fs::set_permissions(src.join("bin/run.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("bin/run.sh", src.join("run")).expect("symlink");
    src
}

#[test]
fn directory_copies() {
    let sb = Sandbox::new("dir");
    let src = source_tree(&sb);
    let report = sb.unpack(&src, BundleType::Directory, &Policy::default()).expect("copy");
    let dest = sb.dest();
    assert_eq!(read(&dest.join("appspec.yml")), "version: 0.0\n");
    assert_eq!(read(&dest.join("bin/run.sh")), "#!/bin/sh\n");
    assert_eq!(mode(&dest.join("bin/run.sh")), 0o750);
    assert_eq!(fs::read_link(dest.join("run")).expect("link"), Path::new("bin/run.sh"));
    assert_eq!(report.entries, 4);
    sb.assert_contained(&[]);
}

#[test]
fn directory_escaping_symlink_refused() {
    let sb = Sandbox::new("dir-symlink");
    let src = source_tree(&sb);
    std::os::unix::fs::symlink("../outside", src.join("evil")).expect("symlink");
    assert_refused(sb.unpack(&src, BundleType::Directory, &Policy::default()), "evil", "symlink target leaves");
    sb.assert_contained(&[]);
}

#[test]
fn directory_socket_refused() {
    let sb = Sandbox::new("dir-socket");
    let src = source_tree(&sb);
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).expect("socket");
    assert_refused(sb.unpack(&src, BundleType::Directory, &Policy::default()), "sock", "special file");
}

#[test]
fn directory_setuid_refused() {
    let sb = Sandbox::new("dir-setuid");
    let src = source_tree(&sb);
    fs::set_permissions(src.join("bin/run.sh"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    assert_refused(sb.unpack(&src, BundleType::Directory, &Policy::default()), "bin/run.sh", "setuid");
}

#[test]
fn directory_copy_skips_dest_inside_source() {
    let sb = Sandbox::new("dir-inside");
    let src = source_tree(&sb);
    let dest = src.join("archive");
    unpack(&src, BundleType::Directory, &dest, &Policy::default()).expect("copy");
    assert!(dest.join("appspec.yml").exists());
    assert!(!dest.join("archive").exists());
}

// ================================================================ links and modes that are fine

#[test]
fn relative_symlinks_inside_accepted() {
    let sb = Sandbox::new("symlink-ok");
    let entries = [
        E::Dir("releases/v1", 0o755),
        E::File("releases/v1/app", b"app", 0o755),
        E::Sym("current", "releases/v1"),
        E::Sym("releases/v1/self", "../v1/./app"),
        E::Sym("via", "current/app"),
        E::Sym("dangling", "missing/file"),
    ];
    let report = sb.tar(&tar_of(&entries), &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join("via")), "app");
    assert_eq!(read(&sb.dest().join("releases/v1/self")), "app");
    assert_eq!(report.entries, 6);
}

#[test]
fn hardlink_within_archive_accepted() {
    let sb = Sandbox::new("hardlink-ok");
    let entries = [E::File("a", b"shared", 0o640), E::Hard("./b", "./a"), E::Dir("d", 0o755), E::Hard("d/c", "b")];
    sb.tar(&tar_of(&entries), &Policy::default()).expect("unpack");
    let ino = |p: &str| fs::metadata(sb.dest().join(p)).expect("meta").ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("d/c"));
    assert_eq!(read(&sb.dest().join("d/c")), "shared");
}

#[test]
fn later_file_replaces_earlier_without_writing_through_hardlink() {
    let sb = Sandbox::new("replace");
    let entries = [E::File("a", b"one", 0o644), E::Hard("b", "a"), E::File("a", b"two", 0o600)];
    sb.tar(&tar_of(&entries), &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join("a")), "two");
    assert_eq!(read(&sb.dest().join("b")), "one");
    assert_eq!(mode(&sb.dest().join("a")), 0o600);
}

#[test]
fn read_only_dir_with_children() {
    let sb = Sandbox::new("ro-dir");
    let entries = [
        E::Dir("ro", 0o555),
        E::File("ro/f", b"child", 0o444),
        E::Dir("ro/sub", 0o500),
        E::File("ro/sub/g", b"g", 0o644),
    ];
    sb.tar(&tar_of(&entries), &Policy::default()).expect("unpack");
    assert_eq!(read(&sb.dest().join("ro/sub/g")), "g");
    assert_eq!(mode(&sb.dest().join("ro")), 0o555);
    assert_eq!(mode(&sb.dest().join("ro/sub")), 0o500);
    assert_eq!(mode(&sb.dest().join("ro/f")), 0o444);
}

#[test]
fn setgid_directory_bit_dropped() {
    let sb = Sandbox::new("setgid-dir");
    sb.tar(&tar_of(&[E::Dir("shared", 0o2775)]), &Policy::default()).expect("unpack");
    assert_eq!(mode(&sb.dest().join("shared")), 0o775);
}

// ================================================================ switches

#[test]
fn allow_absolute_paths_unpacks_inside() {
    let sb = Sandbox::new("allow-abs");
    let policy = Policy { allow_absolute_paths: true, ..Policy::default() };
    sb.tar(&tar_of(&[E::File("/etc/app.conf", b"conf", 0o644)]), &policy).expect("unpack");
    assert_eq!(read(&sb.dest().join("etc/app.conf")), "conf");
    sb.assert_contained(&[]);
}

#[test]
fn allow_parent_components_normalizes_inside() {
    let sb = Sandbox::new("allow-dotdot");
    let policy = Policy { allow_parent_components: true, ..Policy::default() };
    sb.tar(&tar_of(&[E::File("a/../b/./c", b"c", 0o644)]), &policy).expect("unpack");
    assert_eq!(read(&sb.dest().join("b/c")), "c");
    sb.assert_contained(&[]);
}

#[test]
fn allow_external_symlinks_creates_them_as_is() {
    let sb = Sandbox::new("allow-ext");
    let policy = Policy { allow_external_symlinks: true, ..Policy::default() };
    sb.tar(&tar_of(&[E::Sym("etc", "/etc"), E::Sym("up", "../outside")]), &policy).expect("unpack");
    assert_eq!(fs::read_link(sb.dest().join("etc")).expect("link"), Path::new("/etc"));
    assert_eq!(fs::read_link(sb.dest().join("up")).expect("link"), Path::new("../outside"));
    sb.assert_contained(&[]);
}

#[test]
fn allow_special_files_makes_nodes() {
    let sb = Sandbox::new("allow-special");
    let policy = Policy { allow_special_files: true, ..Policy::default() };
    sb.tar(&tar_of(&[E::Fifo("pipe"), E::Char("null", 1, 3)]), &policy).expect("unpack");
    assert!(fs::symlink_metadata(sb.dest().join("pipe")).expect("fifo").file_type().is_fifo());
    let null = fs::symlink_metadata(sb.dest().join("null")).expect("device");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

#[test]
fn allow_setuid_keeps_the_bit() {
    let sb = Sandbox::new("allow-setuid");
    let policy = Policy { allow_setuid: true, ..Policy::default() };
    sb.tar(&tar_of(&[E::File("su", b"#!/bin/sh\n", 0o4755)]), &policy).expect("unpack");
    assert_eq!(mode(&sb.dest().join("su")), 0o4755);
}

#[test]
fn limits_disabled_with_zero() {
    let sb = Sandbox::new("no-limits");
    let policy = Policy { max_bytes: 0, max_entries: 0, max_ratio: 0, ..Policy::default() };
    let bundle = sb.bundle("bundle.tgz", &gzip_bomb(64));
    let report = sb.unpack(&bundle, BundleType::Tgz, &policy).expect("unpack");
    assert_eq!(report.bytes, 64 * MIB);
}

// ================================================================ attacks: memory and work

#[test]
fn deep_implicit_directories_bounded() {
    // Each entry makes 35 directories of 100-byte names: every level's full
    // path is remembered (quadratic in the depth), 66 KB per 3.5 KB entry.
    // The bookkeeping limit stops it.
    let sb = Sandbox::new("deep");
    let mut b = tar::Builder::new(Vec::new());
    let level = format!("{}/", "d".repeat(99));
    for i in 0..300 {
        let name = format!("{i}/{}f", level.repeat(34));
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, &name, &b""[..]).expect("append");
    }
    assert_limit(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), "bytes of memory");
}

#[test]
fn symlink_checking_work_bounded() {
    // 2200 links of 2001 components each: 4.4M steps to check.
    let sb = Sandbox::new("symlink-work");
    let mut b = tar::Builder::new(Vec::new());
    let target = format!("{}x", "d/".repeat(2000));
    for i in 0..2200 {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("l{i}"), &target).expect("append");
    }
    assert_limit(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), "checking symlinks");
}

#[test]
fn pending_symlinks_memory_bounded() {
    // Symlinks are kept in memory until the end: 4200 of 4 KB each.
    let sb = Sandbox::new("symlink-memory");
    let mut b = tar::Builder::new(Vec::new());
    let target = "e/".repeat(2000);
    for i in 0..4200 {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("l{i}"), &target).expect("append");
    }
    assert_limit(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), "bytes of memory");
}

// ---------------------------------------------------------------- what is written counts

#[test]
fn hard_links_count_their_bytes_each_time() {
    let sb = Sandbox::new("hardlink-bytes");
    let data = noise(MIB as usize);
    let entries = [
        E::File("a", &data, 0o644),
        E::Hard("b", "a"),
        E::Hard("c", "a"),
        E::Hard("d", "a"),
        E::Hard("e", "a"),
        E::Hard("f", "a"),
    ];
    let bundle = tar_of(&entries);
    let tight = Policy { max_bytes: 4 * MIB, ..Policy::default() };
    assert_limit(sb.tar(&bundle, &tight), "max_bytes");
    let sb = Sandbox::new("hardlink-bytes-fit");
    let report = sb.tar(&bundle, &Policy { max_bytes: 6 * MIB, ..Policy::default() }).expect("six copies fit");
    assert_eq!(report.bytes, 6 * MIB, "each hard link counts as the copy it becomes when installed");
}

/// A zip whose central directory names the same local entry `copies` times.
fn shared_data_zip(data: &[u8], copies: usize) -> Vec<u8> {
    let one = zip_of(&[zentry("a", data, true, Some(0o644))]);
    let eocd = one.len() - 22;
    let cd_offset = u32::from_le_bytes(one[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let record = &one[cd_offset..eocd];
    let mut out = one[..cd_offset].to_vec();
    for _ in 0..copies {
        out.extend_from_slice(record);
    }
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(copies as u16).to_le_bytes());
    out.extend_from_slice(&(copies as u16).to_le_bytes());
    out.extend_from_slice(&((record.len() * copies) as u32).to_le_bytes());
    out.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn zip_entries_sharing_their_data_count_in_full() {
    // 1 MiB that deflates about 15:1, under max_ratio on its own...
    let mut data = noise(MIB as usize);
    for (i, byte) in data.iter_mut().enumerate() {
        if i % 20 != 0 {
            *byte = 0;
        }
    }
    let single = zip_of(&[zentry("a", &data, true, Some(0o644))]);
    assert!((MIB as usize) < single.len() * 200, "one copy alone must pass the ratio");
    // ...named 40 times by the central directory: 40 MiB from one copy of the data.
    let sb = Sandbox::new("zip-shared");
    assert_limit(sb.zip(&shared_data_zip(&data, 40), &Policy::default()), "compression ratio");
    let sb = Sandbox::new("zip-shared-one");
    sb.zip(&single, &Policy::default()).expect("one copy unpacks");
}

// ---------------------------------------------------------------- refusals name the entry as the archive does

#[test]
fn gnu_long_name_refusal_names_the_long_name() {
    // A GNU long-name record (type L) renames a short header; the refusal
    // quotes the long name, as `tar tvf` would show it, not the header's.
    let sb = Sandbox::new("gnu-long-refused");
    let long = format!("{}/../../etc/cron.d/evil", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::GNULongName, "././@LongLink", long.len() as u64 + 1, 0o644);
    h.set_cksum();
    b.append(&h, format!("{long}\0").as_bytes()).expect("append");
    append(&mut b, &E::File("short", b"pwned", 0o644));
    assert_refused(sb.tar(&b.into_inner().expect("tar"), &Policy::default()), &long, "parent directory component");
    sb.assert_contained(&["etc/cron.d/evil"]);
}

#[test]
fn pax_linkpath_refusal_names_the_pax_path() {
    // pax path and linkpath replace the header's names: the refusal names the pax path.
    let sb = Sandbox::new("pax-linkpath");
    let name = format!("long/{}", "n".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", name.as_bytes()), ("linkpath", b"/etc/shadow".as_slice())]).expect("pax");
    append(&mut b, &E::Sym("short", "harmless"));
    assert_refused(
        sb.tar(&b.into_inner().expect("tar"), &Policy::default()),
        &name,
        "symlink target leaves the archive",
    );
}
