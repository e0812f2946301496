//! Body of `seed_join_terminate` (and step 3 of the tour): the seed notes on `join([timeout])`,
//! `exitcode` and `terminate()`.

use multiprocess::{Error, Process};
use std::time::{Duration, Instant};

/// A child that sleeps for `secs` seconds: long enough to be caught running.
fn nap(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

/// A child that ends with exit code `code` (Python's `sys.exit(code)`).
fn quit(code: i32) {
    multiprocess::exit(code);
}

/// Shows join with and without a timeout, `exitcode`, `terminate` and joining many times.
pub fn run() -> multiprocess::Result<()> {
    // Note 2: join only after start. Python raises an AssertionError; we return an error.
    let mut p = Process::new(nap, (30u64,));
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    println!("join() before start(): error, as the notes say (join must come after start)");

    p.start()?;
    // join(timeout) blocks at most `timeout` and returns either way; exitcode tells which.
    let t = Instant::now();
    p.join_timeout(Duration::from_millis(200))?;
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(200), "join_timeout returned early: {waited:?}");
    assert_eq!(p.exitcode(), None, "still running after the timeout");
    assert!(p.is_alive());
    println!("join_timeout(200ms) on a 30s nap: returned after the timeout, exitcode = {:?}", p.exitcode());

    // terminate() sends SIGTERM; the exit code of a process killed by signal N is -N.
    p.terminate()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(-15));
    println!("terminate() then join(): exitcode = {:?} (killed by SIGTERM)", p.exitcode());

    // Note 3: a process can be joined many times; later joins return at once.
    for _ in 0..3 {
        p.join()?;
        p.join_timeout(Duration::from_secs(1))?;
    }
    assert_eq!(p.exitcode(), Some(-15));
    println!("joined 6 more times: fine, exitcode still {:?}", p.exitcode());

    // join(timeout) also returns as soon as the child ends, well before the timeout.
    let mut q = Process::new(quit, (3,));
    q.start()?;
    let t = Instant::now();
    q.join_timeout(Duration::from_secs(60))?;
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(q.exitcode(), Some(3));
    println!("join_timeout(60s) on a child calling exit(3): returned when it ended, exitcode = {:?}", q.exitcode());
    Ok(())
}
