//! Objects the server makes itself (the archive of a git commit): a file
//! written into the objects directory, hashed (MD5 for the ETag, SHA-256),
//! fsynced and committed like an upload, only if the key does not exist yet.
//! Two requests making the same object at once commit it once.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::S3Error;
use super::files::{self, Ctx, ObjectInfo, TempFile, WriteCondition};
use crate::protocol::sigv4::hex;
use crate::server::State;
use crate::server::api::ApiError;
use crate::server::store::now_millis;

/// Whether [`create_once`] made the object or found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The object.
    pub info: ObjectInfo,
    /// True when this call wrote it.
    pub created: bool,
}

fn api(e: S3Error) -> ApiError {
    ApiError::internal(format!("bundle store: {e}"))
}

/// The object `bucket`/`key`: the existing one, or the file `write` makes
/// (it gets the path of a fresh temp file in the objects directory, and
/// must leave the file's content there).
pub async fn create_once<F, Fut>(state: &State, bucket: &str, key: &str, write: F) -> Result<Adopted, ApiError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    let ctx = Ctx::of(state);
    files::ensure_recovered(&ctx).await.map_err(api)?;
    if let Some(row) = files::lookup(&ctx.store, bucket, key).await.map_err(api)? {
        return Ok(Adopted { info: row.info, created: false });
    }
    let temp = TempFile::new(ctx.dir.join(files::random_name(files::TEMP_PREFIX)));
    write(temp.path().to_path_buf()).await?;
    let path = temp.path().to_path_buf();
    let (size, md5, sha256) = tokio::task::spawn_blocking(move || hash_and_sync(&path))
        .await
        .map_err(|e| ApiError::internal(format!("hashing task: {e}")))?
        .map_err(|e| ApiError::internal(format!("bundle store: hashing {}: {e}", temp.path().display())))?;
    let info = ObjectInfo { size, etag: md5, sha256, last_modified: now_millis() };
    match files::commit(&ctx, bucket, key, temp, info, Some(WriteCondition::Absent)).await {
        Ok(info) => Ok(Adopted { info, created: true }),
        Err(e) if e.code == "PreconditionFailed" => {
            let row = files::lookup(&ctx.store, bucket, key).await.map_err(api)?;
            let row = row.ok_or_else(|| ApiError::internal(format!("{bucket}/{key} vanished while being made")))?;
            Ok(Adopted { info: row.info, created: false })
        }
        Err(e) => Err(api(e)),
    }
}

/// Size, hex MD5 and hex SHA-256 of `path`, which is then fsynced.
fn hash_and_sync(path: &Path) -> std::io::Result<(u64, String, String)> {
    let mut file = std::fs::File::open(path)?;
    let (mut md5, mut sha256) = (Md5::new(), Sha256::new());
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha256.update(&buffer[..n]);
        size += n as u64;
    }
    file.sync_all()?;
    Ok((size, hex(&md5.finalize()), hex(&sha256.finalize())))
}
