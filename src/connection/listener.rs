//! Sockets that speak CPython's connection protocol: [`Listener`] (Python's
//! `multiprocessing.connection.Listener`) and [`Client`] (its `Client`).
//!
//! A connection they make is an ordinary [`Connection`] over a stream socket, framed as
//! CPython frames it. Given an authkey, both sides first run CPython's mutual HMAC challenge
//! (see [`deliver_challenge`](super::deliver_challenge)), so a Python peer of either side
//! works with `send_bytes`/`recv_bytes`.

use super::{Address, Connection, DEFAULT_SOCKET_MAX_MESSAGE, Waitable, auth};
use crate::sys::{Deadline, fd, proc, socket};
use crate::{Error, Result};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// CPython's default backlog for a listener.
const DEFAULT_BACKLOG: u32 = 1;

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
    last_accepted: Mutex<Option<Address>>,
    /// What to remove when closed: the socket file, and the directory `new` made for it.
    cleanup: Option<Cleanup>,
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

/// Settings for a [`Listener`]: address, authkey, backlog and the message cap of the
/// connections it accepts (Python's keyword arguments of `Listener(...)`). Made by
/// [`Listener::builder`].
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
    /// `backlog`, default 1 as there).
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
        Ok(Listener {
            socket: Some(socket),
            address,
            authkey: self.authkey,
            max_message: self.max_message,
            last_accepted: Mutex::new(None),
            cleanup,
        })
    }
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("backlog", &self.backlog)
            .field("max_message", &self.max_message)
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

    /// Settings beyond address and key (Python's `Listener` keyword arguments): backlog,
    /// and the message cap of accepted connections.
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
        }
    }

    /// Waits for a client and returns the connection to it (Python's `accept()`), after the
    /// HMAC challenge if the listener has an authkey. A client with the wrong key gives
    /// [`Error::Authentication`]`("digest received was wrong")` (and is told so); a client
    /// that hangs up or sends garbage during the challenge gives an error too. Either way the
    /// listener stays usable. Signals do not interrupt the wait. After
    /// [`close`](Listener::close): [`Error::HandleClosed`] (CPython's `OSError('listener is
    /// closed')`).
    ///
    /// ```
    /// use multiprocess::Error;
    /// use multiprocess::connection::{Client, Listener};
    /// let listener = Listener::new(Some(b"right"))?;
    /// let address = listener.address().clone();
    /// let bad = std::thread::spawn(move || Client::connect(address, Some(b"wrong")).err());
    /// match listener.accept() {
    ///     Err(Error::Authentication(msg)) => assert_eq!(msg, "digest received was wrong"),
    ///     other => panic!("{other:?}"),
    /// }
    /// assert!(matches!(bad.join().unwrap(), Some(Error::Authentication(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn accept(&self) -> Result<Connection> {
        self.accept_by(Deadline::NEVER)
    }

    /// [`accept`](Listener::accept), giving up with [`Error::Timeout`] if no client has
    /// connected and passed the challenge within `timeout` (Python has no such form). The
    /// timeout covers the challenge too, so a client that connects and goes silent cannot
    /// hold the listener.
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

    fn accept_by(&self, deadline: Deadline) -> Result<Connection> {
        let listening = self.socket.as_ref().ok_or(Error::HandleClosed)?;
        let (fd, peer) = loop {
            if let Some(got) = socket::accept(listening.as_fd())? {
                break got;
            }
            if !fd::poll_readable(&[listening.as_fd()], deadline)?[0] {
                return Err(Error::Timeout);
            }
        };
        *self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Address::from_sock_addr(peer));
        let conn = Connection::from_socket(fd, self.max_message);
        if let Some(key) = &self.authkey {
            auth::deliver(&conn, key, deadline)?;
            auth::answer(&conn, key, deadline)?;
            if deadline.remaining().is_some() {
                conn.set_read_timeout(None)?;
            }
        }
        Ok(conn)
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
            .finish()
    }
}

/// A listener is ready for [`wait`](super::wait) when a client is waiting to be accepted.
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
        self.socket.as_ref().map(|s| s.as_fd()).ok_or(Error::HandleClosed)
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
