//! A manager's server process (Python's `managers.Server`): it owns the objects, accepts
//! authenticated connections on a unix socket, and serves each on a thread of its own, so
//! that a client blocked in a call never delays another.
//!
//! References are counted per client process (a *session*: its pid and process tag), not per
//! proxy: a process holds a count for each object it has proxies of, and when its last
//! connection closes (it exited, or was SIGKILLed) the server gives back everything it held.
//! A proxy on its way to another process travels with a *pin*, a reference no process holds
//! yet, which the receiver claims; a pin never claimed is given back with its sender's
//! session. An object that stores values with proxies in them holds a reference to each of
//! those objects until it is freed itself.

use super::channel::Channel;
use super::custom::Registration;
use super::objects::{Object, Waitable};
use super::sync::SessionKey;
use super::wire::{Bytes, Id, Op, PROTOCOL, Remote, RemoteKind, Reply, Request, VERSION};
use crate::connection::{self, Connection, Listener, wait};
use crate::util::LOG_TARGET;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Session {
    /// Open connections of the process.
    connections: u32,
    /// How many references it holds to each object.
    refs: HashMap<Id, u64>,
}

struct Entry {
    /// References held by sessions, pins and other objects.
    refs: u64,
    object: Arc<Mutex<Object>>,
    /// Objects this one holds a reference to (proxies inside the values it stores).
    holds: Vec<Id>,
}

#[derive(Default)]
struct Table {
    /// Values shared by name, with the objects they hold.
    names: HashMap<String, (Bytes, Vec<Id>)>,
    /// Shared-memory segments to unlink when the server stops (a `SharedMemoryManager`'s).
    segments: Vec<String>,
    next_id: Id,
    next_pin: u64,
    objects: HashMap<Id, Entry>,
    sessions: HashMap<SessionKey, Session>,
    /// Pinned references: the object, and the session that answers for the pin.
    pins: HashMap<u64, (Id, SessionKey)>,
}

/// The most pins one request may make or claim: each costs the server memory, and a
/// request must not be able to take it without bound.
const MAX_BATCH: usize = 1 << 20;

fn too_many() -> Remote {
    Remote::new(RemoteKind::BadRequest, format!("more than {MAX_BATCH} pins in one request"))
}

fn no_object(id: Id) -> Remote {
    Remote::new(RemoteKind::NoObject, format!("no object {id} in the manager (freed?)"))
}

impl Table {
    fn session(&mut self, key: SessionKey) -> &mut Session {
        self.sessions.entry(key).or_default()
    }

    /// Makes the objects of `holds` held by `holder`; every one must exist.
    fn hold(&mut self, holder: Id, holds: &[Id]) -> Result<(), Remote> {
        if let Some(&missing) = holds.iter().find(|id| !self.objects.contains_key(id)) {
            return Err(no_object(missing));
        }
        for &id in holds.iter().filter(|&&id| id != holder) {
            if let Some(e) = self.objects.get_mut(&id) {
                e.refs += 1;
            }
            if let Some(e) = self.objects.get_mut(&holder) {
                e.holds.push(id);
            }
        }
        Ok(())
    }

    fn create(&mut self, key: SessionKey, object: Object, holds: &[Id]) -> Result<Id, Remote> {
        self.next_id += 1;
        let id = self.next_id;
        self.objects.insert(id, Entry { refs: 1, object: Arc::new(Mutex::new(object)), holds: Vec::new() });
        *self.session(key).refs.entry(id).or_default() += 1;
        if let Err(e) = self.hold(id, holds) {
            self.decref(key, id);
            return Err(e);
        }
        Ok(id)
    }

    fn incref(&mut self, key: SessionKey, id: Id) -> Result<(), Remote> {
        let entry = self.objects.get_mut(&id).ok_or_else(|| no_object(id))?;
        entry.refs += 1;
        *self.session(key).refs.entry(id).or_default() += 1;
        Ok(())
    }

    /// Gives back one reference of `key`'s, if it holds one (a client cannot give back what
    /// it does not hold, and so cannot free what others use).
    fn decref(&mut self, key: SessionKey, id: Id) {
        let Some(session) = self.sessions.get_mut(&key) else { return };
        let Some(n) = session.refs.get_mut(&id) else { return };
        *n -= 1;
        if *n == 0 {
            session.refs.remove(&id);
        }
        self.release(id);
    }

    /// Drops one reference to `id`, freeing it (and what it held) at zero.
    fn release(&mut self, id: Id) {
        let mut work = vec![id];
        while let Some(id) = work.pop() {
            let Some(entry) = self.objects.get_mut(&id) else { continue };
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0
                && let Some(entry) = self.objects.remove(&id)
            {
                work.extend(entry.holds);
                // A queue's waiting items hold the objects of the proxies in them.
                if let Object::Sync(Waitable::Queue(q)) = &*entry.object.lock().unwrap_or_else(|e| e.into_inner()) {
                    work.extend(q.held());
                }
            }
        }
    }

    fn pin(&mut self, key: SessionKey, id: Id) -> Result<u64, Remote> {
        let entry = self.objects.get_mut(&id).ok_or_else(|| no_object(id))?;
        entry.refs += 1;
        self.next_pin += 1;
        self.pins.insert(self.next_pin, (id, key));
        Ok(self.next_pin)
    }

    fn claim(&mut self, key: SessionKey, id: Id, pin: u64) -> Result<(), Remote> {
        match self.pins.get(&pin) {
            Some(&(pinned, _)) if pinned == id => {
                self.pins.remove(&pin);
                *self.session(key).refs.entry(id).or_default() += 1;
                Ok(())
            }
            // Claimed already (a message decoded twice, a value read again): a reference of
            // its own while the object lives.
            _ => self.incref(key, id),
        }
    }

    /// A connection of `key` closed: at its last, everything the process held goes.
    fn disconnect(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else { return };
        session.connections = session.connections.saturating_sub(1);
        if session.connections > 0 {
            return;
        }
        let session = self.sessions.remove(&key).unwrap_or_default();
        // Locks and semaphores it held go back, their next acquirers told.
        for entry in self.objects.values() {
            let ended = match &*entry.object.lock().unwrap_or_else(|e| e.into_inner()) {
                Object::Sync(Waitable::Lock(l)) => l.session_ended(key),
                Object::Sync(Waitable::Condition(c)) => c.lock.session_ended(key),
                _ => false,
            };
            if ended {
                log::warn!(
                    target: LOG_TARGET,
                    "manager: client process {} ended holding a lock; the next acquirer is told",
                    key.0
                );
            }
        }
        let pins: Vec<u64> = self.pins.iter().filter(|(_, (_, k))| *k == key).map(|(&p, _)| p).collect();
        let mut gone = 0;
        for pin in pins {
            if let Some((id, _)) = self.pins.remove(&pin) {
                self.release(id);
                gone += 1;
            }
        }
        for (id, n) in session.refs {
            for _ in 0..n {
                self.release(id);
            }
            gone += n;
        }
        log::debug!(target: LOG_TARGET, "manager: client process {} left, {gone} reference(s) given back", key.0);
    }
}

/// The server's state, shared by its connection threads.
pub(crate) struct Server {
    table: Mutex<Table>,
    /// Written to stop the accepting thread.
    stop: Mutex<Option<Connection>>,
    /// The types its owner registered, by name.
    registry: Vec<Registration>,
    /// Drawn at start, told in every hello (see `Reply::Hello`).
    instance: u64,
}

impl Server {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn object(&self, id: Id) -> Result<Arc<Mutex<Object>>, Remote> {
        self.table().objects.get(&id).map(|e| Arc::clone(&e.object)).ok_or_else(|| no_object(id))
    }

    /// Takes one more reference to each of `ids` (for a queue item that holds them).
    fn hold_for_item(&self, ids: &[Id]) -> Result<(), Remote> {
        let mut table = self.table();
        if let Some(&missing) = ids.iter().find(|id| !table.objects.contains_key(id)) {
            return Err(no_object(missing));
        }
        for id in ids {
            if let Some(e) = table.objects.get_mut(id) {
                e.refs += 1;
            }
        }
        Ok(())
    }

    /// A call on an object that calls may wait on: without the table's lock or the
    /// object's, so that it holds up no one else.
    fn call_waitable(
        &self,
        key: SessionKey,
        object: Waitable,
        op: Op,
        holds: Vec<Id>,
        gone: &dyn Fn() -> bool,
    ) -> Result<Reply, Remote> {
        match (object, op) {
            (Waitable::Queue(q), Op::QueuePut(item, wait)) => {
                self.hold_for_item(&holds)?;
                q.put(item, holds.clone(), wait, gone).inspect_err(|_| {
                    let mut table = self.table();
                    for id in &holds {
                        table.release(*id);
                    }
                })?;
                Ok(Reply::Done)
            }
            (Waitable::Queue(q), Op::QueueGet(wait)) => {
                let (value, adopted) = q.get(wait, gone)?;
                // The item's references move to the caller, whose proxies adopt them.
                let mut table = self.table();
                for &id in &adopted {
                    *table.session(key).refs.entry(id).or_default() += 1;
                }
                Ok(Reply::Item { value, adopted })
            }
            (Waitable::Queue(q), Op::QueueSize) => {
                let (len, maxsize) = q.size();
                Ok(Reply::QueueSize { len, maxsize })
            }
            (Waitable::Queue(q), Op::QueueTaskDone) => q.task_done().map(|()| Reply::Done),
            (Waitable::Queue(q), Op::QueueJoin(wait)) => Ok(Reply::Bool(q.join(wait, gone))),
            (Waitable::Lock(l), Op::LockAcquire { thread, wait }) => {
                l.acquire(key, thread, wait, gone).map(Reply::Bool)
            }
            (Waitable::Lock(l), Op::LockRelease { thread }) => l.release(key, thread).map(|()| Reply::Done),
            (Waitable::Lock(l), Op::LockLocked) => Ok(Reply::Bool(l.locked())),
            (Waitable::Lock(l), Op::LockValue) => Ok(Reply::Count(l.value())),
            (Waitable::Event(e), Op::EventSet) => {
                e.set(true);
                Ok(Reply::Done)
            }
            (Waitable::Event(e), Op::EventClear) => {
                e.set(false);
                Ok(Reply::Done)
            }
            (Waitable::Event(e), Op::EventIsSet) => Ok(Reply::Bool(e.is_set())),
            (Waitable::Event(e), Op::EventWait(wait)) => Ok(Reply::Bool(e.wait(wait, gone))),
            (Waitable::Condition(c), Op::LockAcquire { thread, wait }) => {
                c.lock.acquire(key, thread, wait, gone).map(Reply::Bool)
            }
            (Waitable::Condition(c), Op::LockRelease { thread }) => c.lock.release(key, thread).map(|()| Reply::Done),
            (Waitable::Condition(c), Op::CondWait { thread, wait }) => c.wait(key, thread, wait, gone).map(Reply::Bool),
            (Waitable::Condition(c), Op::CondNotify { thread, n }) => c.notify(key, thread, n).map(|()| Reply::Done),
            (Waitable::Barrier(b), Op::BarrierWait(wait)) => b.wait(wait, gone).map(Reply::Count),
            (Waitable::Barrier(b), Op::BarrierAbort) => {
                b.abort();
                Ok(Reply::Done)
            }
            (Waitable::Barrier(b), Op::BarrierReset) => {
                b.reset();
                Ok(Reply::Done)
            }
            (Waitable::Barrier(b), Op::BarrierState) => {
                let (parties, waiting, broken) = b.describe();
                Ok(Reply::Barrier { parties, waiting, broken })
            }
            (_, op) => Err(Remote::new(RemoteKind::WrongKind, format!("{op:?} does not apply to this object"))),
        }
    }

    /// Answers one request of session `key`; `gone` tells a waiting call that the client
    /// left.
    fn handle(&self, key: SessionKey, request: Request, gone: &dyn Fn() -> bool) -> Result<Reply, Remote> {
        match request {
            Request::Hello { .. } => Err(Remote::new(RemoteKind::BadRequest, "hello twice")),
            Request::Channel => Err(Remote::new(RemoteKind::BadRequest, "a channel is offered once, first")),
            Request::CreateCustom { name, interface, digest, args, holds } => {
                let Some(registration) = self.registry.iter().find(|r| r.name == name) else {
                    return Err(Remote::new(
                        RemoteKind::Raised("NotRegistered".into()),
                        format!("no type registered as {name:?}"),
                    ));
                };
                if registration.interface != interface || registration.digest != digest {
                    let message = format!(
                        "{name:?} is registered here as {} (digest {:x}), the client knows it as {interface} (digest {digest:x}): \
                         built from different definitions",
                        registration.interface, registration.digest
                    );
                    return Err(Remote::new(RemoteKind::Raised("InterfaceMismatch".into()), message));
                }
                let object = (registration.factory())(&args).map_err(|e| match e {
                    crate::Error::Remote { kind, message } => Remote::new(RemoteKind::Raised(kind), message),
                    e => Remote::new(RemoteKind::BadRequest, e.to_string()),
                })?;
                Ok(Reply::Created(self.table().create(key, Object::Custom(object), &holds)?))
            }
            Request::Create { kind, init, holds } => {
                let object = Object::new(kind, init)?;
                Ok(Reply::Created(self.table().create(key, object, &holds)?))
            }
            Request::Call { id, op, holds } => {
                let object = self.object(id)?;
                let waitable = match &*object.lock().unwrap_or_else(|e| e.into_inner()) {
                    Object::Sync(w) => Some(w.clone()),
                    _ => None,
                };
                if let Some(waitable) = waitable {
                    return self.call_waitable(key, waitable, op, holds, gone);
                }
                if !holds.is_empty() {
                    self.table().hold(id, &holds)?;
                }
                let mut object = object.lock().unwrap_or_else(|e| e.into_inner());
                object.call(op)
            }
            Request::IncRef { id } => self.table().incref(key, id).map(|()| Reply::Done),
            Request::DecRef { id } => {
                self.table().decref(key, id);
                Ok(Reply::Done)
            }
            Request::Pin { id } => self.table().pin(key, id).map(Reply::Pinned),
            Request::Claim { id, pin } => self.table().claim(key, id, pin).map(|()| Reply::Done),
            Request::PinMany { ids } if ids.len() > MAX_BATCH => Err(too_many()),
            Request::ClaimMany { pins } if pins.len() > MAX_BATCH => Err(too_many()),
            Request::PinMany { ids } => {
                let mut table = self.table();
                Ok(Reply::Pins(ids.into_iter().map(|id| table.pin(key, id).unwrap_or(0)).collect()))
            }
            Request::ClaimMany { pins } => {
                let mut table = self.table();
                Ok(Reply::Claimed(
                    pins.into_iter().map(|(id, pin)| pin != 0 && table.claim(key, id, pin).is_ok()).collect(),
                ))
            }
            Request::Share { name, value, holds } => {
                let mut table = self.table();
                if let Some(&missing) = holds.iter().find(|id| !table.objects.contains_key(id)) {
                    return Err(no_object(missing));
                }
                for id in &holds {
                    if let Some(e) = table.objects.get_mut(id) {
                        e.refs += 1;
                    }
                }
                if let Some((_, old)) = table.names.insert(name, (value, holds)) {
                    for id in old {
                        table.release(id);
                    }
                }
                Ok(Reply::Done)
            }
            Request::Lookup { name } => {
                let mut table = self.table();
                let Some((value, holds)) = table.names.get(&name).cloned() else {
                    return Err(Remote::new(
                        RemoteKind::Raised("NotFound".into()),
                        format!("nothing shared as {name:?}"),
                    ));
                };
                // A reference of the caller's own to each object in the value, which its
                // proxies adopt as they are decoded.
                for &id in &holds {
                    table.incref(key, id)?;
                }
                Ok(Reply::Item { value, adopted: holds })
            }
            Request::TrackSegment { name } => {
                crate::shared_memory::check_name(&name)
                    .map_err(|e| Remote::new(RemoteKind::BadRequest, e.to_string()))?;
                let mut table = self.table();
                if table.segments.len() >= MAX_BATCH {
                    return Err(Remote::new(RemoteKind::BadRequest, "too many segments tracked"));
                }
                table.segments.push(name);
                Ok(Reply::Done)
            }
            Request::NumberOfObjects => Ok(Reply::Count(self.table().objects.len() as u64)),
            Request::Shutdown => {
                // Only the process that started the server may stop it.
                if crate::parent_process().is_some_and(|p| p.pid() != key.0) {
                    return Err(Remote::new(RemoteKind::BadRequest, "only the manager's owner may shut it down"));
                }
                // Stopped once this reply is on its way (see `serve`): stopped now, the
                // server could exit before its owner hears back.
                Ok(Reply::Done)
            }
        }
    }

    /// Stops the accepting thread (after a shutdown's reply went out).
    fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send_bytes(b"stop");
        }
    }

    /// The reply to a request as decoded (or not).
    fn answer(&self, key: SessionKey, request: crate::Result<Request>, gone: &dyn Fn() -> bool) -> Reply {
        match request {
            Ok(request) => self.handle(key, request, gone).unwrap_or_else(Reply::Error),
            Err(e) => Reply::Error(Remote::new(RemoteKind::BadRequest, format!("undecodable request: {e}"))),
        }
    }

    /// Serves one connection until it closes.
    fn serve(&self, conn: Connection) {
        let key = match hello(&conn, self.instance) {
            Ok(key) => key,
            Err(e) => {
                log::warn!(target: LOG_TARGET, "manager: a client was refused: {e}");
                return;
            }
        };
        self.table().session(key).connections += 1;
        // A client waits for its reply without sending: a readable socket while a call waits
        // means the client closed it (it exited, or was killed).
        let gone = || conn.poll(Some(std::time::Duration::ZERO)).unwrap_or(true);
        let mut channel = None;
        while let Ok(bytes) = conn.recv_bytes() {
            let request = crate::reduction::from_bytes_exact::<Request>(&bytes);
            if let Ok(Request::Channel) = request {
                // The client's mailbox: from here on, requests and replies go through it.
                if conn.send(&Reply::Done).is_err() {
                    break;
                }
                match Channel::receive(&conn) {
                    Ok(c) => channel = Some(c),
                    Err(e) => log::warn!(target: LOG_TARGET, "manager: a client's channel was refused: {e}"),
                }
                break;
            }
            let shutdown = matches!(request, Ok(Request::Shutdown));
            let reply = self.answer(key, request, &gone);
            if conn.send(&reply).is_err() {
                break;
            }
            if shutdown && matches!(reply, Reply::Done) {
                self.stop();
            }
        }
        if let Some(mut channel) = channel {
            while let Ok(Some(bytes)) = channel.next_request(&conn) {
                let request = crate::reduction::from_bytes_exact::<Request>(&bytes);
                let shutdown = matches!(request, Ok(Request::Shutdown));
                let reply = self.answer(key, request, &gone);
                let encoded = postcard::to_allocvec(&reply).unwrap_or_else(|e| {
                    let failed = Reply::Error(Remote::new(RemoteKind::BadRequest, format!("unencodable reply: {e}")));
                    postcard::to_allocvec(&failed).unwrap_or_default()
                });
                if channel.reply(&conn, &encoded).is_err() {
                    break;
                }
                if shutdown && matches!(reply, Reply::Done) {
                    self.stop();
                }
            }
        }
        self.table().disconnect(key);
    }
}

/// Reads a connection's first message; answers it; the client's session.
fn hello(conn: &Connection, instance: u64) -> crate::Result<SessionKey> {
    let bytes = conn.recv_bytes()?;
    match crate::reduction::from_bytes_exact::<Request>(&bytes) {
        Ok(Request::Hello { protocol, version, pid, tag }) if protocol == PROTOCOL && version == VERSION => {
            conn.send(&Reply::Hello {
                protocol: PROTOCOL,
                version: VERSION.into(),
                server_pid: crate::getpid(),
                instance,
            })?;
            Ok((pid, tag))
        }
        Ok(Request::Hello { protocol, version, .. }) => {
            let message = format!(
                "this manager is multiprocess {VERSION} (protocol {PROTOCOL}), the client multiprocess {version} \
                 (protocol {protocol}): build both from the same version"
            );
            conn.send(&Reply::Error(Remote::new(RemoteKind::BadRequest, message.clone())))?;
            Err(crate::Error::Codec(message))
        }
        _ => Err(crate::Error::Codec("the first message was not a hello".into())),
    }
}

/// The server process's body: binds a fresh unix socket with `authkey`, tells the owner its
/// address through `owner` (a duplex pipe), and serves until told to stop (a shutdown
/// request, or anything arriving on `owner`) or until the owner is gone.
pub(crate) fn main(
    owner: Connection,
    authkey: Vec<u8>,
    registry: Vec<Registration>,
    address: Option<crate::Address>,
) -> crate::Result<()> {
    // A Ctrl-C in a terminal reaches the whole process group: the owner decides what it
    // means, and the server goes on serving until told to stop (CPython's ignores it too).
    crate::sys::proc::ignore_interrupts();
    let listener = match address {
        Some(address) => Listener::bind(address, Some(&authkey))?,
        None => Listener::new(Some(&authkey))?,
    };
    let (stop_reader, stop_writer) = crate::pipe()?;
    let mut drawn = [0u8; 8];
    crate::sys::proc::random_bytes(&mut drawn)?;
    let instance = u64::from_le_bytes(drawn).max(1);
    let server = Arc::new(Server {
        table: Mutex::new(Table::default()),
        stop: Mutex::new(Some(stop_writer)),
        registry,
        instance,
    });
    owner.send(&(listener.address(), instance))?;
    let parent = crate::parent_process();
    loop {
        // The owner stops its server through the pipe: no connection to make first.
        let mut waiting: Vec<&dyn connection::Waitable> = vec![&listener, &stop_reader, &owner];
        let sentinel = parent.as_ref().map(|p| p.sentinel()).transpose()?;
        if let Some(s) = sentinel.as_ref() {
            waiting.push(s);
        }
        let ready = wait(&waiting, None)?;
        if ready.contains(&1) || ready.contains(&2) {
            break;
        }
        if ready.contains(&3) {
            log::info!(target: LOG_TARGET, "manager: the owner process is gone; shutting down");
            break;
        }
        // Only what is ready now: a client whose handshake is still under way (or failed)
        // must not keep this loop from the stop pipe and the owner's sentinel.
        match listener.accept_timeout(std::time::Duration::ZERO) {
            Err(crate::Error::Timeout) => {}
            Ok(conn) => {
                let server = Arc::clone(&server);
                let spawned =
                    std::thread::Builder::new().name("manager-client".into()).spawn(move || server.serve(conn));
                if let Err(e) = spawned {
                    log::warn!(target: LOG_TARGET, "manager: no thread for a client: {e}");
                }
            }
            Err(e) => log::warn!(target: LOG_TARGET, "manager: accept failed: {e}"),
        }
    }
    // The listener's socket file goes with it; the objects go with the process; the
    // segments made through it (a SharedMemoryManager's) are unlinked.
    drop(listener);
    for name in std::mem::take(&mut server.table().segments) {
        if let Err(e) = crate::shared_memory::unlink_name(&name) {
            log::debug!(target: LOG_TARGET, "manager: segment {name:?} not unlinked: {e}");
        }
    }
    Ok(())
}

/// The server process's body with an initializer `F` run first on `args` (Python's
/// `SyncManager().start(initializer, initargs)`): it runs once, in the server, before it
/// listens. A panic there ends the server, and `start()` reports it.
pub(crate) fn main_with_init<F, A>(
    owner: Connection,
    authkey: Vec<u8>,
    registry: Vec<Registration>,
    address: Option<crate::Address>,
    args: A,
) -> crate::Result<()>
where
    F: crate::pool::Task<A, Output = ()>,
{
    const { assert!(std::mem::size_of::<F>() == 0, "an initializer must be a fn item or a closure that captures nothing") };
    // SAFETY: `F` is zero-sized (asserted above): a fn item or a closure capturing nothing,
    // with no bytes and no invariants, re-made here out of nothing.
    let f = std::mem::ManuallyDrop::new(unsafe { std::mem::zeroed::<F>() });
    f.call(args);
    main(owner, authkey, registry, address)
}
