//! A chunk's encoded arguments or results, kept inline when they are a few bytes (a number
//! or two): then they are neither allocated by one of the pool's threads nor freed by
//! another, which costs glibc's allocator a lock of the arena they came from, and often a
//! wait for it.

use std::ops::Deref;

/// Bytes up to this many are kept inline.
const INLINE: usize = 30;

/// Bytes, inline when few.
#[derive(Clone)]
pub(crate) enum Bytes {
    Inline(u8, [u8; INLINE]),
    Heap(Vec<u8>),
}

impl Bytes {
    /// A copy of `bytes`: inline if they fit.
    pub(crate) fn copy_of(bytes: &[u8]) -> Bytes {
        match Bytes::inline(bytes) {
            Some(inline) => inline,
            None => Bytes::Heap(bytes.to_vec()),
        }
    }

    /// The bytes of `buffer`: copied inline if few, and the buffer kept for the next use;
    /// otherwise the buffer itself, moved out (left empty).
    pub(crate) fn take_from(buffer: &mut Vec<u8>) -> Bytes {
        Bytes::inline(buffer).unwrap_or_else(|| Bytes::Heap(std::mem::take(buffer)))
    }

    fn inline(bytes: &[u8]) -> Option<Bytes> {
        let mut buf = [0; INLINE];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Bytes::Inline(bytes.len() as u8, buf))
    }
}

/// A vector's bytes: moved if many, copied inline if few (the vector is freed here, by the
/// thread that made it).
impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes::inline(&bytes).unwrap_or(Bytes::Heap(bytes))
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // The length was checked against the buffer when it was made.
            Bytes::Inline(len, buf) => &buf[..*len as usize],
            Bytes::Heap(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_bytes_are_inline_and_many_are_not() {
        for n in [0, 1, INLINE, INLINE + 1, 1000] {
            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut buffer = v.clone();
            let taken = Bytes::take_from(&mut buffer);
            // Kept (as it was) when copied inline; moved out (left empty) otherwise.
            assert_eq!(buffer.len(), if n > INLINE { 0 } else { n });
            for b in [Bytes::from(v.clone()), Bytes::copy_of(&v), taken] {
                assert_eq!(&*b, &v[..]);
                assert_eq!(matches!(b, Bytes::Inline(..)), n <= INLINE);
            }
        }
    }
}
