//! The remote manager workloads: a `SyncManager` serving a queue on a TCP address
//! (127.0.0.1, a free port) with an authkey, and clients that know only the address and the
//! key (`managers::connect`), as in CPython's documentation (the remote queue of
//! `multiprocessing.managers`).
//!
//! - `managers_remote/put_get`: the bench process, connected with `connect(address, key)`
//!   (not the owner's handle), does `q.put(i)` then `q.get()` on the shared queue, checked
//!   (CPython: a `BaseManager` subclass with `register('get_queue', callable=...)` started on
//!   `('127.0.0.1', 0)`, a second instance `connect()`ed, `get_queue()`, `put(i); get()`).
//!   µs per pair. Over TCP there is no shared-memory mailbox: each call is a request and a
//!   reply over the socket, so the limit is two round trips of 4 bytes over a raw TCP
//!   loopback connection, placed the same.
//! - `managers_remote/4_clients`: 4 client processes (started by fork, not timed), each
//!   connected by address and key, each put `N` items into the one queue while the bench
//!   process (connected too) gets all `4N`; every item is checked (each client's arrive in
//!   order, none missing). Items per second. No limit: one raw TCP round trip per item is no
//!   bound here (with every CPU busy, the wake-ups it pays from idle are cheaper), and a raw
//!   server with a queue would be a program of its own; the ratio that tells is CPython's.
//!
//! The server is started with the default start method (CPython's with forkserver, as in
//! the other manager rows), before the clock, and shut down after it, whatever happened.
//! Placement: `put_get` as the proxy rows (unpinned, client and server on one CPU, and in
//! full runs client and server on two CPUs); `4_clients` unpinned and with every process on
//! one CPU. The server is pinned by pid, every thread of it, once after it starts and again
//! once the measured connections exist (after the first half of the warm-up, or once every
//! client waits at the start gate).

use super::managers::{place_server, placement_id, server_cpus, where_text};
use super::partner::{Watchdog, join_ok};
use super::{Config, PySide, Row, Side, Unit, py_args};
use crate::limit::ring::{InOrder, seq_of};
use crate::limit::{self, Channel, child_running};
use crate::pin::{PinGuard, Placement, pin_to};
use crate::shm::{Gate, SharedMap};
use multiprocess::managers::{QueueProxy, SyncManager, connect};
use multiprocess::{Address, Process, StartMethod, get_context, get_start_method};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Instant;

pub const NAME: &str = "managers_remote";

/// The key every client proves it holds.
const AUTHKEY: &[u8] = b"multiprocess-bench";
/// The name the queue is shared under.
const SHARED_AS: &str = "queue";
/// Round trips per measured `put_get` pair.
const TRIPS: u32 = 2;
/// Client processes of `4_clients`.
const CLIENTS: usize = 4;

/// A started remote manager (the owner's handle) serving a queue, and its TCP address.
struct Served {
    owner: SyncManager,
    address: SocketAddr,
}

impl Served {
    fn start() -> Result<Served, String> {
        let owner = SyncManager::builder()
            .address(([127, 0, 0, 1], 0))
            .authkey(AUTHKEY)
            .start()
            .map_err(|e| format!("start the remote manager: {e}"))?;
        let address = match owner.address() {
            Address::Tcp(a) => *a,
            other => {
                let _ = owner.shutdown();
                return Err(format!("the manager listens on {other}, not on TCP"));
            }
        };
        let shared = owner.queue::<i64>().and_then(|q| owner.share(SHARED_AS, &q));
        if let Err(e) = shared {
            let _ = owner.shutdown();
            return Err(format!("share the queue: {e}"));
        }
        Ok(Served { owner, address })
    }

    /// Runs `f`, then shuts the server down (also when `f` failed) and checks that it is gone.
    fn run<T>(self, f: impl FnOnce(&Served) -> Result<T, String>) -> Result<T, String> {
        let result = f(&self);
        let shut = self.owner.shutdown().map_err(|e| format!("shutdown: {e}"));
        let gone: Result<(), String> =
            if self.owner.pid().is_some() { Err("the server still runs after shutdown".into()) } else { Ok(()) };
        let value = result?;
        shut?;
        gone?;
        Ok(value)
    }
}

/// A client of the server at `address`, as another program would make it: `connect` with
/// the key, then the shared queue by name.
fn client(address: SocketAddr) -> Result<(SyncManager, QueueProxy<i64>), String> {
    let m = connect(address, AUTHKEY).map_err(|e| format!("connect to {address}: {e}"))?;
    let q = m.get::<QueueProxy<i64>>(SHARED_AS).map_err(|e| format!("get({SHARED_AS:?}): {e}"))?;
    Ok((m, q))
}

fn left_empty(q: &QueueProxy<i64>) -> Result<(), String> {
    match q.qsize().map_err(|e| format!("qsize: {e}"))? {
        0 => Ok(()),
        left => Err(format!("{left} items left in the queue")),
    }
}

// ---------------------------------------------------------------------------------------
// put_get

/// One round of `put_get`: a remote manager started and placed, the bench connected by
/// address and key, `warmup` untimed pairs (the server placed again halfway, once the
/// connection and the server thread serving it exist), `n` timed: µs per pair.
fn put_get_ours(warmup: u32, n: u32, placement: Option<Placement>, allowed: &[usize]) -> Result<f64, String> {
    let _pin = PinGuard::pin(placement.map(|p| p.parent)).map_err(|e| format!("pin: {e}"))?;
    let cpus = server_cpus(placement, allowed);
    Served::start()?.run(|s| {
        let place = || place_server(&s.owner, &cpus);
        place()?;
        let (_client, q) = client(s.address)?;
        let op = |i: u32| -> Result<(), String> {
            let i = i64::from(i);
            q.put(i).map_err(|e| format!("put: {e}"))?;
            match q.get().map_err(|e| format!("get: {e}"))? {
                v if v == i => Ok(()),
                v => Err(format!("got {v}, put {i}")),
            }
        };
        (0..warmup / 2).try_for_each(op)?;
        place()?;
        (warmup / 2..warmup).try_for_each(op)?;
        let t = Instant::now();
        (0..n).try_for_each(op)?;
        let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        left_empty(&q)?;
        Ok(us)
    })
}

/// [`TRIPS`] raw TCP loopback round trips per pair, placed as the row says: µs per pair.
fn put_get_limit(warmup: u32, n: u32, placement: Option<Placement>) -> Result<f64, String> {
    Ok(limit::pingpong(Channel::TcpLoopback, warmup, TRIPS * n, placement)? * f64::from(TRIPS))
}

// ---------------------------------------------------------------------------------------
// 4_clients

/// A client process's orders.
#[derive(Serialize, Deserialize)]
struct Job {
    address: SocketAddr,
    /// The start gate (a `SharedMap<Gate>` of the parent).
    gate: usize,
    index: usize,
    warmup: u32,
    n: u32,
    cpu: Option<usize>,
}

/// A client process: connects by address and key, puts `warmup` items, waits at the gate,
/// puts `n` more. Items name the client and their number (`seq_of`).
fn putter(job: Job) -> Result<(), String> {
    if let Some(cpu) = job.cpu {
        pin_to(cpu).map_err(|e| format!("pin: {e}"))?;
    }
    // SAFETY: a plain system call on this process: a client left waiting dies with the bench.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: the parent made the mapping before it forked this child (fork start method:
    // same address space layout) and keeps it mapped until it has joined this child.
    let gate = unsafe { SharedMap::<Gate>::at(job.gate) };
    let (_client, q) = client(job.address)?;
    let put = |from: u32, count: u32| -> Result<(), String> {
        for i in from..from + count {
            q.put(seq_of(job.index, u64::from(i)) as i64).map_err(|e| format!("put: {e}"))?;
        }
        Ok(())
    };
    put(0, job.warmup)?;
    if !gate.arrive() {
        return Ok(()); // the parent gave up
    }
    let result = put(job.warmup, job.n);
    gate.finish();
    result
}

/// One round of `4_clients`: items per second, from the opening of the gate to the last
/// `get`. `cpu`: where every process runs (the bench thread, the server, the clients).
fn clients_ours(warmup: u32, n: u32, cpu: Option<usize>, allowed: &[usize]) -> Result<f64, String> {
    let _pin = PinGuard::pin(cpu).map_err(|e| format!("pin: {e}"))?;
    let cpus = cpu.map_or_else(|| allowed.to_vec(), |c| vec![c]);
    Served::start()?.run(|s| {
        place_server(&s.owner, &cpus)?;
        let (_client, q) = client(s.address)?;
        let gate = SharedMap::<Gate>::new().map_err(|e| format!("mmap: {e}"))?;
        let ctx = get_context(StartMethod::Fork);
        let mut procs: Vec<Process> = Vec::new();
        let mut started = Ok(());
        for index in 0..CLIENTS {
            let job = Job { address: s.address, gate: gate.addr(), index, warmup, n, cpu };
            let mut p = ctx.process(putter, (job,));
            if let Err(e) = p.start() {
                started = Err(format!("start a client: {e}"));
                break;
            }
            procs.push(p);
        }
        // A client that fails would leave the bench in `get` for ever: its watchdog then
        // puts an item no client puts, which fails the check.
        let dogs: Result<Vec<Watchdog>, String> = started.and_then(|()| {
            procs
                .iter()
                .map(|p| {
                    let q = q.clone();
                    Watchdog::start(p, move || {
                        let _ = q.put(-1);
                    })
                })
                .collect()
        });
        let pids: Vec<libc::pid_t> = procs.iter().filter_map(|p| p.pid()).map(|pid| pid as libc::pid_t).collect();
        let mut order = InOrder::new(CLIENTS);
        let mut take = |count: u64| -> Result<(), String> {
            for _ in 0..count {
                let item = q.get().map_err(|e| format!("get: {e}"))?;
                if item < 0 || !order.see(item as u64) {
                    return Err(format!("item {item} came out of order (or a client failed: -1)"));
                }
            }
            Ok(())
        };
        let k = CLIENTS as u64;
        let mut run = |dogs: &Result<Vec<Watchdog>, String>| -> Result<f64, String> {
            dogs.as_ref().map_err(Clone::clone)?;
            take(k * u64::from(warmup))?;
            gate.wait_ready(CLIENTS as u32, || pids.iter().all(|&pid| child_running(pid)))?;
            // Every connection and the server thread serving it exist now.
            place_server(&s.owner, &cpus)?;
            let t = Instant::now();
            gate.open();
            take(k * u64::from(n))?;
            Ok((k * u64::from(n)) as f64 / t.elapsed().as_secs_f64())
        };
        let result = run(&dogs);
        drop(dogs);
        if result.is_err() {
            gate.abort();
            for p in &mut procs {
                let _ = p.kill();
            }
        }
        let joined: Result<(), String> = procs.iter_mut().map(join_ok).collect::<Vec<_>>().into_iter().collect();
        let rate = match (result, joined) {
            (Ok(rate), Ok(())) => rate,
            (Err(e), Err(client)) => return Err(format!("{e}; {client}")),
            (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
        };
        left_empty(&q)?;
        Ok(rate)
    })
}

// ---------------------------------------------------------------------------------------
// Rows

fn put_get_rows(cfg: &Config) -> Vec<Row> {
    let method = get_start_method();
    let n = cfg.iters(10_000, 300);
    let warmup = cfg.iters(200, 40);
    let py_n = cfg.iters(2_000, 100);
    let py_warmup = cfg.iters(100, 20);
    let mut placements: Vec<Option<Placement>> = vec![None];
    placements.extend(cfg.placements().into_iter().map(Some));
    let mut rows = Vec::new();
    for placement in placements {
        let allowed = cfg.cpus.clone();
        let pinned = if placement.is_some() { ", server pinned by pid" } else { "" };
        rows.push(Row {
            id: format!("{NAME}/put_get-{}", placement_id(placement)),
            workload: NAME,
            variant: format!("q.put(x); q.get() over TCP 127.0.0.1, {}", where_text(placement)),
            unit: Unit::MicrosPerPair,
            placement,
            ours: Some(Side {
                label: format!(
                    "SyncManager::builder().address(127.0.0.1:0).authkey(..).start() ({method}){pinned}; \
                     connect(address, key), get::<QueueProxy<i64>>(..), put(x) + get()"
                ),
                measure: Box::new(move || put_get_ours(warmup, n, placement, &allowed)),
            }),
            cpython: Some(PySide::new(
                format!(
                    "BaseManager subclass, register('get_queue', callable=...), start() on ('127.0.0.1', 0) \
                     (forkserver){pinned}; a second one connect()ed, get_queue(), put(x); get()"
                ),
                py_args(NAME, "put_get", py_n, py_warmup, placement),
            )),
            limit: Some(Side {
                label: format!(
                    "raw TCP over 127.0.0.1 (TCP_NODELAY), read/write 4 bytes, ×{TRIPS} round trips, with a raw fork \
                     child, {}",
                    if placement.is_none() { "unpinned" } else { "placed the same" }
                ),
                measure: Box::new(move || put_get_limit(warmup, n, placement)),
            }),
            goal: None,
            note: placement.is_none().then(|| {
                "Remote manager rows: the server listens on 127.0.0.1 (a free port) with an authkey and shares one \
                 queue by name; clients know only the address and the key (ours: managers::connect, then get by \
                 name; CPython: a BaseManager subclass connect()ed, get_queue()). Over TCP there is no shared-memory \
                 mailbox, so every call is a request and a reply over the socket (TCP_NODELAY on both sides). \
                 put_get: the bench process is the client, placed as the proxy rows; limit: two raw TCP round trips. \
                 4_clients: 4 client processes (fork, not timed) each put N items while the bench process gets 4N, \
                 timed from a start gate to the last get, each client's items checked in order, no limit column."
                    .to_string()
            }),
        });
    }
    rows
}

fn clients_rows(cfg: &Config) -> Vec<Row> {
    let method = get_start_method();
    let n = cfg.iters(2_500, 100);
    let warmup = cfg.iters(50, 10);
    let items = n * CLIENTS as u32;
    let mut cpus: Vec<Option<usize>> = vec![None];
    cpus.extend(cfg.cpus.first().map(|&c| Some(c)));
    let mut rows = Vec::new();
    for cpu in cpus {
        let allowed = cfg.cpus.clone();
        let (id, where_) = match cpu {
            None => ("unpinned".to_string(), "unpinned".to_string()),
            Some(c) => ("one-cpu".to_string(), format!("every process pinned to CPU {c}")),
        };
        let placement = cpu.map(|c| Placement { parent: c, child: c });
        let mut args = py_args(NAME, "4_clients", n, warmup, placement);
        args.extend(["--clients".into(), CLIENTS.to_string()]);
        rows.push(Row {
            id: format!("{NAME}/4_clients-{id}"),
            workload: NAME,
            variant: format!("{CLIENTS} clients × {n} put, the bench gets {items}, over TCP 127.0.0.1, {where_}"),
            unit: Unit::MessagesPerSec,
            placement,
            ours: Some(Side {
                label: format!(
                    "server ({method}) on 127.0.0.1:0; {CLIENTS} fork children each connect(address, key) and put(seq); \
                     the bench, connected too, get()s"
                ),
                measure: Box::new(move || clients_ours(warmup, n, cpu, &allowed)),
            }),
            cpython: Some(PySide::new(
                format!(
                    "BaseManager server (forkserver) on ('127.0.0.1', 0); {CLIENTS} fork children each connect() and \
                     put(i); the script, connected too, get()s"
                ),
                args,
            )),
            limit: None,
            goal: None,
            note: None,
        });
    }
    rows
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let mut rows = put_get_rows(cfg);
    rows.extend(clients_rows(cfg));
    rows
}
