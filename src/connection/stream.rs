//! The byte stream under a [`Connection`](super::Connection): its descriptors (a pair of
//! pipes, or a socket), CPython's framing, and a small read buffer.
//!
//! Pipes, not a socket pair, carry `pipe()`: a pipe round trip costs about half of a Unix
//! socket's on Linux. A socket carries connections made from a socket (`from_fd`, and the
//! Listener later).
//!
//! Handles. A message may carry descriptors (`SCM_RIGHTS`): a frame of its own kind
//! announces them (`-2`, their count, a tag, then the 8-byte length), which CPython never
//! sends. On a Unix socket they are attached to the frame's first byte, so whichever read
//! takes that byte takes them too; they wait in the read buffer, in order, until their frame
//! is read. A pipe cannot carry them: `pipe()` makes a Unix sequenced-packet socket pair
//! beside its two pipes, the side channel, and a handles frame sends its descriptors there
//! first, as one record named by the frame's tag, then the frame on the pipe. Messages
//! without handles never touch the side channel, so it costs the byte path nothing; the tag
//! keeps two writers' records apart (a reader that meets another frame's record first keeps
//! it for that frame).
//!
//! Reading. An end that only this handle reads reads ahead: one `read(2)` takes what is there,
//! so a small message costs one `write` and one `read`. An end that may be read elsewhere too
//! (a `try_clone`, or a connection that was cloned before it went to a child) reads exact
//! lengths, a header and then its payload, so the pipe stays at a message boundary between
//! reads and the next message is there for whoever reads next (CPython's `test_boundaries`
//! names the hazard: a reader that takes part of the next message corrupts the pipe for the
//! others).
//!
//! Bulk. A frame goes in one gathered write from the caller's slice (header and payload, no
//! copy into a buffer), and a payload is read straight into the vector returned, never
//! zeroed first. What limits a large message is the pipe's size: at the default 64 KiB each
//! turn wakes the other side, so a pipe that carries a payload above that is grown once to
//! 1 MiB ([`fd::grow_pipe`]), which doubles the throughput (0.4 to 1.1 GB/s on 1 MiB
//! messages; CPython's socket pair, 0.5-0.9). Past a few megabytes the reader's page faults
//! on its fresh vector cost more than the copy; it asks for huge pages
//! ([`fd::advise_huge_pages`]): 64 MiB messages went from 0.4 to 1.1 GB/s.

use crate::sys::{Deadline, fd, proc, socket};
use crate::{Error, Result};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How much a read ahead asks for at once: room for many small messages.
const READ_CHUNK: usize = 16 * 1024;

/// How long a read of an empty pipe or socket polls before it sleeps in `read`: a peer on
/// another CPU that is awake answers in a few microseconds, while waking a sleeping reader
/// costs some twenty on each side (a round trip across CPUs: 2.8 µs spinning, 54 µs asleep,
/// CPython's 42). Events spin so too.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// A payload longer than this grows the pipe it is written to (see [`fd::grow_pipe`]): it
/// would not fit in a pipe of the default 64 KiB.
const GROW_PIPE_AT: usize = 64 * 1024;

/// The length field of a frame that carries handles: `-2`, then their count (4 bytes), the
/// tag of their side-channel record (8 bytes; 0 on a socket), and the payload's length (8).
const HANDLES_FRAME: i32 = -2;

/// The longest header: a handles frame's.
const HEADER_MAX: usize = 24;

/// The descriptors of one end.
pub(crate) enum Fds {
    /// One socket, both directions.
    Socket(OwnedFd),
    /// A pipe to read from and one to write to, either absent for a one-way end, and the side
    /// channel for handles (`pipe()`'s ends have one, one-way ends none).
    Pipes { read: Option<OwnedFd>, write: Option<OwnedFd>, side: Option<OwnedFd> },
}

/// Bytes read from the descriptor and not yet taken: `data[start..end]`.
#[derive(Default)]
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Descriptors that came with bytes read from a Unix socket, in order, until the frame
    /// (or `send_handle` byte) they came with is taken.
    fds: VecDeque<OwnedFd>,
    /// Side-channel records read while looking for another frame's: tag and descriptors.
    stash: Vec<(u64, Vec<OwnedFd>)>,
}

impl ReadBuf {
    fn buffered(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once more from `fd`, after what is buffered: as much as fits, or exactly `want`
    /// bytes at most when `exact`; from a Unix socket (`unix`) the descriptors that come
    /// too. Returns false at end of file.
    fn fill(&mut self, fd: BorrowedFd<'_>, want: usize, exact: bool, unix: bool) -> Result<bool> {
        if self.data.len() < READ_CHUNK {
            self.data.resize(READ_CHUNK, 0);
        }
        if self.data.len() - self.end < HEADER_MAX {
            // Keep what is unread, at the front.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.data.len() - self.end;
        let ask = if exact { want.min(room) } else { room };
        let dst = &mut self.data[self.end..self.end + ask];
        let n = if unix {
            let fds = &mut self.fds;
            fd::recv_some_into(fd, dst, &mut |f| fds.push_back(f))?
        } else {
            fd::read_some(fd, dst)?
        };
        self.end += n;
        Ok(n > 0)
    }
}

/// The peer closed in the middle of a message (CPython: `OSError('got end of file during
/// message')`); a clean end between messages is [`Error::Eof`].
fn cut_short() -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "got end of file during message"))
}

/// A framed byte stream.
pub(crate) struct Stream {
    fds: Fds,
    /// Shared by the handles `try_clone` made in this process, so that bytes one of them read
    /// ahead are there for whichever reads next, in order.
    buf: Arc<Mutex<ReadBuf>>,
    /// Whether the read end may be read elsewhere too: then reads take exact lengths.
    shared: Cell<bool>,
    /// Whether `SIGPIPE` was ignored when this handle was made: then a write to a pipe needs no
    /// guard. Asking at every write would cost a syscall a message.
    sigpipe_ignored: bool,
    /// Whether this handle has grown its write pipe for a large payload already.
    pipe_grown: Cell<bool>,
    /// Whether the descriptor is a Unix socket: then reads take descriptors that come with
    /// the bytes, and handles frames attach theirs.
    unix: bool,
    /// Whether a read of an empty stream polls for [`SPIN`] first (see [`Spin`]).
    spin: Spin,
}

/// When a read spins: while spins pay. A spin that finds nothing costs a credit, and so does
/// one that finds a message only after its yield ran another task (a peer on our CPU: the
/// looks and yields cost more system calls than a read that sleeps, and no less time); one
/// that finds a message earns them all back. Without credit a stream tries again every
/// [`RETRY_EVERY`] reads, so that a peer that was slow at first (both sides asleep, say) does
/// not switch spinning off for good. The spin yields between looks, so a peer on our own CPU
/// is not held up by it.
#[derive(Debug)]
struct Spin {
    credit: Cell<u8>,
    /// Reads without a spin since the credit ran out.
    skipped: Cell<u8>,
}

const SPIN_CREDIT: u8 = 4;
const RETRY_EVERY: u8 = 32;

impl Spin {
    fn new() -> Spin {
        Spin { credit: Cell::new(SPIN_CREDIT), skipped: Cell::new(0) }
    }

    /// Whether this read spins.
    fn now(&self) -> bool {
        if self.credit.get() > 0 {
            return true;
        }
        let skipped = self.skipped.get() + 1;
        if skipped >= RETRY_EVERY {
            self.skipped.set(0);
            self.credit.set(1);
            return true;
        }
        self.skipped.set(skipped);
        false
    }

    fn paid(&self, paid: bool) {
        self.credit.set(if paid { SPIN_CREDIT } else { self.credit.get().saturating_sub(1) });
    }
}

/// A tag for a side-channel record, unique among this process's and (with the pid in its
/// high half) any other's that write to the same pipe.
fn next_tag() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    (u64::from(std::process::id()) << 32) | u64::from(COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn is_unix(fds: &Fds) -> bool {
    matches!(fds, Fds::Socket(fd) if socket::is_unix(fd.as_fd()))
}

fn handles_error(what: impl Into<String>) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, what.into()))
}

impl Stream {
    pub(crate) fn new(fds: Fds, pending: Vec<u8>, shared: bool) -> Stream {
        let end = pending.len();
        let buf = Arc::new(Mutex::new(ReadBuf { data: pending, start: 0, end, ..ReadBuf::default() }));
        let unix = is_unix(&fds);
        Stream {
            fds,
            buf,
            shared: Cell::new(shared),
            sigpipe_ignored: proc::sigpipe_ignored(),
            pipe_grown: Cell::new(false),
            unix,
            spin: Spin::new(),
        }
    }

    /// A second handle on the same end: its own descriptors, the same read buffer. Both read
    /// exact lengths from now on.
    pub(crate) fn clone_with(&self, fds: Fds) -> Stream {
        self.shared.set(true);
        Stream {
            fds,
            buf: self.buf.clone(),
            shared: Cell::new(true),
            sigpipe_ignored: proc::sigpipe_ignored(),
            pipe_grown: Cell::new(false),
            unix: self.unix,
            spin: Spin::new(),
        }
    }

    /// Whether messages on this stream can carry descriptors: a Unix socket's, or a pipe
    /// with a side channel (`pipe()`'s).
    pub(crate) fn carries_handles(&self) -> bool {
        self.unix || matches!(self.fds, Fds::Pipes { side: Some(_), .. })
    }

    /// Whether this is a Unix socket (where `send_handle` speaks CPython's format).
    pub(crate) fn is_unix(&self) -> bool {
        self.unix
    }

    /// Whether descriptors of messages read ahead wait in the buffer: then this end cannot
    /// travel, as they would not go with it.
    pub(crate) fn holds_received_handles(&self) -> bool {
        let buf = self.lock_buf();
        !buf.fds.is_empty() || !buf.stash.is_empty()
    }

    pub(crate) fn fds(&self) -> &Fds {
        &self.fds
    }

    pub(crate) fn shared(&self) -> bool {
        self.shared.get()
    }

    pub(crate) fn read_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.fds {
            Fds::Socket(fd) => Some(fd.as_fd()),
            Fds::Pipes { read, .. } => read.as_ref().map(|f| f.as_fd()),
        }
    }

    pub(crate) fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.fds {
            Fds::Socket(fd) => Some(fd.as_fd()),
            Fds::Pipes { write, .. } => write.as_ref().map(|f| f.as_fd()),
        }
    }

    fn lock_buf(&self) -> MutexGuard<'_, ReadBuf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes read ahead and not yet taken, for the copy of this end that goes to a child.
    /// Taken from the buffer when other handles share it (one copy of a message, one reader);
    /// copied when this handle is the only one (it is dropped once the child has its copy).
    pub(crate) fn pending_for_transfer(&self) -> Vec<u8> {
        let mut buf = self.lock_buf();
        let bytes = buf.buffered().to_vec();
        if Arc::strong_count(&self.buf) > 1 {
            let n = bytes.len();
            buf.consume(n);
        }
        bytes
    }

    /// Whether a read ahead left bytes in the buffer: then the end is readable without asking
    /// the kernel. A buffer another handle is reading into counts as empty.
    pub(crate) fn has_buffered(&self) -> bool {
        self.buf.try_lock().is_ok_and(|b| b.start < b.end)
    }

    /// Sends one frame: header and payload in one write when they fit.
    pub(crate) fn send_frame(&self, fd: BorrowedFd<'_>, payload: &[u8]) -> Result<()> {
        let len = payload.len();
        let mut header = [0u8; 12];
        let header: &[u8] = if len <= i32::MAX as usize {
            header[..4].copy_from_slice(&(len as i32).to_be_bytes());
            &header[..4]
        } else {
            header[..4].copy_from_slice(&(-1i32).to_be_bytes());
            header[4..].copy_from_slice(&(len as u64).to_be_bytes());
            &header
        };
        let result = match self.fds {
            Fds::Socket(_) => fd::send_all(fd, &[header, payload]),
            Fds::Pipes { .. } => {
                if len > GROW_PIPE_AT && !self.pipe_grown.replace(true) {
                    fd::grow_pipe(fd);
                }
                fd::write_all_pipe(fd, &[header, payload], self.sigpipe_ignored)
            }
        };
        result.map_err(Error::from_write)
    }

    /// Sends one frame carrying `fds` (at least one) beside `payload`: on a Unix socket
    /// attached to its first byte, on a pipe as a side-channel record first. More than one
    /// message of descriptors can carry travel packed into a socket of their own
    /// ([`fd::pack_fds`]), which the reader unpacks.
    pub(crate) fn send_frame_with_handles(
        &self,
        fd: BorrowedFd<'_>,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        let count = u32::try_from(fds.len())
            .map_err(|_| Error::InvalidArgument(format!("{} handles in one message", fds.len())))?;
        let packed = if fds.len() > fd::MAX_FDS_PER_MESSAGE { Some(fd::pack_fds(fds)?) } else { None };
        let packed_fd = packed.as_ref().map(|p| p.as_fd());
        let attach: &[BorrowedFd<'_>] = match &packed_fd {
            Some(p) => std::slice::from_ref(p),
            None => fds,
        };
        let mut header = [0u8; HEADER_MAX];
        header[..4].copy_from_slice(&HANDLES_FRAME.to_be_bytes());
        header[4..8].copy_from_slice(&count.to_be_bytes());
        header[16..].copy_from_slice(&(payload.len() as u64).to_be_bytes());
        let result = match &self.fds {
            Fds::Socket(_) if self.unix => fd::send_all_with_fds(fd, &[&header, payload], attach),
            Fds::Pipes { side: Some(side), .. } => {
                let tag = next_tag();
                header[8..16].copy_from_slice(&tag.to_be_bytes());
                fd::send_all_with_fds(side.as_fd(), &[&tag.to_be_bytes()], attach)
                    .and_then(|()| fd::write_all_pipe(fd, &[&header, payload], self.sigpipe_ignored))
            }
            _ => return Err(cannot_carry()),
        };
        result.map_err(Error::from_write)
    }

    /// Sends one descriptor as CPython's `reduction.send_handle` does on a Unix socket: one
    /// byte (the count, 1) with the descriptor attached, no frame.
    pub(crate) fn send_raw_handle(&self, fd: BorrowedFd<'_>, handle: BorrowedFd<'_>) -> Result<()> {
        fd::send_all_with_fds(fd, &[&[1u8]], &[handle]).map_err(Error::from_write)
    }

    /// Takes the read side for one message: clones of this end in other threads wait.
    pub(crate) fn reader<'a>(&'a self, fd: BorrowedFd<'a>) -> Reader<'a> {
        let side = match &self.fds {
            Fds::Pipes { side, .. } => side.as_ref().map(|s| s.as_fd()),
            Fds::Socket(_) => None,
        };
        Reader {
            buf: self.lock_buf(),
            fd,
            exact: self.shared(),
            unix: self.unix,
            side,
            handles: None,
            spin: &self.spin,
        }
    }

    /// Whether there is something to read, waiting until the deadline.
    pub(crate) fn poll(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(fd::poll_readable(&[fd], deadline)?[0])
    }
}

/// Why a handle cannot travel on this connection.
pub(crate) fn cannot_carry() -> Error {
    Error::InvalidArgument(
        "this connection cannot carry handles: only pipe() ends and Unix-socket connections can \
         (their descriptors travel with SCM_RIGHTS); not a TCP connection or a one-way pipe"
            .into(),
    )
}

/// The read side of a stream, held for one message.
pub(crate) struct Reader<'a> {
    buf: MutexGuard<'a, ReadBuf>,
    fd: BorrowedFd<'a>,
    exact: bool,
    unix: bool,
    side: Option<BorrowedFd<'a>>,
    /// The descriptors of the frame whose header was read, if it is a handles frame (or why
    /// they could not be had). Closed with the reader unless taken.
    handles: Option<Result<Vec<OwnedFd>>>,
    spin: &'a Spin,
}

impl Reader<'_> {
    /// The descriptors that came with the frame just read: none for a plain frame.
    pub(crate) fn take_handles(&mut self) -> Result<Vec<OwnedFd>> {
        self.handles.take().unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Whether the frame just read is a handles frame.
    pub(crate) fn has_handles(&self) -> bool {
        self.handles.is_some()
    }

    /// Reads one byte as CPython's `recv_handle` does on a Unix socket (the count, 1), and
    /// takes the descriptor that came with it.
    pub(crate) fn raw_handle(&mut self) -> Result<OwnedFd> {
        let (fd, exact, unix) = (self.fd, self.exact, self.unix);
        let buf = &mut *self.buf;
        if buf.buffered().is_empty() && !buf.fill(fd, 1, exact, unix)? {
            return Err(Error::Eof);
        }
        let count = buf.buffered()[0];
        buf.consume(1);
        if count != 1 {
            return Err(handles_error(format!("expected a handle (a byte 1 with its descriptor), got a byte {count}")));
        }
        buf.fds.pop_front().ok_or_else(|| handles_error("a handle's byte came without its descriptor"))
    }

    /// The `count` descriptors of the handles frame tagged `tag`: from the read buffer (a
    /// socket's) or the side channel (a pipe's), unpacked if they travelled packed.
    fn collect(&mut self, count: u32, tag: u64) -> Result<Vec<OwnedFd>> {
        let count = count as usize;
        let attached = if count > fd::MAX_FDS_PER_MESSAGE { 1 } else { count };
        let buf = &mut *self.buf;
        let fds: Vec<OwnedFd> = if self.unix {
            if buf.fds.len() < attached {
                return Err(handles_error(format!("{count} handles announced, {} arrived", buf.fds.len())));
            }
            buf.fds.drain(..attached).collect()
        } else if let Some(side) = self.side {
            match buf.stash.iter().position(|(t, _)| *t == tag) {
                Some(i) => buf.stash.swap_remove(i).1,
                None => loop {
                    // The writer queued the record before it wrote the frame: it is there,
                    // or another reader of this end took it.
                    let mut name = [0u8; 8];
                    let (n, got) = match fd::recv_with_fds_now(side, &mut name) {
                        Ok(received) => received,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, Vec::new()),
                        Err(e) => return Err(e.into()),
                    };
                    if n != 8 {
                        return Err(handles_error(
                            "the handles of this message are missing (taken by another reader of this end?)",
                        ));
                    }
                    let got_tag = u64::from_be_bytes(name);
                    if got_tag == tag {
                        break got;
                    }
                    buf.stash.push((got_tag, got));
                },
            }
        } else {
            return Err(handles_error("handles announced on a connection that cannot carry them"));
        };
        if fds.len() != attached {
            return Err(handles_error(format!("{count} handles announced, {} arrived", fds.len())));
        }
        if attached < count {
            return Ok(fd::unpack_fds(fds[0].as_fd(), count)?);
        }
        Ok(fds)
    }

    /// Reads a frame header: the payload length, or `None` at a clean end of stream. The
    /// descriptors of a handles frame are taken now, for [`take_handles`](Reader::take_handles).
    pub(crate) fn header(&mut self) -> Result<Option<u64>> {
        self.handles = None;
        let (fd, exact, unix) = (self.fd, self.exact, self.unix);
        let buf = &mut *self.buf;
        if buf.buffered().is_empty() && self.spin.now() {
            self.spin.paid(spin_for_message(fd) == Spun::Found);
        }
        while buf.buffered().len() < 4 {
            let want = 4 - buf.buffered().len();
            if !buf.fill(fd, want, exact, unix)? {
                return if buf.buffered().is_empty() { Ok(None) } else { Err(cut_short()) };
            }
        }
        let short = i32::from_be_bytes(buf.buffered()[..4].try_into().expect("4 bytes"));
        if short >= 0 {
            buf.consume(4);
            return Ok(Some(short as u64));
        }
        let size = match short {
            -1 => 12,
            HANDLES_FRAME => HEADER_MAX,
            _ => return Err(Error::Codec(format!("bad frame length {short}"))),
        };
        while buf.buffered().len() < size {
            let want = size - buf.buffered().len();
            if !buf.fill(fd, want, exact, unix)? {
                return Err(cut_short());
            }
        }
        let head = &buf.buffered()[..size];
        let long = u64::from_be_bytes(head[size - 8..].try_into().expect("8 bytes"));
        let handles = (short == HANDLES_FRAME).then(|| {
            let count = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
            let tag = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
            (count, tag)
        });
        buf.consume(size);
        if let Some((count, tag)) = handles {
            self.handles = Some(self.collect(count, tag));
        }
        Ok(Some(long))
    }

    /// Fills `dst` with the next `dst.len()` payload bytes: first from the buffer, the rest
    /// straight from the descriptor (a large payload is not copied twice).
    pub(crate) fn payload(&mut self, dst: &mut [u8]) -> Result<()> {
        let buf = &mut *self.buf;
        let have = buf.buffered().len().min(dst.len());
        dst[..have].copy_from_slice(&buf.buffered()[..have]);
        buf.consume(have);
        let rest = &mut dst[have..];
        // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, and the callee only writes
        // initialised bytes into them.
        let rest = unsafe { &mut *(rest as *mut [u8] as *mut [MaybeUninit<u8>]) };
        if !rest.is_empty() && !recv_exact(self.fd, self.unix, rest, &mut buf.fds)? {
            return Err(cut_short());
        }
        Ok(())
    }

    /// [`payload`](Reader::payload) into uninitialised memory (a vector's spare capacity):
    /// on `Ok` every byte of `dst` is written.
    pub(crate) fn payload_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> Result<()> {
        let buf = &mut *self.buf;
        let have = buf.buffered().len().min(dst.len());
        for (d, s) in dst[..have].iter_mut().zip(buf.buffered()) {
            d.write(*s);
        }
        buf.consume(have);
        let rest = &mut dst[have..];
        if !rest.is_empty() && !recv_exact(self.fd, self.unix, rest, &mut buf.fds)? {
            return Err(cut_short());
        }
        Ok(())
    }
}

/// Reads exactly `dst.len()` bytes (see [`fd::recv_exact_uninit`]); from a Unix socket
/// (`unix`) the descriptors that come with them go to `fds`.
fn recv_exact(
    fd: BorrowedFd<'_>,
    unix: bool,
    dst: &mut [MaybeUninit<u8>],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<bool> {
    if unix { fd::recv_exact_with_fds(fd, dst, &mut |f| fds.push_back(f)) } else { fd::recv_exact_uninit(fd, dst) }
}

/// What a spin before a read found.
#[derive(Debug, PartialEq, Eq)]
enum Spun {
    /// A message, without the CPU changing hands: a reply from another CPU, which a read
    /// that slept would have waited for a wake-up to take.
    Found,
    /// A message, but only after a yield that ran another task (it took [`SWITCHED`] or
    /// more): the peer shares our CPU, and a read that slept would have cost no more than the
    /// looks and the yield did.
    FoundAfterSwitch,
    /// Nothing within [`SPIN`].
    Nothing,
}

/// A yield that takes this long ran another task: one that returns at once (nobody else
/// waits for our CPU) takes a system call's time.
const SWITCHED: std::time::Duration = std::time::Duration::from_micros(2);

/// Polls `fd` for [`SPIN`] at most, before a read that would sleep: a reply from another CPU
/// then costs no wake-up. What it found.
#[cold]
fn spin_for_message(fd: BorrowedFd<'_>) -> Spun {
    let start = std::time::Instant::now();
    let mut switched = false;
    loop {
        if fd::readable_now(fd) {
            return if switched { Spun::FoundAfterSwitch } else { Spun::Found };
        }
        let now = std::time::Instant::now();
        if now.duration_since(start) >= SPIN {
            return Spun::Nothing;
        }
        // Gives the CPU away between looks: a peer that shares our CPU then runs (and
        // answers) at once, which spinning would only delay; one on another CPU is not held
        // up, and the yield returns at once if nothing else is waiting to run here.
        std::thread::yield_now();
        switched = now.elapsed() >= SWITCHED;
    }
}
