//! `value_increment`: two processes each add 1 to one shared `Value<f64>` 100,000 times, each
//! increment under the value's own lock; the final value must be exact.
//!
//! - multiprocess: `Value::new(0.0)`, `*v.lock()? += 1.0` (the guard holds the value's
//!   process-shared `RLock`). The partner child is started by fork (not timed).
//! - CPython: `Value('d', 0.0)`, `with v.get_lock(): v.value += 1` (what CPython's docs
//!   advise; `v.value` takes the same `RLock` again inside).
//! - limit: a `PTHREAD_PROCESS_SHARED` pthread mutex and a double in a `MAP_SHARED` page (the
//!   `lock_contended` limit with a double for a counter), with a raw fork child.
//!
//! Each process does a few untimed increments first, then both start together from a gate;
//! the clock runs until both are done. The two processes are pinned to two CPUs (one on a
//! machine with a single CPU), as in `lock_contended`.

use super::partner::{child_setup, timed_with_partner};
use super::{Config, PySide, Row, Side, Unit, py_args};
use crate::limit::sync as raw;
use crate::pin::{PinGuard, Placement};
use crate::report::num;
use crate::shm::{Gate, SharedMap};
use multiprocess::{StartMethod, Value, get_context};

pub const NAME: &str = "value_increment";

/// `k` increments of `v`, each under its lock.
fn increment(v: &Value<f64>, k: u32) -> multiprocess::Result<()> {
    for _ in 0..k {
        *v.lock()? += 1.0;
    }
    Ok(())
}

/// The partner child: warm up, wait at the gate, do its share.
fn contender(v: Value<f64>, gate: usize, warmup: u32, n: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    // SAFETY: the parent made the mapping before it forked this child (fork start method:
    // same address space layout) and keeps it mapped until it has joined this child.
    let gate = unsafe { SharedMap::<Gate>::at(gate) };
    increment(&v, warmup).map_err(|e| format!("warm-up: {e}"))?;
    if !gate.arrive() {
        return Ok(()); // the parent gave up
    }
    let result = increment(&v, n);
    gate.finish();
    result.map_err(|e| e.to_string())
}

/// One round of the library side: operations per second, both processes together.
fn ours(warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _pin = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let v = Value::new(0.0f64).map_err(|e| format!("Value::new: {e}"))?;
    let gate = SharedMap::<Gate>::new().map_err(|e| format!("mmap: {e}"))?;
    let mut p = get_context(StartMethod::Fork).process(contender, (v.clone(), gate.addr(), warmup, n, placement.child));
    p.start().map_err(|e| format!("start: {e}"))?;
    let work = |k| increment(&v, k).map_err(|e| e.to_string());
    let elapsed = match work(warmup) {
        Ok(()) => timed_with_partner(&gate, &mut p, || work(n))?,
        Err(e) => {
            gate.abort();
            let _ = p.kill();
            let _ = p.join();
            return Err(e);
        }
    };
    let expected = 2.0 * f64::from(warmup + n);
    match v.get() {
        x if x == expected => Ok(2.0 * f64::from(n) / elapsed.as_secs_f64()),
        x => Err(format!("value {x}, expected {expected}: increments were lost")),
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
        variant: format!("Value<f64>, 2 processes × {}, {}", num(f64::from(n)), placement.describe()),
        unit: Unit::OpsPerSec,
        placement: Some(placement),
        ours: Some(Side { label: "*v.lock()? += 1.0".into(), measure: Box::new(move || ours(warmup, n, placement)) }),
        cpython: Some(PySide::new(
            "Value('d'), with v.get_lock(): v.value += 1",
            py_args(NAME, "value", n, warmup, Some(placement)),
        )),
        limit: Some(Side {
            label: "process-shared pthread mutex + double, MAP_SHARED".into(),
            measure: Box::new(move || raw::pthread_contended(raw::Counter::F64, warmup, n, placement)),
        }),
        goal: None,
        note: None,
    }]
}
