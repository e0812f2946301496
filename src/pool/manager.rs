//! The pool's manager: one thread in the parent that owns the workers. It hands each
//! worker a few chunks at a time, files the results, and watches the workers: one that dies
//! or overruns the task timeout fails only the chunk it was running, and is replaced.
//! Python's `Pool._handle_workers`, `_handle_tasks` and `_handle_results` in one.

use super::board::Board;
use super::bytes::Bytes;
use super::link::{Link, Orders};
use super::result::{Failure, Slot, deferring};
use super::task::{self, Closure};
use super::wire::{Order, Piece, Report};
use super::worker::{Channels, Settings};
use crate::connection::Connection;
use crate::queues::{Queue, SimpleQueue};
use crate::util::LOG_TARGET;
use crate::{Process, StartMethod};
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Chunks a worker holds at once: one running, one waiting, so that it never waits for the
/// manager between two.
const IN_FLIGHT: usize = 2;
/// Chunks a worker whose chunks take under `QUICK` holds at once: tiny tasks (a chunk size
/// of 1) would otherwise leave it waiting for the manager between two. A slow chunk puts it
/// back to `IN_FLIGHT`, so long tasks still go to whichever worker is free; what it still
/// holds then, beyond the order it took, is shared out again once another worker is idle
/// (see [`Manager::rebalance`]).
const QUICK_IN_FLIGHT: usize = 256;
/// Chunks sent to a quick worker in one order, at most (of one function, in the order they
/// came). An order the worker took cannot be taken back from its queue: its chunks that
/// have not begun are asked to be passed over on its board instead, which holds as many
/// requests. 16 rather than 8: the order's cost shared by twice the chunks gave chunk-size-1
/// maps and loops of submits some 3 to 8% more tasks a second.
const BATCH: usize = 16;
const _: () = assert!(BATCH <= super::board::SKIPS);
const QUICK: Duration = Duration::from_micros(50);
/// How long taking an order back waits for a worker that holds its queue's lock.
const TAKE_BACK_WAIT: Duration = Duration::from_millis(1);
/// How often the workers are checked for life when nothing else happens.
const CHECK: Duration = Duration::from_millis(10);
/// The report buffer is not kept past this size (after a chunk of huge results).
const KEEP_INBOX: usize = 1 << 20;
/// A dispatch takes in the chunks handed in only while fewer than this many are queued:
/// more than the workers can be sent at once. Beyond it the list is left to the callers, who
/// keep adding to it, rather than its lock bouncing between their CPU and the manager's at
/// every report filed (a loop of submits faster than the workers run them).
const TAKE_IN_BELOW: usize = 4096;

/// A chunk to run, and where its results go. Small, as it is moved from list to list on
/// its way (handed in, queued, batched, held): what most chunks lack is boxed apart.
pub(crate) struct Job {
    pub(crate) task: u64,
    /// Its place in the stream of chunks sent to the worker that holds it (from 1), which
    /// the worker notes on its board as it begins it: set as it is sent.
    seq: u64,
    /// The runner's offset in the binary.
    pub(crate) runner: i64,
    pub(crate) chunk: Bytes,
    pub(crate) slot: Arc<Slot>,
    extra: Option<Box<Extra>>,
}

/// What few chunks have: a capturing closure, a timeout of their own, handles.
struct Extra {
    /// The capturing closure it runs, if it is one.
    closure: Option<Closure>,
    /// This call's own timeout, beside the pool's (the shorter one applies).
    timeout: Option<Duration>,
    /// Descriptors of the handles in the arguments (copies: the arguments are gone), sent
    /// to the worker that takes the chunk, beside its order.
    fds: Vec<OwnedFd>,
    /// Holds on the shared objects in the arguments, for the worker to take over.
    tickets: Vec<crate::heap::Ticket>,
}

impl Job {
    /// A chunk of the runner at offset `runner` (of `closure`, if it is one), with its own
    /// `timeout` if any, and the descriptors and holds of the handles in its arguments.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        task: u64,
        runner: i64,
        closure: Option<Closure>,
        chunk: Bytes,
        slot: Arc<Slot>,
        timeout: Option<Duration>,
        fds: Vec<OwnedFd>,
        tickets: Vec<crate::heap::Ticket>,
    ) -> Job {
        let plain = closure.is_none() && timeout.is_none() && fds.is_empty() && tickets.is_empty();
        let extra = (!plain).then(|| Box::new(Extra { closure, timeout, fds, tickets }));
        Job { task, seq: 0, runner, chunk, slot, extra }
    }

    /// The number of closures a worker must have been forked after to run this: 0 for a
    /// stateless function.
    fn needs(&self) -> u64 {
        self.closure().map_or(0, |c| c.number)
    }

    fn closure(&self) -> Option<&Closure> {
        self.extra.as_ref().and_then(|e| e.closure.as_ref())
    }

    fn timeout(&self) -> Option<Duration> {
        self.extra.as_ref().and_then(|e| e.timeout)
    }

    fn fds(&self) -> &[OwnedFd] {
        self.extra.as_ref().map_or(&[], |e| &e.fds)
    }

    /// The holds on the shared objects in its arguments, taken out.
    fn take_tickets(&mut self) -> Vec<crate::heap::Ticket> {
        self.extra.as_mut().map(|e| std::mem::take(&mut e.tickets)).unwrap_or_default()
    }
}

/// A chunk dropped unrun (its pool terminated, or gone before its manager saw it) fails,
/// so that nobody waits on it for ever.
impl Drop for Job {
    fn drop(&mut self) {
        // Most are dropped filled (their report came): no need to take the slot's lock.
        if !self.slot.is_filled() {
            self.slot.fill(Err(Failure::Terminated));
        }
    }
}

/// What the pool tells its manager.
pub(crate) enum Command {
    /// Cancel this chunk: take it out if queued, replace its worker if running.
    Cancel(Arc<Slot>),
    /// Cancel every chunk not running yet (`shutdown(cancel_futures=True)`).
    CancelQueued,
    /// No more tasks: finish those there are, stop the workers, and end.
    Close,
    /// Kill the workers now; what is not done fails.
    Terminate,
}

/// How the pool, and the results it gave out, reach its manager: the command channel, and
/// the report queue the manager waits on, where a `Wake` makes it read its commands.
pub(crate) struct Control {
    commands: Mutex<Sender<Command>>,
    reports: Queue<Vec<u8>>,
    manager: Arc<Mutex<Manager>>,
    /// Chunks handed in and not yet taken by the manager's state (see [`Control::submit`]).
    incoming: Incoming,
    /// Set by the first `wake` after the manager last read its commands: the later ones
    /// need not put another `Wake` (a thousand submits in a row wake it once, not a
    /// thousand times).
    woken: Arc<AtomicBool>,
    /// Emptied result slots, for the next tasks.
    pub(crate) spares: super::spares::Spares,
}

impl Control {
    pub(crate) fn new(
        commands: Sender<Command>,
        reports: Queue<Vec<u8>>,
        woken: Arc<AtomicBool>,
        manager: Arc<Mutex<Manager>>,
    ) -> Control {
        let incoming = manager.lock().unwrap_or_else(|e| e.into_inner()).incoming.clone();
        Control { commands: Mutex::new(commands), reports, woken, manager, incoming, spares: Default::default() }
    }

    /// Hands chunks to the manager's state, which sends them to workers with room now.
    ///
    /// They go on the incoming list first. If the state is free, this thread takes them in
    /// and sends them itself (no hop through the manager thread); if another thread holds
    /// it (the manager thread filing reports), that thread takes them in as it lets go (see
    /// [`release`]), and this call returns at once: submits never wait for the state's lock,
    /// and many quick ones go out together.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) {
        self.incoming.push(jobs);
        // The list written, then the lock read; `release` does the opposite, with the same
        // fences between: if this try finds the lock held, its holder finds the list full.
        std::sync::atomic::fence(Ordering::SeqCst);
        // No room for them: taken in by the dispatch after the next report is filed (every
        // filing dispatches when it has filed any; until then the workers are busy).
        if self.incoming.is_full() {
            return;
        }
        deferring(|| {
            if let Some(mut m) = try_lock(&self.manager) {
                m.dispatch();
                release(&self.manager, m);
            }
        })
    }

    /// Files the reports there are, if nobody else is at it: a caller waiting for its result
    /// takes it off the result queue itself, instead of waiting for the manager thread to.
    pub(crate) fn help(&self) {
        // Nothing came: the state is not taken for nothing (the manager thread may want it).
        if self.reports.empty() {
            return;
        }
        deferring(|| {
            if let Some(mut m) = try_lock(&self.manager) {
                m.file_waiting();
                release(&self.manager, m);
            }
        })
    }

    /// The CPU the pool's last report came from (a worker's), plus one (0: none yet): a
    /// waiter on that CPU does not spin.
    pub(crate) fn worker_cpu(&self) -> u32 {
        self.reports.producer_cpu()
    }

    /// Sends a command; `PoolNotRunning` once the manager is gone.
    pub(crate) fn send(&self, command: Command) -> crate::Result<()> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        commands.send(command).map_err(|_| crate::Error::PoolNotRunning)
    }

    /// Wakes the manager if it waits for results: it has commands to read.
    pub(crate) fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = super::worker::send(&self.reports, &Report::Wake);
        }
    }
}

/// Chunks handed in by callers, for whoever holds the manager's state to take in.
type Incoming = Arc<IncomingList>;

/// The list of chunks handed in, and whether it is empty, readable without its lock (every
/// holder of the manager's state looks as it lets go).
#[derive(Default)]
struct IncomingList {
    jobs: Mutex<Vec<Job>>,
    /// How many there are: written under the lock, read without it.
    len: std::sync::atomic::AtomicUsize,
    /// The last dispatch left chunks pending, every worker that could take them being full,
    /// and no report has been filed since: a submit then leaves its chunks here for the
    /// dispatch that the next report brings (they would wait behind the pending ones anyway)
    /// instead of taking the state to find no room. On a line of its own: read by every
    /// submit and by the manager, written seldom, it would otherwise be invalidated by each
    /// submit's lock.
    full: OwnLine<AtomicBool>,
}

/// A value alone on its cache line (and the one the CPU fetches with it).
#[derive(Default)]
#[repr(align(128))]
struct OwnLine<T>(T);

impl IncomingList {
    fn push(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut list = lock(&self.jobs);
        list.extend(jobs);
        // Relaxed: the fence after the submit (`Control::submit`) orders it before the look
        // at the manager's lock, as the one in `release` orders that lock before the look at
        // this count. A SeqCst store would be a third full barrier per submit.
        self.len.store(list.len(), Ordering::Relaxed);
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    fn is_full(&self) -> bool {
        self.full.0.load(Ordering::SeqCst)
    }

    fn set_full(&self, full: bool) {
        // Written only when it changes: submitters read the line.
        if self.full.0.load(Ordering::Relaxed) != full {
            self.full.0.store(full, Ordering::SeqCst);
        }
    }

    /// The list, to be drained: counted empty once the guard is dropped.
    fn lock(&self) -> IncomingGuard<'_> {
        IncomingGuard { jobs: lock(&self.jobs), len: &self.len }
    }
}

/// The incoming list, locked; its count is brought up to date when the guard goes.
struct IncomingGuard<'a> {
    jobs: MutexGuard<'a, Vec<Job>>,
    len: &'a std::sync::atomic::AtomicUsize,
}

impl std::ops::Deref for IncomingGuard<'_> {
    type Target = Vec<Job>;
    fn deref(&self) -> &Vec<Job> {
        &self.jobs
    }
}

impl std::ops::DerefMut for IncomingGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<Job> {
        &mut self.jobs
    }
}

impl Drop for IncomingGuard<'_> {
    fn drop(&mut self) {
        self.len.store(self.jobs.len(), Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The manager's state if nobody holds it (a holder that panicked left it usable).
fn try_lock(m: &Mutex<Manager>) -> Option<MutexGuard<'_, Manager>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Lets go of the manager's state, and then takes in and sends the chunks that submits
/// handed in meanwhile, if no other thread has the state by then (that one does it when it
/// lets go). Every holder of the state lets go through here: a submit that finds the state
/// held leaves its chunks to the holder (see [`Control::submit`]).
fn release<'a>(shared: &'a Mutex<Manager>, mut guard: MutexGuard<'a, Manager>) {
    let incoming = guard.incoming.clone();
    loop {
        drop(guard);
        std::sync::atomic::fence(Ordering::SeqCst);
        // Full: no room for them until a report is filed, and the dispatch after that
        // takes them in (as a submit that finds it full leaves them).
        if incoming.is_empty() || incoming.is_full() {
            return;
        }
        let Some(next) = try_lock(shared) else { return };
        guard = next;
        guard.dispatch();
    }
}

/// Makes (does not start) one worker process, given what links it to the pool. Made by the
/// builder, which knows the initializer's types.
pub(crate) type Starter = Box<dyn Fn(Channels) -> Process + Send>;

/// The pool's fixed settings.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) starter: Starter,
    pub(crate) max_tasks: u64,
    pub(crate) task_timeout: Option<Duration>,
    /// Resident bytes a worker may hold; 0: no limit.
    pub(crate) memory_limit: u64,
    /// The exit hook's runner offset; 0: none.
    pub(crate) exit: i64,
}

struct Worker {
    id: u64,
    process: Link,
    orders: Orders,
    /// Our end of its handle socket: descriptors of handles in task arguments go there.
    handles: OwnedFd,
    /// Where it notes the chunk it begins, and we the chunks it is to pass over.
    board: Board,
    /// Chunks sent, oldest (running) first.
    held: VecDeque<Job>,
    /// Chunks sent in all (a worker with `max_tasks` leaves after that many).
    sent: u64,
    /// When the oldest held chunk started (as far as we can tell: when the one before it
    /// came back, or when it was sent to an idle worker).
    since: Instant,
    /// Whether its last chunk took well under the manager's own turnaround: then it is given
    /// more chunks at a time, or it would wait for each next one.
    quick: bool,
    /// The closures made before it was started: it can run those (under fork).
    knows: u64,
}

pub(crate) struct Manager {
    config: Config,
    reports: Queue<Vec<u8>>,
    commands: Receiver<Command>,
    workers: Vec<Worker>,
    next_id: u64,
    pending: VecDeque<Job>,
    /// Workers told to stop to make room for ones that know a newer closure, until reaped.
    retired: Vec<Link>,
    pids: Arc<Mutex<Vec<u32>>>,
    closing: bool,
    init_failed: Option<String>,
    /// See [`Control::woken`]: cleared before each reading of the commands.
    woken: Arc<AtomicBool>,
    /// The manager thread has ended: chunks handed in now are dropped (and fail).
    ended: bool,
    /// Where reports are read into, kept from one to the next.
    inbox: Vec<u8>,
    /// The chunks of the order being sent, kept from one order to the next (a list made
    /// for each, and freed, cost the allocator's lock, which the callers' threads wait on).
    batch: Vec<Job>,
    /// Chunks handed in by callers (see [`Control::submit`]): taken in by [`dispatch`], which
    /// every holder of the state that might send runs before it lets go.
    ///
    /// [`dispatch`]: Manager::dispatch
    incoming: Incoming,
}

impl Manager {
    /// Starts the first workers (from the caller's thread, so that a pool made in a
    /// single-threaded program forks without the many-threads warning).
    pub(crate) fn new(
        config: Config,
        reports: Queue<Vec<u8>>,
        commands: Receiver<Command>,
        pids: Arc<Mutex<Vec<u32>>>,
        woken: Arc<AtomicBool>,
    ) -> crate::Result<Manager> {
        let mut manager = Manager {
            config,
            reports,
            commands,
            workers: Vec::new(),
            next_id: 1,
            pending: VecDeque::new(),
            retired: Vec::new(),
            pids,
            closing: false,
            init_failed: None,
            woken,
            ended: false,
            inbox: Vec::new(),
            batch: Vec::with_capacity(BATCH),
            incoming: Incoming::default(),
        };
        for _ in 0..manager.config.processes {
            if let Err(e) = manager.spawn() {
                manager.kill_all();
                return Err(e);
            }
        }
        manager.publish_pids();
        Ok(manager)
    }

    fn spawn(&mut self) -> crate::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let orders = SimpleQueue::for_pool()?;
        let name = match self.config.method {
            StartMethod::Fork => "ForkPoolWorker",
            StartMethod::Spawn => "SpawnPoolWorker",
            StartMethod::ForkServer => "ForkServerPoolWorker",
        };
        // Read before the fork: every closure counted by then is in the child's memory.
        let knows = task::closures_made();
        let settings = Settings { id, max_tasks: self.config.max_tasks, exit: self.config.exit };
        let (handles, theirs) = crate::sys::fd::seqpacket_pair()?;
        let board = Board::new()?;
        let channels = Channels {
            orders: orders.clone(),
            reports: self.reports.clone(),
            handles: Connection::from_fd(theirs),
            board: board.clone(),
            settings,
        };
        let mut process = (self.config.starter)(channels).with_name(format!("{name}-{id}")).with_daemon(true);
        if let Err(e) = process.start() {
            log::warn!(target: LOG_TARGET, "pool: cannot start {name}-{id}: {e}");
            return Err(e);
        }
        log::debug!(target: LOG_TARGET, "pool: added worker {name}-{id} (pid {})", process.pid().unwrap_or(0));
        self.workers.push(Worker {
            id,
            process: Link::Local(process),
            orders: Orders::Local(orders),
            handles,
            board,
            held: VecDeque::new(),
            sent: 0,
            since: Instant::now(),
            quick: false,
            knows,
        });
        Ok(())
    }

    /// Adds a worker that is not a local process (an MPI rank), numbered `id`: its reports
    /// name it so. A pool of such workers is built with `processes` 0.
    #[cfg(feature = "mpi")]
    pub(crate) fn add_remote(&mut self, id: u64, process: Link, orders: Orders, handles: OwnedFd) -> crate::Result<()> {
        self.workers.push(Worker {
            id,
            process,
            orders,
            handles,
            // Never read by the rank: its orders come one a message (see `Orders::batches`),
            // and a cancel cannot reach it.
            board: Board::new()?,
            held: VecDeque::new(),
            sent: 0,
            since: Instant::now(),
            quick: false,
            knows: 0,
        });
        Ok(())
    }

    fn publish_pids(&self) {
        let pids = self.workers.iter().filter_map(|w| w.process.pid()).collect();
        *self.pids.lock().unwrap_or_else(|e| e.into_inner()) = pids;
    }

    /// Takes in the chunks callers handed in: they join the queue, behind those there. The
    /// list keeps its memory (the callers' threads made it: freed here, it would cost the
    /// allocator a lock of their arena).
    fn take_incoming(&mut self) {
        if self.incoming.is_empty() {
            return;
        }
        let mut incoming = self.incoming.lock();
        if self.ended || self.init_failed.is_some() {
            let jobs: Vec<Job> = incoming.drain(..).collect();
            drop(incoming);
            if let Some(message) = &self.init_failed {
                jobs.iter().for_each(|job| job.slot.fill(Err(Failure::InitFailed(message.clone()))));
            }
            // Dropped (if the manager has ended): their slots fail, so nobody waits on them.
            return;
        }
        // Many chunks handed in behind a few queued: the few go in front of the many, which
        // are not copied (a loop of submits hands in tens of thousands; a copy would be
        // another buffer of them to write, its pages new to the process the first time).
        let spare = incoming.capacity() - incoming.len();
        if incoming.len() > self.pending.len() && spare >= self.pending.len() {
            let mut jobs = VecDeque::from(std::mem::take(&mut *incoming));
            // Into the list's spare room, which a deque wraps round to: no new buffer.
            while let Some(job) = self.pending.pop_back() {
                jobs.push_front(job);
            }
            *incoming = Vec::from(std::mem::replace(&mut self.pending, jobs));
        } else {
            self.pending.extend(incoming.drain(..));
        }
    }

    /// Files the reports there are now, and sends what they made room for.
    pub(crate) fn file_waiting(&mut self) {
        // An MPI pool's ranks share one link to MPI: the reports it has come in now.
        #[cfg(feature = "mpi")]
        if let Some(w) = self.workers.first() {
            w.process.poll();
        }
        // Nothing filed and the list full: still no room for what is handed in.
        if self.file_all() || (!self.incoming.is_empty() && !self.incoming.is_full()) {
            self.dispatch();
        }
    }

    /// Files the reports there are now; whether there were any.
    fn file_all(&mut self) -> bool {
        // One buffer for every report (the results are copied out of it into their slot),
        // and one reading of the clock for the reports taken together.
        let mut inbox = std::mem::take(&mut self.inbox);
        let mut now = None;
        while self.reports.get_into_nowait(&mut inbox).is_ok() {
            let now = *now.get_or_insert_with(Instant::now);
            self.file(&inbox, now);
        }
        if inbox.capacity() <= KEEP_INBOX {
            self.inbox = inbox;
        }
        if now.is_some() {
            self.incoming.set_full(false);
        }
        now.is_some()
    }

    /// Reads the commands; whether the manager is to end (terminated).
    fn read_commands(&mut self) -> bool {
        // Cleared before the commands are read: a command sent after this reading finds it
        // clear, and wakes us again.
        self.woken.store(false, Ordering::SeqCst);
        loop {
            let command = self.commands.try_recv();
            // The chunks handed in before the command was sent (a cancel of one of them) are
            // taken in before it is carried out, also those handed in while the command before
            // it was (a cancel that replaces a worker takes a while).
            self.take_incoming();
            match command {
                Ok(Command::Cancel(slot)) => self.cancel(&slot),
                Ok(Command::CancelQueued) => self.cancel_queued(),
                Ok(Command::Close) => self.closing = true,
                Ok(Command::Terminate) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }
}

/// The manager's loop, on its own thread; returns when the pool is closed and done, or
/// terminated. The state is shared with the callers' threads, which hand chunks to workers
/// and file reports themselves while they wait for a result (two hops for an `apply`, not
/// four); this thread files what nobody waits on, and watches the workers.
pub(crate) fn run(shared: Arc<Mutex<Manager>>, reports: Queue<Vec<u8>>) {
    super::result::this_is_the_manager_thread();
    let mut checked = Instant::now();
    loop {
        // One hold of the state a round: the reports that came are filed (and what they
        // made room for sent); the commands are read only when a command's sender woke us,
        // and the workers checked every `CHECK`, or when a running chunk's timeout is due.
        let wait = deferring(|| {
            let mut m = lock(&shared);
            m.file_waiting();
            let now = Instant::now();
            let deadline = m.next_deadline();
            let check_due = now.duration_since(checked) >= CHECK || deadline.is_some_and(|at| at <= now);
            if m.woken.load(Ordering::SeqCst) || check_due {
                if m.read_commands() {
                    m.terminate();
                    release(&shared, m);
                    return None;
                }
                m.dispatch();
            }
            if check_due {
                m.check();
                checked = Instant::now();
            }
            if m.closing && m.pending.is_empty() && m.workers.iter().all(|w| w.held.is_empty()) {
                m.finish();
                release(&shared, m);
                return None;
            }
            let next_check = (checked + CHECK).saturating_duration_since(now);
            let wait = m.next_deadline().map_or(next_check, |at| at.saturating_duration_since(now).min(next_check));
            release(&shared, m);
            Some(wait)
        });
        let Some(wait) = wait else { return };
        // Waited for without the state's lock, nor the result queue's: callers may file
        // their own results meanwhile.
        reports.wait_nonempty(wait);
    }
}

impl Manager {
    /// Sends pending chunks to workers with room: first one to each idle worker (so that a
    /// task never waits behind another while a worker is free), then more, one at a time
    /// round the workers, up to `IN_FLIGHT` each.
    fn dispatch(&mut self) {
        if self.pending.len() < TAKE_IN_BELOW {
            self.take_incoming();
        }
        self.retire_outdated();
        self.dispatch_up_to(1);
        self.dispatch_up_to(IN_FLIGHT);
        if self.rebalance() {
            self.dispatch_up_to(1);
            self.dispatch_up_to(IN_FLIGHT);
        }
        self.incoming.set_full(!self.pending.is_empty());
    }

    /// When a worker is idle and nothing is pending, takes back the chunks another worker
    /// holds but has not taken from its queue yet, to be shared out again; whether it did.
    /// Those it took (several come in one order, `BATCH` at most) and has not begun come
    /// back too, asked to be passed over on its board.
    /// A quick worker is sent many chunks at once: when they turn out slow, or at the end of a
    /// map, they would otherwise wait behind each other while the idle worker had nothing
    /// to do (CPython's pool has the same wait, for chunks its workers took from the shared
    /// queue: none can be taken back there).
    fn rebalance(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let max_tasks = self.config.max_tasks;
        let idle = |w: &Worker| w.held.is_empty() && (max_tasks == 0 || w.sent < max_tasks);
        // Looked at on every dispatch (every submit): the cheap test first.
        if !self.workers.iter().any(idle) {
            return false;
        }
        // The fullest worker whose queue can be taken from, if an idle one can run its chunks.
        let Some(busy) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.held.len() > 1 && w.orders.batches())
            .max_by_key(|(_, w)| w.held.len())
            .map(|(i, _)| i)
        else {
            return false;
        };
        let needs = self.workers[busy].held.iter().map(Job::needs).max().unwrap_or(0);
        if !self.workers.iter().any(|w| idle(w) && w.knows >= needs) {
            return false;
        }
        // Not waiting for a worker that holds its queue: it is taking an order, and the next
        // dispatch looks again.
        let w = &mut self.workers[busy];
        let (mut back, emptied) = take_back(w, Duration::ZERO);
        if emptied {
            // Of those it took (one order: the last it holds), the ones it has not begun are
            // asked to be passed over, from the last back to the first it began (it begins
            // them in order; the chunks before that one it began or ran), never its first.
            let mut passed = Vec::new();
            for at in (1..w.held.len()).rev() {
                if !pass_over(w, at) {
                    break;
                }
                passed.extend(w.held.remove(at));
            }
            back.splice(0..0, passed.into_iter().rev());
        }
        let any = !back.is_empty();
        for job in back.into_iter().rev() {
            job.slot.set_running(false);
            self.pending.push_front(job);
        }
        any
    }

    fn dispatch_up_to(&mut self, limit: usize) {
        let max_tasks = self.config.max_tasks;
        let mut batch = std::mem::take(&mut self.batch);
        while !self.pending.is_empty() {
            let mut sent_any = false;
            for w in &mut self.workers {
                // The first pass gives one to each idle worker, quick or not: a chunk never
                // waits behind another's while a worker is free.
                let limit = if w.quick && limit > 1 { limit.max(w.process.in_flight(QUICK_IN_FLIGHT)) } else { limit };
                if w.held.len() >= limit || (max_tasks > 0 && w.sent >= max_tasks) {
                    continue;
                }
                // A quick worker with a batch's worth still to run is topped up later, a
                // whole batch at once: one order (one message, one wake-up) for many chunks,
                // rather than one for each chunk as each report makes room.
                if w.quick && w.held.len() > limit.saturating_sub(BATCH) && limit > IN_FLIGHT {
                    continue;
                }
                if self.pending.front().is_some_and(|job| job.needs() > w.knows) {
                    continue;
                }
                let Some(job) = self.pending.pop_front() else { break };
                if job.slot.is_filled() {
                    // Cancelled (or failed) while it waited: it never runs.
                    sent_any = true;
                    continue;
                }
                batch.clear();
                batch.push(job);
                if w.quick && batch[0].fds().is_empty() && w.orders.batches() {
                    // A quick worker takes several chunks of one function in one order.
                    let room = (limit - w.held.len()).min(BATCH);
                    let room = if max_tasks > 0 { room.min((max_tasks - w.sent) as usize) } else { room };
                    let first = &batch[0];
                    let closure = first.closure().map(|c| c.address);
                    let (runner, knows) = (first.runner, w.knows);
                    while batch.len() < room
                        && self.pending.front().is_some_and(|next| {
                            next.runner == runner
                                && next.closure().map(|c| c.address) == closure
                                && next.fds().is_empty()
                                && next.needs() <= knows
                                && !next.slot.is_filled()
                        })
                    {
                        batch.extend(self.pending.pop_front());
                    }
                }
                for (k, job) in (1..).zip(batch.iter_mut()) {
                    job.seq = w.sent + k;
                }
                if send_orders(w, &batch).is_err() {
                    // The worker's queue refused it (closed): keep the chunks for another.
                    for job in batch.drain(..).rev() {
                        self.pending.push_front(job);
                    }
                    continue;
                }
                for mut job in batch.drain(..) {
                    if w.held.is_empty() {
                        w.since = Instant::now();
                        job.slot.set_running(true);
                    } else {
                        job.slot.set_sent();
                    }
                    // The shared objects in the arguments are on their way to the worker.
                    job.take_tickets().into_iter().for_each(crate::heap::Ticket::delivered);
                    w.held.push_back(job);
                    w.sent += 1;
                }
                sent_any = true;
            }
            if !sent_any {
                break;
            }
        }
        self.batch = batch;
    }

    /// When the next chunk is of a closure that some idle workers were forked before, those
    /// workers are stopped and replaced by new ones, forked now, with the closure in their
    /// memory. Busy ones are replaced when they become idle, so a running chunk is never cut.
    fn retire_outdated(&mut self) {
        let Some(needs) = self.pending.front().map(Job::needs) else { return };
        if needs == 0 || self.closing {
            return;
        }
        let mut i = 0;
        while i < self.workers.len() {
            let w = &self.workers[i];
            if w.knows >= needs || !w.held.is_empty() {
                i += 1;
                continue;
            }
            let w = self.workers.swap_remove(i);
            let _ = w.orders.put(Order::stop());
            self.retired.push(w.process);
            // A failed start leaves one worker fewer; the next check tries again.
            let _ = self.spawn();
        }
        self.publish_pids();
    }

    /// Files one report.
    /// `now`: about when it came (read once for a batch of reports).
    fn file(&mut self, bytes: &[u8], now: Instant) {
        match Report::decode(bytes) {
            Ok(Report::Done { worker, task, results }) => {
                let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) else { return };
                // Usually the oldest it holds; a later one if the reports were taken by two
                // threads at once and this one was filed first (the earlier one's report is
                // on its way: the worker ran it first).
                if let Some(at) = w.held.iter().position(|j| j.task == task)
                    && let Some(job) = w.held.remove(at)
                {
                    w.quick = now.duration_since(w.since) < w.process.quick(QUICK);
                    w.since = now;
                    job.slot.fill(Ok(Bytes::copy_of(results)));
                    // The worker takes its next order as soon as it has reported.
                    if let Some(next) = w.held.front() {
                        next.slot.set_running(true);
                    }
                }
            }
            Ok(Report::InitFailed { message, .. }) => {
                if self.init_failed.is_none() {
                    log::warn!(target: LOG_TARGET, "pool: the initializer failed: {message}; every task fails with it");
                    self.init_failed = Some(message.to_string());
                    let failure = Failure::InitFailed(message.to_string());
                    for job in self.pending.drain(..) {
                        job.slot.fill(Err(failure.clone()));
                    }
                    for w in &mut self.workers {
                        for job in w.held.drain(..) {
                            job.slot.fill(Err(failure.clone()));
                        }
                    }
                }
            }
            Ok(Report::Wake) | Err(_) => {}
        }
    }

    /// The timeout of a chunk: its call's or the pool's, the shorter.
    fn timeout_of(&self, job: &Job) -> Option<Duration> {
        match (job.timeout(), self.config.task_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When a worker's running chunk overruns its timeout, if it has one.
    fn deadline_of(&self, w: &Worker) -> Option<Instant> {
        w.held.front().and_then(|job| self.timeout_of(job)).map(|t| w.since + t)
    }

    /// When the first running chunk overruns its timeout, if any has one.
    fn next_deadline(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|w| self.deadline_of(w)).min()
    }

    /// Whether a worker holds more memory than the pool's limit.
    fn over_memory(&self, w: &Worker) -> bool {
        let limit = self.config.memory_limit;
        limit > 0
            && w.process
                .pid()
                .is_some_and(|pid| crate::sys::proc::resident_bytes(pid as i32).is_ok_and(|rss| rss > limit))
    }

    /// The periodic check: the workers (see [`check_workers`](Manager::check_workers)), then
    /// what its filing made room for is sent. At the end of a quick worker's chunks that room
    /// is all it holds: left to the next check, a map's chunks waited a whole `CHECK` beside
    /// idle workers.
    fn check(&mut self) {
        self.check_workers();
        self.dispatch();
    }

    /// Replaces workers that died or overran the task timeout, failing only the chunk each
    /// was running; the chunks waiting behind it go to other workers.
    fn check_workers(&mut self) {
        // Which workers ended, first; then the results they put before they ended (a put is
        // complete when it returns, so all of them are in the queue by now). In the other
        // order a worker could put its last result and exit in between, and that chunk be
        // failed though it was done.
        let ended: Vec<u64> = self.workers.iter().filter(|w| !w.process.is_alive()).map(|w| w.id).collect();
        self.retired.retain_mut(|p| p.is_alive() || p.join().is_err());
        self.file_all();
        let now = Instant::now();
        let mut i = 0;
        while i < self.workers.len() {
            let w = &self.workers[i];
            let overran = self.deadline_of(w).is_some_and(|at| now >= at);
            let over_memory = !overran && !ended.contains(&w.id) && self.over_memory(w);
            if !ended.contains(&w.id) && !overran && !over_memory {
                i += 1;
                continue;
            }
            let mut w = self.workers.swap_remove(i);
            if overran || over_memory {
                let _ = w.process.kill();
            }
            let _ = w.process.join();
            let exitcode = w.process.exitcode().unwrap_or(-libc::SIGKILL);
            // Orders still in its queue were never taken (it died idle, or before it came to
            // them): those chunks go to other workers whole, after the ones it took.
            let (untaken, _) = take_back(&mut w, Duration::ZERO);
            // Of the chunks it took, one ran: it reports each before it starts the next,
            // and its reports are filed. The others it took (several in one order) never
            // started.
            let mut taken = w.held.len().min(1);
            if overran || over_memory {
                // The chunk that overran was running, whatever the queue says.
                taken = 1;
            }
            w.held.extend(untaken);
            let failed = taken.min(w.held.len());
            let requeued = w.held.len() - failed;
            // Logged before the chunks fail, so that whoever sees the failure finds the record.
            let (name, pid) = (w.process.name(), w.process.pid().unwrap_or(0));
            if overran {
                log::warn!(
                    target: LOG_TARGET,
                    "pool: worker {name} (pid {pid}) overran the task timeout and was killed; \
                     {failed} chunk(s) failed with Timeout, {requeued} sent to other workers"
                );
            } else if over_memory {
                log::warn!(
                    target: LOG_TARGET,
                    "pool: worker {name} (pid {pid}) passed the memory limit of {} bytes and was killed; \
                     {failed} chunk(s) failed with MemoryLimit, {requeued} sent to other workers",
                    self.config.memory_limit
                );
            } else if failed > 0 && w.held.iter().take(failed).all(|j| j.slot.is_cancelled()) {
                log::debug!(target: LOG_TARGET, "pool: worker {name} (pid {pid}) stopped: its task was cancelled");
            } else if exitcode == 0 && failed == 0 {
                // Done with its maxtasksperchild, or stopped: CPython's "cleaning up worker".
                log::debug!(target: LOG_TARGET, "pool: worker {name} (pid {pid}) exited");
            } else {
                log::warn!(
                    target: LOG_TARGET,
                    "pool: worker {name} (pid {pid}) died with exit code {exitcode}; \
                     {failed} chunk(s) failed with WorkerDied, {requeued} sent to other workers"
                );
            }
            for job in w.held.drain(..failed) {
                job.slot.fill(Err(if overran {
                    Failure::Timeout
                } else if over_memory {
                    Failure::MemoryLimit(self.config.memory_limit)
                } else {
                    Failure::WorkerDied(exitcode)
                }));
            }
            while let Some(job) = w.held.pop_back() {
                job.slot.set_running(false);
                self.pending.push_front(job);
            }
            if self.init_failed.is_none() && !(self.closing && self.pending.is_empty()) {
                // A failed start leaves one worker fewer; the next check tries again.
                let _ = self.spawn();
            }
        }
        while self.workers.len() < self.config.processes && self.init_failed.is_none() && !self.closing {
            if self.spawn().is_err() {
                break;
            }
        }
        self.publish_pids();
    }

    /// Cancels one chunk: out of the queue if no worker took it yet; if one runs it, that
    /// worker is killed and replaced. A chunk that finished first keeps its result.
    fn cancel(&mut self, slot: &Arc<Slot>) {
        self.file_all();
        if slot.is_filled() {
            return;
        }
        if let Some(i) = self.pending.iter().position(|j| Arc::ptr_eq(&j.slot, slot)) {
            if let Some(job) = self.pending.remove(i) {
                job.slot.fill(Err(Failure::Cancelled));
            }
            return;
        }
        let Some(i) = self.workers.iter().position(|w| w.held.iter().any(|j| Arc::ptr_eq(&j.slot, slot))) else {
            return;
        };
        // What the worker has not taken comes back here, to go out again (to it, or to whoever
        // is free), unless it is the chunk cancelled.
        let (back, _) = take_back(&mut self.workers[i], TAKE_BACK_WAIT);
        let was_back = back.iter().any(|j| Arc::ptr_eq(&j.slot, slot));
        for job in back.into_iter().rev() {
            if Arc::ptr_eq(&job.slot, slot) {
                job.slot.fill(Err(Failure::Cancelled));
            } else {
                job.slot.set_running(false);
                self.pending.push_front(job);
            }
        }
        if was_back {
            return;
        }
        // Taken: begun, or (several come in one order) waiting behind the one the worker
        // runs. The board tells which, without a race.
        let w = &mut self.workers[i];
        let Some(at) = w.held.iter().position(|j| Arc::ptr_eq(&j.slot, slot)) else { return };
        if pass_over(w, at) {
            if let Some(job) = w.held.remove(at) {
                job.slot.fill(Err(Failure::Cancelled));
            }
            return;
        }
        // It began: it runs, or has just finished (its report on its way, behind those of the
        // chunks before it, which it reported before it began this one).
        self.file_all();
        if slot.is_filled() {
            return;
        }
        // It runs: its worker goes, and a new one takes its place (the chunks it took behind
        // this one go to other workers).
        slot.fill(Err(Failure::Cancelled));
        let w = &mut self.workers[i];
        let _ = w.process.kill();
        let _ = w.process.join();
        self.check_workers();
    }

    /// Cancels every chunk no worker has taken yet.
    fn cancel_queued(&mut self) {
        for job in self.pending.drain(..) {
            job.slot.fill(Err(Failure::Cancelled));
        }
        for w in &mut self.workers {
            for job in take_back(w, TAKE_BACK_WAIT).0 {
                job.slot.fill(Err(Failure::Cancelled));
            }
        }
    }

    /// Closed and done: each worker gets a stop order and is joined.
    fn finish(&mut self) {
        self.ended = true;
        // Chunks handed in from now on are taken in (and fail) by the submit itself.
        self.incoming.set_full(false);
        for w in &self.workers {
            let _ = w.orders.put(Order::stop());
        }
        for w in &mut self.workers {
            if w.process.join_timeout(Duration::from_secs(5)).is_err() || w.process.is_alive() {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
        for p in &mut self.retired {
            if p.join_timeout(Duration::from_secs(5)).is_err() || p.is_alive() {
                let _ = p.kill();
                let _ = p.join();
            }
        }
        self.retired.clear();
        self.workers.clear();
        self.publish_pids();
    }

    /// Kills every worker; what is not done fails.
    fn terminate(&mut self) {
        self.ended = true;
        // Chunks handed in from now on are taken in (and fail) by the submit itself.
        self.incoming.set_full(false);
        self.kill_all();
        for job in self.pending.drain(..) {
            job.slot.fill(Err(Failure::Terminated));
        }
        self.publish_pids();
    }

    fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = w.process.kill();
        }
        for mut p in self.retired.drain(..) {
            let _ = p.kill();
            let _ = p.join();
        }
        for mut w in self.workers.drain(..) {
            let _ = w.process.join();
            for job in w.held.drain(..) {
                job.slot.fill(Err(Failure::Terminated));
            }
        }
    }
}

/// Asks a worker to pass over the chunk at `at` among those it holds, which it took from its
/// queue (several come in one order); whether it will. The board tells, without a race: a
/// request the worker sees before it begins the chunk makes it pass over it; one it did not
/// see is withdrawn.
fn pass_over(w: &Worker, at: usize) -> bool {
    let (task, seq) = (w.held[at].task, w.held[at].seq);
    w.board.ask(task).is_some_and(|(place, begun)| begun < seq || !w.board.withdraw(place, task))
}

/// Sends `batch` (chunks of one call, or one chunk) to a worker: one order, and the chunk's
/// handles on the worker's handle socket first if it has any.
fn send_orders(w: &Worker, batch: &[Job]) -> crate::Result<()> {
    let first = &batch[0];
    let closure = first.closure().map_or(0, |c| c.address as u64);
    crate::queues::codec::with_scratch(|scratch| {
        scratch.clear();
        if let [job] = batch {
            let handles = !job.fds().is_empty();
            if handles {
                let fds: Vec<_> = job.fds().iter().map(|f| f.as_fd()).collect();
                crate::sys::fd::send_with_fds(w.handles.as_fd(), &job.task.to_le_bytes(), &fds)?;
            }
            Order::put_run(scratch, job.task, job.seq, job.runner, closure, &job.chunk, handles);
        } else {
            // Their places follow each other (see `dispatch_up_to`).
            let pieces = batch.iter().map(|job| (job.task, &job.chunk[..]));
            Order::put_many(scratch, first.runner, closure, first.seq, pieces);
        }
        w.orders.put_slice(scratch)
    })
}

/// The task numbers of the chunks in the orders in a worker's queue, taken out, waiting at
/// most `lock_wait` for a worker that holds the queue; and whether the queue was found empty
/// (false: the worker held it past the wait, and orders may be left). What cannot be read as
/// an order is dropped (the worker could have written it: the queue is shared memory).
fn drain_orders(w: &Worker, lock_wait: Duration) -> (Vec<u64>, bool) {
    let mut tasks = Vec::new();
    loop {
        match w.orders.take_back(lock_wait) {
            Ok(bytes) => match Order::decode(&bytes) {
                Ok(Order::Many { pieces, .. }) => tasks.extend(pieces.map(|Piece(task, ..)| task)),
                Ok(Order::Run { task, .. }) => tasks.push(task),
                Ok(Order::Stop) | Err(_) => {}
            },
            Err(crate::Error::Empty) => return (tasks, true),
            Err(_) => return (tasks, false),
        }
    }
}

/// Takes back the orders a worker has not taken from its queue yet: their chunks leave the
/// list it holds, and are returned in the order they were sent; with whether the queue was
/// found empty (then every chunk it still holds, it took). Told by task number, not by
/// place: the worker may take the next order meanwhile (when `lock_wait` is not zero, it
/// may hold the queue for the moment it takes one, and what is behind that order must not
/// be taken for gone).
fn take_back(w: &mut Worker, lock_wait: Duration) -> (Vec<Job>, bool) {
    let (mut tasks, emptied) = drain_orders(w, lock_wait);
    if tasks.is_empty() {
        return (Vec::new(), emptied);
    }
    tasks.sort_unstable();
    let (back, kept): (Vec<Job>, Vec<Job>) = w.held.drain(..).partition(|job| tasks.binary_search(&job.task).is_ok());
    w.held.extend(kept);
    (back, emptied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    /// The periodic check files the reports there are; when they were the last its worker
    /// held, what is pending goes out at once (it once waited for the next check, 10 ms on,
    /// beside an idle worker: one map in ten of chunk size 1 took three times as long).
    #[test]
    fn the_periodic_check_sends_what_its_filing_made_room_for() {
        // Not under fork: `cargo test` runs this beside other tests' threads.
        for method in [StartMethod::ForkServer, StartMethod::Spawn] {
            check_sends_what_its_filing_made_room_for(method);
        }
    }

    fn check_sends_what_its_filing_made_room_for(method: StartMethod) {
        let pool = crate::Pool::builder().processes(1).start_method(method).build().unwrap();
        let shared = Arc::clone(&pool.control.manager);
        // Held here: the manager thread and the submits cannot file or send meanwhile.
        let mut m = lock(&shared);
        let result = pool.map_async_chunked(square, 0..100u64, 1).unwrap();
        m.dispatch();
        let held = m.workers[0].held.len();
        assert!(held > 0 && !m.pending.is_empty(), "held {held}, pending {}", m.pending.len());
        let start = Instant::now();
        while m.reports.qsize() < held {
            assert!(start.elapsed() < Duration::from_secs(30), "the worker never reported");
            std::thread::sleep(Duration::from_millis(1));
        }
        m.check();
        assert!(
            !m.workers[0].held.is_empty(),
            "{method}: the check filed every chunk the worker held and sent no more"
        );
        drop(m);
        assert_eq!(result.get().unwrap(), (0..100).map(square).collect::<Vec<_>>());
    }

    /// Submits faster than the workers: beyond `TAKE_IN_BELOW` queued, what is handed in
    /// stays on the list; taken in later, it queues behind what was there, in the order
    /// it came (moved in front of the list's chunks or copied behind the queue's).
    #[test]
    fn chunks_handed_in_behind_a_long_queue_wait_on_the_list_and_keep_their_order() {
        for method in [StartMethod::ForkServer, StartMethod::Spawn] {
            handed_in_behind_a_long_queue(method);
        }
    }

    fn handed_in_behind_a_long_queue(method: StartMethod) {
        let pool = crate::Pool::builder().processes(1).start_method(method).build().unwrap();
        let shared = Arc::clone(&pool.control.manager);
        let tasks = |m: &Manager| m.pending.iter().map(|j| j.task).collect::<Vec<_>>();
        let ascending = |t: &[u64]| t.windows(2).all(|w| w[0] < w[1]);
        // Held here: every submit leaves its chunk on the list.
        let mut m = lock(&shared);
        let first: Vec<_> = (0..TAKE_IN_BELOW as u64 + 100).map(|i| pool.submit(square, (i,)).unwrap()).collect();
        m.dispatch();
        assert!(m.incoming.is_empty() && m.pending.len() >= TAKE_IN_BELOW, "pending {}", m.pending.len());
        let second: Vec<_> = (0..50u64).map(|i| pool.submit(square, (i,)).unwrap()).collect();
        m.dispatch();
        assert_eq!(m.incoming.len.load(Ordering::SeqCst), 50, "taken in behind a long queue");
        // The queue runs short (all but `keep` dropped here: their tasks fail); the list comes
        // in behind them, in order: moved in front of the list (10 kept), copied behind the
        // queue (100 kept, more than the list holds).
        for keep in [10, 100] {
            drop(m.pending.drain(keep..).collect::<Vec<_>>());
            let third: Vec<_> = (0..45u64).map(|i| pool.submit(square, (i,)).unwrap()).collect();
            let on_list = m.incoming.len.load(Ordering::SeqCst);
            m.dispatch();
            assert!(m.incoming.is_empty(), "taken in once the queue ran short");
            let t = tasks(&m);
            assert!(ascending(&t), "{method}, kept {keep}: out of order: {t:?}");
            assert_eq!(t.len(), keep + on_list);
            assert_eq!(t.last().copied(), Some(pool.next_task.load(Ordering::Relaxed) - 1));
            drop(third);
        }
        drop(m);
        // What was neither dropped nor cut off runs: the first few, and the 50 handed in later.
        for (i, r) in first.iter().enumerate().take(8) {
            assert_eq!(r.get().unwrap(), square(i as u64));
        }
        drop(second);
    }
}
