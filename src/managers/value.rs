//! `ValueProxy`: one value in a manager's server (Python's `ValueProxy`, from
//! `manager.Value(typecode, value)`).

use super::proxy::{Inner, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply};
use super::{SyncManager, proxy_common};
use crate::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// One value of a serde type in a manager's server (Python's `manager.Value(t, v)`, whose
/// `.value` is `get()` and `set()` here). A read-modify-write through it is not atomic, as
/// in Python: guard it with a manager lock, or use a shared [`Value`](crate::Value).
///
/// ```
/// let m = multiprocess::manager()?;
/// let v = m.value(1i32)?;
/// v.set(v.get()? + 1)?;
/// assert_eq!(v.get()?, 2);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ValueProxy<T> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> T>,
}

proxy_common!(ValueProxy<T>);

impl SyncManager {
    /// A new value (`manager.Value(typecode, value)`: the type is `T`'s).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.value("text".to_string())?.get()?, "text");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn value<T: Serialize>(&self, value: T) -> Result<ValueProxy<T>> {
        let (bytes, holds) = encode_for(&self.client, &value)?;
        Ok(ValueProxy { inner: self.make(Kind::Value, Init::One(bytes), holds)?, types: PhantomData })
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value (`v.value`, `v.get()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.value(7u64)?.get()?, 7);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        let bytes = expect(self.inner.call(Op::ValueGet, Vec::new())?, |r| match r {
            Reply::Value(v) => Ok(v),
            r => Err(r),
        })?;
        decode(&bytes)
    }

    /// Replaces the value (`v.value = x`, `v.set(x)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let v = m.value(1u8)?;
    /// v.set(2)?;
    /// assert_eq!(v.get()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        let (bytes, holds) = encode_for(&*self.inner.client()?, &value)?;
        self.inner.call(Op::ValueSet(bytes), holds).map(drop)
    }
}

impl<T> fmt::Debug for ValueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ValueProxy object {}>", self.inner.id())
    }
}
