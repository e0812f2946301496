//! The soak: producers, consumers, lock holders and pool workers run for a chosen time while
//! the supervisor (this process) SIGKILLs random ones of them, and checks the crate's promises
//! the whole time:
//!
//! - **queues**: every acknowledged item (its `put` returned) is received exactly once, intact
//!   and in order per producer (as each consumer sees them), except at most one item per killed consumer (the one in its
//!   hands); a killed producer's one unacknowledged item may or may not arrive; nothing that
//!   was never put arrives;
//! - **locks**: a `Lock` or `RLock` whose holder is killed is taken by another process, told
//!   [`Error::OwnerDied`](multiprocess::Error::OwnerDied), within 1 s of the kill; no two
//!   processes ever hold it at once; `OwnerDied` is never reported without a kill;
//! - **pool**: every task submitted ends as its correct value or `WorkerDied { exitcode: -9 }`,
//!   none goes missing, and no more fail than workers were killed;
//! - **at the end**: no zombie, no process of the run left, no new `/dev/shm` entry, and the
//!   supervisor's descriptors back to what they were at the start.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 30 [--seed S] [--start-method fork|spawn|forkserver|all]
//! ```
//!
//! The default runs each start method in turn for a third of the time. The seed (printed)
//! drives every random choice of the supervisor and its children (which process to kill and
//! when, pauses, item sizes); give it back with `--seed` to replay a failing run. Where each
//! kill lands depends on timing too, so a replay retraces the run closely, not exactly. Exit
//! code 0 only if every invariant held; otherwise 1, with each broken invariant on a line of
//! its own (`soak: FAILED: <invariant>: <what was seen>`); 2 for bad arguments, 3 if the run
//! hung (a watchdog ends it two minutes past its time).
//!
//! It keeps to about one core of the two and a few MiB: two producers, two consumers, four
//! lock workers and two pool workers at a time, some 30,000 queue items and 2,000 pool tasks a
//! second, and some 15 kills a second in all.

#[path = "soak/end.rs"]
mod end;
#[path = "soak/locks.rs"]
mod locks;
#[path = "soak/pool.rs"]
mod pool;
#[path = "soak/queues.rs"]
mod queues;

use multiprocess::StartMethod;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that marks every process of this run (see `end.rs`).
pub const RUN_MARK: &str = "MULTIPROCESS_SOAK_RUN";

/// How long the supervisor waits for what should come at once (a killed child's exit, a
/// stopped child's return) before calling it a hang.
pub const LONG: Duration = Duration::from_secs(10);

/// What one phase (one start method) is told and tells back.
pub struct Run {
    /// Set when the phase's time is up, or at the first broken invariant: every component
    /// stops killing, winds down and checks what it has.
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
}

impl Run {
    fn new() -> Run {
        Run { stop: AtomicBool::new(false), failures: Mutex::new(Vec::new()) }
    }

    /// Records a broken invariant, and stops the phase.
    pub fn fail(&self, invariant: &str, detail: impl fmt::Display) {
        let line = format!("{invariant}: {detail}");
        eprintln!("soak: broken, stopping the phase: {line}");
        self.failures.lock().unwrap().push(line);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Sleeps `d`, in short naps, returning early when the phase stops.
    pub fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

/// xorshift64*, seeded through splitmix64: cheap, and the same sequence for the same seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (near enough), `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }

    /// A duration uniform in `lo..hi` microseconds.
    pub fn micros(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(lo + self.below(hi - lo))
    }

    /// A seed for a child or a thread: the next value, so each gets a stream of its own.
    pub fn fork(&mut self) -> u64 {
        self.next_u64()
    }
}

/// splitmix64's finalizer: a well-mixed 64-bit hash of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine, so a time
/// a child writes to shared memory compares with the supervisor's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Busy for `d`: a task's or a holder's work, so that kills find it in the middle.
pub fn spin_for(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// SIGKILLs `p` and joins it; `Err` (a sentence) if it was not alive to be killed, or did not
/// die of the signal within [`LONG`].
pub fn kill_and_join(p: &mut multiprocess::Process) -> Result<(), String> {
    if let Some(code) = p.exitcode() {
        return Err(format!("{} (pid {:?}) had already exited with {code}", p.name(), p.pid()));
    }
    p.kill().map_err(|e| format!("kill {}: {e}", p.name()))?;
    p.join_timeout(LONG).map_err(|e| format!("join {}: {e}", p.name()))?;
    match p.exitcode() {
        Some(code) if code == -libc::SIGKILL => Ok(()),
        Some(code) => Err(format!("{} (pid {:?}) exited with {code}, not by the SIGKILL", p.name(), p.pid())),
        None => Err(format!("{} (pid {:?}) still alive {LONG:?} after SIGKILL", p.name(), p.pid())),
    }
}

/// Stops `p` by the caller's flag: waits [`LONG`] for it to return, and `Err` unless it
/// exited 0 (killing it if it hangs, so that nothing is left behind).
pub fn join_stopped(p: &mut multiprocess::Process, what: &str) -> Result<(), String> {
    let _ = p.join_timeout(LONG);
    match p.exitcode() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{what} {} exited with {code} when told to stop", p.name())),
        None => {
            let _ = p.kill();
            let _ = p.join();
            Err(format!("{what} {} did not stop within {LONG:?} of being told (hung, killed)", p.name()))
        }
    }
}

/// Starts `target(args)` under `m`, as a daemon, so that if the supervisor dies its children
/// die with it.
pub fn start<F, A>(m: StartMethod, name: String, target: F, args: A) -> multiprocess::Result<multiprocess::Process>
where
    F: multiprocess::Target<A>,
    A: multiprocess::Args,
{
    let mut p = multiprocess::get_context(m).process(target, args).with_name(name).with_daemon(true);
    p.start()?;
    Ok(p)
}

/// `1234567` as `1,234,567`.
pub struct Thousands(pub u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        f.write_str(&out)
    }
}

/// Formats a duration in milliseconds.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

struct Options {
    seconds: f64,
    seed: u64,
    methods: Vec<StartMethod>,
}

const USAGE: &str = "usage: soak [--seconds N] [--seed S] [--start-method fork|spawn|forkserver|all]
  --seconds N       how long to run, in all (default 30); each start method gets its share
  --seed S          replay a run's random choices (default: from the clock, printed)
  --start-method M  one start method, or all three in turn (default all)";

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        seconds: 30.0,
        seed: (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_nanos()
            as u64)
            % 1_000_000_000,
        methods: vec![StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                opts.seconds = v.parse().map_err(|_| format!("--seconds: not a number: {v}"))?;
                if !(opts.seconds > 0.0 && opts.seconds < 1e7) {
                    return Err(format!("--seconds: out of range: {v}"));
                }
            }
            "--seed" => {
                let v = value("--seed")?;
                opts.seed = v.parse().map_err(|_| format!("--seed: not a number: {v}"))?;
            }
            "--start-method" => {
                let v = value("--start-method")?;
                opts.methods = match v.as_str() {
                    "fork" => vec![StartMethod::Fork],
                    "spawn" => vec![StartMethod::Spawn],
                    "forkserver" => vec![StartMethod::ForkServer],
                    "all" => vec![StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer],
                    _ => return Err(format!("--start-method: unknown: {v}")),
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    Ok(opts)
}

pub fn method_name(m: StartMethod) -> &'static str {
    match m {
        StartMethod::Fork => "fork",
        StartMethod::Spawn => "spawn",
        StartMethod::ForkServer => "forkserver",
    }
}

/// Runs one phase: the three components side by side under `m` for `length`, then each winds
/// down and checks what it saw.
fn phase(
    m: StartMethod,
    length: Duration,
    rng: &mut Rng,
    q: &mut queues::Stats,
    l: &mut locks::Stats,
    p: &mut pool::Stats,
) -> Vec<String> {
    let run = Run::new();
    let (qseed, lseed, pseed) = (rng.fork(), rng.fork(), rng.fork());
    let (mut qs, mut ls, mut ps) = (queues::Stats::default(), locks::Stats::default(), pool::Stats::default());
    std::thread::scope(|s| {
        let run = &run;
        let (qs, ls, ps) = (&mut qs, &mut ls, &mut ps);
        let handles = [
            std::thread::Builder::new()
                .name("soak-queues".into())
                .spawn_scoped(s, move || queues::run(m, run, qseed, qs)),
            std::thread::Builder::new()
                .name("soak-locks".into())
                .spawn_scoped(s, move || locks::run(m, run, lseed, ls)),
            std::thread::Builder::new().name("soak-pool".into()).spawn_scoped(s, move || pool::run(m, run, pseed, ps)),
        ];
        let handles: Vec<_> = handles.into_iter().map(|h| h.expect("cannot start a supervisor thread")).collect();
        run.nap(length);
        run.stop.store(true, Ordering::SeqCst);
        for h in handles {
            if h.join().is_err() {
                run.fail("supervisor", "a supervisor thread panicked");
            }
        }
    });
    println!("  {:<10} {} | {} | {}", method_name(m), qs.line(), ls.line(), ps.line());
    q.add(&qs);
    l.add(&ls);
    p.add(&ps);
    run.failures()
}

fn main() {
    multiprocess::init();
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Every process of the run inherits this mark (the spawned ones and fork server through
    // exec, the resource trackers through theirs): the end check finds leftovers by it. And
    // the supervisor forks from a threaded process on purpose (its children only run their
    // target), so the crate's warning about that is silenced.
    // SAFETY: no other thread runs yet (this is the first thing main does after `init`, which
    // starts none), so nothing reads the environment meanwhile.
    unsafe {
        std::env::set_var(RUN_MARK, format!("{}-{}", std::process::id(), opts.seed));
        std::env::set_var("MULTIPROCESS_NO_FORK_WARNING", "1");
    }
    let before = end::Snapshot::take();

    let names: Vec<&str> = opts.methods.iter().map(|&m| method_name(m)).collect();
    println!("soak: running {:.1} s, seed {}, start methods {}", opts.seconds, opts.seed, names.join("+"));
    let started = Instant::now();
    let watchdog_after = Duration::from_secs_f64(opts.seconds) + Duration::from_secs(120);
    std::thread::Builder::new()
        .name("soak-watchdog".into())
        .spawn(move || {
            std::thread::sleep(watchdog_after);
            eprintln!("soak: FAILED: hang: still running {watchdog_after:?} after the start (a teardown hung)");
            std::process::exit(3);
        })
        .expect("cannot start the watchdog thread");

    let mut rng = Rng::new(opts.seed);
    let length = Duration::from_secs_f64(opts.seconds / opts.methods.len() as f64);
    let (mut q, mut l, mut p) = (queues::Stats::default(), locks::Stats::default(), pool::Stats::default());
    let mut failures = Vec::new();
    for &m in &opts.methods {
        let failed = phase(m, length, &mut rng, &mut q, &mut l, &mut p);
        failures.extend(failed.into_iter().map(|f| format!("[{}] {f}", method_name(m))));
        if !failures.is_empty() {
            break;
        }
    }
    let end = end::check(&before, &l.shm_names);
    failures.extend(end.failures());

    println!("soak: {:.1} s, seed {}, start methods {}", started.elapsed().as_secs_f64(), opts.seed, names.join("+"));
    println!("{}", q.summary());
    println!("{}", l.summary());
    println!("{}", p.summary());
    println!("{}", end.summary());
    if failures.is_empty() {
        println!("soak: all invariants held");
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        println!("soak: {} invariant(s) broken; replay with --seed {}", failures.len(), opts.seed);
        std::process::exit(1);
    }
}
