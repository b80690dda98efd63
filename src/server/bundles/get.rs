//! GetObject and HeadObject: the file streamed from disk, with S3's headers,
//! single byte ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`), `If-Range`
//! (the agent's resume relies on it), `If-Match`, `If-None-Match`,
//! `If-Modified-Since`, `If-Unmodified-Since`.

use std::io::SeekFrom;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::error::S3Error;
use super::files::{Ctx, Row, lookup};

/// Bytes read from the file per body frame.
const READ_CHUNK: usize = 64 * 1024;
/// Times the row is looked up again when its file vanished under us (a
/// concurrent overwrite removed it between lookup and open).
const OPEN_ATTEMPTS: usize = 3;

/// `response-*` query parameters and the headers they override.
const RESPONSE_OVERRIDES: &[(&str, HeaderName)] = &[
    ("response-content-type", header::CONTENT_TYPE),
    ("response-content-language", header::CONTENT_LANGUAGE),
    ("response-expires", header::EXPIRES),
    ("response-cache-control", header::CACHE_CONTROL),
    ("response-content-disposition", header::CONTENT_DISPOSITION),
    ("response-content-encoding", header::CONTENT_ENCODING),
];

/// The entity tags of an `If-Match`/`If-None-Match` value, unquoted; weak
/// ones keep their `W/` prefix.
fn etag_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (weak, rest) = match t.strip_prefix("W/") {
                Some(rest) => ("W/", rest),
                None => ("", t),
            };
            format!("{weak}{}", rest.trim_matches('"'))
        })
        .collect()
}

/// Parses an `If-Match`-style header value.
pub fn parse_etags(value: &str) -> Vec<String> {
    etag_list(value)
}

/// Whether `etag` (unquoted) is in `list` (or the list is `*`); `weak`
/// comparison lets `W/"x"` match `"x"`.
pub fn etag_listed(list: &[String], etag: &str, weak: bool) -> bool {
    list.iter().any(|t| t == "*" || t == etag || (weak && t.strip_prefix("W/").is_some_and(|t| t == etag)))
}

/// `Last-Modified` form (IMF-fixdate) of epoch milliseconds.
pub fn http_date(millis: i64) -> String {
    let secs = u64::try_from(millis / 1000).unwrap_or_default();
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Epoch seconds of an HTTP date.
fn parse_http_date(text: &str) -> Option<u64> {
    httpdate::parse_http_date(text.trim()).ok()?.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// A byte range as the `Range` header asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=a-b` or `bytes=a-` (end inclusive).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a `Range` value; `None` when it is to be ignored (another unit,
/// several ranges, bad syntax), as HTTP says.
pub fn parse_range(value: &str) -> Option<RangeSpec> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    if first.is_empty() {
        return Some(RangeSpec::Suffix(number(last)?));
    }
    let start = number(first)?;
    if last.is_empty() {
        return Some(RangeSpec::From(start, None));
    }
    let end = number(last)?;
    (end >= start).then_some(RangeSpec::From(start, Some(end)))
}

/// The inclusive byte positions of `spec` in an object of `size` bytes;
/// `None` when unsatisfiable.
pub fn resolve(spec: RangeSpec, size: u64) -> Option<(u64, u64)> {
    match spec {
        RangeSpec::From(start, _) if start >= size => None,
        RangeSpec::From(start, end) => Some((start, end.map_or(size - 1, |e| e.min(size - 1)))),
        RangeSpec::Suffix(0) => None,
        RangeSpec::Suffix(_) if size == 0 => None,
        RangeSpec::Suffix(n) => Some((size - n.min(size), size - 1)),
    }
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// How a GET/HEAD is to be answered, given the conditional headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Full,
    Partial(u64, u64),
    NotModified,
}

fn evaluate(headers: &HeaderMap, row: &Row) -> Result<Outcome, S3Error> {
    let etag = row.info.etag.as_str();
    let modified = u64::try_from(row.info.last_modified / 1000).unwrap_or_default();
    if let Some(v) = header(headers, header::IF_MATCH) {
        if !etag_listed(&etag_list(v), etag, false) {
            return Err(S3Error::precondition("If-Match"));
        }
    } else if let Some(date) = header(headers, header::IF_UNMODIFIED_SINCE).and_then(parse_http_date)
        && modified > date
    {
        return Err(S3Error::precondition("If-Unmodified-Since"));
    }
    if let Some(v) = header(headers, header::IF_NONE_MATCH) {
        if etag_listed(&etag_list(v), etag, true) {
            return Ok(Outcome::NotModified);
        }
    } else if let Some(date) = header(headers, header::IF_MODIFIED_SINCE).and_then(parse_http_date)
        && modified <= date
    {
        return Ok(Outcome::NotModified);
    }
    let Some(spec) = header(headers, header::RANGE).and_then(parse_range) else { return Ok(Outcome::Full) };
    if let Some(condition) = header(headers, header::IF_RANGE) {
        let condition = condition.trim();
        let holds = if condition.starts_with('"') || condition.starts_with("W/") {
            // If-Range needs a strong match: a weak tag never matches.
            condition.trim_matches('"') == etag && !condition.starts_with("W/")
        } else {
            parse_http_date(condition) == Some(modified)
        };
        if !holds {
            return Ok(Outcome::Full);
        }
    }
    match resolve(spec, row.info.size) {
        Some((start, end)) => Ok(Outcome::Partial(start, end)),
        None => Err(S3Error::new(416, "InvalidRange", "The requested range is not satisfiable")
            .with("RangeRequested", header(headers, header::RANGE).unwrap_or_default())
            .with("ActualObjectSize", row.info.size.to_string())
            .with_header("content-range", format!("bytes */{}", row.info.size))),
    }
}

fn set(response: &mut Response, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// Serves GET (or HEAD when `head`) of `bucket`/`key`.
pub async fn get_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    head: bool,
) -> Result<Response, S3Error> {
    if query.iter().any(|(k, v)| k == "partNumber" && v != "1") {
        return Err(S3Error::not_implemented("GetObject of one part (partNumber)"));
    }
    let mut attempt = 0;
    let (row, mut file) = loop {
        attempt += 1;
        let row = lookup(&ctx.store, bucket, key).await?.ok_or_else(|| S3Error::no_such_key(key))?;
        match tokio::fs::File::open(ctx.dir.join(&row.file_name)).await {
            Ok(file) => break (row, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < OPEN_ATTEMPTS => continue,
            Err(e) => return Err(S3Error::io(&format!("opening {}", row.file_name), e)),
        }
    };
    let on_disk = file.metadata().await.map_err(|e| S3Error::io("reading object metadata", e))?.len();
    if on_disk != row.info.size {
        return Err(S3Error::internal(format!(
            "object {bucket}/{key}: file {} has {on_disk} bytes, the store says {}",
            row.file_name, row.info.size
        )));
    }
    let outcome = evaluate(headers, &row)?;
    let (status, start, len) = match outcome {
        Outcome::Full => (StatusCode::OK, 0, row.info.size),
        Outcome::Partial(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Outcome::NotModified => (StatusCode::NOT_MODIFIED, 0, 0),
    };
    let body = if head || outcome == Outcome::NotModified || len == 0 {
        Body::empty()
    } else {
        file.seek(SeekFrom::Start(start)).await.map_err(|e| S3Error::io("seeking in the object", e))?;
        Body::from_stream(ReaderStream::with_capacity(file.take(len), READ_CHUNK))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    set(&mut response, header::ETAG, &format!("\"{}\"", row.info.etag));
    set(&mut response, header::LAST_MODIFIED, &http_date(row.info.last_modified));
    if outcome == Outcome::NotModified {
        return Ok(response);
    }
    set(&mut response, header::CONTENT_LENGTH, &len.to_string());
    set(&mut response, header::CONTENT_TYPE, "application/octet-stream");
    set(&mut response, header::ACCEPT_RANGES, "bytes");
    set(&mut response, HeaderName::from_static("x-amz-meta-sha256"), &row.info.sha256);
    if let Outcome::Partial(start, end) = outcome {
        set(&mut response, header::CONTENT_RANGE, &format!("bytes {start}-{end}/{}", row.info.size));
    }
    for (param, name) in RESPONSE_OVERRIDES {
        if let Some((_, value)) = query.iter().find(|(k, _)| k == param) {
            set(&mut response, name.clone(), value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9"), Some(RangeSpec::From(0, Some(9))));
        assert_eq!(parse_range("bytes=5-"), Some(RangeSpec::From(5, None)));
        assert_eq!(parse_range("bytes=-3"), Some(RangeSpec::Suffix(3)));
        for ignored in ["bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=-", "bytes=+1-2"] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
        assert_eq!(resolve(RangeSpec::From(0, Some(9)), 5), Some((0, 4)));
        assert_eq!(resolve(RangeSpec::From(5, None), 5), None);
        assert_eq!(resolve(RangeSpec::Suffix(3), 10), Some((7, 9)));
        assert_eq!(resolve(RangeSpec::Suffix(30), 10), Some((0, 9)));
        assert_eq!(resolve(RangeSpec::Suffix(0), 10), None);
        assert_eq!(resolve(RangeSpec::Suffix(1), 0), None);
    }

    #[test]
    fn etags_and_dates() {
        let list = etag_list("\"a\", W/\"b\", c");
        assert!(etag_listed(&list, "a", false));
        assert!(!etag_listed(&list, "b", false));
        assert!(etag_listed(&list, "b", true));
        assert!(etag_listed(&list, "c", false));
        assert!(etag_listed(&etag_list("*"), "x", false));
        let date = http_date(1_440_938_160_123);
        assert_eq!(date, "Sun, 30 Aug 2015 12:36:00 GMT");
        assert_eq!(parse_http_date(&date), Some(1_440_938_160));
    }
}
