//! GitHub-type revisions from git repositories the server is configured
//! with (`docs/revisions.md`): `gitHubLocation {repository, commitId}` is
//! resolved at CreateDeployment against a local repository or a mirror of a
//! git URL, archived once per commit into the bundle store, and the agents
//! download that archive like any bundle.
//!
//! - [`Sources`]: the configuration (`--git-repository NAME=SOURCE`,
//!   `--git-root DIR`).
//! - [`run`]: the `git` command, with a deadline.
//! - [`archive`]: resolution of a commit and its archive in the bundle store.

pub mod archive;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use archive::{ARCHIVE_BUCKET, archive_key, prepare_revision, spec_archive};

/// Where one repository's commits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A repository on the server's disk (bare or not): used in place.
    Path(PathBuf),
    /// A git URL (`https://`, `ssh://`, `git://`, `file://`, `user@host:path`):
    /// fetched into a mirror under `DATA_DIR/git/`.
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// The git repositories GitHub revisions are resolved from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--git-repository NAME=SOURCE`, by NAME (what `repository` holds).
    pub repositories: BTreeMap<String, Source>,
    /// `--git-root DIR`: `owner/repo` is `DIR/owner/repo.git` (or `DIR/owner/repo`).
    pub root: Option<PathBuf>,
}

impl Sources {
    /// Sources from the server's flags; checks names, that paths exist and
    /// that the root is a directory.
    pub fn from_flags(repositories: &[String], root: Option<&Path>) -> Result<Sources, String> {
        let mut sources = Sources { repositories: BTreeMap::new(), root: root.map(Path::to_path_buf) };
        if let Some(root) = root
            && !root.is_dir()
        {
            return Err(format!("--git-root {}: not a directory", root.display()));
        }
        for flag in repositories {
            let (name, source) = parse_repository_flag(flag)?;
            if sources.repositories.insert(name.clone(), source).is_some() {
                return Err(format!("--git-repository {flag:?}: {name} is given twice"));
            }
        }
        Ok(sources)
    }

    /// True when no repository is configured at all.
    pub fn is_empty(&self) -> bool {
        self.repositories.is_empty() && self.root.is_none()
    }

    /// The source of `repository`: a `--git-repository` of that name, else
    /// a repository under `--git-root`.
    pub fn find(&self, repository: &str) -> Option<Source> {
        if let Some(source) = self.repositories.get(repository) {
            return Some(source.clone());
        }
        let root = self.root.as_ref()?;
        if !valid_repository_name(repository) {
            return None;
        }
        [root.join(format!("{repository}.git")), root.join(repository)]
            .into_iter()
            .find(|p| p.is_dir())
            .map(Source::Path)
    }
}

/// `NAME=SOURCE` of `--git-repository`.
pub fn parse_repository_flag(flag: &str) -> Result<(String, Source), String> {
    let (name, source) = flag.split_once('=').ok_or_else(|| {
        format!("--git-repository {flag:?}: expected NAME=PATH_OR_URL, e.g. acme/shop=/srv/git/shop.git")
    })?;
    if !valid_repository_name(name) {
        return Err(format!(
            "--git-repository {flag:?}: {name:?} is not a repository name (like owner/repo: letters, digits, \
             '.', '_', '-', parts separated by '/', none starting with '.')"
        ));
    }
    if source.is_empty() {
        return Err(format!("--git-repository {flag:?}: the path or URL is empty"));
    }
    let source = if is_url(source) {
        Source::Url(source.to_string())
    } else {
        let path = PathBuf::from(source);
        if !path.is_dir() {
            return Err(format!("--git-repository {flag:?}: {source} is not a directory (a git repository)"));
        }
        Source::Path(path)
    };
    Ok((name.to_string(), source))
}

/// A git URL rather than a path: `scheme://...` or scp-like `[user@]host:path`.
fn is_url(source: &str) -> bool {
    if source.contains("://") {
        return true;
    }
    match source.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

/// `owner/repo`: parts of letters, digits, `.`, `_`, `-` separated by `/`,
/// none empty or starting with `.` (so it is also a safe relative path).
pub fn valid_repository_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in ["acme/shop", "shop", "a.b/c_d-e", "group/sub/repo"] {
            assert!(valid_repository_name(good), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "../x", "a/.git", "a b", "a\\b", ".hidden"] {
            assert!(!valid_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn flags_name_paths_and_urls() {
        let dir = std::env::temp_dir();
        let flag = format!("acme/shop={}", dir.display());
        assert_eq!(parse_repository_flag(&flag).unwrap(), ("acme/shop".into(), Source::Path(dir.clone())));
        for url in ["https://git.example/acme/shop.git", "file:///srv/x.git", "git@git.example:acme/shop.git"] {
            assert_eq!(parse_repository_flag(&format!("a/b={url}")).unwrap().1, Source::Url(url.into()));
        }
        assert!(parse_repository_flag("acme/shop").unwrap_err().contains("NAME=PATH_OR_URL"));
        assert!(parse_repository_flag("../x=/tmp").unwrap_err().contains("not a repository name"));
        let err = parse_repository_flag("a/b=/nonexistent/repo.git").unwrap_err();
        assert!(err.contains("/nonexistent/repo.git is not a directory"), "{err}");
        let twice = [flag.clone(), flag];
        assert!(Sources::from_flags(&twice, None).unwrap_err().contains("given twice"));
    }

    #[test]
    fn the_root_maps_names_to_directories() {
        let root = std::env::temp_dir().join(format!("edgedeploy-git-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("acme/shop.git")).unwrap();
        std::fs::create_dir_all(root.join("acme/plain")).unwrap();
        let sources = Sources::from_flags(&[], Some(&root)).unwrap();
        assert_eq!(sources.find("acme/shop"), Some(Source::Path(root.join("acme/shop.git"))));
        assert_eq!(sources.find("acme/plain"), Some(Source::Path(root.join("acme/plain"))));
        assert_eq!(sources.find("acme/none"), None);
        assert_eq!(sources.find("../acme/shop"), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
