//! Deadlines: a timeout turned into a point in time once, so that retries after `EINTR` or a
//! spurious wake-up wait only for what is left.

use std::time::{Duration, Instant};

/// When a blocking call gives up: never, at once, or at an instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(When);

#[derive(Clone, Copy, Debug)]
enum When {
    Never,
    /// A timeout of zero: look once, never wait (known without reading the clock, which a
    /// `get_nowait` on a busy queue would otherwise do on every call).
    Now,
    At(Instant),
}

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub(crate) const NEVER: Deadline = Deadline(When::Never);

    /// A deadline `timeout` from now; `None` means never.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(match timeout {
            None => When::Never,
            Some(t) if t.is_zero() => When::Now,
            // A timeout too large for `Instant` is as good as none.
            Some(t) => Instant::now().checked_add(t).map_or(When::Never, When::At),
        })
    }

    /// What is left, or `None` for no deadline; zero once passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        match self.0 {
            When::Never => None,
            When::Now => Some(Duration::ZERO),
            When::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_has_passed_never_has_not_and_a_timeout_runs_down() {
        assert!(Deadline::after(Some(Duration::ZERO)).expired());
        assert_eq!(Deadline::after(Some(Duration::ZERO)).poll_timeout_ms(), 0);
        assert!(!Deadline::NEVER.expired());
        assert_eq!(Deadline::after(None).poll_timeout_ms(), -1);
        assert_eq!(Deadline::after(Some(Duration::MAX)).remaining(), None);
        let d = Deadline::after(Some(Duration::from_millis(20)));
        assert!(!d.expired());
        assert!((1..=20).contains(&d.poll_timeout_ms()));
        std::thread::sleep(Duration::from_millis(25));
        assert!(d.expired());
    }
}
