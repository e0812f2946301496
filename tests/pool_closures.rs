//! Capturing closures as pool tasks: under fork, a pool starts fresh workers that have the
//! closure in their memory; under spawn and forkserver it refuses them with a clear error.
mod common;
use multiprocess::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fork_pool(n: usize) -> Pool {
    Pool::builder().processes(n).start_method(StartMethod::Fork).build().unwrap()
}

fn close_join(pool: &Pool) {
    pool.close();
    pool.join().unwrap();
}

start_methods! {
    /// A capturing closure runs under fork and is refused, leaving the pool usable, under the
    /// others; a closure that captures nothing runs under every method.
    fn capturing_closure_only_under_fork(m) {
        let pool = Pool::builder().processes(2).start_method(m).build().unwrap();
        let offset = 1000u64;
        let add = move |x: u64| x + offset;
        match m {
            StartMethod::Fork => assert_eq!(pool.map(add, 0..10u64).unwrap(), (1000..1010).collect::<Vec<_>>()),
            _ => {
                let err = pool.map(add, 0..10u64).unwrap_err();
                assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("fork")), "{err:?}");
                assert!(matches!(pool.apply(add, (1,)), Err(Error::InvalidArgument(_))));
                assert!(pool.imap(add, 0..3u64).is_err());
                assert!(pool.imap_unordered(add, 0..3u64).is_err());
                assert!(pool.starmap_async(add, [(1,)]).is_err());
            }
        }
        assert_eq!(pool.map(|x: u64| x * 3, [1, 2]).unwrap(), vec![3, 6]);
        assert_eq!(pool.apply(square, (9,)).unwrap(), 81);
        close_join(&pool);
    }
}

/// Every form of submission takes a capturing closure under fork, and sees what it captured.
#[test]
fn every_call_takes_a_closure_under_fork() {
    common::run_case(StartMethod::Fork, |_| {
        let pool = fork_pool(2);
        let words: Vec<String> = ["zero", "one", "two", "three"].iter().map(|s| s.to_string()).collect();
        let word = move |i: usize| words[i % 4].clone();
        assert_eq!(pool.apply(word.clone(), (5,)).unwrap(), "one");
        assert_eq!(pool.apply_async(word.clone(), (2,)).unwrap().get_timeout(LONG).unwrap(), "two");
        assert_eq!(pool.map(word.clone(), 0..4).unwrap(), ["zero", "one", "two", "three"]);
        assert_eq!(pool.map_chunked(word.clone(), 0..8, 3).unwrap()[7], "three");
        assert_eq!(pool.map_async(word.clone(), [3]).unwrap().get().unwrap(), ["three"]);
        let got: Vec<String> = pool.imap(word.clone(), 0..6).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got, ["zero", "one", "two", "three", "zero", "one"]);
        let mut got: Vec<String> = pool.imap_unordered(word.clone(), 0..4).unwrap().map(|r| r.unwrap()).collect();
        got.sort();
        assert_eq!(got, ["one", "three", "two", "zero"]);
        let scale = 10i64;
        let mul = move |a: i64, b: i64| a * b * scale;
        assert_eq!(pool.starmap(mul, [(1, 2), (3, 4)]).unwrap(), vec![20, 120]);
        close_join(&pool);
    });
}

/// A second closure gets fresh workers again; the first one's results were its own, and fn
/// items in between run on whichever workers there are.
#[test]
fn each_closure_gets_workers_that_know_it() {
    common::run_case(StartMethod::Fork, |_| {
        let pool = fork_pool(2);
        let before = pool.worker_pids();
        for k in 1..=5u64 {
            let big = vec![k; 1 << 18]; // 2 MiB captured
            let f = move |i: usize| big[i] * 2;
            assert_eq!(pool.map(f, [0, 1000, (1 << 18) - 1]).unwrap(), vec![2 * k; 3]);
            assert_eq!(pool.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
        }
        let after = pool.worker_pids();
        assert_eq!(after.len(), 2);
        assert!(
            after.iter().all(|p| !before.contains(p)),
            "workers forked before the closures still run: {before:?} {after:?}"
        );
        close_join(&pool);
    });
}

/// A closure queued behind a long-running chunk waits for a worker that knows it; the busy
/// worker's chunk is not cut short.
#[test]
fn a_busy_old_worker_finishes_its_chunk() {
    common::run_case(StartMethod::Fork, |_| {
        let pool = fork_pool(1);
        let slow = pool.apply_async(nap, (300,)).unwrap();
        let tag = String::from("late");
        let r = pool.apply_async(move || tag.clone(), ()).unwrap();
        assert_eq!(slow.get_timeout(LONG).unwrap(), 300);
        assert_eq!(r.get_timeout(LONG).unwrap(), "late");
        close_join(&pool);
    });
}

/// A closure's panic fails its task; a worker killed while running a closure fails that
/// task, and its replacement (forked later) runs the same closure again.
#[test]
fn closure_failures_fail_one_task() {
    common::run_case(StartMethod::Fork, |_| {
        let pool = fork_pool(2);
        let limit = 3u64;
        let f = move |x: u64| {
            if x == limit {
                panic!("over the limit {limit}");
            }
            if x == 100 {
                // SAFETY: raise(2) on our own process, a worker, which the test wants killed.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            x
        };
        match pool.apply(f, (3,)) {
            Err(Error::TaskPanicked { message }) => assert!(message.contains("over the limit 3"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pool.apply(f, (100,)), Err(Error::WorkerDied { exitcode: -9 })));
        assert_eq!(pool.map(f, [1, 2]).unwrap(), vec![1, 2]);
        close_join(&pool);
    });
}

/// With `maxtasksperchild`, replaced workers still know the closure; terminate with closure
/// tasks queued fails them and leaves no worker behind.
#[test]
fn closures_with_maxtasks_and_terminate() {
    common::run_case(StartMethod::Fork, |_| {
        let pool = Pool::builder().processes(2).maxtasksperchild(2).start_method(StartMethod::Fork).build().unwrap();
        let base: Vec<u64> = std::iter::repeat_n(7, 16).collect();
        let f = move |i: usize| base[i] + i as u64;
        assert_eq!(pool.map_chunked(f.clone(), 0..16, 1).unwrap(), (0..16).map(|i| 7 + i).collect::<Vec<_>>());
        let pause = Duration::from_millis(200);
        let slow = move |x: u64| {
            std::thread::sleep(pause);
            x
        };
        let r = pool.map_async_chunked(slow, 0..20, 1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pool.terminate().unwrap();
        assert!(r.get_timeout(LONG).is_err());
        assert!(pool.worker_pids().is_empty());
    });
}

/// Every task runs once while the chunks a worker was sent are taken back and shared out
/// again: in each of 20 maps of chunk size 1, one task in 25 sleeps, so a worker is idle
/// while the other holds chunks, again and again; each run counts itself in a shared array.
#[test]
fn each_task_runs_once_while_chunks_are_shared_out_again() {
    common::isolated("each_task_runs_once_while_chunks_are_shared_out_again", || {
        const MAPS: usize = 20;
        const ITEMS: usize = 150;
        let runs = Array::<u32>::new(MAPS * ITEMS).unwrap();
        let counter = runs.clone();
        let pool = fork_pool(2);
        let count_and_square = move |x: u64| {
            if x.is_multiple_of(25) {
                std::thread::sleep(Duration::from_millis(3));
            }
            counter.lock().unwrap()[x as usize] += 1;
            x * x
        };
        for map in 0..MAPS as u64 {
            let items = map * ITEMS as u64..(map + 1) * ITEMS as u64;
            let squares = pool.map_chunked(count_and_square.clone(), items.clone(), 1).unwrap();
            assert_eq!(squares, items.map(|x| x * x).collect::<Vec<_>>());
        }
        let counts = runs.to_vec();
        let wrong: Vec<(usize, u32)> = counts.into_iter().enumerate().filter(|&(_, c)| c != 1).collect();
        assert!(wrong.is_empty(), "tasks not run exactly once (task, runs): {wrong:?}");
        close_join(&pool);
    })
}
