//! Queues: CONFORMANCE.md sections 2 to 4 (Q-*, JQ-*, SQ-*), then cases beyond CPython's
//! (many producers and consumers, variable sizes through the ring, a bounded queue with a slow
//! consumer, type mismatches, `PutError`, closing, leaks). A case with a child runs under
//! every start method; a case in one process runs once. Where Rust needs another shape than
//! Python, the case's doc comment says how it was translated.
//!
//! Our queues have no feeder thread: a `put` is complete when it returns, so CPython's
//! `time.sleep` before looking at `qsize()`/`empty()` is not needed, and a test that would
//! be racy in CPython (a child's item counted as soon as the child is joined) is exact here.
mod common;
use common::{assert_prompt, assert_timeout_elapsed, join_ok, start, timed};
use multiprocess::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The probes' timeout: 0.2 s, which must take ≥ 0.19 s and ≤ 1 s.
const T02: Duration = Duration::from_millis(200);
/// How long a test waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(30);
/// CPython's `DELTA`: the workers' sleep in JQ-01.
const DELTA: Duration = Duration::from_millis(100);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `len` bytes that depend on `seed` and on their position (xorshift, 8 bytes at a time).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Whether `got` is `pattern(seed, len)`, byte for byte; says where it differs if not
/// (without printing megabytes).
fn check_pattern(seed: u64, len: usize, got: &[u8]) -> std::result::Result<(), String> {
    let want = pattern(seed, len);
    if got == want.as_slice() {
        return Ok(());
    }
    let at = got.iter().zip(&want).position(|(a, b)| a != b);
    Err(format!("item {seed}: {} bytes, expected {len}; first difference at {at:?}", got.len()))
}

/// The sizes of the variable-size stream: the edges (empty, one word, one page, the warm
/// part of the ring, past it, 3 MiB) and pseudo-random ones, small to 3 MiB: about 50 MiB in
/// all, so the 1 MiB warm part is crossed dozens of times.
fn sizes() -> Vec<usize> {
    let mut v = vec![0, 1, 7, 8, 9, 4095, 4096, 4097, MIB - 16, MIB - 8, MIB, MIB + 1, 0, 2 * MIB, 3 * MIB, 3];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..100 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        v.push(match i % 4 {
            0 => r % 64,
            1 => r % 4096,
            2 => r % (256 * 1024),
            _ => r % (3 * MIB + 1),
        });
    }
    v
}

/// Everything in `q` now, oldest first.
fn drain<T: Serialize + DeserializeOwned + 'static>(q: &Queue<T>) -> Vec<T> {
    std::iter::from_fn(|| q.get_nowait().ok()).collect()
}

/// An `Err` for a child to return, with what went wrong.
fn fail<T>(what: String) -> Result<T> {
    Err(Error::InvalidArgument(what))
}

/// An item that cannot be encoded when it is `Bad` (as CPython's test uses an object whose
/// `__reduce__` raises): its `Serialize` fails.
#[derive(Debug, PartialEq, Deserialize)]
enum Item {
    Good(bool),
    Bad(u32),
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Item::Good(b) => s.serialize_newtype_variant("Item", 0, "Good", b),
            Item::Bad(_) => Err(serde::ser::Error::custom("Bad cannot be encoded")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q: Queue (CPython's `_TestQueue.test_put`, `test_get`, ...).

/// a fresh `Queue(maxsize=6)` is empty and not full.
#[test]
fn q_01_fresh_queue_empty_not_full() {
    let q = Queue::<i32>::with_maxsize(6).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.maxsize(), Some(6));
}

/// Fills a `Queue(6)` as Q-02 does: `put(1)`, `put(2, True)`, `put(3, True, None)`,
/// `put(4, False)`, `put(5, False, None)`, `put_nowait(6)`. Blocking forms are `put`, the
/// non-blocking ones `put_nowait` (a timeout is ignored with `block=False`).
fn filled_queue_of_six() -> Queue<i32> {
    let q = Queue::with_maxsize(6).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.put(3).unwrap();
    q.put_nowait(4).unwrap();
    q.put_nowait(5).unwrap();
    q.put_nowait(6).unwrap();
    q
}

/// after six puts of every form, the queue is not empty and full. No sleep first:
/// there is no feeder buffer, each put is in the queue when it returns.
#[test]
fn q_02_six_puts_fill_the_queue() {
    let q = filled_queue_of_six();
    assert!(!q.empty());
    assert!(q.full());
    assert_eq!(q.qsize(), 6);
}

/// on the full queue, `put(7, False)`, `put(7, False, None)`, `put_nowait(7)` and
/// `put(7, False, TIMEOUT2)` raise `queue.Full` at once: here `put_nowait` gives
/// `PutError::Full(7)` promptly, three times, and a zero `put_timeout` does too.
#[test]
fn q_03_nonblocking_put_on_full_is_prompt() {
    let q = filled_queue_of_six();
    for _ in 0..3 {
        let (r, elapsed) = timed(|| q.put_nowait(7));
        assert!(matches!(r, Err(PutError::Full(7))), "{r:?}");
        assert_prompt(elapsed);
    }
    let (r, elapsed) = timed(|| q.put_timeout(7, Duration::ZERO));
    assert!(matches!(r, Err(PutError::Full(7))), "{r:?}");
    assert_prompt(elapsed);
    assert_eq!(q.qsize(), 6);
}

/// `put(7, True, TIMEOUT1)` and `put(7, True, timeout=TIMEOUT3)` on the full queue raise
/// `queue.Full` after the timeout: `put_timeout(7, 0.2 s)` gives `Full(7)` after 0.2 s, twice.
#[test]
fn q_04_put_timeout_on_full() {
    let q = filled_queue_of_six();
    for _ in 0..2 {
        let (r, elapsed) = timed(|| q.put_timeout(7, T02));
        assert!(matches!(r, Err(PutError::Full(7))), "{r:?}");
        assert_timeout_elapsed(elapsed, T02);
    }
    assert_eq!(q.qsize(), 6);
}

/// Takes six items and checks they are 1..=6 in order.
fn get_six(q: Queue<i32>) -> Result<()> {
    for want in 1..=6 {
        let got = q.get_timeout(LONG)?;
        if got != want {
            return fail(format!("got {got}, expected {want}"));
        }
    }
    Ok(())
}

start_methods! {
    /// a child takes the six items (1..=6, in order); afterwards the queue is empty and
    /// not full.
    fn q_05_child_consumes_all(m) {
        let q = filled_queue_of_six();
        let mut p = start(m, get_six, (q.clone(),));
        join_ok(&mut p);
        assert!(q.empty());
        assert!(!q.full());
        assert_eq!(q.qsize(), 0);
    }
}

/// Puts 2, 3, 4, 5.
fn put_2_to_5(q: Queue<i32>) -> Result<()> {
    for i in 2..=5 {
        q.put(i)?;
    }
    Ok(())
}

start_methods! {
    /// a child puts 2, 3, 4, 5; `get(True, None)`, `get(True)`, `get(timeout=1)` and
    /// `get_nowait()` give them in order (`get`, `get`, `get_timeout(1 s)`, `get_nowait`);
    /// then the queue is empty. The child is joined first: its items are all in the queue
    /// then (CPython waits on an event instead and sleeps).
    fn q_06_get_variants_fifo(m) {
        let q = Queue::new().unwrap();
        let mut p = start(m, put_2_to_5, (q.clone(),));
        join_ok(&mut p);
        assert_eq!(q.qsize(), 4);
        assert_eq!(q.get().unwrap(), 2);
        assert_eq!(q.get().unwrap(), 3);
        assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 4);
        assert_eq!(q.get_nowait().unwrap(), 5);
        assert!(q.empty());
    }
}

/// on the empty queue `get(False)`, `get(False, None)`, `get_nowait()` and
/// `get(False, TIMEOUT2)` raise `queue.Empty` at once: `get_nowait` three times and a zero
/// `get_timeout` give `Err(Empty)` promptly.
#[test]
fn q_07_nonblocking_get_on_empty_is_prompt() {
    let q = Queue::<i32>::with_maxsize(6).unwrap();
    for _ in 0..3 {
        let (r, elapsed) = timed(|| q.get_nowait());
        assert!(matches!(r, Err(Error::Empty)), "{r:?}");
        assert_prompt(elapsed);
    }
    let (r, elapsed) = timed(|| q.get_timeout(Duration::ZERO));
    assert!(matches!(r, Err(Error::Empty)), "{r:?}");
    assert_prompt(elapsed);
}

/// `get(True, TIMEOUT1)` and `get(timeout=TIMEOUT3)` on the empty queue raise
/// `queue.Empty` after the timeout: `get_timeout(0.2 s)` twice.
#[test]
fn q_08_get_timeout_on_empty() {
    let q = Queue::<i32>::with_maxsize(6).unwrap();
    for _ in 0..2 {
        let (r, elapsed) = timed(|| q.get_timeout(T02));
        assert!(matches!(r, Err(Error::Empty)), "{r:?}");
        assert_timeout_elapsed(elapsed, T02);
    }
}

/// `get(True, 0.200)` on an empty unbounded queue raises Empty after at least 0.1 s
/// (CPython's bound); here the 0.19 s..1 s bound of every 0.2 s timeout.
#[test]
fn q_09_get_timeout_elapsed() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let (r, elapsed) = timed(|| q.get_timeout(T02));
    assert!(matches!(r, Err(Error::Empty)), "{r:?}");
    assert!(elapsed >= Duration::from_millis(100));
    assert_timeout_elapsed(elapsed, T02);
}

/// Puts 10..19 and exits at once.
fn put_10_to_19(q: Queue<i32>) -> Result<()> {
    for i in 10..20 {
        q.put(i)?;
    }
    Ok(())
}

start_methods! {
    /// the parent puts 0..9, then a child puts 10..19 and exits; the parent gets 0..19
    /// in order, then `get(False)` is Empty. (CPython needs the child's exit to flush its
    /// feeder; here each put is final when it returns.)
    fn q_10_child_puts_after_parent(m) {
        let q = Queue::new().unwrap();
        for i in 0..10 {
            q.put(i).unwrap();
        }
        let mut p = start(m, put_10_to_19, (q.clone(),));
        for want in 0..20 {
            assert_eq!(q.get_timeout(LONG).unwrap(), want);
        }
        assert!(matches!(q.get_nowait(), Err(Error::Empty)));
        join_ok(&mut p);
        assert!(q.empty());
    }
}

/// `qsize()` goes 0, 1, 2, 1, 0 over two puts and two gets (exact at once here).
#[test]
fn q_11_qsize() {
    let q = Queue::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(5).unwrap();
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), 5);
    assert_eq!(q.qsize(), 0);
}

/// after `close()`, `put('foo')` and `get()` raise `ValueError('Queue <…> is closed')`,
/// on a Queue and a JoinableQueue: here every put form gives `PutError::Closed("foo")` and
/// every get form `Error::Closed`, whose messages say "is closed".
#[test]
fn q_12_closed_queue_put_get() {
    fn check(q: &Queue<String>) {
        q.close();
        let foo = || "foo".to_string();
        for r in [q.put(foo()), q.put_nowait(foo()), q.put_timeout(foo(), T02)] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("is closed"), "{e}");
            assert!(matches!(e, PutError::Closed(ref s) if s == "foo"), "{e:?}");
        }
        for r in [q.get(), q.get_nowait(), q.get_timeout(T02)] {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Closed), "{e:?}");
            assert!(e.to_string().contains("is closed"), "{e}");
        }
    }
    let q = Queue::new().unwrap();
    q.put("before".to_string()).unwrap();
    check(&q);
    let jq = JoinableQueue::new().unwrap();
    check(&jq);
    // A closed get does not wait for its timeout.
    let (_, elapsed) = timed(|| jq.get_timeout(T02));
    assert_prompt(elapsed);
}

/// Q-13 (deliberately different): after `close()` (there is no `join_thread`) `empty()` on a
/// never-used queue is true, as in CPython; on a used one CPython raises
/// `OSError('handle is closed')`, while here `empty()` and `qsize()` keep answering (they
/// read shared memory, no handle to close).
#[test]
fn q_13_empty_after_close() {
    let unused = Queue::<i32>::new().unwrap();
    unused.close();
    assert!(unused.empty());
    assert_eq!(unused.qsize(), 0);

    let used = Queue::new().unwrap();
    used.put(1).unwrap();
    used.put(2).unwrap();
    assert_eq!(used.get().unwrap(), 1);
    used.close();
    assert!(!used.empty());
    assert_eq!(used.qsize(), 1);
    assert!(!used.full());
}

/// after `put(unserialisable)`, `put(True)` works and `get(timeout=30)` is True; with
/// `maxsize=1`, `qsize()==1` after both puts (the failed item holds no slot), and `empty()`
/// after the get. Here the failure is synchronous: the first put gives
/// `PutError::Failed(item, Error::Codec(..))` with the item.
#[test]
fn q_14_unencodable_item_does_not_stop_the_queue() {
    for maxsize in [0, 1] {
        let q = Queue::with_maxsize(maxsize).unwrap();
        match q.put(Item::Bad(7)) {
            Err(PutError::Failed(Item::Bad(7), Error::Codec(_))) => {}
            other => panic!("{other:?}"),
        }
        q.put(Item::Good(true)).unwrap();
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_timeout(LONG).unwrap(), Item::Good(true));
        assert!(q.empty());
    }
}

/// Q-15 (deliberately different): CPython calls `_on_queue_feeder_error(e, obj)` from the
/// feeder thread with the encoding error and the object. With no feeder thread, `put` itself
/// returns both, in `PutError::Failed(obj, e)`, and the queue stays usable.
#[test]
fn q_15_encoding_error_returned_with_the_object() {
    let q = Queue::new().unwrap();
    let (obj, e) = match q.put(Item::Bad(15)) {
        Err(PutError::Failed(obj, e)) => (obj, e),
        other => panic!("{other:?}"),
    };
    assert_eq!(obj, Item::Bad(15));
    assert!(matches!(e, Error::Codec(_)), "{e:?}");
    q.put(Item::Good(false)).unwrap();
    assert_eq!(q.get().unwrap(), Item::Good(false));
}

/// `Queue(0)` is unbounded: 100 puts give `qsize()==100`, never full. (A negative
/// maxsize cannot be written: `maxsize` is a `usize`; one above the crate's limit is an
/// `InvalidArgument`.)
#[test]
fn q_16_maxsize_zero_is_unbounded() {
    for q in [Queue::with_maxsize(0).unwrap(), Queue::new().unwrap()] {
        assert_eq!(q.maxsize(), None);
        for i in 0..100u32 {
            q.put(i).unwrap();
            assert!(!q.full());
        }
        assert_eq!(q.qsize(), 100);
        assert_eq!(drain(&q), (0..100).collect::<Vec<_>>());
    }
    assert!(matches!(Queue::<u8>::with_maxsize(usize::MAX), Err(Error::InvalidArgument(_))));
}

/// Puts a 64 MiB pattern and exits at once.
fn put_64_mib(q: Queue<Vec<u8>>) -> Result<()> {
    q.put(pattern(64, 64 * MIB))?;
    Ok(())
}

/// Q-17 in one process: a 64 MiB `Vec<u8>` is put with no reader running (the put returns: it
/// does not wait for one), counted at once, and comes back intact.
#[test]
fn q_17_64_mib_item_with_no_reader() {
    let q = Queue::new().unwrap();
    let big = pattern(17, 64 * MIB);
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let q = q.clone();
        std::thread::spawn(move || tx.send(q.put(big).map_err(Error::from)).unwrap())
    };
    let put = rx.recv_timeout(LONG).expect("a 64 MiB put with no reader did not return");
    put.unwrap();
    writer.join().unwrap();
    assert_eq!(q.qsize(), 1);
    let got = q.get_timeout(LONG).unwrap();
    check_pattern(17, 64 * MIB, &got).unwrap();
    assert!(q.empty());
}

start_methods! {
    /// Q-17 from a child: a 64 MiB item put by a child that exits at once (joined before any
    /// get) arrives intact.
    fn q_17_64_mib_item_from_child(m) {
        let q = Queue::new().unwrap();
        let mut p = start(m, put_64_mib, (q.clone(),));
        join_ok(&mut p);
        assert_eq!(q.qsize(), 1);
        let got = q.get_timeout(LONG).unwrap();
        check_pattern(64, 64 * MIB, &got).unwrap();
        assert!(q.empty());
    }
}

/// Puts 1 from this grandchild.
fn put_1(q: Queue<i32>) -> Result<()> {
    q.put(1)?;
    Ok(())
}

/// Puts 2, then starts a grandchild (same start method) that puts 1 on the same queue.
fn put_2_then_grandchild(m: StartMethod, q: Queue<i32>) -> Result<()> {
    q.put(2)?;
    run_grandchild(get_context(m).process(put_1, (q.clone(),)))
}

/// Starts and joins a grandchild; an error unless it exited 0.
fn run_grandchild(mut p: Process) -> Result<()> {
    p.start()?;
    p.join()?;
    match p.exitcode() {
        Some(0) => Ok(()),
        code => fail(format!("grandchild exited {code:?}")),
    }
}

start_methods! {
    /// a child puts 2, then its own child puts 1 on the same queue; the parent drains
    /// {1, 2}. (Here even in that order: the grandchild starts after the child's put returned.)
    fn q_19_grandchild_puts_on_the_same_queue(m) {
        let q = Queue::new().unwrap();
        let mut p = start(m, put_2_then_grandchild, (m, q.clone()));
        join_ok(&mut p);
        assert_eq!(q.qsize(), 2);
        let got = drain(&q);
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]));
        assert_eq!(got, [2, 1]);
    }
}

/// Expects `get(block=False)` on the fresh queue to be Empty.
fn get_nowait_expect_empty(q: Queue<i32>) -> Result<()> {
    match q.get_nowait() {
        Err(Error::Empty) => Ok(()),
        other => fail(format!("get_nowait on an empty queue gave {other:?}")),
    }
}

/// Makes a queue and a child of its own that does `get(block=False)` on it.
fn queue_in_child(m: StartMethod) -> Result<()> {
    let q = Queue::<i32>::new()?;
    run_grandchild(get_context(m).process(get_nowait_expect_empty, (q,)))
}

start_methods! {
    /// a child creates a Queue and a child of its own, which does `get(block=False)`:
    /// Empty is handled, both exit 0.
    fn q_20_queue_created_in_child(m) {
        let mut p = start(m, queue_in_child, (m,));
        join_ok(&mut p);
    }
}

// ---------------------------------------------------------------------------------------------
// JQ: JoinableQueue.

/// A JQ-01 worker: `get` → sleep 0.1 s → count it → `task_done`, until `None`.
fn jq_worker(q: JoinableQueue<Option<u32>>, done: Semaphore) -> Result<()> {
    while q.get_timeout(LONG)?.is_some() {
        std::thread::sleep(DELTA);
        done.release()?;
        q.task_done()?;
    }
    Ok(())
}

start_methods! {
    /// JQ-01: four worker processes loop get → sleep 0.1 → task_done; the parent puts 0..9
    /// and `join()` returns once all ten are done (each counted before its `task_done`; some
    /// worker slept three times, so not before 0.3 s); `None` sentinels then stop the
    /// workers, which exit 0.
    fn jq_01_join_with_four_workers(m) {
        let q = JoinableQueue::new().unwrap();
        let done = Semaphore::new(0).unwrap();
        let mut workers: Vec<Process> = (0..4).map(|_| start(m, jq_worker, (q.clone(), done.clone()))).collect();
        let (_, elapsed) = timed(|| {
            for i in 0..10 {
                q.put(Some(i)).unwrap();
            }
            q.join().unwrap();
        });
        assert_eq!(done.get_value(), 10);
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(q.empty());
        assert!(elapsed >= Duration::from_millis(290), "join returned after {elapsed:?}");
        for _ in &workers {
            q.put(None).unwrap();
        }
        for p in &mut workers {
            join_ok(p);
        }
        // The sentinels were taken but, as in CPython, not marked done.
        assert_eq!(q.unfinished_tasks(), 4);
        assert!(!q.join_timeout(Duration::ZERO));
    }
}

/// JQ-02: `task_done()` more times than items put is
/// `ValueError('task_done() called too many times')`.
#[test]
fn jq_02_task_done_too_many_times() {
    let q = JoinableQueue::new().unwrap();
    let e = q.task_done().unwrap_err();
    assert!(matches!(e, Error::TaskDoneTooManyTimes), "{e:?}");
    assert_eq!(e.to_string(), "task_done() called too many times");
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    // One item is still unfinished (put, not got): a task_done for it is accepted, a third is not.
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
    assert_eq!(q.unfinished_tasks(), 0);
}

/// JQ-03: put, get, task_done, then `join()` returns at once.
#[test]
fn jq_03_join_when_all_done_is_prompt() {
    let q = JoinableQueue::new().unwrap();
    q.put("x".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "x");
    q.task_done().unwrap();
    let (r, elapsed) = timed(|| q.join());
    r.unwrap();
    assert_prompt(elapsed);
    let (all_done, elapsed) = timed(|| q.join_timeout(T02));
    assert!(all_done);
    assert_prompt(elapsed);
    // And one put without task_done makes join_timeout wait out its timeout.
    q.put("y".to_string()).unwrap();
    let (all_done, elapsed) = timed(|| q.join_timeout(T02));
    assert!(!all_done);
    assert_timeout_elapsed(elapsed, T02);
}

// ---------------------------------------------------------------------------------------------
// SQ: SimpleQueue.

/// Puts `queue.empty()` twice: True, then False.
fn put_empty_twice(q: SimpleQueue<bool>) -> Result<()> {
    q.put(q.empty())?;
    q.put(q.empty())?;
    Ok(())
}

start_methods! {
    /// SQ-01: a fresh SimpleQueue is empty; a child puts `empty()` twice; then the parent sees
    /// it not empty, gets True then False, and it is empty again.
    fn sq_01_empty(m) {
        let q = SimpleQueue::new().unwrap();
        assert!(q.empty());
        let mut p = start(m, put_empty_twice, (q.clone(),));
        join_ok(&mut p);
        assert!(!q.empty());
        assert!(q.get().unwrap());
        assert!(!q.get().unwrap());
        assert!(q.empty());
    }
}

/// SQ-02: `close()` twice is no error.
#[test]
fn sq_02_close_twice() {
    let q = SimpleQueue::<u8>::new().unwrap();
    q.close();
    q.close();
    assert!(q.is_closed());
}

/// SQ-03: after `close()` both the reader and the writer are closed. There are no connections
/// here: `is_closed()` stands for both, and neither put nor get works on the handle.
#[test]
fn sq_03_closed_after_close() {
    let q = SimpleQueue::<u8>::new().unwrap();
    assert!(!q.is_closed());
    q.close();
    assert!(q.is_closed());
    assert!(matches!(q.put(1), Err(PutError::Closed(1))));
    assert!(matches!(q.get(), Err(Error::Closed)));
}

/// SQ-04 (deliberately different): after `close()` CPython's `get()` and `empty()` raise
/// `OSError('handle is closed')`, even on a never-used queue. Here `get` (and `get_timeout`)
/// give `Error::Closed` at once, used or not, but `empty()` keeps answering.
#[test]
fn sq_04_get_and_empty_after_close() {
    let unused = SimpleQueue::<u8>::new().unwrap();
    unused.close();
    assert!(matches!(unused.get(), Err(Error::Closed)));
    let (r, elapsed) = timed(|| unused.get_timeout(T02));
    assert!(matches!(r, Err(Error::Closed)));
    assert_prompt(elapsed);
    assert!(unused.empty());

    let used = SimpleQueue::new().unwrap();
    used.put(9u8).unwrap();
    used.close();
    assert!(matches!(used.get(), Err(Error::Closed)));
    assert!(!used.empty());
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: many producers and consumers.

/// `(producer, sequence number)`; `None` stops a consumer.
type Tagged = Option<(u32, u32)>;
/// Items each producer puts.
const PER_PRODUCER: u32 = 2000;

fn produce(q: Queue<Tagged>, who: u32) -> Result<()> {
    for seq in 0..PER_PRODUCER {
        q.put(Some((who, seq)))?;
    }
    Ok(())
}

/// Takes items until `None`; fails if a producer's items come out of order.
fn consume(q: &Queue<Tagged>) -> Result<Vec<(u32, u32)>> {
    let mut got = Vec::new();
    let mut last: BTreeMap<u32, u32> = BTreeMap::new();
    while let Some((who, seq)) = q.get_timeout(LONG)? {
        if let Some(prev) = last.insert(who, seq)
            && seq <= prev
        {
            return fail(format!("producer {who}: {seq} came after {prev}"));
        }
        got.push((who, seq));
    }
    Ok(got)
}

fn consume_and_report(q: Queue<Tagged>, report: Connection) -> Result<()> {
    let got = consume(&q)?;
    report.send(&got)
}

start_methods! {
    /// Three producer processes (2000 items each) and two producer threads (as many) put on
    /// one queue while two consumer processes and a consumer thread take from it: every item
    /// is received exactly once, and each consumer sees each producer's items in order.
    fn many_producers_many_consumers(m) {
        let q: Queue<Tagged> = Queue::new().unwrap();
        let mut producers: Vec<Process> = (0..3).map(|who| start(m, produce, (q.clone(), who))).collect();
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let (r, w) = pipe().unwrap();
            consumers.push((start(m, consume_and_report, (q.clone(), w)), r));
        }
        let producer_threads: Vec<_> = (3..5)
            .map(|who| {
                let q = q.clone();
                std::thread::spawn(move || produce(q, who))
            })
            .collect();
        let consumer_thread = {
            let q = q.clone();
            std::thread::spawn(move || consume(&q))
        };
        for t in producer_threads {
            t.join().unwrap().unwrap();
        }
        for p in &mut producers {
            join_ok(p);
        }
        for _ in 0..3 {
            q.put(None).unwrap();
        }
        let mut all: Vec<(u32, u32)> = consumer_thread.join().unwrap().unwrap();
        for (p, r) in &mut consumers {
            assert!(r.poll(Some(LONG)).unwrap(), "no report from a consumer");
            all.extend(r.recv::<Vec<(u32, u32)>>().unwrap());
            join_ok(p);
        }
        assert_eq!(all.len(), 5 * PER_PRODUCER as usize);
        let unique: BTreeSet<(u32, u32)> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "an item was received twice");
        let expected: BTreeSet<(u32, u32)> = (0..5).flat_map(|who| (0..PER_PRODUCER).map(move |s| (who, s))).collect();
        assert_eq!(unique, expected);
        assert!(q.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: variable sizes through the ring.

/// Puts the variable-size stream.
fn put_sizes(q: Queue<Vec<u8>>) -> Result<()> {
    for (i, len) in sizes().into_iter().enumerate() {
        q.put(pattern(i as u64, len))?;
    }
    Ok(())
}

/// Takes the variable-size stream and checks every byte.
fn check_sizes(q: Queue<Vec<u8>>) -> Result<()> {
    for (i, len) in sizes().into_iter().enumerate() {
        let got = q.get_timeout(LONG)?;
        check_pattern(i as u64, len, &got).or_else(fail)?;
    }
    match q.get_nowait() {
        Err(Error::Empty) => Ok(()),
        other => fail(format!("an extra item: {other:?}")),
    }
}

start_methods! {
    /// Items of 0 bytes to 3 MiB (about 50 MiB in all) cross the 1 MiB warm part of the ring
    /// dozens of times, some larger than it: from a child to the parent reading as they come,
    /// then, on a fresh queue, from the parent (all put before anyone reads, so the ring grows
    /// past its warm part) to a child. Every byte is checked.
    fn variable_sizes_cross_the_ring(m) {
        let q = Queue::new().unwrap();
        let mut p = start(m, put_sizes, (q.clone(),));
        check_sizes(q.clone()).unwrap();
        join_ok(&mut p);
        assert!(q.empty());

        let q = Queue::new().unwrap();
        let n = sizes().len();
        put_sizes(q.clone()).unwrap();
        assert_eq!(q.qsize(), n);
        let mut p = start(m, check_sizes, (q.clone(),));
        join_ok(&mut p);
        assert!(q.empty());

        // The child's drain gave back the pages past the warm part: the ring still carries
        // the stream intact afterwards.
        let mut p = start(m, put_sizes, (q.clone(),));
        check_sizes(q.clone()).unwrap();
        join_ok(&mut p);
        assert!(q.empty());
    }
}

/// Items whose encoding is empty (`()`, and an empty `Vec<u8>`) are items all the same:
/// counted, taken one each, and an empty queue is still told apart from one holding them.
#[test]
fn zero_byte_items() {
    let q = Queue::<()>::new().unwrap();
    for _ in 0..1000 {
        q.put(()).unwrap();
    }
    assert_eq!(q.qsize(), 1000);
    assert!(!q.empty());
    for _ in 0..1000 {
        q.get_nowait().unwrap();
    }
    assert!(q.empty());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));

    let q = Queue::<Vec<u8>>::with_maxsize(2).unwrap();
    q.put(Vec::new()).unwrap();
    q.put(Vec::new()).unwrap();
    assert!(q.full());
    assert!(matches!(q.put_nowait(Vec::new()), Err(PutError::Full(v)) if v.is_empty()));
    assert_eq!(q.get().unwrap(), Vec::<u8>::new());
    assert_eq!(q.qsize(), 1);
}

/// An unbounded queue never makes `put` wait, even once its consumers have read part of
/// the ring: after one 600 KiB item is put and got, thirty 100 KiB puts with no reader
/// running all go in (3 MiB: more than the warm part), and come back in order.
///
/// (This once failed: the ring went back to byte 0 behind the head, and then had only the
/// space up to it; producers now jump past the consumers' lap instead.)
#[test]
fn unbounded_put_never_waits_after_a_get() {
    let q = Queue::new().unwrap();
    q.put(vec![0u8; 600 * 1024]).unwrap();
    q.get().unwrap();
    for i in 0..30u8 {
        let r = q.put_timeout(pattern(u64::from(i), 100 * 1024), Duration::from_secs(5));
        assert!(r.is_ok(), "put {i} on an unbounded queue: {r:?} (qsize {})", q.qsize());
    }
    for i in 0..30u8 {
        check_pattern(u64::from(i), 100 * 1024, &q.get_nowait().unwrap()).unwrap();
    }
}

/// `put_nowait` on an unbounded queue never gives `Full` (CPython's `put(obj, False)` raises
/// Full only when `maxsize` items are in it): two threads doing 200 000 `put_nowait`s each
/// put all 400 000.
///
/// (This once failed: a zero deadline also bounded the wait for the put lock, so a
/// `put_nowait` that found another producer copying its record gave `Full`.)
#[test]
fn put_nowait_on_unbounded_queue_never_full() {
    let q = Queue::<u64>::new().unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || (0..200_000u64).filter(|&i| q.put_nowait(i).is_err()).count())
        })
        .collect();
    let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(refused, 0, "put_nowait gave Full {refused} times on an unbounded queue");
    assert_eq!(q.qsize(), 400_000);
}

/// Puts thirty 100 KiB items (giving up after 5 s each) and exits.
fn put_3_mib(q: Queue<Vec<u8>>) -> Result<()> {
    for i in 0..30u8 {
        q.put_timeout(pattern(u64::from(i), 100 * 1024), Duration::from_secs(5))?;
    }
    Ok(())
}

/// A parent joins its child before reading what the child put (the pattern CPython's docs
/// warn against, which a queue whose puts never wait makes safe), on a queue already used
/// once. Fork only: what is checked is the ring, whatever the start method.
#[test]
fn join_child_before_reading_a_used_queue() {
    common::guarded(|| {
        let q = Queue::new().unwrap();
        q.put(vec![0u8; 600 * 1024]).unwrap();
        q.get().unwrap();
        let mut p = start(StartMethod::Fork, put_3_mib, (q.clone(),));
        join_ok(&mut p);
        assert_eq!(q.qsize(), 30);
    });
}

/// Items that go through postcard (not the bytes fast path), of 0 to about 1.2 MiB encoded,
/// between two threads: each comes back equal.
#[test]
fn variable_sizes_postcard_items() {
    type Rec = (u64, Vec<u16>, String);
    fn rec(i: u64) -> Rec {
        let n = (i.wrapping_mul(2_654_435_761) % 400_000) as usize;
        let words = (0..n).map(|k| (k as u64 ^ i) as u16).collect();
        (i, words, "é".repeat((i % 50) as usize))
    }
    let q: Queue<Rec> = Queue::new().unwrap();
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || (0..40).try_for_each(|i| q.put(rec(i)).map_err(Error::from)))
    };
    for i in 0..40 {
        let got = q.get_timeout(LONG).unwrap();
        assert!(got == rec(i), "record {i} differs");
    }
    producer.join().unwrap().unwrap();
    assert!(q.empty());
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: a bounded queue and a slow consumer.

/// Sleeps 0.3 s, then takes `n` items, 50 ms apart, and reports them.
fn slow_consumer(q: Queue<u32>, n: u32, report: Connection) -> Result<()> {
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(q.get_timeout(LONG)?);
        std::thread::sleep(Duration::from_millis(50));
    }
    report.send(&got)
}

start_methods! {
    /// A `Queue(3)`: full after three puts; `put_timeout` times out after 0.2 s with the item
    /// back and `put_nowait` fails at once; once a slow consumer (asleep 0.3 s, then one get
    /// every 50 ms) is started, `put` waits for it (at least 0.3 s) and each later put goes in
    /// as it makes room. The consumer gets 0..12 in order; the queue never holds more than 3.
    fn bounded_queue_slow_consumer(m) {
        let q = Queue::with_maxsize(3).unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        assert!(q.full());
        let (r, elapsed) = timed(|| q.put_timeout(3, T02));
        assert!(matches!(r, Err(PutError::Full(3))), "{r:?}");
        assert_timeout_elapsed(elapsed, T02);
        let (r, elapsed) = timed(|| q.put_nowait(3));
        assert!(matches!(r, Err(PutError::Full(3))), "{r:?}");
        assert_prompt(elapsed);

        let (report, w) = pipe().unwrap();
        let (mut p, elapsed) = timed(|| {
            let p = start(m, slow_consumer, (q.clone(), 12, w));
            q.put(3).unwrap();
            p
        });
        assert!(elapsed >= Duration::from_millis(290), "put on a full queue returned after {elapsed:?}");
        for i in 4..12 {
            assert!(q.qsize() <= 3);
            if i % 2 == 0 {
                q.put(i).unwrap();
            } else {
                q.put_timeout(i, LONG).unwrap();
            }
            assert!(q.qsize() <= 3);
        }
        assert!(report.poll(Some(LONG)).unwrap(), "no report from the consumer");
        assert_eq!(report.recv::<Vec<u32>>().unwrap(), (0..12).collect::<Vec<_>>());
        join_ok(&mut p);
        assert!(q.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: a queue received as another item type.

/// A queue sent as `Queue<String>` and decoded in the child as `Queue<U>`: what a child would
/// decode if its parameter type disagreed with its parent's. Keeps the decoding's outcome
/// rather than failing the child's arguments, so that the child can report it.
enum Retyped<U> {
    Sent(Queue<String>),
    Received(std::result::Result<Queue<U>, String>),
}

impl<U> Serialize for Retyped<U> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Retyped::Sent(q) => q.serialize(s),
            Retyped::Received(_) => Err(serde::ser::Error::custom("a received queue is not sent on")),
        }
    }
}

impl<'de, U: Serialize + DeserializeOwned + 'static> Deserialize<'de> for Retyped<U> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Retyped<U>, D::Error> {
        Ok(Retyped::Received(Queue::<U>::deserialize(d).map_err(|e| e.to_string())))
    }
}

/// Reports `Err(decoding error)`, or `Ok(what get_nowait gave)` if the queue was accepted.
fn receive_as_u64(report: Connection, q: Retyped<u64>) -> Result<()> {
    match q {
        Retyped::Received(Err(e)) => report.send(&Err::<String, String>(e)),
        Retyped::Received(Ok(q)) => report.send(&Ok::<String, String>(format!("{:?}", q.get_nowait()))),
        Retyped::Sent(_) => fail("the queue was not decoded".into()),
    }
}

/// The control: the same queue received as `Queue<String>` works.
fn receive_as_string(report: Connection, q: Retyped<String>) -> Result<()> {
    match q {
        Retyped::Received(Ok(q)) => report.send(&Ok::<String, String>(q.get_timeout(LONG)?)),
        Retyped::Received(Err(e)) => report.send(&Err::<String, String>(e)),
        Retyped::Sent(_) => fail("the queue was not decoded".into()),
    }
}

/// A `Queue<String>` passed to a child that decodes it as `Queue<u64>` is refused there (an
/// `Err` from decoding, not a queue reading strings as numbers), and the parent's queue is
/// untouched; received as `Queue<String>` it works. Spawn and forkserver only: a fork child
/// gets the parent's values as they are, typed by the compiler, so the mismatch cannot arise.
fn retyped_queue_is_refused(m: StartMethod) {
    let q = Queue::new().unwrap();
    q.put("not a number".to_string()).unwrap();
    let (r, w) = pipe().unwrap();
    let mut p = start(m, receive_as_u64, (w, Retyped::<u64>::Sent(q.clone())));
    let seen: std::result::Result<String, String> = r.recv().unwrap();
    join_ok(&mut p);
    assert!(seen.is_err(), "a Queue<String> was accepted as a Queue<u64>: {seen:?}");
    assert_eq!(q.qsize(), 1);

    let (r, w) = pipe().unwrap();
    let mut p = start(m, receive_as_string, (w, Retyped::<String>::Sent(q.clone())));
    let seen: std::result::Result<String, String> = r.recv().unwrap();
    join_ok(&mut p);
    assert_eq!(seen, Ok("not a number".to_string()));
    assert!(q.empty());
}

mod retyped_queue_is_refused {
    #[test]
    fn spawn() {
        crate::common::run_case(multiprocess::StartMethod::Spawn, super::retyped_queue_is_refused)
    }
    #[test]
    fn forkserver() {
        crate::common::run_case(multiprocess::StartMethod::ForkServer, super::retyped_queue_is_refused)
    }
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: PutError and closing.

/// `PutError` hands the item back in every variant, from every queue type and put form:
/// `Full` (bounded and full), `Closed` (after `close`), `Failed` (not encodable, or larger
/// than a queue takes); `into_inner` gives it, and `?` maps each to its `Error`.
#[test]
fn put_error_hands_back_the_item() {
    let s = |t: &str| t.to_string();
    // Full.
    let q = Queue::with_maxsize(1).unwrap();
    q.put(s("in")).unwrap();
    assert!(matches!(q.put_nowait(s("a")), Err(PutError::Full(ref x)) if x == "a"));
    assert!(matches!(q.put_timeout(s("b"), Duration::from_millis(10)), Err(PutError::Full(ref x)) if x == "b"));
    let jq = JoinableQueue::with_maxsize(1).unwrap();
    jq.put(s("in")).unwrap();
    let e = jq.put_nowait(s("c")).unwrap_err();
    assert_eq!(e.to_string(), "queue is full");
    assert_eq!(format!("{e:?}"), "Full(..)");
    assert_eq!(e.into_inner(), "c");
    assert!(matches!(Error::from(jq.put_nowait(s("d")).unwrap_err()), Error::Full));
    // A full queue refusing an item does not count it.
    assert_eq!(jq.unfinished_tasks(), 1);

    // Closed.
    q.close();
    for e in [q.put(s("e")), q.put_nowait(s("e")), q.put_timeout(s("e"), T02)] {
        let e = e.unwrap_err();
        assert!(matches!(e, PutError::Closed(ref x) if x == "e"), "{e:?}");
        assert!(matches!(Error::from(e), Error::Closed));
    }
    let sq = SimpleQueue::new().unwrap();
    sq.close();
    let e = sq.put(s("f")).unwrap_err();
    assert_eq!(e.to_string(), "queue is closed");
    assert_eq!(e.into_inner(), "f");

    // Failed: not encodable.
    let q = Queue::new().unwrap();
    let sq = SimpleQueue::new().unwrap();
    let jq = JoinableQueue::new().unwrap();
    for e in [q.put(Item::Bad(1)), sq.put(Item::Bad(1)), jq.put(Item::Bad(1))] {
        let e = e.unwrap_err();
        assert!(e.to_string().starts_with("item not put"), "{e}");
        assert!(matches!(e, PutError::Failed(Item::Bad(1), Error::Codec(_))), "{e:?}");
        assert_eq!(e.into_inner(), Item::Bad(1));
    }
    assert!(matches!(Error::from(q.put(Item::Bad(2)).unwrap_err()), Error::Codec(_)));
    assert_eq!(jq.unfinished_tasks(), 0);
    assert!(q.empty() && sq.empty() && jq.empty());

    // Failed: too large. 2 GiB of zeroes are only address space until written.
    let q = Queue::new().unwrap();
    let huge = vec![0u8; 2 << 30];
    match q.put_nowait(huge) {
        Err(PutError::Failed(item, Error::InvalidArgument(_))) => assert_eq!(item.len(), 2 << 30),
        other => panic!("{other:?}"),
    }
    assert!(q.empty());
    q.put(vec![1, 2, 3]).unwrap();
    assert_eq!(q.get().unwrap(), [1, 2, 3]);
}

/// Waits for `go`, then takes the parent's item from its own handle and puts 42.
fn use_after_parent_closed(q: Queue<i32>, go: Event) -> Result<()> {
    if !go.wait(Some(LONG)) {
        return fail("no go".into());
    }
    match q.get_nowait()? {
        1 => {}
        other => return fail(format!("got {other}")),
    }
    q.put(42)?;
    Ok(())
}

start_methods! {
    /// `close()` is per process: once the parent closes its handle, its puts and gets give
    /// `Closed` (at once, even with a timeout), while the child's handle, received earlier,
    /// still gets and puts; the parent still sees the count.
    fn close_is_per_process(m) {
        let q = Queue::new().unwrap();
        q.put(1).unwrap();
        let go = Event::new().unwrap();
        let mut p = start(m, use_after_parent_closed, (q.clone(), go.clone()));
        q.close();
        let clone = q.clone();
        assert!(clone.is_closed());
        assert!(matches!(clone.get(), Err(Error::Closed)));
        let (r, elapsed) = timed(|| clone.get_timeout(T02));
        assert!(matches!(r, Err(Error::Closed)));
        assert_prompt(elapsed);
        assert!(matches!(q.put(2), Err(PutError::Closed(2))));
        go.set();
        join_ok(&mut p);
        assert_eq!(q.qsize(), 1);
        assert!(!q.empty());
    }
}

/// Reports whether its handle is closed, and what a get gives.
fn report_closed(q: Queue<i32>, report: Connection) -> Result<()> {
    report.send(&(q.is_closed(), format!("{:?}", q.get_nowait())))
}

/// A handle closed before it is passed to a child is closed in the child too, under every
/// start method alike. Under fork the child's handle is the parent's, closed; CPython's is
/// closed there too (and under spawn CPython cannot pass a closed queue at all: its pipe ends
/// are closed).
fn closed_handle_passed_to_child(m: StartMethod) {
    let q = Queue::new().unwrap();
    q.put(1).unwrap();
    q.close();
    let (r, w) = pipe().unwrap();
    let mut p = start(m, report_closed, (q.clone(), w));
    let (closed, got): (bool, String) = r.recv().unwrap();
    join_ok(&mut p);
    assert_eq!((closed, got.as_str()), (true, "Err(Closed)"));
    assert_eq!(q.qsize(), 1);
}

mod closed_handle_passed_to_child {
    use multiprocess::StartMethod;
    #[test]
    fn fork() {
        crate::common::run_case(StartMethod::Fork, super::closed_handle_passed_to_child)
    }
    #[test]
    fn spawn() {
        crate::common::run_case(StartMethod::Spawn, super::closed_handle_passed_to_child)
    }
    #[test]
    fn forkserver() {
        crate::common::run_case(StartMethod::ForkServer, super::closed_handle_passed_to_child)
    }
}

// ---------------------------------------------------------------------------------------------
// Beyond CPython: leaks.

/// This process's windows of the heap's arenas (memfds named `multiprocess-heap`): a queue's
/// ring has windows of its own.
fn queue_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| l.contains("multiprocess-heap")).count()
}

/// This process's address space, in kB (`VmSize`).
fn vm_size_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 300 create/use/drop cycles of the three queue types leave no descriptor, no mapping and
/// no address space behind (each queue maps 1 MiB of it at least: a leak would show at once).
/// Exact only when the test has the process to itself (`cargo nextest`); under plain
/// `cargo test` other tests' queues come and go meanwhile, and only a loose bound is checked.
#[test]
fn leaks_create_drop_300() {
    // The first queue makes the arena this process keeps (one descriptor).
    drop(Queue::<u8>::new().unwrap());
    let fds_before = __private::open_fds().unwrap();
    let maps_before = queue_mappings();
    let vm_before = vm_size_kb();
    for i in 0..300u32 {
        let q = Queue::with_maxsize(2).unwrap();
        let sq = SimpleQueue::new().unwrap();
        let jq = JoinableQueue::new().unwrap();
        q.clone().put(i).unwrap();
        sq.put(vec![i as u8; 100]).unwrap();
        jq.put(Some(i)).unwrap();
        assert_eq!(q.get().unwrap(), i);
        assert_eq!(sq.clone().get().unwrap().len(), 100);
        assert_eq!(jq.get().unwrap(), Some(i));
        jq.task_done().unwrap();
        if i == 0 && common::alone_in_process() {
            assert!(queue_mappings() >= maps_before + 3, "the queue segments are not where expected");
        }
    }
    if common::alone_in_process() {
        assert_eq!(__private::open_fds().unwrap(), fds_before, "descriptors grew");
        assert_eq!(queue_mappings(), maps_before, "mappings grew");
        let grown = vm_size_kb().saturating_sub(vm_before);
        assert!(grown < 256 * 1024, "address space grew by {grown} kB");
    } else {
        assert!(queue_mappings() < maps_before + 100, "mappings grew: {} -> {}", maps_before, queue_mappings());
    }
}

/// This process's resident memory in the heap's arenas (queues, here), in kB: proportional (`Pss`), since a ring's pages may show in several of its windows (from `/proc/self/smaps`).
fn queue_rss_kb() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_queue = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_queue = line.contains("multiprocess-heap");
        } else if in_queue && first == "Pss:" {
            total += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    total
}

/// A queue that held 48 MiB gives the memory back once drained: at most the warm part and
/// the 8 MiB kept past it stay resident (the ring's documented trim). Measured only when the
/// test has the process to itself; under plain `cargo test` other tests' queues count too.
///
/// (This once failed: the ring did not start on a page, so `madvise` refused the range.)
#[test]
fn drained_queue_gives_memory_back() {
    let q = Queue::new().unwrap();
    for i in 0..48u64 {
        q.put(pattern(i, MIB)).unwrap();
    }
    let full = queue_rss_kb();
    for i in 0..48u64 {
        check_pattern(i, MIB, &q.get_nowait().unwrap()).unwrap();
    }
    assert!(q.empty());
    let drained = queue_rss_kb();
    if common::alone_in_process() {
        assert!(full >= 48 * 1024, "48 MiB queued but only {full} kB resident");
        assert!(drained <= 16 * 1024, "{drained} kB still resident after the drain (from {full} kB)");
    }
}
