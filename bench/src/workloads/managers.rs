//! The manager workloads: a `SyncManager`'s server process started and shut down, and calls
//! on its proxies from the bench process.
//!
//! - `managers_start_shutdown`: `SyncManager::builder().start_method(m).start()` then
//!   `shutdown()`, per start method (CPython: `get_context(m).Manager()`, `shutdown()`). ms
//!   per start + shutdown. The limit: one process started and reaped, as in
//!   `process_start_join` (fork + `_exit` + `waitpid` from the bench process for fork and
//!   forkserver, `posix_spawn` of the bench binary exiting before `main` for spawn).
//! - `managers_dict`: `d.insert(k, v)` then `d.get(&k)` on `m.dict::<String, i64>()`, a short
//!   key (one of 16) and the loop counter as the value, checked (CPython: `d[k] = i; d[k]` on
//!   `Manager().dict()`). µs per set + get pair.
//! - `managers_queue`: `q.put(i)` then `q.get()` on `m.queue::<i64>()`, checked (CPython:
//!   `Manager().Queue()`). µs per put + get pair.
//! - `managers_lock`: `l.acquire()` then `l.release()` on `m.lock()` (CPython:
//!   `Manager().Lock()`); after the clock the lock must be free. µs per pair.
//!
//! Each pair is two requests and two replies between the bench process (the client) and the
//! manager's server process. The limit is two round trips of the mechanism our local clients
//! use, a futex ping-pong over shared memory that spins before it sleeps (unless the other
//! process last ran on this CPU), with a raw fork child placed as the row says; reference
//! rows give two round trips over a raw unix socket pair (the mechanism CPython's managers
//! use, and ours without the shared-memory mailbox).
//!
//! Placement: every row runs unpinned, and with both processes pinned to one CPU; the proxy
//! rows also (full runs, two CPUs or more) with the client on one CPU and the server on
//! another. The server is pinned by pid, every thread of it (`/proc/PID/task`): once after it
//! starts and again once the proxy's connection (and so the server thread that serves it)
//! exists, before the rest of the warm-up. Unpinned, the server's threads are given every
//! CPU this process may use (it may come from a fork server started by a pinned thread).
//! Pinned start rows pin the bench thread (fork and spawn children inherit it) and, under
//! forkserver, the fork server process for the row's duration (the manager's server is its
//! child and inherits it); it gets its CPU set back after.

use super::{Config, Goal, PySide, Row, Side, Unit, py_args};
use crate::limit::sync::{self as raw, WaitPolicy};
use crate::limit::{self, Channel, Spawnable};
use crate::pin::{PinGuard, Placement, ProcessPin, set_process_affinity};
use multiprocess::managers::SyncManager;
use multiprocess::{StartMethod, get_context, get_start_method};
use std::time::Instant;

pub const START: &str = "managers_start_shutdown";
pub const DICT: &str = "managers_dict";
pub const QUEUE: &str = "managers_queue";
pub const LOCK: &str = "managers_lock";
/// Reference rows: raw socket round trips.
pub const SOCKET: &str = "managers_socket";

/// The targets.
const START_FORKSERVER_MS: f64 = 2.0;
const PROXY_TIMES_CPYTHON: f64 = 4.0;

/// Round trips per measured pair of proxy calls.
const TRIPS: u32 = 2;

fn noop() {}

// ---------------------------------------------------------------------------------------
// Placing the processes

/// The fork server of this process (started if it is not running): the child of ours that
/// runs this binary in the fork server's role. The library does not say its pid, so it is
/// looked up in `/proc` (the parent in `stat`, the role in `environ`).
fn forkserver_pid() -> Result<i32, String> {
    if let Some(pid) = find_forkserver() {
        return Ok(pid);
    }
    let mut p = get_context(StartMethod::ForkServer).process(noop, ());
    p.start().map_err(|e| format!("start a forkserver process: {e}"))?;
    p.join().map_err(|e| format!("join: {e}"))?;
    find_forkserver().ok_or_else(|| "no fork server among this process's children".to_string())
}

fn find_forkserver() -> Option<i32> {
    let me = std::process::id() as i32;
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).find(|&pid| {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<i32>().ok()
        });
        ppid == Some(me)
            && std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v.starts_with(b"__MULTIPROCESS_ROLE=forkserver:")))
    })
}

/// The CPUs the server's threads get: the row's CPU, or every CPU this process may use.
pub(super) fn server_cpus(placement: Option<Placement>, allowed: &[usize]) -> Vec<usize> {
    placement.map_or_else(|| allowed.to_vec(), |p| vec![p.child])
}

pub(super) fn place_server(m: &SyncManager, cpus: &[usize]) -> Result<(), String> {
    let pid = m.pid().ok_or("the manager's server has no pid")? as i32;
    set_process_affinity(pid, &crate::pin::cpu_set(cpus)).map(drop).map_err(|e| format!("pin the server {pid}: {e}"))
}

pub(super) fn placement_id(placement: Option<Placement>) -> &'static str {
    match placement {
        None => "unpinned",
        Some(p) if p.same_core() => "same-core",
        Some(_) => "cross-core",
    }
}

// ---------------------------------------------------------------------------------------
// managers_start_shutdown

/// One round of start + shutdown under `method`: ms per manager. `cpu`: the CPU every
/// process involved is pinned to.
fn start_ours(method: StartMethod, warmup: u32, n: u32, cpu: Option<usize>, allowed: &[usize]) -> Result<f64, String> {
    let _pin = PinGuard::pin(cpu).map_err(|e| format!("pin: {e}"))?;
    let _server_pin = if method == StartMethod::ForkServer {
        let cpus = cpu.map_or_else(|| allowed.to_vec(), |c| vec![c]);
        let pid = forkserver_pid()?;
        Some(ProcessPin::new(pid, &cpus).map_err(|e| format!("pin the fork server {pid}: {e}"))?)
    } else {
        None
    };
    let one = |check: bool| -> Result<(), String> {
        let m = SyncManager::builder().start_method(method).start().map_err(|e| format!("start: {e}"))?;
        if check {
            // The server serves, and the one asked to stop is gone after.
            let objects = m.number_of_objects().map_err(|e| format!("number_of_objects: {e}"));
            if objects != Ok(0) {
                return Err(format!("a new manager holds {objects:?} objects"));
            }
        }
        m.shutdown().map_err(|e| format!("shutdown: {e}"))?;
        if m.pid().is_some() {
            return Err("the server still runs after shutdown".into());
        }
        Ok(())
    };
    for _ in 0..warmup {
        one(true)?;
    }
    let t = Instant::now();
    for _ in 0..n {
        one(false)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(n))
}

/// One round of the limit: one process started and reaped per manager. µs per process,
/// given in ms.
fn start_limit(method: StartMethod, warmup: u32, n: u32, cpu: Option<usize>) -> Result<f64, String> {
    let _pin = PinGuard::pin(cpu).map_err(|e| format!("pin: {e}"))?;
    let us = match method {
        StartMethod::Spawn => {
            let me = Spawnable::this_binary()?;
            me.spawn_waitpid(warmup)?;
            me.spawn_waitpid(n)?
        }
        _ => {
            limit::fork_waitpid(warmup)?;
            limit::fork_waitpid(n)?
        }
    };
    Ok(us / 1e3)
}

fn start_rows(cfg: &Config) -> Vec<Row> {
    let allowed = cfg.cpus.clone();
    let mut rows = Vec::new();
    let mut placements = vec![None];
    placements.extend(cfg.cpus.first().map(|&c| Some(Placement { parent: c, child: c })));
    for method in [StartMethod::Fork, StartMethod::ForkServer, StartMethod::Spawn] {
        let (ours_n, py_n, limit_n) = match method {
            StartMethod::Fork => (cfg.iters(30, 3), cfg.iters(10, 2), cfg.iters(30, 3)),
            StartMethod::ForkServer => (cfg.iters(30, 3), cfg.iters(10, 2), cfg.iters(30, 3)),
            StartMethod::Spawn => (cfg.iters(10, 2), cfg.iters(4, 1), cfg.iters(10, 2)),
        };
        let warmup = 1;
        for &placement in &placements {
            let cpu = placement.map(|p| p.parent);
            let (where_, pinned_how) = match cpu {
                None => ("unpinned".to_string(), String::new()),
                Some(c) => (
                    format!("everything pinned to CPU {c}"),
                    format!(
                        ", pinned to CPU {c}{}",
                        if method == StartMethod::ForkServer { " with the fork server" } else { "" }
                    ),
                ),
            };
            let limit_label = match method {
                StartMethod::Spawn => "posix_spawn of the bench binary, exiting before main, + waitpid",
                _ => "fork + _exit + waitpid, from the bench process",
            };
            let allowed = allowed.clone();
            rows.push(Row {
                id: format!("{START}/{method}-{}", placement_id(placement)),
                workload: START,
                variant: format!("start + shutdown, {method}, {where_}"),
                unit: Unit::Millis,
                placement,
                ours: Some(Side {
                    label: format!("SyncManager::builder().start_method({method}).start(), shutdown(){pinned_how}"),
                    measure: Box::new(move || start_ours(method, warmup, ours_n, cpu, &allowed)),
                }),
                cpython: Some(PySide::new(
                    format!("{method}: get_context('{method}').Manager(), shutdown()"),
                    py_args(START, &method.to_string(), py_n, warmup, placement),
                )),
                limit: Some(Side {
                    label: format!("{limit_label}{}", if cpu.is_some() { ", pinned" } else { "" }),
                    measure: Box::new(move || start_limit(method, warmup, limit_n, cpu)),
                }),
                goal: (method == StartMethod::ForkServer).then_some(Goal::AtMost(START_FORKSERVER_MS)),
                note: (method == StartMethod::Fork && placement.is_none()).then(|| {
                    format!(
                        "A manager's server process started (it binds a fresh unix socket and sends its \
                         address back) and shut down (a shutdown request, then the server joined), one after \
                         the other; a first untimed manager per round is asked how many objects it holds (under \
                         forkserver, the fork server runs before the clock). Pinned rows pin the bench thread, \
                         and under forkserver the fork server too, so the server starts on that CPU (CPython: \
                         the script pins itself first, and its fork server and managers inherit it). The limit \
                         is starting and reaping the one process, as in process_start_join. Target: forkserver \
                         ≤ {START_FORKSERVER_MS} ms."
                    )
                }),
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------
// managers_dict, managers_queue, managers_lock

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dict,
    Queue,
    Lock,
}

impl Kind {
    fn workload(self) -> &'static str {
        match self {
            Kind::Dict => DICT,
            Kind::Queue => QUEUE,
            Kind::Lock => LOCK,
        }
    }

    fn py_variant(self) -> &'static str {
        match self {
            Kind::Dict => "dict",
            Kind::Queue => "queue",
            Kind::Lock => "lock",
        }
    }
}

/// Runs `op(i)` for `i` in `0..warmup` (placing the server again halfway, once the proxy's
/// connection and its server thread exist), then `0..n` on the clock: µs per op.
fn timed(
    warmup: u32,
    n: u32,
    mut place: impl FnMut() -> Result<(), String>,
    mut op: impl FnMut(i64) -> Result<(), String>,
) -> Result<f64, String> {
    let half = warmup / 2;
    (0..half).try_for_each(|i| op(i64::from(i)))?;
    place()?;
    (half..warmup).try_for_each(|i| op(i64::from(i)))?;
    let t = Instant::now();
    (0..n).try_for_each(|i| op(i64::from(i)))?;
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

/// One round of a proxy row: a manager started (default start method) and placed, a proxy,
/// `warmup` untimed pairs, `n` timed: µs per pair. The manager is shut down after, whatever
/// happened.
fn proxy_ours(kind: Kind, warmup: u32, n: u32, placement: Option<Placement>, allowed: &[usize]) -> Result<f64, String> {
    let _pin = PinGuard::pin(placement.map(|p| p.parent)).map_err(|e| format!("pin: {e}"))?;
    let m = multiprocess::manager().map_err(|e| format!("manager(): {e}"))?;
    let cpus = server_cpus(placement, allowed);
    let run = || -> Result<f64, String> {
        let place = || place_server(&m, &cpus);
        place()?;
        let e = |what: &'static str| move |err: multiprocess::Error| format!("{what}: {err}");
        match kind {
            Kind::Dict => {
                let d = m.dict::<String, i64>().map_err(e("dict"))?;
                let keys: Vec<String> = (0..16).map(|k| format!("key-{k}")).collect();
                timed(warmup, n, place, |i| {
                    let k = &keys[(i & 15) as usize];
                    d.insert(k.clone(), i).map_err(e("insert"))?;
                    match d.get(k).map_err(e("get"))? {
                        Some(v) if v == i => Ok(()),
                        other => Err(format!("d[{k:?}] read back {other:?}, set {i}")),
                    }
                })
            }
            Kind::Queue => {
                let q = m.queue::<i64>().map_err(e("queue"))?;
                let us = timed(warmup, n, place, |i| {
                    q.put(i).map_err(|err| format!("put: {err}"))?;
                    match q.get().map_err(e("get"))? {
                        v if v == i => Ok(()),
                        v => Err(format!("got {v}, put {i}")),
                    }
                })?;
                match q.qsize().map_err(e("qsize"))? {
                    0 => Ok(us),
                    left => Err(format!("{left} items left in the queue")),
                }
            }
            Kind::Lock => {
                let l = m.lock().map_err(e("lock"))?;
                let us = timed(warmup, n, place, |_| {
                    l.acquire().map_err(e("acquire"))?;
                    l.release().map_err(e("release"))
                })?;
                // Free after the last release, and really exclusive.
                if !l.try_acquire().map_err(e("try_acquire"))? {
                    return Err("the lock is held after the last release".into());
                }
                if l.try_acquire().map_err(e("try_acquire"))? {
                    return Err("the lock was acquired twice".into());
                }
                l.release().map_err(e("release"))?;
                Ok(us)
            }
        }
    };
    let result = run();
    let shut = m.shutdown().map_err(|e| format!("shutdown: {e}"));
    let us = result?;
    shut?;
    Ok(us)
}

/// [`TRIPS`] round trips per pair, through a raw futex ping-pong or (`socket`) a raw unix
/// socket pair, placed as the row says: µs per pair.
fn trips_limit(socket: bool, warmup: u32, n: u32, placement: Option<Placement>) -> Result<f64, String> {
    let per_trip = if socket {
        limit::pingpong(Channel::SocketPair, warmup, TRIPS * n, placement)?
    } else {
        raw::futex_pingpong_placed(WaitPolicy::SpinUnlessSameCpu, warmup, TRIPS * n, placement)?
    };
    Ok(per_trip * f64::from(TRIPS))
}

pub(super) fn where_text(placement: Option<Placement>) -> String {
    match placement {
        None => "unpinned".into(),
        Some(p) if p.same_core() => format!("client and server pinned to CPU {}", p.parent),
        Some(p) => format!("client pinned to CPU {}, server to CPU {}", p.parent, p.child),
    }
}

fn proxy_rows(cfg: &Config) -> Vec<Row> {
    let method = get_start_method();
    let n = cfg.iters(10_000, 300);
    let warmup = cfg.iters(200, 40);
    let py_n = cfg.iters(2_000, 100);
    let py_warmup = cfg.iters(100, 20);
    let mut placements: Vec<Option<Placement>> = vec![None];
    placements.extend(cfg.placements().into_iter().map(Some));
    let mut rows = Vec::new();
    for kind in [Kind::Dict, Kind::Queue, Kind::Lock] {
        let (variant, ours_call, py_call) = match kind {
            Kind::Dict => (
                "d[k] = v; d[k]",
                "m.dict::<String, i64>(), insert(k, v) + get(&k)",
                "Manager().dict(), d[k] = v; d[k]",
            ),
            Kind::Queue => {
                ("q.put(x); q.get()", "m.queue::<i64>(), put(x) + get()", "Manager().Queue(), put(x); get()")
            }
            Kind::Lock => (
                "l.acquire(); l.release()",
                "m.lock(), acquire() + release()",
                "Manager().Lock(), acquire(); release()",
            ),
        };
        for &placement in &placements {
            let allowed = cfg.cpus.clone();
            let where_ = where_text(placement);
            let pinned = if placement.is_some() { ", server pinned by pid" } else { "" };
            rows.push(Row {
                id: format!("{}/{}", kind.workload(), placement_id(placement)),
                workload: kind.workload(),
                variant: format!("{variant}, {where_}"),
                unit: Unit::MicrosPerPair,
                placement,
                ours: Some(Side {
                    label: format!("manager() ({method}){pinned}, {ours_call}"),
                    measure: Box::new(move || proxy_ours(kind, warmup, n, placement, &allowed)),
                }),
                cpython: Some(PySide::new(
                    format!("get_context('forkserver').Manager(){pinned}, {py_call}"),
                    py_args("managers_proxy", kind.py_variant(), py_n, py_warmup, placement),
                )),
                limit: Some(Side {
                    label: format!(
                        "futex ping-pong ×{TRIPS} round trips in a MAP_SHARED page with a raw fork child ({}), {}",
                        WaitPolicy::SpinUnlessSameCpu.describe(),
                        if placement.is_none() { "unpinned" } else { "placed the same" }
                    ),
                    measure: Box::new(move || trips_limit(false, warmup, n, placement)),
                }),
                goal: Some(Goal::FasterThanCPython(PROXY_TIMES_CPYTHON)),
                note: (kind == Kind::Dict && placement.is_none()).then(|| {
                    format!(
                        "Proxy rows: the bench process is the client, the manager's server process (started \
                         before the clock with the default start method; CPython's with forkserver too) serves \
                         it, and each pair is two requests and two replies. Ours go through the connection's \
                         shared-memory mailbox (futex words), CPython's through a unix socket. Pinned rows pin \
                         the bench thread and every thread of the server by pid, once after the start and again \
                         once the proxy's connection exists; unpinned, the server's threads get every CPU. Values \
                         read back are checked; the queue must be empty and the lock free after the clock. The \
                         limit is {TRIPS} round trips of a raw futex ping-pong over shared memory, placed the same \
                         (managers_socket: {TRIPS} round trips over a raw unix socket pair, the mechanism of \
                         CPython's managers, cost more). Target: every pair ≥ {PROXY_TIMES_CPYTHON}× faster than \
                         CPython, in every placement."
                    )
                }),
            });
        }
    }
    for &placement in &placements {
        rows.push(Row {
            id: format!("{SOCKET}/raw-socketpair-{}", placement_id(placement)),
            workload: SOCKET,
            variant: format!("reference: {TRIPS} round trips of 4 B over a raw socketpair, {}", where_text(placement)),
            unit: Unit::MicrosPerPair,
            placement,
            ours: None,
            cpython: None,
            limit: Some(Side {
                label: format!(
                    "raw AF_UNIX socketpair, read/write 4 bytes, ×{TRIPS}, {}",
                    if placement.is_none() { "unpinned" } else { "placed the same" }
                ),
                measure: Box::new(move || trips_limit(true, warmup, n, placement)),
            }),
            goal: None,
            note: None,
        });
    }
    rows
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let mut rows = start_rows(cfg);
    rows.extend(proxy_rows(cfg));
    rows
}
