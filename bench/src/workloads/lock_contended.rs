//! `lock_contended`: two processes each do `lock; counter += 1; unlock` 100,000 times on one
//! shared counter; the final count must be exact (it checks mutual exclusion: the increment
//! is a plain load and store, so only the lock keeps increments from being lost).
//!
//! - multiprocess: a `Lock`, and (until `RawValue` exists) a counter in a small `MAP_SHARED`
//!   mapping the bench makes, an `AtomicU64` read and written with relaxed loads and stores.
//!   The partner child is started by fork (not timed).
//! - CPython: `Lock()` and `RawValue('i')`, `acquire(); counter.value += 1; release()`.
//! - limit: a `PTHREAD_PROCESS_SHARED` pthread mutex and a counter in a `MAP_SHARED` page, on
//!   cache lines of their own (as the other two sides have them), with a raw fork child.
//!
//! Each process does a few untimed increments first, then both start together from a gate;
//! the clock runs until both are done. Contention needs two CPUs: the processes are pinned to
//! two different ones (the same one only on a machine with a single CPU).

use super::partner::{child_setup, timed_with_partner};
use super::{Config, Goal, PySide, Row, Side, Unit, py_args};
use crate::limit::sync as raw;
use crate::pin::{PinGuard, Placement};
use crate::report::num;
use crate::shm::{Gate, Line, SharedMap, Zeroable};
use multiprocess::{Lock, StartMethod, get_context};
use std::sync::atomic::{AtomicU64, Ordering};

pub const NAME: &str = "lock_contended";

/// What the library side shares besides the lock.
#[repr(C)]
struct Page {
    counter: Line<AtomicU64>,
    gate: Gate,
}

// SAFETY: atomics only; zero is a count of zero and a closed gate.
unsafe impl Zeroable for Page {}

/// `k` increments under `lock`.
fn increment(lock: &Lock, counter: &AtomicU64, k: u32) -> multiprocess::Result<()> {
    for _ in 0..k {
        lock.acquire()?;
        let v = counter.load(Ordering::Relaxed);
        counter.store(v + 1, Ordering::Relaxed);
        lock.release()?;
    }
    Ok(())
}

/// The partner child: warm up, wait at the gate, do its share.
fn contender(lock: Lock, page: usize, warmup: u32, n: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    // SAFETY: the parent made the mapping before it forked this child (fork start method:
    // same address space layout) and keeps it mapped until it has joined this child.
    let page = unsafe { SharedMap::<Page>::at(page) };
    increment(&lock, &page.counter, warmup).map_err(|e| format!("warm-up: {e}"))?;
    if !page.gate.arrive() {
        return Ok(()); // the parent gave up
    }
    let result = increment(&lock, &page.counter, n);
    page.gate.finish();
    result.map_err(|e| e.to_string())
}

/// One round of the library side: operations per second, both processes together.
fn ours(warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _pin = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let lock = Lock::new().map_err(|e| format!("Lock::new: {e}"))?;
    let page = SharedMap::<Page>::new().map_err(|e| format!("mmap: {e}"))?;
    let mut p =
        get_context(StartMethod::Fork).process(contender, (lock.clone(), page.addr(), warmup, n, placement.child));
    p.start().map_err(|e| format!("start: {e}"))?;
    let work = |k| increment(&lock, &page.counter, k).map_err(|e| e.to_string());
    let elapsed = match work(warmup) {
        Ok(()) => timed_with_partner(&page.gate, &mut p, || work(n))?,
        Err(e) => {
            page.gate.abort();
            let _ = p.kill();
            let _ = p.join();
            return Err(e);
        }
    };
    let expected = 2 * u64::from(warmup + n);
    match page.counter.load(Ordering::Relaxed) {
        c if c == expected => Ok(2.0 * f64::from(n) / elapsed.as_secs_f64()),
        c => Err(format!("count {c}, expected {expected}: mutual exclusion failed")),
    }
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let Some(placement) = cfg.two_cpus() else { return Vec::new() };
    let n = cfg.iters(100_000, 10_000);
    let warmup = n / 100;
    let id = if placement.same_core() { "same-core" } else { "cross-core" };
    vec![Row {
        id: format!("{NAME}/{id}"),
        workload: NAME,
        variant: format!("Lock, 2 processes × {}, {}", num(f64::from(n)), placement.describe()),
        unit: Unit::OpsPerSec,
        placement: Some(placement),
        ours: Some(Side {
            label: "Lock + counter in a MAP_SHARED page".into(),
            measure: Box::new(move || ours(warmup, n, placement)),
        }),
        cpython: Some(PySide::new("Lock() + RawValue('i')", py_args(NAME, "lock", n, warmup, Some(placement)))),
        limit: Some(Side {
            label: "process-shared pthread mutex + counter, MAP_SHARED".into(),
            measure: Box::new(move || raw::pthread_contended(raw::Counter::U64, warmup, n, placement)),
        }),
        goal: Some(Goal::FasterThanCPython(30.0)),
        note: None,
    }]
}
