//! Multipart uploads, as `aws s3 cp` and boto3's `upload_file` use them
//! above 8 MB. Each upload is a directory `objects/uploads/<id>/` holding
//! `upload.json` (bucket, key, creation time) and `part-NNNNN` files
//! (written as temp files, fsynced, renamed). Completion concatenates the
//! listed parts, streaming, into a new object file and commits it like a
//! PUT; the ETag is S3's: hex MD5 of the parts' binary MD5s, `-N`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::files::{self, Ctx, ObjectInfo, TEMP_PREFIX, TempFile, random_name};
use super::ingest::{self, Payload};
use super::sign::ChunkSigner;
use super::{limits, xml};
use crate::protocol::sigv4::hex;
use crate::server::store::now_millis;

/// Marks an upload whose completion is running.
pub const CLAIM_FILE: &str = "completing";
/// The upload's description.
const META_FILE: &str = "upload.json";
/// Buffer used when concatenating parts.
const COPY_BUFFER: usize = 1 << 20;

/// `upload.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Bucket of the object being uploaded.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Epoch milliseconds of CreateMultipartUpload.
    pub created: i64,
}

/// Reads `dir/upload.json`.
pub fn read_meta(dir: &Path) -> Option<Meta> {
    let text = std::fs::read_to_string(dir.join(META_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn part_name(number: u32) -> String {
    format!("part-{number:05}")
}

/// The directory of `upload_id` if it is one of ours for `bucket`/`key`.
async fn upload_dir(ctx: &Ctx, bucket: &str, key: &str, upload_id: &str) -> Result<PathBuf, S3Error> {
    if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(S3Error::no_such_upload(upload_id));
    }
    let dir = ctx.uploads().join(upload_id);
    let probe = dir.clone();
    let meta = tokio::task::spawn_blocking(move || read_meta(&probe))
        .await
        .map_err(|e| S3Error::internal(format!("reading upload: {e}")))?;
    match meta {
        Some(meta) if meta.bucket == bucket && meta.key == key => Ok(dir),
        _ => Err(S3Error::no_such_upload(upload_id)),
    }
}

fn xml_response(status: StatusCode, doc: String) -> Response {
    let mut response = Response::new(Body::from(doc));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

/// CreateMultipartUpload (`POST /bucket/key?uploads`).
pub async fn create(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    let upload_id = random_name("");
    let dir = ctx.uploads().join(&upload_id);
    let meta = Meta { bucket: bucket.to_string(), key: key.to_string(), created: now_millis() };
    let text = serde_json::to_vec(&meta).map_err(|e| S3Error::internal(format!("encoding upload: {e}")))?;
    let target = dir.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        crate::journal::create_dir_all_durable(&target)?;
        crate::journal::write_atomic(&target.join(META_FILE), &text)
    })
    .await
    .map_err(|e| S3Error::internal(format!("creating upload: {e}")))?
    .map_err(|e| S3Error::io(&format!("creating upload {}", dir.display()), e))?;
    let mut doc = format!("{}<InitiateMultipartUploadResult xmlns=\"{}\">", xml::PROLOG, xml::NS);
    xml::element(&mut doc, "Bucket", bucket);
    xml::element(&mut doc, "Key", key);
    xml::element(&mut doc, "UploadId", &upload_id);
    doc.push_str("</InitiateMultipartUploadResult>");
    Ok(xml_response(StatusCode::OK, doc))
}

/// The part number of an UploadPart request.
fn part_number(query: &[(String, String)]) -> Result<u32, S3Error> {
    let max = limits().max_parts;
    query
        .iter()
        .find(|(k, _)| k == "partNumber")
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(format!("Part number must be an integer between 1 and {max}, inclusive"))
        })
}

/// UploadPart (`PUT /bucket/key?partNumber=N&uploadId=ID`).
#[allow(clippy::too_many_arguments)]
pub async fn upload_part(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    upload_id: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
    payload: &Payload,
    signer: Option<ChunkSigner>,
) -> Result<Response, S3Error> {
    let setup = async {
        let number = part_number(query)?;
        let slot = ingest::upload_slot()?;
        let dir = upload_dir(ctx, bucket, key, upload_id).await?;
        let limits = limits();
        let expect = ingest::expectations(headers, payload, signer, limits.max_part_size.min(limits.max_object_size))?;
        Ok((number, slot, dir, expect))
    };
    let (number, _slot, dir, expect) = match setup.await {
        Ok(setup) => setup,
        Err(e) => return Err(ingest::refuse(body, headers, e).await),
    };
    let (temp, file) = files::create_temp(&dir).await?;
    let received = ingest::receive(body, expect, file).await?;
    tokio::fs::rename(temp.path(), dir.join(part_name(number)))
        .await
        .map_err(|e| S3Error::io("renaming the part", e))?;
    temp.keep();
    files::fsync_dir(&dir).await?;
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", hex(&received.md5))) {
        headers.insert(header::ETAG, etag);
    }
    if let Some((algorithm, value)) = received.checksum
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        headers.insert(algorithm.header(), value);
    }
    Ok(response)
}

/// AbortMultipartUpload (`DELETE /bucket/key?uploadId=ID`).
pub async fn abort(ctx: &Ctx, bucket: &str, key: &str, upload_id: &str) -> Result<Response, S3Error> {
    let dir = upload_dir(ctx, bucket, key, upload_id).await?;
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(S3Error::io("removing the upload", e)),
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// The parts a CompleteMultipartUpload document lists: (number, unquoted ETag).
fn parse_parts(doc: &str) -> Result<Vec<(u32, String)>, S3Error> {
    let malformed = || {
        S3Error::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    let root = xml::children(doc, "CompleteMultipartUpload");
    let root = root.first().ok_or_else(malformed)?;
    let mut parts = Vec::new();
    for part in xml::children(root, "Part") {
        let number = xml::child(part, "PartNumber").and_then(|n| n.trim().parse::<u32>().ok()).ok_or_else(malformed)?;
        let etag = xml::child(part, "ETag").ok_or_else(malformed)?;
        parts.push((number, etag.trim().trim_matches('"').to_string()));
    }
    if parts.is_empty() {
        return Err(malformed());
    }
    if parts.len() > limits().max_parts as usize {
        return Err(S3Error::invalid_argument(format!("more than {} parts", limits().max_parts)));
    }
    if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new(
            400,
            "InvalidPartOrder",
            "The list of parts was not in ascending order. The parts list must be specified in order of the part number.",
        ));
    }
    Ok(parts)
}

fn invalid_part(number: u32) -> S3Error {
    S3Error::new(
        400,
        "InvalidPart",
        "One or more of the specified parts could not be found. The part may not have been uploaded, \
         or the specified entity tag may not have matched the part's entity tag.",
    )
    .with("PartNumber", number.to_string())
}

/// CompleteMultipartUpload (`POST /bucket/key?uploadId=ID`) with its
/// (already received and verified) XML document.
pub async fn complete(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    upload_id: &str,
    doc: Bytes,
    location: String,
) -> Result<Response, S3Error> {
    let doc = std::str::from_utf8(&doc).map_err(|_| S3Error::new(400, "MalformedXML", "the document is not UTF-8"))?;
    let parts = parse_parts(doc)?;
    let dir = upload_dir(ctx, bucket, key, upload_id).await?;
    let claim = dir.join(CLAIM_FILE);
    match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&claim).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(S3Error::new(
                409,
                "OperationAborted",
                "A conflicting conditional operation is currently in progress against this resource. Try again.",
            ));
        }
        Err(e) => return Err(S3Error::io("claiming the upload", e)),
    }
    // The rest runs in its own task: once started it ends (committed or
    // cleaned up) even when the client goes away.
    let task = {
        let (ctx, bucket, key, dir) = (ctx.clone(), bucket.to_string(), key.to_string(), dir.clone());
        tokio::spawn(async move {
            let result = assemble_and_commit(&ctx, &bucket, &key, &dir, parts).await;
            match &result {
                Ok(_) => {
                    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                        log::warn!("bundle store: removing completed upload {}: {e}", dir.display());
                    }
                }
                Err(_) => {
                    let _ = tokio::fs::remove_file(dir.join(CLAIM_FILE)).await;
                }
            }
            result
        })
    };
    let info = task.await.map_err(|e| S3Error::internal(format!("completion task: {e}")))??;
    let mut doc = format!("{}<CompleteMultipartUploadResult xmlns=\"{}\">", xml::PROLOG, xml::NS);
    xml::element(&mut doc, "Location", &location);
    xml::element(&mut doc, "Bucket", bucket);
    xml::element(&mut doc, "Key", key);
    xml::element(&mut doc, "ETag", &format!("\"{}\"", info.etag));
    doc.push_str("</CompleteMultipartUploadResult>");
    Ok(xml_response(StatusCode::OK, doc))
}

async fn assemble_and_commit(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    dir: &Path,
    parts: Vec<(u32, String)>,
) -> Result<ObjectInfo, S3Error> {
    let target = ctx.dir.join(random_name(TEMP_PREFIX));
    let temp = TempFile::new(target.clone());
    let source = dir.to_path_buf();
    let (size, etag, sha256) = tokio::task::spawn_blocking(move || assemble(&source, &parts, &target))
        .await
        .map_err(|e| S3Error::internal(format!("assembly task: {e}")))??;
    let info = ObjectInfo { size, etag, sha256, last_modified: now_millis() };
    files::commit(ctx, bucket, key, temp, info, None).await
}

/// Concatenates the parts into `target` (fsynced), checking each part's
/// MD5 against its listed ETag and S3's size rules. Returns size, ETag, SHA-256.
fn assemble(dir: &Path, parts: &[(u32, String)], target: &Path) -> Result<(u64, String, String), S3Error> {
    let limits = limits();
    let mut files = Vec::with_capacity(parts.len());
    let mut total: u64 = 0;
    for (i, (number, _)) in parts.iter().enumerate() {
        let file = std::fs::File::open(dir.join(part_name(*number))).map_err(|_| invalid_part(*number))?;
        let len = file.metadata().map_err(|e| S3Error::io("reading a part", e))?.len();
        if i + 1 < parts.len() && len < limits.min_part_size {
            return Err(S3Error::new(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
            )
            .with("PartNumber", number.to_string())
            .with("MinSizeAllowed", limits.min_part_size.to_string())
            .with("ProposedSize", len.to_string()));
        }
        total = total.saturating_add(len);
        if total > limits.max_object_size {
            return Err(S3Error::too_large(limits.max_object_size));
        }
        files.push(file);
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| S3Error::io("creating the assembled object", e))?;
    let mut sha256 = Sha256::new();
    let mut etags = Md5::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    for ((number, listed), mut file) in parts.iter().zip(files) {
        let mut md5 = Md5::new();
        loop {
            let n = file.read(&mut buffer).map_err(|e| S3Error::io("reading a part", e))?;
            if n == 0 {
                break;
            }
            md5.update(&buffer[..n]);
            sha256.update(&buffer[..n]);
            out.write_all(&buffer[..n]).map_err(|e| S3Error::io("writing the assembled object", e))?;
        }
        let md5 = md5.finalize();
        if !hex(&md5).eq_ignore_ascii_case(listed) {
            return Err(invalid_part(*number));
        }
        etags.update(md5);
    }
    out.sync_all().map_err(|e| S3Error::io("fsync of the assembled object", e))?;
    Ok((total, format!("{}-{}", hex(&etags.finalize()), parts.len()), hex(&sha256.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_documents() {
        let doc = r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"abc"</ETag><PartNumber>1</PartNumber></Part><Part><ETag>&quot;def&quot;</ETag><PartNumber>2</PartNumber><ChecksumCRC32>x</ChecksumCRC32></Part></CompleteMultipartUpload>"#;
        assert_eq!(parse_parts(doc).unwrap(), vec![(1, "abc".to_string()), (2, "def".to_string())]);
        let unordered = doc.replace("<PartNumber>2</PartNumber>", "<PartNumber>1</PartNumber>");
        assert_eq!(parse_parts(&unordered).unwrap_err().code, "InvalidPartOrder");
        assert_eq!(
            parse_parts("<CompleteMultipartUpload></CompleteMultipartUpload>").unwrap_err().code,
            "MalformedXML"
        );
        assert_eq!(parse_parts("garbage").unwrap_err().code, "MalformedXML");
    }
}
