//! Proxies across a fork: a fork child inherits every proxy of its parent in memory, but
//! the references they stand for are the parent's, which may give them back (dropping its
//! copy of a child's arguments, say) before the child first uses its copy.
//!
//! So a process about to fork pins, in one round trip, a reference for each proxy it holds,
//! and the child claims them all as soon as it runs (another round trip, before its
//! target): from then on the references are the child's, given back when it drops the
//! proxies or when it ends. A process with no proxy pays nothing.

use super::client::Client;
use super::wire::{Id, Reply, Request};
use crate::connection::Address;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// What one server's proxies in this process hold.
struct Live {
    /// The server's instance (see `Reply::Hello`): one address may see several servers.
    instance: u64,
    client: Weak<Client>,
    authkey: Vec<u8>,
    /// References this process holds, per object (one per proxy, cloned proxies sharing one).
    refs: HashMap<Id, u64>,
    /// Of those, the ones a fork child claimed for proxies it has not used yet.
    unadopted: HashMap<Id, u64>,
    /// The child's client while some are unadopted: its connections are what keeps the
    /// server counting the child's references (the inherited proxies hold the parent's).
    keep: Option<Arc<Client>>,
}

static LIVE: Mutex<Vec<(Address, Live)>> = Mutex::new(Vec::new());

fn same(address: &Address, l: &Live, client_address: &Address, instance: u64) -> bool {
    address == client_address && l.instance == instance
}

fn live() -> MutexGuard<'static, Vec<(Address, Live)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry<'a>(live: &'a mut Vec<(Address, Live)>, client: &Arc<Client>) -> &'a mut Live {
    let at = match live.iter().position(|(a, l)| same(a, l, client.address(), client.instance())) {
        Some(at) => at,
        None => {
            let fresh = Live {
                instance: client.instance(),
                client: Arc::downgrade(client),
                authkey: client.authkey().to_vec(),
                refs: HashMap::new(),
                unadopted: HashMap::new(),
                keep: None,
            };
            live.push((client.address().clone(), fresh));
            live.len() - 1
        }
    };
    let entry = &mut live[at].1;
    entry.client = Arc::downgrade(client);
    entry
}

/// A reference to `id` taken for this process through `client`.
pub(crate) fn taken(client: &Arc<Client>, id: Id) {
    *entry(&mut live(), client).refs.entry(id).or_default() += 1;
}

/// A reference of this process's to `id` given back.
pub(crate) fn given_back(client: &Client, id: Id) {
    let mut live = live();
    if let Some((_, l)) = live.iter_mut().find(|(a, l)| same(a, l, client.address(), client.instance()))
        && let Some(n) = l.refs.get_mut(&id)
    {
        *n -= 1;
        if *n == 0 {
            l.refs.remove(&id);
        }
    }
}

/// In a fork child: takes one of the references claimed at start for an inherited proxy of
/// `id` of the server `inherited` talks to; this process's client of that server if there
/// was one.
pub(crate) fn adopt(inherited: &Client, id: Id) -> Option<Arc<Client>> {
    let mut live = live();
    let (_, l) = live.iter_mut().find(|(a, l)| same(a, l, inherited.address(), inherited.instance()))?;
    let n = l.unadopted.get_mut(&id)?;
    *n -= 1;
    if *n == 0 {
        l.unadopted.remove(&id);
    }
    let client = l.client.upgrade();
    if l.unadopted.is_empty() {
        l.keep = None;
    }
    client
}

/// Pins made for a fork child, per server: its address, its authkey, its instance, and each
/// pin with the object it is for.
type Pins = Vec<(Address, Vec<u8>, u64, Vec<(Id, u64)>)>;

/// Held across a fork: the pins made for the child, and the registries locked, so that
/// the child finds them consistent.
pub(crate) struct ForkGuard {
    live: MutexGuard<'static, Vec<(Address, Live)>>,
    clients: MutexGuard<'static, Vec<(Address, u32, Weak<Client>)>>,
    /// Per server: its address, authkey, instance, and the pins made, with the object each
    /// is for.
    pins: Pins,
}

/// Pins a reference for each proxy of this process, for the child about to be forked.
pub(crate) fn before_fork() -> ForkGuard {
    let live = live();
    let mut pins = Vec::new();
    for (address, l) in live.iter() {
        let Some(client) = l.client.upgrade().filter(|c| c.is_ours()) else { continue };
        let ids: Vec<Id> = l.refs.iter().flat_map(|(&id, &n)| std::iter::repeat_n(id, n as usize)).collect();
        if ids.is_empty() {
            continue;
        }
        // A server that cannot be reached has nothing to keep for the child either.
        if let Ok(Reply::Pins(made)) = client.call(&Request::PinMany { ids: ids.clone() }) {
            pins.push((address.clone(), l.authkey.clone(), l.instance, ids.into_iter().zip(made).collect()));
        }
    }
    let clients = super::client::lock_registry();
    ForkGuard { live, clients, pins }
}

impl ForkGuard {
    /// In the child: forgets the parent's references and claims the pins (one round trip
    /// per server), which the inherited proxies then adopt as they are used or dropped.
    pub(crate) fn in_child(mut self) {
        self.live.clear();
        // The parent's clients stay listed under its pid, which no lookup here matches.
        let _ = &self.clients;
        let pins = std::mem::take(&mut self.pins);
        drop(self);
        for (address, authkey, instance, pins) in pins {
            let client = Client::for_address(&address, &authkey, instance);
            let Ok(Reply::Claimed(claimed)) = client.call(&Request::ClaimMany { pins: pins.clone() }) else {
                continue;
            };
            let mut live = live();
            let l = entry(&mut live, &client);
            for ((id, _), ok) in pins.into_iter().zip(claimed) {
                if ok {
                    *l.refs.entry(id).or_default() += 1;
                    *l.unadopted.entry(id).or_default() += 1;
                }
            }
            if !l.unadopted.is_empty() {
                l.keep = Some(Arc::clone(&client));
            }
        }
    }
}
