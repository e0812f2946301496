//! `process_start_join`: start a child that does nothing and join it, per start method.
//!
//! - multiprocess: `get_context(m).process(noop, ()).start()` + `join()`.
//! - CPython: `multiprocessing.get_context(m).Process(target=noop)` `start()` + `join()`.
//! - limit: fork and forkserver, raw `fork` + `_exit(0)` + `waitpid` from the bench process
//!   (a process of our size); spawn, `posix_spawn` of the bench binary itself told to exit
//!   before `main` (what executing a process of our size costs), plus a reference row with
//!   `posix_spawn` of `/bin/true`.
//!
//! A fork and its join are a blocking round trip between two processes, and on these
//! machines where the scheduler runs the child (this core or the other) moves a side by tens
//! of µs from one round to the next. So fork is measured twice: with every side pinned to one
//! core (parent and children alike: the figure the target is judged on, as ping-pong's is),
//! and unpinned, for what a program that pins nothing sees.

use super::{Config, Goal, PySide, Row, Side, Unit};
use crate::limit::{self, Spawnable};
use crate::pin::PinGuard;
use multiprocess::{StartMethod, get_context};
use std::time::Instant;

pub const NAME: &str = "process_start_join";

/// The child's target.
fn noop() {}

/// Untimed starts before each timed round: the first forkserver start launches the server.
const WARMUP: u32 = 3;

/// One round of the library's start + join: µs per process.
fn ours(method: StartMethod, n: u32, cpu: Option<usize>) -> Result<f64, String> {
    let _pin = PinGuard::pin(cpu).map_err(|e| format!("pin: {e}"))?;
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

fn py(method: &str, n: u32, cpu: Option<usize>) -> PySide {
    let mut args = vec![NAME.into(), method.into(), n.to_string(), "--warmup".into(), "2".into()];
    if let Some(cpu) = cpu {
        args.extend(["--cpu".into(), cpu.to_string()]);
    }
    PySide::new(method, args)
}

fn fork_limit(n: u32, cpu: Option<usize>) -> Side {
    Side {
        label: "fork + _exit + waitpid, from the bench process".into(),
        measure: Box::new(move || {
            let _pin = PinGuard::pin(cpu).map_err(|e| format!("pin: {e}"))?;
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
    let cpu0 = cfg.cpus.first().copied();
    let row = |method: StartMethod, cpu: Option<usize>, ours_n: u32, py_n: u32, limit: Side, goal: Option<Goal>| {
        let (id, variant) = match cpu {
            Some(c) if method == StartMethod::Fork => {
                (format!("{NAME}/{method}"), format!("{method}, same core (all pinned to CPU {c})"))
            }
            _ if method == StartMethod::Fork => (format!("{NAME}/{method}-unpinned"), format!("{method}, unpinned")),
            _ => (format!("{NAME}/{method}"), method.to_string()),
        };
        Row {
            id,
            workload: NAME,
            variant,
            unit: Unit::MicrosPerProcess,
            placement: None,
            ours: Some(Side {
                label: format!("get_context({method}).process(noop, ()) start + join"),
                measure: Box::new(move || ours(method, ours_n, cpu)),
            }),
            cpython: Some(py(method.as_str(), py_n, cpu)),
            limit: Some(limit),
            goal,
            note: None,
        }
    };
    let fork_n = cfg.iters(200, 10);
    let goal = Some(Goal::AtMostTimesLimit(1.5));
    rows.push(row(StartMethod::Fork, cpu0, fork_n, cfg.iters(100, 10), fork_limit(fork_n, cpu0), goal));
    rows.push(row(StartMethod::Fork, None, fork_n, cfg.iters(100, 10), fork_limit(fork_n, None), None));
    rows.push(row(
        StartMethod::ForkServer,
        None,
        cfg.iters(200, 10),
        cfg.iters(20, 3),
        fork_limit(fork_n, None),
        Some(Goal::AtMost(500.0)),
    ));
    let spawn_n = cfg.iters(50, 5);
    let me = Spawnable::this_binary()?;
    rows.push(row(
        StartMethod::Spawn,
        None,
        spawn_n,
        cfg.iters(10, 2),
        spawn_limit("posix_spawn + waitpid of the bench binary, exiting before main", me, spawn_n),
        Some(Goal::AtMost(3000.0)),
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
