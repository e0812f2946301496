//! Lock, semaphore and event proxies (Python's `manager.Lock()`, `RLock()`, `Semaphore(n)`,
//! `BoundedSemaphore(n)`, `Event()`).
//!
//! A lock a client process held when it ended (exited, or was SIGKILLed) is handed on: the
//! next acquirer gets it with [`Error::OwnerDied`], as the native locks report a dead holder.
//! CPython's manager keeps it held for ever.

use super::proxy::{Inner, expect};
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

fn boolean(reply: Reply) -> Result<bool> {
    expect(reply, |r| match r {
        Reply::Bool(b) => Ok(b),
        r => Err(r),
    })
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
    expect(inner.call(Op::LockValue, Vec::new())?, |r| match r {
        Reply::Count(n) => Ok(n as usize),
        r => Err(r),
    })
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
        self.create(Kind::Lock { flavour, value: value as u64 }, Init::Empty, Vec::new())
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
        Ok(EventProxy { inner: self.create(Kind::Event, Init::Empty, Vec::new())?, types: PhantomData })
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
