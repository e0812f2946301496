//! The limit side of the synchronization workloads: a process-shared pthread mutex, and futex
//! hand-offs over `MAP_SHARED` memory that spin and then sleep, all raw.

use super::{child_running, fork_child, kill_and_reap, reap};
use crate::pin::{PinGuard, Placement};
use crate::shm::{Gate, Line, SharedMap, Zeroable};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Pauses a raw waiter spins before it sleeps: about 50 µs on a CPU whose `pause` takes 25 ns,
/// longer than a futex wake-up across cores takes on these machines (20 to 45 µs), so that
/// after one side had to sleep the other still catches the answer spinning and the pair goes
/// back to spinning; a shorter spin (100 pauses) was seen to leave both sleeping in turn for
/// whole rounds (up to 50× slower). It costs nothing when the other process answers in time,
/// and on one CPU [`WaitPolicy::SpinUnlessSameCpu`] does not spin at all.
pub const SPINS: u32 = 2000;

/// A `pthread_mutex_t` set up for sharing between processes (`PTHREAD_PROCESS_SHARED`).
#[repr(C)]
pub struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: the mutex is only used through pthread calls, which synchronise it themselves.
unsafe impl Sync for PMutex {}

impl PMutex {
    /// Initialises it for process sharing; call once, before any fork.
    fn init_shared(&self) -> Result<(), String> {
        // SAFETY: attr is initialised before use and destroyed after; the mutex lives in a
        // mapping that outlives every user, and nobody uses it before this returns.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let mut r = libc::pthread_mutexattr_init(&mut attr);
            if r == 0 {
                r = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            }
            if r == 0 {
                r = libc::pthread_mutex_init(self.0.get(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if r == 0 { Ok(()) } else { Err(format!("pthread mutex init: {}", std::io::Error::from_raw_os_error(r))) }
        }
    }

    /// `pthread_mutex_lock`; its return code.
    #[inline]
    fn lock(&self) -> i32 {
        // SAFETY: an initialised mutex (see `init_shared`).
        unsafe { libc::pthread_mutex_lock(self.0.get()) }
    }

    /// `pthread_mutex_unlock`; its return code.
    #[inline]
    fn unlock(&self) -> i32 {
        // SAFETY: as in `lock`.
        unsafe { libc::pthread_mutex_unlock(self.0.get()) }
    }
}

/// The mutex alone.
#[repr(C)]
struct Solo {
    mutex: PMutex,
}

// SAFETY: a zeroed pthread_mutex_t is glibc's PTHREAD_MUTEX_INITIALIZER (and it is initialised
// for sharing before use anyway).
unsafe impl Zeroable for Solo {}

/// `pthread_mutex_lock` + `pthread_mutex_unlock` of a process-shared mutex in a `MAP_SHARED`
/// page, in one process: ns per pair.
pub fn pthread_uncontended(warmup: u32, n: u32) -> Result<f64, String> {
    let map = SharedMap::<Solo>::new().map_err(|e| format!("mmap: {e}"))?;
    map.mutex.init_shared()?;
    let pair = || map.mutex.lock() | map.mutex.unlock();
    let mut bad = (0..warmup).fold(0, |acc, _| acc | pair());
    let t = Instant::now();
    for _ in 0..n {
        bad |= pair();
    }
    let elapsed = t.elapsed();
    if bad != 0 {
        return Err(format!("pthread mutex: {}", std::io::Error::from_raw_os_error(bad)));
    }
    Ok(elapsed.as_secs_f64() * 1e9 / f64::from(n))
}

/// `lock_contended`'s shared page: the mutex and the counter on lines of their own (as the
/// library's lock and a value beside it, or CPython's semaphore and `RawValue`, are), and the
/// start gate.
#[repr(C)]
struct Contended {
    mutex: Line<PMutex>,
    counter: Line<AtomicU64>,
    gate: Gate,
}

// SAFETY: as for `Solo`; the rest is atomics, zero being a count of zero and a closed gate.
unsafe impl Zeroable for Contended {}

/// What the shared counter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// An integer (`lock_contended`).
    U64,
    /// A double, kept as its bits (`value_increment`'s `Value<f64>`): the load and store are
    /// plain moves, as a C `double` under the mutex would be.
    F64,
}

impl Counter {
    /// Adds one: a relaxed load and store, not an atomic add, so only the mutex keeps
    /// increments from being lost.
    #[inline]
    fn bump(self, word: &AtomicU64) {
        let v = word.load(Ordering::Relaxed);
        word.store(
            match self {
                Counter::U64 => v + 1,
                Counter::F64 => (f64::from_bits(v) + 1.0).to_bits(),
            },
            Ordering::Relaxed,
        );
    }

    /// The count the word holds, or `None` if it is not a whole number.
    fn count(self, word: u64) -> Option<u64> {
        match self {
            Counter::U64 => Some(word),
            Counter::F64 => {
                let x = f64::from_bits(word);
                (x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53)).then_some(x as u64)
            }
        }
    }
}

/// `increments` times: lock, counter += 1 (see [`Counter::bump`]), unlock. False if a
/// pthread call failed.
fn increment_under_mutex(page: &Contended, counter: Counter, increments: u32) -> bool {
    let mut bad = 0;
    for _ in 0..increments {
        bad |= page.mutex.lock();
        counter.bump(&page.counter);
        bad |= page.mutex.unlock();
    }
    bad == 0
}

/// Two processes (this one and a raw fork child, placed as `placement` says) each do `warmup`
/// untimed and then `n` timed increments of a shared counter (an integer or a double) under a
/// process-shared pthread mutex; the final count must be exact. Operations per second, over
/// both processes.
pub fn pthread_contended(counter: Counter, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _pin = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let map = SharedMap::<Contended>::new().map_err(|e| format!("mmap: {e}"))?;
    map.mutex.init_shared()?;
    let page: &Contended = &map;
    let pid = fork_child(Some(placement.child), || {
        increment_under_mutex(page, counter, warmup) && page.gate.arrive() && {
            let ok = increment_under_mutex(page, counter, n);
            page.gate.finish();
            ok
        }
    })?;
    let run = || -> Result<f64, String> {
        if !increment_under_mutex(page, counter, warmup) {
            return Err("pthread mutex failed".into());
        }
        page.gate.wait_ready(1, || child_running(pid))?;
        let t = Instant::now();
        page.gate.open();
        let ok = increment_under_mutex(page, counter, n);
        page.gate.wait_done(1, || child_running(pid))?;
        let elapsed = t.elapsed();
        if !ok {
            return Err("pthread mutex failed".into());
        }
        Ok(elapsed.as_secs_f64())
    };
    let secs = match run() {
        Ok(s) => s,
        Err(e) => {
            page.gate.abort();
            kill_and_reap(pid);
            return Err(e);
        }
    };
    reap(pid)?;
    let expected = 2 * u64::from(warmup + n);
    match counter.count(page.counter.load(Ordering::Relaxed)) {
        Some(c) if c == expected => Ok(2.0 * f64::from(n) / secs),
        c => Err(format!("count {c:?}, expected {expected}: mutual exclusion failed")),
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: a valid aligned word in a shared mapping; no timeout. Any result (woken,
    // EAGAIN, EINTR) sends the caller back to look at the word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, std::ptr::null::<u8>()) };
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE uses the address only as a key.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}

/// How a raw waiter waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Sleeps on the futex at once.
    Sleep,
    /// Spins up to [`SPINS`] pauses, then sleeps; but does not spin at all when the process
    /// it waits for last ran on this CPU (it cannot answer while we spin; `sched_getcpu`,
    /// a load from the rseq area with this glibc).
    SpinUnlessSameCpu,
}

impl WaitPolicy {
    /// For the table.
    pub fn describe(self) -> String {
        match self {
            WaitPolicy::Sleep => "sleeps at once".into(),
            WaitPolicy::SpinUnlessSameCpu => {
                format!("spin ≤ {SPINS} pauses (none if the other process last ran on this CPU), then sleep")
            }
        }
    }

    /// How many pauses to spin, waiting for a process last seen on CPU `other` (0: unknown).
    #[inline]
    fn spins(self, other: u32) -> u32 {
        match self {
            WaitPolicy::Sleep => 0,
            WaitPolicy::SpinUnlessSameCpu if other != 0 && other == this_cpu() => 0,
            WaitPolicy::SpinUnlessSameCpu => SPINS,
        }
    }
}

/// The CPU this process runs on, plus one (0: unknown).
#[inline]
fn this_cpu() -> u32 {
    // SAFETY: no arguments; -1 on failure, which becomes 0.
    (unsafe { libc::sched_getcpu() } + 1).max(0) as u32
}

/// A one-way signal word: 0 nothing, 1 signalled, 2 the receiver sleeps on it.
const EMPTY: u32 = 0;
const SIGNALLED: u32 = 1;
const SLEEPING: u32 = 2;

/// A signal word, and the CPU its last sender ran on (plus one).
#[repr(C)]
#[derive(Default)]
struct Signal {
    word: AtomicU32,
    sender_cpu: AtomicU32,
}

impl Signal {
    /// Signals the receiver; a system call only if it sleeps.
    #[inline]
    fn send(&self) {
        self.sender_cpu.store(this_cpu(), Ordering::Relaxed);
        if self.word.swap(SIGNALLED, Ordering::SeqCst) == SLEEPING {
            futex_wake(&self.word, 1);
        }
    }

    /// Waits for a signal and consumes it.
    #[inline]
    fn receive(&self, policy: WaitPolicy) {
        let word = &self.word;
        for _ in 0..policy.spins(self.sender_cpu.load(Ordering::Relaxed)) {
            if word.load(Ordering::Acquire) == SIGNALLED {
                word.store(EMPTY, Ordering::Relaxed);
                return;
            }
            std::hint::spin_loop();
        }
        loop {
            match word.compare_exchange(EMPTY, SLEEPING, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) | Err(SLEEPING) => futex_wait(word, SLEEPING),
                Err(_) => {
                    // Signalled: the sender cannot signal again before we answer.
                    word.store(EMPTY, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Two signal words, one per direction, on lines of their own.
#[repr(C)]
#[derive(Default)]
struct PingPong {
    to_child: Line<Signal>,
    to_parent: Line<Signal>,
}

// SAFETY: atomics only; zero is "nothing signalled", sender unknown.
unsafe impl Zeroable for PingPong {}

/// Round trips between this process and a raw fork child through two futex words in a
/// `MAP_SHARED` page, waiting as `policy` says: µs per round trip.
pub fn futex_pingpong(policy: WaitPolicy, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    futex_pingpong_placed(policy, warmup, n, Some(placement))
}

/// [`futex_pingpong`], with both processes left where the scheduler puts them if
/// `placement` is `None`.
pub fn futex_pingpong_placed(
    policy: WaitPolicy,
    warmup: u32,
    n: u32,
    placement: Option<Placement>,
) -> Result<f64, String> {
    let _pin = PinGuard::pin(placement.map(|p| p.parent)).map_err(|e| format!("pin: {e}"))?;
    let map = SharedMap::<PingPong>::new().map_err(|e| format!("mmap: {e}"))?;
    let page: &PingPong = &map;
    let total = warmup + n;
    let pid = fork_child(placement.map(|p| p.child), || {
        for _ in 0..total {
            page.to_child.receive(policy);
            page.to_parent.send();
        }
        true
    })?;
    let exchange = || {
        page.to_child.send();
        page.to_parent.receive(policy);
    };
    (0..warmup).for_each(|_| exchange());
    let t = Instant::now();
    (0..n).for_each(|_| exchange());
    let elapsed = t.elapsed();
    reap(pid)?;
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(n))
}

/// A barrier for two: the arrival count, and a generation number that the last arrival bumps
/// and the other waits on (spinning, then sleeping on it); and the CPU each party (0 the
/// parent, 1 the child) last arrived on, plus one.
#[repr(C)]
#[derive(Default)]
struct RawBarrier {
    count: Line<AtomicU32>,
    generation: Line<AtomicU32>,
    sleepers: Line<AtomicU32>,
    cpus: [Line<AtomicU32>; 2],
}

// SAFETY: atomics only; zero is an empty barrier, CPUs unknown.
unsafe impl Zeroable for RawBarrier {}

impl RawBarrier {
    #[inline]
    fn wait(&self, party: usize, policy: WaitPolicy) {
        self.cpus[party].store(this_cpu(), Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) == 1 {
            // Last of two: reset for the next pass, then release the other.
            self.count.store(0, Ordering::Relaxed);
            self.generation.store(generation.wrapping_add(1), Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                futex_wake(&self.generation, i32::MAX);
            }
            return;
        }
        let passed = || self.generation.load(Ordering::SeqCst) != generation;
        for _ in 0..policy.spins(self.cpus[1 - party].load(Ordering::Relaxed)) {
            if passed() {
                return;
            }
            std::hint::spin_loop();
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !passed() {
            futex_wait(&self.generation, generation);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Passes of a two-party barrier between this process and a raw fork child, waiting as
/// `policy` says: passes per second (each process waits once per pass).
pub fn futex_barrier(policy: WaitPolicy, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _pin = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let map = SharedMap::<RawBarrier>::new().map_err(|e| format!("mmap: {e}"))?;
    let page: &RawBarrier = &map;
    let total = warmup + n;
    let pid = fork_child(Some(placement.child), || {
        (0..total).for_each(|_| page.wait(1, policy));
        true
    })?;
    (0..warmup).for_each(|_| page.wait(0, policy));
    let t = Instant::now();
    (0..n).for_each(|_| page.wait(0, policy));
    let elapsed = t.elapsed();
    reap(pid)?;
    Ok(f64::from(n) / elapsed.as_secs_f64())
}
