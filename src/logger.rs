//! A minimal `log` backend: one line per record on stderr, with a UTC
//! timestamp. Enough for a foreground agent or server under an init system
//! that captures stderr; no dependency for it.
//!
//! One record is always one line: control characters in a message are
//! escaped ([`sanitize`]) and a line is cut at [`MAX_LINE_CHARS`], so text
//! that came from a server (an error message, a command name) can never
//! forge a log line. Code that logs a string from a server also caps it
//! with [`untrusted`].

use std::fmt::Write as _;

use log::{Level, Log, Metadata, Record};

/// Longest message of one log line, in characters.
pub const MAX_LINE_CHARS: usize = 8192;
/// Longest string from a server kept in a log line, in characters.
pub const MAX_UNTRUSTED_CHARS: usize = 256;

struct StderrLogger {
    level: Level,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            && (metadata.target().starts_with("edgedeploy") || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            let message = sanitize(&record.args().to_string(), MAX_LINE_CHARS);
            eprintln!("{} {level}: {message}", crate::clock::now_utc());
        }
    }

    fn flush(&self) {}
}

/// `text` fit for one log line: control characters (C0, DEL, C1), line
/// and paragraph separators and bidirectional overrides escaped (`\n`,
/// `\r`, `\t`, `\u{1b}`...), and at most `max_chars` characters of it kept,
/// followed by `...[N more bytes]` when it was cut.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(2)));
    for (kept, (i, c)) in text.char_indices().enumerate() {
        if kept == max_chars {
            let _ = write!(out, "...[{} more bytes]", text.len() - i);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A string from a server, for a log line or a message that is logged:
/// [`sanitize`]d and capped at [`MAX_UNTRUSTED_CHARS`].
pub fn untrusted(text: &str) -> String {
    sanitize(text, MAX_UNTRUSTED_CHARS)
}

/// Characters that could end a line, move the cursor or reorder a
/// terminal's display.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Installs the logger at `level` (`EDGEDEPLOY_LOG=debug` raises it).
pub fn init(level: Level) {
    let level = match std::env::var("EDGEDEPLOY_LOG").ok().as_deref() {
        Some("trace") => Level::Trace,
        Some("debug") => Level::Debug,
        Some("warn") => Level::Warn,
        Some("error") => Level::Error,
        _ => level,
    };
    let logger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level.to_level_filter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_what_could_forge_a_line() {
        let forged = "ok\n2026-01-01T00:00:00Z info: deployment succeeded\r\x1b[2K\u{7f}\u{85}\u{2028}\u{202e}x\ty";
        let clean = sanitize(forged, 1000);
        assert_eq!(
            clean,
            "ok\\n2026-01-01T00:00:00Z info: deployment succeeded\\r\\u{1b}[2K\\u{7f}\\u{85}\\u{2028}\\u{202e}x\\ty"
        );
        assert!(!clean.chars().any(needs_escape));
        assert_eq!(sanitize("plain text, é ü 日本", 100), "plain text, é ü 日本");
    }

    #[test]
    fn sanitize_caps_the_length_on_a_character_boundary() {
        assert_eq!(sanitize("abcdef", 3), "abc...[3 more bytes]");
        assert_eq!(sanitize("ééé", 1), "é...[4 more bytes]");
        assert_eq!(sanitize("abc", 3), "abc");
        assert_eq!(sanitize("", 0), "");
        let huge = "x".repeat(10 << 20);
        assert!(untrusted(&huge).len() < MAX_UNTRUSTED_CHARS + 32);
        // Escapes count as one character each: the output stays bounded.
        assert!(sanitize(&"\u{1}".repeat(1000), 10).len() <= 10 * 8 + 32);
    }
}
