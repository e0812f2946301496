//! `Array` (Python's `multiprocessing.Array`, a synchronized ctypes array).

use super::Pod;
use super::synced::{Entry, Synced};
use crate::synchronize::{LockResult, OwnerDied};
use crate::{Error, RLock, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A fixed-length array of `T` in shared memory, with a lock (Python's
/// `multiprocessing.Array(typecode, size_or_initializer)`).
///
/// The lock is a process-shared [`RLock`], as for [`Value`](super::Value): each
/// [`get`](Array::get), [`set`](Array::set) and [`to_vec`](Array::to_vec) takes it, and
/// [`lock`](Array::lock) holds it for a guard that derefs to `[T]` (for slices, sorting,
/// several steps at once). The length is fixed at creation; it may be zero. Clones share the
/// array; pass one to a child in its `args`.
///
/// `Debug` shows `Array([..])`, or `Array(<locked>)` when reading would have to wait.
///
/// ```
/// use multiprocess::{Array, Process};
///
/// fn negate(arr: Array<i32>) -> multiprocess::Result<()> {
///     for x in arr.lock()?.iter_mut() {
///         *x = -*x;
///     }
///     Ok(())
/// }
///
/// let arr = Array::from_iter(0..4)?; // Array('i', range(4))
/// let mut p = Process::new(negate, (arr.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(arr.to_vec(), [0, -1, -2, -3]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct Array<T: Pod> {
    synced: Synced<T>,
}

impl<T: Pod> Clone for Array<T> {
    /// Another handle to the same array.
    fn clone(&self) -> Self {
        Array { synced: self.synced.clone() }
    }
}

impl<T: Pod> Array<T> {
    /// A new array of `len` zeroed elements (Python's `Array('d', len)`).
    ///
    /// ```
    /// let arr = multiprocess::Array::<f64>::new(3)?;
    /// assert_eq!(arr.to_vec(), [0.0; 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        Ok(Array { synced: Synced::new(len, None)? })
    }

    /// A new array holding a copy of `values` (Python's `Array('i', [1, 2, 3])`).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_slice(&[680, 626, 934])?;
    /// assert_eq!(arr.get(1), Some(626));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<Array<T>> {
        Ok(Array { synced: Synced::new(values.len(), Some(values))? })
    }

    /// A new array holding what `iter` yields (Python's `Array('i', range(10))`).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_iter((0..10).map(|i| i as f64))?;
    /// assert_eq!(arr.len(), 10);
    /// assert_eq!(arr.get(9), Some(9.0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible, so not `FromIterator`
    pub fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Result<Array<T>> {
        Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
    }

    /// The number of elements (Python's `len(arr)`).
    ///
    /// ```
    /// assert_eq!(multiprocess::Array::<i32>::new(10)?.len(), 10);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.synced.block().len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(multiprocess::Array::<i32>::new(0)?.is_empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index`, read under the lock, or `None` past the end (Python's `arr[i]`, which
    /// raises `IndexError` there). Re-entrant and silent about a dead previous holder of the
    /// lock, as [`Value::get`](super::Value::get) is.
    ///
    /// # Panics
    /// If this thread holds an [`ArrayGuard`] of this array (that would alias its `&mut`).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_slice(&[1, 2, 3])?;
    /// assert_eq!(arr.get(2), Some(3));
    /// assert_eq!(arr.get(3), None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn get(&self, index: usize) -> Option<T> {
        (index < self.len()).then(|| self.synced.read(index))
    }

    /// Sets element `index` under the lock (Python's `arr[i] = x`);
    /// [`Error::IndexOutOfRange`] past the end. Re-entrant, as [`get`](Array::get) is.
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// use multiprocess::{Array, Error};
    /// let arr = Array::<i32>::new(10)?;
    /// arr.set(3, 821)?;
    /// assert_eq!(arr.get(3), Some(821));
    /// assert!(matches!(arr.set(10, 1), Err(Error::IndexOutOfRange { index: 10, len: 10 })));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        let len = self.len();
        if index >= len {
            return Err(Error::IndexOutOfRange { index, len });
        }
        self.synced.write(index, value);
        Ok(())
    }

    /// A copy of every element, made under the lock (Python's `arr[:]`).
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_iter(0..5)?;
    /// assert_eq!(arr.to_vec()[1..4], [1, 2, 3]); // arr[1:4]
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn to_vec(&self) -> Vec<T> {
        self.synced.to_vec()
    }

    /// Takes the lock and returns a guard that derefs to the elements as a slice and releases
    /// the lock when dropped (Python's `with arr.get_lock():`, and slice operations).
    ///
    /// If the lock's previous holder died holding it, the guard comes inside [`OwnerDied`];
    /// `?` turns that into [`Error::OwnerDied`].
    ///
    /// # Panics
    /// If this thread already holds a guard of this array.
    ///
    /// ```
    /// let arr = multiprocess::Array::from_iter(0..10)?;
    /// arr.lock()?[4..8].copy_from_slice(&[1, 2, 3, 4]); // arr[4:8] = [1, 2, 3, 4]
    /// assert_eq!(arr.to_vec(), [0, 1, 2, 3, 1, 2, 3, 4, 8, 9]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let entry = self.synced.enter_guard();
        let guard = ArrayGuard { array: self, entry, _not_send: PhantomData };
        if entry.owner_died { Err(OwnerDied::new(guard)) } else { Ok(guard) }
    }

    /// The array's lock (Python's `get_lock()`): a process-shared [`RLock`], held by
    /// [`lock`](Array::lock)'s guards and by each single read or write.
    ///
    /// ```
    /// let arr = multiprocess::Array::from_slice(&[1, 2])?;
    /// let _guard = arr.get_lock().lock()?;
    /// arr.set(0, arr.get(0).unwrap() + arr.get(1).unwrap())?; // still this thread's lock
    /// assert_eq!(arr.to_vec(), [3, 2]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        self.synced.rlock()
    }

    /// A guard even if the previous holder died: for helpers that proceed silently.
    #[track_caller]
    fn lock_anyway(&self) -> ArrayGuard<'_, T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner)
    }
}

/// Char arrays (Python's `Array('c', n)`): bytes that hold a NUL-terminated string.
impl Array<u8> {
    /// The bytes up to the first NUL, or all of them (Python's `arr.value` on a char array).
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_slice(b"hi\0there")?;
    /// assert_eq!(arr.value(), b"hi");
    /// assert_eq!(arr.raw(), b"hi\0there");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn value(&self) -> Vec<u8> {
        let guard = self.lock_anyway();
        let end = guard.iter().position(|&b| b == 0).unwrap_or(guard.len());
        guard[..end].to_vec()
    }

    /// Writes `bytes` at the start, and a NUL after them if there is room (Python's
    /// `arr.value = b'...'`); the bytes after that are left as they were. Longer than the
    /// array is [`Error::InvalidArgument`] (`ValueError('byte string too long')`), and nothing
    /// is written.
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// let arr = multiprocess::Array::<u8>::new(10)?;
    /// arr.set_value(b"hello")?;
    /// assert_eq!(arr.value(), b"hello");
    /// assert_eq!(arr.raw(), b"hello\0\0\0\0\0");
    /// assert!(arr.set_value(b"hello world").is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn set_value(&self, bytes: &[u8]) -> Result<()> {
        self.set_bytes(bytes, true)
    }

    /// Every byte, NULs included (Python's `arr.raw`); the same as [`to_vec`](Array::to_vec).
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// let arr = multiprocess::Array::<u8>::new(3)?;
    /// assert_eq!(arr.raw(), [0, 0, 0]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn raw(&self) -> Vec<u8> {
        self.to_vec()
    }

    /// Writes `bytes` at the start, with no NUL after them (Python's `arr.raw = b'...'`).
    /// Longer than the array is [`Error::InvalidArgument`], and nothing is written.
    ///
    /// # Panics
    /// As [`get`](Array::get).
    ///
    /// ```
    /// let arr = multiprocess::Array::from_slice(b"xxxx")?;
    /// arr.set_raw(b"ab")?;
    /// assert_eq!(arr.raw(), b"abxx");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[track_caller]
    pub fn set_raw(&self, bytes: &[u8]) -> Result<()> {
        self.set_bytes(bytes, false)
    }

    #[track_caller]
    fn set_bytes(&self, bytes: &[u8], nul: bool) -> Result<()> {
        if bytes.len() > self.len() {
            return Err(too_long(bytes.len(), self.len()));
        }
        let mut guard = self.lock_anyway();
        guard[..bytes.len()].copy_from_slice(bytes);
        if nul && bytes.len() < guard.len() {
            guard[bytes.len()] = 0;
        }
        Ok(())
    }
}

/// CPython's `ValueError('byte string too long')`.
pub(super) fn too_long(len: usize, room: usize) -> Error {
    Error::InvalidArgument(format!("byte string too long: {len} bytes for a char array of {room}"))
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    /// `Array([..])`, or `Array(<locked>)` when reading would wait for another thread or guard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.synced.try_to_vec() {
            Some(v) => f.debug_tuple("Array").field(&v).finish(),
            None => f.write_str("Array(<locked>)"),
        }
    }
}

impl<T: Pod> Serialize for Array<T> {
    /// The handle (the segment's descriptor and the length), for a child's `args`.
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.synced.serialize_many(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    /// The handle, in a child, checked to hold as many elements as it says.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Synced::deserialize_many(d).map(|synced| Array { synced })
    }
}

/// Holds an [`Array`]'s lock and derefs to its elements as a slice; releases the lock when
/// dropped. From [`Array::lock`].
///
/// ```
/// let arr = multiprocess::Array::from_slice(&[3, 1, 2])?;
/// let mut guard = arr.lock()?;
/// guard.sort();
/// assert_eq!(*guard, [1, 2, 3]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    entry: Entry,
    /// The lock level belongs to this thread (`!Send`); sharing `&guard` is fine (`Sync`).
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let block = self.array.synced.block();
        // SAFETY: `len` aligned elements at `ptr` in the mapping; the guard holds the lock
        // and the borrower mark, so no other thread or process touches them, and this thread
        // reaches them only through the guard.
        unsafe { std::slice::from_raw_parts(block.ptr(), block.len()) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let block = self.array.synced.block();
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(block.ptr(), block.len()) }
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.synced.leave_guard(self.entry);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}
