//! Completions not yet acknowledged by the service, and the ledger of
//! completed commands.
//!
//! - `<root>/.edgedeploy/outbox/<name>.json`: one PutHostCommandComplete
//!   per file, written durably before the in-flight record is cleared, sent
//!   until the service answers 2xx (or refuses it for good), across restarts.
//! - `<root>/.edgedeploy/completed.json`: the last [`LEDGER_SIZE`] commands
//!   whose completion was delivered. A command id in the outbox or in the
//!   ledger is never executed again: its completion is sent again instead.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::journal;
use crate::protocol::command::{CommandStatus, Envelope, FORMAT_JSON, MAX_PAYLOAD_CHARS, PutHostCommandCompleteInput};

/// Completed commands remembered.
pub const LEDGER_SIZE: usize = 100;
/// Longest message kept in the ledger.
const LEDGER_MESSAGE_CHARS: usize = 240;

/// One completion waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// HostCommandIdentifier.
    pub host_command_identifier: String,
    /// Succeeded or Failed.
    pub command_status: CommandStatus,
    /// The diagnostic, as sent.
    pub diagnostics: Envelope,
    /// The lifecycle event, for the log.
    pub command_name: String,
    /// The deployment, for the log, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Seconds since the epoch when it was written (delivery order).
    pub created: u64,
}

impl Completion {
    /// The completion of `command_name` with outcome `diagnostic`.
    pub fn new(
        host_command_identifier: &str,
        command_name: &str,
        deployment_id: Option<&str>,
        diagnostic: &Diagnostic,
        now: u64,
    ) -> Completion {
        Completion {
            host_command_identifier: host_command_identifier.to_string(),
            command_status: if diagnostic.is_success() { CommandStatus::Succeeded } else { CommandStatus::Failed },
            diagnostics: diagnostics_envelope(diagnostic),
            command_name: command_name.to_string(),
            deployment_id: deployment_id.map(str::to_string),
            created: now,
        }
    }

    /// The request that delivers it.
    pub fn input(&self) -> PutHostCommandCompleteInput {
        PutHostCommandCompleteInput {
            host_command_identifier: self.host_command_identifier.clone(),
            command_status: self.command_status,
            diagnostics: Some(self.diagnostics.clone()),
        }
    }
}

/// The `JSON` envelope of `diagnostic`, at most [`MAX_PAYLOAD_CHARS`] bytes
/// (so at most as many characters): the oldest part of the log goes first,
/// then the end of the message.
pub fn diagnostics_envelope(diagnostic: &Diagnostic) -> Envelope {
    let mut d = diagnostic.clone();
    loop {
        let payload = serde_json::to_string(&d).unwrap_or_else(|_| "{}".into());
        let excess = payload.len().saturating_sub(MAX_PAYLOAD_CHARS);
        if excess == 0 {
            return Envelope { format: FORMAT_JSON.to_string(), payload };
        }
        // Cutting `excess` bytes of JSON from the log is enough (a cut of
        // the message may fall short by escapes: the loop goes again).
        if !d.log.is_empty() {
            d.log = cut_front(&d.log, excess);
        } else if !d.message.is_empty() {
            d.message = cut_back(&d.message, excess);
        } else {
            d.script_name = cut_back(&d.script_name, excess);
        }
    }
}

/// `text` without the characters at its start whose JSON form takes at
/// least `bytes` bytes.
fn cut_front(text: &str, bytes: usize) -> String {
    let mut cut = 0;
    for (i, c) in text.char_indices() {
        if cut >= bytes {
            return text[i..].to_string();
        }
        cut += json_len(c);
    }
    String::new()
}

/// Bytes `c` takes in a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `text` without at least `bytes` bytes at its end (and at least one character).
fn cut_back(text: &str, bytes: usize) -> String {
    let mut end = text.len().saturating_sub(bytes.max(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The file name of a command's completion: the id when it is a plain,
/// short name, else a hash of it (AWS's ids are long base64 with `/`).
pub fn file_name(host_command_identifier: &str) -> String {
    let id = host_command_identifier;
    let plain = !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        format!("c-{id}.json")
    } else {
        let digest = Sha256::digest(id.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}.json")
    }
}

/// A delivered completion, remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// HostCommandIdentifier.
    pub id: String,
    /// Succeeded or Failed.
    pub status: CommandStatus,
    /// The diagnostic's error code.
    pub error_code: u8,
    /// The diagnostic's message (shortened).
    pub message: String,
    /// The lifecycle event.
    #[serde(default)]
    pub command_name: String,
}

impl LedgerEntry {
    fn of(c: &Completion) -> LedgerEntry {
        let payload: serde_json::Value = serde_json::from_str(&c.diagnostics.payload).unwrap_or_default();
        let message = payload["message"].as_str().unwrap_or_default().chars().take(LEDGER_MESSAGE_CHARS).collect();
        LedgerEntry {
            id: c.host_command_identifier.clone(),
            status: c.command_status,
            error_code: payload["error_code"].as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(5),
            message,
            command_name: c.command_name.clone(),
        }
    }

    /// A completion that repeats this one (for a command handed out again).
    pub fn resend(&self, now: u64) -> Completion {
        let payload = serde_json::json!({
            "error_code": self.error_code,
            "script_name": "",
            "message": self.message,
            "log": "",
        });
        Completion {
            host_command_identifier: self.id.clone(),
            command_status: self.status,
            diagnostics: Envelope { format: FORMAT_JSON.to_string(), payload: payload.to_string() },
            command_name: self.command_name.clone(),
            deployment_id: None,
            created: now,
        }
    }
}

/// Appends `entry` to `ledger` (replacing an older entry of the same id),
/// keeping the newest [`LEDGER_SIZE`].
pub fn remember(ledger: &mut Vec<LedgerEntry>, entry: LedgerEntry) {
    ledger.retain(|e| e.id != entry.id);
    ledger.push(entry);
    let excess = ledger.len().saturating_sub(LEDGER_SIZE);
    ledger.drain(..excess);
}

/// The outbox directory and the ledger.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    ledger: PathBuf,
}

impl Outbox {
    /// The outbox under the agent's private directory `private`.
    pub fn new(private: &Path) -> Outbox {
        Outbox { dir: private.join("outbox"), ledger: private.join("completed.json") }
    }

    /// Creates the directory.
    pub fn create(&self) -> io::Result<()> {
        journal::create_dir_all_durable(&self.dir)
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(file_name(id))
    }

    /// Stores `completion` durably.
    pub fn add(&self, completion: &Completion) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(completion).map_err(io::Error::other)?;
        journal::write_atomic(&self.path_of(&completion.host_command_identifier), &json)
    }

    /// True when a completion of `id` is waiting.
    pub fn contains(&self, id: &str) -> bool {
        read_completion(&self.path_of(id)).is_some_and(|c| c.host_command_identifier == id)
    }

    /// Every waiting completion, oldest first. Unreadable files are logged
    /// and skipped (never half-written: they come from `write_atomic`).
    pub fn pending(&self) -> io::Result<Vec<Completion>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(journal::with_path(e, "reading", &self.dir)),
        };
        let mut pending = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| journal::with_path(e, "reading", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read_completion(&entry.path()) {
                Some(c) => pending.push((name, c)),
                None => {
                    // Never half-written (write_atomic): a foreign or corrupt file. Once aside, it is not read again.
                    let aside = entry.path().with_extension("corrupt");
                    log::error!("{}: not a completion; moved to {}", entry.path().display(), aside.display());
                    fs::rename(entry.path(), &aside).map_err(|e| journal::with_path(e, "moving aside", &aside))?;
                }
            }
        }
        pending.sort_by(|a, b| a.1.created.cmp(&b.1.created).then_with(|| a.0.cmp(&b.0)));
        Ok(pending.into_iter().map(|(_, c)| c).collect())
    }

    /// Records `completion` as delivered: into the ledger, then out of the outbox.
    pub fn delivered(&self, completion: &Completion) -> io::Result<()> {
        let mut ledger = self.ledger()?;
        remember(&mut ledger, LedgerEntry::of(completion));
        let json = serde_json::to_vec(&ledger).map_err(io::Error::other)?;
        journal::write_atomic(&self.ledger, &json)?;
        journal::remove_durable(&self.path_of(&completion.host_command_identifier))
    }

    /// The delivered completions remembered, oldest first.
    pub fn ledger(&self) -> io::Result<Vec<LedgerEntry>> {
        let Some(text) = journal::read_optional(&self.ledger)? else { return Ok(Vec::new()) };
        match serde_json::from_str(&text) {
            Ok(ledger) => Ok(ledger),
            Err(e) => {
                log::error!("{}: {e}; starting a new ledger", self.ledger.display());
                Ok(Vec::new())
            }
        }
    }

    /// The ledger entry of `id`, when it was completed and delivered.
    pub fn completed(&self, id: &str) -> io::Result<Option<LedgerEntry>> {
        Ok(self.ledger()?.into_iter().find(|e| e.id == id))
    }
}

fn read_completion(path: &Path) -> Option<Completion> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::ErrorCode;

    fn failed(log: String) -> Diagnostic {
        Diagnostic {
            error_code: ErrorCode::ScriptFailed,
            script_name: "scripts/start.sh".into(),
            message: "Script at specified location: scripts/start.sh run as user root failed with exit code 1".into(),
            log,
        }
    }

    #[test]
    fn small_diagnostics_are_sent_whole() {
        let envelope = diagnostics_envelope(&failed("hello\n".into()));
        assert_eq!(envelope.format, "JSON");
        let value: serde_json::Value = serde_json::from_str(&envelope.payload).unwrap();
        assert_eq!(value["error_code"], 4);
        assert_eq!(value["script_name"], "scripts/start.sh");
        assert_eq!(value["log"], "hello\n");
    }

    #[test]
    fn long_logs_keep_their_tail_within_the_limit() {
        for unit in ["x", "\u{1}", "é", "🚀", "\"\\"] {
            let log = format!("{}THE END", unit.repeat(20_000));
            let envelope = diagnostics_envelope(&failed(log));
            assert!(envelope.payload.len() <= MAX_PAYLOAD_CHARS, "{unit}: {}", envelope.payload.len());
            assert!(envelope.payload.len() > MAX_PAYLOAD_CHARS - 16, "{unit}: cut too much");
            let value: serde_json::Value = serde_json::from_str(&envelope.payload).unwrap();
            assert!(value["log"].as_str().unwrap().ends_with("THE END"), "{unit}");
            assert_eq!(value["error_code"], 4);
        }
    }

    #[test]
    fn a_huge_message_is_cut_when_the_log_is_not_enough() {
        let mut d = Diagnostic::unknown("é".repeat(10_000));
        d.log = "short".into();
        let envelope = diagnostics_envelope(&d);
        assert!(envelope.payload.len() <= MAX_PAYLOAD_CHARS);
        let value: serde_json::Value = serde_json::from_str(&envelope.payload).unwrap();
        assert_eq!(value["log"], "");
        assert!(value["message"].as_str().unwrap().starts_with("éé"));
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("hc-123_a.b"), "c-hc-123_a.b.json");
        let aws = "WyJjb20uYW1hem9uLmFwb2xsby5kZXBsb3ljb250cm9sLmRvbWFpbi5Ib3N0Q29tbWFuZElkZW50aWZpZXIi/+==";
        let name = file_name(aws);
        assert!(name.starts_with("h-") && name.len() == 2 + 32 + 5, "{name}");
        assert!(!name.contains('/'));
        assert_ne!(file_name("../x"), file_name("..x"));
        assert!(file_name("../x").starts_with("h-"));
        assert!(file_name("").starts_with("h-"));
        assert!(file_name(&"a".repeat(101)).starts_with("h-"));
    }

    #[test]
    fn ledger_keeps_the_newest_hundred_without_duplicates() {
        let entry = |i: usize| LedgerEntry {
            id: format!("hc-{i}"),
            status: CommandStatus::Succeeded,
            error_code: 0,
            message: String::new(),
            command_name: "Install".into(),
        };
        let mut ledger = Vec::new();
        for i in 0..150 {
            remember(&mut ledger, entry(i));
        }
        remember(&mut ledger, entry(149));
        assert_eq!(ledger.len(), LEDGER_SIZE);
        assert_eq!(ledger[0].id, "hc-50");
        assert_eq!(ledger[99].id, "hc-149");
    }

    #[test]
    fn outbox_round_trip_delivery_and_resend() {
        let dir = std::env::temp_dir().join(format!("edoutbox-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let outbox = Outbox::new(&dir);
        outbox.create().unwrap();
        let a = Completion::new("hc-a", "Install", Some("d-1"), &Diagnostic::success("ok"), 2);
        let b = Completion::new("x/y==", "AfterInstall", None, &failed("boom".into()), 1);
        outbox.add(&a).unwrap();
        outbox.add(&b).unwrap();
        assert!(outbox.contains("hc-a") && outbox.contains("x/y==") && !outbox.contains("hc-z"));
        assert_eq!(outbox.pending().unwrap(), vec![b.clone(), a.clone()]);
        outbox.delivered(&b).unwrap();
        assert_eq!(outbox.pending().unwrap(), vec![a.clone()]);
        let entry = outbox.completed("x/y==").unwrap().unwrap();
        assert_eq!((entry.status, entry.error_code), (CommandStatus::Failed, 4));
        let again = entry.resend(9);
        assert_eq!(again.command_status, CommandStatus::Failed);
        assert_eq!(again.input().host_command_identifier, "x/y==");
        let value: serde_json::Value = serde_json::from_str(&again.diagnostics.payload).unwrap();
        assert_eq!(value["error_code"], 4);
        assert_eq!(outbox.completed("hc-a").unwrap(), None);
        fs::write(dir.join("outbox").join("c-junk.json"), "{").unwrap();
        assert_eq!(outbox.pending().unwrap(), vec![a]);
        assert!(dir.join("outbox").join("c-junk.corrupt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
