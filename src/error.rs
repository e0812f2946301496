//! The crate's one error type, `Error`, and `Result`.
//!
//! Each variant stands for a Python exception that `multiprocessing` can raise (named in its
//! doc), so code ported from Python keeps its `except` clauses as `match` arms.

use std::io;

/// Every error this crate returns.
///
/// Python counterpart: the exceptions of `multiprocessing` (`ProcessError`, `BufferTooShort`,
/// `AuthenticationError`, `TimeoutError`), of `queue` (`Empty`, `Full`) and the `OSError`,
/// `ValueError` and `EOFError` raised by its objects.
///
/// ```
/// use multiprocess::{pipe, Error};
/// let (a, b) = pipe()?;
/// drop(b);
/// assert!(matches!(a.recv_bytes(), Err(Error::Eof)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end and nothing is left to read (`EOFError`).
    #[error("end of file: the peer closed the connection")]
    Eof,
    /// The receive buffer is too small; the whole message is returned so nothing is lost
    /// (`multiprocessing.BufferTooShort`, whose `args[0]` is the message).
    #[error("buffer too short for a message of {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),
    /// A message is longer than the maximum the receiver accepts (`OSError('bad message length')`).
    #[error("bad message length: {len} bytes, at most {max} accepted")]
    BadMessageLength {
        /// The length announced by the sender.
        len: u64,
        /// The largest length this call accepts.
        max: u64,
    },
    /// The handle was closed by `close()` (`OSError('handle is closed')`).
    #[error("handle is closed")]
    HandleClosed,
    /// Reading from the write end of a simplex pipe (`OSError('connection is write-only')`).
    #[error("connection is write-only")]
    WriteOnly,
    /// Writing to the read end of a simplex pipe (`OSError('connection is read-only')`).
    #[error("connection is read-only")]
    ReadOnly,
    /// A message could not be encoded or decoded (`pickle.PicklingError` / `UnpicklingError`).
    #[error("codec error: {0}")]
    Codec(String),
    /// An argument is out of its range (`ValueError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The queue is empty (`queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// The queue is full (`queue.Full`).
    #[error("queue is full")]
    Full,
    /// The object was closed (`ValueError('Queue ... is closed')`).
    #[error("object is closed")]
    Closed,

    /// `JoinableQueue::task_done` called more times than items were put (`ValueError`).
    #[error("task_done() called too many times")]
    TaskDoneTooManyTimes,

    /// The HMAC handshake failed (`multiprocessing.AuthenticationError`).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A blocking call ran out of time (`multiprocessing.TimeoutError`).
    #[error("timed out")]
    Timeout,
    /// A barrier was broken (`threading.BrokenBarrierError`).
    #[error("barrier is broken")]
    BrokenBarrier,
    /// The lock was acquired, but its previous holder died holding it (CPython deadlocks here).
    #[error("the previous holder of the lock died")]
    OwnerDied,
    /// Releasing a lock that is not held, or a semaphore past its maximum
    /// (`ValueError('semaphore or lock released too many times')`).
    #[error("semaphore or lock released too many times")]
    ReleasedTooManyTimes,
    /// Releasing an `RLock`, or using a `Condition`, without holding its lock
    /// (`AssertionError('attempt to release recursive lock not owned by thread')`).
    #[error("the lock is not owned by this thread")]
    NotOwner,
    /// A named object already exists (`FileExistsError`).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A named object does not exist (`FileNotFoundError`).
    #[error("not found: {0}")]
    NotFound(String),
    /// An index past the end (`IndexError`).
    #[error("index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The length.
        len: usize,
    },
    /// A pool task panicked (Python re-raises the task's exception).
    #[error("task panicked: {message}")]
    TaskPanicked {
        /// The panic message and location.
        message: String,
    },
    /// A pool worker died while holding the task (CPython's Pool hangs here).
    #[error("worker died with exit code {exitcode}")]
    WorkerDied {
        /// The worker's exit code (`-N` for signal N).
        exitcode: i32,
    },
    /// The pool was closed or terminated (`ValueError('Pool not running')`).
    #[error("Pool not running")]
    PoolNotRunning,

    /// The task's worker passed the pool's memory limit while running it, and was stopped
    /// (loky's and mpire's memory limits; Python's Pool has none).
    #[error("the worker passed its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The limit, in bytes of resident memory.
        limit: u64,
    },

    /// The task was cancelled before it finished (`concurrent.futures.CancelledError`).
    #[error("the task was cancelled")]
    Cancelled,

    /// `join()` on a pool that was neither closed nor terminated
    /// (`ValueError('Pool is still running')`).
    #[error("Pool is still running")]
    PoolStillRunning,

    /// `successful()` on a result not ready yet (`ValueError('... not ready')`).
    #[error("result not ready")]
    NotReady,

    /// The process has not been started (`ValueError('process not started')`,
    /// `AssertionError('can only join a started process')`).
    #[error("process not started")]
    NotStarted,
    /// `start()` was called twice, or a setting was changed after start
    /// (`AssertionError('cannot start a process twice')`).
    #[error("process already started")]
    AlreadyStarted,
    /// `close()` on a running process (`ValueError('Cannot close a process while it is still running...')`).
    #[error("cannot close a process while it is still running; join() or terminate() it first")]
    StillRunning,
    /// The process object was closed (`ValueError('process object is closed')`).
    #[error("process object is closed")]
    ProcessClosed,
    /// A daemon process tried to start a child
    /// (`AssertionError('daemonic processes are not allowed to have children')`).
    #[error("daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// The start method cannot run this (for example a spawn child from another binary).
    #[error("start method error: {0}")]
    StartMethod(String),
    /// The context was already set (`RuntimeError('context has already been set')`).
    #[error("context has already been set")]
    ContextAlreadySet,
    /// The peer is gone: writing to a connection whose reader was closed (`BrokenPipeError`).
    #[error("broken pipe: the peer closed its end")]
    BrokenPipe,
    /// An error a manager's server reported that has no variant of its own
    /// (`multiprocessing.managers.RemoteError`): the kind, as the Python exception's name
    /// where there is one, and the message.
    #[error("remote error ({kind}): {message}")]
    Remote {
        /// What kind of error: `IndexError`, `NoObject`, `BadRequest`, ...
        kind: String,
        /// What the server said.
        message: String,
    },
    /// A manager's server is gone: shut down, or dead (Python raises `EOFError`,
    /// `BrokenPipeError` or `ConnectionRefusedError` there).
    #[error("the manager's server is gone (shut down or dead)")]
    ManagerGone,
    /// `Pool::mpi()` (feature `mpi`) cannot make an MPI pool: the program was not started by
    /// an MPI launcher (`mpirun`, `mpiexec`, `srun`), the job has a single rank, or MPI was
    /// initialized in this process before. mpi4py's `MPIPoolExecutor` raises `RuntimeError`
    /// or hangs there.
    ///
    /// ```
    /// let e = multiprocess::Error::Mpi("not started by mpirun".into());
    /// assert_eq!(e.to_string(), "MPI: not started by mpirun");
    /// ```
    #[error("MPI: {0}")]
    Mpi(String),
    /// Any other operating-system error (`OSError`).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Maps `EPIPE` and `ECONNRESET` to [`Error::BrokenPipe`], everything else to [`Error::Io`].
    pub(crate) fn from_write(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::BrokenPipe,
            _ => Error::Io(e),
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Error {
        if matches!(e, postcard::Error::SerdeDeCustom | postcard::Error::SerdeSerCustom)
            && let Some(message) = CUSTOM.with(|c| c.borrow_mut().take())
        {
            return Error::Codec(message);
        }
        Error::Codec(e.to_string())
    }
}

thread_local! {
    /// The message of this crate's last custom serde error on this thread: postcard keeps
    /// only that there was one, and the message says which handle or name failed.
    static CUSTOM: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A custom decoding error whose message survives postcard (see [`CUSTOM`]).
pub(crate) fn de_custom<E: serde::de::Error>(message: impl std::fmt::Display) -> E {
    let message = message.to_string();
    CUSTOM.with(|c| *c.borrow_mut() = Some(message.clone()));
    E::custom(message)
}

/// A custom encoding error whose message survives postcard (see [`CUSTOM`]).
pub(crate) fn ser_custom<E: serde::ser::Error>(message: impl std::fmt::Display) -> E {
    let message = message.to_string();
    CUSTOM.with(|c| *c.borrow_mut() = Some(message.clone()));
    E::custom(message)
}

/// `std::result::Result` with this crate's [`Error`].
///
/// ```
/// fn make() -> multiprocess::Result<()> {
///     let (_a, _b) = multiprocess::pipe()?;
///     Ok(())
/// }
/// make().unwrap();
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
