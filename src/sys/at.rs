//! Descriptor-relative file operations that never follow a symbolic link.
//!
//! A [`Dir`] is an open directory. Every path below it is reached one
//! component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, and every
//! change (create, remove, rename, chmod, chown) is made relative to the
//! descriptor that was checked: a link swapped in between a check and a
//! write makes the call fail (ELOOP, ENOTDIR); it is never followed.
//! Why by hand and not through a crate: these are nine thin system calls,
//! and the agent's bytes matter (rustix or cap-std would bring far more).

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use super::check;

/// What a name in a directory is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A device, fifo or socket.
    Special,
}

/// Why a path could not be walked without following a link.
#[derive(Debug)]
pub enum WalkError {
    /// A component of the path is a symbolic link.
    Link {
        /// The link (the path up to and including it).
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A component is missing, not a directory, or cannot be opened.
    Io {
        /// The path up to the component that failed.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Link { link, target } => write!(
                f,
                "{} is a symbolic link (to {}); the agent does not write through links",
                link.display(),
                target.display()
            ),
            WalkError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WalkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalkError::Link { .. } => None,
            WalkError::Io { source, .. } => Some(source),
        }
    }
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> io::Error {
        let kind = match &e {
            WalkError::Link { .. } => io::ErrorKind::InvalidInput,
            WalkError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// An open directory (read-only descriptor, close-on-exec).
#[derive(Debug)]
pub struct Dir {
    file: File,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// A directory opened to change it or its mode: needs read permission.
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
/// A directory only walked through or written in (`*at` calls): O_PATH
/// needs search permission only, as the kernel's own walk does.
const WALK_FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Opens `path` as the agent names it (its own paths: links followed).
    pub fn open(path: &Path) -> io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        let file =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
        Ok(Dir { file })
    }

    /// Opens the absolute `path` one component at a time from `/`, never
    /// following a link: the first component that is a link is named.
    pub fn open_nofollow(path: &Path) -> Result<Dir, WalkError> {
        let root = PathBuf::from("/");
        let mut dir = Dir::open(&root).map_err(|source| WalkError::Io { path: root.clone(), source })?;
        let mut walked = root;
        for part in path.components() {
            match part {
                Component::Normal(name) => {
                    walked.push(name);
                    dir = dir.child(name, &walked)?;
                }
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    let source = io::Error::new(io::ErrorKind::InvalidInput, "path is not normalized");
                    return Err(WalkError::Io { path: path.to_path_buf(), source });
                }
            }
        }
        Ok(dir)
    }

    /// Opens the relative `rel` below this directory without following links;
    /// `base` names this directory in errors.
    pub fn walk(&self, rel: &Path, base: &Path) -> Result<Dir, WalkError> {
        let mut walked = base.to_path_buf();
        let mut dir: Option<Dir> = None;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                if part == Component::CurDir {
                    continue;
                }
                let source = io::Error::new(io::ErrorKind::InvalidInput, "path leaves its directory");
                return Err(WalkError::Io { path: base.join(rel), source });
            };
            walked.push(name);
            dir = Some(dir.as_ref().unwrap_or(self).child(name, &walked)?);
        }
        match dir {
            Some(dir) => Ok(dir),
            None => self.try_clone().map_err(|source| WalkError::Io { path: base.to_path_buf(), source }),
        }
    }

    /// The subdirectory `name` (not a link), opened to walk through or to
    /// write in (not to read or chmod: see [`Dir::open_dir`]); `walked`
    /// names it in errors.
    fn child(&self, name: &OsStr, walked: &Path) -> Result<Dir, WalkError> {
        match self.openat(name, WALK_FLAGS, 0) {
            Ok(fd) => Ok(Dir { file: File::from(fd) }),
            Err(source) => {
                if let Ok(Some(Kind::Symlink)) = self.kind(name) {
                    let target = self.read_link(name).map(PathBuf::from).unwrap_or_default();
                    return Err(WalkError::Link { link: walked.to_path_buf(), target });
                }
                Err(WalkError::Io { path: walked.to_path_buf(), source })
            }
        }
    }

    fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { file: self.file.try_clone()? })
    }

    /// The directory itself, as a file (for fchmod, fchown, fsync): only for
    /// a directory from [`Dir::open`] or [`Dir::open_dir`].
    pub fn as_file(&self) -> &File {
        &self.file
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let c = c_name(name)?;
        // SAFETY: the descriptor is open for the life of `self`; `c` is a
        // valid NUL-terminated string that outlives the call.
        let fd = check(unsafe { libc::openat(self.file.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) })?;
        // SAFETY: openat returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// What `name` is (`None`: nothing there), without following it.
    pub fn kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        Ok(self.stat(name)?.map(|st| kind_of(st.st_mode)))
    }

    /// lstat of `name` relative to this directory; `None` when it does not exist.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let c = c_name(name)?;
        // SAFETY: a zeroed stat is a valid value for fstatat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name and a live, exclusive
        // stat buffer; AT_SYMLINK_NOFOLLOW makes it an lstat.
        let ret = unsafe { libc::fstatat(self.file.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        match check(ret) {
            Ok(_) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The target of the link `name`.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        let c = c_name(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: valid descriptor and name; the buffer is live and its
        // length is passed, readlinkat writes at most that many bytes.
        let n = unsafe { libc::readlinkat(self.file.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(OsString::from_vec(buf))
    }

    /// Opens the subdirectory `name` (never a link).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        Ok(Dir { file: File::from(self.openat(name, DIR_FLAGS, 0)?) })
    }

    /// Opens the regular file `name` for reading (never through a link; a
    /// fifo or device is refused rather than opened).
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let file = File::from(self.openat(name, flags, 0)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(file)
    }

    /// Creates the new file `name` (`O_EXCL`: never an existing file or a
    /// link) with `mode`, open for writing.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        Ok(File::from(self.openat(name, flags, mode as libc::mode_t)?))
    }

    /// Creates the directory `name` with `mode` (less the umask).
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::mkdirat(self.file.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    /// Creates the symbolic link `name` pointing at `target`.
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        let (t, c) = (c_name(target)?, c_name(name)?);
        // SAFETY: valid descriptor and two NUL-terminated strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.file.as_raw_fd(), c.as_ptr()) }).map(drop)
    }

    /// Removes the file or link `name` (a link itself, never its target).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        self.unlinkat(name, 0)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        self.unlinkat(name, libc::AT_REMOVEDIR)
    }

    fn unlinkat(&self, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        check(unsafe { libc::unlinkat(self.file.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
    }

    /// Renames `from` in this directory to `to` in `to_dir` (a link at
    /// `to` is replaced, never followed).
    pub fn rename(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        // SAFETY: two valid descriptors and two NUL-terminated names.
        let ret = unsafe { libc::renameat(self.file.as_raw_fd(), f.as_ptr(), to_dir.file.as_raw_fd(), t.as_ptr()) };
        check(ret).map(drop)
    }

    /// Changes the owner and group of `name` itself (a link stays a link).
    pub fn lchown(&self, name: &OsStr, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let c = c_name(name)?;
        let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        // SAFETY: valid descriptor and name; -1 (u32::MAX) leaves an id as it is.
        let ret = unsafe { libc::fchownat(self.file.as_raw_fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
        check(ret).map(drop)
    }
}

fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Special,
    }
}

/// The parent directory of the absolute `path`, opened without following
/// any link, and the final name.
pub fn parent_nofollow(path: &Path) -> Result<(Dir, &OsStr), WalkError> {
    let name = path.file_name().ok_or_else(|| WalkError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no final name"),
    })?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    Ok((Dir::open_nofollow(parent)?, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn walking_names_the_first_link() {
        let dir = scratch("walk");
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        symlink(dir.join("real"), dir.join("link")).unwrap();
        assert!(Dir::open_nofollow(&dir.join("real/sub")).is_ok());
        match Dir::open_nofollow(&dir.join("link/sub")) {
            Err(WalkError::Link { link, target }) => {
                assert_eq!(link, dir.join("link"));
                assert_eq!(target, dir.join("real"));
            }
            other => panic!("expected a link error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_new_never_follows_a_final_link() {
        let dir = scratch("create");
        symlink(dir.join("victim"), dir.join("name")).unwrap();
        let d = Dir::open(&dir).unwrap();
        assert!(d.create_new(OsStr::new("name"), 0o600).is_err());
        assert!(!dir.join("victim").exists());
        assert!(d.open_file(OsStr::new("name")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
