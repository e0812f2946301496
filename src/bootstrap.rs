//! The child's side of starting: how a re-executed binary learns its role, reads what its
//! parent sent, finds its target, runs it and exits with CPython's exit-code rules.
//!
//! A spawn child or a fork server is this same binary started again with `ROLE_VAR` in its
//! environment. A load-time constructor (`.init_array`) takes the role before `main` runs, so
//! this works in `#[test]` functions, examples and doc tests with no line of user code;
//! [`init`](crate::init) does the same from `main` for platforms without constructors.

use crate::context::StartMethod;
use crate::popen::{self, Payload, forkserver};
use crate::process::{self, ChildSpec};
use crate::sys::{self, fd};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that gives a re-executed binary its role: `spawn:<fd>`,
/// `forkserver:<fd>` or `tracker:<fd>`, where `<fd>` is the socket to its parent.
pub(crate) const ROLE_VAR: &str = "__MULTIPROCESS_ROLE";
const ROLE_VAR_C: &CStr = c"__MULTIPROCESS_ROLE";

/// The largest boot message a child accepts: far above any real one, below a hostile length.
const MAX_BOOT_LEN: usize = 1 << 34;

#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    take_role();
}

/// If this process was started as a child or a fork server, becomes it and never returns.
pub(crate) fn take_role() {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: getenv returns null or a NUL-terminated string that lives until the
    // environment changes; we copy it before changing anything. This runs before main (or
    // first in main), while the process is single-threaded.
    let role = unsafe {
        let p = libc::getenv(ROLE_VAR_C.as_ptr());
        if p.is_null() {
            return;
        }
        let role = CStr::from_ptr(p).to_string_lossy().into_owned();
        libc::unsetenv(ROLE_VAR_C.as_ptr());
        role
    };
    let Some((kind, fd)) = role.split_once(':') else { return };
    let Ok(fd) = fd.parse::<RawFd>() else { return };
    if !fd::is_open(fd) {
        return;
    }
    // SAFETY: the parent put this descriptor here for us alone, and nothing else in this
    // fresh process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(fd) };
    match kind {
        "spawn" => child_main(channel, StartMethod::Spawn, None),
        "forkserver" => forkserver::serve(channel),
        crate::resource_tracker::ROLE => crate::resource_tracker::serve(channel),
        _ => {}
    }
}

/// What a parent tells a spawn or forkserver child, besides its arguments, which follow it
/// in the message as they are (`args_len` bytes): the child decodes them from there, in place.
#[derive(Serialize, Deserialize)]
struct Boot {
    /// The parent's executable (device, inode): code offsets only mean something in the same.
    exe: (u64, u64),
    entry: i64,
    spec: ChildSpec,
    parent_pid: i32,
    parent_name: String,
    authkey: Vec<u8>,
    /// The pid of the resource tracker the child is to share, whose socket then travels after
    /// the parent's pidfd (and the memfd); `None` if the parent has none to share.
    tracker: Option<u32>,
    args_len: u64,
}

// The boot message on the wire: a fixed header (the body's length, where the body is and
// whether the resource tracker's socket comes, how many handles the arguments have), sent
// with descriptors attached (`SCM_RIGHTS`): the parent's pidfd, then the memfd that holds the
// body if it is there, then the resource tracker's socket if the parent shares one, then the
// arguments' handles. A small body follows the header on the socket; a larger one is in a
// sealed memfd. Either way the parent writes at most `INLINE_MAX` bytes to a socket nobody
// has written to, which takes them whole at once: its `send` never waits for the child, so a
// child that does not read (stopped, say) cannot hold up `start()`.
//
// More handles than one message carries (`HANDLES_IN_MESSAGE_MAX`) travel packed: in the
// queue of a socket of their own (`fd::pack_fds`), filled before the child exists, when
// nobody reads it and a full one is an error, not a wait; that socket goes in their place.

/// The header's length: the body's length, where it is, and how many handles the arguments
/// have, each a little-endian `u64`.
const HEADER_LEN: usize = 24;
/// The body follows the header on the socket.
const INLINE: u64 = 0;
/// The body is in the memfd that comes after the parent's pidfd.
const IN_MEMFD: u64 = 1;
/// Added to the place word: the resource tracker's socket comes after the pidfd and the memfd.
const WITH_TRACKER: u64 = 2;
/// The most a boot message sends on the socket, header included. A Unix stream socket's
/// send buffer is at least `SOCK_MIN_SNDBUF` (4608 bytes, whatever the sysctls say), and the
/// first write to an empty one is taken whole up to half of it, less 64 bytes of overhead.
/// Above this, the body goes in a memfd: making one costs about 10 µs, a tenth of a fork
/// server start, so small messages, the usual ones, keep the socket.
const INLINE_MAX: usize = 2048;
/// The most handles that travel in the boot message itself, beside its own descriptors (the
/// parent's pidfd, the memfd, room for a few more); more are packed.
const HANDLES_IN_MESSAGE_MAX: usize = fd::MAX_FDS_PER_MESSAGE - 8;

/// A boot message ready to send, made before the child exists: what can fail without a
/// child (encoding, a memfd, too many handles) fails then.
pub(crate) struct BootMessage {
    /// The header, followed by the body when it travels inline.
    frame: Vec<u8>,
    memfd: Option<OwnedFd>,
    /// The arguments' handles, packed ([`fd::pack_fds`]) when there are too many for the
    /// message: it can be sent once only.
    packed: Option<OwnedFd>,
    /// A copy of the resource tracker's socket, for the child to share.
    tracker: Option<OwnedFd>,
}

impl BootMessage {
    /// The message that starts a child described by `spec` on `payload`, to be sent with the
    /// arguments' handles (`payload.args.fds`), and the resource tracker (socket, pid) the
    /// child is to share.
    pub(crate) fn new(spec: &ChildSpec, payload: &Payload, tracker: Option<(OwnedFd, u32)>) -> Result<BootMessage> {
        let (tracker, tracker_pid) = tracker.unzip();
        let args = &payload.args.bytes;
        let me = process::current_process();
        let boot = Boot {
            exe: sys::proc::exe_identity()?,
            entry: payload.entry,
            spec: spec.clone(),
            parent_pid: sys::proc::getpid(),
            parent_name: me.name().to_string(),
            authkey: process::authkey()?.to_vec(),
            tracker: tracker_pid,
            args_len: args.len() as u64,
        };
        let mut frame = postcard::to_extend(&boot, vec![0u8; HEADER_LEN])?;
        let len = frame.len() - HEADER_LEN + args.len();
        if len > MAX_BOOT_LEN {
            return Err(Error::BadMessageLength { len: len as u64, max: MAX_BOOT_LEN as u64 });
        }
        // Copies of the encoded arguments in the parent: one, beyond the encoding itself
        // (`reduction::encode`, which writes them once into their own vector, grown to the
        // right size in one step for a byte run). A large body is written once from that
        // vector into the memfd, which the child maps read-only: it copies nothing until it
        // decodes. (Before the memfd the body was copied into `frame` and then into the
        // socket: two. CPython pickles into a buffer and writes that to a pipe: one.)
        // Measured with `perf` on a 256 MiB argument: `encode` and this write, nothing else.
        let memfd = if HEADER_LEN + len > INLINE_MAX {
            let memfd = sys::shm::sealed_copy(c"multiprocess-boot", &[&frame[HEADER_LEN..], args])?;
            frame.truncate(HEADER_LEN);
            Some(memfd)
        } else {
            frame.extend_from_slice(args);
            None
        };
        let handles = &payload.args.fds;
        let packed = if handles.len() > HANDLES_IN_MESSAGE_MAX {
            // SAFETY: the descriptors are owned by the arguments being encoded, which outlive
            // this call; once packed, the kernel holds its own references to their files.
            let borrowed: Vec<_> = handles.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }).collect();
            Some(fd::pack_fds(&borrowed)?)
        } else {
            None
        };
        let place = if memfd.is_some() { IN_MEMFD } else { INLINE } | if tracker.is_some() { WITH_TRACKER } else { 0 };
        frame[..8].copy_from_slice(&(len as u64).to_le_bytes());
        frame[8..16].copy_from_slice(&place.to_le_bytes());
        frame[16..HEADER_LEN].copy_from_slice(&(handles.len() as u64).to_le_bytes());
        Ok(BootMessage { frame, memfd, packed, tracker })
    }

    /// Sends the message on `channel` (a fresh socket nothing else was sent on), with this
    /// process's pidfd, the tracker's socket and `fds`, the arguments' handles. Never waits for the reader: a full
    /// socket would be an error, but cannot be (see [`INLINE_MAX`]).
    pub(crate) fn send(&self, channel: BorrowedFd<'_>, fds: &[RawFd]) -> Result<()> {
        let me = process::self_pidfd()?;
        let mut handles = vec![me.as_fd()];
        handles.extend(self.memfd.as_ref().map(|m| m.as_fd()));
        handles.extend(self.tracker.as_ref().map(|t| t.as_fd()));
        match &self.packed {
            Some(packed) => handles.push(packed.as_fd()),
            // SAFETY: the descriptors are owned by the arguments being sent, which outlive this call.
            None => handles.extend(fds.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })),
        }
        fd::try_send_with_fds(channel, &self.frame, &handles).map_err(Error::from_write)
    }
}

/// A child's encoded arguments, in the boot message they came in: dropped once decoded, so
/// that the message's memory is given back before the target runs.
pub(crate) struct ArgBytes {
    body: Body,
    range: std::ops::Range<usize>,
}

impl ArgBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        // (The range was taken from this body, so it fits; an empty slice, not a panic, if not.)
        self.body.as_slice().get(self.range.clone()).unwrap_or_default()
    }
}

/// A boot message's body, wherever it came.
enum Body {
    Inline(Vec<u8>),
    Mapped(sys::shm::SealedMap),
}

impl Body {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Inline(bytes) => bytes,
            Body::Mapped(map) => map.as_slice(),
        }
    }
}

/// Reads what [`BootMessage::send`] sent: the body and the descriptors (this process's
/// parent's pidfd first, then the arguments' handles). Every length is checked before it is
/// used: garbage gives an error, never a panic, a huge allocation or a bad access.
fn recv_boot(channel: BorrowedFd<'_>) -> Result<(Body, Vec<OwnedFd>, bool)> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < header.len() {
        let (n, more) = fd::recv_with_fds(channel, &mut header[got..])?;
        if n == 0 {
            if got == 0 {
                return Err(Error::Eof);
            }
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
        fds.extend(more);
    }
    let len = u64::from_le_bytes(std::array::from_fn(|i| header[i]));
    let place = u64::from_le_bytes(std::array::from_fn(|i| header[8 + i]));
    let handles = u64::from_le_bytes(std::array::from_fn(|i| header[16 + i]));
    let body = recv_body(channel, len, place & !WITH_TRACKER, &mut fds)?;
    let with_tracker = place & WITH_TRACKER != 0;
    take_handles(&mut fds, handles, LEADING_FDS + usize::from(with_tracker))?;
    Ok((body, fds, with_tracker))
}

/// The descriptors before the arguments' handles in a boot message, once its memfd is taken
/// out: the parent's pidfd (and the tracker's socket after it, if the header says so).
const LEADING_FDS: usize = 1;

/// Reads the body of a boot message whose header said `len` and `place`, taking its memfd
/// out of `fds` if it is there.
fn recv_body(channel: BorrowedFd<'_>, len: u64, place: u64, fds: &mut Vec<OwnedFd>) -> Result<Body> {
    let bad = |max: usize| Error::BadMessageLength { len, max: max as u64 };
    match place {
        INLINE => {
            let max = INLINE_MAX - HEADER_LEN;
            let len = usize::try_from(len).ok().filter(|&l| l <= max).ok_or(bad(max))?;
            let mut body = vec![0u8; len];
            if !fd::recv_exact(channel, &mut body)? {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(Body::Inline(body))
        }
        IN_MEMFD => {
            let len = usize::try_from(len).ok().filter(|&l| l <= MAX_BOOT_LEN).ok_or(bad(MAX_BOOT_LEN))?;
            if fds.len() < 2 {
                return Err(Error::Codec("the boot message's memfd is missing".into()));
            }
            let memfd = fds.remove(1);
            let map = sys::shm::SealedMap::new(memfd.as_fd(), len)?;
            Ok(Body::Mapped(map))
        }
        other => Err(Error::Codec(format!("a boot message header of unknown kind {other}"))),
    }
}

/// Checks that the `count` handles the header announced came, in the message after its own
/// descriptors or packed in their place, and unpacks them. Fewer or more is an error.
fn take_handles(fds: &mut Vec<OwnedFd>, count: u64, leading: usize) -> Result<()> {
    let in_message = fds.len().saturating_sub(leading);
    if count > HANDLES_IN_MESSAGE_MAX as u64 {
        let count = usize::try_from(count).map_err(|_| Error::Codec(format!("{count} handles announced")))?;
        if in_message != 1 {
            return Err(Error::Codec(format!(
                "{count} handles announced, packed, and {in_message} descriptors in their place"
            )));
        }
        let packed = fds.pop().ok_or_else(|| Error::Codec("the packed handles are missing".into()))?;
        fds.extend(fd::unpack_fds(packed.as_fd(), count)?);
    } else if in_message as u64 != count {
        return Err(Error::Codec(format!("{in_message} handles arrived, {count} announced")));
    }
    Ok(())
}

/// Decodes a boot message's body: the [`Boot`], and where the arguments after it lie in
/// `body`, which they must fill to the end.
fn decode_boot(body: &[u8]) -> Result<(Boot, std::ops::Range<usize>)> {
    let (boot, rest) = postcard::take_from_bytes::<Boot>(body)?;
    if rest.len() as u64 != boot.args_len {
        return Err(Error::Codec(format!("{} bytes of arguments, {} announced", rest.len(), boot.args_len)));
    }
    Ok((boot, body.len() - rest.len()..body.len()))
}

/// A spawn or forkserver child: reads its boot message from `channel`, runs the target, exits.
/// A forkserver child is told its server's pid, taken before the fork: by the time it reads
/// its orders the server may be gone, and `getppid()` would then name a stranger.
pub(crate) fn child_main(channel: OwnedFd, method: StartMethod, server: Option<i32>) -> ! {
    // A Rust program ignores SIGPIPE (std does it before main, which has not run here).
    sys::proc::ignore_signal(libc::SIGPIPE);
    let (body, mut fds, with_tracker) = match recv_boot(channel.as_fd()) {
        Ok(b) => b,
        // The parent closed the channel before sending a byte: it gave up on this start (its
        // `start()` returned the error) and this child has nothing to run nor to say.
        Err(Error::Eof) => sys::proc::exit_now(1),
        Err(e) => fail(&format!("cannot read the start-up message from the parent: {e}")),
    };
    drop(channel);
    let (boot, range) = match decode_boot(body.as_slice()) {
        Ok(decoded) => decoded,
        Err(e) => fail(&format!("cannot decode the start-up message from the parent: {e}")),
    };
    match sys::proc::exe_identity() {
        Ok(exe) if exe == boot.exe => {}
        _ => fail(
            "this child is not running the same executable as its parent (was the binary \
             replaced on disk?); refusing to call into it",
        ),
    }
    if fds.is_empty() {
        fail("the parent's handle is missing from the start-up message");
    }
    let parent_pidfd = fds.remove(0);
    if with_tracker != boot.tracker.is_some() {
        fail("the start-up message's header and body disagree on the resource tracker");
    }
    if let Some(tracker_pid) = boot.tracker {
        if fds.is_empty() {
            fail("the resource tracker's socket is missing from the start-up message");
        }
        crate::resource_tracker::adopt_inherited(fds.remove(0), tracker_pid);
    }
    if let (true, StartMethod::ForkServer, Some(server)) = (boot.spec.daemon, method, server) {
        // Our parent is the fork server, which lives exactly as long as the client that
        // asked for us: dying with it is dying with the client. If it is gone already, so
        // is the client, and a daemon has nothing to live for.
        if sys::proc::set_parent_death_signal(libc::SIGTERM).is_err() || sys::proc::getppid() != server {
            sys::proc::exit_now(1);
        }
    }
    process::become_child(&boot.spec, boot.parent_pid, boot.parent_name, Some(parent_pidfd), boot.authkey);
    // SAFETY: the executable identity matched above, so the offset names the same `Entry`
    // in this binary as in the parent's.
    let entry = unsafe { popen::entry_at(boot.entry) };
    // The target decodes its arguments in place, then drops the body.
    let args = ArgBytes { body, range };
    run_and_exit(move || entry(args, fds))
}

/// Prints a start-up failure and exits 1: the parent sees it as an exit code.
fn fail(message: &str) -> ! {
    eprintln!("multiprocess: child {}: {message}", sys::proc::getpid());
    sys::proc::exit_now(1)
}

/// Installs, once per process, a panic hook for children: it writes `Process <name>:` and
/// then the panic message, its location and (with `RUST_BACKTRACE`) a backtrace, as CPython
/// writes a child's traceback. Outside a child it calls the hook that was there.
///
/// It is installed in the parent before forking, so that a fork child never has to take the
/// hook lock, which another thread may have held at the fork. It writes to stderr directly,
/// not through `eprintln!`, because a fork child of a `cargo test` thread inherits that
/// thread's output capture, whose buffer vanishes with the child.
pub(crate) fn install_panic_header() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if crate::pool::panics_recorded() {
                // A pool worker: the panic is the task's result, not a message.
                return crate::pool::record_panic(info);
            }
            let Some(name) = process::child_name_for_panic() else { return previous(info) };
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".into());
            let thread = std::thread::current();
            let location = info.location().map_or_else(String::new, |l| format!(" at {l}"));
            let mut text = format!(
                "Process {name}:\nthread '{}' panicked{location}:\n{message}\n",
                thread.name().unwrap_or("<unnamed>")
            );
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                text.push_str(&format!("stack backtrace:\n{backtrace}\n"));
            }
            write_stderr(&text);
        }));
    });
}

/// Writes to stderr past any test-harness capture (see [`install_panic_header`]).
fn write_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Runs a child's target and exits: 0 or the target's code; 1 after printing `Process
/// <name>:` and the error or panic message to stderr (CPython's uncaught-exception exit).
pub(crate) fn run_and_exit(target: impl FnOnce() -> std::result::Result<i32, String>) -> ! {
    install_panic_header();
    let code = match panic::catch_unwind(AssertUnwindSafe(target)) {
        Ok(Ok(code)) => code,
        Ok(Err(message)) => {
            let name = process::current_process().name().to_string();
            write_stderr(&format!("Process {name}:\n{message}\n"));
            1
        }
        Err(_) => 1,
    };
    process::exit_child(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduction::Encoded;
    use std::os::fd::AsRawFd;

    fn spec() -> ChildSpec {
        ChildSpec { name: "Process-1".into(), identity: vec![1], daemon: false, method: StartMethod::Spawn }
    }

    fn message(args: Vec<u8>) -> BootMessage {
        let payload = Payload { entry: 42, args: Encoded::plain(args) };
        BootMessage::new(&spec(), &payload, None).unwrap()
    }

    /// Sends `header` (and `body`) with `fds` on a fresh socket and reads it back as a child;
    /// the header announces no handles.
    fn receive(header: [u64; 2], body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(Body, Vec<OwnedFd>)> {
        receive_handles([header[0], header[1], 0], body, fds)
    }

    /// [`receive`] with a header that announces `header[2]` handles.
    fn receive_handles(header: [u64; 3], body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(Body, Vec<OwnedFd>)> {
        let (ours, theirs) = fd::socketpair().unwrap();
        let mut frame: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        frame.extend_from_slice(body);
        fd::send_with_fds(ours.as_fd(), &frame, fds).unwrap();
        drop(ours);
        recv_boot(theirs.as_fd()).map(|(body, fds, _)| (body, fds))
    }

    #[test]
    fn boot_message_round_trips_on_the_socket_and_in_a_memfd() {
        for len in [0, 1, 1900, 1950, 2000, 2100, 5000, 1 << 20] {
            let args: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let message = message(args.clone());
            assert_eq!(message.memfd.is_some(), message.frame.len() == HEADER_LEN, "{len}");
            assert!(message.frame.len() <= INLINE_MAX, "{len}: {} bytes on the socket", message.frame.len());
            let (ours, theirs) = fd::socketpair().unwrap();
            message.send(ours.as_fd(), &[]).unwrap();
            let (body, fds, _) = recv_boot(theirs.as_fd()).unwrap();
            assert_eq!(matches!(body, Body::Mapped(_)), message.memfd.is_some(), "{len}");
            // The parent's pidfd only: the memfd was taken out and closed once mapped.
            assert_eq!(fds.len(), 1, "{len}");
            let (boot, range) = decode_boot(body.as_slice()).unwrap();
            assert_eq!((boot.entry, boot.spec.name.as_str()), (42, "Process-1"));
            let args_got = ArgBytes { body, range };
            assert_eq!(args_got.as_slice(), &args[..], "{len}");
        }
        // Large arguments go in a memfd, small ones do not.
        assert!(message(vec![0; 4096]).memfd.is_some());
        assert!(message(vec![0; 100]).memfd.is_none());
    }

    #[test]
    fn tracker_socket_travels_after_the_pidfd_and_memfd() {
        for len in [10, 5000] {
            let (tracker, _peer) = fd::seqpacket_pair().unwrap();
            let (extra, _) = fd::socketpair().unwrap();
            let payload = Payload {
                entry: 42,
                args: Encoded { bytes: vec![3; len], fds: vec![extra.as_raw_fd()], tickets: Vec::new() },
            };
            let message = BootMessage::new(&spec(), &payload, Some((tracker, 4321))).unwrap();
            let (ours, theirs) = fd::socketpair().unwrap();
            message.send(ours.as_fd(), &payload.args.fds).unwrap();
            let (body, fds, with_tracker) = recv_boot(theirs.as_fd()).unwrap();
            assert!(with_tracker, "the header says the tracker's socket comes");
            let (boot, _) = decode_boot(body.as_slice()).unwrap();
            assert_eq!(boot.tracker, Some(4321));
            // The pidfd, the tracker's socket, the argument's handle.
            assert_eq!(fds.len(), 3, "{len}");
            let kind = |fd: &OwnedFd| {
                let mut kind: libc::c_int = 0;
                let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: getsockopt writes at most `size` bytes into `kind`.
                unsafe {
                    libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut size)
                };
                kind
            };
            assert_eq!(kind(&fds[1]), libc::SOCK_SEQPACKET);
            assert_eq!(kind(&fds[2]), libc::SOCK_STREAM);
        }
    }

    #[test]
    fn garbage_headers_are_errors() {
        let me = process::self_pidfd().unwrap();
        let pidfd = me.as_fd();
        let too_long = |r: Result<(Body, Vec<OwnedFd>)>| matches!(r, Err(Error::BadMessageLength { .. }));
        assert!(too_long(receive([INLINE_MAX as u64, INLINE], &[], &[pidfd])));
        assert!(too_long(receive([u64::MAX, INLINE], &[], &[pidfd])));
        assert!(too_long(receive([MAX_BOOT_LEN as u64 + 1, IN_MEMFD], &[], &[pidfd])));
        assert!(matches!(receive([10, 7], &[], &[pidfd]), Err(Error::Codec(_))));
        // The body cut short, or missing altogether.
        assert!(matches!(receive([10, INLINE], &[1, 2, 3], &[pidfd]), Err(Error::Io(_))));
        // No memfd where one is announced, or another kind of descriptor in its place.
        assert!(matches!(receive([10, IN_MEMFD], &[], &[pidfd]), Err(Error::Codec(_))));
        assert!(matches!(receive([10, IN_MEMFD], &[], &[pidfd, pidfd]), Err(Error::Io(_))));
        // A memfd not sealed against writing: its bytes could change under the child.
        let open = sys::shm::sparse_memfd(c"test", 10).unwrap();
        assert!(matches!(receive([10, IN_MEMFD], &[], &[pidfd, open.as_fd()]), Err(Error::Io(_))));
        // A sealed memfd of another length than announced, or empty.
        let sealed = sys::shm::sealed_copy(c"test", &[&[7; 10]]).unwrap();
        assert!(matches!(receive([11, IN_MEMFD], &[], &[pidfd, sealed.as_fd()]), Err(Error::Io(_))));
        assert!(matches!(receive([9, IN_MEMFD], &[], &[pidfd, sealed.as_fd()]), Err(Error::Io(_))));
        let empty = sys::shm::sealed_copy(c"test", &[]).unwrap();
        assert!(matches!(receive([0, IN_MEMFD], &[], &[pidfd, empty.as_fd()]), Err(Error::Io(_))));
        // A header cut short, and nothing at all.
        let (ours, theirs) = fd::socketpair().unwrap();
        fd::send_all(ours.as_fd(), &[&[1, 2, 3]]).unwrap();
        drop(ours);
        assert!(matches!(recv_boot(theirs.as_fd()), Err(Error::Io(_))));
        let (ours, theirs) = fd::socketpair().unwrap();
        drop(ours);
        assert!(matches!(recv_boot(theirs.as_fd()), Err(Error::Eof)));
        // A well-formed header with a sealed memfd of garbage reads, then fails to decode.
        let (body, _) = receive([10, IN_MEMFD], &[], &[pidfd, sealed.as_fd()]).unwrap();
        assert!(decode_boot(body.as_slice()).is_err());
    }

    #[test]
    fn handles_travel_in_the_message_or_packed_and_are_counted() {
        let me = process::self_pidfd().unwrap();
        let segments: Vec<_> = (0..602).map(|_| sys::shm::sparse_memfd(c"test", 1).unwrap()).collect();
        let raw: Vec<RawFd> = segments.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let inode = |fd: BorrowedFd<'_>| {
            let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
            std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap())
        };
        for n in [0, 1, HANDLES_IN_MESSAGE_MAX, HANDLES_IN_MESSAGE_MAX + 1, 253, 600] {
            for len in [10, 5000] {
                let payload = Payload {
                    entry: 42,
                    args: Encoded { bytes: vec![3; len], fds: raw[..n].to_vec(), tickets: Vec::new() },
                };
                let message = BootMessage::new(&spec(), &payload, None).unwrap();
                assert_eq!(message.packed.is_some(), n > HANDLES_IN_MESSAGE_MAX, "{n}");
                let (ours, theirs) = fd::socketpair().unwrap();
                message.send(ours.as_fd(), &payload.args.fds).unwrap();
                let (body, fds, _) = recv_boot(theirs.as_fd()).unwrap();
                assert_eq!(decode_boot(body.as_slice()).unwrap().1.len(), len, "{n}");
                assert_eq!(fds.len(), 1 + n, "{n}");
                // In order, each the file it was.
                for (got, sent) in fds[1..].iter().zip(&segments) {
                    assert_eq!(inode(got.as_fd()), inode(sent.as_fd()), "{n}");
                }
            }
        }
        // A header that announces more or fewer than came.
        let pidfd = me.as_fd();
        let some: Vec<BorrowedFd<'_>> = [pidfd].into_iter().chain(segments[..3].iter().map(|s| s.as_fd())).collect();
        assert!(matches!(receive_handles([0, INLINE, 2], &[], &some), Err(Error::Codec(_))));
        assert!(matches!(receive_handles([0, INLINE, 4], &[], &some), Err(Error::Codec(_))));
        assert!(receive_handles([0, INLINE, 3], &[], &some).is_ok());
        let packed = |n: usize| fd::pack_fds(&segments[..n].iter().map(|s| s.as_fd()).collect::<Vec<_>>()).unwrap();
        let over = HANDLES_IN_MESSAGE_MAX as u64 + 1;
        for (announced, sent) in
            [(over, over as usize - 1), (over, over as usize + 1), (600, 599), (600, 601), (600, 0)]
        {
            let bag = packed(sent);
            let got = receive_handles([0, INLINE, announced], &[], &[pidfd, bag.as_fd()]);
            assert_eq!(got.is_ok(), announced as usize == sent, "{announced} announced, {sent} sent");
        }
        assert!(receive_handles([0, INLINE, 600], &[], &[pidfd, packed(600).as_fd()]).is_ok());
        // Packed handles announced, but none or two descriptors in their place, or not a socket.
        assert!(matches!(receive_handles([0, INLINE, 600], &[], &[pidfd]), Err(Error::Codec(_))));
        let (a, b) = (packed(600), packed(600));
        assert!(matches!(receive_handles([0, INLINE, 600], &[], &[pidfd, a.as_fd(), b.as_fd()]), Err(Error::Codec(_))));
        assert!(receive_handles([0, INLINE, 600], &[], &[pidfd, segments[0].as_fd()]).is_err());
        assert!(receive_handles([0, INLINE, u64::MAX], &[], &[pidfd, packed(3).as_fd()]).is_err());
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        let good = message(vec![5; 100]).frame[HEADER_LEN..].to_vec();
        assert!(decode_boot(&good).is_ok());
        // Every prefix, and the message with a byte more, miscount the arguments.
        for cut in 0..good.len() {
            assert!(decode_boot(&good[..cut]).is_err(), "a message cut at {cut} decoded");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(decode_boot(&longer), Err(Error::Codec(_))));
        // Random bytes, and the good message with random bytes changed: never a panic.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_boot(&random);
            let mut changed = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % changed.len();
                changed[at] = next() as u8;
            }
            let _ = decode_boot(&changed);
        }
    }
}
