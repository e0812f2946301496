//! Where shared objects live (Python's `multiprocessing.heap`): each in an anonymous memfd
//! segment of its own, so that the kernel frees it when the last process holding it lets go,
//! and nothing is ever left in `/dev/shm`.
//!
//! A [`Shared<S>`] is a typed view of a state struct `S` at an offset in a segment. The state
//! is made of atomics only ([`SharedState`]): another process may write anything into it, and
//! any bit pattern is still a valid value, so a hostile or crashed peer can confuse the
//! object's logic (which validates what it reads) but never this process's memory safety.
//! A view travels to a child as the segment's descriptor and its offset; the child maps the
//! segment and checks that the state fits in it before it makes the view.

use crate::reduction::{RecvFd, SendFd};
use crate::sys::shm::Segment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A type that may live in shared memory and be read while other processes write it.
///
/// # Safety
/// Every bit pattern must be a valid value (atomics, or plain integers only ever reached
/// through atomics), all zeroes must be a valid initial state, and the type must be `Sync`.
pub(crate) unsafe trait SharedState: Sync {}

/// The first bytes of every segment this module makes: a mark that the segment is ours.
#[repr(C, align(64))]
struct Header {
    magic: AtomicU32,
}

const MAGIC: u32 = 0x6d70_6865; // "mphe"

/// Where the first object goes: past the header, on its own cache line.
pub(crate) const FIRST: usize = std::mem::size_of::<Header>();

/// A typed view of a `S` at `offset` in a shared segment. Clones share the segment.
pub(crate) struct Shared<S> {
    segment: Arc<Segment>,
    offset: usize,
    _state: PhantomData<S>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared { segment: self.segment.clone(), offset: self.offset, _state: PhantomData }
    }
}

impl<S: SharedState> Shared<S> {
    /// A new segment holding a zeroed `S` at [`FIRST`], followed by `extra` zeroed bytes.
    pub(crate) fn new(name: &CStr, extra: usize) -> io::Result<Shared<S>> {
        let len = FIRST
            .checked_add(std::mem::size_of::<S>())
            .and_then(|l| l.checked_add(extra))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let segment = Segment::anonymous(name, len)?;
        // SAFETY: the mapping is page-aligned and at least `FIRST` bytes long, so the header
        // fits, aligned; it is made of atomics.
        let header = unsafe { &*segment.as_ptr().cast::<Header>() };
        header.magic.store(MAGIC, Ordering::Relaxed);
        Ok(Shared { segment: Arc::new(segment), offset: FIRST, _state: PhantomData })
    }

    /// A view of the `T` at `offset` in the same segment, checked to fit and be aligned.
    pub(crate) fn view<T: SharedState>(&self, offset: usize) -> io::Result<Shared<T>> {
        Shared::<T>::check(&self.segment, offset)?;
        Ok(Shared { segment: self.segment.clone(), offset, _state: PhantomData })
    }

    fn check(segment: &Segment, offset: usize) -> io::Result<()> {
        let end = offset.checked_add(std::mem::size_of::<S>());
        if offset < FIRST
            || end.is_none_or(|end| end > segment.len())
            || !offset.is_multiple_of(std::mem::align_of::<S>())
        {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared object out of its segment"));
        }
        Ok(())
    }

    /// The state.
    #[inline]
    pub(crate) fn state(&self) -> &S {
        // SAFETY: `check` (or `new`) made sure an aligned `S` fits at `offset` in the mapping,
        // which lives as long as `self`; `S: SharedState` makes any content a valid `S`.
        unsafe { &*self.segment.as_ptr().add(self.offset).cast::<S>() }
    }

    /// The segment's bytes after the state: `extra` in `new`.
    pub(crate) fn tail(&self) -> (*mut u8, usize) {
        let start = self.offset + std::mem::size_of::<S>();
        // SAFETY: `start` is within the mapping (checked at construction).
        (unsafe { self.segment.as_ptr().add(start) }, self.segment.len() - start)
    }

    /// The segment's descriptor (an identity for the object, within this process).
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    fd: SendFd<'a>,
    offset: u64,
}

#[derive(Deserialize)]
struct WireIn {
    fd: RecvFd,
    offset: u64,
}

impl<S: SharedState> Serialize for Shared<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        WireOut { fd: SendFd(self.segment.fd()), offset: self.offset as u64 }.serialize(s)
    }
}

impl<S: SharedState> Shared<S> {
    /// The `S` at `offset` in the segment behind `fd` (received from another process),
    /// checked to be one of ours, and to fit.
    pub(crate) fn from_fd(fd: std::os::fd::OwnedFd, offset: usize) -> io::Result<Shared<S>> {
        let segment = Segment::from_fd(fd, FIRST)?;
        // SAFETY: the mapping is at least FIRST bytes (checked by from_fd) and page-aligned.
        let header = unsafe { &*segment.as_ptr().cast::<Header>() };
        if header.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a multiprocess shared object"));
        }
        Shared::<S>::check(&segment, offset)?;
        Ok(Shared { segment: Arc::new(segment), offset, _state: PhantomData })
    }
}

impl<'de, S: SharedState> Deserialize<'de> for Shared<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shared<S>, D::Error> {
        let w = WireIn::deserialize(d)?;
        let offset = usize::try_from(w.offset).map_err(crate::error::de_custom)?;
        Shared::from_fd(w.fd.0, offset).map_err(crate::error::de_custom)
    }
}
