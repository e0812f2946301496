//! Being woken when a process dies, instead of waking now and then to ask.
//!
//! A waiter whose wait only ends when another process lets go (a lock's holder, a barrier's
//! parties) must not wait for ever if that process is killed. Rather than sleep in slices and
//! look each time (which costs every idle waiter a wake-up every few milliseconds), it
//! registers here: the process to watch, and the futex word it sleeps on. One thread per
//! process sleeps in `epoll_wait` over the pidfds of the watched processes (one pidfd per
//! process, shared by all the waiters that watch it, closed when the last one leaves); when
//! one becomes readable (that process ended) it marks the registrations fired and wakes their
//! words. The woken waiter finds its registration fired and does what it did after a slice
//! (take the lock over, take the dead party out).
//!
//! A registration that fired before its waiter went to sleep would leave the waiter asleep
//! (the wake found nobody): so the thread wakes the words of fired registrations again every
//! millisecond until their waiters unregister, which a woken waiter does at once.
//!
//! Fork: the thread does not exist in a fork child, and its lock may have been held at the
//! fork. The watcher is keyed by pid: a child never touches its parent's, and starts its own.

use crate::sys::socket::{Interest, ReadySet};
use crate::sys::{Deadline, futex, pidfd, proc};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often the words of fired registrations are woken again, until their waiters leave.
const REWAKE: Duration = Duration::from_millis(1);

/// What [`watch`] found.
pub(crate) enum Watch<'a> {
    /// The process had already ended (or its pid named another process, or none).
    Gone,
    /// Watched until the guard is dropped: the word is woken when the process ends.
    Watching(Guard<'a>),
    /// Cannot be watched (out of descriptors, no thread): the caller falls back to looking
    /// now and then.
    Unwatched,
}

/// A registration; unregisters when dropped.
pub(crate) struct Guard<'a> {
    watcher: &'static Watcher,
    reg: Arc<Reg>,
    _word: std::marker::PhantomData<&'a AtomicU32>,
}

impl Guard<'_> {
    /// Whether the watched process has ended.
    pub(crate) fn fired(&self) -> bool {
        self.reg.fired.load(Ordering::Acquire)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut holders = self.watcher.holders();
        let Some(i) = holders.iter().position(|h| h.regs.iter().any(|r| Arc::ptr_eq(r, &self.reg))) else { return };
        holders[i].regs.retain(|r| !Arc::ptr_eq(r, &self.reg));
        if holders[i].regs.is_empty() {
            let h = holders.swap_remove(i);
            if !h.dead {
                let _ = self.watcher.set.remove(h.pidfd.as_fd());
            }
        }
    }
}

struct Reg {
    /// The word to wake, as an address only (see `futex::wake_all_at`).
    word: *const AtomicU32,
    fired: AtomicBool,
}

// SAFETY: the pointer is only ever handed to FUTEX_WAKE as a key, never dereferenced.
unsafe impl Send for Reg {}
// SAFETY: as above.
unsafe impl Sync for Reg {}

/// A watched process.
struct Holder {
    pid: u32,
    /// Its tag, 0 if unknown.
    tag: u32,
    pidfd: pidfd::Pidfd,
    /// Ended (and out of the epoll set).
    dead: bool,
    regs: Vec<Arc<Reg>>,
}

struct Watcher {
    /// The process this watcher (and its thread) belongs to.
    pid: i32,
    set: ReadySet,
    inner: Mutex<Vec<Holder>>,
}

impl Watcher {
    fn holders(&self) -> MutexGuard<'_, Vec<Holder>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This process's watcher, or its parent's (before a fork): see [`watcher`]. Leaked: it lives
/// as long as its thread, which is for the life of the process.
static CURRENT: AtomicPtr<Watcher> = AtomicPtr::new(std::ptr::null_mut());

/// This process's watcher, started on first use; `None` if it cannot be.
fn watcher() -> Option<&'static Watcher> {
    let me = proc::cached_pid();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::leak` below and is never freed once stored.
    if let Some(w) = unsafe { current.as_ref() }
        && w.pid == me
    {
        return Some(w);
    }
    start(me, current)
}

#[cold]
fn start(me: i32, old: *mut Watcher) -> Option<&'static Watcher> {
    let set = ReadySet::new().ok()?;
    let new = Box::into_raw(Box::new(Watcher { pid: me, set, inner: Mutex::new(Vec::new()) }));
    if let Err(won) = CURRENT.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `new` was never shared; another thread's watcher won and stays.
        drop(unsafe { Box::from_raw(new) });
        // SAFETY: as in `watcher`.
        return unsafe { won.as_ref() }.filter(|w| w.pid == me);
    }
    // SAFETY: stored above, never freed.
    let w: &'static Watcher = unsafe { &*new };
    // Counted as the crate's own before it exists, so that a fork meanwhile does not warn.
    let own = crate::process::own_thread();
    let spawned =
        std::thread::Builder::new().name("multiprocess-deathwatch".into()).stack_size(64 * 1024).spawn(move || {
            let _own = own;
            run(w)
        });
    // Without its thread the watcher wakes no one: registrations are refused.
    if spawned.is_err() {
        THREADLESS.store(me, Ordering::Relaxed);
        return None;
    }
    Some(w)
}

/// The pid of a process whose watcher has no thread.
static THREADLESS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn run(w: &'static Watcher) -> ! {
    loop {
        let pending = w.holders().iter().any(|h| h.dead && !h.regs.is_empty());
        let deadline = Deadline::after(pending.then_some(REWAKE));
        let ready = w.set.wait(64, deadline).unwrap_or_else(|_| {
            std::thread::sleep(REWAKE);
            Vec::new()
        });
        let mut holders = w.holders();
        for fd in ready {
            if let Some(h) = holders.iter_mut().find(|h| !h.dead && h.pidfd.as_fd().as_raw_fd() == fd) {
                h.dead = true;
                let _ = w.set.remove(h.pidfd.as_fd());
                for r in &h.regs {
                    r.fired.store(true, Ordering::Release);
                }
            }
        }
        for h in holders.iter().filter(|h| h.dead) {
            for r in &h.regs {
                futex::wake_all_at(r.word);
            }
        }
    }
}

/// Watches process `pid` (with `tag`, 0 if unknown: see `pidfd::own_tag`) on behalf of a
/// waiter asleep on `word`.
pub(crate) fn watch(pid: u32, tag: u32, word: &AtomicU32) -> Watch<'_> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Watch::Gone;
    }
    let Some(w) = watcher() else { return Watch::Unwatched };
    if THREADLESS.load(Ordering::Relaxed) == w.pid {
        return Watch::Unwatched;
    }
    let mut holders = w.holders();
    let known = holders.iter().position(|h| h.pid == pid && !h.dead);
    let i = match known {
        // Another process has the pid now: the one with `tag` has ended.
        Some(i) if tag != 0 && holders[i].tag != 0 && holders[i].tag != tag => return Watch::Gone,
        Some(i) => i,
        None => match open(w, pid, tag) {
            Ok(h) => {
                holders.push(h);
                holders.len() - 1
            }
            Err(found) => return found,
        },
    };
    let reg = Arc::new(Reg { word: word as *const AtomicU32, fired: AtomicBool::new(false) });
    holders[i].regs.push(reg.clone());
    Watch::Watching(Guard { watcher: w, reg, _word: std::marker::PhantomData })
}

/// A pidfd for `pid`, in the epoll set, if it names the process with `tag`, alive.
fn open(w: &Watcher, pid: u32, tag: u32) -> Result<Holder, Watch<'static>> {
    let (pidfd, now) = match pidfd::open_if_alive(pid as i32, tag) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(Watch::Gone),
        Err(_) => return Err(Watch::Unwatched),
    };
    if w.set.add(pidfd.as_fd(), Some(Interest::Read)).is_err() {
        return Err(Watch::Unwatched);
    }
    Ok(Holder { pid, tag: now, pidfd, dead: false, regs: Vec::new() })
}

/// In a fork child: forgets the parent's watcher (its thread is not here). Whether there was
/// one, whose thread the crate counted as its own.
pub(crate) fn forget_in_fork_child() -> bool {
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: as in `watcher`.
    let parents = unsafe { current.as_ref() }.is_some_and(|w| w.pid != proc::cached_pid());
    if parents {
        let _ = CURRENT.compare_exchange(current, std::ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed);
    }
    parents && THREADLESS.load(Ordering::Relaxed) != unsafe_pid(current)
}

/// The pid a watcher belongs to.
fn unsafe_pid(w: *mut Watcher) -> i32 {
    // SAFETY: as in `watcher`.
    unsafe { w.as_ref() }.map_or(0, |w| w.pid)
}

/// The epoll descriptor this process's watcher keeps for the life of the process.
pub(crate) fn persistent_fd() -> Option<RawFd> {
    // SAFETY: as in `watcher`.
    unsafe { CURRENT.load(Ordering::Acquire).as_ref() }
        .filter(|w| w.pid == proc::cached_pid())
        .map(|w| w.set.as_fd().as_raw_fd())
}
