//! Attacks on the Install and DownloadBundle events through the real
//! `edgedeploy-agent deploy-local`: links planted at destinations (by an
//! earlier revision or by anyone else), links that stay in the archive but
//! leave their destination once installed, the single-top-directory strip,
//! hook locations behind links, and the install's byte budget. Each test
//! compares the trees it must not touch before and after.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// A directory bundle: `appspec` plus `files` (path, content) and `links`
/// (path, target).
fn bundle(sb: &Sandbox, name: &str, appspec: &str, files: &[(&str, &str)], links: &[(&str, &str)]) -> PathBuf {
    let mut all = vec![("appspec.yml", appspec)];
    all.extend_from_slice(files);
    let dir = sb.bundle(name, &all);
    for (path, target) in links {
        let at = dir.join(path);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(target, at).unwrap();
    }
    dir
}

/// An AppSpec mapping each (source, destination).
fn spec(mappings: &[(&str, &Path)]) -> String {
    let mut text = "version: 0.0\nos: linux\nfiles:\n".to_string();
    for (source, destination) in mappings {
        text.push_str(&format!("  - source: {source}\n    destination: {}\n", destination.display()));
    }
    text
}

/// A victim directory with one file, outside every destination.
fn victim(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("victim");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("precious.txt"), "keep me").unwrap();
    fs::set_permissions(dir.join("precious.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn snapshot(dir: &Path) -> Vec<(String, u32, String)> {
    tree(dir)
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            (rel, mode(&path), fs::read_to_string(&path).unwrap_or_default())
        })
        .collect()
}

fn deploy(sb: &Sandbox, bundle: &Path) -> std::process::Output {
    sb.deploy(&["-l", bundle.to_str().unwrap()])
}

fn assert_failed_with(out: &std::process::Output, words: &[&str]) {
    assert!(!out.status.success(), "deploy-local succeeded:\n{}", stdout(out));
    let err = stderr(out);
    for w in words {
        assert!(err.contains(w), "stderr does not name {w:?}:\n{err}");
    }
}

#[test]
fn link_planted_in_a_destination_parent_is_refused_not_followed() {
    let sb = Sandbox::new("planted-parent");
    let victim = victim(&sb);
    let before = snapshot(&victim);
    let dest = sb.path("dest");
    fs::create_dir_all(&dest).unwrap();
    // Someone else put a link where the revision needs a directory.
    symlink(&victim, dest.join("conf")).unwrap();
    let b = bundle(&sb, "b", &spec(&[("app", &dest)]), &[("app/conf/precious.txt", "pwned")], &[]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &[&dest.join("conf").display().to_string(), "symbolic link"]);
    assert_eq!(snapshot(&victim), before);
}

#[test]
fn link_above_the_destination_is_refused_naming_it() {
    let sb = Sandbox::new("planted-above");
    let victim = victim(&sb);
    let before = snapshot(&victim);
    let real = sb.path("real");
    fs::create_dir_all(&real).unwrap();
    symlink(&victim, real.join("dest")).unwrap();
    let dest = real.join("dest").join("app");
    let b = bundle(&sb, "b", &spec(&[("app", &dest)]), &[("app/new.txt", "x")], &[]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &[&real.join("dest").display().to_string(), "symbolic link"]);
    assert_eq!(snapshot(&victim), before);
    assert!(!victim.join("app").exists());
}

#[test]
fn link_installed_by_an_earlier_revision_is_replaced_not_written_through() {
    let sb = Sandbox::new("earlier-link");
    sb.write_config("allow_external_symlinks: true\n");
    let victim = victim(&sb);
    let before = snapshot(&victim);
    let dest = sb.path("dest");
    let one = bundle(&sb, "one", &spec(&[("app", &dest)]), &[], &[("app/data", victim.to_str().unwrap())]);
    assert_success(&deploy(&sb, &one));
    assert!(fs::symlink_metadata(dest.join("data")).unwrap().file_type().is_symlink());
    let two = bundle(&sb, "two", &spec(&[("app", &dest)]), &[("app/data/precious.txt", "new")], &[]);
    assert_success(&deploy(&sb, &two));
    assert!(fs::symlink_metadata(dest.join("data")).unwrap().is_dir(), "the link became a directory of ours");
    assert_eq!(sb.read("dest/data/precious.txt"), "new");
    assert_eq!(snapshot(&victim), before);
}

#[test]
fn obsolete_file_behind_a_swapped_directory_is_not_unlinked() {
    let sb = Sandbox::new("swapped-dir");
    let victim = victim(&sb);
    let before = snapshot(&victim);
    let dest = sb.path("dest");
    let one = bundle(&sb, "one", &spec(&[("app", &dest)]), &[("app/d/precious.txt", "ours"), ("app/a", "a")], &[]);
    assert_success(&deploy(&sb, &one));
    // Between deployments, our directory is swapped for a link to the victim.
    fs::remove_dir_all(dest.join("d")).unwrap();
    symlink(&victim, dest.join("d")).unwrap();
    let two = bundle(&sb, "two", &spec(&[("app", &dest)]), &[("app/a", "a2")], &[]);
    assert_success(&deploy(&sb, &two));
    assert_eq!(snapshot(&victim), before, "the cleanup removed a file through the link");
    assert!(fs::symlink_metadata(dest.join("d")).is_err(), "our own path (now a link) is removed, not followed");
}

#[test]
fn link_inside_the_archive_that_leaves_its_destination_is_refused() {
    let sb = Sandbox::new("leaves-destination");
    let dest = sb.path("dest");
    let conf = sb.path("conf");
    let appspec = spec(&[("app", &dest.join("app")), ("conf", &conf)]);
    // Inside the archive app/cfg -> ../conf/x is fine; installed, it leads out of dest/app.
    let b = bundle(&sb, "b", &appspec, &[("conf/x", "secret")], &[("app/cfg", "../conf/x")]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["files[0]", "app/cfg", "outside the destination", "allow_external_symlinks"]);
    assert!(!dest.exists() && !conf.exists(), "nothing is installed when the plan is refused");
    sb.write_config("allow_external_symlinks: true\n");
    assert_success(&deploy(&sb, &b));
    assert_eq!(fs::read_link(dest.join("app/cfg")).unwrap(), PathBuf::from("../conf/x"));
}

#[test]
fn dot_link_then_parent_at_the_destination_is_refused() {
    let sb = Sandbox::new("dot-link");
    let dest = sb.path("dest");
    // d -> . and e -> d/../x: lexically inside, really the destination's parent.
    let b = bundle(&sb, "b", &spec(&[("app", &dest)]), &[("app/x", "x")], &[("app/d", "."), ("app/e", "d/../x")]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["app/e", "outside the destination"]);
}

#[test]
fn absolute_link_inside_its_destination_is_accepted() {
    let sb = Sandbox::new("absolute-inside");
    sb.write_config("allow_external_symlinks: true\n");
    let dest = sb.path("dest");
    let target = dest.join("x");
    let b = bundle(&sb, "b", &spec(&[("app", &dest)]), &[("app/x", "x")], &[("app/y", target.to_str().unwrap())]);
    assert_success(&deploy(&sb, &b));
    assert_eq!(sb.read("dest/y"), "x");
}

#[test]
fn source_through_a_link_out_of_the_revision_is_refused() {
    let sb = Sandbox::new("source-link");
    sb.write_config("allow_external_symlinks: true\n");
    let victim = victim(&sb);
    let dest = sb.path("dest");
    // The mapping's source goes through a link of the archive to the victim.
    let b = bundle(&sb, "b", &spec(&[("out/precious.txt", &dest)]), &[], &[("out", victim.to_str().unwrap())]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["files[0].source", "out/precious.txt", "inside the revision"]);
    assert!(!dest.join("precious.txt").exists(), "a file outside the revision was copied");
}

/// A tar bundle of `top/` holding an AppSpec and a link climbing out of
/// `top` into the deployment directory (where bundle.tar links to the
/// operator's bundle file).
fn stripped_escape_tar(sb: &Sandbox, dest: &Path) -> PathBuf {
    let appspec = format!("{}hooks:\n  BeforeInstall:\n    - location: s\n", spec(&[("app", dest)]));
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        builder.append_data(&mut h, name, data).unwrap();
    };
    add("top/", tar::EntryType::Directory, b"", None);
    add("top/appspec.yml", tar::EntryType::Regular, appspec.as_bytes(), None);
    add("top/app/a.txt", tar::EntryType::Regular, b"a", None);
    add("top/s", tar::EntryType::Symlink, b"", Some("../bundle.tar"));
    let path = sb.path("stripped.tar");
    fs::write(&path, builder.into_inner().unwrap()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn link_leaving_the_stripped_top_directory_is_refused_and_nothing_is_left() {
    let sb = Sandbox::new("strip-escape");
    let dest = sb.path("dest");
    let tar = stripped_escape_tar(&sb, &dest);
    let out = sb.deploy(&["-l", tar.to_str().unwrap(), "-t", "tar"]);
    assert_failed_with(&out, &["DownloadBundle", "top/s", "symlink target leaves the archive"]);
    assert_eq!(mode(&tar), 0o644, "the operator's bundle was made executable");
    let partials: Vec<String> = tree(&sb.root()).into_iter().filter(|p| p.contains("partial")).collect();
    assert!(partials.is_empty(), "a refused DownloadBundle left its partial tree: {partials:?}");
    assert!(!dest.exists());
}

#[test]
fn hook_location_behind_a_link_out_of_the_revision_is_never_chmodded() {
    let sb = Sandbox::new("hook-link");
    sb.write_config("allow_external_symlinks: true\n");
    let outside = sb.path("outside.sh");
    fs::write(&outside, "#!/bin/sh\necho ran > /dev/null\n").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
    let dest = sb.path("dest");
    let appspec = format!("{}hooks:\n  BeforeInstall:\n    - location: scripts/run.sh\n", spec(&[("app", &dest)]));
    let b = bundle(&sb, "b", &appspec, &[("app/a", "a")], &[("scripts/run.sh", outside.to_str().unwrap())]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["BeforeInstall", "scripts/run.sh", "leaves the deployment archive"]);
    assert_eq!(mode(&outside), 0o644, "a file outside the revision was made executable");
}

#[test]
fn two_mappings_of_one_source_count_twice_against_max_install_bytes() {
    let sb = Sandbox::new("install-budget");
    sb.write_config("max_install_bytes: 150000\n");
    let big = "x".repeat(100_000);
    let dest = sb.path("dest");
    let appspec = spec(&[("app", &dest.join("one")), ("app", &dest.join("two"))]);
    let b = bundle(&sb, "b", &appspec, &[("app/big", &big)], &[]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["Install", "max_install_bytes allows 150000"]);
    assert!(!dest.exists(), "a refused install changed the destination");
    sb.write_config("max_install_bytes: 200000\n");
    assert_success(&deploy(&sb, &b));
}
