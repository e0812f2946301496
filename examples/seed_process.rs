//! Twin of the seed notes' `multiprocessing.Process()` example:
//!
//! ```python
//! from multiprocessing import Process
//! def f(name):
//!   print(f'hello {name}')
//!
//! if __name__ == '__main__':
//!   p = Process(target=f, args=('john',))
//!   p.start()
//!   p.join() # blocks by default
//! ```
//!
//! Prints `hello john` from a child process. `multiprocess::init()` plays the part of the
//! `if __name__ == '__main__':` guard.
//!
//! Run: `cargo run --example seed_process`

#[path = "seeds/process.rs"]
mod seed;

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    seed::run()
}
