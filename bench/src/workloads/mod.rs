//! The workloads. Each one contributes rows; a row is one line of the table, measured on up
//! to three sides (multiprocess, CPython, the raw-syscall limit) once per round.
//!
//! A new workload is a module here with a `rows(&Config) -> Vec<Row>` function, added to
//! [`all`]; its CPython side is a new sub-command of `cpython_side.py`.

pub mod array_fill_sum;
pub mod idle_waiters;
pub mod lock_contended;
pub mod lock_uncontended;
pub mod managers;
pub mod managers_remote;
mod partner;
mod phases;
pub mod pipe_bulk;
pub mod pipe_pingpong;
pub mod pools;
pub mod process_start_join;
pub mod queues;
pub mod shared_memory;
pub mod sync_pingpong;
pub mod value_increment;

use crate::pin::Placement;

/// What one side does for one round: the measured value, or why it failed.
pub type Measure = Box<dyn FnMut() -> Result<f64, String>>;

/// The unit of a row's values. Every unit says whether less is better, so that ratios can be
/// given as "how many times the cost" whatever the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// Microseconds per process started and joined.
    MicrosPerProcess,
    /// Microseconds per round trip.
    MicrosPerRoundTrip,
    /// Nanoseconds per `acquire` + `release` pair.
    NanosPerPair,
    /// Operations per second (all processes together).
    OpsPerSec,
    /// Barrier passes per second (each party waits once per pass).
    WaitsPerSec,
    /// Milliseconds for the whole workload.
    Millis,
    /// Microseconds per operation.
    Micros,
    /// Gigabytes (10⁹ bytes) per second.
    GBPerSec,
    /// Messages per second (all producers together).
    MessagesPerSec,
    /// Pool tasks (function calls) per second.
    TasksPerSec,
    /// Microseconds per pair of calls (a manager proxy's `set` + `get`, `put` + `get`,
    /// `acquire` + `release`).
    MicrosPerPair,
    /// Percent of the CPUs this process may use (CPU time over wall time).
    PercentOfCpus,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::MicrosPerProcess => "µs/process",
            Unit::MicrosPerRoundTrip => "µs/round trip",
            Unit::NanosPerPair => "ns/acquire+release",
            Unit::OpsPerSec => "operations/s",
            Unit::WaitsPerSec => "waits/s",
            Unit::Millis => "ms",
            Unit::Micros => "µs",
            Unit::GBPerSec => "GB/s",
            Unit::MessagesPerSec => "messages/s",
            Unit::TasksPerSec => "tasks/s",
            Unit::MicrosPerPair => "µs/pair",
            Unit::PercentOfCpus => "% of the CPUs",
        }
    }

    /// Whether a smaller value is better (a time) rather than a larger one (a rate).
    pub fn lower_is_better(self) -> bool {
        match self {
            Unit::MicrosPerProcess
            | Unit::MicrosPerRoundTrip
            | Unit::NanosPerPair
            | Unit::Millis
            | Unit::Micros
            | Unit::MicrosPerPair
            | Unit::PercentOfCpus => true,
            Unit::OpsPerSec | Unit::WaitsPerSec | Unit::GBPerSec | Unit::MessagesPerSec | Unit::TasksPerSec => false,
        }
    }
}

/// A goal the project set for a row; reported, never asserted.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum Goal {
    /// The library's median at most this many units.
    AtMost(f64),
    /// The library's median at least this many units (for a rate).
    AtLeast(f64),
    /// The library's value at least this multiple of its value in another row (by id), per
    /// round, in the row's sense of better (`queue_small`: two producers not slower than
    /// one). Reported only when both rows ran.
    AtLeastTimesRow(&'static str, f64),
    /// The library's median cost at most this multiple of the limit's.
    AtMostTimesLimit(f64),
    /// The median speed-up over CPython at least this: CPython's cost at least this many
    /// times ours (per round).
    FasterThanCPython(f64),
}

/// A measured side: what it is, and how to measure it once.
pub struct Side {
    /// What runs, for the table (`fork + waitpid, bench binary`).
    pub label: String,
    pub measure: Measure,
}

/// The CPython side of a row: the script's arguments for one round.
pub struct PySide {
    /// The start method (or what else tells the reader how CPython ran it).
    pub label: String,
    pub args: Vec<String>,
    /// The field of the script's JSON reply that holds this row's value: `value`, or another
    /// figure of the same run ([`phases`]: rows with the same `args` in one round share one
    /// run of the script).
    pub field: &'static str,
}

impl PySide {
    /// The usual CPython side: the reply's `value`.
    pub fn new(label: impl Into<String>, args: Vec<String>) -> PySide {
        PySide { label: label.into(), args, field: "value" }
    }
}

pub struct Row {
    /// `workload/variant`, for `--only` and the JSON.
    pub id: String,
    pub workload: &'static str,
    /// Shown after the workload name (`fork`, `send/recv`).
    pub variant: String,
    pub unit: Unit,
    /// Where the processes ran, when pinned.
    pub placement: Option<Placement>,
    pub ours: Option<Side>,
    pub cpython: Option<PySide>,
    pub limit: Option<Side>,
    pub goal: Option<Goal>,
    /// One line for the notes under the table, if the row needs one.
    pub note: Option<String>,
}

/// How hard to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    /// CPUs this process may use (for pinning).
    pub cpus: Vec<usize>,
}

impl Config {
    /// `normal` iterations, or `quick` in a smoke run.
    pub fn iters(&self, normal: u32, quick: u32) -> u32 {
        if self.quick { quick } else { normal }
    }

    /// Where the two processes of a ping-pong run: both on the first CPU this process may
    /// use, and (full runs with two CPUs or more) on the first two. Empty if no CPU is known.
    pub fn placements(&self) -> Vec<Placement> {
        let Some(&first) = self.cpus.first() else { return Vec::new() };
        let mut v = vec![Placement { parent: first, child: first }];
        if let (Some(&second), false) = (self.cpus.get(1), self.quick) {
            v.push(Placement { parent: first, child: second });
        }
        v
    }

    /// Where two processes that should each have a CPU run: the first two CPUs this process
    /// may use, or the one there is.
    pub fn two_cpus(&self) -> Option<Placement> {
        let &first = self.cpus.first()?;
        Some(Placement { parent: first, child: self.cpus.get(1).copied().unwrap_or(first) })
    }
}

/// The row id suffix for a placement: none for same core, `-cross-core` otherwise.
pub fn placement_suffix(p: Placement) -> &'static str {
    if p.same_core() { "" } else { "-cross-core" }
}

/// The CPython script's arguments: workload, variant, iterations, warm-up and the placement.
pub fn py_args(workload: &str, variant: &str, n: u32, warmup: u32, placement: Option<Placement>) -> Vec<String> {
    let mut args = vec![workload.into(), variant.into(), n.to_string(), "--warmup".into(), warmup.to_string()];
    if let Some(p) = placement {
        args.extend(["--cpu".into(), p.parent.to_string(), "--child-cpu".into(), p.child.to_string()]);
    }
    args
}

/// The names of all workloads, for `--list` and `--only`.
pub const NAMES: &[&str] = &[
    process_start_join::NAME,
    pipe_pingpong::NAME,
    pipe_bulk::NAME,
    lock_uncontended::NAME,
    lock_contended::NAME,
    sync_pingpong::NAME,
    idle_waiters::NAME,
    value_increment::NAME,
    array_fill_sum::NAME,
    shared_memory::NAME,
    queues::QUEUE_SMALL,
    queues::QUEUE_1K,
    queues::QUEUE_1M,
    queues::SIMPLEQUEUE_SMALL,
    pools::POOL_STARTUP_SHUTDOWN,
    pools::POOL_MAP,
    pools::POOL_APPLY,
    pools::POOL_SUBMIT_AWAIT,
    managers::START,
    managers::DICT,
    managers::QUEUE,
    managers::LOCK,
    managers::SOCKET,
    managers_remote::NAME,
];

/// Every row of every workload, in table order.
pub fn all(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = process_start_join::rows(cfg)?;
    rows.extend(pipe_pingpong::rows(cfg));
    rows.extend(pipe_bulk::rows(cfg));
    rows.extend(lock_uncontended::rows(cfg));
    rows.extend(lock_contended::rows(cfg));
    rows.extend(sync_pingpong::rows(cfg));
    rows.extend(idle_waiters::rows(cfg));
    rows.extend(value_increment::rows(cfg));
    rows.extend(array_fill_sum::rows(cfg));
    rows.extend(shared_memory::rows(cfg));
    rows.extend(queues::rows(cfg));
    rows.extend(pools::rows(cfg)?);
    rows.extend(managers::rows(cfg));
    rows.extend(managers_remote::rows(cfg));
    Ok(rows)
}
