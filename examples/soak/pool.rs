//! Pool: a pool of two workers runs batches of `apply_async` tasks and small chunked maps,
//! each task up to 1.5 ms long, while a second supervisor thread SIGKILLs random worker
//! pids (`Pool::worker_pids`).
//!
//! What must hold: every task ends as its correct value or `WorkerDied { exitcode: -9 }`; none
//! is missing (each result is waited for with a generous timeout); a kill fails at most the
//! one chunk its worker was running, so no more tasks and maps fail than workers were killed;
//! after `close` and `join` no worker is left.

use super::{Rng, Run, Thousands, mix, spin_for};
use multiprocess::{AsyncResult, Error, Pool, StartMethod};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const WORKERS: usize = 2;
/// `apply_async` tasks per batch, and items of the batch's map (in chunks of `CHUNK`).
const APPLIES: u64 = 24;
const MAP_ITEMS: u64 = 16;
const CHUNK: usize = 4;
/// How long a result may take before it counts as missing: far more than any task runs.
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A task: up to 1.5 ms long (so that kills land mid-task), asleep or, one in eight, busy;
/// then a value the supervisor can check.
fn task(x: u64) -> u64 {
    let h = mix(x);
    let d = Duration::from_micros(h % 1500);
    if (h >> 32).is_multiple_of(8) {
        spin_for(d)
    } else {
        std::thread::sleep(d)
    }
    expected(x)
}

fn expected(x: u64) -> u64 {
    mix(x ^ 0x5eed_f00d)
}

/// What the pool did, summed over phases.
#[derive(Default)]
pub struct Stats {
    pub applies: u64,
    pub apply_values: u64,
    pub apply_died: u64,
    pub maps: u64,
    pub map_values: u64,
    pub maps_died: u64,
    pub missing: u64,
    pub kills: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.applies += o.applies;
        self.apply_values += o.apply_values;
        self.apply_died += o.apply_died;
        self.maps += o.maps;
        self.map_values += o.map_values;
        self.maps_died += o.maps_died;
        self.missing += o.missing;
        self.kills += o.kills;
    }

    fn tasks(&self) -> u64 {
        self.applies + self.maps * MAP_ITEMS
    }

    pub fn line(&self) -> String {
        format!(
            "pool {} tasks, {} WorkerDied, {} kills",
            Thousands(self.tasks()),
            Thousands(self.apply_died + self.maps_died),
            Thousands(self.kills)
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "pool: {} tasks ({} apply_async, {} maps of {MAP_ITEMS} in chunks of {CHUNK}), {} values, \
             {} WorkerDied ({} apply_async, {} maps), {} missing, {} worker kills",
            Thousands(self.tasks()),
            Thousands(self.applies),
            Thousands(self.maps),
            Thousands(self.apply_values + self.map_values),
            Thousands(self.apply_died + self.maps_died),
            Thousands(self.apply_died),
            Thousands(self.maps_died),
            Thousands(self.missing),
            Thousands(self.kills)
        )
    }
}

/// Files one task's (or one map's) outcome: `Ok` values are checked by `check`.
fn outcome<T>(run: &Run, what: &str, r: multiprocess::Result<T>, check: impl FnOnce(&T) -> bool) -> Outcome {
    match r {
        Ok(v) if check(&v) => Outcome::Value,
        Ok(_) => {
            run.fail("pool: results correct", format!("{what} gave a wrong value"));
            Outcome::Other
        }
        Err(Error::WorkerDied { exitcode }) if exitcode == -libc::SIGKILL => Outcome::Died,
        Err(Error::Timeout) => {
            run.fail("pool: no result missing", format!("{what} had no result after {RESULT_TIMEOUT:?}"));
            Outcome::Missing
        }
        Err(e) => {
            run.fail("pool: a value or WorkerDied(-9)", format!("{what} failed with: {e}"));
            Outcome::Other
        }
    }
}

enum Outcome {
    Value,
    Died,
    Missing,
    Other,
}

/// One batch: submits the tasks and a map, then waits for every result.
fn batch(pool: &Pool, run: &Run, next: &mut u64, stats: &mut Stats) -> multiprocess::Result<()> {
    let applies: Vec<(u64, AsyncResult<u64>)> = (0..APPLIES)
        .map(|i| Ok((*next + i, pool.apply_async(task, (*next + i,))?)))
        .collect::<multiprocess::Result<_>>()?;
    *next += APPLIES;
    let items: Vec<u64> = (*next..*next + MAP_ITEMS).collect();
    *next += MAP_ITEMS;
    let map = pool.map_async_chunked(task, items.clone(), CHUNK)?;

    stats.applies += APPLIES;
    for (x, r) in applies {
        match outcome(run, &format!("apply_async(task, {x})"), r.get_timeout(RESULT_TIMEOUT), |&v| v == expected(x)) {
            Outcome::Value => stats.apply_values += 1,
            Outcome::Died => stats.apply_died += 1,
            Outcome::Missing => stats.missing += 1,
            Outcome::Other => {}
        }
    }
    stats.maps += 1;
    let check = |vs: &Vec<u64>| vs.len() == items.len() && vs.iter().zip(&items).all(|(&v, &x)| v == expected(x));
    match outcome(run, &format!("map_async_chunked(task, {}..)", items[0]), map.get_timeout(RESULT_TIMEOUT), check) {
        Outcome::Value => stats.map_values += MAP_ITEMS,
        Outcome::Died => stats.maps_died += 1,
        Outcome::Missing => stats.missing += MAP_ITEMS,
        Outcome::Other => {}
    }
    Ok(())
}

/// Runs the pool component of a phase under `m` until `run` stops; adds what it did to
/// `stats`.
pub fn run(m: StartMethod, run: &Run, seed: u64, stats: &mut Stats) {
    let pool = match Pool::builder().processes(WORKERS).start_method(m).build() {
        Ok(p) => p,
        Err(e) => return run.fail("pool: setup", e),
    };
    let mut rng = Rng::new(seed);
    let kill_seed = rng.fork();
    let kills = AtomicU64::new(0);
    let mut s = Stats::default();
    std::thread::scope(|scope| {
        let (pool, kills) = (&pool, &kills);
        let killer = std::thread::Builder::new().name("soak-pool-killer".into()).spawn_scoped(scope, move || {
            let mut rng = Rng::new(kill_seed);
            loop {
                run.nap(rng.millis(50, 500));
                if run.stopping() {
                    return;
                }
                let pids = pool.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[rng.below(pids.len() as u64) as usize];
                // SAFETY: kill(2) touches no memory of ours. The pid was a worker's a moment
                // ago; if that worker has been reaped since, its pid could name another
                // process only after the kernel's pids wrapped around, and a child of the run
                // killed that way would be reported as dying unexpectedly, not missed.
                if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut next = rng.below(1 << 40);
        while !run.stopping() {
            if let Err(e) = batch(pool, run, &mut next, &mut s) {
                run.fail("pool: submits while running", e);
            }
        }
        if killer.map(|h| h.join()).is_err() {
            run.fail("pool: setup", "cannot start the killer thread");
        }
    });
    s.kills = kills.load(Ordering::Relaxed);
    pool.close();
    if let Err(e) = pool.join() {
        run.fail("pool: close and join", e);
    }
    if !pool.worker_pids().is_empty() {
        run.fail("pool: close and join", format!("workers {:?} left after join", pool.worker_pids()));
    }
    if s.apply_died + s.maps_died > s.kills {
        let detail = format!(
            "{} tasks and {} maps failed with WorkerDied, for {} worker kills",
            s.apply_died, s.maps_died, s.kills
        );
        run.fail("pool: a kill fails at most the chunk its worker ran", detail);
    }
    *stats = s;
}
