//! `ArrayProxy`: a fixed-length array in a manager's server (Python's `ArrayProxy`, from
//! `manager.Array(typecode, sequence)`).

use super::proxy::{Inner, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply};
use super::{SyncManager, proxy_common};
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A fixed-length array of a serde type in a manager's server (Python's
/// `manager.Array(typecode, sequence)`: the typecode is `T`).
///
/// ```
/// let m = multiprocess::manager()?;
/// let a = m.array([0i32, 1])?;
/// assert_eq!((a.get(0)?, a.get(1)?, a.len()?), (0, 1, 2));
/// a.set(1, 5)?;
/// assert_eq!(a.to_vec()?, vec![0, 5]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ArrayProxy<T> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> T>,
}

proxy_common!(ArrayProxy<T>);

impl SyncManager {
    /// A new array holding `items` (`manager.Array(typecode, items)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.array([1.5f64; 3])?.len()?, 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn array<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<ArrayProxy<T>> {
        let items: Vec<T> = items.into_iter().collect();
        let mut encoded = Vec::with_capacity(items.len());
        let mut holds = Vec::new();
        for item in &items {
            let (bytes, h) = encode_for(&self.client, item)?;
            encoded.push(bytes);
            holds.extend(h);
        }
        Ok(ArrayProxy { inner: self.make(Kind::List, Init::Items(encoded), holds)?, types: PhantomData })
    }
}

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The item at `index` (`a[index]`); past the end, [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// use multiprocess::Error;
    /// let m = multiprocess::manager()?;
    /// let a = m.array([7u8])?;
    /// assert_eq!(a.get(0)?, 7);
    /// assert!(matches!(a.get(1), Err(Error::IndexOutOfRange { index: 1, len: 1 })));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        let index = i64::try_from(index).map_err(|_| Error::IndexOutOfRange { index, len: 0 })?;
        let bytes = expect(self.inner.call(Op::ListGet(index), Vec::new())?, |r| match r {
            Reply::Value(v) => Ok(v),
            r => Err(r),
        })?;
        decode(&bytes)
    }

    /// Replaces the item at `index` (`a[index] = item`); past the end,
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let a = m.array([7u8])?;
    /// a.set(0, 8)?;
    /// assert_eq!(a.get(0)?, 8);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, index: usize, item: T) -> Result<()> {
        let at = i64::try_from(index).map_err(|_| Error::IndexOutOfRange { index, len: 0 })?;
        let (bytes, holds) = encode_for(&*self.inner.client()?, &item)?;
        self.inner.call(Op::ListSet(at, bytes), holds).map(drop)
    }

    /// The length (`len(a)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.array([0u8; 4])?.len()?, 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        super::proxy::count(self.inner.call(Op::Len, Vec::new())?)
    }

    /// Whether the array has no item.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.array(Vec::<u8>::new())?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every item (`list(a)`, `a[:]`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.array([1u8, 2])?.to_vec()?, vec![1, 2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let items = expect(self.inner.call(Op::ListSlice(None, None), Vec::new())?, |r| match r {
            Reply::Values(v) => Ok(v),
            r => Err(r),
        })?;
        items.iter().map(|b| decode(b)).collect()
    }
}

impl<T> fmt::Debug for ArrayProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ArrayProxy object {}>", self.inner.id())
    }
}
