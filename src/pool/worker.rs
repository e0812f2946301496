//! A pool worker: takes tasks from its own queue, runs them, and puts the results on the
//! pool's shared result queue. Python's `multiprocessing.pool.worker`.

use super::task::{self, Runner};
use crate::queues::{Queue, SimpleQueue};
use serde::{Deserialize, Serialize};

/// What the pool sends a worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run a chunk: the runner's offset in the binary, and the encoded `Vec<Args>`.
    Run { task: u64, runner: i64, chunk: Vec<u8> },
    /// Finish: exit once the orders before this one are done.
    Stop,
}

/// What a worker (or the pool itself, to wake its manager) puts on the result queue.
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// A chunk is done: the encoded `Vec<Result<Output, String>>`.
    Done { worker: u64, task: u64, results: Vec<u8> },
    /// The initializer panicked: the worker exits without running anything.
    InitFailed { worker: u64, message: String },
    /// Nothing: the pool has news for its manager (a new task, a close).
    Wake,
}

/// The initializer a worker runs first: a runner and its encoded `Vec<Args>` of one.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Init {
    pub(crate) runner: i64,
    pub(crate) args: Vec<u8>,
}

/// A worker's body, started as a process by the pool.
pub(crate) fn main(
    orders: SimpleQueue<Vec<u8>>,
    reports: Queue<Vec<u8>>,
    worker: u64,
    init: Option<Init>,
    max_tasks: u64,
) -> crate::Result<()> {
    task::record_panics();
    if let Some(init) = init {
        // SAFETY: the offset came from this worker's pool, in the same binary.
        let run: Runner = unsafe { task::runner_at(init.runner) };
        let results: Vec<Result<(), String>> = postcard::from_bytes(&run(&init.args)).unwrap_or_default();
        if let Some(Err(message)) = results.into_iter().next() {
            send(&reports, &Report::InitFailed { worker, message })?;
            return Ok(());
        }
    }
    let mut done = 0u64;
    while max_tasks == 0 || done < max_tasks {
        let order: Order = postcard::from_bytes(&orders.get()?)?;
        match order {
            Order::Run { task, runner, chunk } => {
                // SAFETY: the offset came from this worker's pool, in the same binary.
                let run: Runner = unsafe { task::runner_at(runner) };
                send(&reports, &Report::Done { worker, task, results: run(&chunk) })?;
                done += 1;
            }
            Order::Stop => break,
        }
    }
    Ok(())
}

/// Encodes and puts a report.
pub(crate) fn send(reports: &Queue<Vec<u8>>, report: &Report) -> crate::Result<()> {
    reports.put(postcard::to_allocvec(report)?)?;
    Ok(())
}
