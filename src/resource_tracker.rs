//! The resource tracker (Python's `multiprocessing.resource_tracker`): a small process that
//! unlinks the named shared-memory segments a process created and left behind, once that
//! process has ended, however it ended (returning from `main`, `exit`, a panic, `SIGKILL`).
//!
//! Each process that creates a tracked segment gets a tracker of its own, started on first
//! use: this binary run again in the `tracker` role. That first process forks the tracker and
//! exits at once, and the creator reaps it, so the tracker is nobody's child (no zombie, no
//! stray child) and leads a session of its own (a signal to the creator's process group or
//! terminal does not reach it; it also ignores `SIGINT`, `SIGTERM` and `SIGHUP`, as CPython's
//! does, so that it outlives the processes it watches). The creator keeps one end of a
//! sequenced-packet socket pair and the tracker reads the other. When the creator ends, the
//! kernel closes its end; the tracker reads end of file, unlinks every segment still
//! registered, and exits.
//!
//! # Protocol
//!
//! The tracker first sends its pid (4 bytes, little-endian): the creator waits for it, so a
//! tracker that cannot start is an error at once, not a leak later. Then the creator sends
//! one packet per message and is never answered:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `b'R'` register, `b'U'` unregister |
//! | 1..9 | the segment's device number (u64, little-endian) |
//! | 9..17 | its inode number (u64, little-endian) |
//! | 17.. | its name without the leading `/` (1 to 255 bytes) |
//!
//! A segment is known by (name, device, inode) and at the end unlinked only if its name still
//! names that very file: a segment that someone else unlinked and made again under the same
//! name is theirs, and is left alone. Only creators register: a process that merely attaches
//! never causes an unlink (CPython's tracker registers attachers too, unlinks what they attached
//! to when they exit, and warns about "leaked" segments that were not leaked; this one prints
//! nothing).
//!
//! A fork child does not share its parent's tracker: an `atfork` handler closes the inherited
//! socket in the child, so that the parent's tracker still sees the parent go, and the child
//! starts a tracker of its own if it creates a segment. If a tracker dies (killed by hand),
//! the next message finds the socket broken: a new tracker is started and told everything
//! still registered.

use crate::popen::spawn::exec_self;
use crate::sys::pidfd::Pidfd;
use crate::sys::{Deadline, fd, futex, proc, shm};
use crate::{Error, Result};
use std::cell::UnsafeCell;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

/// The role name `bootstrap` knows the tracker by.
pub(crate) const ROLE: &str = "tracker";

const REGISTER: u8 = b'R';
const UNREGISTER: u8 = b'U';
/// A segment name's longest form: a file name in `/dev/shm`.
pub(crate) const NAME_MAX: usize = 255;
const HEADER: usize = 17;
const MAX_MESSAGE: usize = HEADER + NAME_MAX;
/// How long a tracker may take to start (an exec of this binary on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One registered segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    name: Vec<u8>,
    dev: u64,
    ino: u64,
}

impl Entry {
    fn encode(&self, op: u8) -> Vec<u8> {
        let mut msg = Vec::with_capacity(HEADER + self.name.len());
        msg.push(op);
        msg.extend_from_slice(&self.dev.to_le_bytes());
        msg.extend_from_slice(&self.ino.to_le_bytes());
        msg.extend_from_slice(&self.name);
        msg
    }

    fn decode(msg: &[u8]) -> Option<(u8, Entry)> {
        let (head, name) = msg.split_at_checked(HEADER)?;
        if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) || name.contains(&b'/') {
            return None;
        }
        let dev = u64::from_le_bytes(head[1..9].try_into().ok()?);
        let ino = u64::from_le_bytes(head[9..17].try_into().ok()?);
        Some((head[0], Entry { name: name.to_vec(), dev, ino }))
    }
}

// ---------------------------------------------------------------------------------------------
// The creator's side.

/// Registers the segment `name` (no leading `/`) whose file is `id` (device, inode) with this
/// process's tracker, starting the tracker if there is none yet: from now on, if this process
/// ends before [`unregister`], the tracker unlinks it.
pub(crate) fn register(name: &str, id: (u64, u64)) -> Result<()> {
    let entry = Entry { name: name.as_bytes().to_vec(), dev: id.0, ino: id.1 };
    let mut client = CLIENT.lock();
    client.adopt();
    client.registered.insert(entry.clone());
    if let Err(e) = client.deliver(&entry.encode(REGISTER), true) {
        client.registered.remove(&entry);
        return Err(e);
    }
    Ok(())
}

/// Tells the tracker that `name` (the file `id`) was unlinked: nothing is left to clean up.
/// Does nothing unless this process registered it.
pub(crate) fn unregister(name: &str, id: (u64, u64)) {
    let entry = Entry { name: name.as_bytes().to_vec(), dev: id.0, ino: id.1 };
    let mut client = CLIENT.lock();
    client.adopt();
    if client.registered.remove(&entry) {
        // A tracker that died forgot everything anyway: a new one, told what is left, is
        // only worth starting if something is.
        let restart = !client.registered.is_empty();
        let _ = client.deliver(&entry.encode(UNREGISTER), restart);
    }
}

/// This process's tracker socket, kept open for the life of the process: not a leak.
pub(crate) fn client_fd() -> Option<i32> {
    let fd = SOCKET_FD.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

/// The pid of this process's tracker, if it has started one.
pub(crate) fn tracker_pid() -> Option<u32> {
    let mut client = CLIENT.lock();
    client.adopt();
    client.socket.as_ref().map(|_| client.tracker_pid as u32)
}

/// What this process knows of its tracker.
struct Client {
    /// The process this state belongs to: a fork child finds its parent's here.
    owner: i32,
    socket: Option<OwnedFd>,
    tracker_pid: i32,
    registered: BTreeSet<Entry>,
}

static CLIENT: ForkSafeLock<Client> =
    ForkSafeLock::new(Client { owner: 0, socket: None, tracker_pid: 0, registered: BTreeSet::new() });

/// The socket's number, readable without the lock: the `atfork` handler closes it in a fork
/// child, and the leak checks of the tests list it.
static SOCKET_FD: AtomicI32 = AtomicI32::new(-1);

impl Client {
    /// Makes the state this process's: in a fork child, the parent's socket was closed by the
    /// `atfork` handler (forget it, do not close its number twice) and the parent's
    /// registrations are the parent's tracker's business.
    fn adopt(&mut self) {
        let me = proc::cached_pid();
        if self.owner != me {
            std::mem::forget(self.socket.take());
            self.registered.clear();
            self.tracker_pid = 0;
            self.owner = me;
        }
    }

    /// Sends `msg` to the tracker; if there is none, or it died, and `restart`, starts one
    /// and tells it everything registered (which `msg` has already been applied to).
    fn deliver(&mut self, msg: &[u8], restart: bool) -> Result<()> {
        if let Some(socket) = &self.socket {
            match fd::send_all(socket.as_fd(), &[msg]) {
                Ok(()) => return Ok(()),
                Err(e) if is_broken(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !restart {
            return Ok(());
        }
        install_atfork_handler();
        let (socket, pid) = start()?;
        for entry in &self.registered {
            fd::send_all(socket.as_fd(), &[&entry.encode(REGISTER)])?;
        }
        // Published before the old one closes, so that a fork in between finds an open
        // socket of ours under the number it closes.
        SOCKET_FD.store(socket.as_raw_fd(), Ordering::Relaxed);
        self.socket = Some(socket);
        self.tracker_pid = pid;
        Ok(())
    }
}

fn is_broken(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::EBADF))
}

/// Starts a tracker: its socket and its pid.
fn start() -> Result<(OwnedFd, i32)> {
    let (ours, theirs) = fd::seqpacket_pair()?;
    let (_, first) = exec_self(ROLE, theirs, None)?;
    let hello = read_hello(&ours);
    reap(&first);
    Ok((ours, hello?))
}

fn read_hello(socket: &OwnedFd) -> Result<i32> {
    let not_started = || Error::Io(io::Error::other("the resource tracker did not start"));
    if !fd::poll_readable(&[socket.as_fd()], Deadline::after(Some(START_TIMEOUT)))?[0] {
        return Err(not_started());
    }
    let mut pid = [0u8; 4];
    if fd::read_some(socket.as_fd(), &mut pid)? != pid.len() {
        return Err(not_started());
    }
    Ok(i32::from_le_bytes(pid))
}

/// Reaps the tracker's first process, which exits as soon as it has forked the tracker (or,
/// stuck, is killed).
fn reap(first: &Pidfd) {
    if !first.wait_exited(Deadline::after(Some(START_TIMEOUT))).unwrap_or(false) {
        let _ = first.send_signal(libc::SIGKILL);
        let _ = first.wait_exited(Deadline::NEVER);
    }
    let _ = first.try_reap();
}

fn install_atfork_handler() {
    // Not a `Once`: a fork child would inherit one that another thread was running as
    // running for ever, and wait on it for ever.
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !DONE.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a plain extern "C" function with no arguments for the child side.
        unsafe { libc::pthread_atfork(None, None, Some(close_in_fork_child)) };
    }
}

/// Runs in every fork child: closes the child's copy of the parent's tracker socket, so that
/// the parent's tracker sees end of file when the parent ends, whatever the child does.
extern "C" fn close_in_fork_child() {
    let fd = SOCKET_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: in the child this number is the inherited copy of the socket the client
        // state owns; `adopt` forgets that state without closing it, so it is closed once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// A process-local lock a fork child never finds stuck: its word holds the holding process's
/// pid, so a word holding another pid was left by a thread of the parent that was in the
/// middle of a critical section when the process forked. The child takes the lock over and
/// starts from fresh data, without reading (or dropping) what that thread left half-done.
struct ForkSafeLock<T> {
    word: AtomicU32,
    data: UnsafeCell<T>,
    fresh: fn() -> T,
}

// SAFETY: the data is only reached through a guard, and the word admits one guard at a time.
unsafe impl<T: Send> Sync for ForkSafeLock<T> {}

impl ForkSafeLock<Client> {
    const fn new(value: Client) -> ForkSafeLock<Client> {
        ForkSafeLock {
            word: AtomicU32::new(0),
            data: UnsafeCell::new(value),
            fresh: || Client { owner: 0, socket: None, tracker_pid: 0, registered: BTreeSet::new() },
        }
    }
}

impl<T> ForkSafeLock<T> {
    fn lock(&self) -> Guard<'_, T> {
        let me = proc::cached_pid() as u32;
        loop {
            let held = self.word.load(Ordering::Relaxed);
            if held == me {
                // Another thread of ours holds it, for a message or a tracker start.
                futex::wait(&self.word, me, Deadline::after(Some(Duration::from_millis(50))));
                continue;
            }
            if self.word.compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                if held != 0 {
                    // SAFETY: we hold the lock now, and the thread that held it does not exist
                    // in this process; the old value is overwritten, never read or dropped.
                    unsafe { self.data.get().write((self.fresh)()) };
                }
                return Guard { lock: self };
            }
        }
    }
}

struct Guard<'a, T> {
    lock: &'a ForkSafeLock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the only way to the data while it lives.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.word.store(0, Ordering::Release);
        futex::wake(&self.lock.word, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// The tracker.

/// The tracker's life: detach, say hello, record registrations until end of file, then unlink
/// what is left. Runs in a fresh, single-threaded process; never returns.
pub(crate) fn serve(channel: OwnedFd) -> ! {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        proc::ignore_signal(signal);
    }
    // SAFETY: this process has one thread (it runs before `main`), so the child inherits no
    // lock held elsewhere.
    match unsafe { proc::fork() } {
        Ok(0) => {}
        Ok(_) => proc::exit_now(0),
        Err(_) => proc::exit_now(1),
    }
    let _ = proc::new_session();
    // The tracker prints nothing and reads nothing, and must not keep the creator's terminal
    // or output pipes open after the creator is gone (a test runner waits for those to close).
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for stdio in 0..=2 {
            let _ = proc::dup2(null.as_raw_fd(), stdio);
        }
        if null.as_raw_fd() <= 2 {
            // It is one of the three now.
            std::mem::forget(null);
        }
    }
    if fd::send_all(channel.as_fd(), &[&proc::getpid().to_le_bytes()]).is_err() {
        proc::exit_now(0);
    }
    let mut live = BTreeSet::new();
    let mut buf = [0u8; MAX_MESSAGE + 1];
    loop {
        match fd::read_some(channel.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => match Entry::decode(&buf[..n]) {
                Some((REGISTER, entry)) => {
                    live.insert(entry);
                }
                Some((UNREGISTER, entry)) => {
                    live.remove(&entry);
                }
                _ => {} // not ours to understand: the sender is broken, not us
            },
        }
    }
    for entry in &live {
        unlink_if_same(entry);
    }
    proc::exit_now(0)
}

/// Unlinks the entry's name if it still names the file that was registered.
fn unlink_if_same(entry: &Entry) {
    let mut path = Vec::with_capacity(entry.name.len() + 1);
    path.push(b'/');
    path.extend_from_slice(&entry.name);
    let Ok(path) = CString::new(path) else { return };
    let Ok(fd) = shm::shm_open(&path, false) else { return };
    if shm::file_id(fd.as_fd()).is_ok_and(|id| id == (entry.dev, entry.ino)) {
        let _ = shm::shm_unlink(&path);
    }
}
