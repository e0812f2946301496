//! A fork child of a process whose other threads are inside the crate at the moment of the
//! fork (listing and reaping children, reading the start method, making shared objects)
//! finds none of the crate's locks held: it makes shared objects, starts and joins a child of
//! its own, and exits. A lock another thread held at the fork would stay locked in the child
//! for ever (it has no such thread to let go).
mod common;

use multiprocess::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn nothing() {}

/// Makes shared objects and starts a fork grandchild and joins it: takes the locks these
/// take.
fn start_a_grandchild() -> Result<()> {
    let v = Value::new(7u64)?;
    let q = SimpleQueue::<u64>::new()?;
    q.put(v.get())?;
    assert_eq!(q.get()?, 7);
    let _ = current_process().name().to_string();
    let mut g = get_context(StartMethod::Fork).process(nothing, ());
    g.start()?;
    g.join_timeout(Duration::from_secs(10))?;
    match g.exitcode() {
        Some(0) => Ok(()),
        code => Err(Error::InvalidArgument(format!("grandchild exit code {code:?}"))),
    }
}

#[test]
fn fork_children_find_no_lock_held_by_the_parents_other_threads() {
    let stop = Arc::new(AtomicBool::new(false));
    // Threads that keep taking the locks a start, a reap and a start-method lookup take.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = active_children();
                    let _ = get_start_method();
                    let _ = current_process().name().to_string();
                    drop(Value::new(1u64).unwrap());
                }
            })
        })
        .collect();
    for round in 0..200 {
        let mut p = get_context(StartMethod::Fork).process(start_a_grandchild, ());
        p.start().unwrap();
        p.join_timeout(Duration::from_secs(20)).unwrap();
        if p.is_alive() {
            let pid = p.pid();
            p.kill().unwrap();
            p.join().unwrap();
            panic!("round {round}: fork child {pid:?} still running after 20 s: it waits on a lock held at the fork");
        }
        assert_eq!(p.exitcode(), Some(0), "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
}
