//! File descriptors: socket pairs, whole-buffer reads and writes, readiness polling and passing
//! descriptors over Unix sockets (`SCM_RIGHTS`).

use super::{Deadline, cvt, retry};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The kernel's limit on descriptors in one `SCM_RIGHTS` message.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair_of(libc::SOCK_STREAM)
}

/// A connected pair of Unix sequenced-packet sockets (message boundaries kept), close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair_of(libc::SOCK_SEQPACKET)
}

fn socketpair_of(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: on success both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates a descriptor (close-on-exec).
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Writes every byte of `bufs` (gathered, so a header and its payload go in one syscall when
/// they fit), never raising `SIGPIPE`: a gone reader gives `EPIPE`.
pub(crate) fn send_all(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<()> {
    gather_all(bufs, |slices| {
        // SAFETY: `msghdr` is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = slices.as_ptr().cast_mut().cast();
        msg.msg_iovlen = slices.len() as _;
        // SAFETY: `msg` points at live `IoSlice`s, which are ABI-compatible with `iovec`;
        // sendmsg only reads them.
        retry(|| unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
    })
}

/// The most buffers one gathered write takes: a frame is a header and a payload.
const MAX_GATHER: usize = 4;

/// Writes every byte of `bufs` with `write_once`, which writes a prefix of the slices it is
/// given and returns how many bytes went. The slices live on the stack: this is the path of
/// every message sent.
fn gather_all(bufs: &[&[u8]], mut write_once: impl FnMut(&[IoSlice<'_>]) -> io::Result<isize>) -> io::Result<()> {
    if bufs.len() > MAX_GATHER {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many buffers for one write"));
    }
    let mut storage = [IoSlice::new(&[]); MAX_GATHER];
    let mut count = 0;
    for buf in bufs.iter().filter(|b| !b.is_empty()) {
        storage[count] = IoSlice::new(buf);
        count += 1;
    }
    let mut slices = &mut storage[..count];
    while !slices.is_empty() {
        let n = write_once(slices)?;
        IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes. Returns `Ok(false)` if the peer closed before the first
/// byte (a clean end of stream), and `UnexpectedEof` if it closed in the middle.
pub(crate) fn recv_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<bool> {
    // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, and the callee only writes
    // initialised bytes into them.
    recv_exact_uninit(fd, unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) })
}

/// [`recv_exact`] into memory not yet initialised (a vector's spare capacity): on `Ok(true)`
/// every byte of `buf` has been written. Nothing is zeroed first, so a length a peer
/// announces but does not send costs address space, not memory.
pub(crate) fn recv_exact_uninit(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of the given length; read(2) only writes
        // into it, and `MaybeUninit` needs no initialisation to be written.
        let n = retry(|| unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) })?;
        if n == 0 {
            if done == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed in the middle of a message"));
        }
        done += n as usize;
    }
    Ok(true)
}

/// Sends `data` with `fds` attached to its first byte (`SCM_RIGHTS`), then the rest of `data`.
pub(crate) fn send_with_fds(fd: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() || data.is_empty() {
        if !fds.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "handles need at least one byte to travel with"));
        }
        return send_all(fd, &[data]);
    }
    let n = sendmsg_with_fds(fd, data, fds, 0)?;
    send_all(fd, &[&data[n..]])
}

/// [`send_with_fds`] that never waits: all of `data` goes in one call, or the error is
/// `WouldBlock` (also when only a part went). For messages that must never wait for their
/// reader: a few bytes on a socket with room, which takes them whole.
pub(crate) fn try_send_with_fds(fd: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "nothing to send"));
    }
    let n = sendmsg_with_fds(fd, data, fds, libc::MSG_DONTWAIT)?;
    if n < data.len() {
        return Err(io::Error::new(io::ErrorKind::WouldBlock, "the socket took only part of the message"));
    }
    Ok(())
}

/// One `sendmsg` of `data` with `fds` attached (none if empty): how many bytes went.
fn sendmsg_with_fds(fd: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>], flags: libc::c_int) -> io::Result<usize> {
    sendmsg_gathered(fd, &[IoSlice::new(data)], fds, flags)
}

/// One `sendmsg` of the gathered `slices` with `fds` attached (none if empty): how many bytes
/// went.
fn sendmsg_gathered(
    fd: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many handles in one message"));
    }
    let mut raw = [0 as RawFd; MAX_FDS_PER_MESSAGE];
    for (r, f) in raw.iter_mut().zip(fds) {
        *r = f.as_raw_fd();
    }
    let payload_len = std::mem::size_of_val(&raw[..fds.len()]);
    let mut control = Control::new();
    // SAFETY: `msghdr` is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr().cast_mut().cast();
    msg.msg_iovlen = slices.len() as _;
    if !fds.is_empty() {
        // SAFETY: CMSG_SPACE is a pure computation on a length.
        let space = unsafe { libc::CMSG_SPACE(payload_len as u32) } as usize;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` is 8-aligned and has room for one header holding the most
        // descriptors a message may carry (`Control`); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload_len);
        }
    }
    // SAFETY: `msg` points at live buffers set up above (`IoSlice` is ABI-compatible with
    // `iovec`); the descriptors are borrowed and open.
    retry(|| unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | flags) }).map(|n| n as usize)
}

/// Room for one control message of [`MAX_FDS_PER_MESSAGE`] descriptors (`CMSG_SPACE` of
/// 1012 bytes: 1032 on 64-bit Linux), 8-aligned, on the stack.
struct Control([u64; 136]);

impl Control {
    fn new() -> Control {
        Control([0; 136])
    }

    /// The bytes a receive may use: `CMSG_SPACE` of the most descriptors a message carries.
    fn space() -> usize {
        // SAFETY: pure computation on a length.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32) } as usize;
        space.min(std::mem::size_of::<Control>())
    }
}

/// Writes every byte of `bufs` on a socket, `fds` attached to the first of them
/// (`SCM_RIGHTS`; at most [`MAX_FDS_PER_MESSAGE`], at least one byte with them), never raising
/// `SIGPIPE`.
pub(crate) fn send_all_with_fds(fd: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut fds = Some(fds).filter(|f| !f.is_empty());
    if fds.is_some() && bufs.iter().all(|b| b.is_empty()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "handles need at least one byte to travel with"));
    }
    gather_all(bufs, |slices| {
        let n = sendmsg_gathered(fd, slices, fds.unwrap_or(&[]), 0)?;
        // Attached to the first bytes only: the kernel took them with the first that went.
        fds = None;
        Ok(n as isize)
    })
}

/// One `recv` that never waits: the byte count (0 at end of stream), or `WouldBlock` if
/// nothing is there. Descriptors sent with the bytes, if any, are closed.
pub(crate) fn try_recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of the given length; recv only writes into it.
    retry(|| unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
        .map(|n| n as usize)
}

/// Receives up to `buf.len()` bytes and any descriptors that travel with them (close-on-exec).
/// Returns the byte count (0 at end of stream) and the descriptors.
pub(crate) fn recv_with_fds(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recvmsg_with_fds(fd, buf, 0)
}

/// [`recv_with_fds`] that never waits: `WouldBlock` if nothing is there.
pub(crate) fn recv_with_fds_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recvmsg_with_fds(fd, buf, libc::MSG_DONTWAIT)
}

/// One `recvmsg` with `flags`: the byte count and the descriptors that came with the bytes.
fn recvmsg_with_fds(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, and the callee only writes
    // initialised bytes into them.
    let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let n = recv_some_with_fds(fd, buf, flags, &mut |f| fds.push(f))?;
    Ok((n, fds))
}

/// One `recvmsg` into `buf` with `flags` (close-on-exec for the descriptors): the byte count,
/// 0 at end of stream; each descriptor that came with the bytes goes to `take`, in order.
/// Descriptors that did not fit (`MSG_CTRUNC`: the process is out of descriptors) are an
/// error, after those that came were given to `take`.
pub(crate) fn recv_some_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
    take: &mut dyn FnMut(OwnedFd),
) -> io::Result<usize> {
    let mut control = Control::new();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `msghdr` is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = Control::space() as _;
    // SAFETY: `msg` points at live buffers of the stated sizes; recvmsg only writes into them
    // (`MaybeUninit` needs no initialisation to be written).
    let n = retry(|| unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) })? as usize;
    if msg.msg_controllen != 0 {
        // SAFETY: the kernel filled `control` with `msg_controllen` bytes of well-formed
        // headers; CMSG_FIRSTHDR/CMSG_NXTHDR walk only inside them. Each SCM_RIGHTS
        // descriptor is new and ours.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        take(OwnedFd::from_raw_fd(raw));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "handles were truncated in transit"));
    }
    Ok(n)
}

/// [`recv_some_with_fds`] into initialised bytes, waiting for them.
pub(crate) fn recv_some_into(fd: BorrowedFd<'_>, buf: &mut [u8], take: &mut dyn FnMut(OwnedFd)) -> io::Result<usize> {
    // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, and the callee only writes
    // initialised bytes into them.
    recv_some_with_fds(fd, unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }, 0, take)
}

/// [`recv_exact_uninit`] on a socket that may carry descriptors: each that comes with the
/// bytes goes to `take`, in order.
pub(crate) fn recv_exact_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    take: &mut dyn FnMut(OwnedFd),
) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        let n = recv_some_with_fds(fd, &mut buf[done..], 0, take)?;
        if n == 0 {
            if done == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed in the middle of a message"));
        }
        done += n;
    }
    Ok(true)
}

/// Packs `fds`, in order, into the queue of a fresh socket, and returns its reading end: one
/// descriptor that carries any number of them, as many `SCM_RIGHTS` messages (of at most
/// [`MAX_FDS_PER_MESSAGE`] each) waiting to be read. [`unpack_fds`] takes them out.
///
/// Never waits: nobody reads the socket while it is filled, so a message that does not fit
/// is an error, not a wait. Each message is one byte (the number of descriptors it carries)
/// and is charged about 770 bytes against the send buffer: a buffer of the default size
/// (`net.core.wmem_default`, 208 KiB) takes 278 messages (70,000 descriptors), one of the
/// kernel's smallest (4608 bytes, whatever the sysctls say) 6 (1,518).
pub(crate) fn pack_fds(fds: &[BorrowedFd<'_>]) -> io::Result<OwnedFd> {
    let (writer, reader) = socketpair()?;
    for chunk in fds.chunks(MAX_FDS_PER_MESSAGE) {
        try_send_with_fds(writer.as_fd(), &[chunk.len() as u8], chunk).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} handles do not fit in one socket's buffer (net.core.wmem_default)", fds.len()),
                )
            } else {
                e
            }
        })?;
    }
    // Closed, so that a reader sees the end after the last message, and never waits.
    drop(writer);
    Ok(reader)
}

/// Takes the `count` descriptors [`pack_fds`] packed into `packed`, in order. Fewer or more
/// than `count` is an error. Never waits: everything was queued before `packed` travelled,
/// so an empty queue is the end, even if a writer is still open.
pub(crate) fn unpack_fds(packed: BorrowedFd<'_>, count: usize) -> io::Result<Vec<OwnedFd>> {
    // (A count the sender announced: space is reserved for a sane one only.)
    let mut fds = Vec::with_capacity(count.min(1 << 16));
    loop {
        let mut announced = [0u8; 1];
        let (n, got) = match recvmsg_with_fds(packed, &mut announced, libc::MSG_DONTWAIT) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, Vec::new()),
            Err(e) => return Err(e),
        };
        if n == 0 {
            if fds.len() != count {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} handles arrived, {count} announced", fds.len()),
                ));
            }
            return Ok(fds);
        }
        if got.len() != usize::from(announced[0]) || fds.len() + got.len() > count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message of {} handles, {} announced, {count} in all", got.len(), announced[0]),
            ));
        }
        fds.extend(got);
    }
}

/// Waits until at least one of `fds` is readable (or hung up) or the deadline passes; returns
/// the readiness of each. `EINTR` restarts the wait with the time that is left.
pub(crate) fn poll_readable(fds: &[BorrowedFd<'_>], deadline: Deadline) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        let timeout = deadline.poll_timeout_ms();
        // SAFETY: `pfds` is a live array of `pfds.len()` pollfd structs.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if r >= 0 {
            if r == 0 && !deadline.expired() && timeout >= 0 {
                // poll's millisecond rounding can wake a hair early: wait out the rest.
                continue;
            }
            return Ok(pfds.iter().map(|p| p.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `fd` is readable (or hung up) now, without waiting: one `poll` with no timeout.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is one live pollfd struct.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Whether `fd` is an open descriptor of this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The descriptors open in this process, from `/proc/self/fd`.
pub(crate) fn open_fds() -> io::Result<Vec<RawFd>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(n) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    // The directory handle itself was listed and is closed now.
    out.retain(|&fd| is_open(fd));
    out.sort_unstable();
    Ok(out)
}

/// A pipe, close-on-exec: `(read end, write end)`.
///
/// An ordinary pipe, not a packet-mode (`O_DIRECT`) one: packet mode would keep messages
/// apart for readers, but each small write then takes a whole page slot, and a pipe holds 16
/// of them; an ordinary pipe holds 64 KiB of small messages, as a program that sends a batch
/// before its reader starts expects.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: on success both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One `read(2)` into `buf`: the byte count, 0 at end of file.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of the given length.
    retry(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize)
}

/// Writes every byte of `bufs` to a pipe (gathered into one `writev` when they fit), and
/// never dies of `SIGPIPE`: a gone reader gives `EPIPE`. Where the caller knows `SIGPIPE` is
/// ignored (Rust programs ignore it) this is a plain `writev`; otherwise the signal is blocked
/// around the write and, if the write raised it, taken back before it is unblocked.
pub(crate) fn write_all_pipe(fd: BorrowedFd<'_>, bufs: &[&[u8]], sigpipe_ignored: bool) -> io::Result<()> {
    if sigpipe_ignored {
        return writev_all(fd, bufs);
    }
    let _guard = super::proc::SigpipeBlock::new();
    writev_all(fd, bufs)
}

fn writev_all(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<()> {
    gather_all(bufs, |slices| {
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices are live.
        retry(|| unsafe { libc::writev(fd.as_raw_fd(), slices.as_ptr().cast(), slices.len() as libc::c_int) })
    })
}

/// The capacity [`grow_pipe`] asks for: 1 MiB, or less where `/proc/sys/fs/pipe-max-size`
/// (the most an unprivileged process may ask) is less. Read once.
fn big_pipe_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok().and_then(|s| s.trim().parse().ok());
        max.unwrap_or(1 << 20).min(1 << 20)
    })
}

/// Raises the capacity of the pipe behind `fd` (either end) to [`big_pipe_size`], never
/// lowering it. Best effort: a refusal (a user over `pipe-user-pages-hard`, a kernel without
/// `F_SETPIPE_SZ`) leaves the pipe as it was, which still works, only slower.
///
/// A 64 KiB pipe moves a large message in 64 KiB turns, each a wake-up of the other side;
/// 1 MiB turns double the throughput. The pages are allocated as data arrives and freed as it
/// is read, so a bigger pipe costs memory only while it is full; but it counts 256 pages
/// against the user's `pipe-user-pages-soft` (16384 by default), past which the user's new
/// pipes are made small. So only pipes that carry a large message are grown.
pub(crate) fn grow_pipe(fd: BorrowedFd<'_>) {
    let size = big_pipe_size() as libc::c_int;
    // SAFETY: F_GETPIPE_SZ and F_SETPIPE_SZ take and return plain integers, on a descriptor
    // we borrow.
    unsafe {
        if libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) < size {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        }
    }
}

/// Asks for transparent huge pages under `buf` (the 2 MiB-aligned part of it), memory about
/// to be filled by a large read. Fresh memory is faulted in page by page as a read copies
/// into it; for a payload of many megabytes that costs more than the copy, and one fault per
/// 2 MiB instead of one per 4 KiB removes most of it. Best effort: ignored where THP is off.
pub(crate) fn advise_huge_pages(buf: &mut [MaybeUninit<u8>]) {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_mut_ptr() as usize + buf.len()) & !(HUGE - 1);
    if end > start {
        // SAFETY: MADV_HUGEPAGE changes no contents and only advises on pages of `buf`, which
        // we borrow mutably (the range is inside it and page aligned).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}
