//! Pool futures under tokio, as a `concurrent.futures` user would write them with asyncio:
//! submit work, `.await` it, give up waiting after a timeout and cancel what is too slow
//! (its worker is replaced: Python cannot stop a running task), and take results in the
//! order they complete.
//!
//! Run: `cargo run --example pool_async`

use multiprocess::{Error, Pool, ReturnWhen};
use std::time::Duration;

fn square(x: u64) -> u64 {
    x * x
}

/// Sleeps `ms` milliseconds in the worker, then returns it.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    // The pool first, from the one thread there is: its workers are started before the
    // runtime's threads exist.
    let pool = Pool::new(2)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build()?;
    runtime.block_on(async {
        // One task, awaited (`await loop.run_in_executor(pool, f, x)`).
        let seven = pool.submit(square, (7,))?;
        println!("square(7) = {}", seven.await?);

        // Many at once; the awaits overlap with the work.
        let results = (0..10u64).map(|i| pool.submit(square, (i,))).collect::<Result<Vec<_>, _>>()?;
        let mut sum = 0;
        for r in results {
            sum += r.await?;
        }
        println!("sum of squares 0..10 = {sum}");
        assert_eq!(sum, 285);

        // A timeout on the await: the task goes on running, so we cancel it; its worker is
        // killed and replaced, and the pool keeps its size.
        let mut slow = pool.submit(nap, (60_000,))?;
        match tokio::time::timeout(Duration::from_millis(200), &mut slow).await {
            Ok(done) => println!("the slow task finished early: {done:?}"),
            Err(_) => {
                println!("slow task still running after 200 ms (running: {}); cancelling it", slow.running());
                assert!(slow.cancel());
            }
        }
        assert!(matches!(slow.await, Err(Error::Cancelled)));
        println!("cancelled; the pool still has {} workers", pool.worker_pids().len());

        // A queued task cancelled before it starts never runs.
        let busy: Vec<_> = (0..2).map(|_| pool.submit(nap, (300,))).collect::<Result<_, _>>()?;
        let queued = pool.submit(nap, (1,))?;
        assert!(queued.cancel());
        println!("queued task cancelled before it ran: {}", queued.cancelled());
        for r in busy {
            assert_eq!(r.await?, 300);
        }

        // Whichever finishes first (`concurrent.futures.wait(fs, return_when=FIRST_COMPLETED)`;
        // a blocking call: in a real service, run it in `spawn_blocking`).
        let race = vec![pool.submit(nap, (250,))?, pool.submit(nap, (20,))?];
        let waited = multiprocess::wait(&race, Some(Duration::from_secs(10)), ReturnWhen::FirstCompleted);
        let first = waited.done[0].get()?;
        println!("first to finish napped {first} ms");
        assert_eq!(first, 20);
        Ok::<(), Error>(())
    })?;
    pool.close();
    pool.join()?;
    println!("done");
    Ok(())
}
