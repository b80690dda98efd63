//! The few system calls the standard library does not wrap: syncfs, poll,
//! process-group signals, credential switching in a child, and mknod.
//!
//! Every `unsafe` block in the crate lives here, each with its SAFETY note.
//! The rest of the crate is `#![deny(unsafe_code)]`. [`at`] holds the
//! descriptor-relative calls that never follow a symbolic link.

pub mod at;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Flushes every dirty page and inode of the filesystem that holds `file`.
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    check(unsafe { libc::syncfs(file.as_raw_fd()) }).map(drop)
}

/// One descriptor to watch for input, and what poll found on it.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)] // poll() below passes a slice of these as pollfd.
pub struct PollFd(libc::pollfd);

impl PollFd {
    /// Watches `fd` for readability (and hang-up, which poll always reports).
    pub fn readable(fd: RawFd) -> Self {
        PollFd(libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
    }

    /// True when a read will not block: data, end of file or an error.
    pub fn ready(&self) -> bool {
        self.0.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }
}

/// Waits until one of `fds` is ready or `timeout` passes; returns how many
/// are ready. An interrupted wait counts as a timeout (zero ready).
pub fn poll(fds: &mut [PollFd], timeout: Duration) -> io::Result<usize> {
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: PollFd is a transparent newtype over pollfd, and the pointer and
    // length describe the caller's live, exclusively borrowed slice.
    let ret = unsafe { libc::poll(fds.as_mut_ptr().cast(), fds.len() as libc::nfds_t, millis) };
    match check(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Signals that `kill_process_group` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL: stop now.
    Kill,
}

/// Sends `signal` to every process in group `pgid`. A group that no longer
/// exists is not an error, so this is safe to repeat.
pub fn kill_process_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let sig = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: killpg has no memory effects; a bad pgid is reported as ESRCH.
    match check(unsafe { libc::killpg(pgid, sig) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the child of `cmd` drop to `uid`/`gid` with exactly `groups` as its
/// supplementary groups, as initgroups(3) + setgid(2) + setuid(2) would.
/// Done in the child between fork and exec, in that order, so the child
/// never runs user code with root's groups.
pub fn set_child_credentials(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<u32>) {
    let groups: Vec<libc::gid_t> = groups.into_iter().collect();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe system calls (setgroups, setgid, setuid) on memory
    // allocated before the fork; it allocates nothing itself.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            Ok(())
        });
    }
}

/// Makes `fd` stay open in the child of `cmd` across exec (it is
/// close-on-exec here), so a tool can be handed `/proc/self/fd/FD`: the
/// object the agent holds open, never a path that may have changed since.
pub fn inherit_fd(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // fcntl(2), async-signal-safe, on a descriptor the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            Ok(())
        });
    }
}

/// Puts `fd` in non-blocking mode, so a read returns what is there now.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL only changes the flags of a
    // descriptor the caller owns.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Creates a special file (fifo, character or block device) at `path`.
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(c_path.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) }).map(drop)
}

/// Builds a device number from its major and minor parts.
pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor) as u64
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no memory effects.
    unsafe { libc::geteuid() }
}

/// True while some process is still in group `pgid` (zombies not yet reaped
/// count). Any error other than "no such group" counts as alive, so callers
/// err on the side of escalating to SIGKILL.
pub fn process_group_exists(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return false };
    // SAFETY: killpg with signal 0 only checks for existence and permission;
    // it has no memory effects.
    match check(unsafe { libc::killpg(pgid, 0) }) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::ESRCH),
    }
}

/// Set by the SIGTERM/SIGINT handler of [`install_stop_handler`].
static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Write end of the stop pipe (-1 until [`install_stop_handler`] ran).
static STOP_PIPE_WRITE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    use std::sync::atomic::Ordering;
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    let fd = STOP_PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: only async-signal-safe calls: errno is saved and restored
        // around write(2), which writes one byte from a live local to the
        // non-blocking write end of our pipe (a full pipe drops the byte,
        // which is fine: it is already readable).
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Makes SIGTERM and SIGINT request a stop instead of killing the process:
/// [`stop_requested`] becomes true and the returned descriptor (the read end
/// of a close-on-exec pipe) becomes readable, so a wait in poll(2) ends at
/// once. Other system calls are restarted (SA_RESTART; ureq retries its
/// socket reads until their deadline). The handler is one-shot
/// (SA_RESETHAND): a second SIGTERM (or SIGINT) takes the default action and
/// ends the process at once, e.g. while a request waits for its deadline.
/// Children (hooks) get the default actions back at exec. Call once.
pub fn install_stop_handler() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: fds[0] is a fresh descriptor that nothing else owns. The write
    // end is kept open for the life of the process (the handler uses it).
    let read_end = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
    STOP_PIPE_WRITE.store(fds[1], std::sync::atomic::Ordering::SeqCst);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags);
        // the handler is an extern "C" fn that only does async-signal-safe
        // work; sigaction reads the struct and we pass no old-action pointer.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            check(libc::sigaction(signal, &action, std::ptr::null_mut()))?;
        }
    }
    Ok(read_end)
}

/// True once SIGTERM or SIGINT arrived (after [`install_stop_handler`]).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Sets the process's file mode creation mask; returns the previous one.
#[cfg(feature = "server")]
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask only swaps the process's mask; it cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}
