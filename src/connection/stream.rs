//! The byte stream under a [`Connection`](super::Connection): its descriptors (a pair of
//! pipes, or a socket), CPython's framing, and a small read buffer.
//!
//! Pipes, not a socket pair, carry `pipe()`: a pipe round trip costs about half of a Unix
//! socket's on Linux. A socket carries connections made from a socket (`from_fd`, and the
//! Listener later).
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

use crate::sys::{Deadline, fd, proc};
use crate::{Error, Result};
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

/// How much a read ahead asks for at once: room for many small messages.
const READ_CHUNK: usize = 16 * 1024;

/// A payload longer than this grows the pipe it is written to (see [`fd::grow_pipe`]): it
/// would not fit in a pipe of the default 64 KiB.
const GROW_PIPE_AT: usize = 64 * 1024;

/// The descriptors of one end.
pub(crate) enum Fds {
    /// One socket, both directions.
    Socket(OwnedFd),
    /// A pipe to read from and one to write to, either absent for a one-way end.
    Pipes { read: Option<OwnedFd>, write: Option<OwnedFd> },
}

/// Bytes read from the descriptor and not yet taken: `data[start..end]`.
#[derive(Default)]
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
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
    /// bytes at most when `exact`. Returns false at end of file.
    fn fill(&mut self, fd: BorrowedFd<'_>, want: usize, exact: bool) -> Result<bool> {
        if self.data.len() < READ_CHUNK {
            self.data.resize(READ_CHUNK, 0);
        }
        if self.data.len() - self.end < 12 {
            // Keep what is unread, at the front.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.data.len() - self.end;
        let ask = if exact { want.min(room) } else { room };
        let n = fd::read_some(fd, &mut self.data[self.end..self.end + ask])?;
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
}

impl Stream {
    pub(crate) fn new(fds: Fds, pending: Vec<u8>, shared: bool) -> Stream {
        let end = pending.len();
        let buf = Arc::new(Mutex::new(ReadBuf { data: pending, start: 0, end }));
        Stream {
            fds,
            buf,
            shared: Cell::new(shared),
            sigpipe_ignored: proc::sigpipe_ignored(),
            pipe_grown: Cell::new(false),
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
        }
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

    /// Takes the read side for one message: clones of this end in other threads wait.
    pub(crate) fn reader<'a>(&'a self, fd: BorrowedFd<'a>) -> Reader<'a> {
        Reader { buf: self.lock_buf(), fd, exact: self.shared() }
    }

    /// Whether there is something to read, waiting until the deadline.
    pub(crate) fn poll(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(fd::poll_readable(&[fd], deadline)?[0])
    }
}

/// The read side of a stream, held for one message.
pub(crate) struct Reader<'a> {
    buf: MutexGuard<'a, ReadBuf>,
    fd: BorrowedFd<'a>,
    exact: bool,
}

impl Reader<'_> {
    /// Reads a frame header: the payload length, or `None` at a clean end of stream.
    pub(crate) fn header(&mut self) -> Result<Option<u64>> {
        let (fd, exact) = (self.fd, self.exact);
        let buf = &mut *self.buf;
        while buf.buffered().len() < 4 {
            let want = 4 - buf.buffered().len();
            if !buf.fill(fd, want, exact)? {
                return if buf.buffered().is_empty() { Ok(None) } else { Err(cut_short()) };
            }
        }
        let short = i32::from_be_bytes(buf.buffered()[..4].try_into().expect("4 bytes"));
        if short >= 0 {
            buf.consume(4);
            return Ok(Some(short as u64));
        }
        if short != -1 {
            return Err(Error::Codec(format!("bad frame length {short}")));
        }
        while buf.buffered().len() < 12 {
            let want = 12 - buf.buffered().len();
            if !buf.fill(fd, want, exact)? {
                return Err(cut_short());
            }
        }
        let long = u64::from_be_bytes(buf.buffered()[4..12].try_into().expect("8 bytes"));
        buf.consume(12);
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
        if !rest.is_empty() && !fd::recv_exact(self.fd, rest)? {
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
        if !rest.is_empty() && !fd::recv_exact_uninit(self.fd, rest)? {
            return Err(cut_short());
        }
        Ok(())
    }
}
