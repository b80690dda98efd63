//! The limits on what a bundle may unpack to: total bytes, entry count and
//! compression ratio, checked as the data streams so a bomb stops early.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::{Policy, UnpackError};

/// A byte count shared between a reader deep in a decoder chain and the
/// meter (the agent is single-threaded, so `Rc<Cell>` is enough).
pub(super) type Counter = Rc<Cell<u64>>;

/// The ratio is only checked past this many unpacked bytes, so a small
/// file that compresses very well (a page of zeros) does not trip it.
pub(super) const RATIO_GRACE: u64 = 1 << 20;

/// Most bytes of bookkeeping kept in memory while unpacking: the paths of
/// directories and pending symlinks and the symlinks' targets, each path
/// charged [`NODE_COST`] more. Not configurable: it bounds the agent's
/// memory, and real bundles use a few hundred KiB of it.
pub(super) const MAX_REMEMBERED: u64 = 16 << 20;

/// What one remembered path costs beyond its bytes (map node, vectors).
pub(super) const NODE_COST: u64 = 64;

/// A reader that adds every byte it passes to a [`Counter`].
pub(super) struct Counting<R> {
    inner: R,
    count: Counter,
}

impl<R: Read> Counting<R> {
    /// Counts what `inner` yields into `count`.
    pub(super) fn new(inner: R, count: Counter) -> Self {
        Counting { inner, count }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// Counts entries and bytes against the policy's limits.
#[derive(Debug)]
pub(super) struct Meter {
    max_bytes: u64,
    max_entries: u64,
    max_ratio: u64,
    /// Entries seen so far (every file, directory, link or special file).
    entries: u64,
    /// Bytes of file content written so far.
    bytes: u64,
    /// Bytes of bookkeeping kept in memory, against [`MAX_REMEMBERED`].
    remembered: u64,
    /// Bytes read from the bundle file; `None` for an uncompressed source
    /// (a directory), where the ratio means nothing.
    input: Option<Counter>,
    /// Bytes the decompressor produced (for a tgz, the whole tar stream,
    /// headers included); `None` means "the content bytes written".
    output: Option<Counter>,
    /// The bundle's size: input counted for the ratio never exceeds it, so
    /// zip entries that share or overlap their data (read once per entry)
    /// cannot buy more output with the same bytes.
    input_cap: u64,
}

impl Meter {
    /// A meter with the policy's limits and nothing counted yet.
    pub(super) fn new(policy: &Policy) -> Self {
        Meter {
            max_bytes: policy.max_bytes,
            max_entries: policy.max_entries,
            max_ratio: policy.max_ratio,
            entries: 0,
            bytes: 0,
            remembered: 0,
            input: None,
            output: None,
            input_cap: u64::MAX,
        }
    }

    /// Caps the input counted for the ratio at the bundle's size.
    pub(super) fn cap_input(&mut self, bundle_len: u64) {
        self.input_cap = bundle_len;
    }

    /// Watches the compressed input (and optionally the decompressed output)
    /// for the ratio check.
    pub(super) fn watch(&mut self, input: Counter, output: Option<Counter>) {
        self.input = Some(input);
        self.output = output;
    }

    /// Content bytes written so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The configured largest total of unpacked bytes (0: none).
    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The configured largest ratio (0: none).
    pub(super) fn max_ratio(&self) -> u64 {
        self.max_ratio
    }

    /// Counts one more entry.
    pub(super) fn count_entry(&mut self) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.max_entries != 0 && self.entries > self.max_entries {
            return Err(limit(format!("number of entries exceeds max_entries ({})", self.max_entries)));
        }
        Ok(())
    }

    /// Charges one remembered path of `len` bytes (plus a symlink target's).
    pub(super) fn remember(&mut self, len: usize) -> Result<(), UnpackError> {
        self.remembered = self.remembered.saturating_add(len as u64 + NODE_COST);
        if self.remembered > MAX_REMEMBERED {
            return Err(limit(format!(
                "directory and symlink names exceed {MAX_REMEMBERED} bytes of memory (too many or too deep)"
            )));
        }
        Ok(())
    }

    /// Refuses when `n` more bytes would pass max_bytes, before writing them.
    pub(super) fn fits(&self, n: u64) -> Result<(), UnpackError> {
        if self.max_bytes != 0 && self.bytes.saturating_add(n) > self.max_bytes {
            return Err(limit(format!("unpacked size exceeds max_bytes ({})", self.max_bytes)));
        }
        Ok(())
    }

    /// Counts `n` bytes about to be written, refusing past max_bytes.
    pub(super) fn add_bytes(&mut self, n: u64) -> Result<(), UnpackError> {
        self.fits(n)?;
        self.bytes += n;
        Ok(())
    }

    /// Refuses when the unpacked/compressed ratio so far is over max_ratio.
    pub(super) fn check_ratio(&self) -> Result<(), UnpackError> {
        let Some(input) = &self.input else { return Ok(()) };
        let output = self.output.as_ref().map_or(self.bytes, |c| c.get());
        let input = input.get().min(self.input_cap);
        if over_ratio(output, input, self.max_ratio) {
            return Err(limit(format!(
                "compression ratio exceeds max_ratio ({}): {output} bytes unpacked from {input}",
                self.max_ratio,
            )));
        }
        Ok(())
    }
}

/// True when `output` bytes from `input` bytes is over `max_ratio` (0: no
/// limit), once `output` is past [`RATIO_GRACE`].
pub(super) fn over_ratio(output: u64, input: u64, max_ratio: u64) -> bool {
    max_ratio != 0 && output > RATIO_GRACE && u128::from(output) > u128::from(input) * u128::from(max_ratio)
}

/// A `Limit` error.
pub(super) fn limit(what: String) -> UnpackError {
    UnpackError::Limit { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_needs_grace_and_excess() {
        assert!(!over_ratio(RATIO_GRACE, 1, 200));
        assert!(!over_ratio(RATIO_GRACE + 1, RATIO_GRACE, 200));
        assert!(over_ratio(201 * 10_000 + RATIO_GRACE, 10_000, 200));
        assert!(!over_ratio(u64::MAX, 1, 0));
    }

    #[test]
    fn bytes_and_entries() {
        let policy = Policy { max_bytes: 10, max_entries: 2, ..Policy::default() };
        let mut meter = Meter::new(&policy);
        assert!(meter.add_bytes(10).is_ok());
        assert!(matches!(meter.add_bytes(1), Err(UnpackError::Limit { .. })));
        assert_eq!(meter.bytes(), 10);
        assert!(meter.count_entry().is_ok());
        assert!(meter.count_entry().is_ok());
        let err = meter.count_entry().expect_err("third entry");
        assert!(err.to_string().contains("max_entries (2)"));
    }

    #[test]
    fn remembered_names_are_bounded() {
        let mut meter = Meter::new(&Policy::default());
        assert!(meter.remember(4000).is_ok());
        let per = 4000 + NODE_COST;
        let mut result = Ok(());
        for _ in 0..=(MAX_REMEMBERED / per) {
            result = result.and(meter.remember(4000));
        }
        assert!(matches!(result, Err(UnpackError::Limit { .. })));
    }

    #[test]
    fn zero_disables() {
        let policy = Policy { max_bytes: 0, max_entries: 0, max_ratio: 0, ..Policy::default() };
        let mut meter = Meter::new(&policy);
        meter.watch(Rc::new(Cell::new(1)), None);
        assert!(meter.add_bytes(u64::MAX / 2).is_ok());
        assert!(meter.count_entry().is_ok());
        assert!(meter.check_ratio().is_ok());
    }

    #[test]
    fn shared_zip_data_counts_once_as_input() {
        let mut meter = Meter::new(&Policy::default());
        // Ten entries re-reading the same 10,000 bytes of a 10,000-byte bundle.
        meter.watch(Rc::new(Cell::new(100_000)), None);
        meter.cap_input(10_000);
        meter.add_bytes(3 * RATIO_GRACE).unwrap();
        assert!(matches!(meter.check_ratio(), Err(UnpackError::Limit { .. })));
    }

    #[test]
    fn ratio_from_counters() {
        let mut meter = Meter::new(&Policy::default());
        let input: Counter = Rc::new(Cell::new(1000));
        let output: Counter = Rc::new(Cell::new(RATIO_GRACE));
        meter.watch(input, Some(output.clone()));
        assert!(meter.check_ratio().is_ok());
        output.set(300_000);
        assert!(meter.check_ratio().is_ok());
        output.set(2 * RATIO_GRACE);
        assert!(matches!(meter.check_ratio(), Err(UnpackError::Limit { .. })));
    }
}
