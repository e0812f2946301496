//! A pool whose workers are the other ranks of an MPI job (mpi4py's `MPIPoolExecutor`).
//!
//! ```text
//! cargo build --release --features mpi --example mpi_pool
//! mpirun -n 3 target/release/examples/mpi_pool
//! ```
//!
//! Every rank runs `main` up to `Pool::mpi()`; rank 0 gets the pool, the others serve its
//! tasks there and exit when rank 0's pool is dropped.

use multiprocess::Pool;

fn square(x: u64) -> u64 {
    x * x
}

/// Which host and rank ran a task.
fn whereami(_: u32) -> String {
    let rank = std::env::var("OMPI_COMM_WORLD_RANK").unwrap_or_else(|_| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("rank {rank} on {}", host.trim())
}

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    let pool = Pool::mpi()?; // on ranks other than 0, serves tasks and exits when rank 0 is done
    let started = std::time::Instant::now();
    let squares: Vec<u64> = pool.map(square, 0..1_000_000u64)?;
    let elapsed = started.elapsed();
    assert_eq!(squares[999_999], 999_998_000_001);
    let sum: u128 = squares.iter().map(|&s| s as u128).sum();
    println!("{} squares on {} worker ranks in {elapsed:.2?}; their sum is {sum}", squares.len(), pool.processes());
    let mut places = pool.map_chunked(whereami, 0..(4 * pool.processes() as u32), 1)?;
    places.sort();
    places.dedup();
    println!("tasks ran on: {}", places.join(", "));
    Ok(())
}
