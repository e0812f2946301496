//! `process_start_join`: start a child that does nothing and join it, per start method.
//!
//! - multiprocess: `get_context(m).process(noop, ()).start()` + `join()`.
//! - CPython: `multiprocessing.get_context(m).Process(target=noop)` `start()` + `join()`.
//! - limit: fork and forkserver, raw `fork` + `_exit(0)` + `waitpid` from the bench process
//!   (a process of our size); spawn, `posix_spawn` of the bench binary itself told to exit
//!   before `main` (what executing a process of our size costs), plus a reference row with
//!   `posix_spawn` of `/bin/true`.

use super::{Config, Goal, PySide, Row, Side, Unit};
use crate::limit::{self, Spawnable};
use multiprocess::{StartMethod, get_context};
use std::time::Instant;

pub const NAME: &str = "process_start_join";

/// The child's target.
fn noop() {}

/// Untimed starts before each timed round: the first forkserver start launches the server.
const WARMUP: u32 = 3;

/// One round of the library's start + join: µs per process.
fn ours(method: StartMethod, n: u32) -> Result<f64, String> {
    let ctx = get_context(method);
    let one = || -> Result<(), String> {
        let mut p = ctx.process(noop, ());
        p.start().map_err(|e| format!("start: {e}"))?;
        p.join().map_err(|e| format!("join: {e}"))?;
        match p.exitcode() {
            Some(0) => Ok(()),
            other => Err(format!("child exit code {other:?}")),
        }
    };
    for _ in 0..WARMUP {
        one()?;
    }
    let t = Instant::now();
    for _ in 0..n {
        one()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

fn py(method: &str, n: u32) -> PySide {
    PySide {
        label: method.into(),
        args: vec![NAME.into(), method.into(), n.to_string(), "--warmup".into(), "2".into()],
    }
}

fn fork_limit(n: u32) -> Side {
    Side {
        label: "fork + _exit + waitpid, from the bench process".into(),
        measure: Box::new(move || {
            limit::fork_waitpid(WARMUP)?;
            limit::fork_waitpid(n)
        }),
    }
}

fn spawn_limit(label: &str, target: Spawnable, n: u32) -> Side {
    Side {
        label: label.into(),
        measure: Box::new(move || {
            target.spawn_waitpid(WARMUP)?;
            target.spawn_waitpid(n)
        }),
    }
}

pub fn rows(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let row = |method: StartMethod, ours_n: u32, py_n: u32, limit: Side, goal: Goal| Row {
        id: format!("{NAME}/{method}"),
        workload: NAME,
        variant: method.to_string(),
        unit: Unit::MicrosPerProcess,
        placement: None,
        ours: Some(Side {
            label: format!("get_context({method}).process(noop, ()) start + join"),
            measure: Box::new(move || ours(method, ours_n)),
        }),
        cpython: Some(py(method.as_str(), py_n)),
        limit: Some(limit),
        goal: Some(goal),
        note: None,
    };
    let fork_n = cfg.iters(200, 10);
    rows.push(row(StartMethod::Fork, fork_n, cfg.iters(100, 10), fork_limit(fork_n), Goal::AtMostTimesLimit(1.5)));
    rows.push(row(
        StartMethod::ForkServer,
        cfg.iters(200, 10),
        cfg.iters(20, 3),
        fork_limit(fork_n),
        Goal::AtMost(500.0),
    ));
    let spawn_n = cfg.iters(50, 5);
    let me = Spawnable::this_binary()?;
    rows.push(row(
        StartMethod::Spawn,
        spawn_n,
        cfg.iters(10, 2),
        spawn_limit("posix_spawn + waitpid of the bench binary, exiting before main", me, spawn_n),
        Goal::AtMost(3000.0),
    ));
    rows.push(Row {
        id: format!("{NAME}/spawn-reference"),
        workload: NAME,
        variant: "spawn, reference: tiny binary".into(),
        unit: Unit::MicrosPerProcess,
        placement: None,
        ours: None,
        cpython: None,
        limit: Some(spawn_limit("posix_spawn + waitpid of /bin/true", Spawnable::program("/bin/true"), spawn_n)),
        goal: None,
        note: None,
    });
    Ok(rows)
}
