//! `shared_memory`: a named segment of 1 MiB is created, attached to by name, closed (both
//! handles) and unlinked, in one process, many times; µs for each step, one row per step
//! (the four rows share one run per round and side).
//!
//! - multiprocess: `SharedMemory::builder().sparse(true).create(1 << 20)` (a generated name,
//!   registered with the resource tracker, as CPython's default; sparse, as CPython's),
//!   `SharedMemory::open(name)`, `close()` on both, `unlink()` (which tells the tracker too).
//!   A fifth row times the default `SharedMemory::create`, which allocates the whole segment
//!   at creation (so that a full `/dev/shm` is an error then, not a SIGBUS later), beside
//!   CPython's sparse create.
//! - CPython: `shared_memory.SharedMemory(create=True, size=1 << 20)`, `SharedMemory(name)`
//!   (which in CPython before 3.13 registers with the tracker as well), `close()` on both,
//!   `unlink()`.
//! - limit: `shm_open(O_CREAT | O_EXCL)` + `ftruncate` + `mmap`; `shm_open` + `mmap`;
//!   `munmap` + `close` (each handle); `shm_unlink`. No name to generate, no tracker, no
//!   `fstat` for the size.
//!
//! Close is per handle (the two closes of a cycle, halved). Nothing is left in `/dev/shm`:
//! every side unlinks each name, also on failure (ours and CPython's trackers too).

use super::phases;
use super::{Config, PySide, Row, Side, Unit, py_args};
use crate::limit::memory as raw;
use multiprocess::SharedMemory;
use std::time::Instant;

pub const NAME: &str = "shared_memory";

const SIZE: usize = 1 << 20;

/// One cycle of the library side: seconds to create (sparse), attach, close (per handle),
/// unlink, and to create a segment allocated whole (the default).
fn cycle() -> Result<[f64; 5], String> {
    let t = Instant::now();
    let whole = SharedMemory::create(SIZE).map_err(|e| format!("create: {e}"))?;
    let allocated = t.elapsed().as_secs_f64();
    whole.unlink().map_err(|e| format!("unlink: {e}"))?;
    let t0 = Instant::now();
    let mut a = SharedMemory::builder().sparse(true).create(SIZE).map_err(|e| format!("create: {e}"))?;
    let t1 = Instant::now();
    let attached = SharedMemory::open(a.name());
    let t2 = Instant::now();
    let mut b = match attached {
        Ok(b) => b,
        Err(e) => {
            let _ = a.unlink();
            return Err(format!("open: {e}"));
        }
    };
    b.close();
    a.close();
    let t3 = Instant::now();
    a.unlink().map_err(|e| format!("unlink: {e}"))?;
    let t4 = Instant::now();
    Ok([
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64() / 2.0,
        (t4 - t3).as_secs_f64(),
        allocated,
    ])
}

/// One round of the library side: µs per create, attach, close and unlink.
fn ours(warmup: u32, n: u32) -> Result<Vec<f64>, String> {
    (0..warmup).try_for_each(|_| cycle().map(drop))?;
    let mut sums = [0.0f64; 5];
    for _ in 0..n {
        sums.iter_mut().zip(cycle()?).for_each(|(s, t)| *s += t);
    }
    Ok(sums.iter().map(|s| s * 1e6 / f64::from(n)).collect())
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let n = cfg.iters(500, 20);
    let warmup = cfg.iters(20, 5);
    let args = py_args(NAME, "cycle", n, warmup, None);
    // (id, what, CPython's field, ours, CPython, limit)
    let steps = [
        (
            "create",
            "create (sparse, as CPython's)",
            "value",
            "SharedMemory::builder().sparse(true).create",
            "SharedMemory(create=True, size=…)",
            "shm_open(O_CREAT|O_EXCL) + ftruncate + mmap",
        ),
        ("attach", "attach by name", "attach_us", "SharedMemory::open(name)", "SharedMemory(name)", "shm_open + mmap"),
        ("close", "close (per handle)", "close_us", "close()", "close()", "munmap + close"),
        ("unlink", "unlink", "unlink_us", "unlink()", "unlink()", "shm_unlink"),
        (
            "create-allocated",
            "create, allocated whole (the default)",
            "value",
            "SharedMemory::create",
            "SharedMemory(create=True, size=…), sparse",
            "",
        ),
    ];
    let ours_m = phases::split(steps.len(), move || ours(warmup, n));
    // The limit has the first four steps; the allocated create has none of its own.
    let limit_m = phases::split(4, move || raw::shm_cycle(SIZE, warmup, n)).into_iter().map(Some).chain([None]);
    steps
        .into_iter()
        .zip(ours_m.into_iter().zip(limit_m))
        .map(|((id, what, field, ours_label, py_label, limit_label), (ours_m, limit_m))| Row {
            id: format!("{NAME}/{id}"),
            workload: NAME,
            variant: format!("SharedMemory of 1 MiB: {what}"),
            unit: Unit::Micros,
            placement: None,
            ours: Some(Side { label: ours_label.into(), measure: ours_m }),
            cpython: Some(PySide { label: py_label.into(), args: args.clone(), field }),
            limit: limit_m.map(|measure| Side { label: limit_label.into(), measure }),
            goal: None,
            note: None,
        })
        .collect()
}
