//! Queues between processes (Python's `multiprocessing.queues`): [`Queue`], [`SimpleQueue`]
//! and [`JoinableQueue`].
//!
//! All three are a ring in shared memory (see `ring.rs`), not a pipe and a feeder thread as
//! in CPython. That changes three things a Python user may rely on, each for the better:
//!
//! - **A `put` is done when it returns.** The item is in shared memory, so it is delivered
//!   even if its producer exits or is killed right after (CPython loses what its feeder thread
//!   had not yet written). `qsize()` and `empty()` see it at once: no need to sleep first.
//! - **An unbounded queue does not make `put` wait** for its consumers until 4 GiB of
//!   encoded items wait (CPython's blocks its feeder thread on a full pipe of 64 KiB): the
//!   ring grows into file offsets set aside for it, and each process maps what it reaches.
//!   Past 4 GiB waiting, `full()` says so and `put` waits for room, as a bounded queue's
//!   (`with_maxsize`) does at its bound.
//! - **An item that cannot be encoded is refused by `put`** (with the item), instead of
//!   being dropped later by the feeder thread.
//!
//! A process killed in the middle of a `put` or `get` does not wedge or corrupt the queue for
//! the others: the next one to use it takes over. At most the one item the killed process
//! had in its hands is lost: the item a killed `put` had not finished putting, or the item a
//! killed `get` had taken but not yet returned.
//!
//! Items are serde values, encoded with postcard; a `Vec<u8>` travels as its bytes, at
//! memory speed. One item may be up to 2 GiB encoded. A
//! [`SharedMemory`](crate::SharedMemory) or [`ShareableList`](crate::ShareableList) travels
//! as its name, as CPython pickles it. Other handles (connections, locks, queues) cannot be
//! put in a queue; pass them to a child in its `args` instead.

pub(crate) mod codec;
mod err;
mod joinable;
pub(crate) mod ring;
#[cfg(test)]
mod ring_tests;
mod signal;
mod simple;

pub use err::PutError;
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;

use crate::heap::Shared;
use crate::sys::Deadline;
use crate::{Error, Result};
use ring::{GetFail, PutFail, Ring};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the three queue types share: this process's handle on the ring, and whether this
/// process closed it. Clones within a process share one `Core`, as Python objects do.
struct Core {
    ring: Ring,
    closed: AtomicBool,
}

/// A typed handle on a [`Core`].
struct Handle<T> {
    core: Arc<Core>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle { core: self.core.clone(), _item: PhantomData }
    }
}

/// A ring's failure to give a record, as the queue reports it.
fn get_error(e: GetFail) -> Error {
    match e {
        GetFail::Empty => Error::Empty,
        GetFail::Busy => Error::Timeout,
        GetFail::Corrupt(what) => Error::Codec(format!("queue corrupted: {what}")),
        GetFail::Map(e) => Error::from(e),
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Handle<T> {
    fn new(maxsize: usize) -> Result<Handle<T>> {
        if maxsize as u64 > ring::MAX_ITEMS {
            return Err(Error::InvalidArgument(format!("maxsize {maxsize} is above {}", ring::MAX_ITEMS)));
        }
        Ok(Handle::from_ring(Ring::new(maxsize as u64, codec::type_tag::<T>())?))
    }

    /// A new unbounded queue for a pool (see `Ring::for_pool`).
    fn for_pool() -> Result<Handle<T>> {
        Ok(Handle::from_ring(Ring::for_pool(codec::type_tag::<T>())?))
    }

    fn from_ring(ring: Ring) -> Handle<T> {
        Handle { core: Arc::new(Core { ring, closed: AtomicBool::new(false) }), _item: PhantomData }
    }

    fn ring(&self) -> &Ring {
        &self.core.ring
    }

    fn is_closed(&self) -> bool {
        self.core.closed.load(Ordering::Relaxed)
    }

    fn put(&self, item: T, deadline: Deadline) -> std::result::Result<(), PutError<T>> {
        if self.is_closed() {
            return Err(PutError::Closed(item));
        }
        let sent = codec::with_scratch(|scratch| self.put_payload(codec::encode(&item, scratch)?, deadline));
        match sent {
            Ok(()) => Ok(()),
            Err(Error::Full) => Err(PutError::Full(item)),
            Err(e) => Err(PutError::Failed(item, e)),
        }
    }

    /// Puts an item already encoded (see [`codec::encode`]); `Error::Full` if no room came.
    fn put_payload(&self, payload: &[u8], deadline: Deadline) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let ring = self.ring();
        ring.put(payload, deadline).map_err(|e| match e {
            PutFail::Full => Error::Full,
            PutFail::TooLarge => Error::InvalidArgument(format!(
                "an item of {} bytes encoded is larger than a queue takes ({} bytes)",
                payload.len(),
                ring.max_payload()
            )),
            PutFail::Map(e) => Error::from(e),
        })
    }

    fn get(&self, deadline: Deadline) -> Result<T> {
        if codec::is_bytes::<T>() {
            let mut bytes = Vec::new();
            self.get_payload(&mut bytes, deadline)?;
            return codec::decode_bytes(bytes);
        }
        codec::with_scratch(|scratch| {
            self.get_payload(scratch, deadline)?;
            codec::decode(scratch)
        })
    }

    /// Takes the oldest item's encoding into `out` (cleared first).
    fn get_payload(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.ring().get(out, deadline).map_err(get_error)
    }

    /// The oldest payload if one is there now, waiting for the get lock until `deadline`
    /// (see `Ring::get_present`).
    fn get_present_payload(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.ring().get_present(out, deadline).map_err(get_error)
    }

    fn qsize(&self) -> usize {
        self.ring().len() as usize
    }

    fn empty(&self) -> bool {
        self.ring().is_empty()
    }

    fn full(&self) -> bool {
        self.ring().is_full()
    }

    fn close(&self) {
        self.core.closed.store(true, Ordering::Relaxed);
    }
}

/// A handle as it travels to a child: the ring's segment, and whether this process closed
/// it (so that a child gets a closed handle under every start method, as a fork child does).
#[derive(Serialize)]
struct WireOut<'a> {
    ring: &'a Shared<ring::RingState>,
    closed: bool,
    eager_yield: bool,
}

#[derive(Deserialize)]
struct WireIn {
    ring: Shared<ring::RingState>,
    closed: bool,
    eager_yield: bool,
}

impl<T> Serialize for Handle<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let core = &self.core;
        WireOut {
            ring: core.ring.shared(),
            closed: core.closed.load(Ordering::Relaxed),
            eager_yield: core.ring.eager_yield(),
        }
        .serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for Handle<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Handle<T>, D::Error> {
        let wire = WireIn::deserialize(d)?;
        let mut ring = Ring::attach(wire.ring, codec::type_tag::<T>()).map_err(crate::error::de_custom)?;
        ring.set_eager_yield(wire.eager_yield);
        let handle = Handle::from_ring(ring);
        handle.core.closed.store(wire.closed, Ordering::Relaxed);
        Ok(handle)
    }
}

/// A FIFO queue between processes and threads (Python's `multiprocessing.Queue`).
///
/// Any number of processes and threads may put and get at once; each item goes to exactly
/// one getter, in the order the puts returned. Pass a queue to a child in its `args` (under
/// every start method), or capture it in a `from_closure` child; clones within a process are
/// the same queue.
///
/// `put` returns the item inside [`PutError`] when it cannot put it (full, closed, or not
/// encodable), so nothing is lost; `?` turns that into an [`Error`] where the item is not
/// wanted back. `get` gives [`Error::Empty`] when nothing came in time, and
/// [`Error::Closed`] after [`close`](Queue::close).
///
/// ```
/// use multiprocess::{Process, Queue};
/// fn child(q: Queue<Vec<Option<String>>>) -> multiprocess::Result<()> {
///     q.put(vec![Some("42".into()), None, Some("hello".into())])?;
///     Ok(())
/// }
/// let q = Queue::new()?;
/// let mut p = Process::new(child, (q.clone(),));
/// p.start()?;
/// assert_eq!(q.get()?, vec![Some("42".to_string()), None, Some("hello".to_string())]);
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Queue<T> {
    handle: Handle<T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { handle: self.handle.clone() }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// An unbounded queue (`Queue()`, `Queue(0)`): `put` does not wait for room until 4 GiB of
    /// encoded items wait (then [`full`](Queue::full) is true, and `put` waits as at a bound).
    ///
    /// ```
    /// let q = multiprocess::Queue::new()?;
    /// for i in 0..100 {
    ///     q.put(i)?;
    /// }
    /// assert_eq!(q.qsize(), 100);
    /// assert!(!q.full());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Queue<T>> {
        Queue::with_maxsize(0)
    }

    /// A queue of at most `maxsize` items (`Queue(maxsize)`); 0 means unbounded. A `put` on
    /// a full queue waits for room ([`put`](Queue::put)), or gives up
    /// ([`put_timeout`](Queue::put_timeout), [`put_nowait`](Queue::put_nowait)).
    ///
    /// ```
    /// use multiprocess::{PutError, Queue};
    /// let q = Queue::with_maxsize(1)?;
    /// q.put(1)?;
    /// assert!(q.full());
    /// assert!(matches!(q.put_nowait(2), Err(PutError::Full(2))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Queue<T>> {
        Ok(Queue { handle: Handle::new(maxsize)? })
    }

    /// A pool's report queue: unbounded, a small warm part, waits that give the CPU away
    /// early (see `Ring::for_pool`).
    pub(crate) fn for_pool() -> Result<Queue<T>> {
        Ok(Queue { handle: Handle::for_pool()? })
    }

    /// Puts `item` at the end, waiting for room if the queue is bounded and full
    /// (`put(obj)`). When it returns `Ok`, the item is in the queue and survives this
    /// process.
    ///
    /// ```
    /// let q = multiprocess::Queue::new()?;
    /// q.put("hello".to_string())?;
    /// assert_eq!(q.get()?, "hello");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.handle.put(item, Deadline::NEVER)
    }

    /// Puts `item`, waiting at most `timeout` for room (`put(obj, True, timeout)`):
    /// `Err(PutError::Full(item))` if none came.
    ///
    /// ```
    /// use multiprocess::{PutError, Queue};
    /// use std::time::Duration;
    /// let q = Queue::with_maxsize(1)?;
    /// q.put_timeout(1, Duration::from_millis(10))?;
    /// assert!(matches!(q.put_timeout(2, Duration::from_millis(10)), Err(PutError::Full(2))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.handle.put(item, Deadline::after(Some(timeout)))
    }

    /// Puts `item` only if there is room now (`put_nowait(obj)`, `put(obj, False)`):
    /// otherwise `Err(PutError::Full(item))`, and the item stays with the caller.
    ///
    /// ```
    /// use multiprocess::{PutError, Queue};
    /// let q = Queue::with_maxsize(1)?;
    /// q.put_nowait(vec![1u8])?;
    /// match q.put_nowait(vec![2u8]) {
    ///     Err(PutError::Full(item)) => assert_eq!(item, vec![2u8]),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.handle.put(item, Deadline::after(Some(Duration::ZERO)))
    }

    /// Takes the oldest item, waiting for one (`get()`).
    ///
    /// ```
    /// let q = multiprocess::Queue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!((q.get()?, q.get()?), (1, 2));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.handle.get(Deadline::NEVER)
    }

    /// Takes the oldest item, waiting at most `timeout` (`get(True, timeout)`):
    /// `Err(Error::Empty)` if none came.
    ///
    /// ```
    /// use multiprocess::{Error, Queue};
    /// use std::time::Duration;
    /// let q = Queue::<i32>::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(Error::Empty)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.handle.get(Deadline::after(Some(timeout)))
    }

    /// Takes the oldest item if there is one now (`get_nowait()`, `get(False)`):
    /// otherwise `Err(Error::Empty)`.
    ///
    /// ```
    /// use multiprocess::{Error, Queue};
    /// let q = Queue::new()?;
    /// assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    /// q.put(7u8)?;
    /// assert_eq!(q.get_nowait()?, 7);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        self.handle.get(Deadline::after(Some(Duration::ZERO)))
    }

    /// Waits until the queue holds an item, or `timeout`, without taking it (nor holding the
    /// consumers' lock meanwhile); whether it does. For a pool's manager, which shares its
    /// result queue with the callers that take their own results.
    pub(crate) fn wait_nonempty(&self, timeout: Duration) -> bool {
        self.handle.ring().wait_nonempty(Deadline::after(Some(timeout)))
    }

    /// The CPU the last producer ran on, plus one (0: none yet; a hint for a waiter).
    pub(crate) fn producer_cpu(&self) -> u32 {
        self.handle.ring().producer_cpu()
    }

    /// How many items the queue holds (`qsize()`). Exact when it is read: a `put` counts as
    /// soon as it returns (no feeder thread lags behind, as in CPython).
    ///
    /// ```
    /// let q = multiprocess::Queue::new()?;
    /// q.put(())?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.handle.qsize()
    }

    /// Whether the queue holds nothing (`empty()`).
    ///
    /// ```
    /// let q = multiprocess::Queue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.handle.empty()
    }

    /// Whether a `put` would wait for room now (`full()`): a bounded queue holds `maxsize`
    /// items, or an unbounded one holds 4 GiB of encoded items.
    ///
    /// ```
    /// let q = multiprocess::Queue::with_maxsize(2)?;
    /// q.put(1)?;
    /// assert!(!q.full());
    /// q.put(2)?;
    /// assert!(q.full());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn full(&self) -> bool {
        self.handle.full()
    }

    /// The bound given to [`with_maxsize`](Queue::with_maxsize); `None` for an unbounded
    /// queue (Python's `_maxsize`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Queue::<u8>::with_maxsize(6)?.maxsize(), Some(6));
    /// assert_eq!(multiprocess::Queue::<u8>::new()?.maxsize(), None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        match self.ring().maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// Closes this process's handle (`close()`): its later puts and gets (and its clones')
    /// give [`Error::Closed`]. Other processes' handles are untouched, and items already put
    /// stay in the queue for them. There is no feeder thread to flush, so Python's
    /// `join_thread()` and `cancel_join_thread()` have nothing to do and do not exist here.
    ///
    /// ```
    /// use multiprocess::{Error, PutError, Queue};
    /// let q = Queue::new()?;
    /// q.close();
    /// assert!(matches!(q.put(1), Err(PutError::Closed(1))));
    /// assert!(matches!(q.get(), Err(Error::Closed)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&self) {
        self.handle.close()
    }

    /// Whether [`close`](Queue::close) was called on this handle or a clone of it.
    ///
    /// ```
    /// let q = multiprocess::Queue::<u8>::new()?;
    /// assert!(!q.is_closed());
    /// q.clone().close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// A queue of byte messages (a pool's reports) moved without an owned vector per message.
impl Queue<Vec<u8>> {
    /// Puts a copy of `bytes`, as `put(bytes.to_vec())` would, without making that copy.
    pub(crate) fn put_slice(&self, bytes: &[u8]) -> Result<()> {
        self.handle.put_payload(bytes, Deadline::NEVER)
    }

    /// Takes the oldest message into `out` (cleared first) if there is one now; otherwise
    /// `Err(Error::Empty)`.
    pub(crate) fn get_into_nowait(&self, out: &mut Vec<u8>) -> Result<()> {
        self.handle.get_payload(out, Deadline::after(Some(Duration::ZERO)))
    }
}

impl<T> Queue<T> {
    fn ring(&self) -> &Ring {
        &self.handle.core.ring
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_queue(f, "Queue", &self.handle.core)
    }
}

fn debug_queue(f: &mut fmt::Formatter<'_>, name: &str, core: &Core) -> fmt::Result {
    let mut d = f.debug_struct(name);
    d.field("qsize", &core.ring.len());
    if core.ring.maxsize() > 0 {
        d.field("maxsize", &core.ring.maxsize());
    }
    d.field("closed", &core.closed.load(Ordering::Relaxed)).finish()
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Queue<T>, D::Error> {
        Ok(Queue { handle: Handle::deserialize(d)? })
    }
}
