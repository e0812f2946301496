//! The lock word every lock here is built on: a futex mutex in shared memory that knows which
//! process holds it, so that a holder's death does not leave the others waiting forever.
//!
//! The word holds the holder's pid (0 when free) and a flag saying that someone may be asleep
//! on it. Acquiring is one compare-exchange when free. A contended acquirer spins briefly,
//! then sleeps on the futex in slices: whenever a slice passes without the lock being handed
//! over, it asks the kernel whether the holder is still alive (through a pidfd, which sees a
//! dead-but-unreaped holder as dead too). If not, it takes the word over with a
//! compare-exchange from the dead pid to its own, so exactly one waiter wins, and reports
//! [`Acquired::OwnerDied`]: it holds the lock, and what the lock protected may be half-written.
//! CPython's locks deadlock here (gh-88304).
//!
//! The holder is a process, not a thread: a `Lock` may be released by any thread of any
//! process, and only a process's death is the end of a holder.

use crate::sys::{Deadline, futex, pidfd, proc};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Someone may be asleep on the word: the releaser must wake one.
const WAITERS: u32 = 1 << 31;
/// The holder's pid. Linux pids are below 2^22.
const PID: u32 = (1 << 30) - 1;

/// How long a waiter sleeps before it checks that the holder is alive: a dead holder is
/// noticed within about this long, a live one is never troubled more often.
const SLICE: Duration = Duration::from_millis(20);

/// Spins before sleeping: a holder on another core usually lets go within a microsecond or
/// two, and a futex sleep and wake-up costs tens.
const SPINS: u32 = 200;

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

/// The word. Zero is unlocked, so a zeroed segment holds a free lock.
#[repr(transparent)]
#[derive(Default)]
pub(crate) struct RawMutex {
    word: AtomicU32,
}

impl RawMutex {
    /// Acquires, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> Acquired {
        let me = proc::cached_pid() as u32;
        if self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Acquired::Yes;
        }
        self.lock_contended(me, deadline)
    }

    /// Acquires if free; nothing else (no waiting, no look at the holder).
    #[inline]
    pub(crate) fn try_lock_free(&self) -> bool {
        let me = proc::cached_pid() as u32;
        self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Acquires if free, or if its holder is dead; never waits.
    pub(crate) fn try_lock(&self) -> Acquired {
        let me = proc::cached_pid() as u32;
        match self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Acquired::Yes,
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
        loop {
            if state & PID == 0 {
                // Free. Take it with the waiters flag: others may still be asleep, and we
                // cannot know, so our release must wake one.
                match self.word.compare_exchange(state, me | WAITERS, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Acquired::Yes,
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
            let slice = Deadline::after(Some(deadline.remaining().map_or(SLICE, |left| left.min(SLICE))));
            if !futex::wait(&self.word, state, slice) {
                // A whole slice (or the caller's deadline) went by with the lock held.
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

    /// Takes the word over from its holder if that process is gone.
    fn take_from_dead(&self, held: u32, me: u32) -> Acquired {
        let holder = held & PID;
        if holder == 0 || holder == me || !pidfd::process_gone(holder as i32) {
            return Acquired::No;
        }
        // Only one taker can move the word from the dead pid to its own.
        match self.word.compare_exchange(held, me | WAITERS, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Acquired::OwnerDied,
            Err(_) => Acquired::No,
        }
    }

    /// Releases; returns whether it was held (by anyone). Wakes one sleeper if there may be one.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        let was = self.word.swap(0, Ordering::Release);
        if was & WAITERS != 0 {
            futex::wake(&self.word, 1);
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
