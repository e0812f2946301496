//! Waiting on many results at once (Python's `concurrent.futures.as_completed` and `wait`).

use super::result::{AsyncResult, Notify};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When [`wait`] returns (`FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any result is done (finished, failed or cancelled).
    FirstCompleted,
    /// As soon as any task fails (a panic, a worker's death, a timeout); if none does, when
    /// all are done. A cancelled task is done, not failed.
    FirstException,
    /// When every result is done.
    AllCompleted,
}

/// What [`wait`] found: the results done and those not, each listed once however many times
/// it was given.
#[derive(Debug)]
pub struct Waited<'a, R> {
    /// Done: finished, failed or cancelled.
    pub done: Vec<&'a AsyncResult<R>>,
    /// Still queued or running.
    pub not_done: Vec<&'a AsyncResult<R>>,
}

/// Waits until `return_when` holds for `results`, or `timeout` passes (`None`: no limit), and
/// says which are done (`concurrent.futures.wait(fs, timeout, return_when)`). A result given
/// twice (or two clones of one) is reported once.
///
/// ```
/// use multiprocess::pool::{ReturnWhen, wait};
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let pool = multiprocess::Pool::new(2)?;
/// let results = vec![pool.submit(nap, (5,))?, pool.submit(nap, (3_000,))?];
/// let w = wait(&results, Some(Duration::from_secs(2)), ReturnWhen::FirstCompleted);
/// assert_eq!(w.done.len(), 1);
/// assert_eq!(w.done[0].get()?, 5);
/// assert_eq!(w.not_done.len(), 1);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn wait<'a, R: DeserializeOwned + 'a>(
    results: impl IntoIterator<Item = &'a AsyncResult<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> Waited<'a, R> {
    let results = distinct(results);
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let notify = Arc::new(Notify::default());
    for (i, r) in results.iter().enumerate() {
        r.slot().listen(&notify, i);
    }
    loop {
        let done = results.iter().filter(|r| r.done()).count();
        let met = match return_when {
            ReturnWhen::FirstCompleted => done > 0,
            ReturnWhen::FirstException => done == results.len() || results.iter().any(|r| failed(r)),
            ReturnWhen::AllCompleted => done == results.len(),
        };
        if met || results.is_empty() || notify.pop(deadline).is_none() {
            break;
        }
    }
    let (done, not_done) = results.into_iter().partition(|r| r.done());
    Waited { done, not_done }
}

/// Whether a done result is a failure (not a cancellation).
fn failed<R: DeserializeOwned>(r: &AsyncResult<R>) -> bool {
    r.done() && !r.cancelled() && r.successful().is_ok_and(|ok| !ok)
}

/// The results, each once (clones of one count as one).
fn distinct<'a, R>(results: impl IntoIterator<Item = &'a AsyncResult<R>>) -> Vec<&'a AsyncResult<R>> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for r in results {
        let id = Arc::as_ptr(r.slot());
        if !seen.contains(&id) {
            seen.push(id);
            out.push(r);
        }
    }
    out
}

/// Yields `results` as they finish, each once (`concurrent.futures.as_completed(fs)`): a result
/// already done comes first. See [`AsCompleted::next_timeout`] for a deadline.
///
/// ```
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let pool = multiprocess::Pool::new(3)?;
/// let results = vec![pool.submit(nap, (600,))?, pool.submit(nap, (10,))?, pool.submit(nap, (300,))?];
/// let order: Vec<u64> = multiprocess::as_completed(results).map(|r| r.get()).collect::<Result<_, _>>()?;
/// assert_eq!(order, vec![10, 300, 600]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn as_completed<R>(results: impl IntoIterator<Item = AsyncResult<R>>) -> AsCompleted<R> {
    let notify = Arc::new(Notify::default());
    let mut waiting = HashMap::new();
    let mut seen = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let id = Arc::as_ptr(r.slot());
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        r.slot().listen(&notify, i);
        waiting.insert(i, r);
    }
    AsCompleted { waiting, notify }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<R> {
    waiting: HashMap<usize, AsyncResult<R>>,
    notify: Arc<Notify>,
}

impl<R> AsCompleted<R> {
    /// The next result to finish, waiting at most `timeout`: `Ok(None)` when all were given
    /// out, `Err(Error::Timeout)` if none finished in time (Python's `as_completed(fs,
    /// timeout)` raises `TimeoutError`).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let mut it = multiprocess::as_completed(vec![pool.submit(nap, (2_000,))?]);
    /// assert!(matches!(it.next_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<AsyncResult<R>>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<AsyncResult<R>>> {
        while !self.waiting.is_empty() {
            let index = self.notify.pop(deadline).ok_or(Error::Timeout)?;
            if let Some(r) = self.waiting.remove(&index) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// How many are still to come.
    ///
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(one, ())?;
    /// let mut it = multiprocess::as_completed(vec![r.clone(), r]);
    /// assert_eq!(it.remaining(), 1);
    /// it.next();
    /// assert_eq!(it.remaining(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn remaining(&self) -> usize {
        self.waiting.len()
    }
}

impl<R> Iterator for AsCompleted<R> {
    type Item = AsyncResult<R>;

    fn next(&mut self) -> Option<AsyncResult<R>> {
        self.next_until(None).ok().flatten()
    }
}

impl<R> std::fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted").field("remaining", &self.waiting.len()).finish()
    }
}
