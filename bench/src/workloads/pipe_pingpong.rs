//! `pipe_pingpong`: round trips with an echo child over a duplex pipe, of a small integer
//! (`send`/`recv`, encoded) and of 4 bytes (`send_bytes`/`recv_bytes`).
//!
//! - multiprocess: `pipe()` (a socket pair), echo child started by fork.
//! - CPython: `multiprocessing.Pipe()` (a socket pair too), echo child started by fork.
//! - limit: two raw `pipe(2)`s and `read`/`write` of 4 bytes with a raw fork child; a
//!   reference row does the same over a raw socket pair, the kernel object both libraries use.
//!
//! A blocking round trip wakes the other process twice, and on these virtual machines a
//! wake-up on another core costs far more than on the same one; so the main rows pin both
//! processes of every side to the same CPU, and (when there are two CPUs and this is not a
//! quick run) cross-core rows pin them to two different ones.

use super::{Config, Goal, PySide, Row, Side, Unit, placement_suffix, py_args};
use crate::limit::{self, Channel};
use crate::pin::{PinGuard, Placement, pin_to};
use multiprocess::{Connection, StartMethod, get_context, pipe};
use std::time::Instant;

pub const NAME: &str = "pipe_pingpong";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `send(&u64)` / `recv::<u64>()`.
    Typed,
    /// `send_bytes(&[u8; 4])` / `recv_bytes()`.
    Bytes,
}

fn child_pin(cpu: Option<usize>) -> multiprocess::Result<()> {
    if let Some(cpu) = cpu {
        pin_to(cpu)?;
    }
    Ok(())
}

/// Echo child for `send`/`recv`: `n` messages back as they came.
fn echo_typed(conn: Connection, n: u64, cpu: Option<usize>) -> multiprocess::Result<()> {
    child_pin(cpu)?;
    for _ in 0..n {
        let v: u64 = conn.recv()?;
        conn.send(&v)?;
    }
    Ok(())
}

/// Echo child for `send_bytes`/`recv_bytes`.
fn echo_bytes(conn: Connection, n: u64, cpu: Option<usize>) -> multiprocess::Result<()> {
    child_pin(cpu)?;
    for _ in 0..n {
        let b = conn.recv_bytes()?;
        conn.send_bytes(&b)?;
    }
    Ok(())
}

/// One round of the library's ping-pong: µs per round trip.
fn ours(kind: Kind, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _guard = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let e = |what: &'static str| move |err: multiprocess::Error| format!("{what}: {err}");
    let (conn, child_end) = pipe().map_err(e("pipe"))?;
    let total = u64::from(warmup + n);
    let ctx = get_context(StartMethod::Fork);
    let mut p = match kind {
        Kind::Typed => ctx.process(echo_typed, (child_end, total, Some(placement.child))),
        Kind::Bytes => ctx.process(echo_bytes, (child_end, total, Some(placement.child))),
    };
    p.start().map_err(e("start"))?;
    let exchange = |i: u32| -> Result<(), String> {
        match kind {
            Kind::Typed => {
                conn.send(&u64::from(i)).map_err(e("send"))?;
                let back: u64 = conn.recv().map_err(e("recv"))?;
                if back != u64::from(i) {
                    return Err(format!("echo mismatch: {i} came back as {back}"));
                }
            }
            Kind::Bytes => {
                let out = i.to_le_bytes();
                conn.send_bytes(&out).map_err(e("send_bytes"))?;
                let back = conn.recv_bytes().map_err(e("recv_bytes"))?;
                if back != out {
                    return Err(format!("echo mismatch: {out:?} came back as {back:?}"));
                }
            }
        }
        Ok(())
    };
    let mut result = (0..warmup).try_for_each(exchange);
    let t = Instant::now();
    if result.is_ok() {
        result = (0..n).try_for_each(exchange);
    }
    let elapsed = t.elapsed();
    drop(conn);
    let joined = p.join().map_err(e("join"));
    result?;
    joined?;
    match p.exitcode() {
        Some(0) => Ok(elapsed.as_secs_f64() * 1e6 / f64::from(n)),
        other => Err(format!("echo child exit code {other:?}")),
    }
}

fn py(kind: Kind, warmup: u32, n: u32, placement: Placement) -> PySide {
    let variant = if kind == Kind::Typed { "typed" } else { "bytes" };
    PySide::new("Pipe(), echo child by fork", py_args(NAME, variant, n, warmup, Some(placement)))
}

fn raw(channel: Channel, warmup: u32, n: u32, placement: Placement) -> Side {
    let label = match channel {
        Channel::Pipe => "raw pipe(2) ×2, read/write 4 bytes",
        Channel::SocketPair => "raw socketpair, read/write 4 bytes",
        Channel::TcpLoopback => "raw TCP over 127.0.0.1, read/write 4 bytes",
    };
    Side { label: label.into(), measure: Box::new(move || limit::pingpong(channel, warmup, n, Some(placement))) }
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for placement in cfg.placements() {
        let n = if placement.same_core() { cfg.iters(20_000, 2_000) } else { 5_000 };
        let where_ = placement.describe();
        let warmup = (n / 10).max(100);
        let suffix = placement_suffix(placement);
        for (kind, variant, id) in
            [(Kind::Typed, "send/recv u64", "typed"), (Kind::Bytes, "send_bytes/recv_bytes 4 B", "bytes")]
        {
            rows.push(Row {
                id: format!("{NAME}/{id}{suffix}"),
                workload: NAME,
                variant: format!("{variant}, {where_}"),
                unit: Unit::MicrosPerRoundTrip,
                placement: Some(placement),
                ours: Some(Side {
                    label: format!("pipe(), {variant}, echo child by fork"),
                    measure: Box::new(move || ours(kind, warmup, n, placement)),
                }),
                cpython: Some(py(kind, warmup, n, placement)),
                limit: Some(raw(Channel::Pipe, warmup, n, placement)),
                goal: placement.same_core().then_some(Goal::AtMostTimesLimit(1.3)),
                note: None,
            });
        }
        rows.push(Row {
            id: format!("{NAME}/raw-socketpair{suffix}"),
            workload: NAME,
            variant: format!("reference: raw socketpair 4 B, {where_}"),
            unit: Unit::MicrosPerRoundTrip,
            placement: Some(placement),
            ours: None,
            cpython: None,
            limit: Some(raw(Channel::SocketPair, warmup, n, placement)),
            goal: None,
            note: None,
        });
    }
    rows
}
