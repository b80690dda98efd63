//! Downloads a bundle into a deployment directory, resumably and in
//! bounded memory, and verifies it. The bundle is an object of an
//! S3-compatible store (path-style `GET /bucket/key`, signed with service
//! `s3`), or an http(s) URL (a URL revision: unsigned, through the same
//! proxy and CA bundle).
//!
//! Steps (`docs/agent.md` has the crash table):
//! 1. A complete, verified download of the same object is reused.
//! 2. Otherwise the body is streamed into `bundle.tar.part` through one
//!    64 KiB buffer. Every 4 MiB the part is fsynced and then `download.json`
//!    records the ETag and the byte count known durable.
//! 3. After a restart the download resumes with `Range: bytes=N-` and
//!    `If-Range: <etag>`: a 206 appends, a 200 (the object changed) starts
//!    over. N is the part's length when the boot is the same (the page cache
//!    survived an agent crash), else the last durable count (power cut).
//!    A URL resumes the same way when its server sent an ETag; without one
//!    the download starts over.
//! 4. The ETag must equal the deployment's when it names one; the SHA-256
//!    must equal the deployment's `Sha256` when it names one (hashed while
//!    streaming; a resumed part is re-hashed first). A URL revision always
//!    names one.
//! 5. The part is synced, `download.json` marked complete, the part renamed
//!    to `bundle.tar` and the directory synced.
//!
//! Every request has the phase deadlines of its client (connect, response
//! headers, no byte for `stall`); on top of them a transfer slower than
//! [`MIN_PROGRESS`] bytes per stall period is cut ([`SlowTransfer`]). A
//! dropped, stalled or short transfer is retried within the call, resuming:
//! after 1 s when the attempt made net progress (the part grew past its
//! longest length so far by at least [`MIN_PROGRESS`]), else after 2, 4, 8,
//! 16 s; after [`MAX_STALLED_ATTEMPTS`] attempts in a row without net
//! progress the download fails.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::{self, CallError, Client};
use crate::journal;
use crate::logger::untrusted;
use crate::protocol::sigv4;

/// The downloaded bundle in a deployment directory.
pub const BUNDLE_FILE: &str = "bundle.tar";
/// The bundle while it downloads.
pub const PART_FILE: &str = "bundle.tar.part";
/// Download progress, next to the part.
pub const PROGRESS_FILE: &str = "download.json";
/// Size of the one buffer the body goes through.
const BUFFER_BYTES: usize = 64 * 1024;
/// Bytes between two durable progress records.
const DURABLE_EVERY: u64 = 4 << 20;
/// Attempts in a row that may fail without net progress.
pub const MAX_STALLED_ATTEMPTS: u32 = 4;
/// Least growth of the part that counts as net progress, and least number
/// of bytes per stall period a transfer must bring.
pub const MIN_PROGRESS: u64 = 64 * 1024;
/// Stall period when the transport has none configured.
const DEFAULT_STALL: Duration = Duration::from_secs(60);
/// Longest ETag accepted (S3's are 34 to 70 bytes).
const MAX_ETAG_BYTES: usize = 1024;
/// Largest error body read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Where a bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An object of an S3-compatible store: requests signed (SigV4, `s3`).
    Store {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Object version, when the deployment names one (not sent yet: see docs/agent.md).
        version: Option<String>,
    },
    /// An http(s) URL: requests not signed.
    Url(String),
}

/// The bundle to download and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Where it is.
    pub location: Location,
    /// Expected ETag, when the deployment names one.
    pub etag: Option<String>,
    /// Expected SHA-256 (hex), when the deployment names one.
    pub sha256: Option<String>,
}

impl Object {
    /// An object of the bundle store, nothing expected of it yet.
    pub fn in_store(bucket: &str, key: &str) -> Object {
        let location = Location::Store { bucket: bucket.into(), key: key.into(), version: None };
        Object { location, etag: None, sha256: None }
    }

    /// `/bucket/key`, or the URL: for messages.
    pub fn path(&self) -> String {
        match &self.location {
            Location::Store { bucket, key, .. } => format!("/{bucket}/{key}"),
            Location::Url(url) => url.clone(),
        }
    }

    /// [`Object::path`] for a log line: it comes from the server, so it is
    /// escaped and capped ([`untrusted`]).
    pub fn shown(&self) -> String {
        untrusted(&self.path())
    }
}

/// What the requests of a download go through.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport<'a> {
    /// The bundle store's client, for [`Location::Store`].
    pub store: Option<&'a Client>,
    /// A plain HTTP agent (proxy, CA bundle, no signing), for [`Location::Url`].
    pub web: Option<&'a ureq::Agent>,
}

impl Transport<'_> {
    /// The stall deadline of the client in use.
    fn stall(&self) -> Duration {
        let store = self.store.and_then(Client::stall_timeout);
        let web = self.web.and_then(|w| w.config().timeout_per_read());
        store.or(web).unwrap_or(DEFAULT_STALL)
    }
}

/// Download settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Largest bundle accepted, in bytes; 0: no limit.
    pub max_bytes: u64,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

/// What a download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Size of the bundle.
    pub bytes: u64,
    /// Where the first request of this call started (0: from scratch).
    pub resumed_at: u64,
    /// Bytes received over the network by this call.
    pub fetched: u64,
    /// The object's ETag (unquoted).
    pub etag: String,
    /// True when a complete earlier download was reused.
    pub reused: bool,
}

/// Why a download failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchError {
    /// The store answered with an error (no such key, refused credentials...).
    Service(CallError),
    /// The server of a URL answered with an error.
    Http {
        /// The URL.
        url: String,
        /// The error.
        error: CallError,
    },
    /// Nothing to send the request with (no bundle store configured).
    NoTransport(String),
    /// The bundle is larger than `max_bundle_bytes`.
    TooLarge {
        /// Its size, or how much was received when the size was unknown.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The object's ETag is not the one the deployment names.
    EtagMismatch {
        /// From the deployment.
        expected: String,
        /// From the store.
        got: String,
    },
    /// The bundle's SHA-256 is not the one the deployment names.
    Sha256Mismatch {
        /// `/bucket/key` or the URL.
        source: String,
        /// From the deployment.
        expected: String,
        /// Computed.
        got: String,
    },
    /// The connection kept failing without progress.
    Incomplete(String),
    /// A local file could not be read or written.
    Io(io::Error),
    /// SIGTERM/SIGINT arrived; the download resumes at the next start.
    Stopped,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Service(e) => write!(f, "the bundle store refused the download: {e}"),
            FetchError::Http { url, error } => write!(f, "downloading {url}: {error}"),
            FetchError::NoTransport(m) => f.write_str(m),
            FetchError::TooLarge { size, limit } => {
                write!(f, "the bundle is {size} bytes; max_bundle_bytes allows {limit}")
            }
            FetchError::EtagMismatch { expected, got } => {
                write!(f, "the bundle's ETag is {got:?}, the deployment expects {expected:?} (the object changed)")
            }
            FetchError::Sha256Mismatch { source, expected, got } => {
                write!(f, "the bundle downloaded from {source} has SHA-256 {got}, the deployment expects {expected}")
            }
            FetchError::Incomplete(m) => write!(f, "the download did not complete: {m}"),
            FetchError::Io(e) => write!(f, "{e}"),
            FetchError::Stopped => f.write_str("the download was stopped (the agent is stopping)"),
        }
    }
}

impl std::error::Error for FetchError {}

/// `download.json`: what is known durable about the part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bucket of the object (empty for a URL).
    pub bucket: String,
    /// Key of the object (empty for a URL).
    pub key: String,
    /// Version asked for.
    pub version: Option<String>,
    /// The URL, for a URL revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// ETag (unquoted) of the object the part holds a prefix of.
    pub etag: String,
    /// Bytes of the part known durable (or, when `complete`, the bundle's size).
    pub bytes: u64,
    /// Boot id when this was written.
    pub boot_id: String,
    /// The part was complete and verified (it is, or is about to be, `bundle.tar`).
    pub complete: bool,
}

impl Progress {
    /// A record of `bytes` of `object` (whose ETag is `etag`).
    fn of(object: &Object, etag: &str, bytes: u64, boot_id: &str, complete: bool) -> Progress {
        let (bucket, key, version, url) = match &object.location {
            Location::Store { bucket, key, version } => (bucket.clone(), key.clone(), version.clone(), None),
            Location::Url(url) => (String::new(), String::new(), None, Some(url.clone())),
        };
        Progress { bucket, key, version, url, etag: etag.to_string(), bytes, boot_id: boot_id.to_string(), complete }
    }

    fn is_for(&self, object: &Object) -> bool {
        match &object.location {
            Location::Store { bucket, key, version } => {
                self.url.is_none() && self.bucket == *bucket && self.key == *key && self.version == *version
            }
            Location::Url(url) => self.url.as_ref() == Some(url),
        }
    }
}

/// Where a request starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Byte offset; 0 for a fresh download.
    pub offset: u64,
    /// ETag the part belongs to (for If-Range), when resuming.
    pub etag: Option<String>,
}

/// Decides where to resume. `part_len` is the part's length (None: no part).
/// Same boot: the whole part is valid (written data survives a process
/// death in the page cache). Another boot: only the durable count is.
pub fn resume_point(progress: Option<&Progress>, object: &Object, part_len: Option<u64>, boot_id: &str) -> Start {
    let fresh = Start { offset: 0, etag: None };
    let (Some(p), Some(len)) = (progress, part_len) else { return fresh };
    if !p.is_for(object) || p.complete || p.etag.is_empty() {
        return fresh;
    }
    if let Some(expected) = &object.etag
        && normalize_etag(expected) != p.etag
    {
        return fresh;
    }
    let offset = if p.boot_id == boot_id {
        len
    } else if len >= p.bytes {
        p.bytes
    } else {
        0
    };
    if offset == 0 { fresh } else { Start { offset, etag: Some(p.etag.clone()) } }
}

/// The Range and If-Range headers of a request starting at `start`.
pub fn range_headers(start: &Start) -> Vec<(String, String)> {
    match &start.etag {
        Some(etag) if start.offset > 0 => vec![
            ("range".to_string(), format!("bytes={}-", start.offset)),
            ("if-range".to_string(), format!("\"{etag}\"")),
        ],
        _ => Vec::new(),
    }
}

/// How to use an answer to a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The body is the object from byte `offset` (0 when not resuming or
    /// when the server sent the whole object); `total` is its size if known.
    Body {
        /// Where the body starts in the object.
        offset: u64,
        /// The object's size.
        total: Option<u64>,
    },
    /// The range cannot be used (416, or a range we did not ask for):
    /// forget the part and start over.
    StartOver,
    /// Not a success: classify the error body.
    Error,
}

/// Interprets the status and headers of a GET sent from `offset`.
pub fn interpret(status: u16, offset: u64, content_range: Option<&str>, content_length: Option<u64>) -> Answer {
    match status {
        200 => Answer::Body { offset: 0, total: content_length },
        206 => match content_range.and_then(parse_content_range) {
            Some((first, total)) if first == offset => {
                Answer::Body { offset, total: total.or(content_length.map(|l| l + offset)) }
            }
            _ => Answer::StartOver,
        },
        416 => Answer::StartOver,
        _ => Answer::Error,
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) → (FIRST, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    match total.trim() {
        "*" => Some((first, None)),
        t => t.parse::<u64>().ok().filter(|t| *t > last).map(|t| (first, Some(t))),
    }
}

/// An ETag without `W/` and quotes, for comparison.
pub fn normalize_etag(etag: &str) -> String {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"').to_string()
}

/// Downloads `object` into `dir/bundle.tar` (see the module documentation).
pub fn download(
    transport: Transport<'_>,
    object: &Object,
    dir: &Path,
    options: &Options,
) -> Result<Report, FetchError> {
    let files = Files::new(dir);
    if let Some(report) = reuse(&files, object)? {
        return Ok(report);
    }
    let longest = fs::metadata(&files.part).map(|m| m.len()).unwrap_or(0);
    let mut run = Run { resumed_at: None, fetched: 0, sha_retry_used: false, longest, stall: transport.stall() };
    let mut stalled = 0u32;
    loop {
        if crate::sys::stop_requested() {
            return Err(FetchError::Stopped);
        }
        let longest_before = run.longest;
        match attempt(transport, object, &files, options, &mut run) {
            Ok(report) => return Ok(report),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(reason)) => {
                let progressed = run.longest >= longest_before.saturating_add(MIN_PROGRESS);
                stalled = if progressed { 0 } else { stalled + 1 };
                let Some(delay) = retry_delay(stalled) else {
                    return Err(FetchError::Incomplete(format!(
                        "{reason} ({} attempts in a row without progress)",
                        stalled
                    )));
                };
                log::warn!("downloading {}: {reason}; resuming in {}s", object.shown(), delay.as_secs());
                if sleep_unless_stopped(delay) {
                    return Err(FetchError::Stopped);
                }
            }
        }
    }
}

/// The wait before the next attempt after `stalled` attempts in a row
/// without net progress (0: the last one progressed); `None`: give up.
pub fn retry_delay(stalled: u32) -> Option<Duration> {
    (stalled <= MAX_STALLED_ATTEMPTS).then(|| Duration::from_secs(1 << stalled.min(4)))
}

/// Sleeps `delay` in short slices; true when a stop was requested.
fn sleep_unless_stopped(delay: Duration) -> bool {
    let deadline = std::time::Instant::now() + delay;
    loop {
        if crate::sys::stop_requested() {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Cuts a transfer that brings fewer than [`MIN_PROGRESS`] bytes in a
/// `period` (a drip defeats the per-read deadline: every read gets a byte).
#[derive(Debug, Clone)]
pub struct SlowTransfer {
    period: Duration,
    since: std::time::Instant,
    bytes: u64,
}

impl SlowTransfer {
    /// Starts watching at `now`.
    pub fn new(period: Duration, now: std::time::Instant) -> SlowTransfer {
        SlowTransfer { period, since: now, bytes: 0 }
    }

    /// Counts `n` bytes received at `now`; `Err` with the reason when the
    /// period ended with too few bytes.
    pub fn received(&mut self, n: u64, now: std::time::Instant) -> Result<(), String> {
        self.bytes += n;
        if now.duration_since(self.since) < self.period {
            return Ok(());
        }
        if self.bytes < MIN_PROGRESS {
            return Err(format!(
                "the transfer is too slow: {} bytes in {:.0?} (at least {MIN_PROGRESS} needed)",
                self.bytes,
                now.duration_since(self.since)
            ));
        }
        *self = SlowTransfer::new(self.period, now);
        Ok(())
    }
}

/// Paths of one download.
struct Files {
    dir: PathBuf,
    bundle: PathBuf,
    part: PathBuf,
    progress: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            bundle: dir.join(BUNDLE_FILE),
            part: dir.join(PART_FILE),
            progress: dir.join(PROGRESS_FILE),
        }
    }

    fn read_progress(&self) -> Option<Progress> {
        let text = journal::read_optional(&self.progress).ok().flatten()?;
        match serde_json::from_str(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("{}: {e}; downloading from the start", self.progress.display());
                None
            }
        }
    }

    fn write_progress(&self, progress: &Progress) -> Result<(), FetchError> {
        let json = serde_json::to_vec(progress).map_err(|e| FetchError::Io(io::Error::other(e)))?;
        journal::write_atomic(&self.progress, &json).map_err(FetchError::Io)
    }

    /// Forgets the part and its progress.
    fn discard(&self) -> Result<(), FetchError> {
        journal::remove_durable(&self.progress).map_err(FetchError::Io)?;
        journal::remove_durable(&self.part).map_err(FetchError::Io)
    }
}

/// State across the attempts of one call.
struct Run {
    resumed_at: Option<u64>,
    fetched: u64,
    sha_retry_used: bool,
    /// Longest length the part reached in this call (net progress).
    longest: u64,
    /// The transport's stall deadline: the period of [`SlowTransfer`].
    stall: Duration,
}

enum Failure {
    /// Try again (resuming).
    Retry(String),
    /// Give up.
    Fatal(FetchError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fatal(e)
    }
}

fn io_err(path: &Path, doing: &str) -> impl FnOnce(io::Error) -> Failure {
    let path = path.to_path_buf();
    let doing = doing.to_string();
    move |e| Failure::Fatal(FetchError::Io(journal::with_path(e, &doing, &path)))
}

/// A complete download of the same object, as `bundle.tar` (or as a
/// complete part a kill stopped before its rename).
fn reuse(files: &Files, object: &Object) -> Result<Option<Report>, FetchError> {
    let Some(p) = files.read_progress() else { return Ok(None) };
    let etag_ok = object.etag.as_deref().is_none_or(|e| normalize_etag(e) == p.etag);
    if !(p.complete && p.is_for(object) && etag_ok) {
        return Ok(None);
    }
    let len = |path: &Path| fs::metadata(path).ok().map(|m| m.len());
    if len(&files.part) == Some(p.bytes) {
        fs::rename(&files.part, &files.bundle)
            .map_err(|e| FetchError::Io(journal::with_path(e, "renaming", &files.part)))?;
        journal::fsync_dir(&files.dir).map_err(FetchError::Io)?;
    }
    if len(&files.bundle) != Some(p.bytes) {
        return Ok(None);
    }
    log::info!("downloading {}: reusing the complete download of {} bytes", object.shown(), p.bytes);
    Ok(Some(Report { bytes: p.bytes, resumed_at: p.bytes, fetched: 0, etag: p.etag, reused: true }))
}

/// Sends the GET of `object` with `headers`.
fn send(
    transport: Transport<'_>,
    object: &Object,
    headers: Vec<(String, String)>,
) -> Result<ureq::http::Response<ureq::Body>, Failure> {
    match &object.location {
        Location::Store { .. } => {
            let client = transport.store.ok_or_else(|| {
                FetchError::NoTransport("no bundle store is configured (s3_endpoint_override)".into())
            })?;
            let empty = sigv4::sha256_hex(b"");
            let request = client.s3_request("GET", &object.path(), headers, &empty);
            request
                .call()
                .map_err(|e| Failure::Retry(format!("bundle store unreachable: {}", untrusted(&e.to_string()))))
        }
        Location::Url(url) => {
            let agent = transport
                .web
                .ok_or_else(|| FetchError::NoTransport(format!("no HTTP client to download {url} with")))?;
            let mut request = agent.get(url);
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            request
                .call()
                .map_err(|e| Failure::Retry(format!("{} unreachable: {}", untrusted(url), untrusted(&e.to_string()))))
        }
    }
}

/// The failure of an error answer (`status`, `body`) to a GET of `object`.
fn refusal(object: &Object, status: u16, body: &[u8]) -> Failure {
    match client::classify(status, body) {
        e @ (CallError::Throttled(_) | CallError::Unreachable(_)) => Failure::Retry(e.to_string()),
        e @ CallError::Service { status: 500.., .. } => Failure::Retry(e.to_string()),
        e => Failure::Fatal(match &object.location {
            Location::Store { .. } => FetchError::Service(e),
            Location::Url(url) => FetchError::Http { url: url.clone(), error: e },
        }),
    }
}

/// One GET, from where the part ends.
fn attempt(
    transport: Transport<'_>,
    object: &Object,
    files: &Files,
    options: &Options,
    run: &mut Run,
) -> Result<Report, Failure> {
    let progress = files.read_progress();
    let part_len = fs::metadata(&files.part).ok().map(|m| m.len());
    let start = resume_point(progress.as_ref(), object, part_len, &options.boot_id);
    let mut response = send(transport, object, range_headers(&start))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let etag = header("etag").map(|e| normalize_etag(&e)).unwrap_or_default();
    if etag.len() > MAX_ETAG_BYTES || etag.chars().any(char::is_control) {
        return Err(Failure::Retry(format!(
            "the ETag {} is not usable (control characters or too long)",
            untrusted(&etag)
        )));
    }
    let (offset, total) = match interpret(status, start.offset, header("content-range").as_deref(), content_length) {
        Answer::Body { offset, total } => (offset, total),
        Answer::StartOver => {
            files.discard()?;
            return Err(Failure::Retry(format!("the store did not honour the range (HTTP {status}); starting over")));
        }
        Answer::Error => {
            let body = response.body_mut().with_config().limit(MAX_ERROR_BODY).read_to_vec().unwrap_or_default();
            return Err(refusal(object, status, &body));
        }
    };
    if let Some(expected) = &object.etag
        && normalize_etag(expected) != etag
    {
        files.discard()?;
        return Err(FetchError::EtagMismatch { expected: normalize_etag(expected), got: etag }.into());
    }
    if options.max_bytes > 0
        && let Some(total) = total.filter(|t| *t > options.max_bytes)
    {
        files.discard()?;
        return Err(FetchError::TooLarge { size: total, limit: options.max_bytes }.into());
    }
    run.resumed_at.get_or_insert(offset);
    let mut part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&files.part)
        .map_err(io_err(&files.part, "opening"))?;
    part.set_len(offset).map_err(io_err(&files.part, "truncating"))?;
    let mut buffer = vec![0u8; BUFFER_BYTES];
    let mut hasher = object.sha256.as_ref().map(|_| Sha256::new());
    if let Some(hasher) = hasher.as_mut().filter(|_| offset > 0) {
        rehash(&mut part, offset, hasher, &mut buffer).map_err(io_err(&files.part, "reading"))?;
    }
    part.seek(SeekFrom::Start(offset)).map_err(io_err(&files.part, "seeking"))?;
    let record = |part: &File, bytes: u64| -> Result<(), Failure> {
        part.sync_data().map_err(io_err(&files.part, "syncing"))?;
        let progress = Progress::of(object, &etag, bytes, &options.boot_id, false);
        files.write_progress(&progress).map_err(Failure::Fatal)
    };
    record(&part, offset)?;
    match (offset, total) {
        (0, Some(t)) => log::info!("downloading {}: {t} bytes", object.shown()),
        (0, None) => log::info!("downloading {}: size unknown", object.shown()),
        (n, t) => log::info!(
            "downloading {}: resumed at {n} bytes of {}",
            object.shown(),
            t.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
        ),
    }

    let mut reader = response.into_body().into_reader();
    let mut position = offset;
    let mut durable = offset;
    let mut pace = SlowTransfer::new(run.stall, std::time::Instant::now());
    loop {
        if crate::sys::stop_requested() {
            record(&part, position)?;
            return Err(FetchError::Stopped.into());
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                record(&part, position)?;
                return Err(Failure::Retry(format!(
                    "connection lost at byte {position}: {}",
                    untrusted(&e.to_string())
                )));
            }
        };
        part.write_all(&buffer[..n]).map_err(io_err(&files.part, "writing"))?;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&buffer[..n]);
        }
        position += n as u64;
        run.fetched += n as u64;
        if options.max_bytes > 0 && position > options.max_bytes {
            drop(part);
            files.discard()?;
            return Err(FetchError::TooLarge { size: position, limit: options.max_bytes }.into());
        }
        if let Some(total) = total.filter(|t| position > *t) {
            drop(part);
            files.discard()?;
            return Err(Failure::Retry(format!("the body is longer than the {total} bytes announced; starting over")));
        }
        run.longest = run.longest.max(position);
        if let Err(reason) = pace.received(n as u64, std::time::Instant::now()) {
            record(&part, position)?;
            return Err(Failure::Retry(format!("{reason} at byte {position}")));
        }
        if position - durable >= DURABLE_EVERY {
            record(&part, position)?;
            durable = position;
        }
    }
    if let Some(total) = total
        && position != total
    {
        record(&part, position)?;
        return Err(Failure::Retry(format!("truncated: {position} of {total} bytes received")));
    }
    part.sync_all().map_err(io_err(&files.part, "syncing"))?;
    drop(part);
    if let (Some(expected), Some(hasher)) = (&object.sha256, hasher) {
        let got = hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(expected.trim()) {
            files.discard()?;
            if offset > 0 && !run.sha_retry_used {
                run.sha_retry_used = true;
                return Err(Failure::Retry("SHA-256 mismatch after a resume; downloading again from the start".into()));
            }
            let expected = expected.trim().to_ascii_lowercase();
            return Err(FetchError::Sha256Mismatch { source: object.path(), expected, got }.into());
        }
    }
    let done = Progress::of(object, &etag, position, &options.boot_id, true);
    files.write_progress(&done)?;
    fs::rename(&files.part, &files.bundle).map_err(io_err(&files.part, "renaming"))?;
    journal::fsync_dir(&files.dir).map_err(io_err(&files.dir, "syncing"))?;
    let resumed_at = run.resumed_at.unwrap_or(0);
    log::info!(
        "downloaded {}: {position} bytes, {} fetched by this agent run, which started at byte {resumed_at}",
        object.shown(),
        run.fetched
    );
    Ok(Report { bytes: position, resumed_at, fetched: run.fetched, etag, reused: false })
}

/// Hashes the first `len` bytes of `file` into `hasher`.
fn rehash(file: &mut File, len: u64, hasher: &mut Sha256, buffer: &mut [u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    while left > 0 {
        let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the part is shorter than recorded"));
        }
        hasher.update(&buffer[..n]);
        left -= n as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(etag: Option<&str>) -> Object {
        Object { etag: etag.map(str::to_string), ..Object::in_store("b", "k.tar") }
    }

    fn progress(bytes: u64, boot: &str) -> Progress {
        Progress::of(&object(None), "abc", bytes, boot, false)
    }

    #[test]
    fn same_boot_resumes_at_the_parts_length() {
        let start = resume_point(Some(&progress(4 << 20, "boot1")), &object(None), Some(5_000_000), "boot1");
        assert_eq!(start, Start { offset: 5_000_000, etag: Some("abc".into()) });
    }

    #[test]
    fn another_boot_resumes_at_the_durable_count() {
        let start = resume_point(Some(&progress(4 << 20, "boot1")), &object(None), Some(5_000_000), "boot2");
        assert_eq!(start.offset, 4 << 20);
        // The part lost data the record says was durable: the disk lied; start over.
        let start = resume_point(Some(&progress(4 << 20, "boot1")), &object(None), Some(100), "boot2");
        assert_eq!(start, Start { offset: 0, etag: None });
    }

    #[test]
    fn no_part_other_object_or_other_etag_starts_fresh() {
        let p = progress(10, "b1");
        assert_eq!(resume_point(Some(&p), &object(None), None, "b1").offset, 0);
        assert_eq!(resume_point(None, &object(None), Some(10), "b1").offset, 0);
        let other = Object::in_store("b", "other.tar");
        assert_eq!(resume_point(Some(&p), &other, Some(10), "b1").offset, 0);
        let url = Object { location: Location::Url("http://h/k.tar".into()), ..object(None) };
        assert_eq!(resume_point(Some(&p), &url, Some(10), "b1").offset, 0);
        let url_progress = Progress::of(&url, "abc", 10, "b1", false);
        assert_eq!(resume_point(Some(&url_progress), &url, Some(10), "b1").offset, 10);
        assert_eq!(resume_point(Some(&url_progress), &object(None), Some(10), "b1").offset, 0);
        assert_eq!(resume_point(Some(&p), &object(Some("\"zzz\"")), Some(10), "b1").offset, 0);
        assert_eq!(resume_point(Some(&p), &object(Some("\"abc\"")), Some(10), "b1").offset, 10);
        let done = Progress { complete: true, ..p };
        assert_eq!(resume_point(Some(&done), &object(None), Some(10), "b1").offset, 0);
    }

    #[test]
    fn range_and_if_range_only_when_resuming() {
        assert!(range_headers(&Start { offset: 0, etag: None }).is_empty());
        assert!(range_headers(&Start { offset: 5, etag: None }).is_empty());
        let headers = range_headers(&Start { offset: 5, etag: Some("abc".into()) });
        assert_eq!(
            headers,
            vec![("range".to_string(), "bytes=5-".to_string()), ("if-range".to_string(), "\"abc\"".to_string())]
        );
    }

    #[test]
    fn answers_are_interpreted() {
        assert_eq!(interpret(200, 0, None, Some(10)), Answer::Body { offset: 0, total: Some(10) });
        // The object changed (If-Range failed): the whole object comes back.
        assert_eq!(interpret(200, 5, None, Some(12)), Answer::Body { offset: 0, total: Some(12) });
        assert_eq!(interpret(206, 5, Some("bytes 5-9/10"), Some(5)), Answer::Body { offset: 5, total: Some(10) });
        assert_eq!(interpret(206, 5, Some("bytes 5-9/*"), Some(5)), Answer::Body { offset: 5, total: Some(10) });
        assert_eq!(interpret(206, 5, Some("bytes 0-9/10"), Some(10)), Answer::StartOver);
        assert_eq!(interpret(206, 5, None, Some(5)), Answer::StartOver);
        assert_eq!(interpret(206, 5, Some("bytes 9-5/10"), None), Answer::StartOver);
        assert_eq!(interpret(416, 10, None, None), Answer::StartOver);
        assert_eq!(interpret(404, 0, None, None), Answer::Error);
        assert_eq!(interpret(503, 0, None, None), Answer::Error);
    }

    #[test]
    fn no_net_progress_backs_off_exponentially_then_gives_up() {
        let delays: Vec<_> = (0..=MAX_STALLED_ATTEMPTS).map(|n| retry_delay(n).unwrap().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16]);
        assert_eq!(retry_delay(MAX_STALLED_ATTEMPTS + 1), None);
    }

    #[test]
    fn a_drip_is_cut_a_steady_transfer_is_not() {
        let t0 = std::time::Instant::now();
        let second = Duration::from_secs(1);
        let mut drip = SlowTransfer::new(Duration::from_secs(60), t0);
        for s in 1..60 {
            assert!(drip.received(1, t0 + second * s).is_ok());
        }
        let e = drip.received(1, t0 + second * 60).unwrap_err();
        assert!(e.contains("60 bytes in 60"), "{e}");
        let mut steady = SlowTransfer::new(Duration::from_secs(60), t0);
        for s in 1..=600 {
            assert!(steady.received(MIN_PROGRESS / 30, t0 + second * s).is_ok(), "second {s}");
        }
    }

    #[test]
    fn etags_compare_without_quotes_or_weakness() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag(" abc "), "abc");
    }
}
