//! Sockets that speak CPython's connection protocol: [`Listener`] (Python's
//! `multiprocessing.connection.Listener`) and [`Client`] (its `Client`).
//!
//! A connection they make is an ordinary [`Connection`] over a stream socket, framed as
//! CPython frames it. Given an authkey, both sides first run CPython's mutual HMAC challenge
//! (see [`deliver_challenge`](super::deliver_challenge)), so a Python peer of either side
//! works with `send_bytes`/`recv_bytes`.
//!
//! A listener with a key runs its clients' handshakes side by side, without threads: the
//! accept call waits on the listening socket and every handshake under way at once (an epoll
//! set, [`ReadySet`], which is also what `wait` polls) and moves each handshake as far as its
//! socket allows (a small state machine on a socket it never blocks on, [`ServerHandshake`]),
//! so a client that stalls or fails holds up no other. Handshakes an accept call leaves
//! unfinished wait in the listener for the next call; one call at a time drives them, the
//! others wait for their turn or for a client it left ready.

use super::auth::{self, ServerHandshake, Step};
use super::{Address, Connection, DEFAULT_SOCKET_MAX_MESSAGE, Waitable};
use crate::sys::socket::{self, Interest, ReadySet};
use crate::sys::{Deadline, fd, proc};
use crate::util::LOG_TARGET;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The kernel's queue of connections not yet accepted, unless told otherwise: std's
/// listeners' 128. (CPython's is 1, which turns away clients that connect together.)
const DEFAULT_BACKLOG: u32 = 128;
/// How long a client has for the handshake unless told otherwise.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes one listener runs at once; clients past these wait in the kernel's queue.
const MAX_HANDSHAKES: usize = 256;
/// Failures kept for the [`Listener::accept_outcome`] calls to come, past the one a call
/// returns; the oldest go first.
const MAX_KEPT_FAILURES: usize = 64;

/// A bound, listening socket that hands out a [`Connection`] per client (Python's
/// `multiprocessing.connection.Listener(address, family, backlog, authkey)`).
///
/// The address decides the family, as in Python: a [`SocketAddr`](std::net::SocketAddr) is
/// TCP, a path is a Unix socket, [`Address::abstract_name`] a Linux abstract socket;
/// [`Listener::new`] (Python's `Listener()`) binds a fresh path in a new private directory,
/// like CPython's `<tmp>/pymp-XXXXXXXX/listener-XXXXXXXX`. Given an authkey, every
/// [`accept`](Listener::accept) runs CPython's mutual HMAC challenge with the client before it
/// returns. Closing or dropping the listener removes the socket file it made (and the
/// directory `Listener::new` made), as CPython does; an abstract name leaves nothing behind.
///
/// A connection it accepts takes messages of at most 1 GiB by default
/// ([`ListenerBuilder::max_message`] changes it), so a peer that announces a huge length
/// gets an error rather than making the listener's process allocate it.
///
/// Unlike CPython's, one client cannot hold up the others: handshakes run side by side
/// inside the accept call, each with a deadline (5 s by default,
/// [`ListenerBuilder::handshake_timeout`]); [`accept`](Listener::accept) returns the next
/// client that passed and skips, and logs, the ones that failed
/// ([`accept_outcome`](Listener::accept_outcome) reports them); and the kernel queues up to
/// 128 clients (std's backlog, where CPython's is 1). Up to 256 handshakes run at once; the
/// clients past them wait in the kernel's queue.
///
/// ```
/// use multiprocess::connection::{Client, Listener};
/// let listener = Listener::bind(([127, 0, 0, 1], 0), Some(b"secret password"))?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || -> multiprocess::Result<Vec<u8>> {
///     let conn = Client::connect(address, Some(b"secret password"))?;
///     conn.send_bytes(b"hello")?;
///     conn.recv_bytes()
/// });
/// let conn = listener.accept()?;
/// assert_eq!(conn.recv_bytes()?, b"hello");
/// conn.send_bytes(b"welcome")?;
/// assert_eq!(client.join().unwrap()?, b"welcome");
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Listener {
    /// `None` once closed.
    socket: Option<OwnedFd>,
    address: Address,
    authkey: Option<Vec<u8>>,
    max_message: u64,
    handshake_timeout: Duration,
    last_accepted: Mutex<Option<Address>>,
    /// With a key: the listening socket and the handshakes under way, to wait on at once.
    ready: Option<ReadySet>,
    /// The clients of a listener with a key that no accept call has returned yet.
    clients: Mutex<Clients>,
    /// Signalled when the call driving the handshakes leaves: the next waiting call drives
    /// them, or takes a client it left ready.
    turn: Condvar,
    /// What to remove when closed: the socket file, and the directory `new` made for it.
    cleanup: Option<Cleanup>,
}

/// The clients of a listener with a key between their connect and an accept call.
struct Clients {
    /// The process they belong to: a fork child's copy starts afresh (the handshakes it
    /// inherited are its parent's to finish).
    owner: u32,
    /// Whether the ready set watches the listening socket: not while the handshakes are at
    /// their maximum.
    listening_watched: bool,
    /// Handshakes under way, while no call drives them (the driving call holds them).
    pending: Vec<Handshake>,
    /// Clients that passed, for the next accept calls, oldest first.
    passed: VecDeque<(OwnedFd, Address)>,
    /// Failures a reporting call met beyond the one it returned.
    failed: VecDeque<HandshakeFailure>,
    /// Whether a call is driving the handshakes.
    driving: bool,
}

impl Clients {
    fn new() -> Clients {
        Clients {
            owner: crate::getpid(),
            listening_watched: true,
            pending: Vec::new(),
            passed: VecDeque::new(),
            failed: VecDeque::new(),
            driving: false,
        }
    }
}

/// One client's handshake under way.
struct Handshake {
    fd: OwnedFd,
    peer: Address,
    /// `None` for a timeout too large for `Instant`: never.
    deadline: Option<Instant>,
    state: ServerHandshake,
    wants: Interest,
}

/// A client that connected to a [`Listener`] with a key and failed the handshake: it
/// answered with the wrong key, sent garbage, hung up, or did not finish in time
/// ([`ListenerBuilder::handshake_timeout`]). Returned by [`Listener::accept_outcome`]; its
/// socket is closed. In CPython the error ends `accept()` itself.
///
/// ```
/// use multiprocess::Error;
/// use multiprocess::connection::{Client, Listener};
/// let listener = Listener::new(Some(b"right"))?;
/// let address = listener.address().clone();
/// let bad = std::thread::spawn(move || Client::connect(address, Some(b"wrong")).err());
/// let failure = listener.accept_outcome(None)?.unwrap_err();
/// assert!(matches!(failure.error(), Error::Authentication(m) if m == "digest received was wrong"));
/// assert_eq!(failure.peer().family(), "AF_UNIX");
/// assert!(matches!(failure.into_error(), Error::Authentication(_)));
/// assert!(bad.join().unwrap().is_some());
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Debug)]
pub struct HandshakeFailure {
    peer: Address,
    error: Error,
}

impl HandshakeFailure {
    /// The client's address (what [`Listener::last_accepted`] would have shown, Python's
    /// `last_accepted`).
    ///
    /// ```
    /// use multiprocess::connection::{Address, Client, Listener};
    /// let listener = Listener::bind(([127, 0, 0, 1], 0), Some(b"key"))?;
    /// let address = listener.address().clone();
    /// let bad = std::thread::spawn(move || Client::connect(address, Some(b"other")).err());
    /// let failure = listener.accept_outcome(None)?.unwrap_err();
    /// assert!(matches!(failure.peer(), Address::Tcp(a) if a.ip().is_loopback()));
    /// # bad.join().unwrap();
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Why the handshake failed: what CPython's `accept()` raises
    /// ([`Error::Authentication`] for a wrong key, [`Error::Eof`] or [`Error::BrokenPipe`]
    /// for a client that hung up, [`Error::BadMessageLength`] for a message over 256 bytes),
    /// or [`Error::Timeout`] for a client that did not finish in time.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use multiprocess::connection::Listener;
    /// use std::time::Duration;
    /// let listener = Listener::builder().authkey(b"key").handshake_timeout(Duration::from_millis(50)).bind()?;
    /// // A client that connects and says nothing.
    /// let _silent = multiprocess::connection::Client::connect(listener.address(), None)?;
    /// let failure = listener.accept_outcome(None)?.unwrap_err();
    /// assert!(matches!(failure.error(), Error::Timeout));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The error, for `?` (Python's `accept()` raising it).
    ///
    /// ```
    /// use multiprocess::connection::{Client, Listener};
    /// let listener = Listener::new(Some(b"key"))?;
    /// let address = listener.address().clone();
    /// let bad = std::thread::spawn(move || Client::connect(address, Some(b"other")).err());
    /// let result: multiprocess::Result<_> = listener.accept_outcome(None)?.map_err(|f| f.into_error());
    /// assert!(result.is_err());
    /// # bad.join().unwrap();
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} failed the handshake: {}", PeerName(&self.peer), self.error)
    }
}

/// A client's address in messages: an unnamed Unix client (an empty path) shows as such.
struct PeerName<'a>(&'a Address);

impl fmt::Display for PeerName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Address::Unix(p) if p.as_os_str().is_empty() => f.write_str("(unnamed)"),
            a => write!(f, "{a}"),
        }
    }
}

impl std::error::Error for HandshakeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The socket file (and its private directory) a listener made, removed at close by the
/// process that made them only: a fork child dropping its copy leaves them alone (as
/// CPython's `util.Finalize` ignores calls from another process).
struct Cleanup {
    path: PathBuf,
    dir: Option<PathBuf>,
    owner: u32,
}

impl Cleanup {
    fn run(self) {
        if crate::getpid() != self.owner {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Settings for a [`Listener`]: address, authkey, backlog, the handshake's deadline and the
/// message cap of the connections it accepts (Python's keyword arguments of
/// `Listener(...)`). Made by [`Listener::builder`].
///
/// ```
/// use multiprocess::connection::{Client, Listener};
/// let listener = Listener::builder().authkey(b"key").backlog(16).max_message(1 << 20).bind()?;
/// let address = listener.address().clone();
/// let t = std::thread::spawn(move || Client::connect(address, Some(b"key")));
/// let conn = listener.accept()?;
/// assert_eq!(conn.max_message(), 1 << 20);
/// t.join().unwrap()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone)]
pub struct ListenerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    backlog: u32,
    max_message: u64,
    handshake_timeout: Duration,
}

impl ListenerBuilder {
    /// Where to listen (Python's `address`); without it, a fresh Unix path in a new private
    /// temporary directory (Python's default for `AF_UNIX`).
    ///
    /// ```
    /// use multiprocess::connection::{Address, Listener};
    /// let listener = Listener::builder().address(([127, 0, 0, 1], 0)).bind()?;
    /// assert!(matches!(listener.address(), Address::Tcp(a) if a.port() != 0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn address(mut self, address: impl Into<Address>) -> ListenerBuilder {
        self.address = Some(address.into());
        self
    }

    /// The key both sides must share (Python's `authkey`): every accepted connection runs the
    /// HMAC challenge. An empty key is a key: the challenge still runs.
    ///
    /// ```
    /// use multiprocess::connection::Listener;
    /// let listener = Listener::builder().authkey(b"").bind()?;
    /// assert!(format!("{listener:?}").contains("authenticated: true"));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn authkey(mut self, authkey: &[u8]) -> ListenerBuilder {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// How many connections the kernel queues before `accept` takes them (Python's
    /// `backlog`). The default is std's 128 (the system caps it at
    /// `/proc/sys/net/core/somaxconn`), not CPython's 1, which makes clients that connect
    /// together wait or fail.
    ///
    /// ```
    /// let listener = multiprocess::connection::Listener::builder().backlog(64).bind()?;
    /// # drop(listener);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn backlog(mut self, backlog: u32) -> ListenerBuilder {
        self.backlog = backlog;
        self
    }

    /// The longest message an accepted connection takes (default 1 GiB; see
    /// [`Connection::max_message`]). Python has no such setting.
    ///
    /// ```
    /// let listener = multiprocess::connection::Listener::builder().max_message(4096).bind()?;
    /// assert_eq!(listener.max_message(), 4096);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn max_message(mut self, max: usize) -> ListenerBuilder {
        self.max_message = max as u64;
        self
    }

    /// How long a client of a listener with a key has to pass the handshake, from the moment
    /// the listener takes it from the kernel's queue (default 5 s; Python has no such
    /// setting and waits for ever). A client still at it then is dropped (its socket closed)
    /// and logged; [`Listener::accept_outcome`] reports it as [`Error::Timeout`].
    ///
    /// ```
    /// use multiprocess::connection::Listener;
    /// use std::time::Duration;
    /// let listener = Listener::builder().authkey(b"k").handshake_timeout(Duration::from_millis(500)).bind()?;
    /// assert_eq!(listener.handshake_timeout(), Duration::from_millis(500));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> ListenerBuilder {
        self.handshake_timeout = timeout;
        self
    }

    /// Binds and listens: what calling Python's `Listener(...)` does.
    ///
    /// ```
    /// let listener = multiprocess::connection::Listener::builder().bind()?;
    /// assert_eq!(listener.address().family(), "AF_UNIX");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn bind(self) -> Result<Listener> {
        let (address, dir) = match self.address {
            Some(a) => (a, None),
            None => {
                let (path, dir) = fresh_socket_path()?;
                (Address::Unix(path), Some(dir))
            }
        };
        let bound = check_family(&address).and_then(|()| {
            socket::listen(&address.to_sock_addr(), self.backlog).map_err(|e| socket_error(e, &address))
        });
        let (socket, bound_address) = match bound {
            Ok(b) => b,
            Err(e) => {
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        let cleanup = match &address {
            Address::Unix(path) => Some(Cleanup { path: path.clone(), dir, owner: crate::getpid() }),
            _ => None,
        };
        // The kernel reports the port it chose for port 0; a path is reported as given.
        let address = match address {
            Address::Tcp(_) => Address::from_sock_addr(bound_address),
            other => other,
        };
        let mut listener = Listener {
            socket: Some(socket),
            address,
            authkey: self.authkey,
            max_message: self.max_message,
            handshake_timeout: self.handshake_timeout,
            last_accepted: Mutex::new(None),
            ready: None,
            clients: Mutex::new(Clients::new()),
            turn: Condvar::new(),
            cleanup,
        };
        if listener.authkey.is_some() {
            // On failure the listener is dropped, which removes its socket file.
            let set = ReadySet::new()?;
            if let Some(socket) = &listener.socket {
                set.add(socket.as_fd(), Some(Interest::Read))?;
            }
            listener.ready = Some(set);
        }
        Ok(listener)
    }
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("backlog", &self.backlog)
            .field("max_message", &self.max_message)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Listener {
    /// Listens on `address` (Python's `Listener(address, authkey=authkey)`); with an authkey,
    /// every accepted client must prove it has the same key, and is told ours in turn.
    ///
    /// An address in use gives `Err(Io)` with [`io::ErrorKind::AddrInUse`] (CPython's
    /// `OSError: [Errno 98] Address already in use`); a path in a missing directory
    /// [`Error::NotFound`]; a Windows pipe name (`\\.\pipe\...`) [`Error::InvalidArgument`]
    /// (CPython's `ValueError('Family AF_PIPE is not recognized.')`).
    ///
    /// ```
    /// use multiprocess::connection::{Address, Listener};
    /// let dir = std::env::temp_dir().join(format!("mp-doc-bind-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("socket");
    /// let listener = Listener::bind(&path, None)?;
    /// assert_eq!(listener.address(), &Address::Unix(path.clone()));
    /// assert!(path.exists());
    /// drop(listener);
    /// assert!(!path.exists());
    /// # std::fs::remove_dir(dir)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let mut builder = Listener::builder().address(address);
        if let Some(key) = authkey {
            builder = builder.authkey(key);
        }
        builder.bind()
    }

    /// Listens on a fresh Unix socket path, `<tmp>/pymp-XXXXXXXX/listener-XXXXXXXX`, in a
    /// directory only this user can enter (Python's `Listener()` or `Listener(authkey=key)`:
    /// CPython's default family on Linux is `AF_UNIX`). Closing the listener removes both.
    ///
    /// ```
    /// use multiprocess::connection::{Address, Client, Listener};
    /// let listener = Listener::new(None)?;
    /// let Address::Unix(path) = listener.address().clone() else { unreachable!() };
    /// assert!(path.file_name().unwrap().to_str().unwrap().starts_with("listener-"));
    /// let client = Client::connect(&path, None)?;
    /// let server = listener.accept()?;
    /// server.send(&1729)?;
    /// assert_eq!(client.recv::<i32>()?, 1729);
    /// drop(listener);
    /// assert!(!path.parent().unwrap().exists());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(authkey: Option<&[u8]>) -> Result<Listener> {
        let mut builder = Listener::builder();
        if let Some(key) = authkey {
            builder = builder.authkey(key);
        }
        builder.bind()
    }

    /// Settings beyond address and key (Python's `Listener` keyword arguments): backlog, the
    /// handshake's deadline, and the message cap of accepted connections.
    ///
    /// ```
    /// use multiprocess::connection::Listener;
    /// let listener = Listener::builder().address(([127, 0, 0, 1], 0)).authkey(b"k").bind()?;
    /// assert_eq!(listener.address().family(), "AF_INET");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder {
            address: None,
            authkey: None,
            backlog: DEFAULT_BACKLOG,
            max_message: DEFAULT_SOCKET_MAX_MESSAGE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Waits for a client and returns the connection to it (Python's `accept()`), after the
    /// HMAC challenge if the listener has an authkey: the next client that passed it. Clients
    /// that fail it (a wrong key, garbage, a hang-up, a message over 256 bytes, or no answer
    /// within the [handshake timeout](ListenerBuilder::handshake_timeout)) are dropped and
    /// logged under [`LOG_TARGET`] (`warn`, or `debug` for one that left without a word),
    /// never returned: a plain accept loop serves every good client whatever the others do.
    /// (CPython's `accept()` raises for the failing client and waits for ever on a silent
    /// one.) [`accept_outcome`](Listener::accept_outcome) reports the failures.
    ///
    /// The handshakes of all waiting clients run side by side in this call; when it returns,
    /// the ones under way stay in the listener and go on in the next accept call. `Err` is
    /// the listener's own trouble only: [`Error::HandleClosed`] after
    /// [`close`](Listener::close) (CPython's `OSError('listener is closed')`), or the
    /// system's (out of descriptors, `Err(Io)`). Signals do not interrupt the wait.
    ///
    /// ```
    /// use multiprocess::connection::{Client, Listener};
    /// let listener = Listener::new(Some(b"right"))?;
    /// let address = listener.address().clone();
    /// let clients = std::thread::spawn(move || -> multiprocess::Result<()> {
    ///     assert!(Client::connect(&address, Some(b"wrong")).is_err());
    ///     Client::connect(&address, Some(b"right"))?.send(&"hello")
    /// });
    /// let conn = listener.accept()?; // the wrong key was skipped
    /// assert_eq!(conn.recv::<String>()?, "hello");
    /// clients.join().unwrap()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn accept(&self) -> Result<Connection> {
        self.accept_by(Deadline::NEVER)
    }

    /// [`accept`](Listener::accept), giving up with [`Error::Timeout`] if no client has
    /// passed the challenge within `timeout` (Python has no such form). Failing clients are
    /// skipped as by `accept`; handshakes still under way when it gives up stay in the
    /// listener for the next call.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use std::time::Duration;
    /// let listener = multiprocess::connection::Listener::new(None)?;
    /// let r = listener.accept_timeout(Duration::from_millis(50));
    /// assert!(matches!(r, Err(Error::Timeout)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_by(Deadline::after(Some(timeout)))
    }

    /// [`accept`](Listener::accept) that also reports the clients that fail the handshake
    /// (no Python counterpart: there `accept()` raises their error): `Ok(Ok(conn))` for the
    /// next client that passed, `Ok(Err(failure))` for the next that failed, with its address
    /// and error ([`HandshakeFailure`]; the failure is logged too). `Err` is as for `accept`,
    /// or [`Error::Timeout`] when `timeout` (`None`: wait for ever) passes first.
    ///
    /// A failure goes to the call that ran the handshake when it failed: if plain `accept`
    /// calls run at the same time in other threads, the failures they meet are only logged.
    ///
    /// ```
    /// use multiprocess::connection::{Client, Listener};
    /// use std::time::Duration;
    /// let listener = Listener::new(Some(b"right"))?;
    /// let address = listener.address().clone();
    /// let clients = std::thread::spawn(move || -> multiprocess::Result<()> {
    ///     assert!(Client::connect(&address, Some(b"wrong")).is_err());
    ///     Client::connect(&address, Some(b"right"))?.send(&7u8)
    /// });
    /// let mut failures = Vec::new();
    /// let conn = loop {
    ///     match listener.accept_outcome(Some(Duration::from_secs(30)))? {
    ///         Ok(conn) => break conn,
    ///         Err(failure) => failures.push(failure.to_string()),
    ///     }
    /// };
    /// assert_eq!(conn.recv::<u8>()?, 7);
    /// assert_eq!(failures.len(), 1);
    /// assert!(failures[0].contains("digest received was wrong"), "{failures:?}");
    /// clients.join().unwrap()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn accept_outcome(
        &self,
        timeout: Option<Duration>,
    ) -> Result<std::result::Result<Connection, HandshakeFailure>> {
        self.next_client(Deadline::after(timeout), true)
    }

    fn accept_by(&self, deadline: Deadline) -> Result<Connection> {
        loop {
            // A call that does not report meets failures only to log them.
            if let Ok(conn) = self.next_client(deadline, false)? {
                return Ok(conn);
            }
        }
    }

    fn next_client(&self, deadline: Deadline, report: bool) -> Result<Outcome> {
        let listening = self.socket.as_ref().ok_or(Error::HandleClosed)?.as_fd();
        let (Some(key), Some(ready)) = (self.authkey.as_deref(), self.ready.as_ref()) else {
            let (fd, peer) = loop {
                if let Some(got) = socket::accept(listening)? {
                    break got;
                }
                if !fd::poll_readable(&[listening], deadline)?[0] {
                    return Err(Error::Timeout);
                }
            };
            return Ok(Ok(self.connection(fd, Address::from_sock_addr(peer))));
        };
        let mut clients = self.clients_here()?;
        loop {
            if let Some((fd, peer)) = clients.passed.pop_front() {
                drop(clients);
                return Ok(Ok(self.connection(fd, peer)));
            }
            if report && let Some(failure) = clients.failed.pop_front() {
                return Ok(Err(failure));
            }
            if !clients.driving {
                break;
            }
            clients = match deadline.remaining() {
                None => self.turn.wait(clients).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return Err(Error::Timeout),
                Some(left) => self.turn.wait_timeout(clients, left).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
        clients.driving = true;
        let pending = std::mem::take(&mut clients.pending);
        let listening_watched = clients.listening_watched;
        drop(clients);
        let mut driver = Driver {
            listener: self,
            ready,
            pending,
            listening_watched,
            passed: VecDeque::new(),
            failed: VecDeque::new(),
            report,
        };
        driver.run(listening, key, deadline)
    }

    fn lock_clients(&self) -> MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clients, after starting afresh in a fork child: the handshakes and clients it
    /// inherited are its parent's (its copies of their sockets close), and its copy of the
    /// ready set is its parent's set, renewed here into one of its own.
    fn clients_here(&self) -> Result<MutexGuard<'_, Clients>> {
        let mut clients = self.lock_clients();
        if clients.owner != crate::getpid()
            && let (Some(ready), Some(socket)) = (&self.ready, &self.socket)
        {
            ready.renew()?;
            ready.add(socket.as_fd(), Some(Interest::Read))?;
            *clients = Clients::new();
        }
        Ok(clients)
    }

    /// The connection to a client the listener returns.
    fn connection(&self, fd: OwnedFd, peer: Address) -> Connection {
        *self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
        Connection::from_socket(fd, self.max_message)
    }

    /// How long a client has to pass the handshake (see
    /// [`ListenerBuilder::handshake_timeout`]; Python has no such setting).
    ///
    /// ```
    /// let listener = multiprocess::connection::Listener::new(Some(b"key"))?;
    /// assert_eq!(listener.handshake_timeout(), std::time::Duration::from_secs(5));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The address the listener is bound to (Python's `address`): for TCP port 0, the port
    /// the system chose.
    ///
    /// ```
    /// use multiprocess::connection::{Address, Listener};
    /// let listener = Listener::bind(([127, 0, 0, 1], 0), None)?;
    /// let Address::Tcp(addr) = listener.address() else { unreachable!() };
    /// assert_eq!(addr.ip().to_string(), "127.0.0.1");
    /// assert_ne!(addr.port(), 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the last client accepted (Python's `last_accepted`): `None` before
    /// the first. A Unix client that bound no name shows as an empty path (CPython: `''`).
    ///
    /// ```
    /// use multiprocess::connection::{Address, Client, Listener};
    /// let listener = Listener::bind(([127, 0, 0, 1], 0), None)?;
    /// assert_eq!(listener.last_accepted(), None);
    /// let _client = Client::connect(listener.address(), None)?;
    /// let _server = listener.accept()?;
    /// assert!(matches!(listener.last_accepted(), Some(Address::Tcp(a)) if a.ip().is_loopback()));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The longest message an accepted connection takes (default 1 GiB; Python has no such
    /// limit).
    ///
    /// ```
    /// let listener = multiprocess::connection::Listener::new(None)?;
    /// assert_eq!(listener.max_message(), 1 << 30);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        usize::try_from(self.max_message).unwrap_or(usize::MAX)
    }

    /// Sets the longest message connections accepted from now on take (no Python
    /// counterpart; see [`max_message`](Listener::max_message)).
    ///
    /// ```
    /// let mut listener = multiprocess::connection::Listener::new(None)?;
    /// listener.set_max_message(1 << 34);
    /// assert_eq!(listener.max_message(), 1 << 34);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_max_message(&mut self, max: usize) {
        self.max_message = max as u64;
    }

    /// Whether [`close`](Listener::close) was called (Python's listener has no such
    /// property; CPython checks `_listener is None`).
    ///
    /// ```
    /// let mut listener = multiprocess::connection::Listener::new(None)?;
    /// assert!(!listener.closed());
    /// listener.close();
    /// assert!(listener.closed());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn closed(&self) -> bool {
        self.socket.is_none()
    }

    /// Stops listening and removes the socket file this listener made (Python's `close()`,
    /// or leaving its `with` block); closing twice is fine, and dropping closes too.
    /// Connections already accepted stay open.
    ///
    /// ```
    /// use multiprocess::Error;
    /// use multiprocess::connection::Listener;
    /// let mut listener = Listener::new(None)?;
    /// listener.close();
    /// listener.close();
    /// assert!(matches!(listener.accept(), Err(Error::HandleClosed)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.socket = None;
        // Clients under way or not yet returned see their sockets close.
        *self.clients.get_mut().unwrap_or_else(|e| e.into_inner()) = Clients::new();
        self.ready = None;
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("closed", &self.closed())
            .field("authenticated", &self.authkey.is_some())
            .field("max_message", &self.max_message)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// What one accept call found: a client that passed, or one that failed.
type Outcome = std::result::Result<Connection, HandshakeFailure>;

/// The accept call that runs the handshakes: it holds them while it polls, and gives them
/// back to the listener when it leaves, however it leaves.
struct Driver<'a> {
    listener: &'a Listener,
    ready: &'a ReadySet,
    pending: Vec<Handshake>,
    listening_watched: bool,
    /// Clients that passed beyond the one the call returns.
    passed: VecDeque<(OwnedFd, Address)>,
    /// Failures the call met beyond the one it returns, if it reports them.
    failed: VecDeque<HandshakeFailure>,
    /// Whether the call reports failures.
    report: bool,
}

impl Driver<'_> {
    fn run(&mut self, listening: BorrowedFd<'_>, key: &[u8], deadline: Deadline) -> Result<Outcome> {
        loop {
            // Take the new clients: each sends its challenge at once, in the steps below.
            while self.pending.len() < MAX_HANDSHAKES {
                let Some((fd, peer)) = socket::accept(listening)? else { break };
                let deadline = Instant::now().checked_add(self.listener.handshake_timeout);
                let state = ServerHandshake::new()?;
                let peer = Address::from_sock_addr(peer);
                let watched = self.ready.add(fd.as_fd(), Some(Interest::Write));
                let h = Handshake { fd, peer, deadline, state, wants: Interest::Write };
                match watched {
                    Ok(()) => self.pending.push(h),
                    Err(e) => self.fail(h, e.into()),
                }
            }
            // Step every handshake: one whose socket has nothing new costs a syscall.
            let now = Instant::now();
            let mut i = 0;
            while i < self.pending.len() {
                let h = &mut self.pending[i];
                let step = h.state.step(h.fd.as_fd(), key).and_then(|step| {
                    if let Step::Wants(interest) = step
                        && interest != h.wants
                    {
                        self.ready.change(h.fd.as_fd(), Some(interest))?;
                        h.wants = interest;
                    }
                    Ok(step)
                });
                match step {
                    Ok(Step::Wants(_)) if h.deadline.is_none_or(|d| now < d) => i += 1,
                    Ok(Step::Wants(_)) => {
                        let h = self.pending.remove(i);
                        self.fail(h, Error::Timeout);
                    }
                    Ok(Step::Done) => {
                        let h = self.pending.remove(i);
                        let _ = self.ready.remove(h.fd.as_fd());
                        self.passed.push_back((h.fd, h.peer));
                    }
                    Err(e) => {
                        let h = self.pending.remove(i);
                        self.fail(h, e);
                    }
                }
            }
            if let Some((fd, peer)) = self.passed.pop_front() {
                return Ok(Ok(self.listener.connection(fd, peer)));
            }
            if let Some(failure) = self.failed.pop_front() {
                return Ok(Err(failure));
            }
            // Sleep until a socket moves, the first handshake's time is up, or the call's.
            let call_left = deadline.remaining();
            if call_left == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
            let first_due =
                self.pending.iter().filter_map(|h| h.deadline).min().map(|d| d.saturating_duration_since(now));
            let wait = match (call_left, first_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // At the maximum, new clients wait in the kernel's queue, unwatched.
            let watch = self.pending.len() < MAX_HANDSHAKES;
            if watch != self.listening_watched {
                self.ready.change(listening, watch.then_some(Interest::Read))?;
                self.listening_watched = watch;
            }
            fd::poll_readable(&[self.ready.as_fd()], Deadline::after(wait))?;
        }
    }

    /// Drops a client that failed the handshake (closing its socket), logs it, and keeps the
    /// failure for the call if it reports them.
    fn fail(&mut self, h: Handshake, error: Error) {
        let listener = &self.listener.address;
        let peer = PeerName(&h.peer);
        let left_silently = !h.state.heard()
            && match &error {
                Error::Eof | Error::BrokenPipe => true,
                Error::Io(e) => e.kind() == io::ErrorKind::ConnectionReset,
                _ => false,
            };
        if left_silently {
            log::debug!(target: LOG_TARGET, "listener {listener}: client {peer} left before the handshake");
        } else if let Error::Timeout = error {
            let timeout = self.listener.handshake_timeout;
            log::warn!(target: LOG_TARGET, "listener {listener}: dropped client {peer}: no handshake within {timeout:?}");
        } else {
            log::warn!(target: LOG_TARGET, "listener {listener}: dropped client {peer}: {error}");
        }
        let _ = self.ready.remove(h.fd.as_fd());
        drop(h.fd);
        if self.report {
            self.failed.push_back(HandshakeFailure { peer: h.peer, error });
        }
    }
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        let mut clients = self.listener.lock_clients();
        clients.pending.append(&mut self.pending);
        clients.listening_watched = self.listening_watched;
        clients.passed.append(&mut self.passed);
        clients.failed.append(&mut self.failed);
        let excess = clients.failed.len().saturating_sub(MAX_KEPT_FAILURES);
        clients.failed.drain(..excess);
        clients.driving = false;
        drop(clients);
        // Every waiting call looks: one may take a client left ready, one drives next.
        self.listener.turn.notify_all();
    }
}

/// A listener is ready for [`wait`](super::wait) when a client is waiting to be accepted;
/// one with a key also when a handshake under way (left by an earlier accept call) moves, or
/// a client that passed waits in it. Handshakes go on only inside accept calls, so a loop
/// that waits on a keyed listener among other things should take what is ready with
/// `accept_timeout(Duration::ZERO)` (or `accept_outcome(Some(Duration::ZERO))`), which never
/// blocks, rather than `accept()`, which blocks until a client passes.
///
/// ```
/// use multiprocess::connection::{Client, Listener, Waitable, wait};
/// use std::time::Duration;
/// let listener = Listener::new(None)?;
/// let objects: [&dyn Waitable; 1] = [&listener];
/// assert!(wait(&objects, Some(Duration::ZERO))?.is_empty());
/// let _client = Client::connect(listener.address(), None)?;
/// assert_eq!(wait(&objects, Some(Duration::from_secs(5)))?, vec![0]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
impl Waitable for Listener {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        let socket = self.socket.as_ref().ok_or(Error::HandleClosed)?;
        match &self.ready {
            Some(set) => {
                drop(self.clients_here()?);
                Ok(set.as_fd())
            }
            None => Ok(socket.as_fd()),
        }
    }
    /// A client that passed the handshake in an earlier call waits in the listener, not in
    /// the kernel.
    fn ready_now(&self) -> bool {
        self.clients.try_lock().is_ok_and(|c| !c.passed.is_empty())
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client(address,
/// authkey=...)`; a unit struct, so that the name reads as in Python: `Client::connect(..)`).
///
/// ```
/// use multiprocess::connection::{Client, Listener};
/// let listener = Listener::bind(([127, 0, 0, 1], 0), Some(b"key"))?;
/// let address = listener.address().clone();
/// let server = std::thread::spawn(move || -> multiprocess::Result<()> {
///     let conn = listener.accept()?;
///     let n: i32 = conn.recv()?;
///     conn.send(&(n * 2))
/// });
/// let conn = Client::connect(address, Some(b"key"))?;
/// conn.send(&21)?;
/// assert_eq!(conn.recv::<i32>()?, 42);
/// server.join().unwrap()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Client;

impl Client {
    /// Connects to `address` (Python's `Client(address, authkey=authkey)`); with an
    /// authkey, answers the listener's HMAC challenge and then checks the listener the same
    /// way. A listener with another key gives [`Error::Authentication`]`("digest sent was
    /// rejected")`. Nobody listening gives `Err(Io)` with
    /// [`io::ErrorKind::ConnectionRefused`] (TCP, CPython's `ConnectionRefusedError`) or
    /// [`Error::NotFound`] (a missing Unix path, CPython's `FileNotFoundError`).
    ///
    /// The connection takes messages of at most 1 GiB; see
    /// [`Connection::set_max_message`].
    ///
    /// ```
    /// use multiprocess::Error;
    /// use multiprocess::connection::Client;
    /// let missing = std::env::temp_dir().join("multiprocess-doc-no-such-socket");
    /// assert!(matches!(Client::connect(missing, None), Err(Error::NotFound(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection> {
        connect_by(address.into(), authkey, Deadline::NEVER)
    }

    /// [`connect`](Client::connect), giving up with [`Error::Timeout`] if the connection and
    /// the challenge are not done within `timeout` (Python's `Client` has no such form).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use multiprocess::connection::{Client, Listener};
    /// use std::time::Duration;
    /// // A listener that never accepts, so never sends its challenge.
    /// let listener = Listener::new(Some(b"key"))?;
    /// let r = Client::connect_timeout(listener.address(), Some(b"key"), Duration::from_millis(50));
    /// assert!(matches!(r, Err(Error::Timeout)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn connect_timeout(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        connect_by(address.into(), authkey, Deadline::after(Some(timeout)))
    }
}

fn connect_by(address: Address, authkey: Option<&[u8]>, deadline: Deadline) -> Result<Connection> {
    check_family(&address)?;
    let fd = socket::connect(&address.to_sock_addr(), deadline).map_err(|e| socket_error(e, &address))?;
    let conn = Connection::from_socket(fd, DEFAULT_SOCKET_MAX_MESSAGE);
    if let Some(key) = authkey {
        auth::answer(&conn, key, deadline)?;
        auth::deliver(&conn, key, deadline)?;
        if deadline.remaining().is_some() {
            conn.set_read_timeout(None)?;
        }
    }
    Ok(conn)
}

/// CPython takes a string that starts with two backslashes for a Windows named pipe, and
/// refuses that family elsewhere.
fn check_family(address: &Address) -> Result<()> {
    match address {
        Address::Unix(path) if path.as_os_str().as_bytes().starts_with(br"\\") => {
            Err(Error::InvalidArgument("Family AF_PIPE is not recognized.".into()))
        }
        _ => Ok(()),
    }
}

/// Maps the errors of binding and connecting: a missing path is [`Error::NotFound`]
/// (`FileNotFoundError`), a malformed address [`Error::InvalidArgument`], a connect that ran
/// out of time [`Error::Timeout`].
fn socket_error(e: io::Error, address: &Address) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(address.to_string()),
        io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
        io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Io(e),
    }
}

/// A fresh socket path in a new directory only this user can enter:
/// `<tmp>/pymp-XXXXXXXX/listener-XXXXXXXX` (CPython's `arbitrary_address('AF_UNIX')` in the
/// directory of `util.get_temp_dir()`). Returns the path and the directory.
fn fresh_socket_path() -> Result<(PathBuf, PathBuf)> {
    let base = std::env::temp_dir();
    let mut tries = 0;
    loop {
        let dir = base.join(format!("pymp-{}", random_name()?));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((dir.join(format!("listener-{}", random_name()?)), dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Eight characters as `tempfile` picks them.
fn random_name() -> Result<String> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let mut bytes = [0u8; 8];
    proc::random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| CHARS[usize::from(*b) % CHARS.len()] as char).collect())
}
