//! Running `git`: no terminal prompts, C locale, stdin closed, a deadline
//! after which the process is killed, and errors that name the command and
//! carry git's own message.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Deadline of a fetch from a git URL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline of a local command (rev-parse, archive).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Most bytes of git's stderr kept in an error.
const MAX_MESSAGE: usize = 2000;

/// Why a git command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitError {
    /// `git` could not be started (not installed?).
    Spawn(String),
    /// It ran past its deadline and was killed.
    Timeout(String),
    /// It exited with a failure; the message is its stderr.
    Failed {
        /// The command, for the log.
        command: String,
        /// What git said.
        message: String,
    },
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Spawn(m) => write!(f, "cannot run git (is it installed?): {m}"),
            GitError::Timeout(command) => write!(f, "{command} did not finish in time and was killed"),
            GitError::Failed { command, message } => write!(f, "{command} failed: {message}"),
        }
    }
}

impl std::error::Error for GitError {}

/// Runs `git -C dir ARGS` and returns its stdout.
pub async fn git(dir: &Path, args: &[&str], deadline: Duration) -> Result<Vec<u8>, GitError> {
    let command_text = format!("git -C {} {}", dir.display(), args.join(" "));
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| GitError::Spawn(e.to_string()))?;
    let output = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| GitError::Spawn(e.to_string()))?,
        Err(_) => return Err(GitError::Timeout(command_text)),
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut message: String = stderr.trim().lines().collect::<Vec<_>>().join("; ");
    if message.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
        message.truncate(cut);
    }
    if message.is_empty() {
        message = format!("exit status {}", output.status);
    }
    Err(GitError::Failed { command: command_text, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_carry_gits_message() {
        let dir = std::env::temp_dir();
        let err = git(&dir, &["rev-parse", "--verify", "--end-of-options", "nonexistent-ref^{commit}"], LOCAL_TIMEOUT)
            .await
            .unwrap_err();
        let GitError::Failed { command, message } = &err else { panic!("{err:?}") };
        assert!(command.starts_with("git -C "), "{command}");
        assert!(!message.is_empty());
        assert!(String::from_utf8(git(&dir, &["--version"], LOCAL_TIMEOUT).await.unwrap()).unwrap().starts_with("git"));
    }
}
