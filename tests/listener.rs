//! Listener, Client and authentication: CONFORMANCE.md section 6 (LC-01..LC-17). Cases with
//! a child run under every start method; the handshake cases talk to our Listener and Client
//! through raw sockets, so that every byte CPython sends or expects is checked, with HMACs
//! computed here independently of the crate.
mod common;
use common::{hmac_md5, hmac_sha256};
use multiprocess::connection::{Address, Client, Listener, Waitable, answer_challenge, deliver_challenge, wait};
use multiprocess::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a test waits for something that should come at once, before calling it a hang.
const LONG: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"abc";

// ---------------------------------------------------------------------------------------------
// Helpers.

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mp-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// One listener per family CPython tests on Linux (`AF_INET`, `AF_UNIX`), plus an abstract
/// name.
fn listeners(authkey: Option<&[u8]>) -> Vec<Listener> {
    vec![
        Listener::bind(([127, 0, 0, 1], 0), authkey).unwrap(),
        Listener::new(authkey).unwrap(),
        Listener::bind(Address::abstract_name(unique("abs")), authkey).unwrap(),
    ]
}

/// A raw stream to a listener: the test plays the Python peer byte by byte.
enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Raw {
    fn connect(address: &Address) -> Raw {
        match address {
            Address::Tcp(a) => Raw::Tcp(TcpStream::connect(a).unwrap()),
            Address::Unix(p) => Raw::Unix(UnixStream::connect(p).unwrap()),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                Raw::Unix(UnixStream::connect_addr(&addr).unwrap())
            }
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Raw::Tcp(s) => s,
            Raw::Unix(s) => s,
        }
    }

    fn set_timeout(&self) {
        match self {
            Raw::Tcp(s) => s.set_read_timeout(Some(LONG)).unwrap(),
            Raw::Unix(s) => s.set_read_timeout(Some(LONG)).unwrap(),
        }
    }

    /// Writes one CPython frame: a 4-byte big-endian length, then the payload.
    fn send(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.stream().write_all(&frame).unwrap();
    }

    /// Reads one CPython frame.
    fn recv(&mut self) -> Vec<u8> {
        self.set_timeout();
        let mut header = [0u8; 4];
        self.stream().read_exact(&mut header).unwrap();
        let len = i32::from_be_bytes(header);
        assert!((0..=4096).contains(&len), "unexpected frame length {len}");
        let mut payload = vec![0u8; len as usize];
        self.stream().read_exact(&mut payload).unwrap();
        payload
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b
}

/// Starts `target(args)` as a daemon under `m`.
fn start<F: Target<A>, A: Args>(m: StartMethod, target: F, args: A) -> Process {
    let mut p = get_context(m).process(target, args).with_daemon(true);
    p.start().unwrap();
    p
}

/// CPython's `_test`: connect, send `'hello'`, close.
fn client_hello(address: Address) -> Result<()> {
    let conn = Client::connect(address, None)?;
    conn.send(&"hello")
}

/// The next client's handshake as a `Result`: its connection, or the error it failed with
/// (`accept()` skips failures; `accept_outcome` reports them).
fn next_outcome(l: &Listener, timeout: Duration) -> Result<Connection> {
    l.accept_outcome(Some(timeout))?.map_err(|failure| failure.into_error())
}

fn assert_auth_error(r: Result<impl std::fmt::Debug>, msg: &str) {
    match r {
        Err(Error::Authentication(m)) => assert_eq!(m, msg),
        other => panic!("expected Authentication({msg:?}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// LC-01..LC-07: _TestListener, _TestListenerClient.

/// LC-01: a second Listener on a bound address fails with `[Errno 98] Address already in
/// use`, for each family; the failed bind leaves the first listener and its socket file alone.
#[test]
fn lc_01_multiple_bind() {
    common::guarded(|| {
        for l in listeners(None) {
            match Listener::bind(l.address(), None) {
                Err(Error::Io(e)) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{:?}", l.address());
                    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
                }
                other => panic!("{:?}: {other:?}", l.address()),
            }
            if let Address::Unix(path) = l.address() {
                assert!(path.exists(), "the failed bind removed the first listener's socket file");
            }
            let c = Client::connect(l.address(), None).unwrap();
            let d = l.accept().unwrap();
            c.send(&1u8).unwrap();
            assert_eq!(d.recv::<u8>().unwrap(), 1);
        }
    });
}

/// LC-02: `with Listener() as l, Client(l.address) as c, l.accept() as d: c.send(1729)` gives
/// `d.recv() == 1729`; after the block `l.accept()` fails (`'listener is closed'`: here
/// `HandleClosed`) and the socket file is gone.
#[test]
fn lc_02_context() {
    common::guarded(|| {
        let mut l = Listener::new(None).unwrap();
        {
            let c = Client::connect(l.address(), None).unwrap();
            let d = l.accept().unwrap();
            c.send(&1729).unwrap();
            assert_eq!(d.recv::<i32>().unwrap(), 1729);
            // A Unix client that bound no name: CPython's `last_accepted` is `''`.
            assert_eq!(l.last_accepted(), Some(Address::Unix(PathBuf::new())));
        }
        let Address::Unix(path) = l.address().clone() else { panic!("default family is AF_UNIX") };
        l.close();
        assert!(matches!(l.accept(), Err(Error::HandleClosed)));
        assert!(matches!(l.accept_timeout(Duration::ZERO), Err(Error::HandleClosed)));
        assert!(!path.exists());
    });
}

/// LC-03: an empty authkey is a key: the handshake runs (a client without a key is refused)
/// and a client with the empty key gets through: `recv() == 1729`.
#[test]
fn lc_03_empty_authkey() {
    common::guarded(|| {
        let l = Listener::new(Some(b"")).unwrap();
        let address = l.address().clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect(address, Some(b"")).unwrap();
            c.send(&1729).unwrap();
        });
        let d = l.accept().unwrap();
        assert_eq!(d.recv::<i32>().unwrap(), 1729);
        t.join().unwrap();

        // Without a key the client skips the challenge: the listener takes its first message
        // for an answer and refuses it.
        let address = l.address().clone();
        let t = std::thread::spawn(move || {
            let c = Client::connect(address, None).unwrap();
            c.send(&1729).unwrap();
            c
        });
        assert!(matches!(next_outcome(&l, LONG), Err(Error::Authentication(_))));
        drop(t.join().unwrap());
    });
}

/// LC-04: a Linux abstract address (`'\0something'`): connect, send and receive work; the
/// name is listed in `/proc/net/unix` (as `@name`) while bound and gone after close, and no
/// file is made.
#[test]
fn lc_04_abstract_socket() {
    common::guarded(|| {
        let name = unique("abstract");
        let l = Listener::bind(format!("\0{name}").as_str(), None).unwrap();
        assert_eq!(l.address(), &Address::Abstract(name.clone().into_bytes()));
        let c = Client::connect(l.address(), None).unwrap();
        let d = l.accept().unwrap();
        c.send_bytes(b"ping").unwrap();
        assert_eq!(d.recv_bytes().unwrap(), b"ping");
        d.send_bytes(b"pong").unwrap();
        assert_eq!(c.recv_bytes().unwrap(), b"pong");
        let listed = |n: &str| std::fs::read_to_string("/proc/net/unix").unwrap().contains(&format!("@{n}\n"));
        assert!(listed(&name));
        assert!(!std::path::Path::new(&name).exists());
        drop((c, d, l));
        assert!(!listed(&name));
    });
}

start_methods! {
    /// LC-05: for each family, a child `Client(address).send('hello')`; `accept().recv() ==
    /// 'hello'`.
    fn lc_05_listener_client(m) {
        for l in listeners(None) {
            let mut p = start(m, client_hello, (l.address().clone(),));
            let conn = l.accept_timeout(LONG).unwrap();
            assert_eq!(conn.recv::<String>().unwrap(), "hello");
            common::join_ok(&mut p);
        }
    }

    /// LC-06 (issue 14725): the client connects, sends and closes before `accept()`; the
    /// queued connection still delivers `'hello'`. (CPython sleeps a second to get there;
    /// here the child is joined first, which is sure to.)
    fn lc_06_queued_connection_survives(m) {
        for l in listeners(None) {
            let mut p = start(m, client_hello, (l.address().clone(),));
            common::join_ok(&mut p);
            let conn = l.accept_timeout(LONG).unwrap();
            assert_eq!(conn.recv::<String>().unwrap(), "hello");
        }
    }
}

/// LC-07 (issue 16955): for each family, `send_bytes(b"hello")` on the accepted side makes
/// `client.poll(1)` true.
#[test]
fn lc_07_poll_after_accept() {
    common::guarded(|| {
        for l in listeners(None) {
            let c = Client::connect(l.address(), None).unwrap();
            let a = l.accept().unwrap();
            a.send_bytes(b"hello").unwrap();
            assert!(c.poll(Some(Duration::from_secs(1))).unwrap());
            assert_eq!(c.recv_bytes().unwrap(), b"hello");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// LC-08..LC-14: authentication and errors.

/// LC-08 (OtherTest), first half: `deliver_challenge` gets a bogus digest: it raises
/// AuthenticationError and tells the peer `#FAILURE#`. Through the public function on a pipe
/// (CPython's fake connection) and through a Listener with a raw client.
#[test]
fn lc_08_deliver_challenge_bogus_digest() {
    common::guarded(|| {
        let (ours, theirs) = pipe().unwrap();
        let t = std::thread::spawn(move || deliver_challenge(&ours, KEY));
        assert!(theirs.recv_bytes().unwrap().starts_with(b"#CHALLENGE#"));
        theirs.send_bytes(b"something bogus").unwrap();
        assert_eq!(theirs.recv_bytes().unwrap(), b"#FAILURE#");
        assert!(matches!(t.join().unwrap(), Err(Error::Authentication(_))));

        for l in listeners(Some(KEY)) {
            let mut raw = Raw::connect(l.address());
            let t = std::thread::spawn(move || {
                raw.recv();
                raw.send(&[0u8; 16]); // a legacy-length digest, but the wrong one
                raw.recv()
            });
            assert_auth_error(next_outcome(&l, LONG), "digest received was wrong");
            assert_eq!(t.join().unwrap(), b"#FAILURE#");
        }
    });
}

/// LC-08, second half: `answer_challenge` gets a bogus WELCOME: AuthenticationError
/// `'digest sent was rejected'`; and CPython 3.12's variant, a bare `#CHALLENGE#` with no
/// message: `'challenge too short: 0 bytes'`.
#[test]
fn lc_08_answer_challenge_bogus_welcome() {
    common::guarded(|| {
        let (ours, theirs) = pipe().unwrap();
        let t = std::thread::spawn(move || answer_challenge(&ours, KEY));
        theirs.send_bytes(&[b"#CHALLENGE#".as_slice(), &random_bytes(20)].concat()).unwrap();
        assert_eq!(theirs.recv_bytes().unwrap().len(), 16);
        theirs.send_bytes(b"something bogus").unwrap();
        assert_auth_error(t.join().unwrap(), "digest sent was rejected");

        let (ours, theirs) = pipe().unwrap();
        let t = std::thread::spawn(move || answer_challenge(&ours, KEY));
        theirs.send_bytes(b"#CHALLENGE#").unwrap();
        assert_auth_error(t.join().unwrap(), "challenge too short: 0 bytes");

        let (ours, theirs) = pipe().unwrap();
        let t = std::thread::spawn(move || answer_challenge(&ours, KEY));
        theirs.send_bytes(b"#WELCOME#").unwrap();
        assert_auth_error(t.join().unwrap(), "Protocol error, expected challenge: message=b'#WELCOME#'");
    });
}

/// Child of LC-09: connects with the key, sends `'hi'` and its own port.
fn client_hi_with_key(address: Address) -> Result<()> {
    let conn = Client::connect(address, Some(KEY))?;
    // SAFETY: the descriptor is the connection's, open while `conn` lives; it is only
    // borrowed to be duplicated.
    let fd = unsafe { BorrowedFd::borrow_raw(conn.fileno()?) }.try_clone_to_owned()?;
    let port = TcpStream::from(fd).local_addr()?.port();
    conn.send(&"hi")?;
    conn.send(&port)
}

/// Child of LC-10: connects with the wrong key and reports the error it got.
fn client_wrong_key(address: Address, report: Connection) -> Result<()> {
    match Client::connect(address, Some(b"wrong key")) {
        Err(Error::Authentication(msg)) => report.send(&msg),
        other => report.send(&format!("unexpected: {other:?}")),
    }
}

start_methods! {
    /// LC-09: the same authkey on both sides (AF_INET): accept works, `recv() == 'hi'`, and
    /// `last_accepted == ('127.0.0.1', <the client's port>)`.
    fn lc_09_same_authkey(m) {
        let l = Listener::bind(([127, 0, 0, 1], 0), Some(KEY)).unwrap();
        assert_eq!(l.last_accepted(), None);
        let mut p = start(m, client_hi_with_key, (l.address().clone(),));
        let conn = l.accept_timeout(LONG).unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "hi");
        let port: u16 = conn.recv().unwrap();
        assert_eq!(l.last_accepted(), Some(Address::from(([127, 0, 0, 1], port))));
        common::join_ok(&mut p);
    }

    /// LC-10: a mismatched authkey: the client gets `'digest sent was rejected'`, the
    /// server `'digest received was wrong'` (from `accept()` in CPython, `accept_outcome`
    /// here). The listener stays usable.
    fn lc_10_mismatched_authkey(m) {
        for l in listeners(Some(KEY)) {
            let (report, child_report) = pipe().unwrap();
            let mut p = start(m, client_wrong_key, (l.address().clone(), child_report));
            assert_auth_error(next_outcome(&l, LONG), "digest received was wrong");
            assert_eq!(report.recv::<String>().unwrap(), "digest sent was rejected");
            common::join_ok(&mut p);

            let address = l.address().clone();
            let t = std::thread::spawn(move || Client::connect(address, Some(KEY)).map(|c| c.send(&7u8)));
            assert_eq!(l.accept_timeout(LONG).unwrap().recv::<u8>().unwrap(), 7);
            t.join().unwrap().unwrap().unwrap();
        }
    }
}

// LC-11 (an authkey that is not bytes gives TypeError) cannot be written: the key is an
// `Option<&[u8]>`, checked at compile time.

/// LC-12: the default family is AF_UNIX at `<tmp>/pymp-XXXXXXXX/listener-XXXXXXXX`, in a
/// directory only we can enter, both removed at close; `Listener(('localhost', 0))` reports
/// `('127.0.0.1', port)` with the port the system chose.
#[test]
fn lc_12_default_address() {
    common::guarded(|| {
        let mut l = Listener::new(None).unwrap();
        assert_eq!(l.address().family(), "AF_UNIX");
        let Address::Unix(path) = l.address().clone() else { panic!("{:?}", l.address()) };
        let file = path.file_name().unwrap().to_str().unwrap();
        let dir = path.parent().unwrap();
        let dir_name = dir.file_name().unwrap().to_str().unwrap();
        assert!(file.starts_with("listener-") && file.len() == "listener-".len() + 8, "{file}");
        assert!(dir_name.starts_with("pymp-") && dir_name.len() == "pymp-".len() + 8, "{dir_name}");
        assert_eq!(dir.parent().unwrap(), std::env::temp_dir());
        assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
        l.close();
        assert!(!path.exists() && !dir.exists());

        let l = Listener::bind(([127, 0, 0, 1], 0), None).unwrap();
        assert_eq!(l.address().family(), "AF_INET");
        let Address::Tcp(a) = l.address() else { panic!() };
        assert_eq!(a.ip().to_string(), "127.0.0.1");
        assert_ne!(a.port(), 0);
        // The port is the one the socket is bound to.
        let c = Client::connect(l.address(), None).unwrap();
        drop((c, l.accept().unwrap()));
    });
}

/// LC-13: a Client to a closed TCP port gets ConnectionRefused; to a missing AF_UNIX path
/// FileNotFoundError (`NotFound`); a Windows pipe name is refused on POSIX with
/// `'Family AF_PIPE is not recognized.'`, by Listener and Client alike.
#[test]
fn lc_13_errors() {
    common::guarded(|| {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        match Client::connect(([127, 0, 0, 1], port), None) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
        let missing = std::env::temp_dir().join(unique("missing"));
        assert!(matches!(Client::connect(&missing, Some(KEY)), Err(Error::NotFound(_))));
        assert!(matches!(Listener::bind(missing.join("sub"), None), Err(Error::NotFound(_))));
        for r in [Listener::bind(r"\\.\pipe\x", None).map(drop), Client::connect(r"\\.\pipe\x", None).map(drop)] {
            match r {
                Err(Error::InvalidArgument(msg)) => assert_eq!(msg, "Family AF_PIPE is not recognized."),
                other => panic!("{other:?}"),
            }
        }
        assert!(!std::path::Path::new(r"\\.\pipe\x").exists());
        // Names the kernel cannot take are errors too, not panics.
        assert!(matches!(Listener::bind("/tmp/x\0b", None), Err(Error::InvalidArgument(_))));
        assert!(matches!(Listener::bind("x".repeat(200).as_str(), None), Err(Error::InvalidArgument(_))));
        assert!(matches!(Listener::bind(PathBuf::new(), None), Err(Error::InvalidArgument(_))));
    });
}

/// LC-14: a raw TCP peer that connects and closes without a handshake fails it (CPython's
/// `accept()` raises ConnectionResetError or EOFError; here `accept_outcome` reports it and
/// `accept()` skips it) rather than hang or panic; so does one that hangs up in the middle of
/// a frame, or sends an oversized answer (CPython's `recv_bytes(256)` limit); a silent one is
/// given up on by `accept_timeout`. The listener takes the next client normally after each.
#[test]
fn lc_14_peer_without_handshake() {
    common::guarded(|| {
        for l in listeners(Some(KEY)) {
            // Connects and closes at once.
            drop(Raw::connect(l.address()));
            match next_outcome(&l, LONG) {
                Err(Error::Eof | Error::BrokenPipe) => {}
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("{:?}: {other:?}", l.address()),
            }

            // Hangs up in the middle of its answer.
            let mut raw = Raw::connect(l.address());
            let t = std::thread::spawn(move || {
                raw.recv();
                raw.stream().write_all(&[0, 0, 0, 40, 1, 2, 3]).unwrap();
            });
            match next_outcome(&l, LONG) {
                Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
                other => panic!("{:?}: {other:?}", l.address()),
            }
            t.join().unwrap();

            // Announces an answer longer than 256 bytes, or 2^62 bytes in the long form.
            for header in [vec![0, 0, 1, 1], [[0xff; 4].as_slice(), &(1u64 << 62).to_be_bytes()].concat()] {
                let mut raw = Raw::connect(l.address());
                let t = std::thread::spawn(move || {
                    raw.recv();
                    raw.stream().write_all(&header).unwrap();
                    raw
                });
                match next_outcome(&l, LONG) {
                    Err(Error::BadMessageLength { max: 256, .. }) => {}
                    other => panic!("{:?}: {other:?}", l.address()),
                }
                drop(t.join().unwrap());
            }

            // Connects and says nothing.
            let silent = Raw::connect(l.address());
            let (r, elapsed) = common::timed(|| l.accept_timeout(Duration::from_millis(200)));
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            common::assert_timeout_elapsed(elapsed, Duration::from_millis(200));
            drop(silent);

            let address = l.address().clone();
            let t = std::thread::spawn(move || Client::connect(address, Some(KEY)).map(|c| c.send(&9u8)));
            assert_eq!(l.accept_timeout(LONG).unwrap().recv::<u8>().unwrap(), 9);
            t.join().unwrap().unwrap().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// LC-15: EINTR.

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Child of LC-15: handles SIGUSR1 (without SA_RESTART), listens, sends its address, accepts
/// and sends `'welcome'`.
fn ignore_listener_child(conn: Connection) -> Result<()> {
    common::install_signal_handler(libc::SIGUSR1, on_sigusr1);
    let l = Listener::new(None)?;
    conn.send(l.address())?;
    let a = l.accept()?;
    a.send(&"welcome")
}

start_methods! {
    /// LC-15: the child gets SIGUSR1 while blocked in `accept()`; accept is retried and the
    /// client receives `'welcome'`.
    fn lc_15_ignore_eintr_in_accept(m) {
        let (conn, child_conn) = pipe().unwrap();
        let mut p = start(m, ignore_listener_child, (child_conn,));
        let address: Address = conn.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = p.pid().unwrap() as libc::pid_t;
        // SAFETY: kill has no memory effects; the child is not reaped yet, so the pid is its own.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        std::thread::sleep(Duration::from_millis(100));
        let client = Client::connect(address, None).unwrap();
        assert_eq!(client.recv::<String>().unwrap(), "welcome");
        common::join_ok(&mut p);
    }
}

// ---------------------------------------------------------------------------------------------
// LC-16, LC-17: the handshake, byte for byte.

/// Plays a client against an authkey listener: checks the listener's challenge, answers it
/// with `answer(message)`, expects `reply`; on `#WELCOME#`, delivers `my_challenge` and
/// checks the listener's answer against `expected(message)`.
fn raw_client_handshake(
    l: &Listener,
    answer: fn(&[u8]) -> Vec<u8>,
    my_challenge: Vec<u8>,
    expected: fn(&[u8]) -> Vec<u8>,
) -> Result<Connection> {
    let mut raw = Raw::connect(l.address());
    let t = std::thread::spawn(move || {
        let challenge = raw.recv();
        let message = challenge.strip_prefix(b"#CHALLENGE#").expect("a challenge").to_vec();
        assert!(message.starts_with(b"{sha256}"), "{message:?}");
        assert_eq!(message.len(), 8 + 40);
        raw.send(&answer(&message));
        assert_eq!(raw.recv(), b"#WELCOME#");
        raw.send(&[b"#CHALLENGE#".as_slice(), &my_challenge].concat());
        assert_eq!(raw.recv(), expected(&my_challenge));
        raw.send(b"#WELCOME#");
        raw.send(b"after the handshake");
        raw
    });
    let conn = l.accept_timeout(LONG);
    let raw = t.join().unwrap();
    drop(raw);
    conn
}

/// LC-16: `_create_response` / `_verify_challenge` for algorithms None (legacy bare
/// HMAC-MD5), md5 and sha256, as our Listener sees them: each answer is accepted; and our
/// Listener's own answers carry the `{algo}` prefix, or none for a legacy challenge.
#[test]
fn lc_16_responses_by_digest() {
    common::guarded(|| {
        let l = Listener::new(Some(KEY)).unwrap();
        let legacy = |m: &[u8]| hmac_md5(KEY, m);
        let md5 = |m: &[u8]| [b"{md5}".as_slice(), &hmac_md5(KEY, m)].concat();
        let sha256 = |m: &[u8]| [b"{sha256}".as_slice(), &hmac_sha256(KEY, m)].concat();
        for answer in [legacy, md5, sha256] {
            // A legacy challenge is answered with bare HMAC-MD5 ...
            let conn = raw_client_handshake(&l, answer, random_bytes(20), legacy).unwrap();
            assert_eq!(conn.recv_bytes().unwrap(), b"after the handshake");
            // ... a prefixed one with the digest it names, prefix included in the MAC.
            let modern = [b"{sha256}".as_slice(), &random_bytes(40)].concat();
            let conn = raw_client_handshake(&l, answer, modern, sha256).unwrap();
            assert_eq!(conn.recv_bytes().unwrap(), b"after the handshake");
            let modern_md5 = [b"{md5}".as_slice(), &random_bytes(40)].concat();
            let conn = raw_client_handshake(&l, answer, modern_md5, md5).unwrap();
            assert_eq!(conn.recv_bytes().unwrap(), b"after the handshake");
        }
    });
}

/// LC-17: the handshake protocol as CPython 3.11 speaks it, against our Client: the server
/// sends `#CHALLENGE#` + 20 random bytes, the client answers the bare HMAC-MD5, the server
/// replies `#WELCOME#`; then the roles swap, the client challenging with 3.12's `{sha256}` +
/// 40 bytes and accepting the legacy bare-MD5 answer. With 3.12's own challenge the client
/// answers `{sha256}` + HMAC-SHA256. A `#FAILURE#` reply is 'digest sent was rejected'; a
/// wrong answer to the client's challenge gets `#FAILURE#` and 'digest received was wrong'.
#[test]
fn lc_17_handshake_protocol() {
    common::guarded(|| {
        /// Removes the socket's directory however the test ends.
        struct TempDir(PathBuf);
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = TempDir(std::env::temp_dir().join(unique("lc17")));
        std::fs::create_dir(&dir.0).unwrap();
        let path = dir.0.join("sock");
        let server = UnixListener::bind(&path).unwrap();
        for (modern, right_answer) in [(false, true), (true, true), (false, false)] {
            let p = path.clone();
            let client = std::thread::spawn(move || Client::connect(p, Some(KEY)));
            let (s, _) = server.accept().unwrap();
            s.set_read_timeout(Some(LONG)).unwrap();
            let mut raw = Raw::Unix(s);
            let message = if modern { [b"{sha256}".as_slice(), &random_bytes(40)].concat() } else { random_bytes(20) };
            raw.send(&[b"#CHALLENGE#".as_slice(), &message].concat());
            let response = raw.recv();
            if modern {
                assert_eq!(response, [b"{sha256}".as_slice(), &hmac_sha256(KEY, &message)].concat());
            } else {
                assert_eq!(response, hmac_md5(KEY, &message));
            }
            raw.send(b"#WELCOME#");
            let challenge = raw.recv();
            let theirs = challenge.strip_prefix(b"#CHALLENGE#").unwrap();
            assert!(theirs.starts_with(b"{sha256}") && theirs.len() == 48, "{challenge:?}");
            if right_answer {
                raw.send(&hmac_md5(KEY, theirs));
                assert_eq!(raw.recv(), b"#WELCOME#");
                let conn = client.join().unwrap().unwrap();
                raw.send(b"done");
                assert_eq!(conn.recv_bytes().unwrap(), b"done");
            } else {
                raw.send(&hmac_md5(b"wrong", theirs));
                assert_eq!(raw.recv(), b"#FAILURE#");
                assert_auth_error(client.join().unwrap(), "digest received was wrong");
            }
        }

        // The server refuses the client's answer.
        let p = path.clone();
        let client = std::thread::spawn(move || Client::connect(p, Some(KEY)));
        let (s, _) = server.accept().unwrap();
        let mut raw = Raw::Unix(s);
        raw.send(&[b"#CHALLENGE#".as_slice(), &random_bytes(20)].concat());
        raw.recv();
        raw.send(b"#FAILURE#");
        assert_auth_error(client.join().unwrap(), "digest sent was rejected");
        drop((raw, server, dir));
    });
}

// ---------------------------------------------------------------------------------------------
// Beyond the catalogue: wait() over listeners, the message cap, cleanup after fork.

/// `connection.wait` takes listeners: one is ready when a client waits to be accepted.
#[test]
fn wait_over_listeners_and_connections() {
    common::guarded(|| {
        let a = Listener::new(None).unwrap();
        let b = Listener::bind(([127, 0, 0, 1], 0), None).unwrap();
        let (x, y) = pipe().unwrap();
        let objects: [&dyn Waitable; 3] = [&a, &b, &y];
        assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty());
        let _c = Client::connect(b.address(), None).unwrap();
        assert_eq!(wait(&objects, Some(LONG)).unwrap(), vec![1]);
        x.send(&1u8).unwrap();
        assert_eq!(wait(&objects, Some(LONG)).unwrap(), vec![1, 2]);
        let _d = b.accept().unwrap();
        assert_eq!(wait(&objects, Some(LONG)).unwrap(), vec![2]);
    });
}

/// Accepted and connected sockets cap messages at 1 GiB by default (a hostile length is an
/// error at once, not an allocation); the cap is set per listener and per connection.
#[test]
fn message_cap_on_sockets() {
    common::guarded(|| {
        let mut l = Listener::new(None).unwrap();
        let mut raw = Raw::connect(l.address());
        let conn = l.accept().unwrap();
        assert_eq!(conn.max_message(), 1 << 30);
        raw.stream().write_all(&[[0xff; 4].as_slice(), &(1u64 << 62).to_be_bytes()].concat()).unwrap();
        assert!(
            matches!(conn.recv_bytes(), Err(Error::BadMessageLength { len, max }) if len == 1 << 62 && max == 1 << 30)
        );

        l.set_max_message(10);
        let c = Client::connect(l.address(), None).unwrap();
        assert_eq!(c.max_message(), 1 << 30);
        let d = l.accept().unwrap();
        assert_eq!(d.max_message(), 10);
        c.send_bytes(b"0123456789").unwrap();
        assert_eq!(d.recv_bytes().unwrap(), b"0123456789");
        c.send_bytes(b"0123456789a").unwrap();
        let mut buf = [0u8; 4];
        assert!(matches!(d.recv_bytes_into(&mut buf), Err(Error::BadMessageLength { len: 11, max: 10 })));
    });
}

/// A fork child that drops its copy of a listener leaves the socket file alone: only the
/// process that bound it removes it (as CPython's `util.Finalize` checks the pid).
#[test]
fn fork_child_drop_keeps_socket_file() {
    common::guarded(|| {
        let l = Listener::new(None).unwrap();
        let Address::Unix(path) = l.address().clone() else { panic!() };
        // SAFETY: the child only drops the listener (no locks) and exits.
        match unsafe { fork() }.unwrap() {
            Fork::Child => {
                drop(l);
                exit(0);
            }
            Fork::Parent { mut child } => {
                common::join_ok(&mut child);
                assert!(path.exists());
                let c = Client::connect(l.address(), None).unwrap();
                let d = l.accept().unwrap();
                c.send(&5u8).unwrap();
                assert_eq!(d.recv::<u8>().unwrap(), 5);
                drop((c, d, l));
                assert!(!path.exists());
            }
        }
    });
}

/// IPv6 works as IPv4 does (`('::1', 0)` in Python); a machine without IPv6 refuses the
/// address, which is an error, not a panic.
#[test]
fn ipv6_loopback() {
    common::guarded(|| {
        let l = match Listener::bind((std::net::Ipv6Addr::LOCALHOST, 0), Some(KEY)) {
            Ok(l) => l,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return,
            Err(e) => panic!("{e:?}"),
        };
        let Address::Tcp(a) = l.address() else { panic!() };
        assert!(a.is_ipv6() && a.port() != 0);
        let address = l.address().clone();
        let t = std::thread::spawn(move || Client::connect(address, Some(KEY)).unwrap().recv_bytes().unwrap());
        let d = l.accept_timeout(LONG).unwrap();
        d.send_bytes(b"v6").unwrap();
        assert_eq!(t.join().unwrap(), b"v6");
        assert!(matches!(l.last_accepted(), Some(Address::Tcp(p)) if p.is_ipv6() && p.ip().is_loopback()));
    });
}

/// A listener can be shared by threads that accept at once: each client goes to one of them.
#[test]
fn accept_from_several_threads() {
    common::guarded(|| {
        let l = std::sync::Arc::new(Listener::builder().backlog(8).bind().unwrap());
        let acceptors: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.accept_timeout(LONG).unwrap().recv::<u32>().unwrap())
            })
            .collect();
        let clients: Vec<_> = (0..3u32)
            .map(|i| {
                let c = Client::connect(l.address(), None).unwrap();
                c.send(&i).unwrap();
                c
            })
            .collect();
        let mut got: Vec<u32> = acceptors.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        drop(clients);
    });
}
