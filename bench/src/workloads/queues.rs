//! The queue workloads: producer processes put messages, the parent gets them all.
//!
//! - `queue_small`: one producer puts 200,000 small integers into a `Queue<u64>`; then two
//!   producers, 100,000 each. Messages per second.
//! - `queue_1k`, `queue_1m`: the same with `Queue<Vec<u8>>` items of 1 KiB (100,000
//!   messages) and 1 MiB (2,000 messages). Messages per second, and GB/s of payload (10⁹
//!   bytes per second) as rows of their own from the same runs.
//! - `simplequeue_small`: as `queue_small`, on `SimpleQueue<u64>`.
//!
//! The sides:
//! - multiprocess: `Queue::new()` (or `SimpleQueue::new()`), producers started by fork
//!   putting `seq` (an integer that names the producer and the message) or
//!   `payload.clone()` of a prepared `Vec<u8>` (`put` takes the item by value: what a user
//!   who keeps the payload writes); the parent `get()`s and checks every item (each
//!   producer's integers in order; each byte item whole).
//! - CPython: `multiprocessing.Queue()` (or `SimpleQueue()`), producers by fork putting `i`
//!   or the same `bytes` object (`b'x' * size`); the parent `get()`s, sums the integers or
//!   checks each length.
//! - limit (`limit/ring.rs`): a ring in `MAP_SHARED` memory between raw fork children and the
//!   parent, single-producer (one producer) or multi-producer (two), spinning then sleeping on
//!   a futex when empty or full; u64 stores for small messages, `memcpy` in and out for bytes.
//!   Reference rows (`raw-pipe`): one `write` and one `read` of each whole message through a
//!   raw pipe.
//!
//! On every side the producers start (not timed), put a few warm-up messages, which the
//! parent gets, and wait at a start gate (shared-memory atomics; CPython: a `Semaphore` and
//! an `Event`). The clock runs from the opening of the gate to the last `get`. The parent
//! (consumer) is pinned to the first CPU this process may use, the producers to the next
//! (both producers share it on a 2-CPU machine), on every side.

use super::partner::{Watchdog, child_setup, join_ok};
use super::{Config, Goal, Measure, PySide, Row, Side, Unit, phases};
use crate::limit::child_running;
use crate::limit::ring::{self as raw, InOrder, Payload, seq_of};
use crate::pin::{PinGuard, Spread};
use crate::report::num;
use crate::shm::{Gate, SharedMap};
use multiprocess::{Process, Queue, SimpleQueue, StartMethod, get_context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const QUEUE_SMALL: &str = "queue_small";
pub const QUEUE_1K: &str = "queue_1k";
pub const QUEUE_1M: &str = "queue_1m";
pub const SIMPLEQUEUE_SMALL: &str = "simplequeue_small";

/// The targets.
const SMALL_TARGET: f64 = 10_000_000.0;
const LARGE_TARGET_GBPS: f64 = 5.0;

/// What the producers put, as a user would make it.
trait Item: Serialize + DeserializeOwned + Send + 'static {
    /// What every message is made from.
    fn prototype(size: usize) -> Self;
    /// Message `i` of producer `producer`.
    fn make(proto: &Self, producer: usize, i: u64) -> Self;
    /// An item no producer puts: how the watchdog wakes a parent whose producer failed.
    fn poison() -> Self;
    /// Whether the item is the one expected next (integers) or whole (bytes).
    fn check(&self, size: usize, order: &mut InOrder) -> bool;
}

impl Item for u64 {
    fn prototype(_: usize) -> u64 {
        0
    }

    #[inline]
    fn make(_: &u64, producer: usize, i: u64) -> u64 {
        seq_of(producer, i)
    }

    fn poison() -> u64 {
        u64::MAX
    }

    #[inline]
    fn check(&self, _: usize, order: &mut InOrder) -> bool {
        order.see(*self)
    }
}

impl Item for Vec<u8> {
    fn prototype(size: usize) -> Vec<u8> {
        vec![b'x'; size]
    }

    /// `put` takes the item by value: a producer that keeps its payload puts a clone.
    #[inline]
    fn make(proto: &Vec<u8>, _: usize, _: u64) -> Vec<u8> {
        proto.clone()
    }

    fn poison() -> Vec<u8> {
        Vec::new()
    }

    #[inline]
    fn check(&self, size: usize, _: &mut InOrder) -> bool {
        self.len() == size && self.last() == Some(&b'x')
    }
}

/// `Queue` and `SimpleQueue`, as the workload uses them.
trait BenchQueue: Clone + Serialize + DeserializeOwned + Send + 'static {
    type Item: Item;
    fn create() -> multiprocess::Result<Self>;
    fn put_item(&self, item: Self::Item) -> multiprocess::Result<()>;
    fn get_item(&self) -> multiprocess::Result<Self::Item>;
}

impl<T: Item> BenchQueue for Queue<T> {
    type Item = T;

    fn create() -> multiprocess::Result<Self> {
        Queue::new()
    }

    #[inline]
    fn put_item(&self, item: T) -> multiprocess::Result<()> {
        Ok(self.put(item)?)
    }

    #[inline]
    fn get_item(&self) -> multiprocess::Result<T> {
        self.get()
    }
}

impl<T: Item> BenchQueue for SimpleQueue<T> {
    type Item = T;

    fn create() -> multiprocess::Result<Self> {
        SimpleQueue::new()
    }

    #[inline]
    fn put_item(&self, item: T) -> multiprocess::Result<()> {
        Ok(self.put(item)?)
    }

    #[inline]
    fn get_item(&self) -> multiprocess::Result<T> {
        self.get()
    }
}

/// A producer's orders.
#[derive(Serialize, Deserialize)]
struct Job {
    /// The start gate (a `SharedMap<Gate>` of the parent).
    gate: usize,
    /// Which producer this is.
    index: usize,
    warmup: u32,
    n: u32,
    cpu: usize,
    /// Bytes per item (byte items).
    size: usize,
}

/// A producer child: `warmup` items, the gate, `n` items.
fn producer<Q: BenchQueue>(q: Q, job: Job) -> Result<(), String> {
    child_setup(job.cpu)?;
    // SAFETY: the parent made the mapping before it forked this child (fork start method:
    // same address space layout) and keeps it mapped until it has joined this child.
    let gate = unsafe { SharedMap::<Gate>::at(job.gate) };
    let proto = Q::Item::prototype(job.size);
    let put = |first: u64, count: u32| -> Result<(), String> {
        for i in first..first + u64::from(count) {
            q.put_item(Q::Item::make(&proto, job.index, i)).map_err(|e| format!("put: {e}"))?;
        }
        Ok(())
    };
    put(0, job.warmup)?;
    if !gate.arrive() {
        return Ok(()); // the parent gave up
    }
    let result = put(u64::from(job.warmup), job.n);
    gate.finish();
    result
}

/// One round of the library side: the time from the opening of the gate to the last `get`.
fn ours<Q: BenchQueue>(payload: Payload, warmup: u32, n: u32, spread: &Spread) -> Result<Duration, String> {
    let _pin = PinGuard::pin(Some(spread.consumer)).map_err(|e| format!("pin: {e}"))?;
    let q = Q::create().map_err(|e| format!("create the queue: {e}"))?;
    let gate = SharedMap::<Gate>::new().map_err(|e| format!("mmap: {e}"))?;
    let k = spread.producers.len();
    let give_up = |procs: &mut Vec<Process>| {
        gate.abort();
        for p in procs {
            let _ = p.kill();
            let _ = p.join();
        }
    };
    let ctx = get_context(StartMethod::Fork);
    let mut procs = Vec::new();
    for (index, &cpu) in spread.producers.iter().enumerate() {
        let job = Job { gate: gate.addr(), index, warmup, n, cpu, size: payload.size() };
        let mut p = ctx.process(producer::<Q>, (q.clone(), job));
        if let Err(e) = p.start() {
            give_up(&mut procs);
            return Err(format!("start: {e}"));
        }
        procs.push(p);
    }
    // A producer that fails would leave the parent in `get` for ever: the watchdog then puts
    // an item no producer puts, which fails the check below.
    let dogs: Result<Vec<Watchdog>, String> = procs
        .iter()
        .map(|p| {
            let q = q.clone();
            Watchdog::start(p, move || {
                let _ = q.put_item(Q::Item::poison());
            })
        })
        .collect();
    let dogs = match dogs {
        Ok(d) => d,
        Err(e) => {
            give_up(&mut procs);
            return Err(e);
        }
    };
    let pids: Vec<libc::pid_t> = procs.iter().filter_map(|p| p.pid()).map(|pid| pid as libc::pid_t).collect();
    let size = payload.size();
    let mut order = InOrder::new(k);
    let mut take = |count: u64| -> Result<(), String> {
        for _ in 0..count {
            let item = q.get_item().map_err(|e| format!("get: {e}"))?;
            if !item.check(size, &mut order) {
                return Err("an item came out of order or damaged (or a producer failed)".into());
            }
        }
        Ok(())
    };
    let mut run = || -> Result<Duration, String> {
        take(k as u64 * u64::from(warmup))?;
        gate.wait_ready(k as u32, || pids.iter().all(|&pid| child_running(pid)))?;
        let t = Instant::now();
        gate.open();
        take(k as u64 * u64::from(n))?;
        Ok(t.elapsed())
    };
    let result = run();
    drop(dogs);
    if result.is_err() {
        gate.abort();
        for p in &mut procs {
            let _ = p.kill();
        }
    }
    let joined = procs.iter_mut().map(join_ok).collect::<Vec<_>>().into_iter().collect::<Result<(), String>>();
    match (result, joined) {
        (Ok(elapsed), Ok(())) => Ok(elapsed),
        (Err(e), Err(child)) => Err(format!("{e}; {child}")),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Messages per second and GB/s of payload, for `messages` taken in `elapsed`.
fn figures(payload: Payload, messages: u64, elapsed: Duration) -> Vec<f64> {
    let s = elapsed.as_secs_f64();
    vec![messages as f64 / s, (messages * payload.size() as u64) as f64 / s / 1e9]
}

/// One workload's parameters.
struct Spec {
    name: &'static str,
    simple: bool,
    payload: Payload,
    /// Messages per run (all producers together), full and quick.
    total: u32,
    quick_total: u32,
    /// Slots of the limit's ring.
    cap: u64,
}

const SPECS: [Spec; 4] = [
    Spec { name: QUEUE_SMALL, simple: false, payload: Payload::U64, total: 200_000, quick_total: 10_000, cap: 8192 },
    Spec {
        name: QUEUE_1K,
        simple: false,
        payload: Payload::Bytes(1024),
        total: 100_000,
        quick_total: 5_000,
        cap: 1024,
    },
    Spec { name: QUEUE_1M, simple: false, payload: Payload::Bytes(1 << 20), total: 2_000, quick_total: 50, cap: 8 },
    Spec {
        name: SIMPLEQUEUE_SMALL,
        simple: true,
        payload: Payload::U64,
        total: 200_000,
        quick_total: 10_000,
        cap: 8192,
    },
];

type RunOnce = fn(Payload, u32, u32, &Spread) -> Result<Duration, String>;

impl Spec {
    fn ours(&self) -> RunOnce {
        match (self.simple, self.payload) {
            (false, Payload::U64) => ours::<Queue<u64>>,
            (false, Payload::Bytes(_)) => ours::<Queue<Vec<u8>>>,
            (true, Payload::U64) => ours::<SimpleQueue<u64>>,
            (true, Payload::Bytes(_)) => ours::<SimpleQueue<Vec<u8>>>,
        }
    }

    fn type_name(&self) -> String {
        let kind = if self.simple { "SimpleQueue" } else { "Queue" };
        match self.payload {
            Payload::U64 => format!("{kind}<u64>"),
            Payload::Bytes(n) => format!("{kind}<Vec<u8>> of {}", size_text(n)),
        }
    }

    /// The measures of one side: one row's (messages/s) for integers, two (messages/s, GB/s)
    /// from each run for bytes.
    fn measures(&self, run: impl Fn() -> Result<Duration, String> + 'static, messages: u64) -> Vec<Measure> {
        let payload = self.payload;
        let run = move || run().map(|d| figures(payload, messages, d));
        match payload {
            Payload::U64 => vec![Box::new(move || run().map(|f| f[0]))],
            Payload::Bytes(_) => phases::split(2, run),
        }
    }

    /// The CPython script's arguments.
    fn py_args(&self, warmup: u32, n: u32, spread: &Spread) -> Vec<String> {
        let workload = if self.simple { "simplequeue" } else { "queue" };
        let variant = if self.payload == Payload::U64 { "int" } else { "bytes" };
        let cpus: Vec<String> = spread.producers.iter().map(|c| c.to_string()).collect();
        let mut args: Vec<String> = vec![workload.into(), variant.into(), n.to_string()];
        args.extend(["--warmup".into(), warmup.to_string(), "--producers".into(), spread.producers.len().to_string()]);
        args.extend(["--size".into(), self.payload.size().to_string()]);
        args.extend(["--cpu".into(), spread.consumer.to_string(), "--child-cpus".into(), cpus.join(",")]);
        args
    }
}

/// A count, thousands separated.
fn count(n: u32) -> String {
    if n >= 1000 { num(f64::from(n)) } else { n.to_string() }
}

fn size_text(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Leaks a row id for a goal that names it (a handful per run).
fn static_id(id: &str) -> &'static str {
    Box::leak(id.to_string().into_boxed_str())
}

fn spec_rows(cfg: &Config, spec: &Spec) -> Vec<Row> {
    let total = if cfg.quick { spec.quick_total } else { spec.total };
    let bytes = spec.payload != Payload::U64;
    // (id suffix, unit) of the rows each run gives.
    let units: &[(&str, Unit)] =
        if bytes { &[("", Unit::MessagesPerSec), ("-gbps", Unit::GBPerSec)] } else { &[("", Unit::MessagesPerSec)] };
    let name = spec.name;
    let mut rows = Vec::new();
    for producers in [1usize, 2] {
        let Some(spread) = Spread::new(&cfg.cpus, producers) else { return Vec::new() };
        let n = total / producers as u32;
        let warmup = (n / 100).max(5);
        let messages = u64::from(n) * producers as u64;
        let who = if producers == 1 { "1-producer".to_string() } else { format!("{producers}-producers") };
        let variant = format!(
            "{}, {producers} producer{} × {}, {}",
            spec.type_name(),
            if producers == 1 { "" } else { "s" },
            count(n),
            spread.describe()
        );
        let run_ours = spec.ours();
        let (payload, cap) = (spec.payload, spec.cap);
        let s1 = spread.clone();
        let ours_m = spec.measures(move || run_ours(payload, warmup, n, &s1), messages);
        let s2 = spread.clone();
        let limit_m = spec.measures(move || raw::ring_stream(payload, cap, warmup, n, &s2), messages);
        let args = spec.py_args(warmup, n, &spread);
        let put = if bytes { "put(payload.clone())" } else { "put(seq)" };
        let ours_label =
            format!("{}::new(), {put} / get(), producers by fork", if spec.simple { "SimpleQueue" } else { "Queue" });
        let py_label = format!(
            "{}(), put({}) / get(), producers by fork",
            if spec.simple { "SimpleQueue" } else { "Queue" },
            if bytes { "b'x' * size" } else { "i" }
        );
        for (&(suffix, unit), (ours_m, limit_m)) in units.iter().zip(ours_m.into_iter().zip(limit_m)) {
            let id = format!("{name}/{who}{suffix}");
            let one = format!("{name}/1-producer{suffix}");
            // Each run's targets go on its headline row only: GB/s for 1 MiB items, messages/s
            // otherwise (the other row of the same run would show the same ratio twice).
            let large = spec.payload.size() >= 1 << 20;
            let headline = (unit == Unit::GBPerSec) == large;
            let goal = match (headline, producers, large) {
                (false, _, _) => None,
                (true, 1, false) if !bytes => Some(Goal::AtLeast(SMALL_TARGET)),
                (true, 1, true) => Some(Goal::AtLeast(LARGE_TARGET_GBPS)),
                (true, 1, false) => None,
                (true, _, _) => Some(Goal::AtLeastTimesRow(static_id(&one), 1.0)),
            };
            let note = (producers == 1 && suffix.is_empty()).then(|| note(spec));
            rows.push(Row {
                id,
                workload: name,
                variant: variant.clone(),
                unit,
                placement: Some(spread.placement()),
                ours: Some(Side { label: ours_label.clone(), measure: ours_m }),
                cpython: Some(PySide {
                    label: py_label.clone(),
                    args: args.clone(),
                    field: if unit == Unit::GBPerSec { "gbps" } else { "value" },
                }),
                limit: Some(Side { label: raw::ring_label(payload, producers, cap), measure: limit_m }),
                goal,
                note,
            });
        }
    }
    // The pipe a queue would be built on, for reference (CPython's Queue is one).
    if !spec.simple
        && let Some(spread) = Spread::new(&cfg.cpus, 1)
    {
        let n = total;
        let warmup = (n / 100).max(5);
        let payload = spec.payload;
        let s = spread.clone();
        let pipe_m = spec.measures(move || raw::pipe_stream(payload, warmup, n, &s), u64::from(n));
        for (&(suffix, unit), pipe_m) in units.iter().zip(pipe_m) {
            rows.push(Row {
                id: format!("{name}/raw-pipe{suffix}"),
                workload: name,
                variant: format!(
                    "reference: raw pipe, {} messages × {}, {}",
                    size_text(payload.size()),
                    count(n),
                    spread.describe()
                ),
                unit,
                placement: Some(spread.placement()),
                ours: None,
                cpython: None,
                limit: Some(Side {
                    label: "pipe(2), one write and one read of each whole message".into(),
                    measure: pipe_m,
                }),
                goal: None,
                note: None,
            });
        }
    }
    rows
}

fn note(spec: &Spec) -> String {
    let span = "Timed from the opening of a start gate (producers started by fork and warmed up before it, on every \
                side) to the last get.";
    match spec.payload {
        Payload::U64 => format!(
            "{span} Targets: one producer to one consumer ≥ {} messages/s; two producers not slower than one. \
             Items: a u64 naming producer and message, postcard-encoded (ours); an int, pickled (CPython); an 8-byte \
             store into a slot (limit).",
            num(SMALL_TARGET)
        ),
        Payload::Bytes(size) => {
            let target = if size >= 1 << 20 {
                format!(" Targets: ≥ {LARGE_TARGET_GBPS} GB/s; two producers not slower than one.")
            } else {
                " Target: two producers not slower than one.".to_string()
            };
            format!(
                "{span}{target} Our producer puts payload.clone() of a prepared Vec<u8> each time (put takes the \
                 item by value: what a user who keeps the payload writes), so each message costs an allocation and a \
                 copy before the queue's own copy in; get returns a new Vec (allocation + copy out). CPython puts the \
                 same bytes object each time (pickled per put and written to a pipe by the feeder thread). The limit \
                 copies the prepared bytes into a slot and out into a reused buffer: two memcpys per message."
            )
        }
    }
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    SPECS.iter().flat_map(|spec| spec_rows(cfg, spec)).collect()
}
