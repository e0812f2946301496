//! The lock word every lock here is built on: a futex mutex in shared memory that knows which
//! process holds it, so that a holder's death does not leave the others waiting forever.
//!
//! The word holds the holder's pid (0 when free) and a flag saying that someone may be asleep
//! on it; beside it, the holder's tag (see `pidfd::own_tag`: a number the kernel gives each process), so
//! that a pid recycled by a new process after the holder died is not taken for the holder.
//! Acquiring is one compare-exchange when free, and one store of the tag. A contended acquirer spins briefly,
//! then sleeps on the futex: first for one 20 ms slice, after which it asks the kernel whether
//! the holder lives (most waits end sooner, and cost no more than the futex), then with the
//! holder watched by this process's death watcher (see `deathwatch`: a pidfd in an epoll set,
//! which sees a dead-but-unreaped holder as dead too), which wakes it if the holder dies; an
//! idle waiter costs nothing after its first slice. (Where the holder cannot be watched, the
//! waiter goes on in slices.) A dead holder's word it takes over with a
//! compare-exchange from the dead pid to its own, so exactly one waiter wins, and reports
//! [`Acquired::OwnerDied`]: it holds the lock, and what the lock protected may be half-written.
//! CPython's locks deadlock here (gh-88304).
//!
//! The holder is a process, not a thread: a `Lock` may be released by any thread of any
//! process, and only a process's death is the end of a holder.

use super::deathwatch::{self, Watch};
use crate::sys::{Deadline, futex, pidfd, proc};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Someone may be asleep on the word: the releaser must wake one.
const WAITERS: u32 = 1 << 31;
/// The holder's pid. Linux pids are below 2^22.
const PID: u32 = (1 << 30) - 1;

/// How long a waiter sleeps before it checks that the holder is alive and asks the death
/// watcher to watch it (or, when the holder cannot be watched, between checks): a dead holder
/// is noticed within about this long. Registering costs some system calls, which a wait that
/// ends within a slice (a lock passed back and forth) does not pay.
const SLICE: Duration = Duration::from_millis(20);

/// The caller's deadline, or a [`SLICE`] from now if sooner.
fn slice(deadline: Deadline) -> Deadline {
    Deadline::after(Some(deadline.remaining().map_or(SLICE, |left| left.min(SLICE))))
}

/// Spins before sleeping: a holder on another core usually lets go within a microsecond or
/// two, and a futex sleep and wake-up costs tens.
const SPINS: u32 = 200;

/// Wake-ups this thread has put off until it next lets go of a lock: (word's address, how
/// many). A `Condition` notify that would wake a waiter on this thread's CPU while this thread
/// holds the lock puts the wake-up here instead: woken at once, the waiter would take the CPU
/// only to find the lock held and sleep again (two context switches and two system calls
/// more per notify). The next [`RawMutex::unlock`] by this thread (whichever lock: early is
/// harmless) makes them. Should this thread never let go (killed, or its lock released by
/// another thread), the waiters owed them wake by themselves within their first slice: a
/// notify defers only to such waiters (see `condition.rs`).
const DEFERRED_MAX: usize = 4;

thread_local! {
    static DEFERRED_COUNT: Cell<usize> = const { Cell::new(0) };
    static DEFERRED: [Cell<(usize, u32)>; DEFERRED_MAX] = const { [const { Cell::new((0, 0)) }; DEFERRED_MAX] };
}

/// Puts off waking `n` waiters on `word` until this thread next releases a lock; `false` (do
/// it now) when the list is full.
pub(crate) fn defer_wake(word: &AtomicU32, n: u32) -> bool {
    let count = DEFERRED_COUNT.with(Cell::get);
    if count >= DEFERRED_MAX {
        return false;
    }
    DEFERRED.with(|d| d[count].set((word.as_ptr() as usize, n)));
    DEFERRED_COUNT.with(|c| c.set(count + 1));
    true
}

/// Makes the wake-ups [`defer_wake`] put off. By address only: the words' segments may be
/// gone by now (a spurious wake-up is harmless to every waiter here).
#[cold]
fn wake_deferred(count: usize) {
    DEFERRED_COUNT.with(|c| c.set(0));
    DEFERRED.with(|d| {
        for slot in &d[..count.min(DEFERRED_MAX)] {
            let (word, n) = slot.get();
            futex::wake_at(word as *const AtomicU32, n);
        }
    });
}

/// How an acquisition ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Acquired {
    /// The lock is ours.
    Yes,
    /// The lock is ours, taken over from a holder that died holding it.
    OwnerDied,
    /// Not acquired: the deadline passed (or, for a try, the lock was held).
    No,
}

/// The word and the holder's tag. Zeros are unlocked, so a zeroed segment holds a free
/// lock.
///
/// The tag is written by the holder right after it takes the word and cleared right before it
/// lets go, so a reader that sees the holder's pid in the word finds beside it that holder's
/// tag, or 0 (not written yet: unknown), never another process's while that pid holds it.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RawMutex {
    word: AtomicU32,
    tag: AtomicU32,
}

impl RawMutex {
    /// Acquires, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> Acquired {
        let me = proc::cached_pid() as u32;
        if self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.tag.store(pidfd::own_tag(), Ordering::Relaxed);
            return Acquired::Yes;
        }
        self.lock_contended(me, deadline)
    }

    /// Acquires if free; nothing else (no waiting, no look at the holder).
    #[inline]
    pub(crate) fn try_lock_free(&self) -> bool {
        let me = proc::cached_pid() as u32;
        let taken = self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if taken {
            self.tag.store(pidfd::own_tag(), Ordering::Relaxed);
        }
        taken
    }

    /// Acquires if free, or if its holder is dead; never waits.
    pub(crate) fn try_lock(&self) -> Acquired {
        let me = proc::cached_pid() as u32;
        match self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                self.tag.store(pidfd::own_tag(), Ordering::Relaxed);
                Acquired::Yes
            }
            Err(held) => self.take_from_dead(held, me),
        }
    }

    #[cold]
    fn lock_contended(&self, me: u32, deadline: Deadline) -> Acquired {
        // Spin, loading only, while another holds it: easier on the cache line than CAS.
        let mut state = self.word.load(Ordering::Relaxed);
        futex::spin_until(SPINS, || {
            state = self.word.load(Ordering::Relaxed);
            state == 0
        });
        let mut watched: Option<(u32, deathwatch::Guard<'_>)> = None;
        // Whether a slice went by with the lock held: from then on, the holder is watched.
        let mut long_wait = false;
        loop {
            if state & PID == 0 {
                // Free. Take it with the waiters flag: others may still be asleep, and we
                // cannot know, so our release must wake one.
                match self.word.compare_exchange(state, me | WAITERS, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        self.tag.store(pidfd::own_tag(), Ordering::Relaxed);
                        return Acquired::Yes;
                    }
                    Err(now) => {
                        state = now;
                        continue;
                    }
                }
            }
            if state & WAITERS == 0 {
                if let Err(now) =
                    self.word.compare_exchange(state, state | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                {
                    state = now;
                    continue;
                }
                state |= WAITERS;
            }
            // Asleep until the holder lets go (its unlock wakes us) or dies (the death
            // watcher wakes us); a holder of this process cannot die without us.
            let holder = state & PID;
            if watched.as_ref().is_some_and(|(pid, _)| *pid != holder) {
                watched = None;
            }
            let mut until = deadline;
            if holder != me && !long_wait {
                until = slice(deadline);
            } else if holder != me {
                if watched.is_none() {
                    match deathwatch::watch(holder, self.tag.load(Ordering::Acquire), &self.word) {
                        Watch::Watching(guard) => watched = Some((holder, guard)),
                        Watch::Gone => match self.take_from_dead(state, me) {
                            // Changed hands meanwhile, or the two looks disagree: a slice.
                            Acquired::No => until = slice(deadline),
                            taken => return taken,
                        },
                        Watch::Unwatched => {}
                    }
                }
                match &watched {
                    Some((_, guard)) if guard.fired() => {
                        let taken = self.take_from_dead(state, me);
                        if taken != Acquired::No {
                            return taken;
                        }
                        // Changed hands: watch the new holder.
                        watched = None;
                        state = self.word.load(Ordering::Relaxed);
                        continue;
                    }
                    Some(_) => {}
                    None => until = slice(deadline),
                }
            }
            if !futex::wait(&self.word, state, until) {
                // A slice (or the caller's deadline) went by with the lock held.
                long_wait = true;
                let held = self.word.load(Ordering::Relaxed);
                match self.take_from_dead(held, me) {
                    Acquired::No if deadline.expired() => return Acquired::No,
                    Acquired::No => {}
                    taken => return taken,
                }
            }
            state = self.word.load(Ordering::Relaxed);
        }
    }

    /// Takes the word over from its holder if that process is gone: its pid names no process,
    /// or a process with another tag (a new one that got the dead holder's pid).
    fn take_from_dead(&self, held: u32, me: u32) -> Acquired {
        let holder = held & PID;
        // Acquire: the word read is in the release sequence of the last unlock, so the tag
        // read next is at least as new as that unlock's clearing of it.
        if holder == 0 || holder == me || self.word.load(Ordering::Acquire) != held {
            return Acquired::No;
        }
        let tag = self.tag.load(Ordering::Acquire);
        if !pidfd::process_with_tag_gone(holder as i32, tag) {
            return Acquired::No;
        }
        // The dead holder's tag goes before the word is taken: between our taking the word
        // and writing our own tag, a reader must find 0 beside our pid (unknown: it asks
        // whether our pid lives, and it does), not the dead holder's tag, by which we would
        // look dead and be taken from while we hold it. The tag read must still be there: had
        // the lock changed hands meanwhile, the verdict was about another holder.
        if self.tag.compare_exchange(tag, 0, Ordering::AcqRel, Ordering::Relaxed).is_err()
            || self.word.load(Ordering::Acquire) != held
        {
            return Acquired::No;
        }
        // Only one taker can move the word from the dead pid to its own.
        match self.word.compare_exchange(held, me | WAITERS, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                self.tag.store(pidfd::own_tag(), Ordering::Relaxed);
                log::warn!(
                    target: crate::util::LOG_TARGET,
                    "lock taken over from process {holder}, which died holding it"
                );
                Acquired::OwnerDied
            }
            Err(_) => Acquired::No,
        }
    }

    /// Releases; returns whether it was held (by anyone). Wakes one sleeper if there may be one.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        self.tag.store(0, Ordering::Relaxed);
        let was = self.word.swap(0, Ordering::Release);
        if was & WAITERS != 0 {
            futex::wake(&self.word, 1);
        }
        let deferred = DEFERRED_COUNT.with(Cell::get);
        if deferred != 0 {
            wake_deferred(deferred);
        }
        was & PID != 0
    }

    /// The holder's pid, if held.
    pub(crate) fn holder(&self) -> Option<u32> {
        match self.word.load(Ordering::Relaxed) & PID {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Whether this process (some thread of it) holds the lock.
    pub(crate) fn held_by_this_process(&self) -> bool {
        self.holder() == Some(proc::cached_pid() as u32)
    }
}
