//! The fast way between a local client and its server: a mailbox in a shared-memory segment,
//! one per connection, with futex words to sleep on.
//!
//! A unix socket costs two system calls and a wake-up each way, more than a manager call may
//! take (CPython's take about 25 µs each). The mailbox costs a store and, only if the other
//! side sleeps, a futex wake; a waiter on another CPU spins briefly before it sleeps, one on
//! the same CPU sleeps at once. The socket stays: it carries what does not fit in the
//! mailbox, and its closing tells each side that the other is gone.
//!
//! The client makes the segment and hands its descriptor to the server over the socket,
//! right after the hello, so the mailbox is shared by exactly these two processes. Every
//! length read from it is checked: a peer that writes garbage there gets a protocol error,
//! never a read out of bounds.

use crate::heap::{Shared, SharedState};
use crate::sys::{Deadline, fd, futex, proc};
use crate::{Connection, Error, Result};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

/// Bytes each way in the mailbox; a longer message goes on the socket.
pub(crate) const AREA: usize = 60 * 1024;

/// A length that says "on the socket".
const ON_SOCKET: u32 = u32::MAX;

/// How long a waiter sleeps before it looks whether the other side is gone.
const SLICE: Duration = Duration::from_millis(100);

/// Spins before sleeping, when the other side runs on another CPU (a few microseconds).
const SPINS: u32 = 4000;

/// The mailbox's words. The request side is written by the client, the reply side by the
/// server; each on its own cache line.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct Mailbox {
    request: Side,
    reply: Side,
}

#[repr(C, align(64))]
#[derive(Default)]
struct Side {
    /// Messages sent this way so far; the futex word the receiver sleeps on.
    sent: AtomicU32,
    /// The last message's length, or [`ON_SOCKET`].
    len: AtomicU32,
    /// Whether the receiver may be asleep on `sent`.
    receiver_asleep: AtomicU32,
    /// The sender's CPU, plus one (0: unknown): whether spinning for it can help.
    sender_cpu: AtomicU32,
}

// SAFETY: atomics only; zeroes are a mailbox with nothing sent.
unsafe impl SharedState for Mailbox {}

/// One end of a mailbox.
pub(crate) struct Channel {
    shared: Shared<Mailbox>,
    /// Messages this end sent, and received (its own counts, never read from the segment).
    sent: u32,
    received: u32,
}

impl Channel {
    /// A new mailbox, for a client to offer its server.
    pub(crate) fn create() -> Result<Channel> {
        let shared = Shared::alone(2 * AREA)?;
        Ok(Channel { shared, sent: 0, received: 0 })
    }

    /// The server's end of the mailbox whose descriptor came on `conn`.
    pub(crate) fn receive(conn: &Connection) -> Result<Channel> {
        let socket = raw(conn)?;
        let mut byte = [0u8; 1];
        let (n, mut fds) = fd::recv_with_fds(socket, &mut byte)?;
        if n != 1 || fds.len() != 1 {
            return Err(Error::Codec("a channel offer without its segment".into()));
        }
        let shared = Shared::<Mailbox>::from_alone_fd(fds.remove(0))?;
        if shared.tail().1 < 2 * AREA {
            return Err(Error::Codec("a channel segment too small for its mailbox".into()));
        }
        Ok(Channel { shared, sent: 0, received: 0 })
    }

    /// Hands the mailbox's descriptor to the server on `conn`.
    pub(crate) fn offer(&self, conn: &Connection) -> Result<()> {
        fd::send_with_fds(raw(conn)?, &[1], &[self.shared.alone_fd()]).map_err(Error::from_write)
    }

    /// Sends `message` one way: into the mailbox, or on the socket if it does not fit.
    fn send(&mut self, conn: &Connection, replies: bool, message: &[u8]) -> Result<()> {
        let side = side(&self.shared, replies);
        let fits = message.len() <= AREA;
        if fits {
            // SAFETY: the area holds AREA bytes and the message fits; the peer does not touch
            // this direction's area until it sees `sent` move (a peer that does only spoils
            // bytes, which the receiver decodes and checks).
            unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), area(&self.shared, replies), message.len()) };
            side.len.store(message.len() as u32, Ordering::Relaxed);
        } else {
            side.len.store(ON_SOCKET, Ordering::Relaxed);
        }
        self.sent = self.sent.wrapping_add(1);
        side.sender_cpu.store(proc::current_cpu(), Ordering::Relaxed);
        side.sent.store(self.sent, Ordering::Release);
        // Orders the store above before the look at `receiver_asleep` (a receiver marks
        // itself asleep before it looks at `sent`): one of the two sees the other.
        fence(Ordering::SeqCst);
        if side.receiver_asleep.load(Ordering::Relaxed) != 0 {
            futex::wake(&side.sent, 1);
        }
        if !fits {
            // After `sent` moved: a receiver that finds the socket readable before it knows
            // a message is coming takes it for the peer's departure.
            conn.send_bytes(message)?;
        }
        Ok(())
    }

    /// Waits for the next message one way, until `gone()` says the peer left (checked every
    /// [`SLICE`] while asleep); `None` then.
    fn receive_next(&mut self, conn: &Connection, replies: bool, gone: &dyn Fn() -> bool) -> Result<Option<Vec<u8>>> {
        let next = self.received.wrapping_add(1);
        let side = side(&self.shared, replies);
        let arrived = || side.sent.load(Ordering::Acquire) == next;
        if !arrived() {
            let spin = futex::worth_spinning(proc::current_cpu(), side.sender_cpu.load(Ordering::Relaxed));
            if !(spin && futex::spin_until(SPINS, arrived)) {
                loop {
                    side.receiver_asleep.store(1, Ordering::SeqCst);
                    if arrived() {
                        break;
                    }
                    let slept = futex::wait(&side.sent, self.received, Deadline::after(Some(SLICE)));
                    if arrived() {
                        break;
                    }
                    // A message announced just now may be what made the socket readable.
                    if !slept && gone() && !arrived() {
                        side.receiver_asleep.store(0, Ordering::Relaxed);
                        return Ok(None);
                    }
                }
                side.receiver_asleep.store(0, Ordering::Relaxed);
            }
        }
        self.received = next;
        let len = side.len.load(Ordering::Relaxed);
        if len == ON_SOCKET {
            return conn.recv_bytes().map(Some);
        }
        let len = len as usize;
        if len > AREA {
            return Err(Error::Codec(format!("a message of {len} bytes in a mailbox of {AREA}")));
        }
        let mut out = vec![0u8; len];
        // SAFETY: `len` is within the area (checked above), which the sender finished writing
        // before it moved `sent` (acquire above).
        unsafe { std::ptr::copy_nonoverlapping(area(&self.shared, replies), out.as_mut_ptr(), len) };
        Ok(Some(out))
    }

    /// The client's call: sends a request, waits for its reply; `server_gone` is asked while
    /// it sleeps.
    pub(crate) fn call(
        &mut self,
        conn: &Connection,
        request: &[u8],
        server_gone: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>> {
        self.send(conn, false, request)?;
        self.receive_next(conn, true, server_gone)?.ok_or(Error::ManagerGone)
    }

    /// A hostile client's move, for the fuzz tests: announces a request of `len` bytes with
    /// `bytes` in the area, whatever they are.
    #[cfg(test)]
    pub(crate) fn send_garbage(&mut self, len: u32, bytes: &[u8]) {
        let side = side(&self.shared, false);
        let n = bytes.len().min(AREA);
        // SAFETY: at most AREA bytes into the request area.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), area(&self.shared, false), n) };
        side.len.store(len, Ordering::Relaxed);
        self.sent = self.sent.wrapping_add(1);
        side.sent.store(self.sent, Ordering::Release);
        fence(Ordering::SeqCst);
        futex::wake(&side.sent, 1);
    }

    /// The reply to [`send_garbage`](Channel::send_garbage), if one comes within `wait`.
    #[cfg(test)]
    pub(crate) fn reply_within(&mut self, conn: &Connection, wait: Duration) -> Option<Vec<u8>> {
        let start = std::time::Instant::now();
        let gone = || start.elapsed() > wait || conn.poll(Some(Duration::ZERO)).unwrap_or(true);
        self.receive_next(conn, true, &gone).ok().flatten()
    }

    /// The server's wait for the next request; `None` once the client is gone.
    pub(crate) fn next_request(&mut self, conn: &Connection) -> Result<Option<Vec<u8>>> {
        // While no request is under way the client writes nothing on the socket: a readable
        // socket is its end.
        let gone = || conn.poll(Some(Duration::ZERO)).unwrap_or(true);
        self.receive_next(conn, false, &gone)
    }

    /// The server's reply to the request it took last.
    pub(crate) fn reply(&mut self, conn: &Connection, reply: &[u8]) -> Result<()> {
        self.send(conn, true, reply)
    }
}

/// The area of one direction: requests first, replies after.
fn area(shared: &Shared<Mailbox>, replies: bool) -> *mut u8 {
    let (tail, _) = shared.tail();
    // SAFETY: the tail holds both areas (checked at creation and on receipt).
    unsafe { tail.add(if replies { AREA } else { 0 }) }
}

/// The words of one direction.
fn side(shared: &Shared<Mailbox>, replies: bool) -> &Side {
    let m = shared.state();
    if replies { &m.reply } else { &m.request }
}

/// A connection's socket, for the descriptor's passage.
fn raw(conn: &Connection) -> Result<BorrowedFd<'_>> {
    let fd = conn.fileno()?;
    // SAFETY: the descriptor belongs to `conn`, which outlives the borrow.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}
