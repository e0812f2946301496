//! `JoinableQueue`: a `Queue` that counts the items not yet marked done.

use super::Queue;
use crate::sys::Deadline;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

/// A [`Queue`] whose consumers mark each item done, so that a producer can wait for all of
/// them (Python's `multiprocessing.JoinableQueue`).
///
/// It is a `Queue` (it derefs to one, as the Python class subclasses it), plus
/// [`task_done`](JoinableQueue::task_done) and [`join`](JoinableQueue::join). The count of
/// unfinished items moves with each `put` in the same store that publishes the item, so a
/// producer killed mid-`put` cannot leave a count without an item, and `join` cannot hang
/// on it.
///
/// ```
/// use multiprocess::{JoinableQueue, Process};
/// fn worker(q: JoinableQueue<Option<u32>>) -> multiprocess::Result<()> {
///     while let Some(_job) = q.get()? {
///         q.task_done()?;
///     }
///     q.task_done()?;
///     Ok(())
/// }
/// let q = JoinableQueue::new()?;
/// let mut p = Process::new(worker, (q.clone(),));
/// p.start()?;
/// for job in 0..10 {
///     q.put(Some(job))?;
/// }
/// q.join()?; // every job is done
/// q.put(None)?;
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
    /// An unbounded joinable queue (`JoinableQueue()`).
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>> {
        JoinableQueue::with_maxsize(0)
    }

    /// A joinable queue of at most `maxsize` items (`JoinableQueue(maxsize)`); 0 means
    /// unbounded.
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::<u8>::with_maxsize(2)?;
    /// assert_eq!(q.maxsize(), Some(2));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue { queue: Queue::with_maxsize(maxsize)? })
    }

    /// Marks one item taken with `get` as done (`task_done()`); more calls than items put
    /// give [`Error::TaskDoneTooManyTimes`] (`ValueError`).
    ///
    /// ```
    /// use multiprocess::{Error, JoinableQueue};
    /// let q = JoinableQueue::new()?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        if self.queue.ring().task_done() { Ok(()) } else { Err(Error::TaskDoneTooManyTimes) }
    }

    /// How many items were put and not yet marked done (Python's `_unfinished_tasks`).
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::new()?;
    /// q.put('a')?;
    /// q.get()?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// q.task_done()?;
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.ring().unfinished() as usize
    }

    /// Waits until every item put has been marked done (`join()`).
    ///
    /// ```
    /// let q = multiprocess::JoinableQueue::new()?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?; // at once
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.queue.ring().join(Deadline::NEVER);
        Ok(())
    }

    /// Waits at most `timeout` for every item to be done; returns whether they were.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiprocess::JoinableQueue::new()?;
    /// q.put(1)?;
    /// assert!(!q.join_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.ring().join(Deadline::after(Some(timeout)))
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::debug_queue(f, "JoinableQueue", &self.queue.handle.core)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<JoinableQueue<T>, D::Error> {
        Ok(JoinableQueue { queue: Queue::deserialize(d)? })
    }
}
