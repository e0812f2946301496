//! How items become ring records: postcard, except that a `Vec<u8>` goes as its bytes.
//!
//! Postcard writes and reads a `Vec<u8>` one element at a time (about 1.5 GB/s here), while
//! a byte payload is what large messages usually are; copying those bytes whole runs at
//! memory speed. Both ends of a queue have the same item type (the ring records it), so the
//! special case needs no marker on the wire.

use crate::{Error, Result};
use postcard::ser_flavors::Flavor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::cell::Cell;

thread_local! {
    /// A buffer reused for encoding and decoding on this thread.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Scratch buffers above this are not kept after use.
const KEEP_SCRATCH: usize = 1 << 20;

/// Runs `f` with this thread's scratch buffer (a fresh one if a nested call holds it).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.take();
    let r = f(&mut buf);
    if buf.capacity() <= KEEP_SCRATCH {
        SCRATCH.set(buf);
    }
    r
}

/// A tag for the item type, so that a queue received as `Queue<U>` when it was made as
/// `Queue<T>` is refused rather than decoded as garbage (both ends run the same program).
pub(crate) fn type_tag<T: 'static>() -> u64 {
    // FNV-1a over the type's name.
    std::any::type_name::<T>().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Appends postcard bytes to a borrowed vector.
pub(crate) struct Append<'a>(pub(crate) &'a mut Vec<u8>);

impl Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The payload for `item`: its own bytes for a `Vec<u8>`, else postcard in `scratch`.
pub(crate) fn encode<'a, T: Serialize + 'static>(item: &'a T, scratch: &'a mut Vec<u8>) -> Result<&'a [u8]> {
    if let Some(bytes) = (item as &dyn Any).downcast_ref::<Vec<u8>>() {
        return Ok(bytes);
    }
    scratch.clear();
    postcard::serialize_with_flavor(item, Append(scratch))?;
    Ok(scratch)
}

/// Whether `T`'s payload is its bytes (see [`encode`]): then `decode_bytes` applies.
pub(crate) fn is_bytes<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
}

/// The item whose payload is `bytes`, for a `T` that [`is_bytes`].
pub(crate) fn decode_bytes<T: 'static>(bytes: Vec<u8>) -> Result<T> {
    let mut slot = Some(bytes);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| Error::Codec("a byte payload for an item that is not bytes".into()))
}

/// The item postcard wrote into `payload`; every byte must belong to it.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    crate::reduction::from_bytes_exact(payload)
}
