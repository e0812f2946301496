//! Values and arrays in shared memory (Python's `multiprocessing.sharedctypes`: `Value`,
//! `Array`, `RawValue` and `RawArray`).
//!
//! | Python | Rust |
//! |---|---|
//! | `Value('d', 0.0)` | [`Value::new(0.0f64)`](Value::new) |
//! | `v.value`, `v.value = x` | [`v.get()`](Value::get), [`v.set(x)`](Value::set) |
//! | `with v.get_lock(): v.value += 1` | [`*v.lock()? += 1`](Value::lock), or `let _g = v.get_lock().lock()?; v.set(v.get() + 1)` |
//! | `Array('i', range(10))`, `Array('d', 5)` | [`Array::from_iter(0..10)`](Array::from_iter), [`Array::<f64>::new(5)`](Array::new) |
//! | `arr[i]`, `arr[i] = x`, `arr[:]`, `len(arr)` | [`get(i)`](Array::get), [`set(i, x)`](Array::set), [`to_vec()`](Array::to_vec), [`len()`](Array::len) |
//! | `Array('c', 10)`: `.value`, `.raw` | `Array::<u8>::new(10)`: [`value()`](Array::value), [`set_value`](Array::set_value), [`raw()`](Array::raw), [`set_raw`](Array::set_raw) |
//! | `RawValue('i', 3)`, `RawArray('i', 5)`, `lock=False` | [`RawValue::new(3i32)`](RawValue::new), [`RawArray::<i32>::new(5)`](RawArray::new) |
//! | `Value(Point, 3, 2.0)` with `class Point(Structure)` | `Value::new(Point { .. })` with a `#[repr(C)]` struct and `unsafe impl Pod for Point {}` (see [`Pod`]) |
//! | `sharedctypes.copy(v)` | `RawValue::new(v.get())` |
//!
//! The typecodes are Rust types: `b B h H i I l L q Q f d c` are
//! `i8 u8 i16 u16 i32 u32 i64 u64 i64 u64 f32 f64 u8` (`l` is a C `long`, 64 bits on Linux;
//! `c` is a byte, and a char array an `Array<u8>`). So a bad typecode (SHV-03) or a float
//! given to an `i32` (SHV-10) is a compile error, and a negative length cannot be written.
//!
//! Each object lives in an anonymous shared-memory segment of its own (a memfd): nothing
//! appears in `/dev/shm`, and the memory goes when the last handle to it, in any process,
//! does. Clones share the object; pass one to a child in its `args`, under any start method.
//!
//! [`Value`] and [`Array`] come with a process-shared recursive lock, as CPython's do by
//! default: each read or write takes it, [`lock`](Value::lock) holds it for a guard that
//! derefs to the data, and [`get_lock`](Value::get_lock) hands out the lock itself.
//! [`RawValue`] and [`RawArray`] have no lock: each read and write is a copy made with
//! relaxed atomic operations, so safe code never races, but a value wider than one machine
//! word read while another process writes it may be torn (part old, part new).
//!
//! Not carried over: `lock=` with a lock of one's own (each `Value` and `Array` has its own
//! lock), the wide-char typecode `u` (use `u32`), and slices as indices (`lock()` gives a
//! real slice to index and sort).
//!
//! ```
//! use multiprocess::{Array, Process, Value};
//!
//! fn f(num: Value<f64>, arr: Array<i32>) -> multiprocess::Result<()> {
//!     num.set(3.1415927);
//!     for x in arr.lock()?.iter_mut() {
//!         *x = -*x;
//!     }
//!     Ok(())
//! }
//!
//! let num = Value::new(0.0)?;
//! let arr = Array::from_iter(0..10)?;
//! let mut p = Process::new(f, (num.clone(), arr.clone()));
//! p.start()?;
//! p.join()?;
//! assert_eq!(num.get(), 3.1415927);
//! assert_eq!(arr.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
//! # Ok::<(), multiprocess::Error>(())
//! ```

mod array;
mod block;
mod raw;
mod synced;
mod value;

pub use array::{Array, ArrayGuard};
pub use raw::{RawArray, RawValue};
pub use value::{Value, ValueGuard};

/// A type whose values can live in shared memory: a ctypes type (Python's typecodes, or a
/// `ctypes.Structure`).
///
/// Implemented for `i8 u8 i16 u16 i32 u32 i64 u64 f32 f64` and for arrays `[T; N]` of such
/// types. Implement it for a `#[repr(C)]` struct of them to share the struct, as a ctypes
/// `Structure` is shared in Python.
///
/// # Safety
/// Implement it only for a type that
/// - is valid for every bit pattern: integers, floats, and arrays and `#[repr(C)]` structs of
///   them (no `bool`, `char`, enum, reference, `NonZero` or niche-carrying field): another
///   process may have written any bytes;
/// - has no padding bytes: fill every gap with an explicit field (see the example), since
///   [`RawValue`] and [`RawArray`] copy values byte for byte;
/// - holds no pointer (another process maps the memory elsewhere) and owns nothing (it is
///   `Copy`, so it has no `Drop`);
/// - is aligned to at most 4096 bytes (a larger alignment is an error at construction).
///
/// ```
/// use multiprocess::{Process, Value, sharedctypes::Pod};
///
/// // Python: class Point(Structure): _fields_ = [('x', c_int), ('y', c_double)]
/// #[repr(C)]
/// #[derive(Clone, Copy, Debug, Default, PartialEq)]
/// struct Point {
///     x: i32,
///     _pad: i32, // the gap C leaves before `y`, made explicit
///     y: f64,
/// }
/// // SAFETY: `#[repr(C)]`, integers and a float only, no padding left.
/// unsafe impl Pod for Point {}
///
/// fn double(p: Value<Point>) -> multiprocess::Result<()> {
///     let mut point = p.lock()?;
///     point.x *= 2;
///     point.y *= 2.0;
///     Ok(())
/// }
///
/// let p = Value::new(Point { x: 3, y: 2.0, ..Point::default() })?;
/// let mut child = Process::new(double, (p.clone(),));
/// child.start()?;
/// child.join()?;
/// assert_eq!(p.get(), Point { x: 6, y: 4.0, ..Point::default() });
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty)*) => {$(
        // SAFETY: a primitive number: any bits are a value, no padding, no pointer.
        unsafe impl Pod for $t {}
    )*};
}
pod!(i8 u8 i16 u16 i32 u32 i64 u64 f32 f64);

// SAFETY: elements of an array follow each other without gaps (the size of a type is a
// multiple of its alignment), so an array of `Pod` is `Pod`.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
