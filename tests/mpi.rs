//! `Pool::mpi()` under a real MPI job (feature `mpi`; no test harness: every rank runs this
//! `main`). Run by `.ci/mpi` as
//!
//! ```text
//! mpirun -n 3 --oversubscribe target/debug/deps/mpi-HASH           # the checks
//! mpirun -n 3 --oversubscribe target/debug/deps/mpi-HASH kill      # a rank dies: non-zero exit
//! mpirun -n 3 --oversubscribe target/debug/deps/mpi-HASH panic0    # rank 0 panics: non-zero exit
//! target/debug/deps/mpi-HASH                                       # outside mpirun: Error::Mpi
//! ```
//!
//! Outside an MPI job (as under plain `cargo test --features mpi`) it checks that
//! `Pool::mpi()` says so, and passes.

use futures::executor::block_on;
use multiprocess::pool::{ReturnWhen, as_completed, wait};
use multiprocess::{Error, Pool};
use std::time::{Duration, Instant};

fn square(x: u64) -> u64 {
    x * x
}

fn mul(a: i64, b: i64) -> i64 {
    a * b
}

fn rank() -> i32 {
    std::env::var("OMPI_COMM_WORLD_RANK").ok().and_then(|r| r.parse().ok()).unwrap_or(-1)
}

fn rank_of(_: u64) -> i32 {
    rank()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn boom(x: u64) -> u64 {
    if x == 7 {
        panic!("boom at {x}");
    }
    x
}

/// 4 MiB in, 4 MiB out: every byte plus one, reversed.
fn big(v: Vec<u8>) -> Vec<u8> {
    v.iter().rev().map(|b| b.wrapping_add(1)).collect()
}

fn die() -> u8 {
    // SAFETY: signals this process itself.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

type Check = (&'static str, fn(&Pool) -> Result<(), String>);

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn e(err: Error) -> String {
    format!("unexpected error: {err}")
}

const CHECKS: &[Check] = &[
    ("processes are the other ranks", |pool| {
        let size: usize =
            std::env::var("OMPI_COMM_WORLD_SIZE").map_err(|_| "no OMPI_COMM_WORLD_SIZE")?.parse().unwrap();
        ensure(pool.processes() == size - 1, || format!("{} workers for {size} ranks", pool.processes()))?;
        ensure(pool.worker_pids().is_empty(), || "ranks have no local pids".into())
    }),
    ("map, default chunks", |pool| {
        let got = pool.map(square, 0..100_000u64).map_err(e)?;
        ensure(got == (0..100_000u64).map(|x| x * x).collect::<Vec<_>>(), || "wrong squares".into())
    }),
    ("map, chunk size 1, on every worker rank", |pool| {
        let got = pool.map_chunked(square, 0..3000u64, 1).map_err(e)?;
        ensure(got == (0..3000u64).map(|x| x * x).collect::<Vec<_>>(), || "wrong squares".into())?;
        let mut ranks = pool.map_chunked(rank_of, 0..200u64, 1).map_err(e)?;
        ranks.sort();
        ranks.dedup();
        let want: Vec<i32> = (1..=pool.processes() as i32).collect();
        ensure(ranks == want, || format!("tasks ran on ranks {ranks:?}, not {want:?}"))
    }),
    ("imap and imap_unordered", |pool| {
        let first: Vec<u64> = pool.imap(square, 0..).map_err(e)?.take(50).collect::<Result<_, _>>().map_err(e)?;
        ensure(first == (0..50u64).map(|x| x * x).collect::<Vec<_>>(), || format!("imap gave {first:?}"))?;
        let mut all: Vec<u64> =
            pool.imap_unordered(square, 0..500u64).map_err(e)?.collect::<Result<_, _>>().map_err(e)?;
        all.sort();
        ensure(all == (0..500u64).map(|x| x * x).collect::<Vec<_>>(), || "imap_unordered: wrong squares".into())?;
        let chunked: Vec<u64> =
            pool.imap_chunked(square, 0..1000u64, 64).map_err(e)?.collect::<Result<_, _>>().map_err(e)?;
        ensure(chunked[999] == 998_001, || "imap_chunked: wrong square".into())
    }),
    // Built with the feature `progress` (as .ci/mpi builds it): the bars over ranks.
    ("progress bars (feature progress)", |pool| {
        #[cfg(feature = "progress")]
        {
            let got = pool.map_progress(square, 0..300u64).map_err(e)?;
            ensure(got == (0..300u64).map(|x| x * x).collect::<Vec<_>>(), || "map_progress: wrong squares".into())?;
            let got: Vec<u64> =
                pool.imap_progress(square, 0..100u64, Some(100)).map_err(e)?.collect::<Result<_, _>>().map_err(e)?;
            ensure(got[99] == 9801, || "imap_progress: wrong square".into())?;
        }
        let _ = pool;
        Ok(())
    }),
    ("starmap", |pool| {
        let got = pool.starmap(mul, (0..1000i64).map(|i| (i, -3))).map_err(e)?;
        ensure(got == (0..1000i64).map(|i| -3 * i).collect::<Vec<_>>(), || "wrong products".into())
    }),
    ("apply and apply_async", |pool| {
        ensure(pool.apply(mul, (6, 7)).map_err(e)? == 42, || "6 × 7".into())?;
        let results: Vec<_> = (0..20).map(|i| pool.apply_async(mul, (i, 10))).collect::<Result<_, _>>().map_err(e)?;
        let got: Vec<i64> = results.iter().map(|r| r.get()).collect::<Result<_, _>>().map_err(e)?;
        ensure(got == (0..20).map(|i| i * 10).collect::<Vec<_>>(), || format!("apply_async gave {got:?}"))
    }),
    ("submit and await", |pool| {
        let r = pool.submit(square, (12,)).map_err(e)?;
        ensure(block_on(r).map_err(e)? == 144, || "12²".into())?;
        let m = pool.map_async(square, 0..10u64).map_err(e)?;
        ensure(block_on(m).map_err(e)?[9] == 81, || "9²".into())
    }),
    ("cancel a queued task", |pool| {
        // Two per rank are sent at once; the last one waits in the pool.
        let n = 2 * pool.processes() + 1;
        let results: Vec<_> = (0..n).map(|_| pool.submit(nap, (300,))).collect::<Result<_, _>>().map_err(e)?;
        let last = &results[n - 1];
        ensure(last.cancel(), || "cancel() gave false".into())?;
        ensure(last.cancelled(), || "not cancelled".into())?;
        ensure(matches!(last.get(), Err(Error::Cancelled)), || "get() of a cancelled task".into())?;
        for r in &results[..n - 1] {
            ensure(r.get().map_err(e)? == 300, || "a nap".into())?;
        }
        // A rank that was sent the task before the cancel (ranks that ran quick tasks are
        // sent many at once) runs it all the same, its result dropped (see Pool::mpi): the
        // checks after this one want idle ranks.
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    }),
    ("wait and as_completed", |pool| {
        let results: Vec<_> =
            [200u64, 1, 50].iter().map(|&ms| pool.submit(nap, (ms,))).collect::<Result<_, _>>().map_err(e)?;
        let first = wait(&results, None, ReturnWhen::FirstCompleted);
        ensure(!first.done.is_empty(), || "FirstCompleted with nothing done".into())?;
        let all = wait(&results, Some(Duration::from_secs(30)), ReturnWhen::AllCompleted);
        ensure(all.done.len() == 3 && all.not_done.is_empty(), || "AllCompleted: not all done".into())?;
        let results: Vec<_> =
            [300u64, 1].iter().map(|&ms| pool.submit(nap, (ms,))).collect::<Result<_, _>>().map_err(e)?;
        let order: Vec<u64> = as_completed(results).map(|r| r.get()).collect::<Result<_, _>>().map_err(e)?;
        ensure(order == [1, 300], || format!("as_completed order {order:?}"))
    }),
    ("4 MiB argument and 4 MiB result, several in flight", |pool| {
        let input: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let want: Vec<u8> = input.iter().rev().map(|b| b.wrapping_add(1)).collect();
        ensure(pool.apply(big, (input.clone(),)).map_err(e)? == want, || "apply: wrong bytes".into())?;
        let got = pool.map_chunked(big, vec![input; 6], 1).map_err(e)?;
        ensure(got.len() == 6 && got.iter().all(|v| *v == want), || "map: wrong bytes".into())
    }),
    ("a panicking task fails alone", |pool| {
        match pool.apply(boom, (7,)) {
            Err(Error::TaskPanicked { message }) if message.contains("boom at 7") => {}
            other => return Err(format!("apply(boom, 7) gave {other:?}")),
        }
        let results: Vec<_> = pool.imap(boom, 5..10u64).map_err(e)?.collect();
        ensure(results.len() == 5 && results[2].is_err(), || format!("imap gave {results:?}"))?;
        ensure(results.iter().enumerate().all(|(i, r)| i == 2 || r.as_ref().ok() == Some(&(5 + i as u64))), || {
            format!("imap gave {results:?}")
        })?;
        ensure(matches!(pool.map(boom, 0..10u64), Err(Error::TaskPanicked { .. })), || "map with a panic".into())?;
        ensure(pool.apply(square, (9,)).map_err(e)? == 81, || "the pool after a panic".into())
    }),
    ("a capturing closure, a handle, a timeout are refused", |pool| {
        let offset = 5u64;
        match pool.map(move |x: u64| x + offset, 0..3u64) {
            Err(Error::InvalidArgument(m)) if m.contains("MPI") => {}
            other => return Err(format!("a capturing closure gave {other:?}")),
        }
        let add_one = |x: u64| x + 1;
        ensure(pool.map(add_one, 0..3u64).map_err(e)? == [1, 2, 3], || "a closure without captures".into())?;
        ensure(
            matches!(pool.apply_async_timeout(square, (2,), Duration::from_secs(1)), Err(Error::InvalidArgument(_))),
            || "a timeout".into(),
        )?;
        let lock = multiprocess::Lock::new().map_err(e)?;
        fn hold(_: multiprocess::Lock) {}
        ensure(matches!(pool.apply(hold, (lock,)), Err(Error::InvalidArgument(_))), || "a handle".into())
    }),
];

fn main() {
    multiprocess::init();
    let mode = std::env::args().nth(1).unwrap_or_default();
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() {
        // Outside mpirun (plain `cargo test`): the documented error, and MPI left alone.
        match Pool::mpi() {
            Err(Error::Mpi(m)) if m.contains("mpirun") => {
                println!("outside mpirun: {}", Error::Mpi(m));
                println!("1 passed, 0 failed");
                return;
            }
            other => {
                eprintln!("outside mpirun, Pool::mpi() gave {other:?}");
                std::process::exit(1);
            }
        }
    }
    let pool = match Pool::mpi() {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("Pool::mpi(): {err}");
            std::process::exit(1);
        }
    };
    // Only rank 0 comes here.
    match mode.as_str() {
        "kill" => {
            // A worker rank dies mid-task: mpirun ends the job, non-zero.
            let r = pool.apply(die, ());
            eprintln!("rank 0 still runs after a rank died: {r:?}");
            std::process::exit(0);
        }
        "panic0" => {
            let _running = pool.submit(nap, (200,));
            panic!("rank 0 panics outside a task");
        }
        _ => {}
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in CHECKS {
        let started = Instant::now();
        match check(&pool) {
            Ok(()) => {
                passed += 1;
                println!("ok     {name} ({:.0?})", started.elapsed());
            }
            Err(why) => {
                failed += 1;
                println!("FAILED {name}: {why}");
            }
        }
    }
    pool.close();
    if let Err(err) = pool.join() {
        println!("FAILED join: {err}");
        failed += 1;
    }
    drop(pool);
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
