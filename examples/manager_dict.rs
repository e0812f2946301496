//! A manager's dict shared by two children (Python's `Manager().dict()`):
//!
//! ```python
//! from multiprocessing import Manager, Process
//! def child(d, n, lock):
//!     d[f'child {n}'] = os.getpid()
//!     with lock:
//!         d['children'] += 1
//! with Manager() as m:
//!     d = m.dict(children=0); lock = m.Lock()
//!     ps = [Process(target=child, args=(d, n, lock)) for n in (1, 2)]
//!     ...
//! ```
//!
//! Run: `cargo run --example manager_dict`

#[path = "seeds/manager.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
