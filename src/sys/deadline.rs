//! Deadlines: a timeout turned into a point in time once, so that retries after `EINTR` or a
//! spurious wake-up wait only for what is left.

use std::time::{Duration, Instant};

/// When a blocking call gives up: never, or at an instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// A deadline `timeout` from now; `None` means never.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        // A timeout too large for `Instant` is as good as none.
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// What is left, or `None` for no deadline; zero once passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The remaining time in whole milliseconds for `poll(2)`, rounded up so that we never wake
    /// before the deadline; `-1` for no deadline.
    pub(crate) fn poll_timeout_ms(self) -> libc::c_int {
        match self.remaining() {
            None => -1,
            Some(left) => {
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}
