//! The limit side of the shared-memory workloads: fill and sum over an anonymous `MAP_SHARED`
//! mapping, and the raw calls behind a named segment (`shm_open`, `ftruncate`, `mmap`,
//! `munmap`, `close`, `shm_unlink`).

use super::{fork_child, os_err, reap};
use crate::shm::SharedMap;
use std::ffi::CString;
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

/// A named segment mapped by the raw calls: its descriptor and mapping.
struct RawSegment {
    fd: libc::c_int,
    ptr: *mut libc::c_void,
    len: usize,
}

impl RawSegment {
    /// `mmap` of `len` bytes of `fd`, `MAP_SHARED`; closes `fd` if that fails.
    fn map(fd: libc::c_int, len: usize) -> Result<RawSegment, String> {
        // SAFETY: a new mapping of an open descriptor; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            let e = os_err("mmap");
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(RawSegment { fd, ptr, len })
    }

    /// `munmap` + `close`.
    fn close(self) {
        // SAFETY: the mapping and descriptor made in `map`, released once (`self` is consumed).
        unsafe {
            libc::munmap(self.ptr, self.len);
            libc::close(self.fd);
        }
    }
}

/// A name for a raw segment, unique to this process and call.
fn raw_segment_name() -> CString {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    CString::new(format!("/mpbench_{}_{seq}", std::process::id())).expect("no NUL")
}

/// `shared_memory` raw, `warmup` untimed and then `n` timed cycles on a segment of `size`
/// bytes: create (`shm_open(O_CREAT | O_EXCL)` + `ftruncate` + `mmap`), attach (`shm_open` and
/// `mmap`), close both (`munmap` + `close`, each), unlink (`shm_unlink`). µs per create,
/// attach, close and unlink. Every name is unlinked, whatever fails.
pub fn shm_cycle(size: usize, warmup: u32, n: u32) -> Result<Vec<f64>, String> {
    let mut sums = [0.0f64; 4];
    for i in 0..warmup + n {
        let name = raw_segment_name();
        let t0 = Instant::now();
        // SAFETY: a NUL-terminated name; the descriptor is owned by what follows.
        let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600) };
        if fd < 0 {
            return Err(os_err("shm_open(O_CREAT)"));
        }
        let cycle = (|| -> Result<[f64; 4], String> {
            // SAFETY: our descriptor.
            if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
                let e = os_err("ftruncate");
                // SAFETY: our descriptor, closed once.
                unsafe { libc::close(fd) };
                return Err(e);
            }
            let a = RawSegment::map(fd, size)?;
            let t1 = Instant::now();
            // SAFETY: a NUL-terminated name.
            let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDWR, 0) };
            if fd < 0 {
                let e = os_err("shm_open");
                a.close();
                return Err(e);
            }
            let b = match RawSegment::map(fd, size) {
                Ok(b) => b,
                Err(e) => {
                    a.close();
                    return Err(e);
                }
            };
            let t2 = Instant::now();
            b.close();
            a.close();
            let t3 = Instant::now();
            Ok([(t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64() / 2.0, 0.0])
        })();
        let t4 = Instant::now();
        // SAFETY: a NUL-terminated name.
        let unlinked = unsafe { libc::shm_unlink(name.as_ptr()) } == 0;
        let unlink_s = t4.elapsed().as_secs_f64();
        let mut times = cycle?;
        if !unlinked {
            return Err(os_err("shm_unlink"));
        }
        times[3] = unlink_s;
        if i >= warmup {
            sums.iter_mut().zip(times).for_each(|(s, t)| *s += t);
        }
    }
    Ok(sums.iter().map(|s| s * 1e6 / f64::from(n)).collect())
}
