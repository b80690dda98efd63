//! The bundle store: an S3-compatible, path-style object API
//! (`GET/HEAD/PUT/DELETE /bucket/key`, multipart uploads, listings), SigV4
//! signing name `s3`, so that the agent has one download path for this
//! server, AWS S3 and MinIO. See `docs/bundle-store.md`.
//!
//! The admin may do everything; an instance may only GET and HEAD objects.
//! Errors are S3's XML documents with S3's codes and statuses.

mod adopt;
mod checksum;
mod chunked;
mod error;
mod files;
mod get;
mod ingest;
mod list;
mod multipart;
mod put;
mod sign;
mod xml;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;

pub use adopt::{Adopted, create_once};
pub use error::S3Error;
pub use files::{ObjectInfo, RecoveryReport, object_info, recover};
pub use sign::{chunk_signature, signing_key, trailer_signature};

use super::State;
use super::auth::{self, Identity, SignedRequest};
use super::http::{header_pairs, query_pairs};
use crate::protocol::sigv4::{self, percent_decode};
use files::Ctx;
use ingest::Payload;

/// Environment variable overriding [`Limits::max_object_size`] (bytes, or
/// with a `K`/`M`/`G`/`T` suffix, powers of 1024).
pub const MAX_OBJECT_SIZE_ENV: &str = "EDGEDEPLOY_BUNDLE_MAX_OBJECT_SIZE";

/// Every limit of the bundle store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest object (PUT body or completed multipart upload). Default 5 GiB.
    pub max_object_size: u64,
    /// Largest part of a multipart upload (S3: 5 GiB).
    pub max_part_size: u64,
    /// Smallest part but the last (S3: 5 MiB).
    pub min_part_size: u64,
    /// Most parts of a multipart upload (S3: 10000).
    pub max_parts: u32,
    /// Largest XML request document (CompleteMultipartUpload, DeleteObjects).
    pub max_xml_body: usize,
    /// Bodies being received at once; more get 503 SlowDown.
    pub max_concurrent_uploads: usize,
    /// A body that sends nothing for this long is abandoned (400 RequestTimeout).
    pub body_idle_timeout: Duration,
    /// Multipart uploads older than this are removed by [`recover`].
    pub upload_expiry: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_size: 5 << 30,
            max_part_size: 5 << 30,
            min_part_size: 5 << 20,
            max_parts: 10_000,
            max_xml_body: 4 << 20,
            max_concurrent_uploads: 64,
            body_idle_timeout: Duration::from_secs(60),
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Limits {
    /// The defaults with [`MAX_OBJECT_SIZE_ENV`] applied.
    pub fn from_env() -> Result<Limits, String> {
        let mut limits = Limits::default();
        if let Ok(text) = std::env::var(MAX_OBJECT_SIZE_ENV) {
            limits.max_object_size =
                parse_size(&text).ok_or_else(|| format!("{MAX_OBJECT_SIZE_ENV}={text:?} is not a size"))?;
        }
        Ok(limits)
    }
}

/// `123`, `64K`, `512M`, `5G`, `1T` (powers of 1024; `KiB`.. and `KB`.. too).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let shift = match text[digits..].trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift).filter(|n| *n > 0)
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the limits; only before the first request. Returns them back when
/// they were already fixed.
pub fn configure(limits: Limits) -> Result<(), Limits> {
    LIMITS.set(limits)
}

/// The limits in force: as configured, else the defaults with the
/// environment applied.
pub fn limits() -> &'static Limits {
    LIMITS.get_or_init(|| {
        Limits::from_env().unwrap_or_else(|e| {
            log::error!("bundle store: {e}; using the default limits");
            Limits::default()
        })
    })
}

/// Serves one object-API request.
pub async fn handle(state: &State, request: Request<Body>) -> Response {
    let request_id = files::random_name("")[..16].to_ascii_uppercase();
    let head = request.method() == Method::HEAD;
    let method = request.method().clone();
    let resource = percent_decode(request.uri().path()).unwrap_or_else(|| request.uri().path().to_string());
    let ctx = Ctx::of(state);
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let (request, body_read) = TrackedBody::wrap(request);
    let mut response = match serve(&ctx, request).await {
        Ok(response) => response,
        Err(e) => {
            // The path is the client's: escaped, so that it cannot forge log lines.
            let line = format!("bundle store: {method} {resource}: {e}");
            if e.status >= 500 {
                log::warn!("{}", line.escape_debug());
            } else {
                log::debug!("{}", line.escape_debug());
            }
            let mut response = e.into_response(&resource, &request_id, head);
            // A refusal before the body was read (or in its middle): hyper
            // closes the connection, so say so, or clients reuse it and fail.
            if has_body && !body_read.load(Ordering::Acquire) {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amz-request-id", id);
    }
    response
}

/// A request body that records when it was read to its end.
pub struct TrackedBody {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl TrackedBody {
    /// `request` with its body tracked, and the flag set at its end.
    pub fn wrap(request: Request<Body>) -> (Request<Body>, Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(false));
        let tracked = request.map(|inner| Body::new(TrackedBody { inner, done: done.clone() }));
        (tracked, done)
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Service,
    Bucket(String),
    Object(String, String),
}

impl Target {
    fn parse(path: &str) -> Target {
        let path = path.strip_prefix('/').unwrap_or(path);
        match path.split_once('/') {
            None if path.is_empty() => Target::Service,
            None => Target::Bucket(path.to_string()),
            Some((bucket, "")) => Target::Bucket(bucket.to_string()),
            Some((bucket, key)) => Target::Object(bucket.to_string(), key.to_string()),
        }
    }
}

/// The operations served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    ListBuckets,
    HeadBucket,
    CreateBucket,
    DeleteBucket,
    GetBucketLocation,
    ListObjects { v2: bool },
    DeleteObjects,
    GetObject,
    HeadObject,
    PutObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart(String),
    CompleteMultipartUpload(String),
    AbortMultipartUpload(String),
}

/// Query parameters that select an S3 sub-resource this store does not have.
const UNSUPPORTED_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "versioning",
    "versions",
    "website",
];

fn has(query: &[(String, String)], name: &str) -> bool {
    query.iter().any(|(k, _)| k == name)
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn method_not_allowed(method: &Method) -> S3Error {
    S3Error::new(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        .with("Method", method.as_str())
}

fn operation(method: &Method, target: &Target, query: &[(String, String)], headers: &HeaderMap) -> Result<Op, S3Error> {
    if let Some(sub) = UNSUPPORTED_SUBRESOURCES.iter().find(|s| has(query, s)) {
        return Err(S3Error::not_implemented(&format!("the ?{sub} sub-resource")));
    }
    let upload_id = param(query, "uploadId").map(str::to_string);
    match target {
        Target::Service => match *method {
            Method::GET => Ok(Op::ListBuckets),
            _ => Err(method_not_allowed(method)),
        },
        Target::Bucket(_) => match *method {
            Method::GET if has(query, "location") => Ok(Op::GetBucketLocation),
            Method::GET if has(query, "uploads") => Err(S3Error::not_implemented("ListMultipartUploads")),
            Method::GET => match param(query, "list-type") {
                Some("2") => Ok(Op::ListObjects { v2: true }),
                Some(_) => Err(S3Error::invalid_argument("Invalid list type specified")),
                None => Ok(Op::ListObjects { v2: false }),
            },
            Method::HEAD => Ok(Op::HeadBucket),
            Method::PUT => Ok(Op::CreateBucket),
            Method::DELETE => Ok(Op::DeleteBucket),
            Method::POST if has(query, "delete") => Ok(Op::DeleteObjects),
            _ => Err(method_not_allowed(method)),
        },
        Target::Object(..) => match (method.clone(), upload_id) {
            (Method::GET, Some(_)) => Err(S3Error::not_implemented("ListParts")),
            (Method::GET, None) => Ok(Op::GetObject),
            (Method::HEAD, _) => Ok(Op::HeadObject),
            (Method::PUT, _) if headers.contains_key("x-amz-copy-source") => {
                Err(S3Error::not_implemented("CopyObject / UploadPartCopy"))
            }
            (Method::PUT, Some(id)) => Ok(Op::UploadPart(id)),
            (Method::PUT, None) => Ok(Op::PutObject),
            (Method::POST, None) if has(query, "uploads") => Ok(Op::CreateMultipartUpload),
            (Method::POST, Some(id)) => Ok(Op::CompleteMultipartUpload(id)),
            (Method::POST, None) => Err(S3Error::not_implemented("POST object (browser form upload)")),
            (Method::DELETE, Some(id)) => Ok(Op::AbortMultipartUpload(id)),
            (Method::DELETE, None) => Ok(Op::DeleteObject),
            _ => Err(method_not_allowed(method)),
        },
    }
}

/// S3's bucket naming rules (general purpose buckets).
pub fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !name.starts_with("xn--")
        && !name.starts_with("sthree-")
        && !name.ends_with("-s3alias")
        && !name.ends_with("--ol-s3")
}

/// Longest key in bytes (S3's).
pub const MAX_KEY_BYTES: usize = 1024;

fn check_names(target: &Target) -> Result<(), S3Error> {
    let bucket = match target {
        Target::Service => return Ok(()),
        Target::Bucket(b) | Target::Object(b, _) => b,
    };
    if !valid_bucket_name(bucket) {
        return Err(
            S3Error::new(400, "InvalidBucketName", "The specified bucket is not valid.").with("BucketName", bucket)
        );
    }
    if let Target::Object(_, key) = target
        && key.len() > MAX_KEY_BYTES
    {
        return Err(S3Error::new(400, "KeyTooLongError", "Your key is too long").with("MaxSizeAllowed", "1024"));
    }
    Ok(())
}

/// The caller and what `x-amz-content-sha256` announced.
struct Caller {
    identity: Identity,
    payload: Payload,
    signer: Option<sign::ChunkSigner>,
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

async fn authenticate(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
) -> Result<Caller, S3Error> {
    let now = crate::clock::now_epoch().0;
    let Some(authorization) = header_of(headers, "authorization") else {
        if has(query, "X-Amz-Signature") || has(query, "X-Amz-Algorithm") {
            let identity = sign::presigned(&ctx.store, method.as_str(), path, query, headers, now).await?;
            return Ok(Caller { identity, payload: Payload::Unsigned, signer: None });
        }
        if has(query, "AWSAccessKeyId") || has(query, "Signature") {
            return Err(S3Error::invalid_request(
                "Signature Version 2 is not supported: presign with AWS4-HMAC-SHA256 (signature_version s3v4).",
            ));
        }
        return Err(S3Error::access_denied("Anonymous access is forbidden: sign the request with SigV4 (service s3)"));
    };
    if !authorization.starts_with(sigv4::ALGORITHM) {
        return Err(S3Error::invalid_request(
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ));
    }
    let amz_date = header_of(headers, "x-amz-date")
        .ok_or_else(|| S3Error::access_denied("AWS authentication requires a valid Date or x-amz-date header"))?;
    let at = crate::clock::parse_amz_date(amz_date)
        .ok_or_else(|| S3Error::access_denied("AWS authentication requires a valid Date or x-amz-date header"))?;
    if at.abs_diff(now) > sigv4::MAX_SKEW_SECONDS {
        return Err(S3Error::new(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
        .with("RequestTime", amz_date)
        .with("ServerTime", crate::clock::amz_date(now))
        .with("MaxAllowedSkewMilliseconds", (sigv4::MAX_SKEW_SECONDS * 1000).to_string()));
    }
    let declared = match header_of(headers, "x-amz-content-sha256") {
        Some(v) => v.trim().to_string(),
        None if matches!(*method, Method::GET | Method::HEAD | Method::DELETE) => sigv4::sha256_hex(b""),
        None => {
            return Err(S3Error::new(400, "MissingSecurityHeader", "Your request was missing a required header")
                .with("MissingHeaderName", "x-amz-content-sha256"));
        }
    };
    if declared.starts_with("STREAMING-AWS4-ECDSA") {
        return Err(S3Error::not_implemented("SigV4a (ECDSA) chunk signing"));
    }
    let payload = Payload::parse(&declared).ok_or_else(|| {
        S3Error::invalid_argument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
             STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], or a valid sha256 value.",
        )
    })?;
    let signed =
        SignedRequest { method: method.as_str(), path, query, headers, payload_sha256: &declared, service: "s3" };
    let identity = auth::authenticate(&ctx.store, &signed).await.map_err(S3Error::from_auth)?;
    let signer = match payload {
        Payload::Streaming { signed: true } => {
            let parsed = sigv4::Authorization::parse(authorization)
                .map_err(|e| S3Error::new(400, "AuthorizationHeaderMalformed", e.to_string()))?;
            let credential = sign::credential(&ctx.store, &parsed.access_key_id)
                .await?
                .ok_or_else(|| S3Error::internal("credential vanished during the request"))?;
            Some(sign::ChunkSigner::new(&credential.secret, amz_date, &parsed))
        }
        _ => None,
    };
    Ok(Caller { identity, payload, signer })
}

fn authorize(identity: &Identity, op: &Op) -> Result<(), S3Error> {
    match (identity, op) {
        (Identity::Admin, _) | (Identity::Instance(_), Op::GetObject | Op::HeadObject) => Ok(()),
        (Identity::Instance(name), _) => {
            Err(S3Error::access_denied(format!("instance {name} may only GET and HEAD objects")))
        }
    }
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

fn xml_doc(doc: String) -> Response {
    let mut response = Response::new(Body::from(doc));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

/// A request that passed authentication and authorization.
struct Prepared {
    op: Op,
    bucket: String,
    key: String,
    query: Vec<(String, String)>,
    caller: Caller,
}

async fn serve(ctx: &Ctx, request: Request<Body>) -> Result<Response, S3Error> {
    let headers = header_pairs(&request);
    let query = query_pairs(&request);
    let (parts, body) = request.into_parts();
    match prepare(ctx, &parts, &headers, query).await {
        Ok(prepared) => {
            super::listen::mark_authenticated(&parts.extensions);
            execute(ctx, prepared, &parts, body).await
        }
        Err(e) => Err(ingest::refuse(body, &parts.headers, e).await),
    }
}

async fn prepare(
    ctx: &Ctx,
    parts: &axum::http::request::Parts,
    headers: &[(String, String)],
    query: Vec<(String, String)>,
) -> Result<Prepared, S3Error> {
    files::ensure_recovered(ctx).await?;
    let path = percent_decode(parts.uri.path())
        .ok_or_else(|| S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI."))?;
    let caller = authenticate(ctx, &parts.method, &path, &query, headers).await?;
    let target = Target::parse(&path);
    let op = operation(&parts.method, &target, &query, &parts.headers)?;
    authorize(&caller.identity, &op)?;
    check_names(&target)?;
    let (bucket, key) = match target {
        Target::Service => (String::new(), String::new()),
        Target::Bucket(b) => (b, String::new()),
        Target::Object(b, k) => (b, k),
    };
    Ok(Prepared { op, bucket, key, query, caller })
}

async fn execute(
    ctx: &Ctx,
    prepared: Prepared,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<Response, S3Error> {
    let Prepared { op, bucket, key, query, caller } = prepared;
    let hm = &parts.headers;
    let Caller { payload, signer, .. } = caller;
    let small_body = |body| ingest::receive_small(body, hm, &payload, signer.clone(), limits().max_xml_body);
    match op {
        Op::ListBuckets => list::list_buckets(ctx).await,
        Op::HeadBucket => {
            let mut response = empty(StatusCode::OK);
            response.headers_mut().insert("x-amz-bucket-region", HeaderValue::from_static("us-east-1"));
            Ok(response)
        }
        Op::CreateBucket => {
            small_body(body).await?;
            let mut response = empty(StatusCode::OK);
            if let Ok(location) = HeaderValue::from_str(&format!("/{bucket}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        Op::DeleteBucket => {
            let any: Option<(String,)> = sqlx::query_as("SELECT object_key FROM objects WHERE bucket = $1 LIMIT 1")
                .bind(&bucket)
                .fetch_optional(&ctx.store.pool)
                .await?;
            match any {
                Some(_) => Err(S3Error::new(409, "BucketNotEmpty", "The bucket you tried to delete is not empty")
                    .with("BucketName", bucket)),
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
        Op::GetBucketLocation => Ok(xml_doc(format!("{}<LocationConstraint xmlns=\"{}\"/>", xml::PROLOG, xml::NS))),
        Op::ListObjects { v2 } => list::list_objects(ctx, &bucket, &query, v2).await,
        Op::DeleteObjects => {
            let doc = small_body(body).await?;
            delete_objects(ctx, &bucket, &doc).await
        }
        Op::GetObject => get::get_object(ctx, &bucket, &key, hm, &query, false).await,
        Op::HeadObject => get::get_object(ctx, &bucket, &key, hm, &query, true).await,
        Op::PutObject => put::put_object(ctx, &bucket, &key, hm, body, &payload, signer).await,
        Op::DeleteObject => {
            files::delete(ctx, &bucket, &key).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Op::CreateMultipartUpload => {
            small_body(body).await?;
            multipart::create(ctx, &bucket, &key).await
        }
        Op::UploadPart(id) => multipart::upload_part(ctx, &bucket, &key, &id, &query, hm, body, &payload, signer).await,
        Op::CompleteMultipartUpload(id) => {
            let doc = small_body(body).await?;
            let location = format!("/{bucket}/{}", sigv4::uri_encode(&key, true));
            multipart::complete(ctx, &bucket, &key, &id, doc.into(), location).await
        }
        Op::AbortMultipartUpload(id) => multipart::abort(ctx, &bucket, &key, &id).await,
    }
}

/// Most keys in one DeleteObjects request (S3's).
const MAX_DELETE_KEYS: usize = 1000;

/// DeleteObjects (`POST /bucket?delete`).
async fn delete_objects(ctx: &Ctx, bucket: &str, doc: &[u8]) -> Result<Response, S3Error> {
    let malformed = || {
        S3Error::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    let doc = std::str::from_utf8(doc).map_err(|_| malformed())?;
    let root = xml::children(doc, "Delete");
    let root = root.first().ok_or_else(malformed)?;
    let quiet = xml::child(root, "Quiet").is_some_and(|q| q.trim() == "true");
    let objects = xml::children(root, "Object");
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(malformed());
    }
    let mut out = format!("{}<DeleteResult xmlns=\"{}\">", xml::PROLOG, xml::NS);
    for object in objects {
        let key = xml::child(object, "Key").ok_or_else(malformed)?;
        let result = if key.is_empty() || key.len() > MAX_KEY_BYTES {
            Err(S3Error::new(400, "KeyTooLongError", "Your key is too long"))
        } else {
            files::delete(ctx, bucket, &key).await
        };
        match result {
            Ok(()) if quiet => {}
            Ok(()) => {
                out.push_str("<Deleted>");
                xml::element(&mut out, "Key", &key);
                out.push_str("</Deleted>");
            }
            Err(e) => {
                out.push_str("<Error>");
                xml::element(&mut out, "Key", &key);
                xml::element(&mut out, "Code", e.code);
                xml::element(&mut out, "Message", &e.message);
                out.push_str("</Error>");
            }
        }
    }
    out.push_str("</DeleteResult>");
    Ok(xml_doc(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in ["abc", "my-bucket.v2", "a1b", "bundles"] {
            assert!(valid_bucket_name(good), "{good}");
        }
        for bad in ["ab", "ABC", "-abc", "abc-", "a..b", "192.168.1.1", "xn--abc", "a_b", &"a".repeat(64)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_and_targets() {
        assert_eq!(parse_size("5G"), Some(5 << 30));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(Target::parse("/"), Target::Service);
        assert_eq!(Target::parse("/b"), Target::Bucket("b".into()));
        assert_eq!(Target::parse("/b/"), Target::Bucket("b".into()));
        assert_eq!(Target::parse("/b/k/x"), Target::Object("b".into(), "k/x".into()));
    }
}
