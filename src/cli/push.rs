//! `edgedeploy push`: bundle a directory as a tgz, upload it to the bundle
//! store, register it as a revision of the application.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::connect::Operator;
use crate::protocol::sigv4::hex;

/// Default bucket of the bundle store.
pub const DEFAULT_BUCKET: &str = "edgedeploy-bundles";

/// A pushed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's ETag.
    pub etag: String,
    /// SHA-256 of the bundle, hex.
    pub sha256: String,
}

impl Pushed {
    /// The RevisionLocation of the pushed bundle.
    pub fn revision(&self) -> Value {
        json!({
            "revisionType": "S3",
            "s3Location": { "bucket": self.bucket, "key": self.key, "bundleType": "tgz", "eTag": self.etag.trim_matches('"') }
        })
    }
}

/// Bundles `source`, uploads it and registers it under `application`.
pub fn push(
    op: &Operator,
    application: &str,
    source: &Path,
    bucket: &str,
    key: Option<&str>,
    description: Option<&str>,
) -> Result<Pushed, String> {
    if !source.join("appspec.yml").is_file() && !source.join("appspec.yaml").is_file() {
        return Err(format!("{} has no appspec.yml: push the directory that holds the AppSpec", source.display()));
    }
    let mut bundle = tempfile_in_tmp()?;
    let (size, sha256) = write_tgz(source, &mut bundle).map_err(|e| format!("bundling {}: {e}", source.display()))?;
    let key = key.map(str::to_string).unwrap_or_else(|| format!("{application}/{}.tgz", &sha256[..16]));
    bundle.rewind().map_err(|e| e.to_string())?;
    let path = format!("/{bucket}/{key}");
    let etag = op.client().s3_put(&path, &mut bundle, size, &sha256).map_err(|e| op.describe("upload", &e))?;
    let pushed = Pushed { bucket: bucket.to_string(), key, size, etag, sha256 };
    let mut input = json!({ "applicationName": application, "revision": pushed.revision() });
    if let Some(description) = description {
        input["description"] = json!(description);
    }
    op.call("RegisterApplicationRevision", input)?;
    Ok(pushed)
}

/// An anonymous temporary file (unlinked at once, gone when closed).
fn tempfile_in_tmp() -> Result<File, String> {
    let path = std::env::temp_dir().join(format!(
        "edgedeploy-push-{}-{}.tgz",
        std::process::id(),
        crate::clock::now_epoch().1
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Writes `source` as a gzipped tar to `out`; returns its size and SHA-256.
fn write_tgz(source: &Path, out: &mut File) -> io::Result<(u64, String)> {
    let mut hashing = HashingWriter { inner: out, hasher: Sha256::new(), written: 0 };
    {
        let gz = flate2::write::GzEncoder::new(&mut hashing, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.append_dir_all(".", source)?;
        tar.into_inner()?.finish()?;
    }
    let sha256 = hex(&hashing.hasher.finalize_reset());
    Ok((hashing.written, sha256))
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
