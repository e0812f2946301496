//! Twin of the seed notes' `Queue` example:
//!
//! ```python
//! from multiprocessing import Queue
//! q = Queue()
//! # first in, first out; put and get are the queue's two main operations
//! q.put([42, None, 'hello'])
//! print(q.get())    # prints "[42, None, 'hello']"
//! ```
//!
//! Notes, translated: `q.get()` has two important parameters, block and timeout. With
//! block=True, get on an empty queue waits up to timeout and then raises `queue.Empty`; with
//! block=False it raises `queue.Empty` at once. `q.put()` has the same parameters: on a full
//! queue it behaves the same way and raises `queue.Full`.
//!
//! In Rust the block/timeout pairs are three methods each: `get()`, `get_timeout(d)`,
//! `get_nowait()` and `put(x)`, `put_timeout(x, d)`, `put_nowait(x)`; `Err(Error::Empty)` and
//! `Err(PutError::Full(x))` stand for the exceptions (the item comes back with `Full`).
//!
//! Run: `cargo run --example seed_queue`

#[path = "seeds/queue.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
