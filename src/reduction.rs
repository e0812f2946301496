//! How handles travel to children (Python's `multiprocessing.reduction`).
//!
//! A child's arguments are serde values. Objects that own an OS handle serialize as an index
//! into a side table of descriptors; the descriptors themselves go to the child with
//! `SCM_RIGHTS` in the same message. Serializing such an object anywhere else is an error, so a
//! handle can never be turned into a meaningless number on the wire.

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

thread_local! {
    /// Descriptors collected while encoding a child's arguments; `None` outside `encode`.
    static OUTGOING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// Descriptors received with a child's arguments; `None` outside `decode`.
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Arguments encoded for a child: the bytes and the descriptors they refer to by index. The
/// descriptors are borrowed from the objects encoded, which must outlive the sending.
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<RawFd>,
}

/// Encodes `value`, collecting the descriptors of the handles inside it.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    OUTGOING.with(|o| *o.borrow_mut() = Some(Vec::new()));
    let bytes = postcard::to_allocvec(value);
    let fds = OUTGOING.with(|o| o.borrow_mut().take()).unwrap_or_default();
    Ok(Encoded { bytes: bytes?, fds })
}

/// Decodes `bytes` whose handles arrived as `fds`. Every descriptor must be claimed by exactly
/// one handle; the ones left over are closed. Every byte must belong to the value, as in
/// [`from_bytes_exact`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    INCOMING.with(|i| *i.borrow_mut() = Some(fds.into_iter().map(Some).collect()));
    let value = from_bytes_exact(bytes);
    INCOMING.with(|i| i.borrow_mut().take());
    value
}

/// Decodes a value postcard wrote into `bytes`, refusing bytes left over after it.
///
/// postcard's own `from_bytes` stops where the value ends, so a message sent as `(u32, u32)`
/// and read as `u32` would give the first field as if all were well. Every message this crate
/// decodes (connections, queue items, a child's arguments, pool orders, tasks and results,
/// the fork server's requests) goes through here, so a mismatch of types is a
/// [`Error::Codec`] instead.
pub(crate) fn from_bytes_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(Error::Codec(format!(
            "{} bytes left over after a value of {} bytes: the message was sent as another type",
            rest.len(),
            bytes.len() - rest.len()
        )));
    }
    Ok(value)
}

/// Whether descriptors can travel with what is being encoded now: only in a child's
/// arguments. A connection's message and a queue's item carry bytes only (descriptors in
/// messages come with `Connection::send_handle`, later), so a handle there either travels by
/// name (shared memory) or is refused.
pub(crate) fn can_send_fds() -> bool {
    OUTGOING.with(|o| o.borrow().is_some())
}

/// Serializes a descriptor as its index in the outgoing table (for `serialize_with`).
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> std::result::Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| {
        o.borrow_mut().as_mut().map(|table| {
            table.push(fd.as_raw_fd());
            table.len() as u32 - 1
        })
    });
    match index {
        Some(i) => i.serialize(s),
        None => Err(crate::error::ser_custom("a handle can only be sent to a child process, in its args")),
    }
}

/// Takes the descriptor a serialized index names from the incoming table.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INCOMING.with(|i| {
        let mut table = i.borrow_mut();
        let table = table
            .as_mut()
            .ok_or_else(|| crate::error::de_custom("a handle can only be received by a child process"))?;
        table
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| crate::error::de_custom(format!("handle {index} is missing or claimed twice")))
    })
}

/// A descriptor to serialize as a handle (see [`serialize_fd`]).
pub(crate) struct SendFd<'a>(pub(crate) BorrowedFd<'a>);

impl Serialize for SendFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

/// A descriptor deserialized from a handle (see [`deserialize_fd`]).
pub(crate) struct RecvFd(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for RecvFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RecvFd, D::Error> {
        deserialize_fd(d).map(RecvFd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_types_round_trip() {
        let bytes = postcard::to_allocvec(&(7u32, 9u32)).unwrap();
        assert_eq!(from_bytes_exact::<(u32, u32)>(&bytes).unwrap(), (7, 9));
        assert_eq!(decode::<(u32, u32)>(&bytes, Vec::new()).unwrap(), (7, 9));
    }

    #[test]
    fn leftover_bytes_are_a_codec_error() {
        let bytes = postcard::to_allocvec(&(7u32, 9u32)).unwrap();
        match from_bytes_exact::<u32>(&bytes) {
            Err(Error::Codec(message)) => assert!(message.contains("1 bytes left over"), "{message}"),
            other => panic!("expected a codec error, got {other:?}"),
        }
        // A child's arguments (and the fork server's requests) decode the same way.
        assert!(matches!(decode::<(u32,)>(&bytes, Vec::new()), Err(Error::Codec(_))));
    }
}
