//! The hook supervisor against real processes: environment, exit codes,
//! missing and non-executable scripts, timeouts that escalate to SIGKILL,
//! background processes holding the output, runas, log cap and tail.
//!
//! Each test works in its own fresh directory under the system temp dir.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgedeploy::appspec::{LifecycleEvent, Script};
use edgedeploy::diagnostic::{Diagnostic, ErrorCode};
use edgedeploy::hooks::{ScriptLog, Supervision, run_event};

/// A fresh directory with a deployment archive and the two logs.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("edgedeploy-hooks-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("archive/scripts")).expect("create fixture");
        for d in [dir.clone(), dir.join("archive"), dir.join("archive/scripts")] {
            // Readable by the runas test's unprivileged user whatever the umask.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod fixture");
        }
        Fixture { dir }
    }

    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }

    fn scripts_log(&self) -> PathBuf {
        self.dir.join("d-TEST/logs/scripts.log")
    }

    fn deployments_log(&self) -> PathBuf {
        self.dir.join("deployment-logs/edgedeploy-deployments.log")
    }

    /// Writes `body` at `location` in the archive with `mode`.
    fn script(&self, location: &str, body: &[u8], mode: u32) {
        let path = self.archive().join(location);
        fs::write(&path, body).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod script");
    }

    fn run(&self, scripts: &[Script], supervision: &Supervision) -> Diagnostic {
        let mut log =
            ScriptLog::open(&self.scripts_log(), &self.deployments_log(), "d-TEST", supervision.max_log_bytes)
                .expect("open logs");
        let env = [
            ("DEPLOYMENT_ID".to_string(), "d-TEST".to_string()),
            ("TEST_DIR".to_string(), self.dir.display().to_string()),
        ];
        run_event(LifecycleEvent::AfterInstall, scripts, &self.archive(), &env, &mut log, supervision)
    }

    fn read(&self, path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn script(location: &str, timeout: Duration) -> Script {
    Script { location: location.into(), timeout, runas: None }
}

fn short_grace() -> Supervision {
    Supervision { kill_grace: Duration::from_secs(1), ..Supervision::default() }
}

const MINUTE: Duration = Duration::from_secs(60);

/// `YYYY-MM-DD HH:MM:SS` at the start of `line`.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 19
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// Processes still in process group `pgid` that are not zombies.
fn live_group_members(pgid: u32) -> Vec<String> {
    let mut live = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
            live.push(stat);
        }
    }
    live
}

/// True when `pid` is gone or a zombie.
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Polls `done` for at most 1 s (SIGKILL is delivered asynchronously);
/// its last answer.
fn within_a_second(mut done: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + Duration::from_secs(1);
    while !done() {
        if Instant::now() > give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The pids still alive after giving SIGKILL a moment to land.
fn still_alive_after_kill(pids: &[u32]) -> Vec<u32> {
    within_a_second(|| pids.iter().all(|&p| is_dead(p)));
    pids.iter().copied().filter(|&p| !is_dead(p)).collect()
}

fn read_pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path).expect("pid file").lines().map(|l| l.trim().parse().expect("pid")).collect()
}

#[test]
fn success_sees_environment_and_runs_in_root() {
    let f = Fixture::new("success");
    f.script(
        "scripts/ok.sh",
        b"#!/bin/sh\necho \"event=$LIFECYCLE_EVENT id=$DEPLOYMENT_ID pwd=$(pwd)\"\necho warn >&2\nprintf 'no-newline'\n",
        0o755,
    );
    let d = f.run(&[script("scripts/ok.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::Success, "{d:?}");
    assert_eq!(d.message, "Succeeded");
    assert!(d.log.contains("[stdout]event=AfterInstall id=d-TEST pwd=/\n"), "{}", d.log);
    assert!(d.log.contains("[stderr]warn\n"), "{}", d.log);
    assert!(d.log.ends_with("[stdout]no-newline\n"), "partial last line is kept: {}", d.log);

    let scripts_log = f.read(&f.scripts_log());
    let lines: Vec<&str> = scripts_log.lines().collect();
    assert!(lines.iter().all(|l| starts_with_timestamp(l)), "{scripts_log}");
    assert_eq!(&lines[0][19..], " LifecycleEvent - AfterInstall");
    assert_eq!(&lines[1][19..], " Script - scripts/ok.sh");
    assert!(lines.iter().any(|l| &l[19..] == " [stdout]event=AfterInstall id=d-TEST pwd=/"), "{scripts_log}");

    let deployments_log = f.read(&f.deployments_log());
    let line = deployments_log.lines().find(|l| l.contains("event=")).expect("output in deployments log");
    assert!(line.starts_with('[') && starts_with_timestamp(&line[1..]), "{line}");
    assert_eq!(&line[20..21], ".", "{line}");
    assert!(line[21..24].bytes().all(|b| b.is_ascii_digit()), "{line}");
    assert!(line[24..].starts_with("] [d-TEST][stdout]event=AfterInstall"), "{line}");
}

#[test]
fn empty_event_succeeds_without_logging() {
    let f = Fixture::new("empty");
    let d = f.run(&[], &Supervision::default());
    assert!(d.is_success());
    assert_eq!(f.read(&f.scripts_log()), "");
}

#[test]
fn leading_slash_location_is_inside_the_archive() {
    let f = Fixture::new("slash");
    f.script("scripts/ok.sh", b"#!/bin/sh\necho fine\n", 0o755);
    let d = f.run(&[script("/scripts/ok.sh", MINUTE)], &Supervision::default());
    assert!(d.is_success(), "{d:?}");
}

#[test]
fn location_leaving_the_archive_is_refused() {
    let f = Fixture::new("escape");
    fs::write(f.dir.join("outside.sh"), "#!/bin/sh\ntouch \"$TEST_DIR/escaped\"\n").expect("write");
    let d = f.run(&[script("scripts/../../outside.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::UnknownError, "{d:?}");
    assert!(d.message.contains("leaves the deployment archive"), "{}", d.message);
    assert!(!f.dir.join("escaped").exists());
}

#[test]
fn failing_exit_code_is_script_failed_with_output_tail() {
    let f = Fixture::new("fail");
    f.script("scripts/fail.sh", b"#!/bin/sh\necho before\necho oops >&2\nexit 3\n", 0o755);
    let d = f.run(&[script("scripts/fail.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptFailed);
    assert_eq!(d.script_name, "scripts/fail.sh");
    assert_eq!(d.message, "Script at specified location: scripts/fail.sh failed with exit code 3");
    assert!(d.log.contains("[stdout]before\n[stderr]oops\n"), "{}", d.log);
}

#[test]
fn killed_by_signal_is_script_failed_naming_the_signal() {
    let f = Fixture::new("signal");
    f.script("scripts/die.sh", b"#!/bin/sh\nkill -KILL $$\n", 0o755);
    let d = f.run(&[script("scripts/die.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptFailed);
    assert!(d.message.contains("SIGKILL"), "{}", d.message);
}

#[test]
fn missing_script_is_script_missing() {
    let f = Fixture::new("missing");
    let d = f.run(&[script("scripts/nope.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptMissing);
    let expected =
        format!("Script does not exist at specified location: {}", f.archive().join("scripts/nope.sh").display());
    assert_eq!(d.message, expected);
}

#[test]
fn non_executable_script_is_made_executable_and_runs() {
    let f = Fixture::new("chmod");
    f.script("scripts/plain.sh", b"#!/bin/sh\necho ran-plain\n", 0o644);
    let d = f.run(&[script("scripts/plain.sh", MINUTE)], &Supervision::default());
    assert!(d.is_success(), "{d:?}");
    assert!(d.log.contains("[stdout]ran-plain"));
    let mode = fs::metadata(f.archive().join("scripts/plain.sh")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn directory_at_location_is_not_executable() {
    let f = Fixture::new("dir");
    fs::create_dir(f.archive().join("scripts/adir")).expect("mkdir");
    let d = f.run(&[script("scripts/adir", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptNotExecutable, "{d:?}");
}

#[test]
fn binary_garbage_is_not_executable() {
    let f = Fixture::new("garbage");
    f.script("scripts/blob", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0garbage\xff\xfe", 0o755);
    let d = f.run(&[script("scripts/blob", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptNotExecutable, "{d:?}");
    assert!(d.message.starts_with("Script at specified location: scripts/blob is not executable"), "{}", d.message);
}

#[test]
fn missing_interpreter_is_not_executable() {
    let f = Fixture::new("interpreter");
    f.script("scripts/bash.sh", b"#!/nonexistent/bash\necho hi\n", 0o755);
    let d = f.run(&[script("scripts/bash.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptNotExecutable, "{d:?}");
    assert!(d.message.contains("#! line"), "{}", d.message);
}

#[test]
fn script_without_shebang_runs_with_bin_sh() {
    let f = Fixture::new("noshebang");
    f.script("scripts/bare.sh", b"echo no-shebang-ran \"$LIFECYCLE_EVENT\"\n", 0o755);
    let d = f.run(&[script("scripts/bare.sh", MINUTE)], &Supervision::default());
    assert!(d.is_success(), "{d:?}");
    assert!(d.log.contains("[stdout]no-shebang-ran AfterInstall\n"), "{}", d.log);
}

#[test]
fn first_failure_stops_the_event() {
    let f = Fixture::new("stop");
    f.script("scripts/a.sh", b"#!/bin/sh\nexit 1\n", 0o755);
    f.script("scripts/b.sh", b"#!/bin/sh\ntouch \"$TEST_DIR/ran-b\"\n", 0o755);
    let d = f.run(&[script("scripts/a.sh", MINUTE), script("scripts/b.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptFailed);
    assert_eq!(d.script_name, "scripts/a.sh");
    assert!(!f.dir.join("ran-b").exists(), "second script must not run");
    assert!(!f.read(&f.scripts_log()).contains("Script - scripts/b.sh"));
}

/// A script that ignores SIGTERM (and so do the children it starts, which
/// inherit the ignored disposition) and keeps its output open.
const STUBBORN: &[u8] = b"#!/bin/sh
trap '' TERM
echo $$ > \"$TEST_DIR/pids\"
sleep 1000 &
echo $! >> \"$TEST_DIR/pids\"
echo started
sleep 1000
";

fn assert_stubborn_killed(f: &Fixture, d: &Diagnostic, elapsed: Duration, limit: Duration) {
    assert_eq!(d.error_code, ErrorCode::ScriptTimedOut, "{d:?}");
    assert_eq!(d.message, "Script at specified location: scripts/stubborn.sh failed to complete in 1 seconds");
    assert!(elapsed <= limit, "took {elapsed:?}, limit {limit:?}");
    assert!(d.log.contains("[stdout]started"), "{}", d.log);
    assert!(d.log.contains("SIGKILL"), "{}", d.log);
    let pids = read_pids(&f.dir.join("pids"));
    assert_eq!(still_alive_after_kill(&pids), Vec::<u32>::new());
    within_a_second(|| live_group_members(pids[0]).is_empty());
    assert_eq!(live_group_members(pids[0]), Vec::<String>::new(), "the whole group is dead");
}

#[test]
fn timeout_kills_a_term_ignoring_group_after_the_default_grace() {
    let f = Fixture::new("timeout-default");
    f.script("scripts/stubborn.sh", STUBBORN, 0o755);
    let supervision = Supervision::default();
    let start = Instant::now();
    let d = f.run(&[script("scripts/stubborn.sh", Duration::from_secs(1))], &supervision);
    let limit = Duration::from_secs(1) + supervision.kill_grace + Duration::from_secs(1);
    assert_stubborn_killed(&f, &d, start.elapsed(), limit);
}

#[test]
fn timeout_kills_a_term_ignoring_group_after_a_short_grace() {
    let f = Fixture::new("timeout-short");
    f.script("scripts/stubborn.sh", STUBBORN, 0o755);
    let start = Instant::now();
    let d = f.run(&[script("scripts/stubborn.sh", Duration::from_secs(1))], &short_grace());
    assert_stubborn_killed(&f, &d, start.elapsed(), Duration::from_secs(3));
}

#[test]
fn timeout_of_a_script_that_obeys_term() {
    let f = Fixture::new("timeout-term");
    f.script("scripts/slow.sh", b"#!/bin/sh\necho $$ > \"$TEST_DIR/pids\"\nsleep 1000\n", 0o755);
    let start = Instant::now();
    let d = f.run(&[script("scripts/slow.sh", Duration::from_secs(1))], &short_grace());
    assert_eq!(d.error_code, ErrorCode::ScriptTimedOut, "{d:?}");
    assert!(start.elapsed() <= Duration::from_secs(3), "took {:?}", start.elapsed());
    let pids = read_pids(&f.dir.join("pids"));
    assert_eq!(still_alive_after_kill(&pids), Vec::<u32>::new());
}

#[test]
fn background_process_holding_output_is_left_running_and_success_returned() {
    let f = Fixture::new("background");
    f.script(
        "scripts/daemon.sh",
        b"#!/bin/sh\nsleep 30 &\necho $! > \"$TEST_DIR/pids\"\necho started-daemon\nexit 0\n",
        0o755,
    );
    let supervision = Supervision::default();
    let start = Instant::now();
    let d = f.run(&[script("scripts/daemon.sh", MINUTE)], &supervision);
    let elapsed = start.elapsed();
    let pids = read_pids(&f.dir.join("pids"));
    let daemon_alive = !is_dead(pids[0]);
    let _ = Command::new("kill").arg(pids[0].to_string()).status();

    assert_eq!(d.error_code, ErrorCode::Success, "{d:?}");
    assert!(elapsed <= supervision.output_grace + Duration::from_secs(1), "took {elapsed:?}");
    assert!(daemon_alive, "background processes are not killed");
    let scripts_log = f.read(&f.scripts_log());
    assert!(scripts_log.contains("[stdout]started-daemon"), "{scripts_log}");
    assert!(
        scripts_log.contains(
            "background processes still hold the script's output; stopped reading after 2s \
             — redirect their output to a file"
        ),
        "{scripts_log}"
    );
}

#[test]
fn unknown_runas_user_is_unknown_error_naming_the_user() {
    let f = Fixture::new("runas-unknown");
    f.script("scripts/ok.sh", b"#!/bin/sh\ntouch \"$TEST_DIR/ran\"\n", 0o755);
    let s = Script { runas: Some("no-such-user-edgedeploy".into()), ..script("scripts/ok.sh", MINUTE) };
    let d = f.run(&[s], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::UnknownError);
    assert!(d.message.contains("'no-such-user-edgedeploy'"), "{}", d.message);
    assert!(!f.dir.join("ran").exists());
}

/// A user and a supplementary group made for one test, removed after.
struct TestAccount {
    user: String,
    group: String,
}

impl TestAccount {
    fn create() -> Self {
        let n = std::process::id();
        let account = TestAccount { user: format!("edtu{n}"), group: format!("edtg{n}") };
        run_ok(Command::new("groupadd").arg(&account.group));
        run_ok(Command::new("useradd").args(["-M", "-s", "/bin/sh", "-G", &account.group, &account.user]));
        account
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.user).status();
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn runas_switches_uid_and_supplementary_groups() {
    let me = run_ok(Command::new("id").arg("-u"));
    if me != "0" {
        eprintln!("NOTICE: runas_switches_uid_and_supplementary_groups skipped: needs root (uid {me})");
        return;
    }
    let account = TestAccount::create();
    let uid = run_ok(Command::new("id").args(["-u", &account.user]));
    let getent = run_ok(Command::new("getent").args(["group", &account.group]));
    let gid = getent.split(':').nth(2).expect("gid field").to_string();

    let f = Fixture::new("runas");
    f.script(
        "scripts/who.sh",
        b"#!/bin/sh\necho \"uid=$(id -u)\"\necho \"groups=$(id -G)\"\necho \"user=$USER\"\n",
        0o755,
    );
    let s = Script { runas: Some(account.user.clone()), ..script("scripts/who.sh", MINUTE) };
    let d = f.run(&[s], &Supervision::default());
    assert!(d.is_success(), "{d:?}");
    assert!(d.log.contains(&format!("[stdout]uid={uid}\n")), "{}", d.log);
    assert!(d.log.contains(&format!("[stdout]user={}\n", account.user)), "{}", d.log);
    let groups_line = d.log.lines().find_map(|l| l.strip_prefix("[stdout]groups=")).expect("groups line");
    assert!(groups_line.split_whitespace().any(|g| g == gid), "gid {gid} not in {groups_line}");
    assert!(!groups_line.split_whitespace().any(|g| g == "0"), "root's group leaked: {groups_line}");
}

#[test]
fn log_cap_truncates_scripts_log_once_and_keeps_feeding_the_tail() {
    let f = Fixture::new("logcap");
    f.script(
        "scripts/chatty.sh",
        b"#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do echo \"line-$i\"; i=$((i+1)); done\n",
        0o755,
    );
    let supervision = Supervision { max_log_bytes: 2048, ..Supervision::default() };
    let d = f.run(&[script("scripts/chatty.sh", MINUTE)], &supervision);
    assert!(d.is_success(), "{d:?}");
    assert!(d.log.ends_with("[stdout]line-499\n"), "{}", d.log);

    let scripts_log = f.read(&f.scripts_log());
    let marker = "... output truncated (log cap 2048 bytes)";
    assert_eq!(scripts_log.matches(marker).count(), 1, "{scripts_log}");
    assert!(scripts_log.trim_end().ends_with(marker));
    assert!(scripts_log.len() <= 2048 + 20 + marker.len() + 1, "{} bytes", scripts_log.len());
    assert!(f.read(&f.deployments_log()).contains("[stdout]line-499"), "deployments log is not capped");

    // A later event of the same deployment adds nothing to a full log.
    let size = scripts_log.len();
    let d = f.run(&[script("scripts/chatty.sh", MINUTE)], &supervision);
    assert!(d.is_success());
    assert_eq!(f.read(&f.scripts_log()).len(), size);
}

#[test]
fn tail_is_at_most_4096_bytes_and_is_the_end_of_output() {
    let f = Fixture::new("tail");
    f.script(
        "scripts/long.sh",
        b"#!/bin/sh\ni=0\nwhile [ $i -lt 3000 ]; do echo \"line-$i \xc3\xa9\xe2\x82\xac\"; i=$((i+1)); done\nexit 7\n",
        0o755,
    );
    let d = f.run(&[script("scripts/long.sh", MINUTE)], &Supervision::default());
    assert_eq!(d.error_code, ErrorCode::ScriptFailed);
    assert!(d.log.len() <= 4096, "{} bytes", d.log.len());
    assert!(d.log.len() > 4000, "{} bytes", d.log.len());
    assert!(d.log.ends_with("[stdout]line-2999 é€\n"), "{}", &d.log[d.log.len() - 100..]);
    assert!(!d.log.contains("line-0 "));
}
