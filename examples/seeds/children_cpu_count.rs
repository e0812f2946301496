//! Body of `seed_children_cpu_count` (and step 4 of the tour): the seed notes'
//! `active_children()` and `cpu_count()`.

use multiprocess::{Connection, Process, active_children, cpu_count, process_cpu_count};
use std::time::{Duration, Instant};

/// A worker that stays alive until the parent says "go" on its pipe end.
fn worker(conn: Connection) -> multiprocess::Result<()> {
    // The timeout is only a safety net: if the parent fails a check and never says "go",
    // the worker still ends instead of being waited for forever at the parent's exit.
    if !conn.poll(Some(Duration::from_secs(60)))? {
        return Err(multiprocess::Error::Timeout);
    }
    let word: String = conn.recv()?;
    assert_eq!(word, "go");
    Ok(())
}

/// Starts one worker per CPU (at most 4), lists them, lets them finish, lists again.
pub fn run() -> multiprocess::Result<()> {
    let cpus = cpu_count();
    let usable = process_cpu_count();
    println!("cpu_count() = {cpus}, process_cpu_count() = {usable} (CPUs this process may run on)");
    assert!(usable >= 1 && usable <= cpus);
    let std_count = std::thread::available_parallelism()?.get();
    assert!(std_count <= usable, "std sees {std_count} CPUs, more than the affinity mask allows");

    // "One process per core is, in theory, the most efficient": one worker per usable CPU,
    // capped at 4 to keep the example quick on a big machine.
    let n = usable.min(4);
    assert!(active_children().is_empty(), "no children before we start any");
    let mut workers = Vec::new();
    let mut conns = Vec::new();
    for i in 0..n {
        let (parent_end, child_end) = multiprocess::pipe()?;
        let mut p = Process::new(worker, (child_end,)).with_name(format!("worker-{i}"));
        p.start()?;
        workers.push(p);
        conns.push(parent_end);
    }

    let mut names: Vec<String> = active_children().iter().map(|c| c.name().to_string()).collect();
    names.sort();
    println!("active_children() while {n} workers wait: {names:?}");
    let expected: Vec<String> = (0..n).map(|i| format!("worker-{i}")).collect();
    assert_eq!(names, expected);
    for p in &workers {
        assert!(active_children().iter().any(|c| Some(c.pid()) == p.pid()));
    }

    for conn in &conns {
        conn.send("go")?;
    }
    // active_children() also reaps children that have ended: call it until the list is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !active_children().is_empty() {
        assert!(Instant::now() < deadline, "workers did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("active_children() after they finished: []");
    for p in &mut workers {
        assert_eq!(p.exitcode(), Some(0), "{} failed", p.name());
        p.join()?; // already reaped: returns at once
    }
    println!("all {n} workers exited with code 0");
    Ok(())
}
