//! Lock, semaphore and event proxies (Python's `manager.Lock()`, `RLock()`, `Semaphore(n)`,
//! `BoundedSemaphore(n)`, `Event()`).
//!
//! A lock a client process held when it ended (exited, or was SIGKILLed) is handed on: the
//! next acquirer gets it with [`Error::OwnerDied`], as the native locks report a dead holder.
//! CPython's manager keeps it held for ever.

use super::proxy::{Inner, boolean, expect};
use super::wire::{Init, Kind, LockFlavour, Op, Reply, Wait};
use super::{SyncManager, proxy_common};
use crate::{Error, Result};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The calling thread, as the server tells a process's threads apart.
fn thread() -> u64 {
    crate::sys::proc::cached_tid() as u64
}

macro_rules! lock_proxy {
    ($(#[$doc:meta])* $name:ident, $guard:ident, $python:literal, $example:literal) => {
        $(#[$doc])*
        pub struct $name {
            inner: Arc<Inner>,
            types: PhantomData<()>,
        }

        proxy_common!($name<>);

        impl $name {
            fn acquire_waiting(&self, wait: Wait) -> Result<bool> {
                boolean(self.inner.call(Op::LockAcquire { thread: thread(), wait }, Vec::new())?)
            }

            #[doc = concat!("Acquires, waiting as long as it takes (`", $python, ".acquire()`). `Err(OwnerDied)` means acquired, from a process that died holding it.")]
            ///
            /// ```
            #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
            /// l.acquire()?;
            /// l.release()?;
            /// # Ok::<(), multiprocess::Error>(())
            /// ```
            pub fn acquire(&self) -> Result<()> {
                self.acquire_waiting(Wait::Forever).map(drop)
            }

            #[doc = concat!("Acquires if free now (`", $python, ".acquire(False)`); whether it did.")]
            ///
            /// ```
            #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
            /// assert!(l.try_acquire()?);
            /// l.release()?;
            /// # Ok::<(), multiprocess::Error>(())
            /// ```
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_waiting(Wait::No)
            }

            #[doc = concat!("Acquires, waiting at most `timeout` (`", $python, ".acquire(timeout=t)`); whether it did.")]
            ///
            /// ```
            #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
            /// assert!(l.acquire_timeout(std::time::Duration::from_millis(10))?);
            /// l.release()?;
            /// # Ok::<(), multiprocess::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.acquire_waiting(Wait::from_timeout(Some(timeout)))
            }

            #[doc = concat!("Releases (`", $python, ".release()`).")]
            ///
            /// ```
            #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
            /// l.acquire()?;
            /// l.release()?;
            /// # Ok::<(), multiprocess::Error>(())
            /// ```
            pub fn release(&self) -> Result<()> {
                self.inner.call(Op::LockRelease { thread: thread() }, Vec::new()).map(drop)
            }

            /// Acquires and returns a guard that releases when dropped (`with l:`). A
            /// holder that died is reported as [`Error::OwnerDied`], and the lock released.
            ///
            /// ```
            #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
            /// {
            ///     let _held = l.lock()?;
            /// }
            /// assert!(l.try_acquire()?);
            /// # Ok::<(), multiprocess::Error>(())
            /// ```
            pub fn lock(&self) -> Result<$guard<'_>> {
                match self.acquire() {
                    Ok(()) => Ok($guard { lock: self }),
                    Err(Error::OwnerDied) => {
                        let _ = self.release();
                        Err(Error::OwnerDied)
                    }
                    Err(e) => Err(e),
                }
            }
        }

        #[doc = concat!("The guard of [`", stringify!($name), "::lock`]: releases when dropped.")]
        ///
        /// ```
        #[doc = concat!("let m = multiprocess::manager()?;\nlet l = m.", $example, "?;")]
        /// let guard = l.lock()?;
        /// drop(guard);
        /// # Ok::<(), multiprocess::Error>(())
        /// ```
        pub struct $guard<'a> {
            lock: &'a $name,
        }

        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                let _ = self.lock.release();
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($guard), self.lock)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} object {}>", stringify!($name), self.inner.id())
            }
        }
    };
}

lock_proxy!(
    /// A lock in a manager's server (Python's `manager.Lock()`): any thread of any process
    /// may release it; releasing it unlocked is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// use multiprocess::Error;
    /// let m = multiprocess::manager()?;
    /// let l = m.lock()?;
    /// l.acquire()?;
    /// assert!(l.locked()?);
    /// l.release()?;
    /// assert!(matches!(l.release(), Err(Error::ReleasedTooManyTimes)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    LockProxy, LockProxyGuard, "Lock", "lock()"
);

lock_proxy!(
    /// A reentrant lock in a manager's server (Python's `manager.RLock()`): owned by one
    /// thread of one process, which may take it again; others get [`Error::NotOwner`] from
    /// `release`.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.rlock()?;
    /// l.acquire()?;
    /// l.acquire()?;
    /// l.release()?;
    /// l.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    RLockProxy, RLockProxyGuard, "RLock", "rlock()"
);

lock_proxy!(
    /// A semaphore in a manager's server (Python's `manager.Semaphore(n)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.semaphore(2)?;
    /// assert!(s.try_acquire()? && s.try_acquire()? && !s.try_acquire()?);
    /// assert_eq!(s.get_value()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    SemaphoreProxy, SemaphoreProxyGuard, "Semaphore", "semaphore(1)"
);

lock_proxy!(
    /// A bounded semaphore in a manager's server (Python's `manager.BoundedSemaphore(n)`):
    /// a release past the initial value is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// use multiprocess::Error;
    /// let m = multiprocess::manager()?;
    /// let s = m.bounded_semaphore(1)?;
    /// assert!(matches!(s.release(), Err(Error::ReleasedTooManyTimes)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    BoundedSemaphoreProxy, BoundedSemaphoreProxyGuard, "BoundedSemaphore", "bounded_semaphore(1)"
);

impl LockProxy {
    /// Whether some thread holds it (`locked()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.lock()?.locked()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn locked(&self) -> Result<bool> {
        boolean(self.inner.call(Op::LockLocked, Vec::new())?)
    }
}

impl RLockProxy {
    /// Whether some thread holds it.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.rlock()?.locked()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn locked(&self) -> Result<bool> {
        boolean(self.inner.call(Op::LockLocked, Vec::new())?)
    }
}

fn value(inner: &Inner) -> Result<usize> {
    super::proxy::count(inner.call(Op::LockValue, Vec::new())?)
}

impl SemaphoreProxy {
    /// Acquisitions possible now (`get_value()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.semaphore(3)?.get_value()?, 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> Result<usize> {
        value(&self.inner)
    }
}

impl BoundedSemaphoreProxy {
    /// Acquisitions possible now (`get_value()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.bounded_semaphore(3)?.get_value()?, 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_value(&self) -> Result<usize> {
        value(&self.inner)
    }
}

impl SyncManager {
    fn make_lock(&self, flavour: LockFlavour, value: usize) -> Result<Arc<Inner>> {
        self.make(Kind::Lock { flavour, value: value as u64 }, Init::Empty, Vec::new())
    }

    /// A new lock (`manager.Lock()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.lock()?;
    /// assert!(l.try_acquire()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy { inner: self.make_lock(LockFlavour::Lock, 1)?, types: PhantomData })
    }

    /// A new reentrant lock (`manager.RLock()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.rlock()?;
    /// assert!(l.try_acquire()? && l.try_acquire()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn rlock(&self) -> Result<RLockProxy> {
        Ok(RLockProxy { inner: self.make_lock(LockFlavour::RLock, 1)?, types: PhantomData })
    }

    /// A new semaphore of `value` (`manager.Semaphore(value)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.semaphore(2)?.get_value()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn semaphore(&self, value: usize) -> Result<SemaphoreProxy> {
        Ok(SemaphoreProxy { inner: self.make_lock(LockFlavour::Semaphore, value)?, types: PhantomData })
    }

    /// A new bounded semaphore of `value` (`manager.BoundedSemaphore(value)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.bounded_semaphore(2)?.get_value()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn bounded_semaphore(&self, value: usize) -> Result<BoundedSemaphoreProxy> {
        Ok(BoundedSemaphoreProxy { inner: self.make_lock(LockFlavour::BoundedSemaphore, value)?, types: PhantomData })
    }

    /// A new event, not set (`manager.Event()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.event()?.is_set()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy { inner: self.make(Kind::Event, Init::Empty, Vec::new())?, types: PhantomData })
    }
}

/// An event in a manager's server (Python's `manager.Event()`).
///
/// ```
/// use std::time::Duration;
/// let m = multiprocess::manager()?;
/// let e = m.event()?;
/// assert!(!e.wait(Some(Duration::from_millis(10)))?);
/// e.set()?;
/// assert!(e.wait(None)?);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct EventProxy {
    inner: Arc<Inner>,
    types: PhantomData<()>,
}

proxy_common!(EventProxy);

impl EventProxy {
    /// Sets the flag and wakes every waiter (`set()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let e = m.event()?;
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        self.inner.call(Op::EventSet, Vec::new()).map(drop)
    }

    /// Clears the flag (`clear()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let e = m.event()?;
    /// e.set()?;
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.inner.call(Op::EventClear, Vec::new()).map(drop)
    }

    /// Whether the flag is set (`is_set()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.event()?.is_set()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        boolean(self.inner.call(Op::EventIsSet, Vec::new())?)
    }

    /// Waits until the flag is set, at most `timeout` (`None`: for ever); whether it is
    /// (`wait(timeout)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let e = m.event()?;
    /// assert!(!e.wait(Some(std::time::Duration::ZERO))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        boolean(self.inner.call(Op::EventWait(Wait::from_timeout(timeout)), Vec::new())?)
    }
}

impl fmt::Debug for EventProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<EventProxy object {}>", self.inner.id())
    }
}

lock_proxy!(
    /// A condition variable in a manager's server, over its own reentrant lock (Python's
    /// `manager.Condition()`): `acquire`/`release`/`lock()` take its lock; `wait`, `wait_for`
    /// and `notify` need it held (else [`Error::NotOwner`]).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// let _held = c.lock()?;
    /// assert!(!c.wait(Some(std::time::Duration::from_millis(10)))?);
    /// c.notify_all()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    ConditionProxy, ConditionProxyGuard, "Condition", "condition()"
);

impl ConditionProxy {
    /// Releases the lock, waits for a notify (at most `timeout`; `None`: for ever), and takes
    /// the lock back; whether it was notified (`wait(timeout)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// c.acquire()?;
    /// assert!(!c.wait(Some(std::time::Duration::ZERO))?);
    /// c.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        boolean(self.inner.call(Op::CondWait { thread: thread(), wait: Wait::from_timeout(timeout) }, Vec::new())?)
    }

    /// Waits until `predicate()` holds, at most `timeout` in all; its last value
    /// (`wait_for(predicate, timeout)`). The lock must be held; the predicate runs with it held.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// let _held = c.lock()?;
    /// assert!(c.wait_for(|| true, None)?);
    /// assert!(!c.wait_for(|| false, Some(std::time::Duration::from_millis(10)))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(predicate());
            }
            self.wait(left)?;
        }
    }

    /// Wakes up to `n` waiters, oldest first (`notify(n)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// let _held = c.lock()?;
    /// c.notify(1)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify(&self, n: usize) -> Result<()> {
        self.inner.call(Op::CondNotify { thread: thread(), n: n as u64 }, Vec::new()).map(drop)
    }

    /// Wakes every waiter (`notify_all()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// let _held = c.lock()?;
    /// c.notify_all()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify(usize::MAX)
    }
}

/// A barrier in a manager's server (Python's `manager.Barrier(parties)`). It has no action:
/// the server runs no code of its clients'; the party that gets index 0 can run it.
///
/// ```
/// let m = multiprocess::manager()?;
/// let b = m.barrier(1)?;
/// assert_eq!(b.wait()?, 0);
/// assert_eq!(b.parties()?, 1);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct BarrierProxy {
    inner: Arc<Inner>,
    types: PhantomData<()>,
}

proxy_common!(BarrierProxy);

impl SyncManager {
    /// A new condition variable over a new reentrant lock (`manager.Condition()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let c = m.condition()?;
    /// assert!(c.try_acquire()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn condition(&self) -> Result<ConditionProxy> {
        Ok(ConditionProxy { inner: self.make(Kind::Condition, Init::Empty, Vec::new())?, types: PhantomData })
    }

    /// A new barrier for `parties` (`manager.Barrier(parties)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.barrier(3)?.n_waiting()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        if parties == 0 {
            return Err(Error::InvalidArgument("a barrier needs at least one party".into()));
        }
        let kind = Kind::Barrier { parties: parties as u64 };
        Ok(BarrierProxy { inner: self.make(kind, Init::Empty, Vec::new())?, types: PhantomData })
    }
}

impl BarrierProxy {
    fn wait_waiting(&self, wait: Wait) -> Result<usize> {
        super::proxy::count(self.inner.call(Op::BarrierWait(wait), Vec::new())?)
    }

    fn state(&self) -> Result<(usize, usize, bool)> {
        expect(self.inner.call(Op::BarrierState, Vec::new())?, |r| match r {
            Reply::Barrier { parties, waiting, broken } => Ok((parties as usize, waiting as usize, broken)),
            r => Err(r),
        })
    }

    /// Waits for every party; this party's index, from `parties - 1` (first) to 0 (last)
    /// (`wait()`). [`Error::BrokenBarrier`] if it broke.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.barrier(1)?.wait()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) -> Result<usize> {
        self.wait_waiting(Wait::Forever)
    }

    /// Waits at most `timeout`; past it the barrier breaks, for every party
    /// (`wait(timeout)`).
    ///
    /// ```
    /// use multiprocess::Error;
    /// let m = multiprocess::manager()?;
    /// let b = m.barrier(2)?;
    /// assert!(matches!(b.wait_timeout(std::time::Duration::from_millis(10)), Err(Error::BrokenBarrier)));
    /// assert!(b.broken()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_waiting(Wait::from_timeout(Some(timeout)))
    }

    /// Breaks the barrier (`abort()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let b = m.barrier(2)?;
    /// b.abort()?;
    /// assert!(b.broken()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        self.inner.call(Op::BarrierAbort, Vec::new()).map(drop)
    }

    /// Makes it whole again (`reset()`); parties waiting get [`Error::BrokenBarrier`].
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let b = m.barrier(2)?;
    /// b.abort()?;
    /// b.reset()?;
    /// assert!(!b.broken()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        self.inner.call(Op::BarrierReset, Vec::new()).map(drop)
    }

    /// The number of parties (`parties`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.barrier(4)?.parties()?, 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn parties(&self) -> Result<usize> {
        Ok(self.state()?.0)
    }

    /// The parties waiting now (`n_waiting`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.barrier(4)?.n_waiting()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn n_waiting(&self) -> Result<usize> {
        Ok(self.state()?.1)
    }

    /// Whether it is broken (`broken`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.barrier(4)?.broken()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn broken(&self) -> Result<bool> {
        Ok(self.state()?.2)
    }
}

impl fmt::Debug for BarrierProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<BarrierProxy object {}>", self.inner.id())
    }
}
