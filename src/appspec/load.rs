//! Reading the AppSpec file out of an unpacked revision. The revision is
//! input from outside: the file must stay inside it, be a regular file and
//! be at most [`MAX_APPSPEC_SIZE`] bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::value::quote;
use super::{AppSpec, AppSpecError, DEFAULT_APPSPEC_FILENAME, MAX_APPSPEC_SIZE, document};

/// Tried when [`DEFAULT_APPSPEC_FILENAME`] is asked for and missing.
const FALLBACK_APPSPEC_FILENAME: &str = "appspec.yaml";

/// Why a candidate file could not be read.
enum ReadError {
    /// Not there: the fallback may be tried.
    Missing,
    /// There but unusable: the message says why.
    Unusable(String),
}

/// See [`AppSpec::load`].
pub(super) fn load(archive_dir: &Path, filename: &str) -> Result<AppSpec, AppSpecError> {
    check_filename(filename)?;
    let path = archive_dir.join(filename);
    let (path, text) = match read_text(archive_dir, &path) {
        Ok(text) => (path, text),
        Err(ReadError::Missing) if filename == DEFAULT_APPSPEC_FILENAME => {
            let fallback = archive_dir.join(FALLBACK_APPSPEC_FILENAME);
            match read_text(archive_dir, &fallback) {
                Ok(text) => (fallback, text),
                Err(ReadError::Missing) => {
                    return Err(at(
                        archive_dir,
                        format!("the revision has no {DEFAULT_APPSPEC_FILENAME} or {FALLBACK_APPSPEC_FILENAME}"),
                    ));
                }
                Err(ReadError::Unusable(why)) => return Err(at(&fallback, why)),
            }
        }
        Err(ReadError::Missing) => return Err(at(&path, "not found in the revision")),
        Err(ReadError::Unusable(why)) => return Err(at(&path, why)),
    };
    document::parse(&text).map_err(|e| at(&path, e.message))
}

/// An error message prefixed with the file it is about.
fn at(path: &Path, message: impl std::fmt::Display) -> AppSpecError {
    AppSpecError { message: format!("{}: {message}", path.display()) }
}

/// The AppSpec file name must name a file inside the revision.
fn check_filename(filename: &str) -> Result<(), AppSpecError> {
    let inside = !filename.is_empty()
        && !filename.contains('\0')
        && Path::new(filename).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err(AppSpecError {
            message: format!("AppSpec file name {}: must be a relative path inside the revision", quote(filename)),
        })
    }
}

/// Reads `path` as text, refusing what escapes `archive_dir` (through
/// links), what is not a regular file (a FIFO would block), and what is
/// larger than [`MAX_APPSPEC_SIZE`].
fn read_text(archive_dir: &Path, path: &Path) -> Result<String, ReadError> {
    let real = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if is_missing(&e) => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Unusable(format!("cannot resolve: {e}"))),
    };
    let root = fs::canonicalize(archive_dir)
        .map_err(|e| ReadError::Unusable(format!("cannot resolve the revision directory: {e}")))?;
    if !real.starts_with(&root) {
        return Err(ReadError::Unusable(format!("is a link to {}, outside the revision", real.display())));
    }
    let file = open_no_block(&real).map_err(|e| ReadError::Unusable(format!("cannot open: {e}")))?;
    read_capped(file).map_err(ReadError::Unusable)
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Opens without following a final link and without blocking on a FIFO.
fn open_no_block(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path)
}

/// The whole file as UTF-8 (a BOM is dropped), at most the size cap.
fn read_capped(file: File) -> Result<String, String> {
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    let too_big = |size: u64| format!("is {size} bytes, more than the {MAX_APPSPEC_SIZE} bytes an AppSpec may have");
    if meta.len() > MAX_APPSPEC_SIZE {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_APPSPEC_SIZE + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_APPSPEC_SIZE {
        return Err(too_big(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_must_stay_inside() {
        assert!(check_filename("appspec.yml").is_ok());
        assert!(check_filename("deploy/appspec-prod.yml").is_ok());
        assert!(check_filename("../appspec.yml").is_err());
        assert!(check_filename("/etc/passwd").is_err());
        assert!(check_filename("").is_err());
    }
}
