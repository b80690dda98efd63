//! A GitHub revision at CreateDeployment: the repository's source, the
//! commit resolved to its full id (fetching a URL's mirror first when the
//! commit is not there yet), and the commit's tree archived once into the
//! bundle store as `edgedeploy-git/<repository>/<commit>.tgz`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::run::{self, FETCH_TIMEOUT, LOCAL_TIMEOUT, git};
use super::{Source, Sources};
use crate::protocol::spec::S3Revision;
use crate::server::State;
use crate::server::api::ApiError;
use crate::server::bundles;

/// The bundle store bucket holding commit archives (reserved).
pub const ARCHIVE_BUCKET: &str = "edgedeploy-git";
/// Bundle type of the archives.
pub const ARCHIVE_TYPE: &str = "tgz";

/// One lock per repository: fetches and archives of one repository run one
/// at a time (git's own locks would make a second fetch fail).
static LOCKS: LazyLock<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);

fn lock_of(repository: &str) -> Arc<Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(repository.to_string()).or_default().clone()
}

/// The key of the archive of `commit` (full id) of `repository`.
pub fn archive_key(repository: &str, commit: &str) -> String {
    format!("{repository}/{commit}.{ARCHIVE_TYPE}")
}

fn does_not_exist(message: String) -> ApiError {
    ApiError::client("RevisionDoesNotExistException", message)
}

/// A commit id as given: 4 to 64 hex digits (an abbreviation, a SHA-1 or
/// a SHA-256 id). Names of branches or tags are not commit ids.
fn check_commit_id(commit: &str) -> Result<(), ApiError> {
    if (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err(ApiError::client(
        "InvalidRevisionException",
        format!("revision.gitHubLocation.commitId {commit:?} is not a commit id (4 to 40 hexadecimal digits)"),
    ))
}

fn is_full_id(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64)
}

/// For a GitHub revision: resolves its commit, archives it into the bundle
/// store (once per commit) and returns the revision with the full commit
/// id. Other revisions are returned as they are.
pub async fn prepare_revision(state: &State, revision: Value) -> Result<Value, ApiError> {
    if revision["revisionType"] != "GitHub" {
        return Ok(revision);
    }
    let repository = revision["gitHubLocation"]["repository"].as_str().unwrap_or_default().to_string();
    let commit = revision["gitHubLocation"]["commitId"].as_str().unwrap_or_default().to_ascii_lowercase();
    check_commit_id(&commit)?;
    let source = find_source(&state.settings.git, &repository)?;
    let lock = lock_of(&repository);
    let _serial = lock.lock().await;
    let dir = repository_dir(state, &repository, &source, &commit).await?;
    let full = resolve(&dir, &commit).await.map_err(|e| {
        does_not_exist(format!("commit {commit} does not exist in repository {repository} ({source}): {e}"))
    })?;
    let key = archive_key(&repository, &full);
    let written = {
        let (dir, full) = (dir.clone(), full.clone());
        bundles::create_once(state, ARCHIVE_BUCKET, &key, |path| async move { write_archive(&dir, &full, &path).await })
            .await?
    };
    if written.created {
        log::info!(
            "git: archived {repository} at {full}: {} bytes, sha256 {}, as s3://{ARCHIVE_BUCKET}/{key}",
            written.info.size,
            written.info.sha256
        );
    } else {
        log::info!("git: {repository} at {full} is already archived as s3://{ARCHIVE_BUCKET}/{key}");
    }
    let mut resolved = revision;
    resolved["gitHubLocation"]["commitId"] = json!(full);
    Ok(resolved)
}

fn find_source(sources: &Sources, repository: &str) -> Result<Source, ApiError> {
    if sources.is_empty() {
        return Err(does_not_exist(format!(
            "repository {repository:?}: this server has no git repositories configured \
             (start it with --git-repository NAME=PATH_OR_URL or --git-root DIR; see docs/revisions.md)"
        )));
    }
    sources.find(repository).ok_or_else(|| {
        does_not_exist(format!(
            "repository {repository:?} is not one this server knows (configured with --git-repository or \
             under --git-root)"
        ))
    })
}

/// The repository to read `commit` from: a path as it is; a URL's mirror,
/// fetched unless it already has the full commit.
async fn repository_dir(state: &State, repository: &str, source: &Source, commit: &str) -> Result<PathBuf, ApiError> {
    let url = match source {
        Source::Path(path) => return Ok(path.clone()),
        Source::Url(url) => url,
    };
    let mirror = state.data_dir.join("git").join("mirrors").join(format!("{repository}.git"));
    if !mirror.join("HEAD").is_file() {
        create_mirror(&mirror).await?;
    } else if is_full_id(commit) && resolve(&mirror, commit).await.is_ok() {
        return Ok(mirror);
    }
    let fetched = git(&mirror, &["fetch", "--quiet", "--prune", "--", url, "+refs/*:refs/*"], FETCH_TIMEOUT).await;
    if let Err(e) = fetched {
        if resolve(&mirror, commit).await.is_ok() {
            log::warn!("git: fetching {repository} from {url}: {e}; using the mirror's copy of {commit}");
            return Ok(mirror);
        }
        return Err(does_not_exist(format!("repository {repository}: fetching {url} failed: {e}")));
    }
    Ok(mirror)
}

async fn create_mirror(mirror: &Path) -> Result<(), ApiError> {
    let parent = mirror.parent().unwrap_or(mirror);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| ApiError::internal(format!("git: creating {}: {e}", parent.display())))?;
    let path = mirror.to_string_lossy();
    git(parent, &["init", "--bare", "--quiet", "--", &path], LOCAL_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| ApiError::internal(format!("git: creating the mirror {}: {e}", mirror.display())))
}

/// The full id of `commit` in `dir`.
async fn resolve(dir: &Path, commit: &str) -> Result<String, run::GitError> {
    let spec = format!("{commit}^{{commit}}");
    let out = git(dir, &["rev-parse", "--verify", "--end-of-options", &spec], LOCAL_TIMEOUT).await?;
    let full = String::from_utf8_lossy(&out).trim().to_string();
    if is_full_id(&full) && full.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(full)
    } else {
        Err(run::GitError::Failed { command: "git rev-parse".into(), message: format!("unexpected output {full:?}") })
    }
}

/// `git archive` of `commit` as a gzipped tar into `path`.
async fn write_archive(dir: &Path, commit: &str, path: &Path) -> Result<(), ApiError> {
    let output = format!("--output={}", path.display());
    git(dir, &["archive", "--format=tar.gz", &output, commit], LOCAL_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| ApiError::internal(format!("git: archiving {commit} of {}: {e}", dir.display())))
}

/// The archive of `commit` of `repository` for the deployment
/// specification (its bucket, key, ETag and SHA-256), if it exists.
pub async fn spec_archive(
    conn: &mut sqlx::AnyConnection,
    repository: &str,
    commit: &str,
) -> Result<Option<S3Revision>, ApiError> {
    let key = archive_key(repository, commit);
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT etag, sha256 FROM objects WHERE bucket = $1 AND object_key = $2")
            .bind(ARCHIVE_BUCKET)
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(etag, sha256)| S3Revision {
        bucket: ARCHIVE_BUCKET.into(),
        key,
        bundle_type: ARCHIVE_TYPE.into(),
        version: None,
        etag: Some(format!("\"{etag}\"")),
        sha256: Some(sha256),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_are_hex() {
        for good in ["abcd", "0123456789abcdef0123456789abcdef01234567"] {
            assert!(check_commit_id(good).is_ok(), "{good}");
        }
        for bad in ["abc", "main", "HEAD~1", "--upload-pack=x", "abcd^{tree}", &"a".repeat(65)] {
            assert_eq!(check_commit_id(bad).unwrap_err().type_, "InvalidRevisionException", "{bad}");
        }
        assert_eq!(archive_key("acme/shop", "ab12"), "acme/shop/ab12.tgz");
    }
}
