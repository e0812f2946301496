//! A process's side of a manager: its connections to one server, a few kept open and reused,
//! one per thread at a time (Python's per-thread `_tls.connection`), so that a thread blocked
//! in a call never holds up another thread's.
//!
//! A process has one [`Client`] per server address; a fork child makes its own (the parent's
//! connections are the parent's).

use super::channel::Channel;
use super::wire::{PROTOCOL, Remote, RemoteKind, Reply, Request};
use crate::connection::{Address, Connection};
use crate::{Error, Result};
use std::sync::{Arc, Mutex, Weak};

/// Connections to one server, for one process.
pub(crate) struct Client {
    address: Address,
    authkey: Vec<u8>,
    /// The process these connections belong to.
    pid: u32,
    /// The server's instance (see `Reply::Hello`); 0 until the first hello tells it.
    instance: std::sync::atomic::AtomicU64,
    idle: Mutex<Vec<Link>>,
}

/// One connection, and its shared-memory mailbox if the server is on this host.
struct Link {
    conn: Connection,
    channel: Option<Channel>,
}

impl Link {
    /// One request and its reply.
    fn call(&mut self, request: &Request) -> Result<Reply> {
        let Some(channel) = self.channel.as_mut() else {
            self.conn.send(request)?;
            return self.conn.recv::<Reply>();
        };
        let bytes = postcard::to_allocvec(request)?;
        // While a call is under way the server writes on the socket only what the mailbox
        // cannot hold, and announces it first: a readable socket otherwise is its end.
        let conn = &self.conn;
        let server_gone = || conn.poll(Some(std::time::Duration::ZERO)).unwrap_or(true);
        let reply = channel.call(&self.conn, &bytes, &server_gone)?;
        crate::reduction::from_bytes_exact(&reply)
    }
}

/// The live clients of this process, by address (a fork child finds its parent's here, and
/// makes its own beside them).
static CLIENTS: Mutex<Vec<(Address, u32, Weak<Client>)>> = Mutex::new(Vec::new());

use std::sync::atomic::Ordering;

/// Locks the registry (held across a fork, so that the child finds it unlocked).
pub(crate) fn lock_registry() -> std::sync::MutexGuard<'static, Vec<(Address, u32, Weak<Client>)>> {
    CLIENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connections kept open for reuse; more are closed after their call.
const KEEP_IDLE: usize = 8;

impl Client {
    /// This process's client of the server `instance` at `address`, made if there is none.
    pub(crate) fn for_address(address: &Address, authkey: &[u8], instance: u64) -> Arc<Client> {
        let pid = crate::sys::proc::cached_pid() as u32;
        let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|(_, _, c)| c.strong_count() > 0);
        let found = clients
            .iter()
            .filter(|(a, p, _)| a == address && *p == pid)
            .filter_map(|(_, _, c)| c.upgrade())
            .find(|c| c.instance() == instance);
        if let Some(client) = found {
            return client;
        }
        drop(clients);
        Client::new(address, authkey, instance)
    }

    /// A new client of the server `instance` at `address` (0: whichever answers first), for
    /// this process.
    pub(crate) fn new(address: &Address, authkey: &[u8], instance: u64) -> Arc<Client> {
        let pid = crate::sys::proc::cached_pid() as u32;
        let client = Arc::new(Client {
            address: address.clone(),
            authkey: authkey.to_vec(),
            pid,
            instance: std::sync::atomic::AtomicU64::new(instance),
            idle: Mutex::new(Vec::new()),
        });
        let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|(_, _, c)| c.strong_count() > 0);
        clients.push((address.clone(), pid, Arc::downgrade(&client)));
        client
    }

    /// The server's instance (0 while not known).
    pub(crate) fn instance(&self) -> u64 {
        self.instance.load(Ordering::Relaxed)
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// Whether this client belongs to the calling process (not to a parent it was forked
    /// from).
    pub(crate) fn is_ours(&self) -> bool {
        self.pid == crate::sys::proc::cached_pid() as u32
    }

    /// Opens a connection now (and keeps it for later calls): a wrong key, a server that is
    /// not there, or one of another version is reported as such, not as `ManagerGone`.
    pub(crate) fn check(&self) -> Result<()> {
        let link = self.open()?;
        self.give_back(link);
        Ok(())
    }

    /// Sends `request` and waits for the reply; a reply that is an error is `Err`.
    pub(crate) fn call(&self, request: &Request) -> Result<Reply> {
        let mut link = self.connection()?;
        match link.call(request) {
            Ok(reply) => {
                self.give_back(link);
                match reply {
                    Reply::Error(remote) => Err(to_error(remote)),
                    reply => Ok(reply),
                }
            }
            // The server is gone, or the connection broke mid-call: this one is not reused.
            Err(Error::Eof | Error::BrokenPipe) => Err(Error::ManagerGone),
            Err(Error::Io(e)) if is_gone(&e) => Err(Error::ManagerGone),
            Err(e) => Err(e),
        }
    }

    fn connection(&self) -> Result<Link> {
        if let Some(link) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(link);
        }
        match self.open() {
            Err(Error::Io(e)) if is_gone(&e) => Err(Error::ManagerGone),
            // The socket file went with the server.
            Err(Error::Eof | Error::BrokenPipe | Error::NotFound(_)) => Err(Error::ManagerGone),
            other => other,
        }
    }

    /// A new connection, past the handshake and the hello.
    fn open(&self) -> Result<Link> {
        let conn = crate::Client::connect(self.address.clone(), Some(&self.authkey))?;
        let hello = Request::Hello {
            version: super::wire::VERSION.into(),
            protocol: PROTOCOL,
            pid: crate::sys::proc::cached_pid() as u32,
            tag: crate::sys::pidfd::own_tag(),
        };
        conn.send(&hello).map_err(gone)?;
        match conn.recv::<Reply>().map_err(gone)? {
            Reply::Hello { protocol: PROTOCOL, ref version, instance, .. } if version == super::wire::VERSION => {
                // Another server now listens where ours did: our proxies mean nothing there.
                let known = self.instance.compare_exchange(0, instance, Ordering::Relaxed, Ordering::Relaxed);
                if known.is_err_and(|known| known != instance) {
                    return Err(Error::ManagerGone);
                }
                let channel = self.mailbox(&conn)?;
                Ok(Link { conn, channel })
            }
            Reply::Hello { protocol, version, .. } => Err(Error::Remote {
                kind: "VersionMismatch".into(),
                message: format!(
                    "the manager is multiprocess {version} (protocol {protocol}), this client {} (protocol \
                     {PROTOCOL}): build both from the same version",
                    super::wire::VERSION
                ),
            }),
            Reply::Error(remote) => Err(to_error(remote)),
            other => Err(Error::Codec(format!("the manager answered hello with {other:?}"))),
        }
    }

    fn give_back(&self, link: Link) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(link);
        }
    }

    /// A shared-memory mailbox for a connection to a server on this host (none over TCP, or
    /// if no segment can be made: the socket then carries everything).
    fn mailbox(&self, conn: &Connection) -> Result<Option<Channel>> {
        if matches!(self.address, Address::Tcp(_)) {
            return Ok(None);
        }
        let Ok(channel) = Channel::create() else { return Ok(None) };
        conn.send(&Request::Channel).map_err(gone)?;
        match conn.recv::<Reply>().map_err(gone)? {
            Reply::Done => {}
            Reply::Error(remote) => return Err(to_error(remote)),
            other => return Err(Error::Codec(format!("the manager answered a channel offer with {other:?}"))),
        }
        channel.offer(conn).map_err(gone)?;
        Ok(Some(channel))
    }
}

fn gone(e: Error) -> Error {
    match e {
        Error::Eof | Error::BrokenPipe => Error::ManagerGone,
        Error::Io(e) if is_gone(&e) => Error::ManagerGone,
        e => e,
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// The crate's error for what the server reported.
pub(crate) fn to_error(remote: Remote) -> Error {
    let kind = match remote.kind {
        RemoteKind::Index { index, len } if index >= 0 => {
            return Error::IndexOutOfRange { index: index as usize, len: len as usize };
        }
        RemoteKind::Index { .. } => "IndexError",
        RemoteKind::NotInList => "ValueError",
        RemoteKind::Changed => "Changed",
        RemoteKind::NoObject => "NoObject",
        RemoteKind::WrongKind => "WrongKind",
        RemoteKind::BadRequest => "BadRequest",
        RemoteKind::Empty => return Error::Empty,
        RemoteKind::Full => return Error::Full,
        RemoteKind::OwnerDied => return Error::OwnerDied,
        RemoteKind::ReleasedTooManyTimes => return Error::ReleasedTooManyTimes,
        RemoteKind::NotOwner => return Error::NotOwner,
        RemoteKind::TaskDoneTooManyTimes => return Error::TaskDoneTooManyTimes,
        RemoteKind::BrokenBarrier => return Error::BrokenBarrier,
        RemoteKind::Raised(kind) => return Error::Remote { kind, message: remote.message },
    };
    Error::Remote { kind: kind.into(), message: remote.message }
}
