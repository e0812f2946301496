//! Twin of the seed notes on `multiprocessing.active_children()` and `cpu_count()`:
//!
//! > `multiprocessing.active_children()` returns the live child processes.
//! > `multiprocessing.cpu_count()` returns the number of CPU cores; creating as many processes
//! > as there are cores is, in theory, the most efficient.
//!
//! Starts one worker per usable CPU (at most 4), lists them with `active_children()`, lets
//! them finish and lists again (the notes write `multiprocessing.children()`; the function is
//! `active_children()`).
//!
//! Run: `cargo run --example seed_children_cpu_count`

#[path = "seeds/children_cpu_count.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
