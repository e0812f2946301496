//! `pipe_bulk`: large messages one way through a duplex pipe, `send_bytes` in the parent and
//! `recv_bytes` in a child, which answers one byte after the last message: GB/s of payload.
//!
//! - multiprocess: `pipe()` (two pipes), child started by fork.
//! - CPython: `multiprocessing.Pipe()` (a socket pair), child started by fork.
//! - limit: a raw pipe sized as large as an unprivileged process may make it
//!   (`/proc/sys/fs/pipe-max-size`, at most 1 MiB), `write` of each message and `read` into
//!   one reused buffer; reference rows do the same over a raw pipe of the default 64 KiB and
//!   over a raw socket pair (the default buffer sizes, CPython's kernel object).
//!
//! Both processes are pinned, to two CPUs when there are two: a copy in, a copy out, each
//! side on its own core, is what a bulk transfer between processes does.

use super::{Config, PySide, Row, Side, Unit, py_args};
use crate::limit::{fork_child, kill_and_reap, os_err, reap};
use crate::pin::{PinGuard, Placement, pin_to};
use multiprocess::{Connection, StartMethod, get_context, pipe};
use std::time::Instant;

pub const NAME: &str = "pipe_bulk";

/// Receives `n` messages of `size` bytes, then answers one byte.
fn receiver(conn: Connection, n: u64, size: usize, cpu: usize) -> multiprocess::Result<()> {
    pin_to(cpu)?;
    for _ in 0..n {
        let got = conn.recv_bytes()?;
        if got.len() != size {
            return Err(multiprocess::Error::Codec(format!("got {} bytes, expected {size}", got.len())));
        }
    }
    conn.send_bytes(b"k")
}

/// One round of the library's transfer: GB/s.
fn ours(size: usize, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _guard = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let e = |what: &'static str| move |err: multiprocess::Error| format!("{what}: {err}");
    let (conn, child_end) = pipe().map_err(e("pipe"))?;
    let mut p =
        get_context(StartMethod::Fork).process(receiver, (child_end, u64::from(warmup + n), size, placement.child));
    p.start().map_err(e("start"))?;
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut result = (0..warmup).try_for_each(|_| conn.send_bytes(&payload)).map_err(e("send_bytes"));
    let t = Instant::now();
    if result.is_ok() {
        result = (0..n).try_for_each(|_| conn.send_bytes(&payload)).map_err(e("send_bytes"));
    }
    if result.is_ok() {
        result = conn.recv_bytes().map(drop).map_err(e("recv_bytes"));
    }
    let elapsed = t.elapsed();
    drop(conn);
    let joined = p.join().map_err(e("join"));
    result?;
    joined?;
    match p.exitcode() {
        Some(0) => Ok(size as f64 * f64::from(n) / elapsed.as_secs_f64() / 1e9),
        other => Err(format!("receiver exit code {other:?}")),
    }
}

#[derive(Clone, Copy)]
enum Raw {
    /// A pipe of `pipe-max-size` (at most 1 MiB).
    BigPipe,
    /// A pipe of the default size.
    Pipe,
    /// A socket pair of the default buffer sizes.
    SocketPair,
}

/// The largest pipe an unprivileged process may make, at most 1 MiB.
fn pipe_max() -> usize {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok().and_then(|s| s.trim().parse().ok());
    max.unwrap_or(1 << 20).min(1 << 20)
}

fn write_all(fd: libc::c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is live for the call; write only reads it.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

fn read_all(fd: libc::c_int, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: `buf[done..]` is live and writable for the call.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// The same transfer with raw syscalls: `(fd the parent writes, fd the child reads, fd the
/// child answers on, fd the parent reads the answer from)`.
fn raw(kind: Raw, size: usize, warmup: u32, n: u32, placement: Placement) -> Result<f64, String> {
    let _guard = PinGuard::pin(Some(placement.parent)).map_err(|e| format!("pin: {e}"))?;
    let (p_wr, c_rd, c_wr, p_rd, all) = match kind {
        Raw::BigPipe | Raw::Pipe => {
            let mut down = [0; 2];
            let mut up = [0; 2];
            // SAFETY: each array has room for the two descriptors pipe2 returns.
            unsafe {
                if libc::pipe2(down.as_mut_ptr(), libc::O_CLOEXEC) != 0
                    || libc::pipe2(up.as_mut_ptr(), libc::O_CLOEXEC) != 0
                {
                    return Err(os_err("pipe2"));
                }
                if matches!(kind, Raw::BigPipe) {
                    libc::fcntl(down[1], libc::F_SETPIPE_SZ, pipe_max() as libc::c_int);
                }
            }
            (down[1], down[0], up[1], up[0], vec![down[0], down[1], up[0], up[1]])
        }
        Raw::SocketPair => {
            let mut sv = [0; 2];
            // SAFETY: room for the two descriptors socketpair returns.
            if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }
                != 0
            {
                return Err(os_err("socketpair"));
            }
            (sv[0], sv[1], sv[1], sv[0], vec![sv[0], sv[1]])
        }
    };
    let close_all = || {
        for &fd in &all {
            // SAFETY: our own descriptors, closed once.
            unsafe { libc::close(fd) };
        }
    };
    let total = u64::from(warmup + n);
    // Made before the fork: the child may not allocate.
    let mut inbox = vec![0u8; size + 4];
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let header = (size as i32).to_be_bytes();
    let pid = fork_child(Some(placement.child), || {
        for _ in 0..total {
            if !read_all(c_rd, &mut inbox) {
                return false;
            }
        }
        write_all(c_wr, b"k")
    });
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            close_all();
            return Err(e);
        }
    };
    let send = |_| write_all(p_wr, &header) && write_all(p_wr, &payload);
    let mut ok = (0..warmup).all(send);
    let t = Instant::now();
    ok = ok && (0..n).all(send) && read_all(p_rd, &mut [0u8; 1]);
    let elapsed = t.elapsed();
    close_all();
    if !ok {
        kill_and_reap(pid);
        return Err(os_err("raw transfer"));
    }
    reap(pid)?;
    Ok(size as f64 * f64::from(n) / elapsed.as_secs_f64() / 1e9)
}

pub fn rows(cfg: &Config) -> Vec<Row> {
    let Some(placement) = cfg.two_cpus() else { return Vec::new() };
    let where_ = placement.describe();
    let mut rows = Vec::new();
    // About 256 MiB a round (32 MiB in a quick run).
    for (size, id, n, quick) in [(1usize << 20, "1MiB", 256, 32), (64 << 20, "64MiB", 4, 1)] {
        let n = cfg.iters(n, quick);
        let warmup = (n / 8).max(1);
        let raw_side =
            |kind: Raw, label: String| Side { label, measure: Box::new(move || raw(kind, size, warmup, n, placement)) };
        rows.push(Row {
            id: format!("{NAME}/{id}"),
            workload: NAME,
            variant: format!("send_bytes/recv_bytes {id}, {where_}"),
            unit: Unit::GBPerSec,
            placement: Some(placement),
            ours: Some(Side {
                label: format!("pipe(), send_bytes {id}, receiver by fork"),
                measure: Box::new(move || ours(size, warmup, n, placement)),
            }),
            cpython: Some(PySide::new(
                "Pipe(), receiver by fork",
                py_args(NAME, &size.to_string(), n, warmup, Some(placement)),
            )),
            limit: Some(raw_side(Raw::BigPipe, format!("raw pipe of {} KiB, write/read", pipe_max() >> 10))),
            goal: Some(super::Goal::FasterThanCPython(1.0)),
            note: None,
        });
        for (kind, what) in [(Raw::Pipe, "raw pipe of 64 KiB"), (Raw::SocketPair, "raw socketpair")] {
            rows.push(Row {
                id: format!(
                    "{NAME}/{id}-{}",
                    if matches!(kind, Raw::Pipe) { "raw-pipe-64k" } else { "raw-socketpair" }
                ),
                workload: NAME,
                variant: format!("reference: {what} {id}, {where_}"),
                unit: Unit::GBPerSec,
                placement: Some(placement),
                ours: None,
                cpython: None,
                limit: Some(raw_side(kind, format!("{what}, write/read"))),
                goal: None,
                note: None,
            });
        }
    }
    rows
}
