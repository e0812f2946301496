//! A pool's `map` and `imap` with a progress bar (cargo feature `progress`).
//!
//! Python users write `for r in tqdm(pool.imap(f, xs), total=len(xs))`; here it is
//! `pool.imap_progress(f, xs, Some(len))`, or `pool.map_progress(f, xs)` for the whole list.
//!
//! Run: `cargo run --example pool_progress --features progress`

use multiprocess::Pool;
use std::time::Duration;

/// Some work: a slow square.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    let pool = Pool::new(multiprocess::cpu_count())?;
    println!("map_progress over 200 items on {} workers:", pool.processes());
    let squares = pool.map_progress(slow_square, 0..200)?;
    assert_eq!(squares[199], 199 * 199);
    println!("imap_progress over 100 items, consumed lazily:");
    let mut total = 0;
    for r in pool.imap_progress(slow_square, 0..100, Some(100))? {
        total += r?;
    }
    assert_eq!(total, (0..100u64).map(|x| x * x).sum::<u64>());
    println!("sum of the squares of 0..100: {total}");
    pool.close();
    pool.join()
}
