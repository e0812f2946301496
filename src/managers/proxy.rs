//! What every proxy is underneath: an object's number in a server, and a reference to it held
//! by this process, given back when the last clone of the proxy here is dropped.
//!
//! A proxy serializes, so it goes wherever serde values go: in a `Process`'s arguments, a
//! queue item, a connection's message, a pool task, or inside a value stored in another
//! proxy. On its way to another process it travels with a pin (see the server's docs), which
//! the receiver claims when it decodes it; inside a value stored in the same server it
//! travels bare, and the object that stores it holds a reference instead.

use super::client::Client;
use super::wire::{Bytes, Id, Reply, Request};
use crate::connection::Address;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

thread_local! {
    /// While a value bound for a server is encoded: that server, and the objects whose
    /// proxies the value holds.
    static BOUND: RefCell<Option<(Address, Vec<Id>)>> = const { RefCell::new(None) };
    /// While a queue item is decoded: its server, and the references the server moved to
    /// this process with it, which the proxies decoded adopt instead of taking new ones.
    static ADOPTED: RefCell<Option<(Address, Vec<Id>)>> = const { RefCell::new(None) };
}

/// Decodes a queue item whose proxies' references came with it (`adopted`); the ones no
/// proxy took (a value that failed to decode) are given back.
pub(crate) fn decode_adopting<T: DeserializeOwned>(client: &Client, bytes: &[u8], adopted: Vec<Id>) -> Result<T> {
    if adopted.is_empty() {
        return decode(bytes);
    }
    let outer = ADOPTED.with(|a| a.borrow_mut().replace((client.address().clone(), adopted)));
    let value = decode(bytes);
    let left = ADOPTED.with(|a| std::mem::replace(&mut *a.borrow_mut(), outer)).map(|(_, l)| l).unwrap_or_default();
    for id in left {
        let _ = client.call(&Request::DecRef { id });
    }
    value
}

/// Takes a reference of the item being decoded for `id`, if it brought one.
fn adopt_from_item(address: &Address, id: Id) -> bool {
    ADOPTED.with(|a| match a.borrow_mut().as_mut() {
        Some((at, ids)) if at == address => match ids.iter().position(|&i| i == id) {
            Some(i) => {
                ids.swap_remove(i);
                true
            }
            None => false,
        },
        _ => false,
    })
}

/// Encodes `value` for the server of `client`: its bytes, and the objects of the proxies in
/// it (which the storing object will hold).
pub(crate) fn encode_for<T: Serialize + ?Sized>(client: &Client, value: &T) -> Result<(Bytes, Vec<Id>)> {
    let outer = BOUND.with(|b| b.borrow_mut().replace((client.address().clone(), Vec::new())));
    let bytes = postcard::to_allocvec(value);
    let holds = BOUND.with(|b| std::mem::replace(&mut *b.borrow_mut(), outer)).map(|(_, h)| h).unwrap_or_default();
    Ok((bytes?, holds))
}

/// Decodes a value a server sent (proxies in it take references of their own).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::reduction::from_bytes_exact(bytes)
}

/// The reference this process holds, shared by the clones of one proxy.
pub(crate) struct Inner {
    id: Id,
    /// The client whose process holds the reference; in a fork child, replaced by the
    /// child's own at first use (the reference is then taken anew).
    client: Mutex<Arc<Client>>,
}

impl Inner {
    /// A proxy for `id`, whose reference the caller already holds for this process.
    pub(crate) fn new(id: Id, client: Arc<Client>) -> Arc<Inner> {
        super::fork::taken(&client, id);
        Arc::new(Inner { id, client: Mutex::new(client) })
    }

    pub(crate) fn id(&self) -> Id {
        self.id
    }

    /// This process's client, holding a reference: a proxy inherited through a fork takes
    /// one for the child here.
    pub(crate) fn client(&self) -> Result<Arc<Client>> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if !client.is_ours() {
            // Inherited through a fork: the reference the child claimed for it at start, or
            // (if that failed) a new one.
            *client = match super::fork::adopt(&client, self.id) {
                Some(ours) => ours,
                None => {
                    let ours = Client::for_address(client.address(), client.authkey(), client.instance());
                    ours.call(&Request::IncRef { id: self.id })?;
                    super::fork::taken(&ours, self.id);
                    ours
                }
            };
        }
        Ok(Arc::clone(&client))
    }

    /// Calls `op` on the object.
    pub(crate) fn call(&self, op: super::wire::Op, holds: Vec<Id>) -> Result<Reply> {
        self.client()?.call(&Request::Call { id: self.id, op, holds })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let client = self.client.get_mut().unwrap_or_else(|e| e.into_inner());
        // In a fork child that never used it: the reference the child claimed for it, if
        // it claimed one (the parent's own is the parent's to give back).
        let ours = if client.is_ours() { Some(Arc::clone(client)) } else { super::fork::adopt(client, self.id) };
        if let Some(ours) = ours {
            super::fork::given_back(&ours, self.id);
            let _ = ours.call(&Request::DecRef { id: self.id });
        }
    }
}

/// A proxy on the wire.
#[derive(Serialize, Deserialize)]
struct Wire {
    address: Address,
    id: Id,
    /// The pin to claim; 0 inside a value stored in the same server (which holds the
    /// object instead).
    pin: u64,
    /// The server's instance (see `Reply::Hello`).
    instance: u64,
    /// The authkey, only in a child's arguments (a child inherits its parent's key anyway;
    /// elsewhere the receiver uses its own, as CPython's proxies do).
    authkey: Option<Vec<u8>>,
}

pub(crate) fn serialize<S: Serializer>(inner: &Inner, s: S) -> std::result::Result<S::Ok, S::Error> {
    let client = inner.client().map_err(crate::error::ser_custom)?;
    let bound_here = BOUND.with(|b| match b.borrow_mut().as_mut() {
        Some((address, holds)) if address == client.address() => {
            holds.push(inner.id);
            true
        }
        _ => false,
    });
    let pin = if bound_here {
        0
    } else {
        match client.call(&Request::Pin { id: inner.id }) {
            Ok(Reply::Pinned(pin)) => pin,
            Ok(other) => return Err(crate::error::ser_custom(format!("the manager answered a pin with {other:?}"))),
            Err(e) => return Err(crate::error::ser_custom(format!("cannot send a proxy: {e}"))),
        }
    };
    let authkey = crate::reduction::to_child().then(|| client.authkey().to_vec());
    Wire { address: client.address().clone(), id: inner.id, pin, instance: client.instance(), authkey }.serialize(s)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Arc<Inner>, D::Error> {
    let wire = Wire::deserialize(d)?;
    let authkey = wire.authkey.unwrap_or_else(|| crate::current_process().authkey().to_vec());
    let client = Client::for_address(&wire.address, &authkey, wire.instance);
    if wire.pin == 0 && adopt_from_item(&wire.address, wire.id) {
        return Ok(Inner::new(wire.id, client));
    }
    let request =
        if wire.pin == 0 { Request::IncRef { id: wire.id } } else { Request::Claim { id: wire.id, pin: wire.pin } };
    client.call(&request).map_err(|e| crate::error::de_custom(format!("cannot receive a proxy: {e}")))?;
    Ok(Inner::new(wire.id, client))
}

/// A count the server sent.
pub(crate) fn count(reply: Reply) -> Result<usize> {
    expect(reply, |r| match r {
        Reply::Count(n) => Ok(n as usize),
        r => Err(r),
    })
}

/// A yes or no the server sent.
pub(crate) fn boolean(reply: Reply) -> Result<bool> {
    expect(reply, |r| match r {
        Reply::Bool(b) => Ok(b),
        r => Err(r),
    })
}

/// The reply's value, or a codec error naming what came instead.
pub(crate) fn expect<T>(reply: Reply, pick: impl FnOnce(Reply) -> std::result::Result<T, Reply>) -> Result<T> {
    pick(reply).map_err(|other| Error::Codec(format!("unexpected reply from the manager: {other:?}")))
}
