//! Twin of the seed notes' `Pipe()` example:
//!
//! ```python
//! from multiprocessing import Pipe
//! parent_conn, child_conn = Pipe()
//! ```
//!
//! Notes, translated: the two connection objects are the two ends of the pipe, and each has
//! `send()` and `recv()`. Data may be corrupted if two processes (or threads) read or write
//! the *same* end at once; using different ends at once is safe. In Rust a `Connection` is
//! not `Sync`, and the child's end moves into the child, so each end has one user.
//!
//! Run: `cargo run --example seed_pipe`

#[path = "seeds/pipe.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
