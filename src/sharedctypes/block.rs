//! The memory of one shared ctypes object: a state `S` (its lock, or nothing), then `len`
//! elements of `T` at an offset aligned for `T`, all in one anonymous segment.
//!
//! The length lives in the handle, never in shared memory: a handle made here knows it, and
//! a handle received by a child is checked against the size of the segment the kernel
//! reports before any element is reached.

use super::Pod;
use crate::heap::{FIRST, Shared, SharedState};
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io;
use std::mem::{MaybeUninit, align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

/// The largest alignment an element may have. Mappings start on a page boundary, and pages
/// are at least this large, so an offset aligned within the segment is an aligned address in
/// every process that maps it.
pub(super) const MAX_ALIGN: usize = 4096;

/// A handle to one object's memory. Clones share it.
pub(super) struct Block<S, T> {
    shared: Shared<S>,
    /// The first element, inside the mapping `shared` keeps alive.
    data: NonNull<T>,
    len: usize,
}

impl<S, T> Clone for Block<S, T> {
    fn clone(&self) -> Self {
        Block { shared: self.shared.clone(), data: self.data, len: self.len }
    }
}

// SAFETY: `data` points into the mapping that `shared` (an `Arc` of the segment) keeps alive
// for as long as the block; the elements are `Pod` (so `Send + Sync` and valid for any bytes),
// and every access to them goes through the object's lock or through atomics.
unsafe impl<S, T: Pod> Send for Block<S, T> where Shared<S>: Send {}
// SAFETY: as above.
unsafe impl<S, T: Pod> Sync for Block<S, T> where Shared<S>: Sync {}

impl<S: SharedState, T: Pod> Block<S, T> {
    /// Bytes between the end of the state and the first element.
    fn pad() -> usize {
        let start = FIRST + size_of::<S>();
        start.next_multiple_of(align_of::<T>()) - start
    }

    /// A new block holding a zeroed state and `len` zeroed elements.
    pub(super) fn new(len: usize) -> Result<Self> {
        if align_of::<T>() > MAX_ALIGN {
            return Err(Error::InvalidArgument(format!(
                "an element aligned to {} bytes; at most {MAX_ALIGN} is supported",
                align_of::<T>()
            )));
        }
        let bytes = size_of::<T>()
            .checked_mul(len)
            .and_then(|b| b.checked_add(Self::pad()))
            .ok_or_else(|| Error::InvalidArgument(format!("an array of {len} elements is too large")))?;
        Ok(Self::attach(Shared::aligned(bytes, align_of::<T>())?, len)?)
    }

    /// The block of `len` elements in `shared`'s segment, checked to fit in it: its size comes
    /// from the kernel, so a wrong `len` (or a segment another process shrank) is an error
    /// here, never an access past the mapping.
    pub(super) fn attach(shared: Shared<S>, len: usize) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if align_of::<T>() > MAX_ALIGN {
            return Err(invalid(format!("an element aligned to {} bytes", align_of::<T>())));
        }
        // Where the state sits: objects made here put it at FIRST, and the data's offset is
        // reckoned from there.
        let offset = shared.offset();
        if offset != FIRST {
            return Err(invalid(format!("shared object state at offset {offset}, {FIRST} expected")));
        }
        let (tail, room) = shared.tail();
        let pad = Self::pad();
        let end = size_of::<T>().checked_mul(len).and_then(|b| b.checked_add(pad));
        if end.is_none_or(|end| end > room) {
            return Err(invalid(format!("{len} shared elements do not fit in a segment of {room} bytes")));
        }
        // SAFETY: `pad <= end <= room`, so the result is within the mapping or one past it.
        let data = unsafe { tail.add(pad) }.cast::<T>();
        if !data.is_aligned() {
            return Err(invalid("shared elements out of alignment".into()));
        }
        let data = NonNull::new(data).ok_or_else(|| invalid("null mapping".into()))?;
        Ok(Block { shared, data, len })
    }

    /// The state.
    pub(super) fn state(&self) -> &S {
        self.shared.state()
    }

    /// The segment and state.
    pub(super) fn shared(&self) -> &Shared<S> {
        &self.shared
    }

    /// The number of elements.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The first element: `len` aligned elements start here, in the mapping.
    pub(super) fn ptr(&self) -> *mut T {
        self.data.as_ptr()
    }

    /// Element `i`, which must be below `len`.
    pub(super) fn elem(&self, i: usize) -> *mut T {
        debug_assert!(i < self.len);
        // SAFETY: `i < len`, and `len` elements fit in the mapping (checked in `attach`).
        unsafe { self.data.as_ptr().add(i) }
    }

    /// Writes `values` into a block no other handle can reach yet (just made).
    pub(super) fn init_from(&mut self, values: &[T]) {
        debug_assert_eq!(values.len(), self.len);
        // SAFETY: `len` elements fit at `data`; `&mut self` on a block that was never cloned
        // or sent means no one else reads or writes them; a fresh mapping cannot overlap
        // `values`.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr(), self.len) };
    }

    /// Serializes the handle of a one-element object: the segment alone.
    pub(super) fn serialize_one<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.shared.serialize(s)
    }

    /// Receives the handle of a one-element object.
    pub(super) fn deserialize_one<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shared = Shared::<S>::deserialize(d)?;
        Self::attach(shared, 1).map_err(serde::de::Error::custom)
    }

    /// Serializes the handle of an array: the segment and the length.
    pub(super) fn serialize_many<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        (&self.shared, self.len as u64).serialize(s)
    }

    /// Receives the handle of an array, checking that the length it came with fits.
    pub(super) fn deserialize_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (shared, len) = <(Shared<S>, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(crate::error::de_custom)?;
        Self::attach(shared, len).map_err(crate::error::de_custom)
    }
}

/// How many bytes each atomic access moves for a `T`: its alignment, at most 8. The size of
/// a type is a multiple of its alignment, and the first byte is aligned for `T`, so every
/// chunk is aligned for its atomic type.
const fn unit<T>() -> usize {
    if align_of::<T>() < 8 { align_of::<T>() } else { 8 }
}

/// Reads the `T` at `src` with relaxed atomic loads: one load when `T` is 1, 2, 4 or 8 bytes
/// and aligned to its size, else one per aligned chunk. A concurrent writer may leave some
/// chunks old and some new: a torn value, but still a valid `T` (any bytes are, for `Pod`).
///
/// # Safety
/// `src` is aligned, within a live mapping, and every concurrent access to it is made by
/// [`atomic_load`] and [`atomic_store`] for the same `T`.
pub(super) unsafe fn atomic_load<T: Pod>(src: *const T) -> T {
    let mut out = MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    let src = src.cast::<u8>().cast_mut();
    let unit = unit::<T>();
    let mut i = 0;
    while i < size_of::<T>() {
        // SAFETY: `i + unit <= size_of::<T>()`, so both chunks are within their `T`s, aligned
        // for their atomic type (see `unit`); the source is only accessed atomically (the
        // caller's promise), the destination is our local.
        unsafe {
            let (from, to) = (src.add(i), dst.add(i));
            match unit {
                8 => to.cast::<u64>().write(AtomicU64::from_ptr(from.cast()).load(Ordering::Relaxed)),
                4 => to.cast::<u32>().write(AtomicU32::from_ptr(from.cast()).load(Ordering::Relaxed)),
                2 => to.cast::<u16>().write(AtomicU16::from_ptr(from.cast()).load(Ordering::Relaxed)),
                _ => to.write(AtomicU8::from_ptr(from).load(Ordering::Relaxed)),
            }
        }
        i += unit;
    }
    // SAFETY: every byte was written above, and any bytes are a valid `T` (`Pod`).
    unsafe { out.assume_init() }
}

/// Writes `value` at `dst` with relaxed atomic stores, chunked as [`atomic_load`] reads.
///
/// # Safety
/// As for [`atomic_load`].
pub(super) unsafe fn atomic_store<T: Pod>(dst: *mut T, value: T) {
    let src = (&raw const value).cast::<u8>();
    let dst = dst.cast::<u8>();
    let unit = unit::<T>();
    let mut i = 0;
    while i < size_of::<T>() {
        // SAFETY: as in `atomic_load`; `value` has no padding (`Pod`), so each chunk read
        // from it is initialized.
        unsafe {
            let (from, to) = (src.add(i), dst.add(i));
            match unit {
                8 => AtomicU64::from_ptr(to.cast()).store(from.cast::<u64>().read(), Ordering::Relaxed),
                4 => AtomicU32::from_ptr(to.cast()).store(from.cast::<u32>().read(), Ordering::Relaxed),
                2 => AtomicU16::from_ptr(to.cast()).store(from.cast::<u16>().read(), Ordering::Relaxed),
                _ => AtomicU8::from_ptr(to).store(from.read(), Ordering::Relaxed),
            }
        }
        i += unit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct NoState;
    // SAFETY: zero-sized.
    unsafe impl SharedState for NoState {}

    #[derive(Default)]
    struct Word(#[allow(dead_code)] AtomicU32);
    // SAFETY: one atomic.
    unsafe impl SharedState for Word {}

    #[test]
    fn attach_rejects_a_length_past_the_segment() {
        let block = Block::<NoState, u64>::new(10).unwrap();
        let room = block.shared().tail().1;
        assert!(Block::<NoState, u64>::attach(block.shared().clone(), 10).is_ok());
        assert!(Block::<NoState, u64>::attach(block.shared().clone(), room / 8 + 1).is_err());
        assert!(Block::<NoState, u64>::attach(block.shared().clone(), usize::MAX).is_err());
        assert!(Block::<NoState, [u8; 3]>::attach(block.shared().clone(), usize::MAX / 2).is_err());
    }

    #[test]
    fn data_is_aligned_past_the_state() {
        #[derive(Clone, Copy)]
        #[repr(C, align(256))]
        struct Wide([u8; 256]);
        // SAFETY: bytes only.
        unsafe impl Pod for Wide {}
        let block = Block::<Word, Wide>::new(3).unwrap();
        assert!(block.ptr().is_aligned());
        assert!(block.ptr() as usize >= block.state() as *const Word as usize + 4);
        let block = Block::<Word, u8>::new(0).unwrap();
        assert_eq!(block.len(), 0);
    }

    #[test]
    fn atomic_copies_round_trip_every_shape() {
        fn round_trip<T: Pod + PartialEq + std::fmt::Debug>(x: T) {
            let block = Block::<NoState, T>::new(1).unwrap();
            // SAFETY: the block's one element, only reached here.
            unsafe {
                atomic_store(block.ptr(), x);
                assert_eq!(atomic_load(block.ptr()), x);
            }
        }
        round_trip(0xa5u8);
        round_trip(-2i16);
        round_trip(1.5f32);
        round_trip(u64::MAX - 7);
        round_trip([1u8, 2, 3]);
        round_trip([1u16, 2, 3]);
        round_trip([7u32, 8, 9]);
        round_trip([1.0f64, -2.0, 3.5]);
        round_trip([[1u8; 5]; 3]);
    }
}
