//! The internal OS layer: the only place in the crate that talks to the kernel.
//!
//! Thin, typed wrappers in the spirit of rustix: `OwnedFd`/`BorrowedFd` instead of raw integers,
//! `io::Result` everywhere, `EINTR` retried here so callers never see it, and every blocking call
//! takes a [`Deadline`]. The public modules use these; they do not call libc themselves.

pub(crate) mod deadline;
pub(crate) mod fd;
pub(crate) mod futex;
pub(crate) mod pidfd;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod socket;

pub(crate) use deadline::Deadline;

use std::io;

/// Turns a `-1` return into the `errno` error.
pub(crate) fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Calls `f` again while it fails with `EINTR`: a signal handler must not abort our waits.
pub(crate) fn retry<T: PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
