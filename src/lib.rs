//! # multiprocess
//!
//! Python's `multiprocessing`, rebuilt in Rust, for Linux: processes on three start methods
//! (fork, spawn, forkserver), pipes, connections and CPython-compatible listeners, queues,
//! shared values and arrays, shared memory, every lock, a pool that survives its workers'
//! deaths, and managers, local and remote. One Python name, one Rust name: a Python
//! programmer finds `Process`, `Pipe` (here [`pipe`]), `Queue`, `Lock`, `Pool`,
//! `current_process` and `active_children` where they expect them.
//!
//! ```toml
//! [dependencies]
//! multiprocess = "0.1"
//! ```
//!
//! Features: `progress` (progress bars for `Pool::map_progress` and `Pool::imap_progress`)
//! and `stream` (`futures_core::Stream` for [`Pool::imap`] and [`Pool::imap_unordered`]).
//!
//! ## Quick start
//!
//! A child started by spawn or forkserver (the default start method) is a fresh run of your
//! binary; on Linux a load-time constructor gives it its role before `main`, and [`init`]
//! first in `main` is the explicit, portable form of that step, which the examples keep. A
//! function run in a child is a plain `fn` (or a closure capturing nothing) whose arguments
//! and result are serde values.
//!
//! A process, and a pipe to talk to it:
//!
//! ```
//! use multiprocess::{Connection, Process, pipe};
//!
//! fn greet(name: String, conn: Connection) -> multiprocess::Result<()> {
//!     conn.send(&format!("hello {name}"))
//! }
//!
//! fn main() -> multiprocess::Result<()> {
//!     multiprocess::init();
//!     let (parent_end, child_end) = pipe()?;
//!     let mut p = Process::new(greet, ("john".to_string(), child_end));
//!     p.start()?;
//!     assert_eq!(parent_end.recv::<String>()?, "hello john");
//!     p.join()?;
//!     assert_eq!(p.exitcode(), Some(0));
//!     Ok(())
//! }
//! ```
//!
//! A [`Queue`] filled by two producers:
//!
//! ```
//! use multiprocess::{Process, Queue};
//!
//! fn produce(q: Queue<(u32, String)>, worker: u32) -> multiprocess::Result<()> {
//!     for i in 0..3 {
//!         q.put((worker, format!("item {i}")))?;
//!     }
//!     Ok(())
//! }
//!
//! fn main() -> multiprocess::Result<()> {
//!     multiprocess::init();
//!     let q = Queue::new()?;
//!     let mut producers = Vec::new();
//!     for worker in 0..2 {
//!         let mut p = Process::new(produce, (q.clone(), worker));
//!         p.start()?;
//!         producers.push(p);
//!     }
//!     for _ in 0..6 {
//!         let (worker, item) = q.get()?;
//!         println!("worker {worker}: {item}");
//!     }
//!     for p in &mut producers {
//!         p.join()?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A [`Pool`]:
//!
//! ```
//! use multiprocess::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> multiprocess::Result<()> {
//!     multiprocess::init();
//!     let pool = Pool::new(4)?;
//!     let squares = pool.map(square, 0..10u64)?;
//!     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//!     let pending = pool.apply_async(square, (12,))?; // runs in the background
//!     assert_eq!(pending.get()?, 144);
//!     pool.close();
//!     pool.join()?;
//!     Ok(())
//! }
//! ```
//!
//! A manager's dict, shared with a child:
//!
//! ```
//! use multiprocess::Process;
//! use multiprocess::managers::DictProxy;
//!
//! fn record(d: DictProxy<String, u32>, n: u32) -> multiprocess::Result<()> {
//!     d.insert(format!("child {n}"), n * n)?;
//!     Ok(())
//! }
//!
//! fn main() -> multiprocess::Result<()> {
//!     multiprocess::init();
//!     let m = multiprocess::manager()?; // a server process, shut down when `m` is dropped
//!     let d = m.dict::<String, u32>()?;
//!     let mut p = Process::new(record, (d.clone(), 3));
//!     p.start()?;
//!     p.join()?;
//!     assert_eq!(d.get(&"child 3".to_string())?, Some(9));
//!     Ok(())
//! }
//! ```
//!
//! ## Module map, in Python's names
//!
//! | Python | here |
//! |---|---|
//! | `multiprocessing.process` | [`Process`], [`current_process`], [`parent_process`], [`active_children`] |
//! | `multiprocessing.context` | [`get_context`], [`set_start_method`], [`StartMethod`], [`Context`] |
//! | `multiprocessing.connection` | [`connection`]: [`pipe`], [`Connection`], [`Listener`], [`Client`], [`connection::wait`] |
//! | `multiprocessing.reduction` | [`Connection::send_handle`], [`Connection::recv_handle`] |
//! | `multiprocessing.queues` | [`queues`]: [`Queue`], [`SimpleQueue`], [`JoinableQueue`] |
//! | `multiprocessing.synchronize` | [`synchronize`]: [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] |
//! | `multiprocessing.sharedctypes` | [`sharedctypes`]: [`Value`], [`Array`], [`RawValue`], [`RawArray`] |
//! | `multiprocessing.shared_memory` | [`shared_memory`]: [`SharedMemory`], [`ShareableList`] |
//! | `multiprocessing.pool` | [`pool`]: [`Pool`], [`AsyncResult`], [`MapResult`] |
//! | `concurrent.futures` (`submit`, `as_completed`, `wait`) | [`Pool::submit`], [`as_completed`], [`wait`], [`ReturnWhen`] |
//! | `multiprocessing.managers` | [`managers`]: [`manager`], [`SyncManager`], [`managed`], [`managers::SharedMemoryManager`] |
//! | `multiprocessing.util` | [`util`]: [`log_to_stderr`] |
//! | exceptions | [`Error`] |
//!
//! In the repository, `docs/` maps every Python call to its Rust form
//! ([python-to-rust.md](https://github.com/multiprocess-rs/multiprocess/blob/main/docs/python-to-rust.md)),
//! names the guarantees, with the test that proves each
//! ([guarantees.md](https://github.com/multiprocess-rs/multiprocess/blob/main/docs/guarantees.md)),
//! and the places where this crate differs from CPython on purpose
//! ([differences.md](https://github.com/multiprocess-rs/multiprocess/blob/main/docs/differences.md)).
//!
//! ## How children find their code
//!
//! Under **fork** the child is a copy of the parent and runs the target it has in memory.
//! Under **spawn** and **forkserver** (the default, as in CPython 3.14) the child is a fresh
//! run of the same binary: a load-time constructor gives it its role before `main`, and it
//! finds the target by its offset in the binary, checked to be the same file. So processes
//! work unchanged in `main`, in `#[test]` functions, in examples and in doc tests; calling
//! [`init`] first in `main` is the explicit, portable form of the same step.
//!
//! ## Tests
//!
//! `cargo nextest run` runs each test in its own process, which is what forking wants. Plain
//! `cargo test` runs tests on several threads of one process; the spawn and forkserver start
//! methods are safe there, and fork children only run the target and exit.

#![warn(missing_docs)]

/// The README's examples, run as doc tests so that they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod bootstrap;
pub mod connection;
mod context;
mod error;
mod heap;
pub mod managers;
pub mod pool;
mod popen;
mod process;
pub mod queues;
mod reduction;
mod resource_tracker;
pub mod shared_memory;
pub mod sharedctypes;
pub mod synchronize;
mod sys;
mod target;
pub mod util;

pub use connection::{Address, Client, Connection, Listener, pipe, pipe_simplex};
pub use context::{Context, StartMethod, get_all_start_methods, get_context, get_start_method, set_start_method};
pub use error::{Error, Result};
pub use managers::{SyncManager, manager};
/// Shares your own type through a manager: on a trait, writes its proxy (`TraitProxy`) and
/// `impl Interface for dyn Trait` (see [`managers::Interface`]). Register a factory that
/// returns `Box<dyn Trait + Send>`; [`SyncManager::create`] gives a proxy, whose methods are
/// the trait's, taking `&self` and returning [`Result`]: each call runs in the server. A proxy
/// travels to children as every proxy does.
///
/// Arguments and results travel between processes, so they must be serde types (`cargo check`
/// names the method when one is not); a method takes `&self` or `&mut self` and owned
/// arguments (`String`, not `&str`), and is not generic or `async`.
///
/// ```
/// use multiprocess::managers::SyncManager;
/// use multiprocess::Process;
///
/// #[multiprocess::managed]
/// pub trait Counter {
///     fn increment(&mut self, by: i64) -> i64;
///     fn get(&self) -> i64;
/// }
///
/// struct Local(i64);
///
/// impl Counter for Local {
///     fn increment(&mut self, by: i64) -> i64 {
///         self.0 += by;
///         self.0
///     }
///     fn get(&self) -> i64 {
///         self.0
///     }
/// }
///
/// fn new_counter(start: i64) -> Box<dyn Counter + Send> {
///     Box::new(Local(start))
/// }
///
/// fn child(c: CounterProxy) -> multiprocess::Result<()> {
///     c.increment(1).map(drop)
/// }
///
/// let m = SyncManager::builder().register::<dyn Counter, _, _>("Counter", new_counter).start()?;
/// let c: CounterProxy = m.create::<dyn Counter, _>("Counter", 10)?;
/// assert_eq!(c.increment(5)?, 15);
/// let mut p = Process::new(child, (c.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(c.get()?, 16);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub use multiprocess_macros::managed;

pub use pool::{
    AsCompleted, AsyncResult, Imap, ImapUnordered, MapResult, Pool, PoolBuilder, ReturnWhen, Task, Waited,
    as_completed, wait,
};
pub use process::{
    ActiveChild, CurrentProcess, Fork, ParentProcess, Process, active_children, cpu_count, current_process, exit, fork,
    getpid, getppid, parent_process, process_cpu_count,
};
pub use queues::{JoinableQueue, PutError, Queue, SimpleQueue};

/// The serde items the code `#[managed]` writes needs, for crates that do not depend on serde
/// themselves. Only these: re-exporting all of serde would make the compiler spell `Option`
/// and `Result` by their full paths in the error messages of every crate that uses this one.
#[doc(hidden)]
pub mod __serde {
    pub use serde::de::DeserializeOwned;
    pub use serde::{Deserialize, Deserializer, Serialize, Serializer};
}
pub use shared_memory::{ShareableList, SharedMemory};
pub use sharedctypes::{Array, RawArray, RawValue, Value};
pub use synchronize::{
    Barrier, BoundedSemaphore, Condition, ConditionLock, Event, Lock, LockResult, OwnerDied, RLock, Semaphore,
};
pub use target::{Args, Outcome, Target};
pub use util::log_to_stderr;

/// Gives this process its role if this crate started it as a spawn child or a fork server;
/// call it first in `main`. In a process started normally it returns at once.
///
/// On Linux a load-time constructor already did this before `main`, so the call is a no-op
/// kept for portability and as a marker; children never return from it.
///
/// Python counterpart: the `if __name__ == '__main__':` guard that spawn needs.
///
/// ```
/// multiprocess::init(); // first in main
/// assert_eq!(multiprocess::current_process().name(), "MainProcess");
/// ```
pub fn init() {
    // Referencing the constructor keeps its object file, and so the constructor, linked in.
    std::hint::black_box(&bootstrap::ON_LOAD);
    bootstrap::take_role();
}

#[doc(hidden)]
pub mod __private {
    //! For this crate's own tests; not part of the API.

    /// The descriptors this process has open.
    pub fn open_fds() -> std::io::Result<Vec<std::os::fd::RawFd>> {
        crate::sys::fd::open_fds()
    }

    /// Descriptors this crate keeps open for the life of the process (the fork server's
    /// control socket and pidfd, this process's own pidfd, the pidfds of a few processes a
    /// condition's notify found alive, the set its children's pidfds are watched in, the death
    /// watcher's set, the arena this process makes its shared objects in): not leaks.
    pub fn persistent_fds() -> Vec<std::os::fd::RawFd> {
        let mut fds = crate::popen::forkserver::server_fds();
        fds.extend(crate::process::self_pidfd_raw());
        fds.extend(crate::sys::proc::thread_count_fd());
        fds.extend(crate::resource_tracker::client_fd());
        fds.extend(crate::sys::pidfd::recent_fds());
        fds.extend(crate::process::ended_set_raw());
        fds.extend(crate::heap::allocator_fd());
        fds.extend(crate::synchronize::deathwatch::persistent_fd());
        fds
    }

    /// How many children the last reaping before a start asked about.
    pub fn last_reap_asked() -> usize {
        crate::process::last_reap_asked()
    }

    /// The pid of this process's resource tracker, if it has started one.
    pub fn tracker_pid() -> Option<u32> {
        crate::resource_tracker::tracker_pid()
    }

    /// Makes the next names `SharedMemory::create` generates on this thread `names`, in order.
    pub fn force_shm_names(names: Vec<String>) {
        crate::shared_memory::force_next_names(names)
    }

    /// The fork server's pid, if one is running.
    pub fn forkserver_pid() -> Option<u32> {
        crate::popen::forkserver::server_pid()
    }
}
