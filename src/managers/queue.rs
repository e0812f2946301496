//! `QueueProxy` and `JoinableQueueProxy`: queues in a manager's server (Python's
//! `manager.Queue()` and `manager.JoinableQueue()`).

use super::proxy::{Inner, decode_adopting, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply, Wait};
use super::{SyncManager, proxy_common};
use crate::queues::PutError;
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// A queue in a manager's server, of a serde type (Python's `manager.Queue(maxsize)`).
///
/// It has the native [`Queue`](crate::Queue)'s methods. A call that waits (a `get` on an
/// empty queue, a `put` on a full one) waits in the server on a thread of its own, so it
/// holds up no other client; if the server dies meanwhile, it returns
/// [`Error::ManagerGone`]. A proxy in an item stays a proxy: the queue holds its object while
/// the item waits.
///
/// ```
/// let m = multiprocess::manager()?;
/// let q = m.queue::<String>()?;
/// q.put("hello".into()).map_err(multiprocess::Error::from)?;
/// assert_eq!(q.get()?, "hello");
/// assert!(matches!(q.get_nowait(), Err(multiprocess::Error::Empty)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct QueueProxy<T> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> T>,
}

proxy_common!(QueueProxy<T>);

/// A [`QueueProxy`] whose consumers mark items done, so that a producer can wait for all of
/// them (Python's `manager.JoinableQueue(maxsize)`); it derefs to the `QueueProxy`.
///
/// ```
/// let m = multiprocess::manager()?;
/// let q = m.joinable_queue::<u32>()?;
/// q.put(1).map_err(multiprocess::Error::from)?;
/// q.get()?;
/// q.task_done()?;
/// q.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct JoinableQueueProxy<T> {
    queue: QueueProxy<T>,
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy { queue: self.queue.clone() }
    }
}

impl<T> Serialize for JoinableQueueProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for JoinableQueueProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueueProxy { queue: QueueProxy::deserialize(d)? })
    }
}

impl<T> Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;

    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl SyncManager {
    /// An unbounded queue (`manager.Queue()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.queue::<u8>()?.empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn queue<T>(&self) -> Result<QueueProxy<T>> {
        self.queue_with_maxsize(0)
    }

    /// A queue of at most `maxsize` items, 0 meaning unbounded (`manager.Queue(maxsize)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue_with_maxsize::<u8>(1)?;
    /// q.put(1).map_err(multiprocess::Error::from)?;
    /// assert!(q.full()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn queue_with_maxsize<T>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        let kind = Kind::Queue { maxsize: maxsize as u64, joinable: false };
        Ok(QueueProxy { inner: self.make(kind, Init::Empty, Vec::new())?, types: PhantomData })
    }

    /// An unbounded joinable queue (`manager.JoinableQueue()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.joinable_queue::<u8>()?;
    /// assert!(q.join_timeout(std::time::Duration::ZERO)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>> {
        self.joinable_queue_with_maxsize(0)
    }

    /// A joinable queue of at most `maxsize` items (`manager.JoinableQueue(maxsize)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.joinable_queue_with_maxsize::<u8>(2)?.maxsize()?, Some(2));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn joinable_queue_with_maxsize<T>(&self, maxsize: usize) -> Result<JoinableQueueProxy<T>> {
        let kind = Kind::Queue { maxsize: maxsize as u64, joinable: true };
        let queue = QueueProxy { inner: self.make(kind, Init::Empty, Vec::new())?, types: PhantomData };
        Ok(JoinableQueueProxy { queue })
    }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_waiting(&self, item: T, wait: Wait) -> std::result::Result<(), PutError<T>> {
        let client = match self.inner.client() {
            Ok(c) => c,
            Err(e) => return Err(PutError::Failed(item, e)),
        };
        let (bytes, holds) = match encode_for(&client, &item) {
            Ok(encoded) => encoded,
            Err(e) => return Err(PutError::Failed(item, e)),
        };
        // The item lives until the server holds the objects of the proxies in it.
        match self.inner.call(Op::QueuePut(bytes, wait), holds) {
            Ok(_) => Ok(()),
            Err(Error::Full) => Err(PutError::Full(item)),
            Err(e) => Err(PutError::Failed(item, e)),
        }
    }

    fn get_waiting(&self, wait: Wait) -> Result<T> {
        let client = self.inner.client()?;
        let (value, adopted) = expect(self.inner.call(Op::QueueGet(wait), Vec::new())?, |r| match r {
            Reply::Item { value, adopted } => Ok((value, adopted)),
            r => Err(r),
        })?;
        decode_adopting(&client, &value, adopted)
    }

    /// Puts `item`, waiting for room if the queue is bounded and full (`put(item)`); the
    /// item comes back in the error.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue()?;
    /// q.put(vec![1u8, 2]).map_err(multiprocess::Error::from)?;
    /// assert_eq!(q.get()?, vec![1, 2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_waiting(item, Wait::Forever)
    }

    /// Puts `item`, waiting at most `timeout` for room (`put(item, timeout=t)`);
    /// `PutError::Full(item)` if none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiprocess::PutError;
    /// let m = multiprocess::manager()?;
    /// let q = m.queue_with_maxsize(1)?;
    /// q.put(1u8).map_err(multiprocess::Error::from)?;
    /// assert!(matches!(q.put_timeout(2, Duration::from_millis(10)), Err(PutError::Full(2))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_waiting(item, Wait::from_timeout(Some(timeout)))
    }

    /// Puts `item` if there is room now (`put_nowait(item)`).
    ///
    /// ```
    /// use multiprocess::PutError;
    /// let m = multiprocess::manager()?;
    /// let q = m.queue_with_maxsize(1)?;
    /// q.put_nowait('a').map_err(multiprocess::Error::from)?;
    /// assert!(matches!(q.put_nowait('b'), Err(PutError::Full('b'))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_waiting(item, Wait::No)
    }

    /// Takes the oldest item, waiting for one (`get()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue()?;
    /// q.put(5u32).map_err(multiprocess::Error::from)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_waiting(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout` (`get(timeout=t)`); [`Error::Empty`]
    /// if none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = multiprocess::manager()?;
    /// let q = m.queue::<u8>()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiprocess::Error::Empty)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_waiting(Wait::from_timeout(Some(timeout)))
    }

    /// Takes the oldest item if there is one now (`get_nowait()`); [`Error::Empty`] if not.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue::<u8>()?;
    /// assert!(matches!(q.get_nowait(), Err(multiprocess::Error::Empty)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        self.get_waiting(Wait::No)
    }

    fn size(&self) -> Result<(usize, usize)> {
        expect(self.inner.call(Op::QueueSize, Vec::new())?, |r| match r {
            Reply::QueueSize { len, maxsize } => Ok((len as usize, maxsize as usize)),
            r => Err(r),
        })
    }

    /// How many items wait (`qsize()`), exact.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue()?;
    /// q.put(1u8).map_err(multiprocess::Error::from)?;
    /// assert_eq!(q.qsize()?, 1);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        Ok(self.size()?.0)
    }

    /// Whether no item waits (`empty()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.queue::<u8>()?.empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether a bounded queue holds `maxsize` items (`full()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(!m.queue::<u8>()?.full()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn full(&self) -> Result<bool> {
        let (len, max) = self.size()?;
        Ok(max != 0 && len >= max)
    }

    /// The bound, if there is one (`maxsize`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.queue::<u8>()?.maxsize()?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn maxsize(&self) -> Result<Option<usize>> {
        Ok(Some(self.size()?.1).filter(|&m| m != 0))
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item taken with `get` as done (`task_done()`); more calls than items put
    /// give [`Error::TaskDoneTooManyTimes`].
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.joinable_queue::<u8>()?;
    /// assert!(matches!(q.task_done(), Err(multiprocess::Error::TaskDoneTooManyTimes)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.queue.inner.call(Op::QueueTaskDone, Vec::new()).map(drop)
    }

    /// Waits until every item put has been marked done (`join()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// m.joinable_queue::<u8>()?.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_waiting(Wait::Forever).map(drop)
    }

    /// Waits at most `timeout` for every item to be done; whether they were.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = multiprocess::manager()?;
    /// let q = m.joinable_queue()?;
    /// q.put(1u8).map_err(multiprocess::Error::from)?;
    /// assert!(!q.join_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.join_waiting(Wait::from_timeout(Some(timeout)))
    }

    fn join_waiting(&self, wait: Wait) -> Result<bool> {
        super::proxy::boolean(self.queue.inner.call(Op::QueueJoin(wait), Vec::new())?)
    }
}

impl<T> fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<QueueProxy object {}>", self.inner.id())
    }
}

impl<T> fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<JoinableQueueProxy object {}>", self.queue.inner.id())
    }
}
