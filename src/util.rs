//! Diagnostics (Python's `multiprocessing.util`: `get_logger`, `log_to_stderr`).
//!
//! The crate reports what it does behind the user's back through the [`log`] facade, under
//! the target [`LOG_TARGET`] (`"multiprocess"`): a pool replacing a dead worker, a lock handed
//! to a new owner after its holder died, a listener dropping a client that failed the
//! handshake. Nothing is printed unless a logger is installed: install any `log` logger
//! (env_logger, tracing's bridge, ...) and filter on the target, or call [`log_to_stderr`],
//! as a Python user calls `multiprocessing.log_to_stderr()`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The `log` target of every record this crate emits (Python's logger name,
/// `multiprocessing`).
///
/// ```
/// assert_eq!(multiprocess::util::LOG_TARGET, "multiprocess");
/// ```
pub const LOG_TARGET: &str = "multiprocess";

/// Sends this crate's log records at `level` and above to standard error, in CPython's
/// format, `[LEVEL/ProcessName] message` (Python's `multiprocessing.log_to_stderr(level)`).
///
/// It installs a small logger of its own if the program has none; calling it again changes
/// the level. If the program already installed another logger, that logger stays and only
/// the maximum level is raised to `level` (records then go wherever that logger sends them).
/// Only records of target [`LOG_TARGET`] (and its sub-targets) are printed by this logger.
///
/// ```
/// multiprocess::util::log_to_stderr(log::LevelFilter::Info);
/// log::info!(target: multiprocess::util::LOG_TARGET, "shown on stderr");
/// ```
pub fn log_to_stderr(level: log::LevelFilter) {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        // Fails only if another logger is there already, which then keeps the records.
        let _ = log::set_logger(&StderrLogger);
    }
    log::set_max_level(level);
}

/// The logger [`log_to_stderr`] installs.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let target = metadata.target();
        metadata.level() <= log::max_level()
            && (target == LOG_TARGET || target.strip_prefix(LOG_TARGET).is_some_and(|rest| rest.starts_with("::")))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let process = crate::current_process();
        let line = format!("[{}/{}] {}\n", record.level(), process.name(), record.args());
        // One write per record, so lines from several processes do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
