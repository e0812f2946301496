//! Futex wait and wake on 32-bit words in shared memory.
//!
//! The words live in `MAP_SHARED` segments that several processes map, so these are the
//! process-shared operations (no `FUTEX_PRIVATE_FLAG`): the kernel keys a waiter on the
//! page's inode and offset, not on this process's address. A wait re-checks the word
//! atomically against `expected` before it sleeps, which is what makes wake-ups impossible to
//! lose; callers loop on their own condition, since a wait may also end spuriously.

use super::{Deadline, proc};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Sleeps while `word` holds `expected`, until woken, until `deadline`, or spuriously.
/// Returns `false` only when the deadline passed; `true` means "look again".
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
    let timeout = match deadline.remaining() {
        Some(Duration::ZERO) => return false,
        Some(left) => Some(libc::timespec {
            tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        }),
        None => None,
    };
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the call, and the
    // timeout (relative, as FUTEX_WAIT takes it) lives on our stack until the call returns.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, timeout_ptr) };
    if r == 0 {
        return true;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => !deadline.expired(),
        // EAGAIN: the word had already changed. EINTR: a signal; the caller looks again and
        // waits for what is left of its deadline.
        _ => true,
    }
}

/// Wakes up to `n` waiters on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    r.max(0) as usize
}

/// Wakes every waiter on the word at `word`, which may no longer be mapped: FUTEX_WAKE takes
/// the address as a key only, and never reads or writes through it. For a waker that cannot
/// prove the word outlives the call (an unmapped address gives EFAULT, one mapped anew a
/// spurious wake-up, which every waiter here is ready for).
pub(crate) fn wake_all_at(word: *const AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; nothing is dereferenced.
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, libc::c_int::MAX) };
}

/// Wakes up to `n` waiters on the word at `word`, which may no longer be mapped (as
/// [`wake_all_at`]): for a wake-up put off until later, when the word's owner may be gone.
pub(crate) fn wake_at(word: *const AtomicU32, n: u32) {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address as a key; nothing is dereferenced.
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, n) };
}

/// As [`wait`], sleeping as one of the waiters in `bits`: a [`wake_bits`] wakes only the
/// waiters whose bits meet its own (a plain [`wake`] wakes all). Never 0.
pub(crate) fn wait_bits(word: &AtomicU32, expected: u32, bits: u32, deadline: Deadline) -> bool {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, the clock `Instant` reads.
    let at = match deadline.remaining() {
        Some(Duration::ZERO) => return false,
        Some(left) => {
            let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime fills the timespec, which lives on our stack.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
            let secs = (now.tv_sec as u64).saturating_add(left.as_secs()).saturating_add(nanos / 1_000_000_000);
            Some(libc::timespec {
                tv_sec: secs.min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            })
        }
        None => None,
    };
    let at_ptr = at.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: as in `wait`; the absolute timeout lives on our stack until the call returns,
    // and the unused second address is null, as FUTEX_WAIT_BITSET allows.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            at_ptr,
            std::ptr::null::<u32>(),
            bits.max(1),
        )
    };
    if r == 0 {
        return true;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => !deadline.expired(),
        _ => true,
    }
}

/// Wakes every waiter on `word` that sleeps (in [`wait_bits`]) with one of `bits`.
pub(crate) fn wake_bits(word: &AtomicU32, bits: u32) -> usize {
    // SAFETY: FUTEX_WAKE_BITSET only uses the address as a key; `word` is valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            libc::c_int::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            bits.max(1),
        )
    };
    r.max(0) as usize
}

/// Wakes every waiter on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// Spins up to `rounds` times, each a short pause, until `done()`; returns whether it did.
/// Waiting on another core is far cheaper spun than slept (a sleeping waiter costs its waker
/// a system call and itself a wake-up of some 20 µs on these machines), as long as the spin
/// is brief.
#[inline]
pub(crate) fn spin_until(rounds: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..rounds {
        if done() {
            return true;
        }
        std::hint::spin_loop();
    }
    done()
}

/// Whether a waiter on `my_cpu` should spin for a process last seen on `their_cpu` (both as
/// [`current_cpu`](super::proc::current_cpu) gives them): not when they share a CPU, since
/// the other cannot run while we spin, and every pause is time taken from it.
#[inline]
pub(crate) fn worth_spinning(my_cpu: u32, their_cpu: u32) -> bool {
    their_cpu == 0 || their_cpu != my_cpu
}

/// Spin, then park: waits until `ready()` (which may take something, as a semaphore's does)
/// or `deadline`, and says which. It spins first, unless the process it waits for (last seen
/// on `their_cpu`) shares our CPU; then it sleeps on `word` while the word holds `idle`,
/// counted in `sleepers`, so that a waker who finds no sleeper makes no system call. A
/// sleeper killed here leaves `sleepers` one too high: a needless wake later, never a lost one.
pub(crate) fn park_until(
    word: &AtomicU32,
    idle: u32,
    sleepers: &AtomicU32,
    their_cpu: u32,
    spins: u32,
    deadline: Deadline,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if ready() {
        return true;
    }
    let spin = !deadline.expired() && worth_spinning(proc::current_cpu(), their_cpu);
    if spin && spin_until(spins, &mut ready) {
        return true;
    }
    sleepers.fetch_add(1, Ordering::SeqCst);
    let done = loop {
        if ready() {
            break true;
        }
        if !wait(word, idle, deadline) {
            break ready();
        }
    };
    sleepers.fetch_sub(1, Ordering::SeqCst);
    done
}
