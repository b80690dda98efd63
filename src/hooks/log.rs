//! Where script output goes: the deployment's capped `logs/scripts.log`,
//! the agent-wide deployments log, and an in-memory tail for the diagnostic.
//!
//! Output arrives as raw chunks from two pipes. Each stream is cut into
//! lines ([`LineBuf`], at most [`MAX_LINE`] bytes a line); each line is
//! written once to each destination. Memory stays bounded: two line
//! buffers, one [`TAIL_BYTES`] ring and the writers' buffers.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::clock::{format_utc, now_epoch};

/// Longest line kept whole; a longer one is written in pieces of this size.
pub(super) const MAX_LINE: usize = 8 * 1024;
/// Size of the output tail reported in a diagnostic.
pub(super) const TAIL_BYTES: usize = 4 * 1024;
/// Start of the line that marks a truncated scripts.log.
const TRUNCATED: &str = "... output truncated (log cap";

/// Which pipe a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// The script's standard output.
    Stdout,
    /// The script's standard error.
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        self as usize
    }

    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "[stdout]",
            Stream::Stderr => "[stderr]",
        }
    }
}

/// Where script output goes: the deployment's `logs/scripts.log` (capped)
/// and the agent-wide `deployment-logs/edgedeploy-deployments.log`.
pub struct ScriptLog {
    /// Partial lines of stdout and stderr, indexed by [`Stream::index`].
    pending: [LineBuf; 2],
    /// Everything that writes a finished line.
    sink: Sink,
}

/// The destinations of finished lines.
struct Sink {
    /// `logs/scripts.log`: never grows past its cap plus one marker line.
    scripts: Capped,
    /// The agent-wide log (not capped here; rotated by the operator).
    deployments: BufWriter<File>,
    /// Written into every deployments-log line.
    deployment_id: String,
    /// The last bytes of the current event's lines, for the diagnostic.
    tail: Tail,
    /// Set after the first failed write has been reported, so a full disk
    /// produces one warning, not one per line.
    write_failed: bool,
}

impl ScriptLog {
    /// Opens (appending, creating) both logs for `deployment_id`.
    ///
    /// Parent directories are created. A scripts.log that already reached
    /// `max_bytes` (an earlier event of the same deployment) stays as it is.
    pub fn open(scripts_log: &Path, deployments_log: &Path, deployment_id: &str, max_bytes: u64) -> io::Result<Self> {
        let sink = Sink {
            scripts: Capped::open(scripts_log, max_bytes)?,
            deployments: BufWriter::new(open_append(deployments_log)?),
            deployment_id: deployment_id.to_owned(),
            tail: Tail::default(),
            write_failed: false,
        };
        Ok(ScriptLog { pending: [LineBuf::default(), LineBuf::default()], sink })
    }

    /// Starts an event: clears the tail and writes `LifecycleEvent - <name>`.
    pub(super) fn start_event(&mut self, event: &str) {
        self.sink.tail = Tail::default();
        self.sink.header(&format!("LifecycleEvent - {event}"));
    }

    /// Starts a script: writes `Script - <location>`.
    pub(super) fn start_script(&mut self, location: &str) {
        self.pending = [LineBuf::default(), LineBuf::default()];
        self.sink.header(&format!("Script - {location}"));
    }

    /// Takes a chunk read from `stream`; complete lines are written.
    pub(super) fn output(&mut self, stream: Stream, data: &[u8]) {
        let sink = &mut self.sink;
        self.pending[stream.index()].push(data, &mut |line| sink.output_line(stream, line));
    }

    /// The end of `stream` (EOF or abandoned): writes its partial line.
    pub(super) fn end_stream(&mut self, stream: Stream) {
        let sink = &mut self.sink;
        self.pending[stream.index()].finish(&mut |line| sink.output_line(stream, line));
    }

    /// Writes a line of the agent's own (a warning about the script) to
    /// every destination, tagged `[agent]`.
    pub(super) fn note(&mut self, text: &str) {
        self.sink.tagged_line("[agent]", text);
    }

    /// Pushes buffered lines to the files.
    pub(super) fn flush(&mut self) {
        let result = self.sink.scripts.out.flush().and(self.sink.deployments.flush());
        self.sink.check(result);
    }

    /// The last [`TAIL_BYTES`] of what this event wrote, as text.
    pub(super) fn tail(&self) -> String {
        self.sink.tail.text()
    }
}

impl Drop for ScriptLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Sink {
    /// A header line: scripts.log and the tail, not the deployments log.
    fn header(&mut self, text: &str) {
        let result = self.scripts.write_line(&format!("{} {text}\n", format_utc(now_epoch().0)));
        self.check(result);
        self.tail.push(text.as_bytes());
        self.tail.push(b"\n");
    }

    /// One output line (without its newline) from `stream`.
    fn output_line(&mut self, stream: Stream, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.tagged_line(stream.tag(), &String::from_utf8_lossy(line));
    }

    /// `<tag><text>` to scripts.log, the deployments log and the tail.
    fn tagged_line(&mut self, tag: &str, text: &str) {
        let (secs, millis) = now_epoch();
        let stamp = format_utc(secs);
        let result = self.scripts.write_line(&format!("{stamp} {tag}{text}\n"));
        self.check(result);
        let result = writeln!(self.deployments, "[{stamp}.{millis:03}] [{}]{tag}{text}", self.deployment_id);
        self.check(result);
        self.tail.push(tag.as_bytes());
        self.tail.push(text.as_bytes());
        self.tail.push(b"\n");
    }

    /// Reports the first failed write; the script's outcome does not
    /// depend on its log being writable.
    fn check(&mut self, result: io::Result<()>) {
        match result {
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                log::warn!("cannot write script output log: {e}; further write errors are not reported");
            }
            _ => {}
        }
    }
}

/// Opens `path` for appending, creating it and its parent directories.
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new().read(true).append(true).create(true).open(path)
}

/// An append-only log that stops at a size cap, leaving a marker line.
struct Capped {
    out: BufWriter<File>,
    /// Bytes in the file, including what is still in `out`'s buffer.
    written: u64,
    max: u64,
    /// True once the marker line is in the file: nothing more is written.
    truncated: bool,
}

impl Capped {
    fn open(path: &Path, max: u64) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        let truncated = written >= max || ends_with_marker(&file, written);
        Ok(Capped { out: BufWriter::new(file), written, max, truncated })
    }

    /// Writes `line` (newline included) if it fits under the cap; the first
    /// line that does not fit is replaced by the marker line.
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        if self.written.saturating_add(line.len() as u64) <= self.max {
            self.written += line.len() as u64;
            return self.out.write_all(line.as_bytes());
        }
        self.truncated = true;
        let marker = format!("{} {TRUNCATED} {} bytes)\n", format_utc(now_epoch().0), self.max);
        self.written += marker.len() as u64;
        self.out.write_all(marker.as_bytes())
    }
}

/// True when the last line of `file` (of length `len`) is the marker.
fn ends_with_marker(file: &File, len: u64) -> bool {
    let mut last = [0u8; 128];
    let start = len.saturating_sub(last.len() as u64);
    let Ok(n) = file.read_at(&mut last, start) else { return false };
    let text = String::from_utf8_lossy(&last[..n]);
    text.trim_end().rsplit('\n').next().is_some_and(|l| l.contains(TRUNCATED))
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(super) struct LineBuf {
    /// The current line so far; never longer than [`MAX_LINE`].
    buf: Vec<u8>,
}

impl LineBuf {
    /// Adds `data`; calls `emit` with each finished line, without its `\n`.
    /// A line reaching [`MAX_LINE`] bytes is emitted in pieces, cut
    /// between UTF-8 characters where possible.
    pub(super) fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.append(&data[..nl], emit);
            emit(&self.buf);
            self.buf.clear();
            data = &data[nl + 1..];
        }
        self.append(data, emit);
    }

    /// Emits the partial line, if any (end of stream).
    pub(super) fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }

    /// Appends bytes of one line, emitting full pieces as the cap is hit.
    fn append(&mut self, mut part: &[u8], emit: &mut dyn FnMut(&[u8])) {
        loop {
            let room = MAX_LINE - self.buf.len();
            if part.len() <= room {
                self.buf.extend_from_slice(part);
                return;
            }
            self.buf.extend_from_slice(&part[..room]);
            part = &part[room..];
            let cut = utf8_cut(&self.buf);
            emit(&self.buf[..cut]);
            self.buf.drain(..cut);
        }
    }
}

/// Where to cut `buf` so that no UTF-8 character is split: before a
/// trailing incomplete character, else at the end.
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=len.min(4) {
        let b = buf[len - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        let start = len - back;
        return if needed > back && start > 0 { start } else { len };
    }
    len
}

/// The last [`TAIL_BYTES`] bytes written.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Never longer than [`TAIL_BYTES`].
    ring: VecDeque<u8>,
}

impl Tail {
    /// Appends `data`, dropping the oldest bytes beyond [`TAIL_BYTES`].
    pub(super) fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.ring.len() + data.len()).saturating_sub(TAIL_BYTES);
        self.ring.drain(..overflow);
        self.ring.extend(data);
    }

    /// The tail as text, starting at a character boundary: at most
    /// [`TAIL_BYTES`] bytes.
    pub(super) fn text(&self) -> String {
        let skip = self.ring.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
        let bytes: Vec<u8> = self.ring.iter().skip(skip).copied().collect();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.len() > TAIL_BYTES {
            // Invalid bytes became 3-byte U+FFFD; drop whole characters from the front.
            let mut start = text.len() - TAIL_BYTES;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text.drain(..start);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut buf = LineBuf::default();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.push(chunk, &mut |l| out.push(l.to_vec()));
        }
        buf.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn joins_lines_across_chunks_and_flushes_partial_at_end() {
        let out = lines_of(&[b"ab", b"c\nde", b"\n\nf"]);
        assert_eq!(out, [b"abc".to_vec(), b"de".to_vec(), b"".to_vec(), b"f".to_vec()]);
    }

    #[test]
    fn long_lines_are_cut_at_the_cap() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let out = lines_of(&[&long, b"\n"]);
        let lens: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn long_lines_are_not_cut_inside_a_character() {
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.extend_from_slice("é".as_bytes()); // 2 bytes: straddles the cap
        data.push(b'\n');
        let out = lines_of(&[&data]);
        assert_eq!(out[0].len(), MAX_LINE - 1);
        assert_eq!(out[1], "é".as_bytes());
    }

    #[test]
    fn utf8_cut_keeps_whole_characters() {
        assert_eq!(utf8_cut(b"abc"), 3);
        assert_eq!(utf8_cut("aé".as_bytes()), 3);
        assert_eq!(utf8_cut(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_cut(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_cut(&[0x80, 0x80]), 2, "garbage is cut anywhere");
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut tail = Tail::default();
        for i in 0..2000 {
            tail.push(format!("line-{i}\n").as_bytes());
        }
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES);
        assert!(text.ends_with("line-1999\n"));
        tail.push(&vec![b'z'; TAIL_BYTES * 3]);
        assert_eq!(tail.text(), "z".repeat(TAIL_BYTES));
    }

    #[test]
    fn tail_starts_at_a_character_boundary() {
        let mut tail = Tail::default();
        tail.push("€".repeat(TAIL_BYTES).as_bytes());
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES && text.len() > TAIL_BYTES - 3);
        assert!(text.chars().all(|c| c == '€'));
        let mut tail = Tail::default();
        tail.push(&[0xFF; TAIL_BYTES]);
        assert!(tail.text().len() <= TAIL_BYTES);
    }
}
