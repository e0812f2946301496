//! Pool failures fail one task, never the pool: a panic, a worker killed (by a signal from
//! outside, by itself, by `exit`), a task past the timeout, a failing initializer. CPython's
//! Pool hangs for ever on a task whose worker died (POOL-38); ours reports it and goes on.
mod common;
use common::timed;
use multiprocess::*;
use std::time::Duration;

/// How long a test waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(20);

fn square(x: u64) -> u64 {
    x * x
}

fn panics_on_three(x: u64) -> u64 {
    if x == 3 {
        panic!("three is right out");
    }
    x
}

/// Kills its own worker with SIGKILL.
fn kill_self() -> u32 {
    // SAFETY: kill(2) on our own pid with a plain signal number.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!()
}

/// Exits its worker with code 7.
fn exit_seven() -> u32 {
    multiprocess::exit(7)
}

/// Aborts its worker.
fn abort() -> u32 {
    std::process::abort()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid() -> u32 {
    std::process::id()
}

fn failing_init() {
    panic!("no database");
}

/// Notes `i` in the file at `path` (one line, appended), then kills its own worker if `i` is
/// `die`.
fn note_or_die(i: u64, path: String, die: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
    f.write_all(format!("{i}\n").as_bytes()).unwrap();
    drop(f);
    if i == die {
        // SAFETY: kill(2) on our own pid with a plain signal number.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    i
}

fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(m).build().unwrap()
}

start_methods! {
    /// A panic fails only its task, with its message and location; the pool goes on.
    fn panic_fails_only_its_task(m) {
        let p = pool(m, 2);
        match p.apply(panics_on_three, (3,)) {
            Err(Error::TaskPanicked { message }) => {
                assert!(message.contains("three is right out"), "{message}");
                assert!(message.contains("pool_failures.rs"), "no location in {message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.apply(square, (4,)).unwrap(), 16);
        // In a map, the first failure is the map's (POOL-36).
        assert!(matches!(p.map(panics_on_three, 0..10), Err(Error::TaskPanicked { .. })));
        let results: Vec<Result<u64>> = p.imap(panics_on_three, 0..6).unwrap().collect();
        assert!(matches!(results[3], Err(Error::TaskPanicked { .. })));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
        p.close();
        p.join().unwrap();
    }

    /// A task that SIGKILLs its own worker fails with WorkerDied(-9); the worker is replaced,
    /// and the pool still has its two workers (CPython hangs: POOL-38).
    fn worker_killed_by_its_task(m) {
        let p = pool(m, 2);
        let before = p.worker_pids();
        let (r, took) = timed(|| p.apply(kill_self, ()));
        assert!(matches!(r, Err(Error::WorkerDied { exitcode: -9 })), "{r:?}");
        assert!(took < LONG);
        assert_eq!(p.map(square, 0..20).unwrap()[19], 361);
        let after = p.worker_pids();
        assert_eq!(after.len(), 2);
        assert_ne!(before, after, "the dead worker was replaced");
        p.close();
        p.join().unwrap();
    }

    /// A worker that exits, or aborts, fails only its task, with its exit code.
    fn worker_exit_and_abort(m) {
        let p = pool(m, 1);
        assert!(matches!(p.apply(exit_seven, ()), Err(Error::WorkerDied { exitcode: 7 })));
        assert!(matches!(p.apply(abort, ()), Err(Error::WorkerDied { exitcode: -6 })));
        assert_eq!(p.apply(square, (9,)).unwrap(), 81);
    }

    /// A worker SIGKILLed from outside while it runs a long task: that task fails, the
    /// others (queued behind it on the same worker) still complete.
    fn worker_killed_from_outside(m) {
        let p = pool(m, 1);
        let long = p.apply_async(nap, (10_000,)).unwrap();
        let queued: Vec<_> = (0..3).map(|i| p.apply_async(square, (i,)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let victim = p.worker_pids()[0];
        // SAFETY: kill(2) with a plain signal on the pool's own worker, alive (its task naps).
        assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
        let (r, took) = timed(|| long.get_timeout(LONG));
        assert!(matches!(r, Err(Error::WorkerDied { exitcode: -9 })), "{r:?}");
        assert!(took < Duration::from_secs(2), "noticed after {took:?}");
        let squares: Vec<u64> = queued.iter().map(|r| r.get_timeout(LONG).unwrap()).collect();
        assert_eq!(squares, vec![0, 1, 4]);
        assert_ne!(p.worker_pids(), vec![victim]);
    }

    /// Chunks sent to workers that had already died, before the pool noticed, were never
    /// taken: they run on the replacements, and none fails. Only a chunk a worker had taken
    /// dies with it.
    fn chunks_sent_to_dead_workers_run_elsewhere(m) {
        let p = pool(m, 2);
        assert_eq!(p.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
        for _ in 0..3 {
            let victims = p.worker_pids();
            for &v in &victims {
                // SAFETY: kill(2) with a plain signal on the pool's own idle worker.
                assert_eq!(unsafe { libc::kill(v as i32, libc::SIGKILL) }, 0);
            }
            assert!(common::eventually_within(LONG, || victims.iter().all(|&v| !common::pid_alive(v))));
            // Both are dead now; the pool checks its workers every 10 ms, so most of these
            // chunks go to the dead ones first.
            let r = p.map_async_chunked(square, 0..40u64, 1).unwrap();
            assert_eq!(r.get_timeout(LONG).unwrap(), (0..40u64).map(|x| x * x).collect::<Vec<_>>());
            assert!(p.worker_pids().iter().all(|w| !victims.contains(w)));
        }
    }

    /// A worker killed by one of a map's many tiny chunks (which a quick worker is sent
    /// several at a time): that chunk fails with WorkerDied, and every other chunk runs
    /// exactly once (none is lost, none runs twice).
    fn worker_killed_in_a_map_of_tiny_chunks(m) {
        let path = std::env::temp_dir()
            .join(format!("multiprocess-tiny-chunks-{}-{m}", std::process::id()))
            .to_string_lossy()
            .into_owned();
        let _ = std::fs::remove_file(&path);
        let p = pool(m, 2);
        assert_eq!(p.map(square, 0..100u64).unwrap()[9], 81);
        let items: Vec<(u64, String, u64)> = (0..3000u64).map(|i| (i, path.clone(), 2000)).collect();
        let r = p.starmap_async_chunked(note_or_die, items, 1).unwrap();
        assert!(matches!(r.get_timeout(LONG), Err(Error::WorkerDied { exitcode: -9 })));
        p.close();
        p.join().unwrap();
        let notes = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut runs = vec![0u32; 3000];
        for line in notes.lines() {
            runs[line.parse::<usize>().unwrap()] += 1;
        }
        let wrong: Vec<_> = runs.iter().enumerate().filter(|&(_, &n)| n != 1).collect();
        assert!(wrong.is_empty(), "chunks run other than once: {wrong:?}");
    }

    /// A task past the pool's timeout is killed with its worker and fails with Timeout
    /// (after at least the timeout, within a second of it); a new worker takes over.
    fn task_timeout_kills_and_replaces(m) {
        let p = Pool::builder().processes(1).start_method(m).task_timeout(Duration::from_millis(300)).build().unwrap();
        let before = p.worker_pids();
        let (r, took) = timed(|| p.apply(nap, (10_000,)));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1300), "{took:?}");
        assert_eq!(p.apply(nap, (10,)).unwrap(), 10);
        assert_ne!(p.worker_pids(), before);
    }

    /// A failing initializer is reported on the tasks, not retried for ever.
    fn failing_initializer_is_reported(m) {
        let p = Pool::builder().processes(2).start_method(m).initializer(failing_init, ()).build().unwrap();
        let (r, took) = timed(|| p.apply(square, (2,)));
        match r {
            Err(Error::TaskPanicked { message }) => assert!(message.contains("no database"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(took < LONG);
        assert!(matches!(p.map(square, 0..3), Err(Error::TaskPanicked { .. })));
    }

    /// maxtasksperchild: each worker is replaced after its tasks (POOL-26, POOL-37).
    fn maxtasksperchild_replaces_workers(m) {
        let p = Pool::builder().processes(2).start_method(m).maxtasksperchild(1).build().unwrap();
        let pids: Vec<u32> = (0..4).map(|_| p.apply(pid, ()).unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
        assert_eq!(distinct.len(), 4, "{pids:?}");
        p.close();
        p.join().unwrap();
    }

    /// terminate() kills busy workers at once; their tasks fail; join returns (POOL-15).
    fn terminate_busy_pool(m) {
        let p = pool(m, 2);
        let r = p.map_async_chunked(nap, vec![300_000; 100], 1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (_, took) = timed(|| p.terminate().unwrap());
        assert!(took < Duration::from_secs(2), "{took:?}");
        p.join().unwrap();
        assert!(r.get_timeout(LONG).is_err());
        assert!(p.worker_pids().is_empty());
    }
}

/// Makes a pool under `m`, reports its workers' pids, and waits to be interrupted.
fn pool_owner(m: StartMethod, report: Connection) -> Result<()> {
    let p = Pool::builder().processes(2).start_method(m).build()?;
    report.send(&p.worker_pids())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    /// SIGINT to a process that owns a pool ends it and its workers: no orphans.
    fn sigint_in_the_parent_leaves_no_workers(m) {
        let (r, w) = pipe().unwrap();
        let mut owner = common::start(m, pool_owner, (m, w));
        let pids: Vec<u32> = r.recv().unwrap();
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|&pid| common::pid_alive(pid)));
        owner.interrupt().unwrap();
        owner.join().unwrap();
        assert_eq!(owner.exitcode(), Some(-libc::SIGINT));
        let t = std::time::Instant::now();
        while pids.iter().any(|&pid| common::pid_alive(pid)) {
            assert!(t.elapsed() < LONG, "workers {pids:?} outlived their pool's owner");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
