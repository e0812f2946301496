//! `sync_pingpong`: two processes hand a turn back and forth with the synchronization
//! primitives, no data.
//!
//! - `event`: two `Event`s. Parent: `ping.set(); pong.wait(); pong.clear()`; partner:
//!   `ping.wait(); ping.clear(); pong.set()`. µs per round trip.
//! - `semaphore`: two `Semaphore(0)`s. Parent: `ping.release(); pong.acquire()`; partner:
//!   `ping.acquire(); pong.release()`. µs per round trip.
//! - `barrier`: one `Barrier(2)`, both processes call `wait()` in a loop. Passes per second
//!   (each process waits once per pass).
//! - `condition`: one `Condition` and a `RawValue` turn counter; each side holds the lock
//!   and, in its turn, moves the counter on, `notify(1)`s, and `wait_for`s the other's move.
//!   µs per round trip.
//!
//! CPython does the same with `multiprocessing`'s `Event`, `Semaphore`, `Barrier` and
//! `Condition` (with a `RawValue('Q')`); the
//! partner is started by fork on both library sides (not timed). The limit is a raw fork
//! child and futex words in a `MAP_SHARED` page: a one-way signal word per direction for the
//! event, semaphore and condition rows, a generation word for the barrier. Each wait spins and then
//! sleeps, but skips the spin when the other process last ran on this CPU
//! ([`WaitPolicy::SpinUnlessSameCpu`]): the best of both placements this machine allows. A
//! reference row gives the same ping-pong sleeping at once (no spin).
//!
//! Placement matters more here than anywhere: spinning waits for a partner that runs on
//! another CPU, and only wastes time when the partner needs this CPU to run. So every row is
//! measured with both processes pinned to one CPU, and (full runs, two CPUs or more) to two.

use super::partner::{Watchdog, child_setup, join_ok};
use super::{Config, Goal, PySide, Row, Side, Unit, placement_suffix, py_args};
use crate::limit::sync::{self as raw, WaitPolicy};
use crate::pin::{PinGuard, Placement};
use multiprocess::{Barrier, Condition, Event, RawValue, Semaphore, StartMethod, get_context};
use std::time::Instant;

pub const NAME: &str = "sync_pingpong";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Event,
    Semaphore,
    Barrier,
    Condition,
}

impl Kind {
    fn id(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Semaphore => "semaphore",
            Kind::Barrier => "barrier",
            Kind::Condition => "condition",
        }
    }
}

fn event_partner(ping: Event, pong: Event, total: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    for _ in 0..total {
        if !ping.wait(None) {
            return Err("ping.wait(None) returned false".into());
        }
        ping.clear();
        pong.set();
    }
    Ok(())
}

fn semaphore_partner(ping: Semaphore, pong: Semaphore, total: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    for _ in 0..total {
        ping.acquire().map_err(|e| e.to_string())?;
        pong.release().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn barrier_partner(barrier: Barrier, total: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    for _ in 0..total {
        barrier.wait().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What the parent's watchdog sets the turn to if the partner dies: the parent stops waiting.
const GAVE_UP: u64 = u64::MAX;

fn condition_partner(c: Condition, turn: RawValue<u64>, total: u32, cpu: usize) -> Result<(), String> {
    child_setup(cpu)?;
    let held = c.lock().map_err(|e| e.to_string())?;
    for i in 0..u64::from(total) {
        if !c.wait_for(|| turn.get() == 2 * i + 1, None).map_err(|e| e.to_string())? {
            return Err("wait_for(None) returned false".into());
        }
        turn.set(2 * i + 2);
        c.notify(1).map_err(|e| e.to_string())?;
    }
    drop(held);
    Ok(())
}

/// Runs `exchange` `warmup` times, then `n` times on the clock: seconds for the `n`.
fn run(warmup: u32, n: u32, mut exchange: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    (0..warmup).try_for_each(|_| exchange())?;
    let t = Instant::now();
    (0..n).try_for_each(|_| exchange())?;
    Ok(t.elapsed().as_secs_f64())
}

/// One round of the library side: µs per round trip, or passes per second for the barrier.
fn ours(kind: Kind, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _pin = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let e = |what: &'static str| move |err: multiprocess::Error| format!("{what}: {err}");
    let ctx = get_context(StartMethod::Fork);
    let total = warmup + n;
    let cpu = placement.child;
    let (mut p, secs) = match kind {
        Kind::Event => {
            let (ping, pong) = (Event::new().map_err(e("Event::new"))?, Event::new().map_err(e("Event::new"))?);
            let mut p = ctx.process(event_partner, (ping.clone(), pong.clone(), total, cpu));
            p.start().map_err(e("start"))?;
            let rescue = pong.clone();
            let _dog = Watchdog::start(&p, move || rescue.set())?;
            let secs = run(warmup, n, || {
                ping.set();
                if !pong.wait(None) {
                    return Err("pong.wait(None) returned false".into());
                }
                pong.clear();
                Ok(())
            });
            (p, secs)
        }
        Kind::Semaphore => {
            let (ping, pong) =
                (Semaphore::new(0).map_err(e("Semaphore::new"))?, Semaphore::new(0).map_err(e("Semaphore::new"))?);
            let mut p = ctx.process(semaphore_partner, (ping.clone(), pong.clone(), total, cpu));
            p.start().map_err(e("start"))?;
            let rescue = pong.clone();
            let _dog = Watchdog::start(&p, move || {
                let _ = rescue.release();
            })?;
            let secs = run(warmup, n, || {
                ping.release().map_err(e("release"))?;
                pong.acquire().map_err(e("acquire"))
            });
            (p, secs)
        }
        Kind::Condition => {
            let c = Condition::new().map_err(e("Condition::new"))?;
            let turn = RawValue::new(0u64).map_err(e("RawValue::new"))?;
            let mut p = ctx.process(condition_partner, (c.clone(), turn.clone(), total, cpu));
            p.start().map_err(e("start"))?;
            let (rescue_c, rescue_turn) = (c.clone(), turn.clone());
            let _dog = Watchdog::start(&p, move || {
                if let Ok(_held) = rescue_c.lock() {
                    rescue_turn.set(GAVE_UP);
                    let _ = rescue_c.notify_all();
                }
            })?;
            let held = c.lock().map_err(|err| err.to_string())?;
            let mut i = 0u64;
            let secs = run(warmup, n, || {
                turn.set(2 * i + 1);
                c.notify(1).map_err(e("notify"))?;
                c.wait_for(|| matches!(turn.get(), t if t == 2 * i + 2 || t == GAVE_UP), None)
                    .map_err(e("wait_for"))?;
                if turn.get() == GAVE_UP {
                    return Err("the partner died".into());
                }
                i += 1;
                Ok(())
            });
            drop(held);
            (p, secs)
        }
        Kind::Barrier => {
            let barrier = Barrier::new(2).map_err(e("Barrier::new"))?;
            let mut p = ctx.process(barrier_partner, (barrier.clone(), total, cpu));
            p.start().map_err(e("start"))?;
            let rescue = barrier.clone();
            let _dog = Watchdog::start(&p, move || rescue.abort())?;
            let secs = run(warmup, n, || barrier.wait().map(drop).map_err(e("wait")));
            (p, secs)
        }
    };
    if secs.is_err() {
        let _ = p.kill();
    }
    let joined = join_ok(&mut p);
    let secs = secs?;
    joined?;
    Ok(per_unit(kind, n, secs))
}

fn per_unit(kind: Kind, n: u32, secs: f64) -> f64 {
    match kind {
        Kind::Barrier => f64::from(n) / secs,
        Kind::Event | Kind::Semaphore | Kind::Condition => secs * 1e6 / f64::from(n),
    }
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for placement in cfg.placements() {
        let n = if placement.same_core() { cfg.iters(5_000, 200) } else { cfg.iters(10_000, 200) };
        let warmup = (n / 10).max(20);
        let where_ = placement.describe();
        let suffix = placement_suffix(placement);
        for kind in [Kind::Event, Kind::Semaphore, Kind::Barrier, Kind::Condition] {
            let (variant, unit, cpython_label, limit_label) = match kind {
                Kind::Event => ("2 Events, set/wait/clear", Unit::MicrosPerRoundTrip, "Event() ×2", "futex ping-pong"),
                Kind::Semaphore => {
                    ("2 Semaphores, release/acquire", Unit::MicrosPerRoundTrip, "Semaphore(0) ×2", "futex ping-pong")
                }
                Kind::Barrier => ("Barrier(2), wait", Unit::WaitsPerSec, "Barrier(2)", "futex barrier for 2"),
                Kind::Condition => (
                    "Condition, notify(1)/wait_for",
                    Unit::MicrosPerRoundTrip,
                    "Condition() + RawValue('Q')",
                    "futex ping-pong",
                ),
            };
            let policy = WaitPolicy::SpinUnlessSameCpu;
            let limit_label = format!("{limit_label}, MAP_SHARED, {}", policy.describe());
            let goal = match (kind, placement.same_core()) {
                (Kind::Event | Kind::Semaphore, false) => Some(Goal::AtMost(1.0)),
                (Kind::Barrier, _) => Some(Goal::FasterThanCPython(10.0)),
                _ => None,
            };
            rows.push(Row {
                id: format!("{NAME}/{}{suffix}", kind.id()),
                workload: NAME,
                variant: format!("{variant}, {where_}"),
                unit,
                placement: Some(placement),
                ours: Some(Side {
                    label: format!("{variant}, partner by fork"),
                    measure: Box::new(move || ours(kind, warmup, n, placement)),
                }),
                cpython: Some(PySide::new(
                    format!("{cpython_label}, partner by fork"),
                    py_args(NAME, kind.id(), n, warmup, Some(placement)),
                )),
                limit: Some(Side {
                    label: limit_label,
                    measure: Box::new(move || match kind {
                        Kind::Barrier => raw::futex_barrier(policy, warmup, n, placement),
                        _ => raw::futex_pingpong(policy, warmup, n, placement),
                    }),
                }),
                goal,
                note: None,
            });
        }
        rows.push(Row {
            id: format!("{NAME}/futex-sleep{suffix}"),
            workload: NAME,
            variant: format!("reference: futex ping-pong, no spin, {where_}"),
            unit: Unit::MicrosPerRoundTrip,
            placement: Some(placement),
            ours: None,
            cpython: None,
            limit: Some(Side {
                label: format!("futex ping-pong, MAP_SHARED, {}", WaitPolicy::Sleep.describe()),
                measure: Box::new(move || raw::futex_pingpong(WaitPolicy::Sleep, warmup, n, placement)),
            }),
            goal: None,
            note: None,
        });
    }
    rows
}
