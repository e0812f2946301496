//! How handles travel to children and in messages (Python's `multiprocessing.reduction`).
//!
//! A child's arguments are serde values. Objects that own an OS handle serialize as an index
//! into a side table of descriptors; the descriptors themselves go to the child with
//! `SCM_RIGHTS` beside the message. A message on a connection that can carry descriptors (a
//! `pipe()` end, a Unix socket) is encoded the same way, its descriptors beside the frame.
//! Serializing such an object anywhere else (a TCP connection, a queue's item) is an error,
//! so a handle can never be turned into a meaningless number on the wire.
//!
//! A descriptor that several handles share (clones of one `Lock`, objects in one arena) is in
//! the table once, and travels once: the child gives each handle after the first a duplicate.

use crate::heap::Ticket;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

thread_local! {
    /// Descriptors collected while encoding a child's arguments; not `active` outside
    /// `encode`. Kept from one encoding to the next rather than made for each and moved in
    /// and out of the cell: a pool's submit encodes one small value each.
    static OUTGOING: RefCell<Outgoing> = const { RefCell::new(Outgoing::IDLE) };
    /// Descriptors received with a child's arguments; `None` outside `decode`.
    static INCOMING: RefCell<Option<Vec<Incoming>>> = const { RefCell::new(None) };
}

/// The descriptors of the handles encoded so far, each once, and the index of each.
struct Outgoing {
    /// An encoding is under way on this thread.
    active: bool,
    fds: Vec<RawFd>,
    /// Made at the first descriptor: most values hold none, and a map's hasher seeds itself
    /// from a thread-local on every creation.
    index: Option<HashMap<RawFd, u32>>,
    tickets: Vec<Ticket>,
    /// Whether this is a child's arguments (not a connection's message).
    to_child: bool,
}

impl Outgoing {
    const IDLE: Outgoing =
        Outgoing { active: false, fds: Vec::new(), index: None, tickets: Vec::new(), to_child: false };
}

/// A received descriptor. The table keeps it and each handle that names it gets a duplicate:
/// the handle that claims it first may close its copy at once (a shared object whose block
/// this process holds already keeps the descriptor it has), and the next must still get the
/// file.
struct Incoming(OwnedFd);

/// Arguments encoded for a child: the bytes and the descriptors they refer to by index. The
/// descriptors are borrowed from the objects encoded, which must outlive the sending.
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<RawFd>,
    /// Holds on the shared objects inside, for the child to take over (see `heap`): given
    /// back if these arguments are dropped before [`delivered`](Encoded::delivered).
    pub(crate) tickets: Vec<Ticket>,
}

impl Encoded {
    /// Arguments without handles.
    #[cfg(test)]
    pub(crate) fn plain(bytes: Vec<u8>) -> Encoded {
        Encoded { bytes, fds: Vec::new(), tickets: Vec::new() }
    }

    /// The arguments reached the child: the holds on the shared objects in them are its.
    pub(crate) fn delivered(&mut self) {
        self.tickets.drain(..).for_each(Ticket::delivered);
    }
}

/// Adds a hold on a shared object to the arguments being encoded (see [`Encoded::tickets`]).
pub(crate) fn add_ticket(ticket: Ticket) {
    OUTGOING.with(|o| {
        let mut table = o.borrow_mut();
        if table.active {
            table.tickets.push(ticket);
        }
    });
}

/// Encodes `value`, collecting the descriptors of the handles inside it. A descriptor that
/// several handles hold (the same number: the same open file) is collected once.
///
/// Only the same number counts as the same: two descriptors of one file (one `dup` of the
/// other, or a pipe opened twice) stay two, because what they share is not all there is to
/// them (a pipe's `O_NONBLOCK` belongs to each open file, not to the pipe).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    encode_with(value, true, Vec::with_capacity(32))
}

/// [`encode`] for a message on a connection that carries descriptors: the same, except what
/// only a child is given (a manager proxy's authentication key).
pub(crate) fn encode_message<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    // Room for a few numbers at first: a task's arguments often fit, without regrowing.
    encode_with(value, false, Vec::with_capacity(32))
}

/// [`encode_message`] into `buffer` (cleared first), given back as the bytes: a caller that
/// encodes many small values keeps one buffer instead of allocating one for each.
pub(crate) fn encode_message_in<T: Serialize + ?Sized>(value: &T, buffer: Vec<u8>) -> Result<Encoded> {
    encode_with(value, false, buffer)
}

/// [`encode_message_in`] for many values at once, one after the other in `buffer` (given
/// back as the bytes): `ends` (cleared first) gets where each one's bytes end, and `handles`
/// (cleared first) the values that hold handles, each with their descriptors and holds,
/// indexed from 0 in each value as if it had been encoded alone. For many small values (a
/// map's chunks), one encoding's setup instead of one for each; and each value is serialized
/// once (serializing some values has an effect: a manager proxy pins its object on the
/// server).
pub(crate) fn encode_each_in<'a, T: Serialize + ?Sized + 'a>(
    values: impl IntoIterator<Item = &'a T>,
    buffer: Vec<u8>,
    ends: &mut Vec<usize>,
    handles: &mut Vec<Handles>,
) -> Result<Vec<u8>> {
    ends.clear();
    handles.clear();
    let encoded = encode_into(false, buffer, |bytes| {
        for value in values {
            postcard::serialize_with_flavor(value, crate::queues::codec::Append(bytes))?;
            // This value's table taken out, if it holds anything: the next one's indexes
            // start again at 0.
            OUTGOING.with(|o| {
                let mut table = o.borrow_mut();
                if !table.fds.is_empty() || !table.tickets.is_empty() {
                    table.index = None;
                    let (fds, tickets) = (std::mem::take(&mut table.fds), std::mem::take(&mut table.tickets));
                    handles.push(Handles { value: ends.len(), fds, tickets });
                }
            });
            ends.push(bytes.len());
        }
        Ok(())
    })?;
    Ok(encoded.bytes)
}

/// The handles of one value of an [`encode_each_in`] (its place among them): their
/// descriptors and holds.
pub(crate) struct Handles {
    pub(crate) value: usize,
    pub(crate) fds: Vec<RawFd>,
    pub(crate) tickets: Vec<Ticket>,
}

fn encode_with<T: Serialize + ?Sized>(value: &T, to_child: bool, bytes: Vec<u8>) -> Result<Encoded> {
    encode_into(to_child, bytes, |bytes| postcard::serialize_with_flavor(value, crate::queues::codec::Append(bytes)))
}

/// Runs `write` (which appends encoded values to the bytes it is given) with a table for
/// the handles it meets.
fn encode_into(
    to_child: bool,
    mut bytes: Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> postcard::Result<()>,
) -> Result<Encoded> {
    /// Ends the encoding: puts back the table of the one it was made inside (a `Serialize`
    /// that sends a message of its own), or leaves none under way; also if serializing panics
    /// (the holds collected are then given back).
    struct End(Option<Outgoing>);
    impl Drop for End {
        fn drop(&mut self) {
            OUTGOING.with(|o| {
                let mut table = o.borrow_mut();
                match self.0.take() {
                    Some(outer) => *table = outer,
                    None => {
                        table.active = false;
                        table.fds.clear();
                        table.index = None;
                        table.tickets.clear();
                    }
                }
            });
        }
    }
    let end = End(OUTGOING.with(|o| {
        let mut table = o.borrow_mut();
        if table.active {
            Some(std::mem::replace(&mut *table, Outgoing { active: true, to_child, ..Outgoing::IDLE }))
        } else {
            table.active = true;
            table.to_child = to_child;
            None
        }
    }));
    bytes.clear();
    let bytes = write(&mut bytes).map(|()| bytes);
    let (fds, tickets) = OUTGOING.with(|o| {
        let mut table = o.borrow_mut();
        (std::mem::take(&mut table.fds), std::mem::take(&mut table.tickets))
    });
    drop(end);
    Ok(Encoded { bytes: bytes?, fds, tickets })
}

/// Decodes `bytes` whose handles arrived as `fds`. The first handle that names a descriptor
/// takes it, the next ones get duplicates of it; the descriptors no handle names are closed.
/// Every byte must belong to the value, as in [`from_bytes_exact`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    with_received(fds, || from_bytes_exact(bytes))
}

/// Runs `f` with `fds` as the descriptors received with what it decodes (a pool task's
/// arguments, decoded by a runner that knows their type): as [`decode`] does around its own
/// decoding.
pub(crate) fn with_received<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    /// Puts back the table of a decoding under way (a `Deserialize` that receives a message
    /// of its own, as a manager proxy does), also if deserializing panics.
    struct Restore(Option<Vec<Incoming>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            // This decoding's table goes, closing the descriptors no handle claimed.
            drop(INCOMING.with(|i| std::mem::replace(&mut *i.borrow_mut(), outer)));
        }
    }
    let table = fds.into_iter().map(Incoming).collect();
    let _restore = Restore(INCOMING.with(|i| i.borrow_mut().replace(table)));
    f()
}

/// Decodes a value postcard wrote into `bytes`, refusing bytes left over after it.
///
/// postcard's own `from_bytes` stops where the value ends, so a message sent as `(u32, u32)`
/// and read as `u32` would give the first field as if all were well. Every message this crate
/// decodes (connections, queue items, a child's arguments, pool orders, tasks and results,
/// the fork server's requests) goes through here, so a mismatch of types is a
/// [`Error::Codec`] instead.
pub(crate) fn from_bytes_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
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

/// As [`from_bytes_exact`], for a value a seed decodes (into something of the caller's);
/// bytes left over are an error only if `complete` says the value was read to its end.
pub(crate) fn seed_from_bytes<'de, S: serde::de::DeserializeSeed<'de>>(
    seed: S,
    bytes: &'de [u8],
    complete: impl FnOnce(&S::Value) -> bool,
) -> Result<S::Value> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = seed.deserialize(&mut de)?;
    let rest = de.finalize()?;
    if !rest.is_empty() && complete(&value) {
        return Err(Error::Codec(format!(
            "{} bytes left over after a value of {} bytes: the message was sent as another type",
            rest.len(),
            bytes.len() - rest.len()
        )));
    }
    Ok(value)
}

/// Whether descriptors can travel with what is being encoded now: in a child's arguments and
/// in a message on a connection that carries them (a `pipe()` end, a Unix socket). A queue's
/// item and a TCP connection's message carry bytes only, so a handle there either travels by
/// name (shared memory) or is refused.
pub(crate) fn can_send_fds() -> bool {
    OUTGOING.with(|o| o.borrow().active)
}

/// Whether what is being encoded now is a child's arguments: a child is given what only a
/// process of the family may know (CPython pickles a proxy's authkey only for a child).
pub(crate) fn to_child() -> bool {
    OUTGOING.with(|o| {
        let table = o.borrow();
        table.active && table.to_child
    })
}

/// Why a handle cannot be serialized here.
const NO_FDS_HERE: &str = "a handle (a connection, queue, lock, value, shared object or manager's shared \
     memory) can travel only where its descriptor can: in a child's args, or in a message on a pipe() end or a \
     Unix-socket connection (SCM_RIGHTS); not in a queue's item, on a TCP connection or on a one-way pipe \
     (as CPython's \"Queue objects should only be shared between processes through inheritance\")";

/// Serializes a descriptor as its index in the outgoing table (for `serialize_with`).
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> std::result::Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| {
        let mut table = o.borrow_mut();
        let table = &mut *table;
        table.active.then(|| {
            let next = table.fds.len() as u32;
            *table.index.get_or_insert_with(HashMap::new).entry(fd.as_raw_fd()).or_insert_with(|| {
                table.fds.push(fd.as_raw_fd());
                next
            })
        })
    });
    match index {
        Some(i) => i.serialize(s),
        None => Err(crate::error::ser_custom(NO_FDS_HERE)),
    }
}

/// A duplicate of the descriptor a serialized index names in the incoming table.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INCOMING.with(|i| {
        let table = i.borrow();
        let table = table.as_ref().ok_or_else(|| {
            crate::error::de_custom(
                "a handle can be received only with its descriptor: in a child's args, or in a message on a \
                 pipe() end or a Unix-socket connection",
            )
        })?;
        let slot = table.get(index).ok_or_else(|| crate::error::de_custom(format!("handle {index} is missing")))?;
        slot.0.try_clone().map_err(|e| crate::error::de_custom(format!("handle {index}: {e}")))
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
    use std::os::fd::AsFd;

    #[test]
    fn a_seed_may_stop_early_but_a_complete_value_may_not_leave_bytes() {
        use serde::de::DeserializeSeed;
        struct First;
        impl<'de> DeserializeSeed<'de> for First {
            type Value = u8;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<u8, D::Error> {
                u8::deserialize(d)
            }
        }
        assert_eq!(seed_from_bytes(First, &[7, 8], |_| false).unwrap(), 7);
        assert!(matches!(seed_from_bytes(First, &[7, 8], |_| true), Err(Error::Codec(m)) if m.contains("left over")));
        assert_eq!(seed_from_bytes(First, &[7], |_| true).unwrap(), 7);
    }

    #[test]
    fn exact_types_round_trip() {
        let bytes = postcard::to_allocvec(&(7u32, 9u32)).unwrap();
        assert_eq!(from_bytes_exact::<(u32, u32)>(&bytes).unwrap(), (7, 9));
        assert_eq!(decode::<(u32, u32)>(&bytes, Vec::new()).unwrap(), (7, 9));
    }

    /// Descriptors to encode: `SendFd`s of `fds`, decoded as `RecvFd`s.
    #[derive(Serialize)]
    struct Out<'a>(Vec<SendFd<'a>>);
    #[derive(Deserialize)]
    struct In(Vec<RecvFd>);

    fn inode(fd: BorrowedFd<'_>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::File::from(fd.try_clone_to_owned().unwrap()).metadata().unwrap().ino()
    }

    #[test]
    fn a_shared_descriptor_travels_once_and_each_handle_gets_its_own() {
        let (a, b) = crate::sys::fd::pipe().unwrap();
        let order = [&a, &b, &a, &a, &b];
        let encoded = encode(&Out(order.iter().map(|f| SendFd(f.as_fd())).collect())).unwrap();
        assert_eq!(encoded.fds, vec![a.as_raw_fd(), b.as_raw_fd()]);
        // What the child receives: its own copies of the two.
        let received = vec![a.try_clone().unwrap(), b.try_clone().unwrap()];
        let In(got) = decode(&encoded.bytes, received).unwrap();
        assert_eq!(got.len(), 5);
        let mut numbers: Vec<RawFd> = got.iter().map(|f| f.0.as_raw_fd()).collect();
        for (got, sent) in got.iter().zip(order) {
            assert_eq!(inode(got.0.as_fd()), inode(sent.as_fd()));
        }
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 5, "each handle holds a descriptor of its own");
        // An index nothing came for: an error.
        let lone = encode(&Out(vec![SendFd(a.as_fd())])).unwrap();
        assert!(decode::<In>(&lone.bytes, Vec::new()).is_err());
    }

    #[test]
    fn values_encoded_together_end_where_each_alone_would() {
        let values: Vec<Vec<u64>> = vec![vec![], vec![1], vec![300, 2], vec![u64::MAX; 3]];
        let (mut ends, mut handles) = (vec![99], Vec::new());
        let together = encode_each_in(&values, vec![7, 7], &mut ends, &mut handles).unwrap();
        let alone: Vec<Vec<u8>> = values.iter().map(|v| postcard::to_allocvec(v).unwrap()).collect();
        assert_eq!(together, alone.concat(), "the buffer was not cleared first, or a value differs");
        let mut end = 0;
        let expected: Vec<usize> = alone
            .iter()
            .map(|a| {
                end += a.len();
                end
            })
            .collect();
        assert_eq!(ends, expected);
        assert!(handles.is_empty());
        // Each value has the table it would have alone: its own descriptors, from index 0,
        // and the same bytes.
        let (a, b) = crate::sys::fd::pipe().unwrap();
        let outs = [Out(vec![SendFd(a.as_fd())]), Out(vec![]), Out(vec![SendFd(b.as_fd()), SendFd(a.as_fd())])];
        let bytes = encode_each_in(&outs, Vec::new(), &mut ends, &mut handles).unwrap();
        let fds: Vec<(usize, Vec<RawFd>)> = handles.iter().map(|h| (h.value, h.fds.clone())).collect();
        assert_eq!(fds, vec![(0, vec![a.as_raw_fd()]), (2, vec![b.as_raw_fd(), a.as_raw_fd()])]);
        let mut start = 0;
        for (i, (out, &end)) in outs.iter().zip(&ends).enumerate() {
            let alone = encode(out).unwrap();
            assert_eq!(&bytes[start..end], &alone.bytes[..]);
            let own = handles.iter().find(|h| h.value == i).map_or(Vec::new(), |h| h.fds.clone());
            assert_eq!(own, alone.fds);
            start = end;
        }
    }

    #[test]
    fn a_claim_after_the_first_holder_let_go_still_gets_the_file() {
        // A handle that drops its descriptor while decoding (a shared object whose block is
        // here already): the next handle of the same file still gets it.
        struct Drops;
        impl<'de> Deserialize<'de> for Drops {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Drops, D::Error> {
                drop(deserialize_fd(d)?);
                Ok(Drops)
            }
        }
        let (a, _b) = crate::sys::fd::pipe().unwrap();
        let encoded = encode(&Out(vec![SendFd(a.as_fd()), SendFd(a.as_fd())])).unwrap();
        assert_eq!(encoded.fds.len(), 1);
        let received = vec![a.try_clone().unwrap()];
        let (Drops, got) = decode::<(Drops, RecvFd)>(&encoded.bytes[1..], received).unwrap();
        assert_eq!(inode(got.0.as_fd()), inode(a.as_fd()));
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
