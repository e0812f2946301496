//! The objects of a manager's server that calls wait on: queues, locks and semaphores,
//! events. Each has its own mutex and condition variable, so that a call waiting on one
//! holds up nothing else; a waiting call looks every [`SLICE`] at whether its client is
//! still there, and gives up if not.
//!
//! Locks and semaphores remember which client process (session) holds what: when a process
//! ends holding some, the server hands them back and the next acquirer is told
//! ([`RemoteKind::OwnerDied`]), where CPython's manager keeps them held for ever.

use super::wire::{Bytes, Id, LockFlavour, Remote, RemoteKind, Wait};
use crate::sys::Deadline;
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A client process, as the server knows it: pid and process tag.
pub(crate) type SessionKey = (u32, u32);

/// How often a waiting call checks that its client is still there.
const SLICE: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` until `ready(state)`, the wait's end, or the client's departure; returns
/// the guard and whether `ready` held.
fn wait_until<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    wait: Wait,
    gone: &dyn Fn() -> bool,
    mut ready: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let deadline = match wait {
        Wait::No => Deadline::after(Some(Duration::ZERO)),
        Wait::Forever => Deadline::NEVER,
        Wait::Nanos(n) => Deadline::after(Some(Duration::from_nanos(n))),
    };
    loop {
        if ready(&mut guard) {
            return (guard, true);
        }
        let slice = match deadline.remaining() {
            Some(Duration::ZERO) => return (guard, false),
            Some(left) => left.min(SLICE),
            None => SLICE,
        };
        guard = cv.wait_timeout(guard, slice).unwrap_or_else(|e| e.into_inner()).0;
        if gone() {
            return (guard, false);
        }
    }
}

/// A queue: items with the objects their proxies refer to (held while the item waits).
pub(crate) struct Queue {
    maxsize: u64,
    joinable: bool,
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<(Bytes, Vec<Id>)>,
    unfinished: u64,
}

impl Queue {
    pub(crate) fn new(maxsize: u64, joinable: bool) -> Queue {
        Queue { maxsize, joinable, state: Mutex::default(), changed: Condvar::new() }
    }

    /// Adds an item, waiting for room as `wait` allows; `Full` if there was none. On error
    /// the held objects are the caller's to give back.
    pub(crate) fn put(&self, item: Bytes, holds: Vec<Id>, wait: Wait, gone: &dyn Fn() -> bool) -> Result<(), Remote> {
        let maxsize = self.maxsize;
        let (mut state, room) = wait_until(&self.changed, lock(&self.state), wait, gone, |s| {
            maxsize == 0 || (s.items.len() as u64) < maxsize
        });
        if !room {
            return Err(Remote::new(RemoteKind::Full, "queue is full"));
        }
        state.items.push_back((item, holds));
        state.unfinished += 1;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Takes the oldest item, waiting for one as `wait` allows; `Empty` if none came.
    pub(crate) fn get(&self, wait: Wait, gone: &dyn Fn() -> bool) -> Result<(Bytes, Vec<Id>), Remote> {
        let (mut state, any) = wait_until(&self.changed, lock(&self.state), wait, gone, |s| !s.items.is_empty());
        let item = if any { state.items.pop_front() } else { None };
        drop(state);
        match item {
            Some(item) => {
                self.changed.notify_all();
                Ok(item)
            }
            None => Err(Remote::new(RemoteKind::Empty, "queue is empty")),
        }
    }

    /// Items waiting, and the queue's bound (0: none).
    pub(crate) fn size(&self) -> (u64, u64) {
        (lock(&self.state).items.len() as u64, self.maxsize)
    }

    pub(crate) fn task_done(&self) -> Result<(), Remote> {
        let mut state = lock(&self.state);
        if !self.joinable || state.unfinished == 0 {
            return Err(Remote::new(RemoteKind::TaskDoneTooManyTimes, "task_done() called too many times"));
        }
        state.unfinished -= 1;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits until every item put was marked done; whether they were.
    pub(crate) fn join(&self, wait: Wait, gone: &dyn Fn() -> bool) -> bool {
        wait_until(&self.changed, lock(&self.state), wait, gone, |s| s.unfinished == 0).1
    }

    /// The objects the waiting items refer to (given back when the queue is freed).
    pub(crate) fn held(&self) -> Vec<Id> {
        lock(&self.state).items.iter().flat_map(|(_, h)| h.iter().copied()).collect()
    }
}

/// A lock or a semaphore.
pub(crate) struct Lock {
    flavour: LockFlavour,
    /// A bounded semaphore's bound (and 1 for the locks).
    max: u64,
    state: Mutex<LockState>,
    changed: Condvar,
}

#[derive(Default)]
struct LockState {
    /// Acquisitions still possible (a lock: 1 free, 0 held).
    value: u64,
    /// A lock's holder: its session and thread.
    owner: Option<(SessionKey, u64)>,
    /// An `RLock`'s depth.
    depth: u64,
    /// Acquisitions held, per session (given back if the session ends).
    held: HashMap<SessionKey, u64>,
    /// A semaphore's holder died holding some: the next acquirer is told.
    owner_died: bool,
    /// A lock is held by a process that ended: the next acquirer takes it over (and is
    /// told), or any thread releases it (a `Lock` may be released by anyone).
    dead_owner: bool,
}

impl Lock {
    pub(crate) fn new(flavour: LockFlavour, value: u64) -> Lock {
        let value = match flavour {
            LockFlavour::Lock | LockFlavour::RLock => 1,
            _ => value,
        };
        let state = LockState { value, ..LockState::default() };
        Lock { flavour, max: value, state: Mutex::new(state), changed: Condvar::new() }
    }

    /// Acquires for `session`'s `thread`; `Ok(false)` if the wait ended first. `OwnerDied`
    /// means acquired, from a holder that died.
    pub(crate) fn acquire(
        &self,
        session: SessionKey,
        thread: u64,
        wait: Wait,
        gone: &dyn Fn() -> bool,
    ) -> Result<bool, Remote> {
        let mut state = lock(&self.state);
        if self.flavour == LockFlavour::RLock && state.owner == Some((session, thread)) {
            state.depth += 1;
            return Ok(true);
        }
        let (mut state, free) = wait_until(&self.changed, state, wait, gone, |s| s.value > 0 || s.dead_owner);
        if !free {
            return Ok(false);
        }
        if std::mem::take(&mut state.dead_owner) {
            // Taken over from a holder that ended holding it.
            state.owner = Some((session, thread));
            state.depth = 1;
            *state.held.entry(session).or_default() += 1;
            return Err(Remote::new(RemoteKind::OwnerDied, "the previous holder of the lock died"));
        }
        state.value -= 1;
        *state.held.entry(session).or_default() += 1;
        if matches!(self.flavour, LockFlavour::Lock | LockFlavour::RLock) {
            state.owner = Some((session, thread));
            state.depth = 1;
        }
        if std::mem::take(&mut state.owner_died) {
            return Err(Remote::new(RemoteKind::OwnerDied, "the previous holder of the lock died"));
        }
        Ok(true)
    }

    /// Releases for `session`'s `thread`.
    pub(crate) fn release(&self, session: SessionKey, thread: u64) -> Result<(), Remote> {
        let mut state = lock(&self.state);
        match self.flavour {
            LockFlavour::RLock => {
                if state.owner != Some((session, thread)) {
                    return Err(Remote::new(RemoteKind::NotOwner, "cannot release un-acquired lock"));
                }
                state.depth -= 1;
                if state.depth > 0 {
                    return Ok(());
                }
                state.owner = None;
                take_held(&mut state, session);
            }
            LockFlavour::Lock => {
                // Any thread of any process may release a Lock, also one whose holder ended.
                let Some((holder, _)) = state.owner.take() else {
                    return Err(Remote::new(RemoteKind::ReleasedTooManyTimes, "release unlocked lock"));
                };
                state.dead_owner = false;
                take_held(&mut state, holder);
            }
            LockFlavour::Semaphore | LockFlavour::BoundedSemaphore => {
                if self.flavour == LockFlavour::BoundedSemaphore && state.value >= self.max {
                    return Err(Remote::new(RemoteKind::ReleasedTooManyTimes, "Semaphore released too many times"));
                }
                // Counted against the releaser if it holds some, else against any holder.
                let from =
                    if state.held.contains_key(&session) { Some(session) } else { state.held.keys().next().copied() };
                if let Some(from) = from {
                    take_held(&mut state, from);
                }
            }
        }
        state.value += 1;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    pub(crate) fn locked(&self) -> bool {
        lock(&self.state).value == 0
    }

    /// An `RLock`'s owner lets go entirely, for a condition wait; the depth it had.
    fn release_all(&self, session: SessionKey, thread: u64) -> Result<u64, Remote> {
        let mut state = lock(&self.state);
        if state.owner != Some((session, thread)) {
            return Err(Remote::new(RemoteKind::NotOwner, "cannot wait on un-acquired lock"));
        }
        let depth = std::mem::take(&mut state.depth);
        state.owner = None;
        state.value += 1;
        take_held(&mut state, session);
        drop(state);
        self.changed.notify_all();
        Ok(depth)
    }

    /// Takes the lock back after a condition wait, at `depth`, waiting as long as it takes
    /// (as Python's condition does, whatever the wait's timeout).
    fn reacquire(&self, session: SessionKey, thread: u64, depth: u64, gone: &dyn Fn() -> bool) -> Result<(), Remote> {
        let died = match self.acquire(session, thread, Wait::Forever, gone) {
            Ok(true) => false,
            Ok(false) => return Err(Remote::new(RemoteKind::BadRequest, "the client left during a wait")),
            Err(e) if e.kind == RemoteKind::OwnerDied => true,
            Err(e) => return Err(e),
        };
        lock(&self.state).depth = depth;
        if died { Err(Remote::new(RemoteKind::OwnerDied, "the previous holder of the lock died")) } else { Ok(()) }
    }

    pub(crate) fn value(&self) -> u64 {
        lock(&self.state).value
    }

    /// `session` ended: what it held is handed back, and the next acquirer told.
    pub(crate) fn session_ended(&self, session: SessionKey) -> bool {
        let mut state = lock(&self.state);
        let Some(n) = state.held.remove(&session) else { return false };
        match self.flavour {
            LockFlavour::Lock | LockFlavour::RLock => {
                // Still held, by no one alive: the next acquirer takes it over.
                state.dead_owner = true;
            }
            LockFlavour::Semaphore | LockFlavour::BoundedSemaphore => {
                state.value += n;
                if self.flavour == LockFlavour::BoundedSemaphore {
                    state.value = state.value.min(self.max);
                }
                state.owner_died = true;
            }
        }
        drop(state);
        self.changed.notify_all();
        true
    }
}

fn take_held(state: &mut LockState, session: SessionKey) {
    if let Some(n) = state.held.get_mut(&session) {
        *n -= 1;
        if *n == 0 {
            state.held.remove(&session);
        }
    }
}

/// An event.
#[derive(Default)]
pub(crate) struct Event {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Event {
    pub(crate) fn set(&self, on: bool) {
        *lock(&self.set) = on;
        self.changed.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        *lock(&self.set)
    }

    pub(crate) fn wait(&self, wait: Wait, gone: &dyn Fn() -> bool) -> bool {
        wait_until(&self.changed, lock(&self.set), wait, gone, |s| *s).1
    }
}

/// A condition variable over its own `RLock` (Python's `threading.Condition()`): waiters are
/// woken in the order they came, `n` at a time.
pub(crate) struct Condition {
    pub(crate) lock: Lock,
    state: Mutex<CondState>,
    changed: Condvar,
}

#[derive(Default)]
struct CondState {
    next: u64,
    /// Tickets of the waiters, oldest first.
    waiting: VecDeque<u64>,
    /// Tickets notified and not yet gone.
    woken: Vec<u64>,
}

impl Default for Condition {
    fn default() -> Condition {
        Condition { lock: Lock::new(LockFlavour::RLock, 1), state: Mutex::default(), changed: Condvar::new() }
    }
}

impl Condition {
    /// Releases the lock, waits for a notify (or the wait's end), takes the lock back;
    /// whether it was notified.
    pub(crate) fn wait(
        &self,
        session: SessionKey,
        thread: u64,
        wait: Wait,
        gone: &dyn Fn() -> bool,
    ) -> Result<bool, Remote> {
        let mut state = lock(&self.state);
        let ticket = state.next;
        state.next += 1;
        state.waiting.push_back(ticket);
        // The ticket is in before the lock goes: a notify made once it has gone sees it.
        let depth = match self.lock.release_all(session, thread) {
            Ok(depth) => depth,
            Err(e) => {
                state.waiting.retain(|&t| t != ticket);
                return Err(e);
            }
        };
        let (mut state, woken) = wait_until(&self.changed, state, wait, gone, |s| s.woken.contains(&ticket));
        state.waiting.retain(|&t| t != ticket);
        state.woken.retain(|&t| t != ticket);
        drop(state);
        self.lock.reacquire(session, thread, depth, gone)?;
        Ok(woken)
    }

    /// Wakes up to `n` waiters; the caller must hold the lock.
    pub(crate) fn notify(&self, session: SessionKey, thread: u64, n: u64) -> Result<(), Remote> {
        if lock(&self.lock.state).owner != Some((session, thread)) {
            return Err(Remote::new(RemoteKind::NotOwner, "cannot notify on un-acquired lock"));
        }
        let mut state = lock(&self.state);
        let take = (n.min(state.waiting.len() as u64)) as usize;
        let woken: Vec<u64> = state.waiting.drain(..take).collect();
        state.woken.extend(woken);
        drop(state);
        self.changed.notify_all();
        Ok(())
    }
}

/// A barrier (Python's `threading.Barrier(parties)`, without an action: the server runs no
/// code of its clients').
pub(crate) struct Barrier {
    parties: u64,
    state: Mutex<BarrierState>,
    changed: Condvar,
}

#[derive(Default)]
struct BarrierState {
    waiting: u64,
    /// Passes so far.
    generation: u64,
    /// Resets so far: a waiter that sees one is told the barrier broke.
    resets: u64,
    broken: bool,
}

impl Barrier {
    pub(crate) fn new(parties: u64) -> Barrier {
        Barrier { parties: parties.max(1), state: Mutex::default(), changed: Condvar::new() }
    }

    /// Waits for every party; this party's index (`parties - 1` first to arrive, 0 last).
    /// A wait that times out, or whose client leaves, breaks the barrier for all.
    pub(crate) fn wait(&self, wait: Wait, gone: &dyn Fn() -> bool) -> Result<u64, Remote> {
        let broken = || Remote::new(RemoteKind::BrokenBarrier, "barrier is broken");
        let mut state = lock(&self.state);
        if state.broken {
            return Err(broken());
        }
        let index = self.parties - 1 - state.waiting;
        state.waiting += 1;
        if state.waiting == self.parties {
            state.waiting = 0;
            state.generation += 1;
            drop(state);
            self.changed.notify_all();
            return Ok(index);
        }
        let (generation, resets) = (state.generation, state.resets);
        let (mut state, _) = wait_until(&self.changed, state, wait, gone, |s| {
            s.generation != generation || s.broken || s.resets != resets
        });
        if state.resets != resets {
            return Err(broken());
        }
        if state.generation != generation {
            return Ok(index);
        }
        // Timed out, left, or broken by another: broken for all.
        state.broken = true;
        state.waiting = state.waiting.saturating_sub(1);
        drop(state);
        self.changed.notify_all();
        Err(broken())
    }

    pub(crate) fn abort(&self) {
        lock(&self.state).broken = true;
        self.changed.notify_all();
    }

    /// Back to its first state; the parties waiting are told it broke.
    pub(crate) fn reset(&self) {
        let mut state = lock(&self.state);
        state.broken = false;
        state.waiting = 0;
        state.resets += 1;
        drop(state);
        self.changed.notify_all();
    }

    /// Parties, waiting, broken.
    pub(crate) fn describe(&self) -> (u64, u64, bool) {
        let state = lock(&self.state);
        (self.parties, state.waiting, state.broken)
    }
}
