//! `Semaphore` and `BoundedSemaphore` (Python's `multiprocessing.Semaphore` and
//! `BoundedSemaphore`).

use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex, proc};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The largest value a semaphore may hold (POSIX's `SEM_VALUE_MAX` on Linux, Python's
/// `multiprocessing.synchronize.SEM_VALUE_MAX`).
///
/// ```
/// use multiprocess::synchronize::SEM_VALUE_MAX;
/// assert!(multiprocess::Semaphore::new(SEM_VALUE_MAX + 1).is_err());
/// ```
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// Spins before sleeping (about 50 µs at most): a releaser on another core usually comes
/// sooner, and a sleeper's wake-up costs some 20 µs on these machines.
const SPINS: u32 = 2000;

/// The counter, and how many may be asleep on it (so a release without sleepers makes no
/// system call). A sleeper that was killed leaves `sleepers` one too high, which costs later
/// releases a needless wake, never a lost one.
#[repr(C)]
#[derive(Default)]
pub(crate) struct SemState {
    value: AtomicU32,
    sleepers: AtomicU32,
    /// The CPU of the last `release` (plus one; 0 unknown): a waiter on the same CPU does not
    /// spin, since the releaser cannot run meanwhile.
    releaser_cpu: AtomicU32,
}

// SAFETY: atomics only; zero is a semaphore at zero with no sleepers.
unsafe impl SharedState for SemState {}

impl SemState {
    fn try_take(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self.value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    pub(crate) fn acquire(&self, deadline: Deadline) -> bool {
        let releaser = self.releaser_cpu.load(Ordering::Relaxed);
        futex::park_until(&self.value, 0, &self.sleepers, releaser, SPINS, deadline, || self.try_take())
    }

    /// Adds one, unless that would pass `max`.
    pub(crate) fn release(&self, max: u32) -> Result<()> {
        self.releaser_cpu.store(proc::current_cpu(), Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(Error::ReleasedTooManyTimes);
            }
            match self.value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.value, 1);
        }
        Ok(())
    }

    pub(crate) fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A counter that `acquire` decrements, waiting while it is zero, and `release` increments
/// (Python's `multiprocessing.Semaphore`). Shared by processes and threads; clones share it.
///
/// ```
/// use multiprocess::{Process, Semaphore};
///
/// fn worker(done: Semaphore) -> multiprocess::Result<()> {
///     done.release()
/// }
///
/// let done = Semaphore::new(0)?;
/// let mut p = Process::new(worker, (done.clone(),));
/// p.start()?;
/// done.acquire()?; // waits for the child's release
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    shared: Shared<SemState>,
    max: u32,
}

impl Semaphore {
    /// A semaphore holding `value` (Python's `Semaphore(value)`); above [`SEM_VALUE_MAX`] is
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(2)?;
    /// assert_eq!(s.get_value(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Semaphore::with_max(value, SEM_VALUE_MAX)
    }

    fn with_max(value: u32, max: u32) -> Result<Semaphore> {
        if value > max {
            return Err(Error::InvalidArgument(format!("semaphore value {value} above its maximum {max}")));
        }
        let shared: Shared<SemState> = Shared::new(0)?;
        shared.state().value.store(value, Ordering::Relaxed);
        Ok(Semaphore { shared, max })
    }

    fn state(&self) -> &SemState {
        self.shared.state()
    }

    /// Takes one, waiting while the value is zero (Python's `acquire()`).
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(1)?;
    /// s.acquire()?;
    /// assert_eq!(s.get_value(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.state().acquire(Deadline::NEVER);
        Ok(())
    }

    /// Takes one if the value is above zero; never waits (Python's `acquire(False)`).
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        self.state().acquire(Deadline::after(Some(Duration::ZERO)))
    }

    /// Takes one, waiting at most `timeout` (Python's `acquire(timeout=t)`); whether it did.
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(0)?;
    /// assert!(!s.acquire_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state().acquire(Deadline::after(Some(timeout)))
    }

    /// Adds one, waking a waiter (Python's `release()`). Past [`SEM_VALUE_MAX`] (or a
    /// [`BoundedSemaphore`]'s initial value) it is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(0)?;
    /// s.release()?;
    /// s.release()?;
    /// assert_eq!(s.get_value(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state().release(self.max)
    }

    /// The current value (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Semaphore::new(3)?.get_value(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.state().value()
    }

    /// Takes one and returns a guard that gives it back when dropped (Python's `with sem:`).
    ///
    /// ```
    /// let s = multiprocess::Semaphore::new(1)?;
    /// {
    ///     let _slot = s.guard()?;
    ///     assert_eq!(s.get_value(), 0);
    /// }
    /// assert_eq!(s.get_value(), 1);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn guard(&self) -> Result<SemaphoreGuard<'_>> {
        self.acquire()?;
        Ok(SemaphoreGuard { release: self })
    }
}

impl fmt::Debug for Semaphore {
    /// CPython's repr: `<Semaphore(value=3)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Semaphore(value={})>", self.get_value())
    }
}

/// Holds one unit of a semaphore until dropped; from [`Semaphore::guard`] or
/// [`BoundedSemaphore::guard`] (Python's `with sem:`).
///
/// ```
/// let s = multiprocess::Semaphore::new(1)?;
/// let unit = s.guard()?;
/// assert_eq!(s.get_value(), 0);
/// drop(unit);
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the unit is given back as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    release: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.release.release();
    }
}

/// A [`Semaphore`] that may not be released above its initial value (Python's
/// `multiprocessing.BoundedSemaphore`): one release too many is
/// [`Error::ReleasedTooManyTimes`], and the value stays where it was.
///
/// ```
/// let s = multiprocess::BoundedSemaphore::new(1)?;
/// s.acquire()?;
/// s.release()?;
/// assert!(matches!(s.release(), Err(multiprocess::Error::ReleasedTooManyTimes)));
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A semaphore holding `value`, which is also its maximum (Python's `BoundedSemaphore(value)`).
    ///
    /// ```
    /// assert_eq!(multiprocess::BoundedSemaphore::new(2)?.get_value(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore { inner: Semaphore::with_max(value, value.min(SEM_VALUE_MAX))? })
    }

    /// As [`Semaphore::acquire`].
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// s.acquire()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// As [`Semaphore::try_acquire`].
    ///
    /// ```
    /// assert!(!multiprocess::BoundedSemaphore::new(0)?.try_acquire());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        self.inner.try_acquire()
    }

    /// As [`Semaphore::acquire_timeout`].
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// assert!(s.acquire_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.inner.acquire_timeout(timeout)
    }

    /// Adds one; above the initial value it is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The current value (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiprocess::BoundedSemaphore::new(4)?.get_value(), 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.inner.get_value()
    }

    /// As [`Semaphore::guard`].
    ///
    /// ```
    /// let s = multiprocess::BoundedSemaphore::new(1)?;
    /// let _slot = s.guard()?;
    /// assert_eq!(s.get_value(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn guard(&self) -> Result<SemaphoreGuard<'_>> {
        self.inner.guard()
    }
}

impl fmt::Debug for BoundedSemaphore {
    /// CPython's repr: `<BoundedSemaphore(value=2, maxvalue=2)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<BoundedSemaphore(value={}, maxvalue={})>", self.get_value(), self.inner.max)
    }
}
