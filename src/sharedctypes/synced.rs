//! What `Value` and `Array` share: a block whose state is an `RLock` (CPython's default lock
//! for them, SHV-09) and a mark naming the thread that holds a guard to the data.
//!
//! The lock keeps other threads and processes out. The mark keeps two `&mut` to the data
//! apart where the lock alone cannot: the guard holder's own thread coming back through the
//! re-entrant lock (a programming error: it panics, as `RefCell` does), and a thread that
//! got the lock because the guard holder released its level by hand through `get_lock()`
//! (it waits until the guard is gone).

use super::Pod;
use super::block::Block;
use crate::heap::{FIRST, Shared, SharedState};
use crate::synchronize::{RLock, RLockState};
use crate::sys::{Deadline, pidfd, proc};
use crate::{Error, Result};
use serde::{Deserializer, Serializer};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The state before the data.
#[repr(C)]
#[derive(Default)]
pub(super) struct SyncState {
    /// First, so that `get_lock()` can view it as an `RLock` of its own.
    rlock: RLockState,
    /// The thread holding a guard, as [`thread_mark`], or 0. Set and checked by a thread
    /// holding `rlock`; cleared by the guard holder when its guard drops.
    borrower: AtomicU64,
}

// SAFETY: atomics only; zero is a free lock and no guard.
unsafe impl SharedState for SyncState {}

/// The calling thread, as the borrower mark holds it: `pid << 32 | tid`.
fn thread_mark() -> u64 {
    (u64::from(proc::cached_pid() as u32) << 32) | u64::from(proc::cached_tid() as u32)
}

/// Whether the mark is left by a process that has ended (it died holding a guard). Another
/// thread of this process is never gone: its guard may still be alive.
fn mark_gone(mark: u64) -> bool {
    let pid = (mark >> 32) as u32 as i32;
    pid != proc::cached_pid() && pidfd::process_gone(pid)
}

/// The panic of the one misuse that would alias a `&mut`.
#[cold]
#[track_caller]
fn already_borrowed() -> ! {
    panic!(
        "already borrowed: this thread holds a guard (from `lock()`) of this shared Value or Array; \
         drop it before calling `get`, `set`, `lock` or the like again"
    )
}

/// How a thread entered: whether it took a level of the lock (to give back on leaving), and
/// whether it took the lock over from a process that died holding it.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    took_level: bool,
    pub(super) owner_died: bool,
}

/// A block with its lock, and an `RLock` handle viewing that lock for `get_lock()`.
pub(super) struct Synced<T> {
    block: Block<SyncState, T>,
    rlock: RLock,
}

impl<T> Clone for Synced<T> {
    fn clone(&self) -> Self {
        Synced { block: self.block.clone(), rlock: self.rlock.clone() }
    }
}

impl<T: Pod> Synced<T> {
    /// A new object of `len` zeroed elements, `values` written in if given.
    pub(super) fn new(len: usize, values: Option<&[T]>) -> Result<Self> {
        let mut block = Block::new(len)?;
        if let Some(values) = values {
            block.init_from(values);
        }
        Ok(Self::from_block(block)?)
    }

    fn from_block(block: Block<SyncState, T>) -> io::Result<Self> {
        let view: Shared<RLockState> = block.shared().view(FIRST)?;
        Ok(Synced { block, rlock: RLock::from_shared(view) })
    }

    /// The elements' memory.
    pub(super) fn block(&self) -> &Block<SyncState, T> {
        &self.block
    }

    /// The object's lock.
    pub(super) fn rlock(&self) -> &RLock {
        &self.rlock
    }

    fn state(&self) -> &SyncState {
        self.block.state()
    }

    /// Makes the calling thread the one that may touch the data. With `level`, takes a level
    /// of the lock (for a guard, which may outlive other levels); without, takes the lock only
    /// if this thread does not hold it already (for one read or write, during which nothing
    /// can release it). Returns once no other live thread holds a guard.
    ///
    /// # Panics
    /// If this thread holds a guard of the object.
    #[track_caller]
    pub(super) fn enter(&self, level: bool) -> Entry {
        let state = self.state();
        let mut owner_died = false;
        loop {
            let mine = state.rlock.is_mine();
            let took_level = if mine && !level {
                false
            } else {
                match state.rlock.acquire(Deadline::NEVER) {
                    Ok(true) => true,
                    Err(Error::OwnerDied) => {
                        owner_died = true;
                        true
                    }
                    // Only a re-entrant acquire fails otherwise (its count is full): the
                    // thread holds the lock all the same, and the borrower mark protects
                    // the guard's data even without a level of its own.
                    _ if mine => false,
                    _ => continue,
                }
            };
            let borrower = state.borrower.load(Ordering::Acquire);
            if borrower == 0 {
                return Entry { took_level, owner_died };
            }
            if borrower == thread_mark() {
                if took_level {
                    let _ = state.rlock.release();
                }
                already_borrowed();
            }
            if mark_gone(borrower) {
                // Left by a process that died holding a guard: the lock was taken over from it.
                let _ = state.borrower.compare_exchange(borrower, 0, Ordering::Relaxed, Ordering::Relaxed);
                return Entry { took_level, owner_died };
            }
            // A live thread's guard, though we hold the lock: its level was released under it
            // by hand. Its `&mut` may be in use; wait for the guard to go.
            if took_level {
                let _ = state.rlock.release();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// As [`enter`](Synced::enter) without a level, but never waits and never panics: `None`
    /// if another thread holds the lock or anyone holds a guard (for `Debug`).
    pub(super) fn try_enter(&self) -> Option<Entry> {
        let state = self.state();
        let took_level = !state.rlock.is_mine();
        if took_level {
            match state.rlock.acquire(Deadline::after(Some(Duration::ZERO))) {
                Ok(true) | Err(Error::OwnerDied) => {}
                _ => return None,
            }
        }
        let entry = Entry { took_level, owner_died: false };
        if state.borrower.load(Ordering::Acquire) != 0 {
            self.leave(entry);
            return None;
        }
        Some(entry)
    }

    /// Gives back what [`enter`](Synced::enter) took.
    pub(super) fn leave(&self, entry: Entry) {
        if entry.took_level {
            let _ = self.state().rlock.release();
        }
    }

    /// Enters for a guard and marks this thread as its holder.
    #[track_caller]
    pub(super) fn enter_guard(&self) -> Entry {
        let entry = self.enter(true);
        self.state().borrower.store(thread_mark(), Ordering::Relaxed);
        entry
    }

    /// Ends a guard: clears the mark (publishing the guard's writes to a thread waiting on
    /// it), then gives back the level.
    pub(super) fn leave_guard(&self, entry: Entry) {
        let _ = self.state().borrower.compare_exchange(thread_mark(), 0, Ordering::Release, Ordering::Relaxed);
        self.leave(entry);
    }

    /// Reads element `i` (below `len`) under the lock.
    #[track_caller]
    pub(super) fn read(&self, i: usize) -> T {
        let entry = self.enter(false);
        // SAFETY: `i < len`; this thread holds the lock and no guard is alive, so no one else
        // reads or writes the data meanwhile.
        let x = unsafe { self.block.elem(i).read() };
        self.leave(entry);
        x
    }

    /// Writes element `i` (below `len`) under the lock.
    #[track_caller]
    pub(super) fn write(&self, i: usize, x: T) {
        let entry = self.enter(false);
        // SAFETY: as in `read`.
        unsafe { self.block.elem(i).write(x) };
        self.leave(entry);
    }

    /// Copies every element out under the lock.
    #[track_caller]
    pub(super) fn to_vec(&self) -> Vec<T> {
        let entry = self.enter(false);
        // SAFETY: as in `read`, for all `len` elements.
        let v = unsafe { std::slice::from_raw_parts(self.block.ptr(), self.block.len()) }.to_vec();
        self.leave(entry);
        v
    }

    /// Copies every element out without waiting, for `Debug`.
    pub(super) fn try_to_vec(&self) -> Option<Vec<T>> {
        let entry = self.try_enter()?;
        // SAFETY: as in `read`.
        let v = unsafe { std::slice::from_raw_parts(self.block.ptr(), self.block.len()) }.to_vec();
        self.leave(entry);
        Some(v)
    }

    pub(super) fn serialize_one<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.block.serialize_one(s)
    }

    pub(super) fn deserialize_one<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::from_block(Block::deserialize_one(d)?).map_err(serde::de::Error::custom)
    }

    pub(super) fn serialize_many<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.block.serialize_many(s)
    }

    pub(super) fn deserialize_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::from_block(Block::deserialize_many(d)?).map_err(serde::de::Error::custom)
    }
}
