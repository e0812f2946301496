//! Your own types in a manager (Python's `BaseManager.register(typeid, callable)`): an
//! [`Interface`] says how the server calls an object's methods and which proxy a client gets;
//! `#[multiprocess::managed]` on a trait writes it, with the proxy, so that a user writes the
//! trait once.
//!
//! The server finds a type's factory by the name it was registered under, in the registry
//! its owner gave it at start (offsets of functions in the same binary, as a spawned child's
//! target travels): a client names a registration, never code, so nothing a client sends
//! runs code of its choosing. Arguments and results are serde values.

use super::proxy::{self, Inner};
use super::wire::{Op, Reply};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// How a manager holds and calls objects of one shared type, and the proxy its clients get.
/// Written by `#[multiprocess::managed]` on a trait (for `dyn Trait`); by hand only for
/// unusual cases.
///
/// ```
/// use multiprocess::managers::{Handle, Interface, SyncManager};
/// use multiprocess::Result;
///
/// pub struct Counter(i64);
///
/// /// The proxy: each method is a call by number.
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// pub struct CounterProxy(Handle);
/// impl From<Handle> for CounterProxy {
///     fn from(h: Handle) -> Self { CounterProxy(h) }
/// }
/// impl CounterProxy {
///     pub fn add(&self, by: i64) -> Result<i64> { self.0.call(0, &(by,)) }
/// }
///
/// impl Interface for Counter {
///     const NAME: &'static str = "Counter";
///     const DIGEST: u64 = 1;
///     type Object = Counter;
///     type Proxy = CounterProxy;
///     fn dispatch(object: &mut Counter, method: u32, args: &[u8]) -> Result<Vec<u8>> {
///         match method {
///             0 => {
///                 let (by,): (i64,) = multiprocess::managers::decode_args(args)?;
///                 object.0 += by;
///                 multiprocess::managers::encode_result(&object.0)
///             }
///             _ => Err(multiprocess::managers::no_such_method::<Self>(method)),
///         }
///     }
/// }
///
/// fn new_counter(start: i64) -> Counter { Counter(start) }
///
/// let m = SyncManager::builder().register::<Counter, _, _>("Counter", new_counter).start()?;
/// let c: CounterProxy = m.create::<Counter, _>("Counter", 10)?;
/// assert_eq!(c.add(5)?, 15);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub trait Interface: 'static {
    /// The trait's name (for messages).
    const NAME: &'static str;
    /// A digest of the methods' names and signatures: a client and a server that disagree
    /// on it are refused at `create` and `get`, not half-way through a call.
    const DIGEST: u64;
    /// What the server holds (`Box<dyn Trait + Send>` for a trait).
    type Object: Send + 'static;
    /// What a client holds.
    type Proxy: From<Handle>;
    /// Calls method number `method` on `object` with its postcard-encoded arguments; the
    /// postcard-encoded result.
    fn dispatch(object: &mut Self::Object, method: u32, args: &[u8]) -> Result<Vec<u8>>;
}

/// Decodes a method's arguments (for [`Interface::dispatch`]); every byte must belong to them.
///
/// ```
/// let bytes = postcard::to_allocvec(&(1u8, 2u8)).unwrap();
/// assert_eq!(multiprocess::managers::decode_args::<(u8, u8)>(&bytes)?, (1, 2));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn decode_args<A: DeserializeOwned>(bytes: &[u8]) -> Result<A> {
    crate::reduction::from_bytes_exact(bytes)
}

/// Encodes a method's result (for [`Interface::dispatch`]).
///
/// ```
/// let bytes = multiprocess::managers::encode_result(&7u32)?;
/// assert_eq!(bytes, vec![7]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub fn encode_result<R: Serialize + ?Sized>(result: &R) -> Result<Vec<u8>> {
    Ok(postcard::to_allocvec(result)?)
}

/// The error for a method number the interface does not have (for [`Interface::dispatch`]).
///
/// ```
/// # use multiprocess::managers::{Handle, Interface};
/// # struct T;
/// # #[derive(Clone)] struct P(Handle);
/// # impl From<Handle> for P { fn from(h: Handle) -> P { P(h) } }
/// # impl Interface for T {
/// #     const NAME: &'static str = "T"; const DIGEST: u64 = 0; type Object = T; type Proxy = P;
/// #     fn dispatch(_: &mut T, m: u32, _: &[u8]) -> multiprocess::Result<Vec<u8>> { Err(multiprocess::managers::no_such_method::<T>(m)) }
/// # }
/// let e = multiprocess::managers::no_such_method::<T>(9);
/// assert!(e.to_string().contains("method 9"));
/// ```
pub fn no_such_method<I: Interface + ?Sized>(method: u32) -> Error {
    Error::Remote { kind: "AttributeError".into(), message: format!("{} has no method {method}", I::NAME) }
}

/// A client's handle on an object of a registered type: what a generated proxy wraps. It
/// counts as one reference to the object, shared by its clones, and serializes (it travels
/// as every proxy does).
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
/// let handle: Handle = total.0.clone(); // a second proxy of the same object
/// let _: i64 = handle.call(0, &(1i64,))?;
/// let now: i64 = total.0.call(0, &(1i64,))?;
/// assert_eq!(now, 2);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl Handle {
    pub(crate) fn new(inner: Arc<Inner>) -> Handle {
        Handle { inner }
    }

    /// Calls method number `method` with `args` (a tuple); its result. A method that panics in
    /// the server is `Error::Remote { kind: "Panic", .. }`, and the object stays usable.
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
    /// let now: i64 = total.0.call(0, &(5i64,))?; // what a generated method does
    /// assert_eq!(now, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn call<A: Serialize, R: DeserializeOwned>(&self, method: u32, args: &A) -> Result<R> {
        let client = self.inner.client()?;
        let (args, holds) = proxy::encode_for(&client, args)?;
        let reply = self.inner.call(Op::Method { method, args }, holds)?;
        let bytes = proxy::expect(reply, |r| match r {
            Reply::Value(v) => Ok(v),
            r => Err(r),
        })?;
        proxy::decode(&bytes)
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        proxy::serialize(&self.inner, s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Handle, D::Error> {
        Ok(Handle { inner: proxy::deserialize(d)? })
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Handle of object {}>", self.inner.id())
    }
}

/// Calls a method of a registered type's object, held as `Any`.
type Dispatch = fn(&mut (dyn Any + Send), u32, &[u8]) -> Result<Vec<u8>>;

/// An object of a registered type, in the server.
pub(crate) struct Custom {
    object: Box<dyn Any + Send>,
    dispatch: Dispatch,
}

impl Custom {
    /// Calls a method; a panic in it is an error, not the server's end.
    pub(crate) fn call(&mut self, method: u32, args: &[u8]) -> Result<Vec<u8>> {
        let dispatch = self.dispatch;
        let object = &mut *self.object;
        match catch_unwind(AssertUnwindSafe(|| dispatch(object, method, args))) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "Box<dyn Any>".into());
                Err(Error::Remote { kind: "Panic".into(), message })
            }
        }
    }
}

fn dispatch_any<I: Interface + ?Sized>(object: &mut (dyn Any + Send), method: u32, args: &[u8]) -> Result<Vec<u8>> {
    match object.downcast_mut::<I::Object>() {
        Some(object) => I::dispatch(object, method, args),
        None => Err(Error::Remote { kind: "WrongKind".into(), message: format!("not a {}", I::NAME) }),
    }
}

/// Makes an object of a registered type from its encoded arguments, with factory `F` (a fn
/// item: zero-sized, re-made here).
pub(crate) type Create = fn(&[u8]) -> Result<Custom>;

pub(crate) fn create<I, A, F>(args: &[u8]) -> Result<Custom>
where
    I: Interface + ?Sized,
    A: DeserializeOwned,
    F: Fn(A) -> I::Object + Copy + Send + 'static,
{
    const { assert!(std::mem::size_of::<F>() == 0, "a factory must be a fn item or a closure that captures nothing") };
    let args: A = decode_args(args)?;
    // SAFETY: `F` is zero-sized (asserted above): a fn item or a closure capturing nothing,
    // with no bytes and no invariants, re-made here out of nothing.
    let factory = std::mem::ManuallyDrop::new(unsafe { std::mem::zeroed::<F>() });
    let object = catch_unwind(AssertUnwindSafe(|| factory(args)))
        .map_err(|_| Error::Remote { kind: "Panic".into(), message: format!("the factory of {} panicked", I::NAME) })?;
    Ok(Custom { object: Box::new(object), dispatch: dispatch_any::<I> })
}

/// A registration, as it travels to the server: the name, the interface's name and digest,
/// and the factory's place in the binary.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Registration {
    pub(crate) name: String,
    pub(crate) interface: String,
    pub(crate) digest: u64,
    pub(crate) create: i64,
}

impl Registration {
    pub(crate) fn new<I, A, F>(name: &str) -> Registration
    where
        I: Interface + ?Sized,
        A: DeserializeOwned,
        F: Fn(A) -> I::Object + Copy + Send + 'static,
    {
        let create: Create = create::<I, A, F>;
        Registration {
            name: name.to_string(),
            interface: I::NAME.to_string(),
            digest: I::DIGEST,
            create: crate::popen::fn_offset_of(create as usize),
        }
    }

    /// The factory, in the server.
    pub(crate) fn factory(&self) -> Create {
        // SAFETY: the offset came from `Registration::new` in the process that started this
        // server, running this same binary (a spawned or forkserver child checks the
        // executable's identity before it runs anything; a fork child is a copy), and names
        // a `Create` there. Clients only name registrations; they never send offsets.
        unsafe { std::mem::transmute::<usize, Create>(crate::popen::address_at(self.create)) }
    }
}
