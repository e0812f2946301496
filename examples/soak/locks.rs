//! Locks: worker processes take a `Lock` (or an `RLock`, twice), hold it briefly and let go,
//! over and over. The supervisor kills them: some at random moments, some while they hold the
//! lock on purpose (asked through a shared word, a worker that takes the lock says so and
//! sleeps with it, sometimes with a named shared-memory segment of its own, which its
//! resource tracker must unlink after the kill).
//!
//! What must hold: after each kill some process takes the lock within 1 s (measured from the
//! moment just before the kill to the acquirer's own clock reading); after a kill of a
//! process that held the lock, the next acquirer is told `OwnerDied`; `OwnerDied` is reported
//! at least once per such kill and never more often than there were kills; no two processes
//! ever hold the lock at once; an `RLock` taken twice counts 2.

use super::{LONG, Rng, Run, Thousands, join_stopped, kill_and_join, mono_ns, ms, start};
use multiprocess::{Error, Lock, Process, RLock, RawArray, SharedMemory, StartMethod};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// Workers per lock.
const WORKERS: usize = 2;
/// The bound on the time from a kill to the next acquisition.
const STALL_BOUND: Duration = Duration::from_secs(1);

// The board: one shared word each, for one lock and its workers.
/// Set by the supervisor: return.
const STOP: usize = 0;
/// Acquisitions, and how many of them were told `OwnerDied`.
const ACQUIRES: usize = 1;
const OWNER_DIED: usize = 2;
/// The pid of the worker inside its critical section, 0 when none is.
const INSIDE: usize = 3;
/// Times a worker acquired normally (not `OwnerDied`) and found another inside, and the last
/// such other's pid.
const EXCLUSION_BROKEN: usize = 4;
const EXCLUSION_OTHER: usize = 5;
/// Times an `RLock` taken twice did not count 2.
const RCOUNT_WRONG: usize = 6;
/// Set by the supervisor: the next worker to take the lock keeps it until killed (1), after
/// making a named shared-memory segment (2).
const HOLD: usize = 7;
/// The pid of the worker that took the lock to keep it.
const HOLDING: usize = 8;
/// The supervisor's clock just before a kill (`u64::MAX` while it prepares one).
const KILL_NS: usize = 9;
/// The acquirer's clock at the first acquisition since the kill (0 until there is one), and
/// whether it was told `OwnerDied` (1) or not (2).
const FIRST_NS: usize = 10;
const FIRST_KIND: usize = 11;
/// One word per worker slot: the pid of the worker in it once it runs (so that a kill is
/// never timed against a replacement that is still starting).
const READY: usize = 12;
const BOARD: usize = READY + WORKERS;

/// A lock of either kind, as a worker gets it.
#[derive(Clone, Serialize, Deserialize)]
enum AnyLock {
    Plain(Lock),
    Recursive(RLock),
}

impl AnyLock {
    /// Takes the lock (an `RLock` twice): whether the first acquisition was told `OwnerDied`.
    fn take(&self, board: &RawArray<u64>) -> multiprocess::Result<bool> {
        let died = |r: multiprocess::Result<()>| match r {
            Ok(()) => Ok(false),
            Err(Error::OwnerDied) => Ok(true),
            Err(e) => Err(e),
        };
        match self {
            AnyLock::Plain(l) => died(l.acquire()),
            AnyLock::Recursive(r) => {
                let first = died(r.acquire())?;
                r.acquire()?; // ours already: never OwnerDied
                if r.count() != 2 {
                    bump(board, RCOUNT_WRONG);
                }
                Ok(first)
            }
        }
    }

    fn give_back(&self) -> multiprocess::Result<()> {
        match self {
            AnyLock::Plain(l) => l.release(),
            AnyLock::Recursive(r) => {
                r.release()?;
                r.release()
            }
        }
    }
}

/// Adds one to a board word. Only the lock's holder does it, so no update is lost.
fn bump(board: &RawArray<u64>, i: usize) {
    let _ = board.set(i, board.get(i).unwrap_or(0) + 1);
}

/// A worker: takes the lock, notes it, holds it a moment, lets go, rests a moment; until told
/// to stop (or killed). Asked to keep the lock, it does until killed.
fn worker(lock: AnyLock, board: RawArray<u64>, slot: u64, shm_name: String, seed: u64) -> multiprocess::Result<()> {
    let mut rng = Rng::new(seed);
    let me = u64::from(std::process::id());
    board.set(READY + slot as usize, me)?;
    while board.get(STOP) == Some(0) {
        let died = lock.take(&board)?;
        let now = mono_ns();
        // Everything below, up to the release, runs with the lock held: one writer at a time.
        if died {
            bump(&board, OWNER_DIED);
        } else if let Some(other) = board.get(INSIDE).filter(|&p| p != 0) {
            bump(&board, EXCLUSION_BROKEN);
            board.set(EXCLUSION_OTHER, other)?;
        }
        board.set(INSIDE, me)?;
        bump(&board, ACQUIRES);
        if board.get(FIRST_NS) == Some(0) {
            fence(Ordering::Acquire); // see the kill time written before FIRST_NS was cleared
            if now >= board.get(KILL_NS).unwrap_or(u64::MAX) {
                board.set(FIRST_KIND, if died { 1 } else { 2 })?;
                fence(Ordering::Release); // the kind before the time that publishes it
                board.set(FIRST_NS, now)?;
            }
        }
        let hold = board.get(HOLD).unwrap_or(0);
        if hold != 0 {
            board.set(HOLD, 0)?;
            let shm = if hold == 2 { Some(SharedMemory::create_named(&shm_name, 4096)?) } else { None };
            fence(Ordering::Release);
            board.set(HOLDING, me)?;
            // Until killed (the supervisor always kills a worker that says it holds).
            while board.get(STOP) == Some(0) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(shm) = shm {
                shm.unlink()?;
            }
        } else {
            std::thread::sleep(rng.micros(0, 500));
        }
        board.set(INSIDE, 0)?;
        lock.give_back()?;
        std::thread::sleep(rng.micros(0, 1500));
    }
    Ok(())
}

/// What the locks did, summed over phases.
#[derive(Default)]
pub struct Stats {
    pub kills: u64,
    /// Kills of a worker known to hold the lock.
    pub holder_kills: u64,
    pub owner_died: u64,
    pub acquires: u64,
    pub max_stall: Duration,
    /// The named segments killed holders made (their trackers must unlink them).
    pub shm_names: Vec<String>,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.kills += o.kills;
        self.holder_kills += o.holder_kills;
        self.owner_died += o.owner_died;
        self.acquires += o.acquires;
        self.max_stall = self.max_stall.max(o.max_stall);
        self.shm_names.extend(o.shm_names.iter().cloned());
    }

    pub fn line(&self) -> String {
        format!(
            "locks {} kills ({} holding), max stall {}",
            Thousands(self.kills),
            Thousands(self.holder_kills),
            ms(self.max_stall)
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "locks: {} kills ({} of a holder holding, {} at random), max stall after a kill {} (bound 1 s), \
             {} OwnerDied reported, {} acquisitions, {} segments of killed holders",
            Thousands(self.kills),
            Thousands(self.holder_kills),
            Thousands(self.kills - self.holder_kills),
            ms(self.max_stall),
            Thousands(self.owner_died),
            Thousands(self.acquires),
            Thousands(self.shm_names.len() as u64)
        )
    }
}

/// One lock, its board and its workers.
struct Side {
    what: &'static str,
    lock: AnyLock,
    board: RawArray<u64>,
    workers: Vec<(Process, String)>,
    kills: u64,
    holder_kills: u64,
}

struct Supervisor<'a> {
    m: StartMethod,
    run: &'a Run,
    rng: Rng,
    sides: Vec<Side>,
    serial: u64,
    stats: Stats,
}

impl Supervisor<'_> {
    fn start_worker(&mut self, side: usize, slot: usize) -> multiprocess::Result<(Process, String)> {
        self.serial += 1;
        let s = &self.sides[side];
        let shm_name = format!("psm_soak{}_{}_{}", std::process::id(), super::method_name(self.m), self.serial);
        s.board.set(READY + slot, 0)?;
        let args = (s.lock.clone(), s.board.clone(), slot as u64, shm_name.clone(), self.rng.fork());
        let p = start(self.m, format!("{}-worker-{}", s.what, self.serial), worker, args)?;
        Ok((p, shm_name))
    }

    /// Checks the board's counters and that no worker died on its own.
    fn check(&mut self) {
        for s in &self.sides {
            let broken = s.board.get(EXCLUSION_BROKEN).unwrap_or(0);
            if broken != 0 {
                let other = s.board.get(EXCLUSION_OTHER).unwrap_or(0);
                let detail =
                    format!("{broken} times a worker took the {} normally while pid {other} was inside", s.what);
                self.run.fail("locks: mutual exclusion", detail);
            }
            if s.board.get(RCOUNT_WRONG).unwrap_or(0) != 0 {
                self.run.fail("locks: an RLock taken twice counts 2", "count() was not 2");
            }
            for (p, _) in &s.workers {
                if let Some(code) = p.exitcode() {
                    let detail = format!("{} exited on its own with {code} (see its message above)", p.name());
                    self.run.fail("locks: children live until killed or stopped", detail);
                }
            }
        }
    }

    /// Kills a worker of `side` (one made to hold the lock if `holding`), starts its
    /// replacement, and measures the time to the next acquisition.
    fn kill_one(&mut self, side: usize, holding: bool) -> multiprocess::Result<()> {
        let board = self.sides[side].board.clone();
        let what = self.sides[side].what;
        // Every worker runs its loop: the survivors of the kill are ready to take over.
        let deadline = Instant::now() + LONG;
        for (slot, (p, _)) in self.sides[side].workers.iter().enumerate() {
            while board.get(READY + slot) != p.pid().map(u64::from) {
                if Instant::now() > deadline {
                    let detail = format!("{} did not start within {LONG:?}", p.name());
                    self.run.fail("locks: children start", detail);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let victim = if holding {
            let with_shm = self.rng.below(3) == 0;
            board.set(HOLDING, 0)?;
            board.set(HOLD, if with_shm { 2 } else { 1 })?;
            let deadline = Instant::now() + LONG;
            let pid = loop {
                match board.get(HOLDING) {
                    Some(0) | None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                    Some(0) | None => {
                        let detail = format!("no worker took the {what} for {LONG:?} (asked to keep it)");
                        self.run.fail("locks: no waiter stuck", detail);
                        return Ok(());
                    }
                    Some(pid) => break pid,
                }
            };
            fence(Ordering::Acquire);
            let Some(i) = self.sides[side].workers.iter().position(|(p, _)| p.pid().map(u64::from) == Some(pid)) else {
                self.run.fail("locks: accounting", format!("pid {pid} holds the {what} but is none of its workers"));
                return Ok(());
            };
            if with_shm {
                self.stats.shm_names.push(self.sides[side].workers[i].1.clone());
            }
            std::thread::sleep(self.rng.millis(0, 20));
            i
        } else {
            self.rng.below(WORKERS as u64) as usize
        };

        // Arm the measure: workers skip it while KILL_NS is MAX, then the first to take the
        // lock at or after the kill time notes its clock.
        board.set(KILL_NS, u64::MAX)?;
        fence(Ordering::Release);
        board.set(FIRST_NS, 0)?;
        board.set(FIRST_KIND, 0)?;
        let killed_at = mono_ns();
        board.set(KILL_NS, killed_at)?;
        if let Err(e) = kill_and_join(&mut self.sides[side].workers[victim].0) {
            self.run.fail("locks: children live until killed", e);
            return Ok(());
        }
        self.sides[side].kills += 1;
        self.sides[side].holder_kills += u64::from(holding);
        self.sides[side].workers[victim] = self.start_worker(side, victim)?;

        let deadline = Instant::now() + LONG;
        let first = loop {
            match board.get(FIRST_NS) {
                Some(0) | None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Some(0) | None => {
                    let detail = format!("nobody took the {what} within {LONG:?} of a kill");
                    self.run.fail("locks: no waiter stuck longer than 1 s after a holder died", detail);
                    return Ok(());
                }
                Some(t) => break t,
            }
        };
        fence(Ordering::Acquire);
        let kind = board.get(FIRST_KIND).unwrap_or(0);
        let stall = Duration::from_nanos(first.saturating_sub(killed_at));
        self.stats.max_stall = self.stats.max_stall.max(stall);
        if stall > STALL_BOUND {
            let detail = format!("the {what} was next taken {} after a kill (holding: {holding})", ms(stall));
            self.run.fail("locks: no waiter stuck longer than 1 s after a holder died", detail);
        }
        if holding && kind != 1 {
            let detail =
                format!("the {what}'s holder was killed holding it, and the next acquirer was not told OwnerDied");
            self.run.fail("locks: OwnerDied reported", detail);
        }
        Ok(())
    }

    fn wind_down(&mut self) {
        for s in &mut self.sides {
            let _ = s.board.set(STOP, 1);
        }
        for s in &mut self.sides {
            for (p, _) in &mut s.workers {
                if let Err(e) = join_stopped(p, "lock worker") {
                    self.run.fail("locks: children live until killed or stopped", e);
                }
            }
            s.workers.clear();
            // Free now, and nobody is reported dead.
            let free = match &s.lock {
                AnyLock::Plain(l) => {
                    l.try_acquire().and_then(|got| if got { l.release().map(|()| got) } else { Ok(got) })
                }
                AnyLock::Recursive(r) => {
                    r.try_acquire().and_then(|got| if got { r.release().map(|()| got) } else { Ok(got) })
                }
            };
            match free {
                Ok(true) => {}
                Ok(false) => self.run.fail("locks: free when every worker stopped", format!("the {} is held", s.what)),
                Err(e) => self.run.fail("locks: free when every worker stopped", format!("the {}: {e}", s.what)),
            }
            let died = s.board.get(OWNER_DIED).unwrap_or(0);
            if died < s.holder_kills || died > s.kills {
                let detail = format!(
                    "the {} reported OwnerDied {died} times for {} kills, {} of them of its holder",
                    s.what, s.kills, s.holder_kills
                );
                self.run.fail("locks: OwnerDied reported once per holder killed, never without a kill", detail);
            }
            self.stats.kills += s.kills;
            self.stats.holder_kills += s.holder_kills;
            self.stats.owner_died += died;
            self.stats.acquires += s.board.get(ACQUIRES).unwrap_or(0);
        }
    }
}

/// Runs the lock component of a phase under `m` until `run` stops; adds what it did to
/// `stats`.
pub fn run(m: StartMethod, run: &Run, seed: u64, stats: &mut Stats) {
    if let Err(e) = run_inner(m, run, seed, stats) {
        run.fail("locks: setup", e);
    }
}

fn new_board() -> multiprocess::Result<RawArray<u64>> {
    let board = RawArray::new(BOARD)?;
    board.set(KILL_NS, u64::MAX)?;
    board.set(FIRST_NS, 1)?; // no measure armed
    Ok(board)
}

fn run_inner(m: StartMethod, run: &Run, seed: u64, stats: &mut Stats) -> multiprocess::Result<()> {
    let mut sup = Supervisor {
        m,
        run,
        rng: Rng::new(seed),
        sides: vec![
            Side {
                what: "Lock",
                lock: AnyLock::Plain(Lock::new()?),
                board: new_board()?,
                workers: Vec::new(),
                kills: 0,
                holder_kills: 0,
            },
            Side {
                what: "RLock",
                lock: AnyLock::Recursive(RLock::new()?),
                board: new_board()?,
                workers: Vec::new(),
                kills: 0,
                holder_kills: 0,
            },
        ],
        serial: 0,
        stats: Stats::default(),
    };
    for side in 0..sup.sides.len() {
        for slot in 0..WORKERS {
            let w = sup.start_worker(side, slot)?;
            sup.sides[side].workers.push(w);
        }
    }
    let mut next_kill = Instant::now() + sup.rng.millis(50, 300);
    while !run.stopping() {
        sup.check();
        if Instant::now() >= next_kill && !run.stopping() {
            let side = sup.rng.below(2) as usize;
            let holding = sup.rng.below(2) == 0;
            sup.kill_one(side, holding)?;
            next_kill = Instant::now() + sup.rng.millis(20, 300);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sup.check();
    sup.wind_down();
    *stats = std::mem::take(&mut sup.stats);
    Ok(())
}
