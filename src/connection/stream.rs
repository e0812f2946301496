//! The byte stream under a [`Connection`](super::Connection): its descriptors (a pair of
//! pipes, or a socket), CPython's framing, and a small read buffer.
//!
//! Pipes, not a socket pair, carry `pipe()`: a pipe round trip costs about half of a Unix
//! socket's on Linux. They are packet-mode pipes where the kernel has them, so that a small
//! message costs one `write(2)` and one `read(2)`, and a read never takes bytes of the next
//! message: several processes may share a read end (under a lock, as CPython's queues do)
//! and each read takes exactly one message. A socket carries connections made from a socket
//! (`from_fd`, and the Listener later); there, and on ordinary pipes, reads ask for exact
//! lengths.

use crate::sys::{Deadline, fd};
use crate::{Error, Result};
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The read buffer's size: room for a whole packet after a partly read one.
const READ_CHUNK: usize = 4 * fd::PIPE_PACKET_MAX;

/// The descriptors of one end.
pub(crate) enum Fds {
    /// One socket, both directions.
    Socket(OwnedFd),
    /// A pipe to read from and one to write to, either absent for a one-way end; `packet`
    /// when the pipe read from is in packet mode.
    Pipes { read: Option<OwnedFd>, write: Option<OwnedFd>, packet: bool },
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

    /// Reads once more from `fd`, after what is buffered: `want` bytes at most, or a whole
    /// packet from a packet-mode pipe (which a shorter read would cut). Returns false at end
    /// of file.
    fn fill(&mut self, fd: BorrowedFd<'_>, want: usize, packet: bool) -> Result<bool> {
        if self.data.len() < READ_CHUNK {
            self.data.resize(READ_CHUNK, 0);
        }
        if self.data.len() - self.end < fd::PIPE_PACKET_MAX {
            // Keep what is unread, at the front.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.data.len() - self.end;
        let ask = if packet { room } else { want.min(room) };
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
    buf: RefCell<ReadBuf>,
}

impl Stream {
    pub(crate) fn new(fds: Fds, pending: Vec<u8>) -> Stream {
        let end = pending.len();
        Stream { fds, buf: RefCell::new(ReadBuf { data: pending, start: 0, end }) }
    }

    pub(crate) fn fds(&self) -> &Fds {
        &self.fds
    }

    /// Whether reads come from a packet-mode pipe.
    fn packet(&self) -> bool {
        matches!(self.fds, Fds::Pipes { packet: true, .. })
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

    /// The bytes read ahead and not yet taken (they travel with the end to a child).
    pub(crate) fn pending(&self) -> Vec<u8> {
        self.buf.borrow().buffered().to_vec()
    }

    /// Whether a read ahead left bytes in the buffer: then the end is readable without
    /// asking the kernel.
    pub(crate) fn has_buffered(&self) -> bool {
        self.buf.borrow().start < self.buf.borrow().end
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
            Fds::Pipes { .. } => fd::write_all_pipe(fd, &[header, payload]),
        };
        result.map_err(Error::from_write)
    }

    /// Reads a frame header: the payload length, or `None` at a clean end of stream.
    pub(crate) fn recv_header(&self, fd: BorrowedFd<'_>) -> Result<Option<u64>> {
        let packet = self.packet();
        let mut buf = self.buf.borrow_mut();
        while buf.buffered().len() < 4 {
            let want = 4 - buf.buffered().len();
            if !buf.fill(fd, want, packet)? {
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
            if !buf.fill(fd, want, packet)? {
                return Err(cut_short());
            }
        }
        let long = u64::from_be_bytes(buf.buffered()[4..12].try_into().expect("8 bytes"));
        buf.consume(12);
        Ok(Some(long))
    }

    /// Fills `dst` with the next `dst.len()` payload bytes: first from the buffer, the rest
    /// straight from the descriptor (a large payload is not copied twice). On a packet-mode
    /// pipe every read asks for all that is left of this message, which is never less than
    /// the next packet: the rest of the message is whole packets of its own write.
    pub(crate) fn recv_payload(&self, fd: BorrowedFd<'_>, dst: &mut [u8]) -> Result<()> {
        let mut buf = self.buf.borrow_mut();
        let have = buf.buffered().len().min(dst.len());
        dst[..have].copy_from_slice(&buf.buffered()[..have]);
        buf.consume(have);
        let rest = &mut dst[have..];
        if !rest.is_empty() && !fd::recv_exact(fd, rest)? {
            return Err(cut_short());
        }
        Ok(())
    }

    /// Whether there is something to read, waiting until the deadline.
    pub(crate) fn poll(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(fd::poll_readable(&[fd], deadline)?[0])
    }
}
