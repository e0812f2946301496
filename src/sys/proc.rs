//! Process-wide facts and actions: fork, exit, parent-death signals, descriptor hygiene for
//! children, and what we count to warn about forking a threaded process.

use super::{cvt, retry};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// `fork(2)`. Returns 0 in the child and the child's pid in the parent.
///
/// # Safety
/// In the child only the calling thread exists; locks that other threads held stay locked.
/// The caller must keep the child to code that does not need them.
pub(crate) unsafe fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the caller upholds the contract above.
    cvt(unsafe { libc::fork() })
}

/// Ends the process at once with `code`: no atexit handlers, no destructors (`os._exit`).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// This process's id.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// This process's id, from a cache: the lock fast paths need it, and `getpid` is a system
/// call. A `pthread_atfork` handler refreshes it in every fork child, ours or the program's.
#[inline]
pub(crate) fn cached_pid() -> libc::pid_t {
    match CACHED_PID.load(Ordering::Relaxed) {
        0 => init_cached_pid(),
        pid => pid,
    }
}

static CACHED_PID: AtomicI32 = AtomicI32::new(0);

/// Whether the fork handler is registered: 0 not yet, 1 being registered, 2 registered.
/// Not a `Once`: a fork child inherits a `Once` that another thread of its parent was running
/// as running for ever, and its first `cached_pid` would wait on it for ever (a lock in a
/// fork child hung so, when a thread of the parent took its first lock during the fork).
static AT_FORK: AtomicU8 = AtomicU8::new(0);

#[cold]
fn init_cached_pid() -> libc::pid_t {
    let pid = getpid();
    match AT_FORK.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // SAFETY: registers a plain extern "C" function with no arguments for the child.
            unsafe { libc::pthread_atfork(None, None, Some(refresh_cached_pid)) };
            AT_FORK.store(2, Ordering::Release);
        }
        // Another thread is registering it: cache nothing until it has, or a fork in between
        // could give a child this pid with no handler to correct it.
        Err(1) => return pid,
        Err(_) => {}
    }
    CACHED_PID.store(pid, Ordering::SeqCst);
    pid
}

extern "C" fn refresh_cached_pid() {
    CACHED_PID.store(getpid(), Ordering::Relaxed);
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn start_time(pid: libc::pid_t) -> io::Result<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/<pid>/stat"))
}

/// The start time in the text of a `/proc/<pid>/stat`: the command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted from the
/// last `)`, after which field 3 comes.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

thread_local! {
    /// This thread's id, with the pid it was read under (a fork child's only thread has a
    /// new id, and its cache must not be believed).
    static CACHED_TID: std::cell::Cell<(libc::pid_t, libc::pid_t)> = const { std::cell::Cell::new((0, 0)) };
}

/// The calling thread's id (`gettid`), cached per thread.
#[inline]
pub(crate) fn cached_tid() -> libc::pid_t {
    let pid = cached_pid();
    CACHED_TID.with(|c| {
        let (under, tid) = c.get();
        if under == pid {
            return tid;
        }
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::gettid() };
        c.set((pid, tid));
        tid
    })
}

/// The CPU this thread runs on, plus one (0 if unknown): what a waiter compares with the CPU
/// of the process it waits for, to decide whether spinning can help. Cheap (glibc reads it
/// from the rseq area).
#[inline]
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu takes no arguments and only reads.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 { 0 } else { cpu as u32 + 1 }
}

/// The parent's id (1, or a subreaper's, once the parent is gone).
pub(crate) fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// Asks the kernel to send `signal` to this process when its parent thread exits.
pub(crate) fn set_parent_death_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// Makes this process the leader of a new session (`setsid`): signals sent to the group or
/// terminal of the process that started it no longer reach it.
pub(crate) fn new_session() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and only changes this process's session.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// Closes every descriptor from `first` up. Async-signal-safe (one syscall), so it may run
/// between fork and exec.
pub(crate) fn close_fds_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; the caller owns the range from `first`.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) };
    if r != 0 {
        // Kernels before 5.9: fall back to closing one at a time.
        // SAFETY: sysconf is async-signal-safe in practice on Linux (no locks).
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 20) as RawFd;
        for fd in first..max {
            // SAFETY: as above; closing a descriptor that is not open is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// `dup2(from, to)`, clearing close-on-exec on `to`. Async-signal-safe.
pub(crate) fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    if from == to {
        // dup2 is a no-op then and keeps FD_CLOEXEC: clear it by hand.
        // SAFETY: fcntl on a descriptor the caller owns.
        return cvt(unsafe { libc::fcntl(to, libc::F_SETFD, 0) }).map(drop);
    }
    // SAFETY: the caller owns `to` (it is replaced) and `from`.
    retry(|| unsafe { libc::dup2(from, to) }).map(drop)
}

/// A descriptor on this process's `/proc/self/task`, kept open for [`thread_count`], and the
/// pid it belongs to (a fork child inherits its parent's and must open its own).
static TASK_FD: AtomicI32 = AtomicI32::new(-1);
static TASK_PID: AtomicI32 = AtomicI32::new(0);

/// How many threads this process has: `/proc/self/task` has a link for each, besides `.` and
/// `..`, and one `fstat` on a descriptor kept open counts them (a tenth of the cost of reading
/// `/proc/self/stat`, which this is called on every fork start). When it cannot be read,
/// assume several: callers then take the careful path.
pub(crate) fn thread_count() -> usize {
    let me = getpid();
    let mut fd = TASK_FD.load(Ordering::Relaxed);
    if fd < 0 || TASK_PID.load(Ordering::Relaxed) != me {
        // SAFETY: open of a constant NUL-terminated path.
        let new =
            unsafe { libc::open(c"/proc/self/task".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if new < 0 {
            return 2;
        }
        let old = TASK_FD.swap(new, Ordering::Relaxed);
        TASK_PID.store(me, Ordering::Relaxed);
        if old >= 0 {
            // The inherited descriptor names the parent's threads; ours replaces it.
            // SAFETY: `old` was opened here and is no longer published.
            unsafe { libc::close(old) };
        }
        fd = new;
    }
    // SAFETY: `stat` is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (we keep it) and `st` lives for the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_nlink < 3 {
        return 2;
    }
    st.st_nlink as usize - 2
}

/// The descriptor [`thread_count`] keeps open in this process, if any: not a leak.
pub(crate) fn thread_count_fd() -> Option<RawFd> {
    let fd = TASK_FD.load(Ordering::Relaxed);
    (fd >= 0 && TASK_PID.load(Ordering::Relaxed) == getpid()).then_some(fd)
}

/// The device and inode of the running executable: two processes with the same pair run the
/// same binary, so code addresses mean the same in both.
pub(crate) fn exe_identity() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // A process keeps its executable until it execs, which starts it afresh: ask once.
    static EXE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    if let Some(exe) = EXE.get() {
        return Ok(*exe);
    }
    let meta = std::fs::metadata("/proc/self/exe")?;
    Ok(*EXE.get_or_init(|| (meta.dev(), meta.ino())))
}

/// Ignores SIGINT (a Ctrl-C sent to the whole process group), for a server its owner stops.
pub(crate) fn ignore_interrupts() {
    ignore_signal(libc::SIGINT);
}

/// Sets `signal` to be ignored.
pub(crate) fn ignore_signal(signal: libc::c_int) {
    // SAFETY: installing SIG_IGN has no handler code to be unsound.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
}

/// Restores the default action for `signal`.
pub(crate) fn default_signal(signal: libc::c_int) {
    // SAFETY: installing SIG_DFL has no handler code to be unsound.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// The number of CPUs online (`os.cpu_count()`).
pub(crate) fn cpus_online() -> usize {
    // SAFETY: sysconf only reads.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 { 1 } else { n as usize }
}

/// The number of CPUs this process may run on (`os.process_cpu_count()`), from its affinity.
pub(crate) fn cpus_allowed() -> usize {
    // SAFETY: `cpu_set_t` is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the size of `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return cpus_online();
    }
    // SAFETY: CPU_COUNT reads the set we own.
    let n = unsafe { libc::CPU_COUNT(&set) };
    if n < 1 { 1 } else { n as usize }
}

/// The resident memory of process `pid` (0: this one) in bytes (`/proc/<pid>/statm`).
pub(crate) fn resident_bytes(pid: i32) -> io::Result<u64> {
    let path = if pid == 0 { "/proc/self/statm".to_string() } else { format!("/proc/{pid}/statm") };
    let statm = std::fs::read_to_string(path)?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc statm"))?;
    // SAFETY: sysconf only reads.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Ok(pages.saturating_mul(page))
}

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(e.to_string()))
}

/// Whether `SIGPIPE` is ignored in this process (as Rust's runtime sets it before `main`).
pub(crate) fn sigpipe_ignored() -> bool {
    // SAFETY: `sigaction` is plain data; with a null new action the call only reads.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Blocks `SIGPIPE` in this thread while alive; on drop takes back a `SIGPIPE` raised
/// meanwhile (unless one was already pending before) and restores the mask, so a write to a
/// gone reader gives `EPIPE` and nothing else.
pub(crate) struct SigpipeBlock {
    old_mask: libc::sigset_t,
    was_pending: bool,
}

impl SigpipeBlock {
    pub(crate) fn new() -> SigpipeBlock {
        // SAFETY: sigset operations on local sets; pthread_sigmask changes this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
            let mut old_mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask);
            SigpipeBlock { old_mask, was_pending }
        }
    }
}

impl Drop for SigpipeBlock {
    fn drop(&mut self) {
        // SAFETY: as in `new`; sigtimedwait with a zero timeout only dequeues a pending signal.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            if !self.was_pending {
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

/// Kills and reaps our own child `pid`, which nothing else knows of (its start failed half
/// way). Safe from pid reuse: an unreaped child's pid cannot be recycled until we reap it.
pub(crate) fn kill_and_reap_unknown_child(pid: libc::pid_t) {
    // SAFETY: kill(2) with a plain signal on our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child, into a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times() {
        // A command name with spaces and parentheses does not shift the fields.
        let stat = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456789 1000 10";
        assert_eq!(parse_start_time(stat), Some(123456789));
        assert_eq!(parse_start_time(b"42 (x) S 1"), None);
        assert_eq!(parse_start_time(b"no parenthesis"), None);
        assert!(start_time(1).unwrap() <= start_time(getpid()).unwrap(), "init started first");
    }
}
