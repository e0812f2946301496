//! CPU placement: which CPUs this process may use, and pinning to one of them for a workload
//! whose result depends on where the two processes run (a wake-up across cores costs far more
//! than one on the same core on these machines).

use std::io;

/// The CPUs this thread may run on, in increasing order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data; sched_getaffinity fills it, CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// A CPU set holding just `cpu`.
pub fn single_cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: plain data, zeroed is the empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Sets the calling thread's affinity with the raw syscall (async-signal-safe, so a raw fork
/// child may call it too).
pub fn set_affinity_raw(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes from `set`, which lives for the call.
    let r = unsafe {
        libc::syscall(libc::SYS_sched_setaffinity, 0, std::mem::size_of::<libc::cpu_set_t>(), set as *const _)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Pins this thread to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    set_affinity_raw(&single_cpu_set(cpu))
}

/// Restores the affinity this thread had when it was made.
pub struct PinGuard {
    saved: libc::cpu_set_t,
}

impl PinGuard {
    /// Pins this thread to `cpu` (if given) until the guard drops.
    pub fn pin(cpu: Option<usize>) -> io::Result<PinGuard> {
        // SAFETY: as in `allowed_cpus`.
        let saved = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(io::Error::last_os_error());
            }
            set
        };
        if let Some(cpu) = cpu {
            pin_to(cpu)?;
        }
        Ok(PinGuard { saved })
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = set_affinity_raw(&self.saved);
    }
}

/// Where the two processes of a ping-pong run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub parent: usize,
    pub child: usize,
}

impl Placement {
    pub fn same_core(&self) -> bool {
        self.parent == self.child
    }

    /// Text for the table: `same core (both pinned to CPU 0)` or `cross-core (pinned to CPUs 0
    /// and 1)`.
    pub fn describe(&self) -> String {
        if self.same_core() {
            format!("same core (both pinned to CPU {})", self.parent)
        } else {
            format!("cross-core (pinned to CPUs {} and {})", self.parent, self.child)
        }
    }
}

/// Where the processes of a queue workload run: the consumer (the bench process) and each
/// producer child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    pub consumer: usize,
    pub producers: Vec<usize>,
}

impl Spread {
    /// `count` producers on the CPUs after the consumer's, taken in turn (all on the
    /// consumer's CPU if there is only one). `None` if no CPU is known.
    pub fn new(cpus: &[usize], count: usize) -> Option<Spread> {
        let (&consumer, rest) = cpus.split_first()?;
        let producers = (0..count).map(|i| if rest.is_empty() { consumer } else { rest[i % rest.len()] }).collect();
        Some(Spread { consumer, producers })
    }

    /// The consumer's CPU and the first producer's, for the report.
    pub fn placement(&self) -> Placement {
        Placement { parent: self.consumer, child: self.producers.first().copied().unwrap_or(self.consumer) }
    }

    /// Text for the table: `consumer on CPU 0, producer on CPU 1`.
    pub fn describe(&self) -> String {
        let cpus: Vec<String> = self.producers.iter().map(|c| c.to_string()).collect();
        let who = if self.producers.len() == 1 { "producer" } else { "producers" };
        format!("consumer pinned to CPU {}, {who} to CPU {}", self.consumer, cpus.join(" and "))
    }
}

/// A CPU set holding `cpus`.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: plain data, zeroed is the empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

/// The threads of process `pid` (the entries of `/proc/PID/task`).
pub fn threads_of(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// The CPU set of thread `tid` (of any process this user owns).
pub fn affinity_of(tid: i32) -> io::Result<libc::cpu_set_t> {
    // SAFETY: as in `allowed_cpus`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// Sets the CPU set of every thread of process `pid` (another process: `sched_setaffinity`
/// by pid reaches only its main thread, and threads it made before keep their own set;
/// threads made after inherit their maker's). A thread that ends meanwhile is skipped. How
/// many threads were set; an error if none was.
pub fn set_process_affinity(pid: i32, set: &libc::cpu_set_t) -> io::Result<usize> {
    let mut done = 0;
    let mut last_err = None;
    for tid in threads_of(pid)? {
        // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes from `set`, which lives for the call.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) } == 0 {
            done += 1;
        } else {
            last_err = Some(io::Error::last_os_error());
        }
    }
    match (done, last_err) {
        (0, Some(e)) => Err(e),
        (0, None) => Err(io::Error::new(io::ErrorKind::NotFound, format!("process {pid} has no threads"))),
        (n, _) => Ok(n),
    }
}

/// Pins every thread of another process to `cpus` (see [`set_process_affinity`]) until the
/// guard drops, then gives all its threads the CPU set its main thread had before.
pub struct ProcessPin {
    pid: i32,
    saved: libc::cpu_set_t,
}

impl ProcessPin {
    pub fn new(pid: i32, cpus: &[usize]) -> io::Result<ProcessPin> {
        let saved = affinity_of(pid)?;
        set_process_affinity(pid, &cpu_set(cpus))?;
        Ok(ProcessPin { pid, saved })
    }
}

impl Drop for ProcessPin {
    fn drop(&mut self) {
        let _ = set_process_affinity(self.pid, &self.saved);
    }
}
