//! A pool worker: takes tasks from its own queue, runs them, and puts the results on the
//! pool's shared result queue. Python's `multiprocessing.pool.worker`.

use super::board::Board;
use super::task::{self, ClosureRunner, Runner, Task};
use super::wire::{Order, Piece, Report};
use crate::connection::Connection;
use crate::queues::{Queue, SimpleQueue};
use serde::{Deserialize, Serialize};

/// A worker's settings, fixed when the pool starts it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// The worker's number in its pool.
    pub(crate) id: u64,
    /// Chunks it runs before it leaves (`maxtasksperchild`); 0: no limit.
    pub(crate) max_tasks: u64,
    /// The exit hook's runner, as an offset in the binary; 0: none.
    pub(crate) exit: i64,
}

/// What a worker is started with: where its orders come from and its reports go, its
/// handle socket, its board, and its settings.
#[derive(Serialize, Deserialize)]
pub(crate) struct Channels {
    pub(crate) orders: SimpleQueue<Vec<u8>>,
    pub(crate) reports: Queue<Vec<u8>>,
    pub(crate) handles: Connection,
    pub(crate) board: Board,
    pub(crate) settings: Settings,
}

/// A worker's buffers, kept from task to task: none is allocated per task.
#[derive(Default)]
struct Buffers {
    /// The order being run, as it came.
    order: Vec<u8>,
    /// The report being sent: its head, then the chunk's results, encoded right after it.
    report: Vec<u8>,
}

/// A worker's body, started as a process by the pool, without an initializer.
pub(crate) fn main(channels: Channels) -> crate::Result<()> {
    task::record_panics();
    serve(&channels)
}

/// A worker's body with an initializer `F` run first on `args` (which may hold handles:
/// they came in this process's arguments, with their descriptors).
pub(crate) fn main_with_init<F, A>(channels: Channels, args: A) -> crate::Result<()>
where
    F: Task<A, Output = ()>,
{
    task::record_panics();
    const { assert!(std::mem::size_of::<F>() == 0, "an initializer must be a fn item or a closure that captures nothing") };
    // SAFETY: `F` is zero-sized (asserted above): a fn item or a closure capturing nothing,
    // with no bytes and no invariants, re-made here out of nothing.
    let f = std::mem::ManuallyDrop::new(unsafe { std::mem::zeroed::<F>() });
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(args))).is_err() {
        let message = task::take_panic_message();
        send(&channels.reports, &Report::InitFailed { worker: channels.settings.id, message: &message })?;
        return Ok(());
    }
    serve(&channels)
}

/// Runs orders until told to stop, or `max_tasks` are done (0: no limit); then the exit hook,
/// if any.
fn serve(channels: &Channels) -> crate::Result<()> {
    let served = run_orders(channels);
    let settings = channels.settings;
    if settings.exit != 0 {
        // SAFETY: the offset came from this worker's pool, in the same binary.
        let run: Runner = unsafe { task::runner_at(settings.exit) };
        // The hook's panic is caught and recorded by the runner; the worker leaves anyway.
        if let Ok(no_args) = postcard::to_allocvec(&vec![()]) {
            run(&no_args, &mut Vec::new());
        }
    }
    served
}

fn run_orders(channels: &Channels) -> crate::Result<()> {
    let Channels { orders, handles, settings, .. } = channels;
    let max_tasks = settings.max_tasks;
    let mut done = 0u64;
    let mut buffers = Buffers::default();
    while max_tasks == 0 || done < max_tasks {
        let mut order = std::mem::take(&mut buffers.order);
        orders.get_into(&mut order)?;
        match Order::decode(&order)? {
            Order::Run { task, seq, runner, closure, chunk, handles: with_handles } => {
                let fds = if with_handles { receive_handles(handles, task)? } else { Vec::new() };
                done += 1;
                run_reported(channels, &mut buffers, (task, seq), runner, closure, chunk, fds)?;
            }
            Order::Many { runner, closure, pieces } => {
                for Piece(task, seq, chunk) in pieces {
                    done += 1;
                    run_reported(channels, &mut buffers, (task, seq), runner, closure, chunk, Vec::new())?;
                }
            }
            Order::Stop => break,
        }
        buffers.order = order;
    }
    Ok(())
}

/// Runs a chunk (with the descriptors of the handles in its arguments) and reports it,
/// unless the pool cancelled it since it was sent: then it is passed over (the pool took it
/// off its books). Reported before the next begins: if the worker dies in that one, the pool
/// knows which chunk it died in (the oldest it holds unreported).
fn run_reported(
    channels: &Channels,
    buffers: &mut Buffers,
    (task, seq): (u64, u64),
    runner: i64,
    closure: u64,
    chunk: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> crate::Result<()> {
    if !channels.board.begin(task, seq) {
        return Ok(());
    }
    let report = &mut buffers.report;
    report.clear();
    Report::put_done_head(report, channels.settings.id, task);
    crate::reduction::with_received(fds, || run_one(runner, closure, chunk, report));
    channels.reports.put_slice(report)?;
    // A chunk of huge results leaves a huge buffer: not kept for the tiny ones after it.
    if report.capacity() > KEEP_BUFFER {
        *report = Vec::new();
    }
    Ok(())
}

/// Buffers above this size are not kept after use.
const KEEP_BUFFER: usize = 1 << 20;

/// Runs one chunk with the runner at offset `runner` (of the closure at `closure`, if not 0),
/// appending its encoded results to `out`.
fn run_one(runner: i64, closure: u64, chunk: &[u8], out: &mut Vec<u8>) {
    if closure == 0 {
        // SAFETY: the offset came from this worker's pool, in the same binary.
        let run: Runner = unsafe { task::runner_at(runner) };
        run(chunk, out)
    } else {
        // SAFETY: the offset and the address came from this worker's pool, which sends a
        // closure only to workers it forked after the closure was made.
        unsafe {
            let run: ClosureRunner = task::closure_runner_at(runner);
            run(closure as usize, chunk, out)
        }
    }
}

/// The descriptors of task `task`'s handles, from the handle socket: messages of tasks before
/// it (taken back from this worker, or cancelled) are passed over.
fn receive_handles(handles: &Connection, task: u64) -> crate::Result<Vec<std::os::fd::OwnedFd>> {
    let raw = handles.fileno()?;
    // SAFETY: the descriptor belongs to `handles`, which outlives this call.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    loop {
        let mut id = [0u8; 8];
        let (n, fds) = crate::sys::fd::recv_with_fds(socket, &mut id)?;
        if n == 0 {
            return Err(crate::Error::Eof);
        }
        let got = u64::from_le_bytes(id);
        if n == 8 && got == task {
            return Ok(fds);
        }
        if n != 8 || got > task {
            return Err(crate::Error::Codec(format!("handles of task {got} where task {task}'s were due")));
        }
    }
}

/// Encodes and puts a report.
pub(crate) fn send(reports: &Queue<Vec<u8>>, report: &Report<'_>) -> crate::Result<()> {
    let mut bytes = Vec::new();
    report.put(&mut bytes);
    reports.put_slice(&bytes)
}
