//! A pool whose workers are the other ranks of an MPI job (feature `mpi`): mpi4py's
//! `MPIPoolExecutor`.
//!
//! On rank 0 the pool is the local one: the same manager hands out chunks and files the
//! results; each other rank is one of its workers (a [`Link::Rank`]). The manager's orders
//! for the ranks go into one channel; rank 0's MPI state (under one lock: MPI is initialized
//! with `MPI_THREAD_SERIALIZED`) sends them, the orders waiting for one rank in one
//! non-blocking send, and puts the ranks' reports on the manager's result queue, as a local
//! worker would. Whoever passes by moves it along: a caller right after it hands in a chunk,
//! a caller waiting for its result (as it files results itself), the manager thread; and an
//! MPI thread when none of them does (it initialized MPI, and finalizes it). On the other
//! ranks the same thread serves: it takes the orders, runs each chunk with the runner found
//! at its offset in this same binary (a panic fails its task alone: the runner catches it),
//! and sends the reports back. When rank 0's pool ends, rank 0 tells every rank to stop,
//! waits for each one's goodbye (its last reports are then in), and every rank calls
//! `MPI_Finalize`; the other ranks then end their process.
//!
//! One tag carries everything, so MPI's order between two ranks is the order of the
//! messages (a stop comes after the orders before it); task numbers are never tags.
//! Messages: a kind byte, then frames (a little-endian `u64` length and the bytes).

use super::Pool;
use super::link::{Link, Orders};
use super::manager::{Config, Manager};
use super::task::{self, Runner};
use super::wire::{Order, Report};
use crate::queues::{PutError, Queue};
use crate::{Error, Result, StartMethod};
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The one tag of the pool's messages.
const TAG: mpi::Tag = 17;
/// Kinds of message, rank 0 to a worker rank.
const ORDERS: u8 = 0;
const STOP: u8 = 1;
/// Kinds of message, a worker rank to rank 0.
const REPORTS: u8 = 0;
const BYE: u8 = 1;
/// How long a thread that waits for MPI messages probes without sleeping after its last
/// piece of work (it yields its CPU between probes: ranks may share cores).
const SPIN: Duration = Duration::from_micros(500);
/// Its sleeps after that: the shortest, doubled up to the longest.
const MIN_NAP: Duration = Duration::from_micros(20);
const MAX_NAP: Duration = Duration::from_millis(1);
/// Rank 0's MPI thread leaves MPI to the pool's threads while one of them moved it along
/// within this long.
const HANDOFF: Duration = Duration::from_micros(200);
/// A worker rank sends its reports at once, except after a quick task with more orders
/// waiting: then they wait for the next ones, up to these bounds.
const QUICK_TASK: Duration = Duration::from_micros(20);
const BATCH_AGE: Duration = Duration::from_micros(200);
const BATCH_BYTES: usize = 64 << 10;

/// A rank whose chunks come back within this long of being sent counts as quick to the
/// manager, and is sent more at once: the trip through rank 0's MPI thread and MPI takes tens
/// to hundreds of microseconds on shared cores, on top of the task.
pub(crate) const QUICK_TRIP: Duration = Duration::from_micros(500);

/// Chunks a quick rank holds at once (a local worker holds more, which can be taken back):
/// enough to keep it busy through the trip of its reports and its next orders.
pub(crate) const QUICK_IN_FLIGHT: usize = 64;

/// The environment variables that MPI launchers give their ranks (Open MPI, PMIx under
/// Slurm and Open MPI 5, PMI under MPICH and Intel MPI, MVAPICH).
const LAUNCHER_VARIABLES: &[&str] =
    &["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_RANK"];

impl Pool {
    /// A pool whose workers are the other ranks of the MPI job this program runs in
    /// (mpi4py's `MPIPoolExecutor`, run as `mpiexec -n N python -m mpi4py.futures
    /// script.py`). Feature `mpi`.
    ///
    /// Run the program under an MPI launcher: `mpirun -n N ./program` (or `srun`). Every
    /// rank runs `main` up to this call. On rank 0 it returns a pool of `N - 1` workers,
    /// ranks 1 to N-1, with every method of a local [`Pool`]; on the other ranks it never
    /// returns: they serve the pool's tasks, and end the process (exit code 0, after
    /// `MPI_Finalize`) when rank 0's pool is closed, terminated or dropped. So call it first
    /// in `main`, after [`init`](crate::init).
    ///
    /// Tasks are fn items and closures that capture nothing, found on each rank in the same
    /// binary (as under spawn); a capturing closure is refused with
    /// [`Error::InvalidArgument`], and so are handles (locks, queues, shared values) in
    /// arguments and per-call timeouts. Arguments and results are serde values of any size
    /// (under 2 GiB a message).
    ///
    /// Failures: a panicking task fails alone with [`Error::TaskPanicked`]. A rank that dies
    /// ends the whole job: `mpirun` kills the other ranks and exits non-zero (Open MPI's
    /// default error handler), within a few seconds. A rank cannot be killed alone: cancelling
    /// a task that a rank was already sent (a rank that runs quick tasks is sent up to 64 at
    /// once) gives [`Error::Cancelled`] at once, but the rank runs it to its end, its result
    /// dropped; `terminate()` lets each rank finish the task it runs (and, with quick tasks,
    /// the few behind it: a busy rank looks for messages every 8 tasks). A panic on rank 0
    /// outside a task unwinds through the pool's drop, which stops the ranks: the job ends
    /// with `mpirun` exiting non-zero, not a hang.
    ///
    /// Errors ([`Error::Mpi`]): not started by an MPI launcher (no `OMPI_COMM_WORLD_SIZE`,
    /// `PMIX_RANK`, `PMI_RANK`, ... in the environment: MPI is then not touched, and a
    /// program can fall back to [`Pool::new`]), a job of one rank, or MPI initialized in
    /// this process before (it can be once: one MPI pool per run).
    ///
    /// `no_run`: it needs `mpirun`; `examples/mpi_pool.rs` runs under it in CI.
    ///
    /// ```no_run
    /// use multiprocess::Pool;
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// fn main() -> multiprocess::Result<()> {
    ///     multiprocess::init();
    ///     let pool = Pool::mpi()?; // ranks other than 0 serve tasks here, then exit
    ///     let squares: Vec<u64> = pool.map(square, 0..1_000_000u64)?;
    ///     assert_eq!(squares[1000], 1_000_000);
    ///     Ok(())
    /// }
    /// ```
    pub fn mpi() -> Result<Pool> {
        if !LAUNCHER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some()) {
            return Err(Error::Mpi(
                "Pool::mpi() needs an MPI job: run the program under mpirun -n N (N ≥ 2), mpiexec or srun".into(),
            ));
        }
        let (started_tx, started_rx) = mpsc::channel();
        let (start_tx, start_rx) = mpsc::channel::<Option<Start>>();
        let thread = std::thread::Builder::new()
            .name("multiprocess-mpi".into())
            .spawn(move || mpi_thread(started_tx, start_rx))
            .map_err(Error::Io)?;
        let (rank, size, serialized) = match started_rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Mpi("the MPI thread ended before MPI was initialized".into()));
            }
        };
        if rank != 0 {
            // A worker rank: the MPI thread serves until rank 0 is done, and finalizes.
            let _ = thread.join();
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(0);
        }
        if size < 2 {
            let _ = start_tx.send(None);
            let _ = thread.join();
            return Err(Error::Mpi("the MPI job has one rank, so no workers: run it with mpirun -n N, N ≥ 2".into()));
        }
        let (order_tx, order_rx) = mpsc::channel::<Out>();
        let shared =
            Arc::new(Shared { lead: Mutex::new(None), serialized, polled: AtomicU64::new(0), epoch: Instant::now() });
        let hub = Arc::new(Hub {
            tx: Mutex::new(order_tx.clone()),
            shared: shared.clone(),
            thread: Mutex::new(Some(thread)),
        });
        let config = Config {
            processes: 0,
            method: StartMethod::Spawn,
            starter: Box::new(|_| unreachable!("an MPI pool starts no local workers")),
            max_tasks: 0,
            task_timeout: None,
            memory_limit: 0,
            exit: 0,
        };
        let workers = size as usize - 1;
        Pool::launch(config, workers, true, move |manager: &mut Manager, reports: &Queue<Vec<u8>>| {
            let start = Start { reports: reports.clone(), orders: order_rx, shared: shared.clone() };
            start_tx
                .send(Some(start))
                .map_err(|_| Error::Mpi("the MPI thread ended before the pool started".into()))?;
            for rank in 1..size {
                // A rank takes no handles: this descriptor only fills the place.
                let unused: OwnedFd = std::fs::File::open("/dev/null")?.into();
                let link = Link::Rank(RankLink { name: format!("MpiRank-{rank}"), hub: hub.clone() });
                let orders = Orders::Rank(RankOrders { rank, tx: order_tx.clone(), shared: shared.clone() });
                manager.add_remote(rank as u64, link, orders, unused)?;
            }
            Ok(())
        })
    }
}

/// What the manager tells rank 0's MPI thread.
enum Out {
    /// An encoded [`Order`] for a rank.
    Order { rank: i32, bytes: Vec<u8> },
    /// The pool is gone: stop the ranks and finalize.
    Shutdown,
}

/// Rank 0's MPI state: whoever holds its lock may call MPI (the MPI thread, or a thread of
/// the pool that passes by: a caller waiting for its result, the manager), so that a result
/// is taken off MPI by the thread that waits for it, with no hop through the MPI thread.
struct Lead {
    world: SimpleCommunicator,
    orders: Receiver<Out>,
    reports: Queue<Vec<u8>>,
    sends: Vec<Sending>,
    /// Per rank, the orders taken from the channel and not sent yet.
    batches: Vec<Vec<u8>>,
    /// Orders sent whose reports have not come (a stop order has none: an over-estimate).
    outstanding: u64,
    /// The pool is gone (a `Shutdown` was taken, or the channel closed).
    done: bool,
}

// SAFETY: the communicator and the requests are MPI handles, used only under the lock (MPI
// is initialized with MPI_THREAD_SERIALIZED for that), or by the MPI thread alone when the
// library offers less.
unsafe impl Send for Lead {}

impl Lead {
    /// Sends the orders there are, takes the reports there are, completes the sends that are
    /// done; whether it did anything.
    fn pump(&mut self) -> bool {
        let mut busy = false;
        while !self.done {
            match self.orders.try_recv() {
                Ok(out) => {
                    self.take(out);
                    busy = true;
                }
                Err(TryRecvError::Disconnected) => self.done = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        for (rank, batch) in self.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                send(&self.world, rank as i32, std::mem::take(batch), &mut self.sends);
            }
        }
        // One message a call: a probe that finds nothing gives the CPU away (Open MPI yields
        // when idle on shared cores), which the thread that waits for this report cannot
        // afford between taking it and filing it.
        if let Some(probed) = self.world.any_process().immediate_matched_probe_with_tag(TAG) {
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            busy = true;
            if bytes.first() == Some(&REPORTS) {
                for report in frames(&bytes[1..]) {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    if self.reports.put(report.to_vec()).is_err() {
                        log::warn!(
                            target: crate::util::LOG_TARGET,
                            "pool: a report of rank {} could not be filed",
                            status.source_rank()
                        );
                    }
                }
            }
        }
        progress(&mut self.sends);
        busy
    }

    /// Takes one thing the manager said.
    fn take(&mut self, out: Out) {
        match out {
            Out::Order { rank, bytes } => {
                let batch = &mut self.batches[rank as usize];
                if batch.is_empty() {
                    batch.push(ORDERS);
                }
                frame(batch, &bytes);
                self.outstanding += 1;
            }
            Out::Shutdown => self.done = true,
        }
    }

    /// Whether nothing is expected from the ranks: no report due, no send under way.
    fn quiet(&self) -> bool {
        self.outstanding == 0 && self.sends.is_empty()
    }
}

/// Rank 0's MPI state, shared by the MPI thread and the pool's threads.
struct Shared {
    lead: Mutex<Option<Lead>>,
    /// Whether threads other than the MPI thread may call MPI (the library gave
    /// MPI_THREAD_SERIALIZED or more).
    serialized: bool,
    /// When a pool thread last moved MPI along, in microseconds since `epoch`: the MPI
    /// thread keeps out of its way meanwhile (a lock holder that loses its CPU on shared
    /// cores would hold up the thread that waits for a result).
    polled: AtomicU64,
    epoch: Instant,
}

impl Shared {
    /// Moves MPI along from a pool thread, if nobody else is at it.
    fn poll(&self) {
        if self.serialized
            && let Ok(mut lead) = self.lead.try_lock()
            && let Some(lead) = lead.as_mut()
        {
            lead.pump();
            self.polled.store(self.epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Whether a pool thread moved MPI along within `within`.
    fn polled_within(&self, within: Duration) -> bool {
        let now = self.epoch.elapsed().as_micros() as u64;
        now.saturating_sub(self.polled.load(Ordering::Relaxed)) < within.as_micros() as u64
    }
}

/// Rank 0's MPI thread, shared by the pool's rank workers: the last one dropped (when the
/// manager lets its workers go) stops the ranks and waits for `MPI_Finalize`.
struct Hub {
    tx: Mutex<Sender<Out>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Out::Shutdown);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// A rank, as the manager holds it.
pub(crate) struct RankLink {
    name: String,
    hub: Arc<Hub>,
}

impl RankLink {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Moves MPI along (sends the orders, takes the reports), if nobody else is at it.
    pub(crate) fn poll(&self) {
        self.hub.shared.poll();
    }
}

/// A rank's orders: to the MPI thread's channel, then sent by whoever moves MPI along next
/// (this thread at once, if nobody else is at it).
pub(crate) struct RankOrders {
    rank: i32,
    tx: Sender<Out>,
    shared: Arc<Shared>,
}

impl RankOrders {
    pub(crate) fn put(&self, bytes: Vec<u8>) -> std::result::Result<(), PutError<Vec<u8>>> {
        self.tx.send(Out::Order { rank: self.rank, bytes }).map_err(|e| match e.0 {
            Out::Order { bytes, .. } => PutError::Closed(bytes),
            Out::Shutdown => PutError::Closed(Vec::new()),
        })?;
        self.shared.poll();
        Ok(())
    }
}

/// What rank 0's MPI thread is given once the pool exists.
struct Start {
    reports: Queue<Vec<u8>>,
    orders: Receiver<Out>,
    shared: Arc<Shared>,
}

/// The MPI thread of every rank: initializes MPI, says which rank this is, serves (rank 0:
/// the pool's manager; the others: the tasks), and finalizes.
fn mpi_thread(started: Sender<Result<(i32, i32, bool)>>, start: Receiver<Option<Start>>) {
    let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Serialized) else {
        let _ = started
            .send(Err(Error::Mpi("MPI was initialized in this process before: Pool::mpi() can be called once".into())));
        return;
    };
    let serialized = matches!(threading, mpi::Threading::Serialized | mpi::Threading::Multiple);
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let _ = started.send(Ok((rank, size, serialized)));
    if rank == 0 {
        if let Ok(Some(start)) = start.recv() {
            lead(start, size as usize);
        }
    } else {
        serve(&world, rank);
    }
    drop(world);
    // MPI_Finalize, on the thread that initialized MPI.
    drop(universe);
}

/// A message on its way, with its buffer (freed when the send is complete).
struct Sending {
    request: Request<'static, [u8], StaticScope>,
    buffer: *mut [u8],
}

fn send(world: &SimpleCommunicator, rank: i32, bytes: Vec<u8>, sends: &mut Vec<Sending>) {
    let buffer = Box::into_raw(bytes.into_boxed_slice());
    // SAFETY: the buffer is freed only once MPI is done with it (in `progress`).
    let data: &'static [u8] = unsafe { &*buffer };
    let request = world.process_at_rank(rank).immediate_send_with_tag(StaticScope, data, TAG);
    sends.push(Sending { request, buffer });
}

/// Completes the sends that are done; whether any are left.
fn progress(sends: &mut Vec<Sending>) -> bool {
    let mut i = 0;
    while i < sends.len() {
        let Sending { request, buffer } = sends.swap_remove(i);
        match request.test() {
            // SAFETY: made by `Box::into_raw` in `send`; MPI is done with it.
            Ok(_) => drop(unsafe { Box::from_raw(buffer) }),
            Err(request) => {
                sends.push(Sending { request, buffer });
                let last = sends.len() - 1;
                sends.swap(i, last);
                i += 1;
            }
        }
    }
    !sends.is_empty()
}

/// Waits until every send is complete.
fn finish_sends(sends: &mut Vec<Sending>) {
    for Sending { request, buffer } in sends.drain(..) {
        request.wait_without_status();
        // SAFETY: as in `progress`.
        drop(unsafe { Box::from_raw(buffer) });
    }
}

fn frame(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u64).to_le_bytes());
    out.extend_from_slice(item);
}

/// The frames of a message's body.
fn frames(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = body.split_first_chunk::<8>()?;
        let len = (u64::from_le_bytes(*len) as usize).min(rest.len());
        let (item, rest) = rest.split_at(len);
        body = rest;
        Some(item)
    })
}

/// Waits for work without spinning for long: probes for `SPIN` after the last piece of
/// work (yielding between probes), then naps, longer and longer.
struct Idle {
    since: Instant,
    nap: Duration,
}

impl Idle {
    fn new() -> Idle {
        Idle { since: Instant::now(), nap: MIN_NAP }
    }

    fn busy(&mut self) {
        self.since = Instant::now();
        self.nap = MIN_NAP;
    }

    /// How long to wait now: zero (yield) while spinning.
    fn next(&mut self) -> Duration {
        if self.since.elapsed() < SPIN {
            return Duration::ZERO;
        }
        let nap = self.nap;
        self.nap = (self.nap * 2).min(MAX_NAP);
        nap
    }
}

/// Rank 0's MPI thread: moves MPI along (orders out, reports in) whenever the pool's own
/// threads do not, until the pool is gone; then stops the ranks.
fn lead(start: Start, size: usize) {
    let Start { reports, orders, shared } = start;
    *shared.lead.lock().unwrap_or_else(|e| e.into_inner()) = Some(Lead {
        world: SimpleCommunicator::world(),
        orders,
        reports,
        sends: Vec::new(),
        batches: vec![Vec::new(); size],
        outstanding: 0,
        done: false,
    });
    let mut idle = Idle::new();
    loop {
        if shared.polled_within(HANDOFF) {
            // A caller waits for its result and moves MPI along itself.
            std::thread::sleep(HANDOFF / 2);
            continue;
        }
        let (busy, quiet, done) = {
            let mut guard = shared.lead.lock().unwrap_or_else(|e| e.into_inner());
            let Some(lead) = guard.as_mut() else { return };
            let busy = lead.pump();
            if !busy && lead.quiet() && idle.since.elapsed() >= SPIN {
                // Nothing to hear from the ranks, for a while: wait for the manager only (a
                // caller that waits for its result sends the next order soon: until `SPIN`
                // has passed, that order is picked up without a wake-up). The lock is held
                // meanwhile: nobody else has anything to do with MPI.
                match lead.orders.recv_timeout(Duration::from_millis(100)) {
                    Ok(out) => {
                        lead.take(out);
                        lead.pump();
                        idle.busy();
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => lead.done = true,
                }
            }
            (busy, lead.quiet(), lead.done)
        };
        if done {
            break;
        }
        if busy {
            idle.busy();
        } else if !quiet || idle.since.elapsed() < SPIN {
            nap(&mut idle);
        }
    }
    // The pool is gone: every rank stops after the orders it was sent (it runs none of those
    // left), reports what it ran, and says goodbye; its last reports are then all in.
    let mut guard = shared.lead.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lead) = guard.take() else { return };
    drop(guard);
    for rank in 1..size {
        send(&lead.world, rank as i32, vec![STOP], &mut lead.sends);
    }
    let mut gone = 0;
    let mut idle = Idle::new();
    while gone < size - 1 {
        let mut busy = false;
        while let Some(probed) = lead.world.any_process().immediate_matched_probe_with_tag(TAG) {
            let (bytes, _) = probed.matched_receive_vec::<u8>();
            if bytes.first() == Some(&BYE) {
                gone += 1;
            }
            busy = true;
        }
        progress(&mut lead.sends);
        if busy {
            idle.busy();
        } else {
            nap(&mut idle);
        }
    }
    finish_sends(&mut lead.sends);
}

fn nap(idle: &mut Idle) {
    let nap = idle.next();
    if nap.is_zero() {
        std::hint::spin_loop();
    } else {
        std::thread::sleep(nap);
    }
}

/// A worker rank: runs the orders of rank 0 until told to stop.
fn serve(world: &SimpleCommunicator, rank: i32) {
    task::record_panics();
    let root = world.process_at_rank(0);
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut sends = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_since = Instant::now();
    let mut idle = Idle::new();
    let flush = |batch: &mut Vec<u8>, sends: &mut Vec<Sending>| {
        if !batch.is_empty() {
            send(world, 0, std::mem::take(batch), sends);
        }
    };
    // Orders run since the last look for messages.
    let mut ran = 0;
    // One report's bytes, kept from task to task.
    let mut report = Vec::new();
    loop {
        let mut stop = false;
        // A look that finds nothing gives the CPU away (Open MPI yields when idle on shared
        // cores): with orders in hand, look again only every few of them.
        if (queue.is_empty() || ran >= 8)
            && let Some(probed) = root.immediate_matched_probe_with_tag(TAG)
        {
            ran = 0;
            let (bytes, _) = probed.matched_receive_vec::<u8>();
            match bytes.first() {
                Some(&ORDERS) => queue.extend(frames(&bytes[1..]).map(<[u8]>::to_vec)),
                _ => stop = true,
            }
        }
        if stop {
            break;
        }
        if let Some(order) = queue.pop_front() {
            ran += 1;
            let started = Instant::now();
            if let Ok(Order::Run { task, runner, closure, chunk, handles, .. }) = Order::decode(&order) {
                let results = if closure != 0 || handles {
                    // Refused on rank 0 before they are sent; never here.
                    let failed: Vec<std::result::Result<(), String>> =
                        vec![Err("an MPI rank cannot run a capturing closure nor take handles".into())];
                    postcard::to_allocvec(&failed).unwrap_or_default()
                } else {
                    // SAFETY: the offset came from rank 0, which runs this same binary (an
                    // MPI job's ranks run one program; the README says so).
                    let run: Runner = unsafe { task::runner_at(runner) };
                    let mut results = Vec::new();
                    run(chunk, &mut results);
                    results
                };
                report.clear();
                Report::Done { worker: rank as u64, task, results: &results }.put(&mut report);
                if batch.is_empty() {
                    batch.push(REPORTS);
                    batch_since = started;
                }
                frame(&mut batch, &report);
                let quick = started.elapsed() < QUICK_TASK;
                if queue.is_empty() || !quick || batch.len() > BATCH_BYTES || batch_since.elapsed() > BATCH_AGE {
                    flush(&mut batch, &mut sends);
                }
            }
            // `Order::Stop` (a pool's close): the stop message follows.
            idle.busy();
            continue;
        }
        flush(&mut batch, &mut sends);
        progress(&mut sends);
        nap(&mut idle);
    }
    flush(&mut batch, &mut sends);
    send(world, 0, vec![BYE], &mut sends);
    finish_sends(&mut sends);
}
