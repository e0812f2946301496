//! Body of `seed_pool` (and step 5 of the tour): the seed notes' remark on `cpu_count()`,
//! "usually as many processes as CPU cores: in theory the most efficient", as a `Pool`.

use multiprocess::{Error, Pool, cpu_count};
use std::time::Instant;

/// CPU-bound work: the number of primes below `n`, the slow way.
fn primes_below(n: u64) -> u64 {
    (2..n).filter(|&k| (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
}

/// A task that fails: its error comes back to the caller, and the pool goes on.
fn fails(n: u64) -> u64 {
    assert!(n < 10, "{n} is too big");
    n
}

/// One worker per CPU, the same work serially and on the pool, and a failing task.
pub fn run() -> multiprocess::Result<()> {
    let workers = cpu_count();
    let pool = Pool::new(workers)?;
    println!("cpu_count() = {workers}: Pool::new({workers}) started workers {:?}", pool.worker_pids());

    let inputs: Vec<u64> = (0..16).map(|i| 20_000 + i * 1_000).collect();
    let t = Instant::now();
    let serial: Vec<u64> = inputs.iter().map(|&n| primes_below(n)).collect();
    let serial_time = t.elapsed();
    let t = Instant::now();
    let parallel = pool.map(primes_below, inputs.clone())?;
    let pool_time = t.elapsed();
    assert_eq!(parallel, serial);
    println!(
        "primes below 20,000 .. 35,000: serially {:.0} ms, on the pool {:.0} ms ({} workers)",
        serial_time.as_secs_f64() * 1e3,
        pool_time.as_secs_f64() * 1e3,
        workers
    );

    // apply_async: run in the background, collect later.
    let pending = pool.apply_async(primes_below, (50_000,))?;
    println!("apply_async(primes_below, (50_000,)).get() = {}", pending.get()?);

    // A panicking task fails alone (Python re-raises its exception at get()).
    match pool.apply(fails, (12,)) {
        Err(Error::TaskPanicked { message }) => println!("a failing task: Err(TaskPanicked) \"{message}\""),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(pool.apply(fails, (3,))?, 3);
    println!("and the pool goes on: apply(fails, (3,)) = 3");

    pool.close();
    pool.join()?;
    println!("close() and join(): the workers have exited");
    Ok(())
}
