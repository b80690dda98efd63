//! End-to-end tests of `edgedeploy-agent deploy-local`: real processes,
//! real files, each test in its own sandbox.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// An AppSpec installing `app/` into `dest` with a recording hook per event.
fn appspec(dest: &Path, extra: &str) -> String {
    let mut text = format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n", dest.display());
    text.push_str(extra);
    text.push_str("hooks:\n");
    for event in ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"] {
        text.push_str(&format!("  {event}:\n    - location: scripts/hook.sh\n      timeout: 30\n"));
    }
    text
}

fn revision(sb: &Sandbox, name: &str, files: &[(&str, &str)], extra: &str) -> std::path::PathBuf {
    let dest = sb.path("dest");
    let spec = appspec(&dest, extra);
    let hook = recording_hook(&sb.path("events.log"), name);
    let mut all: Vec<(&str, &str)> = vec![("appspec.yml", &spec), ("scripts/hook.sh", &hook)];
    all.extend_from_slice(files);
    sb.bundle(name, &all)
}

fn events_logged(sb: &Sandbox) -> Vec<String> {
    let text = fs::read_to_string(sb.path("events.log")).unwrap_or_default();
    text.lines().map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn first_deployment_installs_files_and_runs_hooks_in_order_without_application_stop() {
    let sb = Sandbox::new("first");
    let v1 = revision(&sb, "v1", &[("app/a.txt", "A1"), ("app/sub/b.txt", "B1")], "");
    let id = sb.deploy_ok(&v1, &[]);
    assert_eq!(sb.read("dest/a.txt"), "A1");
    assert_eq!(sb.read("dest/sub/b.txt"), "B1");
    assert_eq!(
        events_logged(&sb),
        ["v1 BeforeInstall", "v1 AfterInstall", "v1 ApplicationStart", "v1 ValidateService"]
    );
    let group = sb.root().join("default-local-deployment-group");
    assert!(id.starts_with("d-") && id.ends_with("-local"), "{id}");
    assert!(group.join(&id).join("deployment-archive/appspec.yml").is_file());
    assert!(group.join(&id).join("logs/scripts.log").is_file());
    let instructions = sb.root().join("deployment-instructions");
    let last = fs::read_to_string(instructions.join("default-local-deployment-group_last_successful_install")).unwrap();
    assert_eq!(Path::new(&last), group.join(&id));
    let recent = fs::read_to_string(instructions.join("default-local-deployment-group_most_recent_install")).unwrap();
    assert_eq!(recent, last);
    let dest = sb.path("dest");
    let expected: Vec<String> =
        ["", "/a.txt", "/sub", "/sub/b.txt"].iter().map(|s| format!("{}{s}", dest.display())).collect();
    assert_eq!(sb.cleanup_list("default-local-deployment-group"), expected);
    let scripts_log = fs::read_to_string(group.join(&id).join("logs/scripts.log")).unwrap();
    assert!(scripts_log.contains("LifecycleEvent - BeforeInstall"), "{scripts_log}");
    assert!(sb.root().join("deployment-logs/edgedeploy-deployments.log").is_file());
}

#[test]
fn second_deployment_runs_application_stop_from_the_first_revision() {
    let sb = Sandbox::new("appstop");
    let v1 = revision(&sb, "v1", &[("app/a.txt", "A1")], "");
    let v2 = revision(&sb, "v2", &[("app/a.txt", "A2")], "");
    sb.deploy_ok(&v1, &[]);
    fs::remove_file(sb.path("events.log")).unwrap();
    sb.deploy_ok(&v2, &[]);
    assert_eq!(
        events_logged(&sb),
        ["v1 ApplicationStop", "v2 BeforeInstall", "v2 AfterInstall", "v2 ApplicationStart", "v2 ValidateService"]
    );
    assert_eq!(sb.read("dest/a.txt"), "A2");
}

#[test]
fn files_dropped_from_the_revision_are_removed_with_their_directories() {
    let sb = Sandbox::new("cleanup");
    let v1 = revision(&sb, "v1", &[("app/keep.txt", "1"), ("app/old/gone.txt", "x")], "");
    let v2 = revision(&sb, "v2", &[("app/keep.txt", "2")], "");
    sb.deploy_ok(&v1, &[]);
    fs::write(sb.path("dest/not-ours.txt"), "mine").unwrap();
    sb.deploy_ok(&v2, &[]);
    assert_eq!(tree(&sb.path("dest")), ["keep.txt", "not-ours.txt"]);
    assert!(!sb.path("dest/old").exists());
    assert_eq!(sb.read("dest/not-ours.txt"), "mine");
}

#[test]
fn disallow_conflict_fails_before_anything_changes() {
    let sb = Sandbox::new("disallow");
    let v1 = revision(&sb, "v1", &[("app/a.txt", "A1"), ("app/b.txt", "B1")], "");
    let v2 = revision(&sb, "v2", &[("app/a.txt", "A2"), ("app/c.txt", "C2")], "");
    sb.deploy_ok(&v1, &[]);
    fs::write(sb.path("dest/c.txt"), "unmanaged").unwrap();
    let cleanup_before = sb.cleanup_list("default-local-deployment-group");
    let out = sb.deploy(&["-l", v2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("failed in lifecycle event Install: UnknownError"), "{err}");
    assert!(err.contains(&sb.path("dest/c.txt").display().to_string()), "{err}");
    assert_eq!(sb.read("dest/a.txt"), "A1");
    assert_eq!(sb.read("dest/b.txt"), "B1");
    assert_eq!(sb.read("dest/c.txt"), "unmanaged");
    assert_eq!(sb.cleanup_list("default-local-deployment-group"), cleanup_before);
    assert!(tree(&sb.path("dest")).iter().all(|p| !p.contains(".edgedeploy-tmp.")));
}

#[test]
fn overwrite_option_replaces_and_takes_over_existing_files() {
    let sb = Sandbox::new("overwrite");
    fs::create_dir_all(sb.path("dest")).unwrap();
    fs::write(sb.path("dest/a.txt"), "old").unwrap();
    let v1 = revision(&sb, "v1", &[("app/a.txt", "new")], "");
    sb.deploy_ok(&v1, &["-b", "OVERWRITE"]);
    assert_eq!(sb.read("dest/a.txt"), "new");
    assert!(sb.cleanup_list("default-local-deployment-group").contains(&sb.path("dest/a.txt").display().to_string()));
}

#[test]
fn retain_option_keeps_existing_files() {
    let sb = Sandbox::new("retain");
    fs::create_dir_all(sb.path("dest")).unwrap();
    fs::write(sb.path("dest/a.txt"), "old").unwrap();
    let v1 = revision(&sb, "v1", &[("app/a.txt", "new"), ("app/b.txt", "b")], "");
    sb.deploy_ok(&v1, &["--file-exists-behavior", "RETAIN"]);
    assert_eq!(sb.read("dest/a.txt"), "old");
    assert_eq!(sb.read("dest/b.txt"), "b");
    assert!(!sb.cleanup_list("default-local-deployment-group").contains(&sb.path("dest/a.txt").display().to_string()));
}

#[test]
fn appspec_file_exists_behavior_wins_over_the_option() {
    let sb = Sandbox::new("precedence");
    fs::create_dir_all(sb.path("dest")).unwrap();
    fs::write(sb.path("dest/a.txt"), "old").unwrap();
    let retain = revision(&sb, "retain", &[("app/a.txt", "new")], "file_exists_behavior: RETAIN\n");
    sb.deploy_ok(&retain, &["-b", "OVERWRITE"]);
    assert_eq!(sb.read("dest/a.txt"), "old");

    let sb = Sandbox::new("precedence2");
    fs::create_dir_all(sb.path("dest")).unwrap();
    fs::write(sb.path("dest/a.txt"), "old").unwrap();
    let overwrite = revision(&sb, "overwrite", &[("app/a.txt", "new")], "file_exists_behavior: OVERWRITE\n");
    sb.deploy_ok(&overwrite, &["-b", "DISALLOW"]);
    assert_eq!(sb.read("dest/a.txt"), "new");
}

#[test]
fn permissions_apply_by_pattern_except_and_type_to_installed_objects_only() {
    let sb = Sandbox::new("perms");
    fs::create_dir_all(sb.path("dest")).unwrap();
    let dest = sb.path("dest");
    let extra = format!(
        "file_exists_behavior: OVERWRITE\npermissions:\n  - object: {d}\n    pattern: \"*.sh\"\n    except: [\"skip.sh\"]\n    mode: 750\n    type: [file]\n  - object: {d}\n    pattern: \"**\"\n    mode: 0700\n    type: [directory]\n  - object: {d}/data.txt\n    owner: nobody\n    mode: \"0640\"\n",
        d = dest.display()
    );
    let v1 = revision(
        &sb,
        "v1",
        &[
            ("app/run.sh", "#!/bin/sh\n"),
            ("app/skip.sh", "#!/bin/sh\n"),
            ("app/conf/x.txt", "x"),
            ("app/data.txt", "d"),
        ],
        &extra,
    );
    fs::set_permissions(v1.join("app/conf/x.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    sb.deploy_ok(&v1, &[]);
    assert_eq!(mode(&dest.join("run.sh")), 0o750);
    assert_eq!(mode(&dest.join("skip.sh")), 0o755, "except keeps the bundle's mode");
    assert_eq!(mode(&dest.join("conf")), 0o700);
    assert_eq!(mode(&dest.join("conf/x.txt")), 0o644, "type: [directory] leaves files alone");
    assert_eq!(mode(&dest.join("data.txt")), 0o640);
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout).trim().parse().unwrap();
    assert_eq!(fs::metadata(dest.join("data.txt")).unwrap().uid(), nobody);
    assert_eq!(mode(&dest), 0o755, "the existing destination directory is not ours: untouched");
}

#[test]
fn failing_hook_exits_1_with_event_code_message_and_output_tail() {
    let sb = Sandbox::new("hookfail");
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n  AfterInstall:\n    - location: scripts/fail.sh\n",
        sb.path("dest").display()
    );
    let bundle = sb.bundle(
        "v1",
        &[
            ("appspec.yml", &spec),
            ("app/a", "a"),
            ("scripts/fail.sh", "#!/bin/sh\necho preparing\necho broken >&2\nexit 3\n"),
        ],
    );
    let out = sb.deploy(&["-l", bundle.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let first = err.lines().next().unwrap();
    assert!(first.starts_with("error: deployment d-"), "{err}");
    assert!(first.contains("failed in lifecycle event AfterInstall: ScriptFailed:"), "{err}");
    assert!(first.contains("scripts/fail.sh") && first.contains("exit code 3"), "{err}");
    assert!(err.contains("preparing") && err.contains("broken"), "{err}");
    let status = Command::new(AGENT).args(["status", "-c"]).arg(sb.config()).output().unwrap();
    let status = stdout(&status);
    assert!(status.contains("Failed at AfterInstall"), "{status}");
}

#[test]
fn events_option_runs_listed_events_after_download_and_install() {
    let sb = Sandbox::new("events");
    let v1 = revision(&sb, "v1", &[("app/a", "a")], "");
    sb.deploy_ok(&v1, &["-e", "ValidateService,BeforeInstall"]);
    assert_eq!(events_logged(&sb), ["v1 ValidateService", "v1 BeforeInstall"]);
    assert_eq!(sb.read("dest/a"), "a");
    let out = sb.deploy(&["-l", v1.to_str().unwrap(), "-e", "Validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown lifecycle event \"Validate\""), "{}", stderr(&out));
}

#[test]
fn hook_environment_carries_deployment_identity() {
    let sb = Sandbox::new("env");
    let spec = "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: env.sh\n";
    let script = format!(
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT|$DEPLOYMENT_ID|$APPLICATION_NAME|$DEPLOYMENT_GROUP_NAME|$DEPLOYMENT_GROUP_ID|$BUNDLE_TYPE\" > {}\n",
        sb.path("env.out").display()
    );
    let bundle = sb.bundle("v1", &[("appspec.yml", spec), ("env.sh", &script)]);
    let id = sb.deploy_ok(&bundle, &["-a", "shop", "-d", "Edge", "-g", "g-123"]);
    assert_eq!(sb.read("env.out").trim(), format!("BeforeInstall|{id}|shop|Edge|g-123|directory"));
}

#[test]
fn tgz_bundle_with_a_single_top_directory_is_stripped() {
    let sb = Sandbox::new("tgz");
    let spec =
        format!("version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: {}\n", sb.path("dest").display());
    let bundle = sb.bundle("src/myapp-1.0", &[("appspec.yml", &spec), ("bin/tool", "tool")]);
    let tgz = sb.path("myapp.tgz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(bundle.parent().unwrap())
        .arg("myapp-1.0")
        .status()
        .unwrap();
    assert!(status.success());
    let out = sb.deploy(&["-l", tgz.to_str().unwrap(), "-t", "tgz"]);
    assert_success(&out);
    assert_eq!(sb.read("dest/bin/tool"), "tool");
    assert!(sb.path("dest/appspec.yml").is_file());
    // The same file declared as plain tar: gzip is detected by its magic bytes.
    let again = sb.deploy(&["-l", tgz.to_str().unwrap(), "--type", "tar"]);
    assert_success(&again);
    let id = deployment_id(&again);
    let link = sb.root().join("default-local-deployment-group").join(id).join("bundle.tar");
    assert_eq!(fs::read_link(link).unwrap(), tgz);
}

#[test]
fn hostile_bundle_is_refused_at_download_and_nothing_is_installed() {
    let sb = Sandbox::new("hostile");
    let spec =
        format!("version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: {}\n", sb.path("dest").display());
    let bundle = sb.bundle("v1", &[("appspec.yml", &spec)]);
    std::os::unix::fs::symlink("/etc", bundle.join("escape")).unwrap();
    let tar = sb.path("evil.tar");
    let status = Command::new("tar").arg("cf").arg(&tar).arg("-C").arg(&bundle).arg(".").status().unwrap();
    assert!(status.success());
    let out = sb.deploy(&["-l", tar.to_str().unwrap(), "-t", "tar"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("lifecycle event DownloadBundle") && err.contains("escape"), "{err}");
    assert!(!sb.path("dest").exists());
}

#[test]
fn retention_keeps_max_revisions_and_the_last_successful_one() {
    let sb = Sandbox::new("retention");
    sb.write_config("max_revisions: 2\n");
    let good = revision(&sb, "good", &[("app/a", "a")], "");
    let bad_spec = "version: 0.0\nos: linux\nfiles:\n  - source: missing\n    destination: /nonexistent-edgedeploy\n";
    let bad = sb.bundle("bad", &[("appspec.yml", bad_spec)]);
    let good_id = sb.deploy_ok(&good, &[]);
    for _ in 0..3 {
        let out = sb.deploy(&["-l", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    let group = sb.root().join("default-local-deployment-group");
    let mut left: Vec<String> =
        fs::read_dir(&group).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left.len(), 3, "two newest plus the last successful: {left:?}");
    assert!(left.contains(&good_id), "{left:?}");
}

#[test]
fn bad_options_exit_2_without_deploying() {
    let sb = Sandbox::new("usage");
    let v1 = revision(&sb, "v1", &[("app/a", "a")], "");
    for args in [
        vec!["-l", v1.to_str().unwrap(), "-b", "SOMETIMES"],
        vec!["-l", v1.to_str().unwrap(), "-t", "rar"],
        vec!["-l", v1.to_str().unwrap(), "-g", "../escape"],
        vec!["-l", "/nonexistent/bundle"],
        vec!["-l", v1.to_str().unwrap(), "-t", "tgz"],
        vec!["-l", v1.to_str().unwrap(), "--bogus"],
        vec!["-l"],
    ] {
        let out = sb.deploy(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
    assert!(!sb.path("dest").exists());
}

#[test]
fn invalid_config_value_stops_with_key_and_value() {
    let sb = Sandbox::new("badconfig");
    sb.write_config("max_revisions: lots\n");
    let v1 = revision(&sb, "v1", &[("app/a", "a")], "");
    let out = sb.deploy(&["-l", v1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_revisions: lots"), "{}", stderr(&out));
}
