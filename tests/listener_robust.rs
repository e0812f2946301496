//! Listener robustness (issue 13, point 2): a client that stalls in the handshake, fails it
//! or hangs up holds up no other client; handshakes have a deadline; `accept` skips the
//! failures (`accept_outcome` reports them); the default backlog takes 50 clients at once.
//! CPython's `Listener` has none of these: one silent client blocks its `accept()` for ever,
//! a failing one makes it raise, and its backlog of 1 turns clients away.
//!
//! Real sockets throughout; the stalling and failing clients are raw sockets (connected
//! without a key, then written to byte by byte) that play a broken peer. The Python case
//! needs `python3` and fails without it.
mod common;
use multiprocess::Error;
use multiprocess::connection::{Address, Client, HandshakeFailure, Listener, Waitable, wait};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, Once, mpsc};
use std::time::{Duration, Instant};

/// How long a test waits for something that should come at once, before calling it a hang.
const LONG: Duration = Duration::from_secs(30);
/// How long a good client may be held up by the others.
const PROMPT: Duration = Duration::from_secs(1);
/// How long an accept call that a stalled client would block in the old code is given: long
/// enough to tell a stall from a slow machine, short enough to fail quickly.
const STALL: Duration = Duration::from_secs(5);
const KEY: &[u8] = b"robust key";

// ---------------------------------------------------------------------------------------------
// Helpers.

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mp-robust-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A keyed listener of each family: TCP, a Unix path, an abstract name.
fn listeners() -> Vec<Listener> {
    vec![
        Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap(),
        Listener::new(Some(KEY)).unwrap(),
        Listener::bind(Address::abstract_name(unique("abs")), Some(KEY)).unwrap(),
    ]
}

/// A raw client socket: the test plays a broken peer.
enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Raw {
    /// Connects; the connection is in the listener's queue when this returns. The connect
    /// gives up after [`STALL`] (a full queue makes a client wait), failing the test.
    fn connect(address: &Address) -> Raw {
        let conn = Client::connect_timeout(address, None, STALL)
            .unwrap_or_else(|e| panic!("{address:?}: a raw client cannot connect: {e:?}"));
        // SAFETY: the descriptor is the connection's, open while `conn` lives; it is only
        // borrowed to be duplicated.
        let fd = unsafe { BorrowedFd::borrow_raw(conn.fileno().unwrap()) }.try_clone_to_owned().unwrap();
        drop(conn);
        let raw = match address {
            Address::Tcp(_) => Raw::Tcp(TcpStream::from(fd)),
            Address::Unix(_) | Address::Abstract(_) => Raw::Unix(UnixStream::from(fd)),
        };
        match &raw {
            Raw::Tcp(s) => s.set_read_timeout(Some(LONG)).unwrap(),
            Raw::Unix(s) => s.set_read_timeout(Some(LONG)).unwrap(),
        }
        raw
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Raw::Tcp(s) => s,
            Raw::Unix(s) => s,
        }
    }

    /// The TCP port this end is bound to: what the listener sees as the peer.
    fn local_tcp(&self) -> Option<SocketAddr> {
        match self {
            Raw::Tcp(s) => Some(s.local_addr().unwrap()),
            Raw::Unix(_) => None,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream().write_all(bytes).unwrap();
    }

    /// Writes one frame.
    fn send_frame(&mut self, payload: &[u8]) {
        self.send(&[&(payload.len() as u32).to_be_bytes()[..], payload].concat());
    }

    /// Reads one frame of the handshake.
    fn read_frame(&mut self) -> Vec<u8> {
        let mut header = [0u8; 4];
        self.stream().read_exact(&mut header).unwrap();
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        assert!(payload.len() <= 256, "a handshake message of {} bytes", payload.len());
        self.stream().read_exact(&mut payload).unwrap();
        payload
    }

    /// Reads the listener's challenge; returns its message.
    fn read_challenge(&mut self) -> Vec<u8> {
        let payload = self.read_frame();
        let message = payload.strip_prefix(b"#CHALLENGE#");
        message.unwrap_or_else(|| panic!("not a challenge: {payload:?}")).to_vec()
    }

    /// Reads until the listener closes its end (within [`LONG`], or the test fails): it sent
    /// its challenge, then nothing.
    fn expect_challenge_then_eof(&mut self) {
        self.expect_challenge_then(b"");
    }

    /// Reads until the listener closes its end: it sent its challenge, then `rest`.
    fn expect_challenge_then(&mut self, rest: &[u8]) {
        self.read_challenge();
        let mut got = Vec::new();
        self.stream().read_to_end(&mut got).expect("the listener closed the socket");
        assert_eq!(got, rest, "after the challenge");
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Runs plain `accept()` in a thread, so that a hang fails the test after [`LONG`] instead of
/// blocking it for ever.
fn accept_within(l: &Arc<Listener>, limit: Duration) -> multiprocess::Result<multiprocess::Connection> {
    let (tx, rx) = mpsc::channel();
    let l = l.clone();
    std::thread::spawn(move || {
        let _ = tx.send(l.accept());
    });
    rx.recv_timeout(limit).expect("accept() hung")
}

/// A keyed client that sends `tag` once connected, in a thread.
fn good_client(address: &Address, tag: &'static str) -> std::thread::JoinHandle<Duration> {
    let address = address.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        let c = Client::connect_timeout(address, Some(KEY), LONG).unwrap();
        let took = start.elapsed();
        c.send(&tag).unwrap();
        took
    })
}

/// Keeps the crate's log records (`LEVEL message`), for the cases that check what a listener
/// logs. One logger per process: under plain `cargo test` the records of every test land
/// here, and each case looks for its own listener's address.
struct Records;

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Records {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == multiprocess::util::LOG_TARGET
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            RECORDS.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Records).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Whether a record of `level` about listener `l` holds `text`.
fn logged(level: log::Level, l: &Listener, text: &str) -> bool {
    let prefix = format!("{level} listener {}: ", l.address());
    RECORDS.lock().unwrap().iter().any(|r| r.starts_with(&prefix) && r.contains(text))
}

// ---------------------------------------------------------------------------------------------
// Stalled clients.

/// A raw socket connects first and sends nothing; a good Rust client that connects after it
/// is accepted within 1 s (CPython's accept would wait on the silent one for ever; the old
/// code here until its timeout), for each family.
#[test]
fn stalled_client_does_not_delay_a_good_one() {
    common::guarded(|| {
        for l in listeners() {
            let mut stalled = Raw::connect(l.address());
            let start = Instant::now();
            let good = good_client(l.address(), "good");
            let conn = l.accept_timeout(STALL).unwrap_or_else(|e| panic!("{:?}: {e:?}", l.address()));
            let elapsed = start.elapsed();
            assert_eq!(conn.recv::<String>().unwrap(), "good");
            assert!(elapsed < PROMPT, "{:?}: the good client waited {elapsed:?}", l.address());
            assert!(good.join().unwrap() < PROMPT);
            // The silent client got its challenge meanwhile: its handshake runs too.
            stalled.read_challenge();
        }
    });
}

/// The Python client: connects with the key, times its `Client(...)`, talks, prints it.
const PY_CLIENT: &str = r#"
import sys, time
from multiprocessing.connection import Client
host, port = sys.argv[1].rsplit(':', 1)
start = time.monotonic()
c = Client((host, int(port)), authkey=bytes.fromhex(sys.argv[2]))
took = time.monotonic() - start
c.send_bytes(b'hello from python')
if c.recv_bytes() != b'welcome':
    raise SystemExit('unexpected reply')
c.close()
print('OK %.3f' % took, flush=True)
"#;

/// Kills and reaps the Python client if the test fails first.
struct Py(Child);

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real CPython client (`multiprocessing.connection.Client`) is served while three raw
/// sockets that connected before it stall in the handshake: its `Client(...)` returns
/// within 1 s.
#[test]
fn python_client_served_while_raw_sockets_stall() {
    common::guarded(|| {
        let l = Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap();
        let mut stalled: Vec<Raw> = (0..3).map(|_| Raw::connect(l.address())).collect();
        let key: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
        let child = Command::new("python3")
            .args(["-c", PY_CLIENT, &l.address().to_string(), &key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): this test needs it"));
        let mut py = Py(child);
        let conn = l.accept_timeout(STALL).expect("the Python client was not served");
        assert_eq!(conn.recv_bytes().unwrap(), b"hello from python");
        conn.send_bytes(b"welcome").unwrap();
        let mut out = String::new();
        py.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = py.0.wait().unwrap();
        let mut err = String::new();
        py.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "python3 exited {status}: {err}");
        let took: f64 = out.trim().strip_prefix("OK ").unwrap_or_else(|| panic!("{out:?} {err}")).parse().unwrap();
        assert!(took < PROMPT.as_secs_f64(), "the Python client's Client() took {took} s");
        for s in &mut stalled {
            s.read_challenge();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Failing clients.

/// The broken peers of the failure cases, connected (queued) in this order before any good
/// client: one that connects and closes at once, one that answers with garbage, one that
/// announces a 2 GiB answer (`0x7fffffff`) and waits. Returned: the two still open, and the
/// ports of all three (TCP).
fn broken_peers(address: &Address) -> (Raw, Raw, Vec<Option<SocketAddr>>) {
    let closed = Raw::connect(address);
    let closed_port = closed.local_tcp();
    drop(closed);
    let mut garbage = Raw::connect(address);
    garbage.send(&[&17u32.to_be_bytes()[..], b"this is no answer"].concat());
    let mut huge = Raw::connect(address);
    huge.send(&0x7fff_ffffu32.to_be_bytes());
    let ports = vec![closed_port, garbage.local_tcp(), huge.local_tcp()];
    (garbage, huge, ports)
}

/// One thread: a client with the wrong key (refused), then a good one, which sends `"good"`.
fn wrong_then_good(address: &Address) -> std::thread::JoinHandle<()> {
    let address = address.clone();
    std::thread::spawn(move || {
        match Client::connect_timeout(&address, Some(b"wrong key"), LONG) {
            Err(Error::Authentication(m)) => assert_eq!(m, "digest sent was rejected"),
            other => panic!("{other:?}"),
        }
        let c = Client::connect_timeout(&address, Some(KEY), LONG).unwrap();
        c.send(&"good").unwrap();
    })
}

/// Clients that close at once, send garbage, announce a huge answer or use the wrong key
/// connect before a good one: one plain `accept()` returns the good client (CPython's, and
/// the old code's, raised for the first broken one), and the broken ones are closed, the
/// huge announcement at once and with no allocation for it, and logged (`warn`; `debug` for
/// the one that left without a word). `accept_outcome` reports each failure with the
/// client's address and CPython's error, then returns the good client.
#[test]
fn failing_clients_are_skipped_and_reported() {
    capture_logs();
    common::guarded(|| {
        for l in listeners() {
            let l = Arc::new(l);
            let (mut garbage, mut huge, _) = broken_peers(l.address());
            let clients = wrong_then_good(l.address());
            let conn = accept_within(&l, LONG).unwrap_or_else(|e| panic!("{:?}: accept() gave {e:?}", l.address()));
            assert_eq!(conn.recv::<String>().unwrap(), "good");
            clients.join().unwrap();
            // The garbage was an answer, and a wrong one: the client is told so (CPython's
            // `#FAILURE#`).
            garbage.expect_challenge_then(&[&9u32.to_be_bytes()[..], b"#FAILURE#"].concat());
            huge.expect_challenge_then_eof();
            for (level, text) in [
                (log::Level::Debug, "left before the handshake"),
                (log::Level::Warn, "this is no answer"),
                (log::Level::Warn, "bad message length: 2147483647 bytes"),
                (log::Level::Warn, "digest received was wrong"),
            ] {
                assert!(logged(level, &l, text), "{:?}: no {level} record with {text:?}", l.address());
            }

            // The same clients again, reported this time.
            let (_garbage, _huge, ports) = broken_peers(l.address());
            let clients = wrong_then_good(l.address());
            let mut failures: Vec<HandshakeFailure> = Vec::new();
            let conn = loop {
                match l.accept_outcome(Some(LONG)).unwrap() {
                    Ok(conn) => break conn,
                    Err(failure) => failures.push(failure),
                }
            };
            assert_eq!(conn.recv::<String>().unwrap(), "good");
            clients.join().unwrap();
            assert_eq!(failures.len(), 4, "{failures:?}");
            let hung_up = |e: &Error| match e {
                Error::Eof | Error::BrokenPipe => true,
                Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionReset,
                _ => false,
            };
            let garbage_refused = |e: &Error| matches!(e, Error::Authentication(m) if m.contains("this is no answer"));
            let too_long = |e: &Error| matches!(e, Error::BadMessageLength { len: 0x7fff_ffff, max: 256 });
            let wrong_key = |e: &Error| matches!(e, Error::Authentication(m) if m == "digest received was wrong");
            for (check, port) in
                [(&hung_up as &dyn Fn(&Error) -> bool, ports[0]), (&garbage_refused, ports[1]), (&too_long, ports[2])]
            {
                let found = failures.iter().find(|f| check(f.error()));
                let found = found.unwrap_or_else(|| panic!("{:?}: missing among {failures:?}", l.address()));
                if let Some(port) = port {
                    assert_eq!(found.peer(), &Address::Tcp(port));
                }
            }
            assert!(failures.iter().any(|f| wrong_key(f.error())), "{failures:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The handshake's deadline.

/// With `handshake_timeout(0.2 s)`, a client that connects and stays silent is dropped after
/// 0.2 s (not before 0.19 s, within 1 s): `accept_outcome` reports `Timeout` for it, and its
/// socket sees the end of the stream after the challenge. Plain `accept_timeout` drops such a
/// client too, while it waits for a good one.
#[test]
fn stalled_handshake_is_dropped_after_its_timeout() {
    capture_logs();
    common::guarded(|| {
        let timeout = Duration::from_millis(200);
        let l =
            Listener::builder().address(([127, 0, 0, 1], 0)).authkey(KEY).handshake_timeout(timeout).bind().unwrap();
        let mut silent = Raw::connect(l.address());
        let (r, elapsed) = common::timed(|| l.accept_outcome(Some(STALL)));
        let failure = r.unwrap().expect_err("a silent client passed");
        assert!(matches!(failure.error(), Error::Timeout), "{failure:?}");
        assert_eq!(failure.peer(), &Address::Tcp(silent.local_tcp().unwrap()));
        common::assert_took(elapsed, timeout);
        silent.expect_challenge_then_eof();
        assert!(logged(log::Level::Warn, &l, "no handshake within 200ms"));

        // Plain accept_timeout: the silent client is dropped on time while it waits.
        let mut silent = Raw::connect(l.address());
        let start = Instant::now();
        let watcher = std::thread::spawn(move || {
            silent.expect_challenge_then_eof();
            start.elapsed()
        });
        let (r, elapsed) = common::timed(|| l.accept_timeout(Duration::from_millis(1500)));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        common::assert_timeout_elapsed(elapsed, Duration::from_millis(1500));
        let dropped_after = watcher.join().unwrap();
        common::assert_took(dropped_after, timeout);
    });
}

/// `accept_timeout` with only stalled and failing clients waiting times out with
/// `Err(Timeout)` after its timeout (the failures are skipped, not returned), twice; the
/// stalled clients' handshakes are still under way meanwhile (each got its challenge), and a
/// good client that comes next is served within 1 s.
#[test]
fn accept_timeout_with_only_stalled_clients_times_out() {
    common::guarded(|| {
        let timeout = Duration::from_millis(200);
        for l in listeners() {
            let (_garbage, _huge, _) = broken_peers(l.address());
            let mut stalled: Vec<Raw> = (0..3).map(|_| Raw::connect(l.address())).collect();
            for _ in 0..2 {
                let (r, elapsed) = common::timed(|| l.accept_timeout(timeout));
                assert!(matches!(r, Err(Error::Timeout)), "{:?}: {r:?}", l.address());
                common::assert_took(elapsed, timeout);
            }
            for s in &mut stalled {
                s.read_challenge();
            }
            let start = Instant::now();
            let good = good_client(l.address(), "good");
            let conn = l.accept_timeout(STALL).unwrap_or_else(|e| panic!("{:?}: {e:?}", l.address()));
            assert_eq!(conn.recv::<String>().unwrap(), "good");
            assert!(start.elapsed() < PROMPT, "{:?}: the good client waited {:?}", l.address(), start.elapsed());
            good.join().unwrap();
        }
    });
}

/// Threads that accept on one keyed listener share its handshakes: with two stalled clients
/// queued first, three threads each get one of three good clients within 1 s.
#[test]
fn several_threads_accept_past_stalled_clients() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Listener>();
    common::guarded(|| {
        let l = Arc::new(Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap());
        let _stalled: Vec<Raw> = (0..2).map(|_| Raw::connect(l.address())).collect();
        let acceptors: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.accept_timeout(STALL).map(|c| c.recv::<String>().unwrap()))
            })
            .collect();
        let start = Instant::now();
        let clients: Vec<_> = ["a", "b", "c"].into_iter().map(|tag| good_client(l.address(), tag)).collect();
        let mut got: Vec<String> = acceptors.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        let elapsed = start.elapsed();
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        assert!(elapsed < PROMPT, "the good clients waited {elapsed:?}");
        for c in clients {
            c.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The backlog.

/// 50 clients connect at once (threads released together) and all get in: with the default
/// backlog (std's 128) the kernel queues them all before the listener accepts any, over TCP
/// and a Unix path (with CPython's backlog of 1, all but two wait and time out). Then 50 keyed
/// clients at once against an accept loop: all pass the handshake.
#[test]
fn fifty_clients_at_once_are_all_accepted() {
    const N: usize = 50;
    common::guarded(|| {
        let plain = [Listener::bind(([127, 0, 0, 1], 0), None).unwrap(), Listener::new(None).unwrap()];
        let keyed = [Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap()];
        for l in plain.iter().chain(&keyed) {
            let keyed = l.address() == keyed[0].address();
            let barrier = Arc::new(Barrier::new(N));
            let clients: Vec<_> = (0..N)
                .map(|i| {
                    let (address, barrier) = (l.address().clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let key = if keyed { Some(KEY) } else { None };
                        let c = Client::connect_timeout(address, key, Duration::from_secs(3))?;
                        c.send(&(i as u32))?;
                        Ok::<_, Error>(c)
                    })
                })
                .collect();
            let join_all = |clients: Vec<std::thread::JoinHandle<multiprocess::Result<_>>>| {
                let results: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
                let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
                assert!(
                    failed.is_empty(),
                    "{:?}: {} of {N} clients failed: {:?}",
                    l.address(),
                    failed.len(),
                    failed[0]
                );
                results
            };
            let mut clients = Some(clients);
            let mut connected = Vec::new();
            if !keyed {
                // Nobody accepts until every client is in (or has given up).
                connected = join_all(clients.take().unwrap());
            }
            let deadline = Instant::now() + LONG;
            let mut got: Vec<u32> = (0..N)
                .map(|_| {
                    let conn = l.accept_timeout(deadline.saturating_duration_since(Instant::now())).unwrap();
                    conn.recv::<u32>().unwrap()
                })
                .collect();
            if let Some(clients) = clients.take() {
                connected = join_all(clients);
            }
            got.sort();
            assert_eq!(got, (0..N as u32).collect::<Vec<_>>(), "{:?}", l.address());
            drop(connected);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Waiting on a listener, and fork children.

/// `connection::wait` on a keyed listener sees a handshake that an earlier accept call left
/// under way (it is no longer in the kernel's queue): ready when the client's next message
/// arrives, not while it is silent. A raw client goes through the whole handshake this way,
/// step by step, with `accept_timeout` moving it; the listener's answer to its legacy
/// challenge is the bare HMAC-MD5, and the connection then carries the next message.
#[test]
fn wait_sees_handshakes_under_way() {
    common::guarded(|| {
        let short = Duration::from_millis(50);
        let l = Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap();
        let objects: [&dyn Waitable; 1] = [&l];
        let mut raw = Raw::connect(l.address());
        assert!(matches!(l.accept_timeout(short), Err(Error::Timeout)));
        let message = raw.read_challenge();
        assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty(), "ready with a silent client");

        raw.send_frame(&[b"{sha256}".as_slice(), &common::hmac_sha256(KEY, &message)].concat());
        assert_eq!(wait(&objects, Some(STALL)).unwrap(), [0], "the answer went unseen");
        assert!(matches!(l.accept_timeout(short), Err(Error::Timeout)));
        assert_eq!(raw.read_frame(), b"#WELCOME#");
        assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty(), "ready with a silent client");

        let mine: Vec<u8> = (0..20).collect();
        raw.send_frame(&[b"#CHALLENGE#".as_slice(), &mine].concat());
        assert_eq!(wait(&objects, Some(STALL)).unwrap(), [0], "the challenge went unseen");
        assert!(matches!(l.accept_timeout(short), Err(Error::Timeout)));
        assert_eq!(raw.read_frame(), common::hmac_md5(KEY, &mine));

        raw.send_frame(b"#WELCOME#");
        raw.send_frame(b"after the handshake");
        assert_eq!(wait(&objects, Some(STALL)).unwrap(), [0], "the welcome went unseen");
        let conn = l.accept_timeout(STALL).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"after the handshake");
    });
}

/// An event loop that waits on a keyed listener (as a manager's server does) and takes what
/// is ready with `accept_timeout(0)`: with a stalled client queued first and three good
/// clients connecting together, every wake-up is real and all three are served.
#[test]
fn event_loop_over_wait_serves_every_client() {
    common::guarded(|| {
        let l = Listener::new(Some(KEY)).unwrap();
        let _stalled = Raw::connect(l.address());
        let clients: Vec<_> = ["a", "b", "c"].into_iter().map(|tag| good_client(l.address(), tag)).collect();
        let objects: [&dyn Waitable; 1] = [&l];
        let mut got = Vec::new();
        while got.len() < 3 {
            assert_eq!(wait(&objects, Some(STALL)).unwrap(), [0], "wait missed a client; served {got:?}");
            match l.accept_timeout(Duration::ZERO) {
                Ok(conn) => got.push(conn.recv::<String>().unwrap()),
                Err(Error::Timeout) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        for c in clients {
            c.join().unwrap();
        }
    });
}

/// A fork child's copy of a keyed listener leaves the handshakes it inherited to its parent:
/// the child's accept does not read the answer its parent's client sent (it times out), and
/// the parent then finishes the handshake.
#[test]
fn fork_child_leaves_the_parents_handshakes_alone() {
    common::guarded(|| {
        let l = Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap();
        let mut raw = Raw::connect(l.address());
        assert!(matches!(l.accept_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
        let message = raw.read_challenge();
        raw.send_frame(&[b"{sha256}".as_slice(), &common::hmac_sha256(KEY, &message)].concat());
        // SAFETY: the child only uses the listener (whose locks no other thread holds: this
        // test's threads are not running) and exits.
        match unsafe { multiprocess::fork() }.unwrap() {
            multiprocess::Fork::Child => {
                let r = l.accept_timeout(Duration::from_millis(200));
                multiprocess::exit(if matches!(r, Err(Error::Timeout)) { 0 } else { 1 });
            }
            multiprocess::Fork::Parent { mut child } => {
                common::join_ok(&mut child);
                let t = std::thread::spawn(move || {
                    assert_eq!(raw.read_frame(), b"#WELCOME#");
                    let mine: Vec<u8> = (0..20).collect();
                    raw.send_frame(&[b"#CHALLENGE#".as_slice(), &mine].concat());
                    assert_eq!(raw.read_frame(), common::hmac_md5(KEY, &mine));
                    raw.send_frame(b"#WELCOME#");
                    raw.send_frame(b"served by the parent");
                    raw
                });
                let conn = l.accept_timeout(STALL).unwrap();
                assert_eq!(conn.recv_bytes().unwrap(), b"served by the parent");
                drop(t.join().unwrap());
            }
        }
    });
}
