//! `imap` and `imap_unordered`: results as an iterator, the input pulled as they are taken,
//! never more than a few chunks per worker ahead.

use super::Pool;
use super::result::{Outcome, Slot, Spin, decode};
use super::task::Func;
use crate::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
#[cfg(feature = "stream")]
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
#[cfg(feature = "stream")]
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Chunks in flight per worker.
const AHEAD_PER_WORKER: usize = 4;

/// The input side both iterators share: pulls the next chunk of arguments and submits it.
struct Feed<'a, I> {
    pool: &'a Pool,
    func: Func,
    items: I,
    chunksize: usize,
    exhausted: bool,
    submitted: usize,
    bound: usize,
    /// A panic of the input iterator, raised again once the results before it are out.
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<'a, I: Iterator<Item = T>, T: Serialize> Feed<'a, I> {
    fn new(pool: &'a Pool, func: Func, items: I, chunksize: usize) -> Result<Feed<'a, I>> {
        if pool.state.load(std::sync::atomic::Ordering::Acquire) != super::RUNNING {
            return Err(crate::Error::PoolNotRunning);
        }
        if chunksize == 0 {
            return Err(crate::Error::InvalidArgument("chunksize must be at least 1".into()));
        }
        let bound = AHEAD_PER_WORKER * pool.processes();
        Ok(Feed { pool, func, items, chunksize, exhausted: false, submitted: 0, bound, panic: None })
    }

    /// Submits the next chunk, if the input has one: its slot.
    fn next_chunk(&mut self, notify: Option<&Sender<usize>>) -> Option<Result<Arc<Slot>>> {
        if self.exhausted {
            return None;
        }
        // The input may panic (Python's iterable may raise): the panic is kept and raised
        // where it came, after the results of the items before it; the items of its chunk
        // that came before it are dropped with it, as in Python.
        let (items, chunksize) = (&mut self.items, self.chunksize);
        let pulled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            items.by_ref().take(chunksize).map(|x| (x,)).collect::<Vec<(T,)>>()
        }));
        let chunk = match pulled {
            Ok(chunk) => chunk,
            Err(panic) => {
                self.panic = Some(panic);
                self.exhausted = true;
                return None;
            }
        };
        if chunk.is_empty() {
            self.exhausted = true;
            return None;
        }
        let index = self.submitted;
        self.submitted += 1;
        Some(
            self.pool
                .submit_chunks(&self.func, &chunk, chunk.len(), notify, index, None)
                .map(|mut slots| slots.remove(0)),
        )
    }
}

/// The results of [`Pool::imap`], in input order (Python's `IMapIterator`).
///
/// ```
/// fn double(x: i32) -> i32 { 2 * x }
/// let pool = multiprocess::Pool::new(2)?;
/// let mut it = pool.imap(double, [1, 2, 3])?;
/// assert_eq!(it.next().transpose()?, Some(2));
/// assert_eq!(it.collect::<Result<Vec<_>, _>>()?, vec![4, 6]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Imap<'a, R, I> {
    feed: Feed<'a, I>,
    window: VecDeque<Arc<Slot>>,
    ready: VecDeque<Result<R>>,
    _result: PhantomData<fn() -> R>,
}

impl<'a, R, T, I> Imap<'a, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    pub(crate) fn new(pool: &'a Pool, func: Func, items: I, chunksize: usize) -> Result<Imap<'a, R, I>> {
        let feed = Feed::new(pool, func, items, chunksize)?;
        Ok(Imap { feed, window: VecDeque::new(), ready: VecDeque::new(), _result: PhantomData })
    }
}

impl<R, T, I> Imap<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    /// The next result, waiting at most `timeout` (`IMapIterator.next(timeout)`): `None` at
    /// the end, `Some(Err(Error::Timeout))` if it is not there in time (the iterator goes on:
    /// a later call returns it).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let mut it = pool.imap(nap, [400])?;
    /// assert!(matches!(it.next_timeout(Duration::from_millis(50)), Some(Err(Error::Timeout))));
    /// assert_eq!(it.next_timeout(Duration::from_secs(10)).transpose()?, Some(400));
    /// assert!(it.next_timeout(Duration::from_secs(1)).is_none());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    /// Submits chunks up to the bound; an error of the submitting.
    fn fill(&mut self) -> Option<crate::Error> {
        while self.window.len() < self.feed.bound && !self.feed.exhausted {
            match self.feed.next_chunk(None) {
                Some(Ok(slot)) => self.window.push_back(slot),
                Some(Err(e)) => return Some(e),
                None => break,
            }
        }
        None
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        let control = self.feed.pool.control.clone();
        self.advance(|slot| slot.wait(deadline, Spin::Yes, Some(&control))).unwrap_or(Some(Err(crate::Error::Timeout)))
    }

    /// The next result, with `outcome` asked for the oldest chunk's: `Err(NotYet)` when it
    /// gives none (its deadline passed, or it left a waker to call).
    fn advance(
        &mut self,
        mut outcome: impl FnMut(&Slot) -> Option<Outcome>,
    ) -> std::result::Result<Option<Result<R>>, NotYet> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if let Some(e) = self.fill() {
                return Ok(Some(Err(e)));
            }
            let Some(slot) = self.window.front() else {
                return Ok(self.feed.panic.take().map(|p| std::panic::resume_unwind(p)));
            };
            let out = outcome(slot).ok_or(NotYet)?;
            self.window.pop_front();
            self.ready.extend(decode::<R>(out));
        }
    }
}

/// A result that is not there yet (see `advance`).
struct NotYet;

impl<R, T, I> Iterator for Imap<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

// Nothing here is ever pinned in place: the results are moved out of their buffers.
impl<R, I: Unpin> Unpin for Imap<'_, R, I> {}
impl<R, I: Unpin> Unpin for ImapUnordered<'_, R, I> {}

/// With the `stream` feature, the results are a `futures_core::Stream` too, in input order:
/// the pool's manager thread wakes the task that awaits the next one.
#[cfg(feature = "stream")]
impl<R, T, I> futures_core::Stream for Imap<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T> + Unpin,
{
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        match self.get_mut().advance(|slot| slot.poll(cx.waker())) {
            Ok(next) => Poll::Ready(next),
            Err(NotYet) => Poll::Pending,
        }
    }
}

/// The results of [`Pool::imap_unordered`], in the order they finish (Python's
/// `IMapUnorderedIterator`).
///
/// ```
/// fn double(x: i32) -> i32 { 2 * x }
/// let pool = multiprocess::Pool::new(2)?;
/// let mut all: Vec<i32> = pool.imap_unordered(double, [1, 2, 3])?.collect::<Result<_, _>>()?;
/// all.sort();
/// assert_eq!(all, vec![2, 4, 6]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ImapUnordered<'a, R, I> {
    feed: Feed<'a, I>,
    in_flight: HashMap<usize, Arc<Slot>>,
    done_tx: Sender<usize>,
    done_rx: Receiver<usize>,
    ready: VecDeque<Result<R>>,
    _result: PhantomData<fn() -> R>,
}

impl<'a, R, T, I> ImapUnordered<'a, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    pub(crate) fn new(pool: &'a Pool, func: Func, items: I, chunksize: usize) -> Result<ImapUnordered<'a, R, I>> {
        let feed = Feed::new(pool, func, items, chunksize)?;
        let (done_tx, done_rx) = mpsc::channel();
        Ok(ImapUnordered {
            feed,
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            ready: VecDeque::new(),
            _result: PhantomData,
        })
    }
}

impl<R, T, I> ImapUnordered<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    /// The next result to finish, waiting at most `timeout`
    /// (`IMapUnorderedIterator.next(timeout)`): `None` at the end, `Some(Err(Error::Timeout))`
    /// if none finishes in time (the iterator goes on).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let mut it = pool.imap_unordered(nap, [400])?;
    /// assert!(matches!(it.next_timeout(Duration::from_millis(50)), Some(Err(Error::Timeout))));
    /// assert_eq!(it.next_timeout(Duration::from_secs(10)).transpose()?, Some(400));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    /// Submits chunks up to the bound; an error of the submitting.
    fn fill(&mut self) -> Option<crate::Error> {
        while self.in_flight.len() < self.feed.bound && !self.feed.exhausted {
            let index = self.feed.submitted;
            match self.feed.next_chunk(Some(&self.done_tx)) {
                Some(Ok(slot)) => {
                    self.in_flight.insert(index, slot);
                }
                Some(Err(e)) => return Some(e),
                None => break,
            }
        }
        None
    }

    /// Takes the results of the chunk numbered `index`, if it is one of ours in flight.
    fn take(&mut self, index: usize) {
        if let Some(slot) = self.in_flight.remove(&index)
            && let Some(outcome) = slot.wait(None, Spin::Yes, None)
        {
            self.ready.extend(decode::<R>(outcome));
        }
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        let next = self.advance(|done, _| match deadline {
            None => Ok(done.recv().ok()),
            Some(at) => match done.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(index) => Ok(Some(index)),
                Err(mpsc::RecvTimeoutError::Timeout) => Err(NotYet),
                Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            },
        });
        next.unwrap_or(Some(Err(crate::Error::Timeout)))
    }

    /// The next result, with `finished` asked for the number of a chunk that finished
    /// (`Ok(None)`: none ever will): `Err(NotYet)` when it gives none yet.
    fn advance(
        &mut self,
        mut finished: impl FnMut(&Receiver<usize>, &HashMap<usize, Arc<Slot>>) -> std::result::Result<Option<usize>, NotYet>,
    ) -> std::result::Result<Option<Result<R>>, NotYet> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if let Some(e) = self.fill() {
                return Ok(Some(Err(e)));
            }
            if self.in_flight.is_empty() {
                return Ok(self.feed.panic.take().map(|p| std::panic::resume_unwind(p)));
            }
            match finished(&self.done_rx, &self.in_flight)? {
                Some(index) => self.take(index),
                None => return Ok(None),
            }
        }
    }
}

impl<R, T, I> Iterator for ImapUnordered<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T>,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

/// With the `stream` feature, the results are a `futures_core::Stream` too, in the order they
/// finish.
#[cfg(feature = "stream")]
impl<R, T, I> futures_core::Stream for ImapUnordered<'_, R, I>
where
    R: DeserializeOwned,
    T: Serialize,
    I: Iterator<Item = T> + Unpin,
{
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        let next = self.get_mut().advance(|done, in_flight| {
            if let Ok(index) = done.try_recv() {
                return Ok(Some(index));
            }
            // Asleep until any chunk in flight is filled (each wakes the task once filled; a
            // chunk filled meanwhile shows on the channel, looked at again below).
            for slot in in_flight.values() {
                slot.poll(cx.waker());
            }
            done.try_recv().map(Some).map_err(|_| NotYet)
        });
        match next {
            Ok(next) => Poll::Ready(next),
            Err(NotYet) => Poll::Pending,
        }
    }
}
