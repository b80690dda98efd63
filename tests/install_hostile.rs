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

#[test]
fn many_mappings_of_empty_files_count_against_max_unpacked_entries() {
    // Empty files cost no bytes; mapped twenty times they still cost inodes.
    let sb = Sandbox::new("install-entries");
    sb.write_config("max_unpacked_entries: 100\n");
    let dest = sb.path("dest");
    let files: Vec<(String, &str)> = (0..10).map(|i| (format!("app/e{i}"), "")).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let targets: Vec<PathBuf> = (0..20).map(|i| dest.join(format!("copy{i}"))).collect();
    let mappings: Vec<(&str, &Path)> = targets.iter().map(|t| ("app", t.as_path())).collect();
    let b = bundle(&sb, "b", &spec(&mappings), &files, &[]);
    let out = deploy(&sb, &b);
    assert_failed_with(
        &out,
        &["Install", "creates 220 files, links and directories", "max_unpacked_entries allows 100"],
    );
    assert!(!dest.exists(), "a refused install changed the destination");
}

#[test]
fn retained_path_is_checked_as_it_is_on_disk() {
    // RETAIN keeps a link someone planted at x; the revision's y -> x/precious.txt
    // then leads through it to the victim: refused.
    let sb = Sandbox::new("retain-link");
    let victim = victim(&sb);
    let dest = sb.path("dest");
    fs::create_dir_all(&dest).unwrap();
    symlink(&victim, dest.join("x")).unwrap();
    let appspec = format!("{}file_exists_behavior: RETAIN\n", spec(&[("app", &dest)]));
    let b = bundle(&sb, "b", &appspec, &[("app/x", "mine")], &[("app/y", "x/precious.txt")]);
    let out = deploy(&sb, &b);
    assert_failed_with(&out, &["app/y", "outside the destination"]);
    assert!(fs::symlink_metadata(dest.join("y")).is_err());
}

#[test]
fn deep_link_chains_named_by_many_mappings_stop_at_the_step_budget() {
    // 39 chained links, each climbing 400 levels down and up again, named by
    // 200 mappings: the resolution work is bounded for the whole install.
    let sb = Sandbox::new("link-work");
    let dest = sb.path("dest");
    let deep = format!("{}{}", "x/".repeat(400), "../".repeat(400));
    let names: Vec<String> = (1..=40).map(|i| format!("l{i}")).collect();
    let targets: Vec<String> = (1..40).map(|i| format!("{deep}l{}", i + 1)).collect();
    let mut links: Vec<(&str, &str)> =
        names[..39].iter().map(String::as_str).zip(targets.iter().map(String::as_str)).collect();
    links.push(("l40", "real"));
    let mappings: Vec<(&str, &Path)> = (0..200).map(|_| ("l1/f", dest.as_path())).collect();
    let b = bundle(&sb, "b", &spec(&mappings), &[("real/f", "f")], &links);
    let started = std::time::Instant::now();
    let out = deploy(&sb, &b);
    eprintln!("refused after {:?}", started.elapsed());
    assert_failed_with(&out, &["files[", "too many or too deep symbolic links to check"]);
    assert!(!dest.exists());
}

#[test]
fn acls_are_set_on_the_open_file_not_through_a_swapped_path() {
    use edgedeploy::install::permissions::{Resolved, Settings};
    if std::process::Command::new("setfacl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "setfacl (Debian package acl) is needed by this test");
        eprintln!("skipped: setfacl is not installed");
        return;
    }
    let sb = Sandbox::new("acl-fd");
    let victim = victim(&sb);
    let staged = sb.path("staged");
    fs::write(&staged, "mine").unwrap();
    let file = fs::File::open(&staged).unwrap();
    // The staged file is moved away and a link to the victim takes its name.
    fs::rename(&staged, sb.path("moved")).unwrap();
    symlink(victim.join("precious.txt"), &staged).unwrap();
    let acls = vec!["u:nobody:rw".to_string()];
    let settings = Settings { uid: None, gid: None, mode: None, acls: &acls };
    Resolved::apply(&staged, &settings, &file).expect("setfacl on the descriptor");
    let getfacl = |p: &Path| {
        let out = std::process::Command::new("getfacl").arg("-p").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(getfacl(&sb.path("moved")).contains("user:nobody:rw-"), "the ACL went to the open file");
    assert!(!getfacl(&victim.join("precious.txt")).contains("nobody"), "the ACL went through the link");
}

#[test]
fn an_agent_that_is_not_root_installs_through_search_only_directories() {
    // Walking a destination's parents needs search permission only, as the
    // kernel's own walk does: a 0711 directory must not stop a non-root agent.
    use std::os::unix::fs::chown;
    let root_user = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let setpriv = std::process::Command::new("setpriv").arg("--version").output().is_ok();
    if !root_user || !setpriv {
        assert!(std::env::var_os("CI").is_none(), "this test needs root and setpriv (util-linux)");
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let sb = Sandbox::new("search-only");
    let nobody = 65534;
    let dest = sb.path("dest");
    fs::create_dir_all(&dest).unwrap();
    chown(&dest, Some(nobody), Some(nobody)).unwrap();
    fs::create_dir_all(sb.root()).unwrap();
    chown(sb.root(), Some(nobody), Some(nobody)).unwrap();
    let b = bundle(&sb, "b", &spec(&[("app", &dest.join("app"))]), &[("app/a.txt", "a")], &[]);
    fs::set_permissions(&sb.dir, fs::Permissions::from_mode(0o711)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT, "deploy-local", "-c"])
        .arg(sb.config())
        .arg("-l")
        .arg(&b)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(sb.read("dest/app/a.txt"), "a");
}
