//! `Namespace`: named attributes in a manager's server (Python's `NamespaceProxy`, from
//! `manager.Namespace()`).

use super::SyncManager;
use super::proxy::{Inner, decode, encode_for, expect};
use super::wire::{Init, Kind, Op, Reply};
use crate::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Named attributes of any serde types, shared through a manager (Python's
/// `manager.Namespace()`, whose `ns.x = 1` is `ns.set("x", &1)` here).
///
/// Its `Debug` form is Python's `str(ns)`: `Namespace(name="Bob")`, leaving out the names that
/// start with `_`.
///
/// ```
/// let m = multiprocess::manager()?;
/// let ns = m.namespace()?;
/// ns.set("name", "Bob")?;
/// ns.set("_hidden", &1)?;
/// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("Bob"));
/// assert_eq!(format!("{ns:?}"), r#"Namespace(name="Bob")"#);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Namespace {
    inner: Arc<Inner>,
    types: PhantomData<()>,
}

impl Clone for Namespace {
    fn clone(&self) -> Self {
        Namespace { inner: Arc::clone(&self.inner), types: PhantomData }
    }
}

impl serde::Serialize for Namespace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::proxy::serialize(&self.inner, s)
    }
}

impl<'de> serde::Deserialize<'de> for Namespace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Namespace { inner: super::proxy::deserialize(d)?, types: PhantomData })
    }
}

impl SyncManager {
    /// A new namespace with no attribute (`manager.Namespace()`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let ns = m.namespace()?;
    /// assert_eq!(ns.get::<u8>("x")?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace { inner: self.make(Kind::Namespace, Init::Empty, Vec::new())?, types: PhantomData })
    }
}

impl Namespace {
    /// Sets the attribute `name` (`ns.name = value`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let ns = m.namespace()?;
    /// ns.set("job", "Builder")?;
    /// ns.set("job", "Architect")?;
    /// assert_eq!(ns.get::<String>("job")?.as_deref(), Some("Architect"));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set<T: Serialize + fmt::Debug + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let (bytes, holds) = encode_for(&*self.inner.client()?, value)?;
        self.inner.call(Op::NsSet(name.to_string(), bytes, format!("{value:?}")), holds).map(drop)
    }

    /// The attribute `name` as a `T`, if it is set (`ns.name`, which raises
    /// `AttributeError` where this is `None`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &2.5f64)?;
    /// assert_eq!(ns.get::<f64>("x")?, Some(2.5));
    /// assert_eq!(ns.get::<f64>("y")?, None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let value = expect(self.inner.call(Op::NsGet(name.to_string()), Vec::new())?, |r| match r {
            Reply::Maybe(v) => Ok(v),
            r => Err(r),
        })?;
        value.map(|v| decode(&v)).transpose()
    }

    /// Removes the attribute `name`; whether it was set (`del ns.name`, which raises
    /// `AttributeError` where this is `false`).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &1)?;
    /// assert!(ns.del("x")?);
    /// assert!(!ns.del("x")?);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn del(&self, name: &str) -> Result<bool> {
        super::proxy::boolean(self.inner.call(Op::NsDel(name.to_string()), Vec::new())?)
    }

    /// The names set, in the order they were first set (`vars(ns)`'s keys).
    ///
    /// ```
    /// let m = multiprocess::manager()?;
    /// let ns = m.namespace()?;
    /// ns.set("b", &1)?;
    /// ns.set("a", &2)?;
    /// assert_eq!(ns.names()?, vec!["b", "a"]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.attributes()?.into_iter().map(|(n, _)| n).collect())
    }

    /// Every attribute's name and `Debug` text.
    fn attributes(&self) -> Result<Vec<(String, String)>> {
        let named = expect(self.inner.call(Op::NsItems, Vec::new())?, |r| match r {
            Reply::Named(n) => Ok(n),
            r => Err(r),
        })?;
        Ok(named.into_iter().map(|(n, _, text)| (n, text)).collect())
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attributes() {
            Ok(attributes) => {
                let shown: Vec<String> =
                    attributes.iter().filter(|(n, _)| !n.starts_with('_')).map(|(n, t)| format!("{n}={t}")).collect();
                write!(f, "Namespace({})", shown.join(", "))
            }
            Err(e) => write!(f, "<Namespace object {}: {e}>", self.inner.id()),
        }
    }
}
