//! `array_fill_sum`: an `Array<f64>` of 10,000,000 is created, filled by a child, and summed
//! by the parent. Every element is set to 1.0, so the sum must be exactly the length.
//!
//! - multiprocess: `Array::<f64>::new(n)`; the child fills `&mut *arr.lock()?` with
//!   `fill(1.0)`, the parent sums `&*arr.lock()?` (eight running sums).
//! - CPython: `Array('d', n)`; the child fills a `memoryview(arr.get_obj()).cast('B')
//!   .cast('d')` under `with arr.get_lock():` by doubling slice copies (`mv[0] = 1.0`, then
//!   `mv[k:2k] = mv[:k]`: 24 `memmove`s, the fastest stdlib way found, 10× faster than
//!   `mv[:] = array('d', [1.0]) * n`); the parent takes `sum(mv)` under the lock.
//! - limit: `mmap` of `MAP_SHARED | MAP_ANONYMOUS` memory, a raw fork child fills it, the
//!   parent sums it, with the same fill and sum code as ours.
//!
//! The child (started by fork on every side, not timed) times its own fill. One run per round
//! and side gives four rows: the headline, create + fill + sum in ms, then each phase (create
//! in µs, fill and sum in GB/s). Not pinned.

use super::phases;
use super::{Config, PySide, Row, Side, Unit, py_args};
use crate::limit::memory::{self as raw, FILL, fill_sum_figures, sum_f64};
use crate::report::num;
use crate::shm::SharedMap;
use multiprocess::{Array, StartMethod, get_context};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const NAME: &str = "array_fill_sum";

/// The child: fills the array under its lock, and leaves the time it took (ns) in the word
/// at `fill_ns`.
fn filler(arr: Array<f64>, fill_ns: usize) -> Result<(), String> {
    // SAFETY: the parent made the mapping before it forked this child (fork start method:
    // same address space layout) and keeps it mapped until it has joined this child.
    let fill_ns = unsafe { SharedMap::<AtomicU64>::at(fill_ns) };
    let t = Instant::now();
    arr.lock().map_err(|e| format!("lock: {e}"))?.fill(FILL);
    fill_ns.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

/// One round of the library side: the figures of [`fill_sum_figures`].
fn ours(len: usize) -> Result<Vec<f64>, String> {
    let fill_ns = SharedMap::<AtomicU64>::new().map_err(|e| format!("mmap: {e}"))?;
    let t = Instant::now();
    let arr = Array::<f64>::new(len).map_err(|e| format!("Array::new: {e}"))?;
    let create_s = t.elapsed().as_secs_f64();
    let mut p = get_context(StartMethod::Fork).process(filler, (arr.clone(), fill_ns.addr()));
    p.start().map_err(|e| format!("start: {e}"))?;
    super::partner::join_ok(&mut p)?;
    let fill_s = fill_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let t = Instant::now();
    let total = sum_f64(&arr.lock().map_err(|e| format!("lock: {e}"))?);
    let sum_s = t.elapsed().as_secs_f64();
    if total != len as f64 {
        return Err(format!("sum {total}, expected {len}"));
    }
    Ok(fill_sum_figures(len, create_s, fill_s, sum_s))
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let len = cfg.iters(10_000_000, 1_000_000) as usize;
    let mb = (len * 8) as f64 / 1e6;
    let variant = format!("Array<f64> of {}", num(len as f64));
    let args = py_args(NAME, "array", len as u32, 0, None);
    // (id, what, unit, CPython's field)
    let phases = [
        ("total", format!("{variant}: create + fill in a child + sum"), Unit::Millis, "value"),
        ("create", format!("{variant}: create"), Unit::Micros, "create_us"),
        ("fill", format!("{variant} ({} MB): fill in a child", num(mb)), Unit::GBPerSec, "fill_gbps"),
        ("sum", format!("{variant} ({} MB): sum in the parent", num(mb)), Unit::GBPerSec, "sum_gbps"),
    ];
    let ours_m = phases::split(phases.len(), move || ours(len));
    let limit_m = phases::split(phases.len(), move || raw::mmap_fill_sum(len));
    let note_create = "CPython's Array() zeroes its memory as it creates it (a memset in RawArray), so the page \
                       faults of a new mapping fall in its create; ours and the limit's fall in the child's fill. \
                       Compare the totals.";
    phases
        .into_iter()
        .zip(ours_m.into_iter().zip(limit_m))
        .map(|((id, variant, unit, field), (ours_m, limit_m))| Row {
            id: format!("{NAME}/{id}"),
            workload: NAME,
            variant,
            unit,
            placement: None,
            ours: Some(Side { label: "Array::<f64>::new, fill(1.0) / sum under lock()".into(), measure: ours_m }),
            cpython: Some(PySide {
                label: "Array('d'), memoryview doubling copy / sum(mv) under get_lock()".into(),
                args: args.clone(),
                field,
            }),
            limit: Some(Side { label: "mmap MAP_SHARED, raw fork child fills".into(), measure: limit_m }),
            goal: None,
            note: (id == "create").then(|| note_create.to_string()),
        })
        .collect()
}
