//! Connections and pipes (Python's `multiprocessing.connection`): `pipe`, `pipe_simplex`,
//! `Connection`, `wait`, and sockets: [`Listener`], [`Client`] and their [`Address`]es.
//!
//! A message is framed as CPython frames it: a 4-byte big-endian signed length, then the
//! payload; a payload of 2 GiB or more is announced by `-1` and an 8-byte length. Objects sent
//! with [`Connection::send`] are encoded with postcard. With the same framing and CPython's
//! HMAC handshake, a Python `multiprocessing.connection.Client` or `Listener` can talk to a
//! Rust one with `send_bytes`/`recv_bytes`.

mod address;
mod auth;
mod listener;
mod stream;

pub use address::Address;
pub use auth::{answer_challenge, deliver_challenge};
pub use listener::{Client, HandshakeFailure, Listener, ListenerBuilder};

use crate::reduction::{RecvFd, SendFd};
use crate::sys::{Deadline, fd};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;
use stream::{Fds, Stream};

/// The largest message [`Connection::recv_bytes`] accepts by default on a pipe: above this a
/// length is taken to be garbage rather than a reason to allocate.
const DEFAULT_MAX_MESSAGE: u64 = 1 << 40;

/// The largest message a connection made by a [`Listener`] or a [`Client`] accepts by
/// default: its peer may be anyone who can reach the address.
pub(crate) const DEFAULT_SOCKET_MAX_MESSAGE: u64 = 1 << 30;

/// How much of an announced payload is allocated before its bytes arrive; past this the
/// buffer grows (doubling) only as they come, so that a peer must send what it announces
/// before we hold more of it.
const ALLOC_AHEAD: usize = 64 << 20;

/// One end of a pipe (Python's `multiprocessing.connection.Connection`).
///
/// Messages keep their boundaries and arrive whole and in order. Once the peer has closed its
/// end and every message it sent has been read, reads give [`Error::Eof`]; writing to a
/// connection whose peer is gone gives [`Error::BrokenPipe`] (never a `SIGPIPE` death: Rust
/// programs ignore `SIGPIPE`, and where a program restored its default, sends block it around
/// the write; a handle reads the disposition when it is made, or arrives in a child, so set
/// it before making the connections it should apply to).
///
/// A `Connection` can be passed to a child in its `args` under every start method (its
/// descriptor travels with it) and moved between threads, but not shared between threads: two
/// readers at once would split each other's messages. To read one end from several processes
/// (taking turns under a lock, as CPython's queues do), give each its own
/// [`try_clone`](Connection::try_clone): cloned ends read exactly one message per call. (A
/// handle that was never cloned reads ahead, one `read` for many small messages, so after a
/// raw [`fork`](crate::fork) read it in one of the two processes only.)
///
/// ```
/// use multiprocess::{Process, Connection, pipe};
/// fn child(conn: Connection) -> multiprocess::Result<()> {
///     conn.send(&vec![42, 0, 7])?;
///     Ok(())
/// }
/// let (parent_conn, child_conn) = pipe()?;
/// let mut p = Process::new(child, (child_conn,));
/// p.start()?;
/// assert_eq!(parent_conn.recv::<Vec<i32>>()?, vec![42, 0, 7]);
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Connection {
    /// `None` once closed.
    stream: Option<Stream>,
    /// Cleared when a message too long to take was left in the pipe.
    readable: Cell<bool>,
    writable: bool,
    /// The longest message `recv_bytes` and `recv_bytes_into` take.
    max_message: u64,
    /// Not `Sync`: concurrent readers or writers would interleave frames.
    _not_sync: PhantomData<Cell<()>>,
}

/// A duplex pipe (Python's `multiprocessing.Pipe()`): two connected ends, each of which can
/// send and receive.
///
/// ```
/// let (a, b) = multiprocess::pipe()?;
/// a.send(&"ping")?;
/// assert_eq!(b.recv::<String>()?, "ping");
/// b.send_bytes(b"pong")?;
/// assert_eq!(a.recv_bytes()?, b"pong");
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn pipe() -> Result<(Connection, Connection)> {
    let (a_read, b_write) = fd::pipe()?;
    let (b_read, a_write) = fd::pipe()?;
    // The side channel for handles in messages (see `stream`): bytes never go there.
    let (a_side, b_side) = fd::seqpacket_pair()?;
    let a = Fds::Pipes { read: Some(a_read), write: Some(a_write), side: Some(a_side) };
    let b = Fds::Pipes { read: Some(b_read), write: Some(b_write), side: Some(b_side) };
    Ok((Connection::new(a, true, true), Connection::new(b, true, true)))
}

/// A one-way pipe (Python's `multiprocessing.Pipe(duplex=False)`): `(receiver, sender)`.
///
/// ```
/// use multiprocess::{Error, pipe_simplex};
/// let (r, w) = pipe_simplex()?;
/// w.send(&1)?;
/// assert_eq!(r.recv::<i32>()?, 1);
/// assert!(r.readable() && !r.writable());
/// assert!(matches!(r.send(&2), Err(Error::ReadOnly)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn pipe_simplex() -> Result<(Connection, Connection)> {
    let (r, w) = fd::pipe()?;
    let reader = Fds::Pipes { read: Some(r), write: None, side: None };
    let writer = Fds::Pipes { read: None, write: Some(w), side: None };
    Ok((Connection::new(reader, true, false), Connection::new(writer, false, true)))
}

impl Connection {
    fn new(fds: Fds, readable: bool, writable: bool) -> Connection {
        Connection::with_stream(Stream::new(fds, Vec::new(), false), readable, writable)
    }

    fn with_stream(stream: Stream, readable: bool, writable: bool) -> Connection {
        Connection {
            stream: Some(stream),
            readable: Cell::new(readable),
            writable,
            max_message: DEFAULT_MAX_MESSAGE,
            _not_sync: PhantomData,
        }
    }

    /// A connection over a socket a [`Listener`] accepted or a [`Client`] connected.
    pub(crate) fn from_socket(fd: OwnedFd, max_message: u64) -> Connection {
        let mut conn = Connection::new(Fds::Socket(fd), true, true);
        conn.max_message = max_message;
        conn
    }

    /// Makes reads of a socket connection give up (`EAGAIN`) after `timeout` without data;
    /// `None` waits for ever again. Pipes have no such setting: they are left alone.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if let Fds::Socket(fd) = self.stream()?.fds() {
            crate::sys::socket::set_recv_timeout(fd.as_fd(), timeout)?;
        }
        Ok(())
    }

    /// A connection over an open, connected stream socket (`Connection(handle)`).
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use multiprocess::Connection;
    /// let (a, b) = UnixStream::pair()?;
    /// let (a, b) = (Connection::from_fd(a.into()), Connection::from_fd(b.into()));
    /// a.send_bytes(b"hi")?;
    /// assert_eq!(b.recv_bytes()?, b"hi");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Connection {
        Connection::new(Fds::Socket(fd), true, true)
    }

    fn stream(&self) -> Result<&Stream> {
        self.stream.as_ref().ok_or(Error::HandleClosed)
    }

    /// The stream and its read descriptor, or why this end cannot read.
    fn reader(&self) -> Result<(&Stream, BorrowedFd<'_>)> {
        let stream = self.stream()?;
        match stream.read_fd() {
            Some(fd) if self.readable.get() => Ok((stream, fd)),
            _ => Err(Error::WriteOnly),
        }
    }

    /// The stream and its write descriptor, or why this end cannot write.
    fn writer(&self) -> Result<(&Stream, BorrowedFd<'_>)> {
        let stream = self.stream()?;
        match stream.write_fd() {
            Some(fd) if self.writable => Ok((stream, fd)),
            _ => Err(Error::ReadOnly),
        }
    }

    /// Whether this end can receive (`readable`).
    ///
    /// ```
    /// let (r, w) = multiprocess::pipe_simplex()?;
    /// assert!(r.readable() && !w.readable());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn readable(&self) -> bool {
        self.readable.get()
    }

    /// Whether this end can send (`writable`).
    ///
    /// ```
    /// let (r, w) = multiprocess::pipe_simplex()?;
    /// assert!(w.writable() && !r.writable());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether [`close`](Connection::close) was called (`closed`).
    ///
    /// ```
    /// let (mut a, _b) = multiprocess::pipe()?;
    /// assert!(!a.closed());
    /// a.close();
    /// assert!(a.closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn closed(&self) -> bool {
        self.stream.is_none()
    }

    /// The descriptor to poll (`fileno()`): the read end's, or the write end's on a
    /// send-only end; [`Error::HandleClosed`] after close.
    ///
    /// ```
    /// let (mut a, _b) = multiprocess::pipe()?;
    /// assert!(a.fileno()? > 2);
    /// a.close();
    /// assert!(a.fileno().is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn fileno(&self) -> Result<RawFd> {
        let stream = self.stream()?;
        stream.read_fd().or_else(|| stream.write_fd()).map(|fd| fd.as_raw_fd()).ok_or(Error::HandleClosed)
    }

    /// Closes this end (`close()`); closing twice is fine. Dropping closes too.
    ///
    /// ```
    /// use multiprocess::{Error, pipe};
    /// let (mut a, b) = pipe()?;
    /// a.close();
    /// a.close();
    /// assert!(matches!(a.recv_bytes(), Err(Error::HandleClosed)));
    /// assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// A second handle on the same end, for another owner (`os.dup`). From then on both
    /// handles read exact lengths (two reads per message instead of one), so that each read
    /// takes one whole message and leaves the next in the pipe for whichever reads next;
    /// messages this handle had already read ahead are shared the same way (and go with the
    /// first of the two handles passed to a child).
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// let a2 = a.try_clone()?;
    /// a2.send(&5u8)?;
    /// assert_eq!(b.recv::<u8>()?, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Connection> {
        let dup = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| fd::dup(f.as_fd())).transpose();
        let fds = match self.stream()?.fds() {
            Fds::Socket(fd) => Fds::Socket(fd::dup(fd.as_fd())?),
            Fds::Pipes { read, write, side } => Fds::Pipes { read: dup(read)?, write: dup(write)?, side: dup(side)? },
        };
        // Two handles may read now: both read exact lengths, and share what this one had
        // read ahead, so that it goes to whichever reads next.
        let stream = self.stream()?.clone_with(fds);
        let mut conn = Connection::with_stream(stream, self.readable.get(), self.writable);
        conn.max_message = self.max_message;
        Ok(conn)
    }

    /// Sends an object (`send(obj)`), encoded with postcard. An object that cannot be encoded
    /// gives [`Error::Codec`] and sends nothing: the connection stays usable.
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send(&(1, 2.25, None::<u8>))?;
    /// assert_eq!(b.recv::<(i32, f64, Option<u8>)>()?, (1, 2.25, None));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, obj: &T) -> Result<()> {
        let (stream, fd) = self.writer()?;
        if !stream.carries_handles() {
            let bytes = postcard::to_allocvec(obj)?;
            return stream.send_frame(fd, &bytes);
        }
        let mut encoded = crate::reduction::encode_message(obj)?;
        if encoded.fds.is_empty() {
            stream.send_frame(fd, &encoded.bytes)?;
        } else {
            // SAFETY: the descriptors belong to the handles inside `obj`, which is borrowed
            // for the whole call; the kernel takes its own references as they are sent.
            let fds: Vec<_> = encoded.fds.iter().map(|&f| unsafe { BorrowedFd::borrow_raw(f) }).collect();
            stream.send_frame_with_handles(fd, &encoded.bytes, &fds)?;
        }
        // The message is with the peer: the holds on shared objects in it are its to take.
        encoded.delivered();
        Ok(())
    }

    /// Receives an object sent with [`send`](Connection::send) (`recv()`). [`Error::Eof`] once
    /// the peer closed and nothing is left; bytes that do not decode as `T` give
    /// [`Error::Codec`], and the next message is read normally.
    ///
    /// ```
    /// use multiprocess::Error;
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send(&vec![1, 2])?;
    /// drop(a);
    /// assert_eq!(b.recv::<Vec<i32>>()?, vec![1, 2]);
    /// assert!(matches!(b.recv::<Vec<i32>>(), Err(Error::Eof)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let (bytes, fds) = self.recv_message(usize::try_from(self.max_message).unwrap_or(usize::MAX))?;
        // Without descriptors no handle can decode: the plain path, no tables to set up.
        match fds? {
            fds if fds.is_empty() => crate::reduction::from_bytes_exact(&bytes),
            fds => crate::reduction::decode(&bytes, fds),
        }
    }

    /// Sends a descriptor, a duplicate of which [`recv_handle`](Connection::recv_handle)
    /// gives the peer (Python's `multiprocessing.reduction.send_handle(conn, handle,
    /// destination_pid)`; no pid is needed). Works on [`pipe`] ends and Unix-socket
    /// connections ([`Listener`], [`Client`], [`from_fd`](Connection::from_fd)); elsewhere
    /// (TCP, a one-way pipe) it is an [`Error::InvalidArgument`]. Pair each `send_handle`
    /// with one `recv_handle`, in order with the other messages, as in CPython.
    ///
    /// On a Unix socket the handle goes as CPython sends it (one byte with the descriptor
    /// attached, no frame), so a Python process's `reduction.recv_handle(conn)` takes it, and
    /// `recv_handle` here takes what Python's `send_handle` sent. On a `pipe()` it goes by
    /// the pipe's side channel.
    ///
    /// ```
    /// use std::io::{Read, Seek, Write};
    /// let (a, b) = multiprocess::pipe()?;
    /// let mut file = tempfile_in_tmp()?;
    /// file.write_all(b"shared offset")?;
    /// a.send_handle(&file)?;
    /// let mut same = std::fs::File::from(b.recv_handle()?);
    /// same.rewind()?;
    /// let mut text = String::new();
    /// same.read_to_string(&mut text)?;
    /// assert_eq!(text, "shared offset");
    /// # fn tempfile_in_tmp() -> std::io::Result<std::fs::File> {
    /// #     let path = std::env::temp_dir().join(format!("mp-doc-send-handle-{}", std::process::id()));
    /// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    /// #     std::fs::remove_file(&path)?;
    /// #     Ok(f)
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_handle(&self, handle: &impl AsFd) -> Result<()> {
        let (stream, fd) = self.writer()?;
        if stream.is_unix() {
            return stream.send_raw_handle(fd, handle.as_fd());
        }
        if !stream.carries_handles() {
            return Err(stream::cannot_carry());
        }
        stream.send_frame_with_handles(fd, &[], &[handle.as_fd()])
    }

    /// Receives a descriptor sent with [`send_handle`](Connection::send_handle), or by a
    /// Python process's `multiprocessing.reduction.send_handle` on a Unix socket (Python's
    /// `recv_handle(conn)`). The descriptor is close-on-exec and refers to the same open
    /// file as the sender's (one offset, one socket). If the next message is not a handle,
    /// the error says so (on a pipe the message is taken; on a socket the stream is out of
    /// step, as in CPython).
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use std::io::{Read, Write};
    /// use multiprocess::Connection;
    /// let (a, b) = UnixStream::pair()?;
    /// let (a, b) = (Connection::from_fd(a.into()), Connection::from_fd(b.into()));
    /// let (mut mine, theirs) = UnixStream::pair()?;
    /// a.send_handle(&theirs)?;
    /// drop(theirs);
    /// let mut received = UnixStream::from(b.recv_handle()?);
    /// received.write_all(b"over the passed socket")?;
    /// drop(received);
    /// let mut text = String::new();
    /// mine.read_to_string(&mut text)?;
    /// assert_eq!(text, "over the passed socket");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_handle(&self) -> Result<OwnedFd> {
        let (stream, fd) = self.reader()?;
        if !stream.carries_handles() {
            return Err(stream::cannot_carry());
        }
        let mut reader = stream.reader(fd);
        if stream.is_unix() {
            return reader.raw_handle();
        }
        let len = reader.header()?.ok_or(Error::Eof)?;
        let is_handle = reader.has_handles() && len == 0;
        if len > self.max_message {
            self.readable.set(false);
            return Err(Error::BadMessageLength { len, max: self.max_message });
        }
        // Whatever came is taken, so that the next read starts at the next message.
        recv_vec(&mut reader, len, self.max_message)?;
        let mut fds = reader.take_handles()?;
        if !is_handle || fds.len() != 1 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the next message is not a handle sent with send_handle",
            )));
        }
        Ok(fds.remove(0))
    }

    /// Sends `buf` as one message (`send_bytes(buf)`); any size, empty included.
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send_bytes(b"")?;
    /// a.send_bytes(b"hello world")?;
    /// assert_eq!(b.recv_bytes()?, b"");
    /// assert_eq!(b.recv_bytes()?, b"hello world");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        let (stream, fd) = self.writer()?;
        stream.send_frame(fd, buf)
    }

    /// Sends `buf[offset..offset + size]` (`send_bytes(buf, offset, size)`), `size` defaulting
    /// to the rest; a range outside `buf` is an [`Error::InvalidArgument`], not a panic.
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// let msg = b"abcdefghijklmnopqrstuvwxyz";
    /// a.send_bytes_range(msg, 7, Some(8))?;
    /// assert_eq!(b.recv_bytes()?, b"hijklmno");
    /// assert!(a.send_bytes_range(msg, 27, None).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn send_bytes_range(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        if offset > buf.len() {
            return Err(Error::InvalidArgument("buffer length < offset".into()));
        }
        let size = size.unwrap_or(buf.len() - offset);
        let end = offset.checked_add(size).filter(|&e| e <= buf.len());
        let end = end.ok_or_else(|| Error::InvalidArgument("buffer length < offset + size".into()))?;
        self.send_bytes(&buf[offset..end])
    }

    /// Receives one whole message (`recv_bytes()`).
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send_bytes(b"first")?;
    /// a.send_bytes(b"second")?;
    /// assert_eq!(b.recv_bytes()?, b"first");
    /// assert_eq!(b.recv_bytes()?, b"second");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_max(usize::try_from(self.max_message).unwrap_or(usize::MAX))
    }

    /// The longest message [`recv_bytes`](Connection::recv_bytes) and
    /// [`recv_bytes_into`](Connection::recv_bytes_into) take from this end: 1 TiB for a
    /// pipe or a [`from_fd`](Connection::from_fd) socket, 1 GiB for a connection a
    /// [`Listener`] accepted or a [`Client`] made (its peer may be anyone who can reach the
    /// address). A longer message gives
    /// [`Error::BadMessageLength`]. Python has no such limit (its `recv_bytes(maxlength)` is
    /// per call, here [`recv_bytes_max`](Connection::recv_bytes_max)).
    ///
    /// ```
    /// let (a, b) = multiprocess::pipe()?;
    /// assert_eq!(b.max_message(), 1 << 40);
    /// # drop(a);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        usize::try_from(self.max_message).unwrap_or(usize::MAX)
    }

    /// Sets the longest message this end takes (see [`max_message`](Connection::max_message)).
    ///
    /// ```
    /// use multiprocess::Error;
    /// let (a, mut b) = multiprocess::pipe()?;
    /// b.set_max_message(4);
    /// a.send_bytes(b"12345")?;
    /// assert!(matches!(b.recv_bytes(), Err(Error::BadMessageLength { len: 5, max: 4 })));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_max_message(&mut self, max: usize) {
        self.max_message = max as u64;
    }

    /// Receives one message of at most `maxlength` bytes (`recv_bytes(maxlength)`). A longer
    /// one gives [`Error::BadMessageLength`] and, as in CPython, leaves this end unreadable:
    /// its payload is still in the pipe and could not be told from the next message.
    ///
    /// ```
    /// use multiprocess::Error;
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send_bytes(&[0u8; 100])?;
    /// assert!(matches!(b.recv_bytes_max(10), Err(Error::BadMessageLength { len: 100, max: 10 })));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recv_bytes_max(&self, maxlength: usize) -> Result<Vec<u8>> {
        // Descriptors that came with the message are closed: bytes are all that is asked for.
        self.recv_message(maxlength).map(|(bytes, _)| bytes)
    }

    /// One message of at most `maxlength` bytes and the descriptors that came with it (or
    /// why they could not be had).
    fn recv_message(&self, maxlength: usize) -> Result<(Vec<u8>, Result<Vec<OwnedFd>>)> {
        let (stream, fd) = self.reader()?;
        let mut reader = stream.reader(fd);
        let len = reader.header()?.ok_or(Error::Eof)?;
        if len > maxlength as u64 {
            self.readable.set(false);
            return Err(Error::BadMessageLength { len, max: maxlength as u64 });
        }
        let bytes = recv_vec(&mut reader, len, maxlength as u64)?;
        Ok((bytes, reader.take_handles()))
    }

    /// Receives one message into `buf` (`recv_bytes_into(buf)`) and returns its length. A
    /// message longer than `buf` gives [`Error::BufferTooShort`] carrying the whole message.
    ///
    /// ```
    /// use multiprocess::Error;
    /// let (a, b) = multiprocess::pipe()?;
    /// a.send_bytes(&[1, 2, 3, 4])?;
    /// let mut buf = [0u8; 10];
    /// assert_eq!(b.recv_bytes_into(&mut buf[3..])?, 4);
    /// assert_eq!(buf, [0, 0, 0, 1, 2, 3, 4, 0, 0, 0]);
    /// a.send_bytes(&[9; 110])?;
    /// match b.recv_bytes_into(&mut buf) {
    ///     Err(Error::BufferTooShort(whole)) => assert_eq!(whole, vec![9; 110]),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let (stream, fd) = self.reader()?;
        let mut reader = stream.reader(fd);
        let len = reader.header()?.ok_or(Error::Eof)?;
        if len > buf.len() as u64 {
            if len > self.max_message {
                self.readable.set(false);
                return Err(Error::BadMessageLength { len, max: self.max_message });
            }
            return Err(Error::BufferTooShort(recv_vec(&mut reader, len, self.max_message)?));
        }
        let len = len as usize;
        reader.payload(&mut buf[..len])?;
        Ok(len)
    }

    /// Whether there is something to read, waiting up to `timeout` (`poll(timeout)`): `None`
    /// waits for ever, `Some(Duration::ZERO)` does not wait. True at end of file too, so that
    /// the next read reports it. Polling consumes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiprocess::pipe()?;
    /// assert!(!b.poll(Some(Duration::ZERO))?);
    /// a.send_bytes(b"")?;
    /// assert!(b.poll(Some(Duration::ZERO))?);
    /// assert!(b.poll(Some(Duration::ZERO))?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let (stream, fd) = self.reader()?;
        stream.poll(fd, Deadline::after(timeout))
    }
}

/// Reads a payload of `len` bytes into a new vector. Up to [`ALLOC_AHEAD`] bytes are
/// reserved at once; past that the vector doubles as the bytes arrive, so a peer that
/// announces more than it sends makes us hold little more than what it sent. The bytes are
/// read straight into the reserved capacity, never zeroed first: memory a peer announced but
/// did not fill is address space only. A length the allocator refuses is an error, not an
/// abort.
fn recv_vec(reader: &mut stream::Reader<'_>, len: u64, max: u64) -> Result<Vec<u8>> {
    let too_long = || Error::BadMessageLength { len, max };
    let len = usize::try_from(len).map_err(|_| too_long())?;
    let mut buf = Vec::new();
    while buf.len() < len {
        let filled = buf.len();
        let target = if filled == 0 { len.min(ALLOC_AHEAD) } else { len.min(filled.saturating_mul(2)) };
        buf.try_reserve_exact(target - filled).map_err(|_| too_long())?;
        let spare = &mut buf.spare_capacity_mut()[..target - filled];
        fd::advise_huge_pages(spare);
        reader.payload_uninit(spare)?;
        // SAFETY: `payload_uninit` returned Ok, so it wrote all `target - filled` bytes after
        // the first `filled`, inside the capacity reserved above.
        unsafe { buf.set_len(target) };
    }
    Ok(buf)
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fileno", &self.fileno().ok())
            .field("readable", &self.readable.get())
            .field("writable", &self.writable)
            .finish()
    }
}

/// On the way to a child, a connection travels as its descriptors (`SCM_RIGHTS`), with the
/// bytes it had read ahead, so that no message is lost in the move.
#[derive(Serialize, Deserialize)]
struct Wire<F> {
    socket: bool,
    shared: bool,
    read: Option<F>,
    write: Option<F>,
    side: Option<F>,
    readable: bool,
    writable: bool,
    max_message: u64,
    pending: Vec<u8>,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let stream = self.stream.as_ref().ok_or_else(|| crate::error::ser_custom("handle is closed"))?;
        if stream.holds_received_handles() {
            return Err(crate::error::ser_custom(
                "this connection holds the handles of messages it read ahead: receive them before sending it",
            ));
        }
        let (socket, read, write, side) = match stream.fds() {
            Fds::Socket(fd) => (true, Some(SendFd(fd.as_fd())), None, None),
            Fds::Pipes { read, write, side } => (false, send_fd(read), send_fd(write), send_fd(side)),
        };
        let shared = stream.shared();
        let pending = stream.pending_for_transfer();
        Wire {
            socket,
            shared,
            read,
            write,
            side,
            readable: self.readable.get(),
            writable: self.writable,
            max_message: self.max_message,
            pending,
        }
        .serialize(s)
    }
}

fn send_fd(fd: &Option<OwnedFd>) -> Option<SendFd<'_>> {
    fd.as_ref().map(|f| SendFd(f.as_fd()))
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Connection, D::Error> {
        let w = Wire::<RecvFd>::deserialize(d)?;
        let fds = match (w.socket, w.read) {
            (true, Some(fd)) => Fds::Socket(fd.0),
            (true, None) => return Err(crate::error::de_custom("a socket connection without its socket")),
            (false, read) => {
                Fds::Pipes { read: read.map(|f| f.0), write: w.write.map(|f| f.0), side: w.side.map(|f| f.0) }
            }
        };
        let mut conn = Connection::with_stream(Stream::new(fds, w.pending, w.shared), w.readable, w.writable);
        conn.max_message = w.max_message;
        Ok(conn)
    }
}

/// Something [`wait`] can wait on: a [`Connection`] (ready when it has a message or hit end
/// of file) or any descriptor, such as a process [`sentinel`](crate::Process::sentinel).
///
/// ```
/// use multiprocess::connection::{Waitable, wait};
/// let (a, b) = multiprocess::pipe()?;
/// a.send(&0u8)?;
/// let objects: [&dyn Waitable; 1] = [&b];
/// assert_eq!(wait(&objects, None)?, vec![0]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub trait Waitable {
    /// The descriptor to poll for readability.
    fn wait_fd(&self) -> Result<BorrowedFd<'_>>;
    /// Whether the object is ready without asking the kernel (a connection holding bytes it
    /// read ahead).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        self.reader().map(|(_, fd)| fd)
    }
    fn ready_now(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::has_buffered)
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

impl Waitable for OwnedFd {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

/// Waits until at least one of `objects` is ready or `timeout` passes, and returns the
/// indices of the ready ones, in order (Python's `multiprocessing.connection.wait(objects,
/// timeout)`, which returns the objects). `None` waits for ever; `Some(Duration::ZERO)`
/// polls. Readiness is level-triggered: an ended process's sentinel stays ready.
///
/// ```
/// use multiprocess::connection::wait;
/// use std::time::Duration;
/// let (a, b) = multiprocess::pipe()?;
/// let (c, d) = multiprocess::pipe()?;
/// assert!(wait(&[&b, &d], Some(Duration::ZERO))?.is_empty());
/// c.send(&1)?;
/// assert_eq!(wait(&[&b, &d], Some(Duration::from_secs(1)))?, vec![1]);
/// # drop((a, c));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let fds = objects.iter().map(|o| o.wait_fd()).collect::<Result<Vec<_>>>()?;
    let buffered: Vec<bool> = objects.iter().map(|o| o.ready_now()).collect();
    // Something already buffered is ready now: then only look at the rest, without waiting.
    let timeout = if buffered.contains(&true) { Some(Duration::ZERO) } else { timeout };
    let ready = fd::poll_readable(&fds, Deadline::after(timeout))?;
    Ok((0..objects.len()).filter(|&i| ready[i] || buffered[i]).collect())
}
