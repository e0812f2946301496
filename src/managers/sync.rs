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
