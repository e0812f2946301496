//! Locks and the other synchronization types: CONFORMANCE.md sections 8 to 12 (LOCK-*, SEM-*,
//! COND-*, EV-*, BAR-*). A case with a child runs under every start method; a case in one
//! process runs once. Where Rust needs another shape than Python, the case's doc comment says
//! how it was translated.
//!
//! CPython counts with `Value`s and lists shared through a manager; here a [`Semaphore`]'s
//! value is the shared counter (`release()` is `+= 1`, `get_value()` reads it), which works
//! the same for threads and processes.
//!
//! The manager flavour (LOCK-11, SEM-06, EV-05, BAR-13 test manager proxies in CPython) is
//! ported with the plain objects, since there is no manager yet: what is left of each case is
//! "the object works the same in a child and in the parent".
mod common;
use common::{join_ok, start, timed};
use multiprocess::synchronize::SEM_VALUE_MAX;
use multiprocess::*;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// CPython's `TIMEOUT1`, `TIMEOUT2`, `DELTA` and `CLOCK_RES`.
const TIMEOUT1: Duration = Duration::from_millis(100);
const TIMEOUT2: Duration = Duration::from_millis(100);
const DELTA: Duration = Duration::from_millis(100);
const CLOCK_RES: Duration = Duration::from_millis(100);
/// The probes' timeout: 0.2 s, which must take ≥ 0.19 s and ≤ 1 s.
const T02: Duration = Duration::from_millis(200);
/// How long a test waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(30);
/// `_TestBarrier.N`: the parties, 4 helper processes and the parent.
const N: u32 = 5;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Polls `f` until it is true, for [`LONG`] at most.
fn eventually(f: impl FnMut() -> bool) -> bool {
    common::eventually_within(LONG, f)
}

/// How the calling thread is named in a lock's repr when it holds it: CPython's
/// `MainProcess`, with `|<thread name>` for a thread other than the main one (the test
/// harness runs each test on a thread named after the test).
fn me_in_repr() -> String {
    // SAFETY: gettid cannot fail.
    let main = unsafe { libc::gettid() } == std::process::id() as i32;
    match std::thread::current().name() {
        Some(name) if !main => format!("MainProcess|{name}"),
        _ => "MainProcess".to_string(),
    }
}

/// Runs `f(args)` in `N - 1` children started under `m` and in this process, as CPython's
/// `_TestBarrier.run_threads` does; asserts that every party succeeded.
fn run_parties<F, A>(m: StartMethod, f: F, args: A)
where
    F: Target<A, Output = Result<()>>,
    A: Args + Clone,
{
    let mut children: Vec<Process> = (1..N).map(|_| start(m, f, args.clone())).collect();
    let here = f.call(args);
    for p in &mut children {
        join_ok(p);
    }
    here.unwrap();
}

/// A party's wait on a barrier, failing the party on anything but `BrokenBarrier`.
fn broken_or_index(r: Result<u32>) -> Result<Option<u32>> {
    match r {
        Ok(i) => Ok(Some(i)),
        Err(Error::BrokenBarrier) => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// LOCK: Lock and RLock.

/// LOCK-01: `acquire()`, `acquire(False)`, `release()`, `release()` give True, False, None
/// and `ValueError('semaphore or lock released too many times')`: here `Ok(())`,
/// `Ok(false)`, `Ok(())` and `Err(ReleasedTooManyTimes)`.
#[test]
fn lock_01_acquire_release_twice() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap();
    assert!(!lock.try_acquire().unwrap());
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::ReleasedTooManyTimes)));
    assert_eq!(Error::ReleasedTooManyTimes.to_string(), "semaphore or lock released too many times");
    // Still usable afterwards.
    assert!(lock.try_acquire().unwrap());
    lock.release().unwrap();
}

/// LOCK-02: `locked()` is true while held, false after release; an RLock stays locked until
/// its last release.
#[test]
fn lock_02_locked() {
    let lock = Lock::new().unwrap();
    assert!(!lock.locked());
    lock.acquire().unwrap();
    assert!(lock.locked());
    lock.release().unwrap();
    assert!(!lock.locked());

    let rlock = RLock::new().unwrap();
    assert!(!rlock.locked());
    rlock.acquire().unwrap();
    rlock.acquire().unwrap();
    assert!(rlock.locked());
    rlock.release().unwrap();
    assert!(rlock.locked(), "one level is still held");
    rlock.release().unwrap();
    assert!(!rlock.locked());
}

/// LOCK-03: an RLock acquired three times is released three times; a fourth release is
/// `AssertionError('attempt to release recursive lock not owned by thread')`: `NotOwner`.
#[test]
fn lock_03_rlock_three_levels() {
    let lock = RLock::new().unwrap();
    for level in 1..=3 {
        lock.acquire().unwrap();
        assert_eq!(lock.count(), level);
    }
    for level in (0..3).rev() {
        lock.release().unwrap();
        assert_eq!(lock.count(), level);
    }
    assert!(matches!(lock.release(), Err(Error::NotOwner)));
    assert!(!lock.locked());
}

/// LOCK-04: `with Lock() as x` / `with RLock() as x` gives `x is True`: here `lock()` gives
/// `Ok(guard)`, the lock is held while the guard lives and free after.
#[test]
fn lock_04_context_manager() {
    let lock = Lock::new().unwrap();
    {
        let guard = lock.lock();
        assert!(guard.is_ok());
        assert!(lock.locked());
        assert!(!lock.try_acquire().unwrap());
    }
    assert!(!lock.locked());

    let rlock = RLock::new().unwrap();
    {
        let outer = rlock.lock();
        assert!(outer.is_ok());
        {
            let inner = rlock.lock();
            assert!(inner.is_ok());
            assert_eq!(rlock.count(), 2);
        }
        assert_eq!(rlock.count(), 1);
    }
    assert!(!rlock.locked());
}

/// Takes `lock`, reports `locked()` and then holds it until `go` is set.
fn hold_lock_report_locked(lock: Lock, report: Connection, go: Event) -> Result<()> {
    lock.acquire()?;
    report.send(&lock.locked())?;
    assert!(go.wait(Some(LONG)));
    lock.release()
}

fn hold_rlock_report_locked(lock: RLock, report: Connection, go: Event) -> Result<()> {
    lock.acquire()?;
    report.send(&lock.locked())?;
    assert!(go.wait(Some(LONG)));
    lock.release()
}

start_methods! {
    /// LOCK-05: a child acquires the Lock / RLock and reports `locked()` (through a pipe,
    /// not a `Value`): True; the parent sees it locked too, and free once the child let go.
    fn lock_05_locked_in_two_processes(m) {
        let lock = Lock::new().unwrap();
        let go = Event::new().unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, hold_lock_report_locked, (lock.clone(), w, go.clone()));
        assert!(r.recv::<bool>().unwrap());
        assert!(lock.locked());
        assert!(!lock.try_acquire().unwrap());
        go.set();
        join_ok(&mut p);
        assert!(!lock.locked());

        let rlock = RLock::new().unwrap();
        let go = Event::new().unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, hold_rlock_report_locked, (rlock.clone(), w, go.clone()));
        assert!(r.recv::<bool>().unwrap());
        assert!(rlock.locked());
        assert!(!rlock.try_acquire().unwrap());
        go.set();
        join_ok(&mut p);
        assert!(!rlock.locked());
    }
}

/// LOCK-06: `acquire(timeout=0.2)` on a Lock this process holds returns False after 0.2 s
/// (a Lock is not recursive: the holder itself waits).
#[test]
fn lock_06_acquire_timeout_on_held_lock() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap();
    let (taken, elapsed) = timed(|| lock.acquire_timeout(T02));
    assert!(!taken.unwrap());
    common::assert_took(elapsed, T02);
    // `acquire(True, 0.2)` is the same call; from another thread it is the same too.
    let other = lock.clone();
    let (taken, elapsed) = std::thread::spawn(move || timed(|| other.acquire_timeout(T02))).join().unwrap();
    assert!(!taken.unwrap());
    common::assert_took(elapsed, T02);
    lock.release().unwrap();
}

start_methods! {
    /// LOCK-06 with the holder in another process: the Lock and the RLock, each held by a
    /// child, time out after 0.2 s in the parent.
    fn lock_06_acquire_timeout_held_by_child(m) {
        let lock = Lock::new().unwrap();
        let go = Event::new().unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, hold_lock_report_locked, (lock.clone(), w, go.clone()));
        assert!(r.recv::<bool>().unwrap());
        let (taken, elapsed) = timed(|| lock.acquire_timeout(T02));
        assert!(!taken.unwrap());
        common::assert_took(elapsed, T02);
        go.set();
        join_ok(&mut p);

        let rlock = RLock::new().unwrap();
        let go = Event::new().unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, hold_rlock_report_locked, (rlock.clone(), w, go.clone()));
        assert!(r.recv::<bool>().unwrap());
        let (taken, elapsed) = timed(|| rlock.acquire_timeout(T02));
        assert!(!taken.unwrap());
        common::assert_took(elapsed, T02);
        go.set();
        join_ok(&mut p);
    }
}

fn release_lock(lock: Lock) -> Result<()> {
    lock.release()
}

start_methods! {
    /// LOCK-07: a Lock the parent acquired is released by another process (a Lock has no
    /// owner); the parent's next `acquire(False)` is True.
    fn lock_07_other_process_releases(m) {
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap();
        let mut p = start(m, release_lock, (lock.clone(),));
        join_ok(&mut p);
        assert!(!lock.locked());
        assert!(lock.try_acquire().unwrap());
        lock.release().unwrap();
    }
}

/// Releases an RLock it does not hold; succeeds only if that is `NotOwner`.
fn release_foreign_rlock(lock: RLock) -> Result<()> {
    match lock.release() {
        Err(Error::NotOwner) => Ok(()),
        other => panic!("release by another process gave {other:?}, not NotOwner"),
    }
}

start_methods! {
    /// LOCK-08: an RLock held by the parent, released by another thread or another process:
    /// `AssertionError('attempt to release recursive lock not owned by thread')`, here
    /// `NotOwner`; the parent still holds it.
    fn lock_08_rlock_released_by_another(m) {
        let lock = RLock::new().unwrap();
        lock.acquire().unwrap();
        let other = lock.clone();
        let by_thread = std::thread::spawn(move || other.release()).join().unwrap();
        assert!(matches!(by_thread, Err(Error::NotOwner)), "{by_thread:?}");
        let mut p = start(m, release_foreign_rlock, (lock.clone(),));
        join_ok(&mut p);
        assert!(lock.locked());
        assert_eq!(lock.count(), 1);
        lock.release().unwrap();
        assert!(!lock.locked());
    }
}

/// Holds the lock and sends its repr as seen from inside; holds it until `go`.
fn lock_repr_inside(lock: Lock, report: Connection, go: Event) -> Result<()> {
    lock.acquire()?;
    report.send(&format!("{lock:?}"))?;
    assert!(go.wait(Some(LONG)));
    lock.release()
}

fn rlock_repr_inside(lock: RLock, report: Connection, go: Event) -> Result<()> {
    lock.acquire()?;
    report.send(&format!("{lock:?}"))?;
    assert!(go.wait(Some(LONG)));
    lock.release()
}

start_methods! {
    /// LOCK-09: a Lock's repr: `<Lock(owner=None)>`; held here `<Lock(owner=MainProcess)>`
    /// (`MainProcess|<thread>` on a thread other than the main one, and the test harness
    /// runs tests on such threads); seen inside thread T1 that holds it
    /// `<Lock(owner=MainProcess|T1)>`; held by another thread `<Lock(owner=SomeOtherThread)>`;
    /// seen inside process P1 that holds it `<Lock(owner=P1)>`; held by another process
    /// `<Lock(owner=SomeOtherProcess)>`.
    fn lock_09_repr(m) {
        let lock = Lock::new().unwrap();
        assert_eq!(format!("{lock:?}"), "<Lock(owner=None)>");
        lock.acquire().unwrap();
        assert_eq!(format!("{lock:?}"), format!("<Lock(owner={})>", me_in_repr()));
        lock.release().unwrap();

        let (r, w) = pipe().unwrap();
        let go = Event::new().unwrap();
        let t1 = {
            let (lock, go) = (lock.clone(), go.clone());
            std::thread::Builder::new().name("T1".into()).spawn(move || lock_repr_inside(lock, w, go)).unwrap()
        };
        assert_eq!(r.recv::<String>().unwrap(), "<Lock(owner=MainProcess|T1)>");
        assert_eq!(format!("{lock:?}"), "<Lock(owner=SomeOtherThread)>");
        go.set();
        t1.join().unwrap().unwrap();
        assert_eq!(format!("{lock:?}"), "<Lock(owner=None)>");

        let (r, w) = pipe().unwrap();
        let go = Event::new().unwrap();
        let mut p = get_context(m).process(lock_repr_inside, (lock.clone(), w, go.clone())).with_name("P1");
        p.start().unwrap();
        assert_eq!(r.recv::<String>().unwrap(), "<Lock(owner=P1)>");
        assert_eq!(format!("{lock:?}"), "<Lock(owner=SomeOtherProcess)>");
        go.set();
        join_ok(&mut p);
        assert_eq!(format!("{lock:?}"), "<Lock(owner=None)>");
    }

    /// LOCK-10: an RLock's repr: `<RLock(None, 0)>`, `<RLock(MainProcess, 3)>`,
    /// `<RLock(MainProcess|T1, 1)>`, `<RLock(SomeOtherThread, 1)>`, `<RLock(P1, 1)>`,
    /// `<RLock(SomeOtherProcess, 1)>` (the count CPython calls "nonzero" is exact here).
    fn lock_10_rlock_repr(m) {
        let lock = RLock::new().unwrap();
        assert_eq!(format!("{lock:?}"), "<RLock(None, 0)>");
        for _ in 0..3 {
            lock.acquire().unwrap();
        }
        assert_eq!(format!("{lock:?}"), format!("<RLock({}, 3)>", me_in_repr()));
        for _ in 0..3 {
            lock.release().unwrap();
        }
        assert_eq!(format!("{lock:?}"), "<RLock(None, 0)>");

        let (r, w) = pipe().unwrap();
        let go = Event::new().unwrap();
        let t1 = {
            let (lock, go) = (lock.clone(), go.clone());
            std::thread::Builder::new().name("T1".into()).spawn(move || rlock_repr_inside(lock, w, go)).unwrap()
        };
        assert_eq!(r.recv::<String>().unwrap(), "<RLock(MainProcess|T1, 1)>");
        assert_eq!(format!("{lock:?}"), "<RLock(SomeOtherThread, 1)>");
        go.set();
        t1.join().unwrap().unwrap();

        let (r, w) = pipe().unwrap();
        let go = Event::new().unwrap();
        let mut p = get_context(m).process(rlock_repr_inside, (lock.clone(), w, go.clone())).with_name("P1");
        p.start().unwrap();
        assert_eq!(r.recv::<String>().unwrap(), "<RLock(P1, 1)>");
        assert_eq!(format!("{lock:?}"), "<RLock(SomeOtherProcess, 1)>");
        go.set();
        join_ok(&mut p);
        assert_eq!(format!("{lock:?}"), "<RLock(None, 0)>");
    }
}

// ---------------------------------------------------------------------------------------------
// SEM: Semaphore and BoundedSemaphore.

/// SEM-01: `Semaphore(2)`: acquire, acquire, `acquire(False)` (False, the value stays 0),
/// then release ×4: values 2, 1, 0, 0, then 1, 2, 3, 4 (unbounded).
#[test]
fn sem_01_semaphore() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire().unwrap();
    assert_eq!(sem.get_value(), 1);
    sem.acquire().unwrap();
    assert_eq!(sem.get_value(), 0);
    assert!(!sem.try_acquire());
    assert_eq!(sem.get_value(), 0);
    for value in 1..=4 {
        sem.release().unwrap();
        assert_eq!(sem.get_value(), value);
    }
}

/// SEM-02: `BoundedSemaphore(2)`, the same sequence up to 2; one release beyond is
/// `ValueError('semaphore or lock released too many times')` (`ReleasedTooManyTimes`) and
/// the value stays 2.
#[test]
fn sem_02_bounded_semaphore() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire().unwrap();
    assert_eq!(sem.get_value(), 1);
    sem.acquire().unwrap();
    assert_eq!(sem.get_value(), 0);
    assert!(!sem.try_acquire());
    assert_eq!(sem.get_value(), 0);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(sem.release(), Err(Error::ReleasedTooManyTimes)));
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(sem.release(), Err(Error::ReleasedTooManyTimes)));
    assert_eq!(sem.get_value(), 2);
}

/// SEM-03: `Semaphore(0)`: `acquire(False)`, `acquire(False, None)`, `acquire(False,
/// TIMEOUT1)` are False at once (a non-blocking acquire ignores its timeout). Rust has one
/// non-blocking form, `try_acquire`; a zero timeout is the other way to say it.
#[test]
fn sem_03_non_blocking() {
    let sem = Semaphore::new(0).unwrap();
    let (taken, elapsed) = timed(|| sem.try_acquire());
    assert!(!taken);
    common::assert_prompt(elapsed);
    let (taken, elapsed) = timed(|| sem.acquire_timeout(Duration::ZERO));
    assert!(!taken);
    common::assert_prompt(elapsed);
    assert_eq!(sem.get_value(), 0);
    let bounded = BoundedSemaphore::new(0).unwrap();
    let (taken, elapsed) = timed(|| bounded.try_acquire());
    assert!(!taken);
    common::assert_prompt(elapsed);
    let (taken, elapsed) = timed(|| bounded.acquire_timeout(Duration::ZERO));
    assert!(!taken);
    common::assert_prompt(elapsed);
}

/// SEM-04: `acquire(True, TIMEOUT2)` and `acquire(timeout=TIMEOUT3)` on a semaphore at 0
/// return False after the timeout (0.2 s in the probe).
#[test]
fn sem_04_acquire_timeout() {
    let sem = Semaphore::new(0).unwrap();
    for t in [TIMEOUT2, T02] {
        let (taken, elapsed) = timed(|| sem.acquire_timeout(t));
        assert!(!taken);
        common::assert_took(elapsed, t);
    }
    let bounded = BoundedSemaphore::new(1).unwrap();
    bounded.acquire().unwrap();
    let (taken, elapsed) = timed(|| bounded.acquire_timeout(T02));
    assert!(!taken);
    common::assert_took(elapsed, T02);
}

/// SEM-05: reprs `<Semaphore(value=3)>`, `<BoundedSemaphore(value=2, maxvalue=2)>`. A
/// negative initial value cannot be written (`u32`); a value above `SEM_VALUE_MAX`, the other
/// out-of-range input, is `InvalidArgument` (the port's `ValueError`).
#[test]
fn sem_05_repr_and_bad_value() {
    let sem = Semaphore::new(3).unwrap();
    assert_eq!(format!("{sem:?}"), "<Semaphore(value=3)>");
    let bounded = BoundedSemaphore::new(2).unwrap();
    assert_eq!(format!("{bounded:?}"), "<BoundedSemaphore(value=2, maxvalue=2)>");
    bounded.acquire().unwrap();
    assert_eq!(format!("{bounded:?}"), "<BoundedSemaphore(value=1, maxvalue=2)>");
    assert!(matches!(Semaphore::new(SEM_VALUE_MAX + 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(BoundedSemaphore::new(u32::MAX), Err(Error::InvalidArgument(_))));
    let max = Semaphore::new(SEM_VALUE_MAX).unwrap();
    assert!(matches!(max.release(), Err(Error::ReleasedTooManyTimes)));
    assert_eq!(max.get_value(), SEM_VALUE_MAX);
}

fn acquire_semaphore(sem: Semaphore) -> Result<()> {
    sem.acquire()
}

fn acquire_bounded(sem: BoundedSemaphore) -> Result<()> {
    sem.acquire()
}

start_methods! {
    /// SEM-06: a (Bounded)Semaphore acquired in a child and released in the parent: the
    /// child exits 0, the release succeeds (and a bounded one's next release is too many).
    fn sem_06_acquired_in_child_released_in_parent(m) {
        let sem = Semaphore::new(1).unwrap();
        let mut p = start(m, acquire_semaphore, (sem.clone(),));
        join_ok(&mut p);
        assert_eq!(sem.get_value(), 0);
        sem.release().unwrap();
        assert_eq!(sem.get_value(), 1);

        let bounded = BoundedSemaphore::new(1).unwrap();
        let mut p = start(m, acquire_bounded, (bounded.clone(),));
        join_ok(&mut p);
        assert_eq!(bounded.get_value(), 0);
        bounded.release().unwrap();
        assert_eq!(bounded.get_value(), 1);
        assert!(matches!(bounded.release(), Err(Error::ReleasedTooManyTimes)));
    }
}

// ---------------------------------------------------------------------------------------------
// COND: Condition, with waiting processes and threads together.

/// CPython's `_TestCondition.f`: take the lock, say "sleeping", wait, say "woken" (and, beyond
/// CPython, "notified" if the wait said so), let go.
fn cond_waiter(
    cond: Condition,
    sleeping: Semaphore,
    woken: Semaphore,
    notified: Semaphore,
    timeout: Option<Duration>,
) -> Result<()> {
    cond.acquire()?;
    sleeping.release()?;
    let was_notified = cond.wait(timeout)?;
    woken.release()?;
    if was_notified {
        notified.release()?;
    }
    cond.release()
}

/// The counters of a Condition case.
#[derive(Clone)]
struct CondCounters {
    cond: Condition,
    sleeping: Semaphore,
    woken: Semaphore,
    notified: Semaphore,
}

impl CondCounters {
    fn new() -> CondCounters {
        CondCounters {
            cond: Condition::new().unwrap(),
            sleeping: Semaphore::new(0).unwrap(),
            woken: Semaphore::new(0).unwrap(),
            notified: Semaphore::new(0).unwrap(),
        }
    }

    /// Starts a waiting process under `m` and a waiting thread, as CPython does.
    fn start_pair(&self, m: StartMethod, timeout: Option<Duration>) -> (Process, std::thread::JoinHandle<Result<()>>) {
        let c = self.clone();
        let p = start(m, cond_waiter, (c.cond, c.sleeping, c.woken, c.notified, timeout));
        let c = self.clone();
        let t = std::thread::spawn(move || cond_waiter(c.cond, c.sleeping, c.woken, c.notified, timeout));
        (p, t)
    }

    /// Waits until `n` waiters said "sleeping" (each is then inside `wait` once we can take
    /// the lock).
    fn wait_sleeping(&self, n: u32) {
        for _ in 0..n {
            assert!(
                self.sleeping.acquire_timeout(LONG),
                "a waiter did not start: {:?}, woken {}, children {:?}",
                self.cond,
                self.woken.get_value(),
                common::children_of(std::process::id())
            );
        }
    }

    fn notify(&self, n: u32) {
        let _held = self.cond.lock().unwrap();
        self.cond.notify(n).unwrap();
    }

    fn notify_all(&self) {
        let _held = self.cond.lock().unwrap();
        self.cond.notify_all().unwrap();
    }

    /// `woken` reaches `n` and stays there for DELTA.
    fn assert_woken(&self, n: u32) {
        assert!(eventually(|| self.woken.get_value() >= n), "woken {} of {n}", self.woken.get_value());
        std::thread::sleep(DELTA);
        assert_eq!(self.woken.get_value(), n);
    }
}

/// CPython's `check_invariant`: no sleeper is left registered and no wake-up is left over
/// (a left-over one would make the next `wait(0)` return True).
fn check_invariant(cond: &Condition) {
    {
        let _held = cond.lock().unwrap();
        assert!(!cond.wait(Some(Duration::ZERO)).unwrap(), "a wake-up was left over");
    }
    let repr = format!("{cond:?}");
    assert!(repr.ends_with(", 0)>"), "waiters left registered: {repr}");
}

start_methods! {
    /// COND-01: a process and a thread wait; each `notify()` wakes exactly one: woken goes
    /// 0, 1, 2; afterwards no sleeper or wake-up is left.
    fn cond_01_notify(m) {
        let c = CondCounters::new();
        let (mut p, t) = c.start_pair(m, None);
        c.wait_sleeping(2);
        // Both are inside wait once the lock is free.
        drop(c.cond.lock().unwrap());
        std::thread::sleep(DELTA);
        assert_eq!(c.woken.get_value(), 0);
        c.notify(1);
        c.assert_woken(1);
        c.notify(1);
        c.assert_woken(2);
        assert_eq!(c.notified.get_value(), 2, "both waits said they were notified");
        join_ok(&mut p);
        t.join().unwrap().unwrap();
        check_invariant(&c.cond);
        assert_eq!(format!("{:?}", c.cond), "<Condition(<RLock(None, 0)>, 0)>");
    }

    /// COND-02: 3 processes and 3 threads `wait(TIMEOUT1)`: all time out (none notified);
    /// then 6 new waiters without a timeout: none wakes by itself within DELTA, and
    /// `notify_all()` wakes all 6.
    fn cond_02_notify_all(m) {
        let c = CondCounters::new();
        let mut waiters: Vec<_> = (0..3).map(|_| c.start_pair(m, Some(TIMEOUT1))).collect();
        c.wait_sleeping(6);
        for _ in 0..6 {
            assert!(c.woken.acquire_timeout(LONG), "a waiter with a timeout did not return");
        }
        assert_eq!(c.woken.get_value(), 0);
        assert_eq!(c.notified.get_value(), 0, "a wait that timed out said it was notified");
        for (p, _) in &mut waiters {
            join_ok(p);
        }
        for (_, t) in waiters.drain(..) {
            t.join().unwrap().unwrap();
        }
        check_invariant(&c.cond);

        let mut waiters: Vec<_> = (0..3).map(|_| c.start_pair(m, None)).collect();
        c.wait_sleeping(6);
        drop(c.cond.lock().unwrap());
        std::thread::sleep(DELTA);
        assert_eq!(c.woken.get_value(), 0);
        c.notify_all();
        c.assert_woken(6);
        assert_eq!(c.notified.get_value(), 6);
        for (p, _) in &mut waiters {
            join_ok(p);
        }
        for (_, t) in waiters {
            t.join().unwrap().unwrap();
        }
        check_invariant(&c.cond);
    }

    /// COND-03: 6 waiters (3 processes, 3 threads); `notify(2)` wakes 2, `notify(4)` the 4
    /// others, `notify(3)` with nobody waiting does nothing.
    fn cond_03_notify_n(m) {
        let c = CondCounters::new();
        let waiters: Vec<_> = (0..3).map(|_| c.start_pair(m, None)).collect();
        c.wait_sleeping(6);
        drop(c.cond.lock().unwrap());
        std::thread::sleep(DELTA);
        assert_eq!(c.woken.get_value(), 0);
        c.notify(2);
        c.assert_woken(2);
        c.notify(4);
        c.assert_woken(6);
        c.notify(3);
        c.assert_woken(6);
        assert_eq!(c.notified.get_value(), 6);
        for (mut p, t) in waiters {
            join_ok(&mut p);
            t.join().unwrap().unwrap();
        }
        check_invariant(&c.cond);
    }
}

/// COND-04: `wait(TIMEOUT1)` holding the lock, with no notifier: False after TIMEOUT1, the
/// lock held again. With the default RLock and with a Lock.
#[test]
fn cond_04_wait_timeout() {
    for cond in [Condition::new().unwrap(), Condition::with_lock(Lock::new().unwrap()).unwrap()] {
        let _held = cond.lock().unwrap();
        let (notified, elapsed) = timed(|| cond.wait(Some(TIMEOUT1)));
        assert!(!notified.unwrap());
        common::assert_took(elapsed, TIMEOUT1);
        let (notified, elapsed) = timed(|| cond.wait(Some(T02)));
        assert!(!notified.unwrap());
        common::assert_took(elapsed, T02);
        match cond.get_lock() {
            ConditionLock::Lock(l) => assert!(l.locked()),
            ConditionLock::RLock(l) => assert_eq!(l.count(), 1),
        }
    }
}

/// The shared `state` of COND-05/06, a semaphore's value: `value - 1` is CPython's
/// `state.value` (which starts at -1), `release()` is `state.value += 1`.
fn state_of(sem: &Semaphore) -> i64 {
    i64::from(sem.get_value()) - 1
}

/// COND-05's child: state = 0, notify, `wait_for(state == 4)`: exits 1 unless that held.
fn cond_05_child(cond: Condition, state: Semaphore) -> Result<()> {
    let _held = cond.lock()?;
    state.release()?; // -1 -> 0
    cond.notify(1)?;
    let result = cond.wait_for(|| state_of(&state) == 4, None)?;
    assert!(result && state_of(&state) == 4, "wait_for gave {result} with state {}", state_of(&state));
    Ok(())
}

/// COND-06's child: `wait_for(state == 4, timeout=0.1)`, which is never true; sends the
/// result and the elapsed time.
fn cond_06_child(cond: Condition, state: Semaphore, started: Semaphore, report: Connection) -> Result<()> {
    started.release()?;
    let _held = cond.lock()?;
    let t = Instant::now();
    let result = cond.wait_for(|| state_of(&state) == 4, Some(Duration::from_millis(100)))?;
    report.send(&(result, t.elapsed()))
}

start_methods! {
    /// COND-05: the parent's `wait_for(state == 0)` is True with state 0; after four
    /// increments, each notified, the child's `wait_for(state == 4)` was True (exit 0).
    fn cond_05_wait_for(m) {
        let cond = Condition::new().unwrap();
        let state = Semaphore::new(0).unwrap(); // state = -1
        let mut p = start(m, cond_05_child, (cond.clone(), state.clone()));
        {
            let _held = cond.lock().unwrap();
            assert!(cond.wait_for(|| state_of(&state) == 0, None).unwrap());
            assert_eq!(state_of(&state), 0);
        }
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(10));
            let _held = cond.lock().unwrap();
            state.release().unwrap();
            cond.notify(1).unwrap();
        }
        join_ok(&mut p);
        assert_eq!(state_of(&state), 4);
    }

    /// COND-06: `wait_for(never, timeout=0.1)` while the parent notifies three times:
    /// falsy, after at least 0.1 - CLOCK_RES (and, asserted here, not before 0.1 - 10 ms).
    fn cond_06_wait_for_timeout(m) {
        let cond = Condition::new().unwrap();
        let state = Semaphore::new(1).unwrap(); // state = 0
        let started = Semaphore::new(0).unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, cond_06_child, (cond.clone(), state.clone(), started.clone(), w));
        assert!(started.acquire_timeout(LONG));
        // Only three increments, so state == 4 is never reached.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(10));
            let _held = cond.lock().unwrap();
            state.release().unwrap();
            cond.notify(1).unwrap();
        }
        let (result, elapsed) = r.recv::<(bool, Duration)>().unwrap();
        assert!(!result);
        assert!(elapsed >= Duration::from_millis(100) - CLOCK_RES);
        common::assert_took(elapsed, Duration::from_millis(100));
        join_ok(&mut p);
    }
}

static GOT_SIGINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_sigint(_: libc::c_int) {
    GOT_SIGINT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// COND-07's child: notifies once; when the parent is in its second wait, sends SIGINT to
/// the waiting thread.
fn cond_07_child(cond: Condition, second: Event, pid: i32, tid: i32) -> Result<()> {
    {
        let _held = cond.lock()?;
        cond.notify(1)?;
    }
    assert!(second.wait(Some(LONG)));
    // The parent sets `second` holding the lock and then waits, which lets it go.
    drop(cond.lock()?);
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: tgkill sends a signal to one thread of the parent, which handles SIGINT.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGINT) };
    assert_eq!(r, 0, "tgkill: {}", std::io::Error::last_os_error());
    Ok(())
}

start_methods! {
    /// COND-07: `wait(0)` False; `wait(0.1)` False; a child notifies: `wait(60)` True. The
    /// SIGINT part translates only in part: Rust has no KeyboardInterrupt to propagate out of
    /// `wait`. What is left is that a signal delivered to the waiting thread (SIGINT, with a
    /// handler installed, without SA_RESTART) runs its handler and neither ends the wait early
    /// nor restarts its timeout: `wait(0.5)` with the signal at about 0.05 s is still False
    /// after 0.5 s.
    fn cond_07_wait_result(m) {
        common::install_signal_handler(libc::SIGINT, note_sigint);
        let cond = Condition::new().unwrap();
        let second = Event::new().unwrap();
        let _held = cond.lock().unwrap();
        let (notified, elapsed) = timed(|| cond.wait(Some(Duration::ZERO)));
        assert!(!notified.unwrap());
        common::assert_prompt(elapsed);
        let (notified, elapsed) = timed(|| cond.wait(Some(TIMEOUT1)));
        assert!(!notified.unwrap());
        common::assert_took(elapsed, TIMEOUT1);
        let pid = std::process::id() as i32;
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::gettid() };
        let mut p = start(m, cond_07_child, (cond.clone(), second.clone(), pid, tid));
        assert!(cond.wait(Some(Duration::from_secs(60))).unwrap());

        second.set();
        let t = Duration::from_millis(500);
        let (notified, elapsed) = timed(|| cond.wait(Some(t)));
        assert!(!notified.unwrap(), "the signal made wait say it was notified");
        common::assert_took(elapsed, t);
        assert!(GOT_SIGINT.load(std::sync::atomic::Ordering::SeqCst), "the handler did not run");
        join_ok(&mut p);
    }
}

/// COND-08: `wait()` / `notify()` / `notify_all()` without holding the lock:
/// `AssertionError('must acquire() condition before using wait()')` / `('lock is not
/// owned')`, here `NotOwner`; the same when another thread holds the lock, for the default
/// RLock and for a Lock.
#[test]
fn cond_08_not_owner() {
    for cond in [Condition::new().unwrap(), Condition::with_lock(Lock::new().unwrap()).unwrap()] {
        assert!(matches!(cond.wait(None), Err(Error::NotOwner)));
        assert!(matches!(cond.wait(Some(TIMEOUT1)), Err(Error::NotOwner)));
        assert!(matches!(cond.wait_for(|| false, None), Err(Error::NotOwner)));
        assert!(matches!(cond.notify(1), Err(Error::NotOwner)));
        assert!(matches!(cond.notify_all(), Err(Error::NotOwner)));

        let (held, go) = (Event::new().unwrap(), Event::new().unwrap());
        let holder = {
            let (cond, held, go) = (cond.clone(), held.clone(), go.clone());
            std::thread::spawn(move || -> Result<()> {
                let _g = cond.lock()?;
                held.set();
                assert!(go.wait(Some(LONG)));
                Ok(())
            })
        };
        assert!(held.wait(Some(LONG)));
        let (r, elapsed) = timed(|| cond.wait(None));
        assert!(matches!(r, Err(Error::NotOwner)), "{r:?}");
        common::assert_prompt(elapsed);
        assert!(matches!(cond.notify(1), Err(Error::NotOwner)));
        assert!(matches!(cond.notify_all(), Err(Error::NotOwner)));
        go.set();
        holder.join().unwrap().unwrap();
        // Nothing was left registered by the refused waits.
        check_invariant(&cond);
    }
}

/// COND-09: `wait_for` returns the predicate's last value (CPython returns `5` for `lambda:
/// 5`; a Rust predicate is a `bool`, so `true`); the default lock is an RLock; the repr is
/// `<Condition(<RLock(None, 0)>, 0)>`.
#[test]
fn cond_09_wait_for_value_default_lock_repr() {
    let cond = Condition::new().unwrap();
    assert!(matches!(cond.get_lock(), ConditionLock::RLock(_)));
    assert_eq!(format!("{cond:?}"), "<Condition(<RLock(None, 0)>, 0)>");
    {
        let _held = cond.lock().unwrap();
        assert!(cond.wait_for(|| true, None).unwrap());
        assert_eq!(format!("{cond:?}"), format!("<Condition(<RLock({}, 1)>, 0)>", me_in_repr()));
    }
    let with_lock = Condition::with_lock(Lock::new().unwrap()).unwrap();
    assert_eq!(format!("{with_lock:?}"), "<Condition(<Lock(owner=None)>, 0)>");
}

// ---------------------------------------------------------------------------------------------
// EV: Event.

/// EV-01: a fresh Event: `is_set()` False; `wait(0.0)` False at once; `wait(TIMEOUT1)` False
/// after TIMEOUT1 (0.2 s in the probe for 0.2).
#[test]
fn ev_01_fresh_event() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    let (set, elapsed) = timed(|| event.wait(Some(Duration::ZERO)));
    assert!(!set);
    common::assert_prompt(elapsed);
    for t in [TIMEOUT1, T02] {
        let (set, elapsed) = timed(|| event.wait(Some(t)));
        assert!(!set);
        common::assert_took(elapsed, t);
    }
}

/// EV-02: after `set()`: `is_set()` True; `wait()` and `wait(TIMEOUT1)` True at once.
#[test]
fn ev_02_set_event() {
    let event = Event::new().unwrap();
    event.set();
    assert!(event.is_set());
    let (set, elapsed) = timed(|| event.wait(None));
    assert!(set);
    common::assert_prompt(elapsed);
    let (set, elapsed) = timed(|| event.wait(Some(TIMEOUT1)));
    assert!(set);
    common::assert_prompt(elapsed);
    event.set(); // setting twice is harmless
    assert!(event.is_set());
}

/// Sets the event after TIMEOUT2 (CPython's `_test_event`).
fn set_event_later(event: Event) {
    std::thread::sleep(TIMEOUT2);
    event.set();
}

start_methods! {
    /// EV-03: `clear()`, then a child sets it after TIMEOUT2: the parent's `wait()` is True.
    fn ev_03_child_sets(m) {
        let event = Event::new().unwrap();
        event.set();
        event.clear();
        assert!(!event.is_set());
        let mut p = start(m, set_event_later, (event.clone(),));
        let (set, elapsed) = timed(|| event.wait(None));
        assert!(set);
        assert!(elapsed + Duration::from_millis(10) >= TIMEOUT2, "woke after {elapsed:?}, before the child set it");
        join_ok(&mut p);
        assert!(event.is_set());
    }
}

/// EV-04: repr `<Event at 0x… unset>` / `<Event at 0x… set>`, here without the address.
#[test]
fn ev_04_repr() {
    let event = Event::new().unwrap();
    assert_eq!(format!("{event:?}"), "<Event unset>");
    event.set();
    assert_eq!(format!("{event:?}"), "<Event set>");
    event.clear();
    assert_eq!(format!("{event:?}"), "<Event unset>");
}

/// EV-05's child: the event is set; `wait()`, `clear()`, `wait(0.001)` is False.
fn ev_05_child(event: Event) {
    assert!(event.is_set());
    assert!(event.wait(None));
    event.clear();
    assert!(!event.wait(Some(Duration::from_millis(1))));
}

start_methods! {
    /// EV-05: an Event set in the parent; the child sees it set, waits, clears it, and its
    /// `wait(0.001)` is False; the parent then sees it unset.
    fn ev_05_child_clears(m) {
        let event = Event::new().unwrap();
        event.set();
        let mut p = start(m, ev_05_child, (event.clone(),));
        join_ok(&mut p);
        assert!(!event.is_set());
    }
}

// ---------------------------------------------------------------------------------------------
// BAR: Barrier, with 5 parties: 4 children and the parent.

/// CPython's `multipass`: lockstep through `passes` passes, counted in two semaphores.
fn multipass(barrier: Barrier, results0: Semaphore, results1: Semaphore, passes: u32) -> Result<()> {
    let m = barrier.parties();
    assert_eq!(m, N);
    for i in 0..passes {
        results0.release()?;
        assert_eq!(results1.get_value(), i * m);
        barrier.wait()?;
        results1.release()?;
        assert_eq!(results0.get_value(), (i + 1) * m);
        barrier.wait()?;
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
    Ok(())
}

fn new_barrier() -> Barrier {
    // CPython's `_TestBarrier` uses a 30 s default timeout: a lost party fails, never hangs.
    Barrier::new(N).unwrap().with_timeout(LONG)
}

start_methods! {
    /// BAR-01: one pass: `parties == 5`; the parties go in lockstep; afterwards
    /// `n_waiting == 0` and not broken.
    fn bar_01_barrier(m) {
        let barrier = new_barrier();
        assert_eq!(barrier.parties(), 5);
        let (r0, r1) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        run_parties(m, multipass, (barrier.clone(), r0.clone(), r1.clone(), 1));
        assert_eq!((r0.get_value(), r1.get_value()), (5, 5));
        assert_eq!(barrier.n_waiting(), 0);
        assert!(!barrier.broken());
    }

    /// BAR-01 with 10 passes (`test_barrier_10`).
    fn bar_01_barrier_10(m) {
        let barrier = new_barrier();
        let (r0, r1) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        run_parties(m, multipass, (barrier.clone(), r0.clone(), r1.clone(), 10));
        assert_eq!((r0.get_value(), r1.get_value()), (50, 50));
        assert_eq!(barrier.n_waiting(), 0);
        assert!(!barrier.broken());
    }
}

/// Counts the index `wait()` gave this party.
fn wait_return(barrier: Barrier, hits: Vec<Semaphore>) -> Result<()> {
    let index = barrier.wait()?;
    hits.get(index as usize).expect("an index below the parties").release()
}

start_methods! {
    /// BAR-02: `wait()`'s return values are the indices 0 to 4, each given once (so exactly
    /// one party gets 0).
    fn bar_02_wait_return(m) {
        let barrier = new_barrier();
        let hits: Vec<Semaphore> = (0..N).map(|_| Semaphore::new(0).unwrap()).collect();
        run_parties(m, wait_return, (barrier.clone(), hits.clone()));
        let counts: Vec<u32> = hits.iter().map(Semaphore::get_value).collect();
        assert_eq!(counts, vec![1; N as usize]);
    }
}

thread_local! {
    /// Where the barrier action of BAR-03 counts, in whichever process and thread runs it: a
    /// thread-local, since under `cargo test` the three start-method variants run side by
    /// side in one process.
    static ACTION_COUNT: RefCell<Option<Semaphore>> = const { RefCell::new(None) };
}

fn count_action() {
    ACTION_COUNT.with(|c| c.borrow().as_ref().expect("the counter is set").release().unwrap());
}

/// A BAR-03 party: after each of three passes, the action has run exactly once per pass.
fn action_party(barrier: Barrier, count: Semaphore) -> Result<()> {
    ACTION_COUNT.with(|c| *c.borrow_mut() = Some(count.clone()));
    for pass in 1..=3 {
        barrier.wait()?;
        assert_eq!(count.get_value(), pass, "the action ran before every party was released, or twice");
    }
    ACTION_COUNT.with(|c| c.borrow_mut().take());
    Ok(())
}

start_methods! {
    /// BAR-03: `Barrier(5, action=...)`: the action runs once per pass, before any party is
    /// released (every party sees the count of passes so far). Three passes here, one in
    /// CPython. The action is a plain `fn`, which travels to every start method.
    fn bar_03_action(m) {
        let count = Semaphore::new(0).unwrap();
        let barrier = new_barrier().with_action(count_action);
        run_parties(m, action_party, (barrier, count.clone()));
        assert_eq!(count.get_value(), 3);
    }
}

/// CPython's `_test_abort_f`: the party with index 2 aborts; the others count their error.
fn abort_party(barrier: Barrier, results1: Semaphore, results2: Semaphore) -> Result<()> {
    let i = match broken_or_index(barrier.wait())? {
        None => return results2.release(),
        Some(i) => i,
    };
    if i == N / 2 {
        barrier.abort();
        return Ok(());
    }
    match broken_or_index(barrier.wait())? {
        Some(_) => results1.release(),
        None => results2.release(),
    }
}

start_methods! {
    /// BAR-04: the party with index 2 calls `abort()`: the 4 others get `BrokenBarrier` on
    /// their next wait (results2 == 4, results1 == 0); `broken` is True.
    fn bar_04_abort(m) {
        let barrier = new_barrier();
        let (r1, r2) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        run_parties(m, abort_party, (barrier.clone(), r1.clone(), r2.clone()));
        assert_eq!(r1.get_value(), 0);
        assert_eq!(r2.get_value(), N - 1);
        assert!(barrier.broken());
    }
}

/// CPython's `_test_reset_f`.
fn reset_party(barrier: Barrier, results1: Semaphore, results2: Semaphore, results3: Semaphore) -> Result<()> {
    let i = barrier.wait()?;
    if i == N / 2 {
        // Wait until the other parties are all in the barrier.
        let deadline = Instant::now() + LONG;
        while barrier.n_waiting() < N - 1 {
            assert!(Instant::now() < deadline, "the others never all waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        barrier.reset();
    } else {
        match broken_or_index(barrier.wait())? {
            Some(_) => results1.release()?,
            None => results2.release()?,
        }
    }
    // Now, pass the barrier again.
    barrier.wait()?;
    results3.release()
}

start_methods! {
    /// BAR-05: index 2 waits until the 4 others wait, then `reset()`s: those 4 get
    /// `BrokenBarrier`; then all 5 pass again (results1 0, results2 4, results3 5).
    fn bar_05_reset(m) {
        let barrier = new_barrier();
        let (r1, r2, r3) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        run_parties(m, reset_party, (barrier.clone(), r1.clone(), r2.clone(), r3.clone()));
        assert_eq!((r1.get_value(), r2.get_value(), r3.get_value()), (0, N - 1, N));
        assert!(!barrier.broken());
    }
}

/// CPython's `_test_abort_and_reset_f`.
fn abort_and_reset_party(
    barrier: Barrier,
    barrier2: Barrier,
    results1: Semaphore,
    results2: Semaphore,
    results3: Semaphore,
) -> Result<()> {
    match broken_or_index(barrier.wait())? {
        None => results2.release()?,
        Some(i) if i == N / 2 => barrier.abort(),
        Some(_) => match broken_or_index(barrier.wait())? {
            Some(_) => results1.release()?,
            None => results2.release()?,
        },
    }
    // Synchronize and reset the barrier. Synchronize first so that everyone has left it
    // when we reset, and after so that no one enters it before the reset.
    if barrier2.wait()? == N / 2 {
        barrier.reset();
    }
    barrier2.wait()?;
    barrier.wait()?;
    results3.release()
}

start_methods! {
    /// BAR-06: abort, synchronize on a second barrier, index 2 resets, synchronize, wait
    /// again: results1 0, results2 4, results3 5: a broken barrier is usable after `reset()`.
    fn bar_06_abort_and_reset(m) {
        let barrier = new_barrier();
        let barrier2 = new_barrier();
        let (r1, r2, r3) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        run_parties(m, abort_and_reset_party, (barrier.clone(), barrier2, r1.clone(), r2.clone(), r3.clone()));
        assert_eq!((r1.get_value(), r2.get_value(), r3.get_value()), (0, N - 1, N));
    }
}

/// CPython's `_test_timeout_f`: index 2 is 1 s late; the others `wait(0.5)`.
fn timeout_party(barrier: Barrier, results: Semaphore) -> Result<()> {
    let i = barrier.wait()?;
    if i == N / 2 {
        std::thread::sleep(Duration::from_secs(1));
    }
    if broken_or_index(barrier.wait_timeout(Duration::from_millis(500)))?.is_none() {
        results.release()?;
    }
    Ok(())
}

/// CPython's `_test_default_timeout_f`: as `timeout_party`, with the barrier's own timeout.
fn default_timeout_party(barrier: Barrier, results: Semaphore) -> Result<()> {
    let i = barrier.wait_timeout(LONG)?;
    if i == N / 2 {
        std::thread::sleep(Duration::from_secs(1));
    }
    if broken_or_index(barrier.wait())?.is_none() {
        results.release()?;
    }
    Ok(())
}

start_methods! {
    /// BAR-07: one party is late by 1 s while the others `wait(0.5)`: all 5 get
    /// `BrokenBarrier` (the late one because the barrier is already broken).
    fn bar_07_timeout(m) {
        let barrier = new_barrier();
        let results = Semaphore::new(0).unwrap();
        run_parties(m, timeout_party, (barrier.clone(), results.clone()));
        assert_eq!(results.get_value(), N);
        assert!(barrier.broken());
    }

    /// BAR-08: `Barrier(5, timeout=0.5)`, one party late by 1 s, plain `wait()`: all 5 get
    /// `BrokenBarrier`.
    fn bar_08_default_timeout(m) {
        let barrier = Barrier::new(N).unwrap().with_timeout(Duration::from_millis(500));
        let results = Semaphore::new(0).unwrap();
        run_parties(m, default_timeout_party, (barrier.clone(), results.clone()));
        assert_eq!(results.get_value(), N);
        assert!(barrier.broken());
    }
}

/// BAR-09: `Barrier(1)`: `wait()` twice; neither blocks, both return 0.
#[test]
fn bar_09_single_party() {
    let barrier = Barrier::new(1).unwrap();
    let (first, elapsed) = timed(|| barrier.wait());
    assert_eq!(first.unwrap(), 0);
    common::assert_prompt(elapsed);
    assert_eq!(barrier.wait().unwrap(), 0);
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
}

/// How many passes BAR-10 makes: CPython's thousand.
const THOUSAND: u32 = 1000;

/// CPython's `_test_thousand_f`: after each pass, send the pass number under the lock.
fn thousand_party(barrier: Barrier, passes: u32, conn: Connection, lock: Lock) -> Result<()> {
    for i in 0..passes {
        barrier.wait()?;
        let _held = lock.lock()?;
        conn.send(&i)?;
    }
    Ok(())
}

start_methods! {
    /// BAR-10: 5 processes pass the barrier a thousand times, each sending the pass number
    /// after every pass (under a Lock, on one shared pipe): the parent receives each number
    /// exactly 5 times, in order.
    fn bar_10_thousand(m) {
        let barrier = new_barrier();
        let lock = Lock::new().unwrap();
        let (r, w) = pipe_simplex().unwrap();
        let started = Instant::now();
        let mut children: Vec<Process> =
            (0..N).map(|_| start(m, thousand_party, (barrier.clone(), THOUSAND, w.try_clone().unwrap(), lock.clone()))).collect();
        drop(w);
        for i in 0..THOUSAND {
            for _ in 0..N {
                assert_eq!(r.recv::<u32>().unwrap(), i);
            }
        }
        for p in &mut children {
            join_ok(p);
        }
        eprintln!("bar_10_thousand[{m:?}]: {THOUSAND} passes of {N} processes in {:?}", started.elapsed());
    }
}

/// BAR-11: `Barrier(2, timeout=0.2).wait()` alone: `BrokenBarrier` after 0.2 s; `broken` is
/// True; a further `wait()` fails at once; `reset()` makes `broken` False, `abort()` True.
#[test]
fn bar_11_timeout_alone() {
    let barrier = Barrier::new(2).unwrap().with_timeout(T02);
    let (r, elapsed) = timed(|| barrier.wait());
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    common::assert_took(elapsed, T02);
    assert!(barrier.broken());
    let (r, elapsed) = timed(|| barrier.wait());
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    common::assert_prompt(elapsed);
    barrier.reset();
    assert!(!barrier.broken());
    assert_eq!(format!("{barrier:?}"), "<Barrier(parties=2, n_waiting=0, broken=false)>");
    barrier.abort();
    assert!(barrier.broken());
    assert_eq!(format!("{barrier:?}"), "<Barrier(parties=2, n_waiting=0, broken=true)>");
    assert_eq!(Error::BrokenBarrier.to_string(), "barrier is broken");
}

/// BAR-12: `Barrier(0)` is accepted by CPython 3.11; the port rejects it (`InvalidArgument`).
#[test]
fn bar_12_zero_parties() {
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
}

fn bar_13_child(barrier: Barrier) {
    assert_eq!(barrier.parties(), 5);
    barrier.reset();
    assert!(!barrier.broken());
}

start_methods! {
    /// BAR-13: a `Barrier(5)` in a child: `parties == 5`, `reset()` works (CPython's manager
    /// case, with the plain barrier). It was broken in the parent; the child's reset mends it.
    fn bar_13_in_child(m) {
        let barrier = Barrier::new(5).unwrap();
        barrier.abort();
        let mut p = start(m, bar_13_child, (barrier.clone(),));
        join_ok(&mut p);
        assert!(!barrier.broken());
    }
}

// ---------------------------------------------------------------------------------------------
// Threads and processes waiting on the same object.

/// Waits for the event, then counts itself woken.
fn event_waiter(event: Event, waiting: Semaphore, woken: Semaphore) -> Result<()> {
    waiting.release()?;
    assert!(event.wait(Some(LONG)));
    woken.release()
}

/// Takes one unit, then counts itself woken.
fn semaphore_waiter(sem: Semaphore, waiting: Semaphore, woken: Semaphore) -> Result<()> {
    waiting.release()?;
    assert!(sem.acquire_timeout(LONG));
    woken.release()
}

/// Runs `f(args)` in two child processes and two threads of this one, all at once.
fn two_processes_two_threads<F, X, Y, Z>(
    m: StartMethod,
    f: F,
    args: (X, Y, Z),
) -> (Vec<Process>, Vec<std::thread::JoinHandle<Result<()>>>)
where
    F: Fn(X, Y, Z) -> Result<()> + Target<(X, Y, Z)>,
    X: Clone + Send + 'static,
    Y: Clone + Send + 'static,
    Z: Clone + Send + 'static,
    (X, Y, Z): Args + Clone,
{
    let children = (0..2).map(|_| start(m, f, args.clone())).collect();
    let threads = (0..2)
        .map(|_| {
            let (x, y, z) = args.clone();
            std::thread::spawn(move || f(x, y, z))
        })
        .collect();
    (children, threads)
}

start_methods! {
    /// Two processes and two threads wait on one Event: none wakes before `set()`, all four
    /// after it.
    fn mixed_waiters_event(m) {
        let (event, waiting, woken) = (Event::new().unwrap(), Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let args = (event.clone(), waiting.clone(), woken.clone());
        let (mut children, threads) = two_processes_two_threads(m, event_waiter, args);
        for _ in 0..4 {
            assert!(waiting.acquire_timeout(LONG));
        }
        std::thread::sleep(DELTA);
        assert_eq!(woken.get_value(), 0);
        event.set();
        assert!(eventually(|| woken.get_value() == 4));
        for p in &mut children {
            join_ok(p);
        }
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }

    /// Two processes and two threads wait on one Semaphore(0): each `release()` lets exactly
    /// one through.
    fn mixed_waiters_semaphore(m) {
        let (sem, waiting, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let args = (sem.clone(), waiting.clone(), woken.clone());
        let (mut children, threads) = two_processes_two_threads(m, semaphore_waiter, args);
        for _ in 0..4 {
            assert!(waiting.acquire_timeout(LONG));
        }
        std::thread::sleep(DELTA);
        assert_eq!(woken.get_value(), 0);
        for n in 1..=4 {
            sem.release().unwrap();
            assert!(eventually(|| woken.get_value() >= n));
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(woken.get_value(), n, "one release let more than one through");
            assert_eq!(sem.get_value(), 0);
        }
        for p in &mut children {
            join_ok(p);
        }
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every type in a child.

/// Every synchronization type, in the state the parent leaves them in before the child runs.
#[derive(Clone)]
struct All {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bounded: BoundedSemaphore,
    cond: Condition,
    event: Event,
    barrier: Barrier,
}

impl All {
    /// The parent holds `lock` and `rlock` (twice), has taken one unit of `bounded`, holds
    /// `cond`'s lock (it will wait on it).
    fn new() -> All {
        let all = All {
            lock: Lock::new().unwrap(),
            rlock: RLock::new().unwrap(),
            sem: Semaphore::new(0).unwrap(),
            bounded: BoundedSemaphore::new(2).unwrap(),
            cond: Condition::with_lock(Lock::new().unwrap()).unwrap(),
            event: Event::new().unwrap(),
            barrier: Barrier::new(2).unwrap().with_timeout(LONG),
        };
        all.lock.acquire().unwrap();
        all.rlock.acquire().unwrap();
        all.rlock.acquire().unwrap();
        all.bounded.acquire().unwrap();
        all
    }

    /// The parent's side: wait on the condition until the child notifies, meet at the
    /// barrier, then check what the child did.
    fn parent(&self, child: &mut Process) {
        {
            let _held = self.cond.lock().unwrap();
            child.start().unwrap();
            assert!(self.cond.wait(Some(LONG)).unwrap(), "the child's notify did not arrive");
        }
        self.barrier.wait().unwrap();
        join_ok(child);
        // Lock: the child released it.
        assert!(!self.lock.locked());
        // RLock: still ours, twice; the child could neither take nor release it.
        assert_eq!(format!("{:?}", self.rlock), format!("<RLock({}, 2)>", me_in_repr()));
        // Semaphores and event: the child's changes are seen here.
        assert_eq!(self.sem.get_value(), 3);
        assert_eq!(self.bounded.get_value(), 2);
        assert!(self.event.is_set());
        assert!(!self.barrier.broken());
    }

    /// The child's side: use every object and check that it is the parent's.
    fn child(self) -> Result<()> {
        assert!(self.lock.locked());
        assert_eq!(format!("{:?}", self.lock), "<Lock(owner=SomeOtherProcess)>");
        self.lock.release()?;

        assert_eq!(format!("{:?}", self.rlock), "<RLock(SomeOtherProcess, 2)>");
        assert!(!self.rlock.try_acquire()?);
        assert!(matches!(self.rlock.release(), Err(Error::NotOwner)));

        for _ in 0..3 {
            self.sem.release()?;
        }
        assert_eq!(self.bounded.get_value(), 1);
        self.bounded.release()?;
        assert!(matches!(self.bounded.release(), Err(Error::ReleasedTooManyTimes)));

        self.event.set();
        {
            let _held = self.cond.lock()?;
            self.cond.notify(1)?;
        }
        assert_eq!(self.barrier.parties(), 2);
        self.barrier.wait()?;
        Ok(())
    }
}

fn all_types_child(
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bounded: BoundedSemaphore,
    cond: Condition,
    event: Event,
    barrier: Barrier,
) -> Result<()> {
    All { lock, rlock, sem, bounded, cond, event, barrier }.child()
}

start_methods! {
    /// Every type travels to a child as its `args` and is the same object there: what the
    /// child does to each, the parent sees.
    fn every_type_in_a_child(m) {
        let all = All::new();
        let a = all.clone();
        let mut p = get_context(m).process(all_types_child, (a.lock, a.rlock, a.sem, a.bounded, a.cond, a.event, a.barrier));
        all.parent(&mut p);
    }
}

/// Every type captured by a `Process::from_closure` fork child is the same object there.
#[test]
fn every_type_in_a_closure_child() {
    let guard = common::LeakGuard::new();
    {
        let all = All::new();
        let a = all.clone();
        let mut p = Process::from_closure(move || a.child());
        all.parent(&mut p);
    }
    guard.check();
}

// ---------------------------------------------------------------------------------------------
// Leaks.

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Whether any of this process's mappings is of a file in `/dev/shm`.
fn maps_dev_shm() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/dev/shm/"))
        .map(String::from)
        .collect()
}

/// 300 create/drop cycles of every type leave no descriptor behind and nothing in
/// `/dev/shm` (the objects live in memfds, which never appear there: checked while they are
/// alive, through this process's mappings). The descriptor count is exact only when the
/// test has the process to itself (`cargo nextest`); under plain `cargo test` other tests
/// open descriptors meanwhile and only `/dev/shm` is checked.
#[test]
fn leaks_create_drop_300() {
    // The first object makes the arena this process keeps (one descriptor).
    drop(Lock::new().unwrap());
    let fds_before = __private::open_fds().unwrap();
    let shm_before = dev_shm();
    for i in 0..300 {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let sem = Semaphore::new(1).unwrap();
        let bounded = BoundedSemaphore::new(1).unwrap();
        let cond = Condition::new().unwrap();
        let cond_lock = Condition::with_lock(lock.clone()).unwrap();
        let event = Event::new().unwrap();
        let barrier = Barrier::new(1).unwrap();
        // Use each once, and clone it, so that nothing is left unexercised.
        lock.acquire().unwrap();
        lock.release().unwrap();
        drop(rlock.lock().unwrap());
        drop(sem.guard().unwrap());
        drop(bounded.clone().guard().unwrap());
        drop(cond.lock().unwrap());
        drop(cond_lock.clone().lock().unwrap());
        event.clone().set();
        barrier.clone().wait().unwrap();
        if i == 0 {
            assert_eq!(maps_dev_shm(), Vec::<String>::new());
        }
    }
    if common::alone_in_process() {
        assert_eq!(__private::open_fds().unwrap(), fds_before, "descriptors grew");
    }
    let new_shm: Vec<String> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(new_shm.is_empty(), "new /dev/shm entries: {new_shm:?}");
    assert_eq!(maps_dev_shm(), Vec::<String>::new());
}

/// Waits on the condition (once it is told to), reporting the result.
fn cond_report_wait(cond: Condition, sleeping: Semaphore, report: Connection) -> Result<()> {
    let _held = cond.lock()?;
    sleeping.release()?;
    report.send(&cond.wait(Some(LONG))?)
}

start_methods! {
    /// A notifier that waits right after notifying (what a `wait_for` loop does) does not take
    /// the wake-up it just gave: the waiter it notified returns True, and the notifier's own
    /// wait times out. (CPython's `notify` waits until the notified have woken, for the same
    /// reason; COND-05 hung here before the fix.)
    fn cond_notify_then_wait_keeps_the_wakeup(m) {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let (r, w) = pipe().unwrap();
        let mut p = start(m, cond_report_wait, (cond.clone(), sleeping.clone(), w));
        assert!(sleeping.acquire_timeout(LONG));
        let _held = cond.lock().unwrap(); // the child is inside wait now
        cond.notify(1).unwrap();
        let (notified, elapsed) = timed(|| cond.wait(Some(T02)));
        assert!(!notified.unwrap(), "the notifier took the wake-up it gave");
        common::assert_took(elapsed, T02);
        assert!(r.recv::<bool>().unwrap());
        drop(_held);
        join_ok(&mut p);
        check_invariant(&cond);
    }
}

/// How many turns each party of the ring below takes.
const TURNS: u32 = 300;

/// One party of a ring on a Condition: waits for its turn (`turn.get_value() % parties ==
/// me`), takes it (`+= 1`), notifies everyone, and at once waits for its next turn, as a
/// `wait_for` loop does. A lost wake-up would stop the ring: each wait has a long timeout,
/// and running out of it fails the party.
fn ring_party(cond: Condition, turn: Semaphore, parties: u32, me: u32) -> Result<()> {
    let mut held = cond.lock()?;
    for _ in 0..TURNS {
        let mine = cond.wait_for(|| turn.get_value() % parties == me, Some(LONG))?;
        assert!(mine, "party {me} waited {LONG:?} for its turn at {}", turn.get_value());
        turn.release()?;
        cond.notify_all()?;
        // Let go now and then, so that the lock also changes hands outside `wait`.
        if turn.get_value().is_multiple_of(7) {
            drop(held);
            held = cond.lock()?;
        }
    }
    drop(held);
    Ok(())
}

start_methods! {
    /// Two processes and two threads take turns round a Condition, each notifying and then
    /// waiting again at once, 300 turns each: no wake-up is lost, and the count is exact.
    fn cond_ring_of_threads_and_processes(m) {
        let cond = Condition::new().unwrap();
        let turn = Semaphore::new(0).unwrap();
        let mut children: Vec<Process> =
            (0..2).map(|me| start(m, ring_party, (cond.clone(), turn.clone(), 4, me))).collect();
        let threads: Vec<_> = (2..4)
            .map(|me| {
                let (cond, turn) = (cond.clone(), turn.clone());
                std::thread::spawn(move || ring_party(cond, turn, 4, me))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        for p in &mut children {
            join_ok(p);
        }
        assert_eq!(turn.get_value(), 4 * TURNS);
        check_invariant(&cond);
    }
}
