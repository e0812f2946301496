//! `lock_uncontended`: `acquire` + `release` of a lock nobody else wants, in one process.
//!
//! - multiprocess: `Lock::acquire()` + `Lock::release()`, each result checked.
//! - CPython: `multiprocessing.Lock()`'s `acquire()` + `release()` in a Python loop.
//! - limit: `pthread_mutex_lock` + `pthread_mutex_unlock` of a `PTHREAD_PROCESS_SHARED`
//!   mutex in a `MAP_SHARED` page.
//!
//! Not pinned: one process, nothing to hand over.

use super::{Config, Goal, PySide, Row, Side, Unit, py_args};
use crate::limit::sync as raw;
use multiprocess::Lock;
use std::time::Instant;

pub const NAME: &str = "lock_uncontended";

/// One round of the library's pairs: ns per `acquire` + `release`.
fn ours(warmup: u32, n: u32) -> Result<f64, String> {
    let lock = Lock::new().map_err(|e| format!("Lock::new: {e}"))?;
    let pair = || -> multiprocess::Result<()> {
        lock.acquire()?;
        lock.release()
    };
    let e = |err: multiprocess::Error| format!("acquire/release: {err}");
    (0..warmup).try_for_each(|_| pair()).map_err(e)?;
    let t = Instant::now();
    let result = (0..n).try_for_each(|_| pair());
    let elapsed = t.elapsed();
    result.map_err(e)?;
    Ok(elapsed.as_secs_f64() * 1e9 / f64::from(n))
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let n = cfg.iters(5_000_000, 200_000);
    let py_n = cfg.iters(1_000_000, 50_000);
    let warmup = n / 10;
    vec![Row {
        id: format!("{NAME}/lock"),
        workload: NAME,
        variant: "Lock, one process".into(),
        unit: Unit::NanosPerPair,
        placement: None,
        ours: Some(Side { label: "Lock acquire + release".into(), measure: Box::new(move || ours(warmup, n)) }),
        cpython: Some(PySide::new("Lock()", py_args(NAME, "lock", py_n, py_n / 10, None))),
        limit: Some(Side {
            label: "process-shared pthread mutex in a MAP_SHARED page".into(),
            measure: Box::new(move || raw::pthread_uncontended(warmup, n)),
        }),
        goal: Some(Goal::AtMost(20.0)),
        note: None,
    }]
}
