//! Twin of the seed notes' remark on `multiprocessing.cpu_count()`:
//!
//! > `multiprocessing.cpu_count()` returns the number of CPU cores; usually as many processes
//! > are created as there are cores, which in theory is the most efficient.
//!
//! With a `Pool` that is one line: `Pool::new(cpu_count())`. This example runs CPU-bound work
//! serially and on the pool, uses `apply_async`, and shows that a failing task fails alone.
//!
//! Run: `cargo run --example seed_pool`

#[path = "seeds/pool.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
