//! The workloads. Each one contributes rows; a row is one line of the table, measured on up
//! to three sides (multiprocess, CPython, the raw-syscall limit) once per round.
//!
//! A new workload is a module here with a `rows(&Config) -> Vec<Row>` function, added to
//! [`all`]; its CPython side is a new sub-command of `cpython_side.py`.

pub mod pipe_pingpong;
pub mod process_start_join;

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
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::MicrosPerProcess => "µs/process",
            Unit::MicrosPerRoundTrip => "µs/round trip",
        }
    }

    /// Whether a smaller value is better (a time) rather than a larger one (a rate).
    pub fn lower_is_better(self) -> bool {
        match self {
            Unit::MicrosPerProcess | Unit::MicrosPerRoundTrip => true,
        }
    }
}

/// A goal the project set for a row; reported, never asserted.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum Goal {
    /// The library's median at most this many units.
    AtMost(f64),
    /// The library's median cost at most this multiple of the limit's.
    AtMostTimesLimit(f64),
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
}

/// The names of all workloads, for `--list` and `--only`.
pub const NAMES: &[&str] = &[process_start_join::NAME, pipe_pingpong::NAME];

/// Every row of every workload, in table order.
pub fn all(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows = process_start_join::rows(cfg)?;
    rows.extend(pipe_pingpong::rows(cfg));
    Ok(rows)
}
