//! Shared ctypes objects: CONFORMANCE.md section 13 (SHV-01..SHV-13): `Value`, `Array`,
//! `RawValue`, `RawArray`. Cases with a child run under every start method; where Rust needs
//! another shape than Python, the case's doc comment says how it was translated.
//!
//! Cases that are compile-time matters here: SHV-03 (a bad typecode: the typecode is a Rust
//! type, so there is no `'x'` to reject), SHV-10 (overflow and type errors: `Value::new(1.5)`
//! for an `i32` and `2**31` as an `i32` do not compile; wrapping, if wanted, is the caller's
//! explicit `as` cast), SHV-09's typecode table (`'i'` is `i32`, `'l'` is `i64`, ...: the type
//! says it) and the `lock=False` / `lock='navalue'` forms of SHV-02 and SHV-06 (`RawValue` and
//! `RawArray` have no `get_lock` method at all; there is no `lock=` argument). SHV-14 is the
//! manager's and belongs with the managers.
mod common;
use multiprocess::sharedctypes::Pod;
use multiprocess::*;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs `f(args)` in a child started by `m` and checks that it exited with 0 (a failed
/// `assert!` in the child is exit code 1).
fn run<F: Target<A>, A: Args>(m: StartMethod, f: F, args: A) {
    let mut p = get_context(m).process(f, args);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "the child failed");
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

/// CPython's `_Foo(Structure)`: `x c_int`, `y c_double`, `z c_longlong`. The gap C leaves
/// after `x` is an explicit field, as `Pod` asks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Foo {
    x: i32,
    _pad: i32,
    y: f64,
    z: i64,
}

// SAFETY: `#[repr(C)]`, integers and a float, no padding left.
unsafe impl Pod for Foo {}

/// An element over-aligned for its size, to check where elements are placed.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Wide {
    a: u64,
    rest: [u8; 120],
}

// SAFETY: `#[repr(C)]`, 8 + 120 bytes filling the 128 exactly: no padding.
unsafe impl Pod for Wide {}

const SEQ: [i32; 10] = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];

// ---------------------------------------------------------------------------------------------
// Children.

fn shv01_set_values(i: Value<i32>, d: Value<f64>, h: Value<i16>, q: Value<i64>, c: Value<u8>) {
    i.set(24234);
    d.set(-4.25);
    h.set(234);
    q.set(1 << 34);
    c.set(b'y');
}

fn shv01_set_raw_values(i: RawValue<i32>, d: RawValue<f64>, h: RawValue<i16>, q: RawValue<i64>, c: RawValue<u8>) {
    i.set(24234);
    d.set(-4.25);
    h.set(234);
    q.set(1 << 34);
    c.set(b'y');
}

/// SHV-02's child: the lock it received is the parent's, held by the parent.
fn lock_is_held_elsewhere(lock: RLock) -> Result<()> {
    assert!(lock.locked());
    assert!(!lock.try_acquire()?);
    Ok(())
}

fn value_lock_is_held_elsewhere(v: Value<i32>) -> Result<()> {
    lock_is_held_elsewhere(v.get_lock().clone())
}

fn array_lock_is_held_elsewhere(arr: Array<i32>) -> Result<()> {
    lock_is_held_elsewhere(arr.get_lock().clone())
}

/// CPython's `_TestArray.f`: prefix sums in place, one element at a time.
fn prefix_sums(arr: Array<i32>) -> Result<()> {
    for i in 1..arr.len() {
        arr.set(i, arr.get(i).unwrap() + arr.get(i - 1).unwrap())?;
    }
    Ok(())
}

fn raw_prefix_sums(arr: RawArray<i32>) -> Result<()> {
    for i in 1..arr.len() {
        arr.set(i, arr.get(i).unwrap() + arr.get(i - 1).unwrap())?;
    }
    Ok(())
}

/// CPython's `_TestSharedCTypes._double`, for the synchronized objects.
fn double(
    x: Value<i32>,
    y: Value<f64>,
    z: Value<i64>,
    rec: Value<Foo>,
    arr: Array<f64>,
    string: Array<u8>,
) -> Result<()> {
    *x.lock()? *= 2;
    *y.lock()? *= 2.0;
    *z.lock()? *= 2;
    {
        let mut rec = rec.lock()?;
        rec.x *= 2;
        rec.y *= 2.0;
    }
    string.set_value(&string.value().repeat(2))?;
    for i in 0..arr.len() {
        arr.set(i, arr.get(i).unwrap() * 2.0)?;
    }
    Ok(())
}

/// `_double` for the raw objects (`lock=False`).
fn double_raw(
    x: RawValue<i32>,
    y: RawValue<f64>,
    z: RawValue<i64>,
    rec: RawValue<Foo>,
    arr: RawArray<f64>,
    string: RawArray<u8>,
) -> Result<()> {
    x.set(x.get() * 2);
    y.set(y.get() * 2.0);
    z.set(z.get() * 2);
    rec.set(Foo { x: rec.get().x * 2, y: rec.get().y * 2.0, ..rec.get() });
    string.set_value(&string.value().repeat(2))?;
    for i in 0..arr.len() {
        arr.set(i, arr.get(i).unwrap() * 2.0)?;
    }
    Ok(())
}

/// SHV-13 in a child: `with v.get_lock(): v.value += 1`.
fn increment_under_get_lock(v: Value<i32>) -> Result<()> {
    let _guard = v.get_lock().lock()?;
    v.set(v.get() + 1);
    Ok(())
}

const INCREMENTS: i64 = 2000;

fn increment_many(v: Value<i64>) -> Result<()> {
    for _ in 0..INCREMENTS {
        *v.lock()? += 1;
    }
    Ok(())
}

fn increment_many_by_get_lock(v: Value<i64>) -> Result<()> {
    for _ in 0..INCREMENTS {
        let _guard = v.get_lock().lock()?;
        v.set(v.get() + 1);
    }
    Ok(())
}

/// Sets the value, then dies holding a guard of it.
fn die_holding_value(v: Value<i64>) -> Result<()> {
    let mut guard = v.lock()?;
    *guard = 42;
    multiprocess::exit(7)
}

/// Writes element 1, then dies holding a guard of the array.
fn die_holding_array(arr: Array<u32>) -> Result<()> {
    let mut guard = arr.lock()?;
    guard[1] = 42;
    multiprocess::exit(7)
}

fn check_empty(arr: Array<i32>, raw: RawArray<i32>) -> Result<()> {
    assert!(arr.is_empty() && raw.is_empty());
    assert_eq!(arr.to_vec(), [] as [i32; 0]);
    assert_eq!(raw.get(0), None);
    assert!(arr.lock()?.is_empty());
    Ok(())
}

fn check_and_bump_wide(v: Value<Wide>, raw: RawArray<Wide>) -> Result<()> {
    assert!(raw.as_ptr().is_aligned());
    assert_eq!(v.get().a, 1);
    assert_eq!(raw.get(2).unwrap().rest[119], 2);
    v.lock()?.a = 2;
    raw.set(1, Wide { a: 9, rest: [9; 120] })?;
    Ok(())
}

fn sum_big(arr: Array<f64>, out: RawValue<f64>) -> Result<()> {
    out.set(arr.lock()?.iter().sum());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SHV-01: Value and RawValue.

start_methods! {
    /// SHV-01 (`test_value`): the initial values read back; the child's writes are seen.
    fn shv_01_value(m) {
        let (i, d, h) = (Value::new(4343i32).unwrap(), Value::new(3.625f64).unwrap(), Value::new(-232i16).unwrap());
        let (q, c) = (Value::new(1i64 << 33).unwrap(), Value::new(b'x').unwrap());
        assert_eq!((i.get(), d.get(), h.get(), q.get(), c.get()), (4343, 3.625, -232, 1 << 33, b'x'));
        run(m, shv01_set_values, (i.clone(), d.clone(), h.clone(), q.clone(), c.clone()));
        assert_eq!((i.get(), d.get(), h.get(), q.get(), c.get()), (24234, -4.25, 234, 1 << 34, b'y'));
    }

    /// SHV-01 (`test_rawvalue`): the same for `RawValue`.
    fn shv_01_rawvalue(m) {
        let (i, d, h) = (RawValue::new(4343i32).unwrap(), RawValue::new(3.625f64).unwrap(), RawValue::new(-232i16).unwrap());
        let (q, c) = (RawValue::new(1i64 << 33).unwrap(), RawValue::new(b'x').unwrap());
        assert_eq!((i.get(), d.get(), h.get(), q.get(), c.get()), (4343, 3.625, -232, 1 << 33, b'x'));
        run(m, shv01_set_raw_values, (i.clone(), d.clone(), h.clone(), q.clone(), c.clone()));
        assert_eq!((i.get(), d.get(), h.get(), q.get(), c.get()), (24234, -4.25, 234, 1 << 34, b'y'));
    }

    /// SHV-02 and SHV-09 (`test_getobj_getlock`): a `Value`'s lock is a recursive lock
    /// (CPython's default `RLock`), the same one through every clone and in a child.
    fn shv_02_value_lock_is_a_shared_rlock(m) {
        let v = Value::new(5i32).unwrap();
        let lock = v.get_lock();
        lock.acquire().unwrap();
        lock.acquire().unwrap(); // recursive: no deadlock
        assert_eq!(lock.count(), 2);
        assert!(v.clone().get_lock().locked());
        assert_eq!(v.get(), 5); // the holder reads through its own lock
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(!v.get_lock().try_acquire().unwrap());
                assert!(matches!(v.get_lock().release(), Err(Error::NotOwner)));
            });
        });
        run(m, value_lock_is_held_elsewhere, (v.clone(),));
        lock.release().unwrap();
        lock.release().unwrap();
        assert!(!lock.locked());
    }

    /// SHV-06 (`test_getobj_getlock_obj`): SHV-02 for `Array`.
    fn shv_06_array_lock_is_a_shared_rlock(m) {
        let arr = Array::from_slice(&[1, 2]).unwrap();
        let _outer = arr.get_lock().lock().unwrap();
        let _inner = arr.get_lock().lock().unwrap();
        assert_eq!(arr.get_lock().count(), 2);
        arr.set(0, 3).unwrap();
        run(m, array_lock_is_held_elsewhere, (arr.clone(),));
        assert_eq!(arr.to_vec(), [3, 2]);
    }

    /// SHV-04 (`test_array`): indexing, a slice, a slice assignment (`arr[4:8] = [1, 2, 3, 4]`
    /// is `lock()?[4..8].copy_from_slice(..)`), and the child's prefix sums.
    fn shv_04_array(m) {
        let arr = Array::from_slice(&SEQ).unwrap();
        let mut seq = SEQ.to_vec();
        assert_eq!(arr.len(), seq.len());
        assert_eq!(arr.get(3), Some(seq[3]));
        assert_eq!(arr.to_vec()[2..7], seq[2..7]);
        arr.lock().unwrap()[4..8].copy_from_slice(&[1, 2, 3, 4]);
        seq[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(arr.to_vec(), seq);
        for i in 1..seq.len() {
            seq[i] += seq[i - 1];
        }
        run(m, prefix_sums, (arr.clone(),));
        assert_eq!(arr.to_vec(), seq);
        assert_eq!(arr.to_vec(), [680, 1306, 2240, 3061, 3062, 3064, 3067, 3071, 3785, 4616]);
    }

    /// SHV-04 (`test_rawarray`): the same for `RawArray`.
    fn shv_04_rawarray(m) {
        let arr = RawArray::from_slice(&SEQ).unwrap();
        assert_eq!(arr.len(), 10);
        assert_eq!(arr.get(3), Some(821));
        assert_eq!(arr.to_vec()[2..7], SEQ[2..7]);
        for (i, x) in [1, 2, 3, 4].into_iter().enumerate() {
            arr.set(4 + i, x).unwrap();
        }
        run(m, raw_prefix_sums, (arr.clone(),));
        assert_eq!(arr.to_vec(), [680, 1306, 2240, 3061, 3062, 3064, 3067, 3071, 3785, 4616]);
    }

    /// SHV-07 (`test_sharedctypes`, `lock=True`): a child doubles ints, a double, a long
    /// long, a structure's fields, a double array and a char array's value.
    fn shv_07_sharedctypes_synchronized(m) {
        let x = Value::new(7i32).unwrap();
        let y = Value::new(1.0f64 / 3.0).unwrap();
        let z = Value::new(1i64 << 33).unwrap();
        let rec = Value::new(Foo { x: 3, y: 2.0, ..Foo::default() }).unwrap();
        let arr = Array::from_iter((0..10).map(f64::from)).unwrap();
        let string = Array::<u8>::new(20).unwrap();
        string.set_value(b"hello").unwrap();
        run(m, double, (x.clone(), y.clone(), z.clone(), rec.clone(), arr.clone(), string.clone()));
        assert_eq!(x.get(), 14);
        assert_close(y.get(), 2.0 / 3.0);
        assert_eq!(z.get(), 1 << 34);
        assert_eq!(rec.get().x, 6);
        assert_close(rec.get().y, 4.0);
        assert_eq!(rec.get().z, 0);
        for i in 0..10 {
            assert_close(arr.get(i).unwrap(), i as f64 * 2.0);
        }
        assert_eq!(string.value(), b"hellohello");
    }

    /// SHV-07 (`test_synchronize` is the above; this is `lock=False`): the raw objects.
    fn shv_07_sharedctypes_raw(m) {
        let x = RawValue::new(7i32).unwrap();
        let y = RawValue::new(1.0f64 / 3.0).unwrap();
        let z = RawValue::new(1i64 << 33).unwrap();
        let rec = RawValue::new(Foo { x: 3, y: 2.0, ..Foo::default() }).unwrap();
        let arr = RawArray::from_iter((0..10).map(f64::from)).unwrap();
        let string = RawArray::<u8>::new(20).unwrap();
        string.set_value(b"hello").unwrap();
        run(m, double_raw, (x.clone(), y.clone(), z.clone(), rec.clone(), arr.clone(), string.clone()));
        assert_eq!(x.get(), 14);
        assert_close(y.get(), 2.0 / 3.0);
        assert_eq!(z.get(), 1 << 34);
        assert_eq!(rec.get().x, 6);
        assert_close(rec.get().y, 4.0);
        assert_eq!(rec.get().z, 0);
        for i in 0..10 {
            assert_close(arr.get(i).unwrap(), i as f64 * 2.0);
        }
        assert_eq!(string.value(), b"hellohello");
    }

    /// SHV-13 across processes: the child's `with v.get_lock(): v.value += 1` takes 5 to 6.
    fn shv_13_increment_under_get_lock_in_a_child(m) {
        let v = Value::new(5i32).unwrap();
        run(m, increment_under_get_lock, (v.clone(),));
        assert_eq!(v.get(), 6);
    }

    /// Two threads and a child add to one `Value<i64>` under its lock, by `lock()` and by
    /// `get_lock()` with `get`/`set`: no update is lost.
    fn value_increments_from_threads_and_a_child_are_exact(m) {
        let v = Value::new(0i64).unwrap();
        let mut p = get_context(m).process(increment_many, (v.clone(),));
        p.start().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| increment_many(v.clone()).unwrap());
            s.spawn(|| increment_many_by_get_lock(v.clone()).unwrap());
        });
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(v.get(), 3 * INCREMENTS);
    }

    /// A child dies holding a `Value`'s guard: the next `lock()` is told (`OwnerDied`, with a
    /// valid guard to the child's write); after that the lock is healthy again.
    fn value_lock_reports_a_dead_holder(m) {
        let v = Value::new(0i64).unwrap();
        let mut p = get_context(m).process(die_holding_value, (v.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(7));
        let guard = match v.lock() {
            Err(died) => died.into_inner(),
            Ok(_) => panic!("the dead holder was not reported"),
        };
        assert_eq!(*guard, 42);
        drop(guard);
        assert!(v.lock().is_ok());
        v.set(43);
        assert_eq!(v.get(), 43);
    }

    /// A child dies holding an `Array`'s guard: `get`, `set` and `to_vec` go on silently.
    fn array_get_goes_on_after_a_dead_holder(m) {
        let arr = Array::<u32>::new(3).unwrap();
        let mut p = get_context(m).process(die_holding_array, (arr.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(7));
        assert_eq!(arr.get(1), Some(42));
        arr.set(2, 5).unwrap();
        assert_eq!(arr.to_vec(), [0, 42, 5]);
        assert!(!arr.get_lock().locked());
        assert!(arr.lock().is_ok());
    }

    /// Zero-length arrays are allowed, and travel.
    fn empty_arrays(m) {
        let arr = Array::<i32>::new(0).unwrap();
        let raw = RawArray::<i32>::from_slice(&[]).unwrap();
        assert!(matches!(arr.set(0, 1), Err(Error::IndexOutOfRange { index: 0, len: 0 })));
        run(m, check_empty, (arr, raw));
    }

    /// Elements aligned past their state (128 bytes) land aligned in every process.
    fn over_aligned_elements(m) {
        let v = Value::new(Wide { a: 1, rest: [0; 120] }).unwrap();
        let raw = RawArray::from_iter((0..3).map(|i| Wide { a: i, rest: [i as u8; 120] })).unwrap();
        assert!(raw.as_ptr().is_aligned());
        run(m, check_and_bump_wide, (v.clone(), raw.clone()));
        assert_eq!(v.get().a, 2);
        assert_eq!(raw.get(1), Some(Wide { a: 9, rest: [9; 120] }));
    }

    /// A large array (800 KB) reaches the child whole.
    fn large_array_in_a_child(m) {
        let arr = Array::from_iter((0..100_000).map(f64::from)).unwrap();
        let out = RawValue::new(0.0).unwrap();
        run(m, sum_big, (arr, out.clone()));
        assert_eq!(out.get(), 99_999.0 * 100_000.0 / 2.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Cases without a child.

/// SHV-05 (`test_array_from_size`): `Array('i', 10)` three times is zero-filled each time;
/// `arr[:] = range(10)` is `lock()?.copy_from_slice(..)`.
#[test]
fn shv_05_array_from_size() {
    let range: Vec<i32> = (0..10).collect();
    for _ in 0..3 {
        let arr = Array::<i32>::new(10).unwrap();
        assert_eq!(arr.len(), 10);
        assert_eq!(arr.to_vec(), [0; 10]);
        arr.lock().unwrap().copy_from_slice(&range);
        assert_eq!(arr.to_vec(), range);
        let raw = RawArray::<i32>::new(10).unwrap();
        assert_eq!(raw.to_vec(), [0; 10]);
        // SAFETY: no other thread or process has `raw`.
        unsafe { raw.as_mut_slice() }.copy_from_slice(&range);
        assert_eq!(raw.to_vec(), range);
    }
}

/// SHV-08 (`test_copy`): a copy keeps its values when the original is zeroed.
/// `sharedctypes.copy(foo)` is `RawValue::new(foo.get())`.
#[test]
fn shv_08_copy_is_independent() {
    let rec = Value::new(Foo { x: 2, y: 5.0, z: 1 << 33, _pad: 0 }).unwrap();
    let bar = RawValue::new(rec.get()).unwrap();
    rec.set(Foo::default());
    assert_eq!(rec.get(), Foo::default());
    assert_eq!((bar.get().x, bar.get().y, bar.get().z), (2, 5.0, 1 << 33));
}

/// SHV-11: `arr[-1]` is `get(len - 1)`, `arr[::2]` is an iterator over `to_vec()`; `arr[10]`
/// read or written is `None` / `IndexOutOfRange` (`IndexError('invalid index')`). A slice
/// assignment of the wrong length is std's `copy_from_slice` on the guard (which panics, as
/// slices do), and `Array('i', -1)` cannot be written (`usize`).
#[test]
fn shv_11_array_indexing() {
    let arr = Array::from_iter(0..10).unwrap();
    assert_eq!(arr.get(arr.len() - 1), Some(9));
    assert_eq!(arr.to_vec().into_iter().step_by(2).collect::<Vec<_>>(), [0, 2, 4, 6, 8]);
    assert_eq!(arr.get(10), None);
    assert_eq!(arr.get(usize::MAX), None);
    assert!(matches!(arr.set(10, 0), Err(Error::IndexOutOfRange { index: 10, len: 10 })));
    let raw = RawArray::from_iter(0..10).unwrap();
    assert_eq!(raw.get(9), Some(9));
    assert_eq!(raw.get(10), None);
    assert!(matches!(raw.set(10, 0), Err(Error::IndexOutOfRange { index: 10, len: 10 })));
    assert_eq!(raw.to_vec(), arr.to_vec());
}

/// SHV-12: char arrays. `.value` stops at the first NUL, `.raw` is every byte; a value or raw
/// longer than the array is `InvalidArgument` (`ValueError('byte string too long')`) and
/// changes nothing. (`str` instead of bytes is a type error at compile time.)
#[test]
fn shv_12_char_arrays() {
    let arr = Array::<u8>::new(10).unwrap();
    arr.set_value(b"hello").unwrap();
    assert_eq!(arr.value(), b"hello");
    assert_eq!(arr.raw(), b"hello\0\0\0\0\0");
    assert_eq!(arr.len(), 10);
    let hi = Array::from_slice(b"hi\0there").unwrap();
    assert_eq!(hi.value(), b"hi");
    assert_eq!(hi.raw(), b"hi\0there");
    assert!(matches!(arr.set_value(b"hello world"), Err(Error::InvalidArgument(_))));
    assert!(matches!(arr.set_raw(b"hello world"), Err(Error::InvalidArgument(_))));
    assert_eq!(arr.raw(), b"hello\0\0\0\0\0");
    arr.set_value(b"0123456789").unwrap(); // exactly full: no NUL
    assert_eq!(arr.value(), b"0123456789");
    arr.set_value(b"ab").unwrap(); // one NUL after, the rest left
    assert_eq!(arr.raw(), b"ab\x003456789");

    let raw = RawArray::<u8>::new(10).unwrap();
    raw.set_value(b"hello").unwrap();
    assert_eq!(raw.value(), b"hello");
    assert_eq!(raw.raw(), b"hello\0\0\0\0\0");
    assert!(matches!(raw.set_value(b"hello world"), Err(Error::InvalidArgument(_))));
    assert_eq!(RawArray::from_slice(b"hi\0there").unwrap().value(), b"hi");
}

/// SHV-13: `with v.get_lock(): v.value += 1` takes 5 to 6; so does `*v.lock()? += 1`.
#[test]
fn shv_13_increment_under_the_lock() {
    let v = Value::new(5i32).unwrap();
    {
        let _guard = v.get_lock().lock().unwrap();
        v.set(v.get() + 1);
        assert_eq!(v.get_lock().count(), 1);
    }
    assert_eq!(v.get(), 6);
    *v.lock().unwrap() += 1;
    assert_eq!(v.get(), 7);
    assert!(!v.get_lock().locked());
}

/// Alignment beyond a page cannot be placed the same in every process: an error, not a
/// misaligned element.
#[test]
fn over_page_alignment_is_an_error() {
    #[repr(C, align(8192))]
    #[derive(Clone, Copy)]
    struct Huge([u8; 8192]);
    // SAFETY: bytes only, no padding.
    unsafe impl Pod for Huge {}
    assert!(matches!(Value::new(Huge([0; 8192])), Err(Error::InvalidArgument(_))));
    assert!(matches!(RawArray::<Huge>::new(1), Err(Error::InvalidArgument(_))));
    assert!(matches!(Array::<u64>::new(usize::MAX / 4), Err(Error::InvalidArgument(_))));
}

/// `Debug` shows the contents, and never waits or panics.
#[test]
fn debug_shows_the_contents() {
    let v = Value::new(0.5f64).unwrap();
    assert_eq!(format!("{v:?}"), "Value(0.5)");
    let guard = v.lock().unwrap();
    assert_eq!(format!("{v:?}"), "Value(<locked>)");
    assert_eq!(format!("{guard:?}"), "ValueGuard(0.5)");
    drop(guard);
    let arr = Array::from_slice(&[1, 2]).unwrap();
    assert_eq!(format!("{arr:?}"), "Array([1, 2])");
    let _held = arr.get_lock().lock().unwrap();
    assert_eq!(format!("{arr:?}"), "Array([1, 2])"); // our own lock: readable
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(format!("{arr:?}"), "Array(<locked>)"));
    });
    assert_eq!(format!("{:?}", RawValue::new(3u8).unwrap()), "RawValue(3)");
    assert_eq!(format!("{:?}", RawArray::from_slice(&[1, 2]).unwrap()), "RawArray([1, 2])");
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Value<f64>>();
    check::<Array<Foo>>();
    check::<RawValue<[u8; 3]>>();
    check::<RawArray<i16>>();
}

/// Raw copies of types with odd shapes (3 bytes, 6 bytes, 24 bytes) round-trip.
#[test]
fn raw_values_of_every_shape() {
    let a = RawValue::new([1u8, 2, 3]).unwrap();
    a.set([4, 5, 6]);
    assert_eq!(a.get(), [4, 5, 6]);
    let b = RawArray::from_slice(&[[1u16, 2, 3], [4, 5, 6]]).unwrap();
    b.set(1, [7, 8, 9]).unwrap();
    assert_eq!(b.to_vec(), [[1, 2, 3], [7, 8, 9]]);
    let c = RawValue::new(Foo { x: -1, _pad: 0, y: 0.25, z: i64::MIN }).unwrap();
    assert_eq!(c.get(), Foo { x: -1, _pad: 0, y: 0.25, z: i64::MIN });
}

/// A guard holder that releases its level by hand (`get_lock().release()`) lets another
/// thread take the lock, but not the data: that thread waits until the guard is gone, so
/// the guard's `&mut` is never aliased.
#[test]
fn a_lock_released_under_a_guard_still_guards_the_data() {
    let v = Value::new(1i32).unwrap();
    let mut guard = v.lock().unwrap();
    v.get_lock().release().unwrap();
    std::thread::scope(|s| {
        let setter = s.spawn(|| v.set(2));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!setter.is_finished(), "set() did not wait for the guard");
        assert_eq!(*guard, 1);
        *guard = 5;
        drop(guard);
        setter.join().unwrap();
    });
    assert_eq!(v.get(), 2);
    assert!(!v.get_lock().locked());
}

/// 300 create/drop cycles of each type leave no descriptor, no mapping and nothing in
/// `/dev/shm`.
#[test]
fn create_drop_cycles_leak_nothing() {
    fn ours(line: &str) -> bool {
        line.contains("memfd:multiprocess-") || line.contains("/dev/shm/")
    }
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| ours(l)).count();
    // The first object makes the arena this process keeps (one descriptor, a few windows).
    drop((Value::new(0).unwrap(), Array::from_slice(&[0; 3]).unwrap()));
    let fds_before = multiprocess::__private::open_fds().unwrap();
    let maps_before = maps();
    for i in 0..300 {
        let v = Value::new(i).unwrap();
        let a = Array::from_slice(&[i; 3]).unwrap();
        let rv = RawValue::new(i).unwrap();
        let ra = RawArray::from_slice(&[i; 3]).unwrap();
        let (v2, a2) = (v.clone(), a.clone());
        assert_eq!(v2.get() + a2.get(2).unwrap() + rv.get() + ra.get(1).unwrap(), 4 * i);
        drop(v2.get_lock().clone());
    }
    let shm_links = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target.starts_with("/dev/shm"))
        .count();
    assert_eq!(shm_links, 0);
    if common::alone_in_process() {
        assert_eq!(multiprocess::__private::open_fds().unwrap(), fds_before);
        assert_eq!(maps(), maps_before);
    }
}

#[test]
#[should_panic(expected = "already borrowed")]
fn value_get_under_its_own_guard_panics() {
    let v = Value::new(1u32).unwrap();
    let _guard = v.lock().unwrap();
    v.get();
}

#[test]
#[should_panic(expected = "already borrowed")]
fn value_set_under_its_own_guard_panics() {
    let v = Value::new(1u32).unwrap();
    let _guard = v.lock().unwrap();
    v.set(2);
}

#[test]
#[should_panic(expected = "already borrowed")]
fn value_lock_under_its_own_guard_panics() {
    let v = Value::new(1u32).unwrap();
    let _guard = v.lock().unwrap();
    let clone = v.clone();
    let _again = clone.lock();
}

#[test]
#[should_panic(expected = "already borrowed")]
fn array_get_under_its_own_guard_panics() {
    let arr = Array::from_slice(&[1, 2]).unwrap();
    let _guard = arr.lock().unwrap();
    arr.get(0);
}

#[test]
#[should_panic(expected = "already borrowed")]
fn array_to_vec_under_its_own_guard_panics() {
    let arr = Array::from_slice(&[1, 2]).unwrap();
    let _guard = arr.lock().unwrap();
    arr.to_vec();
}

#[test]
#[should_panic(expected = "already borrowed")]
fn char_array_value_under_its_own_guard_panics() {
    let arr = Array::from_slice(b"hi").unwrap();
    let _guard = arr.lock().unwrap();
    arr.value();
}

/// The panic leaves the lock free: the guard unwinds, and the panicking call gave back what
/// it took.
#[test]
fn the_misuse_panic_leaves_the_lock_free() {
    let v = Value::new(1u32).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = v.lock().unwrap();
        v.set(2);
    }));
    assert!(caught.is_err());
    assert!(!v.get_lock().locked());
    v.set(3);
    assert_eq!(v.get(), 3);
}
