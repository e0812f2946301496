//! `Lock` and `RLock` (Python's `multiprocessing.Lock` and `RLock`).

use super::mutex::{Acquired, RawMutex};
use super::{LockResult, OwnerDied, acquired};
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, proc};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A lock's shared state: the word, and which thread of the holding process took it (for
/// `Debug` and for `Condition`'s "is it mine" check).
#[repr(C)]
#[derive(Default)]
pub(crate) struct LockState {
    pub(crate) mutex: RawMutex,
    owner_tid: AtomicU32,
}

// SAFETY: atomics only; zero is a free lock.
unsafe impl SharedState for LockState {}

impl LockState {
    pub(crate) fn acquire(&self, deadline: Deadline) -> Acquired {
        let a = self.mutex.lock(deadline);
        if a != Acquired::No {
            self.owner_tid.store(proc::cached_tid() as u32, Ordering::Relaxed);
        }
        a
    }

    pub(crate) fn try_acquire(&self) -> Acquired {
        let a = self.mutex.try_lock();
        if a != Acquired::No {
            self.owner_tid.store(proc::cached_tid() as u32, Ordering::Relaxed);
        }
        a
    }

    pub(crate) fn release(&self) -> Result<()> {
        self.owner_tid.store(0, Ordering::Relaxed);
        if self.mutex.unlock() { Ok(()) } else { Err(Error::ReleasedTooManyTimes) }
    }

    /// Whether the calling thread took it.
    pub(crate) fn is_mine(&self) -> bool {
        self.mutex.held_by_this_process() && self.owner_tid.load(Ordering::Relaxed) == proc::cached_tid() as u32
    }

    fn owner_tid(&self) -> u32 {
        self.owner_tid.load(Ordering::Relaxed)
    }
}

/// A non-recursive lock shared by processes and threads (Python's `multiprocessing.Lock`).
///
/// Any thread of any process may release it, not only the one that acquired it, as in
/// Python. If the process holding it dies, the next acquirer gets it within about 20 ms of
/// trying and is told so by [`Error::OwnerDied`] (it then holds the lock); CPython waits
/// forever there. Clones share the lock; pass it to a child in its `args`.
///
/// ```
/// use multiprocess::{Lock, Process};
///
/// fn worker(lock: Lock) -> multiprocess::Result<()> {
///     let _guard = lock.lock()?; // `with lock:`
///     println!("the child holds the lock");
///     Ok(())
/// }
///
/// let lock = Lock::new()?;
/// let mut p = Process::new(worker, (lock.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert!(lock.try_acquire()?);
/// lock.release()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    shared: Shared<LockState>,
}

impl Lock {
    /// A new, unlocked lock (Python's `Lock()`).
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock { shared: Shared::new(0)? })
    }

    pub(crate) fn state(&self) -> &LockState {
        self.shared.state()
    }

    /// Waits for the lock and takes it (Python's `acquire()`).
    ///
    /// `Err(Error::OwnerDied)` means the lock was taken over from a process that died
    /// holding it: the caller holds it now, and must release it.
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire()?;
    /// assert!(lock.locked());
    /// lock.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        acquired(self.state().acquire(Deadline::NEVER)).map(drop)
    }

    /// Takes the lock if it is free; never waits (Python's `acquire(False)`). `Ok(false)`
    /// when another holds it; `Err(Error::OwnerDied)` as for [`acquire`](Lock::acquire).
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// assert!(lock.try_acquire()?);
    /// assert!(!lock.try_acquire()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        acquired(self.state().try_acquire())
    }

    /// Waits at most `timeout` for the lock (Python's `acquire(timeout=t)`): `Ok(true)` if
    /// taken, `Ok(false)` if the time ran out.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire()?;
    /// assert!(!lock.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        acquired(self.state().acquire(Deadline::after(Some(timeout))))
    }

    /// Releases the lock, whoever holds it (Python's `release()`). Releasing a lock that is
    /// not held is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// lock.acquire()?;
    /// lock.release()?;
    /// assert!(matches!(lock.release(), Err(multiprocess::Error::ReleasedTooManyTimes)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state().release()
    }

    /// Whether some process holds the lock (Python's `locked()`).
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// let guard = lock.lock()?;
    /// assert!(lock.locked());
    /// drop(guard);
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn locked(&self) -> bool {
        self.state().mutex.holder().is_some()
    }

    /// Waits for the lock and returns a guard that releases it when dropped (Python's
    /// `with lock:`). If the previous holder died, the guard comes inside
    /// [`OwnerDied`]; `?` turns that into [`Error::OwnerDied`] and releases the lock.
    ///
    /// ```
    /// let lock = multiprocess::Lock::new()?;
    /// {
    ///     let _guard = lock.lock()?;
    ///     assert!(lock.locked());
    /// }
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        let a = self.state().acquire(Deadline::NEVER);
        let guard = LockGuard { lock: self };
        if a == Acquired::OwnerDied { Err(OwnerDied::new(guard)) } else { Ok(guard) }
    }
}

impl fmt::Debug for Lock {
    /// CPython's repr: `<Lock(owner=None)>`, `<Lock(owner=MainProcess)>`,
    /// `<Lock(owner=SomeOtherThread)>`, `<Lock(owner=SomeOtherProcess)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        let owner = owner_name(state.mutex.holder(), state.owner_tid());
        write!(f, "<Lock(owner={owner})>")
    }
}

/// The owner as CPython's reprs name it.
fn owner_name(holder: Option<u32>, tid: u32) -> String {
    match holder {
        None => "None".into(),
        Some(pid) if pid != proc::cached_pid() as u32 => "SomeOtherProcess".into(),
        Some(_) if tid != proc::cached_tid() as u32 => "SomeOtherThread".into(),
        Some(_) => {
            let mut name = crate::current_process().name().to_string();
            // CPython adds the thread's name unless it is the main thread. Which thread is
            // the main one is asked of the kernel (its id is the process id), not read from
            // the name: a fork child's only thread is its main thread, but keeps the name of
            // the thread that forked (a test's, under the test harness).
            let main = proc::cached_tid() == proc::cached_pid();
            if let Some(thread) = std::thread::current().name().filter(|_| !main) {
                name.push('|');
                name.push_str(thread);
            }
            name
        }
    }
}

/// Holds a [`Lock`] until dropped; from [`Lock::lock`] (Python's `with lock:`).
///
/// ```
/// let lock = multiprocess::Lock::new()?;
/// let guard = lock.lock()?;
/// assert!(lock.locked());
/// drop(guard);
/// assert!(!lock.locked());
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("lock", self.lock).finish()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

/// An RLock's shared state: the lock, and how many times its owner thread holds it.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RLockState {
    lock: LockState,
    count: AtomicU32,
}

// SAFETY: atomics only; zero is a free lock held zero times.
unsafe impl SharedState for RLockState {}

impl RLockState {
    pub(crate) fn acquire(&self, deadline: Deadline) -> Result<bool> {
        // Free: the common case, one compare-exchange (a free lock cannot be ours already).
        if self.lock.mutex.try_lock_free() {
            self.lock.owner_tid.store(proc::cached_tid() as u32, Ordering::Relaxed);
            self.count.store(1, Ordering::Relaxed);
            return Ok(true);
        }
        if self.lock.is_mine() {
            let count = self.count.load(Ordering::Relaxed);
            let next = count.checked_add(1).ok_or_else(|| Error::InvalidArgument("RLock acquired too often".into()))?;
            self.count.store(next, Ordering::Relaxed);
            return Ok(true);
        }
        let a = if deadline.expired() { self.lock.try_acquire() } else { self.lock.acquire(deadline) };
        if a != Acquired::No {
            self.count.store(1, Ordering::Relaxed);
        }
        acquired(a)
    }

    pub(crate) fn release(&self) -> Result<()> {
        if !self.lock.is_mine() {
            return Err(Error::NotOwner);
        }
        match self.count.load(Ordering::Relaxed) {
            0 | 1 => {
                self.count.store(0, Ordering::Relaxed);
                self.lock.release()
            }
            n => {
                self.count.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Releases every level the caller holds; returns how many, for [`RLockState::restore`].
    pub(crate) fn release_all(&self) -> Result<u32> {
        if !self.lock.is_mine() {
            return Err(Error::NotOwner);
        }
        let count = self.count.swap(0, Ordering::Relaxed).max(1);
        self.lock.release()?;
        Ok(count)
    }

    /// Takes the lock back at the level `release_all` left.
    pub(crate) fn restore(&self, count: u32) -> Acquired {
        let a = self.lock.acquire(Deadline::NEVER);
        self.count.store(count.max(1), Ordering::Relaxed);
        a
    }

    pub(crate) fn is_mine(&self) -> bool {
        self.lock.is_mine()
    }
}

/// A recursive lock shared by processes and threads (Python's `multiprocessing.RLock`).
///
/// Owned by the thread (of the process) that acquired it, which may acquire it again and must
/// release it as many times; another thread or process releasing it is [`Error::NotOwner`].
/// A holder's death is reported as for [`Lock`].
///
/// ```
/// let lock = multiprocess::RLock::new()?;
/// lock.acquire()?;
/// lock.acquire()?;
/// lock.release()?;
/// assert!(lock.locked());
/// lock.release()?;
/// assert!(!lock.locked());
/// assert!(matches!(lock.release(), Err(multiprocess::Error::NotOwner)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    shared: Shared<RLockState>,
}

impl RLock {
    /// A new, unlocked recursive lock (Python's `RLock()`).
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock { shared: Shared::new(0)? })
    }

    pub(crate) fn from_shared(shared: Shared<RLockState>) -> RLock {
        RLock { shared }
    }

    pub(crate) fn state(&self) -> &RLockState {
        self.shared.state()
    }

    /// Takes the lock, waiting if another thread holds it, or counts one more level if the
    /// calling thread already does (Python's `acquire()`). `Err(Error::OwnerDied)`: taken over
    /// from a dead holder, and now held once.
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// lock.acquire()?;
    /// lock.acquire()?; // no deadlock
    /// lock.release()?;
    /// lock.release()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.state().acquire(Deadline::NEVER).map(drop)
    }

    /// As [`acquire`](RLock::acquire), but never waits: `Ok(false)` if another thread holds it.
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// assert!(lock.try_acquire()?);
    /// assert!(lock.try_acquire()?); // the owner may take it again
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.state().acquire(Deadline::after(Some(Duration::ZERO)))
    }

    /// As [`acquire`](RLock::acquire), waiting at most `timeout`.
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// assert!(lock.acquire_timeout(std::time::Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.state().acquire(Deadline::after(Some(timeout)))
    }

    /// Gives up one level; the last one frees the lock (Python's `release()`). Only the
    /// owner thread may release: anyone else gets [`Error::NotOwner`].
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// assert!(matches!(lock.release(), Err(multiprocess::Error::NotOwner)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state().release()
    }

    /// Whether some thread holds it (Python 3.14's `locked()`).
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn locked(&self) -> bool {
        self.state().lock.mutex.holder().is_some()
    }

    /// How many times its owner holds it: 0 when free.
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// lock.acquire()?;
    /// lock.acquire()?;
    /// assert_eq!(lock.count(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn count(&self) -> u32 {
        if self.locked() { self.state().count.load(Ordering::Relaxed) } else { 0 }
    }

    /// Takes the lock (once more) and returns a guard that gives that level back when dropped
    /// (Python's `with rlock:`). A dead previous holder is reported as [`Lock::lock`] does.
    ///
    /// ```
    /// let lock = multiprocess::RLock::new()?;
    /// let outer = lock.lock()?;
    /// let inner = lock.lock()?;
    /// drop(inner);
    /// assert!(lock.locked());
    /// drop(outer);
    /// assert!(!lock.locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        let died = matches!(self.state().acquire(Deadline::NEVER), Err(Error::OwnerDied));
        let guard = RLockGuard { lock: self, _not_send: PhantomData };
        if died { Err(OwnerDied::new(guard)) } else { Ok(guard) }
    }
}

impl fmt::Debug for RLock {
    /// CPython's repr: `<RLock(None, 0)>`, `<RLock(MainProcess, 3)>`,
    /// `<RLock(SomeOtherThread, 1)>`, `<RLock(SomeOtherProcess, 1)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        let owner = owner_name(state.lock.mutex.holder(), state.lock.owner_tid());
        write!(f, "<RLock({owner}, {})>", self.count())
    }
}

/// Holds one level of an [`RLock`] until dropped; from [`RLock::lock`] (Python's
/// `with rlock:`).
///
/// ```
/// let lock = multiprocess::RLock::new()?;
/// let guard = lock.lock()?;
/// assert_eq!(lock.count(), 1);
/// drop(guard);
/// assert_eq!(lock.count(), 0);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the level is given back as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// The level belongs to this thread: released elsewhere it would be `NotOwner`.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").field("lock", self.lock).finish()
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}
