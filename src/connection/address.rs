//! Where a [`Listener`](super::Listener) listens and a [`Client`](super::Client) connects.

use crate::sys::socket::SockAddr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A socket address: TCP, a Unix socket path, or a Linux abstract name (the address argument
/// of Python's `multiprocessing.connection.Listener` and `Client`, whose family CPython infers
/// as this enum names it: a tuple is `AF_INET`, a string `AF_UNIX`).
///
/// Anything that converts into an `Address` can be passed where one is asked for: a
/// [`SocketAddr`] (or an `(ip, port)` pair, Python's `('127.0.0.1', 0)`), a [`Path`] or
/// [`PathBuf`], a string (a path, as in Python; one that starts with a NUL byte names an
/// abstract socket, as Python's `'\0name'` does), or an `&Address`.
///
/// ```
/// use multiprocess::connection::Address;
/// use std::net::SocketAddr;
/// let tcp = Address::from(([127, 0, 0, 1], 6000));
/// assert_eq!(tcp, Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 6000))));
/// assert_eq!(tcp.family(), "AF_INET");
/// assert_eq!(Address::from("/tmp/app.sock"), Address::Unix("/tmp/app.sock".into()));
/// assert_eq!(Address::from("\0app"), Address::abstract_name("app"));
/// assert_eq!(Address::abstract_name("app").to_string(), "\\0app");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address, IPv4 or IPv6 (Python's `(host, port)` tuple, family `AF_INET`).
    Tcp(SocketAddr),
    /// A Unix socket at a filesystem path (Python's `'/path'`, family `AF_UNIX`). An empty
    /// path is what [`Listener::last_accepted`](super::Listener::last_accepted) reports for a
    /// client that did not bind a name (CPython reports `''`).
    Unix(PathBuf),
    /// A Linux abstract Unix socket name, without the leading NUL byte (Python's `'\0name'`):
    /// no file is made, and the name goes away with the last socket bound to it.
    Abstract(Vec<u8>),
}

impl Address {
    /// The abstract socket named `name` (Python's `'\0' + name`, Linux only).
    ///
    /// ```
    /// use multiprocess::connection::{Address, Client, Listener};
    /// let name = format!("multiprocess-doc-{}", std::process::id());
    /// let listener = Listener::bind(Address::abstract_name(&name), None)?;
    /// assert_eq!(listener.address(), &Address::Abstract(name.into_bytes()));
    /// let client = Client::connect(listener.address(), None)?;
    /// let server = listener.accept()?;
    /// client.send_bytes(b"hi")?;
    /// assert_eq!(server.recv_bytes()?, b"hi");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn abstract_name(name: impl AsRef<[u8]>) -> Address {
        Address::Abstract(name.as_ref().to_vec())
    }

    /// The address family as CPython names it (`multiprocessing.connection.address_type`):
    /// `"AF_INET"` for TCP (IPv6 included: CPython's tuples are `AF_INET` too),
    /// `"AF_UNIX"` for paths and abstract names.
    ///
    /// ```
    /// use multiprocess::connection::Address;
    /// assert_eq!(Address::from("/tmp/x").family(), "AF_UNIX");
    /// assert_eq!(Address::from(([127, 0, 0, 1], 0)).family(), "AF_INET");
    /// ```
    pub fn family(&self) -> &'static str {
        match self {
            Address::Tcp(_) => "AF_INET",
            Address::Unix(_) | Address::Abstract(_) => "AF_UNIX",
        }
    }
}

impl Address {
    /// The OS layer's form of this address.
    pub(crate) fn to_sock_addr(&self) -> SockAddr {
        match self {
            Address::Tcp(a) => SockAddr::Inet(*a),
            Address::Unix(p) => SockAddr::Unix(p.clone()),
            Address::Abstract(name) => SockAddr::Abstract(name.clone()),
        }
    }

    /// An address the OS layer reported.
    pub(crate) fn from_sock_addr(addr: SockAddr) -> Address {
        match addr {
            SockAddr::Inet(a) => Address::Tcp(a),
            SockAddr::Unix(p) => Address::Unix(p),
            SockAddr::Abstract(name) => Address::Abstract(name),
        }
    }
}

impl fmt::Display for Address {
    /// `127.0.0.1:6000`, `/path/to/socket`, or `\0name` (non-printable bytes escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(name) => write!(f, "\\0{}", name.escape_ascii()),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => f.debug_tuple("Tcp").field(a).finish(),
            Address::Unix(p) => f.debug_tuple("Unix").field(p).finish(),
            Address::Abstract(name) => write!(f, "Abstract(b\"{}\")", name.escape_ascii()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<SocketAddrV4> for Address {
    fn from(a: SocketAddrV4) -> Address {
        Address::Tcp(a.into())
    }
}

impl From<SocketAddrV6> for Address {
    fn from(a: SocketAddrV6) -> Address {
        Address::Tcp(a.into())
    }
}

/// `(ip, port)`, Python's `('127.0.0.1', port)`; the ip is anything that converts into an
/// [`IpAddr`] (`[127, 0, 0, 1]`, `Ipv4Addr::LOCALHOST`, ...).
impl<I: Into<IpAddr>> From<(I, u16)> for Address {
    fn from((ip, port): (I, u16)) -> Address {
        Address::Tcp(SocketAddr::new(ip.into(), port))
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

impl From<&PathBuf> for Address {
    fn from(p: &PathBuf) -> Address {
        Address::Unix(p.clone())
    }
}

/// A path, as a Python string address is; a leading NUL byte names an abstract socket.
impl From<&str> for Address {
    fn from(s: &str) -> Address {
        match s.strip_prefix('\0') {
            Some(name) => Address::abstract_name(name),
            None => Address::Unix(PathBuf::from(s)),
        }
    }
}

/// As for `&str`.
impl From<String> for Address {
    fn from(s: String) -> Address {
        Address::from(s.as_str())
    }
}

impl From<&Address> for Address {
    fn from(a: &Address) -> Address {
        a.clone()
    }
}

/// An address on its way to a child: paths as bytes, so that any path travels.
#[derive(Serialize, Deserialize)]
enum Wire {
    Tcp(SocketAddr),
    Unix(Vec<u8>),
    Abstract(Vec<u8>),
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Address::Tcp(a) => Wire::Tcp(*a),
            Address::Unix(p) => Wire::Unix(p.as_os_str().as_bytes().to_vec()),
            Address::Abstract(n) => Wire::Abstract(n.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Tcp(a) => Address::Tcp(a),
            Wire::Unix(p) => Address::Unix(PathBuf::from(OsStr::from_bytes(&p))),
            Wire::Abstract(n) => Address::Abstract(n),
        })
    }
}
