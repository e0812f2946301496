//! A `Condition` with hundreds of waiting processes (CPython's conformance suite wakes 200):
//! `notify_all` wakes every one, `notify(n)` exactly `n`, and waiters killed while they wait
//! are passed over. The table of waiting processes has room for 262 144 of them; that
//! boundary is checked by the unit test `a_full_table_is_an_error_naming_its_capacity` in
//! `src/synchronize/condition.rs`, which fills the table by hand (as many processes would be
//! far too many to start here).
//!
//! The 200-process cases fork (the cheapest way to make that many); the mixed case runs 70
//! waiters, more than the 64 the table once held, under every start method.
mod common;
use common::{start, timed};
use multiprocess::*;
use std::time::{Duration, Instant};

/// How long a test waits for what should come at once before calling it a hang (200
/// processes on a loaded 2-core machine).
const LONG: Duration = Duration::from_secs(60);
/// The probes' timeout: 0.2 s, which must take ≥ 0.19 s and ≤ 1 s.
const T02: Duration = Duration::from_millis(200);

/// Takes the condition's lock, says so (`registered`), waits to be notified (for `LONG` at
/// most) and says so (`woken`); fails unless notified.
fn waiter(c: Condition, registered: Semaphore, woken: Semaphore) -> Result<()> {
    let _held = c.lock()?;
    registered.release()?;
    assert!(c.wait(Some(LONG))?, "not notified");
    woken.release()
}

/// `n` processes waiting on one condition, all registered (each said so holding the lock,
/// and the lock came back to us after the last one let it go inside `wait`).
struct Waiters {
    c: Condition,
    woken: Semaphore,
    children: Vec<Process>,
}

impl Waiters {
    fn start(m: StartMethod, n: usize) -> Waiters {
        Waiters::on(Condition::new().unwrap(), m, n)
    }

    fn on(c: Condition, m: StartMethod, n: usize) -> Waiters {
        let registered = Semaphore::new(0).unwrap();
        let woken = Semaphore::new(0).unwrap();
        let children: Vec<Process> =
            (0..n).map(|_| start(m, waiter, (c.clone(), registered.clone(), woken.clone()))).collect();
        for i in 0..n {
            assert!(registered.acquire_timeout(LONG), "only {i} of {n} children came to wait");
        }
        drop(c.lock().unwrap());
        Waiters { c, woken, children }
    }

    fn notify(&self, n: Option<u32>) {
        let _held = self.c.lock().unwrap();
        match n {
            Some(n) => self.c.notify(n).unwrap(),
            None => self.c.notify_all().unwrap(),
        }
    }

    /// Waits until `n` have said they were woken, then a little longer to see that no more
    /// do.
    fn expect_woken(&self, n: u32) {
        let deadline = Instant::now() + LONG;
        while self.woken.get_value() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(self.woken.get_value(), n, "woken");
    }

    /// Joins every child: each exits 0 (it was notified once), but those killed.
    fn join_all(&mut self) {
        for p in &mut self.children {
            p.join().unwrap();
            assert!(
                [Some(0), Some(-libc::SIGKILL)].contains(&p.exitcode()),
                "child {} failed: {:?}",
                p.name(),
                p.exitcode()
            );
        }
    }

    /// No notification is left over: a wait of ours times out, on time.
    fn nothing_left(&self) {
        let _held = self.c.lock().unwrap();
        let (r, took) = timed(|| self.c.wait(Some(T02)));
        assert!(!r.unwrap(), "a wake-up was left over");
        common::assert_timeout_elapsed(took, T02);
        assert_eq!(format!("{:?}", self.c).rsplit(", ").next(), Some("0)>"), "{:?}", self.c);
    }
}

/// 200 processes wait; one `notify_all` wakes each of them, once.
#[test]
fn condition_notify_all_wakes_200_processes() {
    common::run_case(StartMethod::Fork, |m| {
        let mut w = Waiters::start(m, 200);
        assert_eq!(format!("{:?}", w.c).rsplit(", ").next(), Some("200)>"), "{:?}", w.c);
        w.notify(None);
        w.expect_woken(200);
        w.join_all();
        w.nothing_left();
    });
}

/// 200 processes wait; `notify(37)` wakes exactly 37 of them, `notify(63)` 63 more, and
/// `notify_all` the other 100.
#[test]
fn condition_notify_n_wakes_exactly_n_of_200() {
    common::run_case(StartMethod::Fork, |m| {
        let mut w = Waiters::start(m, 200);
        w.notify(Some(37));
        w.expect_woken(37);
        w.notify(Some(63));
        w.expect_woken(100);
        w.notify(None);
        w.expect_woken(200);
        w.join_all();
        w.nothing_left();
    });
}

/// 200 processes wait and 20 of them are killed: `notify(180)` goes to the 180 live ones,
/// each once, and nothing is left over for a later waiter. Then 200 more processes wait in
/// the places of the first (the dead ones' among them), and `notify_all` wakes them all.
#[test]
fn condition_200_waiters_some_killed_are_passed_over() {
    common::run_case(StartMethod::Fork, |m| {
        let mut w = Waiters::start(m, 200);
        for p in w.children.iter_mut().step_by(10) {
            p.kill().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        }
        w.notify(Some(180));
        w.expect_woken(180);
        w.join_all();
        w.nothing_left();

        let mut more = Waiters::on(w.c.clone(), m, 200);
        more.notify(None);
        more.expect_woken(200);
        more.join_all();
        more.nothing_left();
    });
}

start_methods! {
    /// 70 processes wait (more than the 64 the table once held); `notify(30)` wakes 30 and
    /// `notify_all` the other 40.
    fn condition_70_processes(m) {
        let mut w = Waiters::start(m, 70);
        w.notify(Some(30));
        w.expect_woken(30);
        w.notify(None);
        w.expect_woken(70);
        w.join_all();
        w.nothing_left();
    }
}
