//! Managers (Python's `multiprocessing.managers`): a server process that owns shared objects,
//! which other processes use through typed proxies.
//!
//! [`manager()`] starts a [`SyncManager`]: a server process, started with the default start
//! method (or a context's, [`Context::manager`](crate::Context::manager)), listening on a
//! fresh unix socket with this process's authkey. Its methods make objects in the server and
//! hand back proxies: [`DictProxy`], [`ListProxy`], [`Namespace`], [`ValueProxy`]. A proxy
//! is `Clone + Send + Sync` and serializes, so it goes to children in their arguments (any
//! start method), in queue items and messages, and inside values stored in other proxies.
//!
//! ```
//! use multiprocess::Process;
//! use multiprocess::managers::DictProxy;
//! fn child(d: DictProxy<String, i64>) -> multiprocess::Result<()> {
//!     d.insert("from child".into(), 2)?;            // d['from child'] = 2
//!     Ok(())
//! }
//! let m = multiprocess::manager()?;                 // Manager()
//! let d = m.dict::<String, i64>()?;                 // m.dict()
//! d.insert("a".into(), 1)?;
//! let mut p = Process::new(child, (d.clone(),));
//! p.start()?;
//! p.join()?;
//! assert_eq!(d.get(&"from child".into())?, Some(2));
//! # Ok::<(), multiprocess::Error>(())
//! ```
//!
//! A manager may also listen on a TCP address (or a unix path) with an authkey
//! ([`ManagerBuilder::address`], [`ManagerBuilder::authkey`]) and [`share`](SyncManager::share)
//! objects under names that clients on any host reach with [`connect`] and
//! [`get`](SyncManager::get) (CPython's remote managers); hold your own types through an
//! [`Interface`] ([`ManagerBuilder::register`], [`SyncManager::create`]); and answer for
//! shared-memory segments ([`SharedMemoryManager`]).
//!
//! Values are serde values, stored in the server as their postcard bytes: the server never
//! decodes them, so nothing a client sends can make it run code (CPython's unpickles), and
//! keys and members compare by their bytes (equal values encode equally). The server counts
//! references per client process: an object is freed when its last proxy anywhere is
//! dropped, also when the process that held it was SIGKILLed (its connections close). If the
//! server dies, every call returns [`Error::ManagerGone`]; if
//! the owner dies, the server exits.

mod array;
mod channel;
mod client;
mod custom;
mod dict;
pub(crate) mod fork;
#[cfg(test)]
mod fuzz_tests;
mod list;
mod locks;
mod namespace;
mod objects;
mod proxy;
mod queue;
mod server;
mod set;
mod smm;
mod sync;
mod value;
mod wire;

pub use array::ArrayProxy;
pub use custom::{Handle, Interface, decode_args, encode_result, no_such_method};
pub use dict::DictProxy;
pub use list::{ListIter, ListProxy};
pub use locks::{
    BarrierProxy, BoundedSemaphoreProxy, BoundedSemaphoreProxyGuard, ConditionProxy, ConditionProxyGuard, EventProxy,
    LockProxy, LockProxyGuard, RLockProxy, RLockProxyGuard, SemaphoreProxy, SemaphoreProxyGuard,
};
pub use namespace::Namespace;
pub use queue::{JoinableQueueProxy, QueueProxy};
pub use set::SetProxy;
pub use smm::SharedMemoryManager;
pub use value::ValueProxy;

use crate::connection::Address;
use crate::{Error, Process, Result, StartMethod};
use client::Client;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::{Init, Kind, Reply, Request};

/// How long a new server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the server to exit before it kills it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A manager with its server process (Python's `multiprocessing.managers.SyncManager`, as
/// `multiprocessing.Manager()` returns it, started).
///
/// Dropping it shuts the server down, as leaving a `with Manager() as m:` block does; the
/// proxies it made then answer [`Error::ManagerGone`].
///
/// ```
/// let m = multiprocess::manager()?;
/// let l = m.list::<u32>()?;
/// l.push(7)?;
/// assert_eq!(l.to_vec()?, vec![7]);
/// m.shutdown()?;
/// assert!(matches!(l.len(), Err(multiprocess::Error::ManagerGone)));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct SyncManager {
    client: Arc<Client>,
    process: Mutex<Option<Process>>,
    /// The owner's end of the pipe the server was started with (its address came on it;
    /// a word on it stops the server).
    owner: Mutex<Option<crate::Connection>>,
}

/// Settings for a [`SyncManager`] before it starts (Python's `SyncManager()` and its
/// `start()`).
///
/// ```
/// use multiprocess::StartMethod;
/// use multiprocess::managers::SyncManager;
/// let m = SyncManager::builder().start_method(StartMethod::Spawn).start()?;
/// assert_eq!(m.number_of_objects()?, 0);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
    starter: Option<Starter>,
    registry: Vec<custom::Registration>,
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
}

/// Makes the server process: with the initializer's type and arguments, if there is one.
type Starter = Arc<dyn Fn(StartMethod, ServerArgs) -> Process + Send + Sync>;

/// What every server process is started with: the pipe to its owner, the authkey, the
/// registry of types, and the address to listen on (`None`: a fresh unix path).
type ServerArgs = (crate::Connection, Vec<u8>, Vec<custom::Registration>, Option<Address>);

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("method", &self.method)
            .field("initializer", &self.starter.is_some())
            .field("registered", &self.registry.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .field("address", &self.address)
            .finish()
    }
}

impl ManagerBuilder {
    /// The start method of the server process (default: the default start method).
    ///
    /// ```
    /// use multiprocess::StartMethod;
    /// let m = multiprocess::managers::SyncManager::builder().start_method(StartMethod::Fork).start()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> ManagerBuilder {
        self.method = Some(method);
        self
    }

    /// A function the server runs once, with `args`, before it serves (Python's
    /// `start(initializer, initargs)`). It is a fn item (or a closure that captures nothing)
    /// found in the server by its place in the binary, under every start method; `args` may
    /// hold handles and proxies.
    ///
    /// ```
    /// use multiprocess::managers::{Namespace, SyncManager};
    /// fn init(ns: Namespace) {
    ///     ns.set("test", &1).unwrap();
    /// }
    /// let first = multiprocess::manager()?;
    /// let ns = first.namespace()?;
    /// let m = SyncManager::builder().initializer(init, (ns.clone(),)).start()?;
    /// assert_eq!(ns.get::<i32>("test")?, Some(1));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> ManagerBuilder
    where
        F: crate::pool::Task<A, Output = ()>,
        A: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let _ = f;
        self.starter = Some(Arc::new(move |method, (owner, authkey, registry, address)| {
            crate::get_context(method)
                .process(server::main_with_init::<F, A>, (owner, authkey, registry, address, args.clone()))
        }));
        self
    }

    /// Registers a type of your own under `name`, made by `factory` from serde arguments
    /// (Python's `BaseManager.register(typeid, callable)`); clients make objects of it with
    /// [`SyncManager::create`]. `I` is the interface `#[multiprocess::managed]` writes for a
    /// trait (`dyn Trait`); `factory` is a fn item (or a closure that captures nothing), found
    /// in the server by its place in the binary, under every start method.
    ///
    /// ```
    /// # use multiprocess::managers::{Handle, Interface};
    /// # struct C; #[derive(Clone)] struct P(Handle);
    /// # impl From<Handle> for P { fn from(h: Handle) -> P { P(h) } }
    /// # impl Interface for C { const NAME: &'static str = "C"; const DIGEST: u64 = 0; type Object = C; type Proxy = P;
    /// #     fn dispatch(_: &mut C, m: u32, _: &[u8]) -> multiprocess::Result<Vec<u8>> { Err(multiprocess::managers::no_such_method::<C>(m)) } }
    /// fn make(_: ()) -> C { C }
    /// let m = multiprocess::managers::SyncManager::builder().register::<C, _, _>("C", make).start()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn register<I, A, F>(mut self, name: &str, factory: F) -> ManagerBuilder
    where
        I: custom::Interface + ?Sized,
        A: serde::Serialize + serde::de::DeserializeOwned,
        F: Fn(A) -> I::Object + Copy + Send + 'static,
    {
        let _ = factory;
        self.registry.retain(|r| r.name != name);
        self.registry.push(custom::Registration::new::<I, A, F>(name));
        self
    }

    /// Where the server listens (Python's `BaseManager(address=...)`): a TCP address, which
    /// clients on other hosts can reach with [`connect`], or a unix path; by default a fresh
    /// unix path only this host can reach. A TCP address is rebound at once after a shutdown
    /// (`SO_REUSEADDR`).
    ///
    /// ```
    /// let m = multiprocess::managers::SyncManager::builder().address(([127, 0, 0, 1], 0)).start()?;
    /// assert!(matches!(m.address(), multiprocess::Address::Tcp(_)));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn address(mut self, address: impl Into<Address>) -> ManagerBuilder {
        self.address = Some(address.into());
        self
    }

    /// The key clients must prove they hold (Python's `BaseManager(authkey=...)`; the
    /// Listener's mutual HMAC handshake); by default this process's
    /// [`authkey`](crate::CurrentProcess::authkey), which its children inherit.
    ///
    /// ```
    /// let m = multiprocess::managers::SyncManager::builder().authkey(b"abracadabra").start()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn authkey(mut self, authkey: &[u8]) -> ManagerBuilder {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// Starts the server and connects to it (`start()`).
    ///
    /// ```
    /// let m = multiprocess::managers::SyncManager::builder().start()?;
    /// assert!(m.address().to_string().contains("listener-"));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start(self) -> Result<SyncManager> {
        let method = self.method.unwrap_or_else(crate::get_start_method);
        let authkey = match self.authkey.clone() {
            Some(key) => key,
            None => crate::process::authkey()?.to_vec(),
        };
        // Duplex: the server says where it listens, and the owner later tells it to stop.
        let (reader, writer) = crate::pipe()?;
        let process = match &self.starter {
            Some(starter) => starter(method, (writer, authkey.clone(), self.registry.clone(), self.address.clone())),
            None => crate::get_context(method)
                .process(server::main, (writer, authkey.clone(), self.registry.clone(), self.address.clone())),
        };
        let mut process = process.with_name(format!("SyncManager-{}", next_number()));
        process.start()?;
        let address = match reader.poll(Some(START_TIMEOUT)) {
            Ok(true) => reader.recv::<(Address, u64)>(),
            Ok(false) => Err(Error::Timeout),
            Err(e) => Err(e),
        };
        let (address, instance) = match address {
            Ok(told) => told,
            Err(e) => {
                let _ = process.kill();
                let _ = process.join();
                return Err(match e {
                    Error::Eof => Error::StartMethod(format!(
                        "the manager's server exited before it listened (exit code {:?})",
                        process.exitcode()
                    )),
                    e => e,
                });
            }
        };
        let client = Client::new(&address, &authkey, instance);
        Ok(SyncManager { client, process: Mutex::new(Some(process)), owner: Mutex::new(Some(reader)) })
    }
}

fn next_number() -> u32 {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Starts a [`SyncManager`] with the default start method (Python's
/// `multiprocessing.Manager()`).
///
/// ```
/// let m = multiprocess::manager()?;
/// let ns = m.namespace()?;
/// ns.set("x", &1)?;
/// assert_eq!(ns.get::<i32>("x")?, Some(1));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn manager() -> Result<SyncManager> {
    SyncManager::builder().start()
}

/// Connects to a manager's server at `address`, on this host or another, proving it holds
/// `authkey` (Python's `BaseManager(address, authkey).connect()`). The manager it returns
/// does not own the server: dropping it leaves the server running, and `shutdown` is refused.
/// A wrong key is [`Error::Authentication`]; a server built from another version of this
/// crate is refused here, with an error that says so.
///
/// ```
/// let owner = multiprocess::managers::SyncManager::builder()
///     .address(([127, 0, 0, 1], 0))
///     .authkey(b"secret")
///     .start()?;
/// owner.share("counter", &owner.value(0u32)?)?;
/// let client = multiprocess::managers::connect(owner.address().clone(), b"secret")?;
/// let counter: multiprocess::managers::ValueProxy<u32> = client.get("counter")?;
/// counter.set(1)?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn connect(address: impl Into<Address>, authkey: &[u8]) -> Result<SyncManager> {
    let address = address.into();
    let client = Client::new(&address, authkey, 0);
    // The first connection now: a wrong key, no server or another version shows here.
    client.check()?;
    Ok(SyncManager { client, process: Mutex::new(None), owner: Mutex::new(None) })
}

impl SyncManager {
    /// Settings for a manager before it starts.
    ///
    /// ```
    /// let m = multiprocess::managers::SyncManager::builder().start()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Where the server listens (`address`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// println!("{}", m.address());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        self.client.address()
    }

    /// The server process's pid, while it runs.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.pid().is_some());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(Process::pid)
    }

    /// How many objects the server holds (`_number_of_objects()`): 0 again once every
    /// proxy is dropped.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(m.number_of_objects()?, 1);
    /// drop(d);
    /// assert_eq!(m.number_of_objects()?, 0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn number_of_objects(&self) -> Result<usize> {
        match self.client.call(&Request::NumberOfObjects)? {
            Reply::Count(n) => Ok(n as usize),
            other => Err(Error::Codec(format!("unexpected reply from the manager: {other:?}"))),
        }
    }

    /// Stops the server and waits for it to exit (`shutdown()`); again, it does nothing.
    /// Proxies then answer [`Error::ManagerGone`].
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// m.shutdown()?;
    /// m.shutdown()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let Some(mut process) = self.process.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            // A manager got by `connect` does not own the server.
            return Ok(());
        };
        // Through the pipe the server was started with: no connection to make for it.
        let asked = match self.owner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(pipe) => pipe.send_bytes(b"stop").map_err(|_| Error::ManagerGone),
            None => self.client.call(&Request::Shutdown).map(drop),
        };
        let exited = process.join_timeout(SHUTDOWN_WAIT).is_ok() && !process.is_alive();
        if !exited {
            let _ = process.kill();
            process.join()?;
        }
        match asked {
            Ok(_) | Err(Error::ManagerGone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Shares `value` under `name`: any client of this server, on any host, gets it with
    /// [`get`](SyncManager::get) (Python's `register('get_queue', callable=lambda: q)`, the
    /// documentation's remote queue). A proxy in it keeps its object alive while it is
    /// shared; sharing again under the name replaces it.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let q = m.queue::<String>()?;
    /// m.share("queue", &q)?;
    /// let same: multiprocess::managers::QueueProxy<String> = m.get("queue")?;
    /// same.put("hello".into()).map_err(multiprocess::Error::from)?;
    /// assert_eq!(q.get()?, "hello");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn share<T: serde::Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let (value, holds) = proxy::encode_for(&self.client, value)?;
        self.client.call(&Request::Share { name: name.to_string(), value, holds }).map(drop)
    }

    /// What was shared under `name` (Python's `m.get_queue()` on a connected manager): a
    /// proxy to the same object for every client. Nothing shared under the name is
    /// [`Error::Remote`] of kind `NotFound`.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// m.share("answer", &42u32)?;
    /// assert_eq!(m.get::<u32>("answer")?, 42);
    /// assert!(m.get::<u32>("question").is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let (value, adopted) = match self.client.call(&Request::Lookup { name: name.to_string() })? {
            Reply::Item { value, adopted } => (value, adopted),
            other => return Err(Error::Codec(format!("unexpected reply from the manager: {other:?}"))),
        };
        proxy::decode_adopting(&self.client, &value, adopted)
    }

    /// Blocks until the server stops (Python's `get_server().serve_forever()`): for a
    /// process that starts a manager for others to [`connect`] to and has nothing else to do.
    /// On a manager got by `connect`, it returns at once.
    ///
    /// ```no_run
    /// let m = multiprocess::managers::SyncManager::builder()
    ///     .address(([127, 0, 0, 1], 50000))
    ///     .authkey(b"abracadabra")
    ///     .start()?;
    /// m.share("queue", &m.queue::<String>()?)?;
    /// m.serve_forever()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn serve_forever(&self) -> Result<()> {
        let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        match process.as_ref() {
            Some(p) => {
                let sentinel = p.sentinel()?;
                crate::connection::wait(&[&sentinel], None).map(drop)
            }
            None => Ok(()),
        }
    }

    /// Makes an object of the type registered as `name`, from `args`, and returns its proxy
    /// (Python's `manager.<typeid>(*args)`). An unknown name, or a type the server knows by
    /// another definition, is [`Error::Remote`].
    ///
    /// ```
    /// # use multiprocess::managers::{Handle, Interface};
    /// # pub struct Total(i64);
    /// # #[derive(Clone)] pub struct TotalProxy(Handle);
    /// # impl From<Handle> for TotalProxy { fn from(h: Handle) -> Self { TotalProxy(h) } }
    /// # impl Interface for Total {
    /// #     const NAME: &'static str = "Total"; const DIGEST: u64 = 7;
    /// #     type Object = Total; type Proxy = TotalProxy;
    /// #     fn dispatch(t: &mut Total, m: u32, args: &[u8]) -> multiprocess::Result<Vec<u8>> {
    /// #         let (by,): (i64,) = multiprocess::managers::decode_args(args)?;
    /// #         match m { 0 => { t.0 += by; multiprocess::managers::encode_result(&t.0) } _ => Err(multiprocess::managers::no_such_method::<Total>(m)) }
    /// #     }
    /// # }
    /// # fn zero(_: ()) -> Total { Total(0) }
    /// let m = multiprocess::managers::SyncManager::builder().register::<Total, _, _>("Total", zero).start()?;
    /// let total: TotalProxy = m.create::<Total, _>("Total", ())?;
    /// assert!(m.create::<Total, _>("Other", ()).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create<I, A>(&self, name: &str, args: A) -> Result<I::Proxy>
    where
        I: custom::Interface + ?Sized,
        A: serde::Serialize,
    {
        let (args_bytes, holds) = proxy::encode_for(&self.client, &args)?;
        let request = Request::CreateCustom {
            name: name.to_string(),
            interface: I::NAME.to_string(),
            digest: I::DIGEST,
            args: args_bytes,
            holds,
        };
        let id = match self.client.call(&request)? {
            Reply::Created(id) => id,
            other => return Err(Error::Codec(format!("unexpected reply from the manager: {other:?}"))),
        };
        drop(args);
        Ok(I::Proxy::from(custom::Handle::new(proxy::Inner::new(id, Arc::clone(&self.client)))))
    }

    /// Makes an object of `kind` and the proxy's reference to it.
    fn make(&self, kind: Kind, init: Init, holds: Vec<wire::Id>) -> Result<Arc<proxy::Inner>> {
        match self.client.call(&Request::Create { kind, init, holds })? {
            Reply::Created(id) => Ok(proxy::Inner::new(id, Arc::clone(&self.client))),
            other => Err(Error::Codec(format!("unexpected reply from the manager: {other:?}"))),
        }
    }
}

impl Drop for SyncManager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl fmt::Debug for SyncManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncManager").field("address", self.address()).field("pid", &self.pid()).finish()
    }
}

/// The proxy boilerplate: `Clone` (one reference shared), `Serialize` and `Deserialize`.
macro_rules! proxy_common {
    ($name:ident) => {
        proxy_common!($name<>);
    };
    ($name:ident < $($t:ident),* >) => {
        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                $name { inner: std::sync::Arc::clone(&self.inner), types: std::marker::PhantomData }
            }
        }

        impl<$($t),*> serde::Serialize for $name<$($t),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                crate::managers::proxy::serialize(&self.inner, s)
            }
        }

        impl<'de, $($t),*> serde::Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { inner: crate::managers::proxy::deserialize(d)?, types: std::marker::PhantomData })
            }
        }
    };
}
pub(crate) use proxy_common;
