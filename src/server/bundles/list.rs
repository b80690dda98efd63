//! Listings: ListObjectsV2 (`GET /bucket?list-type=2`), ListObjects (v1,
//! `GET /bucket`), ListBuckets (`GET /`). Keys are listed in byte order
//! (SQLite's); `delimiter` groups keys into CommonPrefixes.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::S3Error;
use super::files::Ctx;
use super::xml;
use crate::protocol::sigv4::uri_encode;

/// Most keys in one answer (S3's limit).
pub const MAX_KEYS: usize = 1000;
/// Above every character: `prefix + LAST` is after every key starting with `prefix`.
const LAST: char = '\u{10FFFF}';

/// `2015-08-30T12:36:00.000Z` of epoch milliseconds.
pub fn iso_time(millis: i64) -> String {
    let secs = u64::try_from(millis.div_euclid(1000)).unwrap_or_default();
    let ms = millis.rem_euclid(1000);
    format!("{}.{ms:03}Z", crate::clock::format_utc(secs).replace(' ', "T"))
}

fn xml_response(doc: String) -> Response {
    let mut response = Response::new(Body::from(doc));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

/// ListBuckets: the buckets that hold objects (buckets are implicit).
pub async fn list_buckets(ctx: &Ctx) -> Result<Response, S3Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT bucket, MIN(last_modified) FROM objects GROUP BY bucket ORDER BY bucket")
            .fetch_all(&ctx.store.pool)
            .await?;
    let mut doc = format!("{}<ListAllMyBucketsResult xmlns=\"{}\">", xml::PROLOG, xml::NS);
    doc.push_str("<Owner><ID>edgedeploy</ID><DisplayName>edgedeploy</DisplayName></Owner><Buckets>");
    for (bucket, created) in rows {
        doc.push_str("<Bucket>");
        xml::element(&mut doc, "Name", &bucket);
        xml::element(&mut doc, "CreationDate", &iso_time(created));
        doc.push_str("</Bucket>");
    }
    doc.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_response(doc))
}

struct Entry {
    key: String,
    size: i64,
    etag: String,
    last_modified: i64,
}

struct Listing {
    contents: Vec<Entry>,
    prefixes: Vec<String>,
    truncated: bool,
    /// Where the next page starts (exclusive), when truncated.
    next: Option<String>,
}

/// Lists up to `max_keys` entries of `bucket` after `after` (exclusive).
async fn scan(
    ctx: &Ctx,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    mut after: String,
    max_keys: usize,
) -> Result<Listing, S3Error> {
    let mut listing = Listing { contents: Vec::new(), prefixes: Vec::new(), truncated: false, next: None };
    if max_keys == 0 {
        return Ok(listing);
    }
    'pages: loop {
        let batch = (max_keys - listing.contents.len() - listing.prefixes.len() + 1).min(MAX_KEYS + 1);
        let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT object_key, size, etag, last_modified FROM objects \
             WHERE bucket = $1 AND object_key > $2 AND object_key >= $3 ORDER BY object_key LIMIT $4",
        )
        .bind(bucket)
        .bind(&after)
        .bind(prefix)
        .bind(i64::try_from(batch).unwrap_or(1))
        .fetch_all(&ctx.store.pool)
        .await?;
        let exhausted = rows.len() < batch;
        for (key, size, etag, last_modified) in rows {
            // Keys with the prefix are contiguous in byte order.
            if !key.starts_with(prefix) {
                break 'pages;
            }
            if listing.contents.len() + listing.prefixes.len() == max_keys {
                listing.truncated = true;
                listing.next = Some(after);
                break 'pages;
            }
            let rest = &key[prefix.len()..];
            if !delimiter.is_empty()
                && let Some(at) = rest.find(delimiter)
            {
                let common = format!("{prefix}{}", &rest[..at + delimiter.len()]);
                after = format!("{common}{LAST}");
                listing.prefixes.push(common);
                continue 'pages;
            }
            after = key.clone();
            listing.contents.push(Entry { key, size, etag, last_modified });
        }
        if exhausted {
            break;
        }
    }
    Ok(listing)
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// ListObjectsV2 (`v2`) or ListObjects.
pub async fn list_objects(ctx: &Ctx, bucket: &str, query: &[(String, String)], v2: bool) -> Result<Response, S3Error> {
    let prefix = param(query, "prefix").unwrap_or_default();
    let delimiter = param(query, "delimiter").unwrap_or_default();
    let max_keys = match param(query, "max-keys") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| S3Error::invalid_argument("Provided max-keys not an integer or within integer range"))?,
        None => MAX_KEYS as i64,
    };
    let max_keys = usize::try_from(max_keys).unwrap_or(MAX_KEYS).min(MAX_KEYS);
    let url = match param(query, "encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => return Err(S3Error::invalid_argument("Invalid Encoding Method specified in Request")),
    };
    let token = param(query, "continuation-token");
    let start_after = if v2 { param(query, "start-after") } else { param(query, "marker") };
    let after = match (v2, token) {
        (true, Some(token)) => URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(|| S3Error::invalid_argument("The continuation token provided is incorrect"))?,
        _ => start_after.unwrap_or_default().to_string(),
    };
    let listing = scan(ctx, bucket, prefix, delimiter, after, max_keys).await?;
    let enc = |text: &str| if url { uri_encode(text, true) } else { text.to_string() };
    let mut doc = format!("{}<ListBucketResult xmlns=\"{}\">", xml::PROLOG, xml::NS);
    xml::element(&mut doc, "Name", bucket);
    xml::element(&mut doc, "Prefix", &enc(prefix));
    if v2 {
        xml::element(&mut doc, "KeyCount", &(listing.contents.len() + listing.prefixes.len()).to_string());
        if let Some(token) = token {
            xml::element(&mut doc, "ContinuationToken", token);
        }
        if let Some(start) = start_after {
            xml::element(&mut doc, "StartAfter", &enc(start));
        }
        if let Some(next) = listing.next.as_deref().filter(|_| listing.truncated) {
            xml::element(&mut doc, "NextContinuationToken", &URL_SAFE_NO_PAD.encode(next));
        }
    } else {
        xml::element(&mut doc, "Marker", &enc(start_after.unwrap_or_default()));
        if let Some(next) = listing.next.as_deref().filter(|_| listing.truncated && !delimiter.is_empty()) {
            xml::element(&mut doc, "NextMarker", &enc(next.trim_end_matches(LAST)));
        }
    }
    xml::element(&mut doc, "MaxKeys", &max_keys.to_string());
    if !delimiter.is_empty() {
        xml::element(&mut doc, "Delimiter", &enc(delimiter));
    }
    if url {
        xml::element(&mut doc, "EncodingType", "url");
    }
    xml::element(&mut doc, "IsTruncated", if listing.truncated { "true" } else { "false" });
    for entry in &listing.contents {
        doc.push_str("<Contents>");
        xml::element(&mut doc, "Key", &enc(&entry.key));
        xml::element(&mut doc, "LastModified", &iso_time(entry.last_modified));
        xml::element(&mut doc, "ETag", &format!("\"{}\"", entry.etag));
        xml::element(&mut doc, "Size", &entry.size.to_string());
        xml::element(&mut doc, "StorageClass", "STANDARD");
        doc.push_str("</Contents>");
    }
    for common in &listing.prefixes {
        doc.push_str("<CommonPrefixes>");
        xml::element(&mut doc, "Prefix", &enc(common));
        doc.push_str("</CommonPrefixes>");
    }
    doc.push_str("</ListBucketResult>");
    Ok(xml_response(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(1_440_938_160_123), "2015-08-30T12:36:00.123Z");
    }
}
