//! Start methods and contexts (Python's `multiprocessing.context`).

use crate::process::{Process, lock};
use crate::target::{Args, Target};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// How a child process is started (Python's start method names).
///
/// ```
/// use multiprocess::StartMethod;
/// assert_eq!("forkserver".parse::<StartMethod>()?, StartMethod::ForkServer);
/// assert_eq!(StartMethod::Spawn.to_string(), "spawn");
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork`: the child is a copy of the parent and runs the target it has in memory. Fast,
    /// takes any closure, but unsafe to use from a process with other threads.
    Fork,
    /// `spawn`: the child is a fresh run of this binary that finds its target by address.
    Spawn,
    /// `forkserver`: a fresh, single-threaded server started on first use forks each child.
    /// The default, as in CPython 3.14.
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method.
    ///
    /// ```
    /// assert_eq!(multiprocess::StartMethod::ForkServer.as_str(), "forkserver");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<StartMethod> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            other => Err(Error::InvalidArgument(format!("cannot find context for {other:?}"))),
        }
    }
}

/// The start method chosen for this process: by `set_start_method`, or inherited by a child.
static CHOSEN: Mutex<Option<StartMethod>> = Mutex::new(None);

/// The default start method: `MULTIPROCESS_START_METHOD` from the environment if set (so a
/// whole test suite or the tour can run under another method), else forkserver.
fn default_method() -> StartMethod {
    std::env::var("MULTIPROCESS_START_METHOD").ok().and_then(|s| s.parse().ok()).unwrap_or(StartMethod::ForkServer)
}

/// The start method new processes use (Python's `multiprocessing.get_start_method()`); fixes
/// the default if none was set.
///
/// ```
/// let m = multiprocess::get_start_method();
/// assert!(multiprocess::get_all_start_methods().contains(&m));
/// ```
///
/// ```
/// use multiprocess::{StartMethod, get_context};
/// assert_eq!(get_context(StartMethod::Spawn).get_start_method(), StartMethod::Spawn);
/// ```
pub fn get_start_method() -> StartMethod {
    *lock(&CHOSEN).get_or_insert_with(default_method)
}

/// Sets the start method for new processes (Python's `multiprocessing.set_start_method(m,
/// force)`). Without `force`, setting it a second time is an error
/// ([`Error::ContextAlreadySet`]).
///
/// ```
/// use multiprocess::{StartMethod, set_start_method, get_start_method};
/// set_start_method(StartMethod::Spawn, false)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// assert!(set_start_method(StartMethod::Fork, false).is_err());
/// set_start_method(StartMethod::Fork, true)?;
/// assert_eq!(get_start_method(), StartMethod::Fork);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    let mut chosen = lock(&CHOSEN);
    if chosen.is_some() && !force {
        return Err(Error::ContextAlreadySet);
    }
    *chosen = Some(method);
    Ok(())
}

/// A child keeps its parent's start method, as CPython's children do.
/// The chosen start method's lock, held across a fork (see `process::fork_locked`).
pub(crate) fn lock_chosen() -> std::sync::MutexGuard<'static, Option<StartMethod>> {
    lock(&CHOSEN)
}

pub(crate) fn set_child_start_method(method: StartMethod) {
    *lock(&CHOSEN) = Some(method);
}

/// Every start method this platform has, the default first (Python's
/// `multiprocessing.get_all_start_methods()`, 3.14 order).
///
/// ```
/// use multiprocess::{StartMethod, get_all_start_methods};
/// assert_eq!(get_all_start_methods(), [StartMethod::ForkServer, StartMethod::Spawn, StartMethod::Fork]);
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![StartMethod::ForkServer, StartMethod::Spawn, StartMethod::Fork]
}

/// A start method bound to the things it makes (Python's `multiprocessing.get_context(m)`).
///
/// ```
/// use multiprocess::{StartMethod, get_context};
/// fn child() {}
/// let ctx = get_context(StartMethod::Spawn);
/// assert_eq!(ctx.get_start_method(), StartMethod::Spawn);
/// let mut p = ctx.process(child, ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// The context of start method `method` (Python's `multiprocessing.get_context(method)`).
///
/// ```
/// use multiprocess::{StartMethod, get_context};
/// assert_eq!(get_context(StartMethod::Fork).get_start_method(), StartMethod::Fork);
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// This context's start method (`ctx.get_start_method()`).
    ///
    /// ```
    /// use multiprocess::{StartMethod, get_context};
    /// assert_eq!(get_context(StartMethod::Spawn).get_start_method(), StartMethod::Spawn);
    /// ```
    pub fn get_start_method(&self) -> StartMethod {
        self.method
    }

    /// A [`Process`] started with this context's method (`ctx.Process(target, args)`).
    ///
    /// ```
    /// use multiprocess::{StartMethod, get_context};
    /// let p = get_context(StartMethod::ForkServer).process(|x: i32| assert_eq!(x, 1), (1,));
    /// assert_eq!(p.start_method(), StartMethod::ForkServer);
    /// ```
    pub fn process<F, A>(&self, target: F, args: A) -> Process
    where
        F: Target<A>,
        A: Args,
    {
        let mut p = Process::new(target, args);
        p.set_method(self.method);
        p
    }

    /// A [`Pool`](crate::Pool) of `processes` workers started with this context's method
    /// (`ctx.Pool(processes)`); [`Pool::builder`](crate::Pool::builder) for the other settings.
    ///
    /// ```
    /// use multiprocess::{StartMethod, get_context};
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = get_context(StartMethod::Spawn).pool(2)?;
    /// assert_eq!(pool.map(square, [1, 2, 3])?, vec![1, 4, 9]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pool(&self, processes: usize) -> crate::Result<crate::Pool> {
        crate::Pool::builder().processes(processes).start_method(self.method).build()
    }

    /// A [`SyncManager`](crate::SyncManager) whose server is started with this context's
    /// method (`ctx.Manager()`).
    ///
    /// ```
    /// use multiprocess::{StartMethod, get_context};
    /// let m = get_context(StartMethod::Spawn).manager()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert_eq!(d.get(&1)?, Some(2));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn manager(&self) -> crate::Result<crate::SyncManager> {
        crate::SyncManager::builder().start_method(self.method).start()
    }
}
