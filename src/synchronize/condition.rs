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
//! The table has room for 262 144 processes waiting at once (`CAPACITY`): far more than a
//! machine can run in practice, since each waiting process costs the kernel a great deal more
//! than its 16-byte entry, so memory is the limit; a waiter from the process past it gets an
//! error that names the capacity. The segment is 4.25 MiB of address space, but a memfd's
//! pages cost memory only once touched: a condition that at most a few dozen processes wait
//! on at once uses its first page alone, where the first group of 64 entries lives, and a
//! page more for each 3 or 4 groups in use beyond. Entries are marked in use in three levels
//! of 64-bit words (a word of bands, a word of groups per band, a word of entries per
//! group), so a notify, and a registration looking for a free entry, read words in
//! proportion to the entries in use, never the whole table. A registration tries its pid's
//! home entry in the first group first, then the first entry not marked in use, so entries
//! stay packed at the front; a dead process's entry is taken over when a registration's home
//! is on it, cleared when a notify comes to it, and looked for in the whole table only when
//! every entry is marked.
//!
//! In the benchmark harness (`sync_pingpong/condition`), a notify-and-wait round trip
//! between two processes takes about 2 µs across CPUs (CPython about 190 µs) and 7 µs on one
//! CPU (CPython 19 µs, the futex limit 4.5 µs): a notify to a waiter asleep on the notifier's
//! CPU wakes it only once the notifier lets go of the lock (see [`CondState::notify`]).
//!
//! Tokens are not addressed to a thread, so a waiter may only take one issued after it
//! registered: it notes its entry's sequence when it registers (holding the lock, as every
//! notifier does) and takes tokens only once the sequence has moved on. Otherwise a notifier
//! that waits at once (`notify(); wait()`, as a `wait_for` loop does) would take back the
//! token it had just issued, and the waiter it notified would sleep on with nothing left to
//! wake it. CPython prevents this by making `notify` wait until the notified have woken,
//! which would hang on a waiter that was killed; the rule here needs nobody to be alive.

use super::mutex::{self, Acquired};
use super::{Lock, LockResult, OwnerDied, RLock};
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex, pidfd, proc};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Entries in a group: a group's `used` word has a bit for each.
const GROUP: usize = 64;
/// Groups in a band: a band's `summary` word has a bit for each group that may be in use.
const BAND: usize = 64;
/// Bands: the `bands` word has a bit for each band that may be in use.
const BANDS: usize = 64;
/// Processes that can wait on one condition at the same time: 262 144.
const CAPACITY: usize = GROUP * BAND * BANDS;
/// An entry's word: the process's pid in the high half, then its registered waiters and its
/// tokens, 16 bits each.
const PID_SHIFT: u32 = 32;
const WAITER: u64 = 1 << 16;
const WAITERS: u64 = 0xFFFF << 16;
const TOKENS: u64 = 0xFFFF;
/// How long a waiter looks for a notify before it sleeps (pauses of some 10 ns).
const SPINS: u32 = 2000;
/// How long a waiter's first sleeps last at most: until one has gone by without a wake-up, a
/// notify may put off waking it (see [`CondState::notify`]).
const SLICE: Duration = Duration::from_millis(20);

/// A CPU as [`proc::current_cpu`] gives it, in 16 bits (a CPU past them is taken for the
/// last: these only decide whether to spin, and whether to wake at once).
fn cpu16(cpu: u32) -> u16 {
    cpu.min(u32::from(u16::MAX)) as u16
}

fn pid_of(word: u64) -> u32 {
    (word >> PID_SHIFT) as u32
}
fn waiters_of(word: u64) -> u64 {
    (word & WAITERS) >> 16
}
fn tokens_of(word: u64) -> u64 {
    word & TOKENS
}

/// The lowest bit of `word` at `from` or above.
fn first_set(word: u64, from: usize) -> Option<usize> {
    let rest = if from < 64 { word & (!0u64 << from) } else { 0 };
    (rest != 0).then(|| rest.trailing_zeros() as usize)
}

/// Sets bit `bit` of `word` unless it is set already: a bit that is already set (the common
/// case, a process waiting again in its entry) costs a read, not a write to a shared line.
fn set_bit(word: &AtomicU64, bit: usize) {
    if word.load(Ordering::Relaxed) & (1 << bit) == 0 {
        word.fetch_or(1 << bit, Ordering::SeqCst);
    }
}

/// One process's waiters on a condition.
#[repr(C)]
struct Entry {
    /// `pid << 32 | waiters << 16 | tokens`; 0 is a free entry.
    word: AtomicU64,
    /// Bumped by each notify that gives this entry tokens: its waiters sleep on it.
    seq: AtomicU32,
    /// The CPU the last notify that gave this entry tokens ran on (as
    /// [`cpu16`] gives it; 0 for none yet): where the next one likely runs.
    notifier_cpu: AtomicU16,
    /// The CPU the last of its waiters to sleep went to sleep on (0 for none yet).
    waiter_cpu: AtomicU16,
}

/// 64 entries, and which of them may be in use. A group with its word fills 17 cache lines,
/// so an entry and the bit that says it is in use are on the same page.
#[repr(C, align(64))]
struct Group {
    /// Entries that may be in use, a bit each: set by a registration that claims an entry,
    /// cleared by a notify that finds the entry free. Both hold the lock, so a set bit is
    /// never lost; a notify looks at these entries only.
    used: AtomicU64,
    entries: [Entry; GROUP],
}

#[repr(C)]
pub(crate) struct CondState {
    /// Where the next notify starts looking: past the last entry the previous one gave
    /// tokens to, so that no process's waiters are passed over for ever by those before them.
    next: AtomicU32,
    /// Waiters asleep past their first [`SLICE`] (which only a notify wakes): while there are
    /// any, every notify wakes at once. One killed there leaves it too high for good, which
    /// only costs the deferral.
    unbounded: AtomicU32,
    /// The bands that may have a group in use, a bit each.
    bands: AtomicU64,
    /// For each band, the groups in it that may have an entry in use, a bit each.
    summary: [AtomicU64; BANDS],
    /// The entries: the first group, where each process first looks, shares the segment's
    /// first page with the words above; the others are touched only when that many
    /// processes wait at once.
    groups: [Group; BAND * BANDS],
}

// SAFETY: atomics (and padding that is never read); zero is a condition with no entry in use.
// A `notifier_cpu` or `waiter_cpu` of any value only decides whether a waiter spins or a
// notify defers its wake-up; an `unbounded` of any value only whether a notify may defer
// (too high: never, which is always safe; 0 while waiters sleep unbounded cannot be reached
// from a zeroed segment, only by a bug); bit positions index
// arrays of 64, so no word read can index out of them.
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

    /// Frees the entry if our process has nothing left in it. Its bit stays set: only a
    /// holder of the lock clears one (the next notify that comes to it).
    fn release_if_idle(&self, me: u32) {
        let idle = u64::from(me) << PID_SHIFT;
        let _ = self.word.compare_exchange(idle, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// What a registration may take over besides a free entry or its own.
#[derive(Clone, Copy, PartialEq)]
enum Take {
    OwnOrFree,
    /// Also an entry of a process that has died, whatever it held.
    OrDead,
}

impl CondState {
    fn entry(&self, i: usize) -> &Entry {
        &self.groups[i / GROUP % (BAND * BANDS)].entries[i % GROUP]
    }

    /// Marks entry `i` as perhaps in use, at every level (the caller holds the lock). From
    /// the bottom up: a registrant killed half-way leaves a dead process's entry unmarked,
    /// which only a registration coming to it finds again, never a live one.
    fn mark_used(&self, i: usize) {
        let g = i / GROUP % (BAND * BANDS);
        set_bit(&self.groups[g].used, i % GROUP);
        set_bit(&self.summary[g / BAND], g % BAND);
        set_bit(&self.bands, g / BAND);
    }

    /// Marks entry `i` as free (the caller holds the lock and saw it free), and its group and
    /// band if nothing else in them is marked.
    fn mark_free(&self, i: usize) {
        let g = i / GROUP % (BAND * BANDS);
        let band = g / BAND;
        if self.groups[g].used.fetch_and(!(1 << (i % GROUP)), Ordering::SeqCst) & !(1 << (i % GROUP)) != 0 {
            return;
        }
        if self.summary[band].fetch_and(!(1 << (g % BAND)), Ordering::SeqCst) & !(1 << (g % BAND)) != 0 {
            return;
        }
        self.bands.fetch_and(!(1 << band), Ordering::SeqCst);
    }

    /// The first entry at `from` or after that may be in use; it reads the bands' and groups'
    /// words, so the cost follows the entries in use, not the capacity.
    fn next_used(&self, from: usize) -> Option<usize> {
        let mut at = from;
        while at < CAPACITY {
            let band_start = at / (GROUP * BAND);
            let band = first_set(self.bands.load(Ordering::SeqCst), band_start)?;
            if band != band_start {
                at = band * GROUP * BAND;
            }
            let Some(group) = first_set(self.summary[band].load(Ordering::SeqCst), at / GROUP % BAND) else {
                at = (band + 1) * GROUP * BAND;
                continue;
            };
            let g = band * BAND + group;
            if g * GROUP > at {
                at = g * GROUP;
            }
            match first_set(self.groups[g].used.load(Ordering::SeqCst), at % GROUP) {
                Some(e) => return Some(g * GROUP + e),
                None => at = (g + 1) * GROUP,
            }
        }
        None
    }

    /// Adds a waiter of `me` to entry `i` if it is ours or free (or, with `Take::OrDead`,
    /// of a process that has died); the sequence then.
    fn claim(&self, i: usize, me: u32, take: Take) -> Option<(&Entry, u32)> {
        let mine = u64::from(me) << PID_SHIFT;
        let entry = self.entry(i);
        // The sequence is read before the registration lands: a notify runs only with the
        // lock held, so none comes in between.
        let seq = entry.seq.load(Ordering::SeqCst);
        entry.update(|w| match pid_of(w) {
            p if p == me && waiters_of(w) < 0xFFFF => Some(w + WAITER),
            _ if w == 0 => Some(mine + WAITER),
            // An entry of a dead process is taken over, whatever it held.
            p if take == Take::OrDead && p != me && !pidfd::process_alive_recently_seen(p as i32) => {
                Some(mine + WAITER)
            }
            _ => None,
        })?;
        self.mark_used(i);
        Some((entry, seq))
    }

    /// Registers a waiter of process `me` (the caller holds the lock): in its home entry (in
    /// the first group, by pid) if that is ours, free, or a dead process's; or else in the
    /// first entry not marked in use; or else, the table looking full, in any entry free or
    /// of a dead process. Returns the entry and its sequence then.
    fn register(&self, me: u32) -> Result<(&Entry, u32)> {
        // Looking from a place of our own (the pid's) touches one entry most of the time: the
        // table is shared, and each entry read that another CPU has written costs a cache
        // miss. Two entries for one process work as well as one.
        if let Some(found) = self.claim(me as usize % GROUP, me, Take::OrDead) {
            return Ok(found);
        }
        let mut g = 0;
        while g < BAND * BANDS {
            let used = self.groups[g].used.load(Ordering::SeqCst);
            if used == !0 {
                g += 1;
                continue;
            }
            let i = g * GROUP + (!used).trailing_zeros() as usize;
            if let Some(found) = self.claim(i, me, Take::OwnOrFree) {
                return Ok(found);
            }
            // Held but not marked (its registrant died half-way, or garbage): marked now, so
            // that a notify comes to it; the next unmarked one is tried.
            self.mark_used(i);
        }
        let mut alive = 0;
        for i in 0..CAPACITY {
            // One question per process, not per entry: a full table is mostly live processes.
            let w = self.entry(i).word.load(Ordering::SeqCst);
            let take = if w == 0 || pid_of(w) == me || pid_of(w) == alive { Take::OwnOrFree } else { Take::OrDead };
            if let Some(found) = self.claim(i, me, take) {
                return Ok(found);
            }
            alive = pid_of(w);
        }
        Err(Error::Io(std::io::Error::other(format!(
            "more than {CAPACITY} processes wait on this condition at once (its capacity)"
        ))))
    }

    /// Turns up to `n` registrations into tokens, passing over (and clearing) the entries of
    /// processes that have died; wakes that many sleepers. The caller holds the lock.
    ///
    /// The wake-up of a process whose waiter last went to sleep on our CPU is put off until
    /// this thread lets go of the lock (see `mutex::defer_wake`), when nobody sleeps past
    /// their first slice: woken now, it would take our CPU only to find the lock held. Should
    /// the put-off wake-up never come (we are killed, or another thread releases), those
    /// waiters wake at the end of their slice, find the sequence moved and take their tokens.
    fn notify(&self, n: u32, me: u32) {
        let cpu = cpu16(proc::current_cpu());
        let mut left = u64::from(n);
        let start = self.next.load(Ordering::Relaxed) as usize % CAPACITY;
        let mut last = None;
        let mut at = start;
        let mut wrapped = false;
        while left > 0 {
            let i = match self.next_used(at) {
                Some(i) if !wrapped || i < start => i,
                _ if !wrapped && start > 0 => {
                    wrapped = true;
                    at = 0;
                    continue;
                }
                _ => break,
            };
            at = i + 1;
            let entry = self.entry(i);
            let word = entry.word.load(Ordering::SeqCst);
            if word == 0 {
                // Freed since: no registration can come while we hold the lock.
                self.mark_free(i);
                continue;
            }
            let pid = pid_of(word);
            if waiters_of(word) == 0 {
                continue;
            }
            if pid != me && !pidfd::process_alive_recently_seen(pid as i32) {
                // Its waiters are dead (or the word is garbage): none can take a token.
                if entry.word.compare_exchange(word, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    self.mark_free(i);
                }
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
                last = Some(i);
                if entry.notifier_cpu.load(Ordering::Relaxed) != cpu {
                    entry.notifier_cpu.store(cpu, Ordering::Relaxed);
                }
                entry.seq.fetch_add(1, Ordering::SeqCst);
                // After the sequence moved: a waiter that counts itself in `unbounded` after
                // this read sees the move before it sleeps (both SeqCst).
                let defer = cpu != 0
                    && entry.waiter_cpu.load(Ordering::Relaxed) == cpu
                    && self.unbounded.load(Ordering::SeqCst) == 0
                    && mutex::defer_wake(&entry.seq, moved as u32);
                if !defer {
                    futex::wake(&entry.seq, moved as u32);
                }
            }
        }
        if let Some(last) = last {
            let next = ((last + 1) % CAPACITY) as u32;
            if self.next.load(Ordering::Relaxed) != next {
                self.next.store(next, Ordering::Relaxed);
            }
        }
    }

    /// The waiters registered by live processes, over the entries marked in use (for the
    /// repr: a dead process's entry is cleared only when a notify or a registration comes
    /// to it).
    fn waiters(&self) -> u64 {
        let me = proc::cached_pid() as u32;
        let mut sum = 0;
        let mut at = 0;
        while let Some(i) = self.next_used(at) {
            at = i + 1;
            let w = self.entry(i).word.load(Ordering::Relaxed);
            if waiters_of(w) > 0 && (pid_of(w) == me || !pidfd::process_gone(pid_of(w) as i32)) {
                sum += waiters_of(w);
            }
        }
        sum
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
/// death). Up to 262 144 processes can wait on one condition at the same time (a waiter from
/// the one past gets an error); the memory used follows the processes waiting.
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
        Ok(Condition { shared: Shared::new(0)?, lock: lock.into() })
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
    /// previous holder died, the guard comes inside [`OwnerDied`], as from
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
        let cpu = proc::current_cpu();
        let mut spin = futex::worth_spinning(cpu, u32::from(entry.notifier_cpu.load(Ordering::Relaxed)));
        // Asleep past a first slice: counted in `unbounded`, so that no notify defers our
        // wake-up, which nobody else would then make if the notifier died.
        let mut unbounded = false;
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
            if unbounded {
                if !futex::wait(&entry.seq, seq, deadline) {
                    break entry.withdraw(me, registered);
                }
                continue;
            }
            if entry.waiter_cpu.load(Ordering::Relaxed) != cpu16(cpu) {
                entry.waiter_cpu.store(cpu16(cpu), Ordering::Relaxed);
            }
            let slice = Deadline::after(Some(deadline.remaining().map_or(SLICE, |left| left.min(SLICE))));
            if !futex::wait(&entry.seq, seq, slice) {
                if deadline.expired() {
                    break entry.withdraw(me, registered);
                }
                // A slice went by with no wake-up: from now on only a notify wakes us (the
                // sequence is read again, after this, before we sleep).
                unbounded = true;
                self.state().unbounded.fetch_add(1, Ordering::SeqCst);
            }
        };
        if unbounded {
            self.state().unbounded.fetch_sub(1, Ordering::SeqCst);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has (above the kernel's `PID_MAX_LIMIT`): a dead process's.
    const DEAD: u32 = i32::MAX as u32;

    fn table() -> Shared<CondState> {
        Shared::new(0).unwrap()
    }

    fn set(state: &CondState, i: usize, pid: u32, waiters: u64) {
        state.entry(i).word.store(u64::from(pid) << PID_SHIFT | waiters << 16, Ordering::SeqCst);
        state.mark_used(i);
    }

    fn index_of(state: &CondState, entry: &Entry) -> usize {
        (0..CAPACITY).find(|&i| std::ptr::eq(state.entry(i), entry)).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Group>(), 1088);
        assert_eq!(std::mem::size_of::<CondState>(), 576 + 4096 * 1088);
        // The first group shares the segment's first page with the header and the summaries.
        assert!(crate::heap::FIRST + std::mem::offset_of!(CondState, groups) + 1088 <= 4096);
    }

    #[test]
    fn marks_at_three_levels() {
        let shared = table();
        let s = shared.state();
        let marked = [3, 64, 4095, 4096, 100_000, CAPACITY - 1];
        for &i in &marked {
            set(s, i, DEAD, 1);
        }
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some(i) = s.next_used(at) {
            seen.push(i);
            at = i + 1;
        }
        assert_eq!(seen, marked);
        assert_eq!(s.next_used(65), Some(4095));
        assert_eq!(s.next_used(4097), Some(100_000));
        assert_eq!(s.next_used(CAPACITY), None);
        for &i in &marked {
            s.mark_free(i);
        }
        assert_eq!(s.next_used(0), None);
        assert_eq!(s.bands.load(Ordering::SeqCst), 0);
        assert!(s.summary.iter().all(|w| w.load(Ordering::SeqCst) == 0));
    }

    #[test]
    fn notify_clears_dead_entries_and_goes_round() {
        let shared = table();
        let s = shared.state();
        let me = proc::cached_pid() as u32;
        set(s, 5, DEAD, 3);
        set(s, 5000, me, 2);
        set(s, 200_000, me, 1);
        s.notify(1, me);
        assert_eq!(s.entry(5).word.load(Ordering::SeqCst), 0, "the dead process's entry is cleared");
        assert_eq!(s.next_used(0), Some(5000), "and unmarked");
        assert_eq!(tokens_of(s.entry(5000).word.load(Ordering::SeqCst)), 1);
        // The next notify starts past the last entry it gave tokens to.
        s.notify(1, me);
        assert_eq!(tokens_of(s.entry(200_000).word.load(Ordering::SeqCst)), 1);
        s.notify(1, me);
        assert_eq!(tokens_of(s.entry(5000).word.load(Ordering::SeqCst)), 2);
    }

    #[test]
    fn registration_takes_home_then_the_first_unmarked_then_a_dead_one() {
        let shared = table();
        let s = shared.state();
        let me = proc::cached_pid() as u32;
        let home = me as usize % GROUP;
        // A dead process at our home: taken over.
        set(s, home, DEAD, 4);
        let (entry, _) = s.register(me).unwrap();
        assert_eq!(index_of(s, entry), home);
        assert_eq!(entry.word.load(Ordering::SeqCst), u64::from(me) << PID_SHIFT | WAITER);
        // Our home in use by a live process (pid 1): the first unmarked entry.
        set(s, home, 1, 1);
        let first = if home == 0 { 1 } else { 0 };
        let (entry, _) = s.register(me).unwrap();
        assert_eq!(index_of(s, entry), first);
        // An entry held but unmarked (its registrant died half-way) is marked and passed.
        let second = (0..GROUP).find(|&i| i != home && i != first).unwrap();
        s.entry(second).word.store(u64::from(DEAD) << PID_SHIFT | WAITER, Ordering::SeqCst);
        s.entry(first).word.store(u64::from(1u32) << PID_SHIFT | WAITER, Ordering::SeqCst);
        let (entry, _) = s.register(me).unwrap();
        assert!(index_of(s, entry) > second);
        assert_eq!(s.next_used(second), Some(second));
    }

    #[test]
    fn a_full_table_is_an_error_naming_its_capacity() {
        let shared = table();
        let s = shared.state();
        let me = proc::cached_pid() as u32;
        for i in 0..CAPACITY {
            // Pid 1 is alive in every pid namespace.
            set(s, i, 1, 1);
        }
        let Err(err) = s.register(me).map(|_| ()) else { panic!("registered in a full table") };
        let err = err.to_string();
        assert!(err.contains("more than 262144 processes"), "{err}");
        set(s, 200_000, DEAD, 2);
        let (entry, _) = s.register(me).unwrap();
        assert_eq!(index_of(s, entry), 200_000, "a dead process's entry is taken over");
    }
}
