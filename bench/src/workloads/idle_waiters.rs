//! `idle_waiters`: what processes blocked for a long time cost the machine while nothing
//! happens (issue 16 point 3). N children (fork start method) block on a `Lock` the parent
//! holds, or in `Queue.get` on an empty queue, or at a `Barrier(N + 1)` the parent has not
//! reached; once all have said they are about to block and a settling pause has passed, their
//! CPU time (utime + stime from `/proc/<pid>/stat`, all threads) is summed over a window and
//! given as a percentage of the CPUs this process may use. Then they are let go and joined.
//!
//! CPython does the same with `multiprocessing`'s `Lock`, `Queue` and `Barrier`. No limit side:
//! the machine's limit is zero.

use super::{Config, Goal, PySide, Row, Side, Unit, py_args};
use multiprocess::{Barrier, Lock, Process, Queue, Semaphore, StartMethod, get_context};
use std::time::Duration;

pub const NAME: &str = "idle_waiters";

/// Pause after the last child said it is about to block, before the window opens (a tenth
/// of it in a smoke run, with 0.3 s windows).
const SETTLE: Duration = Duration::from_millis(500);
/// How long the children's CPU time is counted, in milliseconds (the CPython side gets it as
/// its `--warmup`).
const WINDOW_MS: u32 = 2000;
const QUICK_WINDOW_MS: u32 = 300;

#[derive(Clone, Copy)]
enum Kind {
    Lock,
    QueueGet,
    Barrier,
}

fn blocked_on_lock(lock: Lock, ready: Semaphore) -> multiprocess::Result<()> {
    ready.release()?;
    lock.acquire()?;
    lock.release()
}

fn blocked_in_get(q: Queue<u8>, ready: Semaphore) -> multiprocess::Result<()> {
    ready.release()?;
    q.get().map(drop)
}

fn blocked_at_barrier(b: Barrier, ready: Semaphore) -> multiprocess::Result<()> {
    ready.release()?;
    b.wait().map(drop)
}

/// CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("stat {pid}: {e}"))?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("bad stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or("bad stat field");
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    Ok(field(11)? + field(12)?)
}

/// One round: the children's CPU use as a percentage of the CPUs this process may use.
fn ours(kind: Kind, n: u32, cpus: usize, window_ms: u32) -> Result<f64, String> {
    let window = Duration::from_millis(u64::from(window_ms));
    let ctx = get_context(StartMethod::Fork);
    let e = |what: &'static str| move |err: multiprocess::Error| format!("{what}: {err}");
    let ready = Semaphore::new(0).map_err(e("Semaphore"))?;
    let lock = Lock::new().map_err(e("Lock"))?;
    let queue = Queue::<u8>::new().map_err(e("Queue"))?;
    let barrier = Barrier::new(n + 1).map_err(e("Barrier"))?;
    if matches!(kind, Kind::Lock) {
        lock.acquire().map_err(e("acquire"))?;
    }
    let mut children: Vec<Process> = Vec::new();
    let mut result = Ok(());
    for _ in 0..n {
        let mut p = match kind {
            Kind::Lock => ctx.process(blocked_on_lock, (lock.clone(), ready.clone())),
            Kind::QueueGet => ctx.process(blocked_in_get, (queue.clone(), ready.clone())),
            Kind::Barrier => ctx.process(blocked_at_barrier, (barrier.clone(), ready.clone())),
        };
        if let Err(err) = p.start() {
            result = Err(format!("start: {err}"));
            break;
        }
        children.push(p);
    }
    let mut percent = 0.0;
    if result.is_ok() {
        result = (|| {
            for _ in 0..n {
                if !ready.acquire_timeout(Duration::from_secs(60)) {
                    return Err("the children never got ready".to_string());
                }
            }
            std::thread::sleep(SETTLE.min(window / 4));
            let pids: Vec<u32> = children.iter().filter_map(|p| p.pid()).collect();
            let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum::<Result<u64, String>>()?;
            std::thread::sleep(window);
            let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum::<Result<u64, String>>()?;
            // SAFETY: sysconf only reads a configuration value.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            percent = (after - before) as f64 / hz / (window.as_secs_f64() * cpus as f64) * 100.0;
            Ok(())
        })();
    }
    // Let them go: each lock waiter releases in turn; one item per getter; the last party.
    match kind {
        Kind::Lock => drop(lock.release()),
        Kind::QueueGet => (0..children.len()).for_each(|_| drop(queue.put(0))),
        Kind::Barrier if result.is_ok() => drop(barrier.wait()),
        Kind::Barrier => barrier.abort(),
    }
    for p in &mut children {
        if p.join_timeout(Duration::from_secs(30)).is_err() || p.exitcode() != Some(0) {
            let _ = p.kill();
            let _ = p.join();
            result = result.and(Err("a child failed".to_string()));
        }
    }
    result.map(|()| percent)
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let cpus = cfg.cpus.len().max(1);
    let many = cfg.iters(1000, 20);
    let parties = cfg.iters(200, 10);
    let window_ms = cfg.iters(WINDOW_MS, QUICK_WINDOW_MS);
    let window = format!("{:.1} s", f64::from(window_ms) / 1000.0);
    let row = |id: &str, kind: Kind, n: u32, what: String, py_variant: &str, goal: f64| Row {
        id: format!("{NAME}/{id}"),
        workload: NAME,
        variant: what,
        unit: Unit::PercentOfCpus,
        placement: None,
        ours: Some(Side {
            label: "children of the fork start method".into(),
            measure: Box::new(move || ours(kind, n, cpus, window_ms)),
        }),
        cpython: Some(PySide::new("fork", py_args(NAME, py_variant, n, window_ms, None))),
        limit: None,
        goal: Some(Goal::AtMost(goal)),
        note: None,
    };
    vec![
        row(
            "lock",
            Kind::Lock,
            many,
            format!("{many} processes blocked on a held Lock, CPU over {window}"),
            "lock",
            10.0,
        ),
        row(
            "queue_get",
            Kind::QueueGet,
            many,
            format!("{many} processes in Queue.get on an empty queue, CPU over {window}"),
            "queue_get",
            10.0,
        ),
        row(
            "barrier",
            Kind::Barrier,
            parties - 1,
            format!("Barrier({parties}) with {} waiting, CPU over {window}", parties - 1),
            "barrier",
            2.0,
        ),
    ]
}
