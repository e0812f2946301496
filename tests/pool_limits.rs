//! Per-call limits on the Pool (issue 17 point 3): a timeout per call beside the pool's, a
//! memory limit per worker, a worker exit hook, and the default size.

mod common;
use multiprocess::{Error, Pool, StartMethod};
use std::time::{Duration, Instant};

fn pool(m: StartMethod, n: usize) -> multiprocess::PoolBuilder {
    Pool::builder().processes(n).start_method(m)
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Holds `mib` MiB (touched) for `ms`.
fn hog(mib: usize, ms: u64) -> usize {
    let v = vec![1u8; mib << 20];
    std::thread::sleep(Duration::from_millis(ms));
    v.iter().step_by(4096).map(|&b| b as usize).sum()
}

/// Keeps `mib` MiB (touched) for the life of the worker.
fn leak(mib: usize) -> usize {
    Box::leak(vec![1u8; mib << 20].into_boxed_slice()).len()
}

/// Where the exit hooks of the pools of process `parent` under `method` write (a hook has no
/// arguments: it finds the file from who started it, which holds under every start method,
/// where an environment variable would not reach a fork server's children).
fn notes_path(parent: u32, method: StartMethod) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mp_exit_notes_{parent}_{method}"))
}

/// Appends this worker's pid to its pool's notes.
fn note_exit() {
    use std::io::Write;
    let parent = multiprocess::parent_process().unwrap().pid();
    let path = notes_path(parent, multiprocess::get_start_method());
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    // One write of the whole line: two workers leaving at once must not interleave their
    // digits and newlines (`writeln!` on a file writes its pieces one at a time).
    f.write_all(format!("{}\n", std::process::id()).as_bytes()).unwrap();
}

fn pid() -> u32 {
    std::process::id()
}

const LONG: Duration = Duration::from_secs(20);

start_methods! {
    /// A call's own timeout stops its task (the worker is replaced), leaves the others, and
    /// counts from when the task starts, not while it waits in the queue.
    fn a_timeout_per_call(m) {
        let p = pool(m, 1).build().unwrap();
        let queued_long = p.apply_async(nap, (400,)).unwrap();
        // Waits 400 ms in the queue, then runs 50 ms: within its 300 ms.
        let patient = p.apply_async_timeout(nap, (50,), Duration::from_millis(300)).unwrap();
        let slow = p.submit_timeout(nap, (10_000,), Duration::from_millis(300)).unwrap();
        let t = Instant::now();
        assert_eq!(queued_long.get_timeout(LONG).unwrap(), 400);
        assert_eq!(patient.get_timeout(LONG).unwrap(), 50);
        assert!(matches!(slow.get_timeout(LONG), Err(Error::Timeout)));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(p.apply(nap, (1,)).unwrap(), 1);
    }

    /// With the pool's timeout too, the shorter applies, either way round.
    fn the_shorter_timeout_applies(m) {
        let p = pool(m, 2).task_timeout(Duration::from_millis(300)).build().unwrap();
        let longer_own = p.apply_async_timeout(nap, (5_000,), Duration::from_secs(30)).unwrap();
        let shorter_own = p.apply_async_timeout(nap, (5_000,), Duration::from_millis(100)).unwrap();
        let t = Instant::now();
        assert!(matches!(shorter_own.get_timeout(LONG), Err(Error::Timeout)));
        let shorter_took = t.elapsed();
        assert!(matches!(longer_own.get_timeout(LONG), Err(Error::Timeout)));
        assert!(t.elapsed() < Duration::from_secs(3), "the pool's 300 ms did not apply: {:?}", t.elapsed());
        assert!(shorter_took >= Duration::from_millis(90), "{shorter_took:?}");
    }

    /// A worker past the memory limit during its task is stopped: the task fails with
    /// `MemoryLimit`, the pool keeps its size and runs the next task.
    fn memory_limit_during_a_task(m) {
        let p = pool(m, 2).memory_limit(200 << 20).build().unwrap();
        assert_eq!(p.apply(hog, (16, 10)).unwrap(), 16 << 8);
        match p.apply(hog, (400, 2_000)) {
            Err(Error::MemoryLimit { limit }) => assert_eq!(limit, 200 << 20),
            other => panic!("{other:?}"),
        }
        assert!(common::eventually_within(Duration::from_secs(2), || p.worker_pids().len() == 2));
        assert_eq!(p.apply(hog, (16, 10)).unwrap(), 16 << 8);
    }

    /// A worker that kept too much after its task is replaced; the task's own result stands
    /// if it finished before the pool looked.
    fn memory_limit_replaces_a_leaking_worker(m) {
        let p = pool(m, 1).memory_limit(100 << 20).build().unwrap();
        let before = p.apply(pid, ()).unwrap();
        match p.apply(leak, (300,)) {
            Ok(n) => assert_eq!(n, 300 << 20),
            Err(Error::MemoryLimit { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(common::eventually_within(Duration::from_secs(2), || p.worker_pids().first().is_some_and(|&w| w != before)));
        assert_ne!(p.apply(pid, ()).unwrap(), before);
    }

    /// The exit hook runs in each worker as it leaves normally (at close, and after its
    /// maxtasksperchild), not in one that is killed.
    fn the_worker_exit_hook(m) {
        let notes = notes_path(std::process::id(), m);
        let _ = std::fs::remove_file(&notes);
        let p = pool(m, 2).maxtasksperchild(2).worker_exit(note_exit).build().unwrap();
        let pids: Vec<u32> = (0..6).map(|_| p.apply(pid, ()).unwrap()).collect();
        p.shutdown(false).unwrap();
        let noted: Vec<u32> = std::fs::read_to_string(&notes).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        let mut workers = pids.clone();
        workers.sort();
        workers.dedup();
        let mut noted_sorted = noted.clone();
        noted_sorted.sort();
        // Every worker that ran tasks left through the hook (those retired by
        // maxtasksperchild and those closed), once each.
        assert!(workers.iter().all(|w| noted.contains(w)), "ran {workers:?}, noted {noted:?}");
        noted_sorted.dedup();
        assert_eq!(noted_sorted.len(), noted.len(), "a hook ran twice: {noted:?}");
        let _ = std::fs::remove_file(&notes);
    }
}

/// A killed worker does not run the hook.
#[test]
fn the_exit_hook_does_not_run_in_a_killed_worker() {
    common::isolated("the_exit_hook_does_not_run_in_a_killed_worker", || {
        // Alone in its process (see `common::isolated`): no other fork pool writes here.
        let notes = notes_path(std::process::id(), StartMethod::Fork);
        let _ = std::fs::remove_file(&notes);
        let p = pool(StartMethod::Fork, 1).worker_exit(note_exit).build().unwrap();
        let r = p.submit(nap, (10_000,)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(r.cancel());
        p.terminate().unwrap();
        assert!(!notes.exists(), "a killed worker ran its exit hook");
    });
}

/// The default size is the CPUs this process may run on (CPython 3.13).
#[test]
fn default_size_is_process_cpu_count() {
    let p = Pool::builder().build().unwrap();
    assert_eq!(p.processes(), multiprocess::process_cpu_count());
    assert!(matches!(Pool::builder().memory_limit(0).build(), Err(Error::InvalidArgument(_))));
}
