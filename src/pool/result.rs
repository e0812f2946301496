//! Where a task's result waits for its caller: a slot per chunk, and `AsyncResult`.

use super::manager::{Command, Control};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a chunk has no results.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// Its worker died while it held the chunk.
    WorkerDied(i32),
    /// It ran past the pool's task timeout; its worker was killed.
    Timeout,
    /// The pool was terminated first.
    Terminated,
    /// The initializer failed, so no worker can run anything.
    InitFailed(String),
    /// Cancelled: taken out of the queue, or its worker replaced while it ran.
    Cancelled,
    /// Its worker passed the memory limit (bytes) while running it, and was killed.
    MemoryLimit(u64),
}

impl Failure {
    fn error(&self) -> Error {
        match self {
            Failure::WorkerDied(exitcode) => Error::WorkerDied { exitcode: *exitcode },
            Failure::Timeout => Error::Timeout,
            Failure::Terminated => Error::PoolNotRunning,
            Failure::InitFailed(message) => Error::TaskPanicked { message: format!("initializer: {message}") },
            Failure::Cancelled => Error::Cancelled,
            Failure::MemoryLimit(limit) => Error::MemoryLimit { limit: *limit },
        }
    }
}

/// One chunk's outcome: the encoded `Vec<Result<Output, String>>`, or why there is none.
pub(crate) type Outcome = std::result::Result<super::bytes::Bytes, Failure>;

/// A chunk's outcome, filled once by the pool's manager.
///
/// Lean, as a map makes one per chunk (20,000 for a map of chunk size 1): what only some
/// slots have (a waker, a listener, a callback, an `imap_unordered` sender) is boxed apart.
pub(crate) struct Slot {
    /// Set once; read without a lock (an awaited result that is there already, the usual
    /// case, costs one load), and what a waiter spins on before it sleeps.
    outcome: OnceLock<Outcome>,
    /// Somebody sleeps on `filled` or is to be told (see [`State`]): only then does the filler
    /// take the lock, after it set the outcome. Set under the lock, never cleared.
    watched: AtomicBool,
    state: Mutex<State>,
    filled: Condvar,
    /// Where the chunk is: [`QUEUED`], [`SENT`] or [`RUNNING`] (as far as the manager can
    /// tell: the oldest a worker holds runs).
    stage: std::sync::atomic::AtomicU8,
}

/// Where a chunk is ([`Slot::stage`]): queued in the pool, sent to a worker behind the chunk
/// it runs, or run by it.
const QUEUED: u8 = 0;
const SENT: u8 = 1;
const RUNNING: u8 = 2;

/// Looks at `done` before a waiter sleeps (with a yield every 256).
const SPINS: u32 = 4000;
/// Looks at `done` before a `poll` returns `Pending` (some microseconds).
const POLL_LOOKS: u32 = 512;
/// With the worker on our CPU, gives the CPU away this many times (to the worker) before a
/// waiter sleeps.
const ONE_CPU_YIELDS: u32 = 64;

/// What the slot's lock guards: who waits for the outcome, and how.
struct State {
    /// Waiters asleep on `filled`: the manager wakes them only if there are any, as a
    /// wake-up is a system call even with nobody to wake.
    sleepers: u32,
    /// Who else is told when the slot is filled, if anyone.
    told: Option<Box<Told>>,
}

/// Who is told when a slot is filled, besides its sleepers.
#[derive(Default)]
struct Told {
    /// Told the slot's index (for `imap_unordered`).
    sender: Option<(Sender<usize>, usize)>,
    /// Tasks awaiting the slot (`Future::poll`).
    wakers: Vec<Waker>,
    /// Told their index (`as_completed`, `wait`); gone once their caller stopped listening.
    listeners: Vec<(std::sync::Weak<Notify>, usize)>,
    /// Called once, after the slot is filled (a result's callback).
    callback: Option<Callback>,
}

impl State {
    fn told(&mut self) -> &mut Told {
        self.told.get_or_insert_with(Box::default)
    }
}

/// Whether a waiter spins before it sleeps.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Spin {
    /// It expects the outcome within microseconds: it spins, then sleeps.
    Yes,
    /// It expects to wait: it sleeps at once, leaving the CPU to the workers and the manager.
    No,
}

impl Slot {
    /// An empty slot, telling `sender` its index when filled, if any (made through a pool's
    /// [`Spares`](super::spares::Spares)).
    pub(crate) fn empty(sender: Option<(Sender<usize>, usize)>) -> Slot {
        let told = sender.map(|sender| Box::new(Told { sender: Some(sender), ..Told::default() }));
        Slot {
            outcome: OnceLock::new(),
            watched: AtomicBool::new(told.is_some()),
            state: Mutex::new(State { sleepers: 0, told }),
            filled: Condvar::new(),
            stage: std::sync::atomic::AtomicU8::new(QUEUED),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock, taken to wait or to be told: the outcome must be looked at after this, under
    /// it (see [`fill`](Slot::fill)).
    fn lock_to_watch(&self) -> std::sync::MutexGuard<'_, State> {
        let state = self.lock();
        if !self.watched.load(Ordering::Relaxed) {
            self.watched.store(true, Ordering::Relaxed);
        }
        // The mark written, then the outcome read; `fill` does the opposite, with the same
        // fence between: if the look that follows finds no outcome, the filler finds the mark
        // and takes the lock, so it sees what this holder leaves there.
        std::sync::atomic::fence(Ordering::SeqCst);
        state
    }

    pub(crate) fn fill(&self, outcome: Outcome) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        // Nobody waits or is to be told (a map's chunks, an awaited result that came first):
        // no lock to take.
        if !self.watched.load(Ordering::Relaxed) {
            return;
        }
        let callback = {
            let mut state = self.lock();
            if state.sleepers > 0 {
                self.filled.notify_all();
            }
            let Some(told) = state.told.as_mut() else { return };
            if let Some((tx, index)) = &told.sender {
                let _ = tx.send(*index);
            }
            for (listener, index) in told.listeners.drain(..) {
                if let Some(listener) = listener.upgrade() {
                    listener.push(index);
                }
            }
            told.wakers.drain(..).for_each(Waker::wake);
            told.callback.take()
        };
        if let Some(callback) = callback {
            run_callback(callback);
        }
    }

    /// Marks the chunk as running (the oldest its worker holds) or, with `false`, as queued
    /// in the pool again (its worker is gone).
    pub(crate) fn set_running(&self, running: bool) {
        self.stage.store(if running { RUNNING } else { QUEUED }, Ordering::Relaxed);
    }

    /// Marks the chunk as sent to a worker, behind the one it runs.
    pub(crate) fn set_sent(&self) {
        self.stage.store(SENT, Ordering::Relaxed);
    }

    /// Whether a worker runs the chunk now.
    pub(crate) fn is_running(&self) -> bool {
        !self.is_filled() && self.stage.load(Ordering::Relaxed) == RUNNING
    }

    /// Whether the chunk was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self.outcome.get(), Some(Err(Failure::Cancelled)))
    }

    /// The outcome if filled; otherwise `waker` is woken when it is (`Future::poll`).
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Outcome> {
        if let Some(outcome) = self.outcome.get() {
            return Some(outcome.clone());
        }
        let mut state = self.lock_to_watch();
        match self.outcome.get() {
            Some(outcome) => Some(outcome.clone()),
            None => {
                let wakers = &mut state.told().wakers;
                if !wakers.iter().any(|w| w.will_wake(waker)) {
                    wakers.push(waker.clone());
                }
                None
            }
        }
    }

    /// Tells `listener` `index` when the slot is filled, or now if it is.
    pub(crate) fn listen(&self, listener: &Arc<Notify>, index: usize) {
        let mut state = self.lock_to_watch();
        if self.is_filled() {
            drop(state);
            listener.push(index);
        } else {
            let listeners = &mut state.told().listeners;
            listeners.retain(|(l, _)| l.strong_count() > 0);
            listeners.push((Arc::downgrade(listener), index));
        }
    }

    /// Sets the callback: it runs when the slot is filled, or now if it already is.
    fn set_callback(&self, callback: Callback) {
        let mut state = self.lock_to_watch();
        if self.is_filled() {
            drop(state);
            run_callback(callback);
        } else {
            state.told().callback = Some(callback);
        }
    }

    pub(crate) fn is_filled(&self) -> bool {
        self.outcome.get().is_some()
    }

    /// Looks for the outcome for a few microseconds, filing the reports that come meanwhile
    /// (`Future::poll`, before it returns `Pending`): a result due within that time is then
    /// read without a wake-up, which costs the pool's manager thread a system call and an
    /// interrupt of this thread's CPU, more than the look. Not with the worker on this CPU,
    /// where looking would only keep it from running.
    pub(crate) fn look_briefly(&self, control: &Control) {
        // Only for a chunk a worker holds: one still queued behind thousands (the first poll
        // of each of many futures joined together) is not looked for.
        if self.stage.load(Ordering::Relaxed) == QUEUED
            || !crate::sys::futex::worth_spinning(crate::sys::proc::current_cpu(), control.worker_cpu())
        {
            return;
        }
        for round in 0..POLL_LOOKS {
            if self.is_filled() {
                return;
            }
            if round % 16 == 0 {
                control.help();
            } else if round % 128 == 127 {
                // The manager thread may hold the pool's state on this CPU, preempted.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Waits until filled or `deadline`; returns the outcome if filled. With `Spin::Yes`
    /// it looks a little before it sleeps: a result usually comes within microseconds, and
    /// waking a sleeper on a condition variable costs ten or more.
    pub(crate) fn wait(&self, deadline: Option<Instant>, spin: Spin, help: Option<&Control>) -> Option<Outcome> {
        self.wait_then(deadline, spin, help, Outcome::clone)
    }

    /// As [`wait`](Slot::wait), handing `f` the outcome where it lies instead of a copy of
    /// it (a chunk's results are decoded from the slot itself).
    pub(crate) fn wait_then<T>(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        help: Option<&Control>,
        f: impl FnOnce(&Outcome) -> T,
    ) -> Option<T> {
        let shares_cpu = || {
            help.is_some_and(|c| !crate::sys::futex::worth_spinning(crate::sys::proc::current_cpu(), c.worker_cpu()))
        };
        // Filled already (the usual case for an awaited result, or a map's later chunks):
        // straight to the outcome, without the clock or the CPU number.
        if let Some(outcome) = self.outcome.get() {
            return Some(f(outcome));
        }
        if spin == Spin::Yes && shares_cpu() {
            // The worker last reported from our CPU: it (and whoever files its report) runs
            // only when we let it, so we give the CPU away instead of spinning, and file the
            // report ourselves when it comes; a sleep would cost a wake-up on top.
            for _ in 0..ONE_CPU_YIELDS {
                if self.is_filled() || deadline.is_some_and(|at| at <= Instant::now()) {
                    break;
                }
                std::thread::yield_now();
                if let Some(control) = help {
                    control.help();
                }
            }
        } else if spin == Spin::Yes && deadline.is_none_or(|at| at > Instant::now()) {
            for round in 0..SPINS {
                if self.is_filled() {
                    break;
                }
                // Takes the result off the result queue ourselves if it is there, rather than
                // waiting for the manager thread to (a hop, and a wake-up, less).
                if let Some(control) = help
                    && round % 16 == 0
                {
                    control.help();
                    continue;
                }
                std::hint::spin_loop();
                if round % 256 == 255 {
                    std::thread::yield_now();
                }
            }
        }
        // The manager thread itself waiting (a result's callback that waits on the pool) has
        // nobody to file for it: it files as it waits, in short sleeps.
        let filing = help.filter(|_| MANAGER_THREAD.with(std::cell::Cell::get));
        let mut state = self.lock_to_watch();
        loop {
            if let Some(outcome) = self.outcome.get() {
                return Some(f(outcome));
            }
            let mut left = match deadline {
                None => None,
                Some(at) => match at.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => return None,
                    left => Some(left),
                },
            };
            if let Some(control) = filing {
                drop(state);
                control.help();
                state = self.lock();
                if self.is_filled() {
                    continue;
                }
                left = Some(left.map_or(FILING_SLICE, |l| l.min(FILING_SLICE)));
            }
            state.sleepers += 1;
            state = match left {
                None => self.filled.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(left) => self.filled.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0,
            };
            state.sleepers -= 1;
        }
    }
}

/// A result's callback, ready to run.
type Callback = Box<dyn FnOnce() + Send>;

/// How long the manager thread, waiting on a result itself, sleeps between filings.
const FILING_SLICE: Duration = Duration::from_millis(1);

/// Marks this thread as a pool's manager thread (see `Slot::wait`).
pub(crate) fn this_is_the_manager_thread() {
    MANAGER_THREAD.with(|m| m.set(true));
}

thread_local! {
    static MANAGER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Callbacks of slots filled while this thread holds the pool's state; `None` otherwise.
    static DEFERRED: std::cell::RefCell<Option<Vec<Callback>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (which takes and lets go of the pool's state), holding back the callbacks of the
/// slots it fills until it is done: a callback may submit to the pool, which takes the state
/// too.
pub(crate) fn deferring<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFERRED.with(|d| d.borrow_mut().replace(Vec::new()));
    let out = f();
    let callbacks = DEFERRED.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer)).unwrap_or_default();
    callbacks.into_iter().for_each(run_guarded);
    out
}

/// Runs a result's callback; a panic in it is caught: it runs on the pool's manager thread
/// or a caller's, which must go on.
fn run_guarded(callback: Callback) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback));
}

/// Runs a filled slot's callback now, or, while this thread holds the pool's state (see
/// [`deferring`]), as soon as it lets go: a callback may use the pool.
fn run_callback(callback: Callback) {
    let later = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(queue) => {
            queue.push(callback);
            None
        }
        None => Some(callback),
    });
    if let Some(callback) = later {
        run_guarded(callback);
    }
}

/// Where slots being listened to (`as_completed`, `wait`) say that they are filled: the
/// indexes of the filled ones, in the order they were filled.
#[derive(Default)]
pub(crate) struct Notify {
    filled: Mutex<std::collections::VecDeque<usize>>,
    changed: Condvar,
}

impl Notify {
    fn push(&self, index: usize) {
        self.filled.lock().unwrap_or_else(|e| e.into_inner()).push_back(index);
        self.changed.notify_all();
    }

    /// The next index, waiting until `deadline` at most.
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut filled = self.filled.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(index) = filled.pop_front() {
                return Some(index);
            }
            filled = match deadline {
                None => self.changed.wait(filled).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.changed.wait_timeout(filled, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

/// Decodes a chunk's outcome into its results, one per task of the chunk.
pub(crate) fn decode<R: DeserializeOwned>(outcome: Outcome) -> Vec<Result<R>> {
    match outcome {
        Ok(bytes) => match crate::reduction::from_bytes_exact::<Vec<std::result::Result<R, String>>>(&bytes) {
            Ok(results) => results.into_iter().map(|r| r.map_err(|message| Error::TaskPanicked { message })).collect(),
            Err(e) => vec![Err(Error::Codec(format!("cannot decode a task's result: {e}")))],
        },
        Err(failure) => vec![Err(failure.error())],
    }
}

/// Appends a chunk's values to `out`, or gives its first failure: as [`decode`], decoded
/// straight into `out`, without a list of `Result`s in between (a map's chunk of 125,000
/// values would make one of several megabytes, in pages touched for the first time).
fn decode_into<R: DeserializeOwned>(outcome: &Outcome, out: &mut Vec<R>) -> Result<()> {
    let bytes = outcome.as_ref().map_err(|failure| failure.error())?;
    let failed = crate::reduction::seed_from_bytes(AppendValues(out, bytes.len()), bytes, Option::is_none)
        .map_err(|e| Error::Codec(format!("cannot decode a task's result: {e}")))?;
    match failed {
        Some(message) => Err(Error::TaskPanicked { message }),
        None => Ok(()),
    }
}

/// The one value of a one-task chunk (`apply_async`, `submit`), or its failure: as
/// [`decode_into`], without a vector to hold it.
fn decode_one<R: DeserializeOwned>(outcome: &Outcome) -> Result<R> {
    let bytes = outcome.as_ref().map_err(|failure| failure.error())?;
    crate::reduction::seed_from_bytes(FirstValue(PhantomData), bytes, |first| first.is_some())
        .map_err(|e| Error::Codec(format!("cannot decode a task's result: {e}")))?
        .ok_or_else(|| Error::Codec("no result".into()))?
        .map_err(|message| Error::TaskPanicked { message })
}

/// Decodes the first of a chunk's `Vec<Result<R, String>>`.
struct FirstValue<R>(PhantomData<fn() -> R>);

impl<'de, R: DeserializeOwned> serde::de::DeserializeSeed<'de> for FirstValue<R> {
    type Value = Option<std::result::Result<R, String>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: DeserializeOwned> serde::de::Visitor<'de> for FirstValue<R> {
    type Value = Option<std::result::Result<R, String>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chunk's results")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        seq.next_element()
    }
}

/// Decodes a chunk's `Vec<Result<R, String>>` into the values it appends to a vector,
/// stopping at the first `Err`, whose message it gives. With the length of the encoding: no
/// more results than bytes.
struct AppendValues<'a, R>(&'a mut Vec<R>, usize);

impl<'de, R: DeserializeOwned> serde::de::DeserializeSeed<'de> for AppendValues<'_, R> {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Option<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: DeserializeOwned> serde::de::Visitor<'de> for AppendValues<'_, R> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chunk's results")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Option<String>, A::Error> {
        // The count comes from another process: trusted only as far as the bytes go (each
        // result takes one at least).
        self.0.reserve(seq.size_hint().unwrap_or(0).min(self.1));
        while let Some(result) = seq.next_element::<std::result::Result<R, String>>()? {
            match result {
                Ok(value) => self.0.push(value),
                Err(message) => return Ok(Some(message)),
            }
        }
        Ok(None)
    }
}

/// The one slot of an `apply_async` or `submit`, seen as a list of one: no list to make,
/// and a result of two pointers (a loop of submits keeps a vector of them).
/// Its slot is given back to the pool's spares when the result is dropped (see
/// [`AsyncResult`]'s `Drop`), the only place it is taken out.
struct One(std::mem::ManuallyDrop<Arc<Slot>>);

impl Clone for One {
    fn clone(&self) -> One {
        One(std::mem::ManuallyDrop::new(Arc::clone(&self.0)))
    }
}

impl std::ops::Deref for One {
    type Target = [Arc<Slot>];
    fn deref(&self) -> &[Arc<Slot>] {
        std::slice::from_ref(&self.0)
    }
}

/// The slots a background call waits on: [`One`], or a map's list.
#[derive(Clone)]
struct Pending<S = Vec<Arc<Slot>>> {
    slots: S,
    /// The pool, to file results while waiting for them.
    control: Arc<Control>,
}

impl<S: std::ops::Deref<Target = [Arc<Slot>]>> Pending<S> {
    fn ready(&self) -> bool {
        self.slots.iter().all(|s| s.is_filled())
    }

    /// `Future::poll`: ready once every slot is filled; until then the first slot that is not
    /// wakes the task when it is.
    fn poll<R: DeserializeOwned>(&self, cx: &mut Context<'_>) -> Poll<Result<Vec<R>>> {
        for slot in self.slots.iter() {
            if !slot.is_filled() && slot.poll(cx.waker()).is_none() {
                return Poll::Pending;
            }
        }
        // Every slot is filled: nothing to wait for.
        Poll::Ready(self.collect::<R>(None))
    }

    fn wait(&self, deadline: Option<Instant>) -> bool {
        self.wait_last(deadline)
            && self.slots.iter().all(|s| s.wait_then(deadline, Spin::Yes, Some(&self.control), |_| ()).is_some())
    }

    /// With many chunks, waits for the last one first, asleep: the chunks finish roughly in
    /// order, so when it is done the others nearly all are, and the caller neither spins on
    /// each (taking a CPU from the workers) nor is woken for each.
    fn wait_last(&self, deadline: Option<Instant>) -> bool {
        match &*self.slots {
            [_, .., last] => last.wait_then(deadline, Spin::No, None, |_| ()).is_some(),
            _ => true,
        }
    }

    /// Every result, in order, or the first error; `Timeout` if `deadline` passes first.
    fn collect<R: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<Vec<R>> {
        if !self.wait_last(deadline) {
            return Err(Error::Timeout);
        }
        let mut out = Vec::new();
        for slot in self.slots.iter() {
            slot.wait_then(deadline, Spin::Yes, Some(&self.control), |outcome| decode_into(outcome, &mut out))
                .ok_or(Error::Timeout)??;
        }
        Ok(out)
    }

    fn successful<R: DeserializeOwned>(&self) -> Result<bool> {
        if !self.ready() {
            return Err(Error::NotReady);
        }
        Ok(self.collect::<R>(None).is_ok())
    }
}

fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async), a task running in the
/// background (Python's `multiprocessing.pool.AsyncResult`).
///
/// ```
/// use multiprocess::Pool;
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async(square, (7,))?;
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.get()?, 49);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct AsyncResult<R> {
    pending: Pending<One>,
    _result: PhantomData<fn() -> R>,
}

// Two pointers: a loop of submits keeps a vector of them.
const _: () = assert!(std::mem::size_of::<AsyncResult<u64>>() == 2 * std::mem::size_of::<usize>());

impl<R> AsyncResult<R> {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.pending.slots.0
    }
}

/// A clone waits for the same task; cancelling one cancels it for all.
impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult { pending: self.pending.clone(), _result: PhantomData }
    }
}

/// Its slot goes back to the pool's spares, for a later task, if nobody else holds it.
impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        // SAFETY: taken out once, here, as the result goes; nothing reads it after this.
        let slot = unsafe { std::mem::ManuallyDrop::take(&mut self.pending.slots.0) };
        self.pending.control.spares.give_back(slot);
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = &self.pending.slots[0];
        let state = if slot.is_cancelled() {
            "cancelled"
        } else if slot.is_filled() {
            "finished"
        } else if slot.is_running() {
            "running"
        } else {
            "pending"
        };
        f.debug_struct("AsyncResult").field("state", &state).finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot>, control: Arc<Control>) -> AsyncResult<R> {
        AsyncResult {
            pending: Pending { slots: One(std::mem::ManuallyDrop::new(slot)), control },
            _result: PhantomData,
        }
    }

    /// Cancels the task (`Future.cancel()`): a task still queued is taken out and never runs;
    /// a running one is stopped by killing its worker, which the pool replaces at once (it
    /// keeps its size). Its result is then `Err(Error::Cancelled)`. Returns whether the task
    /// is cancelled: `false` if it had finished first. Waits for the pool's manager to act
    /// (about a millisecond; for a running task, the worker's death and replacement).
    ///
    /// Python's `Future.cancel()` cannot stop a running task, and returns `False` for it.
    ///
    /// ```
    /// use multiprocess::Error;
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let running = pool.submit(nap, (10_000,))?;
    /// let queued = pool.submit(nap, (10_000,))?;
    /// assert!(queued.cancel());
    /// assert!(running.cancel());
    /// assert!(matches!(running.get(), Err(Error::Cancelled)));
    /// assert!(queued.cancelled());
    /// assert_eq!(pool.apply(nap, (1,))?, ()); // the pool goes on, with a new worker
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        let slot = self.slot();
        let control = &self.pending.control;
        if !slot.is_filled() && control.send(Command::Cancel(slot.clone())).is_ok() {
            control.wake();
            // The manager fills the slot either way: cancelled, or with the result that came
            // first. A manager that is gone has filled every slot already.
            slot.wait_then(None, Spin::No, None, |_| ());
        }
        slot.is_cancelled()
    }

    /// Whether the task was cancelled (`Future.cancelled()`).
    ///
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(one, ())?;
    /// r.wait();
    /// assert!(!r.cancel());
    /// assert!(!r.cancelled());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn cancelled(&self) -> bool {
        self.slot().is_cancelled()
    }

    /// Whether a worker runs the task now (`Future.running()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(nap, (300,))?;
    /// std::thread::sleep(Duration::from_millis(100));
    /// assert!(r.running());
    /// r.wait();
    /// assert!(!r.running());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn running(&self) -> bool {
        self.slot().is_running()
    }

    /// Whether the task has finished, been cancelled, or failed (`Future.done()`; the same as
    /// [`ready`](AsyncResult::ready)).
    ///
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(one, ())?;
    /// r.wait();
    /// assert!(r.done());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn done(&self) -> bool {
        self.slot().is_filled()
    }

    /// Whether the task has finished, been cancelled, or failed: tokio's
    /// `JoinHandle::is_finished`, the same as [`done`](AsyncResult::done).
    ///
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(one, ())?;
    /// r.wait();
    /// assert!(r.is_finished());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.done()
    }

    /// Cancels the task, as tokio's `JoinHandle::abort`: [`cancel`](AsyncResult::cancel)
    /// without its answer. A queued task never runs; a running one's worker is killed and
    /// replaced; awaiting it then gives [`Error::Cancelled`], unless it had finished first.
    ///
    /// ```
    /// use multiprocess::Error;
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.submit(nap, (10_000,))?;
    /// r.abort();
    /// assert!(matches!(futures::executor::block_on(r), Err(Error::Cancelled)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn abort(&self) {
        self.cancel();
    }

    /// Waits for the result and returns it (`get()`): the task's value, or why there is none:
    /// [`Error::TaskPanicked`], [`Error::WorkerDied`], [`Error::Timeout`] (past the pool's task
    /// timeout). It may be called again: the result is kept.
    ///
    /// ```
    /// fn double(x: i32) -> i32 { 2 * x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(double, (21,))?;
    /// assert_eq!(r.get()?, 42);
    /// assert_eq!(r.get()?, 42);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<R> {
        self.first(None)
    }

    /// As [`get`](AsyncResult::get), waiting at most `timeout`: `Err(Error::Timeout)` if the
    /// task is still running (Python's `multiprocessing.TimeoutError`); it goes on running.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// fn nap() { std::thread::sleep(Duration::from_millis(500)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// assert!(matches!(r.get_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.first(deadline(timeout))
    }

    fn first(&self, deadline: Option<Instant>) -> Result<R> {
        self.slot().wait_then(deadline, Spin::Yes, Some(&self.pending.control), decode_one).ok_or(Error::Timeout)?
    }

    /// Calls `callback` with the result once it is there (Python's `callback` and
    /// `error_callback` of `apply_async`, in one: it gets `Ok(value)` or `Err(error)`). It runs
    /// on the thread that files the result: the pool's manager thread (as Python's run on its
    /// result-handler thread), or a thread waiting on the pool that filed it on the way, so it
    /// should be quick; it may use the pool (submit, even wait). If the result is already
    /// there, it runs now, on this thread.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// pool.apply_async(square, (3,))?.then(move |r| tx.send(r.unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 9);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn then(&self, callback: impl FnOnce(Result<R>) + Send + 'static)
    where
        R: 'static,
    {
        // The callback holds the slot it sits in: the cycle ends when it runs, and it runs
        // once the slot is filled, which every slot is in the end (a chunk dropped unrun
        // fills its slot with a failure).
        let slot = self.pending.slots[0].clone();
        let me = slot.clone();
        slot.set_callback(Box::new(move || {
            let result = match me.wait(Some(Instant::now()), Spin::No, None) {
                Some(outcome) => {
                    decode::<R>(outcome).into_iter().next().unwrap_or(Err(Error::Codec("no result".into())))
                }
                None => Err(Error::PoolNotRunning),
            };
            callback(result);
        }));
    }

    /// Whether the task has finished, one way or another (`ready()`).
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_millis(300)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// assert!(!r.ready());
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.pending.ready()
    }

    /// Waits until the task has finished (`wait()`).
    ///
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(one, ())?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) {
        self.pending.wait(None);
    }

    /// Waits at most `timeout`; returns whether the task has finished (`wait(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap() { std::thread::sleep(Duration::from_millis(500)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// assert!(!r.wait_timeout(Duration::from_millis(50)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.pending.wait(deadline(timeout))
    }

    /// Whether the task succeeded (`successful()`); `Err(Error::NotReady)` before it
    /// finished, where Python raises `ValueError`.
    ///
    /// ```
    /// fn fail() -> u8 { panic!("no") }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.apply_async(fail, ())?;
    /// r.wait();
    /// assert!(!r.successful()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        self.pending.successful::<R>()
    }
}

/// `.await` gives the task's result, on any executor: the thread that files the result (the
/// pool's manager thread, or one waiting on the pool) wakes the awaiting task. A poll that
/// finds no result yet, of a task a worker already holds, looks for it for some microseconds
/// first (taking reports off the pool's queue itself), unless the worker last ran on the
/// polling thread's CPU: results of tiny tasks then come without a wake-up, which costs
/// more than the look.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let pool = multiprocess::Pool::new(2)?;
/// let r = pool.submit(square, (9,))?;
/// let value = futures::executor::block_on(async { r.await })?;
/// assert_eq!(value, 81);
/// # Ok::<(), multiprocess::Error>(())
/// ```
impl<R: DeserializeOwned> Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let slot = self.slot();
        if !slot.is_filled() {
            slot.look_briefly(&self.pending.control);
        }
        if !slot.is_filled() && slot.poll(cx.waker()).is_none() {
            return Poll::Pending;
        }
        // Filled: read at once.
        Poll::Ready(self.first(None))
    }
}

/// The result of [`Pool::map_async`](crate::Pool::map_async) and
/// [`starmap_async`](crate::Pool::starmap_async): a list computed in the background (Python's
/// `multiprocessing.pool.MapResult`).
///
/// ```
/// fn square(x: u32) -> u32 { x * x }
/// let pool = multiprocess::Pool::new(2)?;
/// let r = pool.map_async(square, 0..5)?;
/// assert_eq!(r.get()?, vec![0, 1, 4, 9, 16]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct MapResult<R> {
    pending: Pending,
    _result: PhantomData<fn() -> R>,
}

/// Its slots go back to the pool's spares, for later tasks, if nobody else holds them.
impl<R> Drop for MapResult<R> {
    fn drop(&mut self) {
        let slots = std::mem::take(&mut self.pending.slots);
        self.pending.control.spares.give_back_all(slots);
    }
}

/// `.await` gives the whole list, or the first error, on any executor.
///
/// ```
/// fn square(x: u32) -> u32 { x * x }
/// let pool = multiprocess::Pool::new(2)?;
/// let r = pool.map_async(square, 0..4)?;
/// assert_eq!(futures::executor::block_on(r)?, vec![0, 1, 4, 9]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
impl<R: DeserializeOwned> Future for MapResult<R> {
    type Output = Result<Vec<R>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Vec<R>>> {
        self.pending.poll::<R>(cx)
    }
}

impl<R: DeserializeOwned> MapResult<R> {
    pub(crate) fn new(slots: Vec<Arc<Slot>>, control: Arc<Control>) -> MapResult<R> {
        MapResult { pending: Pending { slots, control }, _result: PhantomData }
    }

    /// The whole list, in order, or the first task's error (`get()`).
    ///
    /// ```
    /// fn inc(x: u8) -> u8 { x + 1 }
    /// let pool = multiprocess::Pool::new(1)?;
    /// assert_eq!(pool.map_async(inc, [1, 2])?.get()?, vec![2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<Vec<R>> {
        self.pending.collect(None)
    }

    /// As [`get`](MapResult::get), waiting at most `timeout` (`Err(Error::Timeout)`).
    ///
    /// ```
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.map_async(square, Vec::new())?;
    /// assert_eq!(r.get_timeout(std::time::Duration::from_millis(100))?, Vec::<u32>::new());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>> {
        self.pending.collect(deadline(timeout))
    }

    /// Calls `callback` once with the whole list, or the first error, when every task has
    /// finished (Python's `callback` and `error_callback` of `map_async`: the callback gets
    /// the whole list, once). It runs on the thread that files the last result (see
    /// [`AsyncResult::then`]), or now, on this thread, if everything is already done.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// pool.map_async(square, 0..4)?.then(move |r| tx.send(r.unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), vec![0, 1, 4, 9]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn then(&self, callback: impl FnOnce(Result<Vec<R>>) + Send + 'static)
    where
        R: 'static,
    {
        let slots = self.pending.slots.to_vec();
        let control = self.pending.control.clone();
        if slots.is_empty() {
            return callback(Ok(Vec::new()));
        }
        // The last slot to be filled runs the callback, with every slot's results.
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(slots.len()));
        let callback = Arc::new(Mutex::new(Some(callback)));
        // Each callback holds the slots (see `AsyncResult::then` on why the cycles end).
        for slot in &slots {
            let (remaining, callback, all) = (remaining.clone(), callback.clone(), slots.clone());
            let control = control.clone();
            slot.set_callback(Box::new(move || {
                if remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
                    return;
                }
                let result = Pending { slots: all, control }.collect::<R>(Some(Instant::now()));
                if let Some(callback) = callback.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    callback(result);
                }
            }));
        }
    }

    /// Whether every task has finished (`ready()`).
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.map_async(id, [1])?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.pending.ready()
    }

    /// Waits until every task has finished (`wait()`).
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.map_async(id, [1, 2, 3])?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self) {
        self.pending.wait(None);
    }

    /// Waits at most `timeout`; returns whether every task has finished.
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.map_async(nap, [500])?;
    /// assert!(!r.wait_timeout(Duration::from_millis(50)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.pending.wait(deadline(timeout))
    }

    /// Whether every task succeeded (`successful()`); `Err(Error::NotReady)` before then.
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = multiprocess::Pool::new(1)?;
    /// let r = pool.map_async(id, [1])?;
    /// r.wait();
    /// assert!(r.successful()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        self.pending.successful::<R>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_into_the_output_up_to_the_first_failure() {
        let sent: Vec<std::result::Result<u64, String>> = vec![Ok(1), Ok(2), Err("boom".into()), Ok(4)];
        let mut out = vec![0u64];
        let got = decode_into(&Ok(postcard::to_allocvec(&sent).unwrap().into()), &mut out);
        assert!(matches!(got, Err(Error::TaskPanicked { message }) if message == "boom"));
        assert_eq!(out, [0, 1, 2]);
        let sent: Vec<std::result::Result<u64, String>> = vec![Ok(5), Ok(6)];
        decode_into(&Ok(postcard::to_allocvec(&sent).unwrap().into()), &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 5, 6]);
        // A count larger than the bytes: an error, without reserving that much.
        let got = decode_into::<u64>(&Ok(vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0].into()), &mut out);
        assert!(matches!(got, Err(Error::Codec(_))), "{got:?}");
        let got = decode_into::<u64>(&Err(Failure::Cancelled), &mut out);
        assert!(matches!(got, Err(Error::Cancelled)));
    }

    #[test]
    fn a_one_task_chunk_decodes_to_its_value_or_its_failure() {
        let encode = |r: Vec<std::result::Result<u64, String>>| Ok(postcard::to_allocvec(&r).unwrap().into());
        assert_eq!(decode_one::<u64>(&encode(vec![Ok(7)])).unwrap(), 7);
        assert!(
            matches!(decode_one::<u64>(&encode(vec![Err("boom".into())])), Err(Error::TaskPanicked { message }) if message == "boom")
        );
        assert!(matches!(decode_one::<u64>(&encode(vec![])), Err(Error::Codec(m)) if m == "no result"));
        // Two results where one was due: the second is bytes left over.
        assert!(
            matches!(decode_one::<u64>(&encode(vec![Ok(1), Ok(2)])), Err(Error::Codec(m)) if m.contains("left over"))
        );
        assert!(matches!(decode_one::<u64>(&Err(Failure::Timeout)), Err(Error::Timeout)));
    }

    #[test]
    fn results_with_bytes_left_over_are_a_codec_error() {
        let sent: Vec<std::result::Result<(u32, u32), String>> = vec![Ok((1, 2))];
        let bytes = postcard::to_allocvec(&sent).unwrap();
        let got = decode::<(u32, u32)>(Ok(bytes.clone().into()));
        assert!(matches!(got.as_slice(), [Ok((1, 2))]));
        let got = decode::<u32>(Ok(bytes.into()));
        assert!(matches!(got.as_slice(), [Err(Error::Codec(m))] if m.contains("left over")), "{got:?}");
    }

    /// A filler on another thread racing a sleeper, a waker and a listener: each sees the
    /// outcome itself or is told (the filler takes the lock only when one is marked there).
    #[test]
    fn a_fill_racing_a_waiter_is_never_missed() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let give_up = || Some(Instant::now() + Duration::from_secs(2));
        for round in 0..3_000u32 {
            let slot = Arc::new(Slot::empty(None));
            let go = Arc::new(AtomicBool::new(false));
            let filler = {
                let (slot, go) = (slot.clone(), go.clone());
                std::thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    // From before the poll to after the sleeper sleeps, round by round.
                    (0..round % 300 * 4).for_each(|_| std::hint::spin_loop());
                    slot.fill(Err(Failure::Cancelled));
                })
            };
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            go.store(true, Ordering::Release);
            let polled = slot.poll(&Waker::from(flag.clone()));
            let listener = Arc::new(Notify::default());
            slot.listen(&listener, round as usize);
            // The sleeper: with no spin, it goes to sleep at once if not filled.
            let asleep = Instant::now();
            assert!(slot.wait(give_up(), Spin::No, None).is_some());
            // Woken by the fill, not by its deadline (where it would find the outcome too).
            assert!(asleep.elapsed() < Duration::from_secs(1), "round {round}: the sleeper missed the fill");
            filler.join().unwrap();
            assert!(polled.is_some() || flag.0.load(Ordering::SeqCst), "round {round}: the waker missed the fill");
            let told = listener.pop(Some(Instant::now()));
            assert_eq!(told, Some(round as usize), "round {round}: the listener missed the fill");
            assert!(slot.is_cancelled());
        }
    }
}
