//! Body of `seed_lock` (and a step of the tour): the seed notes' `l = Lock(); l.acquire();
//! ...; l.release()`, then the same lock keeping several processes' output whole.

use multiprocess::{Error, Lock, Process, Semaphore};
use std::io::Write;

/// One worker: holds the lock while it writes its two lines, so no other worker's lines
/// come between them (Python's `with l: print(...)`).
fn worker(lock: Lock, i: u32, done: Semaphore) -> multiprocess::Result<()> {
    {
        let _held = lock.lock()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "  worker {i}: has the lock").map_err(Error::Io)?;
        writeln!(out, "  worker {i}: lets it go").map_err(Error::Io)?;
        out.flush().map_err(Error::Io)?;
    }
    done.release()
}

/// Locks and unlocks by hand as the notes do, then lets three workers share the lock.
pub fn run() -> multiprocess::Result<()> {
    let l = Lock::new()?;
    l.acquire()?; // 锁住: lock
    for _ in 0..5 {}
    assert!(l.locked());
    l.release()?; // 释放: release
    assert!(!l.locked());
    println!("acquire() ... release() by hand: the lock is free again ({l:?})");

    // Releasing a free lock is an error, as in Python (ValueError there).
    assert!(matches!(l.release(), Err(Error::ReleasedTooManyTimes)));
    println!("a second release() is Err(ReleasedTooManyTimes), Python's ValueError");

    let done = Semaphore::new(0)?;
    let mut workers = Vec::new();
    for i in 0..3 {
        let mut p = Process::new(worker, (l.clone(), i, done.clone()));
        p.start()?;
        workers.push(p);
    }
    for _ in &workers {
        done.acquire()?;
    }
    for p in &mut workers {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(!l.locked());
    println!("three workers took turns: each pair of lines above is unbroken");
    Ok(())
}
