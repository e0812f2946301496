//! Processes: `Process`, the current and parent process, children, exit codes, `fork`.
//! Python's `multiprocessing.process` plus the `os` functions the seed notes use.

use crate::context::{self, StartMethod};
use crate::popen::{self, ClosureLaunch, FnLaunch, Launch, forkserver};
use crate::sys::pidfd::Pidfd;
use crate::sys::{Deadline, proc};
use crate::target::{Args, Outcome, Target};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Locks `m`, ignoring poisoning: our state stays consistent across a panic elsewhere, and no
/// call of ours may panic because another thread did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a child is told about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChildSpec {
    pub(crate) name: String,
    /// Its place in the process tree: the parent's identity plus its own number.
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) method: StartMethod,
}

// ---------------------------------------------------------------------------------------------
// This process.

/// Who this process is. One per process; children get theirs from the parent.
struct Me {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    /// `None` while the kernel has given no randomness for it: never a key of zeros.
    authkey: Option<[u8; 32]>,
    parent: Option<Arc<ParentRecord>>,
    /// Whether we are a child started by this crate, which exits through `exit_child`.
    is_child: bool,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);
/// Counts the `Process` objects made here, for default names (CPython's `_process_counter`).
static COUNTER: AtomicU32 = AtomicU32::new(1);

fn with_me<R>(f: impl FnOnce(&mut Me) -> R) -> R {
    let mut me = lock(&ME);
    let me = me.get_or_insert_with(|| Me {
        name: "MainProcess".into(),
        identity: Vec::new(),
        daemon: false,
        authkey: None,
        parent: None,
        is_child: false,
    });
    if me.authkey.is_none() {
        // Without randomness a key would be predictable: it stays unset, and whatever needs
        // it asks again through `authkey()` and fails with the kernel's error if it must.
        me.authkey = random_key().ok();
    }
    f(me)
}

fn random_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    proc::random_bytes(&mut key)?;
    Ok(key)
}

/// This process's authentication key, for what hands it on (a child's start, a manager).
/// An error if the kernel gives no randomness: a predictable key is never made up.
pub(crate) fn authkey() -> Result<[u8; 32]> {
    with_me(|m| m.authkey).ok_or_else(|| match random_key() {
        Err(e) => Error::Io(std::io::Error::new(e.kind(), format!("no random bytes for the authkey: {e}"))),
        Ok(_) => Error::Io(std::io::Error::other("no random bytes for the authkey")),
    })
}

/// A snapshot of the current process (Python's `multiprocessing.current_process()`).
///
/// ```
/// let me = multiprocess::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.is_daemon());
/// assert_eq!(me.authkey().len(), 32);
/// ```
#[derive(Clone, Debug)]
pub struct CurrentProcess {
    name: String,
    daemon: bool,
    authkey: Option<[u8; 32]>,
    identity: Vec<u32>,
}

impl CurrentProcess {
    /// The process's name: `MainProcess`, or the name its parent gave it (`name`).
    ///
    /// ```
    /// assert_eq!(multiprocess::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
    /// This process's id (`pid`, `ident`).
    ///
    /// ```
    /// assert_eq!(multiprocess::current_process().pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        proc::getpid() as u32
    }
    /// Whether this process is a daemon (`daemon`).
    ///
    /// ```
    /// assert!(!multiprocess::current_process().is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }
    /// The authentication key, 32 random bytes inherited by children (`authkey`).
    ///
    /// The key comes from the kernel's random source. Should that fail (a seccomp filter that
    /// refuses `getrandom`, say), the key is empty rather than predictable, and starting a
    /// child, which hands the key on, is an error that says so.
    ///
    /// ```
    /// assert_eq!(multiprocess::current_process().authkey().len(), 32);
    /// ```
    pub fn authkey(&self) -> &[u8] {
        self.authkey.as_ref().map_or(&[], |k| &k[..])
    }
    /// The place in the process tree: empty for the main process, `[3, 1]` for the first
    /// child of the third child (`_identity`).
    ///
    /// ```
    /// assert!(multiprocess::current_process().identity().is_empty());
    /// ```
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }
    /// Always true: the current process is running (`is_alive()`).
    ///
    /// ```
    /// assert!(multiprocess::current_process().is_alive());
    /// ```
    pub fn is_alive(&self) -> bool {
        true
    }
}

/// The current process (Python's `multiprocessing.current_process()`).
///
/// ```
/// assert_eq!(multiprocess::current_process().name(), "MainProcess");
/// ```
pub fn current_process() -> CurrentProcess {
    with_me(|m| CurrentProcess {
        name: m.name.clone(),
        daemon: m.daemon,
        authkey: m.authkey,
        identity: m.identity.clone(),
    })
}

struct ParentRecord {
    pid: i32,
    name: String,
    /// Given by a spawn or forkserver parent; opened on first use in a fork child, where the
    /// parent is `getppid()` until it dies.
    pidfd: OnceLock<Option<Pidfd>>,
}

impl ParentRecord {
    fn pidfd(&self) -> Option<&Pidfd> {
        self.pidfd
            .get_or_init(|| {
                // Open, then check it is still our parent: then it was when opened.
                Pidfd::open(self.pid).ok().filter(|_| proc::getppid() == self.pid)
            })
            .as_ref()
    }
}

/// The process that started this one (Python's `multiprocessing.parent_process()`).
///
/// ```
/// assert!(multiprocess::parent_process().is_none()); // in the main process
/// ```
#[derive(Clone)]
pub struct ParentProcess(Arc<ParentRecord>);

impl ParentProcess {
    /// The parent's pid (`pid`).
    ///
    /// ```
    /// fn child() {
    ///     let parent = multiprocess::parent_process().unwrap();
    ///     assert_eq!(parent.pid(), multiprocess::getppid());
    /// }
    /// let mut p = multiprocess::get_context(multiprocess::StartMethod::Fork).process(child, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.0.pid as u32
    }
    /// The parent's name (`name`).
    ///
    /// ```
    /// fn child() {
    ///     assert_eq!(multiprocess::parent_process().unwrap().name(), "MainProcess");
    /// }
    /// let mut p = multiprocess::Process::new(child, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Whether the parent is still running (`is_alive()`).
    ///
    /// ```
    /// fn child() {
    ///     assert!(multiprocess::parent_process().unwrap().is_alive());
    /// }
    /// let mut p = multiprocess::Process::new(child, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        match self.0.pidfd() {
            Some(fd) => !fd.has_exited().unwrap_or(true),
            None => false,
        }
    }
    /// Waits up to `timeout` for the parent to end; returns whether it has (`join(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn child() {
    ///     let parent = multiprocess::parent_process().unwrap();
    ///     // The parent is waiting for us: it has not ended.
    ///     assert!(!parent.join_timeout(Duration::from_millis(10)).unwrap());
    /// }
    /// let mut p = multiprocess::Process::new(child, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        match self.0.pidfd() {
            Some(fd) => Ok(fd.wait_exited(Deadline::after(Some(timeout)))?),
            None => Ok(true),
        }
    }
    /// A descriptor that becomes readable when the parent ends (`sentinel`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiprocess::connection::wait;
    /// fn child() {
    ///     let parent = multiprocess::parent_process().unwrap();
    ///     let sentinel = parent.sentinel().unwrap();
    ///     assert!(wait(&[&sentinel], Some(Duration::ZERO)).unwrap().is_empty());
    /// }
    /// let mut p = multiprocess::Process::new(child, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        self.0.pidfd().map(|p| p.as_fd()).ok_or(Error::HandleClosed)
    }
}

impl fmt::Debug for ParentProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<_ParentProcess name='{}' parent={}>", self.0.name, self.0.pid)
    }
}

/// The parent of this process if this crate started it, else `None`
/// (Python's `multiprocessing.parent_process()`).
///
/// ```
/// use multiprocess::{Process, parent_process};
/// fn child() {
///     let parent = parent_process().expect("a child has a parent");
///     assert_eq!(parent.name(), "MainProcess");
///     assert!(parent.is_alive());
/// }
/// let mut p = Process::new(child, ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    with_me(|m| m.parent.clone()).map(ParentProcess)
}

static SELF_PIDFD: Mutex<Option<(i32, Arc<Pidfd>)>> = Mutex::new(None);

/// A pidfd for this process, made once, sent to each spawn and forkserver child so that it can
/// watch us without racing pid reuse. A fork child inherits its parent's and replaces it.
pub(crate) fn self_pidfd() -> io::Result<Arc<Pidfd>> {
    let mut cell = lock(&SELF_PIDFD);
    let me = proc::getpid();
    match &*cell {
        Some((pid, fd)) if *pid == me => Ok(fd.clone()),
        _ => {
            let fd = Arc::new(Pidfd::open(me)?);
            *cell = Some((me, fd.clone()));
            Ok(fd)
        }
    }
}

/// This process's name if it is a child started by this crate, for the panic hook. Never
/// blocks: a panic while this process's identity is being changed gets no header.
pub(crate) fn child_name_for_panic() -> Option<String> {
    let me = ME.try_lock().ok()?;
    me.as_ref().filter(|m| m.is_child).map(|m| m.name.clone())
}

/// The raw number of this process's own pidfd, if one was made.
pub(crate) fn self_pidfd_raw() -> Option<i32> {
    use std::os::fd::AsRawFd;
    lock(&SELF_PIDFD).as_ref().filter(|(pid, _)| *pid == proc::getpid()).map(|(_, fd)| fd.as_fd().as_raw_fd())
}

/// Makes this process the child described by `spec` (spawn and forkserver children).
pub(crate) fn become_child(
    spec: &ChildSpec,
    parent_pid: i32,
    parent_name: String,
    parent_pidfd: Option<OwnedFd>,
    authkey: Vec<u8>,
) {
    // A key of the wrong length is no key (never a key of zeros).
    let key = <[u8; 32]>::try_from(authkey.as_slice()).ok();
    let pidfd = OnceLock::from(parent_pidfd.map(Pidfd::from_owned));
    let parent = ParentRecord { pid: parent_pid, name: parent_name, pidfd };
    *lock(&ME) = Some(Me {
        name: spec.name.clone(),
        identity: spec.identity.clone(),
        daemon: spec.daemon,
        authkey: key,
        parent: Some(Arc::new(parent)),
        is_child: true,
    });
    COUNTER.store(1, Ordering::SeqCst);
    context::set_child_start_method(spec.method);
}

// ---------------------------------------------------------------------------------------------
// Fork: the locks held across it and the state reset after it.

/// Forks with this crate's locks held, so the child finds none of them locked by a thread it
/// does not have (and warns once that forking a threaded process is risky). `in_child` runs in the child with the locks still held, to reset state.
/// Returns 0 in the child, the pid in the parent.
///
/// # Safety
/// As [`proc::fork`]: the child must keep to code that needs no lock another thread held.
pub(crate) unsafe fn fork_locked(in_child: impl FnOnce()) -> io::Result<i32> {
    // Printing takes these; held here, the child finds them free (glibc does the same for
    // its own streams), so a child can print even if another thread was printing.
    crate::bootstrap::install_panic_header();
    // Flushed here, as CPython's Popen does before it forks: a partial line still in our
    // buffer would otherwise be written again by the child when it flushes at exit. Made
    // here, the handle is also inherited ready, so the child does not build it again.
    let _ = io::stdout().flush();
    let threads = proc::thread_count();
    warn_if_threaded(threads);
    // References for the manager proxies the child inherits (nothing without proxies).
    let proxies = crate::managers::fork::before_fork();
    // Holds for the shared objects the child inherits (the heap's lock is held till after).
    let heap = crate::heap::before_fork();
    if threads == 1 {
        // No other thread can hold a lock, and the caller's thread holds none of ours.
        // SAFETY: by the caller's contract.
        let pid = unsafe { proc::fork() };
        return after_fork(pid, heap, proxies, in_child);
    }
    let stdout = io::stdout().lock();
    let stderr = io::stderr().lock();
    let me = lock(&ME);
    let server = lock(&forkserver::SERVER);
    let children = lock(&CHILDREN);
    let self_pidfd = lock(&SELF_PIDFD);
    // Leaf locks (their holders take no other lock), taken last: another thread listing or
    // reaping children, or reading the start method, may hold them at any moment, and the
    // child takes both as it starts a child of its own.
    let ended = lock(&ENDED);
    let chosen = context::lock_chosen();
    // SAFETY: by the caller's contract.
    let pid = unsafe { proc::fork() };
    drop(chosen);
    drop(ended);
    drop(self_pidfd);
    drop(children);
    drop(server);
    drop(me);
    drop(stderr);
    drop(stdout);
    after_fork(pid, heap, proxies, in_child)
}

/// The end of [`fork_locked`], either side.
fn after_fork(
    pid: io::Result<i32>,
    heap: crate::heap::ForkPins,
    proxies: crate::managers::fork::ForkGuard,
    in_child: impl FnOnce(),
) -> io::Result<i32> {
    match pid {
        Ok(0) => {
            heap.in_child();
            in_child();
            proxies.in_child();
        }
        Ok(_) => heap.in_parent(true),
        Err(_) => heap.in_parent(false),
    }
    pid
}

/// What a fork child becomes, built in the parent before the fork: every allocation is made
/// there, so that the child writes to as few shared pages as it can (each first write to a
/// page after fork costs a copy).
pub(crate) struct ForkIdentity {
    me: Me,
    method: StartMethod,
}

impl ForkIdentity {
    /// The identity `spec` describes, with this process as the parent; an error if this
    /// process has no authkey to hand on (see [`authkey`]).
    pub(crate) fn new(spec: &ChildSpec) -> Result<ForkIdentity> {
        let authkey = Some(authkey()?);
        let parent_name = with_me(|m| m.name.clone());
        let parent = ParentRecord { pid: proc::getpid(), name: parent_name, pidfd: OnceLock::new() };
        let me = Me {
            name: spec.name.clone(),
            identity: spec.identity.clone(),
            daemon: spec.daemon,
            authkey,
            parent: Some(Arc::new(parent)),
            is_child: true,
        };
        Ok(ForkIdentity { me, method: spec.method })
    }
}

/// Resets what a fork child must not share with its parent: the parent's children are not
/// ours, nor is its fork server. With `identity`, the child also takes that identity.
pub(crate) fn become_fork_child(identity: Option<ForkIdentity>) {
    // The parent's records are left as they are (not ours to reap, and freeing them would
    // write to shared pages); its fork server's socket is closed, so that the server still
    // sees the parent go.
    std::mem::forget(std::mem::take(&mut *lock(&CHILDREN)));
    drop(lock(&forkserver::SERVER).take());
    // The parent's death watcher thread is not here (the child starts its own if it waits).
    if crate::synchronize::deathwatch::forget_in_fork_child() {
        OWN_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
    let Some(identity) = identity else { return };
    std::mem::forget(lock(&ME).replace(identity.me));
    COUNTER.store(1, Ordering::SeqCst);
    context::set_child_start_method(identity.method);
}

/// Warns once per process that forking a threaded process can deadlock the child, as CPython
/// 3.12 does (`DeprecationWarning`). Set `MULTIPROCESS_NO_FORK_WARNING=1` to silence it.
/// Threads of this crate's own running in this process (a pool's manager thread): forking
/// from one of them, or beside one, is what the crate is built for, and no reason to warn.
static OWN_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Counts the calling thread as one of the crate's own while the guard lives.
pub(crate) fn own_thread() -> OwnThread {
    OWN_THREADS.fetch_add(1, Ordering::Relaxed);
    OwnThread(())
}

/// See [`own_thread`].
pub(crate) struct OwnThread(());

impl Drop for OwnThread {
    fn drop(&mut self) {
        OWN_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Warns once if this process has threads other than the forking one and the crate's own.
fn warn_if_threaded(threads: usize) {
    let threads = threads.saturating_sub(OWN_THREADS.load(Ordering::Relaxed));
    static WARNED: AtomicBool = AtomicBool::new(false);
    static SILENCED: OnceLock<bool> = OnceLock::new();
    if threads <= 1 || WARNED.load(Ordering::Relaxed) {
        return;
    }
    if *SILENCED.get_or_init(|| std::env::var_os("MULTIPROCESS_NO_FORK_WARNING").is_some()) {
        return;
    }
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "multiprocess: warning: this process has {threads} threads; a forked child gets only \
             the calling thread, and a lock another thread held stays locked in it. Prefer the \
             spawn or forkserver start method."
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Children.

/// A started child: what the parent keeps to wait for it and signal it.
pub(crate) struct Child {
    pid: i32,
    name: String,
    daemon: bool,
    pidfd: Pidfd,
    /// Whether its pidfd is in this process's set of children's pidfds ([`ENDED`]).
    watched: AtomicBool,
    /// The exit code once known (`returncode`).
    status: Mutex<Option<i32>>,
    /// For a forkserver child, the socket its exit status arrives on (the server is its parent).
    channel: Option<OwnedFd>,
}

impl Child {
    pub(crate) fn new(pid: i32, spec: &ChildSpec, pidfd: Pidfd, channel: Option<OwnedFd>) -> Child {
        Child {
            pid,
            name: spec.name.clone(),
            daemon: spec.daemon,
            pidfd,
            watched: AtomicBool::new(false),
            status: Mutex::new(None),
            channel,
        }
    }

    /// The exit code if the child has ended (reaping it), without blocking.
    fn poll(&self) -> io::Result<Option<i32>> {
        let mut status = lock(&self.status);
        if status.is_none() {
            *status = match &self.channel {
                None => self.pidfd.try_reap()?,
                Some(ch) if self.pidfd.has_exited()? => Some(forkserver::read_status(ch)),
                Some(_) => None,
            };
        }
        Ok(*status)
    }

    /// Waits for the child to end or the deadline to pass; the exit code if it ended.
    fn wait(&self, deadline: Deadline) -> io::Result<Option<i32>> {
        if let Some(code) = *lock(&self.status) {
            return Ok(Some(code));
        }
        if !self.pidfd.wait_exited(deadline)? {
            return Ok(None);
        }
        self.poll()
    }

    fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        if lock(&self.status).is_some() {
            return Ok(()); // already reaped: nothing to signal, and never a recycled pid
        }
        self.pidfd.send_signal(signal)
    }

    /// Kills and reaps a child whose start failed half-way.
    pub(crate) fn kill_and_reap(&self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.wait(Deadline::NEVER);
    }
}

/// Every child started here and not yet seen to end (CPython's `_children`).
static CHILDREN: Mutex<Vec<Arc<Child>>> = Mutex::new(Vec::new());

/// The pidfds of [`CHILDREN`], watched together: a child that ends makes its pidfd readable,
/// and one `epoll_wait` finds those, so that reaping before a start costs the same with
/// thousands of children alive as with none (CPython's `_cleanup` polls each). Made on first
/// use, per process (a fork child makes its own: the parent's set is the parent's).
static ENDED: Mutex<Option<(i32, crate::sys::socket::ReadySet)>> = Mutex::new(None);

/// Runs `f` on this process's set of children's pidfds, made if needed; `None` if it cannot
/// be made (out of descriptors): then every child is asked, as before.
fn with_ended<R>(f: impl FnOnce(&crate::sys::socket::ReadySet) -> R) -> Option<R> {
    let mut ended = lock(&ENDED);
    let me = proc::cached_pid();
    if ended.as_ref().is_none_or(|(owner, _)| *owner != me) {
        // A fork child's copy of the parent's descriptor is forgotten, not closed: the parent
        // keeps its set, and the child's copy costs one descriptor.
        if let Some(old) = ended.take() {
            std::mem::forget(old);
        }
        *ended = crate::sys::socket::ReadySet::new().ok().map(|set| (me, set));
    }
    ended.as_ref().map(|(_, set)| f(set))
}

/// How many children the last [`reap_finished`] asked about (for the tests: it must not grow
/// with the children alive).
static LAST_REAP_ASKED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn last_reap_asked() -> usize {
    LAST_REAP_ASKED.load(Ordering::Relaxed)
}

/// The set's descriptor, for the leak checks (it lives as long as the process).
pub(crate) fn ended_set_raw() -> Option<RawFd> {
    lock(&ENDED).as_ref().filter(|(owner, _)| *owner == proc::cached_pid()).map(|(_, set)| set.as_fd().as_raw_fd())
}

fn register(child: Arc<Child>) {
    // Not a `Once`: a fork child would inherit one that another thread was running as
    // running for ever, and its first `start` would wait on it for ever.
    static AT_EXIT: AtomicBool = AtomicBool::new(false);
    // Loaded first: a swap writes even when the flag is set, and this page is shared with
    // the child just forked.
    if !AT_EXIT.load(Ordering::Acquire) && !AT_EXIT.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(at_exit) };
    }
    let watched = with_ended(|set| set.add(child.pidfd.as_fd(), Some(crate::sys::socket::Interest::Read)).is_ok());
    child.watched.store(watched == Some(true), Ordering::Relaxed);
    lock(&CHILDREN).push(child);
}

fn unregister(child: &Arc<Child>) {
    if child.watched.swap(false, Ordering::Relaxed) {
        let _ = with_ended(|set| set.remove(child.pidfd.as_fd()));
    }
    lock(&CHILDREN).retain(|c| !Arc::ptr_eq(c, child));
}

/// Reaps children that have ended (CPython's `_cleanup()`): the ones whose pidfds the set
/// says are readable, and any child the set does not watch.
fn reap_finished() {
    let ready = with_ended(|set| set.ready_now(1024)).and_then(|r| r.ok());
    let children: Vec<Arc<Child>> = lock(&CHILDREN)
        .iter()
        .filter(|c| match &ready {
            Some(fds) => !c.watched.load(Ordering::Relaxed) || fds.contains(&c.pidfd.as_fd().as_raw_fd()),
            None => true,
        })
        .cloned()
        .collect();
    LAST_REAP_ASKED.store(children.len(), Ordering::Relaxed);
    let ended: Vec<Arc<Child>> = children.into_iter().filter(|c| !matches!(c.poll(), Ok(None))).collect();
    for child in &ended {
        if child.watched.swap(false, Ordering::Relaxed) {
            let _ = with_ended(|set| set.remove(child.pidfd.as_fd()));
        }
    }
    lock(&CHILDREN).retain(|c| !ended.iter().any(|e| Arc::ptr_eq(c, e)));
}

/// A running child of this process, as listed by [`active_children`].
///
/// ```
/// fn nap() { std::thread::sleep(std::time::Duration::from_millis(300)) }
/// let mut p = multiprocess::Process::new(nap, ()).with_name("napper");
/// p.start()?;
/// let listed = multiprocess::active_children();
/// let child = listed.iter().find(|c| Some(c.pid()) == p.pid()).unwrap();
/// assert_eq!(child.name(), "napper");
/// assert!(!child.is_daemon());
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveChild {
    pid: u32,
    name: String,
    daemon: bool,
}

impl ActiveChild {
    /// The child's pid (Python's `p.pid`).
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_millis(300)) }
    /// let mut p = multiprocess::Process::new(nap, ());
    /// p.start()?;
    /// assert_eq!(multiprocess::active_children()[0].pid(), p.pid().unwrap());
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// The child's name (Python's `p.name`).
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_millis(300)) }
    /// let mut p = multiprocess::Process::new(nap, ()).with_name("napper");
    /// p.start()?;
    /// assert_eq!(multiprocess::active_children()[0].name(), "napper");
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether the child is a daemon (Python's `p.daemon`).
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_millis(300)) }
    /// let mut p = multiprocess::Process::new(nap, ()).with_daemon(true);
    /// p.start()?;
    /// assert!(multiprocess::active_children()[0].is_daemon());
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }
}

/// The children of this process that are still running; ended ones are reaped on the way
/// (Python's `multiprocessing.active_children()`).
///
/// ```
/// use multiprocess::{Process, active_children};
/// fn nap() { std::thread::sleep(std::time::Duration::from_millis(200)) }
/// let mut p = Process::new(nap, ());
/// assert!(active_children().is_empty());
/// p.start()?;
/// assert!(active_children().iter().any(|c| Some(c.pid()) == p.pid()));
/// p.join()?;
/// assert!(active_children().is_empty());
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    reap_finished();
    lock(&CHILDREN).iter().map(|c| ActiveChild { pid: c.pid as u32, name: c.name.clone(), daemon: c.daemon }).collect()
}

/// What CPython's `_exit_function` does: terminate daemonic children, then join them all.
fn finish_children() {
    let children: Vec<Arc<Child>> = std::mem::take(&mut *lock(&CHILDREN));
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(libc::SIGTERM);
    }
    for child in &children {
        let _ = child.wait(Deadline::NEVER);
    }
}

extern "C" fn at_exit() {
    // Nothing may unwind out of an atexit handler.
    let _ = std::panic::catch_unwind(finish_children);
}

/// Flushes stdout, which holds what a child printed without a newline (stderr is unbuffered).
fn flush_stdio() {
    let _ = io::stdout().flush();
}

/// Ends a child started by this crate: children finished, output flushed, then `_exit`.
pub(crate) fn exit_child(code: i32) -> ! {
    finish_children();
    flush_stdio();
    // The shared objects this child still holds are its parent's to free now.
    crate::heap::release_all();
    proc::exit_now(code)
}

/// Ends this process with `code`, as Python's `sys.exit(n)` does in a child: daemonic
/// children are terminated, the others joined, output flushed. The OS keeps the low 8 bits
/// (256 exits 0, -1 exits 255).
///
/// ```no_run
/// fn worker() {
///     multiprocess::exit(8);
/// }
/// ```
pub fn exit(code: i32) -> ! {
    if with_me(|m| m.is_child) {
        exit_child(code)
    }
    finish_children();
    flush_stdio();
    std::process::exit(code)
}

// ---------------------------------------------------------------------------------------------
// Process.

/// A process running a function (Python's `multiprocessing.Process`).
///
/// Made with [`Process::new`] (a fn item or non-capturing closure with serde arguments, any
/// start method) or [`Process::from_closure`] (any closure, fork only), configured with
/// [`with_name`](Process::with_name) and [`with_daemon`](Process::with_daemon), then
/// [`start`](Process::start)ed and [`join`](Process::join)ed. Exit codes follow CPython: 0,
/// the code given to [`exit`] or returned as an `ExitCode`, 1 on a panic or a returned `Err`,
/// `-N` when killed by signal N.
///
/// Dropping a started `Process` does not stop the child: like CPython, a non-daemonic child is
/// joined when this process exits, a daemonic one terminated.
///
/// ```
/// use multiprocess::Process;
/// fn f(name: String) {
///     println!("hello {name}");
/// }
/// let mut p = Process::new(f, ("john".to_string(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Process {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    launch: Option<Box<dyn Launch>>,
    child: Option<Arc<Child>>,
    closed: bool,
}

impl Process {
    /// A process that will run `target(args..)` (Python's `Process(target=f, args=(..))`).
    ///
    /// `target` is a fn item or a closure that captures nothing (checked at compile time),
    /// taking 0 to 8 arguments; `args` is the tuple of them, serde values that may include
    /// handles such as a [`Connection`](crate::Connection). The start method is the default
    /// one ([`get_start_method`](crate::get_start_method)) at [`start`](Process::start) time.
    ///
    /// ```
    /// use multiprocess::Process;
    /// let p = Process::new(|a: u8, b: u8| assert_eq!(a + b, 3), (1, 2));
    /// assert_eq!(p.name(), "Process-1");
    /// ```
    pub fn new<F, A>(target: F, args: A) -> Process
    where
        F: Target<A>,
        A: Args,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "Process::new takes a fn item or a closure that captures nothing; use Process::from_closure for others"
            )
        };
        Process::with_launch(Box::new(FnLaunch { f: target, args: Some(args) }), None)
    }

    /// A process that runs any closure, always started by fork (CPython's fork-only lambda
    /// targets). Forking a process that has other threads gives a warning, as CPython 3.12
    /// does: in the child, a lock another thread held stays locked.
    ///
    /// ```
    /// use multiprocess::Process;
    /// let greeting = String::from("hello from a closure");
    /// let mut p = Process::from_closure(move || assert_eq!(greeting.len(), 20));
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_closure<C, R>(closure: C) -> Process
    where
        C: FnOnce() -> R + Send + 'static,
        R: Outcome,
    {
        Process::with_launch(Box::new(ClosureLaunch(Some(closure))), Some(StartMethod::Fork))
    }

    pub(crate) fn with_launch(launch: Box<dyn Launch>, method: Option<StartMethod>) -> Process {
        let count = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (mut identity, daemon) = with_me(|m| (m.identity.clone(), m.daemon));
        identity.push(count);
        let name = default_name(&identity);
        Process { name, identity, daemon, method, launch: Some(launch), child: None, closed: false }
    }

    pub(crate) fn set_method(&mut self, method: StartMethod) {
        if self.method != Some(StartMethod::Fork) || method == StartMethod::Fork {
            self.method = Some(method);
        }
    }

    /// Sets the name (Python's `name=`).
    ///
    /// ```
    /// let p = multiprocess::Process::new(|| (), ()).with_name("worker");
    /// assert_eq!(p.name(), "worker");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Sets whether the process is a daemon (Python's `daemon=`): a daemon is terminated when
    /// its parent exits, even when the parent is killed, and may not start children.
    ///
    /// ```
    /// let p = multiprocess::Process::new(|| (), ()).with_daemon(true);
    /// assert!(p.is_daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Renames the process; allowed at any time, as in Python (`p.name = ..`).
    ///
    /// ```
    /// let mut p = multiprocess::Process::new(|| (), ());
    /// p.set_name("custom");
    /// assert_eq!(p.name(), "custom");
    /// ```
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Sets the daemon flag before start; after start it is an error, as in Python
    /// (`AssertionError('process has already started')`).
    ///
    /// ```
    /// let mut p = multiprocess::Process::new(|| (), ());
    /// p.set_daemon(true)?;
    /// p.start()?;
    /// assert!(p.set_daemon(false).is_err());
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.child.is_some() || self.closed {
            return Err(Error::AlreadyStarted);
        }
        self.daemon = daemon;
        Ok(())
    }

    /// The name (`name`): `Process-N` by default, N counting the processes made here; in a
    /// child, `Process-3:1` and so on.
    ///
    /// ```
    /// let p = multiprocess::Process::new(|| (), ());
    /// assert!(p.name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is a daemon (`daemon`).
    ///
    /// ```
    /// let p = multiprocess::Process::new(|| (), ());
    /// assert!(!p.is_daemon()); // inherited from the main process, which is not a daemon
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The start method it will use or used.
    ///
    /// ```
    /// use multiprocess::{Process, StartMethod};
    /// assert_eq!(Process::from_closure(|| ()).start_method(), StartMethod::Fork);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method.unwrap_or_else(context::get_start_method)
    }

    /// Starts the child (`start()`). Errors: [`Error::AlreadyStarted`] the second time,
    /// [`Error::ProcessClosed`] after [`close`](Process::close), [`Error::DaemonicChildren`]
    /// in a daemon.
    ///
    /// ```
    /// use multiprocess::{Error, Process};
    /// let mut p = Process::new(|| (), ());
    /// p.start()?;
    /// assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::ProcessClosed);
        }
        if self.child.is_some() || self.launch.is_none() {
            return Err(Error::AlreadyStarted);
        }
        if with_me(|m| m.daemon) {
            return Err(Error::DaemonicChildren);
        }
        reap_finished();
        // Keep the child-role constructor linked into every binary that starts processes.
        std::hint::black_box(&crate::bootstrap::ON_LOAD);
        let method = self.start_method();
        let spec = ChildSpec { name: self.name.clone(), identity: self.identity.clone(), daemon: self.daemon, method };
        let child = match method {
            StartMethod::Fork => popen::fork::start(&spec, &mut self.launch)?,
            StartMethod::Spawn | StartMethod::ForkServer => {
                let launch = self.launch.as_ref().ok_or(Error::AlreadyStarted)?;
                let payload = launch.encode()?;
                if method == StartMethod::Spawn {
                    popen::spawn::start(&spec, payload)?
                } else {
                    popen::forkserver::start(&spec, payload)?
                }
            }
        };
        self.method = Some(method);
        // The child has its own copy of the arguments now: ours close, as CPython's `start()`
        // drops its target and args, so a pipe end given to the child is not held open here.
        self.launch = None;
        let child = Arc::new(child);
        register(child.clone());
        self.child = Some(child);
        Ok(())
    }

    fn started(&self) -> Result<&Arc<Child>> {
        if self.closed {
            return Err(Error::ProcessClosed);
        }
        self.child.as_ref().ok_or(Error::NotStarted)
    }

    /// Waits for the child to end (`join()`).
    ///
    /// ```
    /// let mut p = multiprocess::Process::new(|| (), ());
    /// assert!(p.join().is_err()); // not started
    /// p.start()?;
    /// p.join()?;
    /// p.join()?; // joining again is fine
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join(&mut self) -> Result<()> {
        self.join_deadline(Deadline::NEVER)
    }

    /// Waits up to `timeout` for the child to end (`join(timeout)`); check
    /// [`exitcode`](Process::exitcode) to see whether it did.
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap() { std::thread::sleep(Duration::from_secs(5)) }
    /// let mut p = multiprocess::Process::new(nap, ());
    /// p.start()?;
    /// p.join_timeout(Duration::from_millis(50))?;
    /// assert_eq!(p.exitcode(), None);
    /// p.kill()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-9));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.join_deadline(Deadline::after(Some(timeout)))
    }

    fn join_deadline(&mut self, deadline: Deadline) -> Result<()> {
        let child = self.started()?.clone();
        if child.wait(deadline)?.is_some() {
            unregister(&child);
        }
        Ok(())
    }

    /// The exit code (`exitcode`): `None` before start and while running; 0, N from [`exit`],
    /// 1 after a panic or an `Err`, `-N` when killed by signal N.
    ///
    /// ```
    /// fn fail() -> Result<(), String> { Err("no".into()) }
    /// let mut p = multiprocess::Process::new(fail, ());
    /// assert_eq!(p.exitcode(), None);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(1));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        let child = self.child.as_ref()?;
        child.poll().ok().flatten()
    }

    /// Whether the child has started and not yet ended (`is_alive()`); reaps it if it has.
    ///
    /// ```
    /// let mut p = multiprocess::Process::new(|| (), ());
    /// assert!(!p.is_alive());
    /// p.start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        match self.child.as_ref() {
            Some(child) if !self.closed => match child.poll() {
                Ok(None) => true,
                _ => {
                    unregister(child);
                    false
                }
            },
            _ => false,
        }
    }

    /// The child's pid (`pid`), once started.
    ///
    /// ```
    /// let mut p = multiprocess::Process::new(|| (), ());
    /// assert_eq!(p.pid(), None);
    /// p.start()?;
    /// assert!(p.pid().is_some());
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid as u32)
    }

    /// A descriptor that becomes readable when the child ends (`sentinel`), for
    /// [`connection::wait`](crate::connection::wait) or any poll loop.
    ///
    /// ```
    /// use multiprocess::{Process, connection::wait};
    /// use std::time::Duration;
    /// let mut p = Process::new(|| (), ());
    /// assert!(p.sentinel().is_err());
    /// p.start()?;
    /// let ready = wait(&[&p.sentinel()?], Some(Duration::from_secs(10)))?;
    /// assert_eq!(ready, vec![0]);
    /// p.join()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.started()?.pidfd.as_fd())
    }

    /// Sends SIGTERM (`terminate()`); exit code `-15` unless the child handles it.
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(10)) }
    /// let mut p = multiprocess::Process::new(nap, ());
    /// p.start()?;
    /// p.terminate()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-15));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        Ok(self.started()?.signal(libc::SIGTERM)?)
    }

    /// Sends SIGKILL (`kill()`); exit code `-9`.
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(10)) }
    /// let mut p = multiprocess::Process::new(nap, ());
    /// p.start()?;
    /// p.kill()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-9));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        Ok(self.started()?.signal(libc::SIGKILL)?)
    }

    /// Sends SIGINT (`interrupt()`, Python 3.14); exit code `-2` unless the child handles it.
    ///
    /// A child whose parent ignores SIGINT ignores it too (the disposition is inherited, also
    /// through the fork server, as in CPython): under `nohup`, or started from a `&` job of a
    /// shell script without job control, `interrupt()` then does nothing, and the child runs
    /// on to its end (exit code 0). [`terminate`](Process::terminate) or
    /// [`kill`](Process::kill) stop it there.
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(10)) }
    /// let mut p = multiprocess::Process::new(nap, ());
    /// p.start()?;
    /// p.interrupt()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-2));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn interrupt(&self) -> Result<()> {
        Ok(self.started()?.signal(libc::SIGINT)?)
    }

    /// Releases the child's resources (`close()`). An error while it runs
    /// ([`Error::StillRunning`]); afterwards `join`, `terminate` and the like give
    /// [`Error::ProcessClosed`]. Closing twice is fine.
    ///
    /// ```
    /// use multiprocess::{Error, Process};
    /// let mut p = Process::new(|| (), ());
    /// p.start()?;
    /// p.join()?;
    /// p.close()?;
    /// p.close()?;
    /// assert!(matches!(p.join(), Err(Error::ProcessClosed)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) -> Result<()> {
        if let Some(child) = &self.child {
            if !self.closed && child.poll()?.is_none() {
                return Err(Error::StillRunning);
            }
            unregister(child);
        }
        self.launch = None;
        self.closed = true;
        Ok(())
    }
}

fn default_name(identity: &[u32]) -> String {
    let parts: Vec<String> = identity.iter().map(u32::to_string).collect();
    format!("Process-{}", parts.join(":"))
}

impl fmt::Debug for Process {
    /// CPython's repr: `<Process name='Process-1' pid=N parent=P started>`, then `stopped
    /// exitcode=-SIGTERM` and the like.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Process name='{}'", self.name)?;
        if let Some(c) = &self.child {
            write!(f, " pid={}", c.pid)?;
        }
        write!(f, " parent={}", proc::getpid())?;
        let exitcode = self.exitcode();
        let status = match (&self.child, exitcode) {
            _ if self.closed => "closed",
            (None, _) => "initial",
            (Some(_), None) => "started",
            (Some(_), Some(_)) => "stopped",
        };
        write!(f, " {status}")?;
        if let Some(code) = exitcode {
            match signal_name(-code) {
                Some(name) if code < 0 => write!(f, " exitcode=-{name}")?,
                _ => write!(f, " exitcode={code}")?,
            }
        }
        if self.daemon {
            write!(f, " daemon")?;
        }
        write!(f, ">")
    }
}

/// The name of a signal number, as CPython's `_exitcode_to_name` gives it.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// os-level functions.

/// What [`fork`] returns.
///
/// ```
/// use multiprocess::{Fork, fork};
/// if let Fork::Parent { mut child } = unsafe { fork() }? {
///     child.join()?;
/// } else {
///     multiprocess::exit(0);
/// }
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Debug)]
pub enum Fork {
    /// In the parent: the child, as a started [`Process`].
    Parent {
        /// The new child.
        child: Process,
    },
    /// In the child.
    Child,
}

/// Forks this process (Python's `os.fork()`): both continue from here.
///
/// The parent gets the child as a started [`Process`] to join, signal or poll; the child
/// continues with this process's code and should end with [`exit`].
///
/// # Safety
/// The child has only the calling thread. A lock that another thread held at the fork stays
/// locked in the child forever; the child must not need one (allocation is safe with glibc,
/// printing is not if another thread was printing). In a single-threaded program this holds.
///
/// ```
/// use multiprocess::{Fork, fork};
/// match unsafe { fork() }? {
///     Fork::Child => multiprocess::exit(7),
///     Fork::Parent { mut child } => {
///         child.join()?;
///         assert_eq!(child.exitcode(), Some(7));
///     }
/// }
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: the caller upholds the contract above.
    let pid = unsafe { fork_locked(|| become_fork_child(None))? };
    if pid == 0 {
        with_me(|m| m.is_child = true);
        return Ok(Fork::Child);
    }
    let pidfd = Pidfd::open(pid)?;
    let mut child = Process::with_launch(Box::new(ClosureLaunch(Some(|| ()))), Some(StartMethod::Fork));
    child.launch = None;
    let spec = ChildSpec {
        name: child.name.clone(),
        identity: child.identity.clone(),
        daemon: false,
        method: StartMethod::Fork,
    };
    let record = Arc::new(Child::new(pid, &spec, pidfd, None));
    register(record.clone());
    child.child = Some(record);
    Ok(Fork::Parent { child })
}

/// This process's id (Python's `os.getpid()`).
///
/// ```
/// assert_eq!(multiprocess::getpid(), std::process::id());
/// ```
pub fn getpid() -> u32 {
    proc::getpid() as u32
}

/// The parent's id (Python's `os.getppid()`).
///
/// ```
/// assert!(multiprocess::getppid() > 0);
/// ```
pub fn getppid() -> u32 {
    proc::getppid() as u32
}

/// The number of CPUs in the system (Python's `multiprocessing.cpu_count()`).
///
/// ```
/// assert!(multiprocess::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    proc::cpus_online()
}

/// The number of CPUs this process may use, honouring its affinity mask (Python 3.13's
/// `os.process_cpu_count()`).
///
/// ```
/// assert!(multiprocess::process_cpu_count() <= multiprocess::cpu_count());
/// ```
pub fn process_cpu_count() -> usize {
    proc::cpus_allowed()
}
