//! Point 7 of the engine issue: whatever instant `deploy-local` is SIGKILLed,
//! no installed file is half-written, and the next deploy-local (same or
//! another revision, same group) succeeds and leaves exactly its revision,
//! no orphan and no temporary file.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILL_INSTANTS: u32 = 50;

/// One revision: its tgz and the files it installs (relative path → content).
struct Revision {
    tgz: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

fn content(tag: &str, i: usize, len: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ tag.len() as u64;
    let mut bytes = format!("{tag}:{i}:").into_bytes();
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(b'a' + (state % 26) as u8);
    }
    bytes
}

/// Builds revision `tag`: `count` files in 8 directories (a shared part and
/// a part of its own), hooks that take a little time, packed as a tgz.
fn build(sb: &Sandbox, tag: &str, count: usize) -> Revision {
    let dir = sb.path(&format!("src-{tag}"));
    let dest = sb.path("dest");
    let mut spec =
        format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n", dest.display());
    for event in ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"] {
        spec.push_str(&format!("  {event}:\n    - location: hook.sh\n"));
    }
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("appspec.yml"), spec).unwrap();
    fs::write(dir.join("hook.sh"), "#!/bin/sh\nsleep 0.05\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("hook.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..count {
        let rel = if i % 3 == 0 { format!("{tag}-only/d{}/f{i}", i % 8) } else { format!("shared/d{}/f{i}", i % 8) };
        let bytes = content(tag, i, 2_000 + (i * 37) % 20_000);
        let path = dir.join("app").join(&rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes).unwrap();
        files.insert(rel, bytes);
    }
    let tgz = sb.path(&format!("{tag}.tgz"));
    let status = Command::new("tar").arg("czf").arg(&tgz).arg("-C").arg(&dir).arg(".").status().unwrap();
    assert!(status.success());
    Revision { tgz, files }
}

fn deploy_cmd(sb: &Sandbox, rev: &Revision) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.args(["deploy-local", "-t", "tgz", "-c"]).arg(sb.config()).arg("-l").arg(&rev.tgz);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn deploy(sb: &Sandbox, rev: &Revision) {
    let out = deploy_cmd(sb, rev).output().unwrap();
    assert!(out.status.success(), "deploy after kill failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every path under `dir`, directories included, as absolute strings.
fn all_paths(dir: &Path) -> Vec<String> {
    let mut out = vec![dir.display().to_string()];
    for rel in tree_with_dirs(dir) {
        out.push(dir.join(rel).display().to_string());
    }
    out.sort();
    out
}

fn tree_with_dirs(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Names of leftovers anywhere under `dir`: temporary files and partial unpacks.
fn leftovers(dir: &Path) -> Vec<String> {
    tree_with_dirs(dir)
        .into_iter()
        .filter(|p| p.contains(".edgedeploy-tmp.") || p.contains("deployment-archive.partial"))
        .filter(|p| !p.contains("deployment-archive/")) // the revision's own content is not ours to judge
        .collect()
}

/// Right after a kill: every file at a final name is complete: byte-equal to
/// one revision's file at that path.
fn check_no_half_written_file(sb: &Sandbox, a: &Revision, b: &Revision, instant: u32) {
    for rel in tree(&sb.path("dest")) {
        if rel.rsplit('/').next().unwrap().starts_with(".edgedeploy-tmp.") {
            continue;
        }
        let bytes = fs::read(sb.path("dest").join(&rel)).unwrap();
        let known = [a.files.get(&rel), b.files.get(&rel)];
        assert!(known.iter().flatten().any(|c| **c == bytes), "instant {instant}: {rel} is half-written or foreign");
    }
}

/// After a successful deployment of `rev`: exactly its files, their exact
/// content, a cleanup list naming exactly what is there, no leftovers.
fn check_exactly(sb: &Sandbox, rev: &Revision, instant: u32) {
    let dest = sb.path("dest");
    let installed = tree(&dest);
    let expected: Vec<String> = rev.files.keys().cloned().collect();
    assert_eq!(installed, expected, "instant {instant}: installed tree differs");
    for (rel, bytes) in &rev.files {
        assert_eq!(&fs::read(dest.join(rel)).unwrap(), bytes, "instant {instant}: {rel} content");
    }
    let mut listed = sb.cleanup_list("default-local-deployment-group");
    listed.sort();
    assert_eq!(listed, all_paths(&dest), "instant {instant}: cleanup list differs from what is installed");
    assert_eq!(leftovers(&dest), Vec::<String>::new(), "instant {instant}");
    assert_eq!(leftovers(&sb.root()), Vec::<String>::new(), "instant {instant}");
}

#[test]
fn sigkill_at_any_instant_then_next_deploy_succeeds_with_nothing_orphaned() {
    let sb = Sandbox::new("crash");
    let a = build(&sb, "a", 240);
    let b = build(&sb, "b", 240);
    deploy(&sb, &a);
    let started = Instant::now();
    deploy(&sb, &b);
    let full = started.elapsed();
    check_exactly(&sb, &b, 0);
    eprintln!("a full deployment takes {full:?}; killing at {KILL_INSTANTS} instants across it");

    let mut current = &b;
    for instant in 0..KILL_INSTANTS {
        let target = if current.tgz == a.tgz { &b } else { &a };
        let delay = full.mul_f64((f64::from(instant) + 0.5) / f64::from(KILL_INSTANTS));
        let mut child = deploy_cmd(&sb, target).spawn().unwrap();
        std::thread::sleep(delay);
        let finished_first = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        check_no_half_written_file(&sb, &a, &b, instant);
        // Alternate between redeploying the killed revision and the other one.
        let next = if instant % 2 == 0 {
            target
        } else if target.tgz == a.tgz {
            &b
        } else {
            &a
        };
        deploy(&sb, next);
        check_exactly(&sb, next, instant);
        if finished_first {
            eprintln!("instant {instant}: deployment had already finished at {delay:?}");
        }
        current = next;
    }
    std::thread::sleep(Duration::from_millis(200)); // let the last hooks' sleeps end before cleanup
}
