//! `Barrier` (Python's `multiprocessing.Barrier`, which is `threading.Barrier` on shared
//! state): the same algorithm, on an internal lock word and a sequence word that every
//! state change bumps and wakes.
//!
//! A party killed inside `wait` must not leave the others asleep for ever. Rather than have
//! every sleeper look at every party now and then, the parties watch each other through the
//! death watcher (see `deathwatch`), which wakes a sleeper when a process it watches dies:
//! the first party of a pass (the head) watches every party inside, and the others watch the
//! head. An arrival wakes the head alone (a futex bitset) to watch the newcomer. So an idle
//! sleeper costs nothing, and a death is noticed at once by someone, who takes the dead party
//! out (breaking the barrier before the pass) and wakes everyone. Not covered: a process that
//! dies holding the internal lock before it is inside (a microsecond's window), while no one
//! else arrives; the sleepers then wait for their timeouts. Sleepers waiting for a drain or a
//! reset to end (a moment, normally) look every 20 ms, as all sleepers did before.

use super::deathwatch::{self, Watch};
use super::mutex::{Acquired, RawMutex};
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex, pidfd, proc};
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Parties are arriving.
const FILLING: u32 = 0;
/// The barrier was passed; the parties are leaving.
const DRAINING: u32 = 1;
/// `reset()` while parties waited: they leave with `BrokenBarrier`, then it fills again.
const RESETTING: u32 = 2;
/// `abort()`, a timeout, or a party that died inside: every wait fails until `reset()`.
const BROKEN: u32 = 3;

/// Spins before sleeping: parties on other cores usually arrive within microseconds.
const SPINS: u32 = 4000;

/// How long a sleeper that cannot rely on the death watcher (waiting for a drain, or out of
/// descriptors) sleeps before it looks again: a party killed inside a barrier call is noticed
/// within this long, so no one sleeps on for ever.
const SLICE: Duration = Duration::from_millis(20);

/// The futex bits of sleepers (see `futex::wait_bits`): all wait for changes, the head also
/// for arrivals.
const CHANGES: u32 = 1;
const ARRIVALS: u32 = 2;

/// The caller's deadline, or a [`SLICE`] from now if sooner.
fn slice(deadline: Deadline) -> Deadline {
    Deadline::after(Some(deadline.remaining().map_or(SLICE, |left| left.min(SLICE))))
}

/// This CPU's bit in a CPU mask.
fn cpu_bit(cpu: u32) -> u64 {
    if cpu == 0 { 0 } else { 1 << ((cpu - 1) % 64) }
}

#[repr(C)]
pub(crate) struct BarrierState {
    lock: RawMutex,
    /// Bumped at every change the waiters wait for.
    seq: AtomicU32,
    /// Parties inside `wait` (Python's `_count`).
    count: AtomicU32,
    state: AtomicU32,
    sleepers: AtomicU32,
    /// The CPUs (one bit each, modulo 64) of the parties of this pass so far, and of the last
    /// whole pass: a waiter spins only if a party ran on another CPU last time, since one
    /// that shares its CPU cannot arrive while it spins.
    cpus_now: AtomicU64,
    cpus_last: AtomicU64,
    /// The pid of the first party of this pass, which watches the others.
    head: AtomicU32,
    /// The pids of the parties inside `wait` (0: a free slot), so that one killed there is
    /// found and taken out: otherwise the barrier would count it for ever (a pass it cannot
    /// make, a drain or a reset that never ends). Parties beyond the slots go unwatched.
    inside: [AtomicU32; SLOTS],
}

/// How many parties inside `wait` at once are watched for death.
const SLOTS: usize = 256;

// SAFETY: atomics only; zero is an empty, filling barrier with a free lock.
unsafe impl SharedState for BarrierState {}

/// A meeting point for a fixed number of parties, processes or threads (Python's
/// `multiprocessing.Barrier`).
///
/// ```
/// use multiprocess::{Barrier, Process};
///
/// fn party(b: Barrier) -> multiprocess::Result<()> {
///     b.wait()?;
///     Ok(())
/// }
///
/// let b = Barrier::new(2)?;
/// let mut p = Process::new(party, (b.clone(),));
/// p.start()?;
/// let index = b.wait()?; // 0 or 1: the order of arrival
/// assert!(index < 2);
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
///
/// A party killed inside `wait` is noticed by the others at once (the kernel tells them; an
/// idle waiter never wakes to look): before the pass, the barrier breaks (`BrokenBarrier`
/// for all) rather than wait for ever; after it, the dead party is counted out so the next
/// pass can start. (Up to 256 parties inside `wait` at once are watched; CPython's barrier
/// hangs in both cases.)
#[derive(Clone)]
pub struct Barrier {
    shared: Shared<BarrierState>,
    parties: u32,
    timeout: Option<Duration>,
    action: Option<fn()>,
}

impl Barrier {
    /// A barrier for `parties` parties (Python's `Barrier(parties)`); zero is
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// assert_eq!(multiprocess::Barrier::new(3)?.parties(), 3);
    /// assert!(multiprocess::Barrier::new(0).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 || parties > i32::MAX as u32 {
            return Err(Error::InvalidArgument(format!("a barrier needs 1 to 2^31 - 1 parties, not {parties}")));
        }
        Ok(Barrier { shared: Shared::new(0)?, parties, timeout: None, action: None })
    }

    /// Sets a function that the last party to arrive runs, once per pass, before the others
    /// are released (Python's `action`). A plain `fn`, so it can travel to any child.
    ///
    /// ```
    /// fn passed() { println!("all here"); }
    /// let b = multiprocess::Barrier::new(1)?.with_action(passed);
    /// b.wait()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_action(mut self, action: fn()) -> Barrier {
        self.action = Some(action);
        self
    }

    /// Sets the timeout `wait()` uses (Python's `timeout`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiprocess::Barrier::new(2)?.with_timeout(Duration::from_millis(10));
    /// assert!(matches!(b.wait(), Err(multiprocess::Error::BrokenBarrier)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.timeout = Some(timeout);
        self
    }

    fn state(&self) -> &BarrierState {
        self.shared.state()
    }

    /// The number of parties (Python's `parties`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Barrier::new(5)?.parties(), 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties are waiting now (Python's `n_waiting`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Barrier::new(2)?.n_waiting(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        let s = self.state();
        if s.state.load(Ordering::SeqCst) == FILLING { s.count.load(Ordering::SeqCst) } else { 0 }
    }

    /// Whether the barrier is broken (Python's `broken`).
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.state().state.load(Ordering::SeqCst) == BROKEN
    }

    /// Waits for all parties, with the barrier's timeout if it has one (Python's `wait()`).
    /// Returns this party's index, 0 to `parties - 1`, distinct for each party of a pass.
    /// [`Error::BrokenBarrier`] if the barrier is or becomes broken or reset meanwhile, or
    /// the time runs out (which breaks it for everyone).
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0);
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_timeout_opt(self.timeout)
    }

    /// As [`wait`](Barrier::wait), with its own timeout (Python's `wait(timeout)`).
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(2)?;
    /// let r = b.wait_timeout(std::time::Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiprocess::Error::BrokenBarrier)));
    /// assert!(b.broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_timeout_opt(Some(timeout))
    }

    fn wait_timeout_opt(&self, timeout: Option<Duration>) -> Result<u32> {
        let deadline = Deadline::after(timeout);
        let s = self.state();
        let mut inside = self.enter();
        // Wait while the previous pass drains or a reset completes (within our deadline).
        while matches!(s.state.load(Ordering::SeqCst), DRAINING | RESETTING) {
            if !inside.wait_change(deadline) && deadline.expired() {
                inside.break_barrier();
            }
        }
        if s.state.load(Ordering::SeqCst) == BROKEN {
            return Err(Error::BrokenBarrier);
        }
        let index = s.count.fetch_add(1, Ordering::SeqCst);
        let me = proc::cached_pid() as u32;
        let slot = s.inside.iter().position(|x| x.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        s.cpus_now.fetch_or(cpu_bit(proc::current_cpu()), Ordering::Relaxed);
        let head = index == 0;
        if head {
            s.head.store(me, Ordering::SeqCst);
        } else if index.saturating_add(1) < self.parties && s.sleepers.load(Ordering::SeqCst) > 0 {
            // A newcomer the head must watch: wake it alone.
            s.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_bits(&s.seq, ARRIVALS);
        }
        let result = if index.saturating_add(1) >= self.parties {
            inside.pass().map(|()| index)
        } else {
            loop {
                if s.state.load(Ordering::SeqCst) != FILLING {
                    break;
                }
                if !inside.wait_filling(deadline, head) && s.state.load(Ordering::SeqCst) == FILLING {
                    inside.break_barrier();
                    break;
                }
            }
            if s.state.load(Ordering::SeqCst) == DRAINING { Ok(index) } else { Err(Error::BrokenBarrier) }
        };
        // Our slot may have been taken from us if another party wrongly found us dead (a
        // recycled pid cannot be us while we run): only a slot still ours counts us out.
        let counted =
            slot.is_none_or(|i| s.inside[i].compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        if counted {
            inside.leave_count();
        }
        result
    }

    /// Puts the barrier back to empty (Python's `reset()`): parties waiting now get
    /// [`Error::BrokenBarrier`]; a broken barrier becomes usable again.
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(2)?;
    /// b.abort();
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn reset(&self) {
        let s = self.state();
        let mut inside = self.enter();
        if s.count.load(Ordering::SeqCst) > 0 {
            if matches!(s.state.load(Ordering::SeqCst), FILLING | BROKEN) {
                s.state.store(RESETTING, Ordering::SeqCst);
            }
        } else {
            s.state.store(FILLING, Ordering::SeqCst);
        }
        inside.notify_all();
    }

    /// Breaks the barrier (Python's `abort()`): current and future waits fail with
    /// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
    ///
    /// ```
    /// let b = multiprocess::Barrier::new(3)?;
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn abort(&self) {
        self.enter().break_barrier();
    }

    /// Takes the internal lock. One whose holder died (inside a barrier call, its state half
    /// changed) is taken over and the barrier broken: every party is told, none hangs.
    fn enter(&self) -> Inside<'_> {
        let mut inside = Inside { barrier: self, wake: false };
        inside.lock();
        inside
    }
}

/// The internal lock, held; wakes the sleepers after letting go of it, if a change was made
/// (woken while it was still held, a sleeper on this CPU would only run into it).
struct Inside<'a> {
    barrier: &'a Barrier,
    wake: bool,
}

impl<'a> Inside<'a> {
    fn state(&self) -> &'a BarrierState {
        self.barrier.state()
    }

    fn lock(&mut self) {
        if self.state().lock.lock(Deadline::NEVER) == Acquired::OwnerDied {
            self.break_barrier();
        }
    }

    fn unlock(&mut self) {
        let s = self.state();
        s.lock.unlock();
        if std::mem::take(&mut self.wake) && s.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&s.seq);
        }
    }

    /// The last party: run the action, then let everyone go.
    fn pass(&mut self) -> Result<()> {
        if let Some(action) = self.barrier.action
            && std::panic::catch_unwind(action).is_err()
        {
            self.break_barrier();
            return Err(Error::BrokenBarrier);
        }
        let s = self.state();
        s.cpus_last.store(s.cpus_now.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        s.state.store(DRAINING, Ordering::SeqCst);
        self.notify_all();
        Ok(())
    }

    /// One party fewer inside: the last one out ends a drain or a reset.
    fn leave_count(&mut self) {
        let s = self.state();
        let left = s.count.load(Ordering::SeqCst).saturating_sub(1);
        s.count.store(left, Ordering::SeqCst);
        if left == 0 && matches!(s.state.load(Ordering::SeqCst), DRAINING | RESETTING) {
            s.state.store(FILLING, Ordering::SeqCst);
            self.notify_all();
        }
    }

    /// Whether a watched party inside `wait` has died.
    fn someone_died(&self) -> bool {
        let me = proc::cached_pid() as u32;
        self.state().inside.iter().any(|x| {
            let pid = x.load(Ordering::SeqCst);
            pid != 0 && pid != me && pidfd::process_gone(pid as i32)
        })
    }

    /// Takes dead parties out (caller holds the lock): a barrier still filling is broken,
    /// since the pass it waits for can no longer come; a drain or reset may end.
    fn take_out_the_dead(&mut self) {
        let me = proc::cached_pid() as u32;
        for x in &self.state().inside {
            let pid = x.load(Ordering::SeqCst);
            if pid == 0 || pid == me || !pidfd::process_gone(pid as i32) {
                continue;
            }
            if x.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                if self.state().state.load(Ordering::SeqCst) == FILLING {
                    self.break_barrier();
                }
                self.leave_count();
            }
        }
    }

    fn break_barrier(&mut self) {
        self.state().state.store(BROKEN, Ordering::SeqCst);
        self.notify_all();
    }

    /// Marks a change: sleepers are woken when the lock is let go.
    fn notify_all(&mut self) {
        self.state().seq.fetch_add(1, Ordering::SeqCst);
        self.wake = true;
    }

    /// While the barrier fills: lets go of the internal lock until the state changes, a
    /// watched party dies (then takes it out) or `deadline`; takes the lock back. False only
    /// at the deadline. The `head` watches every party inside, the others the head.
    fn wait_filling(&mut self, deadline: Deadline, head: bool) -> bool {
        let s = self.state();
        let mut seen = s.seq.load(Ordering::SeqCst);
        self.unlock();
        let changed = || s.seq.load(Ordering::SeqCst) != seen;
        let cpu = cpu_bit(proc::current_cpu());
        let last = s.cpus_last.load(Ordering::Relaxed);
        if (last == 0 || last & !cpu != 0) && futex::spin_until(SPINS, changed) && self.still_filling() {
            seen = s.seq.load(Ordering::SeqCst);
        }
        let me = proc::cached_pid() as u32;
        let mut watched: HashMap<u32, deathwatch::Guard<'a>> = HashMap::new();
        let mut unwatched = false;
        let mut dead = false;
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        let woke = loop {
            if !self.still_filling() {
                break true;
            }
            let mut watch = |pid: u32| {
                if pid == 0 || pid == me || watched.contains_key(&pid) {
                    return;
                }
                match deathwatch::watch(pid, 0, &s.seq) {
                    Watch::Watching(guard) => drop(watched.insert(pid, guard)),
                    Watch::Gone => dead = true,
                    Watch::Unwatched => unwatched = true,
                }
            };
            if head {
                s.inside.iter().for_each(|x| watch(x.load(Ordering::SeqCst)));
            } else {
                watch(s.head.load(Ordering::SeqCst));
            }
            if dead || watched.values().any(|g| g.fired()) {
                dead = true;
                break true;
            }
            let until = if unwatched { slice(deadline) } else { deadline };
            let now = s.seq.load(Ordering::SeqCst);
            if now != seen {
                // An arrival, for the head to watch (or a change, seen above).
                seen = now;
                continue;
            }
            if !futex::wait_bits(&s.seq, seen, if head { CHANGES | ARRIVALS } else { CHANGES }, until) {
                if deadline.expired() {
                    break !self.still_filling();
                }
                // A slice, where a party could not be watched: look, as `wait_change` does.
                if self.lock_holder_gone() || self.someone_died() {
                    dead = true;
                    break true;
                }
            }
        };
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(watched);
        self.lock();
        if dead {
            self.take_out_the_dead();
        }
        woke
    }

    fn still_filling(&self) -> bool {
        self.state().state.load(Ordering::SeqCst) == FILLING
    }

    /// Whether the internal lock's holder has died.
    fn lock_holder_gone(&self) -> bool {
        self.state().lock.holder().is_some_and(|pid| pidfd::process_gone(pid as i32))
    }

    /// Lets go of the internal lock until the state changes or `deadline`; takes it back.
    /// Whether something changed. For the waits for a drain or a reset to end, which are
    /// short: a sleeper looks every [`SLICE`] for a dead party.
    fn wait_change(&mut self, deadline: Deadline) -> bool {
        let s = self.state();
        let seq = s.seq.load(Ordering::SeqCst);
        self.unlock();
        let changed = || s.seq.load(Ordering::SeqCst) != seq;
        let me = cpu_bit(proc::current_cpu());
        let last = s.cpus_last.load(Ordering::Relaxed);
        let spin = last == 0 || last & !me != 0;
        let mut woke = spin && futex::spin_until(SPINS, changed);
        let mut dead = false;
        if !woke {
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            woke = loop {
                if changed() {
                    break true;
                }
                if !futex::wait(&s.seq, seq, slice(deadline)) {
                    if deadline.expired() {
                        break changed();
                    }
                    // A slice without news: if a party died holding the internal lock, go
                    // and take it over (which breaks the barrier for everyone); if one died
                    // inside `wait`, go and take it out.
                    if self.lock_holder_gone() {
                        break true;
                    }
                    if self.someone_died() {
                        dead = true;
                        break true;
                    }
                }
            };
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        self.lock();
        if dead {
            self.take_out_the_dead();
        }
        woke
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.unlock();
    }
}

impl fmt::Debug for Barrier {
    /// CPython's repr: `<Barrier(parties=5, n_waiting=0, broken=False)>` (Rust's `false`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Barrier(parties={}, n_waiting={}, broken={})>", self.parties, self.n_waiting(), self.broken())
    }
}

/// What travels to a child: the shared state and the settings, with the action as an offset
/// in this binary (children run the same binary, checked before their arguments are read).
#[derive(Serialize, Deserialize)]
struct Wire<S> {
    shared: S,
    parties: u32,
    timeout: Option<Duration>,
    action: Option<i64>,
}

impl Serialize for Barrier {
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        Wire {
            shared: &self.shared,
            parties: self.parties,
            timeout: self.timeout,
            action: self.action.map(crate::popen::fn_offset),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Barrier, D::Error> {
        let w = Wire::<Shared<BarrierState>>::deserialize(d)?;
        if w.parties == 0 {
            return Err(crate::error::de_custom("a barrier of zero parties"));
        }
        // SAFETY: the offset was made by `fn_offset` in the parent, which runs this same
        // binary: handles are only ever decoded from a child's start-up message, after the
        // executable's identity was checked.
        let action = w.action.map(|offset| unsafe { crate::popen::fn_at(offset) });
        Ok(Barrier { shared: w.shared, parties: w.parties, timeout: w.timeout, action })
    }
}
