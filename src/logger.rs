//! A minimal `log` backend: one line per record on stderr, with a UTC
//! timestamp. Enough for a foreground agent or server under an init system
//! that captures stderr; no dependency for it.

use log::{Level, Log, Metadata, Record};

struct StderrLogger {
    level: Level,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            && (metadata.target().starts_with("edgedeploy") || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("{} {level}: {}", crate::clock::now_utc(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger at `level` (`EDGEDEPLOY_LOG=debug` raises it).
pub fn init(level: Level) {
    let level = match std::env::var("EDGEDEPLOY_LOG").ok().as_deref() {
        Some("trace") => Level::Trace,
        Some("debug") => Level::Debug,
        Some("warn") => Level::Warn,
        Some("error") => Level::Error,
        _ => level,
    };
    let logger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level.to_level_filter());
    }
}
