//! The limit side of the pool workloads: starting and reaping raw workers, and a map run by
//! plain threads in this process.

use super::{Spawnable, os_err, reap};
use std::time::Instant;

/// `workers` raw fork children that `_exit(0)` at once, then a `waitpid` for each, `n`
/// times: ms per batch (what `Pool(workers)` + `close()` + `join()` cannot beat with fork).
pub fn fork_workers_reap(workers: usize, n: u32) -> Result<f64, String> {
    let mut pids = Vec::with_capacity(workers);
    let t = Instant::now();
    for _ in 0..n {
        for _ in 0..workers {
            // SAFETY: the child only calls `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: async-signal-safe, never returns.
                unsafe { libc::_exit(0) }
            }
            if pid < 0 {
                let err = os_err("fork");
                for pid in pids.drain(..) {
                    let _ = reap(pid);
                }
                return Err(err);
            }
            pids.push(pid);
        }
        let mut result = Ok(());
        for pid in pids.drain(..) {
            let r = reap(pid);
            result = result.and(r);
        }
        result?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(n))
}

/// `workers` `posix_spawn`s of `target`, then a `waitpid` for each, `n` times: ms per batch.
pub fn spawn_workers_reap(target: &Spawnable, workers: usize, n: u32) -> Result<f64, String> {
    let mut argv: Vec<*mut libc::c_char> = target.argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = target.envp.iter().map(|a| a.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let mut pids = Vec::with_capacity(workers);
    let t = Instant::now();
    for _ in 0..n {
        let mut result = Ok(());
        for _ in 0..workers {
            let mut pid: libc::pid_t = 0;
            // SAFETY: path, argv and envp are NUL-terminated strings in null-terminated arrays
            // that outlive the call; no file actions or attributes.
            let r = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    target.path.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            };
            if r != 0 {
                result = Err(format!("posix_spawn: {}", std::io::Error::from_raw_os_error(r)));
                break;
            }
            pids.push(pid);
        }
        for pid in pids.drain(..) {
            let r = reap(pid);
            result = result.and(r);
        }
        result?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(n))
}

/// `f(x)` for every `x` in `0..items`, in order into one `Vec`, by `threads` threads started
/// for the call (`std::thread::scope`), each mapping its contiguous share serially; `reps`
/// times. Tasks per second. Every result is checked against `f` afterwards (not timed).
pub fn threads_map<F>(f: F, items: u64, threads: usize, reps: u32) -> Result<f64, String>
where
    F: Fn(u64) -> u64 + Copy + Send,
{
    let threads = threads.max(1);
    let share = items.div_ceil(threads as u64) as usize;
    let mut last = Vec::new();
    let t = Instant::now();
    for _ in 0..reps {
        let mut out = vec![0u64; items as usize];
        std::thread::scope(|s| {
            for (k, part) in out.chunks_mut(share.max(1)).enumerate() {
                let first = (k * share) as u64;
                s.spawn(move || {
                    for (i, o) in part.iter_mut().enumerate() {
                        // black_box: one call per item on a value the compiler cannot see
                        // coming, as a worker's loop over decoded arguments is.
                        *o = f(std::hint::black_box(first + i as u64));
                    }
                });
            }
        });
        last = std::hint::black_box(out);
    }
    let elapsed = t.elapsed();
    if last.len() as u64 != items || last.iter().enumerate().any(|(i, &v)| v != f(i as u64)) {
        return Err("the threads' map gave a wrong result".into());
    }
    Ok(items as f64 * f64::from(reps) / elapsed.as_secs_f64())
}
