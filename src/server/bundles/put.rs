//! PutObject: body streamed to a temp file, checked, then committed
//! (see [`super::files`] for the crash rules).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::error::S3Error;
use super::files::{self, Ctx, ObjectInfo, WriteCondition};
use super::ingest::{self, Payload};
use super::limits;
use super::sign::ChunkSigner;
use crate::protocol::sigv4::hex;
use crate::server::store::now_millis;

/// The conditional-write headers of a PUT (`If-None-Match: *`, `If-Match`).
pub fn write_condition(headers: &HeaderMap) -> Result<Option<WriteCondition>, S3Error> {
    let get = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::trim);
    match (get(header::IF_NONE_MATCH), get(header::IF_MATCH)) {
        (Some(_), Some(_)) => Err(S3Error::not_implemented("If-Match together with If-None-Match")),
        (Some("*"), None) => Ok(Some(WriteCondition::Absent)),
        (Some(_), None) => Err(S3Error::not_implemented("If-None-Match other than * on PUT")),
        (None, Some(tags)) => Ok(Some(WriteCondition::Matches(super::get::parse_etags(tags)))),
        (None, None) => Ok(None),
    }
}

/// PutObject.
pub async fn put_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
    body: Body,
    payload: &Payload,
    signer: Option<ChunkSigner>,
) -> Result<Response, S3Error> {
    let setup = (|| {
        let condition = write_condition(headers)?;
        let slot = ingest::upload_slot()?;
        let expect = ingest::expectations(headers, payload, signer, limits().max_object_size)?;
        Ok((condition, slot, expect))
    })();
    let (condition, _slot, expect) = match setup {
        Ok(setup) => setup,
        Err(e) => return Err(ingest::refuse(body, headers, e).await),
    };
    let (temp, file) = files::create_temp(&ctx.dir).await?;
    let received = ingest::receive(body, expect, file).await?;
    let info = ObjectInfo {
        size: received.size,
        etag: hex(&received.md5),
        sha256: hex(&received.sha256),
        last_modified: now_millis(),
    };
    // The commit runs in its own task: once the body is in, it ends
    // (committed or cleaned up) even when the client goes away.
    let task = {
        let (ctx, bucket, key) = (ctx.clone(), bucket.to_string(), key.to_string());
        tokio::spawn(async move { files::commit(&ctx, &bucket, &key, temp, info, condition).await })
    };
    let info = task.await.map_err(|e| S3Error::internal(format!("commit task: {e}")))??;
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", info.etag)) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(sha256) = HeaderValue::from_str(&info.sha256) {
        headers.insert("x-amz-meta-sha256", sha256);
    }
    if let Some((algorithm, value)) = received.checksum
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        headers.insert(algorithm.header(), value);
    }
    Ok(response)
}
