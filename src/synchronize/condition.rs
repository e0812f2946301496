//! `Condition` (Python's `multiprocessing.Condition`).
//!
//! Waiters register in a count, release the lock and sleep on a sequence word. `notify(n)`
//! moves up to `n` registrations into wake tokens, bumps the sequence and wakes that many
//! sleepers; a waiter returns `true` only by taking a token, so exactly as many waiters are
//! told "notified" as were notified, even when wake-ups and timeouts cross (CPython counts
//! the same way with its `sleeping_count`/`woken_count` semaphores). A waiter that times out
//! takes back its registration, or a token if the notifier had already moved it.
//!
//! Tokens are not addressed to anyone, so a waiter may only take one issued after it
//! registered: it notes the sequence when it registers (holding the lock, as every notifier
//! does) and takes tokens only once the sequence has moved on. Otherwise a notifier that
//! waits at once (`notify(); wait()`, as a `wait_for` loop does) would take back the token
//! it had just issued, and the waiter it notified would sleep on with nothing left to wake
//! it. CPython prevents this by making `notify` wait until the notified have woken, which
//! would hang on a waiter that was killed; the rule here needs nobody to be alive.

use super::mutex::Acquired;
use super::{Lock, LockResult, OwnerDied, RLock};
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// One registration: the high half of `counts`.
const WAITER: u64 = 1 << 32;
/// The low half: tokens.
const TOKENS: u64 = WAITER - 1;

#[repr(C)]
#[derive(Default)]
pub(crate) struct CondState {
    seq: AtomicU32,
    _pad: u32,
    /// Registered waiters (high 32 bits) and wake tokens not yet taken (low 32 bits).
    counts: AtomicU64,
}

// SAFETY: atomics (and padding that is never read); zero is no waiter and no token.
unsafe impl SharedState for CondState {}

impl CondState {
    fn update(&self, mut f: impl FnMut(u64) -> Option<u64>) -> Option<u64> {
        self.counts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, &mut f).ok()
    }

    /// Whether a waiter that registered at sequence `registered` may take tokens: only those
    /// issued by a notify after it registered are meant for it.
    fn eligible(&self, registered: u32) -> bool {
        self.seq.load(Ordering::SeqCst) != registered
    }

    fn take_token(&self) -> bool {
        self.update(|c| (c & TOKENS > 0).then(|| c - 1)).is_some()
    }

    /// After a timeout: take a token if one is meant for us (we were notified), or else drop
    /// a registration. Whether notified.
    ///
    /// An eligible waiter takes a token rather than a registration: the registration it
    /// leaves may belong to a waiter that came after the notify, which could not take the
    /// token in its place. A waiter not yet eligible drops a registration, its own being
    /// among them since no notify has run since it registered.
    fn withdraw(&self, registered: u32) -> bool {
        let mut notified = false;
        self.update(|c| {
            let tokens = c & TOKENS > 0;
            notified = tokens && (self.eligible(registered) || c < WAITER);
            if notified {
                Some(c - 1)
            } else if c >= WAITER {
                Some(c - WAITER)
            } else {
                None
            }
        });
        notified
    }
}

/// The lock a [`Condition`] works with: a [`Lock`] or an [`RLock`] (the default); Python's
/// `Condition(lock)` argument.
///
/// ```
/// use multiprocess::{Condition, ConditionLock, Lock};
/// let c = Condition::with_lock(ConditionLock::Lock(Lock::new()?))?;
/// assert!(matches!(c.get_lock(), ConditionLock::Lock(_)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConditionLock {
    /// A non-recursive lock.
    Lock(Lock),
    /// A recursive lock: `wait` releases every level the caller holds and takes them back.
    RLock(RLock),
}

impl From<Lock> for ConditionLock {
    /// ```
    /// let c = multiprocess::Condition::with_lock(multiprocess::Lock::new()?)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    fn from(lock: Lock) -> ConditionLock {
        ConditionLock::Lock(lock)
    }
}

impl From<RLock> for ConditionLock {
    /// ```
    /// let c = multiprocess::Condition::with_lock(multiprocess::RLock::new()?)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    fn from(lock: RLock) -> ConditionLock {
        ConditionLock::RLock(lock)
    }
}

impl ConditionLock {
    fn is_mine(&self) -> bool {
        match self {
            ConditionLock::Lock(l) => l.state().is_mine(),
            ConditionLock::RLock(l) => l.state().is_mine(),
        }
    }

    fn release_all(&self) -> Result<u32> {
        match self {
            ConditionLock::Lock(l) => l.release().map(|()| 1),
            ConditionLock::RLock(l) => l.state().release_all(),
        }
    }

    fn restore(&self, count: u32) -> Acquired {
        match self {
            ConditionLock::Lock(l) => l.state().acquire(Deadline::NEVER),
            ConditionLock::RLock(l) => l.state().restore(count),
        }
    }
}

/// A condition variable for processes and threads together (Python's
/// `multiprocessing.Condition`): wait, holding its lock, until another notifies.
///
/// ```
/// use multiprocess::{Condition, Process};
///
/// fn worker(ready: Condition, flag: multiprocess::Event) -> multiprocess::Result<()> {
///     let _held = ready.lock()?;
///     flag.set();
///     ready.notify_all()
/// }
///
/// let ready = Condition::new()?;
/// let flag = multiprocess::Event::new()?;
/// let mut p = Process::new(worker, (ready.clone(), flag.clone()));
/// {
///     let _held = ready.lock()?;
///     p.start()?;
///     assert!(ready.wait_for(|| flag.is_set(), None)?);
/// }
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
///
/// A waiter killed inside `wait` leaves its registration behind: a later `notify` may count
/// it, and one live waiter may then return `true` from a wait that was not meant for it (a
/// spurious wake-up, which a `wait_for` loop absorbs). Nothing ever hangs on it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    shared: Shared<CondState>,
    lock: ConditionLock,
}

impl Condition {
    /// A condition with a new [`RLock`] (Python's `Condition()`).
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_lock(RLock::new()?)
    }

    /// A condition using `lock` (Python's `Condition(lock)`).
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// let c = multiprocess::Condition::with_lock(lock.clone())?;
    /// let _held = c.lock()?;
    /// assert!(lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_lock(lock: impl Into<ConditionLock>) -> Result<Condition> {
        Ok(Condition { shared: Shared::new(c"multiprocess-condition", 0)?, lock: lock.into() })
    }

    fn state(&self) -> &CondState {
        self.shared.state()
    }

    /// The underlying lock.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(matches!(c.get_lock(), multiprocess::ConditionLock::RLock(_)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> &ConditionLock {
        &self.lock
    }

    /// Acquires the lock (Python's `acquire()`); `Err(Error::OwnerDied)` as [`Lock::acquire`].
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// c.acquire()?;
    /// c.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        match &self.lock {
            ConditionLock::Lock(l) => l.acquire(),
            ConditionLock::RLock(l) => l.acquire(),
        }
    }

    /// Acquires the lock, waiting at most `timeout`; whether it did.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.acquire_timeout(std::time::Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        match &self.lock {
            ConditionLock::Lock(l) => l.acquire_timeout(timeout),
            ConditionLock::RLock(l) => l.acquire_timeout(timeout),
        }
    }

    /// Releases the lock (Python's `release()`).
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// assert!(c.release().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        match &self.lock {
            ConditionLock::Lock(l) => l.release(),
            ConditionLock::RLock(l) => l.release(),
        }
    }

    /// Acquires the lock and returns a guard that releases it (Python's `with cond:`). If the
    /// previous holder died, the guard comes inside [`OwnerDied`](crate::OwnerDied), as from
    /// [`Lock::lock`]; `?` releases the lock and gives [`Error::OwnerDied`].
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _held = c.lock()?;
    /// assert!(!c.wait(Some(std::time::Duration::from_millis(1)))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        let died = matches!(self.acquire(), Err(Error::OwnerDied));
        let guard = ConditionGuard { cond: self, _not_send: std::marker::PhantomData };
        if died { Err(OwnerDied::new(guard)) } else { Ok(guard) }
    }

    /// Releases the lock, waits to be notified or for `timeout` (`None`: no limit), and takes
    /// the lock back (Python's `wait(timeout)`): `Ok(true)` if notified. The caller must hold
    /// the lock ([`Error::NotOwner`] otherwise). `Err(Error::OwnerDied)`: while we waited a
    /// holder of the lock died; we hold it again.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// c.acquire()?;
    /// assert!(!c.wait(Some(std::time::Duration::ZERO))?);
    /// c.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.lock.is_mine() {
            return Err(Error::NotOwner);
        }
        let deadline = Deadline::after(timeout);
        let state = self.state();
        // Holding the lock: no notify runs between these two.
        let registered = state.seq.load(Ordering::SeqCst);
        state.counts.fetch_add(WAITER, Ordering::SeqCst);
        let levels = match self.lock.release_all() {
            Ok(levels) => levels,
            Err(e) => {
                state.withdraw(registered);
                return Err(e);
            }
        };
        let notified = loop {
            // The sequence is read before looking for a token: a notify in between changes
            // it, and the wait below then returns at once.
            let seq = state.seq.load(Ordering::SeqCst);
            if seq != registered && state.take_token() {
                break true;
            }
            if !futex::wait(&state.seq, seq, deadline) {
                break state.withdraw(registered);
            }
        };
        match self.lock.restore(levels) {
            Acquired::OwnerDied => Err(Error::OwnerDied),
            _ => Ok(notified),
        }
    }

    /// Waits until `predicate()` is true, or for at most `timeout` in all; returns the
    /// predicate's last value (Python's `wait_for`). The caller must hold the lock.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _held = c.lock()?;
    /// assert!(c.wait_for(|| true, None)?);
    /// assert!(!c.wait_for(|| false, Some(std::time::Duration::from_millis(10)))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<bool> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            self.wait(deadline.remaining())?;
        }
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`). The caller must hold the lock.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _held = c.lock()?;
    /// c.notify(1)?; // no waiter: nothing happens
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify(&self, n: u32) -> Result<()> {
        if !self.lock.is_mine() {
            return Err(Error::NotOwner);
        }
        let state = self.state();
        let mut moved = 0;
        state.update(|c| {
            let waiters = (c >> 32) as u32;
            moved = waiters.min(n).min((TOKENS - (c & TOKENS)) as u32);
            (moved > 0).then(|| c - u64::from(moved) * WAITER + u64::from(moved))
        });
        if moved > 0 {
            state.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&state.seq, moved);
        }
        Ok(())
    }

    /// Wakes every waiter (Python's `notify_all()`). The caller must hold the lock.
    ///
    /// ```
    /// let c = multiprocess::Condition::new()?;
    /// let _held = c.lock()?;
    /// c.notify_all()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify(u32::MAX)
    }
}

impl fmt::Debug for Condition {
    /// CPython's repr: `<Condition(<RLock(None, 0)>, 0)>`, the lock and the sleepers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiters = self.state().counts.load(Ordering::Relaxed) >> 32;
        match &self.lock {
            ConditionLock::Lock(l) => write!(f, "<Condition({l:?}, {waiters})>"),
            ConditionLock::RLock(l) => write!(f, "<Condition({l:?}, {waiters})>"),
        }
    }
}

/// Holds a [`Condition`]'s lock until dropped; from [`Condition::lock`] (Python's
/// `with cond:`).
///
/// ```
/// let c = multiprocess::Condition::new()?;
/// let held = c.lock()?;
/// c.notify_all()?; // allowed: the lock is held
/// drop(held);
/// assert!(c.notify_all().is_err());
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").field("cond", self.cond).finish()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cond.release();
    }
}
