//! The pool workloads.
//!
//! - `pool_startup_shutdown`: `Pool(2)`, then `close()` + `join()`, per start method. ms per
//!   pool. The limit: fork two raw workers that `_exit(0)` and reap them (fork and
//!   forkserver); `posix_spawn` of the bench binary twice, exiting before `main`, and reap
//!   them (spawn: what executing two processes of our size costs, as in
//!   `process_start_join`).
//! - `pool_map`: `Pool(2).map(square, 0..1_000_000)` with the default chunk size, and
//!   `map_chunked(square, 0..20_000, 1)` (`chunksize=1`). Tasks per second. The limit: the
//!   same map run serially in this process by two threads (`std::thread`), each over its
//!   half, into one `Vec`.
//! - `pool_apply`: one `apply(square, (x,))` round trip on a started `Pool(1)`. µs per round
//!   trip. The limit: the futex ping-pong of `limit/sync.rs` (spin, then sleep), the
//!   mechanism the pool's queues wake each other with (shared-memory rings over futexes; a
//!   raw pipe round trip costs more).
//!
//! `square` is `x * x` on a `u64` (ours) and a Python int (CPython). The pools of `pool_map`
//! and `pool_apply` use the library's default start method (forkserver) and CPython's
//! (`multiprocessing.Pool`: fork before Python 3.14); they are started before the clock and
//! warmed up with an untimed map or a few applies, then closed and joined after it. The last
//! result of every timed run is checked in full after the clock.

use super::{Config, Goal, PySide, Row, Side, Unit};
use crate::limit::Spawnable;
use crate::limit::pool as raw;
use crate::limit::sync::{self as sync_raw, WaitPolicy};
use crate::pin::{PinGuard, Placement, pin_to};
use crate::report::num;
use multiprocess::{Pool, StartMethod, get_context, get_start_method};
use std::time::Instant;

pub const POOL_STARTUP_SHUTDOWN: &str = "pool_startup_shutdown";
pub const POOL_MAP: &str = "pool_map";
pub const POOL_APPLY: &str = "pool_apply";
pub const POOL_SUBMIT_AWAIT: &str = "pool_submit_await";

/// The targets.
const STARTUP_FORKSERVER_MS: f64 = 2.0;
const MAP_TIMES_CPYTHON: f64 = 3.0;
const MAP_CHUNK1_TIMES_CPYTHON: f64 = 20.0;
const MAP_FRESH_TIMES_CPYTHON: f64 = 4.0;
/// Submitted tasks awaited from one async task, as a share of the chunk-size-1 map's rate.
const SUBMIT_AWAIT_OF_CHUNK1: f64 = 0.8;
const APPLY_US: f64 = 7.0;
/// All on one CPU (issue 17).
const APPLY_ONE_CPU_US: f64 = 15.0;

/// What every task computes.
fn square(x: u64) -> u64 {
    x * x
}

/// A pinned pool's worker initializer: pin to `cpu` (a panic fails the pool's tasks, and so
/// the row).
fn pin_worker(cpu: usize) {
    if let Err(e) = pin_to(cpu) {
        panic!("pin the worker to CPU {cpu}: {e}");
    }
}

fn noop() {}

/// A forkserver is started by the first forkserver start, from the thread that asks, with
/// that thread's CPU affinity, which every later forkserver child inherits. Before a pinned
/// row makes a pool, one process is started and joined unpinned, so that the server is
/// running and unpinned whatever row comes first.
fn server_started_unpinned() -> Result<(), String> {
    if get_start_method() != StartMethod::ForkServer {
        return Ok(());
    }
    let mut p = get_context(StartMethod::ForkServer).process(noop, ());
    p.start().map_err(|e| format!("start: {e}"))?;
    p.join().map_err(|e| format!("join: {e}"))
}

/// Closes and joins `pool` whatever `result` is; the first error wins.
fn finish<T>(pool: Pool, result: Result<T, String>) -> Result<T, String> {
    pool.close();
    let joined = pool.join().map_err(|e| format!("join the pool: {e}"));
    let value = result?;
    joined?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// pool_startup_shutdown

/// Untimed pools before each timed round (the first forkserver start launches the server).
const STARTUP_WARMUP: u32 = 1;

/// One round of `Pool(2)` + `close()` + `join()` under `method`: ms per pool.
fn startup_ours(method: StartMethod, n: u32) -> Result<f64, String> {
    let one = || -> Result<(), String> {
        let pool = Pool::builder().processes(2).start_method(method).build().map_err(|e| format!("Pool(2): {e}"))?;
        pool.close();
        pool.join().map_err(|e| format!("join: {e}"))
    };
    for _ in 0..STARTUP_WARMUP {
        one()?;
    }
    let t = Instant::now();
    for _ in 0..n {
        one()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(n))
}

fn startup_rows(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for method in [StartMethod::Fork, StartMethod::ForkServer, StartMethod::Spawn] {
        let (ours_n, py_n) = match method {
            StartMethod::Fork => (cfg.iters(30, 2), cfg.iters(20, 2)),
            StartMethod::ForkServer => (cfg.iters(30, 2), cfg.iters(10, 2)),
            StartMethod::Spawn => (cfg.iters(10, 2), cfg.iters(5, 1)),
        };
        let limit_n = ours_n;
        let limit = match method {
            StartMethod::Spawn => {
                let me = Spawnable::this_binary()?;
                Side {
                    label: "posix_spawn ×2 of the bench binary, exiting before main, + waitpid ×2".into(),
                    measure: Box::new(move || {
                        raw::spawn_workers_reap(&me, 2, STARTUP_WARMUP)?;
                        raw::spawn_workers_reap(&me, 2, limit_n)
                    }),
                }
            }
            _ => Side {
                label: "fork ×2 + _exit + waitpid ×2, from the bench process".into(),
                measure: Box::new(move || {
                    raw::fork_workers_reap(2, STARTUP_WARMUP)?;
                    raw::fork_workers_reap(2, limit_n)
                }),
            },
        };
        let mut args = vec![POOL_STARTUP_SHUTDOWN.into(), method.to_string(), py_n.to_string()];
        args.extend(["--warmup".into(), STARTUP_WARMUP.to_string()]);
        rows.push(Row {
            id: format!("{POOL_STARTUP_SHUTDOWN}/{method}"),
            workload: POOL_STARTUP_SHUTDOWN,
            variant: format!("Pool(2) + close + join, {method}"),
            unit: Unit::Millis,
            placement: None,
            ours: Some(Side {
                label: format!("Pool::builder().processes(2).start_method({method}).build(), close(), join()"),
                measure: Box::new(move || startup_ours(method, ours_n)),
            }),
            cpython: Some(PySide::new(format!("{method}: get_context('{method}').Pool(2), close(), join()"), args)),
            limit: Some(limit),
            goal: (method == StartMethod::ForkServer).then_some(Goal::AtMost(STARTUP_FORKSERVER_MS)),
            note: (method == StartMethod::Fork).then(|| {
                format!(
                    "One pool of 2 workers started, closed and joined (each worker started and stopped), unpinned; a \
                     first untimed pool per round (forkserver: the server is running before the clock). Target: \
                     forkserver ≤ {STARTUP_FORKSERVER_MS} ms."
                )
            }),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// pool_map

/// Checks a map's result: `square(i)` at every `i`.
fn check_squares(r: &[u64], items: u64) -> Result<(), String> {
    if r.len() as u64 != items {
        return Err(format!("map gave {} results for {items} items", r.len()));
    }
    match r.iter().enumerate().find(|&(i, &v)| v != square(i as u64)) {
        Some((i, v)) => Err(format!("map gave {v} for square({i})")),
        None => Ok(()),
    }
}

/// One round of the library's map: a started `Pool(2)`, an untimed map of `warm_items`,
/// then `reps` maps of `items` on the clock (default chunk size, or `chunksize`): tasks per
/// second.
fn map_ours(items: u64, chunksize: Option<usize>, warm_items: u64, reps: u32) -> Result<f64, String> {
    let pool = Pool::new(2).map_err(|e| format!("Pool(2): {e}"))?;
    let run = |n: u64| -> Result<Vec<u64>, String> {
        match chunksize {
            None => pool.map(square, 0..n),
            Some(c) => pool.map_chunked(square, 0..n, c),
        }
        .map_err(|e| format!("map: {e}"))
    };
    let timed = || -> Result<f64, String> {
        check_squares(&run(warm_items)?, warm_items)?;
        let mut last = Vec::new();
        let t = Instant::now();
        for _ in 0..reps {
            last = run(items)?;
        }
        let elapsed = t.elapsed();
        check_squares(&last, items)?;
        Ok(items as f64 * f64::from(reps) / elapsed.as_secs_f64())
    };
    let result = timed();
    finish(pool, result)
}

/// One `pool_map` row's parameters.
struct MapSpec {
    variant: &'static str,
    chunksize: Option<usize>,
    items: u64,
    quick_items: u64,
    /// Items of the untimed map before the clock: a tenth of the items (`None`), or these
    /// few (a fresh pool's first large map, as a one-off map in a program runs).
    warm: Option<u64>,
    /// Timed maps per round: ours, CPython's, the limit's.
    reps: (u32, u32, u32),
    goal: f64,
}

const MAP_SPECS: [MapSpec; 3] = [
    MapSpec {
        variant: "default-chunks",
        chunksize: None,
        items: 1_000_000,
        quick_items: 20_000,
        warm: None,
        reps: (3, 2, 20),
        goal: MAP_TIMES_CPYTHON,
    },
    MapSpec {
        variant: "default-chunks-fresh",
        chunksize: None,
        items: 1_000_000,
        quick_items: 20_000,
        warm: Some(100),
        reps: (1, 1, 1),
        goal: MAP_FRESH_TIMES_CPYTHON,
    },
    MapSpec {
        variant: "chunksize-1",
        chunksize: Some(1),
        items: 20_000,
        quick_items: 500,
        warm: None,
        // 8 maps (some 40 ms) rather than 2: a round's rate is steadier, and so is the ratio
        // of pool_submit_await's to it, taken round by round.
        reps: (8, 1, 200),
        goal: MAP_CHUNK1_TIMES_CPYTHON,
    },
];

fn map_rows(cfg: &Config) -> Vec<Row> {
    let method = get_start_method();
    MAP_SPECS
        .iter()
        .map(|spec| {
            let items = if cfg.quick { spec.quick_items } else { spec.items };
            let (ours_reps, py_reps, limit_reps) = if cfg.quick { (1, 1, 5) } else { spec.reps };
            let warm_items = spec.warm.unwrap_or((items / 10).max(100));
            let chunksize = spec.chunksize;
            let (call, py_call, chunks) = match chunksize {
                None if spec.warm.is_some() => (
                    "map(square, 0..n)".to_string(),
                    "map(square, range(n))".to_string(),
                    "default chunk size, the first large map of a fresh pool (warmed with 100 items)",
                ),
                None => ("map(square, 0..n)".to_string(), "map(square, range(n))".to_string(), "default chunk size"),
                Some(c) => {
                    (format!("map_chunked(square, 0..n, {c})"), format!("map(square, range(n), {c})"), "chunk size 1")
                }
            };
            let mut args = vec![POOL_MAP.into(), "map".into(), items.to_string()];
            args.extend(["--warmup".into(), warm_items.to_string(), "--repeat".into(), py_reps.to_string()]);
            if let Some(c) = chunksize {
                args.extend(["--chunksize".into(), c.to_string()]);
            }
            Row {
                id: format!("{POOL_MAP}/{}", spec.variant),
                workload: POOL_MAP,
                variant: format!("Pool(2), {} tasks, {chunks}", num(items as f64)),
                unit: Unit::TasksPerSec,
                placement: None,
                ours: Some(Side {
                    label: format!("Pool::new(2) ({method}), {call}"),
                    measure: Box::new(move || map_ours(items, chunksize, warm_items, ours_reps)),
                }),
                cpython: Some(PySide::new(format!("Pool(2) (default start method), {py_call}"), args)),
                limit: Some(Side {
                    label: "the same map by 2 std::threads in this process, each over its half, into one Vec".into(),
                    measure: Box::new(move || raw::threads_map(square, items, 2, limit_reps)),
                }),
                goal: Some(Goal::FasterThanCPython(spec.goal)),
                note: (chunksize.is_none() && spec.warm.is_none()).then(|| {
                    format!(
                        "Tasks per second over the whole map call (arguments in, results back in order), pool started and \
                         warmed up with an untimed map of a tenth of the items before the clock, unpinned. Targets: \
                         default chunk size ≥ {MAP_TIMES_CPYTHON}× CPython, chunk size 1 ≥ \
                         {MAP_CHUNK1_TIMES_CPYTHON}× CPython. The limit starts its two threads inside the clock, once \
                         per map."
                    )
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// pool_apply

/// One round of the library's `apply`: a started `Pool(1)`, `warmup` untimed applies, `n`
/// on the clock: µs per round trip. Pinned: the calling thread (and the pool's manager
/// thread, which it starts) on `placement.parent`, the worker on `placement.child`.
fn apply_ours(warmup: u32, n: u32, placement: Option<Placement>) -> Result<f64, String> {
    if placement.is_some() {
        server_started_unpinned()?;
    }
    let _pin = PinGuard::pin(placement.map(|p| p.parent)).map_err(|e| format!("pin: {e}"))?;
    let mut builder = Pool::builder().processes(1);
    if let Some(p) = placement {
        builder = builder.initializer(pin_worker, (p.child,));
    }
    let pool = builder.build().map_err(|e| format!("Pool(1): {e}"))?;
    let one = |x: u64| -> Result<(), String> {
        match pool.apply(square, (x,)) {
            Ok(v) if v == square(x) => Ok(()),
            Ok(v) => Err(format!("apply(square, ({x},)) gave {v}")),
            Err(e) => Err(format!("apply: {e}")),
        }
    };
    let timed = || -> Result<f64, String> {
        (0..u64::from(warmup)).try_for_each(one)?;
        let t = Instant::now();
        (0..u64::from(n)).try_for_each(one)?;
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
    };
    let result = timed();
    finish(pool, result)
}

fn apply_rows(cfg: &Config) -> Vec<Row> {
    let method = get_start_method();
    let n = cfg.iters(5_000, 200);
    let py_n = cfg.iters(2_000, 100);
    let warmup = cfg.iters(200, 20);
    // Unpinned first (what a program that pins nothing sees), then both pinned placements.
    let mut placements: Vec<Option<Placement>> = vec![None];
    placements.extend(cfg.placements().into_iter().map(Some));
    placements
        .into_iter()
        .map(|placement| {
            let (suffix, where_) = match placement {
                None => ("unpinned", "unpinned".to_string()),
                Some(p) if p.same_core() => {
                    ("same-core", format!("caller, pool threads and worker pinned to CPU {}", p.parent))
                }
                Some(p) => (
                    "cross-core",
                    format!("caller and pool threads pinned to CPU {}, worker to CPU {}", p.parent, p.child),
                ),
            };
            let mut args = vec![POOL_APPLY.into(), "apply".into(), py_n.to_string(), "--warmup".into()];
            args.push(warmup.to_string());
            if let Some(p) = placement {
                args.extend(["--cpu".into(), p.parent.to_string(), "--child-cpu".into(), p.child.to_string()]);
            }
            let limit_label = format!(
                "futex ping-pong in a MAP_SHARED page with a raw fork child ({}), {}",
                WaitPolicy::SpinUnlessSameCpu.describe(),
                if placement.is_none() { "unpinned" } else { "placed the same" }
            );
            let pinned = if placement.is_some() { ", worker pinned by an initializer" } else { "" };
            Row {
                id: format!("{POOL_APPLY}/{suffix}"),
                workload: POOL_APPLY,
                variant: format!("Pool(1), apply(square, (x,)), {where_}"),
                unit: Unit::MicrosPerRoundTrip,
                placement,
                ours: Some(Side {
                    label: format!("Pool::builder().processes(1) ({method}){pinned}, apply(square, (x,))"),
                    measure: Box::new(move || apply_ours(warmup, n, placement)),
                }),
                cpython: Some(PySide::new(
                    format!("Pool(1) (default start method){pinned}, apply(square, (x,))"),
                    args,
                )),
                limit: Some(Side {
                    label: limit_label,
                    measure: Box::new(move || {
                        sync_raw::futex_pingpong_placed(WaitPolicy::SpinUnlessSameCpu, warmup, n, placement)
                    }),
                }),
                goal: match placement {
                    None => Some(Goal::AtMost(APPLY_US)),
                    Some(p) if p.same_core() => Some(Goal::AtMost(APPLY_ONE_CPU_US)),
                    Some(_) => None,
                },
                note: placement.is_none().then(|| {
                    format!(
                        "One apply: the caller puts the task on the worker's queue itself and takes the result off \
                         the result queue itself while it waits (the pool's manager thread files what nobody waits \
                         on; CPython: its task and result handler threads and two pipes). Pool \
                         started and warmed up with {warmup} applies before the clock. Target: ≤ {APPLY_US} µs \
                         (judged unpinned). The limit is one two-process round trip of the mechanism the pool's \
                         queues use, a futex ping-pong over shared memory that spins before it sleeps (placed as the \
                         row says); a raw pipe round trip (pipe_pingpong/raw-pipe) costs more."
                    )
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// pool_submit_await

/// Polls `f` to its end on this thread, parking between wake-ups: the least executor there is
/// (what `futures::executor::block_on` does), so the row measures the pool, not a runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// One round: a started `Pool(2)`, then `batches` times `n` submits, each batch awaited in
/// order by one async task before the next: tasks per second from the first submit to the
/// last result.
fn submit_await_ours(n: u64, batches: u32) -> Result<f64, String> {
    let pool = Pool::new(2).map_err(|e| format!("Pool(2): {e}"))?;
    let timed = || -> Result<f64, String> {
        pool.map(square, 0..100u64).map_err(|e| format!("warm-up: {e}"))?;
        let want = (0..n).map(square).fold(0u64, u64::wrapping_add);
        let t = Instant::now();
        for _ in 0..batches {
            let results: Vec<_> = (0..n)
                .map(|i| pool.submit(square, (i,)))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("submit: {e}"))?;
            let sum = block_on(async {
                let mut sum = 0u64;
                for r in results {
                    sum = sum.wrapping_add(r.await?);
                }
                Ok::<u64, multiprocess::Error>(sum)
            })
            .map_err(|e| format!("await: {e}"))?;
            if sum != want {
                return Err(format!("awaited sum {sum}, {want} expected"));
            }
        }
        Ok(n as f64 * f64::from(batches) / t.elapsed().as_secs_f64())
    };
    let result = timed();
    finish(pool, result)
}

fn submit_await_rows(cfg: &Config) -> Vec<Row> {
    let n = if cfg.quick { 2_000 } else { 100_000 };
    // Three batches (some 80 ms) rather than one: a round's rate is steadier.
    let batches = if cfg.quick { 1 } else { 3 };
    let method = get_start_method();
    vec![Row {
        id: format!("{POOL_SUBMIT_AWAIT}/one-task"),
        workload: POOL_SUBMIT_AWAIT,
        variant: format!("Pool(2), {} submits awaited in order by one async task", num(n as f64)),
        unit: Unit::TasksPerSec,
        placement: None,
        ours: Some(Side {
            label: format!("Pool::new(2) ({method}), submit(square, (i,)) × n, then each `.await`ed"),
            measure: Box::new(move || submit_await_ours(n, batches)),
        }),
        cpython: None,
        limit: None,
        goal: Some(Goal::AtLeastTimesRow("pool_map/chunksize-1", SUBMIT_AWAIT_OF_CHUNK1)),
        note: Some(format!(
            "The futures' own rate: every task its own submit (its own chunk), every result awaited on a minimal \
             executor (park/unpark). A fresh pool each round (warmed with a map of 100), then {batches} batches of \
             {} submits, each awaited before the next. Target: ≥ {SUBMIT_AWAIT_OF_CHUNK1}× the chunk-size-1 map's rate (pool_map/chunksize-1).",
            num(n as f64)
        )),
    }]
}

pub fn rows(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = startup_rows(cfg)?;
    rows.extend(map_rows(cfg));
    rows.extend(submit_await_rows(cfg));
    rows.extend(apply_rows(cfg));
    Ok(rows)
}
