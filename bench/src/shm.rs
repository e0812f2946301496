//! Small shared mappings made by the bench itself (not by the library): an anonymous
//! `MAP_SHARED` mapping made before a fork is the same memory in parent and child, at the same
//! address. The limit side keeps its futex words and process-shared mutexes there; the
//! library side keeps what the library cannot hold yet (the counter of `lock_contended`, until
//! `RawValue` exists) and the start gate of timed two-process runs.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A type whose all-zero bytes are a valid value, and that is only ever shared through
/// atomics (or, for the raw mutex, through the pthread calls made for process sharing).
///
/// # Safety
/// Zeroed memory must be a valid `Self`, and `Self` must be `Sync`.
pub unsafe trait Zeroable: Sync {}

// SAFETY: an atomic; zero is 0.
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}

/// One `T` in an anonymous `MAP_SHARED` mapping, zeroed; unmapped on drop. Fork children
/// inherit it at the same address.
pub struct SharedMap<T: Zeroable> {
    ptr: *mut T,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Zeroable> SharedMap<T> {
    pub fn new() -> io::Result<SharedMap<T>> {
        SharedMap::with_extra(0)
    }

    /// Where the extra bytes of [`with_extra`](SharedMap::with_extra) start, from the start
    /// of the mapping: after the `T`, on a cache line of their own.
    pub const EXTRA_OFFSET: usize = std::mem::size_of::<T>().next_multiple_of(64);

    /// A zeroed `T` followed by `extra` zeroed bytes (at [`EXTRA_OFFSET`](Self::EXTRA_OFFSET)),
    /// all in one anonymous `MAP_SHARED` mapping: a ring's control words and its slots.
    pub fn with_extra(extra: usize) -> io::Result<SharedMap<T>> {
        let len = (Self::EXTRA_OFFSET + extra).max(1);
        // SAFETY: a fresh anonymous mapping; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Page-aligned, so aligned for any T of ours; zero-filled by the kernel.
        Ok(SharedMap { ptr: ptr.cast(), len, _t: PhantomData })
    }

    /// The address, for a child started by fork (which sees the mapping at the same place).
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// The first of the extra bytes.
    pub fn extra(&self) -> *mut u8 {
        // SAFETY: `EXTRA_OFFSET` is at most the mapping's length.
        unsafe { self.ptr.cast::<u8>().add(Self::EXTRA_OFFSET) }
    }

    /// The `T` at `addr`, in a fork child of the process that made the mapping.
    ///
    /// # Safety
    /// `addr` must come from [`SharedMap::addr`] of a `SharedMap<T>` made before this process
    /// was forked from its maker, and the mapping must still be mapped here for `'a`.
    pub unsafe fn at<'a>(addr: usize) -> &'a T {
        // SAFETY: by the caller's promise, a live, aligned, initialised (zeroed) T.
        unsafe { &*(addr as *const T) }
    }
}

impl<T: Zeroable> std::ops::Deref for SharedMap<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: mapped, aligned and zero-initialised (a valid T by `Zeroable`) for our life.
        unsafe { &*self.ptr }
    }
}

impl<T: Zeroable> Drop for SharedMap<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Keeps what it holds on a cache line of its own, so that two words written by different
/// processes do not share one.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Line<T>(pub T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// How long a gate waits for the other process before giving up (it died, or hangs).
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The start line and finish line of a timed run of several processes: the children arrive
/// and wait, the parent starts the clock and opens the gate, then waits for every child to
/// say it is done. Waiting spins a little and yields the CPU, so that it works with every
/// process pinned to one CPU as well. Never part of what is measured in a loop: it only marks
/// the start and the end.
#[repr(C)]
#[derive(Default)]
pub struct Gate {
    ready: Line<AtomicU32>,
    /// 0 closed, 1 open, 2 aborted (the parent failed: children leave at once).
    go: Line<AtomicU32>,
    done: Line<AtomicU32>,
}

// SAFETY: atomics only; zero is a closed gate nobody reached.
unsafe impl Zeroable for Gate {}

const OPEN: u32 = 1;
const ABORTED: u32 = 2;

/// Waits a little, then gives the CPU away (to the other process, if it shares this CPU).
fn pause(i: u32) {
    if i < 100 {
        std::hint::spin_loop();
    } else {
        // SAFETY: no arguments, cannot fail in a way that matters.
        unsafe { libc::sched_yield() };
    }
}

impl Gate {
    /// In a child: says it is ready and waits for the start. `false` if the parent aborted.
    /// Async-signal-safe (atomics and `sched_yield` only).
    pub fn arrive(&self) -> bool {
        self.ready.fetch_add(1, Ordering::SeqCst);
        let mut i = 0u32;
        loop {
            match self.go.load(Ordering::Acquire) {
                OPEN => return true,
                ABORTED => return false,
                _ => pause(i),
            }
            i = i.saturating_add(1);
        }
    }

    /// In a child: says it finished.
    pub fn finish(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// In the parent: waits until `count` children arrived (giving up if `alive()` turns
    /// false or after a minute).
    pub fn wait_ready(&self, count: u32, alive: impl FnMut() -> bool) -> Result<(), String> {
        wait_count(&self.ready, count, alive).map_err(|e| format!("waiting for the children to start: {e}"))
    }

    /// In the parent: lets the children go.
    pub fn open(&self) {
        self.go.store(OPEN, Ordering::Release);
    }

    /// In the parent, on failure: children still waiting leave.
    pub fn abort(&self) {
        self.go.store(ABORTED, Ordering::Release);
    }

    /// In the parent: waits until `count` children finished.
    pub fn wait_done(&self, count: u32, alive: impl FnMut() -> bool) -> Result<(), String> {
        wait_count(&self.done, count, alive).map_err(|e| format!("waiting for the children to finish: {e}"))
    }
}

fn wait_count(word: &AtomicU32, count: u32, mut alive: impl FnMut() -> bool) -> Result<(), &'static str> {
    let start = Instant::now();
    let mut i = 0u32;
    while word.load(Ordering::Acquire) < count {
        pause(i);
        i = i.saturating_add(1);
        if i.is_multiple_of(1024) {
            if !alive() {
                // It may have finished just before it went.
                return if word.load(Ordering::Acquire) >= count { Ok(()) } else { Err("a child is gone") };
            }
            if start.elapsed() > GATE_TIMEOUT {
                return Err("timed out");
            }
        }
    }
    Ok(())
}
