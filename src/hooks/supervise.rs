//! The single-threaded supervisor of one running script.
//!
//! The decisions live in [`Phase::step`], a pure function of what was
//! observed (time, exit status, open pipes, whether the process group is
//! still there); [`supervise`] is the thin loop that observes and acts:
//! poll(2) on both pipes with a deadline, read what is there, `try_wait`.
//!
//! ```text
//! Running --exit, pipes closed----------------------------> Exited
//! Running --exit, pipes held by background processes----> Draining --EOF--> Exited
//!                                                          Draining --output_grace--> Abandoned
//! Running --timeout: SIGTERM to the group--> Terminating --group gone--> TimedOut
//!                                            Terminating --kill_grace: SIGKILL--> TimedOut
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::Supervision;
use super::log::{ScriptLog, Stream};
use crate::sys::{self, PollFd, Signal};

/// Longest single wait, so exits are noticed promptly even when the
/// script writes nothing.
const TICK: Duration = Duration::from_millis(100);
/// First wait once both pipes are closed: the script closes them as it
/// exits, so its exit status is usually there within a millisecond. The wait
/// doubles up to [`TICK`], so a short hook costs milliseconds, not a tick.
const FIRST_IDLE_WAIT: Duration = Duration::from_millis(1);
/// Size of the one read buffer.
const READ_BYTES: usize = 8 * 1024;
/// How long to wait for the script to be reaped after SIGKILL (a process
/// stuck in the kernel may outlive it; the agent does not wait forever).
const REAP_LIMIT: Duration = Duration::from_secs(2);
/// Reads per pipe after SIGKILL, to collect the last output.
const FINAL_READS: usize = 16;

/// How a supervised script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The script exited. `abandoned` is true when background processes
    /// still held its output after `output_grace` and reading stopped.
    Exited {
        /// The script's exit status.
        status: ExitStatus,
        /// Output reading was given up (the processes were left running).
        abandoned: bool,
    },
    /// The script ran past its timeout; its process group was signalled.
    TimedOut,
}

/// Where the supervision of a script stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The script runs; it times out at `deadline`.
    Running {
        /// When the script's timeout expires.
        deadline: Instant,
    },
    /// The script exited; its output is read until EOF or `until`.
    Draining {
        /// When reading stops.
        until: Instant,
    },
    /// SIGTERM was sent to the group; SIGKILL follows at `kill_at`.
    Terminating {
        /// When SIGKILL is sent.
        kill_at: Instant,
    },
}

/// What one turn of the loop observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// When the observation was made.
    pub(super) now: Instant,
    /// The script's exit status, once it has been reaped.
    pub(super) exited: Option<ExitStatus>,
    /// Whether stdout or stderr is still open (no EOF yet).
    pub(super) pipes_open: bool,
    /// Whether any process of the script's group remains.
    pub(super) group_alive: bool,
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Wait for output for at most this long, then observe again.
    Wait(Duration),
    /// Send SIGTERM to the group (the phase is now `Terminating`).
    Terminate,
    /// Done: the script exited and its output is complete.
    Exited(ExitStatus),
    /// Done: the script exited; stop reading output held by others.
    Abandon(ExitStatus),
    /// Done: timed out, and the whole group is gone after SIGTERM.
    Gone,
    /// Done: timed out and the grace is over: send SIGKILL to the group.
    Kill,
}

impl Phase {
    /// Decides the next step from what was `seen`, moving to the next phase
    /// where a deadline or an exit says so.
    pub(super) fn step(&mut self, seen: Seen, supervision: &Supervision) -> Step {
        let now = seen.now;
        match *self {
            Phase::Running { deadline } => match seen.exited {
                Some(status) if !seen.pipes_open => Step::Exited(status),
                Some(_) => {
                    let until = now + supervision.output_grace;
                    *self = Phase::Draining { until };
                    Step::Wait(wait_until(now, until))
                }
                None if now >= deadline => {
                    *self = Phase::Terminating { kill_at: now + supervision.kill_grace };
                    Step::Terminate
                }
                None => Step::Wait(wait_until(now, deadline)),
            },
            Phase::Draining { until } => match seen.exited {
                Some(status) if !seen.pipes_open => Step::Exited(status),
                Some(status) if now >= until => Step::Abandon(status),
                _ => Step::Wait(wait_until(now, until)),
            },
            Phase::Terminating { kill_at } => {
                if seen.exited.is_some() && !seen.group_alive {
                    Step::Gone
                } else if now >= kill_at {
                    Step::Kill
                } else {
                    Step::Wait(wait_until(now, kill_at))
                }
            }
        }
    }
}

/// Time to `deadline`, at most one [`TICK`].
fn wait_until(now: Instant, deadline: Instant) -> Duration {
    deadline.saturating_duration_since(now).min(TICK)
}

/// Supervises `child` (spawned in its own process group with piped stdout
/// and stderr) until it ends, writing its output to `log`.
///
/// On an error of the supervisor itself the whole group is killed before
/// returning, so no script is ever left running unsupervised.
pub(super) fn supervise(
    mut child: Child,
    timeout: Duration,
    supervision: &Supervision,
    log: &mut ScriptLog,
) -> io::Result<Ending> {
    let pgid = child.id();
    let result = Pipes::take(&mut child).and_then(|mut pipes| {
        let ending = drive(&mut child, pgid, &mut pipes, timeout, supervision, log);
        pipes.close_all(log);
        ending
    });
    if result.is_err() {
        let _ = sys::kill_process_group(pgid, Signal::Kill);
        reap(&mut child);
    }
    log.flush();
    result
}

/// The supervision loop: observe, decide with [`Phase::step`], act.
fn drive(
    child: &mut Child,
    pgid: u32,
    pipes: &mut Pipes,
    timeout: Duration,
    supervision: &Supervision,
    log: &mut ScriptLog,
) -> io::Result<Ending> {
    let mut phase = Phase::Running { deadline: Instant::now() + timeout };
    let mut exited = None;
    let mut wait = Duration::ZERO;
    let mut idle_wait = FIRST_IDLE_WAIT;
    loop {
        pipes.wait_and_read(wait, log)?;
        log.flush();
        if exited.is_none() {
            exited = child.try_wait()?;
        }
        let terminating = matches!(phase, Phase::Terminating { .. });
        let group_alive = !terminating || exited.is_none() || sys::process_group_exists(pgid);
        let seen = Seen { now: Instant::now(), exited, pipes_open: pipes.any_open(), group_alive };
        wait = Duration::ZERO;
        match phase.step(seen, supervision) {
            Step::Wait(d) if seen.pipes_open => wait = d,
            Step::Wait(d) => {
                wait = d.min(idle_wait);
                idle_wait = (idle_wait * 2).min(TICK);
            }
            Step::Terminate => {
                log.note(&format!("timed out after {}: sending SIGTERM to its process group", human(timeout)));
                sys::kill_process_group(pgid, Signal::Term)?;
            }
            Step::Exited(status) => return Ok(Ending::Exited { status, abandoned: false }),
            Step::Abandon(status) => {
                log.note(&abandoned_warning(supervision.output_grace));
                return Ok(Ending::Exited { status, abandoned: true });
            }
            Step::Gone => return Ok(Ending::TimedOut),
            Step::Kill => {
                let grace = human(supervision.kill_grace);
                log.note(&format!("still running {grace} after SIGTERM: sending SIGKILL to its process group"));
                sys::kill_process_group(pgid, Signal::Kill)?;
                reap(child);
                pipes.read_remaining(log);
                return Ok(Ending::TimedOut);
            }
        }
    }
}

/// The warning written when background processes keep the output open.
pub(super) fn abandoned_warning(grace: Duration) -> String {
    format!(
        "background processes still hold the script's output; stopped reading after {} \
         — redirect their output to a file",
        human(grace)
    )
}

/// `5s`, or `1500ms` when not a whole number of seconds.
pub(super) fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// Waits (boundedly) for a killed child to be reaped.
fn reap(child: &mut Child) {
    let give_up = Instant::now() + REAP_LIMIT;
    while Instant::now() < give_up {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Ok(Some(_)) | Err(_) => return,
        }
    }
    log::warn!("script process {} did not exit {} after SIGKILL; not waiting for it", child.id(), human(REAP_LIMIT));
}

/// The read ends of the script's stdout and stderr, non-blocking; `None`
/// once closed (EOF, error or abandoned).
struct Pipes {
    /// Indexed like [`STREAMS`].
    ends: [Option<File>; 2],
}

/// The streams in the order of [`Pipes::ends`].
const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl Pipes {
    /// Takes the child's pipes and makes them non-blocking.
    fn take(child: &mut Child) -> io::Result<Self> {
        let out = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
        let err = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
        let pipes = Pipes { ends: [out, err] };
        for end in pipes.ends.iter().flatten() {
            sys::set_nonblocking(end.as_raw_fd())?;
        }
        Ok(pipes)
    }

    fn any_open(&self) -> bool {
        self.ends.iter().any(Option::is_some)
    }

    /// Waits up to `wait` for output, then reads once from each ready pipe.
    fn wait_and_read(&mut self, wait: Duration, log: &mut ScriptLog) -> io::Result<()> {
        let mut fds = [PollFd::readable(-1); 2];
        let mut which = [0usize; 2];
        let mut n = 0;
        for (i, end) in self.ends.iter().enumerate() {
            if let Some(file) = end {
                fds[n] = PollFd::readable(file.as_raw_fd());
                which[n] = i;
                n += 1;
            }
        }
        sys::poll(&mut fds[..n], wait)?;
        for (fd, &i) in fds[..n].iter().zip(&which) {
            if fd.ready() {
                self.read_once(i, log);
            }
        }
        Ok(())
    }

    /// One read from pipe `i` into `log`; closes it on EOF or error.
    /// Returns false when nothing more is to be had right now.
    fn read_once(&mut self, i: usize, log: &mut ScriptLog) -> bool {
        let Some(file) = &mut self.ends[i] else { return false };
        let mut buf = [0u8; READ_BYTES];
        match file.read(&mut buf) {
            Ok(0) => self.close(i, log),
            Ok(n) => {
                log.output(STREAMS[i], &buf[..n]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                log::warn!("reading script output failed: {e}");
                self.close(i, log);
            }
        }
        false
    }

    /// After SIGKILL: collects what is already in the pipes, boundedly.
    fn read_remaining(&mut self, log: &mut ScriptLog) {
        for i in 0..self.ends.len() {
            for _ in 0..FINAL_READS {
                if !self.read_once(i, log) {
                    break;
                }
            }
        }
    }

    /// Closes pipe `i`, writing its partial last line. Safe to repeat.
    fn close(&mut self, i: usize, log: &mut ScriptLog) {
        if self.ends[i].take().is_some() {
            log.end_stream(STREAMS[i]);
        }
    }

    fn close_all(&mut self, log: &mut ScriptLog) {
        for i in 0..self.ends.len() {
            self.close(i, log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sup() -> Supervision {
        Supervision { kill_grace: Duration::from_secs(5), output_grace: Duration::from_secs(2), max_log_bytes: 1 }
    }

    fn seen(now: Instant, exited: Option<i32>, pipes_open: bool, group_alive: bool) -> Seen {
        Seen { now, exited: exited.map(ExitStatus::from_raw), pipes_open, group_alive }
    }

    #[test]
    fn running_waits_at_most_a_tick_then_terminates_at_the_deadline() {
        let t0 = Instant::now();
        let mut phase = Phase::Running { deadline: t0 + Duration::from_secs(1) };
        assert_eq!(phase.step(seen(t0, None, true, true), &sup()), Step::Wait(TICK));
        let near = t0 + Duration::from_millis(970);
        assert_eq!(phase.step(seen(near, None, true, true), &sup()), Step::Wait(Duration::from_millis(30)));
        let late = t0 + Duration::from_secs(1);
        assert_eq!(phase.step(seen(late, None, true, true), &sup()), Step::Terminate);
        assert_eq!(phase, Phase::Terminating { kill_at: late + Duration::from_secs(5) });
    }

    #[test]
    fn exit_with_closed_pipes_is_done() {
        let t0 = Instant::now();
        let mut phase = Phase::Running { deadline: t0 + Duration::from_secs(1) };
        assert_eq!(phase.step(seen(t0, Some(0), false, true), &sup()), Step::Exited(ExitStatus::from_raw(0)));
    }

    #[test]
    fn exit_with_held_pipes_drains_then_abandons_without_killing() {
        let t0 = Instant::now();
        let mut phase = Phase::Running { deadline: t0 + Duration::from_secs(1) };
        assert!(matches!(phase.step(seen(t0, Some(0), true, true), &sup()), Step::Wait(_)));
        assert_eq!(phase, Phase::Draining { until: t0 + Duration::from_secs(2) });
        // The script's own timeout no longer matters once it exited.
        let later = t0 + Duration::from_millis(1500);
        assert!(matches!(phase.step(seen(later, Some(0), true, true), &sup()), Step::Wait(_)));
        let end = t0 + Duration::from_secs(2);
        assert_eq!(phase.step(seen(end, Some(0), true, true), &sup()), Step::Abandon(ExitStatus::from_raw(0)));
    }

    #[test]
    fn draining_ends_early_at_eof() {
        let t0 = Instant::now();
        let mut phase = Phase::Draining { until: t0 + Duration::from_secs(2) };
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(phase.step(seen(t0, Some(3 << 8), false, true), &sup()), Step::Exited(status));
    }

    #[test]
    fn terminating_kills_at_grace_unless_the_group_is_gone() {
        let t0 = Instant::now();
        let kill_at = t0 + Duration::from_secs(5);
        let mut phase = Phase::Terminating { kill_at };
        assert!(matches!(phase.step(seen(t0, None, true, true), &sup()), Step::Wait(_)));
        // The script exited on TERM but a child ignoring it remains.
        assert!(matches!(phase.step(seen(t0, Some(15), false, true), &sup()), Step::Wait(_)));
        assert_eq!(phase.step(seen(kill_at, Some(15), false, true), &sup()), Step::Kill);
        assert_eq!(phase.step(seen(t0, Some(15), true, false), &sup()), Step::Gone);
        assert_eq!(phase.step(seen(kill_at, None, true, true), &sup()), Step::Kill);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert!(abandoned_warning(Duration::from_secs(2)).contains("stopped reading after 2s"));
    }
}
