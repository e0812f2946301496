//! Shared-memory segments: a descriptor and its `MAP_SHARED` mapping.
//!
//! Anonymous objects (locks, values, queues) live in a memfd each, so nothing outlives the
//! last process that holds it and nothing appears in `/dev/shm`. Named segments
//! (`SharedMemory`) live in `/dev/shm` through `shm_open`. Either way a child gets the segment
//! by inheriting or receiving the descriptor and mapping it itself.

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
    /// A new zero-filled anonymous segment of `len` bytes (at least one). `name` shows in
    /// `/proc/<pid>/fd` and `/proc/<pid>/maps`, for diagnostics only.
    pub(crate) fn anonymous(name: &CStr, len: usize) -> io::Result<Segment> {
        // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor.
        let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
        // SAFETY: the descriptor is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_len(fd.as_fd(), len.max(1))?;
        // Sealed at its size: a process holding the descriptor cannot shrink it under our
        // mapping, which would turn our next access into SIGBUS.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a descriptor we own, with a plain flags argument.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
        Segment::map(fd, len.max(1))
    }

    /// Maps the anonymous segment behind `fd` (received from another process), whole. Fails
    /// with `InvalidData` if it is smaller than `min_len` (its size comes from the kernel,
    /// never from what another process wrote) or is not sealed against shrinking.
    pub(crate) fn from_fd(fd: OwnedFd, min_len: usize) -> io::Result<Segment> {
        // SAFETY: F_GET_SEALS on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals == -1 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a sealed shared segment: another process could shrink it under our mapping",
            ));
        }
        let len = size_of_fd(fd.as_fd())?;
        if len < min_len.max(1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared segment of {len} bytes, at least {min_len} expected"),
            ));
        }
        Segment::map(fd, len)
    }

    /// Maps `len` bytes of `fd`, read and write, shared.
    pub(crate) fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        // SAFETY: a fresh shared mapping of a descriptor we own; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
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

/// Gives the pages of `[offset, offset + len)` of a segment's mapping back to the kernel:
/// they read as zeros afterwards and hold no memory until written again. Both ends must be
/// page-aligned. The caller makes sure nobody uses those bytes meanwhile.
pub(crate) fn discard(segment: &Segment, offset: usize, len: usize) -> io::Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > segment.len()) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: the range lies within our mapping (checked above); MADV_REMOVE frees the shmem
    // pages behind it, which the caller says nobody is using, and later reads see zeros.
    cvt(unsafe { libc::madvise(segment.as_ptr().add(offset).cast(), len, libc::MADV_REMOVE) }).map(drop)
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
