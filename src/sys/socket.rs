//! Stream sockets for `Listener` and `Client`: TCP (IPv4 and IPv6), Unix paths and Linux
//! abstract names. Socket addresses are built and parsed here, so that no `sockaddr` leaves
//! this module; `EINTR` is handled here too (a listener blocked in `accept` survives signals).
//!
//! Addresses are this layer's own [`SockAddr`]: the public `connection::Address` converts to
//! and from it, so that the OS layer depends on nothing above it.

use super::{Deadline, cvt, retry};
use std::io;
use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// A stream socket address as the kernel knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SockAddr {
    /// `AF_INET` or `AF_INET6`.
    Inet(SocketAddr),
    /// `AF_UNIX` at a filesystem path; empty for an unnamed socket.
    Unix(PathBuf),
    /// `AF_UNIX` in Linux's abstract namespace: the name without its leading NUL byte.
    Abstract(Vec<u8>),
}

/// What a socket in a [`ReadySet`] is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// Room for a name in `sockaddr_un` (`sun_path`).
const SUN_PATH_LEN: usize = 108;

/// A socket address in the kernel's layout.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn empty() -> RawAddr {
        // SAFETY: `sockaddr_storage` is plain data; zeroed is a valid (unspecified) address.
        let storage = unsafe { std::mem::zeroed() };
        RawAddr { storage, len: size_of::<libc::sockaddr_storage>() as libc::socklen_t }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    fn family(&self) -> libc::c_int {
        libc::c_int::from(self.storage.ss_family)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// Lays `addr` out for the kernel.
fn encode(addr: &SockAddr) -> io::Result<RawAddr> {
    let mut raw = RawAddr::empty();
    match addr {
        SockAddr::Inet(SocketAddr::V4(a)) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr type.
            unsafe { std::ptr::write(raw.mut_ptr().cast::<libc::sockaddr_in>(), sin) };
            raw.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        SockAddr::Inet(SocketAddr::V6(a)) => {
            // SAFETY: `sockaddr_in6` is plain data; zeroed is valid, then filled in.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above.
            unsafe { std::ptr::write(raw.mut_ptr().cast::<libc::sockaddr_in6>(), sin6) };
            raw.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        SockAddr::Unix(path) => {
            let bytes = path.as_os_str().as_bytes();
            if bytes.is_empty() {
                return Err(invalid("empty AF_UNIX path"));
            }
            if bytes.contains(&0) {
                return Err(invalid("embedded null byte in AF_UNIX path"));
            }
            raw.len = unix_name(&mut raw, bytes)?;
        }
        SockAddr::Abstract(name) => {
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            raw.len = unix_name(&mut raw, &bytes)?;
        }
    }
    Ok(raw)
}

/// Writes a Unix name (a path, or `\0` and an abstract name) into `raw`; returns the length
/// to pass the kernel, which counts no terminating NUL (as CPython does; the zeroed storage
/// terminates a path that leaves room).
fn unix_name(raw: &mut RawAddr, bytes: &[u8]) -> io::Result<libc::socklen_t> {
    if bytes.len() > SUN_PATH_LEN {
        return Err(invalid("AF_UNIX path too long"));
    }
    raw.storage.ss_family = libc::AF_UNIX as libc::sa_family_t;
    let offset = offset_of!(libc::sockaddr_un, sun_path);
    // SAFETY: `sun_path` starts at `offset` inside the storage and holds SUN_PATH_LEN bytes,
    // which `bytes` does not exceed.
    unsafe {
        let dst = raw.mut_ptr().cast::<u8>().add(offset);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
    }
    Ok((offset + bytes.len()) as libc::socklen_t)
}

/// Reads an address the kernel filled in.
fn decode(raw: &RawAddr) -> io::Result<SockAddr> {
    let len = (raw.len as usize).min(size_of::<libc::sockaddr_storage>());
    match raw.family() {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, and it is long enough.
            let sin = unsafe { &*raw.ptr().cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*raw.ptr().cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SockAddr::Inet(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id))))
        }
        libc::AF_UNIX => {
            let offset = offset_of!(libc::sockaddr_un, sun_path);
            let name_len = len.saturating_sub(offset).min(SUN_PATH_LEN);
            // SAFETY: `name_len` bytes from `offset` lie inside the storage.
            let name = unsafe { std::slice::from_raw_parts(raw.ptr().cast::<u8>().add(offset), name_len) };
            Ok(match name.split_first() {
                // An unnamed socket (a client that did not bind): CPython reports `''`.
                None => SockAddr::Unix(PathBuf::new()),
                Some((0, rest)) => SockAddr::Abstract(rest.to_vec()),
                Some(_) => {
                    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    SockAddr::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(&name[..end])))
                }
            })
        }
        family => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected address family {family}"))),
    }
}

fn domain(addr: &SockAddr) -> libc::c_int {
    match addr {
        SockAddr::Inet(SocketAddr::V4(_)) => libc::AF_INET,
        SockAddr::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
        SockAddr::Unix(_) | SockAddr::Abstract(_) => libc::AF_UNIX,
    }
}

fn new_socket(domain: libc::c_int, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory effects.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0) })?;
    // SAFETY: on success the descriptor is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed; setsockopt only reads it.
    cvt(unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const T).cast(), size_of::<T>() as libc::socklen_t)
    })?;
    Ok(())
}

/// Small frames go out at once on TCP: the handshake sends two in a row, which Nagle's
/// algorithm would hold back for the peer's delayed acknowledgement. A frame is always one
/// write, so nothing is lost by it.
fn no_delay(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    match addr {
        SockAddr::Inet(_) => set_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int),
        _ => Ok(()),
    }
}

/// A listening socket bound to `addr`, non-blocking (so that [`accept`] can wait with a
/// deadline), and the address it is bound to (the port the kernel chose for port 0).
/// TCP sockets get `SO_REUSEADDR`, as CPython's do.
pub(crate) fn listen(addr: &SockAddr, backlog: u32) -> io::Result<(OwnedFd, SockAddr)> {
    let raw = encode(addr)?;
    let fd = new_socket(domain(addr), libc::SOCK_NONBLOCK)?;
    if let SockAddr::Inet(_) = addr {
        set_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int)?;
    }
    // SAFETY: `raw` holds a valid address of `raw.len` bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), raw.ptr(), raw.len) })?;
    let backlog = backlog.min(libc::c_int::MAX as u32) as libc::c_int;
    // SAFETY: listen has no memory effects.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    let bound = local_address(fd.as_fd())?;
    Ok((fd, bound))
}

/// Takes one pending connection from a non-blocking listening socket: the connected socket
/// (blocking, close-on-exec) and the peer's address, or `None` if none is pending (another
/// thread took it, or it was aborted before we came).
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, SockAddr)>> {
    let mut peer = RawAddr::empty();
    // SAFETY: `peer` has room for any address; the kernel writes at most `peer.len` bytes.
    let r = retry(|| unsafe { libc::accept4(listener.as_raw_fd(), peer.mut_ptr(), &mut peer.len, libc::SOCK_CLOEXEC) });
    let fd = match r {
        Ok(fd) => fd,
        Err(e) => {
            // Linux hands pending network errors of the new connection to accept(2): those,
            // like an empty queue, mean "wait for the next one" (accept(2), RETURN VALUE).
            let again = [
                libc::EAGAIN,
                libc::ECONNABORTED,
                libc::EPROTO,
                libc::ENETDOWN,
                libc::ENOPROTOOPT,
                libc::EHOSTDOWN,
                libc::ENONET,
                libc::EHOSTUNREACH,
                libc::EOPNOTSUPP,
                libc::ENETUNREACH,
            ];
            return if e.raw_os_error().is_some_and(|n| again.contains(&n)) { Ok(None) } else { Err(e) };
        }
    };
    // SAFETY: on success the descriptor is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let peer = decode(&peer)?;
    no_delay(fd.as_fd(), &peer)?;
    Ok(Some((fd, peer)))
}

/// A blocking stream socket connected to `addr`. A deadline bounds the connect through
/// `SO_SNDTIMEO` (which Linux applies to connect for TCP and Unix sockets alike); a signal
/// does not abort it.
pub(crate) fn connect(addr: &SockAddr, deadline: Deadline) -> io::Result<OwnedFd> {
    let raw = encode(addr)?;
    let fd = new_socket(domain(addr), 0)?;
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "timed out connecting");
    if let Some(left) = deadline.remaining() {
        if left.is_zero() {
            return Err(timed_out());
        }
        set_timeout(fd.as_fd(), libc::SO_SNDTIMEO, Some(left))?;
    }
    // SAFETY: `raw` holds a valid address of `raw.len` bytes.
    let first = cvt(unsafe { libc::connect(fd.as_raw_fd(), raw.ptr(), raw.len) });
    let result = match first {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => finish_interrupted_connect(fd.as_fd(), &raw, deadline),
        Err(e) => Err(e),
    };
    match result {
        // The timeout ran out: TCP says EINPROGRESS, a Unix socket with a full backlog EAGAIN.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS) | Some(libc::EAGAIN)) => {
            return Err(timed_out());
        }
        other => other?,
    }
    if deadline.remaining().is_some() {
        set_timeout(fd.as_fd(), libc::SO_SNDTIMEO, None)?;
    }
    no_delay(fd.as_fd(), addr)?;
    Ok(fd)
}

/// A connect a signal interrupted goes on in the kernel (TCP) or can be made again (Unix):
/// ask again, and if it is under way, wait until the socket is writable and take its result.
fn finish_interrupted_connect(fd: BorrowedFd<'_>, raw: &RawAddr, deadline: Deadline) -> io::Result<()> {
    loop {
        // SAFETY: as in `connect`.
        match cvt(unsafe { libc::connect(fd.as_raw_fd(), raw.ptr(), raw.len) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EALREADY) | Some(libc::EINPROGRESS)) => break,
            Err(e) => return Err(e),
        }
    }
    if !poll_writable(fd, deadline)? {
        return Err(io::Error::from_raw_os_error(libc::EINPROGRESS));
    }
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` is a live int of the length passed.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if err == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(err)) }
}

/// Waits until `fd` is writable (or in error) or the deadline passes.
fn poll_writable(fd: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    loop {
        // SAFETY: `pfd` is one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, deadline.poll_timeout_ms()) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            if deadline.expired() {
                return Ok(false);
            }
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets `SO_RCVTIMEO` (reads give `EAGAIN` after that long without data); `None` clears it.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    set_timeout(fd, libc::SO_RCVTIMEO, timeout)
}

fn set_timeout(fd: BorrowedFd<'_>, which: libc::c_int, timeout: Option<Duration>) -> io::Result<()> {
    // Zero means "no timeout" to the kernel: a timeout that is due gets the shortest one.
    let timeout = timeout.map(|t| t.max(Duration::from_micros(1)));
    let tv = match timeout {
        None => libc::timeval { tv_sec: 0, tv_usec: 0 },
        Some(t) => libc::timeval {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_usec: t.subsec_micros().max(u32::from(t.as_secs() == 0)) as libc::suseconds_t,
        },
    };
    set_option(fd, libc::SOL_SOCKET, which, tv)
}

/// The address a socket is bound to (`getsockname`).
pub(crate) fn local_address(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    let mut raw = RawAddr::empty();
    // SAFETY: `raw` has room for any address; the kernel writes at most `raw.len` bytes.
    cvt(unsafe { libc::getsockname(fd.as_raw_fd(), raw.mut_ptr(), &mut raw.len) })?;
    decode(&raw)
}

/// One `recv` that does not wait, whatever the socket's mode: `Some(n)` bytes (0 at end of
/// stream), or `None` if nothing is there yet.
pub(crate) fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a live, writable buffer of the given length; recv only writes into it.
    let r = retry(|| unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) });
    would_block_is_none(r)
}

/// One `send` that does not wait and never raises `SIGPIPE` (a gone peer gives `EPIPE`):
/// `Some(n)` bytes sent, or `None` if the socket's buffer is full.
pub(crate) fn send_now(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<Option<usize>> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is a live buffer of the given length; send only reads it.
    let r = retry(|| unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) });
    would_block_is_none(r)
}

fn would_block_is_none(r: io::Result<isize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sockets waited on as one descriptor: a level-triggered epoll set, readable (to `poll`)
/// while any socket in it is ready for what it is watched for. A listener's set holds its
/// listening socket and its handshakes under way, so that one `wait` covers them all.
pub(crate) struct ReadySet(OwnedFd);

impl ReadySet {
    pub(crate) fn new() -> io::Result<ReadySet> {
        // SAFETY: epoll_create1 has no memory effects.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: on success the descriptor is new and owned by nobody else.
        Ok(ReadySet(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for `interest`; `None` watches it for nothing until [`change`]d.
    ///
    /// [`change`]: ReadySet::change
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, interest: Option<Interest>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, interest)
    }

    pub(crate) fn change(&self, fd: BorrowedFd<'_>, interest: Option<Interest>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, interest)
    }

    pub(crate) fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd, None)
    }

    fn control(&self, op: libc::c_int, fd: BorrowedFd<'_>, interest: Option<Interest>) -> io::Result<()> {
        let events = match interest {
            Some(Interest::Read) => libc::EPOLLIN,
            Some(Interest::Write) => libc::EPOLLOUT,
            None => 0,
        };
        let mut event = libc::epoll_event { events: events as u32, u64: fd.as_raw_fd() as u64 };
        // SAFETY: `event` is a live epoll_event; the kernel only reads it.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut event) })?;
        Ok(())
    }

    /// Makes this descriptor an empty set of its own. A fork child's copy of the descriptor
    /// is its parent's set: the child renews it before it watches sockets of its own, and the
    /// number stays, so that descriptors borrowed from it stay valid.
    pub(crate) fn renew(&self) -> io::Result<()> {
        let fresh = ReadySet::new()?;
        // SAFETY: dup3 onto a descriptor we own replaces the file it refers to atomically; the
        // number stays open and ours. `fresh` is closed when dropped: the set lives on under
        // our number.
        cvt(unsafe { libc::dup3(fresh.0.as_raw_fd(), self.0.as_raw_fd(), libc::O_CLOEXEC) })?;
        Ok(())
    }
}

impl ReadySet {
    /// The keys (the descriptors' numbers, as `add` registered them) of those ready now, at
    /// most `max`, without waiting.
    pub(crate) fn ready_now(&self, max: usize) -> io::Result<Vec<RawFd>> {
        self.wait(max, Deadline::after(Some(std::time::Duration::ZERO)))
    }

    /// As [`ready_now`](ReadySet::ready_now), waiting until one is ready or `deadline`
    /// (empty then).
    pub(crate) fn wait(&self, max: usize, deadline: Deadline) -> io::Result<Vec<RawFd>> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; max.clamp(1, 1024)];
        // SAFETY: `events` has room for the count passed, and lives across the call.
        let n = retry(|| unsafe {
            libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, deadline.poll_timeout_ms())
        })?;
        Ok(events[..n as usize].iter().map(|e| e.u64 as RawFd).collect())
    }
}

impl AsFd for ReadySet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Whether `fd` is a Unix-domain socket (`SO_DOMAIN`): one that can carry descriptors.
pub(crate) fn is_unix(fd: BorrowedFd<'_>) -> bool {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` is a live int and `len` its size; getsockopt writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN, (&raw mut domain).cast(), &mut len)
    };
    r == 0 && domain == libc::AF_UNIX
}
