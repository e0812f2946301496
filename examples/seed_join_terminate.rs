//! Twin of the seed notes on `join`, `exitcode` and `terminate`:
//!
//! ```python
//! p = Process()
//! p.start()      # start the child
//! p.join()       # block until the child ends
//! p.terminate()  # force the child to end
//! ```
//!
//! Notes, translated: `p.join([timeout])` blocks for at most `timeout` seconds and returns
//! None whether the process ended or the time ran out, so check `exitcode` to see whether it
//! ended; join only after start; a process may be joined many times, but not by itself
//! (that would deadlock; in Rust a child has no `Process` handle to itself, so it cannot).
//!
//! Run: `cargo run --example seed_join_terminate`

#[path = "seeds/join_terminate.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
