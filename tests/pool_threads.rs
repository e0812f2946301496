//! A pool shared by threads, an endless `imap`, and results outliving their pool: nothing
//! hangs, nothing is lost.
mod common;
use multiprocess::*;
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

start_methods! {
    /// Four threads submit at once through one pool; every result is right.
    fn threads_share_a_pool(m) {
        let pool = Arc::new(Pool::builder().processes(2).start_method(m).build().unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let xs: Vec<u64> = (t * 1000..t * 1000 + 500).collect();
                    let want: Vec<u64> = xs.iter().map(|x| x * x).collect();
                    assert_eq!(pool.map(square, xs.clone()).unwrap(), want);
                    let asyncs: Vec<_> = xs.iter().take(50).map(|&x| pool.apply_async(square, (x,)).unwrap()).collect();
                    for (r, x) in asyncs.iter().zip(&xs) {
                        assert_eq!(r.get_timeout(LONG).unwrap(), x * x);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// Threads submit thousands of tiny tasks at once, while others' results are being filed
    /// (a submit that finds the pool's state held leaves its task to the holder): every task
    /// runs once and every result comes back, awaited or waited for.
    fn many_threads_hand_over_tiny_submits(m) {
        let pool = Arc::new(Pool::builder().processes(2).start_method(m).build().unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let xs: Vec<u64> = (t * 100_000..t * 100_000 + 3_000).collect();
                    let results: Vec<_> = xs.iter().map(|&x| pool.submit(square, (x,)).unwrap()).collect();
                    let (awaited, waited) = results.split_at(results.len() / 2);
                    let sum = futures::executor::block_on(async {
                        let mut sum = 0u64;
                        for r in awaited {
                            sum += r.clone().await.unwrap();
                        }
                        sum
                    });
                    let sum = sum + waited.iter().map(|r| r.get_timeout(LONG).unwrap()).sum::<u64>();
                    assert_eq!(sum, xs.iter().map(|x| x * x).sum::<u64>());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(pool.worker_pids().len(), 2);
    }

    /// Submits racing a `terminate()` from another thread: each result is its value or
    /// `PoolNotRunning`, none waits for ever (a chunk handed over as the manager ended is
    /// failed by whoever takes it in).
    fn submits_racing_terminate_all_finish(m) {
        for _ in 0..5 {
            let pool = Arc::new(Pool::builder().processes(2).start_method(m).build().unwrap());
            let submitter = {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut results = Vec::new();
                    for x in 0..2_000u64 {
                        match pool.submit(square, (x,)) {
                            Ok(r) => results.push((x, r)),
                            Err(Error::PoolNotRunning) => break,
                            Err(e) => panic!("submit: {e}"),
                        }
                    }
                    results
                })
            };
            std::thread::sleep(Duration::from_millis(2));
            pool.terminate().unwrap();
            for (x, r) in submitter.join().unwrap() {
                match r.get_timeout(LONG) {
                    Ok(v) => assert_eq!(v, x * x),
                    Err(Error::PoolNotRunning) => {}
                    Err(e) => panic!("task {x}: {e}"),
                }
            }
        }
    }

    /// `imap` over an endless input takes only what is asked for, and the pool stays usable.
    fn imap_of_an_endless_iterator(m) {
        let pool = Pool::builder().processes(2).start_method(m).build().unwrap();
        let first: Vec<u64> = pool.imap(square, 0u64..).unwrap().take(1000).map(|r| r.unwrap()).collect();
        assert_eq!(first[999], 999 * 999);
        let some: usize = pool.imap_unordered(square, 0u64..).unwrap().take(100).count();
        assert_eq!(some, 100);
        assert_eq!(pool.apply(square, (5,)).unwrap(), 25);
    }

    /// Results outlive a pool dropped while they ran: they fail, they do not hang.
    fn results_of_a_dropped_pool_fail(m) {
        let pool = Pool::builder().processes(1).start_method(m).build().unwrap();
        let running = pool.apply_async(nap, (30_000,)).unwrap();
        let queued: Vec<_> = (0..10).map(|_| pool.apply_async(nap, (1,)).unwrap()).collect();
        let mapped = pool.map_async(square, 0..100).unwrap();
        drop(pool);
        assert!(matches!(running.get_timeout(LONG), Err(Error::PoolNotRunning)));
        for r in &queued {
            assert!(r.get_timeout(LONG).is_err());
        }
        assert!(mapped.get_timeout(LONG).is_err());
    }
}

fn to_int(s: String) -> i64 {
    s.parse().expect("not a number")
}

start_methods! {
    /// Callbacks (POOL-05, POOL-24, POOL-34): `then` gets the value, or the error, once; a
    /// map's callback gets the whole list once.
    fn callbacks_get_the_result_once(m) {
        use std::sync::mpsc;
        let pool = Pool::builder().processes(2).start_method(m).build().unwrap();
        let (tx, rx) = mpsc::channel();
        pool.apply_async(square, (3,)).unwrap().then(move |r| tx.send(r).unwrap());
        assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), 9);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "called twice");

        let (tx, rx) = mpsc::channel();
        pool.apply_async(to_int, ("x".to_string(),)).unwrap().then(move |r| tx.send(r).unwrap());
        match rx.recv_timeout(LONG).unwrap() {
            Err(Error::TaskPanicked { message }) => assert!(message.contains("not a number"), "{message}"),
            other => panic!("{other:?}"),
        }

        let (tx, rx) = mpsc::channel();
        pool.map_async(to_int, vec!["1".to_string()]).unwrap().then(move |r| tx.send(r).unwrap());
        assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), vec![1]);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "called twice");

        let (tx, rx) = mpsc::channel();
        let r = pool.map_async_chunked(square, 0..50, 3).unwrap();
        r.wait();
        r.then(move |all| tx.send(all).unwrap()); // already done: runs here
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), 50);

        let (tx, rx) = mpsc::channel();
        pool.map_async(to_int, vec!["a".to_string()]).unwrap().then(move |r| tx.send(r.is_err()).unwrap());
        assert!(rx.recv_timeout(LONG).unwrap());
    }
}

/// A fork pool in a program with one thread of its own says nothing about threads: its
/// manager thread, which forks the workers, is the crate's (issue 16: it warned "this process
/// has 2 threads" about itself). The program is a spawn child, whose target runs on its only
/// thread (a test runs on a thread of the harness's); it reads its own stderr.
#[test]
fn a_fork_pool_does_not_warn_about_its_own_thread() {
    fn square(x: u64) -> u64 {
        x * x
    }
    fn program(report: Connection) -> Result<()> {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        let (stderr_r, stderr_w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe(2) fills two descriptors we then own.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        // SAFETY: plain descriptor juggling: stderr saved, pointed at the pipe, restored.
        let saved = unsafe { libc::dup(2) };
        // SAFETY: as above.
        unsafe { libc::dup2(stderr_w, 2) };
        // One task per worker: the pool's thread forks every replacement, with the program's
        // thread beside it.
        let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).maxtasksperchild(1).build()?;
        let squares = pool.map_chunked(square, 0..20u64, 1)?;
        pool.close();
        pool.join()?;
        // SAFETY: as above.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
            libc::close(stderr_w);
        }
        let mut text = Vec::new();
        // SAFETY: the read end is ours; File takes it over.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(stderr_r) };
        std::io::Read::read_to_end(&mut file, &mut text)?;
        assert_eq!(squares, (0..20).map(|x| x * x).collect::<Vec<_>>());
        report.send(&(threads, String::from_utf8_lossy(&text).into_owned()))
    }
    let (a, b) = pipe().unwrap();
    let mut p = common::start(StartMethod::Spawn, program, (b,));
    let (threads, stderr): (usize, String) = a.recv().unwrap();
    common::join_ok(&mut p);
    assert_eq!(threads, 1, "the spawn child runs its target on its only thread");
    assert!(!stderr.contains("threads; a forked child"), "warned about its own thread: {stderr}");
}
