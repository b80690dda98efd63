//! Lexical normalization of the paths an AppSpec names. No filesystem access.

use std::path::PathBuf;

use super::value::{Result, error, quote};

/// The `/`-separated parts of `raw` without empty and `.` parts; `..` refused.
fn parts<'a>(path: &str, raw: &'a str) -> Result<Vec<&'a str>> {
    if raw.is_empty() {
        return Err(error(path, "must not be empty"));
    }
    if raw.contains('\0') {
        return Err(error(path, format!("{} contains a NUL character", quote(raw))));
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(error(path, format!("{} must not contain \"..\"", quote(raw))));
    }
    Ok(parts)
}

/// A path inside the revision (`files[].source`): relative, normalized; a
/// leading `/` is dropped as CodeDeploy does, and `/` alone (the whole
/// revision) becomes the empty path.
pub(super) fn revision_path(path: &str, raw: &str) -> Result<PathBuf> {
    Ok(parts(path, raw)?.join("/").into())
}

/// An absolute path on the device, normalized (no `.`, no repeated or
/// trailing `/`); relative paths and `..` are refused.
pub(super) fn absolute_path(path: &str, raw: &str) -> Result<PathBuf> {
    let normal = parts(path, raw)?;
    if !raw.starts_with('/') {
        return Err(error(path, format!("{} is not an absolute path", quote(raw))));
    }
    Ok(format!("/{}", normal.join("/")).into())
}

/// A script location inside the revision: kept as written (trimmed), but
/// refused when empty or when it climbs out with `..`.
pub(super) fn script_location(path: &str, raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    parts(path, trimmed)?;
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn revision_paths_are_relative_and_normalized() {
        assert_eq!(revision_path("s", "/").ok(), Some(PathBuf::new()));
        assert_eq!(revision_path("s", ".").ok(), Some(PathBuf::new()));
        assert_eq!(revision_path("s", "/config/a.conf").ok(), Some(PathBuf::from("config/a.conf")));
        assert_eq!(revision_path("s", "./my-folder-1/").ok(), Some(PathBuf::from("my-folder-1")));
        assert_eq!(revision_path("s", "a//./b").ok(), Some(PathBuf::from("a/b")));
        assert_eq!(msg(revision_path("s", "a/../../etc")), r#"s: "a/../../etc" must not contain "..""#);
        assert_eq!(msg(revision_path("s", "")), "s: must not be empty");
        assert!(revision_path("s", "a\0b").is_err());
    }

    #[test]
    fn absolute_paths_are_normalized() {
        assert_eq!(absolute_path("d", "/opt/app/").ok(), Some(PathBuf::from("/opt/app")));
        assert_eq!(absolute_path("d", "//opt/./app").ok(), Some(PathBuf::from("/opt/app")));
        assert_eq!(absolute_path("d", "/").ok(), Some(PathBuf::from("/")));
        assert_eq!(msg(absolute_path("d", "relative/dir")), r#"d: "relative/dir" is not an absolute path"#);
        assert!(absolute_path("d", "/opt/../etc").is_err());
    }

    #[test]
    fn script_locations_are_trimmed_and_contained() {
        assert_eq!(script_location("l", " scripts/start.sh ").ok().as_deref(), Some("scripts/start.sh"));
        assert!(script_location("l", "../start.sh").is_err());
        assert!(script_location("l", "  ").is_err());
    }
}
