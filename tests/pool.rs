//! Pool: CONFORMANCE.md section 15 (POOL-*), and the section 16 cases (PPE-*) whose
//! behaviour a Pool shares with `ProcessPoolExecutor`, which has no API of its own here
//! (`submit` is `apply_async`, `Executor.map` is `imap` or `map_async`, `shutdown` is
//! `close` + `join`). Every case starts a pool, so every case runs under every start method.
//! Where Rust needs another shape than Python, the case's doc comment says how it was
//! translated; where we deliberately differ, it says so.
//!
//! The failure cases that `tests/pool_failures.rs` already asserts (a panic, a worker killed
//! by its task or from outside, `exit` and `abort`, the task timeout, a failing initializer,
//! `maxtasksperchild`, terminating a busy pool) are not repeated here: the ledger points there.
//!
//! Translations used throughout:
//! - Python's exceptions raised by a task are panics: the task fails with
//!   `Error::TaskPanicked { message }`, the message with its location. An error the task
//!   *returns* (`Result<_, E>`) keeps its type (POOL-20).
//! - An input iterable that raises (`exception_throwing_generator`) is an iterator that
//!   panics with a `SayWhenError` payload (raised with `resume_unwind`, so no panic hook
//!   prints it): like the Python exception, it surfaces in the caller, from the call that
//!   pulls the failing item.
//! - Pickling failures are serde failures: a type whose `Serialize` or `Deserialize` fails,
//!   exits or crashes, on the side where it runs (arguments are encoded in the parent and
//!   decoded in the worker; results the other way round).
mod common;
use common::{assert_prompt, children_of, join_ok, pid_alive, start, timed};
use multiprocess::*;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The probes' timeout: 0.2 s, which must take ≥ 0.19 s and ≤ 1 s.
const T02: Duration = Duration::from_millis(200);
/// How long a test waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A pool of `n` workers started by `m`.
fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(m).build().unwrap()
}

/// Closes and joins `p`, which must not take long.
fn close_join(p: &Pool) {
    p.close();
    let (r, took) = timed(|| p.join());
    r.unwrap();
    assert!(took < LONG, "join took {took:?}");
}

/// Polls `f` until it is true, for [`LONG`] at most.
fn eventually(f: impl FnMut() -> bool) -> bool {
    common::eventually_within(LONG, f)
}

/// The squares of `0..n`.
fn squares(n: i64) -> Vec<i64> {
    (0..n).map(|x| x * x).collect()
}

/// An `Err` for a child to return, with what went wrong.
fn fail<T>(what: String) -> Result<T> {
    Err(Error::InvalidArgument(what))
}

/// CPython's `sqr(x, wait=0.0)`, without the wait.
fn sqr(x: i64) -> i64 {
    x * x
}

/// CPython's `sqr(x, wait)`: sleeps `wait_ms`, then squares.
fn sqr_wait(x: i64, wait_ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(wait_ms));
    x * x
}

fn mul(x: i64, y: i64) -> i64 {
    x * y
}

/// Python's `pow` on small integers; wrapping where Python would grow a big integer (the
/// expected values are computed with the same function).
fn pow(base: u64, exp: u32) -> u64 {
    base.wrapping_pow(exp)
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid() -> u32 {
    std::process::id()
}

/// The worker's pid, whatever the item (to see which worker ran which item).
fn pid_of(_x: u32) -> u32 {
    std::process::id()
}

/// CPython's `raise KeyError('key')` in a task.
fn raise_key_error() -> u32 {
    panic!("key")
}

/// A real segmentation fault: a read from a page mapped with no access.
fn segfault() -> ! {
    // SAFETY: an anonymous private mapping of one page, owned by nobody else.
    let page = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: deliberately not: the page is PROT_NONE, so this read faults, which is the point.
    unsafe { std::ptr::read_volatile(page.cast::<u8>()) };
    unreachable!("the read faults")
}

// ---------------------------------------------------------------------------------------------
// The input iterables that raise (CPython's `exception_throwing_generator` and
// `SpecialIterable`).

/// CPython's `SayWhenError`: the payload the failing iterators panic with.
#[derive(Debug)]
struct SayWhenError;

/// Raises `SayWhenError` as a panic, without the panic hook (nothing printed).
fn say_when() -> ! {
    std::panic::resume_unwind(Box::new(SayWhenError))
}

/// CPython's `exception_throwing_generator(total, when)`: yields `0..total`, but raises
/// `SayWhenError` instead of yielding `when` (at once if `when` is -1); finished after it
/// raised, as a Python generator is.
struct ExceptionThrowingGenerator {
    next: i64,
    total: i64,
    when: i64,
    finished: bool,
}

fn exception_throwing_generator(total: i64, when: i64) -> ExceptionThrowingGenerator {
    ExceptionThrowingGenerator { next: 0, total, when, finished: false }
}

impl Iterator for ExceptionThrowingGenerator {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        if self.finished || self.next >= self.total {
            self.finished = true;
            return None;
        }
        if self.when == -1 || self.next == self.when {
            self.finished = true;
            say_when();
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

/// CPython's `SpecialIterable`: one item long by its length, but `__next__` always raises.
struct SpecialIterable;

impl Iterator for SpecialIterable {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        say_when()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// Whether `f` panicked with `SayWhenError` (any other panic goes on).
fn raises_say_when<R>(f: impl FnOnce() -> R) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => false,
        Err(payload) if payload.is::<SayWhenError>() => true,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// What one `next()` of a result iterator gave.
#[derive(Debug, PartialEq)]
enum Step {
    Value(i64),
    Raised,
}

/// Calls `next()` on `it` until it ends (at most 100 times), noting each value and each
/// `SayWhenError` raised through it. A task's error fails the test.
fn drive(mut it: impl Iterator<Item = Result<i64>>) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..100 {
        match catch_unwind(AssertUnwindSafe(|| it.next())) {
            Ok(None) => return steps,
            Ok(Some(Ok(v))) => steps.push(Step::Value(v)),
            Ok(Some(Err(e))) => panic!("a task failed: {e:?} after {steps:?}"),
            Err(payload) if payload.is::<SayWhenError>() => steps.push(Step::Raised),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
    panic!("the iterator did not end: {steps:?}")
}

/// The values among `steps`, and how many times `SayWhenError` was raised.
fn values_and_raises(steps: &[Step]) -> (Vec<i64>, usize) {
    let values = steps
        .iter()
        .filter_map(|s| match s {
            Step::Value(v) => Some(*v),
            Step::Raised => None,
        })
        .collect();
    (values, steps.iter().filter(|s| **s == Step::Raised).count())
}

/// POOL-11's cases: (total, when, chunksize) and the results CPython yields before it raises
/// `SayWhenError` (the error surfaces at the start of the failing chunk).
const IMAP_FAILURES: [(i64, i64, usize, i64); 5] =
    [(1, -1, 1, 0), (1, -1, 1, 0), (10, 3, 1, 3), (20, 7, 2, 6), (20, 7, 4, 4)];

/// Arguments that count how often they are serialized: a value whose serializing has an
/// effect (a manager proxy pins its object on the server for the trip) must be serialized once
/// per task, short or long.
struct Counted(Vec<u64>);

thread_local! {
    /// Per thread: under plain `cargo test` the start methods' tests run side by side. A
    /// pool's submit serializes on the caller's thread.
    static SERIALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn serialized() -> usize {
    SERIALIZED.with(std::cell::Cell::get)
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZED.with(|n| n.set(n.get() + 1));
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Counted, D::Error> {
        Vec::deserialize(d).map(Counted)
    }
}

fn sum_counted(c: Counted) -> u64 {
    c.0.iter().sum()
}

// ---------------------------------------------------------------------------------------------
// POOL-01 to POOL-06: apply, map, starmap, map_async (CPython's `_TestPool`, on a `Pool(4)`).

start_methods! {
    /// Each task's arguments are serialized once, whatever their length (a second try would
    /// repeat a proxy's pin on its server, and leak it).
    fn arguments_are_serialized_once(m) {
        let p = pool(m, 1);
        for len in [1u64, 2, 64, 1000] {
            let before = serialized();
            let numbers: Vec<u64> = (1..=len).map(|x| x << 40).collect();
            let want: u64 = numbers.iter().sum();
            assert_eq!(p.submit(sum_counted, (Counted(numbers.clone()),)).unwrap().get().unwrap(), want);
            assert_eq!(p.apply(sum_counted, (Counted(numbers),)).unwrap(), want);
            let after = serialized();
            assert_eq!(after - before, 2, "{len} numbers: two tasks, serialized {} times", after - before);
        }
        let items: Vec<(Counted,)> = (0..5).map(|x| (Counted(vec![x; 40]),)).collect();
        let before = serialized();
        assert_eq!(p.starmap(sum_counted, items).unwrap(), (0..5).map(|x| x * 40).collect::<Vec<_>>());
        assert_eq!(serialized() - before, 5);
    }

    /// POOL-01: `apply(sqr, (5,))` is 25; `apply(sqr, (), {'x': 3})` is 9 (Rust has no
    /// keyword arguments: the tuple `(3,)`).
    fn pool_01_apply(m) {
        let p = pool(m, 4);
        assert_eq!(p.apply(sqr, (5,)).unwrap(), 25);
        assert_eq!(p.apply(sqr, (3,)).unwrap(), 9);
        close_join(&p);
    }

    /// POOL-02: `map(sqr, range(10))` is the ten squares; `map(sqr, range(100), chunksize=20)`
    /// all 100, in order.
    fn pool_02_map(m) {
        let p = pool(m, 4);
        assert_eq!(p.map(sqr, 0..10).unwrap(), squares(10));
        assert_eq!(p.map_chunked(sqr, 0..100, 20).unwrap(), squares(100));
        close_join(&p);
    }

    /// POOL-03: `starmap(mul, zip(range(10), range(9, -1, -1)))`, 100 such tuples with
    /// chunksize 20 (`starmap_async_chunked(..).get()`: there is no blocking `starmap` with a
    /// chunk size), and `starmap_async(..).get()`: as `itertools.starmap`.
    fn pool_03_starmap(m) {
        let p = pool(m, 4);
        let tuples: Vec<(i64, i64)> = (0..10).zip((0..10).rev()).collect();
        let expected: Vec<i64> = tuples.iter().map(|&(x, y)| mul(x, y)).collect();
        assert_eq!(p.starmap(mul, tuples.clone()).unwrap(), expected);
        let tuples: Vec<(i64, i64)> = (0..100).zip((0..100).rev()).collect();
        let expected: Vec<i64> = tuples.iter().map(|&(x, y)| mul(x, y)).collect();
        assert_eq!(p.starmap_async_chunked(mul, tuples.clone(), 20).unwrap().get().unwrap(), expected);
        assert_eq!(p.starmap_async(mul, tuples).unwrap().get().unwrap(), expected);
        close_join(&p);
    }

    /// POOL-04: `map_async(sqr, range(10)).get()` is the squares.
    fn pool_04_map_async(m) {
        let p = pool(m, 4);
        assert_eq!(p.map_async(sqr, 0..10).unwrap().get().unwrap(), squares(10));
        close_join(&p);
    }

    /// POOL-06: `map_async(sqr, [], chunksize=1).get(timeout=0.1)` is `[]` at once: an empty
    /// input does not stall.
    fn pool_06_empty_map_async_does_not_stall(m) {
        let p = pool(m, 4);
        let r = p.map_async_chunked(sqr, Vec::<i64>::new(), 1).unwrap();
        let (got, took) = timed(|| r.get_timeout(Duration::from_millis(100)));
        assert_eq!(got.unwrap(), Vec::<i64>::new());
        assert_prompt(took);
        close_join(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-07, POOL-11, POOL-13: input iterables that raise.

start_methods! {
    /// POOL-07: `map` over an input that raises `SayWhenError` at its first item (twice),
    /// at item 3, or on every `next` while claiming one item: the error comes out of `map`
    /// each time, as itself (not as a task's error), and the pool stays usable.
    fn pool_07_map_input_panics(m) {
        let p = pool(m, 4);
        assert!(raises_say_when(|| p.map_chunked(sqr, exception_throwing_generator(1, -1), 1)));
        assert!(raises_say_when(|| p.map_chunked(sqr, exception_throwing_generator(1, -1), 1)));
        assert!(raises_say_when(|| p.map_chunked(sqr, exception_throwing_generator(10, 3), 1)));
        assert!(raises_say_when(|| p.map_chunked(sqr, SpecialIterable, 1)));
        assert!(raises_say_when(|| p.map_chunked(sqr, SpecialIterable, 1)));
        assert_eq!(p.map(sqr, 0..10).unwrap(), squares(10));
        close_join(&p);
    }

    /// POOL-11, what holds here: `imap` over an input that raises `SayWhenError` (at once;
    /// at 3 with chunksize 1; at 7 with chunksize 2 and 4) raises it exactly once through
    /// `next()`, and yields, in order, exactly the results CPython yields before its error
    /// (those of the chunks before the failing one), then ends; the pool stays usable. Where
    /// the error comes among them differs: see
    /// `pool_11_imap_input_panic_at_its_position`.
    fn pool_11_imap_input_panics(m) {
        let p = pool(m, 4);
        for (total, when, chunksize, before) in IMAP_FAILURES {
            let steps = drive(p.imap_chunked(sqr, exception_throwing_generator(total, when), chunksize).unwrap());
            let (values, raised) = values_and_raises(&steps);
            assert_eq!(raised, 1, "({total}, {when}, {chunksize}): {steps:?}");
            assert_eq!(values, squares(before), "({total}, {when}, {chunksize}): {steps:?}");
        }
        let all: Vec<i64> = p.imap(sqr, 0..10).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(all, squares(10));
        close_join(&p);
    }

    /// POOL-12: `sorted(imap_unordered(sqr, range(10)))`, and 1000 items with chunksize
    /// 100, are the squares.
    fn pool_12_imap_unordered(m) {
        let p = pool(m, 4);
        let mut got: Vec<i64> = p.imap_unordered(sqr, 0..10).unwrap().collect::<Result<_>>().unwrap();
        got.sort();
        assert_eq!(got, squares(10));
        let mut got: Vec<i64> = p.imap_unordered_chunked(sqr, 0..1000, 100).unwrap().collect::<Result<_>>().unwrap();
        got.sort();
        assert_eq!(got, squares(1000));
        close_join(&p);
    }

    /// POOL-13: `imap_unordered` over the failing inputs of POOL-11: `SayWhenError` is
    /// raised (exactly once), and every value yielded is a distinct valid square. Beyond
    /// CPython's assertion: the values are exactly those of the chunks before the failing one
    /// (none is lost), and the pool stays usable.
    fn pool_13_imap_unordered_input_panics(m) {
        let p = pool(m, 4);
        for (total, when, chunksize, before) in IMAP_FAILURES {
            let steps =
                drive(p.imap_unordered_chunked(sqr, exception_throwing_generator(total, when), chunksize).unwrap());
            let (values, raised) = values_and_raises(&steps);
            assert_eq!(raised, 1, "({total}, {when}, {chunksize}): {steps:?}");
            let distinct: BTreeSet<i64> = values.iter().copied().collect();
            assert_eq!(distinct.len(), values.len(), "a value twice: {steps:?}");
            assert_eq!(distinct, squares(before).into_iter().collect(), "({total}, {when}, {chunksize}): {steps:?}");
        }
        let mut all: Vec<i64> = p.imap_unordered(sqr, 0..10).unwrap().collect::<Result<_>>().unwrap();
        all.sort();
        assert_eq!(all, squares(10));
        close_join(&p);
    }
}

/// POOL-11, CPython's order: the results of the chunks before the failing one come first,
/// then `SayWhenError` (at the start of the failing chunk's results).
fn pool_11_at_its_position(m: StartMethod) {
    let p = pool(m, 4);
    for (total, when, chunksize, before) in IMAP_FAILURES {
        let steps = drive(p.imap_chunked(sqr, exception_throwing_generator(total, when), chunksize).unwrap());
        let mut expected: Vec<Step> = squares(before).into_iter().map(Step::Value).collect();
        expected.push(Step::Raised);
        assert_eq!(steps, expected, "({total}, {when}, {chunksize})");
    }
}

/// POOL-11 as CPython has it: the input's panic comes out after the results of the items
/// before it. (It once came out of the first `next()` that pulled the failing item.)
#[test]
fn pool_11_imap_input_panic_at_its_position() {
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        common::run_case(m, pool_11_at_its_position);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-08 to POOL-10: apply_async, get with a timeout, imap.

start_methods! {
    /// POOL-08: `apply_async(sqr, (7, 0.1)).get()` is 49, after the task's 0.1 s.
    fn pool_08_apply_async(m) {
        let p = pool(m, 4);
        let (r, took) = timed(|| p.apply_async(sqr_wait, (7, 100)).unwrap().get());
        assert_eq!(r.unwrap(), 49);
        assert!(took >= Duration::from_millis(90) && took < LONG, "{took:?}");
        close_join(&p);
    }

    /// POOL-09: `Pool(3).apply_async(sqr, (6, 30.1)).get(timeout=0.2)` fails with
    /// `TimeoutError` (`Error::Timeout`) after the 0.2 s; the task goes on running (the pool
    /// is dropped, which terminates it).
    fn pool_09_get_timeout(m) {
        let p = pool(m, 3);
        let r = p.apply_async(sqr_wait, (6, 30_100)).unwrap();
        let (got, took) = timed(|| r.get_timeout(T02));
        assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
        common::assert_took(took, T02);
        assert!(!r.ready());
    }

    /// POOL-10: `imap(sqr, range(10))`: ten `next()` give the squares in order, the next one
    /// `StopIteration` (`None`, and again `None`); 1000 items with chunksize 100 likewise.
    fn pool_10_imap(m) {
        let p = pool(m, 4);
        let mut it = p.imap(sqr, 0..10).unwrap();
        for i in 0..10 {
            assert_eq!(it.next().unwrap().unwrap(), i * i);
        }
        assert!(it.next().is_none());
        assert!(it.next().is_none());
        let mut it = p.imap_chunked(sqr, 0..1000, 100).unwrap();
        for i in 0..1000 {
            assert_eq!(it.next().unwrap().unwrap(), i * i);
        }
        assert!(it.next().is_none());
        drop(it);
        close_join(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-14 to POOL-18: making, terminating, and scoping a pool.

start_methods! {
    /// POOL-14: `Pool(0)` is a `ValueError('Number of processes must be at least 1')`
    /// (`Pool(-1)` cannot be written: the count is a `usize`); `Pool(3)` has 3 workers.
    fn pool_14_make_pool(m) {
        for r in [Pool::new(0), Pool::builder().processes(0).start_method(m).build()] {
            match r {
                Err(Error::InvalidArgument(message)) => assert_eq!(message, "Number of processes must be at least 1"),
                other => panic!("{other:?}"),
            }
        }
        let p = pool(m, 3);
        assert_eq!(p.processes(), 3);
        let pids = p.worker_pids();
        assert_eq!(pids.len(), 3);
        assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 3);
        assert!(pids.iter().all(|&pid| pid_alive(pid)), "{pids:?}");
        close_join(&p);
    }

    /// POOL-16: on a `Pool(1)`, `map`, `imap`, `imap_unordered` and `map_async(..).get()` of
    /// an empty input are all empty.
    fn pool_16_empty_iterable(m) {
        let p = pool(m, 1);
        let none = Vec::<i64>::new;
        assert_eq!(p.map(sqr, none()).unwrap(), none());
        assert_eq!(p.imap(sqr, none()).unwrap().collect::<Result<Vec<_>>>().unwrap(), none());
        assert_eq!(p.imap_unordered(sqr, none()).unwrap().collect::<Result<Vec<_>>>().unwrap(), none());
        assert_eq!(p.map_async(sqr, none()).unwrap().get().unwrap(), none());
        close_join(&p);
    }

    /// POOL-17: `with Pool(2) as p: p.map_async(sqr, L).get()` gives the squares; leaving the
    /// block terminates the pool (in Rust the scope's end drops it, which terminates it; here
    /// `terminate()` is called explicitly so that the pool can still be used after), then
    /// `join()` is fine and `map_async` is `ValueError('Pool not running')`.
    fn pool_17_context(m) {
        let p = pool(m, 2);
        assert_eq!(p.map_async(sqr, 0..10).unwrap().get().unwrap(), squares(10));
        let pids = p.worker_pids();
        let (r, took) = timed(|| p.terminate());
        r.unwrap();
        assert_prompt(took);
        p.join().unwrap();
        match p.map_async(sqr, 0..10) {
            Err(e @ Error::PoolNotRunning) => assert_eq!(e.to_string(), "Pool not running"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("map_async on a terminated pool"),
        }
        assert!(pids.iter().all(|&pid| !pid_alive(pid)), "{pids:?}");
        assert!(p.worker_pids().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-19 to POOL-25: errors of tasks and of results.

/// CPython's `raise RuntimeError(123)` in a task: a panic with `123`, on line
/// [`RAISE_123_LINE`].
fn raise_123() -> u32 {
    panic!("123")
}
const RAISE_123_LINE: u32 = line!() - 2;

/// CPython's `RuntimeError('foo')`, as an error a task returns.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RuntimeError(String);

fn return_runtime_error() -> std::result::Result<u32, RuntimeError> {
    Err(RuntimeError("foo".into()))
}

/// CPython's `raise_large_valuerror(wait)`: sleeps `wait` seconds, then raises a 1 MiB
/// message.
fn raise_large_valuerror(wait: u64) -> u32 {
    std::thread::sleep(Duration::from_secs(wait));
    panic!("{}", "x".repeat(MIB))
}

/// A value that cannot be encoded (CPython's test returns a lambda, which cannot be pickled).
#[derive(Debug, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(S::Error::custom("Unencodable cannot be encoded"))
    }
}

fn unencodable() -> Unencodable {
    Unencodable
}

start_methods! {
    /// POOL-19: a task's `RuntimeError(123)` (a panic with 123) is re-raised in the caller:
    /// `TaskPanicked` whose message is the panic's, with the worker's source location (file
    /// and line; CPython's `RemoteTraceback` text has no counterpart). The error of an input
    /// iterable is not wrapped: POOL-07 gets the input's own panic payload.
    fn pool_19_traceback(m) {
        let p = pool(m, 4);
        let r = p.apply_async(raise_123, ()).unwrap();
        for _ in 0..2 {
            match r.get() {
                Err(Error::TaskPanicked { message }) => {
                    assert!(message.starts_with("123 (at "), "{message}");
                    assert!(message.contains(&format!("tests/pool.rs:{RAISE_123_LINE}:")), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        close_join(&p);
    }

    /// POOL-20: a task's error keeps its type: a task returning `Err(RuntimeError("foo"))`
    /// gives exactly that back (a Rust task reports an error by returning it; a panic is
    /// POOL-19's `TaskPanicked`).
    fn pool_20_wrapped_exception(m) {
        let p = pool(m, 4);
        assert_eq!(p.apply(return_runtime_error, ()).unwrap(), Err(RuntimeError("foo".into())));
        close_join(&p);
    }

    /// POOL-21: `Pool(2).map(raise_large_valuerror, [0, 1])` fails with the 1 MiB error
    /// (whole); then, after 0.5 s, `close()` and `join()` do not deadlock, and join waits for
    /// the job still running: more than 0.9 s in all.
    fn pool_21_map_no_failfast(m) {
        let t0 = Instant::now();
        let p = pool(m, 2);
        match p.map(raise_large_valuerror, [0, 1]) {
            Err(Error::TaskPanicked { message }) => {
                assert!(message.starts_with(&"x".repeat(MIB)), "{} bytes", message.len());
                assert!(!message[MIB..].starts_with('x'), "more than 1 MiB of x");
            }
            other => panic!("{:?}", other.map(|v| v.len())),
        }
        std::thread::sleep(Duration::from_millis(500));
        close_join(&p);
        assert!(t0.elapsed() > Duration::from_millis(900), "{:?}", t0.elapsed());
    }

    /// POOL-25: 20 `apply_async` of a task whose result cannot be encoded: each `get()`
    /// fails (`TaskPanicked` saying the result cannot be encoded; CPython's
    /// `MaybeEncodingError`), and the pool loses no worker.
    fn pool_25_unencodable_result(m) {
        let p = pool(m, 2);
        let before: BTreeSet<u32> = p.worker_pids().into_iter().collect();
        let results: Vec<_> = (0..20).map(|_| p.apply_async(unencodable, ()).unwrap()).collect();
        for r in &results {
            match r.get_timeout(LONG) {
                Err(Error::TaskPanicked { message }) => {
                    assert!(message.starts_with("cannot encode the task's result"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(p.worker_pids().into_iter().collect::<BTreeSet<_>>(), before);
        assert_eq!(p.apply(sqr, (3,)).unwrap(), 9);
        close_join(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-23, POOL-26 to POOL-29: the life of a pool and of its workers.

/// The line an initializer adds to its file.
fn initializer(path: String) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(b"initialized\n").unwrap();
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(String);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path = std::env::temp_dir().join(format!("mp-pool-{tag}-{}-{n}-{nanos:x}", std::process::id()));
        TempFile(path.display().to_string())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Adds 1 to a shared value (CPython's `initializer(ns)` does `ns.test += 1`).
fn count_in(v: Value<i32>) {
    *v.lock().unwrap() += 1;
}

start_methods! {
    /// POOL-23: a running pool that goes out of scope is terminated (its busy workers are
    /// killed and reaped at once), where CPython warns `ResourceWarning('unclosed running
    /// multiprocessing pool')` when it collects one.
    fn pool_23_dropping_a_running_pool(m) {
        let p = pool(m, 2);
        let r = p.map_async_chunked(nap, vec![30_000; 4], 1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let pids = p.worker_pids();
        assert_eq!(pids.len(), 2);
        drop(r);
        let (_, took) = timed(move || drop(p));
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(pids.iter().all(|&pid| !pid_alive(pid)), "{pids:?}");
    }

    /// POOL-26: `Pool(3, maxtasksperchild=10)`, 100 `apply_async(sqr, (i,))`: every result is
    /// `i*i`; the pool has 3 workers before and after (once refilled), and their pids changed.
    fn pool_26_worker_lifetime(m) {
        let p = Pool::builder().processes(3).maxtasksperchild(10).start_method(m).build().unwrap();
        let before = p.worker_pids();
        assert_eq!(before.len(), 3);
        let results: Vec<_> = (0..100).map(|i| p.apply_async(sqr, (i,)).unwrap()).collect();
        for (i, r) in (0..).zip(&results) {
            assert_eq!(r.get_timeout(LONG).unwrap(), i * i);
        }
        let refilled = eventually(|| {
            let pids = p.worker_pids();
            pids.len() == 3 && pids.iter().all(|&pid| pid_alive(pid))
        });
        assert!(refilled, "{:?}", p.worker_pids());
        let mut before = before;
        let mut after = p.worker_pids();
        before.sort();
        after.sort();
        assert_ne!(before, after);
        close_join(&p);
    }

    /// POOL-28: `maxtasksperchild=0` is `ValueError('maxtasksperchild must be a positive int
    /// or None')` (-1, 0.5 and "12" cannot be written: it is a `u64`).
    fn pool_28_maxtasksperchild_invalid(m) {
        match Pool::builder().processes(1).maxtasksperchild(0).start_method(m).build() {
            Err(Error::InvalidArgument(message)) => {
                assert_eq!(message, "maxtasksperchild must be a positive int or None")
            }
            other => panic!("{other:?}"),
        }
    }

    /// POOL-29: `Pool(1, initializer, (arg,))`, then `close()` and `join()` with no task: the
    /// initializer ran once. CPython counts in a manager's Namespace; here the initializer
    /// appends a line to a file named by its argument. (`Pool(initializer=1)`'s `TypeError`
    /// is a compile error in Rust.)
    fn pool_29_initializer(m) {
        let file = TempFile::new("init");
        let p =
            Pool::builder().processes(1).initializer(initializer, (file.0.clone(),)).start_method(m).build().unwrap();
        close_join(&p);
        assert_eq!(std::fs::read_to_string(&file.0).unwrap(), "initialized\n");
    }
}

/// POOL-29 with CPython's shape: the initializer gets a shared object in its arguments (a
/// `Value` where CPython passes a manager's Namespace; a `Queue` or a `Lock` passed this way
/// is a common Python idiom).
fn pool_29_initializer_with_a_handle_case(m: StartMethod) {
    let v = Value::new(0i32).unwrap();
    let p = Pool::builder().processes(1).initializer(count_in, (v.clone(),)).start_method(m).build().unwrap();
    close_join(&p);
    assert_eq!(v.get(), 1);
}

/// Under every start method. (The arguments were once encoded apart from the worker's own,
/// so a handle in them could not travel.)
#[test]
fn pool_29_initializer_with_a_handle() {
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        common::run_case(m, pool_29_initializer_with_a_handle_case);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-30 to POOL-32, POOL-40: pools in other processes.

/// Sets this process's soft limit on descriptors (`RLIMIT_NOFILE`).
fn set_fd_limit(soft: u64) -> Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one plain struct.
    let rc = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            -1
        } else {
            limit.rlim_cur = soft.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit)
        }
    };
    if rc != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn soft_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one plain struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur
}

/// How many descriptors this process has open.
fn open_fd_count() -> Result<usize> {
    Ok(multiprocess::__private::open_fds()?.len())
}

/// The processes this child's pools may have left: its own children and, under forkserver,
/// its fork server's.
fn my_workers() -> BTreeSet<u32> {
    let mut pids: BTreeSet<u32> = children_of(std::process::id()).into_iter().map(|(pid, _)| pid).collect();
    if let Some(server) = multiprocess::__private::forkserver_pid() {
        pids.remove(&server);
        pids.extend(children_of(server).into_iter().map(|(pid, _)| pid));
    }
    pids
}

/// POOL-30's child: `Pool(5)` under every descriptor limit from none spare up to enough, so
/// that starting it fails at every step (before any worker, between workers, after the
/// last). Each failure must be an error, and leave no worker behind.
fn pool_under_fd_limits(m: StartMethod) -> Result<()> {
    if m == StartMethod::ForkServer {
        // The fork server starts with the first child: not under a lowered limit.
        let mut p = get_context(m).process(|| {}, ());
        p.start()?;
        p.join()?;
    }
    let base = open_fd_count()?;
    let one_worker = {
        let _pool = Pool::builder().processes(1).start_method(m).build()?;
        open_fd_count()? - base
    };
    let open: BTreeSet<i32> = multiprocess::__private::open_fds()?.into_iter().collect();
    // The limit under which exactly `spare` descriptor numbers are free (new descriptors
    // take the lowest free number, so the holes below the highest open one count).
    let limit_with = |spare: usize| (0..).filter(|fd| !open.contains(fd)).nth(spare).unwrap_or(0) as u64;
    let saved = soft_fd_limit();
    let before = my_workers();
    let mut failures = 0;
    let mut first_ok = None;
    for spare in 0..500 {
        set_fd_limit(limit_with(spare))?;
        let attempt = Pool::builder().processes(5).start_method(m).build();
        set_fd_limit(saved)?;
        match attempt {
            Ok(p) => {
                p.terminate()?;
                first_ok = Some(spare);
                break;
            }
            Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EMFILE) => failures += 1,
            Err(e) => return fail(format!("with {spare} spare descriptors: {e:?}, not EMFILE")),
        }
        let settled = eventually(|| my_workers().is_subset(&before));
        if !settled {
            let left: Vec<String> = my_workers()
                .difference(&before)
                .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
                .collect();
            return fail(format!("with {spare} spare descriptors, {failures} failures so far: left {left:?}"));
        }
    }
    let Some(first_ok) = first_ok else { return fail("Pool(5) failed with 500 spare descriptors".into()) };
    // A pool of one worker takes `one_worker` descriptors; failing with twice that spare,
    // the sweep failed after workers had started.
    if failures == 0 || first_ok < 2 * one_worker {
        return fail(format!("{failures} failures, Pool(5) started with {first_ok} spare; Pool(1) takes {one_worker}"));
    }
    Ok(())
}

/// A pool kept in a global and never closed (CPython's script keeps one in a module global).
static GLOBAL_POOL: OnceLock<Pool> = OnceLock::new();

/// POOL-31's child: uses a pool kept in a global, tells the parent its workers, and
/// returns without closing it.
fn keep_pool_in_global(m: StartMethod, pids: Queue<Vec<u32>>) -> Result<()> {
    let p = GLOBAL_POOL.get_or_init(|| pool(m, 2));
    if p.map(sqr, 0..10)? != squares(10) {
        return fail("wrong squares".into());
    }
    pids.put(p.worker_pids()).map_err(Error::from)?;
    Ok(())
}

/// POOL-32's child: its stderr goes to `stderr_path`; `Pool(200).map(x*x, range(1000))`,
/// whose sum it puts on `sums`.
fn large_pool(m: StartMethod, stderr_path: String, sums: Queue<i64>) -> Result<()> {
    let f = std::fs::File::create(&stderr_path)?;
    // SAFETY: dup2 onto fd 2 of a descriptor this function owns.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&f), 2) } < 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    let p = Pool::builder().processes(200).start_method(m).build()?;
    let sum: i64 = p.map(sqr, 0..1000)?.into_iter().sum();
    p.close();
    p.join()?;
    sums.put(sum).map_err(Error::from)?;
    Ok(())
}

/// POOL-40's child: a pool of its own (same start method), used, closed and joined.
fn pool_in_child(m: StartMethod) -> Result<()> {
    let p = pool(m, 4);
    if p.map(sqr, [1, 2, 3])? != [1, 4, 9] {
        return fail("wrong squares".into());
    }
    p.close();
    p.join()
}

/// POOL-30: when starting a worker fails (here: no descriptor left, `EMFILE`, at every step
/// of starting a `Pool(5)`), `Pool()` returns that error and the workers already started are
/// terminated: none is left. Run in a child, whose descriptor limit it lowers.
fn pool_30_case(m: StartMethod) {
    let mut p = start(m, pool_under_fd_limits, (m,));
    p.join_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(p.exitcode(), Some(0), "see the child's error above");
}

/// POOL-30 under each start method.
mod pool_30_no_leak_on_failure {
    use super::*;

    /// `popen::fork::start` forks, then opens the child's pidfd; when that fails (`EMFILE`)
    /// the child is killed and reaped (it was once left running, unknown to anyone).
    #[test]
    fn fork() {
        common::run_case(StartMethod::Fork, pool_30_case)
    }

    #[test]
    fn spawn() {
        common::run_case(StartMethod::Spawn, pool_30_case)
    }

    #[test]
    fn forkserver() {
        common::run_case(StartMethod::ForkServer, pool_30_case)
    }
}

start_methods! {
    /// POOL-31: a child keeps a pool in a global, never closes it, and returns: it exits 0
    /// without hanging, and the pool's workers are gone.
    fn pool_31_pool_in_a_global_at_exit(m) {
        let q = Queue::new().unwrap();
        let mut p = start(m, keep_pool_in_global, (m, q.clone()));
        let pids = q.get_timeout(LONG).unwrap();
        assert_eq!(pids.len(), 2);
        p.join_timeout(LONG).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(eventually(|| pids.iter().all(|&pid| !pid_alive(pid))), "{pids:?} still alive");
    }

    /// POOL-32: a child runs `Pool(200).map(x*x, range(1000))`: the sum is 332833500, and
    /// nothing is written to stderr (its own or its workers').
    fn pool_32_large_pool(m) {
        let stderr = TempFile::new("stderr");
        let q = Queue::new().unwrap();
        let mut p = start(m, large_pool, (m, stderr.0.clone(), q.clone()));
        assert_eq!(q.get_timeout(Duration::from_secs(120)).unwrap(), 332_833_500);
        p.join_timeout(LONG).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(std::fs::read_to_string(&stderr.0).unwrap(), "");
    }

    /// POOL-40: a pool made inside a child works; the child exits 0. (CPython's second
    /// half, a manager's `Pool(4)` proxy, waits for managers.)
    fn pool_40_pool_in_a_child(m) {
        let mut p = start(m, pool_in_child, (m,));
        join_ok(&mut p);
    }
}

// ---------------------------------------------------------------------------------------------
// POOL-33 to POOL-39: results, lifecycle errors, defaults.

/// CPython's `map` item that raises `ValueError('item 2')`.
fn raise_on_2(x: i64) -> i64 {
    if x == 2 {
        panic!("item 2");
    }
    x
}

start_methods! {
    /// POOL-33: an `AsyncResult` (and a `MapResult`) is not `ready()` before its task ends,
    /// where `successful()` is `ValueError('... not ready')` (`Err(NotReady)`); after a
    /// success both are true; after an error `successful()` is false.
    fn pool_33_async_result_state(m) {
        let p = pool(m, 2);
        let r = p.apply_async(nap, (500,)).unwrap();
        let mr = p.map_async(nap, [500]).unwrap();
        assert!(!r.ready());
        assert!(!mr.ready());
        assert!(matches!(r.successful(), Err(Error::NotReady)));
        assert!(matches!(mr.successful(), Err(Error::NotReady)));
        r.wait();
        mr.wait();
        assert!(r.ready() && mr.ready());
        assert!(r.successful().unwrap() && mr.successful().unwrap());
        assert_eq!(r.get().unwrap(), 500);
        let e = p.apply_async(raise_key_error, ()).unwrap();
        let me = p.map_async(raise_on_2, 0..4).unwrap();
        e.wait();
        me.wait();
        assert!(e.ready() && me.ready());
        assert!(!e.successful().unwrap());
        assert!(!me.successful().unwrap());
        close_join(&p);
    }

    /// POOL-35: after `close()`, `apply_async` (and every other way to submit) is
    /// `ValueError('Pool not running')`; `join()` before `close()` or `terminate()` is
    /// `ValueError('Pool is still running')`.
    fn pool_35_lifecycle_errors(m) {
        let p = pool(m, 2);
        match p.join() {
            Err(e @ Error::PoolStillRunning) => assert_eq!(e.to_string(), "Pool is still running"),
            other => panic!("{other:?}"),
        }
        p.close();
        match p.apply_async(sqr, (1,)) {
            Err(e @ Error::PoolNotRunning) => assert_eq!(e.to_string(), "Pool not running"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("apply_async after close"),
        }
        assert!(matches!(p.apply(sqr, (1,)), Err(Error::PoolNotRunning)));
        assert!(matches!(p.map(sqr, 0..3), Err(Error::PoolNotRunning)));
        assert!(matches!(p.map_chunked(sqr, 0..3, 1), Err(Error::PoolNotRunning)));
        assert!(matches!(p.map_async(sqr, 0..3), Err(Error::PoolNotRunning)));
        assert!(matches!(p.starmap(mul, [(1, 2)]), Err(Error::PoolNotRunning)));
        assert!(matches!(p.starmap_async(mul, [(1, 2)]), Err(Error::PoolNotRunning)));
        assert!(matches!(p.imap(sqr, 0..3), Err(Error::PoolNotRunning)));
        assert!(matches!(p.imap_unordered(sqr, 0..3), Err(Error::PoolNotRunning)));
        p.join().unwrap();
        assert!(matches!(p.apply_async(sqr, (1,)), Err(Error::PoolNotRunning)));
    }

    /// POOL-36: a `map` where one item raises `ValueError('item 2')` raises that error.
    fn pool_36_map_raises_the_items_error(m) {
        let p = pool(m, 2);
        match p.map(raise_on_2, 0..5) {
            Err(Error::TaskPanicked { message }) => assert!(message.starts_with("item 2 (at "), "{message}"),
            other => panic!("{other:?}"),
        }
        close_join(&p);
    }

    /// POOL-39: `Pool()` has `cpu_count()` workers; `map`'s default chunk size is
    /// `ceil(n / (4 × processes))` (100 items on 4 workers: chunks of 7); `imap`'s is 1. The
    /// chunks are seen with `maxtasksperchild=1`: each worker runs one chunk, so the items
    /// of one chunk are exactly those that one worker ran, in a row.
    fn pool_39_defaults(m) {
        let p = Pool::builder().start_method(m).build().unwrap();
        assert_eq!(p.processes(), cpu_count());
        assert_eq!(p.worker_pids().len(), cpu_count());
        close_join(&p);

        let p = Pool::builder().processes(4).maxtasksperchild(1).start_method(m).build().unwrap();
        let pids = p.map(pid_of, 0..100).unwrap();
        let mut runs: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, pid) in pids.iter().enumerate() {
            runs.entry(*pid).or_default().push(i);
        }
        let mut chunks: Vec<Vec<usize>> = runs.into_values().collect();
        chunks.sort();
        let expected: Vec<Vec<usize>> = (0..100).collect::<Vec<_>>().chunks(7).map(<[usize]>::to_vec).collect();
        assert_eq!(chunks, expected);
        close_join(&p);

        let p = Pool::builder().processes(2).maxtasksperchild(1).start_method(m).build().unwrap();
        let pids: Vec<u32> = p.imap(pid_of, 0..6).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 6, "{pids:?}");
        close_join(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// PPE: the ProcessPoolExecutor cases a Pool shares (`submit` is `apply_async`, `result` is
// `get`, `Executor.map` is `imap` or `map_async`, `shutdown()` is `close()` + `join()`).

/// `divmod` of a pair (`Executor.map` passes two iterables; `imap` takes one of pairs).
fn divmod(pair: (i64, i64)) -> (i64, i64) {
    (pair.0 / pair.1, pair.0 % pair.1)
}

/// Exits its worker with code 99, without the crate's exit path (`os._exit(99)`).
fn underscore_exit_99() -> u32 {
    // SAFETY: _exit ends this process at once; nothing of it is used after.
    unsafe { libc::_exit(99) }
}

fn crash() -> u32 {
    segfault()
}

/// CPython's `_crash(delay)`: sleeps, then segfaults.
fn crash_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    segfault()
}

/// CPython's `_crash_with_data(data)`.
fn crash_with_data(_data: String) -> u32 {
    segfault()
}

/// CPython's `_exit()`: `sys.exit(1)` in a task.
fn exit_1() -> u32 {
    multiprocess::exit(1)
}

fn double(x: u64) -> u64 {
    2 * x
}

fn to_string(x: u32) -> String {
    x.to_string()
}

fn abs(x: i64) -> i64 {
    x.abs()
}

/// Takes anything (CPython's `id`, applied to the test objects).
fn id<T>(_x: T) -> u32 {
    42
}

/// Returns a fresh `T` (CPython's `_return_instance(cls)`).
fn return_instance<T: Default>() -> T {
    T::default()
}

/// CPython's `ErrorAtPickle`: cannot be encoded.
#[derive(Debug, Default, Deserialize)]
struct ErrorAtPickle;

impl Serialize for ErrorAtPickle {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(S::Error::custom("Error in pickle"))
    }
}

/// CPython's `CrashAtPickle`: its encoding segfaults (used as a result, encoded in the worker).
#[derive(Debug, Default, Deserialize)]
struct CrashAtPickle;

impl Serialize for CrashAtPickle {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        segfault()
    }
}

/// CPython's `ExitAtPickle`: its encoding exits 1 (used as a result, encoded in the worker).
#[derive(Debug, Default, Deserialize)]
struct ExitAtPickle;

impl Serialize for ExitAtPickle {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        multiprocess::exit(1)
    }
}

/// CPython's `ErrorAtUnpickle`: cannot be decoded.
#[derive(Debug, Default, Serialize)]
struct ErrorAtUnpickle;

impl<'de> Deserialize<'de> for ErrorAtUnpickle {
    fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(D::Error::custom("Error in unpickle"))
    }
}

/// CPython's `CrashAtUnpickle`: its decoding segfaults (used as an argument, decoded in the
/// worker).
#[derive(Debug, Default, Serialize)]
struct CrashAtUnpickle;

impl<'de> Deserialize<'de> for CrashAtUnpickle {
    fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        segfault()
    }
}

/// CPython's `ExitAtUnpickle`: its decoding exits 1 (used as an argument, decoded in the
/// worker).
#[derive(Debug, Default, Serialize)]
struct ExitAtUnpickle;

impl<'de> Deserialize<'de> for ExitAtUnpickle {
    fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        multiprocess::exit(1)
    }
}

/// PPE-23's initializer sets this in each worker.
static INITIALIZER_STATUS: Mutex<Option<String>> = Mutex::new(None);

fn init_global(status: String) {
    *INITIALIZER_STATUS.lock().unwrap() = Some(status);
}

fn get_init_status(_x: u32) -> Option<String> {
    INITIALIZER_STATUS.lock().unwrap().clone()
}

/// This process's children other than its fork server and resource tracker: under fork and
/// spawn, its pools' workers.
fn worker_children() -> usize {
    let others = [multiprocess::__private::forkserver_pid(), multiprocess::__private::tracker_pid()];
    children_of(std::process::id()).into_iter().filter(|(pid, _)| !others.contains(&Some(*pid))).count()
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a plain signal on a worker of the test's own pool.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// Expects `r` to be `WorkerDied` with `exitcode`.
fn assert_worker_died<T: std::fmt::Debug>(r: Result<T>, exitcode: i32) {
    match r {
        Err(Error::WorkerDied { exitcode: code }) => assert_eq!(code, exitcode),
        other => panic!("expected WorkerDied({exitcode}), got {other:?}"),
    }
}

start_methods! {
    /// PPE-01: `submit(pow, 2, 8).result()` is 256, `submit(mul, 2, y=8)` 16 (keyword
    /// arguments, and the `TypeError`s of malformed calls, are compile-time matters in Rust).
    fn ppe_01_submit(m) {
        let p = pool(m, 2);
        assert_eq!(p.apply_async(pow, (2, 8)).unwrap().get().unwrap(), 256);
        assert_eq!(p.apply_async(mul, (2, 8)).unwrap().get().unwrap(), 16);
        close_join(&p);
    }

    /// PPE-02: `map(pow, range(10), range(10))` with chunksize 1 and 3, and of `range(40)`
    /// with chunksize 6, 50 and 40, equal the built-in `map` (here `starmap` of the pairs);
    /// chunksize -1 is `ValueError`: here 0 (a `usize`), for every chunked call.
    fn ppe_02_map_chunksize(m) {
        let p = pool(m, 5);
        for (n, chunksize) in [(10, 1), (10, 3), (40, 6), (40, 50), (40, 40)] {
            let pairs: Vec<(u64, u32)> = (0..n).map(|i| (u64::from(i), i)).collect();
            let expected: Vec<u64> = pairs.iter().map(|&(b, e)| pow(b, e)).collect();
            assert_eq!(p.starmap_async_chunked(pow, pairs, chunksize).unwrap().get().unwrap(), expected);
        }
        let invalid = |r: Result<()>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(invalid(p.starmap_async_chunked(pow, [(2, 8)], 0).map(drop)));
        assert!(invalid(p.map_chunked(sqr, 0..40, 0).map(drop)));
        assert!(invalid(p.map_async_chunked(sqr, 0..40, 0).map(drop)));
        assert!(invalid(p.imap_chunked(sqr, 0..40, 0).map(drop)));
        assert!(invalid(p.imap_unordered_chunked(sqr, 0..40, 0).map(drop)));
        close_join(&p);
    }

    /// PPE-03: `map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])` (`imap` of the pairs) yields
    /// `(0, 1)`, `(0, 1)`, then its third `next` raises the `ZeroDivisionError` (a panic:
    /// "attempt to divide by zero"): in order, the error at its position. Then the iterator
    /// goes on with `(0, 1)`, where the executor's generator ends.
    fn ppe_03_map_exception(m) {
        let p = pool(m, 5);
        let mut it = p.imap(divmod, [(1, 2), (1, 3), (1, 0), (1, 5)]).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), (0, 1));
        assert_eq!(it.next().unwrap().unwrap(), (0, 1));
        match it.next().unwrap() {
            Err(Error::TaskPanicked { message }) => {
                assert!(message.starts_with("attempt to divide by zero"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(it.next().unwrap().unwrap(), (0, 1));
        assert!(it.next().is_none());
        drop(it);
        close_join(&p);
    }

    /// PPE-04: `map(time.sleep, [0, 0, 6], timeout=5)` yields `None, None`, then
    /// `TimeoutError` at the deadline, which is one for the whole map. Ported as the executor
    /// does it: one `apply_async` per item, each result awaited with `get_timeout(deadline -
    /// now)`; 2 s instead of 5, 6 s as in CPython.
    fn ppe_04_map_timeout(m) {
        let p = pool(m, 5);
        let total = Duration::from_secs(2);
        let t0 = Instant::now();
        let deadline = t0 + total;
        let results: Vec<_> = [0, 0, 6_000].into_iter().map(|ms| p.apply_async(nap, (ms,)).unwrap()).collect();
        let got: Vec<Result<u64>> =
            results.iter().map(|r| r.get_timeout(deadline.saturating_duration_since(Instant::now()))).collect();
        let took = t0.elapsed();
        assert_eq!(got[0].as_ref().unwrap(), &0);
        assert_eq!(got[1].as_ref().unwrap(), &0);
        assert!(matches!(got[2], Err(Error::Timeout)), "{:?}", got[2]);
        assert!(took + Duration::from_millis(10) >= total && took <= total + Duration::from_millis(800), "{took:?}");
    }

    /// PPE-07, deliberately different: `submit(time.sleep, 3)`, then one worker is
    /// terminated (SIGTERM): the executor breaks (`BrokenProcessPool` for that future and
    /// every later `submit`); our pool fails only that task, with `WorkerDied(-15)`, replaces
    /// the worker, and `submit(pow, 2, 8)` afterwards gives 256.
    fn ppe_07_killed_child(m) {
        let p = pool(m, 1);
        let r = p.apply_async(nap, (3_000,)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let victim = p.worker_pids()[0];
        signal(victim, libc::SIGTERM);
        let (got, took) = timed(|| r.get_timeout(LONG));
        assert_worker_died(got, -libc::SIGTERM);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(p.apply_async(pow, (2, 8)).unwrap().get_timeout(LONG).unwrap(), 256);
        assert_ne!(p.worker_pids(), vec![victim]);
        close_join(&p);
    }

    /// PPE-09, deliberately different: a task's `os._exit(99)` breaks the executor with
    /// "terminated abruptly with exit code 99"; here that task fails with `WorkerDied(99)`,
    /// and the pool goes on.
    fn ppe_09_exit_code_of_a_dead_worker(m) {
        let p = pool(m, 2);
        assert_worker_died(p.apply(underscore_exit_99, ()), 99);
        assert_eq!(p.apply(pow, (2, 8)).unwrap(), 256);
        close_join(&p);
    }

    /// PPE-10: with 15 × the workers' number of tasks outstanding, the pool never has more
    /// workers than asked for (CPython blocks the tasks on a semaphore; here they nap).
    fn ppe_10_saturation(m) {
        let p = pool(m, 3);
        let r = p.map_async_chunked(nap, vec![50; 45], 1).unwrap();
        while !r.ready() {
            assert_eq!(p.worker_pids().len(), 3);
            if common::alone_in_process() && m != StartMethod::ForkServer {
                let children = worker_children();
                assert!(children <= 3, "{children} children");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(r.get().unwrap(), vec![50; 45]);
        assert_eq!(p.worker_pids().len(), 3);
        close_join(&p);
    }

    /// PPE-12: one worker, `max_tasks_per_child=3`: tasks 1 to 3 run in one process, task 4
    /// in a new one, and there is still one worker. (The executor refuses this with a fork
    /// context; a Pool, CPython's too, does not.)
    fn ppe_12_max_tasks_per_child(m) {
        let p = Pool::builder().processes(1).maxtasksperchild(3).start_method(m).build().unwrap();
        let pids: Vec<u32> = (0..4).map(|_| p.apply(pid, ()).unwrap()).collect();
        assert_eq!(pids[0], pids[1]);
        assert_eq!(pids[1], pids[2]);
        assert_ne!(pids[2], pids[3]);
        assert!(eventually(|| p.worker_pids() == vec![pids[3]]), "{:?}", p.worker_pids());
        close_join(&p);
    }

    /// PPE-14: maxtasksperchild with tasks pending (gh-115634): 1 worker replaced after 2
    /// tasks with 6 queued, and 2 workers with 8: every result (`i * 2`) comes, no deadlock.
    fn ppe_14_max_tasks_per_child_pending_tasks(m) {
        for (workers, max_tasks, n) in [(1, 2, 6), (2, 2, 8)] {
            let p = Pool::builder().processes(workers).maxtasksperchild(max_tasks).start_method(m).build().unwrap();
            let r = p.map_async_chunked(double, 0..n, 1).unwrap();
            assert_eq!(r.get_timeout(LONG).unwrap(), (0..n).map(|i| i * 2).collect::<Vec<_>>());
            close_join(&p);
        }
    }

    /// PPE-15: terminating the workers (`terminate()`) while a task blocks: the task never
    /// finishes (it fails with `PoolNotRunning`), a later submit is an error
    /// (`PoolNotRunning`, the executor's `RuntimeError`), terminating again is fine, and so
    /// is terminating a pool that never ran anything.
    fn ppe_15_terminate_workers(m) {
        let p = pool(m, 2);
        let r = p.apply_async(nap, (30_000,)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let pids = p.worker_pids();
        let (done, took) = timed(|| p.terminate());
        done.unwrap();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(matches!(r.get_timeout(LONG), Err(Error::PoolNotRunning)));
        assert!(matches!(p.apply_async(pow, (2, 8)), Err(Error::PoolNotRunning)));
        p.terminate().unwrap();
        assert!(pids.iter().all(|&pid| !pid_alive(pid)), "{pids:?}");
        let idle = pool(m, 2);
        idle.terminate().unwrap();
        idle.join().unwrap();
    }

    /// PPE-16, deliberately different: a failure at each point of a task's trip, on
    /// `Pool(2)`; never a deadlock, and the pool stays usable (the executor breaks on each
    /// crash: `BrokenProcessPool`). Encoding the task fails: `apply_async` returns the
    /// `Codec` error itself (CPython's `PicklingError` at `result()`). The worker exits, or
    /// segfaults, decoding the task: `WorkerDied(1)`, `WorkerDied(-11)`. Decoding the task
    /// fails: `TaskPanicked` (cannot decode). The task segfaults: `WorkerDied(-11)`; exits 1:
    /// `WorkerDied(1)` (CPython re-raises `SystemExit`: Rust has none); panics:
    /// `TaskPanicked`. Encoding the result segfaults or exits: `WorkerDied`; fails:
    /// `TaskPanicked` (cannot encode; CPython's `PicklingError`). Decoding the result in the
    /// caller fails: `Codec`. (Exiting while decoding the result has no counterpart: that runs
    /// in the caller's own thread.)
    fn ppe_16_failure_points(m) {
        let p = pool(m, 2);
        assert!(matches!(p.apply_async(id::<ErrorAtPickle>, (ErrorAtPickle,)), Err(Error::Codec(_))));
        assert_worker_died(p.apply_async(id::<ExitAtUnpickle>, (ExitAtUnpickle,)).unwrap().get_timeout(LONG), 1);
        assert_worker_died(
            p.apply_async(id::<CrashAtUnpickle>, (CrashAtUnpickle,)).unwrap().get_timeout(LONG),
            -libc::SIGSEGV,
        );
        match p.apply_async(id::<ErrorAtUnpickle>, (ErrorAtUnpickle,)).unwrap().get_timeout(LONG) {
            Err(Error::TaskPanicked { message }) => {
                assert!(message.starts_with("cannot decode the task's arguments"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_worker_died(p.apply_async(crash, ()).unwrap().get_timeout(LONG), -libc::SIGSEGV);
        assert_worker_died(p.apply_async(exit_1, ()).unwrap().get_timeout(LONG), 1);
        assert!(matches!(p.apply_async(raise_123, ()).unwrap().get_timeout(LONG), Err(Error::TaskPanicked { .. })));
        assert_worker_died(
            p.apply_async(return_instance::<CrashAtPickle>, ()).unwrap().get_timeout(LONG),
            -libc::SIGSEGV,
        );
        assert_worker_died(p.apply_async(return_instance::<ExitAtPickle>, ()).unwrap().get_timeout(LONG), 1);
        match p.apply_async(return_instance::<ErrorAtPickle>, ()).unwrap().get_timeout(LONG) {
            Err(Error::TaskPanicked { message }) => {
                assert!(message.starts_with("cannot encode the task's result"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match p.apply_async(return_instance::<ErrorAtUnpickle>, ()).unwrap().get_timeout(LONG) {
            Err(Error::Codec(message)) => assert!(message.starts_with("cannot decode a task's result"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.apply(pow, (2, 8)).unwrap(), 256);
        assert_eq!(p.worker_pids().len(), 2);
        close_join(&p);
    }

    /// PPE-17, deliberately different: a worker that crashes after `close()` fails its task
    /// with `WorkerDied` (the executor's `BrokenProcessPool`) and `join()` returns; a task
    /// that cannot be encoded fails at `apply_async` (before `close()`), and `join()` still
    /// returns; workers that crash while 4 MiB arguments are on their way fail the `map`
    /// with `WorkerDied`, without a hang, and the pool goes on.
    fn ppe_17_shutdown_and_crashes(m) {
        let p = pool(m, 2);
        let r = p.apply_async(crash_after, (100,)).unwrap();
        close_join(&p);
        assert_worker_died(r.get_timeout(LONG), -libc::SIGSEGV);

        let p = pool(m, 2);
        assert_eq!(p.apply(id::<u32>, (42,)).unwrap(), 42);
        assert!(matches!(p.apply_async(id::<ErrorAtPickle>, (ErrorAtPickle,)), Err(Error::Codec(_))));
        close_join(&p);

        let p = pool(m, 2);
        let data = "a".repeat(4 * MIB + 1);
        let (r, took) = timed(|| p.map_chunked(crash_with_data, vec![data; 10], 1));
        assert_worker_died(r, -libc::SIGSEGV);
        assert!(took < LONG, "{took:?}");
        assert_eq!(p.apply(pow, (2, 8)).unwrap(), 256);
        close_join(&p);
    }

    /// PPE-20: 50 tasks of 0.1 s on 5 workers, then `close()` + `join()` (`shutdown()`):
    /// every result is there; `map` of 6 items on 5 workers, then shutdown: no hang.
    fn ppe_20_shutdown_after_many_tasks(m) {
        let p = pool(m, 5);
        let results: Vec<_> = (0..50).map(|_| p.apply_async(nap, (100,)).unwrap()).collect();
        close_join(&p);
        for r in &results {
            assert!(r.ready());
            assert_eq!(r.get().unwrap(), 100);
        }
        let p = pool(m, 5);
        let r = p.map_async(to_string, [2; 6]).unwrap();
        close_join(&p);
        assert_eq!(r.get().unwrap(), vec!["2"; 6]);
    }

    /// PPE-22: `with PPE(5) as e: e.map(abs, range(-5, 5))` is `[5, 4, 3, 2, 1, 0, 1, 2, 3,
    /// 4]`; after the block (here: the pool dropped) all its processes are gone. After
    /// `shutdown()` (`close()` + `join()`) every process is gone and every result computed.
    /// (A dropped pool is terminated, as `Pool.__exit__` does: the executor's `del` and
    /// `shutdown(wait=False)`, which let pending work finish, have no counterpart.)
    fn ppe_22_processes_end_with_the_pool(m) {
        let pids = {
            let p = pool(m, 5);
            assert_eq!(p.map(abs, -5..5).unwrap(), vec![5, 4, 3, 2, 1, 0, 1, 2, 3, 4]);
            p.worker_pids()
        };
        assert_eq!(pids.len(), 5);
        assert!(pids.iter().all(|&pid| !pid_alive(pid)), "{pids:?}");

        let p = pool(m, 5);
        let pids = p.worker_pids();
        let r = p.map_async_chunked(nap, vec![100; 10], 1).unwrap();
        close_join(&p);
        assert!(pids.iter().all(|&pid| !pid_alive(pid)), "{pids:?}");
        assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), vec![100; 10]);
    }

    /// PPE-23: `initializer=init, initargs=('initialized',)`: every task sees `'initialized'`.
    fn ppe_23_initializer(m) {
        let p = Pool::builder()
            .processes(2)
            .initializer(init_global, ("initialized".to_string(),))
            .start_method(m)
            .build()
            .unwrap();
        let seen = p.map_chunked(get_init_status, 0..20, 1).unwrap();
        assert_eq!(seen, vec![Some("initialized".to_string()); 20]);
        close_join(&p);
    }

    /// PPE-26: `result(timeout=0.2)` on a running task is `TimeoutError` after the 0.2 s; a
    /// task's `KeyError('key')` is re-raised (`TaskPanicked` with its message).
    fn ppe_26_result_timeout_and_error(m) {
        let p = pool(m, 2);
        match p.apply(raise_key_error, ()) {
            Err(Error::TaskPanicked { message }) => assert!(message.starts_with("key (at "), "{message}"),
            other => panic!("{other:?}"),
        }
        let r = p.apply_async(nap, (30_000,)).unwrap();
        let (got, took) = timed(|| r.get_timeout(T02));
        assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
        common::assert_took(took, T02);
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs found while porting (fixed since): each test asserts what CPython does.

start_methods! {
    /// CPython's workers take the next task from one shared queue when they are idle, so on
    /// a `Pool(2)` whose one worker runs a long task, a task submitted next runs at once on
    /// the other. (Ours once gave it to the first worker with fewer than two chunks held.)
    fn idle_worker_takes_the_next_task(m) {
        let p = pool(m, 2);
        let _long = p.apply_async(nap, (3_000,)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (r, took) = timed(|| p.apply_async(sqr, (3,)).unwrap().get_timeout(LONG));
        assert_eq!(r.unwrap(), 9);
        assert!(took < Duration::from_secs(1), "waited {took:?} behind the long task");
    }
}

/// Squares, except 100, which takes 3 s.
fn slow_at_hundred(x: i64) -> i64 {
    if x == 100 {
        std::thread::sleep(Duration::from_secs(3));
    }
    x * x
}

start_methods! {
    /// CPython's idle worker takes whatever task is queued. Ours sends a worker whose tasks
    /// are quick many at once; when one of them turns out slow, those sent behind it go to
    /// the idle worker instead of waiting for it. (Ours once left them there: with one task
    /// of 3 s among 200 instant ones, the tasks behind it came 3 s late.)
    fn tasks_sent_behind_a_slow_one_go_to_the_idle_worker(m) {
        let p = pool(m, 2);
        let results: Vec<_> = (0..200).map(|x| p.apply_async(slow_at_hundred, (x,)).unwrap()).collect();
        let others: Vec<_> = results.iter().enumerate().filter(|&(x, _)| x != 100).map(|(_, r)| r).collect();
        let (done, took) = timed(|| wait(others.iter().copied(), Some(Duration::from_millis(2_500)), ReturnWhen::AllCompleted));
        assert!(done.not_done.is_empty(), "{} tasks still waited after {took:?}", done.not_done.len());
        assert!(took < Duration::from_millis(1_500), "the tasks behind the slow one took {took:?}");
        assert!(!results[100].ready());
        for (x, r) in (0..).zip(&results).filter(|&(x, _)| x != 100) {
            assert_eq!(r.get().unwrap(), x * x);
        }
        p.terminate().unwrap();
    }
}

start_methods! {
    /// POOL-27: `Pool(3, maxtasksperchild=1)`, 6 tasks of 0.3 s, `close()`, `join()`: join
    /// returns (the workers that left are replaced for the tasks still queued), and all six
    /// results are right.
    fn pool_27_worker_lifetime_early_close(m) {
        let p = Pool::builder().processes(3).maxtasksperchild(1).start_method(m).build().unwrap();
        let results: Vec<_> = (0..6).map(|i| p.apply_async(sqr_wait, (i, 300)).unwrap()).collect();
        close_join(&p);
        for (i, r) in (0..).zip(&results) {
            assert!(r.ready());
            assert_eq!(r.get().unwrap(), i * i);
        }
    }

    /// Workers that leave after `maxtasksperchild` tasks, several at once: every result
    /// arrives (CPython's POOL-27 shape, repeated). (A finished task was once failed with
    /// `WorkerDied { exitcode: 0 }` when its worker put its last result and exited between
    /// the manager's drain of the results and its look at which workers were alive.)
    fn maxtasksperchild_last_results_arrive(m) {
        let p = Pool::builder().processes(3).maxtasksperchild(1).start_method(m).build().unwrap();
        for round in 0..20 {
            let results: Vec<_> = (0..3).map(|i| p.apply_async(sqr_wait, (i, 50)).unwrap()).collect();
            for (i, r) in (0..).zip(&results) {
                match r.get_timeout(LONG) {
                    Ok(v) => assert_eq!(v, i * i),
                    Err(e) => panic!("round {round}, task {i}: {e:?}"),
                }
            }
        }
        close_join(&p);
    }
}
