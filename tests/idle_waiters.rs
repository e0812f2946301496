//! Idle waiters (issue 16 point 3): a process blocked on a held `Lock`, in `Queue::get`, or at
//! a `Barrier` sleeps until something happens, instead of waking every 20 ms to ask whether
//! the holder is alive; and yet a holder's (a party's) SIGKILL is still noticed at once, by
//! this process's death watcher. Latencies are printed (`idle-waiters latency: ...`) and
//! bounded loosely (1 s: a loaded 2-core machine); idleness is counted in voluntary context
//! switches of the waiting child's main thread over 1 s (about 50 with 20 ms slices).
mod common;
use common::{join_ok, start, timed};
use multiprocess::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);
const LATENCY_BOUND: Duration = Duration::from_secs(1);
/// How long an idle waiter is watched.
const IDLE: Duration = Duration::from_secs(1);
/// Wake-ups allowed to an idle waiter over [`IDLE`]: stray ones (a page fault, a signal), not
/// a periodic slice.
const IDLE_SWITCHES: u64 = 10;

fn latency(what: &str, m: StartMethod, took: Duration) {
    eprintln!("idle-waiters latency: {:.2} ms ({what}, {m:?})", took.as_secs_f64() * 1000.0);
    assert!(took < LATENCY_BOUND, "{what}: the death was noticed after {took:?}");
}

/// The voluntary context switches of process `pid`'s main thread.
fn voluntary_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether `pid`'s main thread is asleep in a futex (per `/proc/<pid>/syscall`; `None` if it
/// cannot be read).
fn in_futex(pid: u32) -> Option<bool> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let n = s.split_whitespace().next()?.parse::<libc::c_long>().ok()?;
    Some(n == libc::SYS_futex)
}

/// Waits until `pid` is asleep in a futex (seen three times, 30 ms apart), or 300 ms if that
/// cannot be read.
fn asleep(pid: u32) {
    if in_futex(pid).is_none() {
        std::thread::sleep(Duration::from_millis(300));
        return;
    }
    let deadline = Instant::now() + LONG;
    let mut seen = 0;
    while seen < 3 {
        assert!(Instant::now() < deadline, "{pid}: never asleep in a futex");
        seen = if in_futex(pid) == Some(true) { seen + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Asserts that the asleep child `pid` stays asleep for [`IDLE`].
fn stays_asleep(what: &str, pid: u32) {
    asleep(pid);
    let before = voluntary_switches(pid);
    std::thread::sleep(IDLE);
    let woke = voluntary_switches(pid) - before;
    eprintln!("idle-waiters wake-ups: {woke} in {IDLE:?} ({what})");
    assert!(woke <= IDLE_SWITCHES, "{what}: an idle waiter woke {woke} times in {IDLE:?}");
}

fn acquire_and_report(lock: Lock, done: Connection) -> Result<()> {
    let r = lock.acquire();
    done.send(&format!("{r:?}"))?;
    Ok(())
}

fn hold_lock(lock: Lock, held: Event) -> Result<()> {
    lock.acquire()?;
    held.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn get_and_report(q: Queue<u32>, done: Connection) -> Result<()> {
    let r = q.get();
    done.send(&format!("{r:?}"))?;
    Ok(())
}

fn wait_and_report(b: Barrier, done: Connection) -> Result<()> {
    let r = b.wait();
    done.send(&format!("{r:?}"))?;
    Ok(())
}

fn nothing() -> Result<()> {
    Ok(())
}

fn kill_and_join(p: &mut Process) {
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
}

start_methods! {
    /// A child blocked on a lock this process holds sleeps until the release.
    fn lock_waiter_stays_asleep(m) {
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap();
        let (a, b) = pipe().unwrap();
        let mut p = start(m, acquire_and_report, (lock.clone(), b));
        stays_asleep("Lock::acquire", p.pid().unwrap());
        lock.release().unwrap();
        assert_eq!(a.recv::<String>().unwrap(), "Ok(())");
        join_ok(&mut p);
    }

    /// A child holds the lock and is killed; a child asleep on it takes it over at once.
    fn lock_takeover_after_holder_killed(m) {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut holder = start(m, hold_lock, (lock.clone(), held.clone()));
        assert!(held.wait(Some(LONG)));
        let (a, b) = pipe().unwrap();
        let mut waiter = start(m, acquire_and_report, (lock.clone(), b));
        stays_asleep("Lock::acquire, the holder a child", waiter.pid().unwrap());
        let killed = Instant::now();
        holder.kill().unwrap();
        assert!(a.poll(Some(LONG)).unwrap(), "the waiter never took the lock over");
        latency("Lock::acquire asleep when the holder was killed", m, killed.elapsed());
        assert_eq!(a.recv::<String>().unwrap(), "Err(OwnerDied)");
        holder.join().unwrap();
        join_ok(&mut waiter);
    }

    /// Two children in `Queue::get` on an empty queue (one holds the get lock and waits for
    /// data, the other waits for the lock) sleep; killing the first hands the lock to the
    /// second at once, which then gets the item put.
    fn queue_getters_stay_asleep_and_take_over(m) {
        let q = Queue::<u32>::new().unwrap();
        let (a1, b1) = pipe().unwrap();
        let mut first = start(m, get_and_report, (q.clone(), b1));
        asleep(first.pid().unwrap());
        let (a2, b2) = pipe().unwrap();
        let mut second = start(m, get_and_report, (q.clone(), b2));
        stays_asleep("Queue::get, waiting for the get lock", second.pid().unwrap());
        stays_asleep("Queue::get, waiting for data", first.pid().unwrap());
        let killed = Instant::now();
        kill_and_join(&mut first);
        q.put(7).unwrap();
        assert!(a2.poll(Some(LONG)).unwrap(), "the second getter never got the item");
        latency("Queue::get asleep on the get lock when its holder was killed", m, killed.elapsed());
        assert_eq!(a2.recv::<String>().unwrap(), "Ok(7)");
        join_ok(&mut second);
        drop(a1);
    }

    /// Two children wait at a barrier of three and sleep; one is killed: the other is told
    /// (`BrokenBarrier`) at once.
    fn barrier_waiters_stay_asleep_and_see_a_death(m) {
        let b = Barrier::new(3).unwrap();
        let (a1, b1) = pipe().unwrap();
        let mut first = start(m, wait_and_report, (b.clone(), b1));
        let (a2, b2) = pipe().unwrap();
        let mut second = start(m, wait_and_report, (b.clone(), b2));
        let deadline = Instant::now() + LONG;
        while b.n_waiting() < 2 {
            assert!(Instant::now() < deadline, "the parties never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        stays_asleep("Barrier::wait, the first", first.pid().unwrap());
        stays_asleep("Barrier::wait, the second", second.pid().unwrap());
        // The first to arrive is killed one time, the second the next: both roles are covered
        // over the start methods.
        let (dead, live, answer) =
            if m == StartMethod::Spawn { (&mut first, &mut second, &a2) } else { (&mut second, &mut first, &a1) };
        let killed = Instant::now();
        dead.kill().unwrap();
        assert!(answer.poll(Some(LONG)).unwrap(), "the live party never heard");
        latency("Barrier::wait asleep when a party was killed", m, killed.elapsed());
        assert_eq!(answer.recv::<String>().unwrap(), "Err(BrokenBarrier)");
        dead.join().unwrap();
        join_ok(live);
        let (r, took) = timed(|| b.wait_timeout(Duration::from_secs(5)));
        assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?} after {took:?}");
    }
}

/// A thread of this process waits on a lock a child holds (so the death watcher runs here),
/// then a fork child starts: the watcher is not counted in the warning about threads. Run in a fresh process, whose stderr
/// is read.
#[test]
fn the_watcher_thread_does_not_make_fork_warn() {
    let name = "the_watcher_thread_does_not_make_fork_warn";
    if !common::in_fresh_process(name) {
        let out = common::fresh_process(name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the run failed: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tasks: usize =
            stdout.split("TASKS=").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok()).unwrap();
        // The test harness runs the body on a thread of its own, which may warn; the
        // watcher must not be counted.
        assert!(tasks >= 3, "no watcher thread ({tasks} threads)");
        assert!(!stderr.contains(&format!("has {tasks} threads")), "the watcher was counted: {stderr}");
        return;
    }
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder = start(StartMethod::Spawn, hold_lock, (lock.clone(), held.clone()));
    assert!(held.wait(Some(LONG)));
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.acquire_timeout(Duration::from_millis(300)).unwrap())
    };
    assert!(!waiter.join().unwrap(), "the lock was free");
    println!("TASKS={}", std::fs::read_dir("/proc/self/task").unwrap().count());
    let mut p = start(StartMethod::Fork, nothing, ());
    join_ok(&mut p);
    kill_and_join(&mut holder);
}

/// Waiting leaves no descriptor open: the pidfds of the watched processes are closed when
/// no one watches them (the run-in-a-guard check of `start_methods!` covers the cases above;
/// this counts them directly, over many waits).
#[test]
fn waits_leave_no_descriptors() {
    common::isolated("waits_leave_no_descriptors", || {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let mut holder = start(StartMethod::Spawn, hold_lock, (lock.clone(), held.clone()));
        assert!(held.wait(Some(LONG)));
        // The first wait starts the watcher, whose epoll set stays.
        assert!(!lock.acquire_timeout(Duration::from_millis(10)).unwrap());
        let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = count();
        for _ in 0..20 {
            assert!(!lock.acquire_timeout(Duration::from_millis(5)).unwrap());
        }
        assert_eq!(count(), before, "descriptors left open by waits");
        kill_and_join(&mut holder);
        assert!(matches!(lock.acquire(), Err(Error::OwnerDied)));
        assert_eq!(count(), before, "descriptors left open by the takeover");
    });
}
