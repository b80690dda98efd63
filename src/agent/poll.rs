//! The pieces of the poll loop that decide, apart from the loop: the retry
//! backoff, its random source, which failures get a log line, and the wait
//! between polls (a poll(2) on the stop pipe, so a signal ends it at once
//! and an idle agent uses no CPU).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::client::CallError;
use crate::sys;

/// First backoff ceiling.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Largest backoff ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A small PRNG (xorshift64*), seeded from /dev/urandom: enough to spread
/// the retries of a fleet, no dependency.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// Seeded from /dev/urandom, or from the time and pid when it is missing.
    pub fn from_entropy() -> Prng {
        let mut seed = [0u8; 8];
        let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        let seed = match random {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => {
                let (secs, millis) = crate::clock::now_epoch();
                secs.wrapping_mul(6_364_136_223_846_793_005) ^ (u64::from(millis) << 20) ^ u64::from(std::process::id())
            }
        };
        Prng::new(seed)
    }

    /// Seeded with `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Prng {
        Prng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(bound) => ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64,
            None => self.next_u64(),
        }
    }
}

/// Exponential backoff with full jitter: after the n-th failure in a row
/// the wait is uniform in `[0, min(cap, start * 2^(n-1))]`.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The ceiling of the wait after `failures` failures in a row.
    pub fn ceiling(failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        BACKOFF_START.saturating_mul(1 << shift).min(BACKOFF_CAP)
    }

    /// Counts a failure and returns the wait before the next attempt.
    pub fn next_delay(&mut self, rng: &mut Prng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = Self::ceiling(self.failures).as_millis() as u64;
        Duration::from_millis(rng.up_to(ceiling))
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The classes of failure an operator needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// No answer: network, DNS, TLS, timeout, server down.
    Unreachable,
    /// The service refused our credentials or signature.
    CredentialsRefused,
    /// The service asked us to slow down.
    Throttled,
    /// An answer outside the protocol, or a server error.
    BadResponse,
    /// A local failure: a state file could not be written.
    Local,
}

impl FailureClass {
    /// The class of a call's failure.
    pub fn of(e: &CallError) -> FailureClass {
        match e {
            CallError::Unreachable(_) => FailureClass::Unreachable,
            CallError::Refused { .. } => FailureClass::CredentialsRefused,
            CallError::Throttled(_) => FailureClass::Throttled,
            CallError::Service { .. } | CallError::BadResponse(_) => FailureClass::BadResponse,
        }
    }

    /// The detail of `e` for the log line of its class (without repeating the class).
    pub fn detail(e: &CallError) -> String {
        match e {
            CallError::Unreachable(m) if m.contains("certificate") => {
                format!("{m}; check ca_bundle in the agent configuration")
            }
            CallError::Unreachable(m) | CallError::Throttled(m) | CallError::BadResponse(m) => m.clone(),
            CallError::Refused { type_, message } => format!("{type_}: {message}"),
            CallError::Service { .. } => e.to_string(),
        }
    }

    /// How the log names it.
    pub fn describe(self) -> &'static str {
        match self {
            FailureClass::Unreachable => "the service is unreachable",
            FailureClass::CredentialsRefused => "the service refuses this agent's credentials",
            FailureClass::Throttled => "the service is throttling this agent",
            FailureClass::BadResponse => "the service gives bad responses",
            FailureClass::Local => "local state cannot be written",
        }
    }
}

/// True for an error answer that concerns one call (a 5xx, an answer that
/// cannot be read), not the service as a whole (no answer, throttling,
/// refused credentials): the loop goes on with its other work.
pub fn fails_one_call(e: &CallError) -> bool {
    matches!(e, CallError::Service { status: 500.., .. } | CallError::BadResponse(_))
}

/// Decides which failures get a log line: the first of each run of one
/// class, so a long outage is one line, not one per attempt.
#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    current: Option<FailureClass>,
    count: u32,
}

impl FailureLog {
    /// Counts a failure of `class`; true when it must be logged.
    pub fn failed(&mut self, class: FailureClass) -> bool {
        self.count += 1;
        let changed = self.current != Some(class);
        self.current = Some(class);
        changed
    }

    /// Counts a success; returns how many failures it ends, if any.
    pub fn succeeded(&mut self) -> Option<u32> {
        self.current.take()?;
        Some(std::mem::take(&mut self.count))
    }
}

/// The read end of the stop pipe: waits that a SIGTERM/SIGINT ends.
#[derive(Debug)]
pub struct StopWatch {
    pipe: Option<OwnedFd>,
}

impl StopWatch {
    /// Installs the SIGTERM/SIGINT handlers.
    pub fn install() -> std::io::Result<StopWatch> {
        Ok(StopWatch { pipe: Some(sys::install_stop_handler()?) })
    }

    /// True once a stop was requested.
    pub fn stop_requested(&self) -> bool {
        sys::stop_requested()
    }

    /// Sleeps `duration`, or less when a stop is requested. Returns true
    /// when stopping. Uses no CPU while it waits.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.stop_requested() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.pipe {
                Some(pipe) => {
                    let mut fds = [sys::PollFd::readable(pipe.as_raw_fd())];
                    // A signal wakes this (EINTR or a byte in the pipe); the
                    // flag is the truth, the byte is left in the pipe.
                    let _ = sys::poll(&mut fds, left);
                }
                None => std::thread::sleep(left),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_doubles_from_one_second_to_a_minute() {
        let ceilings: Vec<u64> = (1..=9).map(|n| Backoff::ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(Backoff::ceiling(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn backoff_delays_stay_within_bounds_and_reset() {
        let mut rng = Prng::new(42);
        let mut backoff = Backoff::default();
        for n in 1..=40u32 {
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= Backoff::ceiling(n), "attempt {n}: {delay:?}");
        }
        assert_eq!(backoff.failures(), 40);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut rng = Prng::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| rng.up_to(60_000)).collect();
        assert!(draws.iter().all(|d| *d <= 60_000));
        assert!(draws.iter().any(|d| *d < 6_000) && draws.iter().any(|d| *d > 54_000));
        let mean = draws.iter().sum::<u64>() / draws.len() as u64;
        assert!((25_000..35_000).contains(&mean), "mean {mean}");
        assert_eq!(Prng::new(0).up_to(0), 0);
        assert_ne!(Prng::from_entropy().next_u64(), Prng::from_entropy().next_u64());
    }

    #[test]
    fn one_log_line_per_class_and_per_change_of_class() {
        let mut log = FailureLog::default();
        assert_eq!(log.succeeded(), None);
        assert!(log.failed(FailureClass::Unreachable));
        assert!(!log.failed(FailureClass::Unreachable));
        assert!(!log.failed(FailureClass::Unreachable));
        assert!(log.failed(FailureClass::CredentialsRefused));
        assert!(!log.failed(FailureClass::CredentialsRefused));
        assert_eq!(log.succeeded(), Some(5));
        assert_eq!(log.succeeded(), None);
        assert!(log.failed(FailureClass::CredentialsRefused));
    }

    #[test]
    fn only_error_answers_concern_one_call() {
        let service = |status| CallError::Service { status, type_: "X".into(), message: String::new() };
        assert!(fails_one_call(&service(500)) && fails_one_call(&service(503)));
        assert!(fails_one_call(&CallError::BadResponse("cut".into())));
        assert!(!fails_one_call(&CallError::Unreachable("timeout".into())));
        assert!(!fails_one_call(&CallError::Throttled("slow".into())));
        assert!(!fails_one_call(&CallError::Refused { type_: "AccessDenied".into(), message: String::new() }));
        assert!(!fails_one_call(&service(400)));
    }

    #[test]
    fn call_errors_map_to_classes() {
        let refused = CallError::Refused { type_: "InvalidSignatureException".into(), message: String::new() };
        assert_eq!(FailureClass::of(&refused), FailureClass::CredentialsRefused);
        assert_eq!(FailureClass::of(&CallError::Unreachable("x".into())), FailureClass::Unreachable);
        assert_eq!(FailureClass::of(&CallError::Throttled("x".into())), FailureClass::Throttled);
        let service = CallError::Service { status: 500, type_: "InternalFailure".into(), message: String::new() };
        assert_eq!(FailureClass::of(&service), FailureClass::BadResponse);
        assert_eq!(FailureClass::detail(&refused), "InvalidSignatureException: ");
        assert_eq!(FailureClass::detail(&CallError::Unreachable("io: refused".into())), "io: refused");
    }
}
