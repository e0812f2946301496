//! The owner-death guarantee, with real kills: a child takes a lock (or waits on an object),
//! says so, and sleeps until the parent SIGKILLs it with [`Process::kill`] and joins it (exit
//! code -9). The next acquirer must be told ([`Error::OwnerDied`] / [`OwnerDied`]) within
//! about one 20 ms sleep slice and then hold the lock; an object a child was only *waiting*
//! on must not be wedged for the others. CPython deadlocks in all of these (gh-88304), so
//! there is no catalogue case: the names say what is checked.
//!
//! Each latency (from the call, or from the kill for a waiter that was already asleep) is
//! printed with `eprintln!` (`owner-death latency: ...`); the assertions allow 1 s, since the
//! machine is a loaded 2-core VM.
mod common;
use common::{join_ok, start, timed};
use multiprocess::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(20);
/// The bound on an owner-death latency (the target is ~20 ms, one sleep slice).
const LATENCY_BOUND: Duration = Duration::from_secs(1);
/// The probes' timeout: 0.2 s, which must take ≥ 0.19 s and ≤ 1 s.
const T02: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Starts a child that takes hold of something and says so through `held`; returns once it
/// has.
fn holding<F, A>(m: StartMethod, target: F, args: A, held: &Event) -> Process
where
    F: Target<A>,
    A: Args,
{
    let p = start(m, target, args);
    assert!(held.wait(Some(LONG)), "the child never took hold");
    p
}

/// SIGKILLs `p`, joins it and checks that it died of the signal.
fn kill_and_join(p: &mut Process) {
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL), "child {} was not killed", p.name());
}

/// Prints an owner-death latency (collected from the test output) and asserts the bound.
fn latency(what: &str, m: StartMethod, took: Duration) {
    eprintln!("owner-death latency: {:.2} ms ({what}, {m:?})", took.as_secs_f64() * 1000.0);
    assert!(took < LATENCY_BOUND, "{what}: the dead holder was noticed after {took:?}");
}

/// Sleeps for ever: the parent kills us.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits until the thread whose `/proc/.../syscall` is at `path` is asleep in a futex (seen
/// twice, 30 ms apart: a lock or event wait, not a passing wake). If the file cannot be read
/// (no ptrace access), sleeps 300 ms instead, which is ample for a thread that only has to
/// reach its wait.
fn wait_asleep_in_futex(path: &str) {
    let in_futex = || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<libc::c_long>().ok()))
            .map(|n| n == libc::SYS_futex)
    };
    if in_futex().is_none() {
        std::thread::sleep(Duration::from_millis(300));
        return;
    }
    let deadline = Instant::now() + LONG;
    let mut seen = 0;
    while seen < 2 {
        assert!(Instant::now() < deadline, "{path}: never asleep in a futex");
        seen = if in_futex() == Some(true) { seen + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Waits until child `pid` (its main thread) sleeps in a futex.
fn child_asleep(pid: u32) {
    wait_asleep_in_futex(&format!("/proc/{pid}/syscall"));
}

/// Waits until thread `tid` of this process sleeps in a futex.
fn thread_asleep(tid: i32) {
    wait_asleep_in_futex(&format!("/proc/self/task/{tid}/syscall"));
}

/// The calling thread's kernel id.
fn gettid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

/// Polls `f` until it is true, for [`LONG`] at most.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

// ---------------------------------------------------------------------------------------------
// Children.

/// Takes `lock`, says so, and sleeps until killed.
fn hold_lock(lock: Lock, held: Event) -> Result<()> {
    lock.acquire()?;
    held.set();
    sleep_forever()
}

/// Takes `lock` twice, says so, and sleeps until killed.
fn hold_rlock_twice(lock: RLock, held: Event) -> Result<()> {
    lock.acquire()?;
    lock.acquire()?;
    assert_eq!(lock.count(), 2);
    held.set();
    sleep_forever()
}

/// Takes a guard of `v`, writes 42 through it (a half-done update), says so, and sleeps
/// until killed.
fn hold_value(v: Value<i64>, held: Event) -> Result<()> {
    let mut guard = v.lock()?;
    *guard = 42;
    held.set();
    sleep_forever()
}

/// Takes the condition's lock, says so, and sleeps until killed.
fn hold_condition(c: Condition, held: Event) -> Result<()> {
    c.acquire()?;
    held.set();
    sleep_forever()
}

/// Waits for `lock` (which the parent holds) until killed.
fn wait_for_lock(lock: Lock) -> Result<()> {
    lock.acquire()?;
    panic!("got a lock the parent holds")
}

/// Waits on the semaphore (at zero) until killed.
fn wait_for_semaphore(sem: Semaphore) -> Result<()> {
    sem.acquire()?;
    panic!("took a semaphore at zero")
}

/// Waits for the event until killed.
fn wait_for_event(ev: Event) -> Result<()> {
    ev.wait(None);
    panic!("woken by an event never set")
}

/// Takes the condition's lock, says so, and waits on the condition until killed.
fn wait_on_condition(c: Condition, waiting: Event) -> Result<()> {
    c.acquire()?;
    waiting.set();
    c.wait(None)?;
    panic!("notified while the parent never notified")
}

/// Takes the condition's lock, says so, waits to be notified (for `LONG` at most) and fails
/// unless it was.
fn wait_to_be_notified(c: Condition, waiting: Event) -> Result<()> {
    let _held = c.lock()?;
    waiting.set();
    assert!(c.wait(Some(LONG))?, "not notified");
    Ok(())
}

/// Starts a child running `target(c, waiting)` (one of the waiters above) and returns once
/// it sleeps inside `wait`: it said it holds the lock, we took the lock after it let go,
/// and the kernel shows it asleep.
fn waiting_child<F: Target<(Condition, Event)>>(m: StartMethod, target: F, c: &Condition) -> Process {
    let waiting = Event::new().unwrap();
    let p = start(m, target, (c.clone(), waiting.clone()));
    assert!(waiting.wait(Some(LONG)), "the child never came to wait");
    drop(c.lock().unwrap());
    child_asleep(p.pid().unwrap());
    p
}

/// Waits at the barrier until killed.
fn wait_at_barrier(b: Barrier) -> Result<()> {
    b.wait()?;
    panic!("passed a barrier that was never filled")
}

// ---------------------------------------------------------------------------------------------
// Lock held by a killed child.

start_methods! {
    /// Case 1: the child dies holding a `Lock`. The parent's `acquire()` gives `OwnerDied`
    /// within one sleep slice; the parent then holds it (`locked()`, another thread's
    /// `try_acquire()` is false, one release works and a second is `ReleasedTooManyTimes`);
    /// the lock works normally afterwards.
    fn lock_acquire_after_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        assert!(lock.locked());
        assert!(!lock.try_acquire().unwrap(), "a live holder's lock was taken");
        kill_and_join(&mut p);

        let (r, took) = timed(|| lock.acquire());
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire gave {r:?}");
        latency("Lock::acquire", m, took);
        assert!(lock.locked());
        let other = std::thread::scope(|s| s.spawn(|| lock.try_acquire().unwrap()).join().unwrap());
        assert!(!other, "another thread took the lock the parent took over");
        lock.release().unwrap();
        assert!(!lock.locked());
        assert!(matches!(lock.release(), Err(Error::ReleasedTooManyTimes)));

        // Usable again, with nothing more to report.
        lock.acquire().unwrap();
        assert!(!lock.try_acquire().unwrap());
        lock.release().unwrap();
        assert!(lock.acquire_timeout(T02).unwrap());
        lock.release().unwrap();
        assert!(lock.lock().is_ok());
        assert!(!lock.locked());
    }

    /// Case 1, the parent already asleep in `acquire()` (in a thread) when the holder is
    /// killed: it gets `OwnerDied` within one sleep slice of the kill, and holds the lock.
    fn lock_waiter_asleep_before_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let r = lock.acquire();
                tx.send((r, Instant::now())).unwrap();
            })
        };
        thread_asleep(tid_rx.recv().unwrap());
        assert!(rx.try_recv().is_err(), "acquire returned while the holder lived");
        let killed = Instant::now();
        p.kill().unwrap();
        let (r, at) = rx.recv_timeout(LONG).expect("the waiter never woke");
        latency("Lock::acquire asleep before the kill", m, at - killed);
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire gave {r:?}");
        waiter.join().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        assert!(lock.locked());
        // A Lock may be released by any thread.
        lock.release().unwrap();
        assert!(lock.try_acquire().unwrap());
        lock.release().unwrap();
    }

    /// Case 2: `try_acquire()` on a dead child's lock is `OwnerDied` at once (it checks the
    /// holder without waiting); `acquire_timeout(1 s)` is `OwnerDied` well before 1 s.
    fn lock_try_and_timeout_after_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let (r, took) = timed(|| lock.try_acquire());
        assert!(matches!(r, Err(Error::OwnerDied)), "try_acquire gave {r:?}");
        latency("Lock::try_acquire", m, took);
        common::assert_prompt(took);
        assert!(lock.locked());
        assert!(!lock.try_acquire().unwrap(), "taken twice");
        lock.release().unwrap();

        held.clear();
        let mut q = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        assert!(!lock.acquire_timeout(T02 / 4).unwrap(), "a live holder's lock was taken");
        kill_and_join(&mut q);
        let timeout = Duration::from_secs(1);
        let (r, took) = timed(|| lock.acquire_timeout(timeout));
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire_timeout gave {r:?}");
        latency("Lock::acquire_timeout(1 s)", m, took);
        assert!(took < timeout / 2, "acquire_timeout(1 s) took {took:?}: it waited for its timeout");
        assert!(lock.locked());
        lock.release().unwrap();
        assert!(lock.try_acquire().unwrap());
        lock.release().unwrap();
    }

    /// Case 3: `lock()` on a dead child's lock is `Err(died)`; `died.into_inner()` is a guard
    /// that holds the lock, and dropping it releases it. With `?` it becomes
    /// `Error::OwnerDied`, and the lock is released.
    fn lock_guard_after_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let (r, took) = timed(|| lock.lock());
        latency("Lock::lock", m, took);
        let died = match r {
            Err(died) => died,
            Ok(_) => panic!("the dead holder was not reported"),
        };
        assert_eq!(died.to_string(), "the previous holder of the lock died");
        assert!(lock.locked());
        let guard = died.into_inner();
        assert!(lock.locked());
        assert!(!lock.try_acquire().unwrap());
        drop(guard);
        assert!(!lock.locked());
        assert!(lock.lock().is_ok());

        fn take(lock: &Lock) -> Result<()> {
            let _guard = lock.lock()?;
            Ok(())
        }
        held.clear();
        let mut q = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut q);
        let (r, took) = timed(|| take(&lock));
        latency("Lock::lock()?", m, took);
        assert!(matches!(r, Err(Error::OwnerDied)), "`?` gave {r:?}");
        assert!(!lock.locked(), "`?` did not release the lock");
        take(&lock).unwrap();
    }

    /// Case 4: the child dies holding an `RLock` twice. The parent's `acquire()` gives
    /// `OwnerDied` and holds it once (`count()` 1, not the dead holder's 2); one `release()`
    /// frees it, a second is `NotOwner`.
    fn rlock_acquire_after_holder_killed(m) {
        let lock = RLock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_rlock_twice, (lock.clone(), held.clone()), &held);
        assert_eq!(lock.count(), 2);
        assert!(!lock.try_acquire().unwrap(), "a live holder's rlock was taken");
        kill_and_join(&mut p);

        let (r, took) = timed(|| lock.acquire());
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire gave {r:?}");
        latency("RLock::acquire", m, took);
        assert!(lock.locked());
        assert_eq!(lock.count(), 1);
        // Ours now, re-entrantly, with nothing more to report.
        lock.acquire().unwrap();
        assert_eq!(lock.count(), 2);
        lock.release().unwrap();
        assert_eq!(lock.count(), 1);
        lock.release().unwrap();
        assert!(!lock.locked());
        assert_eq!(lock.count(), 0);
        assert!(matches!(lock.release(), Err(Error::NotOwner)));

        // try_acquire and lock() on a second dead holder.
        held.clear();
        let mut q = holding(m, hold_rlock_twice, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut q);
        let (r, took) = timed(|| lock.try_acquire());
        assert!(matches!(r, Err(Error::OwnerDied)), "try_acquire gave {r:?}");
        latency("RLock::try_acquire", m, took);
        assert_eq!(lock.count(), 1);
        lock.release().unwrap();
        assert!(!lock.locked());
        let guard = lock.lock().expect("a free rlock");
        assert_eq!(lock.count(), 1);
        drop(guard);
        assert!(!lock.locked());
    }

    /// Case 5: the child dies holding a `Value<i64>`'s guard, having written 42. The parent's
    /// `lock()` is `Err(OwnerDied)` with a guard that reads 42 and writes; `get()` and `set()`
    /// carry on, and the next `lock()` is `Ok`.
    fn value_guard_after_holder_killed(m) {
        let v = Value::new(7i64).unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_value, (v.clone(), held.clone()), &held);
        assert!(v.get_lock().locked());
        kill_and_join(&mut p);

        let (r, took) = timed(|| v.lock());
        latency("Value::lock", m, took);
        let mut guard = match r {
            Err(died) => died.into_inner(),
            Ok(_) => panic!("the dead holder was not reported"),
        };
        assert_eq!(*guard, 42, "the dead holder's write is lost");
        *guard = 43;
        drop(guard);
        assert!(!v.get_lock().locked());
        assert_eq!(v.get(), 43);
        v.set(44);
        assert_eq!(v.get(), 44);
        let mut guard = v.lock().expect("no one died this time");
        *guard += 1;
        drop(guard);
        assert_eq!(v.get(), 45);
        assert!(!v.get_lock().locked());
    }

    /// Case 5, silently: `get()` on a dead child's value does not wait for ever, and reads
    /// what the child wrote; the lock is free after.
    fn value_get_after_holder_killed(m) {
        let v = Value::new(7i64).unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_value, (v.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let (x, took) = timed(|| v.get());
        latency("Value::get", m, took);
        assert_eq!(x, 42);
        assert!(!v.get_lock().locked());
        v.set(1);
        assert_eq!(*v.lock().expect("no one died this time"), 1);
    }

    /// Case 6: the child dies holding a `Condition`'s lock. The parent's `acquire()` is
    /// `OwnerDied`; wait and notify then work normally with a fresh child, both ways.
    fn condition_after_holder_killed(m) {
        let c = Condition::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_condition, (c.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let (r, took) = timed(|| c.acquire());
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire gave {r:?}");
        latency("Condition::acquire", m, took);
        // We hold it: wait works (and times out, no one notifies).
        let (notified, took) = timed(|| c.wait(Some(T02)));
        assert!(!notified.unwrap());
        common::assert_timeout_elapsed(took, T02);
        c.release().unwrap();
        assert!(c.release().is_err(), "released twice");

        // A fresh child waits; the parent notifies.
        let waiting = Event::new().unwrap();
        let mut q = start(m, wait_to_be_notified, (c.clone(), waiting.clone()));
        assert!(waiting.wait(Some(LONG)));
        {
            // Granted only once the child sleeps in wait(), which lets the lock go.
            let _held = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        join_ok(&mut q);

        // The parent waits; a fresh child notifies.
        fn notify_one(c: Condition) -> Result<()> {
            let _held = c.lock()?;
            c.notify(1)
        }
        let _held = c.lock().unwrap();
        let mut r = start(m, notify_one, (c.clone(),));
        assert!(c.wait(Some(LONG)).unwrap(), "not notified");
        drop(_held);
        join_ok(&mut r);
    }

    /// Case 7: two threads of the parent race for a dead child's lock: exactly one gets
    /// `OwnerDied`, the other gets the lock normally (`Ok`) once the first releases it.
    fn lock_two_waiters_race_after_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let go = std::sync::Barrier::new(2);
        let results: Vec<(Result<()>, Instant, Instant)> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        go.wait();
                        let r = lock.acquire();
                        let got = Instant::now();
                        // Hold it a moment, so the other is surely kept waiting meanwhile.
                        std::thread::sleep(Duration::from_millis(50));
                        let released = Instant::now();
                        lock.release().unwrap();
                        (r, got, released)
                    })
                })
                .collect();
            racers.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let died: Vec<_> = results.iter().filter(|(r, ..)| matches!(r, Err(Error::OwnerDied))).collect();
        let ok: Vec<_> = results.iter().filter(|(r, ..)| r.is_ok()).collect();
        assert_eq!((died.len(), ok.len()), (1, 1), "results: {:?}", results.iter().map(|r| &r.0).collect::<Vec<_>>());
        assert!(ok[0].1 >= died[0].2, "the second waiter got the lock before the first released it");
        assert!(!lock.locked());
    }

    /// Case 7, between processes: two fresh children race for a dead child's lock, each
    /// reporting what it got; exactly one is told `OwnerDied`.
    fn lock_two_processes_race_after_holder_killed(m) {
        fn race(lock: Lock, died: Semaphore, ok: Semaphore, go: Event) -> Result<()> {
            assert!(go.wait(Some(LONG)));
            match lock.acquire() {
                Ok(()) => ok.release()?,
                Err(Error::OwnerDied) => died.release()?,
                Err(e) => return Err(e),
            }
            std::thread::sleep(Duration::from_millis(20));
            lock.release()
        }
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_lock, (lock.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let (died, ok, go) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap(), Event::new().unwrap());
        let mut racers: Vec<Process> =
            (0..2).map(|_| start(m, race, (lock.clone(), died.clone(), ok.clone(), go.clone()))).collect();
        go.set();
        for q in &mut racers {
            join_ok(q);
        }
        assert_eq!((died.get_value(), ok.get_value()), (1, 1));
        assert!(!lock.locked());
    }
}

// ---------------------------------------------------------------------------------------------
// A party killed while waiting.

start_methods! {
    /// Case 8: `Barrier(3)`; a child waits at it and is killed there. The parent, alone with
    /// the dead party, waits with a timeout: `BrokenBarrier`, not a hang, and sooner than the
    /// timeout (a sleeper finds the dead party within about 20 ms and breaks the barrier).
    fn barrier_party_killed_then_one_waits(m) {
        let b = Barrier::new(3).unwrap();
        let mut p = start(m, wait_at_barrier, (b.clone(),));
        assert!(eventually(|| b.n_waiting() == 1));
        child_asleep(p.pid().unwrap());
        kill_and_join(&mut p);
        let (r, took) = timed(|| b.wait_timeout(T02));
        assert!(matches!(r, Err(Error::BrokenBarrier)), "wait gave {r:?}");
        assert!(took < T02 + Duration::from_secs(1), "{took:?}");
        assert!(b.broken());
    }

    /// Case 8, the others already waiting: `Barrier(3)`, a parent thread waits with a 0.5 s
    /// timeout, a child arrives and is killed while both wait: the thread gets
    /// `BrokenBarrier` (once a sleeper finds the dead party, or at its timeout).
    fn barrier_party_killed_beside_a_waiter(m) {
        let b = Barrier::new(3).unwrap();
        let timeout = Duration::from_millis(500);
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || timed(|| b.wait_timeout(timeout)))
        };
        assert!(eventually(|| b.n_waiting() == 1));
        let mut p = start(m, wait_at_barrier, (b.clone(),));
        assert!(eventually(|| b.n_waiting() == 2 || b.broken()));
        kill_and_join(&mut p);
        let (r, took) = waiter.join().unwrap();
        assert!(matches!(r, Err(Error::BrokenBarrier)), "wait gave {r:?}");
        assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    }

    /// Case 8: a child killed while asleep in `Lock::acquire()` does not wedge the lock: a
    /// parent thread asleep in `acquire()` too gets it (`Ok`) as soon as the parent releases.
    fn lock_waiter_killed(m) {
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap();
        let mut p = start(m, wait_for_lock, (lock.clone(),));
        child_asleep(p.pid().unwrap());
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let r = lock.acquire();
                tx.send((r, Instant::now())).unwrap();
            })
        };
        thread_asleep(tid_rx.recv().unwrap());
        kill_and_join(&mut p);
        let released = Instant::now();
        lock.release().unwrap();
        let (r, at) = rx.recv_timeout(LONG).expect("the waiter never woke");
        waiter.join().unwrap();
        assert!(r.is_ok(), "acquire gave {r:?}");
        common::assert_prompt(at - released);
        lock.release().unwrap();
        assert!(lock.try_acquire().unwrap());
        lock.release().unwrap();
    }

    /// Case 8: a child killed while asleep in `Semaphore::acquire()` (at zero) does not
    /// wedge it: a parent thread asleep there too takes the one `release()`.
    fn semaphore_waiter_killed(m) {
        let sem = Semaphore::new(0).unwrap();
        let mut p = start(m, wait_for_semaphore, (sem.clone(),));
        child_asleep(p.pid().unwrap());
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let waiter = {
            let sem = sem.clone();
            std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let r = sem.acquire_timeout(LONG);
                tx.send((r, Instant::now())).unwrap();
            })
        };
        thread_asleep(tid_rx.recv().unwrap());
        kill_and_join(&mut p);
        let released = Instant::now();
        sem.release().unwrap();
        let (r, at) = rx.recv_timeout(LONG).expect("the waiter never woke");
        waiter.join().unwrap();
        assert!(r, "the waiter timed out");
        common::assert_prompt(at - released);
        assert_eq!(sem.get_value(), 0);
        sem.release().unwrap();
        assert!(sem.try_acquire());
        assert!(!sem.try_acquire());
    }

    /// Case 8: a child killed while asleep in `Event::wait()` does not wedge it: a parent
    /// thread asleep there too is woken by `set()`.
    fn event_waiter_killed(m) {
        let ev = Event::new().unwrap();
        let mut p = start(m, wait_for_event, (ev.clone(),));
        child_asleep(p.pid().unwrap());
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let waiter = {
            let ev = ev.clone();
            std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                let r = ev.wait(Some(LONG));
                tx.send((r, Instant::now())).unwrap();
            })
        };
        thread_asleep(tid_rx.recv().unwrap());
        kill_and_join(&mut p);
        let set = Instant::now();
        ev.set();
        let (r, at) = rx.recv_timeout(LONG).expect("the waiter never woke");
        waiter.join().unwrap();
        assert!(r, "the waiter timed out");
        common::assert_prompt(at - set);
        ev.clear();
        let (r, took) = timed(|| ev.wait(Some(T02)));
        assert!(!r);
        common::assert_timeout_elapsed(took, T02);
    }

    /// Case 8: a child killed while asleep in `Condition::wait()` (it let the lock go) does
    /// not wedge the condition: the lock is free, and a parent thread waiting is woken by
    /// `notify(1)` (`true`).
    fn condition_waiter_killed(m) {
        let c = Condition::new().unwrap();
        let waiting = Event::new().unwrap();
        let mut p = start(m, wait_on_condition, (c.clone(), waiting.clone()));
        assert!(waiting.wait(Some(LONG)));
        {
            // Granted once the child sleeps in wait().
            let _held = c.lock().unwrap();
        }
        child_asleep(p.pid().unwrap());
        kill_and_join(&mut p);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || {
                let held = c.lock().unwrap();
                ready_tx.send(()).unwrap();
                let r = c.wait(Some(LONG));
                tx.send((r, Instant::now())).unwrap();
                drop(held);
            })
        };
        ready_rx.recv().unwrap();
        let notified = {
            // Granted once the thread sleeps in wait().
            let _held = c.lock().expect("the killed waiter did not hold the lock");
            c.notify(1).unwrap();
            Instant::now()
        };
        let (r, at) = rx.recv_timeout(LONG).expect("the waiter never woke");
        waiter.join().unwrap();
        assert!(r.unwrap(), "the waiter was not notified");
        common::assert_prompt(at - notified);
        // And a wait nobody notifies still times out.
        let _held = c.lock().unwrap();
        let (r, took) = timed(|| c.wait(Some(T02)));
        assert!(!r.unwrap());
        common::assert_timeout_elapsed(took, T02);
    }
}

start_methods! {
    /// Case 6, with the guard: `Condition::lock()` on a dead child's lock reports
    /// `OwnerDied` with the guard inside; `into_inner()` keeps it, and dropping it (or `?`)
    /// releases the lock.
    fn condition_lock_after_holder_killed(m) {
        let c = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let held = Event::new().unwrap();
        let mut p = holding(m, hold_condition, (c.clone(), held.clone()), &held);
        kill_and_join(&mut p);
        let guard = match c.lock() {
            Ok(_) => panic!("the holder's death was not reported"),
            Err(died) => died.into_inner(),
        };
        let ConditionLock::Lock(lock) = c.get_lock() else { unreachable!() };
        assert!(lock.locked());
        c.notify_all().unwrap();
        drop(guard);
        assert!(!lock.locked(), "dropping the guard released the lock");
    }
}

start_methods! {
    /// Case 8: `Barrier(3)`; a child waits at it and is killed there; then the two live
    /// parties (the parent and a thread) wait with a 0.2 s timeout. The dead party had
    /// arrived, so they may pass with it (`Ok`), or, if a sleeper took it out first, get
    /// `BrokenBarrier`: never a hang, and both see the same outcome. Afterwards the barrier
    /// (reset if broken) passes three live parties: the dead one is not counted for ever.
    fn barrier_party_killed_then_two_wait(m) {
        let b = Barrier::new(3).unwrap();
        let mut p = start(m, wait_at_barrier, (b.clone(),));
        assert!(eventually(|| b.n_waiting() == 1));
        child_asleep(p.pid().unwrap());
        kill_and_join(&mut p);
        let other = {
            let b = b.clone();
            std::thread::spawn(move || timed(|| b.wait_timeout(T02)))
        };
        let (r, took) = timed(|| b.wait_timeout(T02));
        let (r2, took2) = other.join().unwrap();
        assert!(took < T02 + Duration::from_secs(1) && took2 < T02 + Duration::from_secs(1), "{took:?} {took2:?}");
        match (&r, &r2) {
            (Ok(_), Ok(_)) | (Err(Error::BrokenBarrier), Err(Error::BrokenBarrier)) => {}
            other => panic!("the two live parties disagree: {other:?}"),
        }
        if b.broken() {
            b.reset();
        }
        let parties: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.wait_timeout(Duration::from_secs(5)))
            })
            .collect();
        let mut got: Vec<String> = parties.into_iter().map(|t| format!("{:?}", t.join().unwrap())).collect();
        got.sort();
        assert_eq!(got, ["Ok(0)", "Ok(1)", "Ok(2)"]);
    }
}

start_methods! {
    /// Case 8: after a party was killed inside `wait()` and the barrier broke, `reset()`
    /// makes it usable again: three live parties pass it, with indices 0, 1 and 2.
    fn barrier_reset_after_party_killed(m) {
        let b = Barrier::new(3).unwrap();
        let mut p = start(m, wait_at_barrier, (b.clone(),));
        assert!(eventually(|| b.n_waiting() == 1));
        child_asleep(p.pid().unwrap());
        kill_and_join(&mut p);
        assert!(matches!(b.wait_timeout(T02), Err(Error::BrokenBarrier)));
        b.reset();
        assert!(!b.broken());
        let (tx, rx) = mpsc::channel();
        let parties: Vec<_> = (0..3)
            .map(|_| {
                let (b, tx) = (b.clone(), tx.clone());
                std::thread::spawn(move || tx.send(b.wait_timeout(Duration::from_secs(2))).unwrap())
            })
            .collect();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 3 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => got.push(format!("{r:?}")),
                Err(_) => break,
            }
        }
        // Free anyone stuck (a wait that ignores its timeout), so the threads can be joined.
        b.abort();
        for t in parties {
            t.join().unwrap();
        }
        got.sort();
        assert_eq!(got, ["Ok(0)", "Ok(1)", "Ok(2)"], "the reset barrier did not pass (a wait hung: {})", got.len() < 3);
    }
}

start_methods! {
    /// Case 8: a killed waiter's registration must not turn into an extra wake-up later: after
    /// a `notify(1)` with no live waiter, two threads wait and one `notify(1)` comes; exactly
    /// one is notified (`true`), the other times out (`false`).
    fn condition_waiter_killed_no_extra_wakeup(m) {
        let c = Condition::new().unwrap();
        let mut p = waiting_child(m, wait_on_condition, &c);
        kill_and_join(&mut p);
        {
            // No live waiter: CPython's notify does nothing here.
            let _held = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (c, tx, ready_tx) = (c.clone(), tx.clone(), ready_tx.clone());
                std::thread::spawn(move || {
                    let held = c.lock().unwrap();
                    ready_tx.send(()).unwrap();
                    tx.send(c.wait(Some(Duration::from_millis(500))).unwrap()).unwrap();
                    drop(held);
                })
            })
            .collect();
        ready_rx.recv().unwrap();
        ready_rx.recv().unwrap();
        {
            // Granted once both sleep in wait().
            let _held = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        let mut got: Vec<bool> = (0..2).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
        for t in waiters {
            t.join().unwrap();
        }
        got.sort();
        assert_eq!(got, [false, true], "notify(1) woke {} waiters", got.iter().filter(|&&x| x).count());
    }
}

start_methods! {
    /// Case 8, across processes: a waiter child is killed while a second child waits too.
    /// One `notify(1)` goes to the live child (it returns `true` within 1 s), not to the dead
    /// one's registration; then a third child waits and, with no notify, times out.
    fn condition_notify_passes_over_a_killed_waiter(m) {
        let c = Condition::new().unwrap();
        let mut dead = waiting_child(m, wait_on_condition, &c);
        let mut live = waiting_child(m, wait_to_be_notified, &c);
        kill_and_join(&mut dead);
        {
            let _held = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        live.join_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(live.exitcode(), Some(0), "the live waiter was not notified within 1 s");
        let _held = c.lock().unwrap();
        assert!(!c.wait(Some(T02)).unwrap(), "a wake-up was left over");
        assert_eq!(format!("{c:?}").rsplit(", ").next(), Some("0)>"), "{c:?}");
    }

    /// Eight waiter processes, two of them killed while they wait: `notify(1)` six times
    /// wakes each live one exactly once (each exits 0), and nothing is left over.
    fn condition_many_processes_some_killed(m) {
        let c = Condition::new().unwrap();
        let mut children = Vec::new();
        for i in 0..8 {
            let doomed = i % 4 == 0;
            let p = if doomed { waiting_child(m, wait_on_condition, &c) } else { waiting_child(m, wait_to_be_notified, &c) };
            children.push((doomed, p));
        }
        for (doomed, p) in &mut children {
            if *doomed {
                kill_and_join(p);
            }
        }
        for _ in 0..6 {
            let _held = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        for (doomed, p) in &mut children {
            if !*doomed {
                p.join_timeout(LONG).unwrap();
                assert_eq!(p.exitcode(), Some(0));
            }
        }
        let _held = c.lock().unwrap();
        assert!(!c.wait(Some(T02)).unwrap(), "a wake-up was left over");
    }
}

/// Takes the condition's lock, says so (`registered`), and waits for `LONG` at most; fails
/// unless notified.
fn register_and_wait(c: Condition, registered: Semaphore) -> Result<()> {
    let _held = c.lock()?;
    registered.release()?;
    assert!(c.wait(Some(LONG))?, "not notified");
    Ok(())
}

/// Starts `n` children running `register_and_wait` on `c` and returns once all of them are
/// inside `wait` (the lock came back to us after the last one let it go there).
fn registered_waiters(m: StartMethod, c: &Condition, n: usize) -> Vec<Process> {
    let registered = Semaphore::new(0).unwrap();
    let children: Vec<Process> = (0..n).map(|_| start(m, register_and_wait, (c.clone(), registered.clone()))).collect();
    for i in 0..n {
        assert!(registered.acquire_timeout(LONG), "only {i} of {n} children came to wait");
    }
    drop(c.lock().unwrap());
    children
}

/// A condition keeps the waiters of many processes (it once held 64, and a 65th got an
/// error): 200 wait at once and are all killed there; 200 more then wait in the places of
/// the dead, and one `notify_all` wakes each of them. (Fork only: that many waiters are
/// cheapest to make that way. The table's own capacity, 262 144, and the reuse of a dead
/// process's entry are checked by the unit tests in `src/synchronize/condition.rs`.)
#[test]
fn condition_table_of_waiting_processes() {
    common::run_case(StartMethod::Fork, |m| {
        let c = Condition::new().unwrap();
        let mut sleepers = registered_waiters(m, &c, 200);
        for p in &mut sleepers {
            kill_and_join(p);
        }
        let mut next = registered_waiters(m, &c, 200);
        {
            let _held = c.lock().unwrap();
            c.notify_all().unwrap();
        }
        for p in &mut next {
            p.join_timeout(LONG).unwrap();
            assert_eq!(p.exitcode(), Some(0), "a waiter was not notified");
        }
        let _held = c.lock().unwrap();
        assert!(!c.wait(Some(T02)).unwrap(), "a wake-up was left over");
    });
}

/// Pins the calling thread to CPU 0.
fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on this thread with a set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// On CPU 0: takes the condition's lock, notifies, says so through `done` (a plain store: no
/// lock let go, which would make the wake-up it put off) and sleeps holding the lock until
/// killed.
fn notify_and_hang(c: Condition, done: RawValue<u32>) -> Result<()> {
    pin_to_cpu0();
    let _held = c.lock()?;
    c.notify(1)?;
    done.set(1);
    sleep_forever()
}

/// A notifier on the waiter's CPU puts its wake-up off until it lets go of the lock (woken
/// at once, the waiter would only find the lock held); killed before it does, the waiter must
/// still wake (at the end of its first slice), and take the lock over: `OwnerDied` within the
/// bound, not a sleep until its timeout.
#[test]
fn condition_notifier_killed_before_its_put_off_wakeup() {
    pin_to_cpu0();
    let c = Condition::new().unwrap();
    let done = RawValue::new(0u32).unwrap();
    let held = c.lock().unwrap();
    let p = start(StartMethod::Fork, notify_and_hang, (c.clone(), done.clone()));
    let killer = std::thread::spawn(move || {
        let mut p = p;
        let deadline = Instant::now() + LONG;
        while done.get() == 0 {
            assert!(Instant::now() < deadline, "the child never notified");
            std::thread::sleep(Duration::from_millis(1));
        }
        kill_and_join(&mut p);
        Instant::now()
    });
    let r = c.wait(Some(LONG));
    let woke = Instant::now();
    let killed = killer.join().unwrap();
    assert!(matches!(r, Err(Error::OwnerDied)), "wait gave {r:?}");
    latency("Condition::wait after a put-off notify", StartMethod::Fork, woke.saturating_duration_since(killed));
    drop(held);
}
