//! Shared memory: files (memfds and `/dev/shm` entries) and `MAP_SHARED` mappings of them.
//!
//! Anonymous objects (locks, values, queues) live in sparse memfds, the heap's arenas, so
//! nothing outlives the last process that holds them and nothing appears in `/dev/shm`.
//! Named segments (`SharedMemory`) live in `/dev/shm` through `shm_open`. Either way a child
//! gets the file by inheriting or receiving the descriptor and mapping it itself.

use super::{cvt, retry};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A mapped shared-memory segment. The mapping is undone when it drops; the memory itself
/// lives as long as any process maps it or holds its descriptor (or, for a named segment,
/// until it is unlinked too).
#[derive(Debug)]
pub(crate) struct Segment {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the segment is a plain shared mapping; every access to its bytes goes through
// atomics or through locks built on them, which is what makes sharing it between threads
// (and processes) sound. The pointer itself is never written after construction.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps `len` bytes of `fd`, read and write, shared.
    pub(crate) fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        let ptr = map_shared(fd.as_fd(), 0, len)?;
        Ok(Segment { fd, ptr, len })
    }

    /// The first byte of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The segment's descriptor, to pass to a child.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; nothing refers to it any more,
        // since every reference into it borrows this segment.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A fresh `MAP_SHARED` read-write mapping of `len` bytes of `fd` from `offset` (page-aligned).
fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<NonNull<u8>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a fresh shared mapping of a descriptor we borrow; the kernel picks the address,
    // so no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// A window of a shared file mapped into this process: `len` bytes from a page-aligned
/// offset. The file's pages stay whatever other processes make them; the window goes when
/// this drops. Holding a window does not hold the descriptor it was made from.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `Segment`: the bytes are only reached through atomics or locks built on them.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (at least one) of `fd` from `offset`, which must be page-aligned. The
    /// caller keeps the window inside the file: a byte past its end raises `SIGBUS`.
    pub(crate) fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        Ok(Mapping { ptr: map_shared(fd, offset, len.max(1))?, len: len.max(1) })
    }

    /// The window's first byte (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The window's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the window made in `new`; every reference into it borrows it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A new anonymous memfd of `len` bytes that hold no memory until touched (a sparse file),
/// sealed at that size: nobody can shrink it under a mapping, nor grow it.
pub(crate) fn sparse_memfd(name: &CStr, len: u64) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: the descriptor is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_len(fd.as_fd(), usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own, with a plain flags argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// The size of the memfd behind `fd` (received from another process), if it is sealed
/// against shrinking; `InvalidData` if not, since another process could then shrink it under
/// our mappings (turning our next access into `SIGBUS`).
pub(crate) fn sealed_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: F_GET_SEALS on a descriptor we borrow.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals == -1 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a sealed shared segment: another process could shrink it under our mapping",
        ));
    }
    Ok(size_of_fd(fd)? as u64)
}

/// Frees the memory behind `[offset, offset + len)` of the file behind `fd` (page-aligned):
/// those bytes read as zeros afterwards, in every process that maps them, and hold no memory
/// until written again. The file keeps its size.
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = match (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor we borrow, with plain integer arguments.
    retry(|| unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// The largest file this process may make (`RLIMIT_FSIZE`; making a larger one would raise
/// `SIGXFSZ`), or `None` if unlimited.
pub(crate) fn file_size_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Sets the size of the file behind `fd`.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: ftruncate on a descriptor we borrow.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// The room left in the file system behind `fd`: `Some((free, total))` in bytes, or `None`
/// if it has no limit (a tmpfs mounted with `size=0`, the kernel's own mount of memfds).
pub(crate) fn room(fd: BorrowedFd<'_>) -> io::Result<Option<(u64, u64)>> {
    // SAFETY: `statvfs` is plain data that fstatvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs writes into `st`, which lives for the call.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    if st.f_blocks == 0 {
        return Ok(None);
    }
    let block = st.f_frsize.max(1);
    Ok(Some((st.f_bavail.saturating_mul(block), st.f_blocks.saturating_mul(block))))
}

/// Allocates the first `len` bytes of the file behind `fd` now, so that touching them later
/// cannot fail: on a full tmpfs, this fails with `ENOSPC` where a write to a sparse mapping
/// would raise `SIGBUS`. `Ok(false)` if the file system cannot.
///
/// In steps of [`ALLOCATE_STEP`]: tmpfs gives up a whole call, undoing it, when a signal
/// arrives, and a large segment in one call could then never finish under a periodic signal
/// (a profiler's timer, say). A step that is interrupted is retried; the steps done are kept.
pub(crate) fn allocate(fd: BorrowedFd<'_>, len: usize) -> io::Result<bool> {
    let mut done = 0;
    while done < len {
        let step = (len - done).min(ALLOCATE_STEP);
        let offset = libc::off_t::try_from(done).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: fallocate on a descriptor we borrow, with plain integer arguments.
        match retry(|| unsafe { libc::fallocate(fd.as_raw_fd(), 0, offset, step as libc::off_t) }) {
            Ok(_) => done += step,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// How much [`allocate`] takes per call: about a millisecond of page clearing.
const ALLOCATE_STEP: usize = 8 << 20;

/// The size of the file behind `fd`.
pub(crate) fn size_of_fd(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: `stat` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which lives for the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Opens (and with `create`, exclusively creates) the named segment `name` (with its leading
/// `/`) in `/dev/shm`.
pub(crate) fn shm_open(name: &CStr, create: bool) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC | if create { libc::O_CREAT | libc::O_EXCL } else { 0 };
    // SAFETY: shm_open reads a NUL-terminated name and returns a new descriptor.
    let fd = cvt(unsafe { libc::shm_open(name.as_ptr(), flags, 0o600) })?;
    // SAFETY: the descriptor is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the named segment `name` from `/dev/shm`; mappings stay valid.
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: shm_unlink reads a NUL-terminated name.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// The (device, inode) pair of the file behind `fd`: what tells a named segment from another
/// made later under the same name.
pub(crate) fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: `stat` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which lives for the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

/// A new memfd holding exactly `parts`, one after the other, sealed so that nobody can change,
/// shrink or grow it: a child can map it and read it as plain memory (see [`SealedMap`]).
pub(crate) fn sealed_copy(name: &CStr, parts: &[&[u8]]) -> io::Result<OwnedFd> {
    use std::io::Write;
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: the descriptor is new and ours.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    for part in parts {
        file.write_all(part)?;
    }
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own, with a plain flags argument.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(file.into())
}

/// A read-only mapping of a whole memfd that is sealed against writing and shrinking: its
/// bytes can be borrowed as a `&[u8]`, since no process can change them, nor take the pages
/// away under the mapping (which would raise `SIGBUS`).
#[derive(Debug)]
pub(crate) struct SealedMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl SealedMap {
    /// Maps the memfd behind `fd`, which must be sealed against writes and shrinking and hold
    /// exactly `len` bytes (at least one): `InvalidData` otherwise. Everything is checked
    /// with the kernel, nothing taken from the file's contents or its sender's word.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SealedMap> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        // SAFETY: F_GET_SEALS on a descriptor we borrow.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
        if seals == -1 || seals & needed != needed {
            return Err(invalid("not a memfd sealed against writing and shrinking".into()));
        }
        let size = size_of_fd(fd)?;
        if size != len || len == 0 {
            return Err(invalid(format!("a sealed memfd of {size} bytes, {len} announced")));
        }
        // SAFETY: a fresh private read-only mapping of a descriptor we borrow; the kernel picks
        // the address.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SealedMap { ptr, len })
    }

    /// The file's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, all inside the file (its size was
        // checked and it cannot shrink), and they cannot change while mapped (sealed against
        // writes, so no writable mapping of it exists anywhere), as a shared borrow requires.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; every borrow of it borrows `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
