//! `SetProxy`: a set in a manager's server (Python's `SetProxy`, from `manager.set()`,
//! new in 3.14).

use super::proxy::{Inner, boolean, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply, SetRelation};
use super::{SyncManager, proxy_common};
use crate::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A set of a serde type in a manager's server (Python's `manager.set()`); members compare
/// by their encoded bytes. The in-place operators are methods (`s |= other` is
/// [`update`](SetProxy::update)); the comparisons ask the server
/// ([`is_subset`](SetProxy::is_subset), ...).
///
/// ```
/// let m = multiprocess::manager()?;
/// let s = m.set_from(["a".to_string(), "b".to_string()])?;
/// assert!(s.contains(&"a".into())?);
/// s.update(["c".to_string()])?;                 // s |= {'c'}
/// s.difference_update(["a".to_string()])?;      // s -= {'a'}
/// assert_eq!(s.len()?, 2);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct SetProxy<T> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> T>,
}

proxy_common!(SetProxy<T>);

impl SyncManager {
    /// A new, empty set (`manager.set()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set::<u8>()?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set<T>(&self) -> Result<SetProxy<T>> {
        Ok(SetProxy { inner: self.make(Kind::Set, Init::Empty, Vec::new())?, types: PhantomData })
    }

    /// A set of `items`, duplicates dropped (`manager.set(items)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.set_from([1u8, 1, 2])?.len()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_from<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<SetProxy<T>> {
        let (encoded, holds) = encode_all(&self.client, items)?;
        Ok(SetProxy { inner: self.make(Kind::Set, Init::Items(encoded), holds)?, types: PhantomData })
    }
}

fn encode_all<T: Serialize>(
    client: &super::client::Client,
    items: impl IntoIterator<Item = T>,
) -> Result<(Vec<Vec<u8>>, Vec<u64>)> {
    // Kept until encoded and sent: a proxy among them must not free its object first.
    let items: Vec<T> = items.into_iter().collect();
    let mut encoded = Vec::with_capacity(items.len());
    let mut holds = Vec::new();
    for item in &items {
        let (bytes, h) = encode_for(client, item)?;
        encoded.push(bytes);
        holds.extend(h);
    }
    Ok((encoded, holds))
}

impl<T: Serialize + DeserializeOwned> SetProxy<T> {
    fn one(&self, item: &T) -> Result<Vec<u8>> {
        Ok(encode_for(&*self.inner.client()?, item)?.0)
    }

    fn many(&self, items: impl IntoIterator<Item = T>) -> Result<(Vec<Vec<u8>>, Vec<u64>)> {
        encode_all(&*self.inner.client()?, items)
    }

    /// Adds `item`; whether it was new (`s.add(item)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set()?;
    /// assert!(s.insert(1u8)?);
    /// assert!(!s.insert(1)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn insert(&self, item: T) -> Result<bool> {
        let (bytes, holds) = encode_for(&*self.inner.client()?, &item)?;
        boolean(self.inner.call(Op::SetAdd(bytes), holds)?)
    }

    /// Removes `item`; whether it was there (`s.discard(item)`; `s.remove(item)` raises
    /// `KeyError` where this is `false`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8])?;
    /// assert!(s.remove(&1)?);
    /// assert!(!s.remove(&1)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn remove(&self, item: &T) -> Result<bool> {
        boolean(self.inner.call(Op::SetRemove(self.one(item)?), Vec::new())?)
    }

    /// Whether `item` is a member (`item in s`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set_from([1u8])?.contains(&1)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn contains(&self, item: &T) -> Result<bool> {
        boolean(self.inner.call(Op::SetContains(self.one(item)?), Vec::new())?)
    }

    /// Removes and returns a member, if any (`s.pop()`, which raises `KeyError` where this
    /// is `None`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8])?;
    /// assert_eq!(s.pop()?, Some(1));
    /// assert_eq!(s.pop()?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        let item = expect(self.inner.call(Op::SetPop, Vec::new())?, |r| match r {
            Reply::Maybe(v) => Ok(v),
            r => Err(r),
        })?;
        item.map(|b| decode(&b)).transpose()
    }

    /// How many members (`len(s)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.set_from([1u8, 2])?.len()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        super::proxy::count(self.inner.call(Op::Len, Vec::new())?)
    }

    /// Whether there is no member.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set::<u8>()?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every member, in the order they were added (`list(s)`, `s.copy()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.set_from([2u8, 1, 2])?.to_vec()?, vec![2, 1]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let items = expect(self.inner.call(Op::SetItems, Vec::new())?, |r| match r {
            Reply::Values(v) => Ok(v),
            r => Err(r),
        })?;
        items.iter().map(|b| decode(b)).collect()
    }

    /// Removes every member (`s.clear()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8])?;
    /// s.clear()?;
    /// assert!(s.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.inner.call(Op::Clear, Vec::new()).map(drop)
    }

    /// Adds every item (`s |= other`, `s.update(other)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8])?;
    /// s.update([2, 3])?;
    /// assert_eq!(s.len()?, 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let (items, holds) = self.many(items)?;
        self.inner.call(Op::SetUpdate(items), holds).map(drop)
    }

    /// Removes every item given (`s -= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8, 2])?;
    /// s.difference_update([1])?;
    /// assert_eq!(s.to_vec()?, vec![2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn difference_update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        self.inner.call(Op::SetDifferenceUpdate(self.many(items)?.0), Vec::new()).map(drop)
    }

    /// Keeps only the members among the items given (`s &= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8, 2])?;
    /// s.intersection_update([2, 3])?;
    /// assert_eq!(s.to_vec()?, vec![2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn intersection_update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        self.inner.call(Op::SetIntersectionUpdate(self.many(items)?.0), Vec::new()).map(drop)
    }

    /// Keeps the members in exactly one of the two (`s ^= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let s = m.set_from([1u8, 2])?;
    /// s.symmetric_difference_update([2, 3])?;
    /// assert_eq!(s.to_vec()?, vec![1, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn symmetric_difference_update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let (items, holds) = self.many(items)?;
        self.inner.call(Op::SetSymmetricDifferenceUpdate(items), holds).map(drop)
    }

    fn compare(&self, relation: SetRelation, items: impl IntoIterator<Item = T>) -> Result<bool> {
        boolean(self.inner.call(Op::SetCompare(relation, self.many(items)?.0), Vec::new())?)
    }

    /// Whether every member is among `items` (`s <= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set_from([1u8])?.is_subset([1, 2])?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_subset(&self, items: impl IntoIterator<Item = T>) -> Result<bool> {
        self.compare(SetRelation::Subset, items)
    }

    /// Whether every item given is a member (`s >= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set_from([1u8, 2])?.is_superset([2])?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_superset(&self, items: impl IntoIterator<Item = T>) -> Result<bool> {
        self.compare(SetRelation::Superset, items)
    }

    /// Whether no item given is a member (`s.isdisjoint(other)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.set_from([1u8])?.is_disjoint([2])?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_disjoint(&self, items: impl IntoIterator<Item = T>) -> Result<bool> {
        self.compare(SetRelation::Disjoint, items)
    }
}

impl<T> fmt::Debug for SetProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<SetProxy object {}>", self.inner.id())
    }
}
