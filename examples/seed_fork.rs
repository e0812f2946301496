//! Twin of the seed notes' `os.fork()` example:
//!
//! ```python
//! import os
//! os.fork()
//! print('111')
//! ## 111
//! ## 111
//! ```
//!
//! Notes, translated: both the parent and the new child run `print('111')`. The return value
//! tells them apart: 0 in the child, the child's pid in the parent; `os.getpid()` and
//! `os.getppid()` give the current process's id and its parent's.
//!
//! Here `fork()` returns `Fork::Child` (Python's 0) or `Fork::Parent { child }` (the pid, as a
//! started `Process`). The parent joins the child before printing, so the order is fixed.
//!
//! Run: `cargo run --example seed_fork`

#[path = "seeds/fork.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
