//! `Condition` (Python's `multiprocessing.Condition`).
//!
//! Waiters register, release the lock and sleep. `notify(n)` turns up to `n` registrations
//! into wake tokens and wakes that many sleepers; a waiter returns `true` only by taking a
//! token, so exactly as many waiters are told "notified" as were notified, even when
//! wake-ups and timeouts cross (CPython counts the same way with its `sleeping_count` and
//! `woken_count` semaphores). A waiter that times out takes back its registration, or a
//! token if the notifier had already turned it.
//!
//! Registrations and tokens are kept per process, in a table of entries (a process's pid,
//! its waiters, its tokens, and a sequence word its waiters sleep on). So a notify can pass
//! over a process that died with waiters registered: it asks the kernel whether a process is
//! alive before it hands that process tokens, and clears the entry of one that is not. A
//! killed waiter thus never takes a notification from a live one, and never turns into an
//! extra wake-up later. CPython's condition miscounts for ever after such a death. The
//! question costs a notify that hands tokens to another process one `poll` of a pidfd kept
//! from the last time (the first time, an open and a close as well). A waiter looks for its
//! notify for a few microseconds before it sleeps, unless the last notifier of its process's
//! waiters ran on its own CPU.
//!
//! In the benchmark harness (`sync_pingpong/condition`), a notify-and-wait round trip
//! between two processes takes about 3.6 µs across CPUs (CPython about 190 µs) and 31 µs on
//! one CPU (CPython 29 µs).
//!
//! Tokens are not addressed to a thread, so a waiter may only take one issued after it
//! registered: it notes its entry's sequence when it registers (holding the lock, as every
//! notifier does) and takes tokens only once the sequence has moved on. Otherwise a notifier
//! that waits at once (`notify(); wait()`, as a `wait_for` loop does) would take back the
//! token it had just issued, and the waiter it notified would sleep on with nothing left to
//! wake it. CPython prevents this by making `notify` wait until the notified have woken,
//! which would hang on a waiter that was killed; the rule here needs nobody to be alive.

use super::mutex::Acquired;
use super::{Lock, LockResult, OwnerDied, RLock};
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex, pidfd, proc};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Processes that can wait on one condition at the same time.
const ENTRIES: usize = 64;
/// An entry's word: the process's pid in the high half, then its registered waiters and its
/// tokens, 16 bits each.
const PID_SHIFT: u32 = 32;
const WAITER: u64 = 1 << 16;
const WAITERS: u64 = 0xFFFF << 16;
const TOKENS: u64 = 0xFFFF;
/// How long a waiter looks for a notify before it sleeps (pauses of some 10 ns).
const SPINS: u32 = 2000;

fn pid_of(word: u64) -> u32 {
    (word >> PID_SHIFT) as u32
}
fn waiters_of(word: u64) -> u64 {
    (word & WAITERS) >> 16
}
fn tokens_of(word: u64) -> u64 {
    word & TOKENS
}

/// One process's waiters on a condition.
#[repr(C)]
struct Entry {
    /// `pid << 32 | waiters << 16 | tokens`; 0 is a free entry.
    word: AtomicU64,
    /// Bumped by each notify that gives this entry tokens: its waiters sleep on it.
    seq: AtomicU32,
    /// The CPU the last notify that gave this entry tokens ran on (as
    /// [`proc::current_cpu`] gives it; 0 for none yet): where the next one likely runs.
    notifier_cpu: AtomicU32,
}

#[repr(C)]
pub(crate) struct CondState {
    /// Entries that may be in use, a bit each: set by a registration that claims an entry,
    /// cleared by a notify that finds the entry free. Both hold the lock, so a set bit is
    /// never lost; a notify looks at these entries only, not at all 64.
    used: AtomicU64,
    /// Where the next notify starts looking, so that no process's waiters are passed over
    /// for ever by those of an entry before them.
    next: AtomicU32,
    _pad: u32,
    entries: [Entry; ENTRIES],
}

// SAFETY: atomics (and padding that is never read); zero is a condition with no entry in use.
// A `notifier_cpu` of any value only decides whether a waiter spins.
unsafe impl SharedState for CondState {}

impl Entry {
    fn update(&self, mut f: impl FnMut(u64) -> Option<u64>) -> Option<u64> {
        self.word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, &mut f).ok()
    }

    /// Whether a waiter that registered at sequence `registered` may take tokens: only those
    /// issued by a notify after it registered are meant for it.
    fn eligible(&self, registered: u32) -> bool {
        self.seq.load(Ordering::SeqCst) != registered
    }

    /// Takes one of our process's tokens.
    fn take_token(&self, me: u32) -> bool {
        self.update(|w| (pid_of(w) == me && tokens_of(w) > 0).then(|| w - 1)).is_some()
    }

    /// After a timeout: take a token if one is meant for us (we were notified), or else drop
    /// a registration. Whether notified.
    ///
    /// An eligible waiter takes a token rather than a registration: the registration it
    /// leaves may belong to a waiter of our process that came after the notify, which could
    /// not take the token in its place. A waiter not yet eligible drops a registration, its
    /// own being among them since no notify has run since it registered.
    fn withdraw(&self, me: u32, registered: u32) -> bool {
        let mut notified = false;
        self.update(|w| {
            if pid_of(w) != me {
                // Cleared by a notifier that took us for dead (a recycled pid could do it):
                // nothing of ours is left to take.
                notified = false;
                return None;
            }
            let tokens = tokens_of(w) > 0;
            notified = tokens && (self.eligible(registered) || waiters_of(w) == 0);
            if notified {
                Some(w - 1)
            } else if waiters_of(w) > 0 {
                Some(w - WAITER)
            } else {
                None
            }
        });
        notified
    }

    /// Frees the entry if our process has nothing left in it.
    fn release_if_idle(&self, me: u32) {
        let idle = u64::from(me) << PID_SHIFT;
        let _ = self.word.compare_exchange(idle, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl CondState {
    /// Registers a waiter of process `me` (the caller holds the lock): in its entry, or a
    /// free one, or one whose process has died. Returns the entry and its sequence then.
    fn register(&self, me: u32) -> Result<(&Entry, u32)> {
        let mine = u64::from(me) << PID_SHIFT;
        // Looking from a place of our own (the pid's) touches one entry most of the time, not
        // all of them: the table is shared, and each entry read that another CPU has written
        // costs a cache miss. First our entry or a free one, whichever comes first (two
        // entries for one process work as well as one); then one of a process that has died.
        let home = me as usize % ENTRIES;
        for pass in 0..2 {
            for k in 0..ENTRIES {
                let i = (home + k) % ENTRIES;
                let entry = &self.entries[i];
                // The sequence is read before the registration lands: a notify runs only
                // with the lock held, so none comes in between.
                let seq = entry.seq.load(Ordering::SeqCst);
                let registered = entry.update(|w| match (pass, pid_of(w)) {
                    (0, p) if p == me && waiters_of(w) < 0xFFFF => Some(w + WAITER),
                    (0, _) if w == 0 => Some(mine + WAITER),
                    // An entry of a dead process is taken over, whatever it held.
                    (1, p) if p != me && pidfd::process_gone(p as i32) => Some(mine + WAITER),
                    _ => None,
                });
                if registered.is_some() {
                    self.used.fetch_or(1 << i, Ordering::SeqCst);
                    return Ok((entry, seq));
                }
            }
        }
        Err(Error::Io(std::io::Error::other(format!("more than {ENTRIES} processes wait on this condition at once"))))
    }

    /// Turns up to `n` registrations into tokens, passing over (and clearing) the entries of
    /// processes that have died; wakes that many sleepers. The caller holds the lock.
    fn notify(&self, n: u32, me: u32) {
        let mut left = u64::from(n);
        let used = self.used.load(Ordering::SeqCst);
        let start = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        for k in 0..ENTRIES {
            if left == 0 {
                break;
            }
            let i = (start + k) % ENTRIES;
            if used & (1 << i) == 0 {
                continue;
            }
            let entry = &self.entries[i];
            let word = entry.word.load(Ordering::SeqCst);
            if word == 0 {
                // Freed since: no registration can come while we hold the lock.
                self.used.fetch_and(!(1 << i), Ordering::SeqCst);
                continue;
            }
            let pid = pid_of(word);
            if waiters_of(word) == 0 {
                continue;
            }
            if pid != me && !pidfd::process_alive_recently_seen(pid as i32) {
                // Its waiters are dead (or the word is garbage): none can take a token.
                let _ = entry.word.compare_exchange(word, 0, Ordering::SeqCst, Ordering::SeqCst);
                continue;
            }
            let mut moved = 0;
            entry.update(|w| {
                if pid_of(w) != pid {
                    return None;
                }
                moved = waiters_of(w).min(left).min(TOKENS - tokens_of(w));
                (moved > 0).then(|| w - moved * WAITER + moved)
            });
            if moved > 0 {
                left -= moved;
                entry.notifier_cpu.store(proc::current_cpu(), Ordering::Relaxed);
                entry.seq.fetch_add(1, Ordering::SeqCst);
                futex::wake(&entry.seq, moved as u32);
            }
        }
    }

    /// The waiters registered by live processes, over all entries (for the repr: a dead
    /// process's entry is cleared only when a notify or a registration comes to it).
    fn waiters(&self) -> u64 {
        let me = proc::cached_pid() as u32;
        self.entries
            .iter()
            .map(|e| e.word.load(Ordering::Relaxed))
            .filter(|&w| waiters_of(w) > 0 && (pid_of(w) == me || !pidfd::process_gone(pid_of(w) as i32)))
            .map(waiters_of)
            .sum()
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
/// A waiter killed inside `wait` is passed over: a later `notify` asks whether a process is
/// alive before it counts that process's waiters, so the notification goes to a live waiter
/// and no spurious wake-up follows (CPython's condition miscounts for ever after such a
/// death). Up to 64 processes can wait on one condition at the same time; a waiter from a
/// 65th gets an error.
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
        let me = proc::cached_pid() as u32;
        // Holding the lock: no notify runs while we register.
        let (entry, registered) = self.state().register(me)?;
        let levels = match self.lock.release_all() {
            Ok(levels) => levels,
            Err(e) => {
                entry.withdraw(me, registered);
                entry.release_if_idle(me);
                return Err(e);
            }
        };
        // A notify often comes within microseconds (a ping-pong between two processes):
        // looking for it a little is far cheaper than a sleep and a wake-up, unless the
        // notifier last ran on our CPU, where it cannot run while we look.
        let mut spin = futex::worth_spinning(proc::current_cpu(), entry.notifier_cpu.load(Ordering::Relaxed));
        let notified = loop {
            // The sequence is read before looking for a token: a notify in between changes
            // it, and the wait below then returns at once.
            let seq = entry.seq.load(Ordering::SeqCst);
            if seq != registered && entry.take_token(me) {
                break true;
            }
            if std::mem::take(&mut spin) && futex::spin_until(SPINS, || entry.seq.load(Ordering::SeqCst) != seq) {
                continue;
            }
            if !futex::wait(&entry.seq, seq, deadline) {
                break entry.withdraw(me, registered);
            }
        };
        entry.release_if_idle(me);
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
        self.state().notify(n, proc::cached_pid() as u32);
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
        let waiters = self.state().waiters();
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
