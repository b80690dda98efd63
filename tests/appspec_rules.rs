//! AppSpec rules through the public API: one accepted and one refused case
//! per rule, error messages naming the key and the value, the documented
//! permission examples, and loading from a revision directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgedeploy::appspec::{
    AppSpec, FileExistsBehavior, FileMapping, LifecycleEvent, MAX_APPSPEC_SIZE, ObjectType, Permission,
};

const HEAD: &str = "version: 0.0\nos: linux\n";

fn parse(body: &str) -> AppSpec {
    let text = format!("{HEAD}{body}");
    match AppSpec::parse(&text) {
        Ok(spec) => spec,
        Err(e) => panic!("expected {text:?} to parse, got: {e}"),
    }
}

fn refuse(body: &str) -> String {
    refuse_text(&format!("{HEAD}{body}"))
}

fn refuse_text(text: &str) -> String {
    match AppSpec::parse(text) {
        Ok(spec) => panic!("expected {text:?} to be refused, got {spec:?}"),
        Err(e) => without_line(e.message),
    }
}

/// The message without its trailing ` (line N)` (checked by
/// `validation_errors_give_the_line_of_the_offending_key`).
fn without_line(message: String) -> String {
    match message.rsplit_once(" (line ") {
        Some((head, tail)) if tail.strip_suffix(')').is_some_and(|n| n.parse::<usize>().is_ok()) => head.to_string(),
        _ => message,
    }
}

fn assert_starts(message: &str, prefix: &str) {
    assert!(message.starts_with(prefix), "message {message:?} does not start with {prefix:?}");
}

fn assert_has(message: &str, part: &str) {
    assert!(message.contains(part), "message {message:?} does not contain {part:?}");
}

// ---------------------------------------------------------------- version, os

#[test]
fn version_accepts_float_string_and_zero() {
    for v in ["0.0", "\"0.0\"", "'0.0'", "0"] {
        let text = format!("version: {v}\nos: linux\n");
        assert!(AppSpec::parse(&text).is_ok(), "version {v}");
    }
}

#[test]
fn version_refuses_others_and_absence() {
    assert_eq!(refuse_text("version: 1.0\nos: linux\n"), "version: 1.0 is not supported (write version: 0.0)");
    assert_eq!(refuse_text("version: \"0.1\"\nos: linux\n"), "version: \"0.1\" is not supported (write version: 0.0)");
    assert_eq!(refuse_text("os: linux\n"), "version: missing (write version: 0.0)");
}

#[test]
fn os_must_be_linux() {
    assert!(AppSpec::parse(HEAD).is_ok());
    assert_eq!(
        refuse_text("version: 0.0\nos: windows\n"),
        "os: \"windows\" is not supported: edgedeploy-agent runs on Linux only"
    );
    assert_eq!(refuse_text("version: 0.0\nos: Linux\n"), "os: \"Linux\" is not supported (write os: linux)");
    assert_eq!(refuse_text("version: 0.0\n"), "os: missing (write os: linux)");
}

// ---------------------------------------------------------------- top level

#[test]
fn unknown_top_level_keys_are_refused_by_name() {
    assert_starts(&refuse("colour: blue\n"), "colour: unknown top-level key (expected one of: version, os,");
    assert_eq!(refuse("Hooks: {}\n"), "Hooks: unknown key (keys are lowercase: hooks)");
    assert_eq!(
        refuse("resources:\n  - myFunction: {}\n"),
        "resources: not supported for on-premises deployments (it describes Lambda and ECS deployments)"
    );
}

#[test]
fn empty_and_non_map_documents_are_refused() {
    assert_starts(&refuse_text(""), "the AppSpec is empty");
    assert_starts(&refuse_text("# only a comment\n"), "the AppSpec is empty");
    assert_eq!(refuse_text("- a\n- b\n"), "expected a map of AppSpec sections at the top level, found a list");
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let message = refuse("files:\n  - source: [a,\n    destination: /x\n");
    assert_starts(&message, "invalid YAML at line ");
    assert_has(&message, ", column ");
    let message = refuse("hooks:\n  AfterInstall:\n    - location: a\n   bad: indent\n");
    assert_starts(&message, "invalid YAML at line 6, column 4:");
}

#[test]
fn unquoted_star_gets_a_hint() {
    let message = refuse("permissions:\n  - object: /a\n    pattern: *.txt\n");
    assert_starts(&message, "invalid YAML at line 5");
    assert_has(&message, "must be quoted, e.g. pattern: \"*.txt\"");
}

#[test]
fn oversized_text_is_refused() {
    let mut text = HEAD.to_string();
    text.push_str(&format!("# {}\n", "x".repeat(MAX_APPSPEC_SIZE as usize)));
    assert_has(&refuse_text(&text), "more than the 1048576 allowed");
}

// ---------------------------------------------------------------- files

#[test]
fn files_are_normalized() {
    let spec = parse(
        "files:\n  - source: /\n    destination: /opt/app/\n  - source: /config/a.conf\n    destination: //etc/./app\n  - source: ./my-folder-1\n    destination: /tmp/my-app/my-folder-1\n",
    );
    assert_eq!(
        spec.files,
        vec![
            FileMapping { source: PathBuf::new(), destination: PathBuf::from("/opt/app") },
            FileMapping { source: PathBuf::from("config/a.conf"), destination: PathBuf::from("/etc/app") },
            FileMapping { source: PathBuf::from("my-folder-1"), destination: PathBuf::from("/tmp/my-app/my-folder-1") },
        ]
    );
}

#[test]
fn files_may_be_absent_or_null() {
    assert!(parse("").files.is_empty());
    assert!(parse("files:\n").files.is_empty());
}

#[test]
fn file_destination_must_be_absolute() {
    let message = refuse("files:\n  - source: a\n    destination: /ok\n  - source: b\n    destination: relative/dir\n");
    assert_eq!(message, "files[1].destination: \"relative/dir\" is not an absolute path");
}

#[test]
fn file_paths_must_not_climb() {
    assert_eq!(
        refuse("files:\n  - source: ../secret\n    destination: /x\n"),
        "files[0].source: \"../secret\" must not contain \"..\""
    );
    assert_eq!(
        refuse("files:\n  - source: a\n    destination: /opt/../etc\n"),
        "files[0].destination: \"/opt/../etc\" must not contain \"..\""
    );
}

#[test]
fn file_entries_need_both_keys_and_no_others() {
    assert_eq!(refuse("files:\n  - source: a\n"), "files[0]: missing required key \"destination\"");
    assert_eq!(refuse("files:\n  - destination: /a\n"), "files[0]: missing required key \"source\"");
    assert_eq!(
        refuse("files:\n  - source: a\n    destination: /a\n    dest: /b\n"),
        "files[0]: unknown key \"dest\" (expected one of: source, destination)"
    );
    assert_eq!(refuse("files:\n  - source: 12\n    destination: /a\n"), "files[0].source: expected a string, found 12");
    assert_eq!(refuse("files: /a\n"), "files: expected a list, found \"/a\"");
    assert_eq!(refuse("files:\n  - source: \"\"\n    destination: /a\n"), "files[0].source: must not be empty");
}

#[test]
fn file_exists_behavior_values() {
    assert_eq!(parse("file_exists_behavior: DISALLOW\n").file_exists_behavior, Some(FileExistsBehavior::Disallow));
    assert_eq!(parse("file_exists_behavior: OVERWRITE\n").file_exists_behavior, Some(FileExistsBehavior::Overwrite));
    assert_eq!(parse("file_exists_behavior: RETAIN\n").file_exists_behavior, Some(FileExistsBehavior::Retain));
    assert_eq!(parse("").file_exists_behavior, None);
    assert_eq!(
        refuse("file_exists_behavior: overwrite\n"),
        "file_exists_behavior: \"overwrite\" is not DISALLOW, OVERWRITE or RETAIN (write it in capitals: OVERWRITE)"
    );
    assert_eq!(
        refuse("file_exists_behavior: SKIP\n"),
        "file_exists_behavior: \"SKIP\" is not DISALLOW, OVERWRITE or RETAIN"
    );
}

// ---------------------------------------------------------------- permissions

fn permission(body: &str) -> Permission {
    let mut spec = parse(&format!("permissions:\n  - object: /srv/app\n{body}"));
    spec.permissions.remove(0)
}

fn refuse_permission(body: &str) -> String {
    refuse(&format!("permissions:\n  - object: /srv/app\n{body}"))
}

#[test]
fn permission_defaults() {
    let p = permission("");
    assert_eq!(p.object, PathBuf::from("/srv/app"));
    assert_eq!(p.pattern, "**");
    assert!(p.except.is_empty() && p.acls.is_empty() && p.types.is_empty());
    assert_eq!((p.owner, p.group, p.mode, p.context), (None, None, None, None));
}

#[test]
fn permission_object_is_required_and_absolute() {
    assert_eq!(refuse("permissions:\n  - owner: bob\n"), "permissions[0]: missing required key \"object\"");
    assert_eq!(
        refuse("permissions:\n  - object: srv/app\n"),
        "permissions[0].object: \"srv/app\" is not an absolute path"
    );
    assert_eq!(permission_object("/srv/app/"), PathBuf::from("/srv/app"));
}

fn permission_object(object: &str) -> PathBuf {
    parse(&format!("permissions:\n  - object: {object}\n")).permissions.remove(0).object
}

#[test]
fn permission_unknown_keys_are_refused() {
    assert_starts(
        &refuse_permission("    owners: bob\n"),
        "permissions[0]: unknown key \"owners\" (expected one of: object,",
    );
}

#[test]
fn permission_pattern_and_except() {
    let p = permission("    pattern: \"*.txt\"\n    except: [my-file-3.txt, /srv/app/keep.txt]\n");
    assert_eq!(p.pattern, "*.txt");
    assert_eq!(p.except, ["my-file-3.txt", "/srv/app/keep.txt"]);
    assert_eq!(refuse_permission("    pattern: \"\"\n"), "permissions[0].pattern: \"\" is not a valid pattern");
    assert_eq!(
        refuse_permission("    pattern: /srv/*.txt\n"),
        "permissions[0].pattern: \"/srv/*.txt\" must be relative to object"
    );
    assert_eq!(refuse_permission("    except: my-file\n"), "permissions[0].except: expected a list, found \"my-file\"");
    assert_eq!(refuse_permission("    except: [a, 3]\n"), "permissions[0].except[1]: expected a string, found 3");
}

#[test]
fn permission_owner_and_group_take_names_or_ids() {
    let p = permission("    owner: www-data\n    group: 1000\n");
    assert_eq!(p.owner.as_deref(), Some("www-data"));
    assert_eq!(p.group.as_deref(), Some("1000"));
    assert_eq!(
        refuse_permission("    owner: [a]\n"),
        "permissions[0].owner: expected a name or a numeric id, found a list"
    );
    assert_eq!(refuse_permission("    group: \"a b\"\n"), "permissions[0].group: \"a b\" is not a valid name");
}

#[test]
fn mode_spellings_all_mean_the_written_octal_digits() {
    for (spelling, mode) in [
        ("644", 0o644),
        ("0644", 0o644),
        ("\"0644\"", 0o644),
        ("'644'", 0o644),
        ("4755", 0o4755),
        ("\"2775\"", 0o2775),
        ("0755", 0o755),
        ("464", 0o464),
    ] {
        assert_eq!(permission(&format!("    mode: {spelling}\n")).mode, Some(mode), "mode: {spelling}");
    }
}

#[test]
fn bad_modes_are_refused_naming_key_and_value() {
    let cases = [
        ("0999", "permissions[0].mode: \"0999\" is not an octal mode"),
        ("999", "permissions[0].mode: 999 is not an octal mode"),
        ("-644", "permissions[0].mode: -644 is not an octal mode"),
        ("64", "permissions[0].mode: 64 is not an octal mode"),
        ("47555", "permissions[0].mode: 47555 is not an octal mode"),
        ("\"00644\"", "permissions[0].mode: \"00644\" is not an octal mode"),
        ("u+x", "permissions[0].mode: \"u+x\" is not an octal mode"),
        ("0o644", "permissions[0].mode: 0o644 is not an octal mode: write the octal digits without a prefix"),
    ];
    for (spelling, prefix) in cases {
        assert_starts(&refuse_permission(&format!("    mode: {spelling}\n")), prefix);
    }
}

#[test]
fn acls_are_checked_lightly() {
    let p = permission("    acls:\n      - u:mary:rw\n      - m::rw\n      - d:g:staff:rx\n");
    assert_eq!(p.acls, ["u:mary:rw", "m::rw", "d:g:staff:rx"]);
    assert_eq!(
        refuse_permission("    acls:\n      - u:mary:rw\n      - u::rw\n"),
        "permissions[0].acls[1]: \"u::rw\" is a base entry: set it with mode instead"
    );
    assert_starts(
        &refuse_permission("    acls:\n      - mary\n"),
        "permissions[0].acls[0]: \"mary\" is not an ACL entry",
    );
    assert_eq!(refuse_permission("    acls: u:mary:rw\n"), "permissions[0].acls: expected a list, found \"u:mary:rw\"");
}

#[test]
fn selinux_context() {
    let p = permission("    context:\n      user: unconfined_u\n      type: httpd_sys_content_t\n      range: s0\n");
    let c = p.context.expect("context");
    assert_eq!(
        (c.user.as_deref(), c.type_.as_str(), c.range.as_deref()),
        (Some("unconfined_u"), "httpd_sys_content_t", Some("s0"))
    );
    // `name` is what CodeDeploy's agent reads for the user.
    let c = permission("    context:\n      name: system_u\n      type: t\n").context.expect("context");
    assert_eq!(c.user.as_deref(), Some("system_u"));
    assert_eq!(
        refuse_permission("    context:\n      user: u\n"),
        "permissions[0].context: missing required key \"type\""
    );
    assert_starts(
        &refuse_permission("    context:\n      type: t\n      role: r\n"),
        "permissions[0].context: SELinux roles are not supported",
    );
    assert_starts(
        &refuse_permission("    context:\n      type: t\n      range: x9\n"),
        "permissions[0].context.range: \"x9\" is not",
    );
    assert_starts(
        &refuse_permission("    context:\n      type: t\n      level: s0\n"),
        "permissions[0].context: unknown key \"level\"",
    );
}

#[test]
fn permission_types() {
    assert_eq!(permission("    type:\n      - file\n").types, [ObjectType::File]);
    assert_eq!(permission("    type: [directory, file, file]\n").types, [ObjectType::Directory, ObjectType::File]);
    assert_eq!(
        refuse_permission("    type: [socket]\n"),
        "permissions[0].type[0]: \"socket\" is not file or directory"
    );
    assert_starts(&refuse_permission("    type: []\n"), "permissions[0].type: must list file, directory or both");
    assert_eq!(refuse_permission("    type: file\n"), "permissions[0].type: expected a list, found \"file\"");
}

// ------------------------------------------------- applies_to: the documented example

/// The AppSpec of CodeDeploy's 'permissions' section example.
const DOC_EXAMPLE: &str = r#"
permissions:
  - object: /tmp/my-app
    pattern: "*-3.txt"
    owner: adm
    group: wheel
    mode: 464
    type:
      - file
  - object: /tmp/my-app
    pattern: "*.txt"
    except: [my-file-3.txt]
    owner: ec2-user
    mode: 444
    type:
      - file
  - object: /tmp/my-app/my-folder-1
    pattern: "**"
    except: [my-file-4.txt, my-file-5.txt]
    owner: operator
    mode: 646
    type:
      - file
  - object: /tmp/my-app/my-folder-2
    pattern: "**"
    except: [my-file-8.txt]
    owner: ec2-user
    mode: 777
    type:
      - file
  - object: /tmp/my-app
    pattern: "*my-folder*"
    except: [tmp/my-app/my-folder-2/my-folder-3]
    owner: ec2-user
    mode: 555
    type:
      - directory
  - object: /tmp/my-app/my-folder-2
    group: wheel
    mode: 564
    type:
      - directory
"#;

#[test]
fn documented_permissions_example_gives_the_documented_result() {
    let spec = parse(DOC_EXAMPLE);
    // (path, is_dir, indexes of the entries that apply), from the
    // documented resulting permissions.
    let expected: [(&str, bool, &[usize]); 14] = [
        ("/tmp/my-app", true, &[]),
        ("/tmp/my-app/my-file-1.txt", false, &[1]),
        ("/tmp/my-app/my-file-2.txt", false, &[1]),
        ("/tmp/my-app/my-file-3.txt", false, &[0]),
        ("/tmp/my-app/my-folder-1", true, &[4]),
        ("/tmp/my-app/my-folder-1/my-file-4.txt", false, &[]),
        ("/tmp/my-app/my-folder-1/my-file-5.txt", false, &[]),
        ("/tmp/my-app/my-folder-1/my-file-6.txt", false, &[2]),
        ("/tmp/my-app/my-folder-2", true, &[4]),
        ("/tmp/my-app/my-folder-2/my-file-7.txt", false, &[3]),
        ("/tmp/my-app/my-folder-2/my-file-8.txt", false, &[]),
        ("/tmp/my-app/my-folder-2/my-file-9.txt", false, &[3]),
        ("/tmp/my-app/my-folder-2/my-folder-3", true, &[5]),
        ("/tmp/other/my-file-1.txt", false, &[]),
    ];
    for (path, is_dir, entries) in expected {
        let applying: Vec<usize> = spec
            .permissions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.applies_to(Path::new(path), is_dir))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(applying, entries, "{path}");
    }
    assert_eq!(spec.permissions[0].mode, Some(0o464));
}

#[test]
fn documented_acl_example_with_absolute_except() {
    let spec = parse(
        "permissions:\n  - object: /var/www/html/WordPress\n    pattern: \"**\"\n    except: [/var/www/html/WordPress/ReadMe.txt]\n    owner: bob\n    group: writers\n    mode: 644\n    acls:\n      - u:mary:rw\n      - u:sam:rw\n      - m::rw\n    context:\n      user: unconfined_u\n      type: httpd_sys_content_t\n      range: s0\n    type:\n      - file\n",
    );
    let p = &spec.permissions[0];
    assert!(p.applies_to(Path::new("/var/www/html/WordPress/index.php"), false));
    assert!(p.applies_to(Path::new("/var/www/html/WordPress/wp-content/a/b.php"), false));
    assert!(!p.applies_to(Path::new("/var/www/html/WordPress/ReadMe.txt"), false));
    assert!(!p.applies_to(Path::new("/var/www/html/WordPress/wp-content"), true));
}

#[test]
fn applies_to_edge_cases() {
    let p = permission("    pattern: \"**/*.conf\"\n    except: [\"old?.conf\"]\n");
    assert!(p.applies_to(Path::new("/srv/app/a.conf"), false));
    assert!(p.applies_to(Path::new("/srv/app/etc/a.conf"), false));
    assert!(p.applies_to(Path::new("/srv/app/./etc/a.conf/"), true));
    assert!(!p.applies_to(Path::new("/srv/app/old1.conf"), false));
    assert!(p.applies_to(Path::new("/srv/app/etc/old1.conf"), false));
    assert!(!p.applies_to(Path::new("/srv/application/a.conf"), false));
    assert!(!p.applies_to(Path::new("/srv/app/../app/a.conf"), false));
    assert!(!p.applies_to(Path::new("srv/app/a.conf"), false));
}

#[test]
fn file_objects_apply_to_themselves_only_without_narrowing() {
    let whole = parse("permissions:\n  - object: /etc/app.conf\n    mode: 600\n").permissions.remove(0);
    assert!(whole.applies_to(Path::new("/etc/app.conf"), false));
    assert!(!whole.applies_to(Path::new("/etc/app.conf"), true));
    assert!(whole.check_file_object().is_ok());
    let narrowed = parse("permissions:\n  - object: /etc/app.conf\n    pattern: \"*.conf\"\n").permissions.remove(0);
    assert!(!narrowed.applies_to(Path::new("/etc/app.conf"), false));
    assert_eq!(
        narrowed.check_file_object().err().map(|e| e.message).as_deref(),
        Some("permissions: object /etc/app.conf is a file, so pattern \"*.conf\" cannot apply (only \"**\")")
    );
    let dirs_only = parse("permissions:\n  - object: /etc/app.conf\n    type: [directory]\n").permissions.remove(0);
    assert!(!dirs_only.applies_to(Path::new("/etc/app.conf"), false));
}

// ---------------------------------------------------------------- hooks

#[test]
fn hooks_keep_order_and_defaults() {
    let spec = parse(
        "hooks:\n  ValidateService:\n    - location: scripts/check.sh\n  AfterInstall:\n    - location: scripts/a.sh\n      timeout: 180\n      runas: root\n    - location: /scripts/b.sh\n  ApplicationStart:\n  BeforeInstall: []\n",
    );
    let events: Vec<LifecycleEvent> = spec.hooks.iter().map(|(e, _)| *e).collect();
    assert_eq!(
        events,
        [
            LifecycleEvent::ValidateService,
            LifecycleEvent::AfterInstall,
            LifecycleEvent::ApplicationStart,
            LifecycleEvent::BeforeInstall
        ]
    );
    let after = spec.scripts(LifecycleEvent::AfterInstall);
    assert_eq!(after.len(), 2);
    assert_eq!(
        (after[0].location.as_str(), after[0].timeout, after[0].runas.as_deref()),
        ("scripts/a.sh", Duration::from_secs(180), Some("root"))
    );
    assert_eq!(
        (after[1].location.as_str(), after[1].timeout, after[1].runas.as_deref()),
        ("/scripts/b.sh", Duration::from_secs(3600), None)
    );
    assert!(spec.scripts(LifecycleEvent::ApplicationStart).is_empty());
    assert!(spec.scripts(LifecycleEvent::ApplicationStop).is_empty());
}

#[test]
fn unknown_events_are_refused_with_a_suggestion() {
    assert_eq!(
        refuse("hooks:\n  BeforeInstal:\n    - location: a.sh\n"),
        "hooks: unknown lifecycle event \"BeforeInstal\" (did you mean \"BeforeInstall\"?)"
    );
    assert_starts(
        &refuse("hooks:\n  Deploy: []\n"),
        "hooks: unknown lifecycle event \"Deploy\" (expected one of: BeforeBlockTraffic,",
    );
}

#[test]
fn agent_events_cannot_have_scripts() {
    assert_eq!(
        refuse("hooks:\n  Install:\n    - location: a.sh\n"),
        "hooks.Install: this event is reserved for the agent and cannot run scripts"
    );
    assert_eq!(
        refuse("hooks:\n  DownloadBundle:\n    - location: a.sh\n"),
        "hooks.DownloadBundle: this event is reserved for the agent and cannot run scripts"
    );
    assert_eq!(
        refuse("hooks:\n  AllowTraffic:\n    - location: a.sh\n"),
        "hooks.AllowTraffic: this event is reserved for the agent and cannot run scripts"
    );
    assert!(parse("hooks:\n  Install: []\n  DownloadBundle:\n  BlockTraffic: []\n").hooks.is_empty());
}

#[test]
fn scripts_are_checked() {
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - timeout: 5\n"),
        "hooks.AfterInstall[0]: missing required key \"location\""
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      sudo: true\n"),
        "hooks.AfterInstall[0]: unknown key \"sudo\" (expected one of: location, timeout, runas)"
    );
    assert_starts(
        &refuse("hooks:\n  AfterInstall:\n    - a.sh\n"),
        "hooks.AfterInstall[0]: expected a map with location, found \"a.sh\"",
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: ../../bin/sh\n"),
        "hooks.AfterInstall[0].location: \"../../bin/sh\" must not contain \"..\""
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    location: a.sh\n"),
        "hooks.AfterInstall: expected a list, found a map"
    );
    assert_eq!(
        refuse("hooks:\n  - BeforeInstall: fn\n"),
        "hooks: expected a map from lifecycle event to scripts, found a list (the list form is for Lambda and ECS deployments)"
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      runas: \"\"\n"),
        "hooks.AfterInstall[0].runas: must not be empty"
    );
}

#[test]
fn timeouts_are_bounded_by_the_hour() {
    assert_eq!(
        parse("hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 3600\n").hooks[0].1[0].timeout,
        Duration::from_secs(3600)
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 7200\n"),
        "hooks.AfterInstall[0].timeout: 7200 is more than 3600 seconds, the most CodeDeploy allows for a lifecycle event"
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 0\n"),
        "hooks.AfterInstall[0].timeout: 0 is not a timeout: give at least 1 second"
    );
    assert_eq!(
        refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 1.5\n"),
        "hooks.AfterInstall[0].timeout: 1.5 is not a whole number of seconds"
    );
    assert_eq!(
        refuse(
            "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 3000\n    - location: b.sh\n      timeout: 1000\n"
        ),
        "hooks.AfterInstall: the timeouts add up to 4000 s, more than the 3600 s CodeDeploy allows for one lifecycle event"
    );
    // Only written timeouts count toward the sum (the docs' wording).
    let spec = parse("hooks:\n  AfterInstall:\n    - location: a.sh\n    - location: b.sh\n");
    assert_eq!(spec.hooks[0].1.len(), 2);
}

// ---------------------------------------------------------------- a realistic AppSpec

#[test]
fn realistic_appspec() {
    let spec = parse(
        r#"# Deploys the gateway service.
files:
  - source: /build/gateway
    destination: /opt/gateway/bin
  - source: config/gateway.toml
    destination: /etc/gateway
  - source: systemd/
    destination: /etc/systemd/system/
file_exists_behavior: OVERWRITE
permissions:
  - object: /opt/gateway
    owner: gateway
    group: gateway
    mode: 0755
    type: [directory]
  - object: /opt/gateway/bin
    pattern: "*"
    owner: root
    mode: 755
    type: [file]
  - object: /etc/gateway
    pattern: "*.toml"
    except: ["*.local.toml"]
    owner: root
    group: gateway
    mode: "0640"
    acls:
      - u:monitor:r
hooks:
  ApplicationStop:
    - location: scripts/stop.sh
      timeout: 60
  BeforeInstall:
    - location: scripts/backup.sh
      timeout: 300
      runas: gateway
  AfterInstall:
    - location: scripts/migrate.sh
      timeout: 900
    - location: scripts/reload-units.sh
      timeout: 30
  ApplicationStart:
    - location: scripts/start.sh
      timeout: 120
  ValidateService:
    - location: scripts/health.sh
      timeout: 120
"#,
    );
    assert_eq!(spec.files.len(), 3);
    assert_eq!(spec.files[2].source, PathBuf::from("systemd"));
    assert_eq!(spec.files[2].destination, PathBuf::from("/etc/systemd/system"));
    assert_eq!(spec.file_exists_behavior, Some(FileExistsBehavior::Overwrite));
    let modes: Vec<Option<u32>> = spec.permissions.iter().map(|p| p.mode).collect();
    assert_eq!(modes, [Some(0o755), Some(0o755), Some(0o640)]);
    let conf = &spec.permissions[2];
    assert!(conf.applies_to(Path::new("/etc/gateway/gateway.toml"), false));
    assert!(!conf.applies_to(Path::new("/etc/gateway/site.local.toml"), false));
    assert_eq!(spec.hooks.len(), 5);
    assert_eq!(spec.scripts(LifecycleEvent::AfterInstall)[1].timeout, Duration::from_secs(30));
    assert_eq!(spec.scripts(LifecycleEvent::BeforeInstall)[0].runas.as_deref(), Some("gateway"));
}

// ---------------------------------------------------------------- load

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("edgedeploy-appspec-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, content).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn load_error(dir: &Path, name: &str) -> String {
    match AppSpec::load(dir, name) {
        Ok(spec) => panic!("expected load of {name} to fail, got {spec:?}"),
        Err(e) => without_line(e.message),
    }
}

#[test]
fn load_reads_appspec_yml() {
    let dir = TempDir::new();
    dir.write("appspec.yml", b"version: 0.0\nos: linux\nfile_exists_behavior: RETAIN\n");
    dir.write("appspec.yaml", b"version: 0.0\nos: linux\n");
    let spec = AppSpec::load(&dir.0, "appspec.yml").expect("load");
    assert_eq!(spec.file_exists_behavior, Some(FileExistsBehavior::Retain));
}

#[test]
fn load_falls_back_to_appspec_yaml() {
    let dir = TempDir::new();
    dir.write("appspec.yaml", "\u{feff}version: 0.0\nos: linux\nfile_exists_behavior: RETAIN\n".as_bytes());
    let spec = AppSpec::load(&dir.0, "appspec.yml").expect("fallback");
    assert_eq!(spec.file_exists_behavior, Some(FileExistsBehavior::Retain));
}

#[test]
fn load_does_not_fall_back_for_other_names() {
    let dir = TempDir::new();
    dir.write("appspec.yaml", HEAD.as_bytes());
    let message = load_error(&dir.0, "custom.yml");
    assert_eq!(message, format!("{}: not found in the revision", dir.0.join("custom.yml").display()));
    let message = load_error(&TempDir::new().0, "appspec.yml");
    assert_has(&message, "the revision has no appspec.yml or appspec.yaml");
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new();
    let path = dir.write("appspec.yaml", b"version: 0.0\nos: linux\nhooks:\n  BeforeInstal: []\n");
    let message = load_error(&dir.0, "appspec.yml");
    assert_eq!(
        message,
        format!(
            "{}: hooks: unknown lifecycle event \"BeforeInstal\" (did you mean \"BeforeInstall\"?)",
            path.display()
        )
    );
    let path = dir.write("appspec.yml", b"version: 0.0\nos: [linux\n");
    assert_starts(&load_error(&dir.0, "appspec.yml"), &format!("{}: invalid YAML at line", path.display()));
}

#[test]
fn load_refuses_oversized_files() {
    let dir = TempDir::new();
    let mut big = HEAD.as_bytes().to_vec();
    big.resize(MAX_APPSPEC_SIZE as usize + 10, b'\n');
    let path = dir.write("appspec.yml", &big);
    assert_eq!(
        load_error(&dir.0, "appspec.yml"),
        format!("{}: is {} bytes, more than the 1048576 bytes an AppSpec may have", path.display(), big.len())
    );
}

#[test]
fn load_refuses_links_out_of_the_revision_and_non_files() {
    let outside = TempDir::new();
    let secret = outside.write("secret.yml", HEAD.as_bytes());
    let dir = TempDir::new();
    std::os::unix::fs::symlink(&secret, dir.0.join("appspec.yml")).expect("symlink");
    assert_has(&load_error(&dir.0, "appspec.yml"), "outside the revision");

    let inside = TempDir::new();
    inside.write("real.yml", HEAD.as_bytes());
    std::os::unix::fs::symlink("real.yml", inside.0.join("appspec.yml")).expect("symlink");
    assert!(AppSpec::load(&inside.0, "appspec.yml").is_ok());

    let with_dir = TempDir::new();
    fs::create_dir(with_dir.0.join("appspec.yml")).expect("mkdir");
    assert_has(&load_error(&with_dir.0, "appspec.yml"), "is not a regular file");

    assert_has(&load_error(&dir.0, "../appspec.yml"), "must be a relative path inside the revision");
}

#[test]
fn load_refuses_fifos_without_blocking() {
    let dir = TempDir::new();
    let fifo = dir.0.join("appspec.yml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if !made {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    assert_has(&load_error(&dir.0, "appspec.yml"), "is not a regular file");
}

#[test]
fn load_refuses_non_utf8() {
    let dir = TempDir::new();
    dir.write("appspec.yml", b"version: 0.0\nos: linux\n# \xff\xfe\n");
    assert_has(&load_error(&dir.0, "appspec.yml"), "is not UTF-8 text");
}

// ---------------------------------------------------------------- hostile YAML (issue 9, point 5)

#[test]
fn duplicate_keys_are_refused_at_the_line_of_the_second_key() {
    let message = refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n  BeforeInstall: []\n  AfterInstall: []\n");
    assert_starts(&message, "invalid YAML at line 7, column 3: hooks: duplicate key \"AfterInstall\"");
    let message = refuse("files:\n  - source: /\n    destination: /srv\n    source: /b\n");
    assert_starts(&message, "invalid YAML at line 6, column 5: files[0]: duplicate key \"source\"");
    let message = refuse_text("version: 0.0\nos: linux\nversion: 0.0\n");
    assert_starts(&message, "invalid YAML at line 3, column 1: duplicate key \"version\"");
}

#[test]
fn validation_errors_give_the_line_of_the_offending_key() {
    let line = |text: &str| AppSpec::parse(&format!("{HEAD}{text}")).err().map(|e| e.message).unwrap_or_default();
    let text = "files:\n  - source: a\n    destination: /srv\n  - source: b\n\n    destination: relative\n";
    assert_eq!(line(text), "files[1].destination: \"relative\" is not an absolute path (line 8)");
    let text = "permissions:\n  - object: /srv\n    mode: 0999\n";
    assert_starts(&line(text), "permissions[0].mode: \"0999\" is not an octal mode");
    assert!(line(text).ends_with(" (line 5)"), "{}", line(text));
    let text = "files:\n  - source: a\n    destination: /srv\n    sorce: b\n";
    assert_starts(&line(text), "files[0]: unknown key \"sorce\"");
    assert!(line(text).ends_with(" (line 6)"), "{}", line(text));
    let text = "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: 0\n";
    assert_eq!(line(text), "hooks.AfterInstall[0].timeout: 0 is not a timeout: give at least 1 second (line 6)");
    assert_eq!(line("Hooks: {}\n"), "Hooks: unknown key (keys are lowercase: hooks) (line 3)");
    let text = "hooks:\n  BeforeInstall: []\n  AfterInstal: []\n";
    assert_starts(&line(text), "hooks: unknown lifecycle event \"AfterInstal\"");
    assert!(line(text).ends_with(" (line 5)"), "{}", line(text));
    // No key to point at: no line.
    let missing = AppSpec::parse("version: 0.0\n").err().map(|e| e.message);
    assert_eq!(missing.as_deref(), Some("os: missing (write os: linux)"));
}

/// A YAML case built by name, parsed in a child process (see
/// `hostile_yaml_child`), which reports its peak memory and time.
fn hostile_yaml(case: &str) -> String {
    let size = MAX_APPSPEC_SIZE as usize - HEAD.len() - 16;
    let body = match case {
        // Deep flow nesting: quadratic time in libyaml without the pre-scan.
        "deep_flow" => format!("x: {}{}", "[".repeat(size / 2), "]".repeat(size / 2)),
        // Deep block nesting, as deep as the size cap allows.
        "deep_block" => {
            let mut text = "x:\n".to_string();
            let mut indent = 1;
            while text.len() + indent * 2 + 3 < size {
                text.push_str(&format!("{}- \n", " ".repeat(indent)));
                indent += 1;
            }
            text
        }
        // "Billion laughs": ten uses of the level below, nine levels.
        "alias_bomb" => {
            let mut text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
            for i in 1..10 {
                text.push_str(&format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); 10].join(", ")));
            }
            text
        }
        // One big anchored list used many times: few jumps, many values.
        "alias_wide" => {
            let mut text = format!("a: &a [{}]\nb: [", "x, ".repeat(40_000));
            text.push_str(&"*a, ".repeat(1000));
            text.push_str("]\n");
            text
        }
        // As many values as the size cap allows, no aliases.
        "many_values" => format!("x: [{}]\n", "1,".repeat(size / 2 - 4)),
        // Keys without values in a flow map: two events per ','.
        "implicit_nulls" => format!("x: {{{}}}\n", "a,".repeat(size / 2 - 4)),
        // Just under the pre-scan's bound: the most events it lets through.
        "most_events" => format!("x: {{{}}}\n", "a,".repeat(49_990)),
        "baseline" => String::new(),
        other => panic!("unknown case {other}"),
    };
    format!("{HEAD}{body}")
}

/// Run only by `hostile_yaml_is_refused_in_bounded_time_and_memory`, in a
/// child process of its own so that its peak memory can be read.
#[test]
#[ignore = "run as a child process by hostile_yaml_is_refused_in_bounded_time_and_memory"]
fn hostile_yaml_child() {
    let Ok(case) = std::env::var("APPSPEC_HOSTILE_CASE") else { return };
    let text = hostile_yaml(&case);
    let started = std::time::Instant::now();
    let result = AppSpec::parse(&text);
    let elapsed = started.elapsed();
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM").to_string();
    let message = result.err().map(|e| e.message).unwrap_or_else(|| "accepted".into());
    println!("RESULT\t{}\t{}\t{}", elapsed.as_millis(), hwm.split_whitespace().nth(1).unwrap_or("0"), message);
}

#[test]
fn hostile_yaml_is_refused_in_bounded_time_and_memory() {
    let exe = std::env::current_exe().expect("test binary");
    let baseline = child_run(&exe, "baseline");
    assert_eq!(baseline.2, "accepted");
    for (case, expected) in [
        ("deep_flow", "'[' and '{' in"),
        ("deep_block", "nested more than 32 levels deep"),
        ("alias_bomb", "invalid YAML at line"),
        ("alias_wide", "values (each use of an alias counts"),
        ("many_values", "lines and ',' ':' '-' '[' '{' '?' characters"),
        ("implicit_nulls", "lines and ',' ':' '-' '[' '{' '?' characters"),
        ("most_events", "duplicate key \"a\""),
    ] {
        let (millis, kib, message) = child_run(&exe, case);
        eprintln!("{case}: {millis} ms, VmHWM {kib} kB (baseline {} kB): {message}", baseline.1);
        assert!(message.contains(expected), "{case}: {message:?} does not contain {expected:?}");
        assert!(message.starts_with("invalid YAML at line "), "{case}: no line in {message:?}");
        // Debug build, shared CI cores: generous, but far below the
        // minutes (deep_flow) or gigabytes (alias cases) without the bounds.
        assert!(millis < 20_000, "{case} took {millis} ms");
        assert!(kib.saturating_sub(baseline.1) < 64 * 1024, "{case} peaked at {kib} kB");
    }
}

/// Runs `hostile_yaml_child` for `case`: (milliseconds, peak kB, message).
fn child_run(exe: &Path, case: &str) -> (u128, u64, String) {
    let out = std::process::Command::new(exe)
        .args(["--ignored", "--exact", "hostile_yaml_child", "--nocapture", "--test-threads=1"])
        .env("APPSPEC_HOSTILE_CASE", case)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let at = stdout.find("RESULT\t").unwrap_or_else(|| panic!("child: {stdout}"));
    let line = stdout[at..].lines().next().unwrap_or_default();
    let mut fields = line.splitn(4, '\t').skip(1);
    let millis = fields.next().and_then(|f| f.parse().ok()).expect("millis");
    let kib = fields.next().and_then(|f| f.parse().ok()).expect("kib");
    (millis, kib, fields.next().unwrap_or_default().to_string())
}

// ---------------------------------------------------------------- AppSpec values (issue 9, point 7)

#[test]
fn permission_ids_that_chown_takes_as_no_change_are_refused() {
    for (body, culprit) in [
        ("owner: -1", "permissions[0].owner: -1 is not a usable id"),
        ("owner: 4294967295", "permissions[0].owner: 4294967295 is not a usable id"),
        ("owner: \"4294967295\"", "permissions[0].owner: 4294967295 is not a usable id"),
        ("group: 4294967296", "permissions[0].group: 4294967296 is not a usable id"),
        ("group: \"-1\"", "permissions[0].group: -1 is not a usable id"),
        ("group: 18446744073709551616", "permissions[0].group: integer 18446744073709551616 is out of range"),
    ] {
        let message = refuse_permission(&format!("    {body}\n"));
        assert_has(&message, culprit);
    }
    assert_eq!(permission("    owner: 4294967294\n").owner.as_deref(), Some("4294967294"));
    let message = refuse("hooks:\n  AfterInstall:\n    - location: a.sh\n      runas: \" 4294967295 \"\n");
    assert_starts(&message, "hooks.AfterInstall[0].runas: 4294967295 is not a usable id");
}

/// A sandbox for the deploy-local tests below, with `dest` as destination.
fn deploy_sandbox(name: &str) -> common::Sandbox {
    common::Sandbox::new(&format!("appspec-{name}"))
}

/// Every path under `dir`, with `/` after directories, sorted.
fn layout(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = format!("{:?}", path.strip_prefix(base).unwrap_or(&path));
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn permissions_setuid_mode_obeys_allow_setuid() {
    let sb = deploy_sandbox("setuid");
    let dest = sb.path("dest");
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {0}\n\
         permissions:\n  - object: {0}\n    pattern: \"*.bin\"\n    mode: 644\n  \
         - object: {0}\n    pattern: run\n    mode: 4755\n    type: [file]\n",
        dest.display()
    );
    let bundle = sb.bundle("v1", &[("appspec.yml", &spec), ("app/run", "#!/bin/sh\n"), ("app/x.bin", "x")]);
    let out = sb.deploy(&["-l", bundle.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(err.contains("permissions[1].mode: 4755 sets the setuid bit"), "{err}");
    assert!(err.contains("allow_setuid: true"), "{err}");
    assert!(!dest.exists(), "nothing installed: {:?}", layout(&dest));

    sb.write_config("allow_setuid: true\n");
    common::assert_success(&sb.deploy(&["-l", bundle.to_str().expect("utf-8")]));
    assert_eq!(common::mode(&dest.join("run")), 0o4755);
    assert_eq!(common::mode(&dest.join("x.bin")), 0o644);
}

#[test]
fn permissions_setgid_on_directories_obeys_allow_setuid_too() {
    let spec =
        "version: 0.0\nos: linux\npermissions:\n  - object: /srv/shared\n    mode: 2775\n    type: [directory]\n";
    let spec = AppSpec::parse(spec).expect("parses");
    let message = spec.check_setuid(false).err().map(|e| e.message).unwrap_or_default();
    assert_starts(&message, "permissions[0].mode: 2775 sets the setgid bit");
    assert!(spec.check_setuid(true).is_ok());
}

#[test]
fn mappings_needing_one_path_as_file_and_directory_are_both_named() {
    let sb = deploy_sandbox("clash");
    let dest = sb.path("dest");
    fs::create_dir_all(dest.join("kept")).expect("dest");
    fs::write(dest.join("kept/old.txt"), "old").expect("old");
    let before = layout(&dest);
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: conf\n    destination: {0}\n  \
         - source: tree\n    destination: {0}\n",
        dest.display()
    );
    let bundle = sb.bundle("v1", &[("appspec.yml", &spec), ("conf", "a file"), ("tree/conf/app.ini", "x=1")]);
    let out = sb.deploy(&["-l", bundle.to_str().expect("utf-8"), "--file-exists-behavior", "OVERWRITE"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    let expected = format!(
        "cannot install {0}/conf: files[1] (source \"tree\", destination \"{0}\") needs a directory there and \
         files[0] (source \"conf\", destination \"{0}\") a file",
        dest.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains(".edgedeploy-tmp"), "{err}");
    assert_eq!(layout(&dest), before, "nothing changed at the destination");
}

// ---------------------------------------------------------------- exact file names (issue 9, point 6)

#[test]
fn file_names_that_are_not_utf8_survive_the_cleanup_list_and_a_redeploy() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let sb = deploy_sandbox("bytes");
    let dest = sb.path("dest");
    let spec = format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n", dest.display());
    let bundle = sb.bundle("v1", &[("appspec.yml", &spec), ("app/plain.txt", "plain")]);
    // Two names that differ only in bytes that are not UTF-8 (the same
    // name once made "lossy"), and one in a directory that is not UTF-8.
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    let other = OsStr::from_bytes(b"caf\xe8.txt");
    let odd_dir = OsStr::from_bytes(b"d\xff");
    fs::write(bundle.join("app").join(latin1), "latin1").expect("write");
    fs::write(bundle.join("app").join(other), "other").expect("write");
    fs::create_dir(bundle.join("app").join(odd_dir)).expect("dir");
    fs::write(bundle.join("app").join(odd_dir).join("inner"), "inner").expect("write");
    let bundle_arg = bundle.to_str().expect("utf-8");

    common::assert_success(&sb.deploy(&["-l", bundle_arg]));
    let group_list = fs::read_dir(sb.root().join("deployment-instructions"))
        .expect("instructions")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-cleanup"))
        .expect("a cleanup list");
    let listed = fs::read(&group_list).expect("list");
    for name in [latin1, other] {
        let mut line = dest.as_os_str().as_bytes().to_vec();
        line.extend_from_slice(b"/");
        line.extend_from_slice(name.as_bytes());
        line.push(b'\n');
        assert!(
            listed.windows(line.len()).any(|w| w == line),
            "{:?} not in {:?}",
            name,
            String::from_utf8_lossy(&listed)
        );
    }
    assert_eq!(fs::read(dest.join(latin1)).expect("installed"), b"latin1");
    assert_eq!(fs::read(dest.join(other)).expect("installed"), b"other");
    let first = layout(&dest);

    // The same revision again: every name is ours, nothing conflicts.
    let out = sb.deploy(&["-l", bundle_arg]);
    common::assert_success(&out);
    assert_eq!(layout(&dest), first);
    assert_eq!(fs::read(&group_list).expect("list"), listed);

    // A revision without them: they are removed as ours.
    fs::remove_file(bundle.join("app").join(other)).expect("rm");
    fs::remove_dir_all(bundle.join("app").join(odd_dir)).expect("rm");
    common::assert_success(&sb.deploy(&["-l", bundle_arg]));
    assert!(!dest.join(other).exists() && !dest.join(odd_dir).exists(), "{:?}", layout(&dest));
    assert_eq!(fs::read(dest.join(latin1)).expect("kept"), b"latin1");
}

#[test]
fn file_names_that_are_not_utf8_in_a_tar_bundle_redeploy() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let sb = deploy_sandbox("bytes-tar");
    let dest = sb.path("dest");
    let spec = format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n", dest.display());
    let bundle = sb.bundle("v1", &[("appspec.yml", &spec), ("app/plain.txt", "plain")]);
    let names = [OsStr::from_bytes(b"caf\xe9.txt"), OsStr::from_bytes(b"caf\xe8.txt")];
    for name in names {
        fs::write(bundle.join("app").join(name), name.as_bytes()).expect("write");
    }
    let tar = sb.path("v1.tar");
    let status = std::process::Command::new("tar").arg("cf").arg(&tar).arg("-C").arg(&bundle).arg(".").status();
    assert!(status.is_ok_and(|s| s.success()), "the tar tool is needed to build the bundle");
    let tar_arg = tar.to_str().expect("utf-8");
    for attempt in ["first", "again"] {
        let out = sb.deploy(&["-l", tar_arg, "-t", "tar"]);
        assert!(out.status.success(), "{attempt}: {}", common::stderr(&out));
        for name in names {
            assert_eq!(fs::read(dest.join(name)).expect("installed"), name.as_bytes(), "{attempt}");
        }
    }
}
