//! Twin of the seed notes' `Lock` example:
//!
//! ```python
//! from multiprocessing import Lock
//!
//! l = Lock()
//! l.acquire() # 锁住
//! for _ in range(5):
//!   pass
//! l.release() # 释放
//! ```
//!
//! Notes, translated: a process-safe (or thread-safe) program behaves as expected whatever the
//! interleaving; queues are process-safe, and a lock makes a section of code so. The Rust twin
//! does the same by hand, then lets three processes print under one lock. A guard
//! (`lock.lock()?`) is Python's `with l:`.
//!
//! Run: `cargo run --example seed_lock`

#[path = "seeds/lock.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
