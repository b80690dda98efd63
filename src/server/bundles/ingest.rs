//! Receiving an upload body: streamed into a file (never whole in memory),
//! decoded from aws-chunked when it is, hashed (MD5 for the ETag, SHA-256,
//! the requested S3 checksum) while written, and checked against what the
//! request declared: `x-amz-content-sha256`, `Content-MD5`,
//! `x-amz-checksum-*` (header or trailer), the length, the size limit.

use std::pin::Pin;
use std::sync::LazyLock;

use axum::body::{Body, HttpBody};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::checksum::{Algorithm, Hasher};
use super::chunked::Decoder;
use super::error::S3Error;
use super::limits;
use super::sign::ChunkSigner;

/// Bytes buffered before a write to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// Uploads receiving a body at the same time.
static UPLOAD_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(limits().max_concurrent_uploads));

/// What `x-amz-content-sha256` says about the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The hex SHA-256 of the body: checked while it streams.
    Sha256([u8; 32]),
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// aws-chunked: `STREAMING-UNSIGNED-PAYLOAD-TRAILER`,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`.
    Streaming {
        /// Chunks carry signatures.
        signed: bool,
    },
}

impl Payload {
    /// Parses the header value; `None` when it is not one S3 knows.
    pub fn parse(value: &str) -> Option<Payload> {
        match value {
            crate::protocol::sigv4::UNSIGNED_PAYLOAD => Some(Payload::Unsigned),
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Some(Payload::Streaming { signed: false }),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
                Some(Payload::Streaming { signed: true })
            }
            hex if hex.len() == 64 => {
                let mut out = [0u8; 32];
                for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
                    let pair = std::str::from_utf8(pair).ok()?;
                    out[i] = u8::from_str_radix(pair, 16).ok()?;
                }
                Some(Payload::Sha256(out))
            }
            _ => None,
        }
    }
}

/// What a body must turn out to be.
#[derive(Debug)]
pub struct Expect {
    declared_sha256: Option<[u8; 32]>,
    decoder: Option<Decoder>,
    content_md5: Option<[u8; 16]>,
    checksum: Option<Algorithm>,
    checksum_value: Option<String>,
    checksum_in_trailer: bool,
    length: Option<u64>,
    limit: u64,
}

/// What was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Bytes of object data.
    pub size: u64,
    /// Its MD5.
    pub md5: [u8; 16],
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// The S3 checksum computed (and verified when one was declared).
    pub checksum: Option<(Algorithm, String)>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Reads the declarations of a request's headers; `limit` is the largest
/// body accepted.
pub fn expectations(
    headers: &HeaderMap,
    payload: &Payload,
    signer: Option<ChunkSigner>,
    limit: u64,
) -> Result<Expect, S3Error> {
    let streaming = matches!(payload, Payload::Streaming { .. });
    let length_header = if streaming { "x-amz-decoded-content-length" } else { "content-length" };
    let length = match header(headers, length_header) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| S3Error::invalid_argument(format!("bad {length_header}")))?),
        None => None,
    };
    if length.is_some_and(|l| l > limit) {
        return Err(S3Error::too_large(limit));
    }
    let content_md5 =
        match header(headers, "content-md5") {
            Some(v) => {
                Some(STANDARD.decode(v).ok().and_then(|raw| <[u8; 16]>::try_from(raw).ok()).ok_or_else(|| {
                    S3Error::new(400, "InvalidDigest", "The Content-MD5 you specified was not valid.")
                })?)
            }
            None => None,
        };
    let mut checksum = None;
    let mut checksum_value = None;
    let mut checksum_in_trailer = false;
    for algorithm in Algorithm::ALL {
        if let Some(value) = header(headers, algorithm.header()) {
            if checksum_value.is_some() {
                return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header"));
            }
            if !algorithm.is_well_formed(value) {
                return Err(S3Error::invalid_request(format!("Value for {} header is invalid.", algorithm.header())));
            }
            checksum = Some(algorithm);
            checksum_value = Some(value.to_string());
        }
    }
    if let Some(trailer) = header(headers, "x-amz-trailer") {
        if !streaming {
            return Err(S3Error::invalid_request("x-amz-trailer needs an aws-chunked body"));
        }
        let algorithm = Algorithm::from_header(trailer)
            .ok_or_else(|| S3Error::invalid_request(format!("unsupported trailer {trailer:?}")))?;
        if checksum_value.is_some() {
            return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header"));
        }
        checksum = Some(algorithm);
        checksum_in_trailer = true;
    }
    if checksum.is_none()
        && let Some(name) = header(headers, "x-amz-sdk-checksum-algorithm")
    {
        checksum = Some(
            Algorithm::from_name(name)
                .ok_or_else(|| S3Error::invalid_request(format!("Checksum algorithm {name:?} is not supported")))?,
        );
    }
    Ok(Expect {
        declared_sha256: match payload {
            Payload::Sha256(h) => Some(*h),
            _ => None,
        },
        decoder: streaming.then(|| Decoder::new(signer)),
        content_md5,
        checksum,
        checksum_value,
        checksum_in_trailer,
        length,
        limit,
    })
}

/// Largest rest of a body read and discarded when a request is refused
/// before or while its body is read, so that the client can read the
/// answer and the connection stays usable.
pub const DRAIN_LIMIT: u64 = 1 << 20;
/// How long such a rest may pause.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards what is left of `body`, up to `budget` bytes.
pub async fn drain(body: &mut Body, budget: u64) {
    let mut seen = 0u64;
    loop {
        let next = tokio::time::timeout(DRAIN_IDLE, std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)));
        let Ok(Some(Ok(frame))) = next.await else { return };
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
            if seen > budget {
                return;
            }
        }
    }
}

/// Refuses a request before its body is read: a body of at most
/// [`DRAIN_LIMIT`] declared bytes is read and discarded first, so that the
/// client reads the answer and the connection stays usable (larger ones
/// are left; hyper then closes the connection). Such a body is read
/// before authentication: only while a pre-authentication slot is free
/// and within the body timeout (`server::listen`).
pub async fn refuse(mut body: Body, headers: &HeaderMap, e: S3Error) -> S3Error {
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= DRAIN_LIMIT)
        && let Some(_slot) = crate::server::listen::preauth_slot()
    {
        let deadline = crate::server::listen::limits().body_timeout;
        let _ = tokio::time::timeout(deadline, drain(&mut body, DRAIN_LIMIT)).await;
    }
    e
}

/// A slot for receiving one body, or SlowDown when all are taken.
pub fn upload_slot() -> Result<SemaphorePermit<'static>, S3Error> {
    UPLOAD_SLOTS.try_acquire().map_err(|_| S3Error::new(503, "SlowDown", "Please reduce your request rate."))
}

struct Hashes {
    size: u64,
    md5: Md5,
    sha256: Sha256,
    checksum: Option<Hasher>,
}

/// Streams `body` into `file` (flushed and fsynced at the end) and checks it
/// against `expect`.
pub async fn receive(body: Body, mut expect: Expect, file: tokio::fs::File) -> Result<Received, S3Error> {
    let idle = limits().body_idle_timeout;
    let mut body = body;
    let mut decoder = expect.decoder.take();
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hashes =
        Hashes { size: 0, md5: Md5::new(), sha256: Sha256::new(), checksum: expect.checksum.map(Hasher::new) };
    let streamed: Result<(), S3Error> = async {
        loop {
            let frame = tokio::time::timeout(idle, std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)))
                .await
                .map_err(|_| {
                    S3Error::new(
                        400,
                        "RequestTimeout",
                        "Your socket connection to the server was not read from or written to within the timeout period.",
                    )
                })?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| S3Error::new(400, "IncompleteBody", format!("reading the body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            match &mut decoder {
                Some(decoder) => {
                    for range in decoder.feed(&data)? {
                        let piece = &data[range];
                        absorb(piece, &mut hashes, &expect)?;
                        out.write_all(piece).await.map_err(|e| S3Error::io("writing the upload", e))?;
                    }
                }
                None => {
                    absorb(&data, &mut hashes, &expect)?;
                    out.write_all(&data).await.map_err(|e| S3Error::io("writing the upload", e))?;
                }
            }
        }
    }
    .await;
    if let Err(e) = streamed {
        // A little more is read so that a client that overshot a limit by
        // a little can still read the answer.
        let _ = tokio::time::timeout(crate::server::listen::limits().body_timeout, drain(&mut body, DRAIN_LIMIT)).await;
        return Err(e);
    }
    let trailers = match decoder {
        Some(decoder) => decoder.finish()?,
        None => Vec::new(),
    };
    out.flush().await.map_err(|e| S3Error::io("writing the upload", e))?;
    out.get_ref().sync_all().await.map_err(|e| S3Error::io("fsync of the upload", e))?;
    check(expect, hashes, &trailers)
}

fn absorb(bytes: &[u8], hashes: &mut Hashes, expect: &Expect) -> Result<(), S3Error> {
    hashes.size += bytes.len() as u64;
    if hashes.size > expect.limit {
        return Err(S3Error::too_large(expect.limit));
    }
    if expect.length.is_some_and(|l| hashes.size > l) {
        return Err(S3Error::invalid_request("The body is longer than its declared length"));
    }
    hashes.md5.update(bytes);
    hashes.sha256.update(bytes);
    if let Some(h) = &mut hashes.checksum {
        h.update(bytes);
    }
    Ok(())
}

fn check(expect: Expect, hashes: Hashes, trailers: &[(String, String)]) -> Result<Received, S3Error> {
    if expect.length.is_some_and(|l| hashes.size != l) {
        return Err(S3Error::new(
            400,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        ));
    }
    let md5: [u8; 16] = hashes.md5.finalize().into();
    let sha256: [u8; 32] = hashes.sha256.finalize().into();
    if let Some(declared) = expect.declared_sha256
        && declared != sha256
    {
        return Err(S3Error::new(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
        .with("ClientComputedContentSHA256", crate::protocol::sigv4::hex(&declared))
        .with("S3ComputedContentSHA256", crate::protocol::sigv4::hex(&sha256)));
    }
    if let Some(declared) = expect.content_md5
        && declared != md5
    {
        return Err(S3Error::new(400, "BadDigest", "The Content-MD5 you specified did not match what we received."));
    }
    let checksum = match (expect.checksum, hashes.checksum) {
        (Some(algorithm), Some(hasher)) => {
            let computed = hasher.finish();
            let declared = match expect.checksum_value {
                Some(v) => Some(v),
                None => trailers.iter().find(|(n, _)| n == algorithm.header()).map(|(_, v)| v.clone()),
            };
            if declared.is_none() && expect.checksum_in_trailer {
                return Err(S3Error::invalid_request(format!(
                    "the trailing {} announced by x-amz-trailer is missing",
                    algorithm.header()
                )));
            }
            if let Some(declared) = declared
                && declared != computed
            {
                return Err(S3Error::new(
                    400,
                    "BadDigest",
                    format!("The {} you specified did not match the calculated checksum.", algorithm.name()),
                ));
            }
            Some((algorithm, computed))
        }
        _ => None,
    };
    Ok(Received { size: hashes.size, md5, sha256, checksum })
}

/// Reads a small body (an XML document) into memory, up to `limit` bytes,
/// with the same checks as [`receive`].
pub async fn receive_small(
    body: Body,
    headers: &HeaderMap,
    payload: &Payload,
    signer: Option<ChunkSigner>,
    limit: usize,
) -> Result<Vec<u8>, S3Error> {
    let mut expect = expectations(headers, payload, signer, limit as u64)?;
    let deadline = crate::server::listen::limits().body_timeout;
    let raw =
        tokio::time::timeout(deadline, axum::body::to_bytes(body, limit.saturating_mul(2).saturating_add(64 * 1024)))
            .await
            .map_err(|_| {
                S3Error::new(
                    400,
                    "RequestTimeout",
                    format!("the request document was not received within {deadline:?}"),
                )
            })?
            .map_err(|_| S3Error::too_large(limit as u64))?;
    let mut hashes =
        Hashes { size: 0, md5: Md5::new(), sha256: Sha256::new(), checksum: expect.checksum.map(Hasher::new) };
    let mut out = Vec::new();
    let trailers = match expect.decoder.take() {
        Some(mut decoder) => {
            for range in decoder.feed(&raw)? {
                absorb(&raw[range.clone()], &mut hashes, &expect)?;
                out.extend_from_slice(&raw[range]);
            }
            decoder.finish()?
        }
        None => {
            absorb(&raw, &mut hashes, &expect)?;
            out.extend_from_slice(&raw);
            Vec::new()
        }
    };
    check(expect, hashes, &trailers)?;
    Ok(out)
}
