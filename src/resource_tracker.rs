//! The resource tracker (Python's `multiprocessing.resource_tracker`): a small process that
//! unlinks the named shared-memory segments a process created and left behind, once that
//! process has ended, however it ended (returning from `main`, `exit`, a panic, `SIGKILL`).
//!
//! One tracker serves a whole process tree, as CPython's does under spawn and forkserver. A
//! process starts it (this binary run again in the `tracker` role) when it first starts a
//! child, under any start method, or first creates a tracked segment, whichever comes first,
//! and passes it down: a fork child keeps the inherited socket, a spawn or forkserver child is
//! sent it with its boot message. So a pool's workers, however many come and go, share their
//! owner's tracker, and a child that creates a segment starts no process.
//!
//! The tracker is a direct child of the process that started it, which reaps it if it dies
//! (killed by hand) and it replaces it; otherwise it lives as long as the tree and ends after
//! its starter, so it is never a zombie while the program runs, even under a PID 1 that never
//! reaps (CPython's and our old per-process trackers were orphans, each a zombie of PID 1
//! once it ended). It leads a session of its own (a signal to the program's process group or
//! terminal does not reach it) and ignores `SIGINT`, `SIGTERM` and `SIGHUP`, as CPython's
//! does, so that it outlives the processes it watches.
//!
//! Every holder of the socket's client end writes to it; the tracker reads the other end.
//! Each message names its sender (pid and [process tag](crate::sys::pidfd::own_tag)), and the
//! tracker keeps each sender's segments apart and watches each sender that has any through a
//! pidfd: when that process ends, its segments are unlinked at once, whatever the rest of the
//! tree does (a segment a child creates goes when that child ends, as before; CPython keeps it
//! until the whole program ends). When the last holder is gone the tracker reads end of file,
//! unlinks whatever is left, and exits.
//!
//! # Protocol
//!
//! The tracker first sends its pid (4 bytes, little-endian): a process that starts one in
//! order to register waits for it, so a tracker that cannot start is an error at once, not a
//! leak later (one started for a child is not waited for). Then the clients send one packet
//! per message and are never answered:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `b'R'` register, `b'U'` unregister |
//! | 1..5 | the sender's pid (i32, little-endian) |
//! | 5..9 | the sender's process tag (u32, little-endian; 0 if unknown) |
//! | 9..17 | the segment's device number (u64, little-endian) |
//! | 17..25 | its inode number (u64, little-endian) |
//! | 25.. | its name without the leading `/` (1 to 255 bytes) |
//!
//! Unlinked segments are told 64 at a time (a message wakes the tracker, which cost more than
//! the unlink itself), in one `b'M'` message: the same first 9 bytes, then for each segment
//! its device and inode numbers (u64, little-endian), its name's length (one byte) and its
//! name. Until then the tracker still holds them, which is harmless: see below.
//!
//! A message is untrusted bytes: one that does not parse, or names no possible process, is
//! dropped. A segment is known by (name, device, inode) and at the end unlinked only if its
//! name still names that very file: a segment that someone else unlinked and made again under
//! the same name is theirs, and is left alone. Only creators register: a process that merely
//! attaches never causes an unlink (CPython's tracker registers attachers too, unlinks what
//! they attached to when they exit, and warns about "leaked" segments that were not leaked;
//! this one prints nothing).
//!
//! If the tracker dies (killed by hand), the next message a process sends finds the socket
//! broken: that process starts a new tracker, tells it everything it has registered, and
//! passes the new one to the children it starts from then on.

use crate::popen::spawn::exec_self;
use crate::sys::pidfd::{self, Pidfd};
use crate::sys::{Deadline, fd, futex, proc, shm};
use crate::{Error, Result};
use std::cell::UnsafeCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The role name `bootstrap` knows the tracker by.
pub(crate) const ROLE: &str = "tracker";

const REGISTER: u8 = b'R';
const UNREGISTER: u8 = b'U';
/// Several unregisters in one message (see [`unregister`]): after the sender, each entry as
/// its device, inode, name length (one byte) and name.
const UNREGISTER_MANY: u8 = b'M';
/// A segment name's longest form: a file name in `/dev/shm`.
pub(crate) const NAME_MAX: usize = 255;
const HEADER: usize = 25;
/// Where the entries of an `UNREGISTER_MANY` begin.
const MANY_HEADER: usize = 9;
/// The longest `UNREGISTER_MANY`.
const MAX_MANY: usize = MANY_HEADER + UNSENT_MAX * (17 + NAME_MAX);
/// How long a tracker may take to start (an exec of this binary on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the tracker looks at senders it could not open a pidfd for (out of descriptors).
const UNWATCHED_POLL: Duration = Duration::from_secs(1);
/// The most messages the tracker reads in a row before it looks at ended senders again.
const DRAIN_MAX: usize = 1024;

/// One registered segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    name: Vec<u8>,
    dev: u64,
    ino: u64,
}

/// The process a message came from: its pid and tag (0: unknown).
type Sender = (i32, u32);

impl Entry {
    fn encode(&self, op: u8, sender: Sender) -> Vec<u8> {
        let mut msg = Vec::with_capacity(HEADER + self.name.len());
        push_head(&mut msg, op, sender);
        msg.extend_from_slice(&self.dev.to_le_bytes());
        msg.extend_from_slice(&self.ino.to_le_bytes());
        msg.extend_from_slice(&self.name);
        msg
    }

    /// An `UNREGISTER_MANY` of `entries` (at most [`UNSENT_MAX`], names of at most
    /// [`NAME_MAX`] bytes, as every registered entry's).
    fn encode_many(entries: &[Entry], sender: Sender) -> Vec<u8> {
        let mut msg = Vec::with_capacity(MANY_HEADER + entries.iter().map(|e| 17 + e.name.len()).sum::<usize>());
        push_head(&mut msg, UNREGISTER_MANY, sender);
        for entry in entries {
            msg.extend_from_slice(&entry.dev.to_le_bytes());
            msg.extend_from_slice(&entry.ino.to_le_bytes());
            msg.push(entry.name.len() as u8);
            msg.extend_from_slice(&entry.name);
        }
        msg
    }

    /// The sender and entries of an `UNREGISTER_MANY`; `None` if it is not one, or is
    /// malformed anywhere (a sender's bytes are not trusted).
    fn decode_many(msg: &[u8]) -> Option<(Sender, Vec<Entry>)> {
        let (head, mut rest) = msg.split_at_checked(MANY_HEADER)?;
        if head[0] != UNREGISTER_MANY {
            return None;
        }
        let sender = read_sender(head)?;
        let mut entries = Vec::new();
        while !rest.is_empty() {
            let (fixed, after) = rest.split_at_checked(17)?;
            let dev = u64::from_le_bytes(fixed[0..8].try_into().ok()?);
            let ino = u64::from_le_bytes(fixed[8..16].try_into().ok()?);
            let (name, after) = after.split_at_checked(usize::from(fixed[16]))?;
            if !valid_name(name) {
                return None;
            }
            entries.push(Entry { name: name.to_vec(), dev, ino });
            rest = after;
        }
        Some((sender, entries))
    }

    fn decode(msg: &[u8]) -> Option<(u8, Sender, Entry)> {
        let (head, name) = msg.split_at_checked(HEADER)?;
        if !valid_name(name) {
            return None;
        }
        let op = head[0];
        if op != REGISTER && op != UNREGISTER {
            return None;
        }
        let sender = read_sender(head)?;
        let dev = u64::from_le_bytes(head[9..17].try_into().ok()?);
        let ino = u64::from_le_bytes(head[17..25].try_into().ok()?);
        Some((op, sender, Entry { name: name.to_vec(), dev, ino }))
    }
}

/// Starts a message: its kind, then the sender's pid and tag (bytes 0 to 9 of every kind).
fn push_head(msg: &mut Vec<u8>, op: u8, sender: Sender) {
    msg.push(op);
    msg.extend_from_slice(&sender.0.to_le_bytes());
    msg.extend_from_slice(&sender.1.to_le_bytes());
}

/// The sender a message's first 9 bytes name; `None` for no possible process.
fn read_sender(head: &[u8]) -> Option<Sender> {
    let pid = i32::from_le_bytes(head.get(1..5)?.try_into().ok()?);
    let tag = u32::from_le_bytes(head.get(5..9)?.try_into().ok()?);
    (pid > 0).then_some((pid, tag))
}

/// Whether `name` can be a segment's name in `/dev/shm` (without its leading `/`).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= NAME_MAX && !name.contains(&0) && !name.contains(&b'/')
}

/// This process, as it names itself to the tracker.
fn me() -> Sender {
    (proc::cached_pid(), pidfd::own_tag())
}

// ---------------------------------------------------------------------------------------------
// The clients' side.

/// Registers the segment `name` (no leading `/`) whose file is `id` (device, inode) with the
/// tree's tracker, starting one if this process has none: from now on, if this process ends
/// before [`unregister`], the tracker unlinks it.
pub(crate) fn register(name: &str, id: (u64, u64)) -> Result<()> {
    let entry = Entry { name: name.as_bytes().to_vec(), dev: id.0, ino: id.1 };
    let mut client = CLIENT.lock();
    client.adopt();
    client.registered.insert(entry.clone());
    if let Err(e) = client.deliver(&entry.encode(REGISTER, me()), true) {
        client.registered.remove(&entry);
        return Err(e);
    }
    Ok(())
}

/// Notes that `name` (the file `id`) was unlinked: nothing is left to clean up. Does nothing
/// unless this process registered it.
///
/// The tracker is told later, of `UNSENT_MAX` at once: a message wakes it, and the
/// wake-up (the tracker's work on the CPU the unlinking process runs on, often) cost more
/// than the unlink itself. Nothing depends on its being told sooner: a tracker that cleans up
/// after this process meanwhile unlinks a name only while it still names the file
/// registered (see `unlink_if_same`), and this one's name is gone, or names another file.
pub(crate) fn unregister(name: &str, id: (u64, u64)) {
    let entry = Entry { name: name.as_bytes().to_vec(), dev: id.0, ino: id.1 };
    let mut client = CLIENT.lock();
    client.adopt();
    if !client.registered.remove(&entry) {
        return;
    }
    client.unsent.push(entry);
    if client.unsent.len() < UNSENT_MAX {
        return;
    }
    let unsent = std::mem::take(&mut client.unsent);
    // A tracker that died forgot everything anyway: a new one, told what is left, is only
    // worth starting if something is (and is not told of these).
    let restart = !client.registered.is_empty();
    let _ = client.deliver(&Entry::encode_many(&unsent, me()), restart);
}

/// Makes sure this process has a live tracker before it starts a child, which will share it
/// (a fork child inherits the socket). Starting one costs a fork and an exec, not waited for;
/// a tracker that cannot start is no reason not to start the child, which then starts its own
/// when it first creates a segment.
pub(crate) fn ensure_running() {
    let mut client = CLIENT.lock();
    client.adopt();
    let _ = client.ensure_live();
}

/// The tracker a spawn or forkserver child is to share: a copy of the socket and the tracker's
/// pid, starting a tracker if this process has none (see [`ensure_running`]).
pub(crate) fn handle_for_child() -> Option<(OwnedFd, u32)> {
    let mut client = CLIENT.lock();
    client.adopt();
    client.ensure_live().ok()?;
    let socket = client.socket.as_ref()?;
    Some((fd::dup(socket.as_fd()).ok()?, client.tracker_pid as u32))
}

/// Takes the tracker socket a spawn or forkserver child was sent with its boot message, before
/// its target runs. Anything but a sequenced-packet socket is dropped: the child then starts a
/// tracker of its own if it needs one.
pub(crate) fn adopt_inherited(socket: OwnedFd, tracker_pid: u32) {
    if !is_seqpacket(socket.as_fd()) || tracker_pid == 0 || tracker_pid > i32::MAX as u32 {
        return;
    }
    let mut client = CLIENT.lock();
    client.adopt();
    client.socket = Some(socket);
    client.tracker_pid = tracker_pid as i32;
    client.tracker = None;
}

/// The descriptors this process keeps for its tracker for the life of the process (the
/// socket, and the pidfd of a tracker it started): not leaks.
pub(crate) fn client_fd() -> Vec<i32> {
    let client = CLIENT.lock();
    let mut fds: Vec<i32> = client.socket.iter().map(|s| s.as_raw_fd()).collect();
    fds.extend(client.tracker.iter().map(|t| t.as_fd().as_raw_fd()));
    fds
}

/// The pid of the tracker this process uses, if it has one.
pub(crate) fn tracker_pid() -> Option<u32> {
    let mut client = CLIENT.lock();
    client.adopt();
    client.socket.as_ref().map(|_| client.tracker_pid as u32)
}

/// What this process knows of its tracker.
struct Client {
    /// The process this state belongs to: a fork child finds its parent's here.
    owner: i32,
    /// The client end of the tracker's socket, shared with the rest of the tree.
    socket: Option<OwnedFd>,
    tracker_pid: i32,
    /// The tracker's pidfd, in the process that started it (its parent), which reaps it.
    tracker: Option<Pidfd>,
    /// The segments this process registered.
    registered: BTreeSet<Entry>,
    /// Segments unlinked since the tracker was last told (see [`unregister`]).
    unsent: Vec<Entry>,
}

const fn fresh_client() -> Client {
    Client { owner: 0, socket: None, tracker_pid: 0, tracker: None, registered: BTreeSet::new(), unsent: Vec::new() }
}

/// Unlinked segments a process tells its tracker about at once (see [`unregister`]).
const UNSENT_MAX: usize = 64;

static CLIENT: ForkSafeLock<Client> = ForkSafeLock::new(fresh_client());

impl Client {
    /// Makes the state this process's: a fork child keeps the inherited socket (it shares the
    /// tracker) but not the parent's registrations, which the tracker keeps under the
    /// parent's name, nor the tracker's pidfd (the tracker is not its child to reap).
    fn adopt(&mut self) {
        let me = proc::cached_pid();
        if self.owner != me {
            // Forgotten, not freed: freeing would write to pages shared with the parent.
            std::mem::forget(std::mem::take(&mut self.registered));
            std::mem::forget(std::mem::take(&mut self.unsent));
            self.tracker = None;
            self.owner = me;
        }
    }

    /// Starts a tracker, without waiting for it, unless this process has one whose socket
    /// still has a reader.
    fn ensure_live(&mut self) -> Result<()> {
        if self.socket.as_ref().is_some_and(|s| !peer_gone(s.as_fd())) {
            return Ok(());
        }
        self.replace(false)
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
        self.replace(true)
    }

    /// Reaps the old tracker if it is ours, starts a new one and tells it what this process
    /// has registered.
    fn replace(&mut self, wait: bool) -> Result<()> {
        if let Some(old) = self.tracker.take() {
            // Its socket has no reader: it is dead or dying.
            if !old.wait_exited(Deadline::after(Some(Duration::from_secs(1)))).unwrap_or(false) {
                let _ = old.send_signal(libc::SIGKILL);
                let _ = old.wait_exited(Deadline::after(Some(START_TIMEOUT)));
            }
            let _ = old.try_reap();
        }
        let (socket, pid, pidfd) = start(wait)?;
        // The new tracker never knew the segments unlinked since the old one was last told.
        self.unsent.clear();
        let me = me();
        for entry in &self.registered {
            fd::send_all(socket.as_fd(), &[&entry.encode(REGISTER, me)])?;
        }
        self.socket = Some(socket);
        self.tracker_pid = pid;
        self.tracker = Some(pidfd);
        Ok(())
    }
}

fn is_broken(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::EBADF))
}

/// Whether the other end of the tracker socket is closed (the tracker is gone), without
/// waiting: a hang-up or error shows in `poll` even while the tracker's hello is unread.
fn peer_gone(socket: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: poll on one live pollfd, with no wait.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Whether `fd` is a sequenced-packet socket.
fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`, which lives for the call.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut len) };
    r == 0 && kind == libc::SOCK_SEQPACKET
}

/// Starts a tracker as our child: its socket, pid and pidfd. With `wait`, waits for its hello,
/// so that one that cannot start is an error now.
fn start(wait: bool) -> Result<(OwnedFd, i32, Pidfd)> {
    let (ours, theirs) = fd::seqpacket_pair()?;
    let (pid, pidfd) = exec_self(ROLE, theirs, None)?;
    if wait && let Err(e) = read_hello(&ours, pid) {
        let _ = pidfd.send_signal(libc::SIGKILL);
        let _ = pidfd.wait_exited(Deadline::after(Some(START_TIMEOUT)));
        let _ = pidfd.try_reap();
        return Err(e);
    }
    Ok((ours, pid, pidfd))
}

fn read_hello(socket: &OwnedFd, pid: i32) -> Result<()> {
    let not_started = || Error::Io(io::Error::other("the resource tracker did not start"));
    if !fd::poll_readable(&[socket.as_fd()], Deadline::after(Some(START_TIMEOUT)))?[0] {
        return Err(not_started());
    }
    let mut hello = [0u8; 4];
    if fd::try_recv(socket.as_fd(), &mut hello)? != hello.len() || i32::from_le_bytes(hello) != pid {
        return Err(not_started());
    }
    Ok(())
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
        ForkSafeLock { word: AtomicU32::new(0), data: UnsafeCell::new(value), fresh: fresh_client }
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

/// The segments of one sender, and its pidfd (`None` if none could be opened: then it is
/// looked at every [`UNWATCHED_POLL`]).
struct Holder {
    pidfd: Option<Pidfd>,
    entries: BTreeSet<Entry>,
}

/// What the tracker knows: each live sender's segments.
#[derive(Default)]
struct Registry {
    holders: BTreeMap<Sender, Holder>,
}

impl Registry {
    fn apply(&mut self, op: u8, sender: Sender, entry: Entry) {
        if op == UNREGISTER {
            if let Some(holder) = self.holders.get_mut(&sender) {
                holder.entries.remove(&entry);
                if holder.entries.is_empty() {
                    self.holders.remove(&sender);
                }
            }
            return;
        }
        if let Some(holder) = self.holders.get_mut(&sender) {
            holder.entries.insert(entry);
            return;
        }
        // A new sender: watched from now on, unless it has already ended (then its segment
        // goes now). The pidfd is opened before the tag is checked, so that a pid recycled
        // in between shows as a tag that does not match, never as a stranger watched.
        let pidfd = match Pidfd::open(sender.0) {
            Ok(p) => Some(p),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => return unlink_if_same(&entry),
            // Out of descriptors, say: looked at by pid and tag instead.
            Err(_) => None,
        };
        let ended = pidfd.as_ref().is_some_and(|p| p.has_exited().unwrap_or(false))
            || pidfd::process_with_tag_gone(sender.0, sender.1);
        if ended {
            return unlink_if_same(&entry);
        }
        self.holders.insert(sender, Holder { pidfd, entries: BTreeSet::from([entry]) });
    }

    /// Unlinks the segments of `sender`, which has ended.
    fn ended(&mut self, sender: Sender) {
        if let Some(holder) = self.holders.remove(&sender) {
            for entry in &holder.entries {
                unlink_if_same(entry);
            }
        }
    }

    /// The senders whose ends `ready` (one flag per watched pidfd, in the order of
    /// [`watched`](Registry::watched)) shows, or that the unwatched look finds gone.
    fn ended_senders(&self, watched: &[Sender], ready: &[bool]) -> Vec<Sender> {
        let mut gone: Vec<Sender> = Vec::new();
        for (sender, _) in watched.iter().zip(ready).filter(|(_, r)| **r) {
            // Still the same holder (the drain may have replaced it): ask its pidfd again.
            if let Some(Holder { pidfd: Some(p), .. }) = self.holders.get(sender)
                && p.has_exited().unwrap_or(false)
            {
                gone.push(*sender);
            }
        }
        for (sender, holder) in &self.holders {
            if holder.pidfd.is_none() && pidfd::process_with_tag_gone(sender.0, sender.1) {
                gone.push(*sender);
            }
        }
        gone
    }

    fn watched(&self) -> Vec<Sender> {
        self.holders.iter().filter(|(_, h)| h.pidfd.is_some()).map(|(s, _)| *s).collect()
    }

    fn has_unwatched(&self) -> bool {
        self.holders.values().any(|h| h.pidfd.is_none())
    }
}

/// The tracker's life: detach, say hello, record registrations and unlink the segments of
/// each sender that ends, until end of file; then unlink what is left. Runs in a fresh,
/// single-threaded process; never returns.
pub(crate) fn serve(channel: OwnedFd) -> ! {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        proc::ignore_signal(signal);
    }
    let _ = proc::new_session();
    // The tracker prints nothing and reads nothing, and must not keep the program's terminal
    // or output pipes open after the program is gone (a test runner waits for those to close).
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
    let mut registry = Registry::default();
    let mut buf = vec![0u8; MAX_MANY + 1];
    loop {
        let watched = registry.watched();
        let ready = {
            let mut fds = vec![channel.as_fd()];
            fds.extend(watched.iter().filter_map(|s| registry.holders.get(s)?.pidfd.as_ref().map(|p| p.as_fd())));
            let deadline = Deadline::after(registry.has_unwatched().then_some(UNWATCHED_POLL));
            match fd::poll_readable(&fds, deadline) {
                Ok(ready) => ready,
                // More descriptors than `RLIMIT_NOFILE` (lowered from outside): wait for it
                // to be raised rather than stop watching.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(_) => break,
            }
        };
        // Every message a sender sent before it ended is read before its end is acted on.
        let mut eof = false;
        if ready[0] {
            for _ in 0..DRAIN_MAX {
                match fd::try_recv(channel.as_fd(), &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        // Not ours to understand: the sender is broken, not us.
                        if let Some((op, sender, entry)) = Entry::decode(&buf[..n]) {
                            registry.apply(op, sender, entry);
                        } else if let Some((sender, entries)) = Entry::decode_many(&buf[..n]) {
                            entries.into_iter().for_each(|entry| registry.apply(UNREGISTER, sender, entry));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        for sender in registry.ended_senders(&watched, &ready[1..]) {
            registry.ended(sender);
        }
        if eof {
            break;
        }
    }
    let senders: Vec<Sender> = registry.holders.keys().copied().collect();
    for sender in senders {
        registry.ended(sender);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ino: u64) -> Entry {
        Entry { name: name.as_bytes().to_vec(), dev: 7, ino }
    }

    #[test]
    fn unregisters_sent_together_arrive_whole_and_bad_bytes_are_refused() {
        let entries: Vec<Entry> =
            (0..UNSENT_MAX as u64).map(|i| entry(&format!("psm_{i}{}", "x".repeat(i as usize % 50 * 5)), i)).collect();
        let longest = entry(&"n".repeat(NAME_MAX), u64::MAX);
        let mut all = entries.clone();
        all[3] = longest;
        let msg = Entry::encode_many(&all, (42, 9));
        assert!(msg.len() <= MAX_MANY);
        assert!(Entry::decode_many(&msg) == Some(((42, 9), all.clone())), "the entries did not come back as sent");
        // Not a single-entry message either.
        assert!(Entry::decode(&msg).is_none());
        // Cut anywhere inside an entry, a wrong kind, a bad pid, a name with a slash: refused.
        for cut in [MANY_HEADER + 1, MANY_HEADER + 17, msg.len() - 1] {
            assert!(Entry::decode_many(&msg[..cut]).is_none(), "cut at {cut}");
        }
        let mut wrong = msg.clone();
        wrong[0] = UNREGISTER;
        assert!(Entry::decode_many(&wrong).is_none());
        let mut pid0 = msg.clone();
        pid0[1..5].copy_from_slice(&0i32.to_le_bytes());
        assert!(Entry::decode_many(&pid0).is_none());
        let slash = Entry::encode_many(&[entry("a/b", 1)], (42, 9));
        assert!(Entry::decode_many(&slash).is_none());
        let empty_name = Entry::encode_many(&[entry("", 1)], (42, 9));
        assert!(Entry::decode_many(&empty_name).is_none());
        // None at all: a valid, empty message.
        assert_eq!(Entry::decode_many(&Entry::encode_many(&[], (42, 9))), Some(((42, 9), Vec::new())));
    }
}
