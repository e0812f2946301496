//! A futex word to sleep on, with a count of who may be asleep on it, so that a waker who
//! finds no sleeper makes no system call, and a sleeper killed while asleep does not leave
//! the count high for ever.
//!
//! The count alone would be enough if every sleeper lived to take itself off it. One that is
//! SIGKILLed inside `sleep_until` cannot, and from then on every notify would make a futex
//! system call for nobody. So each process also keeps its own count in a slot of a small
//! table, under its pid and tag (see `pidfd::own_tag`). A waker whose wake-up found nobody
//! while the count said someone (a wasted system call) looks at the slots whose count is not
//! zero and takes the counts of dead processes off the total: at the first such wake-up, and
//! then at one in 64, since a live sleeper caught between counting itself and its futex wait
//! wastes wake-ups too, often, and the look costs system calls per process. A process that
//! finds no free slot takes over a dead process's slot, or sleeps untracked (counted in the
//! total only, as before: only its death in its sleep would then leave the count high).
//!
//! The total never counts fewer than the live sleepers, which is what makes a wake-up
//! impossible to lose: a sleeper adds itself to the total before its slot, and takes itself
//! off its slot before the total, so a death between the two leaves the total one high, never
//! low; and only counts in the slots of dead processes are ever taken off by others.

use crate::sys::{Deadline, futex, pidfd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Slots of processes' own counts.
const SLOTS: usize = 16;

/// Of the wake-ups that find nobody asleep, one in this many looks for dead sleepers.
const CLEAR_EVERY: u32 = 64;

/// A slot's owner while another process clears it.
const CLEARING: u64 = u64::MAX;

#[repr(C)]
#[derive(Default)]
struct Slot {
    /// `pid << 32 | tag` of the process whose count this is; 0 when free.
    owner: AtomicU64,
    /// The owner's sleepers (threads inside `sleep_until`).
    count: AtomicU32,
}

#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct Signal {
    word: AtomicU32,
    /// Everyone who may be asleep: the slots' counts plus the untracked sleepers.
    sleepers: AtomicU32,
    /// Wake-ups that found nobody asleep while `sleepers` said someone may be (see
    /// [`Signal::notify`]).
    wasted: AtomicU32,
    slots: [Slot; SLOTS],
}

/// This process, as a slot's owner.
fn me() -> u64 {
    let pid = crate::sys::proc::cached_pid() as u32;
    (u64::from(pid) << 32) | u64::from(pidfd::own_tag())
}

/// Whether the process a slot's owner word names has ended.
fn owner_gone(owner: u64) -> bool {
    pidfd::process_with_tag_gone((owner >> 32) as u32 as i32, owner as u32)
}

impl Signal {
    /// Wakes up to `n` sleepers if there may be any. The fence orders the caller's publishing
    /// store before the look at `sleepers` (a sleeper counts itself before it looks at what
    /// it waits for), so either the sleeper sees the news or we see the sleeper.
    #[inline]
    pub(crate) fn notify(&self, n: u32) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.word.fetch_add(1, Ordering::SeqCst);
            // Nobody woken: usually a sleeper between counting itself and its futex wait (or
            // leaving, having found what it waits for), rarely a dead one. The look at the
            // slots costs a few system calls per process counted in them, so it is made at
            // the first such wake-up and then at one in `CLEAR_EVERY`: a dead sleeper's count
            // costs that many futex calls at most, the common race almost nothing.
            if futex::wake(&self.word, n) == 0
                && self.wasted.fetch_add(1, Ordering::Relaxed).is_multiple_of(CLEAR_EVERY)
            {
                self.clear_dead();
            }
        }
    }

    /// Sleeps until `ready()` or `deadline`; returns `ready()`'s last answer.
    pub(crate) fn sleep_until(&self, deadline: Deadline, mut ready: impl FnMut() -> bool) -> bool {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let slot = self.register();
        let done = loop {
            let seen = self.word.load(Ordering::SeqCst);
            if ready() {
                break true;
            }
            if !futex::wait(&self.word, seen, deadline) {
                break ready();
            }
        };
        if let Some(slot) = slot {
            slot.count.fetch_sub(1, Ordering::SeqCst);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        done
    }

    /// Counts no sleeper: for a signal only a lock's holder sleeps on, taken over from a
    /// holder that died (the new holder is not asleep, and no one else can be).
    pub(crate) fn reset(&self) {
        for slot in &self.slots {
            slot.count.store(0, Ordering::SeqCst);
        }
        self.sleepers.store(0, Ordering::SeqCst);
    }

    /// How many may be asleep (for tests).
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Counts one sleeper of this process in its slot: the one it has, a free one, or a dead
    /// process's. `None`: no slot to be had (the sleeper is in the total only).
    fn register(&self) -> Option<&Slot> {
        let me = me();
        if me as u32 == 0 {
            // No tag to tell this process from a later one with its pid: untracked.
            return None;
        }
        // A live process's slot is never taken from it, so finding it is enough.
        if let Some(slot) = self.slots.iter().find(|s| s.owner.load(Ordering::Acquire) == me) {
            slot.count.fetch_add(1, Ordering::SeqCst);
            return Some(slot);
        }
        for slot in &self.slots {
            if slot.owner.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                slot.count.fetch_add(1, Ordering::SeqCst);
                return Some(slot);
            }
        }
        // Full: take over a dead process's slot, its count going off the total.
        for slot in &self.slots {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner != CLEARING && owner_gone(owner) && self.take(slot, owner, me) {
                slot.count.fetch_add(1, Ordering::SeqCst);
                return Some(slot);
            }
        }
        None
    }

    /// Takes the counts of dead processes off the total, freeing their slots.
    #[cold]
    fn clear_dead(&self) {
        for slot in &self.slots {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 || owner == CLEARING || slot.count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            if owner_gone(owner) {
                self.take(slot, owner, 0);
            }
        }
    }

    /// Moves `slot` from its dead `owner` to `new` (0: free), taking the dead one's count off
    /// the total; false if another got there first. While the count is taken the slot is
    /// marked, so that no one can claim it and count into it meanwhile.
    fn take(&self, slot: &Slot, owner: u64, new: u64) -> bool {
        if slot.owner.compare_exchange(owner, CLEARING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        let dead = slot.count.swap(0, Ordering::SeqCst);
        // Never below zero, whatever garbage the slot held.
        let _ = self.sleepers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(dead)));
        slot.owner.store(new, Ordering::Release);
        true
    }
}
