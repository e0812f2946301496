//! Futures on the Pool (issue 17 points 1 and 2): `.await` on any executor, `submit`,
//! `cancel` (queued and running), `running`/`done`/`cancelled`, `as_completed`, `wait` with
//! each `ReturnWhen`, `next_timeout`, `shutdown` with and without cancelling (PPE-21, PPE-25),
//! and `Stream`s with the `stream` feature.

mod common;
use multiprocess::{AsyncResult, Error, Pool, ReturnWhen, StartMethod, as_completed, wait};
use std::time::{Duration, Instant};

fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(m).build().unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("failed after {ms} ms")
}

/// Writes `path` (the task started), then naps `ms`.
fn touch_then_nap(path: String, ms: u64) -> u64 {
    std::fs::write(path, b"started").unwrap();
    nap(ms)
}

/// Writes `path` (the task ran) after `ms`.
fn touch_after(path: String, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(path, b"ran").unwrap();
    ms
}

/// Appends `i` to `path` (one line), then naps `ms`.
fn note_then_nap(i: u64, path: String, ms: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
    f.write_all(format!("{i}\n").as_bytes()).unwrap();
    drop(f);
    nap(ms)
}

const LONG: Duration = Duration::from_secs(20);

fn temp_path(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("mp_futures_{}_{tag}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

/// The same awaits on three executors: futures' `block_on`, tokio's current-thread and
/// multi-thread runtimes.
async fn await_some(p: &Pool) -> Vec<u64> {
    let a = p.submit(square, (3,)).unwrap();
    let b = p.submit(square, (4,)).unwrap();
    let mapped = p.map_async(square, 0..5u64).unwrap();
    let mut out = vec![a.await.unwrap(), b.await.unwrap()];
    out.extend(mapped.await.unwrap());
    out
}

const EXPECTED: [u64; 7] = [9, 16, 0, 1, 4, 9, 16];

start_methods! {
    /// Tasks waiting for a quick worker go to it several in one order; one cancelled there
    /// before its turn (behind a slow one) never runs, its worker is not replaced, and the
    /// others run once each.
    fn cancel_a_task_a_worker_holds_but_has_not_begun(m) {
        let path = temp_path(&format!("held-{m}"));
        let p = pool(m, 1);
        assert_eq!(p.map_chunked(square, 0..64u64, 1).unwrap()[8], 64);
        let pid = p.worker_pids();
        // Task 0 naps while 1..=15 fill the worker's hands and 16..=24 wait in the pool; when
        // 1..=15 are done (quickly), 16..=23 go to the worker in one order, and 16 naps.
        let ms = |i: u64| if i == 0 || i == 16 { 400 } else { 0 };
        let results: Vec<_> = (0..25u64).map(|i| p.submit(note_then_nap, (i, path.clone(), ms(i))).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(600));
        assert!(results[16].running(), "task 16 runs");
        assert!(!results[20].running());
        assert!(results[20].cancel());
        assert!(results[20].cancelled());
        assert!(matches!(results[20].get_timeout(LONG), Err(Error::Cancelled)));
        for (i, r) in results.iter().enumerate().filter(|&(i, _)| i != 20) {
            assert_eq!(r.get_timeout(LONG).unwrap(), ms(i as u64));
        }
        assert_eq!(p.worker_pids(), pid, "the worker was not replaced");
        let mut ran: Vec<u64> = std::fs::read_to_string(&path).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        std::fs::remove_file(&path).unwrap();
        ran.sort();
        assert_eq!(ran, (0..25).filter(|&i| i != 20).collect::<Vec<u64>>());
    }

    fn awaits_on_futures_block_on(m) {
        let p = pool(m, 2);
        assert_eq!(futures::executor::block_on(await_some(&p)), EXPECTED);
    }

    fn awaits_on_tokio_current_thread(m) {
        let p = pool(m, 2);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(rt.block_on(await_some(&p)), EXPECTED);
    }

    fn awaits_on_tokio_multi_thread(m) {
        let p = std::sync::Arc::new(pool(m, 2));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let got = rt.block_on(async {
            // Futures moved into spawned tasks, awaited on other runtime threads.
            let handles: Vec<_> =
                (0..20u64).map(|i| tokio::spawn(p.submit(square, (i,)).unwrap())).collect();
            let mut got = Vec::new();
            for h in handles {
                got.push(h.await.unwrap().unwrap());
            }
            got
        });
        assert_eq!(got, (0..20u64).map(square).collect::<Vec<_>>());
    }

    /// An awaited task that fails gives its error, as `get` does.
    fn await_gives_the_task_error(m) {
        let p = pool(m, 1);
        let r = p.submit(fail_after, (0,)).unwrap();
        match futures::executor::block_on(r) {
            Err(Error::TaskPanicked { message }) => assert!(message.contains("failed after 0 ms"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    /// A queued task that is cancelled never runs: its result is `Cancelled`, and the file it
    /// would write never appears.
    fn cancel_a_queued_task(m) {
        let p = pool(m, 1);
        let blocker = p.submit(nap, (400,)).unwrap();
        let path = temp_path("queued");
        let queued = p.submit(touch_after, (path.clone(), 0)).unwrap();
        assert!(!queued.running());
        assert!(queued.cancel(), "a queued task could not be cancelled");
        assert!(queued.cancelled() && queued.done() && !queued.running());
        assert!(matches!(queued.get(), Err(Error::Cancelled)));
        assert!(queued.cancel(), "cancelling again says it is cancelled");
        assert_eq!(blocker.get_timeout(LONG).unwrap(), 400);
        // The pool has run everything it will: the cancelled task did not run.
        assert_eq!(p.apply(nap, (1,)).unwrap(), 1);
        assert!(!std::path::Path::new(&path).exists(), "the cancelled task ran");
        assert_eq!(p.processes(), 1);
    }

    /// A running task that is cancelled stops: its worker is replaced within a second, the
    /// pool keeps its size, and runs the next task.
    fn cancel_a_running_task(m) {
        let p = pool(m, 2);
        let started = temp_path("running");
        let r = p.submit(touch_then_nap, (started.clone(), 30_000)).unwrap();
        assert!(common::eventually_within(Duration::from_secs(5), || std::path::Path::new(&started).exists()), "never ran");
        assert!(r.running());
        let _ = std::fs::remove_file(&started);
        let before = p.worker_pids();
        let t = Instant::now();
        assert!(r.cancel());
        assert!(matches!(r.get(), Err(Error::Cancelled)));
        assert!(common::eventually_within(Duration::from_secs(1), || {
            let now = p.worker_pids();
            now.len() == 2 && now != before
        }), "the worker was not replaced within 1 s: {before:?} -> {:?}", p.worker_pids());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(p.apply(square, (5,)).unwrap(), 25);
    }

    /// Tasks submitted while the pool's manager is still replacing the worker of a running
    /// task just cancelled, and then a cancel of one of them: the cancel finds it (queued,
    /// or held by a worker behind a task that runs) and it never runs; the others do. The
    /// workers first ran tiny tasks, so they are quick and hold several chunks at once.
    fn cancel_a_task_submitted_while_a_worker_is_replaced(m) {
        let p = pool(m, 2);
        let warm: Vec<_> = (0..20u64).map(|i| p.submit(square, (i,)).unwrap()).collect();
        for (i, r) in warm.iter().enumerate() {
            assert_eq!(r.get_timeout(LONG).unwrap(), (i * i) as u64);
        }
        let slow = p.submit(nap, (60_000,)).unwrap();
        assert!(common::eventually_within(Duration::from_secs(5), || slow.running()), "never ran");
        assert!(slow.cancel());
        let t = Instant::now();
        let busy: Vec<_> = (0..2).map(|_| p.submit(nap, (300,)).unwrap()).collect();
        let short = p.submit(nap, (1,)).unwrap();
        assert!(short.cancel(), "the short task ran: {:?}", short.get_timeout(LONG));
        assert!(t.elapsed() < Duration::from_millis(250), "the cancel waited for a busy task: {:?}", t.elapsed());
        assert!(matches!(short.get(), Err(Error::Cancelled)));
        for r in busy {
            assert_eq!(r.get_timeout(LONG).unwrap(), 300);
        }
        assert_eq!(p.worker_pids().len(), 2);
    }

    /// A result's callback may use the pool: submit, and wait for what it submitted (it runs
    /// after the thread that filed the result let go of the pool's state).
    fn a_callback_uses_the_pool(m) {
        let p = std::sync::Arc::new(pool(m, 2));
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = p.clone();
        p.submit(square, (3,)).unwrap().then(move |r| {
            let next = inner.submit(square, (r.unwrap() + 1,)).unwrap().get();
            tx.send(next).unwrap();
        });
        assert_eq!(rx.recv_timeout(LONG).unwrap().unwrap(), 100);
    }

    /// A finished task cannot be cancelled.
    fn cancel_a_finished_task(m) {
        let p = pool(m, 1);
        let r = p.submit(square, (6,)).unwrap();
        r.wait();
        assert!(!r.cancel());
        assert!(!r.cancelled() && r.done() && !r.running());
        assert_eq!(r.get().unwrap(), 36);
    }

    fn as_completed_yields_in_completion_order(m) {
        let p = pool(m, 3);
        let results = vec![
            p.submit(nap, (900,)).unwrap(),
            p.submit(nap, (20,)).unwrap(),
            p.submit(nap, (450,)).unwrap(),
        ];
        let mut again = results.clone();
        again.push(results[1].clone()); // listed twice: yielded once
        let order: Vec<u64> = as_completed(again).map(|r| r.get().unwrap()).collect();
        assert_eq!(order, vec![20, 450, 900]);
    }

    fn as_completed_next_timeout(m) {
        let p = pool(m, 1);
        let mut it = as_completed(vec![p.submit(nap, (600,)).unwrap()]);
        let t = Instant::now();
        assert!(matches!(it.next_timeout(Duration::from_millis(200)), Err(Error::Timeout)));
        common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap().get().unwrap(), 600);
        assert!(it.next_timeout(LONG).unwrap().is_none());
    }

    /// PPE-25 (`WaitTests`), in our terms: a cancelled result is done (CPython's
    /// `CANCELLED_AND_NOTIFIED` is too; its test's bare `CANCELLED` future is an internal state
    /// a Pool result never has).
    fn ppe_25_wait(m) {
        let p = pool(m, 3);
        // FIRST_COMPLETED: the quick one, not the blocked one.
        let quick = p.submit(square, (21,)).unwrap();
        let blocked = p.submit(nap, (1_500,)).unwrap();
        let w = wait([&quick, &blocked], Some(LONG), ReturnWhen::FirstCompleted);
        assert_eq!(ids(&w.done), ids(&[&quick]));
        assert_eq!(ids(&w.not_done), ids(&[&blocked]));
        // FIRST_EXCEPTION: returns at the failure, with the finished one, not the blocked.
        let ok = p.submit(square, (2,)).unwrap();
        let failing = p.submit(fail_after, (200,)).unwrap();
        let w = wait([&ok, &failing, &blocked], Some(LONG), ReturnWhen::FirstException);
        assert_eq!(ids(&w.done), ids(&[&ok, &failing]));
        assert_eq!(ids(&w.not_done), ids(&[&blocked]));
        // FIRST_EXCEPTION with none failing: all completed.
        let a = p.submit(square, (3,)).unwrap();
        let b = p.submit(nap, (100,)).unwrap();
        let w = wait([&a, &b], Some(LONG), ReturnWhen::FirstException);
        assert_eq!(w.done.len(), 2);
        assert!(w.not_done.is_empty());
        // ALL_COMPLETED over a success, a failure and a cancelled one; one listed twice.
        let cancelled = p.submit(nap, (10_000,)).unwrap();
        assert!(cancelled.cancel());
        let w = wait([&a, &failing, &cancelled, &a], Some(LONG), ReturnWhen::AllCompleted);
        assert_eq!(ids(&w.done), ids(&[&a, &failing, &cancelled]));
        assert!(w.not_done.is_empty());
        // A timeout: what is done by then, and what is not.
        let slow = p.submit(nap, (1_500,)).unwrap();
        let t = Instant::now();
        let w = wait([&a, &slow], Some(Duration::from_millis(200)), ReturnWhen::AllCompleted);
        common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
        assert_eq!(ids(&w.done), ids(&[&a]));
        assert_eq!(ids(&w.not_done), ids(&[&slow]));
    }

    /// PPE-21: `shutdown(cancel_futures=True)` with 50 naps of 0.1 s on up to 5 workers:
    /// more than 20 cancelled, the rest done without error, at least one finished.
    fn ppe_21_shutdown_cancels_the_queued(m) {
        let p = pool(m, 5);
        let results: Vec<AsyncResult<u64>> = (0..50).map(|_| p.submit(nap, (100,)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        p.shutdown(true).unwrap();
        let cancelled = results.iter().filter(|r| r.cancelled()).count();
        assert!(cancelled > 20, "{cancelled} cancelled");
        assert!(results.iter().all(|r| r.done()));
        let finished: Vec<_> = results.iter().filter(|r| !r.cancelled()).collect();
        assert!(!finished.is_empty());
        assert!(finished.iter().all(|r| r.get().is_ok()));
    }

    /// Shutdown without cancelling runs everything.
    fn shutdown_without_cancelling_runs_all(m) {
        let p = pool(m, 2);
        let results: Vec<AsyncResult<u64>> = (0..10).map(|i| p.submit(square, (i,)).unwrap()).collect();
        p.shutdown(false).unwrap();
        assert_eq!(results.iter().map(|r| r.get().unwrap()).collect::<Vec<_>>(), (0..10u64).map(square).collect::<Vec<_>>());
        assert!(matches!(p.submit(square, (1,)), Err(Error::PoolNotRunning)));
    }

    /// `IMapIterator.next(timeout)`: a timeout leaves the iterator where it was.
    fn imap_next_timeout(m) {
        let p = pool(m, 2);
        let mut it = p.imap(nap, [500, 0]).unwrap();
        let t = Instant::now();
        assert!(matches!(it.next_timeout(Duration::from_millis(200)), Some(Err(Error::Timeout))));
        common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap(), 500);
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap(), 0);
        assert!(it.next_timeout(LONG).is_none());
        let mut un = p.imap_unordered(nap, [500]).unwrap();
        assert!(matches!(un.next_timeout(Duration::from_millis(100)), Some(Err(Error::Timeout))));
        assert_eq!(un.next_timeout(LONG).unwrap().unwrap(), 500);
        assert!(un.next_timeout(LONG).is_none());
    }
}

fn ids(results: &[&AsyncResult<u64>]) -> Vec<String> {
    let mut v: Vec<String> = results.iter().map(|r| format!("{:p}", *r as *const _)).collect();
    v.sort();
    v
}

/// 100,000 tasks submitted and awaited from one async task.
#[test]
fn awaiting_a_hundred_thousand_submitted_tasks() {
    let p = pool(StartMethod::Fork, 2);
    let results: Vec<AsyncResult<u64>> = (0..100_000u64).map(|i| p.submit(square, (i,)).unwrap()).collect();
    let sum = futures::executor::block_on(async {
        let mut sum = 0u64;
        for r in results {
            sum += r.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..100_000u64).map(square).sum::<u64>());
}

#[cfg(feature = "stream")]
mod stream {
    use super::*;
    use futures::StreamExt;

    start_methods! {
        fn imap_is_a_stream_in_order(m) {
            let p = pool(m, 2);
            let got: Vec<u64> = futures::executor::block_on(
                StreamExt::map(p.imap(square, 0..50u64).unwrap(), |r| r.unwrap()).collect::<Vec<_>>(),
            );
            assert_eq!(got, (0..50u64).map(square).collect::<Vec<_>>());
        }

        fn imap_unordered_is_a_stream(m) {
            let p = pool(m, 2);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut got: Vec<u64> = rt.block_on(
                StreamExt::map(p.imap_unordered(nap, [300, 0, 100]).unwrap(), |r| r.unwrap()).collect::<Vec<_>>(),
            );
            assert_eq!(got[0], 0);
            got.sort();
            assert_eq!(got, vec![0, 100, 300]);
        }
    }
}
