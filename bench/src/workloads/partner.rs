//! The library side of two-process workloads: a partner child started by the fork start
//! method (how it starts is not measured), placed on a CPU, and what the parent needs so that
//! a failing child makes the row fail instead of hanging the bench.
//!
//! `lock_contended` uses [`timed_with_partner`] (both processes run the same loop from a
//! common start), and so does `value_increment`. `sync_pingpong` uses [`Watchdog`].

use crate::limit::{child_failed, child_running};
use crate::pin::pin_to;
use crate::shm::Gate;
use multiprocess::Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First thing in a partner child: pin to `cpu`, and die with the bench (a partner left
/// waiting on a lock or an event must not outlive a bench that failed).
pub fn child_setup(cpu: usize) -> Result<(), String> {
    pin_to(cpu).map_err(|e| format!("pin: {e}"))?;
    // SAFETY: a plain system call on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    Ok(())
}

/// The child's pid as the raw helpers take it.
fn pid_of(p: &Process) -> Result<libc::pid_t, String> {
    p.pid().map(|pid| pid as libc::pid_t).ok_or_else(|| "the child has no pid".to_string())
}

/// Joins the child and checks that it exited 0.
pub fn join_ok(p: &mut Process) -> Result<(), String> {
    p.join().map_err(|e| format!("join: {e}"))?;
    match p.exitcode() {
        Some(0) => Ok(()),
        other => Err(format!("partner child exit code {other:?}")),
    }
}

/// Times `parent_work` run by the parent while the started child `p` runs its own share: the
/// child arrives at `gate` when ready, waits for it to open, works, and says it finished. The
/// clock runs from the opening of the gate until both are done. The child is joined (killed
/// first if something failed) and must exit 0.
pub fn timed_with_partner(
    gate: &Gate,
    p: &mut Process,
    parent_work: impl FnOnce() -> Result<(), String>,
) -> Result<Duration, String> {
    let pid = pid_of(p)?;
    let run = || -> Result<Duration, String> {
        gate.wait_ready(1, || child_running(pid))?;
        let t = Instant::now();
        gate.open();
        let worked = parent_work();
        gate.wait_done(1, || child_running(pid))?;
        let elapsed = t.elapsed();
        worked.map(|()| elapsed)
    };
    let result = run();
    if result.is_err() {
        gate.abort();
        let _ = p.kill();
    }
    let joined = join_ok(p);
    let elapsed = result?;
    joined?;
    Ok(elapsed)
}

/// While a ping-pong runs, a thread checks every 20 ms that the partner child has not failed
/// (ended other than by exiting 0, which it does only after its last exchange); once it has,
/// it calls `rescue` (every 100 µs until stopped), which sets what the parent waits for (or
/// breaks the barrier), so the parent finishes its loop instead of waiting forever; the
/// child's exit code then fails the row.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(p: &Process, rescue: impl Fn() + Send + 'static) -> Result<Watchdog, String> {
        let pid = pid_of(p)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || {
                let mut failed = false;
                while !flag.load(Ordering::Relaxed) {
                    // Once the partner failed, rescue often: the parent may have many
                    // exchanges left, each waiting for a rescue.
                    std::thread::sleep(if failed { Duration::from_micros(100) } else { Duration::from_millis(20) });
                    failed = failed || child_failed(pid);
                    if failed && !flag.load(Ordering::Relaxed) {
                        rescue();
                    }
                }
            })
            .map_err(|e| format!("watchdog thread: {e}"))?;
        Ok(Watchdog { stop, thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
