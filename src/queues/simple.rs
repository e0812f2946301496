//! `SimpleQueue`: put, get, empty, close; nothing else.

use super::{Handle, PutError};
use crate::Result;
use crate::sys::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// An unbounded FIFO queue with only `put`, `get`, `empty` and `close` (Python's
/// `multiprocessing.SimpleQueue`).
///
/// It is the same shared ring as [`Queue`](crate::Queue) (so just as fast, and a `put` is
/// just as final when it returns), with the smaller interface of the Python class. Unlike
/// Python's, `get` has a timeout form.
///
/// ```
/// use multiprocess::{Process, SimpleQueue};
/// fn child(q: SimpleQueue<bool>) -> multiprocess::Result<()> {
///     q.put(true)?;
///     Ok(())
/// }
/// let q = SimpleQueue::new()?;
/// assert!(q.empty());
/// let mut p = Process::new(child, (q.clone(),));
/// p.start()?;
/// p.join()?;
/// assert!(!q.empty());
/// assert!(q.get()?);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct SimpleQueue<T> {
    handle: Handle<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { handle: self.handle.clone() }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// A new empty queue (`SimpleQueue()`).
    ///
    /// ```
    /// let q = multiprocess::SimpleQueue::<String>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { handle: Handle::new(0)? })
    }

    /// A pool worker's orders queue: a small warm part, waits that give the CPU away early
    /// (see `Ring::for_pool`).
    pub(crate) fn for_pool() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { handle: Handle::for_pool()? })
    }

    /// Puts `item` at the end (`put(obj)`); waits for room only while 4 GiB of encoded items
    /// wait.
    ///
    /// ```
    /// let q = multiprocess::SimpleQueue::new()?;
    /// q.put(5)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.handle.put(item, Deadline::NEVER)
    }

    /// Takes the oldest item, waiting for one (`get()`).
    ///
    /// ```
    /// let q = multiprocess::SimpleQueue::new()?;
    /// q.put("a".to_string())?;
    /// assert_eq!(q.get()?, "a");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.handle.get(Deadline::NEVER)
    }

    /// Takes the oldest item, waiting at most `timeout`: `Err(Error::Empty)` if none came.
    ///
    /// ```
    /// use multiprocess::{Error, SimpleQueue};
    /// use std::time::Duration;
    /// let q = SimpleQueue::<u8>::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(Error::Empty)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.handle.get(Deadline::after(Some(timeout)))
    }

    /// Whether the queue holds nothing (`empty()`).
    ///
    /// ```
    /// let q = multiprocess::SimpleQueue::new()?;
    /// q.put(1)?;
    /// assert!(!q.empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.handle.empty()
    }

    /// Closes this process's handle (`close()`); closing twice is fine. Later puts and gets
    /// on it give `Closed`.
    ///
    /// ```
    /// use multiprocess::{Error, SimpleQueue};
    /// let q = SimpleQueue::<u8>::new()?;
    /// q.close();
    /// q.close();
    /// assert!(matches!(q.get(), Err(Error::Closed)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&self) {
        self.handle.close()
    }

    /// Whether [`close`](SimpleQueue::close) was called on this handle or a clone of it.
    ///
    /// ```
    /// let q = multiprocess::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// A queue of byte messages (a pool worker's orders) moved without an owned vector each.
impl SimpleQueue<Vec<u8>> {
    /// Puts a copy of `bytes`, as `put(bytes.to_vec())` would, without making that copy.
    pub(crate) fn put_slice(&self, bytes: &[u8]) -> Result<()> {
        self.handle.put_payload(bytes, Deadline::NEVER)
    }

    /// Takes the oldest message into `out` (cleared first), waiting for one.
    pub(crate) fn get_into(&self, out: &mut Vec<u8>) -> Result<()> {
        self.handle.get_payload(out, Deadline::NEVER)
    }

    /// Takes the oldest message into `out` if one is there now (`Err(Empty)` if not), waiting
    /// at most `lock_wait` for a consumer that holds the queue (a worker taking an order, or
    /// waiting for one on an empty queue): `Err(Timeout)` if it held it longer.
    pub(crate) fn get_present_into(&self, out: &mut Vec<u8>, lock_wait: Duration) -> Result<()> {
        self.handle.get_present_payload(out, Deadline::after(Some(lock_wait)))
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::debug_queue(f, "SimpleQueue", &self.handle.core)
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<SimpleQueue<T>, D::Error> {
        Ok(SimpleQueue { handle: Handle::deserialize(d)? })
    }
}
