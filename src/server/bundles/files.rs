//! Where objects live: one file per object in `DATA_DIR/objects/`, named
//! `o-<random>`, and one `objects` row per key pointing at it. Writes go to
//! `tmp-<random>` first; a commit fsyncs, renames, fsyncs the directory, then
//! points the row at the new file and only then removes the old one. After a
//! crash at any instant the row names a complete file (old or new);
//! [`recover`] removes the temp files and the files no row names.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rand::Rng;
use tokio::sync::Mutex;

use super::error::S3Error;
use crate::server::State;
use crate::server::api::ApiError;
use crate::server::store::{Store, now_millis};

/// Prefix of files being written.
pub const TEMP_PREFIX: &str = "tmp-";
/// Prefix of committed object files.
pub const OBJECT_PREFIX: &str = "o-";
/// Subdirectory of pending multipart uploads.
pub const UPLOADS_DIR: &str = "uploads";

/// Serializes the "read old file name, upsert, remove old file" step so
/// that two writers of one key never remove each other's file.
static COMMIT: Mutex<()> = Mutex::const_new(());

/// Data directories whose leftovers were already cleaned in this process.
static RECOVERED: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// What the bundle store needs of the server state, owned so that a commit
/// can run to its end in its own task even when the client goes away.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// `DATA_DIR/objects`.
    pub dir: PathBuf,
}

impl Ctx {
    /// The context of `state`.
    pub fn of(state: &State) -> Ctx {
        Ctx { store: state.store.clone(), dir: state.data_dir.join("objects") }
    }

    /// `DATA_DIR/objects/uploads`.
    pub fn uploads(&self) -> PathBuf {
        self.dir.join(UPLOADS_DIR)
    }
}

/// An object as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag without quotes: hex MD5, or `<hex>-<parts>` for multipart uploads.
    pub etag: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Last modification, epoch milliseconds.
    pub last_modified: i64,
}

/// One `objects` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Size, etag (unquoted), sha256, modification time.
    pub info: ObjectInfo,
    /// File name in `DATA_DIR/objects`.
    pub file_name: String,
}

/// The object `bucket`/`key`, if it exists: for putting its sha256 into a
/// deployment specification.
pub async fn object_info(state: &State, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, ApiError> {
    lookup(&state.store, bucket, key).await.map(|row| row.map(|r| r.info)).map_err(|e| ApiError {
        status: e.status,
        type_: e.code.to_string(),
        message: e.message,
    })
}

/// Reads the row of `bucket`/`key`.
pub async fn lookup(store: &Store, bucket: &str, key: &str) -> Result<Option<Row>, S3Error> {
    let row: Option<(i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT size, etag, sha256, file_name, last_modified FROM objects WHERE bucket = $1 AND object_key = $2",
    )
    .bind(bucket)
    .bind(key)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.map(|(size, etag, sha256, file_name, last_modified)| Row {
        info: ObjectInfo { size: u64::try_from(size).unwrap_or_default(), etag, sha256, last_modified },
        file_name,
    }))
}

/// A random name with `prefix` (128 bits, hex).
pub fn random_name(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}{}", crate::protocol::sigv4::hex(&bytes))
}

/// A file that is removed when dropped unless [`TempFile::keep`] was called:
/// cleans up after errors and after requests abandoned half-way.
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Guards `path`.
    pub fn new(path: PathBuf) -> TempFile {
        TempFile { path: Some(path) }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Now guards `path` instead (after a rename).
    pub fn moved_to(&mut self, path: PathBuf) {
        self.path = Some(path);
    }

    /// Stops guarding: the file stays.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("bundle store: removing {}: {e}", path.display());
        }
    }
}

/// Creates a new temp file in `dir`.
pub async fn create_temp(dir: &Path) -> Result<(TempFile, tokio::fs::File), S3Error> {
    let path = dir.join(random_name(TEMP_PREFIX));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(|e| S3Error::io(&format!("creating {}", path.display()), e))?;
    Ok((TempFile::new(path), file))
}

/// Fsyncs a directory (its entries) on a blocking thread.
pub async fn fsync_dir(dir: &Path) -> Result<(), S3Error> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::journal::fsync_dir(&owned))
        .await
        .map_err(|e| S3Error::internal(format!("fsync task: {e}")))?
        .map_err(|e| S3Error::io(&format!("fsync {}", dir.display()), e))
}

/// A condition on the current object, checked atomically with the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// `If-None-Match: *`: only if there is no object yet.
    Absent,
    /// `If-Match: <etag>`: only if the object's etag is one of these (or `*`: exists).
    Matches(Vec<String>),
}

/// Makes the fsynced file `temp` the content of `bucket`/`key`.
pub async fn commit(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    mut temp: TempFile,
    info: ObjectInfo,
    condition: Option<WriteCondition>,
) -> Result<ObjectInfo, S3Error> {
    let file_name = random_name(OBJECT_PREFIX);
    let final_path = ctx.dir.join(&file_name);
    tokio::fs::rename(temp.path(), &final_path).await.map_err(|e| S3Error::io("renaming the upload", e))?;
    temp.moved_to(final_path);
    fsync_dir(&ctx.dir).await?;
    let _serial = COMMIT.lock().await;
    let old = lookup(&ctx.store, bucket, key).await?;
    match (&condition, &old) {
        (Some(WriteCondition::Absent), Some(_)) => return Err(S3Error::precondition("If-None-Match")),
        (Some(WriteCondition::Matches(_)), None) => return Err(S3Error::no_such_key(key)),
        (Some(WriteCondition::Matches(tags)), Some(old)) if !super::get::etag_listed(tags, &old.info.etag, false) => {
            return Err(S3Error::precondition("If-Match"));
        }
        _ => {}
    }
    let size = i64::try_from(info.size).map_err(|_| S3Error::internal("object size over i64"))?;
    sqlx::query(
        "INSERT INTO objects (bucket, object_key, size, etag, sha256, file_name, last_modified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (bucket, object_key) DO UPDATE SET size = excluded.size, etag = excluded.etag, \
         sha256 = excluded.sha256, file_name = excluded.file_name, last_modified = excluded.last_modified",
    )
    .bind(bucket)
    .bind(key)
    .bind(size)
    .bind(&info.etag)
    .bind(&info.sha256)
    .bind(&file_name)
    .bind(info.last_modified)
    .execute(&ctx.store.pool)
    .await?;
    temp.keep();
    if let Some(old) = old {
        remove_object_file(&ctx.dir, &old.file_name).await;
    }
    Ok(info)
}

/// Removes `bucket`/`key` (no error when absent).
pub async fn delete(ctx: &Ctx, bucket: &str, key: &str) -> Result<(), S3Error> {
    let _serial = COMMIT.lock().await;
    let Some(old) = lookup(&ctx.store, bucket, key).await? else { return Ok(()) };
    sqlx::query("DELETE FROM objects WHERE bucket = $1 AND object_key = $2")
        .bind(bucket)
        .bind(key)
        .execute(&ctx.store.pool)
        .await?;
    remove_object_file(&ctx.dir, &old.file_name).await;
    Ok(())
}

/// Removes a file no row names any more; a failure only leaves an orphan
/// that [`recover`] removes.
async fn remove_object_file(dir: &Path, name: &str) {
    if !name.starts_with(OBJECT_PREFIX) || name.contains('/') {
        log::warn!("bundle store: not removing unexpected file name {name:?}");
        return;
    }
    match tokio::fs::remove_file(dir.join(name)).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("bundle store: removing {name}: {e}"),
    }
}

/// What [`recover`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Temp files of interrupted uploads removed.
    pub temp_files: usize,
    /// Object files no row named (crash between rename and row update, or
    /// between row update and removal of the previous file) removed.
    pub orphans: usize,
    /// Multipart uploads removed (unreadable, or older than the expiry).
    pub expired_uploads: usize,
}

/// Cleans up after a crash: temp files, object files no row names, temp
/// files of multipart parts, and multipart uploads past their expiry. Call
/// it before the server serves requests (the bundle store otherwise calls
/// it on its first request); it must not run while uploads are in flight.
pub async fn recover(state: &State) -> Result<RecoveryReport, String> {
    let ctx = Ctx::of(state);
    let mut done = RECOVERED.lock().await;
    let report = recover_dir(&ctx).await.map_err(|e| format!("bundle store recovery: {e}"))?;
    done.insert(ctx.dir.clone());
    Ok(report)
}

/// Runs [`recover`] once per data directory and process, on first use.
pub async fn ensure_recovered(ctx: &Ctx) -> Result<(), S3Error> {
    let mut done = RECOVERED.lock().await;
    if done.contains(&ctx.dir) {
        return Ok(());
    }
    recover_dir(ctx).await.map_err(|e| S3Error::internal(format!("recovery: {e}")))?;
    done.insert(ctx.dir.clone());
    Ok(())
}

async fn recover_dir(ctx: &Ctx) -> Result<RecoveryReport, S3Error> {
    let referenced: Vec<(String,)> = sqlx::query_as("SELECT file_name FROM objects").fetch_all(&ctx.store.pool).await?;
    let referenced: HashSet<String> = referenced.into_iter().map(|(f,)| f).collect();
    let dir = ctx.dir.clone();
    let expiry = super::limits().upload_expiry;
    let report = tokio::task::spawn_blocking(move || clean_dir(&dir, &referenced, expiry))
        .await
        .map_err(|e| S3Error::internal(format!("recovery task: {e}")))?
        .map_err(|e| S3Error::io("cleaning the objects directory", e))?;
    if report != RecoveryReport::default() {
        log::info!(
            "bundle store recovery: removed {} temp file(s), {} orphan object file(s), {} stale multipart upload(s)",
            report.temp_files,
            report.orphans,
            report.expired_uploads
        );
    }
    Ok(report)
}

fn clean_dir(dir: &Path, referenced: &HashSet<String>, expiry: std::time::Duration) -> io::Result<RecoveryReport> {
    crate::journal::create_dir_all_durable(&dir.join(UPLOADS_DIR))?;
    let mut report = RecoveryReport::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            std::fs::remove_file(entry.path())?;
            report.temp_files += 1;
        } else if name.starts_with(OBJECT_PREFIX) && !referenced.contains(&name) {
            std::fs::remove_file(entry.path())?;
            report.orphans += 1;
        }
    }
    let now = now_millis();
    let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
    for entry in std::fs::read_dir(dir.join(UPLOADS_DIR))? {
        let entry = entry?;
        let path = entry.path();
        let created = super::multipart::read_meta(&path).map(|m| m.created);
        if !entry.file_type()?.is_dir() || created.is_none_or(|c| now.saturating_sub(c) > expiry_ms) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            report.expired_uploads += 1;
            continue;
        }
        for part in std::fs::read_dir(&path)? {
            let part = part?;
            let name = part.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) || name == super::multipart::CLAIM_FILE {
                std::fs::remove_file(part.path())?;
                report.temp_files += 1;
            }
        }
    }
    crate::journal::fsync_dir(dir)?;
    Ok(report)
}
