//! A pool of worker processes (Python's `multiprocessing.pool.Pool`).
//!
//! Tasks are fn items (or closures that capture nothing) of serde arguments that return a
//! serde value: a worker started by any start method finds the same function in the same
//! binary. The parent keeps one manager thread that hands each worker a couple of chunks at
//! a time over the worker's own queue and files the results from one shared queue.
//!
//! Failures fail one task, never the pool: a panic fails its task with
//! [`Error::TaskPanicked`] (message and location); a worker that dies (killed, aborted,
//! exited) fails only the chunk it was running, with [`Error::WorkerDied`], and is replaced;
//! the chunks queued behind it go to other workers. With a task timeout, a chunk that runs
//! longer is killed with its worker and fails with [`Error::Timeout`]. CPython's Pool waits
//! for ever on a task whose worker died.
//!
//! Under fork, a closure that captures values can be a task too, as a fork child inherits
//! every object of its parent. The workers running when it is submitted were forked before
//! it existed, so the pool replaces them: idle ones at once, busy ones when their chunk is
//! done, with workers forked now (about a millisecond for two). A closure costs a fresh set
//! of workers per call that passes one; a fn item reuses them. Under spawn and forkserver a
//! capturing closure is refused with [`Error::InvalidArgument`]: pass what it captures as
//! arguments instead.
//!
//! ```
//! use multiprocess::{Pool, StartMethod};
//! let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
//! let names = vec!["ada".to_string(), "grace".to_string()];
//! let greet = move |i: usize| format!("hello, {}", names[i]);
//! assert_eq!(pool.map(greet, [1, 0])?, ["hello, grace", "hello, ada"]);
//! # Ok::<(), multiprocess::Error>(())
//! ```
//!
//! The queues between the parent and its workers are trusted: a worker calls the function
//! its pool names by address. They are shared with the pool's workers only.

mod board;
mod bytes;
pub(crate) use task::{record as record_panic, recording as panics_recorded};
mod imap;
mod link;
mod manager;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "progress")]
mod progress;
mod result;
mod spares;
mod task;
mod wait;
mod wire;
mod worker;

pub use imap::{Imap, ImapUnordered};
pub use result::{AsyncResult, MapResult};
pub use task::Task;
pub use wait::{AsCompleted, ReturnWhen, Waited, as_completed, wait};

use crate::queues::Queue;
use crate::{Error, Result, StartMethod, get_context, get_start_method};
use bytes::Bytes;
use manager::{Command, Config, Control, Job, Manager};
use result::Slot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use task::Func;

const RUNNING: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATED: u8 = 2;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// ```
/// use multiprocess::Pool;
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..10)?, vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// assert_eq!(pool.apply(square, (12,))?, 144);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Pool {
    control: Arc<Control>,
    manager: Mutex<Option<JoinHandle<()>>>,
    state: AtomicU8,
    next_task: AtomicU64,
    processes: usize,
    method: StartMethod,
    pids: Arc<Mutex<Vec<u32>>>,
    /// The workers are MPI ranks: no capturing closures, no handles, no per-call timeouts.
    remote: bool,
}

/// How to build a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)` keywords, and the start method of `get_context(m).Pool()`).
///
/// ```
/// use multiprocess::{Pool, StartMethod};
/// use std::time::Duration;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::builder()
///     .processes(2)
///     .maxtasksperchild(100)
///     .start_method(StartMethod::Spawn)
///     .task_timeout(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(pool.map(square, [3, 4])?, vec![9, 16]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    /// Makes a worker process under a start method, with the initializer if there is one.
    starter: Option<Box<dyn Fn(StartMethod) -> manager::Starter + Send>>,
    max_tasks: u64,
    task_timeout: Option<Duration>,
    memory_limit: u64,
    /// The exit hook's runner offset; 0 for none.
    exit: i64,
}

impl PoolBuilder {
    /// The number of workers (`processes`); if not given, the CPUs this process may run on
    /// ([`process_cpu_count`](crate::process_cpu_count), as CPython 3.13's Pool; earlier ones
    /// took `cpu_count()`, every CPU online, even those the process may not use).
    /// Zero is an error when the pool is built.
    ///
    /// ```
    /// let pool = multiprocess::Pool::builder().processes(3).build()?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// The start method of the workers; the default start method if not given.
    ///
    /// ```
    /// use multiprocess::{Pool, StartMethod};
    /// fn one() -> u8 { 1 }
    /// let pool = Pool::builder().processes(1).start_method(StartMethod::Fork).build()?;
    /// assert_eq!(pool.apply(one, ())?, 1);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// A function each worker runs once before its first task (`initializer`, `initargs`).
    /// Its arguments travel with each worker's own, so they may hold handles (a `Value`, a
    /// `Queue`, a `Lock`). If it panics, the pool reports it on every task instead of
    /// starting workers for ever.
    ///
    /// ```
    /// use multiprocess::Value;
    /// fn setup(started: Value<u32>) {
    ///     *started.lock().unwrap() += 1;
    /// }
    /// fn one() -> u8 { 1 }
    /// let started = Value::new(0u32)?;
    /// let pool = multiprocess::Pool::builder().processes(2).initializer(setup, (started.clone(),)).build()?;
    /// assert_eq!(pool.apply(one, ())?, 1);
    /// pool.close();
    /// pool.join()?;
    /// assert_eq!(started.get(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> PoolBuilder
    where
        F: Task<A, Output = ()>,
        A: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        // The function has no bytes (a fn item): each worker is started with its type, and
        // with a copy of `args`, which travel in the worker's own arguments, so that handles
        // in them (a `Value`, a `Queue`, a `Lock`) reach it under every start method.
        let _ = f;
        self.starter = Some(Box::new(move |method| {
            let args = args.clone();
            Box::new(move |channels| {
                get_context(method).process(worker::main_with_init::<F, A>, (channels, args.clone()))
            })
        }));
        self
    }

    /// Replace each worker after this many chunks (`maxtasksperchild`); 0 is an error when
    /// the pool is built. Not set: workers live as long as the pool.
    ///
    /// ```
    /// use multiprocess::Error;
    /// assert!(matches!(multiprocess::Pool::builder().maxtasksperchild(0).build(), Err(Error::InvalidArgument(_))));
    /// ```
    pub fn maxtasksperchild(mut self, n: u64) -> PoolBuilder {
        self.max_tasks = if n == 0 { u64::MAX } else { n };
        self
    }

    /// Kill a worker whose chunk runs longer than `timeout`, fail that chunk with
    /// [`Error::Timeout`], and replace the worker. Python has no such setting.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::builder().processes(1).task_timeout(Duration::from_millis(200)).build()?;
    /// assert!(matches!(pool.apply(nap, (5_000,)), Err(Error::Timeout)));
    /// pool.apply(nap, (1,))?; // a new worker took over
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.task_timeout = Some(timeout);
        self
    }

    /// Limits each worker's resident memory to `bytes` (loky's memory leak protection,
    /// mpire's worker memory limit; Python's Pool has none). The pool looks at each worker's
    /// resident memory every 10 ms; a worker past the limit is **stopped at once** (SIGKILL)
    /// and replaced: the task it was running fails with [`Error::MemoryLimit`] (the chunks
    /// queued behind it go to other workers); an idle worker past it (one that kept what its
    /// tasks took: a leak, a cache) is replaced with no task failing. A short burst that
    /// comes and goes between two looks passes unseen.
    ///
    /// 0 is an error when the pool is built.
    ///
    /// ```
    /// use multiprocess::Error;
    /// fn hog(mib: usize) -> usize {
    ///     let v = vec![1u8; mib << 20];
    ///     std::thread::sleep(std::time::Duration::from_millis(300));
    ///     v.iter().map(|&b| b as usize).sum()
    /// }
    /// let pool = multiprocess::Pool::builder().processes(1).memory_limit(200 << 20).build()?;
    /// assert_eq!(pool.apply(hog, (1,))?, 1 << 20);
    /// assert!(matches!(pool.apply(hog, (400,)), Err(Error::MemoryLimit { .. })));
    /// assert_eq!(pool.apply(hog, (1,))?, 1 << 20); // a new worker
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> PoolBuilder {
        self.memory_limit = if bytes == 0 { u64::MAX } else { bytes };
        self
    }

    /// A function each worker runs as it leaves normally: at `close()` or after its
    /// `maxtasksperchild` (mpire's `worker_exit`); not when it is killed (`terminate()`, a
    /// cancelled or overrunning task, the memory limit, a crash). A fn item
    /// (or a closure that captures nothing) without arguments; a panic in it is printed by the
    /// worker, which leaves anyway.
    ///
    /// ```
    /// use std::io::Write;
    /// fn flush() {
    ///     std::io::stdout().flush().unwrap();
    /// }
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::builder().processes(2).worker_exit(flush).build()?;
    /// assert_eq!(pool.apply(one, ())?, 1);
    /// pool.shutdown(false)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn worker_exit<F: Task<()>>(mut self, f: F) -> PoolBuilder {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "a worker exit hook must be a fn item or a closure that captures nothing"
            )
        };
        self.exit = match task::func::<F, ()>(f) {
            Func::Plain(runner) => task::offset_of(runner as usize),
            // Zero-sized: never a capturing closure (asserted above).
            Func::Closure(_) => 0,
        };
        self
    }

    /// Starts the workers (`Pool(...)`).
    ///
    /// ```
    /// use multiprocess::{Error, Pool};
    /// assert!(matches!(Pool::builder().processes(0).build(), Err(Error::InvalidArgument(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::process_cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument("Number of processes must be at least 1".into()));
        }
        if self.max_tasks == u64::MAX {
            return Err(Error::InvalidArgument("maxtasksperchild must be a positive int or None".into()));
        }
        if self.memory_limit == u64::MAX {
            return Err(Error::InvalidArgument("a memory limit must be at least 1 byte".into()));
        }
        let method = self.method.unwrap_or_else(get_start_method);
        let starter: manager::Starter = match &self.starter {
            Some(make) => make(method),
            None => Box::new(move |channels| get_context(method).process(worker::main, (channels,))),
        };
        let config = Config {
            processes,
            method,
            starter,
            max_tasks: self.max_tasks,
            task_timeout: self.task_timeout,
            memory_limit: self.memory_limit,
            exit: self.exit,
        };
        Pool::launch(config, processes, false, |_, _| Ok(()))
    }
}

impl Pool {
    /// Makes the manager (its first workers, then `setup`'s), its thread, and the pool;
    /// `processes` is what the pool counts as its size.
    fn launch(
        config: Config,
        processes: usize,
        remote: bool,
        setup: impl FnOnce(&mut Manager, &Queue<Vec<u8>>) -> Result<()>,
    ) -> Result<Pool> {
        let method = config.method;
        let reports = Queue::for_pool()?;
        let (tx, rx) = mpsc::channel();
        let pids = Arc::new(Mutex::new(Vec::new()));
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut manager = Manager::new(config, reports.clone(), rx, pids.clone(), woken.clone())?;
        setup(&mut manager, &reports)?;
        let manager = Arc::new(Mutex::new(manager));
        let (shared, results) = (manager.clone(), reports.clone());
        let handle = std::thread::Builder::new()
            .name("multiprocess-pool".into())
            .spawn(move || {
                // Forking workers from here, or from the program's thread beside it, is what
                // the pool is for: this thread is no reason for the fork warning.
                let _own = crate::process::own_thread();
                manager::run(shared, results)
            })
            .map_err(Error::Io)?;
        Ok(Pool {
            control: Arc::new(Control::new(tx, reports, woken, manager)),
            manager: Mutex::new(Some(handle)),
            state: AtomicU8::new(RUNNING),
            next_task: AtomicU64::new(1),
            processes,
            method,
            pids,
            remote,
        })
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("start_method", &self.method)
            .field("initializer", &self.starter.is_some())
            .field("maxtasksperchild", &self.max_tasks)
            .field("task_timeout", &self.task_timeout)
            .field("memory_limit", &self.memory_limit)
            .field("worker_exit", &(self.exit != 0))
            .finish()
    }
}

/// The most descriptors one chunk's arguments may hold: what one `SCM_RIGHTS` message takes.
const MAX_HANDLES_PER_CHUNK: usize = 253;

/// Chunks of a call handed to the workers before the rest are encoded; then twice as many
/// each time, up to `HAND_OVER_MAX`.
const HAND_OVER_FIRST: usize = 32;
const HAND_OVER_MAX: usize = 4096;

/// Chunks of up to this many items are encoded together (see [`Pool::jobs`]); larger ones,
/// whose bytes would be copied out of the common buffer, each into a buffer of its own.
const ENCODE_TOGETHER_UP_TO: usize = 8;

/// The chunk buffer is not kept past this size (after a call of large chunks).
const KEEP_CHUNK_BUFFER: usize = 1 << 20;

thread_local! {
    /// The buffer this thread encodes chunks into (see [`Pool::job`]).
    static CHUNK_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// CPython's default chunk size for `map`: `ceil(n / (4 × workers))`.
fn default_chunksize(n: usize, processes: usize) -> usize {
    n.div_ceil(4 * processes).max(1)
}

impl Pool {
    /// A pool of `processes` workers under the default start method (`Pool(processes)`).
    ///
    /// ```
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.processes(), 2);
    /// assert!(multiprocess::Pool::new(0).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for the other settings.
    ///
    /// ```
    /// let pool = multiprocess::Pool::builder().processes(1).build()?;
    /// assert_eq!(pool.processes(), 1);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            method: None,
            starter: None,
            max_tasks: 0,
            task_timeout: None,
            memory_limit: 0,
            exit: 0,
        }
    }

    /// The number of workers (Python's `_processes`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Pool::new(2)?.processes(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers now (Python's `[p.pid for p in pool._pool]`).
    ///
    /// ```
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn send(&self, command: Command) -> Result<()> {
        self.control.send(command)
    }

    /// Wakes the manager if it waits for results: it has commands to read.
    fn wake(&self) {
        self.control.wake();
    }

    /// `f` as this pool sends it: a capturing closure only under fork.
    fn func<F: Task<A>, A: DeserializeOwned>(&self, f: F) -> Result<Func> {
        if std::mem::size_of::<F>() != 0 && self.remote {
            return Err(Error::InvalidArgument(
                "a closure that captures values cannot be a task of an MPI pool (Pool::mpi): the other ranks \
                 find a task by its address in the binary, not its captures; pass what it captures as arguments \
                 instead"
                    .into(),
            ));
        }
        if std::mem::size_of::<F>() != 0 && self.method != StartMethod::Fork {
            return Err(Error::InvalidArgument(format!(
                "a closure that captures values can be a pool task only under the fork start method \
                 (this pool's is {}): pass what it captures as arguments instead",
                self.method
            )));
        }
        Ok(task::func::<F, A>(f))
    }

    /// Submits `items` in chunks of `chunksize`; one slot per chunk.
    fn submit_chunks<A: Serialize>(
        &self,
        func: &Func,
        items: &[A],
        chunksize: usize,
        notify: Option<&Sender<usize>>,
        first_index: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Arc<Slot>>> {
        self.check_running()?;
        let chunksize = chunksize.max(1);
        let mut slots = Vec::with_capacity(items.len().div_ceil(chunksize));
        let mut group = HAND_OVER_FIRST;
        let mut rest = items;
        while !rest.is_empty() {
            // The first chunks go to the workers while the rest are being encoded, so that
            // they do not wait for the whole list (a chunk that then cannot be encoded fails
            // the call, as in CPython, where the chunks before it run). Straight to the
            // workers with room, from this thread (handed to the manager thread instead, to
            // send while this one makes the next, they went 4 to 7% slower).
            let (now, after) = rest.split_at((group * chunksize).min(rest.len()));
            let jobs = self.jobs(func, now, chunksize, &mut slots, notify.map(|tx| (tx, first_index)), timeout)?;
            self.control.submit(jobs);
            rest = after;
            group = (group * 2).min(HAND_OVER_MAX);
        }
        Ok(slots)
    }

    /// The chunks of `items` (`chunksize` each), their slots appended to `slots` (told to
    /// `notify`'s sender under their index in the call, counted from its number).
    fn jobs<A: Serialize>(
        &self,
        func: &Func,
        items: &[A],
        chunksize: usize,
        slots: &mut Vec<Arc<Slot>>,
        notify: Option<(&Sender<usize>, usize)>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Job>> {
        let mut next_slot = || {
            let slot = self.control.spares.take(notify.map(|(tx, first)| (tx.clone(), first + slots.len())));
            slots.push(slot.clone());
            slot
        };
        if chunksize <= ENCODE_TOGETHER_UP_TO {
            return self.jobs_encoded_together(func, items, chunksize, timeout, &mut next_slot);
        }
        items.chunks(chunksize).map(|chunk| self.job(func, chunk, next_slot(), timeout)).collect()
    }

    /// [`jobs`](Pool::jobs) of small chunks, encoded one after the other into one buffer
    /// (each with the table of handles it would have alone): the setup of an encoding costs
    /// as much as a chunk of a number or two.
    fn jobs_encoded_together<A: Serialize>(
        &self,
        func: &Func,
        items: &[A],
        chunksize: usize,
        timeout: Option<Duration>,
        next_slot: &mut impl FnMut() -> Arc<Slot>,
    ) -> Result<Vec<Job>> {
        let mut ends = Vec::with_capacity(items.len().div_ceil(chunksize));
        let mut handles = Vec::new();
        let bytes =
            crate::reduction::encode_each_in(items.chunks(chunksize), CHUNK_BUFFER.take(), &mut ends, &mut handles)?;
        let (runner, closure) = func.runner_and_closure();
        let first = self.next_task.fetch_add(ends.len() as u64, Ordering::Relaxed);
        let mut handles = handles.into_iter().peekable();
        // Made to size (a `Result` collected has no size to go by, and a list of jobs grown
        // by doubling was copied over and over).
        let mut jobs = Vec::with_capacity(ends.len());
        let mut failed = None;
        let mut start = 0;
        for (i, (task, &end)) in (first..).zip(&ends).enumerate() {
            let args = Bytes::copy_of(&bytes[std::mem::replace(&mut start, end)..end]);
            let job = match handles.next_if(|h| h.value == i) {
                Some(h) => self.chunk_job(task, runner, closure, args, &h.fds, h.tickets, next_slot(), timeout),
                // Most chunks: straight to their job (through `chunk_job` with no handles, a
                // chunk-size-1 map ran 3 to 6% slower).
                None => {
                    Ok(Job::new(task, runner, closure.cloned(), args, next_slot(), timeout, Vec::new(), Vec::new()))
                }
            };
            match job {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if bytes.capacity() <= KEEP_CHUNK_BUFFER {
            CHUNK_BUFFER.set(bytes);
        }
        failed.map_or(Ok(jobs), Err)
    }

    /// Submits one task, a chunk of its own (`apply_async`, `submit`): as `submit_chunks`
    /// with one item, without the lists.
    fn submit_one<A: Serialize>(&self, func: &Func, args: &A, timeout: Option<Duration>) -> Result<Arc<Slot>> {
        self.check_running()?;
        let slot = self.control.spares.take(None);
        let job = self.job(func, std::slice::from_ref(args), slot.clone(), timeout)?;
        self.control.submit(std::iter::once(job));
        Ok(slot)
    }

    fn check_running(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            RUNNING => Ok(()),
            _ => Err(Error::PoolNotRunning),
        }
    }

    /// A chunk of `func` over `items`, its results to go to `slot`.
    fn job<A: Serialize>(&self, func: &Func, items: &[A], slot: Arc<Slot>, timeout: Option<Duration>) -> Result<Job> {
        let (runner, closure) = func.runner_and_closure();
        let task = self.next_task.fetch_add(1, Ordering::Relaxed);
        // Handles in the arguments (a Lock, a Queue, a pipe end) travel as descriptors
        // beside the chunk, as in a child's arguments.
        // Encoded into this thread's buffer, which a chunk of a few bytes (copied inline)
        // leaves for the next: no allocation per chunk.
        let buffer = CHUNK_BUFFER.take();
        let mut encoded = crate::reduction::encode_message_in(items, buffer)?;
        let chunk = Bytes::take_from(&mut encoded.bytes);
        CHUNK_BUFFER.set(std::mem::take(&mut encoded.bytes));
        self.chunk_job(task, runner, closure, chunk, &encoded.fds, encoded.tickets, slot, timeout)
    }

    /// The job of an encoded chunk: `fds` are the descriptors of the handles in its
    /// arguments (copied here, as the arguments are borrowed), `tickets` the holds on the
    /// shared objects in them.
    #[allow(clippy::too_many_arguments)]
    fn chunk_job(
        &self,
        task: u64,
        runner: i64,
        closure: Option<&task::Closure>,
        chunk: Bytes,
        fds: &[std::os::fd::RawFd],
        tickets: Vec<crate::heap::Ticket>,
        slot: Arc<Slot>,
        timeout: Option<Duration>,
    ) -> Result<Job> {
        if self.remote && (!fds.is_empty() || !tickets.is_empty()) {
            return Err(Error::InvalidArgument(
                "handles (locks, queues, shared values) cannot be arguments of an MPI pool's tasks: \
                 the other ranks may be on other hosts"
                    .into(),
            ));
        }
        if fds.len() > MAX_HANDLES_PER_CHUNK {
            return Err(Error::InvalidArgument(format!(
                "a chunk's arguments hold {} descriptors; at most {MAX_HANDLES_PER_CHUNK} travel with one task",
                fds.len()
            )));
        }
        let mut owned = Vec::new();
        for &fd in fds {
            // SAFETY: the descriptors belong to handles in the chunk's arguments, borrowed by
            // the caller for this call.
            owned.push(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?);
        }
        Ok(Job::new(task, runner, closure.cloned(), chunk, slot, timeout, owned, tickets))
    }

    /// Runs `f(args)` in a worker and waits for its value (`apply(f, args)`).
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 { a + b }
    /// let pool = multiprocess::Pool::new(1)?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn apply<F, A>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker in the background (`apply_async(f, args)`).
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 { a + b }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let results: Vec<_> = (0..4).map(|i| pool.apply_async(add, (i, 10))).collect::<Result<_, _>>()?;
    /// let sums: Vec<u32> = results.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(sums, vec![10, 11, 12, 13]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.apply_async_inner(f, args, None)
    }

    fn apply_async_inner<F, A>(&self, f: F, args: A, timeout: Option<Duration>) -> Result<AsyncResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        if self.remote && timeout.is_some() {
            return Err(Error::InvalidArgument(
                "an MPI pool's tasks have no timeout: a rank cannot be stopped in the middle of a task".into(),
            ));
        }
        let func = self.func(f)?;
        let slot = self.submit_one(&func, &args, timeout)?;
        Ok(AsyncResult::new(slot, self.control.clone()))
    }

    /// As [`apply_async`](Pool::apply_async), with a timeout of this call's own (pebble's
    /// `schedule(timeout=)`): a task that runs longer is stopped with its worker, which is
    /// replaced, and fails with [`Error::Timeout`]. With the pool's
    /// [`task_timeout`](PoolBuilder::task_timeout) too, the shorter applies. The clock starts
    /// when a worker starts the task, not while it waits in the queue.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let slow = pool.apply_async_timeout(nap, (5_000,), Duration::from_millis(200))?;
    /// assert!(matches!(slow.get(), Err(Error::Timeout)));
    /// assert_eq!(pool.apply_async_timeout(nap, (10,), Duration::from_secs(5))?.get()?, 10);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn apply_async_timeout<F, A>(&self, f: F, args: A, timeout: Duration) -> Result<AsyncResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.apply_async_inner(f, args, Some(timeout))
    }

    /// As [`submit`](Pool::submit), with a timeout of this call's own (see
    /// [`apply_async_timeout`](Pool::apply_async_timeout)).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit_timeout(nap, (5_000,), Duration::from_millis(200))?;
    /// assert!(matches!(r.get(), Err(Error::Timeout)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn submit_timeout<F, A>(&self, f: F, args: A, timeout: Duration) -> Result<AsyncResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.apply_async_inner(f, args, Some(timeout))
    }

    /// Runs `f(args)` in a worker in the background and returns its future
    /// (`ProcessPoolExecutor.submit(fn, *args)`): the same as
    /// [`apply_async`](Pool::apply_async). The result can be awaited on any executor, waited
    /// for, or cancelled (see [`AsyncResult`]).
    ///
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let r = pool.submit(pow, (2, 8))?;
    /// assert_eq!(r.get()?, 256);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn submit<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args)
    }

    /// `f(x)` for every `x` of `items`, in order (`map(f, iterable)`), in chunks of CPython's
    /// default size; the first task's error if any fails.
    ///
    /// ```
    /// fn square(x: i64) -> i64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.map(square, [1, 2, 3])?, vec![1, 4, 9]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn map<F, T>(&self, f: F, items: impl IntoIterator<Item = T>) -> Result<Vec<F::Output>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
    {
        self.map_async(f, items)?.get()
    }

    /// As [`map`](Pool::map), in chunks of `chunksize` items (`map(f, iterable, chunksize)`).
    ///
    /// ```
    /// fn square(x: i64) -> i64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(square, 0..100, 20)?.len(), 100);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn map_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
    {
        self.map_async_chunked(f, items, chunksize)?.get()
    }

    /// [`map`](Pool::map) in the background (`map_async(f, iterable)`).
    ///
    /// ```
    /// fn square(x: i64) -> i64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let r = pool.map_async(square, 0..4)?;
    /// assert_eq!(r.get()?, vec![0, 1, 4, 9]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn map_async<F, T>(&self, f: F, items: impl IntoIterator<Item = T>) -> Result<MapResult<F::Output>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
    {
        let items: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        let chunksize = default_chunksize(items.len(), self.processes);
        self.starmap_async_chunked(f, items, chunksize)
    }

    /// [`map_chunked`](Pool::map_chunked) in the background.
    ///
    /// ```
    /// fn square(x: i64) -> i64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.map_async_chunked(square, 0..3, 1)?.get()?, vec![0, 1, 4]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn map_async_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<MapResult<F::Output>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
    {
        self.starmap_async_chunked(f, items.into_iter().map(|x| (x,)), chunksize)
    }

    /// `f(a, b, ..)` for every argument tuple of `items`, in order (`starmap(f, iterable)`).
    ///
    /// ```
    /// fn mul(a: i32, b: i32) -> i32 { a * b }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.starmap(mul, [(1, 2), (3, 4)])?, vec![2, 12]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn starmap<F, A>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        self.starmap_async(f, items)?.get()
    }

    /// [`starmap`](Pool::starmap) in the background (`starmap_async`).
    ///
    /// ```
    /// fn mul(a: i32, b: i32) -> i32 { a * b }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(mul, [(5, 6)])?.get()?, vec![30]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn starmap_async<F, A>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<MapResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes);
        self.starmap_async_chunked(f, items, chunksize)
    }

    /// [`starmap_async`](Pool::starmap_async) in chunks of `chunksize`.
    ///
    /// ```
    /// fn mul(a: i32, b: i32) -> i32 { a * b }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let r = pool.starmap_async_chunked(mul, (0..100).map(|i| (i, 2)), 20)?;
    /// assert_eq!(r.get()?[99], 198);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn starmap_async_chunked<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<MapResult<F::Output>>
    where
        F: Task<A>,
        A: Serialize + DeserializeOwned,
    {
        if chunksize == 0 {
            return Err(Error::InvalidArgument("chunksize must be at least 1".into()));
        }
        let func = self.func(f)?;
        let items: Vec<A> = items.into_iter().collect();
        Ok(MapResult::new(self.submit_chunks(&func, &items, chunksize, None, 0, None)?, self.control.clone()))
    }

    /// `f(x)` for every `x` of `items`, lazily and in order (`imap(f, iterable)`): an
    /// iterator of results that pulls `items` as it goes, with a bound on what is in flight,
    /// so an endless input works. One item per chunk, as in Python.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let first: Vec<u64> = pool.imap(square, 0..)?.take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, vec![0, 1, 4, 9, 16]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn imap<F, T, I>(&self, f: F, items: I) -> Result<Imap<'_, F::Output, I::IntoIter>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Pool::imap) in chunks of `chunksize` items (`imap(f, iterable, chunksize)`).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let all: Vec<u64> = pool.imap_chunked(square, 0..1000, 100)?.collect::<Result<_, _>>()?;
    /// assert_eq!(all[999], 998_001);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn imap_chunked<F, T, I>(&self, f: F, items: I, chunksize: usize) -> Result<Imap<'_, F::Output, I::IntoIter>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        Imap::new(self, self.func(f)?, items.into_iter(), chunksize)
    }

    /// As [`imap`](Pool::imap), with the results in the order they finish
    /// (`imap_unordered(f, iterable)`).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let mut all: Vec<u64> = pool.imap_unordered(square, 0..10)?.collect::<Result<_, _>>()?;
    /// all.sort();
    /// assert_eq!(all, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn imap_unordered<F, T, I>(&self, f: F, items: I) -> Result<ImapUnordered<'_, F::Output, I::IntoIter>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        self.imap_unordered_chunked(f, items, 1)
    }

    /// [`imap_unordered`](Pool::imap_unordered) in chunks of `chunksize` items.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let n = pool.imap_unordered_chunked(square, 0..1000, 100)?.count();
    /// assert_eq!(n, 1000);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn imap_unordered_chunked<F, T, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Result<ImapUnordered<'_, F::Output, I::IntoIter>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
    {
        ImapUnordered::new(self, self.func(f)?, items.into_iter(), chunksize)
    }

    /// No more tasks (`close()`): those submitted still run, then the workers exit.
    ///
    /// ```
    /// use multiprocess::Error;
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// pool.close();
    /// assert!(matches!(pool.apply(one, ()), Err(Error::PoolNotRunning)));
    /// pool.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&self) {
        if self.state.compare_exchange(RUNNING, CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let _ = self.send(Command::Close);
            self.wake();
        }
    }

    /// Ends the pool (`ProcessPoolExecutor.shutdown(wait=True, cancel_futures=...)`): no more
    /// tasks are taken; with `cancel_pending`, the tasks no worker has started yet are
    /// cancelled (their results are `Err(Error::Cancelled)`); then the running ones (and,
    /// without `cancel_pending`, the queued ones) finish and the workers exit. The same as
    /// [`close`](Pool::close) and [`join`](Pool::join), with the cancelling between.
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let results: Vec<_> = (0..5).map(|_| pool.submit(nap, (200,))).collect::<Result<_, _>>()?;
    /// std::thread::sleep(Duration::from_millis(50));
    /// pool.shutdown(true)?;
    /// assert!(results[0].get().is_ok()); // it was running
    /// assert!(results[1..].iter().all(|r| r.cancelled()));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shutdown(&self, cancel_pending: bool) -> Result<()> {
        if cancel_pending {
            let _ = self.send(Command::CancelQueued);
        }
        self.close();
        self.wake();
        self.join()
    }

    /// Kills the workers now (`terminate()`); tasks not done fail with
    /// [`Error::PoolNotRunning`]. Dropping a running pool does this.
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(30)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// pool.terminate()?;
    /// assert!(r.get().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        if self.state.swap(TERMINATED, Ordering::AcqRel) != TERMINATED {
            let _ = self.send(Command::Terminate);
            self.wake();
        }
        self.wait_manager();
        Ok(())
    }

    /// Waits for the workers to exit (`join()`), after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate); before either, `Err(Error::PoolStillRunning)`.
    ///
    /// ```
    /// use multiprocess::Error;
    /// let pool = multiprocess::Pool::new(1)?;
    /// assert!(matches!(pool.join(), Err(Error::PoolStillRunning)));
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.state.load(Ordering::Acquire) == RUNNING {
            return Err(Error::PoolStillRunning);
        }
        self.wait_manager();
        Ok(())
    }

    fn wait_manager(&self) {
        let handle = self.manager.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state.load(Ordering::Relaxed) {
            RUNNING => "RUN",
            CLOSED => "CLOSE",
            _ => "TERMINATE",
        };
        f.debug_struct("Pool").field("state", &state).field("pool_size", &self.processes).finish()
    }
}
