//! `RawValue` and `RawArray` (Python's `multiprocessing.RawValue` and `RawArray`): shared
//! ctypes objects without a lock.

use super::Pod;
use super::array::too_long;
use super::block::{Block, atomic_load, atomic_store};
use crate::heap::SharedState;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The state of a raw object: none.
pub(super) struct NoLock;

// SAFETY: zero-sized.
unsafe impl SharedState for NoLock {}

/// One `T` in shared memory, without a lock (Python's `multiprocessing.RawValue`, or
/// `Value(..., lock=False)`).
///
/// Each [`get`](RawValue::get) and [`set`](RawValue::set) is a copy made with relaxed atomic
/// operations: one when `T` is 1, 2, 4 or 8 bytes and aligned to its size, else one per
/// aligned chunk. So safe code never races, but a wider `T` read while another thread or
/// process writes it may be torn (some parts old, some new), and a read-modify-write such as
/// `v.set(v.get() + 1)` may lose a concurrent update: use a [`Value`](super::Value), or a
/// lock of your own, when that matters. Clones share the value; pass one to a child in its
/// `args`. `Debug` shows `RawValue(x)`.
///
/// ```
/// use multiprocess::{Process, RawValue};
///
/// fn f(v: RawValue<i32>) {
///     v.set(24234);
/// }
///
/// let v = RawValue::new(4343)?; // RawValue('i', 4343)
/// let mut p = Process::new(f, (v.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(v.get(), 24234);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct RawValue<T: Pod> {
    block: Block<NoLock, T>,
}

impl<T: Pod> Clone for RawValue<T> {
    /// Another handle to the same value.
    fn clone(&self) -> Self {
        RawValue { block: self.block.clone() }
    }
}

impl<T: Pod> RawValue<T> {
    /// A new value in shared memory (Python's `RawValue(typecode, value)`).
    ///
    /// ```
    /// let v = multiprocess::RawValue::new(3.625f64)?; // RawValue('d', 3.625)
    /// assert_eq!(v.get(), 3.625);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>> {
        let mut block = Block::new(1)?;
        block.init_from(&[value]);
        Ok(RawValue { block })
    }

    /// The value (Python's `v.value`), copied out atomically (see [`RawValue`]).
    ///
    /// ```
    /// let v = multiprocess::RawValue::new(b'x')?; // RawValue('c', b'x')
    /// assert_eq!(v.get(), b'x');
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self) -> T {
        // SAFETY: the one element, aligned, in the mapping; reached only atomically.
        unsafe { atomic_load(self.block.ptr()) }
    }

    /// Sets the value (Python's `v.value = x`), copied in atomically (see [`RawValue`]).
    ///
    /// ```
    /// let v = multiprocess::RawValue::new(0u64)?;
    /// v.set(1 << 40);
    /// assert_eq!(v.get(), 1 << 40);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { atomic_store(self.block.ptr(), value) }
    }

    /// The value's address in this process (Python's `ctypes.addressof(v)`), for those who
    /// synchronize by their own means. Reading or writing through it while another thread or
    /// process uses [`get`](RawValue::get) or [`set`](RawValue::set), or the pointer, is a
    /// data race unless you order the accesses; it is valid while a handle to the value lives.
    ///
    /// ```
    /// let v = multiprocess::RawValue::new(7i32)?;
    /// // SAFETY: no other thread or process uses `v` meanwhile.
    /// unsafe { *v.as_ptr() += 1 };
    /// assert_eq!(v.get(), 8);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.block.ptr()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    /// `RawValue(x)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    /// The handle (the segment's descriptor), for a child's `args`.
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.block.serialize_one(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    /// The handle, in a child, checked to hold a `T`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Block::deserialize_one(d).map(|block| RawValue { block })
    }
}

/// A fixed-length array of `T` in shared memory, without a lock (Python's
/// `multiprocessing.RawArray`, or `Array(..., lock=False)`).
///
/// Each element is read and written as [`RawValue`] does: atomically, torn only within one
/// element wider than its alignment. A [`to_vec`](RawArray::to_vec) made while others write
/// is no snapshot: each element is copied at its own moment. Clones share the array; pass one
/// to a child in its `args`. `Debug` shows `RawArray([..])`.
///
/// ```
/// use multiprocess::{Process, RawArray};
///
/// fn prefix_sums(arr: RawArray<i32>) -> multiprocess::Result<()> {
///     for i in 1..arr.len() {
///         arr.set(i, arr.get(i).unwrap() + arr.get(i - 1).unwrap())?;
///     }
///     Ok(())
/// }
///
/// let arr = RawArray::from_slice(&[1, 2, 3, 4])?; // RawArray('i', [1, 2, 3, 4])
/// let mut p = Process::new(prefix_sums, (arr.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(arr.to_vec(), [1, 3, 6, 10]);
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct RawArray<T: Pod> {
    block: Block<NoLock, T>,
}

impl<T: Pod> Clone for RawArray<T> {
    /// Another handle to the same array.
    fn clone(&self) -> Self {
        RawArray { block: self.block.clone() }
    }
}

impl<T: Pod> RawArray<T> {
    /// A new array of `len` zeroed elements (Python's `RawArray('i', len)`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::<i32>::new(10)?;
    /// assert_eq!(arr.to_vec(), [0; 10]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray { block: Block::new(len)? })
    }

    /// A new array holding a copy of `values` (Python's `RawArray('d', [1.0, 2.0])`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(&[1.0, 2.0])?;
    /// assert_eq!(arr.get(1), Some(2.0));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<RawArray<T>> {
        let mut block = Block::new(values.len())?;
        block.init_from(values);
        Ok(RawArray { block })
    }

    /// A new array holding what `iter` yields (Python's `RawArray('i', range(10))`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_iter(0..10)?;
    /// assert_eq!(arr.to_vec(), (0..10).collect::<Vec<_>>());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible, so not `FromIterator`
    pub fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Result<RawArray<T>> {
        Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
    }

    /// The number of elements (Python's `len(arr)`).
    ///
    /// ```
    /// assert_eq!(multiprocess::RawArray::<u8>::new(4)?.len(), 4);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(multiprocess::RawArray::<u8>::new(0)?.is_empty());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index`, copied out atomically, or `None` past the end (Python's `arr[i]`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(&[5u16, 6])?;
    /// assert_eq!(arr.get(0), Some(5));
    /// assert_eq!(arr.get(2), None);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Option<T> {
        // SAFETY: `index < len`: an aligned element in the mapping, reached only atomically.
        (index < self.len()).then(|| unsafe { atomic_load(self.block.elem(index)) })
    }

    /// Sets element `index`, copied in atomically (Python's `arr[i] = x`);
    /// [`Error::IndexOutOfRange`] past the end.
    ///
    /// ```
    /// let arr = multiprocess::RawArray::<i64>::new(2)?;
    /// arr.set(1, -1)?;
    /// assert_eq!(arr.to_vec(), [0, -1]);
    /// assert!(arr.set(2, 0).is_err());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        let len = self.len();
        if index >= len {
            return Err(Error::IndexOutOfRange { index, len });
        }
        // SAFETY: as in `get`.
        unsafe { atomic_store(self.block.elem(index), value) };
        Ok(())
    }

    /// A copy of every element, each copied atomically (Python's `arr[:]`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(&[1, 2, 3])?;
    /// assert_eq!(arr.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: as in `get`, for each `i < len`.
        (0..self.len()).map(|i| unsafe { atomic_load(self.block.elem(i)) }).collect()
    }

    /// The first element's address in this process (Python's `ctypes.addressof(arr)`), for
    /// those who synchronize by their own means; see [`RawValue::as_ptr`].
    ///
    /// ```
    /// let arr = multiprocess::RawArray::<u32>::new(2)?;
    /// assert!(arr.as_ptr().is_aligned());
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.block.ptr()
    }

    /// The elements as a slice, for those who synchronize by their own means.
    ///
    /// # Safety
    /// While the slice lives, no thread or process may write the elements (through
    /// [`set`](RawArray::set), [`as_mut_slice`](RawArray::as_mut_slice) or a pointer), unless
    /// the writes are ordered after the last use of the slice by a lock, an event or the like.
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(&[3, 1, 2])?;
    /// // SAFETY: nothing else uses `arr` meanwhile.
    /// let sum: i32 = unsafe { arr.as_slice() }.iter().sum();
    /// assert_eq!(sum, 6);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` aligned elements in the mapping, alive while `self` is; the caller
        // rules out concurrent writes.
        unsafe { std::slice::from_raw_parts(self.block.ptr(), self.len()) }
    }

    /// The elements as a mutable slice, for those who synchronize by their own means.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may read or write the elements by
    /// any means, and no other slice of them may be alive in this thread, unless the accesses
    /// are ordered by a lock, an event or the like.
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(&[3, 1, 2])?;
    /// // SAFETY: nothing else uses `arr` meanwhile.
    /// unsafe { arr.as_mut_slice() }.sort();
    /// assert_eq!(arr.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)] // shared memory: uniqueness is the caller's promise
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`; the caller rules out any other access.
        unsafe { std::slice::from_raw_parts_mut(self.block.ptr(), self.len()) }
    }
}

/// Char arrays (Python's `RawArray('c', n)`): bytes that hold a NUL-terminated string.
impl RawArray<u8> {
    /// The bytes up to the first NUL, or all of them (Python's `arr.value`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(b"hi\0there")?;
    /// assert_eq!(arr.value(), b"hi");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn value(&self) -> Vec<u8> {
        let mut out = self.raw();
        if let Some(end) = out.iter().position(|&b| b == 0) {
            out.truncate(end);
        }
        out
    }

    /// Writes `bytes` at the start and a NUL after them if there is room (Python's
    /// `arr.value = b'...'`). Longer than the array is [`Error::InvalidArgument`]
    /// (`ValueError('byte string too long')`), and nothing is written.
    ///
    /// ```
    /// let arr = multiprocess::RawArray::<u8>::new(20)?;
    /// arr.set_value(b"hello")?;
    /// arr.set_value(&arr.value().repeat(2))?; // string.value *= 2
    /// assert_eq!(arr.value(), b"hellohello");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_value(&self, bytes: &[u8]) -> Result<()> {
        self.set_raw(bytes)?;
        if bytes.len() < self.len() {
            self.set(bytes.len(), 0)?;
        }
        Ok(())
    }

    /// Every byte, NULs included (Python's `arr.raw`).
    ///
    /// ```
    /// let arr = multiprocess::RawArray::from_slice(b"a\0b")?;
    /// assert_eq!(arr.raw(), b"a\0b");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn raw(&self) -> Vec<u8> {
        self.to_vec()
    }

    /// Writes `bytes` at the start, with no NUL after them (Python's `arr.raw = b'...'`).
    /// Longer than the array is [`Error::InvalidArgument`], and nothing is written.
    ///
    /// ```
    /// let arr = multiprocess::RawArray::<u8>::new(2)?;
    /// assert!(arr.set_raw(b"abc").is_err());
    /// arr.set_raw(b"ab")?;
    /// assert_eq!(arr.raw(), b"ab");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set_raw(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.len() {
            return Err(too_long(bytes.len(), self.len()));
        }
        for (i, &b) in bytes.iter().enumerate() {
            self.set(i, b)?;
        }
        Ok(())
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    /// `RawArray([..])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    /// The handle (the segment's descriptor and the length), for a child's `args`.
    fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.block.serialize_many(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    /// The handle, in a child, checked to hold as many elements as it says.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Block::deserialize_many(d).map(|block| RawArray { block })
    }
}
