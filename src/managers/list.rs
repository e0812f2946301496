//! `ListProxy`: a list in a manager's server (Python's `ListProxy`, from `manager.list()`).

use super::proxy::{Inner, count, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply};
use super::{SyncManager, proxy_common};
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A list in a manager's server, of a serde type (Python's `ListProxy`).
///
/// Items compare by their encoded bytes ([`index`](ListProxy::index),
/// [`remove`](ListProxy::remove), [`count`](ListProxy::count)). [`sort`](ListProxy::sort)
/// sorts with `T`'s order, in this process, and stores the result only if no one changed the
/// list meanwhile (it tries again otherwise), so it is atomic as Python's is.
///
/// ```
/// let m = multiprocess::manager()?;
/// let l = m.list_from(0..10u32)?;                 // m.list(range(10))
/// assert_eq!(l.slice(2..5)?, vec![2, 3, 4]);       // l[2:5]
/// l.push(10)?;                                    // l.append(10)
/// assert_eq!(l.len()?, 11);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ListProxy<T> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> T>,
}

proxy_common!(ListProxy<T>);

impl SyncManager {
    /// A new, empty list (`manager.list()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.list::<String>()?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn list<T>(&self) -> Result<ListProxy<T>> {
        Ok(ListProxy { inner: self.make(Kind::List, Init::Empty, Vec::new())?, types: PhantomData })
    }

    /// A list holding `items` (`manager.list(items)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from(["a".to_string(), "b".to_string()])?;
    /// assert_eq!(l.to_vec()?, vec!["a", "b"]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn list_from<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>> {
        // The items live until the server holds what they refer to (a proxy among them,
        // dropped before, could free its object first).
        let items: Vec<T> = items.into_iter().collect();
        let (encoded, holds) = encode_all(&self.client, &items)?;
        Ok(ListProxy { inner: self.make(Kind::List, Init::Items(encoded), holds)?, types: PhantomData })
    }
}

fn encode_all<T: Serialize>(client: &super::client::Client, items: &[T]) -> Result<(Vec<Vec<u8>>, Vec<u64>)> {
    let mut encoded = Vec::new();
    let mut holds = Vec::new();
    for item in items {
        let (bytes, h) = encode_for(client, item)?;
        encoded.push(bytes);
        holds.extend(h);
    }
    Ok((encoded, holds))
}

fn values<T: DeserializeOwned>(reply: Reply) -> Result<Vec<T>> {
    let items = expect(reply, |r| match r {
        Reply::Values(v) => Ok(v),
        r => Err(r),
    })?;
    items.iter().map(|v| decode(v)).collect()
}

fn value<T: DeserializeOwned>(reply: Reply) -> Result<T> {
    let item = expect(reply, |r| match r {
        Reply::Value(v) => Ok(v),
        r => Err(r),
    })?;
    decode(&item)
}

/// An index as the server takes it; past `i64::MAX` nothing is there anyway.
fn wire_index(index: usize) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    fn call(&self, op: Op) -> Result<Reply> {
        self.inner.call(op, Vec::new())
    }

    fn encode(&self, item: &T) -> Result<(Vec<u8>, Vec<u64>)> {
        encode_for(&*self.inner.client()?, item)
    }

    /// How many items (`len(l)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.list_from([1u8, 2])?.len()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        count(self.call(Op::Len)?)
    }

    /// Whether there is no item.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.list::<u8>()?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The item at `index`, if there is one (`l[index]`, which raises `IndexError` where this
    /// is `None`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([5u8, 6])?;
    /// assert_eq!(l.get(1)?, Some(6));
    /// assert_eq!(l.get(2)?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<Option<T>> {
        match self.call(Op::ListGet(wire_index(index))) {
            Ok(reply) => value(reply).map(Some),
            Err(Error::IndexOutOfRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the item at `index` (`l[index] = item`); past the end,
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// use multiprocess::Error;
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([5u8, 6])?;
    /// l.set(0, 100)?;
    /// assert_eq!(l.to_vec()?, vec![100, 6]);
    /// assert!(matches!(l.set(2, 1), Err(Error::IndexOutOfRange { index: 2, len: 2 })));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, index: usize, item: T) -> Result<()> {
        let (bytes, holds) = self.encode(&item)?;
        self.inner.call(Op::ListSet(wire_index(index), bytes), holds).map(drop)
    }

    /// Appends `item` (`l.append(item)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list()?;
    /// l.push('x')?;
    /// assert_eq!(l.to_vec()?, vec!['x']);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn push(&self, item: T) -> Result<()> {
        let (bytes, holds) = self.encode(&item)?;
        self.inner.call(Op::ListPush(bytes), holds).map(drop)
    }

    /// Appends every item (`l.extend(items)`, `l += items`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8])?;
    /// l.extend([2, 3])?;
    /// assert_eq!(l.to_vec()?, vec![1, 2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        let (encoded, holds) = encode_all(&*self.inner.client()?, &items)?;
        self.inner.call(Op::ListExtend(encoded), holds).map(drop)
    }

    /// Inserts `item` before `index`; past the end, at the end (`l.insert(index, item)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8, 3])?;
    /// l.insert(1, 2)?;
    /// l.insert(99, 4)?;
    /// assert_eq!(l.to_vec()?, vec![1, 2, 3, 4]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn insert(&self, index: usize, item: T) -> Result<()> {
        let (bytes, holds) = self.encode(&item)?;
        self.inner.call(Op::ListInsert(wire_index(index), bytes), holds).map(drop)
    }

    /// Removes and returns the last item (`l.pop()`; `None` where Python raises
    /// `IndexError` on an empty list).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8, 2])?;
    /// assert_eq!(l.pop()?, Some(2));
    /// assert_eq!(l.pop()?, Some(1));
    /// assert_eq!(l.pop()?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        match self.call(Op::ListPop(None)) {
            Ok(reply) => value(reply).map(Some),
            Err(Error::Remote { kind, .. }) if kind == "IndexError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes and returns the item at `index` (`l.pop(index)`); past the end,
    /// [`Error::IndexOutOfRange`].
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8, 2, 3])?;
    /// assert_eq!(l.pop_at(0)?, 1);
    /// assert_eq!(l.to_vec()?, vec![2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn pop_at(&self, index: usize) -> Result<T> {
        value(self.call(Op::ListPop(Some(wire_index(index))))?)
    }

    /// Removes the first item equal to `item`; whether there was one (`l.remove(item)`,
    /// which raises `ValueError` where this is `false`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8, 2, 1])?;
    /// assert!(l.remove(&1)?);
    /// assert_eq!(l.to_vec()?, vec![2, 1]);
    /// assert!(!l.remove(&7)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn remove(&self, item: &T) -> Result<bool> {
        let (bytes, _) = self.encode(item)?;
        match self.call(Op::ListRemove(bytes)) {
            Ok(_) => Ok(true),
            Err(Error::Remote { kind, .. }) if kind == "ValueError" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The position of the first item equal to `item` (`l.index(item)`, which raises
    /// `ValueError` where this is `None`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from(['a', 'b'])?;
    /// assert_eq!(l.index(&'b')?, Some(1));
    /// assert_eq!(l.index(&'z')?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn index(&self, item: &T) -> Result<Option<usize>> {
        let (bytes, _) = self.encode(item)?;
        match self.call(Op::ListIndex(bytes)) {
            Ok(reply) => count(reply).map(Some),
            Err(Error::Remote { kind, .. }) if kind == "ValueError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many items equal `item` (`l.count(item)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.list_from([1u8, 2, 1])?.count(&1)?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn count(&self, item: &T) -> Result<usize> {
        let (bytes, _) = self.encode(item)?;
        count(self.call(Op::ListCount(bytes))?)
    }

    /// The items in `range`, clamped to the list (`l[start:end]`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from(0..5u8)?;
    /// assert_eq!(l.slice(1..3)?, vec![1, 2]);
    /// assert_eq!(l.slice(3..)?, vec![3, 4]);
    /// assert_eq!(l.slice(4..99)?, vec![4]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(wire_index(s)),
            Bound::Excluded(&s) => Some(wire_index(s.saturating_add(1))),
            Bound::Unbounded => None,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(wire_index(e.saturating_add(1))),
            Bound::Excluded(&e) => Some(wire_index(e)),
            Bound::Unbounded => None,
        };
        values(self.call(Op::ListSlice(start, end))?)
    }

    /// Every item (`l[:]`, `list(l)`, `l.copy()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.list_from([3u8, 4])?.to_vec()?, vec![3, 4]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.slice(..)
    }

    /// Every item; the same as [`to_vec`](ListProxy::to_vec) (`l.copy()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.list_from([3u8])?.copy()?, vec![3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn copy(&self) -> Result<Vec<T>> {
        self.to_vec()
    }

    /// Reverses the list in place (`l.reverse()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8, 2, 3])?;
    /// l.reverse()?;
    /// assert_eq!(l.to_vec()?, vec![3, 2, 1]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn reverse(&self) -> Result<()> {
        self.call(Op::ListReverse).map(drop)
    }

    /// Repeats the items `n` times in place (`l *= n`); 0 empties it.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([5u8, 7])?;
    /// l.repeat(2)?;
    /// assert_eq!(l.to_vec()?, vec![5, 7, 5, 7]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn repeat(&self, n: usize) -> Result<()> {
        self.call(Op::ListRepeat(n as u64)).map(drop)
    }

    /// Sorts the list in place by `T`'s order, stable (`l.sort()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([3u8, 1, 2])?;
    /// l.sort()?;
    /// assert_eq!(l.to_vec()?, vec![1, 2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// Sorts the list in place with `compare`, stable (`l.sort(key=...)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1i32, -3, 2])?;
    /// l.sort_by(|a, b| a.abs().cmp(&b.abs()))?;
    /// assert_eq!(l.to_vec()?, vec![1, 2, -3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn sort_by(&self, mut compare: impl FnMut(&T, &T) -> std::cmp::Ordering) -> Result<()> {
        loop {
            let (version, items) = expect(self.call(Op::ListSnapshot)?, |r| match r {
                Reply::Snapshot { version, items } => Ok((version, items)),
                r => Err(r),
            })?;
            // The bytes travel back as they came: sorting moves them, it does not re-encode
            // (so the proxies inside keep the references the list holds for them).
            let mut decoded = items.into_iter().map(|b| Ok((decode::<T>(&b)?, b))).collect::<Result<Vec<_>>>()?;
            decoded.sort_by(|a, b| compare(&a.0, &b.0));
            let items = decoded.into_iter().map(|(_, b)| b).collect();
            match self.call(Op::ListReplace { version, items }) {
                Ok(_) => return Ok(()),
                Err(Error::Remote { kind, .. }) if kind == "Changed" => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes every item (`del l[:]`, `l.clear()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from([1u8])?;
    /// l.clear()?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.call(Op::Clear).map(drop)
    }

    /// An iterator that reads the list as it is at each step, one item per round trip, as
    /// iterating over a Python `ListProxy` does: a change made meanwhile is seen.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let l = m.list_from(0..3u8)?;
    /// let mut it = l.iter();
    /// assert_eq!(it.next().transpose()?, Some(0));
    /// l.set(1, 100)?;
    /// assert_eq!(it.next().transpose()?, Some(100));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter { list: self, next: 0 }
    }
}

/// The iterator of [`ListProxy::iter`]: `Result<T>` per item, read live.
///
/// ```
/// let m = multiprocess::manager()?;
/// let l = m.list_from(['a', 'b'])?;
/// let all: Vec<char> = l.iter().collect::<Result<_, _>>()?;
/// assert_eq!(all, vec!['a', 'b']);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct ListIter<'a, T> {
    list: &'a ListProxy<T>,
    next: usize,
}

impl<T: Serialize + DeserializeOwned> Iterator for ListIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.list.get(self.next) {
            Ok(Some(item)) => {
                self.next += 1;
                Some(Ok(item))
            }
            Ok(None) => None,
            Err(e) => {
                // Stop after an error rather than repeat it for ever.
                self.next = usize::MAX;
                Some(Err(e))
            }
        }
    }
}

impl<T> fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ListProxy object {}>", self.inner.id())
    }
}
