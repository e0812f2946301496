//! `Value` (Python's `multiprocessing.Value`, a synchronized ctypes object).

use super::Pod;
use super::synced::{Entry, Synced};
use crate::synchronize::{LockResult, OwnerDied};
use crate::{RLock, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// One `T` in shared memory, with a lock (Python's `multiprocessing.Value(typecode, value)`).
///
/// The lock is a process-shared [`RLock`], as CPython's default `lock=True` gives: every
/// [`get`](Value::get) and [`set`](Value::set) takes it, [`lock`](Value::lock) holds it for a
/// guard that derefs to the `T`, and [`get_lock`](Value::get_lock) hands it out. Clones share
/// the value; pass one to a child in its `args`.
///
/// `Debug` shows `Value(x)`, or `Value(<locked>)` when reading would have to wait (CPython's
/// repr is `<Synchronized wrapper for c_double(x)>`).
///
/// ```
/// use multiprocess::{Process, Value};
///
/// fn f(num: Value<f64>) {
///     num.set(3.1415927); // num.value = 3.1415927
/// }
///
/// let num = Value::new(0.0)?; // Value('d', 0.0)
/// let mut p = Process::new(f, (num.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(num.get(), 3.1415927);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Value<T: Pod> {
    synced: Synced<T>,
}

impl<T: Pod> Clone for Value<T> {
    /// Another handle to the same value.
    fn clone(&self) -> Self {
        Value { synced: self.synced.clone() }
    }
}

impl<T: Pod> Value<T> {
    /// A new value in shared memory (Python's `Value(typecode, value)`); the typecode is `T`.
    ///
    /// ```
    /// use multiprocess::Value;
    /// let x = Value::new(7i32)?; // Value('i', 7)
    /// let y = Value::new(1.0f64 / 3.0)?; // Value(c_double, 1.0/3.0)
    /// assert_eq!(x.get(), 7);
    /// assert_eq!(y.get(), 1.0 / 3.0);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        Ok(Value { synced: Synced::new(1, Some(&[value]))? })
    }

    /// The value, read under the lock (Python's `v.value`).
    ///
    /// Takes the lock re-entrantly: calling it while this thread holds
    /// [`get_lock`](Value::get_lock)'s lock is fine. If the lock's previous holder died
    /// holding it, the read still happens, silently: [`lock`](Value::lock) is the way to be
    /// told.
    ///
    /// # Panics
    /// If this thread holds a [`ValueGuard`] of this value (that would alias its `&mut`), as
    /// `RefCell::borrow` panics when already mutably borrowed.
    ///
    /// ```
    /// let v = multiprocess::Value::new(-232i16)?; // Value('h', -232)
    /// assert_eq!(v.get(), -232);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn get(&self) -> T {
        self.synced.read(0)
    }

    /// Sets the value under the lock (Python's `v.value = x`). Re-entrant and silent about a
    /// dead previous holder, as [`get`](Value::get) is.
    ///
    /// # Panics
    /// As [`get`](Value::get).
    ///
    /// ```
    /// let v = multiprocess::Value::new(2i64.pow(33))?; // Value('q', 2**33)
    /// v.set(2i64.pow(34));
    /// assert_eq!(v.get(), 1 << 34);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn set(&self, value: T) {
        self.synced.write(0, value)
    }

    /// Takes the lock and returns a guard that derefs to the value and releases the lock when
    /// dropped (Python's `with v.get_lock():` around uses of `v.value`).
    ///
    /// If the lock's previous holder died holding it, the guard comes inside [`OwnerDied`]
    /// (the value may be half-updated); `?` turns that into
    /// [`Error::OwnerDied`](crate::Error::OwnerDied).
    ///
    /// # Panics
    /// If this thread already holds a guard of this value: two guards would be two `&mut`.
    ///
    /// ```
    /// let v = multiprocess::Value::new(5i32)?;
    /// *v.lock()? += 1; // with v.get_lock(): v.value += 1
    /// assert_eq!(v.get(), 6);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let entry = self.synced.enter_guard();
        let guard = ValueGuard { value: self, entry, _not_send: PhantomData };
        if entry.owner_died { Err(OwnerDied::new(guard)) } else { Ok(guard) }
    }

    /// The value's lock (Python's `get_lock()`): a process-shared [`RLock`], held by
    /// [`lock`](Value::lock)'s guards and by each [`get`](Value::get) and
    /// [`set`](Value::set). Hold it to make several of them one atomic step; clone it to
    /// keep it apart from the value.
    ///
    /// ```
    /// let v = multiprocess::Value::new(5i32)?;
    /// {
    ///     let _guard = v.get_lock().lock()?; // with v.get_lock():
    ///     v.set(v.get() + 1); //                   v.value += 1
    /// }
    /// assert_eq!(v.get(), 6);
    /// assert!(!v.get_lock().locked());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        self.synced.rlock()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    /// `Value(x)`, or `Value(<locked>)` when reading would wait for another thread or guard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.synced.try_to_vec() {
            Some(v) => f.debug_tuple("Value").field(&v[0]).finish(),
            None => f.write_str("Value(<locked>)"),
        }
    }
}

impl<T: Pod> Serialize for Value<T> {
    /// The handle (the segment's descriptor), for a child's `args`.
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.synced.serialize_one(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    /// The handle, in a child, checked to hold a `T`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Synced::deserialize_one(d).map(|synced| Value { synced })
    }
}

/// Holds a [`Value`]'s lock and derefs to its `T`; releases the lock when dropped. From
/// [`Value::lock`].
///
/// ```
/// let v = multiprocess::Value::new([1u8, 2, 3])?;
/// let mut guard = v.lock()?;
/// guard[0] = 9;
/// assert_eq!(*guard, [9, 2, 3]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    value: &'a Value<T>,
    entry: Entry,
    /// The lock level belongs to this thread (`!Send`); sharing `&guard` is fine (`Sync`).
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock and the borrower mark, so no other thread or
        // process touches the value, and this thread reaches it only through the guard.
        unsafe { &*self.value.synced.block().ptr() }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.value.synced.block().ptr() }
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.value.synced.leave_guard(self.entry);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}
