//! The limit side of the shared-memory workloads: fill and sum over an anonymous `MAP_SHARED`
//! mapping, and the raw calls behind a named segment (`shm_open`, `ftruncate`, `mmap`,
//! `munmap`, `close`, `shm_unlink`).

use super::{fork_child, os_err, reap};
use crate::shm::SharedMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The fill value of `array_fill_sum` on every side: the sum of `n` of them is exactly `n`.
pub const FILL: f64 = 1.0;

/// Sums `xs` with eight running sums (the additions of one sum wait for each other; eight
/// independent ones keep the adder busy, and the memory is then what limits). Exact for the
/// whole numbers summed here.
pub fn sum_f64(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// Figures of one create + fill + sum: ms for all three, µs to create, GB/s filling and
/// summing (10⁹ bytes of `f64`s per second).
pub fn fill_sum_figures(len: usize, create_s: f64, fill_s: f64, sum_s: f64) -> Vec<f64> {
    let bytes = (len * size_of::<f64>()) as f64;
    vec![(create_s + fill_s + sum_s) * 1e3, create_s * 1e6, bytes / fill_s / 1e9, bytes / sum_s / 1e9]
}

/// `array_fill_sum` raw: `mmap` of `len` doubles (`MAP_SHARED | MAP_ANONYMOUS`), a raw fork
/// child fills them with [`FILL`] (timing itself), the parent sums them. The figures of
/// [`fill_sum_figures`].
pub fn mmap_fill_sum(len: usize) -> Result<Vec<f64>, String> {
    let bytes = len * size_of::<f64>();
    let fill_ns = SharedMap::<AtomicU64>::new().map_err(|e| format!("mmap: {e}"))?;
    let t = Instant::now();
    // SAFETY: a fresh anonymous mapping; nothing else is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let create_s = t.elapsed().as_secs_f64();
    if ptr == libc::MAP_FAILED {
        return Err(os_err("mmap"));
    }
    let data = ptr.cast::<f64>();
    let fill_word: &AtomicU64 = &fill_ns;
    let result = (|| -> Result<Vec<f64>, String> {
        let pid = fork_child(None, || {
            let t = Instant::now();
            // SAFETY: `len` doubles, mapped before the fork and shared; the parent does not
            // touch them until it has reaped this child.
            unsafe { std::slice::from_raw_parts_mut(data, len) }.fill(FILL);
            fill_word.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            true
        })?;
        reap(pid)?;
        let fill_s = fill_word.load(Ordering::Relaxed) as f64 / 1e9;
        let t = Instant::now();
        // SAFETY: as above; the child is gone, this process alone reads them.
        let total = sum_f64(unsafe { std::slice::from_raw_parts(data, len) });
        let sum_s = t.elapsed().as_secs_f64();
        if total != len as f64 {
            return Err(format!("sum {total}, expected {len}"));
        }
        Ok(fill_sum_figures(len, create_s, fill_s, sum_s))
    })();
    // SAFETY: the mapping made above; no slice of it outlives the closure.
    unsafe { libc::munmap(ptr, bytes) };
    result
}
