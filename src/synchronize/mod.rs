//! Locks and other synchronization between processes (Python's
//! `multiprocessing.synchronize`): [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`],
//! [`Condition`], [`Event`] and [`Barrier`].
//!
//! Each lives in a small shared-memory segment of its own (a memfd: nothing is left in
//! `/dev/shm`, and the memory goes when the last process holding it does) and works on
//! futexes, so threads and processes may wait on the same object. Clones share the object;
//! pass one to a child in its `args`, under any start method. Waits spin briefly before they
//! sleep, and every blocking call has a timeout form.
//!
//! Unlike CPython's, these locks survive the death of their holder: see [`Lock`].

mod barrier;
mod condition;
pub(crate) mod deathwatch;
mod event;
mod lock;
pub(crate) mod mutex;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, ConditionLock};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
#[allow(unused_imports)]
pub(crate) use lock::{LockState, RLockState};
pub use semaphore::{BoundedSemaphore, SEM_VALUE_MAX, Semaphore, SemaphoreGuard};

use crate::{Error, Result};
use mutex::Acquired;
use std::fmt;

/// What a guard-returning `lock()` gives: the guard, or the guard inside [`OwnerDied`] when
/// the previous holder died holding the lock (as `std::sync::LockResult` does for poisoning).
/// Python has no counterpart: its locks wait for ever there.
///
/// ```
/// let lock = multiprocess::Lock::new()?;
/// let result: multiprocess::LockResult<_> = lock.lock();
/// assert!(result.is_ok());
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub type LockResult<G> = std::result::Result<G, OwnerDied<G>>;

/// The lock was taken over from a process that died holding it: the guard is valid and the
/// lock is held, but what the lock protected may be half-updated. `?` turns it into
/// [`Error::OwnerDied`], releasing the lock; [`into_inner`](OwnerDied::into_inner) keeps it.
///
/// ```
/// let lock = multiprocess::Lock::new()?;
/// let guard = match lock.lock() {
///     Ok(guard) => guard,
///     Err(died) => died.into_inner(), // repair the shared data here
/// };
/// drop(guard);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> OwnerDied<G> {
        OwnerDied { guard }
    }

    /// The guard: the lock stays held.
    ///
    /// ```
    /// # let lock = multiprocess::Lock::new()?;
    /// let guard = lock.lock().unwrap_or_else(|died| died.into_inner());
    /// # drop(guard);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous holder of the lock died")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

impl<G> From<OwnerDied<G>> for Error {
    fn from(_: OwnerDied<G>) -> Error {
        Error::OwnerDied
    }
}

/// `Ok(true)` taken, `Ok(false)` not, `Err(OwnerDied)` taken from a dead holder.
pub(crate) fn acquired(a: Acquired) -> Result<bool> {
    match a {
        Acquired::Yes => Ok(true),
        Acquired::No => Ok(false),
        Acquired::OwnerDied => Err(Error::OwnerDied),
    }
}
