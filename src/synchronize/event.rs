//! `Event` (Python's `multiprocessing.Event`).

use crate::Result;
use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, futex, proc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Spins before sleeping: a `set` from another core is seen in well under a microsecond,
/// a sleeper's wake-up costs some 20 µs on these machines.
const SPINS: u32 = 2000;

#[repr(C)]
#[derive(Default)]
pub(crate) struct EventState {
    /// 0 unset, anything else set.
    flag: AtomicU32,
    /// How many may be asleep on `flag` (a killed sleeper leaves it too high: a needless
    /// wake later, never a lost one).
    sleepers: AtomicU32,
    /// The CPU of the last `set` (plus one; 0 unknown): a waiter on the same CPU does not spin.
    setter_cpu: AtomicU32,
}

// SAFETY: atomics only; zero is an unset event with no sleepers.
unsafe impl SharedState for EventState {}

/// A flag that processes and threads can wait on (Python's `multiprocessing.Event`).
///
/// ```
/// use multiprocess::{Event, Process};
///
/// fn worker(go: Event) {
///     go.set();
/// }
///
/// let go = Event::new()?;
/// let mut p = Process::new(worker, (go.clone(),));
/// p.start()?;
/// assert!(go.wait(None));
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    shared: Shared<EventState>,
}

impl Event {
    /// A new event, not set (Python's `Event()`).
    ///
    /// ```
    /// assert!(!multiprocess::Event::new()?.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event { shared: Shared::new(0)? })
    }

    fn state(&self) -> &EventState {
        self.shared.state()
    }

    /// Whether the flag is set (Python's `is_set()`).
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().flag.load(Ordering::SeqCst) != 0
    }

    /// Sets the flag and wakes every waiter (Python's `set()`).
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// assert!(e.wait(Some(std::time::Duration::ZERO)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self) {
        let state = self.state();
        state.setter_cpu.store(proc::current_cpu(), Ordering::Relaxed);
        state.flag.store(1, Ordering::SeqCst);
        if state.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&state.flag);
        }
    }

    /// Clears the flag (Python's `clear()`).
    ///
    /// ```
    /// let e = multiprocess::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state().flag.store(0, Ordering::SeqCst);
    }

    /// Waits until the flag is set, or at most `timeout` (`None`: no limit); returns whether
    /// it is set (Python's `wait(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = multiprocess::Event::new()?;
    /// assert!(!e.wait(Some(Duration::from_millis(10))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = Deadline::after(timeout);
        let state = self.state();
        let setter = state.setter_cpu.load(Ordering::Relaxed);
        futex::park_until(&state.flag, 0, &state.sleepers, setter, SPINS, deadline, || self.is_set())
    }
}

impl fmt::Debug for Event {
    /// CPython's repr, without the address: `<Event unset>` or `<Event set>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Event {}>", if self.is_set() { "set" } else { "unset" })
    }
}
