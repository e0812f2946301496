//! `DictProxy`: a dict in a manager's server (Python's `DictProxy`, from `manager.dict()`).

use super::proxy::{Inner, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply};
use super::{SyncManager, proxy_common};
use crate::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A dict in a manager's server, keyed and valued by serde types (Python's `DictProxy`).
///
/// Keys compare by their encoded bytes, and iteration follows insertion order, as Python's
/// dicts do. Every method is one round trip to the server; the methods that read many
/// entries ([`items`](DictProxy::items), [`keys`](DictProxy::keys)) take a copy at once.
///
/// ```
/// let m = multiprocess::manager()?;
/// let d = m.dict::<String, u32>()?;
/// d.insert("a".into(), 1)?;                          // d['a'] = 1
/// assert_eq!(d.get(&"a".into())?, Some(1));          // d.get('a')
/// assert!(d.contains_key(&"a".into())?);             // 'a' in d
/// assert_eq!(d.len()?, 1);                           // len(d)
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct DictProxy<K, V> {
    inner: Arc<Inner>,
    types: PhantomData<fn() -> (K, V)>,
}

proxy_common!(DictProxy<K, V>);

impl SyncManager {
    /// A new, empty dict (`manager.dict()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict::<u8, String>()?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        Ok(DictProxy { inner: self.make(Kind::Dict, Init::Empty, Vec::new())?, types: PhantomData })
    }

    /// A dict holding `pairs` (`manager.dict(pairs)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a'), (2, 'b')])?;
    /// assert_eq!(d.items()?, vec![(1, 'a'), (2, 'b')]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn dict_from<K: Serialize, V: Serialize>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        // The pairs live until the server holds what they refer to.
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        let (encoded, holds) = encode_pairs(&self.client, &pairs)?;
        Ok(DictProxy { inner: self.make(Kind::Dict, Init::Pairs(encoded), holds)?, types: PhantomData })
    }
}

/// Pairs' bytes, and the objects of the proxies in them.
type EncodedPairs = (Vec<(Vec<u8>, Vec<u8>)>, Vec<u64>);

fn encode_pairs<K: Serialize, V: Serialize>(client: &super::client::Client, pairs: &[(K, V)]) -> Result<EncodedPairs> {
    let mut encoded = Vec::new();
    let mut holds = Vec::new();
    for (k, v) in pairs {
        let (k, h) = encode_for(client, k)?;
        holds.extend(h);
        let (v, h) = encode_for(client, v)?;
        holds.extend(h);
        encoded.push((k, v));
    }
    Ok((encoded, holds))
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    fn key(&self, key: &K) -> Result<Vec<u8>> {
        Ok(encode_for(&*self.inner.client()?, key)?.0)
    }

    fn call(&self, op: Op) -> Result<Reply> {
        self.inner.call(op, Vec::new())
    }

    fn maybe(&self, op: Op) -> Result<Option<V>> {
        expect(self.call(op)?, |r| match r {
            Reply::Maybe(v) => Ok(v),
            r => Err(r),
        })?
        .map(|v| decode(&v))
        .transpose()
    }

    /// The value for `key`, if any (`d.get(key)`; Python's `d[key]` raises `KeyError`
    /// where this is `None`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([("k".to_string(), 1u8)])?;
    /// assert_eq!(d.get(&"k".into())?, Some(1));
    /// assert_eq!(d.get(&"zz".into())?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.maybe(Op::DictGet(self.key(key)?))
    }

    /// Sets `key` to `value`; the value it replaced, if any (`d[key] = value`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(d.insert(1, 10)?, None);
    /// assert_eq!(d.insert(1, 11)?, Some(10));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let client = self.inner.client()?;
        let (k, mut holds) = encode_for(&client, &key)?;
        let (v, more) = encode_for(&client, &value)?;
        holds.extend(more);
        let reply = self.inner.call(Op::DictInsert(k, v), holds)?;
        expect(reply, |r| match r {
            Reply::Maybe(v) => Ok(v),
            r => Err(r),
        })?
        .map(|v| decode(&v))
        .transpose()
    }

    /// Removes `key`; its value, if it was there (`d.pop(key, None)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'x')])?;
    /// assert_eq!(d.remove(&1)?, Some('x'));
    /// assert_eq!(d.remove(&1)?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        self.maybe(Op::DictRemove(self.key(key)?))
    }

    /// Whether `key` is there (`key in d`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, ())])?;
    /// assert!(d.contains_key(&1)? && !d.contains_key(&2)?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        super::proxy::boolean(self.call(Op::DictContains(self.key(key)?))?)
    }

    /// How many entries (`len(d)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.dict_from([(1u8, 1u8), (2, 2)])?.len()?, 2);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        super::proxy::count(self.call(Op::Len)?)
    }

    /// Whether there is no entry.
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert!(m.dict::<u8, u8>()?.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order (`list(d.keys())`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.dict_from([(2u8, ()), (1, ())])?.keys()?, vec![2, 1]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        let keys = expect(self.call(Op::DictKeys)?, |r| match r {
            Reply::Values(v) => Ok(v),
            r => Err(r),
        })?;
        keys.iter().map(|k| decode(k)).collect()
    }

    /// The values, in insertion order (`list(d.values())`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// assert_eq!(m.dict_from([(2u8, 'b'), (1, 'a')])?.values()?, vec!['b', 'a']);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        let values = expect(self.call(Op::DictValues)?, |r| match r {
            Reply::Values(v) => Ok(v),
            r => Err(r),
        })?;
        values.iter().map(|v| decode(v)).collect()
    }

    /// The entries, in insertion order (`list(d.items())`; `d.copy()` as pairs).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a')])?;
    /// assert_eq!(d.items()?, vec![(1, 'a')]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let pairs = expect(self.call(Op::DictItems)?, |r| match r {
            Reply::Pairs(p) => Ok(p),
            r => Err(r),
        })?;
        pairs.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect()
    }

    /// A copy as a `HashMap` (`d.copy()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a')])?;
    /// assert_eq!(d.copy()?, std::collections::HashMap::from([(1, 'a')]));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn copy(&self) -> Result<std::collections::HashMap<K, V>>
    where
        K: std::hash::Hash + Eq,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Sets every pair (`d.update(pairs)`, `d |= other`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a')])?;
    /// d.update([(1, 'b'), (2, 'c')])?;
    /// assert_eq!(d.items()?, vec![(1, 'b'), (2, 'c')]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        let (encoded, holds) = encode_pairs(&*self.inner.client()?, &pairs)?;
        self.inner.call(Op::DictUpdate(encoded), holds).map(drop)
    }

    /// The value for `key`, inserting `default` first if there is none
    /// (`d.setdefault(key, default)`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(d.setdefault(1, 5)?, 5);
    /// assert_eq!(d.setdefault(1, 6)?, 5);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        let client = self.inner.client()?;
        let (k, mut holds) = encode_for(&client, &key)?;
        let (v, more) = encode_for(&client, &default)?;
        holds.extend(more);
        let v = expect(self.inner.call(Op::DictSetDefault(k, v), holds)?, |r| match r {
            Reply::Value(v) => Ok(v),
            r => Err(r),
        })?;
        decode(&v)
    }

    /// Removes and returns the last pair inserted (`d.popitem()`; `None` where Python raises
    /// `KeyError` on an empty dict).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a'), (2, 'b')])?;
    /// assert_eq!(d.popitem()?, Some((2, 'b')));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        let pair = expect(self.call(Op::DictPopItem)?, |r| match r {
            Reply::MaybePair(p) => Ok(p),
            r => Err(r),
        })?;
        pair.map(|(k, v)| Ok((decode(&k)?, decode(&v)?))).transpose()
    }

    /// Removes every entry (`d.clear()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let d = m.dict_from([(1u8, 'a')])?;
    /// d.clear()?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.call(Op::Clear).map(drop)
    }
}

impl<K, V> fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<DictProxy object {}>", self.inner.id())
    }
}
