//! From an AppSpec script to a running child: path resolution, the
//! executable checks CodeDeploy makes, the user to run as, the environment,
//! and the spawn (with `/bin/sh` for scripts that have no `#!` line).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sys::{self, at};
use crate::users::{self, User};

/// Bytes of a file looked at to tell a script from a binary.
const HEAD_BYTES: u64 = 1024;
/// Spawn attempts while the script is "text file busy" (another process
/// still has it open for writing, e.g. a fork racing a writer).
const BUSY_RETRIES: u32 = 5;

/// Why a script could not be started.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LaunchError {
    /// Nothing at this path.
    Missing(PathBuf),
    /// It is there but cannot be executed; the reason, for the message.
    NotExecutable(String),
    /// Anything else (credentials, resources); the whole message.
    Unknown(String),
}

/// The account a script runs as, when it is not the agent's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    user: User,
    /// Supplementary groups, primary group first.
    groups: Vec<u32>,
}

/// The script's path: `location` inside `archive_dir`. A leading `/` is
/// dropped (CodeDeploy resolves locations against the revision); links on
/// the way are followed only while they stay inside `archive_dir`, so the
/// path returned has no link in it. `Err` says how it would leave.
pub(super) fn resolve(archive_dir: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = crate::resolve::inside(archive_dir, Path::new(location.trim_start_matches('/')), true)
        .map_err(|e| e.to_string())?;
    Ok(archive_dir.join(rel))
}

/// Checks that `path` (inside `archive_dir`, from [`resolve`]) is a regular
/// file and adds its execute bits (u+x,g+x,o+x) when any is missing, as
/// CodeDeploy does. The file is opened without following any link from
/// `archive_dir` down, and its mode is changed on that descriptor: nothing
/// outside the revision is ever made executable.
pub(super) fn prepare(archive_dir: &Path, path: &Path) -> Result<(), LaunchError> {
    let unknown =
        |e: &dyn std::fmt::Display| LaunchError::Unknown(format!("cannot inspect script {}: {e}", path.display()));
    let rel = path.strip_prefix(archive_dir).map_err(|e| unknown(&e))?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(LaunchError::NotExecutable("it is not a regular file".into()));
    };
    let root = at::Dir::open(archive_dir).map_err(|e| unknown(&e))?;
    let missing = |e: &io::Error| matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory);
    let dir = match root.walk(parent, archive_dir) {
        Ok(dir) => dir,
        Err(at::WalkError::Io { source, .. }) if missing(&source) => {
            return Err(LaunchError::Missing(path.to_path_buf()));
        }
        Err(e) => return Err(unknown(&e)),
    };
    match dir.kind(name) {
        Ok(Some(at::Kind::File)) => {}
        Ok(None) => return Err(LaunchError::Missing(path.to_path_buf())),
        Ok(Some(_)) => return Err(LaunchError::NotExecutable("it is not a regular file".into())),
        Err(e) if missing(&e) => return Err(LaunchError::Missing(path.to_path_buf())),
        Err(e) => return Err(unknown(&e)),
    }
    let file = dir.open_file(name).map_err(|e| unknown(&e))?;
    let mode = file.metadata().map_err(|e| unknown(&e))?.permissions().mode();
    if mode & 0o111 != 0o111 {
        log::info!("script {} is not executable; adding execute permission", path.display());
        file.set_permissions(fs::Permissions::from_mode(mode | 0o111))
            .map_err(|e| LaunchError::NotExecutable(format!("cannot make it executable: {e}")))?;
    }
    Ok(())
}

/// Resolves `runas`. `None` when the script runs as the agent's own user
/// (no `runas`, or `runas` names the current effective user).
pub(super) fn identity(runas: Option<&str>) -> Result<Option<Identity>, String> {
    let Some(name) = runas else { return Ok(None) };
    let fail = |e: users::LookupError| format!("cannot run script as user '{name}': {e}");
    let user = users::user(name).map_err(fail)?;
    if user.uid == sys::effective_uid() {
        return Ok(None);
    }
    let groups = users::groups_of(&user).map_err(fail)?;
    Ok(Some(Identity { user, groups }))
}

/// Starts the script at `path` (already [`prepare`]d) in its own process
/// group, with stdin from /dev/null and stdout/stderr piped.
///
/// A file the kernel does not recognise (ENOEXEC) is run with `/bin/sh`
/// as execvp(3) would, unless it looks binary.
pub(super) fn spawn(
    path: &Path,
    event: &str,
    env: &[(String, String)],
    identity: Option<&Identity>,
) -> Result<Child, LaunchError> {
    let error = match spawn_retrying(&mut command(path, None, event, env, identity)) {
        Ok(child) => return Ok(child),
        Err(e) => e,
    };
    if error.raw_os_error() != Some(libc::ENOEXEC) {
        return Err(classify(error, identity));
    }
    if !looks_like_script(path) {
        return Err(LaunchError::NotExecutable("it is neither a script nor a program for this machine".into()));
    }
    spawn_retrying(&mut command(Path::new("/bin/sh"), Some(path), event, env, identity))
        .map_err(|e| classify(e, identity))
}

/// The command for `program` (with `script` as its argument, for the
/// `/bin/sh` fallback): environment, cwd `/`, pipes, process group and,
/// with an `identity`, credentials and the user's HOME/USER/LOGNAME/SHELL.
fn command(
    program: &Path,
    script: Option<&Path>,
    event: &str,
    env: &[(String, String)],
    identity: Option<&Identity>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0);
    if let Some(Identity { user, groups }) = identity {
        let shell = if user.shell.is_empty() { "/bin/sh" } else { &user.shell };
        cmd.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name).env("SHELL", shell);
        sys::set_child_credentials(&mut cmd, user.uid, user.gid, groups.clone());
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("LIFECYCLE_EVENT", event);
    cmd
}

/// Spawns `cmd`, retrying briefly while the file is busy (ETXTBSY).
fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            }
            result => return result,
        }
    }
}

/// Maps a spawn error to the diagnostic class CodeDeploy would report.
fn classify(e: io::Error, identity: Option<&Identity>) -> LaunchError {
    match e.raw_os_error() {
        // Only the credential switch before exec can be refused this way.
        Some(libc::EPERM) if identity.is_some() => {
            let name = identity.map_or("", |id| id.user.name.as_str());
            LaunchError::Unknown(format!("cannot switch to user '{name}' to run the script: {e}"))
        }
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::ETXTBSY) => LaunchError::NotExecutable(e.to_string()),
        // The file exists (checked before), so this is its #! interpreter.
        Some(libc::ENOENT) => LaunchError::NotExecutable(format!("the interpreter on its #! line was not found ({e})")),
        _ => LaunchError::Unknown(format!("cannot start script: {e}")),
    }
}

/// True unless the start of the file has a NUL byte (a binary, e.g. a
/// program for another architecture, which `/bin/sh` must not read).
fn looks_like_script(path: &Path) -> bool {
    let mut head = Vec::new();
    match File::open(path).and_then(|f| f.take(HEAD_BYTES).read_to_end(&mut head)) {
        Ok(_) => is_text(&head),
        Err(_) => false,
    }
}

/// The text test behind [`looks_like_script`].
fn is_text(head: &[u8]) -> bool {
    !head.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locations_inside_the_archive() {
        let dir = Path::new("/root/d-1/deployment-archive");
        assert_eq!(resolve(dir, "scripts/a.sh").ok(), Some(dir.join("scripts/a.sh")));
        assert_eq!(resolve(dir, "/scripts/a.sh").ok(), Some(dir.join("scripts/a.sh")));
        assert_eq!(resolve(dir, "//scripts/./b/../a.sh").ok(), Some(dir.join("scripts/a.sh")));
        assert_eq!(resolve(dir, "scripts/../a.sh").ok(), Some(dir.join("a.sh")));
    }

    #[test]
    fn refuses_locations_that_leave_the_archive() {
        let dir = Path::new("/root/d-1/deployment-archive");
        assert!(resolve(dir, "../x.sh").is_err());
        assert!(resolve(dir, "/../../etc/passwd").is_err());
        assert!(resolve(dir, "a/../../x.sh").is_err());
    }

    #[test]
    fn tells_scripts_from_binaries() {
        assert!(is_text(b"echo hi\n"));
        assert!(is_text(b""));
        assert!(!is_text(b"\x7fELF\x02\x01\x01\0\0\0"));
    }

    #[test]
    fn classifies_spawn_errors() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert!(matches!(classify(e(libc::EACCES), None), LaunchError::NotExecutable(_)));
        assert!(matches!(classify(e(libc::ENOENT), None), LaunchError::NotExecutable(m) if m.contains("#!")));
        assert!(matches!(classify(e(libc::EPERM), None), LaunchError::Unknown(_)));
        let user = User { name: "app".into(), uid: 1001, gid: 1001, home: "/".into(), shell: String::new() };
        let id = Identity { user, groups: vec![1001] };
        let err = classify(e(libc::EPERM), Some(&id));
        assert!(matches!(err, LaunchError::Unknown(m) if m.contains("cannot switch to user 'app'")));
    }

    #[test]
    fn runas_current_user_is_a_no_op_and_unknown_users_are_named() {
        let me = users::user(&sys::effective_uid().to_string()).expect("current user in /etc/passwd");
        assert_eq!(identity(Some(&me.name)), Ok(None));
        assert_eq!(identity(None), Ok(None));
        let err = identity(Some("no-such-user-edgedeploy")).expect_err("unknown user");
        assert!(err.contains("'no-such-user-edgedeploy'"), "{err}");
    }
}
