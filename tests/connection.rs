//! Pipes and connections: CONFORMANCE.md section 5 (CONN-01..CONN-26) and section 7
//! (`connection.wait`, WAIT-01..WAIT-05). Cases with a child run under every start method;
//! where Rust needs another shape than Python, the case's doc comment says how it was
//! translated.
//!
//! Under plain `cargo test` a fork child of another test inherits every descriptor this test
//! has open at that moment, so an end of file can come late (when that child exits). No child
//! here waits for an end of file to exit: echo children stop on an empty message, as CPython's
//! `_echo` stops on its `SENTINEL`, so such delays stay bounded.
mod common;
use multiprocess::connection::{Waitable, wait};
use multiprocess::*;
use serde::{Serialize, Serializer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// CPython's `TIMEOUT1`.
const TIMEOUT1: Duration = Duration::from_millis(100);
/// CPython's `SENTINEL` for `_echo`: an empty message tells the child to stop.
const SENTINEL: &[u8] = b"";
/// How long a test waits for something that should come at once, before calling it a hang.
const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// CPython's `_echo`: sends back every message until the empty one.
fn echo(conn: Connection) -> Result<()> {
    loop {
        let msg = conn.recv_bytes()?;
        if msg == SENTINEL {
            return Ok(());
        }
        conn.send_bytes(&msg)?;
    }
}

/// Starts a daemonic echo child, as `test_connection` does; returns our end and the process.
fn start_echo(m: StartMethod) -> (Connection, Process) {
    let (conn, child_conn) = pipe().unwrap();
    let mut p = get_context(m).process(echo, (child_conn,)).with_daemon(true);
    p.start().unwrap();
    (conn, p)
}

/// Tells the echo child to stop and checks that it exited cleanly.
fn stop_echo(conn: Connection, mut p: Process) {
    conn.send_bytes(SENTINEL).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

fn i32s_to_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn bytes_to_i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect()
}

/// Times one call.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// A small xorshift generator seeded from the pid and the clock, for CPython's
/// `random.random()` gaps (no rand crate in this project).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        Jitter((u64::from(getpid()) << 32 | u64::from(nanos)) | 1)
    }

    /// A duration in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 1_000_000) as f64 / 1_000_000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// CONN-01..CONN-09: CPython's test_connection, through an echo child.

start_methods! {
    /// CONN-01: `fileno()` is a descriptor number; `send` and `send_bytes` return `()`
    /// (Python: `None`).
    fn conn_01_fileno_and_send_return_unit(m) {
        let (conn, p) = start_echo(m);
        let fd = conn.fileno().unwrap();
        assert!(fd > 2, "fileno {fd}");
        // `()` is checked by the compiler: the pattern only matches a unit value.
        let () = conn.send(&1u8).unwrap();
        assert_eq!(conn.recv::<u8>().unwrap(), 1);
        let () = conn.send_bytes(b"x").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"x");
        stop_echo(conn, p);
    }

    /// CONN-02: `send([1, 2.25, None])` comes back as the same value (a tuple here: Rust's
    /// lists are homogeneous); `send_bytes(b'hello world')` comes back as the same bytes.
    fn conn_02_send_recv_roundtrip(m) {
        let (conn, p) = start_echo(m);
        let seq = (1i32, 2.25f64, None::<i32>);
        conn.send(&seq).unwrap();
        assert_eq!(conn.recv::<(i32, f64, Option<i32>)>().unwrap(), seq);
        conn.send_bytes(b"hello world").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello world");
        stop_echo(conn, p);
    }

    /// CONN-03: `array('i', [0,1,2,3])` into `array('i', [0]*10)`: returns 16 (4 items of 4
    /// bytes) and the buffer is `[0,1,2,3,0,0,0,0,0,0]`.
    fn conn_03_recv_bytes_into(m) {
        let (conn, p) = start_echo(m);
        let arr = [0i32, 1, 2, 3];
        conn.send_bytes(&i32s_to_bytes(&arr)).unwrap();
        let mut buffer = [0u8; 40];
        assert_eq!(conn.recv_bytes_into(&mut buffer).unwrap(), 16);
        assert_eq!(bytes_to_i32s(&buffer), [0, 1, 2, 3, 0, 0, 0, 0, 0, 0]);
        stop_echo(conn, p);
    }

    /// CONN-04: the same with the offset `3 * itemsize` (Python's `recv_bytes_into(buf,
    /// offset)` is a subslice here): returns 16; the buffer is `[0,0,0,0,1,2,3,0,0,0]`.
    fn conn_04_recv_bytes_into_at_offset(m) {
        let (conn, p) = start_echo(m);
        let arr = [0i32, 1, 2, 3];
        conn.send_bytes(&i32s_to_bytes(&arr)).unwrap();
        let mut buffer = [0u8; 40];
        assert_eq!(conn.recv_bytes_into(&mut buffer[3 * 4..]).unwrap(), 16);
        assert_eq!(bytes_to_i32s(&buffer), [0, 0, 0, 0, 1, 2, 3, 0, 0, 0]);
        stop_echo(conn, p);
    }

    /// CONN-05: a 110-byte message into a 40-byte buffer gives `BufferTooShort` carrying the
    /// whole message (`e.args == (longmsg,)`), and the connection goes on working.
    fn conn_05_buffer_too_short_carries_message(m) {
        let (conn, p) = start_echo(m);
        let longmsg = b"hello world".repeat(10);
        assert_eq!(longmsg.len(), 110);
        conn.send_bytes(&longmsg).unwrap();
        let mut buffer = [b' '; 40];
        match conn.recv_bytes_into(&mut buffer) {
            Err(Error::BufferTooShort(whole)) => assert_eq!(whole, longmsg),
            other => panic!("expected BufferTooShort, got {other:?}"),
        }
        conn.send_bytes(b"next").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"next");
        stop_echo(conn, p);
    }

    /// CONN-06: on an empty pipe `poll()` and `poll(-1)` are False at once (both are
    /// `poll(Some(ZERO))` here: Rust's `Duration` has no negative values, and `poll(None)`
    /// waits for ever); `poll(TIMEOUT1)` is False after TIMEOUT1.
    fn conn_06_poll_empty(m) {
        let (conn, p) = start_echo(m);
        let (ready, elapsed) = timed(|| conn.poll(Some(Duration::ZERO)).unwrap());
        assert!(!ready);
        common::assert_prompt(elapsed);
        let (ready, elapsed) = timed(|| conn.poll(Some(TIMEOUT1)).unwrap());
        assert!(!ready);
        common::assert_timeout_elapsed(elapsed, TIMEOUT1);
        stop_echo(conn, p);
    }

    /// CONN-07: the peer sent `None` 0.1 s earlier: `poll(TIMEOUT1)` is True at once, and
    /// `recv()` gives `None`.
    fn conn_07_poll_ready(m) {
        let (conn, p) = start_echo(m);
        conn.send(&None::<i32>).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (ready, elapsed) = timed(|| conn.poll(Some(TIMEOUT1)).unwrap());
        assert!(ready);
        common::assert_prompt(elapsed);
        assert_eq!(conn.recv::<Option<i32>>().unwrap(), None);
        stop_echo(conn, p);
    }

    /// CONN-08: once the child has closed its end (after the SENTINEL), our end is still
    /// readable and writable, `poll()` is True (end of file is something to read), and
    /// `recv()` and `recv_bytes()` give `Eof` (EOFError), for good.
    fn conn_08_eof_after_child_closes(m) {
        let (conn, mut p) = start_echo(m);
        conn.send_bytes(SENTINEL).unwrap();
        assert!(conn.readable());
        assert!(conn.writable());
        assert!(conn.poll(Some(LONG)).unwrap(), "no end of file after the child closed its end");
        assert!(matches!(conn.recv::<i32>(), Err(Error::Eof)));
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
        assert!(conn.poll(Some(Duration::ZERO)).unwrap(), "poll is True at end of file, every time");
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }

    /// CONN-09: `b'X' * 16 MiB` round-trips through the echo child.
    fn conn_09_sixteen_mib_echo(m) {
        let (conn, p) = start_echo(m);
        let really_big_msg = vec![b'X'; 16 * 1024 * 1024];
        conn.send_bytes(&really_big_msg).unwrap();
        let back = conn.recv_bytes().unwrap();
        assert!(back == really_big_msg, "16 MiB came back altered ({} bytes)", back.len());
        stop_echo(conn, p);
    }

    /// A message of any size: 64 MiB (the figure), with a pattern that shows a lost,
    /// repeated or reordered chunk, round-trips through the echo child; so does `send` of a
    /// 64 MiB object.
    fn conn_09_sixty_four_mib_echo(m) {
        let (conn, p) = start_echo(m);
        let msg: Vec<u8> = (0..64u32 * 1024 * 1024).map(|i| (i ^ (i >> 11) ^ (i >> 21)) as u8).collect();
        conn.send_bytes(&msg).unwrap();
        let back = conn.recv_bytes().unwrap();
        assert_eq!(back.len(), msg.len());
        assert!(back == msg, "64 MiB came back altered");
        let words: Vec<u32> = (0..16u32 * 1024 * 1024).collect();
        conn.send(&words).unwrap();
        assert!(conn.recv::<Vec<u32>>().unwrap() == words, "a 16 Mi-element Vec<u32> came back altered");
        stop_echo(conn, p);
    }
}

/// Message sizes on both sides of the 4-byte header, of a page (4096, where a packet-mode pipe
/// splits a write) and of a socket's or pipe's buffer.
fn awkward_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 3, 4, 5, 100];
    for edge in [4092, 4096, 8188, 8192, 16 * 1024, 65536, 1 << 20] {
        sizes.extend(edge - 5..=edge + 5);
    }
    sizes
}

/// A message of `len` bytes whose content depends on its length and position.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ len) as u8).collect()
}

start_methods! {
    /// CONN-09 at every awkward size but 0: each message comes back whole and unaltered through
    /// the echo child, read with `recv_bytes` and with `recv_bytes_into` a buffer of exactly its
    /// size.
    fn conn_09_awkward_sizes_echo(m) {
        let (conn, p) = start_echo(m);
        // Not 0: the empty message stops the echo child.
        for len in awkward_sizes().into_iter().filter(|&len| len > 0) {
            let msg = patterned(len);
            conn.send_bytes(&msg).unwrap();
            assert!(conn.recv_bytes().unwrap() == msg, "{len} bytes came back altered");
            conn.send_bytes(&msg).unwrap();
            let mut buf = vec![0u8; len];
            assert_eq!(conn.recv_bytes_into(&mut buf).unwrap(), len);
            assert!(buf == msg, "{len} bytes came back altered into a buffer");
        }
        stop_echo(conn, p);
    }
}

/// Every awkward size sent back to back by one thread while another reads (so the pipe fills
/// and drains mid-message), over a duplex pipe, a simplex pipe and a socket: every message
/// arrives whole, in order; into a too-small buffer, `BufferTooShort` carries it whole and the
/// next message is intact.
#[test]
fn conn_09_awkward_sizes_back_to_back() {
    let g = common::LeakGuard::new();
    for kind in ["duplex", "simplex", "socket"] {
        let (r, w) = match kind {
            "duplex" => pipe().unwrap(),
            "simplex" => pipe_simplex().unwrap(),
            _ => {
                let (a, b) = UnixStream::pair().unwrap();
                (Connection::from_fd(a.into()), Connection::from_fd(b.into()))
            }
        };
        let sender = std::thread::spawn(move || -> Result<Connection> {
            for len in awkward_sizes() {
                w.send_bytes(&patterned(len))?;
                w.send_bytes(&patterned(len))?;
            }
            Ok(w)
        });
        for len in awkward_sizes() {
            let msg = patterned(len);
            assert!(r.recv_bytes().unwrap() == msg, "{kind}: {len} bytes arrived altered");
            let mut small = [0u8; 4];
            match r.recv_bytes_into(&mut small) {
                Ok(n) => assert!(n == len && small[..n] == msg[..], "{kind}: {len} bytes arrived altered"),
                Err(Error::BufferTooShort(whole)) => {
                    assert!(len > 4 && whole == msg, "{kind}: BufferTooShort for {len} bytes altered it")
                }
                Err(e) => panic!("{kind}: {len} bytes into a 4-byte buffer: {e:?}"),
            }
        }
        let w = sender.join().unwrap().unwrap();
        drop(w);
        assert!(matches!(r.recv_bytes(), Err(Error::Eof)), "{kind}: more than was sent");
    }
    g.check();
}

// ---------------------------------------------------------------------------------------------
// CONN-10..CONN-19.

/// CONN-10: `r, w = Pipe(duplex=False)`: `w.send(1)` gives `r.recv() == 1`; `r` is readable
/// and not writable, `w` the reverse; `r.send(2)` is `ReadOnly` ('connection is read-only'),
/// `w.recv()` and `w.poll()` are `WriteOnly` ('connection is write-only').
#[test]
fn conn_10_simplex_directions() {
    let g = common::LeakGuard::new();
    let (reader, writer) = pipe_simplex().unwrap();
    writer.send(&1).unwrap();
    assert_eq!(reader.recv::<i32>().unwrap(), 1);
    assert!(reader.readable());
    assert!(!reader.writable());
    assert!(!writer.readable());
    assert!(writer.writable());
    let e = reader.send(&2).unwrap_err();
    assert!(matches!(e, Error::ReadOnly), "{e:?}");
    assert_eq!(e.to_string(), "connection is read-only");
    assert!(matches!(reader.send_bytes(b"2"), Err(Error::ReadOnly)));
    let e = writer.recv::<i32>().unwrap_err();
    assert!(matches!(e, Error::WriteOnly), "{e:?}");
    assert_eq!(e.to_string(), "connection is write-only");
    assert!(matches!(writer.recv_bytes(), Err(Error::WriteOnly)));
    assert!(matches!(writer.poll(Some(Duration::ZERO)), Err(Error::WriteOnly)));
    drop((reader, writer));
    g.check();
}

start_methods! {
    /// CONN-11: the parent closes its copy of the child's end right after `start()` (here
    /// `start()` itself drops it, as the end was moved into the process's args): the echo
    /// still works.
    fn conn_11_parent_drops_child_end_right_after_start(m) {
        let (conn, p) = start_echo(m);
        conn.send_bytes(b"hello").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello");
        stop_echo(conn, p);
    }
}

/// CONN-12: `send_bytes(msg, offset, size)` (`send_bytes_range` here) on the 26-letter
/// message: `(5)` gives `msg[5:]`, `(7, 8)` gives `msg[7:15]`, `(26)` and `(26, 0)` give
/// `b''`.
#[test]
fn conn_12_send_bytes_range() {
    let g = common::LeakGuard::new();
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    let (a, b) = pipe().unwrap();
    a.send_bytes(msg).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), msg);
    a.send_bytes_range(msg, 5, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[5..]);
    a.send_bytes_range(msg, 7, Some(8)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[7..15]);
    a.send_bytes_range(msg, 26, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    a.send_bytes_range(msg, 26, Some(0)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    drop((a, b));
    g.check();
}

/// CONN-13: `send_bytes(msg, 27)`, `(22, 5)` and `(26, 1)` are `InvalidArgument` (ValueError)
/// with CPython's messages, and send nothing. CPython's `(-1)` and `(4, -1)` ('offset is
/// negative', 'size is negative') cannot be written: offset and size are `usize`.
#[test]
fn conn_13_send_bytes_range_out_of_bounds() {
    let g = common::LeakGuard::new();
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    let (a, b) = pipe().unwrap();
    let cases: [(usize, Option<usize>, &str); 4] = [
        (27, None, "buffer length < offset"),
        (22, Some(5), "buffer length < offset + size"),
        (26, Some(1), "buffer length < offset + size"),
        (0, Some(usize::MAX), "buffer length < offset + size"),
    ];
    for (offset, size, message) in cases {
        match a.send_bytes_range(msg, offset, size) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, message, "offset {offset}, size {size:?}"),
            other => panic!("offset {offset}, size {size:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(!b.poll(Some(Duration::ZERO)).unwrap(), "a refused send_bytes sent something");
    a.send_bytes(b"still fine").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"still fine");
    drop((a, b));
    g.check();
}

/// CONN-14: CPython's `with a, b:` is an explicit `close()` here (dropping closes too): inside,
/// 1729 goes through and neither end is closed; after, both are, and `recv()` on either is
/// `HandleClosed` ('handle is closed').
#[test]
fn conn_14_close_both_ends() {
    let g = common::LeakGuard::new();
    let (mut a, mut b) = pipe().unwrap();
    a.send(&1729).unwrap();
    assert_eq!(b.recv::<i32>().unwrap(), 1729);
    assert!(!a.closed());
    assert!(!b.closed());
    a.close();
    b.close();
    assert!(a.closed());
    assert!(b.closed());
    for conn in [&a, &b] {
        let e = conn.recv::<i32>().unwrap_err();
        assert!(matches!(e, Error::HandleClosed), "{e:?}");
        assert_eq!(e.to_string(), "handle is closed");
    }
    g.check();
}

/// CONN-15: on a closed connection every operation is `HandleClosed` ('handle is closed'):
/// send, send_bytes, send_bytes_range, recv, recv_bytes, recv_bytes_max, recv_bytes_into,
/// poll, fileno, try_clone, and `wait` on it; `close()` a second time is fine.
#[test]
fn conn_15_closed_connection() {
    let g = common::LeakGuard::new();
    let (mut a, b) = pipe().unwrap();
    a.close();
    a.close();
    assert!(a.closed());
    let mut buf = [0u8; 8];
    let results: Vec<(&str, Result<()>)> = vec![
        ("send", a.send(&1)),
        ("send_bytes", a.send_bytes(b"x")),
        ("send_bytes_range", a.send_bytes_range(b"xyz", 1, None)),
        ("recv", a.recv::<i32>().map(drop)),
        ("recv_bytes", a.recv_bytes().map(drop)),
        ("recv_bytes_max", a.recv_bytes_max(10).map(drop)),
        ("recv_bytes_into", a.recv_bytes_into(&mut buf).map(drop)),
        ("poll", a.poll(Some(Duration::ZERO)).map(drop)),
        ("fileno", a.fileno().map(drop)),
        ("try_clone", a.try_clone().map(drop)),
        ("wait", wait(&[&a], Some(Duration::ZERO)).map(drop)),
    ];
    for (what, result) in results {
        match result {
            Err(e @ Error::HandleClosed) => assert_eq!(e.to_string(), "handle is closed"),
            other => panic!("{what} on a closed connection: expected HandleClosed, got {other:?}"),
        }
    }
    // The peer sees the close as an end of file.
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    drop(b);
    g.check();
}

/// Restores the default SIGPIPE action (death), writes to pipes whose readers are gone, and
/// reports how each write ended. With `late`, it sends on `report` first, so the restoring
/// comes after this process's first send.
fn write_to_gone_reader(report: Connection, late: bool) -> Result<()> {
    if late {
        report.send(&"sent before restoring SIGPIPE")?;
    }
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler.
    let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(old, libc::SIG_ERR);
    let mut results = Vec::new();
    let (a, b) = pipe()?;
    drop(b);
    results.push(format!("{:?}", a.send(&1u8)));
    results.push(format!("{:?}", a.send_bytes(&vec![7u8; 1 << 20])));
    results.push(format!("{:?}", a.send_bytes(b"")));
    let (r, w) = pipe_simplex()?;
    drop(r);
    results.push(format!("{:?}", w.send(&"x")));
    let (ours, theirs) = UnixStream::pair().map_err(Error::Io)?;
    drop(theirs);
    results.push(format!("{:?}", Connection::from_fd(ours.into()).send_bytes(b"x")));
    report.send(&results)
}

/// Runs [`write_to_gone_reader`] in a child and checks that it lived and saw `BrokenPipe`
/// five times.
fn broken_pipe_in_child(m: StartMethod, late: bool) {
    let (r, w) = pipe().unwrap();
    let mut p = get_context(m).process(write_to_gone_reader, (w, late));
    p.start().unwrap();
    if late {
        assert_eq!(r.recv::<String>().unwrap(), "sent before restoring SIGPIPE");
    }
    let results = r.recv::<Vec<String>>();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "the child died writing to a closed pipe (-13 is SIGPIPE)");
    assert_eq!(results.unwrap(), ["Err(BrokenPipe)"; 5]);
}

start_methods! {
    /// CONN-16: `send` after the peer's read end has been closed is `BrokenPipe` (EPIPE), and
    /// never a SIGPIPE death: the child restores SIGPIPE's default action (which would kill it,
    /// exit code -13) before writing, and exits 0. Over a duplex pipe, a simplex pipe and a
    /// socket (`from_fd`).
    fn conn_16_broken_pipe_not_sigpipe(m) {
        broken_pipe_in_child(m, false);
    }
}

/// CONN-16 when the child restores SIGPIPE's default action after it has already sent once:
/// connections made after the change still give `BrokenPipe` (a handle reads the disposition
/// when it is made, as documented on `Connection`). CPython, which only ignores SIGPIPE at
/// startup, dies here (checked with 3.11.7: `Pipe(False)`, one send, SIG_DFL, reader closed,
/// send: exit -13).
mod conn_16_broken_pipe_not_sigpipe_restored_after_first_send {
    use super::*;

    #[test]
    fn fork() {
        common::run_case(StartMethod::Fork, |m| broken_pipe_in_child(m, true));
    }

    #[test]
    fn spawn() {
        common::run_case(StartMethod::Spawn, |m| broken_pipe_in_child(m, true));
    }

    #[test]
    fn forkserver() {
        common::run_case(StartMethod::ForkServer, |m| broken_pipe_in_child(m, true));
    }
}

/// A pipe holds a batch of small unread messages, as CPython's do: its duplex `Pipe()` (a
/// socket pair) takes 278 `send(n)` of small ints before blocking, its simplex one (an
/// `os.pipe`) 3575 (measured on CPython 3.11, Linux). Code that sends a batch of results and
/// then waits for its reader (a child that sends and exits before its parent reads, as many
/// Python programs do) relies on it. 200 must fit, with nobody reading, in both kinds.
#[test]
fn conn_pipe_holds_many_small_unread_messages() {
    let g = common::LeakGuard::new();
    const BATCH: u32 = 200;
    for duplex in [true, false] {
        let (r, w) = if duplex { pipe().unwrap() } else { pipe_simplex().unwrap() };
        let sender = std::thread::spawn(move || -> Result<Connection> {
            for i in 0..BATCH {
                w.send(&i)?;
            }
            Ok(w)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sender.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent_unread = sender.is_finished();
        // Read them all either way, so that a blocked sender finishes.
        let got: Vec<u32> = (0..BATCH).map(|_| r.recv::<u32>().unwrap()).collect();
        let w = sender.join().unwrap().unwrap();
        assert!(sent_unread, "duplex={duplex}: {BATCH} small sends blocked with nobody reading");
        assert_eq!(got, (0..BATCH).collect::<Vec<_>>());
        drop((r, w));
    }
    g.check();
}

/// CONN-17: `recv_bytes(maxlength=10)` (`recv_bytes_max` here) on a 100-byte message is
/// `BadMessageLength` ('bad message length'); as in CPython, the duplex end is then no longer
/// readable (the message is still in the pipe). A negative maxlength cannot be written.
#[test]
fn conn_17_bad_message_length() {
    let g = common::LeakGuard::new();
    let (a, b) = pipe().unwrap();
    a.send_bytes(&[0u8; 100]).unwrap();
    let e = b.recv_bytes_max(10).unwrap_err();
    assert!(matches!(e, Error::BadMessageLength { len: 100, max: 10 }), "{e:?}");
    assert!(e.to_string().starts_with("bad message length"), "{e}");
    assert!(!b.readable());
    assert!(b.writable());
    drop((a, b));
    g.check();
}

/// Fails to serialize, as a Python object that cannot be pickled.
struct Unserialisable;

impl Serialize for Unserialisable {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unserialisable cannot be serialized"))
    }
}

/// CONN-18: sending an object that cannot be serialized is `Codec` (pickling error) and sends
/// nothing, even when it fails halfway through (a tuple whose second field fails); a
/// `Connection` itself is such an object where descriptors cannot travel (a one-way pipe).
/// The connection stays usable.
/// CPython's `send_bytes('str')` TypeError cannot be written: `send_bytes` takes `&[u8]`.
#[test]
fn conn_18_unserialisable_send() {
    let g = common::LeakGuard::new();
    let (a, b) = pipe().unwrap();
    let (c, d) = pipe().unwrap();
    assert!(matches!(a.send(&Unserialisable), Err(Error::Codec(_))));
    assert!(matches!(a.send(&(12345u32, Unserialisable)), Err(Error::Codec(_))));
    // A one-way pipe cannot carry handles (a pipe() end can: tests/handles_in_messages.rs).
    let (sr, sw) = pipe_simplex().unwrap();
    assert!(matches!(sw.send(&vec![1u8, 2, 3]).and_then(|_| sw.send(&c)), Err(Error::Codec(_))));
    assert_eq!(sr.recv::<Vec<u8>>().unwrap(), [1, 2, 3]);
    assert!(!sr.poll(Some(Duration::ZERO)).unwrap(), "a failed send sent something");
    drop((sr, sw));
    a.send(&7).unwrap();
    assert_eq!(b.recv::<i32>().unwrap(), 7);
    // `c` was not consumed by the failed send.
    c.send(&8).unwrap();
    assert_eq!(d.recv::<i32>().unwrap(), 8);
    drop((a, b, c, d));
    g.check();
}

/// CONN-18, the receiving side: bytes that do not decode as the type asked for are `Codec`
/// (unpickling error), and the next message is read normally.
#[test]
fn conn_18_undecodable_recv() {
    let g = common::LeakGuard::new();
    let (a, b) = pipe().unwrap();
    a.send_bytes(&[0xff, 0xff, 0xff]).unwrap();
    a.send(&"after").unwrap();
    assert!(matches!(b.recv::<String>(), Err(Error::Codec(_))));
    assert_eq!(b.recv::<String>().unwrap(), "after");
    drop((a, b));
    g.check();
}

/// CONN-19: `send_bytes(b'')`: `poll()` was False before and is True after, twice (polling
/// consumes nothing); `recv_bytes()` is `b''`.
#[test]
fn conn_19_empty_message_poll() {
    let g = common::LeakGuard::new();
    let (a, b) = pipe().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    b.send_bytes(b"").unwrap();
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"");
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    drop((a, b));
    g.check();
}

// ---------------------------------------------------------------------------------------------
// CONN-20..CONN-22: CPython's _TestPoll with children.

const STRINGS: [&[u8]; 8] = [b"hello", b"", b"a", b"b", b"", b"bye", b"", b"lop"];

/// CPython's `_child_strings`: each message 0.1 s after the last.
fn child_strings(conn: Connection, strings: Vec<Vec<u8>>) -> Result<()> {
    for s in strings {
        std::thread::sleep(Duration::from_millis(100));
        conn.send_bytes(&s)?;
    }
    Ok(())
}

/// CPython's `_child_boundaries`, plus a word to say it is about to poll and what its poll
/// gave.
fn child_boundaries(r: Connection, report: Connection) -> Result<()> {
    report.send(&"polling")?;
    report.send(&r.poll(Some(Duration::from_secs(5)))?)
}

/// CPython's `_child_dont_merge`.
fn child_dont_merge(b: Connection) -> Result<()> {
    b.send_bytes(b"a")?;
    b.send_bytes(b"b")?;
    b.send_bytes(b"cd")
}

start_methods! {
    /// CONN-20: messages sent 0.1 s apart, empty ones included, arrive one by one and in
    /// order (the parent polls 0.01 s up to 200 times before each read, as CPython does).
    fn conn_20_strings_in_order(m) {
        let (a, b) = pipe().unwrap();
        let strings: Vec<Vec<u8>> = STRINGS.iter().map(|s| s.to_vec()).collect();
        let mut p = get_context(m).process(child_strings, (b, strings));
        p.start().unwrap();
        for s in STRINGS {
            for _ in 0..200 {
                if a.poll(Some(Duration::from_millis(10))).unwrap() {
                    break;
                }
            }
            assert_eq!(a.recv_bytes().unwrap(), s);
        }
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }

    /// CONN-21: a child polls (5 s) a copy of the read end while the parent writes
    /// `b"first"` and `b"second"` and closes: the child's poll sees data but takes none of it,
    /// so the parent then reads whole messages, `b"first"` (in CPython's `L`) first. CPython
    /// sleeps 2 s for the child to be polling; here the child says so first.
    fn conn_21_poll_does_not_consume(m) {
        let (r, mut w) = pipe_simplex().unwrap();
        let (report_r, report_w) = pipe().unwrap();
        let mut p = get_context(m).process(child_boundaries, (r.try_clone().unwrap(), report_w));
        p.start().unwrap();
        assert_eq!(report_r.recv::<String>().unwrap(), "polling");
        std::thread::sleep(Duration::from_millis(100));
        for obj in [&b"first"[..], b"second"] {
            w.send_bytes(obj).unwrap();
        }
        w.close();
        assert!(report_r.recv::<bool>().unwrap(), "the child's poll saw nothing");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(r.recv_bytes().unwrap(), b"first");
        assert_eq!(r.recv_bytes().unwrap(), b"second");
    }

    /// CONN-22: `poll(0.0)` and `poll(0.1)` are False before the child runs; then its three
    /// messages arrive separately (`b'a'`, `b'b'`, `b'cd'`: not merged), with `poll(1.0)` True
    /// between reads, twice, and `poll(0.0)` True before the last.
    fn conn_22_messages_not_merged(m) {
        let (a, b) = pipe().unwrap();
        assert!(!a.poll(Some(Duration::ZERO)).unwrap());
        let (ready, elapsed) = timed(|| a.poll(Some(TIMEOUT1)).unwrap());
        assert!(!ready);
        common::assert_timeout_elapsed(elapsed, TIMEOUT1);
        let mut p = get_context(m).process(child_dont_merge, (b,));
        p.start().unwrap();
        let second = Some(Duration::from_secs(1));
        assert_eq!(a.recv_bytes().unwrap(), b"a");
        assert!(a.poll(second).unwrap());
        assert!(a.poll(second).unwrap());
        assert_eq!(a.recv_bytes().unwrap(), b"b");
        assert!(a.poll(second).unwrap());
        assert!(a.poll(second).unwrap());
        assert!(a.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(a.recv_bytes().unwrap(), b"cd");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// CONN-21's concern, for whole messages. CPython's `_child_boundaries` comment: a reader must
/// not pull in "only part of a message, as that would corrupt the pipe for any other processes
/// which might later read from it". Two handles on one read end (`try_clone`, CPython's
/// `os.dup`), reading in turn as `Queue`'s consumers do under their lock: each read takes one
/// message, and the message the first handle did not ask for is there for the second.
#[test]
fn conn_21_a_read_takes_one_message_only() {
    let g = common::LeakGuard::new();
    let (r, w) = pipe_simplex().unwrap();
    let r2 = r.try_clone().unwrap();
    w.send_bytes(b"first").unwrap();
    w.send_bytes(b"second").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"first");
    assert!(r2.poll(Some(Duration::from_secs(1))).unwrap(), "the second message is gone from the pipe");
    assert_eq!(r2.recv_bytes().unwrap(), b"second");
    drop((r, r2, w));
    g.check();
}

/// The same when the second handle is made after the first has read: the first read took
/// `b"first"` only, so `b"second"` is still in the pipe for a handle cloned afterwards (as for
/// CPython's `os.dup` of the handle), even when the first handle is then dropped.
#[test]
fn conn_21_clone_made_after_a_read_takes_the_next_message() {
    let g = common::LeakGuard::new();
    let (r, w) = pipe_simplex().unwrap();
    w.send_bytes(b"first").unwrap();
    w.send_bytes(b"second").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"first");
    let r2 = r.try_clone().unwrap();
    drop(r);
    assert!(r2.poll(Some(Duration::from_secs(1))).unwrap(), "the second message is gone from the pipe");
    assert_eq!(r2.recv_bytes().unwrap(), b"second");
    drop((r2, w));
    g.check();
}

/// Waits for its turn, then reads one message from the shared read end (if one comes within
/// 2 s) and reports it.
fn read_in_turn(r: Connection, turn: Connection) -> Result<()> {
    turn.recv::<()>()?;
    let got = if r.poll(Some(Duration::from_secs(2)))? { Some(r.recv_bytes()?) } else { None };
    turn.send(&got)
}

start_methods! {
    /// The same across processes: the parent and a child share a read end and read in turn;
    /// the parent's read takes `b"first"` only, and the child then reads `b"second"`.
    fn conn_21_shared_reader_across_processes(m) {
        let (r, w) = pipe_simplex().unwrap();
        let (turn, child_turn) = pipe().unwrap();
        let mut p = get_context(m).process(read_in_turn, (r.try_clone().unwrap(), child_turn));
        p.start().unwrap();
        w.send_bytes(b"first").unwrap();
        w.send_bytes(b"second").unwrap();
        assert_eq!(r.recv_bytes().unwrap(), b"first");
        turn.send(&()).unwrap();
        let got = turn.recv::<Option<Vec<u8>>>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(got.as_deref(), Some(&b"second"[..]), "the child did not get the second message");
    }
}

/// CONN-23: a connection over a handle that cannot do I/O fails with an error, never a crash.
/// CPython's `Connection(-1)` cannot be written (an `OwnedFd` is never -1), and its
/// `Connection(44977608)` (a number that is not open) would need `OwnedFd::from_raw_fd` on a
/// closed descriptor, which breaks `OwnedFd`'s contract. The unusable handles here are open
/// and owned: an `O_PATH` descriptor (no I/O at all: EBADF) and a write-only `/dev/null`.
/// `poll` may say either way (CPython allows both); reads and writes must be errors.
#[test]
fn conn_23_invalid_handle() {
    let g = common::LeakGuard::new();
    let path_fd = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open("/").unwrap();
    let conn = Connection::from_fd(path_fd.into());
    let _ = conn.poll(Some(Duration::ZERO));
    let _ = conn.poll(Some(TIMEOUT1));
    let _ = wait(&[&conn], Some(Duration::ZERO));
    assert!(conn.recv_bytes().is_err());
    assert!(conn.recv::<i32>().is_err());
    assert!(conn.send_bytes(b"x").is_err());
    drop(conn);

    let write_only = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let conn = Connection::from_fd(write_only.into());
    let _ = conn.poll(Some(Duration::ZERO));
    assert!(conn.recv_bytes().is_err());
    let mut buf = [0u8; 4];
    assert!(conn.recv_bytes_into(&mut buf).is_err());
    drop(conn);
    g.check();
}

// ---------------------------------------------------------------------------------------------
// CONN-24: signals while blocked.

/// CPython's `support.PIPE_MAX_SIZE` / `SOCK_MAX_SIZE` maximum: sending this much must block.
const CONN_MAX_SIZE: usize = 16 * 1024 * 1024 + 1;

static SIGUSR1_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sigusr1(_: libc::c_int) {
    SIGUSR1_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// CPython's `_test_ignore`: a SIGUSR1 handler (without SA_RESTART, as Python's
/// `signal.signal` installs it, so blocked calls see EINTR), then a blocking `recv` and a
/// blocking big write. Also reports how many signals the handler saw.
fn ignore_eintr_child(conn: Connection) -> Result<()> {
    // The handler only touches an atomic, which is async-signal-safe.
    common::install_signal_handler(libc::SIGUSR1, count_sigusr1);
    conn.send(&"ready")?;
    let x: i32 = conn.recv()?;
    conn.send(&x)?;
    conn.send_bytes(&vec![b'x'; CONN_MAX_SIZE])?;
    conn.send(&SIGUSR1_SEEN.load(Ordering::SeqCst))
}

fn sigusr1(p: &Process) {
    let pid = p.pid().expect("started") as libc::pid_t;
    // SAFETY: kill has no memory effects; the child is not reaped yet, so the pid is its own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
}

start_methods! {
    /// CONN-24: the child gets SIGUSR1 (which it handles) while blocked in `recv` and while
    /// blocked writing 16 MiB + 1 bytes: both calls complete and the data is intact
    /// (`recv() == 1234`, `recv_bytes() == b'x' * N`); the handler ran twice.
    fn conn_24_ignore_eintr(m) {
        let (conn, child_conn) = pipe().unwrap();
        let mut p = get_context(m).process(ignore_eintr_child, (child_conn,)).with_daemon(true);
        p.start().unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "ready");
        std::thread::sleep(Duration::from_millis(100));
        sigusr1(&p);
        std::thread::sleep(Duration::from_millis(100));
        conn.send(&1234).unwrap();
        assert_eq!(conn.recv::<i32>().unwrap(), 1234);
        std::thread::sleep(Duration::from_millis(100));
        sigusr1(&p);
        let big = conn.recv_bytes().unwrap();
        assert_eq!(big.len(), CONN_MAX_SIZE);
        assert!(big.iter().all(|&c| c == b'x'), "the big message came back altered");
        assert_eq!(conn.recv::<usize>().unwrap(), 2, "the child's handler did not see both signals");
        std::thread::sleep(Duration::from_millis(100));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

// CONN-25 (`socket.setdefaulttimeout` must not leak into connections) has no counterpart:
// Rust has no process-wide default socket timeout.

/// CONN-26: the wire format is CPython's: a 4-byte big-endian signed length, then the payload
/// (empty included); `send(obj)` is `send_bytes` of the encoded object (postcard here, pickle
/// there); a length of -1 announces an 8-byte big-endian length (used above 2 GiB; decoding it
/// is checked with a small payload).
#[test]
fn conn_26_wire_framing() {
    let g = common::LeakGuard::new();
    let (ours, mut raw) = UnixStream::pair().unwrap();
    let conn = Connection::from_fd(ours.into());

    conn.send_bytes(b"hello").unwrap();
    let mut frame = [0u8; 9];
    raw.read_exact(&mut frame).unwrap();
    assert_eq!(&frame, b"\x00\x00\x00\x05hello");

    conn.send_bytes(b"").unwrap();
    let mut frame = [0u8; 4];
    raw.read_exact(&mut frame).unwrap();
    assert_eq!(frame, [0, 0, 0, 0]);

    conn.send(&(1729u32, "x".to_string())).unwrap();
    let encoded = postcard::to_allocvec(&(1729u32, "x".to_string())).unwrap();
    let mut frame = vec![0u8; 4 + encoded.len()];
    raw.read_exact(&mut frame).unwrap();
    assert_eq!(frame[..4], (encoded.len() as i32).to_be_bytes());
    assert_eq!(frame[4..], encoded);

    raw.write_all(b"\x00\x00\x00\x03abc").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"abc");
    let mut long = (-1i32).to_be_bytes().to_vec();
    long.extend_from_slice(&5u64.to_be_bytes());
    long.extend_from_slice(b"large");
    raw.write_all(&long).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"large");

    drop((conn, raw));
    g.check();
}

/// CONN-26, CPython's `_recv`: a stream that ends inside a message (in its header, or in its
/// payload after some of it arrived) is an error (`OSError('got end of file during message')`,
/// `Error::Io` here), not a clean end of file: `Eof` would pass a lost message off as an
/// orderly close.
#[test]
fn conn_26_eof_inside_a_message_is_an_error() {
    let g = common::LeakGuard::new();
    let cut_streams: [&[u8]; 3] = [b"\x00\x00", b"\x00\x00\x00\x0atruncat", b"\xff\xff\xff\xff\x00\x00"];
    for written in cut_streams {
        let (ours, mut raw) = UnixStream::pair().unwrap();
        let conn = Connection::from_fd(ours.into());
        raw.write_all(written).unwrap();
        drop(raw);
        match conn.recv_bytes() {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "after {written:?}"),
            other => panic!("after {written:?} then end of file: expected an I/O error, got {other:?}"),
        }
    }
    g.check();
}

// ---------------------------------------------------------------------------------------------
// Connections given to children.

/// Reports the ends' directions, answers `n` with `n + 1` on the duplex end, and upper-cases
/// what comes on `rx` back on `tx`.
fn both_ways(duplex: Connection, rx: Connection, tx: Connection) -> Result<()> {
    let flags = [duplex.readable(), duplex.writable(), rx.readable(), rx.writable(), tx.readable(), tx.writable()];
    duplex.send(&flags)?;
    let n: u64 = duplex.recv()?;
    duplex.send(&(n + 1))?;
    let s: String = rx.recv()?;
    tx.send(&s.to_uppercase())
}

start_methods! {
    /// A connection given to a child in its args works both ways there, simplex ends keep their
    /// direction, and `start()` closes the parent's copies (CPython closes nothing; here the
    /// args are moved into the process and dropped at start): once the child has exited, our
    /// ends see end of file.
    fn conn_passed_to_child_both_ways_parent_copy_closed(m) {
        let (a, b) = pipe().unwrap();
        let (child_rx, parent_tx) = pipe_simplex().unwrap();
        let (parent_rx, child_tx) = pipe_simplex().unwrap();
        let mut p = get_context(m).process(both_ways, (b, child_rx, child_tx));
        p.start().unwrap();
        assert_eq!(a.recv::<[bool; 6]>().unwrap(), [true, true, true, false, false, true]);
        a.send(&41u64).unwrap();
        assert_eq!(a.recv::<u64>().unwrap(), 42);
        parent_tx.send(&"hello").unwrap();
        assert_eq!(parent_rx.recv::<String>().unwrap(), "HELLO");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // Had `start()` kept our copies of `b` and `child_tx`, these would never see end of file.
        assert!(a.poll(Some(LONG)).unwrap(), "the parent still holds the child's duplex end");
        assert!(matches!(a.recv::<u64>(), Err(Error::Eof)));
        assert!(parent_rx.poll(Some(LONG)).unwrap(), "the parent still holds the child's write end");
        assert!(matches!(parent_rx.recv::<String>(), Err(Error::Eof)));
    }
}

/// Reads the messages left on `r` until end of file and reports them on `report`.
fn drain_and_report(r: Connection, report: Connection) -> Result<()> {
    let mut got = Vec::new();
    loop {
        match r.recv_bytes() {
            Ok(msg) => got.push(msg),
            Err(Error::Eof) => break,
            Err(e) => return Err(e),
        }
    }
    report.send(&got)
}

start_methods! {
    /// A read end handed to a child after the parent has read from it: the messages the
    /// parent did not take (whether still in the pipe or already read ahead) go with it, in
    /// order, and none is lost or repeated.
    fn conn_passed_to_child_after_a_read_keeps_the_rest(m) {
        let (r, mut w) = pipe_simplex().unwrap();
        for msg in [&b"one"[..], b"two", b"three", b"four"] {
            w.send_bytes(msg).unwrap();
        }
        w.close();
        assert_eq!(r.recv_bytes().unwrap(), b"one");
        let (report_r, report_w) = pipe().unwrap();
        let mut p = get_context(m).process(drain_and_report, (r, report_w));
        p.start().unwrap();
        let got = report_r.recv::<Vec<Vec<u8>>>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(got, [&b"two"[..], b"three", b"four"]);
    }
}

// ---------------------------------------------------------------------------------------------
// WAIT-01..WAIT-05: connection.wait.

/// CPython's `_child_test_wait`: ten `(i, pid)` messages, with random gaps of up to 0.1 s when
/// `slow`, then close.
fn child_test_wait(w: Connection, slow: bool) -> Result<()> {
    let mut jitter = Jitter::new();
    for i in 0..10u32 {
        if slow {
            std::thread::sleep(jitter.below(Duration::from_millis(100)));
        }
        w.send(&(i, getpid()))?;
    }
    Ok(())
}

/// CPython's `test_wait`: four children over simplex pipes; the parent waits on the readers
/// that are left, reads from the ready ones, and drops a reader at its end of file.
fn wait_for_children(m: StartMethod, slow: bool) {
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..4 {
        let (r, w) = pipe_simplex().unwrap();
        let mut p = get_context(m).process(child_test_wait, (w, slow)).with_daemon(true);
        p.start().unwrap();
        readers.push(r);
        procs.push(p);
    }
    let mut messages = Vec::new();
    while !readers.is_empty() {
        let objects: Vec<&dyn Waitable> = readers.iter().map(|r| r as &dyn Waitable).collect();
        let ready = wait(&objects, Some(LONG)).unwrap();
        assert!(!ready.is_empty(), "nothing became ready in {LONG:?}");
        let mut finished = Vec::new();
        for i in ready {
            match readers[i].recv::<(u32, u32)>() {
                Ok(msg) => messages.push(msg),
                Err(Error::Eof) => finished.push(i),
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        for i in finished.into_iter().rev() {
            readers.remove(i);
        }
    }
    messages.sort();
    let mut expected: Vec<(u32, u32)> =
        procs.iter().flat_map(|p| (0..10).map(move |i| (i, p.pid().unwrap()))).collect();
    expected.sort();
    assert_eq!(messages, expected);
    for mut p in procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// CPython's `_child_test_wait_socket`: connects to `address` and sends `b'0\n'` .. `b'9\n'`.
fn child_test_wait_socket(address: String, slow: bool) -> std::io::Result<()> {
    let mut s = TcpStream::connect(address)?;
    let mut jitter = Jitter::new();
    for i in 0..10 {
        if slow {
            std::thread::sleep(jitter.below(Duration::from_millis(100)));
        }
        s.write_all(format!("{i}\n").as_bytes())?;
    }
    Ok(())
}

/// CPython's `test_wait_socket`: four children connect to a listener; the parent waits on the
/// accepted sockets (as descriptors) and reads up to 32 bytes from the ready ones.
fn wait_for_sockets(m: StartMethod, slow: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut procs = Vec::new();
    for _ in 0..4 {
        let mut p = get_context(m).process(child_test_wait_socket, (address.clone(), slow)).with_daemon(true);
        p.start().unwrap();
        procs.push(p);
    }
    let mut readers: Vec<(TcpStream, Vec<u8>)> = (0..4).map(|_| (listener.accept().unwrap().0, Vec::new())).collect();
    drop(listener);
    let mut streams = Vec::new();
    while !readers.is_empty() {
        let fds: Vec<BorrowedFd<'_>> = readers.iter().map(|(s, _)| s.as_fd()).collect();
        let objects: Vec<&dyn Waitable> = fds.iter().map(|f| f as &dyn Waitable).collect();
        let ready = wait(&objects, Some(LONG)).unwrap();
        assert!(!ready.is_empty(), "nothing became ready in {LONG:?}");
        let mut finished = Vec::new();
        for i in ready {
            let mut buf = [0u8; 32];
            let (stream, got) = &mut readers[i];
            match stream.read(&mut buf).unwrap() {
                0 => finished.push(i),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        for i in finished.into_iter().rev() {
            streams.push(readers.remove(i).1);
        }
    }
    let expected: String = (0..10).map(|i| format!("{i}\n")).collect();
    assert_eq!(streams.len(), 4);
    for got in streams {
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }
    for mut p in procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// CPython's `signal_and_sleep`, with a pipe for its semaphore.
fn signal_and_sleep(ready: Connection, period: Duration) -> Result<()> {
    ready.send(&())?;
    std::thread::sleep(period);
    Ok(())
}

start_methods! {
    /// WAIT-01: four children each send `(i, pid)` for i in 0..9 over simplex pipes and
    /// close; waiting on the readers and dropping each at end of file gives all 40 messages.
    fn wait_01_simplex_pipes(m) {
        wait_for_children(m, false);
    }

    /// WAIT-01, slow: the same with random gaps of up to 0.1 s between messages.
    fn wait_01_simplex_pipes_slow(m) {
        wait_for_children(m, true);
    }

    /// WAIT-02: the same over TCP sockets (waited on as descriptors): each stream is
    /// `b'0\n1\n…9\n'`.
    fn wait_02_sockets(m) {
        wait_for_sockets(m, false);
    }

    /// WAIT-02, slow.
    fn wait_02_sockets_slow(m) {
        wait_for_sockets(m, true);
    }

    /// WAIT-04: `wait([a, p.sentinel, b], 23)` (indices here: `[0, 1, 2]`) while the child
    /// sleeps 3 s gives `[sentinel]` after 1 s < Δ < 5 s; after `a.send`, `{sentinel, b}`;
    /// after `b.send`, all three (readiness is level-triggered: the ended child's sentinel
    /// stays ready). CPython's bound for the last two is 0.4 s; this suite's is `assert_prompt`.
    fn wait_04_sentinel_level_triggered(m) {
        let expected = Duration::from_secs(3);
        let (a, b) = pipe().unwrap();
        let (ready_r, ready_w) = pipe().unwrap();
        let mut p = get_context(m).process(signal_and_sleep, (ready_w, expected));
        p.start().unwrap();
        ready_r.recv::<()>().unwrap();
        let sentinel = p.sentinel().unwrap();

        let (res, delta) = timed(|| wait(&[&a, &sentinel, &b], Some(expected + Duration::from_secs(20))).unwrap());
        assert_eq!(res, [1]);
        assert!(delta < expected + Duration::from_secs(2), "the sentinel was ready after {delta:?}");
        assert!(delta > expected - Duration::from_secs(2), "the sentinel was ready after {delta:?}");

        a.send(&()).unwrap();
        let (res, delta) = timed(|| wait(&[&a, &sentinel, &b], Some(Duration::from_secs(20))).unwrap());
        assert_eq!(res, [1, 2]);
        common::assert_prompt(delta);

        b.send(&()).unwrap();
        let (res, delta) = timed(|| wait(&[&a, &sentinel, &b], Some(Duration::from_secs(20))).unwrap());
        assert_eq!(res, [0, 1, 2]);
        common::assert_prompt(delta);

        p.terminate().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// WAIT-03: `wait([a, b], t)` with nothing ready gives `[]` after t (0.5 s here, CPython 5 s;
/// CPython asserts Δ > t − 0.1 s, this suite `assert_timeout_elapsed`); after `b.send(None)`,
/// `wait([a, b], 20)` gives `[a]` (index 0).
#[test]
fn wait_03_timeout() {
    let g = common::LeakGuard::new();
    let timeout = Duration::from_millis(500);
    let (a, b) = pipe().unwrap();
    let (res, delta) = timed(|| wait(&[&a, &b], Some(timeout)).unwrap());
    assert_eq!(res, Vec::<usize>::new());
    common::assert_timeout_elapsed(delta, timeout);
    b.send(&()).unwrap();
    let (res, delta) = timed(|| wait(&[&a, &b], Some(Duration::from_secs(20))).unwrap());
    assert_eq!(res, [0]);
    common::assert_prompt(delta);
    drop((a, b));
    g.check();
}

/// WAIT-05: CPython's `wait([a], timeout=-1)` is a zero timeout here (`Duration` has no
/// negative values): `[]` at once. With something ready, a zero timeout still reports it.
#[test]
fn wait_05_zero_timeout() {
    let g = common::LeakGuard::new();
    let (a, b) = pipe().unwrap();
    let (res, delta) = timed(|| wait(&[&a], Some(Duration::ZERO)).unwrap());
    assert_eq!(res, Vec::<usize>::new());
    common::assert_prompt(delta);
    b.send(&()).unwrap();
    let (res, delta) = timed(|| wait(&[&a], Some(Duration::ZERO)).unwrap());
    assert_eq!(res, [0]);
    common::assert_prompt(delta);
    drop((a, b));
    g.check();
}
